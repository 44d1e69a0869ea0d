//! The augmentation ops, one function per op, each on a whole batch `[B, 3, H, W]` (f32 in
//! `[0, 1]`) on the batch's own device.
//!
//! Every random op comes in two layers:
//! - a **random** function (`random_resized_crop`, `hflip`, `color_jitter`, `grayscale`,
//!   `gaussian_blur`, `solarize`) that draws, for *each sample*, whether the op applies (its
//!   `RandomApply` probability `p`) and the op's parameters, from the generator passed in;
//! - a **deterministic** function with the parameters spelled out (`resized_crop`,
//!   `flip_horizontal`, `adjust_brightness`, …, `blur`, `solarize_all`) that the random one calls
//!   and that tests and notebooks can check against the definitions.
//!
//! Parameters are drawn on the CPU from the seeded generator (a handful of numbers per sample)
//! and moved to the device as one small tensor; the pixels never leave the device, and every op
//! runs as a few batched kernels whatever the batch size (no kernel per image).
//!
//! The definitions follow torchvision's `transforms.v2.functional` (tensor path); where they
//! differ it is marked `Deviation:` here and in the function's doc.
use crate::data::Normalization;
use crate::error::{config_err, Error, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// ITU-R 601-2 luma weights (R, G, B), as PIL's `convert("L")` uses them.
///
/// Deviation: torchvision's tensor path uses 0.2989 for red; PIL (which the papers' pipelines
/// ran on) and the ITU-R BT.601 standard use 0.299. The difference is below 1e-4 per pixel.
pub const LUMA_WEIGHTS: [f64; 3] = [0.299, 0.587, 0.114];

// ---------------------------------------------------------------------------------------------
// Configs of the ops that have parameters.
// ---------------------------------------------------------------------------------------------

/// RandomResizedCrop: a random box with a given area fraction and aspect ratio, resized to
/// `size × size`.
///
/// Defaults are torchvision's (`scale=(0.08, 1.0)`, `ratio=(3/4, 4/3)`), the values of SimCLR
/// and BYOL: "a random patch of the image is selected, with an area uniformly sampled between
/// 8% and 100% of that of the original image, and an aspect ratio logarithmically sampled
/// between 3/4 and 4/3" (BYOL, Grill et al. 2020, Appendix B).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RandomResizedCrop {
    /// Side of the square output in pixels.
    pub size: i64,
    /// Range of the box area as a fraction of the image area, sampled uniformly.
    pub scale: (f64, f64),
    /// Range of the box aspect ratio (width / height), sampled log-uniformly.
    pub ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// A crop to `size × size` with torchvision's default scale (0.08, 1) and ratio (3/4, 4/3).
    pub fn new(size: i64) -> Self {
        RandomResizedCrop { size, scale: (0.08, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0) }
    }
    /// The same crop with another area range.
    pub fn scale(mut self, min: f64, max: f64) -> Self {
        self.scale = (min, max);
        self
    }
    /// The same crop with another aspect-ratio range.
    pub fn ratio(mut self, min: f64, max: f64) -> Self {
        self.ratio = (min, max);
        self
    }
    /// Checks the ranges: size ≥ 1, `0 < scale.0 ≤ scale.1 ≤ 1`, `0 < ratio.0 ≤ ratio.1`.
    pub fn validate(&self) -> Result<()> {
        if self.size < 1 {
            return Err(config_err!(
                "RandomResizedCrop.size must be at least 1, got {}; set it with `RandomResizedCrop::new(size)` or `Augment::size`",
                self.size
            ));
        }
        let (s0, s1) = self.scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(config_err!("RandomResizedCrop.scale must satisfy 0 < min <= max <= 1, got ({s0}, {s1})"));
        }
        let (r0, r1) = self.ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(config_err!("RandomResizedCrop.ratio must satisfy 0 < min <= max, got ({r0}, {r1})"));
        }
        Ok(())
    }
}

/// ColorJitter strengths, as torchvision defines them: brightness, contrast and saturation
/// factors are drawn uniformly from `[max(0, 1 - x), 1 + x]`, the hue shift from `[-hue, hue]`
/// (a fraction of the colour circle). A strength of 0 leaves that part out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColorJitter {
    /// Brightness strength (≥ 0).
    pub brightness: f64,
    /// Contrast strength (≥ 0).
    pub contrast: f64,
    /// Saturation strength (≥ 0).
    pub saturation: f64,
    /// Hue strength, in `[0, 0.5]`.
    pub hue: f64,
}

impl ColorJitter {
    /// Jitter with the four strengths, in torchvision's argument order.
    pub fn new(brightness: f64, contrast: f64, saturation: f64, hue: f64) -> Self {
        ColorJitter { brightness, contrast, saturation, hue }
    }
    /// SimCLR's colour distortion of strength `s`: `ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)`
    /// (Chen et al. 2020, Appendix A, the pseudo-code `get_color_distortion(s=1.0)`).
    pub fn simclr(s: f64) -> Self {
        ColorJitter::new(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    }
    /// Checks the ranges: strengths ≥ 0 and hue ≤ 0.5.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("brightness", self.brightness), ("contrast", self.contrast), ("saturation", self.saturation)]
        {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(config_err!("ColorJitter.{name} must be a finite number >= 0, got {v}"));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return Err(config_err!("ColorJitter.hue must be in [0, 0.5], got {}", self.hue));
        }
        Ok(())
    }
}

