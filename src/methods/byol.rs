//! BYOL — "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning" (Grill et al.
//! 2020, <https://arxiv.org/abs/2006.07733>), and its no-momentum variant (SimSiam-like; Chen &
//! He 2021, "Exploring Simple Siamese Representation Learning", <https://arxiv.org/abs/2011.10566>).
//!
//! "BYOL's goal is to learn a representation y_θ which can then be used for downstream tasks.
//! […] BYOL uses two neural networks […] the online and target networks. […] we train the online
//! network to predict the target network representation of the same image under a different
//! augmented view" (§3.1). No negatives: the predictor and the slowly moving target prevent
//! collapse. With `momentum: false` the target is the online network itself behind a
//! stop-gradient, the variant of the seed notebook (S1.8), which also trains but learns less.
//!
//! ## Parameter names
//! Online store: `backbone.*` (torchvision keys), `projector.*`, `predictor.*` (`nn.Sequential`
//! indices, see [`crate::models::heads`]). The target network has its own frozen store with the
//! same `backbone.*` and `projector.*` paths, so [`crate::momentum::ema_update`] pairs them by
//! name; [`SslMethod::state`] reports them as `target.backbone.*`, `target.projector.*`.
//!
//! Used by `notebooks/*byol*` (supervised vs BYOL embeddings; the STL-10 homework).
use super::{backbone_and_head, check_views, load_named, with_stats, store_state, SslMethod, StepOutput};
use crate::error::{config_err, Result};
use crate::losses::{l2_normalize, normalized_mse};
use crate::models::heads::{HeadConfig, Mlp};
use crate::models::{Depth, ResNet, ResNetConfig};
use crate::momentum::{cosine_tau, ema_update};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// How the target decay τ moves during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MomentumSchedule {
    /// τ = 1 − (1 − τ_base)(cos(πk/K) + 1)/2, from τ_base to 1 (BYOL §3.3; [`cosine_tau`]).
    Cosine,
    /// τ = τ_base throughout (byol-pytorch's `moving_average_decay`, the seed's 0.99).
    Constant,
}

/// Settings of [`Byol`]. `Default` is the paper's ImageNet setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ByolConfig {
    /// The backbone (ResNet-50 in the paper); `num_classes` must be `None`.
    pub backbone: ResNetConfig,
    /// The projector g; its `in_dim` is set to the backbone's feature width.
    pub projector: HeadConfig,
    /// The predictor q, `projector.out_dim → … → projector.out_dim`.
    pub predictor: HeadConfig,
    /// Keep a momentum (EMA) target network. `false`: the target is the online network with a
    /// stop-gradient (SimSiam-like, S1.8), and `base_momentum` is unused.
    pub momentum: bool,
    /// τ_base, the target decay at the start: ξ ← τ ξ + (1 − τ) θ.
    pub base_momentum: f64,
    /// How τ moves from τ_base.
    pub momentum_schedule: MomentumSchedule,
}

impl Default for ByolConfig {
    /// ResNet-50, projector 2048→4096→256, predictor 256→4096→256 (BYOL §3.3), τ_base = 0.996 on
    /// the cosine schedule ("τ starts from τ_base = 0.996 and is increased to one during
    /// training", §3.3).
    fn default() -> Self {
        ByolConfig {
            backbone: ResNetConfig { depth: Depth::R50, ..Default::default() },
            projector: HeadConfig::byol_projector(),
            predictor: HeadConfig::byol_predictor(),
            momentum: true,
            base_momentum: 0.996,
            momentum_schedule: MomentumSchedule::Cosine,
        }
    }
}

impl ByolConfig {
    /// The seed's CIFAR setting (S1.3, byol-pytorch): small-image ResNet-18, projection 128,
    /// hidden 512 (`projection_size=128, projection_hidden_size=512`), constant EMA decay 0.99
    /// (`moving_average_decay=0.99`).
    pub fn cifar() -> Self {
        let projector = HeadConfig { hidden_dim: 512, out_dim: 128, ..HeadConfig::byol_projector() }.in_dim(512);
        ByolConfig {
            backbone: ResNetConfig { depth: Depth::R18, small_images: true, ..Default::default() },
            predictor: projector.clone().in_dim(128),
            projector,
            momentum: true,
            base_momentum: 0.99,
            momentum_schedule: MomentumSchedule::Constant,
        }
    }

    /// [`ByolConfig::cifar`] without the momentum target (S1.8: "BYOL without momentum").
    pub fn no_momentum() -> Self {
        ByolConfig { momentum: false, ..ByolConfig::cifar() }
    }

