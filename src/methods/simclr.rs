//! SimCLR — "A Simple Framework for Contrastive Learning of Visual Representations" (Chen,
//! Kornblith, Norouzi, Hinton 2020, <https://arxiv.org/abs/2002.05709>).
//!
//! "SimCLR learns representations by maximizing agreement between differently augmented views of
//! the same data example via a contrastive loss in the latent space." (§2.1). Every other image
//! of the batch is a negative (NT-Xent, [`crate::losses::nt_xent`]), so SimCLR wants large
//! batches; a projection head g sits between the representation and the loss ("a nonlinear
//! projection head improves the representation quality of the layer before it", §4.2).
//!
//! ## Parameter names
//! `backbone.*` (torchvision keys) and `projector.*` (`nn.Sequential` indices:
//! `projector.0.weight`, `projector.1.*` BatchNorm, `projector.3.weight`).
//!
//! Used by `notebooks/*simclr*` (the STL-10 homework, S2.T1).
use super::{check_views, with_stats, ProjectedEncoder, SslMethod, StepOutput};
use crate::error::{config_err, Result};
use crate::losses::{l2_normalize, nt_xent, NtXentConfig};
use crate::models::heads::HeadConfig;
use crate::models::{Depth, ResNet, ResNetConfig};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// Settings of [`SimClr`]. `Default` is the paper's ImageNet setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimClrConfig {
    /// The backbone (ResNet-50 in the paper); `num_classes` must be `None`.
    pub backbone: ResNetConfig,
    /// The projection head g; its `in_dim` is set to the backbone's feature width.
    pub projector: HeadConfig,
    /// τ, the NT-Xent temperature.
    pub temperature: f64,
}

impl Default for SimClrConfig {
    /// ResNet-50, head 2048→2048→128 ([`HeadConfig::simclr`]), τ = 0.1 (official run.py
    /// `--temperature 0.1`).
    fn default() -> Self {
        SimClrConfig {
            backbone: ResNetConfig { depth: Depth::R50, ..Default::default() },
            projector: HeadConfig::simclr(),
            temperature: 0.1,
        }
    }
}

impl SimClrConfig {
    /// CIFAR-sized: small-image ResNet-18 ("we replace the first 7x7 Conv of stride 2 with 3x3
    /// Conv of stride 1, and also remove the first max pooling operation", Appendix B.9), head
    /// 512→512→128, τ = 0.5 (the best CIFAR-10 temperature in Appendix B.9).
    pub fn cifar() -> Self {
        SimClrConfig {
            backbone: ResNetConfig { depth: Depth::R18, small_images: true, ..Default::default() },
            projector: HeadConfig::simclr().for_features(512),
            temperature: 0.5,
        }
    }

    /// A CPU-sized SimCLR for tests and notebooks: small-image ResNet-18, head 512→512→32, τ = 0.5.
    pub fn tiny() -> Self {
        SimClrConfig { projector: HeadConfig::simclr().for_features(512).out_dim(32), ..SimClrConfig::cifar() }
    }

    /// The same config with another backbone (the head's input follows its feature width).
    pub fn backbone(mut self, backbone: ResNetConfig) -> Self {
        self.projector = self.projector.for_features(backbone.feature_dim());
        self.backbone = backbone;
        self
    }
    /// The same config with another projection head.
    pub fn projector(mut self, projector: HeadConfig) -> Self {
        self.projector = projector;
        self
    }
    /// The same config with another temperature τ.
    pub fn temperature(mut self, t: f64) -> Self {
        self.temperature = t;
        self
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        self.backbone.validate()?;
        self.projector.validate()?;
        if self.backbone.num_classes.is_some() {
            return Err(config_err!("SimClrConfig.backbone.num_classes must be None"));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(config_err!("SimClrConfig.temperature (τ) must be positive, got {}", self.temperature));
        }
        Ok(())
    }
}

