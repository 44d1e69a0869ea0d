//! Baselines every representation is compared with.
//!
//! - **Random weights** (S1.6): the same architecture, randomly initialised and frozen. Random
//!   convolutional features are far from useless — on the 8×8 digits a linear probe on them
//!   already scores about 0.93 (FORMATS.md), and the BYOL seed's random ResNet reaches 0.16 on
//!   CIFAR-100 against 0.01 for chance — so a self-supervised encoder must beat *this*, not chance.
//! - **Supervised ImageNet weights** (S0.10, S3.3): torchvision's `resnet18(weights=...)` /
//!   `resnet50(...)` loaded into the same architecture and frozen. The weights file is supplied
//!   by the user (nothing is downloaded), converted once in Python:
//!   ```python
//!   import torchvision, safetensors.torch as st
//!   m = torchvision.models.resnet18(weights="IMAGENET1K_V1")
//!   st.save_file({k: v.contiguous() for k, v in m.state_dict().items()}, "resnet18_imagenet.safetensors")
//!   ```
//!   The ImageNet stem (7×7/2 + max-pool) is needed: the small-image stem has other shapes.
use super::backbone::Backbone;
use crate::error::{Error, Result};
use crate::models::ResNetConfig;
use std::path::Path;
use tch::{Device, Tensor};

impl Backbone {
    /// torchvision ImageNet weights (a safetensors file with torchvision's keys; `fc.*` and
    /// `num_batches_tracked` are ignored) in a ResNet of architecture `config` on `device`,
    /// frozen (S0.10).
    ///
    /// # Errors
    /// [`Error::Data`] for a missing file or keys that do not fit (another depth);
    /// [`Error::Shape`] for another stem (`small_images` must be false for ImageNet weights).
    pub fn from_torchvision(path: impl AsRef<Path>, config: &ResNetConfig, device: Device) -> Result<Backbone> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::Data(format!(
                "ImageNet weights {} not found: export torchvision's state_dict to safetensors \
                 (see the eval::baselines docs) and pass its path",
                path.display()
            )));
        }
        let named = Tensor::read_safetensors(path)?;
        Ok(Backbone::from_named(&named, config, device, &format!("torchvision weights {}", path.display()))?
            .named("imagenet"))
    }
}

/// The random-weights baseline of S1.6: [`Backbone::random`].
///
/// # Errors
/// An invalid `config`.
pub fn random_backbone(config: &ResNetConfig, seed: u64, device: Device) -> Result<Backbone> {
    Backbone::random(config, seed, device)
}

/// The supervised ImageNet baseline of S0.10: [`Backbone::from_torchvision`].
///
/// # Errors
/// As [`Backbone::from_torchvision`].
pub fn imagenet_backbone(path: impl AsRef<Path>, config: &ResNetConfig, device: Device) -> Result<Backbone> {
    Backbone::from_torchvision(path, config, device)
}