    /// A CPU-sized BYOL for tests and notebooks: small-image ResNet-18, projector 512→64→32,
    /// predictor 32→64→32, τ_base = 0.99 on the cosine schedule.
    pub fn tiny() -> Self {
        let projector = HeadConfig { hidden_dim: 64, out_dim: 32, ..HeadConfig::byol_projector() }.in_dim(512);
        ByolConfig {
            backbone: ResNetConfig { depth: Depth::R18, small_images: true, ..Default::default() },
            predictor: projector.clone().in_dim(32),
            projector,
            momentum: true,
            base_momentum: 0.99,
            momentum_schedule: MomentumSchedule::Cosine,
        }
    }

    /// The same config with another backbone (the projector's input follows its feature width).
    pub fn backbone(mut self, backbone: ResNetConfig) -> Self {
        self.projector = self.projector.for_features(backbone.feature_dim());
        self.backbone = backbone;
        self
    }
    /// The same config with (true) or without (false) the momentum target.
    pub fn momentum(mut self, momentum: bool) -> Self {
        self.momentum = momentum;
        self
    }
    /// The same config with another τ_base.
    pub fn base_momentum(mut self, tau: f64) -> Self {
        self.base_momentum = tau;
        self
    }
    /// The same config with another τ schedule.
    pub fn momentum_schedule(mut self, schedule: MomentumSchedule) -> Self {
        self.momentum_schedule = schedule;
        self
    }

    /// Checks the ranges and that the predictor maps the projection onto itself.
    pub fn validate(&self) -> Result<()> {
        self.backbone.validate()?;
        self.projector.validate()?;
        self.predictor.validate()?;
        if self.backbone.num_classes.is_some() {
            return Err(config_err!("ByolConfig.backbone.num_classes must be None: BYOL trains the pooled features"));
        }
        let d = self.projector.out_dim;
        if self.predictor.in_dim != d || self.predictor.out_dim != d {
            return Err(config_err!(
                "ByolConfig.predictor must map the projection onto itself: expected in_dim = out_dim = {d} \
                 (projector.out_dim), got {} → {}",
                self.predictor.in_dim,
                self.predictor.out_dim
            ));
        }
        if !(0.0..=1.0).contains(&self.base_momentum) {
            return Err(config_err!("ByolConfig.base_momentum (τ_base) must be in [0, 1], got {}", self.base_momentum));
        }
        Ok(())
    }
}

/// The target network: backbone + projector in a frozen store.
#[derive(Debug)]
struct Target {
    vs: nn::VarStore,
    backbone: ResNet,
    projector: Mlp,
}

/// BYOL (online + predictor, EMA target) or its no-momentum variant. See the module docs.
///
/// # Example
/// ```no_run
/// use selfsup::prelude::*;
/// use selfsup::methods::{Byol, ByolConfig, SslMethod};
/// let mut byol = Byol::new(ByolConfig::tiny(), Device::Cpu)?;
/// let v1 = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
/// let v2 = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
/// let out = byol.training_step(&v1, &v2)?;
/// // … backward + optimizer step on byol.online() …
/// byol.after_step(0, 1000)?; // EMA update of the target with τ(0) = τ_base
/// # Ok::<(), selfsup::Error>(())
/// ```
#[derive(Debug)]
pub struct Byol {
    config: ByolConfig,
    online: nn::VarStore,
    backbone: ResNet,
    projector: Mlp,
    predictor: Mlp,
    target: Option<Target>,
    /// τ of the last EMA update (τ_base before the first).
    tau: f64,
}

impl Byol {
    /// Builds the online network (backbone, projector, predictor) and, with `momentum`, the
    /// target network as a frozen copy of the online backbone and projector.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when the config is out of range.
    pub fn new(config: ByolConfig, device: Device) -> Result<Byol> {
        config.validate()?;
        let mut config = config;
        config.projector = config.projector.clone().for_features(config.backbone.feature_dim());
        let online = nn::VarStore::new(device);
        let (backbone, projector) =
            backbone_and_head(&online.root(), "backbone", &config.backbone, &["projector"], &config.projector)?;
        let predictor = Mlp::new(&(online.root() / "predictor"), &config.predictor)?;
        let target = if config.momentum {
            let mut vs = nn::VarStore::new(device);
            let (backbone, projector) =
                backbone_and_head(&vs.root(), "backbone", &config.backbone, &["projector"], &config.projector)?;
            vs.copy(&online)?; // ξ ← θ
            vs.freeze(); // the target gets no gradient
            Some(Target { vs, backbone, projector })
        } else {
            None
        };
        let tau = config.base_momentum;
        Ok(Byol { config, online, backbone, projector, predictor, target, tau })
    }

    /// The config (with the projector's `in_dim` set to the backbone's feature width).
    pub fn config(&self) -> &ByolConfig {
        &self.config
    }
    /// The target network's store (`None` without momentum: the target is the online network).
    pub fn target(&self) -> Option<&nn::VarStore> {
        self.target.as_ref().map(|t| &t.vs)
    }
    /// τ used by the last EMA update (τ_base before the first).
    pub fn tau(&self) -> f64 {
        self.tau
    }