/// Gaussian blur with a per-sample σ drawn uniformly from `sigma`.
///
/// "We blur the image 50% of the time using a Gaussian kernel. We randomly sample
/// σ ∈ [0.1, 2.0], and the kernel size is set to be 10% of the image height/width"
/// (SimCLR, Chen et al. 2020, Appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaussianBlur {
    /// Range of σ in pixels, sampled uniformly per sample.
    pub sigma: (f64, f64),
    /// Odd kernel side in pixels; `None`: about 10% of the image side, see
    /// [`GaussianBlur::kernel_for`].
    pub kernel_size: Option<i64>,
}

impl Default for GaussianBlur {
    /// σ ∈ [0.1, 2.0] and a kernel of 10% of the image (SimCLR, Appendix A).
    fn default() -> Self {
        GaussianBlur { sigma: (0.1, 2.0), kernel_size: None }
    }
}

impl GaussianBlur {
    /// The kernel side used for an image of side `image_side` when `kernel_size` is `None`:
    /// `2 * ((image_side / 10) / 2) + 1`, SimCLR's `data_util.py` rule (`kernel_size =
    /// image_size // 10`, `radius = kernel_size // 2`, `2 * radius + 1`): 23 at 224, 9 at 96,
    /// 3 at 32, and 1 (no blur) below 20 pixels.
    pub fn kernel_for(&self, image_side: i64) -> i64 {
        match self.kernel_size {
            Some(k) => k,
            None => 2 * ((image_side / 10) / 2) + 1,
        }
    }
    /// Checks the ranges: `0 < sigma.0 ≤ sigma.1`, an odd positive kernel size.
    pub fn validate(&self) -> Result<()> {
        let (a, b) = self.sigma;
        if !(a > 0.0 && a <= b && b.is_finite()) {
            return Err(config_err!("GaussianBlur.sigma must satisfy 0 < min <= max, got ({a}, {b})"));
        }
        if let Some(k) = self.kernel_size {
            if k < 1 || k % 2 == 0 {
                return Err(config_err!("GaussianBlur.kernel_size must be odd and positive, got {k}"));
            }
        }
        Ok(())
    }
}

/// Where a crop box lies in the source image, in whole pixels (torchvision's `(i, j, h, w)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CropBox {
    /// First row.
    pub top: i64,
    /// First column.
    pub left: i64,
    /// Rows in the box.
    pub height: i64,
    /// Columns in the box.
    pub width: i64,
}

// ---------------------------------------------------------------------------------------------
// Input checks and the per-sample `RandomApply` machinery.
// ---------------------------------------------------------------------------------------------

/// Checks `[B, 3, H, W]` floating point with B, H, W ≥ 1; returns `(B, H, W)`.
pub(crate) fn check_batch(what: &str, images: &Tensor) -> Result<(i64, i64, i64)> {
    let s = images.size();
    if s.len() != 4 || s[1] != 3 || s[0] < 1 || s[2] < 1 || s[3] < 1 {
        return Err(Error::shape(what, "[B, 3, H, W] with B, H, W >= 1", &s));
    }
    if !images.is_floating_point() {
        return Err(Error::Data(format!(
            "{what}: expected floats in [0, 1], got {:?}; convert u8 images with `x.to_kind(Kind::Float) / 255.0` \
             (or use `Augment::apply`, which does it)",
            images.kind()
        )));
    }
    Ok((s[0], s[2], s[3]))
}

fn check_p(what: &str, p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(config_err!("{what}: probability p must be in [0, 1], got {p}"));
    }
    Ok(())
}

fn check_len(what: &str, got: usize, batch: i64) -> Result<()> {
    if got as i64 != batch {
        return Err(Error::shape(what, format!("one value per sample, [{batch}]"), &[got as i64]));
    }
    Ok(())
}

/// Draws, for each of `n` samples, whether an op with probability `p` applies. `p = 0` and
/// `p = 1` draw nothing.
pub fn sample_mask<R: Rng + ?Sized>(n: i64, p: f64, rng: &mut R) -> Vec<bool> {
    if p >= 1.0 {
        vec![true; n as usize]
    } else if p <= 0.0 {
        vec![false; n as usize]
    } else {
        (0..n).map(|_| rng.random_bool(p)).collect()
    }
}

/// Moves a small CPU tensor (parameters, indices, constants) to `device` as `kind` with a
/// non-blocking copy: from pageable memory the copy is staged at once, so the host does not
/// wait for the kernels already queued on the GPU, as a blocking `to_device` would at every
/// op (PyTorch's `x.to(device, non_blocking=True)`). A no-op on the CPU.
fn upload(t: &Tensor, device: Device, kind: Kind) -> Tensor {
    t.to_device_(device, kind, true, false)
}

/// Per-sample values as an f32 tensor `[n, 1, 1, 1]` on `device`, to broadcast over images.
fn per_sample(values: &[f64], device: Device) -> Tensor {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    upload(&Tensor::from_slice(&v), device, Kind::Float).view([-1, 1, 1, 1]) // [n, 1, 1, 1]
}

fn index_tensor(indices: &[i64], device: Device) -> Tensor {
    upload(&Tensor::from_slice(indices), device, Kind::Int64) // [k]
}

/// Applies `f` to the samples selected by `mask` only, as one batched call on that subset, and
/// puts the results back in place. `f` receives the subset `[k, 3, H, W]` and must return the
/// same shape.
fn apply_masked(images: &Tensor, mask: &[bool], f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let selected: Vec<i64> = mask.iter().enumerate().filter(|(_, &m)| m).map(|(i, _)| i as i64).collect();
    if selected.is_empty() {
        Ok(images.shallow_clone())
    } else if selected.len() == mask.len() {
        f(images)
    } else {
        let idx = index_tensor(&selected, images.device()); // [k]
        let out = f(&images.index_select(0, &idx))?; // [k, 3, H, W]
        Ok(images.index_copy(0, &idx, &out)) // [B, 3, H, W]
    }
}

