//! How much of a map lands on the object (issue: activation maps "land on the object").
//!
//! The seminar shows activation maps and says the pre-trained encoder "looks at the object". On
//! the embedded dataset the generator knows each shape's mask
//! ([`crate::data::synthetic::object_masks`]), so that sentence becomes a number: the share of a
//! map's energy that falls inside the object, for each image,
//!
//! ```text
//! fraction = Σ_pixels E(p)·M(p) / Σ_pixels E(p)
//! ```
//!
//! with the `[h, w]` map `E` nearest-upsampled to the image's `[H, W]` (as the seminar enlarges
//! it for display) and `M` the mask's coverage in [0, 1]. A map that ignores the image scores
//! the object's area (what a uniform map gets); a map on the object scores more. Two encoders
//! are compared image by image ([`ObjectEnergy`]): the paired difference's mean and its two
//! standard errors, the same 2-standard-error rule as the accuracies.
//!
//! ```
//! use selfsup::eval::energy_in_mask;
//! use tch::Tensor;
//! // A 2x2 map whose energy is all in the top-left cell, and a 4x4 mask covering that quarter.
//! let map = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0]).view([1, 2, 2]);
//! let mut m = [0f32; 16];
//! for (y, x) in [(0, 0), (0, 1), (1, 0), (1, 1)] { m[y * 4 + x] = 1.0; }
//! let mask = Tensor::from_slice(&m).view([1, 4, 4]);
//! assert_eq!(energy_in_mask(&map, &mask)?, vec![1.0]);
//! # Ok::<(), selfsup::Error>(())
//! ```
use crate::error::{Error, Result};
use crate::models::{ResNet, Stage};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// For each image, the share of the non-negative `maps` `[B, h, w]` (activation energy,
/// Grad-CAM) that falls inside `masks` `[B, H, W]` (coverage in [0, 1]), with each map
/// nearest-upsampled to `[H, W]`; `H` and `W` must be multiples of `h` and `w`. An all-zero map
/// scores the mask's area (it has no preference).
///
/// # Errors
/// Shapes that do not match as described; negative or non-finite map values; masks outside [0, 1].
pub fn energy_in_mask(maps: &Tensor, masks: &Tensor) -> Result<Vec<f64>> {
    let (ms, ks) = (maps.size(), masks.size());
    if ms.len() != 3 || ms.contains(&0) {
        return Err(Error::shape("energy_in_mask maps", "[B, h, w], none empty", &ms));
    }
    if ks.len() != 3 || ks[0] != ms[0] || ks[1] % ms[1] != 0 || ks[2] % ms[2] != 0 {
        return Err(Error::shape(
            "energy_in_mask masks",
            format!("[{}, H, W] with H a multiple of {} and W of {} (the images the maps come from)", ms[0], ms[1], ms[2]),
            &ks,
        ));
    }
    let maps = maps.to_device(Device::Cpu).to_kind(Kind::Double);
    let masks = masks.to_device(Device::Cpu).to_kind(Kind::Double);
    if !bool::try_from(maps.isfinite().all())? || f64::try_from(maps.min())? < 0.0 {
        return Err(Error::Data("energy_in_mask: maps must be finite and non-negative (energy or Grad-CAM, not normalised logits)".into()));
    }
    if f64::try_from(masks.min())? < 0.0 || f64::try_from(masks.max())? > 1.0 {
        return Err(Error::Data("energy_in_mask: masks must hold coverage values in [0, 1]".into()));
    }
    let (fy, fx) = (ks[1] / ms[1], ks[2] / ms[2]);
    // Nearest upsampling by whole factors = every map cell repeated fy × fx times.
    let up = maps.repeat_interleave_self_int(fy, 1, None).repeat_interleave_self_int(fx, 2, None); // [B, H, W]
    let inside = (&up * &masks).sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double); // [B]
    let total = up.sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double); // [B]
    let area = masks.mean_dim([1i64, 2].as_slice(), false, Kind::Double); // [B]
    let (inside, total, area): (Vec<f64>, Vec<f64>, Vec<f64>) =
        (Vec::try_from(&inside)?, Vec::try_from(&total)?, Vec::try_from(&area)?);
    Ok(inside.iter().zip(&total).zip(&area).map(|((&i, &t), &a)| if t > 0.0 { i / t } else { a }).collect())
}

