//! [`Augment`]: an ordered list of ops, each with its per-sample probability, applied to a
//! whole batch on its device; [`TwoViews`] for methods whose two views differ (BYOL, Barlow
//! Twins); the [`MultiView`] trait that gives both `two_views` and `views`.
//!
//! The config is plain data (serde), so it is saved beside a checkpoint and printed in a
//! notebook; the chainable setters return a changed copy:
//!
//! ```
//! use selfsup::augment::{self, presets, MultiView};
//! use selfsup::tch::{Device, Kind, Tensor};
//! let augment = presets::moco_v2(96).blur_p(0.0).crop_scale(0.08, 1.0);
//! let images = Tensor::zeros([16, 3, 96, 96], (Kind::Uint8, Device::Cpu)); // as the loader yields
//! let mut rng = augment::rng(0);
//! let (v1, v2) = augment.two_views(&images, &mut rng)?; // [16, 3, 96, 96] f32, normalised
//! # Ok::<(), selfsup::Error>(())
//! ```
use super::ops::{self, ColorJitter, GaussianBlur, RandomResizedCrop};
use crate::data::Normalization;
use crate::error::{config_err, Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// One augmentation op and its parameters (the probability lives in [`Step`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// [`ops::random_resized_crop`]; always applied (p must be 1).
    RandomResizedCrop(RandomResizedCrop),
    /// [`ops::hflip`].
    HorizontalFlip,
    /// [`ops::color_jitter`].
    ColorJitter(ColorJitter),
    /// [`ops::grayscale`] (three equal channels).
    Grayscale,
    /// [`ops::gaussian_blur`].
    GaussianBlur(GaussianBlur),
    /// [`ops::solarize`] at `threshold` (on `[0, 1]`).
    Solarize {
        /// Pixels at or above this value are inverted.
        threshold: f64,
    },
    /// [`ops::normalize`]; always applied (p must be 1), normally last.
    Normalize(Normalization),
}

/// The kinds of [`Op`], in the canonical order the setters insert missing ops in
/// (the SimCLR / MoCo v2 / BYOL order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OpKind {
    /// RandomResizedCrop.
    Crop,
    /// Horizontal flip.
    Flip,
    /// ColorJitter.
    ColorJitter,
    /// Grayscale.
    Grayscale,
    /// Gaussian blur.
    Blur,
    /// Solarize.
    Solarize,
    /// Normalize.
    Normalize,
}

impl Op {
    /// Which kind of op this is.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::RandomResizedCrop(_) => OpKind::Crop,
            Op::HorizontalFlip => OpKind::Flip,
            Op::ColorJitter(_) => OpKind::ColorJitter,
            Op::Grayscale => OpKind::Grayscale,
            Op::GaussianBlur(_) => OpKind::Blur,
            Op::Solarize { .. } => OpKind::Solarize,
            Op::Normalize(_) => OpKind::Normalize,
        }
    }
}

/// An op with the probability that it applies to each sample (torchvision's `RandomApply`,
/// drawn per sample, not per batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The op.
    pub op: Op,
    /// Probability that a sample gets the op, in `[0, 1]`.
    pub p: f64,
}

impl Step {
    /// `op` with probability `p`.
    pub fn new(op: Op, p: f64) -> Self {
        Step { op, p }
    }

