//! Where a network looks: the seminar's activation maps (S0.7) and Grad-CAM (B6).
//!
//! - **Activation maps**, exactly as the MoCo v2 seminar's `visactmap`: the last stage's output
//!   (`Stage::Layer4`, `[B, C, h, w]`), summed squares over channels (the energy of each
//!   position), normalised per image to [0, 1], nearest-upsampled to the image size, coloured
//!   with magma, and overlaid as `0.7·image + 0.7·heatmap` (clipped). Unsupervised: it shows
//!   where the features are strong, whatever the class.
//! - **Grad-CAM** (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
//!   Gradient-based Localization", <https://arxiv.org/abs/1610.02391>): "the neuron importance
//!   weights α_k^c \[are\] global-average-pooled gradients of y^c with respect to the feature map
//!   A^k", and the map is ReLU(Σ_k α_k^c A^k). Class-specific: it needs a classifier (`fc`).
//!
//! Both are shown as a triptych per image: image | map | overlay, one row per image.
//!
//! Deviation: the seminar colours with OpenCV, which returns BGR, and mixes it into an RGB image,
//! so its heat looks blue-violet where matplotlib's magma is orange-yellow; here the heatmap is
//! magma in RGB, as its name promises.
use super::figure::Figure;
use super::grid::{image_grid, GridConfig};
use super::palette::MAGMA;
use crate::data::Normalization;
use crate::error::{Error, Result};
use crate::models::{ResNet, Stage};
use tch::{Device, Kind, Tensor};

/// The seminar's activation energy: `features` `[B, C, h, w]` → Σ_c features² → per image
/// (x − min) / (max − min + 1e-12), `[B, h, w]` in [0, 1] (float, same device).
///
/// # Errors
/// `features` not `[B, C, h, w]` float, NaN or infinite values.
pub fn activation_energy(features: &Tensor) -> Result<Tensor> {
    Ok(normalize_per_image(&crate::eval::channel_energy(features)?))
}

/// Min-max normalisation of each `[h, w]` map of `[B, h, w]` (the seminar's 1e-12 guard).
fn normalize_per_image(maps: &Tensor) -> Tensor {
    let b = maps.size()[0];
    let flat = maps.view([b, -1]); // [B, h*w]
    let lo = flat.amin(1, true); // [B, 1]
    let hi = flat.amax(1, true); // [B, 1]
    ((flat - &lo) / (hi - lo + 1e-12)).view_as(maps) // [B, h, w]
}

/// Activation maps of `net` at `stage` (the seminar: `Stage::Layer4`) for normalised
/// `images` `[B, 3, H, W]`: `[B, h, w]` in [0, 1], on the CPU. Eval mode, no gradients.
///
/// # Errors
/// As [`ResNet::forward_until`]; `stage` must be a convolutional stage (not AvgPool or Fc).
pub fn activation_maps(net: &ResNet, images: &Tensor, stage: Stage) -> Result<Tensor> {
    check_conv_stage(stage)?;
    let features = tch::no_grad(|| net.forward_until(images, stage, false))?; // [B, C, h, w]
    activation_energy(&features.to_device(Device::Cpu))
}

fn check_conv_stage(stage: Stage) -> Result<()> {
    if matches!(stage, Stage::AvgPool | Stage::Fc) {
        return Err(Error::Config(format!(
            "{stage:?} has no spatial layout: use a convolutional stage (Stage::Layer4 as the seminar, or Layer1..Layer3)"
        )));
    }
    Ok(())
}

/// Images for display: `u8` as they are, floats un-normalised with `norm` (if given), clamped to
/// [0, 1] and floored to bytes as the seminar does. `[B, 3, H, W]` u8 on the CPU.
fn display_bytes(images: &Tensor, norm: Option<&Normalization>) -> Result<Tensor> {
    let images = images.to_device(Device::Cpu);
    if images.kind() == Kind::Uint8 {
        return Ok(images);
    }
    let x = images.to_kind(Kind::Float);
    let x = match norm {
        Some(n) => n.denormalize(&x)?,
        None => x,
    };
    Ok((x.clamp(0.0, 1.0) * 255.0).floor().to_kind(Kind::Uint8))
}