/// SimCLR: one backbone + projection head, NT-Xent over the 2N views. See the module docs.
///
/// # Example
/// ```no_run
/// use selfsup::prelude::*;
/// use selfsup::methods::{SimClr, SimClrConfig, SslMethod};
/// let mut simclr = SimClr::new(SimClrConfig::tiny(), Device::Cpu)?;
/// let v1 = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
/// let v2 = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
/// let out = simclr.training_step(&v1, &v2)?; // out.loss ≈ ln(2N − 1) at the start
/// # Ok::<(), selfsup::Error>(())
/// ```
#[derive(Debug)]
pub struct SimClr {
    config: SimClrConfig,
    encoder: ProjectedEncoder,
    /// The data-parallel job whose ranks' projections are the negatives too.
    #[cfg(feature = "distributed")]
    dist: Option<std::sync::Arc<crate::distributed::Dist>>,
}

impl SimClr {
    /// Builds the backbone and projection head.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when the config is out of range.
    pub fn new(config: SimClrConfig, device: Device) -> Result<SimClr> {
        config.validate()?;
        let mut config = config;
        config.projector = config.projector.clone().for_features(config.backbone.feature_dim());
        let encoder = ProjectedEncoder::new(&config.backbone, &config.projector, device)?;
        Ok(SimClr {
            config,
            encoder,
            #[cfg(feature = "distributed")]
            dist: None,
        })
    }

    /// The config (with the head's `in_dim` set to the backbone's feature width).
    pub fn config(&self) -> &SimClrConfig {
        &self.config
    }

    /// The projections of a batch of images.
    ///
    /// # Shapes
    /// `x`: `[M, 3, H, W]` → `[M, D]`.
    ///
    /// # Errors
    /// On a malformed input.
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        self.encoder.project(x) // [M, D]
    }

    /// NT-Xent of this batch; in a data-parallel job with the negatives of every rank.
    fn nt_xent(&self, z1: &Tensor, z2: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "distributed")]
        if let Some(dist) = &self.dist {
            return super::across_ranks::nt_xent_across_ranks(z1, z2, self.config.temperature, dist);
        }
        nt_xent(z1, z2, &NtXentConfig { temperature: self.config.temperature })
    }
}

impl SslMethod for SimClr {
    fn name(&self) -> &str {
        "simclr"
    }
    fn config_json(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.config).ok()
    }

    /// Both views through the encoder as one batch of 2N (BatchNorm statistics over all 2N, as
    /// the official code concatenates the views), then NT-Xent.
    ///
    /// Metrics: `pos_sim`, `neg_sim` (mean cosine of positive pairs and of the other 2N−2),
    /// `temperature`.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] on malformed views or a batch of fewer than 2.
    fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
        let n = check_views("SimCLR", v1, v2, 2)?;
        // 1. both views through f and g in one batch
        let z = self.project(&Tensor::cat(&[v1, v2], 0))?; // [2N, D]
        let (z1, z2) = (z.narrow(0, 0, n), z.narrow(0, n, n)); // [N, D], [N, D]
                                                               // 2. NT-Xent over the 2N views
        let loss = self.nt_xent(&z1, &z2)?; // []
        let stats = tch::no_grad(|| -> Result<Tensor> {
            let zn = l2_normalize(&z.detach().to_kind(Kind::Float))?; // [2N, D]
            let sim = zn.mm(&zn.tr()); // [2N, 2N]
            let pos = (zn.narrow(0, 0, n) * zn.narrow(0, n, n)).sum(Kind::Float) / n as f64; // []
            let all = sim.sum(Kind::Float) - sim.trace() - 2.0 * n as f64 * &pos; // [] sum over negatives
            let neg = all / (2 * n * (2 * n - 2)).max(1) as f64; // []
            Ok(Tensor::stack(&[pos, neg], 0)) // [2]
        })?;
        let metrics =
            with_stats(vec![("temperature".to_string(), self.config.temperature)], &["pos_sim", "neg_sim"], &stats);
        Ok(StepOutput { loss, z: Some(z1.detach()), metrics })
    }


    fn online(&self) -> &nn::VarStore {
        &self.encoder.online
    }

    fn backbone(&self) -> &ResNet {
        &self.encoder.backbone
    }

    /// The negatives of every rank ([`super::across_ranks::nt_xent_across_ranks`]).
    #[cfg(feature = "distributed")]
    fn set_distributed(&mut self, dist: Option<std::sync::Arc<crate::distributed::Dist>>) -> Result<()> {
        self.dist = dist.filter(|d| d.world_size() > 1);
        Ok(())
    }

}