    /// Checks the op's config and `p`.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.p) {
            return Err(config_err!("{:?} step: p must be in [0, 1], got {}", self.op.kind(), self.p));
        }
        match &self.op {
            Op::RandomResizedCrop(c) => c.validate()?,
            Op::ColorJitter(j) => j.validate()?,
            Op::GaussianBlur(b) => b.validate()?,
            Op::Solarize { threshold } if !(0.0..=1.0).contains(threshold) => {
                return Err(config_err!(
                    "Solarize.threshold must be in [0, 1] (images are in [0, 1]), got {threshold}"
                ));
            }
            Op::Normalize(n) if n.std.iter().any(|&s| s <= 0.0) => {
                return Err(config_err!("Normalize: std must be positive, got {:?}", n.std));
            }
            _ => {}
        }
        if matches!(self.op, Op::RandomResizedCrop(_) | Op::Normalize(_)) && self.p != 1.0 {
            return Err(config_err!(
                "{:?} step: p must be 1 (every sample of a batch needs the same size and scale), got {}",
                self.op.kind(),
                self.p
            ));
        }
        Ok(())
    }

    /// Applies the step to a float batch `[B, 3, H, W]`.
    pub fn apply<R: Rng + ?Sized>(&self, images: &Tensor, rng: &mut R) -> Result<Tensor> {
        let p = self.p;
        match &self.op {
            Op::RandomResizedCrop(c) => ops::random_resized_crop(images, c, rng),
            Op::HorizontalFlip => ops::hflip(images, p, rng),
            Op::ColorJitter(j) => ops::color_jitter(images, j, p, rng),
            Op::Grayscale => ops::grayscale(images, p, rng),
            Op::GaussianBlur(b) => ops::gaussian_blur(images, b, p, rng),
            Op::Solarize { threshold } => ops::solarize(images, *threshold, p, rng),
            Op::Normalize(n) => ops::normalize(images, n),
        }
    }
}

/// An augmentation pipeline: ordered [`Step`]s applied to a whole batch on its device, every
/// random choice per sample, from the generator passed in.
///
/// Build one from [`super::presets`] and adjust it with the setters, or list the steps:
///
/// ```
/// use selfsup::augment::{ops::{ColorJitter, RandomResizedCrop}, Augment, Op};
/// let augment = Augment::new()
///     .then(Op::RandomResizedCrop(RandomResizedCrop::new(32)), 1.0)
///     .then(Op::HorizontalFlip, 0.5)
///     .then(Op::ColorJitter(ColorJitter::new(0.4, 0.4, 0.4, 0.1)), 0.8);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Augment {
    /// The steps, applied in this order.
    pub steps: Vec<Step>,
}

impl Augment {
    /// An empty pipeline (only the u8 → float conversion).
    pub fn new() -> Self {
        Augment { steps: Vec::new() }
    }

    /// The same pipeline with `op` (probability `p`) appended at the end.
    pub fn then(mut self, op: Op, p: f64) -> Self {
        self.steps.push(Step::new(op, p));
        self
    }

    /// Checks every step; a crop or normalisation must have p = 1.
    pub fn validate(&self) -> Result<()> {
        self.steps.iter().try_for_each(Step::validate)
    }

    /// The first step of `kind`, if any.
    pub fn step(&self, kind: OpKind) -> Option<&Step> {
        self.steps.iter().find(|s| s.op.kind() == kind)
    }

    /// The output side when the pipeline crops, else `None` (the input size is kept).
    pub fn output_size(&self) -> Option<i64> {
        self.steps.iter().rev().find_map(|s| match &s.op {
            Op::RandomResizedCrop(c) => Some(c.size),
            _ => None,
        })
    }

    /// The normalisation the pipeline ends with, if any (to show its output again).
    pub fn output_normalization(&self) -> Option<Normalization> {
        self.steps.iter().rev().find_map(|s| match &s.op {
            Op::Normalize(n) => Some(*n),
            _ => None,
        })
    }

    /// Changes every step of `kind` with `f`; when there is none, inserts `default` first (at
    /// its place in the canonical order crop, flip, jitter, grayscale, blur, solarize,
    /// normalize) and changes that.
    fn update(mut self, kind: OpKind, default: impl FnOnce() -> Step, f: impl Fn(&mut Step)) -> Self {
        if !self.steps.iter().any(|s| s.op.kind() == kind) {
            let at = self.steps.iter().position(|s| s.op.kind() > kind).unwrap_or(self.steps.len());
            self.steps.insert(at, default());
        }
        self.steps.iter_mut().filter(|s| s.op.kind() == kind).for_each(f);
        self
    }

    /// The same pipeline without any step of `kind`.
    pub fn without(mut self, kind: OpKind) -> Self {
        self.steps.retain(|s| s.op.kind() != kind);
        self
    }

    /// Output side of the crop (adds a default crop if there is none).
    pub fn size(self, size: i64) -> Self {
        self.update(
            OpKind::Crop,
            || Step::new(Op::RandomResizedCrop(RandomResizedCrop::new(size)), 1.0),
            |s| {
                if let Op::RandomResizedCrop(c) = &mut s.op {
                    c.size = size;
                }
            },
        )
    }