/// Colours maps `[B, H, W]` in [0, 1] with magma: `[B, 3, H, W]` u8 (entry floor(255·v), as
/// OpenCV's `applyColorMap` on the seminar's `np.uint8(np.floor(255 · am))`).
pub fn magma_colorize(maps: &Tensor) -> Result<Tensor> {
    let size = maps.size();
    if size.len() != 3 {
        return Err(Error::shape("magma_colorize maps", "[B, H, W] in [0, 1]", &size));
    }
    let lut: Vec<u8> = MAGMA.iter().flat_map(|c| [(c >> 16) as u8, (c >> 8) as u8, *c as u8]).collect();
    let lut = Tensor::from_slice(&lut).view([256, 3]); // [256, 3]
    let idx = (maps.to_device(Device::Cpu).to_kind(Kind::Float).nan_to_num(0.0, None, None).clamp(0.0, 1.0) * 255.0)
        .floor()
        .to_kind(Kind::Int64); // [B, H, W]
    Ok(lut.index_select(0, &idx.flatten(0, -1)).view([size[0], size[1], size[2], 3]).permute([0, 3, 1, 2]).contiguous())
    // [B, 3, H, W]
}

/// The triptych image | map | overlay, one row per image.
///
/// `images` `[B, 3, H, W]` (u8, or normalised float with `norm`), `maps` `[B, h, w]` in [0, 1]
/// (any resolution: nearest-upsampled to H x W), `map_caption` under each map.
///
/// # Errors
/// Shapes that do not match, as described.
pub fn heatmap_triptych(
    images: &Tensor,
    maps: &Tensor,
    norm: Option<&Normalization>,
    map_caption: &str,
    title: &str,
) -> Result<Figure> {
    let (is, ms) = (images.size(), maps.size());
    if is.len() != 4 || is[1] != 3 || is[0] == 0 {
        return Err(Error::shape("heatmap_triptych images", "[B, 3, H, W] with B > 0", &is));
    }
    if ms.len() != 3 || ms[0] != is[0] {
        return Err(Error::shape("heatmap_triptych maps", format!("[{}, h, w] (one map per image)", is[0]), &ms));
    }
    let (b, h, w) = (is[0], is[2], is[3]);
    let shown = display_bytes(images, norm)?; // [B, 3, H, W] u8
    let up = maps
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .unsqueeze(1)
        .upsample_nearest2d([h, w], None, None)
        .squeeze_dim(1); // [B, H, W]
    let heat = magma_colorize(&normalize_per_image(&up))?; // [B, 3, H, W] u8
    let overlay =
        (shown.to_kind(Kind::Float) * 0.7 + heat.to_kind(Kind::Float) * 0.7).clamp(0.0, 255.0).to_kind(Kind::Uint8); // [B, 3, H, W]
    let tiles = Tensor::stack(&[shown, heat, overlay], 1).view([3 * b, 3, h, w]); // [3B, 3, H, W], row-major triptychs
    let captions: Vec<String> =
        (0..b).flat_map(|i| [format!("image {i}"), map_caption.to_string(), "overlay".to_string()]).collect();
    let cfg = GridConfig { columns: 3, min_tile: 160, normalization: None, title: Some(title.to_string()) };
    image_grid(&tiles, &captions, &cfg)
}

/// The seminar's activation maps as a figure (S0.7): for each normalised image of `images`
/// `[B, 3, H, W]`, image | activation map at `stage` | overlay. `norm` undoes the input
/// normalisation for display.
///
/// # Errors
/// As [`activation_maps`].
///
/// # Example
/// ```no_run
/// use selfsup::prelude::*;
/// let vs = nn::VarStore::new(Device::Cpu);
/// let net = models::resnet18(&vs.root(), None)?;
/// let images = Tensor::randn([4, 3, 224, 224], (Kind::Float, Device::Cpu));
/// let fig = viz::activation_map(&net, &images, Stage::Layer4, &Normalization::imagenet())?;
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn activation_map(net: &ResNet, images: &Tensor, stage: Stage, norm: &Normalization) -> Result<Figure> {
    let maps = activation_maps(net, images, stage)?; // [B, h, w]
    heatmap_triptych(
        images,
        &maps,
        Some(norm),
        &format!("Σ activation² ({stage:?})"),
        &format!("Activation maps at {stage:?}"),
    )
}

/// Which class and where for [`grad_cam`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GradCamConfig {
    /// The class whose logit is explained; `None` explains each image's predicted class.
    pub class: Option<i64>,
    /// The stage whose activations are weighted: `Layer4` (the paper uses the last
    /// convolutional layer: "the best compromise between high-level semantics and detailed
    /// spatial information").
    pub stage: Stage,
}

impl Default for GradCamConfig {
    fn default() -> Self {
        GradCamConfig { class: None, stage: Stage::Layer4 }
    }
}