// ---------------------------------------------------------------------------------------------
// RandomResizedCrop.
// ---------------------------------------------------------------------------------------------

/// Draws one crop box per sample with torchvision's `RandomResizedCrop.get_params`: up to 10
/// tries of (area ~ U(scale) · H·W, log-ratio ~ U(log ratio)), `w = round(√(area·ratio))`,
/// `h = round(√(area/ratio))`, accepted when it fits, at a uniform position; else the
/// fallback, a central crop clamped to the ratio range.
///
/// # Errors
/// An invalid `crop` config or a non-positive image size.
pub fn sample_crop_boxes<R: Rng + ?Sized>(
    height: i64,
    width: i64,
    n: i64,
    crop: &RandomResizedCrop,
    rng: &mut R,
) -> Result<Vec<CropBox>> {
    crop.validate()?;
    if height < 1 || width < 1 || n < 0 {
        return Err(config_err!(
            "sample_crop_boxes: need height, width >= 1 and n >= 0, got {height}x{width}, n = {n}"
        ));
    }
    let area = (height * width) as f64;
    let (log_r0, log_r1) = (crop.ratio.0.ln(), crop.ratio.1.ln());
    let mut boxes = Vec::with_capacity(n as usize);
    'sample: for _ in 0..n {
        for _ in 0..10 {
            let target_area = area * uniform(rng, crop.scale.0, crop.scale.1);
            let aspect = uniform(rng, log_r0, log_r1).exp();
            let w = (target_area * aspect).sqrt().round() as i64;
            let h = (target_area / aspect).sqrt().round() as i64;
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                boxes.push(CropBox { top, left, height: h, width: w });
                continue 'sample;
            }
        }
        // Fallback to a central crop (torchvision).
        let in_ratio = width as f64 / height as f64;
        let (h, w) = if in_ratio < crop.ratio.0 {
            (((width as f64 / crop.ratio.0).round() as i64).clamp(1, height), width)
        } else if in_ratio > crop.ratio.1 {
            (height, ((height as f64 * crop.ratio.1).round() as i64).clamp(1, width))
        } else {
            (height, width)
        };
        boxes.push(CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w });
    }
    Ok(boxes)
}

/// `U[lo, hi)`, and exactly `lo` when the range is empty (torchvision's `uniform_(a, a)`).
fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// Crops each sample to its own box and resizes it to `size × size`, bilinearly, for the whole
/// batch in one `grid_sampler` call.
///
/// Output pixel `x` of sample `b` reads source column `left_b + (x + 0.5)·width_b/size − 0.5`
/// (the `align_corners=False` convention of `F.interpolate`), so for an upscaled box the
/// result equals `F.interpolate(crop, size, mode="bilinear", align_corners=False)`.
///
/// Deviation: torchvision resizes with `antialias=True` (and the Barlow Twins code bicubically);
/// here there is no antialiasing filter when a box is shrunk, and at a box's edge the bilinear
/// weights reach half a pixel into the image outside the box instead of clamping to the box's
/// border. Both change pixels by a fraction of a grey level on natural images; neither changes
/// what the augmentation teaches.
///
/// # Shapes
/// `images` `[B, 3, H, W]`, `boxes` B boxes → `[B, 3, size, size]`.
///
/// # Errors
/// A wrong shape, a box count other than B, a box outside the image, `size < 1`.
pub fn resized_crop(images: &Tensor, boxes: &[CropBox], size: i64) -> Result<Tensor> {
    let (b, h, w) = check_batch("resized_crop images", images)?;
    check_len("resized_crop boxes", boxes.len(), b)?;
    if size < 1 {
        return Err(config_err!("resized_crop: size must be at least 1, got {size}"));
    }
    if let Some(bad) = boxes.iter().find(|c| {
        c.top < 0 || c.left < 0 || c.height < 1 || c.width < 1 || c.top + c.height > h || c.left + c.width > w
    }) {
        return Err(Error::Data(format!("resized_crop: box {bad:?} does not lie inside the {h}x{w} image")));
    }
    let device = images.device();
    let col = |f: fn(&CropBox) -> i64| -> Tensor {
        let v: Vec<f32> = boxes.iter().map(|c| f(c) as f32).collect();
        upload(&Tensor::from_slice(&v), device, Kind::Float)
    };
    let (top, left) = (col(|c| c.top), col(|c| c.left)); // [B], [B]
    let (bh, bw) = (col(|c| c.height), col(|c| c.width)); // [B], [B]

    // Normalised source coordinates in [-1, 1] (align_corners=False: -1 and 1 are pixel edges).
    let steps = Tensor::arange(size, (Kind::Float, device)) + 0.5; // [S] output pixel centres
    let (sx, sy) = ((bw / size as f64).view([b, 1, 1]), (bh / size as f64).view([b, 1, 1])); // [B, 1, 1] each
    let gx = (left.view([b, 1, 1]) + steps.view([1, 1, size]) * sx) * (2.0 / w as f64) - 1.0; // [B, 1, S]
    let gy = (top.view([b, 1, 1]) + steps.view([1, size, 1]) * sy) * (2.0 / h as f64) - 1.0; // [B, S, 1]
    let grid = Tensor::stack(&[gx.expand([b, size, size], false), gy.expand([b, size, size], false)], -1); // [B, S, S, 2]
    let grid = grid.to_kind(images.kind());
    // interpolation 0 = bilinear, padding 1 = border.
    Ok(images.grid_sampler(&grid, 0, 1, false)) // [B, 3, S, S]
}

