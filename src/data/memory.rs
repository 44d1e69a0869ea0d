//! In-memory data: an [`ImageSet`] from tensors or `ndarray` arrays a user already has (B2), and
//! resizing a set (S0.6: CIFAR-10 at 32×32 resized for an encoder trained at 96×96).
//!
//! Why a layer over [`ImageSet::new`]: arrays from elsewhere come channels-last
//! (`[N, H, W, 3]`, numpy/PIL order), in grayscale, or as floats in `[0, 1]`. These functions
//! accept those, convert once to the kit's `[N, 3, H, W]` `u8`, and say what they expected
//! when the input is none of them.
//!
//! ```
//! use selfsup::data::memory;
//! use selfsup::ndarray::Array4;
//! let pixels = Array4::<u8>::zeros((4, 8, 8, 3)); // channels-last, as numpy images are
//! let set = memory::from_ndarray(&pixels, Some(&[0, 1, 0, 1]), vec!["cat".into(), "dog".into()], "mine")?;
//! assert_eq!(set.images.size(), [4, 3, 8, 8]);
//! # Ok::<(), selfsup::Error>(())
//! ```
use super::ImageSet;
use crate::error::{Error, Result};
use ndarray::{Array4, ArrayBase, Data, Dimension};
use tch::{Device, Kind, Tensor};

/// Builds a set from images and optional labels.
///
/// `images` may be `[N, 3, H, W]` (channels first), `[N, H, W, 3]` (channels last),
/// `[N, 1, H, W]`, `[N, H, W, 1]` or `[N, H, W]` (grayscale, repeated into three channels), of
/// kind `u8` (0..=255) or a float kind with values in `[0, 1]` (rounded to `u8`); `[N, 3, H, 3]`
/// is read as channels first. The result
/// is always `[N, 3, H, W]` `u8` on the CPU. Labels are any integer kind, `[N]`. When
/// `class_names` is empty and labels are given, the classes are named "0", "1", … up to the
/// largest label.
///
/// # Errors
/// [`Error::Shape`] for any other layout, [`Error::Data`] for floats outside `[0, 1]`, a
/// non-integer label kind, or labels outside `0..class_names.len()`.
pub fn from_tensors(
    images: &Tensor,
    labels: Option<&Tensor>,
    class_names: Vec<String>,
    name: &str,
) -> Result<ImageSet> {
    let images = to_nchw_u8(images, name)?;
    let labels = match labels {
        None => None,
        Some(l) => {
            if l.is_floating_point() || l.kind() == Kind::Bool {
                return Err(Error::Data(format!(
                    "labels of '{name}' must be integers, got {:?}; convert with `labels.to_kind(Kind::Int64)`",
                    l.kind()
                )));
            }
            Some(l.to_device(Device::Cpu).to_kind(Kind::Int64))
        }
    };
    let class_names = match (&labels, class_names.is_empty()) {
        (Some(l), true) if l.numel() > 0 => {
            let max = l.max().int64_value(&[]);
            (0..=max.max(0)).map(|c| c.to_string()).collect()
        }
        _ => class_names,
    };
    ImageSet::new(images, labels, class_names, name)
}

/// Builds a set from an `ndarray` array of any element type `tch` knows (`u8`, `f32`, …) in one
/// of the layouts [`from_tensors`] accepts, with optional labels.
///
/// # Errors
/// As [`from_tensors`]; also [`Error::Shape`] when `labels` does not hold one label per image.
pub fn from_ndarray<S, D>(
    images: &ArrayBase<S, D>,
    labels: Option<&[i64]>,
    class_names: Vec<String>,
    name: &str,
) -> Result<ImageSet>
where
    S: Data,
    S::Elem: tch::kind::Element + Clone,
    D: Dimension,
{
    let shape: Vec<i64> = images.shape().iter().map(|&d| d as i64).collect();
    let standard = images.as_standard_layout();
    let flat =
        standard.as_slice().ok_or_else(|| Error::Data(format!("images of '{name}': array is not contiguous")))?;
    let tensor = Tensor::from_slice(flat).view(shape.as_slice());
    if let Some(l) = labels {
        if Some(&(l.len() as i64)) != shape.first() {
            return Err(Error::shape(
                format!("labels of '{name}'"),
                format!("[{}]", shape.first().copied().unwrap_or(0)),
                &[l.len() as i64],
            ));
        }
    }
    let labels = labels.map(Tensor::from_slice);
    from_tensors(&tensor, labels.as_ref(), class_names, name)
}