impl GradCamConfig {
    /// Explains class `class` at `Layer4`.
    pub fn class(class: i64) -> Self {
        GradCamConfig { class: Some(class), ..Default::default() }
    }
    /// The same config at another stage.
    pub fn stage(mut self, stage: Stage) -> Self {
        self.stage = stage;
        self
    }
}

/// Grad-CAM from an activation `[B, C, h, w]` that requires grad and the class scores `[B]`
/// computed from it in the same graph: ReLU(Σ_k α_k A^k) with α_k = mean over positions of
/// ∂score/∂A^k. Works for any model; `[B, h, w]`, not normalised, non-negative.
///
/// # Errors
/// Shapes as described; an activation that does not require grad.
pub fn grad_cam_from(activation: &Tensor, scores: &Tensor) -> Result<Tensor> {
    let a = activation.size();
    if a.len() != 4 {
        return Err(Error::shape("grad_cam_from activation", "[B, C, h, w]", &a));
    }
    if scores.size() != [a[0]] {
        return Err(Error::shape(
            "grad_cam_from scores",
            format!("[{}] (one class score per image)", a[0]),
            &scores.size(),
        ));
    }
    if !activation.requires_grad() {
        return Err(Error::Data(
            "grad_cam_from: the activation must require grad and the scores be computed from it".into(),
        ));
    }
    let grads = Tensor::f_run_backward(&[scores.sum(Kind::Float)], &[activation], false, false)?; // [[B, C, h, w]]
    let grad = grads.into_iter().next().ok_or_else(|| Error::Data("grad_cam_from: no gradient returned".into()))?;
    let alpha = grad.mean_dim(&[2i64, 3][..], true, Kind::Float); // [B, C, 1, 1]
    Ok((alpha * activation.detach()).sum_dim_intlist(1, false, Kind::Float).relu())
    // [B, h, w]
}

/// Grad-CAM maps `[B, h, w]` (non-negative, not normalised, CPU) of `net`'s class logits for
/// normalised `images` `[B, 3, H, W]`: the activations at `cfg.stage`, then the rest of the
/// network from there to the logits ([`ResNet::forward_from`]).
///
/// # Errors
/// As [`ResNet::forward_until`]; a ResNet without `fc` ("Grad-CAM explains a class: build the
/// network with num_classes"); a class out of range; a stage other than Layer1..Layer4.
pub fn grad_cam_maps(net: &ResNet, images: &Tensor, cfg: &GradCamConfig) -> Result<Tensor> {
    check_conv_stage(cfg.stage)?;
    let classes = net.config().num_classes.ok_or_else(|| {
        Error::Config("Grad-CAM explains a class logit: this ResNet has no fc (build it with num_classes, or fine-tune a classifier)".into())
    })?;
    if let Some(c) = cfg.class {
        if !(0..classes).contains(&c) {
            return Err(Error::Config(format!("GradCamConfig.class: expected 0..{classes}, got {c}")));
        }
    }
    let a = tch::no_grad(|| net.forward_until(images, cfg.stage, false))?.detach().set_requires_grad(true); // [B, C, h, w]
    let logits = net.forward_from(&a, cfg.stage, Stage::Fc, false)?; // [B, classes]
    let b = a.size()[0];
    let target = match cfg.class {
        Some(c) => Tensor::full([b, 1], c, (Kind::Int64, logits.device())),
        None => logits.argmax(1, true), // [B, 1]
    };
    let scores = logits.gather(1, &target, false).squeeze_dim(1); // [B]
    Ok(grad_cam_from(&a, &scores)?.to_device(Device::Cpu))
}

/// Grad-CAM (B6) as the same triptych as [`activation_map`]: image | Grad-CAM | overlay.
///
/// # Errors
/// As [`grad_cam_maps`].
///
/// # Example
/// ```no_run
/// use selfsup::prelude::*;
/// let vs = nn::VarStore::new(Device::Cpu);
/// let net = models::resnet18(&vs.root(), Some(10))?;
/// let images = Tensor::randn([4, 3, 224, 224], (Kind::Float, Device::Cpu));
/// let fig = viz::grad_cam(&net, &images, &viz::GradCamConfig::class(3), &Normalization::imagenet())?;
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn grad_cam(
    net: &ResNet,
    images: &Tensor,
    cfg: &GradCamConfig,
    norm: &Normalization,
) -> Result<Figure> {
    let maps = grad_cam_maps(net, images, cfg)?;
    let what = match cfg.class {
        Some(c) => format!("class {c}"),
        None => "predicted class".to_string(),
    };
    heatmap_triptych(images, &maps, Some(norm), "Grad-CAM", &format!("Grad-CAM at {:?}, {what}", cfg.stage))
}