/// RandomResizedCrop on every sample, each with its own box (see [`sample_crop_boxes`] and
/// [`resized_crop`]).
///
/// # Shapes
/// `[B, 3, H, W]` → `[B, 3, crop.size, crop.size]`.
///
/// # Errors
/// A wrong shape or an invalid config.
///
/// # Example
/// ```
/// use selfsup::augment::{self, ops};
/// use selfsup::tch::{Kind, Tensor, Device};
/// let images = Tensor::rand([8, 3, 96, 96], (Kind::Float, Device::Cpu));
/// let mut rng = augment::rng(0);
/// let crops = ops::random_resized_crop(&images, &ops::RandomResizedCrop::new(64).scale(0.2, 1.0), &mut rng)?;
/// assert_eq!(crops.size(), [8, 3, 64, 64]);
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn random_resized_crop<R: Rng + ?Sized>(images: &Tensor, crop: &RandomResizedCrop, rng: &mut R) -> Result<Tensor> {
    let (b, h, w) = check_batch("random_resized_crop images", images)?;
    let boxes = sample_crop_boxes(h, w, b, crop, rng)?;
    resized_crop(images, &boxes, crop.size)
}

// ---------------------------------------------------------------------------------------------
// Horizontal flip.
// ---------------------------------------------------------------------------------------------

/// Mirrors every image left-right.
///
/// # Shapes
/// `[B, 3, H, W]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape.
pub fn flip_horizontal(images: &Tensor) -> Result<Tensor> {
    check_batch("flip_horizontal images", images)?;
    Ok(images.flip([3])) // [B, 3, H, W]
}

/// RandomHorizontalFlip: each sample is mirrored with probability `p` (0.5 in every paper).
///
/// # Shapes
/// `[B, 3, H, W]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape or `p` outside `[0, 1]`.
pub fn hflip<R: Rng + ?Sized>(images: &Tensor, p: f64, rng: &mut R) -> Result<Tensor> {
    let (b, _, _) = check_batch("hflip images", images)?;
    check_p("hflip", p)?;
    let mask = sample_mask(b, p, rng);
    apply_masked(images, &mask, |x| Ok(x.flip([3])))
}

// ---------------------------------------------------------------------------------------------
// Grayscale.
// ---------------------------------------------------------------------------------------------

/// Luma `0.299 R + 0.587 G + 0.114 B` per pixel, `[B, 1, H, W]`.
fn luma(images: &Tensor) -> Tensor {
    let wts = upload(&Tensor::from_slice(&LUMA_WEIGHTS), images.device(), images.kind()).view([1, 3, 1, 1]);
    (images * wts).sum_dim_intlist(1, true, images.kind()) // [B, 1, H, W]
}

/// Converts every image to grayscale (ITU-R 601-2 luma, [`LUMA_WEIGHTS`]) and keeps three equal
/// channels, as torchvision's `RandomGrayscale` does, so the network input keeps its shape.
///
/// # Shapes
/// `[B, 3, H, W]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape.
pub fn to_grayscale(images: &Tensor) -> Result<Tensor> {
    let (b, h, w) = check_batch("to_grayscale images", images)?;
    Ok(luma(images).expand([b, 3, h, w], false).contiguous()) // [B, 3, H, W]
}

/// RandomGrayscale: each sample becomes grayscale with probability `p` ("color dropping",
/// p = 0.2 in SimCLR, MoCo, BYOL and Barlow Twins).
///
/// # Shapes
/// `[B, 3, H, W]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape or `p` outside `[0, 1]`.
pub fn grayscale<R: Rng + ?Sized>(images: &Tensor, p: f64, rng: &mut R) -> Result<Tensor> {
    let (b, h, w) = check_batch("grayscale images", images)?;
    check_p("grayscale", p)?;
    let mask = sample_mask(b, p, rng);
    apply_masked(images, &mask, |x| {
        let k = x.size()[0];
        Ok(luma(x).expand([k, 3, h, w], false).contiguous()) // [k, 3, H, W]
    })
}

// ---------------------------------------------------------------------------------------------
// ColorJitter.
// ---------------------------------------------------------------------------------------------

/// Multiplies sample `b` by `factors[b]` and clamps to `[0, 1]` (torchvision's
/// `adjust_brightness`: a blend with black).
///
/// # Shapes
/// `[B, 3, H, W]`, `factors` `[B]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape, a factor count other than B, a negative factor.
pub fn adjust_brightness(images: &Tensor, factors: &[f64]) -> Result<Tensor> {
    check_factors("adjust_brightness", images, factors, false)?;
    Ok(brightness_t(images, &per_sample(factors, images.device())))
}

/// Blends sample `b` with the mean of its own grayscale image:
/// `clamp(f·x + (1 − f)·mean(gray(x)), 0, 1)` (torchvision's `adjust_contrast`).
///
/// # Shapes
/// `[B, 3, H, W]`, `factors` `[B]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape, a factor count other than B, a negative factor.
pub fn adjust_contrast(images: &Tensor, factors: &[f64]) -> Result<Tensor> {
    check_factors("adjust_contrast", images, factors, false)?;
    Ok(contrast_t(images, &per_sample(factors, images.device())))
}