/// The raw activation energy Σ_c A² of `net` at `stage` for normalised `images` `[B, 3, H, W]`:
/// `[B, h, w]` on the CPU, not normalised (the seminar's display min-max normalises each map,
/// which would change the shares). Eval mode, no gradients.
///
/// # Errors
/// As [`ResNet::forward_until`]; a stage without a spatial layout.
pub fn activation_energy_raw(net: &ResNet, images: &Tensor, stage: Stage) -> Result<Tensor> {
    if matches!(stage, Stage::AvgPool | Stage::Fc) {
        return Err(Error::Config(format!("{stage:?} has no spatial layout: use Stage::Layer1..Layer4")));
    }
    let a = tch::no_grad(|| net.forward_until(images, stage, false))?; // [B, C, h, w]
    Ok(channel_energy(&a)?.to_device(Device::Cpu))
}

/// The seminar's energy Σ_c A² of `features` `[B, C, h, w]`: `[B, h, w]` float, same device, not
/// normalised. [`crate::viz::activation_energy`] normalises it for display.
///
/// # Errors
/// `features` not `[B, C, h, w]` float, or NaN / infinite energies.
pub fn channel_energy(features: &Tensor) -> Result<Tensor> {
    let size = features.size();
    if size.len() != 4 || size.contains(&0) {
        return Err(Error::shape("activation energy features", "[B, C, h, w], none empty", &size));
    }
    if !features.is_floating_point() {
        return Err(Error::Data(format!("activation energy: expected float features, got {:?}", features.kind())));
    }
    let energy = features.to_kind(Kind::Float).square().sum_dim_intlist(1, false, Kind::Float); // [B, h, w]
    if !bool::try_from(energy.isfinite().all())? {
        return Err(Error::Data("activation energy: features contain NaN or infinite values".into()));
    }
    Ok(energy)
}

/// Two encoders' energy-on-object shares, image by image, and whether the first puts more of
/// its energy on the object than the second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectEnergy {
    /// Mean share of the first encoder's energy inside the object.
    pub a: f64,
    /// Mean share of the second encoder's.
    pub b: f64,
    /// Mean share of the image the object covers: what a map blind to the image scores.
    pub area: f64,
    /// Images compared.
    pub n: usize,
    /// Mean of the paired differences a − b.
    pub diff: f64,
    /// Two standard errors of that mean (sample std of the differences / √n, doubled).
    pub two_se: f64,
    /// Is `a` above `b` by more than two standard errors?
    pub verdict: super::Verdict,
}