    /// The online projection z and prediction p of a view.
    ///
    /// # Shapes
    /// `x`: `[N, 3, H, W]` → (`[N, D]`, `[N, D]`).
    ///
    /// # Errors
    /// On a malformed input.
    pub fn online_forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.backbone.features(x, true)?; // [N, feature_dim]
        let z = self.projector.forward_t(&h, true)?; // [N, D]
        let p = self.predictor.forward_t(&z, true)?; // [N, D]
        Ok((z, p))
    }

    /// The target projection of a view, without gradients (the EMA network in training mode).
    /// Without momentum, the online projection, detached.
    ///
    /// # Shapes
    /// `x`: `[N, 3, H, W]` → `[N, D]`.
    ///
    /// # Errors
    /// On a malformed input.
    pub fn target_forward(&self, x: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| match &self.target {
            Some(t) => t.projector.forward_t(&t.backbone.features(x, true)?, true), // [N, D]
            None => Ok(self.projector.forward_t(&self.backbone.features(x, true)?, true)?.detach()), // [N, D]
        })
    }

    /// The τ for the update after `step` of `total` (clamped at `total`: τ stays 1 past the plan).
    fn tau_at(&self, step: usize, total: usize) -> Result<f64> {
        match self.config.momentum_schedule {
            MomentumSchedule::Constant => Ok(self.config.base_momentum),
            MomentumSchedule::Cosine => cosine_tau(step.min(total), total, self.config.base_momentum),
        }
    }
}

impl SslMethod for Byol {
    fn name(&self) -> &str {
        "byol"
    }
    fn config_json(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.config).ok()
    }

    /// Online projections and predictions of both views, target projections of both views (no
    /// gradient), and the symmetric loss `‖p̄1 − z̄′2‖² + ‖p̄2 − z̄′1‖²` (BYOL Eq. 2, symmetrised).
    ///
    /// Without momentum the targets are the online projections of the same step, detached — the
    /// same numbers a second no-grad pass of the online network would give.
    ///
    /// Metrics: `tau`, `loss_12`, `loss_21`, `cos_p_z` (mean cosine of predictions and targets).
    ///
    /// # Errors
    /// [`crate::Error::Shape`] on malformed views or a batch of fewer than 2 (BatchNorm).
    fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
        check_views("BYOL", v1, v2, 2)?;
        // 1. online: projection and prediction of each view (views separately, own BN statistics)
        let (z1, p1) = self.online_forward(v1)?; // [N, D], [N, D]
        let (z2, p2) = self.online_forward(v2)?; // [N, D], [N, D]
                                                 // 2. targets: the EMA network, or the online projections behind a stop-gradient
        let (t1, t2) = match &self.target {
            Some(_) => (self.target_forward(v1)?, self.target_forward(v2)?), // [N, D], no grad
            None => (z1.detach(), z2.detach()),                              // [N, D]
        };
        // 3. loss: predict the other view's target, both ways
        let loss_12 = normalized_mse(&p1, &t2)?; // []
        let loss_21 = normalized_mse(&p2, &t1)?; // []
        let stats = tch::no_grad(|| -> Result<Tensor> {
            let cos = (l2_normalize(&p1)? * l2_normalize(&t2)?).sum_dim_intlist([1i64].as_slice(), false, Kind::Float); // [N]
            Ok(Tensor::stack(
                &[loss_12.detach().to_kind(Kind::Float), loss_21.detach().to_kind(Kind::Float), cos.mean(Kind::Float)],
                0,
            )) // [3]
        })?;
        let loss = loss_12 + loss_21; // []
        let tau = if self.target.is_some() { self.tau } else { 0.0 };
        let metrics = with_stats(vec![("tau".to_string(), tau)], &["loss_12", "loss_21", "cos_p_z"], &stats);
        Ok(StepOutput { loss, z: Some(z1.detach()), metrics })
    }

    /// The EMA update of the target after the optimizer step: ξ ← τ ξ + (1 − τ) θ, τ from the
    /// schedule at `step` of `total_steps` ("after each training step, we update the target
    /// parameters ξ", BYOL §3.1). Nothing without momentum.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when the cosine schedule gets `total_steps == 0`.
    fn after_step(&mut self, step: usize, total_steps: usize) -> Result<()> {
        if let Some(target) = &self.target {
            let tau = self.tau_at(step, total_steps)?;
            ema_update(&target.vs, &self.online, tau)?;
            self.tau = tau;
        }
        Ok(())
    }

    fn online(&self) -> &nn::VarStore {
        &self.online
    }

    fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    /// The target network as `target.backbone.*`, `target.projector.*` (nothing without momentum).
    fn state(&self) -> Vec<(String, Tensor)> {
        match &self.target {
            Some(t) => store_state(&t.vs, |name| format!("target.{name}")),
            None => Vec::new(),
        }
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let expected = self.state();
        load_named("BYOL", &expected, state)
    }
}