/// Blends sample `b` with its grayscale version: `clamp(f·x + (1 − f)·gray(x), 0, 1)`
/// (torchvision's `adjust_saturation`; `f = 0` is grayscale, `f = 1` the identity).
///
/// # Shapes
/// `[B, 3, H, W]`, `factors` `[B]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape, a factor count other than B, a negative factor.
pub fn adjust_saturation(images: &Tensor, factors: &[f64]) -> Result<Tensor> {
    check_factors("adjust_saturation", images, factors, false)?;
    Ok(saturation_t(images, &per_sample(factors, images.device())))
}

/// Rotates the hue of sample `b` by `shifts[b]` turns (in `[-0.5, 0.5]`): RGB → HSV,
/// `h ← (h + shift) mod 1`, HSV → RGB, as torchvision's `adjust_hue` (pure red shifted by 1/3
/// is pure green).
///
/// Computed without materialising HSV: the hue in sixths of a turn from torchvision's three
/// sector formulas, then the closed form `c_n = v − v·s·clamp(min(k, 4 − k), 0, 1)`,
/// `k = (n + 6h) mod 6`, n = 5, 3, 1 for R, G, B, which equals torchvision's six-sector table
/// (and `v·s` is the chroma `max − min`). About a dozen kernels, no gather.
///
/// # Shapes
/// `[B, 3, H, W]`, `shifts` `[B]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape, a shift count other than B, a shift outside `[-0.5, 0.5]`.
pub fn adjust_hue(images: &Tensor, shifts: &[f64]) -> Result<Tensor> {
    check_factors("adjust_hue", images, shifts, true)?;
    Ok(hue_t(images, &per_sample(shifts, images.device())))
}

fn check_factors(what: &str, images: &Tensor, factors: &[f64], hue: bool) -> Result<()> {
    let (b, _, _) = check_batch(&format!("{what} images"), images)?;
    check_len(&format!("{what} factors"), factors.len(), b)?;
    let ok = |f: f64| if hue { (-0.5..=0.5).contains(&f) } else { f >= 0.0 && f.is_finite() };
    if let Some(bad) = factors.iter().find(|&&f| !ok(f)) {
        let range = if hue { "in [-0.5, 0.5]" } else { ">= 0" };
        return Err(config_err!("{what}: every factor must be {range}, got {bad}"));
    }
    Ok(())
}

fn brightness_t(x: &Tensor, f: &Tensor) -> Tensor {
    let mut y = x * f; // [k, 3, H, W]
    let _ = y.clamp_(0.0, 1.0);
    y
}

fn contrast_t(x: &Tensor, f: &Tensor) -> Tensor {
    let mean = luma(x).mean_dim([1i64, 2, 3].as_slice(), true, x.kind()); // [k, 1, 1, 1]
    let mut y = mean.lerp_tensor(x, f); // [k, 3, H, W]: f·x + (1 − f)·mean
    let _ = y.clamp_(0.0, 1.0);
    y
}

fn saturation_t(x: &Tensor, f: &Tensor) -> Tensor {
    let gray = luma(x); // [k, 1, H, W]
    let mut y = gray.lerp_tensor(x, f); // [k, 3, H, W]: f·x + (1 − f)·gray
    let _ = y.clamp_(0.0, 1.0);
    y
}

fn hue_t(x: &Tensor, shift: &Tensor) -> Tensor {
    // Fresh temporaries are updated in place (`let _ = t.op_()`): on the CPU every new
    // full-size tensor costs page faults, and it halves the memory traffic on the GPU.
    //
    // RGB -> hue in sixths of a turn, torchvision's `_rgb2hsv` with its three sectors selected
    // by exact 0/1 lerps: (g − b)/c where max = r, else 2 + (b − r)/c where max = g, else
    // 4 + (r − g)/c (c: the chroma max − min; grey pixels have c = 0 and all numerators 0).
    let kind = x.kind();
    let r = x.narrow(1, 0, 1); // [k, 1, H, W]
    let g = x.narrow(1, 1, 1); // [k, 1, H, W]
    let b = x.narrow(1, 2, 1); // [k, 1, H, W]
    let maxc = x.amax([1i64].as_slice(), true); // [k, 1, H, W] = V
    let mut chroma = x.amin([1i64].as_slice(), true); // [k, 1, H, W]
    let _ = chroma.neg_().g_add_(&maxc); // V − min = V·S
    let mut h6 = &r - &g + &chroma * 4.0; // [k, 1, H, W] blue sector
    let _ = h6.lerp_tensor_(&(&b - &r + &chroma * 2.0), &maxc.eq_tensor(&g).to_kind(kind)); // green sector
    let _ = h6.lerp_tensor_(&(&g - &b), &maxc.eq_tensor(&r).to_kind(kind)); // red sector wins ties
    let _ = h6.g_div_(&chroma.clamp_min(1e-12)); // [k, 1, H, W] in [-1, 5]
    let _ = h6.g_add_(&(shift * 6.0)).remainder_(6.0); // rotated hue in [0, 6)

    // Back with the closed form of `_hsv2rgb`: c_n = V − V·S·ramp(k), k = (h + n) mod 6,
    // n = 5, 3, 1 for R, G, B, ramp(k) = clamp(min(k, 4 − k), 0, 1) = clamp(2 − |k − 2|, 0, 1).
    let n = upload(&Tensor::from_slice(&[5.0f32, 3.0, 1.0]), x.device(), kind).view([1, 3, 1, 1]);
    let mut k = h6 + n; // [k, 3, H, W] in [1, 11)
    let _ = k.remainder_(6.0).g_sub_scalar_(2.0).abs_().neg_().g_add_scalar_(2.0).clamp_(0.0, 1.0); // ramp
    let _ = k.g_mul_(&chroma).neg_().g_add_(&maxc); // V − V·S·ramp
    k // [k, 3, H, W]
}