    /// Area range of the crop, as a fraction of the image (torchvision's `scale`).
    /// Without a crop step this is a configuration error at [`Augment::apply`]; set
    /// [`Augment::size`] first.
    pub fn crop_scale(self, min: f64, max: f64) -> Self {
        self.update_crop(|c| c.scale = (min, max))
    }

    /// Aspect-ratio range of the crop (torchvision's `ratio`).
    pub fn crop_ratio(self, min: f64, max: f64) -> Self {
        self.update_crop(|c| c.ratio = (min, max))
    }

    fn update_crop(self, f: impl Fn(&mut RandomResizedCrop)) -> Self {
        // Size 0 marks a crop added by a setter without a size: `validate` rejects it with a
        // message to call `size` too.
        self.update(
            OpKind::Crop,
            || Step::new(Op::RandomResizedCrop(RandomResizedCrop::new(0)), 1.0),
            |s| {
                if let Op::RandomResizedCrop(c) = &mut s.op {
                    f(c);
                }
            },
        )
    }

    /// Probability of the horizontal flip (adds a flip if there is none).
    pub fn flip_p(self, p: f64) -> Self {
        self.update(OpKind::Flip, || Step::new(Op::HorizontalFlip, p), |s| s.p = p)
    }

    /// Strengths of the colour jitter (adds one with p = 0.8 if there is none).
    pub fn color_jitter(self, jitter: ColorJitter) -> Self {
        self.update(OpKind::ColorJitter, || Step::new(Op::ColorJitter(jitter), 0.8), |s| s.op = Op::ColorJitter(jitter))
    }

    /// Probability of the colour jitter (adds SimCLR's strength-1 jitter if there is none).
    pub fn jitter_p(self, p: f64) -> Self {
        self.update(OpKind::ColorJitter, || Step::new(Op::ColorJitter(ColorJitter::simclr(1.0)), p), |s| s.p = p)
    }

    /// Probability of the grayscale conversion (adds one if there is none).
    pub fn grayscale_p(self, p: f64) -> Self {
        self.update(OpKind::Grayscale, || Step::new(Op::Grayscale, p), |s| s.p = p)
    }

    /// Probability of the blur (adds SimCLR's blur, σ ∈ [0.1, 2], if there is none).
    pub fn blur_p(self, p: f64) -> Self {
        self.update(OpKind::Blur, || Step::new(Op::GaussianBlur(GaussianBlur::default()), p), |s| s.p = p)
    }

    /// σ range of the blur (adds one with p = 0.5 if there is none).
    pub fn blur_sigma(self, min: f64, max: f64) -> Self {
        self.update(
            OpKind::Blur,
            || Step::new(Op::GaussianBlur(GaussianBlur::default()), 0.5),
            |s| {
                if let Op::GaussianBlur(b) = &mut s.op {
                    b.sigma = (min, max);
                }
            },
        )
    }

    /// Kernel side of the blur; `None` for 10% of the image (adds a blur with p = 0.5 if there
    /// is none).
    pub fn blur_kernel(self, kernel_size: Option<i64>) -> Self {
        self.update(
            OpKind::Blur,
            || Step::new(Op::GaussianBlur(GaussianBlur::default()), 0.5),
            |s| {
                if let Op::GaussianBlur(b) = &mut s.op {
                    b.kernel_size = kernel_size;
                }
            },
        )
    }

    /// Probability of the solarisation (adds one at threshold 0.5 if there is none).
    pub fn solarize_p(self, p: f64) -> Self {
        self.update(OpKind::Solarize, || Step::new(Op::Solarize { threshold: 0.5 }, p), |s| s.p = p)
    }

    /// Threshold of the solarisation (adds one with p = 0.2 if there is none).
    pub fn solarize_threshold(self, threshold: f64) -> Self {
        self.update(
            OpKind::Solarize,
            || Step::new(Op::Solarize { threshold }, 0.2),
            |s| {
                if let Op::Solarize { threshold: t } = &mut s.op {
                    *t = threshold;
                }
            },
        )
    }

