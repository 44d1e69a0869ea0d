//! Augmentations, batched on the device (B3): the views that self-supervised methods compare.
//!
//! "Composition of multiple data augmentation operations is crucial in defining the contrastive
//! prediction tasks that yield effective representations" (SimCLR, Chen et al. 2020,
//! <https://arxiv.org/abs/2002.05709>). Every method here learns by making two random views of
//! an image agree, so the augmentations decide what the network learns to ignore.
//!
//! torchvision's transforms run per image on the data-loader's CPU workers; applied to a whole
//! batch they draw one set of parameters (and one `RandomApply` coin) for all its images. Here
//! every op takes the whole batch `[B, 3, H, W]` on its device (the GPU when present) and still
//! draws **per-sample** parameters and probabilities, from an explicit seeded generator
//! ([`rng`]), so training is not CPU-bound and the same seed gives the same views.
//!
//! - [`ops`]: one function per op (random and deterministic forms).
//! - On the CPU, [`Augment::apply`] takes each image through the whole pipeline while it sits in
//!   cache, on libtorch's own threads, with the same draws as the batched ops (which
//!   [`Augment::apply_batched`] runs anywhere): a pass over memory per op is what a CPU step
//!   cannot afford (BENCHMARKS.md, "Augmentation on the CPU, image by image").
//! - [`Augment`]: ordered ops with probabilities; [`TwoViews`] for asymmetric methods;
//!   [`MultiView`] gives `two_views` / `views` for both.
//! - [`presets`]: SimCLR, MoCo v1, MoCo v2 (S0.3), BYOL, Barlow Twins, and the Barlow Twins
//!   seminar's own list (S3.4), every number cited.
//! - [`show_views`]: each image beside its two views, inline in a notebook (S3.4): a
//!   [`ViewGrid`], which `viz` renders (its `evcxr_display`, `figure` and `save` live there).
//!
//! Notebooks: the MoCo v2 pre-training seminar (S0.3), the Barlow Twins seminar (S3.4), the MoCo
//! code reading (S4.3, `TwoCropsTransform` and MoCo v1's list).
//!
//! ```no_run
//! use selfsup::prelude::*;
//! let set = data::synthetic::load(Split::Unlabeled, &SyntheticConfig::stl10_like())?;
//! let augment = augment::presets::moco_v2(96);
//! let fig = augment::show_views(&set.images, &augment, 4, 0)?; // renders inline
//! let mut rng = augment::rng(0);
//! let (v1, v2) = augment.two_views(&set.images.narrow(0, 0, 256), &mut rng)?;
//! # Ok::<(), selfsup::Error>(())
//! ```
mod cpu;
pub mod ops;
pub mod pipeline;
pub mod presets;

pub use ops::{ColorJitter, CropBox, GaussianBlur, RandomResizedCrop};
pub use pipeline::{Augment, MultiView, Op, OpKind, Step, TwoViews};

use crate::error::{config_err, Error, Result};
use rand::SeedableRng;
use tch::{Kind, Tensor};

/// The generator every augmentation draws from: ChaCha8, small, fast, and the same stream on
/// every platform.
pub type AugmentRng = rand_chacha::ChaCha8Rng;

/// A seeded generator for the augmentations: the same seed gives the same views. Keep it in a
/// variable across steps (`let mut rng = augment::rng(0);`) so each batch gets new draws.
pub fn rng(seed: u64) -> AugmentRng {
    AugmentRng::seed_from_u64(seed)
}

/// What the augmentation does to the first `n` images: each row `original | view 1 | view 2`, the
/// views drawn with generator seed `seed` and un-normalised. The [`ViewGrid`] renders inline as
/// the last expression of a cell (`viz` draws it: `.figure()`, `.save(path)`).
///
/// # Shapes
/// `images` `[N, 3, H, W]`, u8 or floats in `[0, 1]`; `n ≤ N`.
///
/// # Errors
/// A wrong shape, `n = 0` or `n > N`, or an error from the augmentation.
///
/// # Example
/// ```no_run
/// use selfsup::prelude::*;
/// let set = data::synthetic::load(Split::Train, &SyntheticConfig::default())?;
/// augment::show_views(&set.images, &augment::presets::byol(32), 6, 0)?.save("views.png")?;
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn show_views<A: MultiView + ?Sized>(images: &Tensor, augment: &A, n: usize, seed: u64) -> Result<ViewGrid> {
    let size = images.size();
    if size.len() != 4 || size[1] != 3 || size[0] < 1 {
        return Err(Error::shape("show_views images", "[N, 3, H, W] with N >= 1", &size));
    }
    if n == 0 || n as i64 > size[0] {
        return Err(config_err!("show_views: n must be in 1..={}, got {n}", size[0]));
    }
    let images = images.narrow(0, 0, n as i64); // [n, 3, H, W]
    let mut rng = rng(seed);
    let (v1, v2) = augment.two_views(&images, &mut rng)?; // [n, 3, S, S] each
    let shown = |v: Tensor, index: usize| -> Result<Tensor> {
        Ok(match augment.pipeline(index).output_normalization() {
            Some(norm) => norm.denormalize(&v)?,
            None => v,
        })
    };
    let (v1, v2) = (shown(v1, 0)?, shown(v2, 1)?);
    let (th, tw) = (v1.size()[2], v1.size()[3]);
    let fit = |x: Tensor| -> Tensor {
        let s = x.size();
        if s[2] == th && s[3] == tw {
            x
        } else {
            x.upsample_bilinear2d([th, tw], false, None, None) // [n, 3, S, S]
        }
    };
    let original = images.to_device(v1.device()).to_kind(Kind::Float);
    let original = if images.kind() == Kind::Uint8 { original / 255.0 } else { original };
    let tiles = Tensor::stack(&[fit(original), v1, fit(v2)], 1).reshape([3 * n as i64, 3, th, tw]); // [3n, 3, S, S]
    let tiles = tiles.clamp(0.0, 1.0).to_device(tch::Device::Cpu);
    let captions: Vec<String> =
        (0..n).flat_map(|i| [format!("image {i}"), "view 1".to_string(), "view 2".to_string()]).collect();
    Ok(ViewGrid { tiles, captions, columns: 3, title: "original | view 1 | view 2".into() })
}

/// Images and their views as tiles, row by row, with a caption each: what [`show_views`]
/// returns. `viz` renders it (`evcxr_display`, `figure`, `save`), so this layer holds only the
/// pixels.
#[derive(Debug)]
pub struct ViewGrid {
    /// `[T, 3, S, S]` f32 in `[0, 1]` on the CPU, row-major (`columns` tiles a row).
    pub tiles: Tensor,
    /// One caption per tile.
    pub captions: Vec<String>,
    /// Tiles per row.
    pub columns: usize,
    /// The grid's title.
    pub title: String,
}