/// Per-sample ColorJitter parameters, as torchvision's `ColorJitter.get_params` draws them.
#[derive(Debug, Clone, PartialEq)]
pub struct JitterParams {
    /// For each sample, the order of the four parts (0 brightness, 1 contrast, 2 saturation,
    /// 3 hue): a random permutation, as `torch.randperm(4)`.
    pub order: Vec<[usize; 4]>,
    /// Brightness factor per sample.
    pub brightness: Vec<f64>,
    /// Contrast factor per sample.
    pub contrast: Vec<f64>,
    /// Saturation factor per sample.
    pub saturation: Vec<f64>,
    /// Hue shift per sample.
    pub hue: Vec<f64>,
}

/// Draws ColorJitter parameters for `n` samples.
///
/// # Errors
/// An invalid `jitter` config.
pub fn sample_jitter<R: Rng + ?Sized>(n: i64, jitter: &ColorJitter, rng: &mut R) -> Result<JitterParams> {
    jitter.validate()?;
    let mut params = JitterParams {
        order: Vec::with_capacity(n as usize),
        brightness: Vec::with_capacity(n as usize),
        contrast: Vec::with_capacity(n as usize),
        saturation: Vec::with_capacity(n as usize),
        hue: Vec::with_capacity(n as usize),
    };
    let factor = |rng: &mut R, s: f64| uniform(rng, (1.0 - s).max(0.0), 1.0 + s);
    for _ in 0..n {
        let mut order = [0, 1, 2, 3];
        order.shuffle(rng);
        params.order.push(order);
        params.brightness.push(factor(rng, jitter.brightness));
        params.contrast.push(factor(rng, jitter.contrast));
        params.saturation.push(factor(rng, jitter.saturation));
        params.hue.push(uniform(rng, -jitter.hue, jitter.hue));
    }
    Ok(params)
}

/// Applies ColorJitter with the given per-sample parameters: for each sample its four parts in
/// its own order. Parts whose strength in `jitter` is 0 are left out, as torchvision does.
///
/// Batched with few kernels, whatever B: brightness, contrast and saturation are all the same
/// blend `clamp(ref + f·(x − ref), 0, 1)` with `ref` = 0, `mean(gray(x))` or `gray(x)`, so at
/// each of the four positions one blend serves every sample, with per-sample `f` and `ref`
/// weights (`f = 1`, the identity, for a sample whose part there is the hue); the hue then runs
/// once on the samples whose part at that position it is.
///
/// # Shapes
/// `[B, 3, H, W]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape or parameters for a batch of another size.
pub fn jitter_with(images: &Tensor, jitter: &ColorJitter, params: &JitterParams) -> Result<Tensor> {
    let (b, _, _) = check_batch("jitter_with images", images)?;
    for (what, len) in [
        ("jitter_with order", params.order.len()),
        ("jitter_with brightness", params.brightness.len()),
        ("jitter_with contrast", params.contrast.len()),
        ("jitter_with saturation", params.saturation.len()),
        ("jitter_with hue", params.hue.len()),
    ] {
        check_len(what, len, b)?;
    }
    let device = images.device();
    let enabled = [jitter.brightness > 0.0, jitter.contrast > 0.0, jitter.saturation > 0.0, jitter.hue > 0.0];
    let n = b as usize;
    let mut x = images.shallow_clone(); // [B, 3, H, W]
    for position in 0..4 {
        // Per-sample blend factor f and weights of gray(x) and of its mean in `ref`, and the hue
        // shift, packed into one upload: rows f, w_gray, w_mean, shift.
        let mut rows = vec![1.0f32; n];
        rows.extend(std::iter::repeat_n(0.0f32, 3 * n));
        let (mut blends, mut hue_members) = (false, Vec::new());
        for (i, order) in params.order.iter().enumerate() {
            let part = order[position];
            if !enabled[part] {
                continue;
            }
            match part {
                0 => rows[i] = params.brightness[i] as f32,
                1 => (rows[i], rows[2 * n + i]) = (params.contrast[i] as f32, 1.0),
                2 => (rows[i], rows[n + i]) = (params.saturation[i] as f32, 1.0),
                _ => {
                    rows[3 * n + i] = params.hue[i] as f32;
                    hue_members.push(i as i64);
                }
            }
            blends |= part < 3;
        }
        let rows = upload(&Tensor::from_slice(&rows), device, images.kind()).view([4, b, 1, 1, 1]); // [4, B, 1, 1, 1]
        if blends {
            let gray = luma(&x); // [B, 1, H, W]
            let mean = gray.mean_dim([1i64, 2, 3].as_slice(), true, x.kind()); // [B, 1, 1, 1]
            let reference = gray * rows.get(1) + mean * rows.get(2); // [B, 1, H, W]
            let mut blended = reference.lerp_tensor(&x, &rows.get(0)); // [B, 3, H, W]
            let _ = blended.clamp_(0.0, 1.0);
            x = blended;
        }
        if hue_members.len() == n {
            x = hue_t(&x, &rows.get(3)); // [B, 3, H, W]
        } else if !hue_members.is_empty() {
            let idx = index_tensor(&hue_members, device); // [k]
            let rotated = hue_t(&x.index_select(0, &idx), &rows.get(3).index_select(0, &idx)); // [k, 3, H, W]
            x = x.index_copy(0, &idx, &rotated); // [B, 3, H, W]
        }
    }
    Ok(x)
}