/// The images of a set as an `ndarray` array `[N, 3, H, W]` of `u8` (a copy).
///
/// # Errors
/// [`Error::Torch`] if the tensor cannot be read.
pub fn to_ndarray(set: &ImageSet) -> Result<Array4<u8>> {
    let s = set.images.size();
    let flat = set.images.contiguous();
    let values = Vec::<u8>::try_from(flat.view([-1]))?;
    Ok(Array4::from_shape_vec((s[0] as usize, s[1] as usize, s[2] as usize, s[3] as usize), values)?)
}

/// The set with every image resized to `height × width` (bilinear, antialiased when shrinking,
/// as torchvision's `Resize`); labels and class names are kept. Works through the set in chunks
/// of 1,024 images so that the float copies stay small.
///
/// # Errors
/// [`Error::Config`] for a zero size.
///
/// # Example
/// ```
/// use selfsup::data::{memory, synthetic::{self, SyntheticConfig}, Split};
/// let cifar_like = synthetic::load(Split::Test, &SyntheticConfig::tiny())?; // 32x32
/// let big = memory::resize(&cifar_like, 96, 96)?;
/// assert_eq!(big.image_size(), (96, 96));
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn resize(set: &ImageSet, height: i64, width: i64) -> Result<ImageSet> {
    if height <= 0 || width <= 0 {
        return Err(Error::Config(format!("resize: height and width must be positive, got {height}x{width}")));
    }
    if set.image_size() == (height, width) {
        return Ok(set.clone());
    }
    let n = set.len() as i64;
    let mut parts = Vec::new();
    let chunk = 1024;
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let x = set.images.narrow(0, start, len).to_kind(Kind::Float); // [B, 3, H, W], 0..255
        let y = x.f_internal_upsample_bilinear2d_aa([height, width], false, None, None)?; // [B, 3, h, w]
        parts.push(y.round().clamp(0.0, 255.0).to_kind(Kind::Uint8));
        start += len;
    }
    let images = if parts.is_empty() {
        Tensor::zeros([0, 3, height, width], (Kind::Uint8, Device::Cpu))
    } else {
        Tensor::cat(&parts, 0)
    };
    ImageSet::new(
        images,
        set.labels.as_ref().map(Tensor::shallow_clone),
        set.class_names.clone(),
        format!("{} ({height}x{width})", set.name),
    )
}

/// Converts any accepted layout and kind to `[N, 3, H, W]` `u8`.
fn to_nchw_u8(images: &Tensor, name: &str) -> Result<Tensor> {
    let s = images.size();
    let expected = "[N, 3, H, W], [N, H, W, 3], [N, 1, H, W], [N, H, W, 1] or [N, H, W]";
    let x = images.to_device(Device::Cpu);
    let x = match s.as_slice() {
        [_, 3, _, _] => x,
        [_, _, _, 3] => x.permute([0, 3, 1, 2]),
        [n, 1, h, w] => x.expand([*n, 3, *h, *w], false),
        [n, h, w, 1] => x.permute([0, 3, 1, 2]).expand([*n, 3, *h, *w], false),
        [n, h, w] => x.unsqueeze(1).expand([*n, 3, *h, *w], false),
        _ => return Err(Error::shape(format!("images of '{name}'"), expected, &s)),
    };
    let x = match x.kind() {
        Kind::Uint8 => x,
        _ if x.is_floating_point() => {
            if x.numel() > 0 {
                let (lo, hi) = (x.min().double_value(&[]), x.max().double_value(&[]));
                let in_range = lo >= 0.0 && hi <= 1.0; // false for NaN too
                if !in_range {
                    return Err(Error::Data(format!(
                        "float images of '{name}' must lie in [0, 1], found {lo}..={hi}; divide by 255 if they are 0..255"
                    )));
                }
            }
            (x.to_kind(Kind::Float) * 255.0).round().clamp(0.0, 255.0).to_kind(Kind::Uint8)
        }
        k => {
            return Err(Error::Data(format!("images of '{name}' must be u8 (0..=255) or floats in [0, 1], got {k:?}")))
        }
    };
    Ok(x.contiguous())
}
