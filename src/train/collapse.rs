//! The collapse monitor (B7): the standard deviation of ℓ2-normalised projections.
//!
//! "If the outputs collapse to a constant vector, their std over all samples should be zero for
//! each channel. … if z has a zero-mean isotropic Gaussian distribution, … the standard
//! deviation of z/‖z‖ is 1/√d" (SimSiam, Chen & He 2021, <https://arxiv.org/abs/2011.10566>,
//! Section 4.1); lightly's `std_of_l2_normalized` computes it. The trainer logs it every step
//! (read once per log window) and prints a warning when it falls below a fraction of 1/√d (S2.T2).
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// Mean over dimensions of the per-dimension std (over the batch) of the rows of `z` scaled to
/// unit ℓ2 norm: ≈ 1/√d for healthy (spread) representations, ≈ 0 for collapsed ones.
///
/// # Shapes
/// `z`: `[N, D]` with N ≥ 2.
///
/// # Errors
/// [`Error::Shape`] unless `z` is `[N, D]` with at least two rows.
///
/// # Example
/// ```
/// use selfsup::train::std_of_l2_normalized;
/// use selfsup::tch::{Kind, Tensor};
/// let z = Tensor::randn([512, 64], (Kind::Float, selfsup::tch::Device::Cpu));
/// let s = std_of_l2_normalized(&z)?;
/// assert!((s - 1.0 / 8.0).abs() < 0.01); // 1/√64
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn std_of_l2_normalized(z: &Tensor) -> Result<f64> {
    Ok(std_of_l2_normalized_tensor(z)?.double_value(&[]))
}

/// [`std_of_l2_normalized`] as a 0-dim f32 tensor on `z`'s device, not read back: the training
/// engine computes it every step and reads it with the rest of its log window, so the step does
/// not wait for the device.
///
/// # Shapes
/// `z`: `[N, D]` with N ≥ 2 → `[]`.
///
/// # Errors
/// [`Error::Shape`] unless `z` is `[N, D]` with at least two rows.
pub fn std_of_l2_normalized_tensor(z: &Tensor) -> Result<Tensor> {
    let s = z.size();
    if s.len() != 2 || s[0] < 2 || s[1] < 1 {
        return Err(Error::shape("std_of_l2_normalized z", "[N, D] with N >= 2", &s));
    }
    Ok(tch::no_grad(|| {
        let z = z.detach().to_kind(Kind::Float); // [N, D]
        let norm = z.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12); // [N, 1]
        let z = z / norm; // [N, D], unit rows (F.normalize)
        z.std_dim([0i64].as_slice(), true, false).mean(Kind::Float) // [], std over N, mean over D
    }))
}

/// The healthy value 1/√d of [`std_of_l2_normalized`] for `d`-dimensional projections.
pub fn healthy_std(d: i64) -> f64 {
    1.0 / (d.max(1) as f64).sqrt()
}

/// Watches [`std_of_l2_normalized`] and says, once per epoch, when it falls below
/// `warn_fraction` × 1/√d.
#[derive(Debug, Clone)]
pub struct CollapseMonitor {
    /// The warning fires below this fraction of 1/√d (the trainer's `collapse_warn_fraction`).
    pub warn_fraction: f64,
    warned_epoch: Option<usize>,
}

impl CollapseMonitor {
    /// A monitor warning below `warn_fraction` × 1/√d (0 never warns).
    pub fn new(warn_fraction: f64) -> Self {
        CollapseMonitor { warn_fraction, warned_epoch: None }
    }

    /// The warning for a measured `std` of `d`-dimensional projections at `step`, if it is one
    /// (at most one per epoch).
    pub fn check(&mut self, std: f64, d: i64, step: usize, epoch: usize) -> Option<String> {
        let healthy = healthy_std(d);
        if std.is_nan() || std >= self.warn_fraction * healthy || self.warned_epoch == Some(epoch) {
            return None;
        }
        self.warned_epoch = Some(epoch);
        Some(format!(
            "warning: possible collapse at step {step} (epoch {epoch}): std of the l2-normalised z = {std:.4}, \
             healthy ≈ 1/√{d} = {healthy:.4}. The projections are becoming the same vector for every image; \
             usual causes: no momentum/predictor asymmetry (BYOL), too high a learning rate, too weak augmentations, \
             or a temperature too high"
        ))
    }
}