/// ColorJitter applied with probability `p` per sample (torchvision's
/// `RandomApply([ColorJitter(b, c, s, h)], p)`), each jittered sample with its own factors and
/// its own random order of the four parts.
///
/// # Shapes
/// `[B, 3, H, W]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape, an invalid config, `p` outside `[0, 1]`.
///
/// # Example
/// ```
/// use selfsup::augment::{self, ops};
/// use selfsup::tch::{Kind, Tensor, Device};
/// let images = Tensor::rand([8, 3, 32, 32], (Kind::Float, Device::Cpu));
/// let mut rng = augment::rng(0);
/// let jittered = ops::color_jitter(&images, &ops::ColorJitter::new(0.4, 0.4, 0.4, 0.1), 0.8, &mut rng)?;
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn color_jitter<R: Rng + ?Sized>(images: &Tensor, jitter: &ColorJitter, p: f64, rng: &mut R) -> Result<Tensor> {
    let (b, _, _) = check_batch("color_jitter images", images)?;
    jitter.validate()?;
    check_p("color_jitter", p)?;
    let (mask, params) = draw_jitter(b, jitter, p, rng)?;
    apply_masked(images, &mask, |x| jitter_with(x, jitter, &params))
}

/// The draws of [`color_jitter`] for `b` samples: which samples it applies to, then the
/// parameters of those (in batch order). Shared with the CPU path ([`super::cpu`]), so both
/// take the same numbers from the generator.
pub(crate) fn draw_jitter<R: Rng + ?Sized>(
    b: i64,
    jitter: &ColorJitter,
    p: f64,
    rng: &mut R,
) -> Result<(Vec<bool>, JitterParams)> {
    let mask = sample_mask(b, p, rng);
    let k = mask.iter().filter(|&&m| m).count() as i64;
    Ok((mask, sample_jitter(k, jitter, rng)?))
}

// ---------------------------------------------------------------------------------------------
// Gaussian blur.
// ---------------------------------------------------------------------------------------------

/// The normalised 1-D Gaussian kernel of side `kernel_size` for `sigma`, as torchvision's
/// `_get_gaussian_kernel1d`: `exp(-x² / 2σ²)` at `x = -k/2 ..= k/2`, divided by its sum.
///
/// # Errors
/// An even or non-positive kernel size, a non-positive σ.
pub fn gaussian_kernel(sigma: f64, kernel_size: i64) -> Result<Vec<f64>> {
    if kernel_size < 1 || kernel_size % 2 == 0 {
        return Err(config_err!("gaussian_kernel: kernel_size must be odd and positive, got {kernel_size}"));
    }
    if !(sigma > 0.0 && sigma.is_finite()) {
        return Err(config_err!("gaussian_kernel: sigma must be positive, got {sigma}"));
    }
    let half = (kernel_size / 2) as f64;
    let pdf: Vec<f64> = (0..kernel_size).map(|i| (-0.5 * ((i as f64 - half) / sigma).powi(2)).exp()).collect();
    let sum: f64 = pdf.iter().sum();
    Ok(pdf.into_iter().map(|v| v / sum).collect())
}

/// Blurs sample `b` with a Gaussian of σ = `sigmas[b]`, kernel `kernel_size × kernel_size`,
/// reflect padding (torchvision's `gaussian_blur`).
///
/// Batched as one separable, grouped convolution: the batch is folded into channels
/// (`[1, 3B, H, W]`) and each channel gets its own 1-D kernel, horizontally then vertically.
///
/// # Shapes
/// `[B, 3, H, W]`, `sigmas` `[B]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape, a σ count other than B, a non-positive σ, an even kernel, or a kernel whose
/// half-width reaches the image side (reflect padding needs `kernel_size / 2 < H, W`).
pub fn blur(images: &Tensor, sigmas: &[f64], kernel_size: i64) -> Result<Tensor> {
    let (b, h, w) = check_batch("blur images", images)?;
    check_len("blur sigmas", sigmas.len(), b)?;
    if kernel_size < 1 || kernel_size % 2 == 0 {
        return Err(config_err!("blur: kernel_size must be odd and positive, got {kernel_size}"));
    }
    if let Some(bad) = sigmas.iter().find(|&&s| !(s > 0.0 && s.is_finite())) {
        return Err(config_err!("blur: every sigma must be positive, got {bad}"));
    }
    check_blur_kernel(kernel_size, h, w)?;
    let half = kernel_size / 2;
    if kernel_size == 1 {
        return Ok(images.shallow_clone());
    }
    let device = images.device();
    let kind = images.kind();
    let xs = Tensor::arange(kernel_size, (kind, device)) - half as f64; // [k]
    let sig = per_sample(sigmas, device).view([b, 1]).to_kind(kind); // [B, 1]
    let pdf = (xs.view([1, kernel_size]) / sig).square().g_mul_scalar(-0.5).exp(); // [B, k]
    let kernel = &pdf / pdf.sum_dim_intlist(1, true, kind); // [B, k]
    let kernel = kernel.unsqueeze(1).expand([b, 3, kernel_size], false).reshape([3 * b, 1, 1, kernel_size]); // [3B, 1, 1, k]
    let x = images.reshape([1, 3 * b, h, w]).pad([half, half, half, half], "reflect", None); // [1, 3B, H+2r, W+2r]
    let x = x.conv2d(&kernel, None::<Tensor>, 1, 0, 1, 3 * b); // [1, 3B, H+2r, W]
    let x = x.conv2d(&kernel.view([3 * b, 1, kernel_size, 1]), None::<Tensor>, 1, 0, 1, 3 * b); // [1, 3B, H, W]
    Ok(x.view([b, 3, h, w])) // [B, 3, H, W]
}