impl ObjectEnergy {
    /// Compares the per-image shares `a` and `b` of the same images, whose masks are `masks`.
    ///
    /// # Errors
    /// Lengths that differ or fewer than two images.
    pub fn compare(a: &[f64], b: &[f64], masks: &Tensor) -> Result<ObjectEnergy> {
        let n = a.len();
        if n != b.len() || n < 2 || masks.size().first() != Some(&(n as i64)) {
            return Err(Error::Data(format!(
                "ObjectEnergy::compare: need the same n ≥ 2 images in a ({n}), b ({}) and masks ({:?})",
                b.len(),
                masks.size()
            )));
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let diff = mean(&d);
        let var = d.iter().map(|x| (x - diff).powi(2)).sum::<f64>() / (n - 1) as f64;
        let two_se = 2.0 * (var / n as f64).sqrt();
        let verdict = if diff > two_se {
            super::Verdict::Higher
        } else if -diff > two_se {
            super::Verdict::Lower
        } else {
            super::Verdict::NotDistinguishable
        };
        let area = f64::try_from(masks.to_kind(Kind::Double).mean(Kind::Double))?;
        Ok(ObjectEnergy { a: mean(a), b: mean(b), area, n, diff, two_se, verdict })
    }
}

impl std::fmt::Display for ObjectEnergy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1}% vs {:.1}% of the energy on the object (it covers {:.1}% of the image); difference {:+.1} points, 2·se {:.1} on {} images: {}",
            100.0 * self.a,
            100.0 * self.b,
            100.0 * self.area,
            100.0 * self.diff,
            100.0 * self.two_se,
            self.n,
            self.verdict.claim()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_by_hand() {
        // Map 2x2 [[3, 1], [0, 0]] on a 4x4 image; the mask covers the left half fully and the
        // top-right cell half: energy inside = 3·4 (left-top cell, 4 pixels) + 0 + 1·(4·0.5)
        // = 14 of a total 4·(3+1) = 16 → 0.875.
        let map = Tensor::from_slice(&[3.0f32, 1.0, 0.0, 0.0]).view([1, 2, 2]);
        let mut m = [0f32; 16];
        for y in 0..4 {
            for x in 0..2 {
                m[y * 4 + x] = 1.0;
            }
        }
        for (y, x) in [(0, 2), (0, 3), (1, 2), (1, 3)] {
            m[y * 4 + x] = 0.5;
        }
        let mask = Tensor::from_slice(&m).view([1, 4, 4]);
        let s = energy_in_mask(&map, &mask).unwrap();
        assert!((s[0] - 0.875).abs() < 1e-12, "{s:?}");
        // An all-zero map scores the mask's area: (8 + 4·0.5) / 16 = 0.625.
        let s = energy_in_mask(&Tensor::zeros([1, 2, 2], (Kind::Float, Device::Cpu)), &mask).unwrap();
        assert!((s[0] - 0.625).abs() < 1e-12);
        // A uniform map does too.
        let s = energy_in_mask(&Tensor::ones([1, 2, 2], (Kind::Float, Device::Cpu)), &mask).unwrap();
        assert!((s[0] - 0.625).abs() < 1e-12);
    }

    #[test]
    fn bad_shapes_and_values_are_named() {
        let mask = Tensor::ones([1, 5, 5], (Kind::Float, Device::Cpu));
        let err = energy_in_mask(&Tensor::ones([1, 2, 2], (Kind::Float, Device::Cpu)), &mask).unwrap_err().to_string();
        assert!(err.contains("multiple of 2"), "{err}");
        let neg = Tensor::from_slice(&[-1.0f32]).view([1, 1, 1]);
        let err = energy_in_mask(&neg, &mask).unwrap_err().to_string();
        assert!(err.contains("non-negative"), "{err}");
    }

    #[test]
    fn paired_comparison_and_its_verdict() {
        let masks = Tensor::full([4, 2, 2], 0.25, (Kind::Float, Device::Cpu));
        // Differences 0.1, 0.12, 0.08, 0.1: mean 0.1, sample sd 0.01633, 2·se 0.01633.
        let c = ObjectEnergy::compare(&[0.5, 0.52, 0.48, 0.5], &[0.4, 0.4, 0.4, 0.4], &masks).unwrap();
        assert!((c.diff - 0.1).abs() < 1e-12 && (c.two_se - 0.016_329_931_6).abs() < 1e-9, "{c:?}");
        assert_eq!(c.verdict, crate::eval::Verdict::Higher);
        assert!((c.area - 0.25).abs() < 1e-12);
        let c = ObjectEnergy::compare(&[0.5, 0.3], &[0.4, 0.4], &masks.narrow(0, 0, 2)).unwrap();
        assert_eq!(c.verdict, crate::eval::Verdict::NotDistinguishable);
        assert!(c.to_string().contains("not distinguishable"));
    }
}
