//! The papers' augmentation pipelines, every number cited, sized by the output side
//! `image_size` (224 in the papers, 96 for STL-10, 32 for CIFAR).
//!
//! | preset | crop scale | jitter (b, c, s, h), p | gray p | blur p | solarize p |
//! |---|---|---|---|---|---|
//! | [`simclr`] | 0.08–1 | (0.8, 0.8, 0.8, 0.2), 0.8 | 0.2 | 0.5 | – |
//! | [`simclr_cifar`] | 0.08–1 | (0.4, 0.4, 0.4, 0.1), 0.8 | 0.2 | – | – |
//! | [`moco_v1`] | 0.2–1 | (0.4, 0.4, 0.4, 0.4), 1 (after gray) | 0.2 | – | – |
//! | [`moco_v2`] | 0.2–1 | (0.4, 0.4, 0.4, 0.1), 0.8 | 0.2 | 0.5 | – |
//! | [`byol`], [`barlow_twins`] | 0.08–1 | (0.4, 0.4, 0.2, 0.1), 0.8 | 0.2 | 1.0 / 0.1 | 0 / 0.2 |
//! | [`barlow_twins_cifar10`] | 0.08–1 | (0.2, 0.2, 0.2, 0.2), 0.3 | 0.3 | – | 0.3 |
//!
//! All flip with p = 0.5 and, except the seminar's Barlow Twins list, end with ImageNet's
//! normalisation. Change any number with the setters of [`Augment`]:
//! `presets::moco_v2(96).crop_scale(0.08, 1.0).blur_p(0.0)`.
//!
//! Deviation: every blur uses SimCLR's kernel of 10% of the image; MoCo v2, BYOL and Barlow
//! Twins blur with PIL's `GaussianBlur(radius=σ)` (see [`super::ops::gaussian_blur`]).
//!
//! Papers: SimCLR, Chen et al. 2020, <https://arxiv.org/abs/2002.05709>; MoCo, He et al. 2020,
//! <https://arxiv.org/abs/1911.05722>; MoCo v2, Chen et al. 2020,
//! <https://arxiv.org/abs/2003.04297>; BYOL, Grill et al. 2020,
//! <https://arxiv.org/abs/2006.07733>; Barlow Twins, Zbontar et al. 2021,
//! <https://arxiv.org/abs/2103.03230>.
use super::ops::{ColorJitter, GaussianBlur, RandomResizedCrop};
use super::pipeline::{Augment, Op, TwoViews};
use crate::data::Normalization;

/// SimCLR's ImageNet augmentation (Chen et al. 2020, Appendix A, "Data Augmentation Details").
///
/// - Crop: "a crop of random size (uniform from 0.08 to 1.0 in area) of the original size and a
///   random aspect ratio (default: of 3/4 to 4/3) of the original aspect ratio is made", then
///   resized; "we also apply horizontal flip with 50% probability" (p = 0.5).
/// - Colour: the pseudo-code `get_color_distortion(s=1.0)`:
///   `ColorJitter(0.8*s, 0.8*s, 0.8*s, 0.2*s)` in `RandomApply(p=0.8)`, then
///   `RandomGrayscale(p=0.2)`.
/// - Blur: "We blur the image 50% of the time using a Gaussian kernel. We randomly sample
///   σ ∈ [0.1, 2.0], and the kernel size is set to be 10% of the image height/width."
/// - Normalize: ImageNet mean/std, so the output feeds torchvision-style ResNets.
///   Deviation: SimCLR's TensorFlow code feeds `[0, 1]` pixels; use
///   `.normalization(None)` for that.
pub fn simclr(image_size: i64) -> Augment {
    Augment::new()
        .then(
            Op::RandomResizedCrop(RandomResizedCrop::new(image_size).scale(0.08, 1.0).ratio(3.0 / 4.0, 4.0 / 3.0)),
            1.0,
        )
        .then(Op::HorizontalFlip, 0.5)
        .then(Op::ColorJitter(ColorJitter::simclr(1.0)), 0.8)
        .then(Op::Grayscale, 0.2)
        .then(Op::GaussianBlur(GaussianBlur { sigma: (0.1, 2.0), kernel_size: None }), 0.5)
        .then(Op::Normalize(Normalization::imagenet()), 1.0)
}