/// Gaussian blur applied with probability `p` per sample, each blurred sample with its own
/// σ ~ U(`cfg.sigma`); kernel from [`GaussianBlur::kernel_for`] the image side.
///
/// Deviation: MoCo v2, BYOL and Barlow Twins blur with PIL's `GaussianBlur(radius=σ)`, whose
/// support is not cut at 10% of the image; SimCLR's fixed 10% kernel is used here for all.
///
/// # Shapes
/// `[B, 3, H, W]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape, an invalid config, `p` outside `[0, 1]`, a kernel too large for the image.
pub fn gaussian_blur<R: Rng + ?Sized>(images: &Tensor, cfg: &GaussianBlur, p: f64, rng: &mut R) -> Result<Tensor> {
    let (b, h, w) = check_batch("gaussian_blur images", images)?;
    cfg.validate()?;
    check_p("gaussian_blur", p)?;
    let kernel_size = cfg.kernel_for(h.min(w));
    let (mask, sigmas) = draw_blur(b, cfg, p, rng);
    if sigmas.is_empty() {
        return Ok(images.shallow_clone());
    }
    apply_masked(images, &mask, |x| blur(x, &sigmas, kernel_size))
}

/// The draws of [`gaussian_blur`] for `b` samples: which samples it applies to, then a σ for
/// each of those (in batch order). Shared with the CPU path ([`super::cpu`]).
pub(crate) fn draw_blur<R: Rng + ?Sized>(b: i64, cfg: &GaussianBlur, p: f64, rng: &mut R) -> (Vec<bool>, Vec<f64>) {
    let mask = sample_mask(b, p, rng);
    let sigmas = mask.iter().filter(|&&m| m).map(|_| uniform(rng, cfg.sigma.0, cfg.sigma.1)).collect();
    (mask, sigmas)
}

/// Checks that a blur kernel fits an `h × w` image (reflect padding needs `kernel_size / 2 <
/// side`).
pub(crate) fn check_blur_kernel(kernel_size: i64, h: i64, w: i64) -> Result<()> {
    let half = kernel_size / 2;
    if half >= h || half >= w {
        return Err(config_err!(
            "blur: kernel {kernel_size} is too large for {h}x{w} images (reflect padding needs kernel_size / 2 < side); \
             use a smaller GaussianBlur.kernel_size"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Solarize and Normalize.
// ---------------------------------------------------------------------------------------------

/// Inverts every pixel at or above `threshold`: `x ≥ t ? 1 − x : x` (torchvision's
/// `solarize`; BYOL: "x ↦ x·1{x<0.5} + (1 − x)·1{x≥0.5}").
///
/// # Shapes
/// `[B, 3, H, W]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape or a threshold outside `[0, 1]`.
pub fn solarize_all(images: &Tensor, threshold: f64) -> Result<Tensor> {
    check_batch("solarize_all images", images)?;
    check_threshold(threshold)?;
    Ok(solarize_t(images, threshold))
}

fn check_threshold(threshold: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&threshold) {
        return Err(config_err!("solarize: threshold must be in [0, 1] (images are in [0, 1]), got {threshold}"));
    }
    Ok(())
}

fn solarize_t(x: &Tensor, threshold: f64) -> Tensor {
    (x.neg() + 1.0).where_self(&x.ge(threshold), x) // [k, 3, H, W]
}

/// Solarize applied with probability `p` per sample, at `threshold` (0.5 in BYOL).
///
/// # Shapes
/// `[B, 3, H, W]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape, a threshold or `p` outside `[0, 1]`.
pub fn solarize<R: Rng + ?Sized>(images: &Tensor, threshold: f64, p: f64, rng: &mut R) -> Result<Tensor> {
    let (b, _, _) = check_batch("solarize images", images)?;
    check_threshold(threshold)?;
    check_p("solarize", p)?;
    let mask = sample_mask(b, p, rng);
    apply_masked(images, &mask, |x| Ok(solarize_t(x, threshold)))
}

/// `(x − mean) / std` per channel, with [`Normalization`] (ImageNet's statistics in every
/// preset, torchvision's `Normalize` in the papers' code).
///
/// # Shapes
/// `[B, 3, H, W]` → `[B, 3, H, W]`.
///
/// # Errors
/// A wrong shape or a non-positive std.
pub fn normalize(images: &Tensor, normalization: &Normalization) -> Result<Tensor> {
    check_batch("normalize images", images)?;
    if normalization.std.iter().any(|&s| s.is_nan() || s <= 0.0) {
        return Err(config_err!("normalize: std must be positive, got {:?}", normalization.std));
    }
    // Same as `Normalization::normalize`, with non-blocking uploads of mean and std.
    let (device, kind) = (images.device(), images.kind());
    let mean = upload(&Tensor::from_slice(&normalization.mean), device, kind).view([1, 3, 1, 1]);
    let std = upload(&Tensor::from_slice(&normalization.std), device, kind).view([1, 3, 1, 1]);
    let mut x = images - mean; // [B, 3, H, W]
    let _ = x.g_div_(&std);
    Ok(x)
}
