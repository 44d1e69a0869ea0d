//! Barlow Twins — "Barlow Twins: Self-Supervised Learning via Redundancy Reduction" (Zbontar,
//! Jing, Misra, LeCun, Deny 2021, <https://arxiv.org/abs/2103.03230>).
//!
//! "The objective function […] measures the cross-correlation matrix between the embeddings of
//! two identical networks fed with distorted versions of a batch of samples, and tries to make
//! this matrix close to the identity." (§1). The diagonal makes the two views agree, the
//! off-diagonal term (weight λ) decorrelates the dimensions; no negatives, no momentum network,
//! no predictor — but a wide projector helps ("performance keeps improving with the dimensionality
//! of the embedding", §4).
//!
//! ## Parameter names
//! `backbone.*` (torchvision keys) and `projector.*` as in the official `BarlowTwins` module
//! (`projector.0.weight`, `projector.1.*` BatchNorm, `projector.3.weight`, …, `projector.6.weight`).
//! The official module's final `bn` (BatchNorm1d without affine) is the per-dimension batch
//! normalisation inside [`crate::losses::cross_correlation`].
//!
//! Used by `notebooks/*barlow_twins*` (S3).
use super::{check_views, with_stats, ProjectedEncoder, SslMethod, StepOutput};
use crate::error::{config_err, Result};
use crate::losses::{barlow_twins_terms, cross_correlation, BarlowTwinsLossConfig};
use crate::models::heads::HeadConfig;
use crate::models::{Depth, ResNet, ResNetConfig};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// Settings of [`BarlowTwins`]. `Default` is the paper's ImageNet setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarlowTwinsConfig {
    /// The backbone (ResNet-50 in the paper); `num_classes` must be `None`.
    pub backbone: ResNetConfig,
    /// The projector; its `in_dim` is set to the backbone's feature width.
    pub projector: HeadConfig,
    /// λ, the weight of the off-diagonal (redundancy-reduction) term.
    pub off_diagonal_weight: f64,
}

impl Default for BarlowTwinsConfig {
    /// ResNet-50, projector 8192×3 with BatchNorm ([`HeadConfig::barlow_twins`]), λ = 5·10⁻³
    /// ("we find λ = 5·10⁻³ to work best", §4; the official main.py uses `--lambd 0.0051`).
    fn default() -> Self {
        BarlowTwinsConfig {
            backbone: ResNetConfig { depth: Depth::R50, ..Default::default() },
            projector: HeadConfig::barlow_twins(),
            off_diagonal_weight: 5e-3,
        }
    }
}

impl BarlowTwinsConfig {
    /// The seed's CIFAR-10 model (S3.5): torchvision ResNet-18 (ImageNet stem, as the seed's
    /// `torchvision.models.resnet18()`), projector 512→512→512→512 with BatchNorm and biases
    /// (the seed's `nn.Linear(512, f)`, `f = 512`), λ = 5·10⁻³ (the seed's `l=5e-3`).
    pub fn cifar() -> Self {
        BarlowTwinsConfig {
            backbone: ResNetConfig { depth: Depth::R18, ..Default::default() },
            projector: HeadConfig { hidden_dim: 512, out_dim: 512, bias: true, ..HeadConfig::barlow_twins() }
                .in_dim(512),
            off_diagonal_weight: 5e-3,
        }
    }

    /// A CPU-sized Barlow Twins for tests and notebooks: small-image ResNet-18, projector
    /// 512→64→64→64, λ = 5·10⁻³.
    pub fn tiny() -> Self {
        BarlowTwinsConfig {
            backbone: ResNetConfig { depth: Depth::R18, small_images: true, ..Default::default() },
            projector: HeadConfig { hidden_dim: 64, out_dim: 64, ..HeadConfig::barlow_twins() }.in_dim(512),
            off_diagonal_weight: 5e-3,
        }
    }

    /// The same config with another backbone (the projector's input follows its feature width).
    pub fn backbone(mut self, backbone: ResNetConfig) -> Self {
        self.projector = self.projector.for_features(backbone.feature_dim());
        self.backbone = backbone;
        self
    }
    /// The same config with another projector.
    pub fn projector(mut self, projector: HeadConfig) -> Self {
        self.projector = projector;
        self
    }
    /// The same config with another λ.
    pub fn off_diagonal_weight(mut self, lambda: f64) -> Self {
        self.off_diagonal_weight = lambda;
        self
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        self.backbone.validate()?;
        self.projector.validate()?;
        if self.backbone.num_classes.is_some() {
            return Err(config_err!("BarlowTwinsConfig.backbone.num_classes must be None"));
        }
        let l = self.off_diagonal_weight;
        if !(l.is_finite() && l >= 0.0) {
            return Err(config_err!(
                "BarlowTwinsConfig.off_diagonal_weight (λ) must be a non-negative number, got {l}"
            ));
        }
        Ok(())
    }
}