/// SimCLR's CIFAR-10 setting: [`simclr`] without the blur and with colour strength s = 0.5,
/// i.e. `ColorJitter(0.4, 0.4, 0.4, 0.1)` (the google-research/simclr README's CIFAR-10
/// command: `--use_blur=False --color_jitter_strength=0.5`; the paper's Appendix B.9 leaves the
/// blur out on CIFAR-10's 32×32 images and studies the colour strength).
pub fn simclr_cifar(image_size: i64) -> Augment {
    simclr(image_size).without(super::OpKind::Blur).color_jitter(ColorJitter::simclr(0.5))
}

/// MoCo v1's augmentation (He et al. 2020, Section 3.3: "a 224×224-pixel crop is
/// taken from a randomly resized image, and then undergoes random color jittering, random
/// horizontal flip, and random grayscale conversion"), in the order and with the numbers of
/// facebookresearch/moco `main_moco.py` (without `--aug-plus`):
/// `RandomResizedCrop(224, scale=(0.2, 1.))`, `RandomGrayscale(p=0.2)`,
/// `ColorJitter(0.4, 0.4, 0.4, 0.4)` (always applied, after the grayscale),
/// `RandomHorizontalFlip()`, ImageNet `Normalize` (S4.3).
pub fn moco_v1(image_size: i64) -> Augment {
    Augment::new()
        .then(Op::RandomResizedCrop(RandomResizedCrop::new(image_size).scale(0.2, 1.0)), 1.0)
        .then(Op::Grayscale, 0.2)
        .then(Op::ColorJitter(ColorJitter::new(0.4, 0.4, 0.4, 0.4)), 1.0)
        .then(Op::HorizontalFlip, 0.5)
        .then(Op::Normalize(Normalization::imagenet()), 1.0)
}

/// MoCo v2's augmentation (Chen, Fan, Girshick, He 2020: "we extend the original augmentation
/// in \[MoCo\] by including the blur augmentation"; the stronger colour distortion has "diminishing
/// gains in our higher baselines"), with the numbers of facebookresearch/moco `main_moco.py
/// --aug-plus`, "similar to SimCLR": `RandomResizedCrop(224, scale=(0.2, 1.))`,
/// `RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)`, `RandomGrayscale(p=0.2)`,
/// `RandomApply([GaussianBlur([.1, 2.])], p=0.5)`, `RandomHorizontalFlip()`, ImageNet
/// `Normalize` (S0.3).
pub fn moco_v2(image_size: i64) -> Augment {
    Augment::new()
        .then(Op::RandomResizedCrop(RandomResizedCrop::new(image_size).scale(0.2, 1.0)), 1.0)
        .then(Op::ColorJitter(ColorJitter::new(0.4, 0.4, 0.4, 0.1)), 0.8)
        .then(Op::Grayscale, 0.2)
        .then(Op::GaussianBlur(GaussianBlur { sigma: (0.1, 2.0), kernel_size: None }), 0.5)
        .then(Op::HorizontalFlip, 0.5)
        .then(Op::Normalize(Normalization::imagenet()), 1.0)
}