    /// The final normalisation: `Some(n)` sets (or adds) it, `None` removes it so the output
    /// stays in `[0, 1]`.
    pub fn normalization(self, normalization: Option<Normalization>) -> Self {
        match normalization {
            None => self.without(OpKind::Normalize),
            Some(n) => self.update(OpKind::Normalize, || Step::new(Op::Normalize(n), 1.0), |s| s.op = Op::Normalize(n)),
        }
    }

    /// Augments a batch: u8 `[B, 3, H, W]` (as the loader yields, 0..=255) or floats in
    /// `[0, 1]`; returns f32 on the same device, normalised if the pipeline ends with
    /// [`Op::Normalize`]. Runs without autograd.
    ///
    /// On the CPU each image goes through the whole pipeline at once, in cache (the per-image
    /// path, about 4× faster than batched ops there); elsewhere every step is a few batched
    /// kernels ([`Augment::apply_batched`]). Both draw the same numbers from `rng`, so a seed
    /// gives the same views on either, to float rounding.
    ///
    /// # Shapes
    /// `[B, 3, H, W]` → `[B, 3, S, S]` (S: the crop size; H × W without a crop).
    ///
    /// # Errors
    /// A wrong shape or dtype, an invalid config, a blur kernel too large for the image.
    pub fn apply<R: Rng + ?Sized>(&self, images: &Tensor, rng: &mut R) -> Result<Tensor> {
        self.check(images)?;
        if images.device() == tch::Device::Cpu {
            super::cpu::apply(&self.steps, images, rng)
        } else {
            self.batched(images, rng)
        }
    }

    /// [`Augment::apply`] with every step as batched tensor ops, on any device: the GPU's path,
    /// and on the CPU the reference the per-image path is checked against.
    ///
    /// # Errors
    /// As [`Augment::apply`].
    pub fn apply_batched<R: Rng + ?Sized>(&self, images: &Tensor, rng: &mut R) -> Result<Tensor> {
        self.check(images)?;
        self.batched(images, rng)
    }

    fn check(&self, images: &Tensor) -> Result<()> {
        self.validate()?;
        let s = images.size();
        if s.len() != 4 || s[1] != 3 || s[0] < 1 || s[2] < 1 || s[3] < 1 {
            return Err(Error::shape("Augment::apply images", "[B, 3, H, W] with B, H, W >= 1", &s));
        }
        Ok(())
    }

    fn batched<R: Rng + ?Sized>(&self, images: &Tensor, rng: &mut R) -> Result<Tensor> {
        let x = match images.kind() {
            Kind::Uint8 => {
                let mut x = images.to_kind(Kind::Float); // [B, 3, H, W] in [0, 255]
                let _ = x.g_div_scalar_(255.0);
                x
            }
            Kind::Float => images.shallow_clone(),
            Kind::Double | Kind::Half | Kind::BFloat16 => images.to_kind(Kind::Float),
            other => {
                return Err(Error::Data(format!(
                    "Augment::apply: expected u8 images (0..=255) or floats in [0, 1], got {other:?}"
                )))
            }
        };
        tch::no_grad(|| self.steps.iter().try_fold(x, |x, step| step.apply(&x, rng)))
    }

    /// The pipeline as a closure that owns a generator seeded with `seed`: each call augments a
    /// batch with fresh draws. This is the form the loader's `data::Views` takes:
    /// `Views::two(presets::moco_v2(96).into_fn(0))`; for an asymmetric pair,
    /// `pair.view1.into_fn(0)` and `pair.view2.into_fn(1)`.
    pub fn into_fn(self, seed: u64) -> impl FnMut(&Tensor) -> Result<Tensor> + Send + 'static {
        let mut rng = super::rng(seed);
        move |images: &Tensor| self.apply(images, &mut rng)
    }

    /// Two independently augmented views of the same batch (SimCLR, MoCo: the same pipeline
    /// twice; MoCo's `TwoCropsTransform`).
    ///
    /// # Shapes
    /// `[B, 3, H, W]` → two `[B, 3, S, S]`.
    ///
    /// # Errors
    /// As [`Augment::apply`].
    pub fn two_views<R: Rng + ?Sized>(&self, images: &Tensor, rng: &mut R) -> Result<(Tensor, Tensor)> {
        MultiView::two_views(self, images, rng)
    }

    /// `n` independently augmented views of the same batch (multi-crop style experiments).
    ///
    /// # Errors
    /// `n = 0`, or as [`Augment::apply`].
    pub fn views<R: Rng + ?Sized>(&self, images: &Tensor, n: usize, rng: &mut R) -> Result<Vec<Tensor>> {
        MultiView::views(self, images, n, rng)
    }
}