/// Barlow Twins: one backbone + projector applied to both views. See the module docs.
///
/// # Example
/// ```no_run
/// use selfsup::prelude::*;
/// use selfsup::methods::{BarlowTwins, BarlowTwinsConfig, SslMethod};
/// let mut bt = BarlowTwins::new(BarlowTwinsConfig::tiny(), Device::Cpu)?;
/// let v1 = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
/// let v2 = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
/// let out = bt.training_step(&v1, &v2)?;
/// # Ok::<(), selfsup::Error>(())
/// ```
#[derive(Debug)]
pub struct BarlowTwins {
    config: BarlowTwinsConfig,
    encoder: ProjectedEncoder,
    /// The data-parallel job whose ranks' projections are in C too.
    #[cfg(feature = "distributed")]
    dist: Option<std::sync::Arc<crate::distributed::Dist>>,
}

impl BarlowTwins {
    /// Builds the backbone and projector.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when the config is out of range.
    pub fn new(config: BarlowTwinsConfig, device: Device) -> Result<BarlowTwins> {
        config.validate()?;
        let mut config = config;
        config.projector = config.projector.clone().for_features(config.backbone.feature_dim());
        let encoder = ProjectedEncoder::new(&config.backbone, &config.projector, device)?;
        Ok(BarlowTwins {
            config,
            encoder,
            #[cfg(feature = "distributed")]
            dist: None,
        })
    }

    /// The config (with the projector's `in_dim` set to the backbone's feature width).
    pub fn config(&self) -> &BarlowTwinsConfig {
        &self.config
    }

    /// The projection z of a view.
    ///
    /// # Shapes
    /// `x`: `[N, 3, H, W]` → `[N, D]`.
    ///
    /// # Errors
    /// On a malformed input.
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        self.encoder.project(x) // [N, D]
    }

    /// The batch's cross-correlation; in a data-parallel job over every rank's projections.
    fn cross_correlation(&self, z1: &Tensor, z2: &Tensor) -> Result<Tensor> {
        let eps = BarlowTwinsLossConfig::default().eps;
        #[cfg(feature = "distributed")]
        if let Some(dist) = &self.dist {
            return super::across_ranks::cross_correlation_across_ranks(z1, z2, eps, dist);
        }
        cross_correlation(z1, z2, eps)
    }
}

impl SslMethod for BarlowTwins {
    fn name(&self) -> &str {
        "barlow_twins"
    }
    fn config_json(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.config).ok()
    }

    /// Projections of both views (separately, each with its own BatchNorm statistics, as the
    /// official code), their cross-correlation C `[D, D]`, and `Σ(1 − C_ii)² + λ Σ_{i≠j} C_ij²`.
    ///
    /// Metrics: `on_diag`, `off_diag` (the unweighted terms), `lambda`.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] on malformed views or a batch of fewer than 2.
    fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
        check_views("Barlow Twins", v1, v2, 2)?;
        // 1. projections of both views
        let z1 = self.project(v1)?; // [N, D]
        let z2 = self.project(v2)?; // [N, D]
                                    // 2. cross-correlation of the batch-normalised projections
        let c = self.cross_correlation(&z1, &z2)?; // [D, D]
        // Under bf16/fp16 autocast the matmul returns half precision; summing D² squared terms
        // there rounds the loss to a few digits (a logged 91.0, 97.0). The terms are summed in f32.
        let c = if matches!(c.kind(), Kind::BFloat16 | Kind::Half) { c.to_kind(Kind::Float) } else { c };
                                                                                    // 3. invariance + λ · redundancy reduction
        let (on_diag, off_diag) = barlow_twins_terms(&c)?; // [], []
        let lambda = self.config.off_diagonal_weight;
        let stats = Tensor::stack(&[on_diag.detach().to_kind(Kind::Float), off_diag.detach().to_kind(Kind::Float)], 0); // [2]
        let loss = on_diag + lambda * off_diag; // []
        let metrics = with_stats(vec![("lambda".to_string(), lambda)], &["on_diag", "off_diag"], &stats);
        Ok(StepOutput { loss, z: Some(z1.detach()), metrics })
    }


    fn online(&self) -> &nn::VarStore {
        &self.encoder.online
    }

    fn backbone(&self) -> &ResNet {
        &self.encoder.backbone
    }

    /// C over every rank's projections ([`super::across_ranks::cross_correlation_across_ranks`]).
    #[cfg(feature = "distributed")]
    fn set_distributed(&mut self, dist: Option<std::sync::Arc<crate::distributed::Dist>>) -> Result<()> {
        self.dist = dist.filter(|d| d.world_size() > 1);
        Ok(())
    }

}