/// One BYOL view (Grill et al. 2020, Appendix B, Table 6 "Parameters used to generate image
/// augmentations"): crop area 8–100%, aspect 3/4–4/3; flip p 0.5; colour jittering p 0.8 with
/// brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1; colour dropping p 0.2; Gaussian blur
/// σ ∈ [0.1, 2.0] with probability `blur_p`; solarisation (threshold 0.5) with probability
/// `solarize_p`; ImageNet normalisation.
fn byol_view(image_size: i64, blur_p: f64, solarize_p: f64) -> Augment {
    Augment::new()
        .then(
            Op::RandomResizedCrop(RandomResizedCrop::new(image_size).scale(0.08, 1.0).ratio(3.0 / 4.0, 4.0 / 3.0)),
            1.0,
        )
        .then(Op::HorizontalFlip, 0.5)
        .then(Op::ColorJitter(ColorJitter::new(0.4, 0.4, 0.2, 0.1)), 0.8)
        .then(Op::Grayscale, 0.2)
        .then(Op::GaussianBlur(GaussianBlur { sigma: (0.1, 2.0), kernel_size: None }), blur_p)
        .then(Op::Solarize { threshold: 0.5 }, solarize_p)
        .then(Op::Normalize(Normalization::imagenet()), 1.0)
}

/// BYOL's asymmetric pair (Grill et al. 2020, Appendix B, Table 6): the same list for both
/// views except "Gaussian blurring: probability 1.0 / 0.1" and "solarization: probability
/// 0.0 / 0.2" (view 1 / view 2), solarisation being `x ↦ x·1{x<0.5} + (1−x)·1{x≥0.5}`.
pub fn byol(image_size: i64) -> TwoViews {
    TwoViews::new(byol_view(image_size, 1.0, 0.0), byol_view(image_size, 0.1, 0.2))
}

/// Barlow Twins' asymmetric pair (Zbontar et al. 2021, implementation details, "Image
/// augmentations": "random
/// cropping, resizing to 224 × 224, horizontal flipping, color jittering, converting to
/// grayscale, Gaussian blurring, and solarization … This probability is different for the two
/// distorted views in the last two transformations (blurring and solarization). We use the same
/// augmentation parameters as BYOL"); facebookresearch/barlowtwins `main.py` `Transform`:
/// blur p 1.0 / 0.1, solarize p 0.0 / 0.2, `ColorJitter(0.4, 0.4, 0.2, 0.1)` p 0.8, gray p 0.2.
///
/// Deviation: `main.py` resizes crops bicubically; here bilinearly (see
/// [`super::ops::resized_crop`]).
pub fn barlow_twins(image_size: i64) -> TwoViews {
    byol(image_size)
}

/// The augmentation list of the Barlow Twins CIFAR-10 seminar notebook (S3.4,
/// `seeds/barlow-twins-cifar10-es.md`), written there with albumentations:
///
/// ```text
/// A.RandomResizedCrop(32, 32),   # scale (0.08, 1.0), ratio (0.75, 1.33): albumentations' defaults
/// A.HorizontalFlip(p=0.5),
/// A.ColorJitter(p=0.3),          # brightness = contrast = saturation = hue = 0.2 by default
/// A.ToGray(p=0.3),
/// #A.GaussianBlur(),             # commented out in the seminar
/// A.Solarize(p=0.3)              # threshold 128 of 255
/// ```
///
/// The seminar divides by 255 and does not normalise, so neither does this preset. The same
/// pipeline makes both views.
///
/// Deviation: albumentations computes the jitter through OpenCV's HSV on u8 images; here it is
/// torchvision's float definition, so factors of the same size move pixels slightly
/// differently.
pub fn barlow_twins_cifar10(image_size: i64) -> Augment {
    Augment::new()
        .then(Op::RandomResizedCrop(RandomResizedCrop::new(image_size).scale(0.08, 1.0).ratio(0.75, 4.0 / 3.0)), 1.0)
        .then(Op::HorizontalFlip, 0.5)
        .then(Op::ColorJitter(ColorJitter::new(0.2, 0.2, 0.2, 0.2)), 0.3)
        .then(Op::Grayscale, 0.3)
        .then(Op::Solarize { threshold: 128.0 / 255.0 }, 0.3)
}