/// Two pipelines, one per view, for the asymmetric methods: "the two distorted views are
/// obtained with different probabilities for blurring and solarization" (BYOL, Barlow Twins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoViews {
    /// The pipeline of the first view (and of every even-numbered view in [`MultiView::views`]).
    pub view1: Augment,
    /// The pipeline of the second view (and of every odd-numbered view).
    pub view2: Augment,
}

impl TwoViews {
    /// A pair of pipelines.
    pub fn new(view1: Augment, view2: Augment) -> Self {
        TwoViews { view1, view2 }
    }

    /// The same pipeline for both views.
    pub fn symmetric(augment: Augment) -> Self {
        TwoViews { view1: augment.clone(), view2: augment }
    }

    /// Changes both pipelines with `f` (e.g. `|a| a.size(64)`).
    pub fn map(self, f: impl Fn(Augment) -> Augment) -> Self {
        TwoViews { view1: f(self.view1), view2: f(self.view2) }
    }

    /// Checks both pipelines.
    pub fn validate(&self) -> Result<()> {
        self.view1.validate()?;
        self.view2.validate()
    }

    /// View 1 with `view1`, view 2 with `view2`.
    ///
    /// # Shapes
    /// `[B, 3, H, W]` → two `[B, 3, S, S]`.
    ///
    /// # Errors
    /// As [`Augment::apply`].
    pub fn two_views<R: Rng + ?Sized>(&self, images: &Tensor, rng: &mut R) -> Result<(Tensor, Tensor)> {
        MultiView::two_views(self, images, rng)
    }

    /// `n` views, alternating the two pipelines.
    ///
    /// # Errors
    /// `n = 0`, or as [`Augment::apply`].
    pub fn views<R: Rng + ?Sized>(&self, images: &Tensor, n: usize, rng: &mut R) -> Result<Vec<Tensor>> {
        MultiView::views(self, images, n, rng)
    }
}

impl From<Augment> for TwoViews {
    fn from(augment: Augment) -> Self {
        TwoViews::symmetric(augment)
    }
}

/// Anything that augments a batch into several views: an [`Augment`] (the same pipeline for
/// every view) or a [`TwoViews`] (alternating pipelines).
pub trait MultiView {
    /// The pipeline of view `index` (0-based).
    fn pipeline(&self, index: usize) -> &Augment;

    /// Two independently augmented views of `images`.
    ///
    /// # Errors
    /// As [`Augment::apply`].
    fn two_views<R: Rng + ?Sized>(&self, images: &Tensor, rng: &mut R) -> Result<(Tensor, Tensor)> {
        let v1 = self.pipeline(0).apply(images, rng)?; // [B, 3, S, S]
        let v2 = self.pipeline(1).apply(images, rng)?; // [B, 3, S, S]
        Ok((v1, v2))
    }

    /// `n` independently augmented views of `images`.
    ///
    /// # Errors
    /// `n = 0`, or as [`Augment::apply`].
    fn views<R: Rng + ?Sized>(&self, images: &Tensor, n: usize, rng: &mut R) -> Result<Vec<Tensor>> {
        if n == 0 {
            return Err(config_err!("views: ask for at least one view, got n = 0"));
        }
        (0..n).map(|i| self.pipeline(i).apply(images, rng)).collect()
    }
}

impl MultiView for Augment {
    fn pipeline(&self, _index: usize) -> &Augment {
        self
    }
}

impl MultiView for TwoViews {
    fn pipeline(&self, index: usize) -> &Augment {
        if index % 2 == 0 {
            &self.view1
        } else {
            &self.view2
        }
    }
}
