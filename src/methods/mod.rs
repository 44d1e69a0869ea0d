//! Self-supervised methods behind one trait, so one training engine drives them all.
//!
//! Each method owns its state (STYLE.md): the online networks that the optimizer trains (one
//! `VarStore`), and everything else — a momentum target network, a queue of keys, a step counter —
//! which it exposes through [`SslMethod::state`] so checkpoints can save and restore it exactly.
//!
//! The training engine calls, per batch of two augmented views:
//! 1. [`SslMethod::training_step`] (inside autocast when mixed precision is on) → loss + metrics,
//! 2. backward and the optimizer step on [`SslMethod::online`]'s trainable variables,
//! 3. [`SslMethod::after_step`] with the progress, for momentum (EMA) updates and schedules.
use crate::error::Result;
use crate::models::ResNet;
use tch::{nn, Tensor};

/// What one training step returns.
#[derive(Debug)]
pub struct StepOutput {
    /// The scalar loss, still attached to the graph (the engine calls backward on it).
    pub loss: Tensor,
    /// Detached, un-normalised projections `z` of the first view `[N, D]`, for the collapse
    /// monitor (std of ℓ2-normalised z ≈ 1/√D when healthy, → 0 when collapsed).
    pub z: Option<Tensor>,
    /// Other numbers worth logging, by name (e.g. "logits_pos_mean", "tau").
    pub metrics: Vec<(String, f64)>,
}

/// A self-supervised pre-training method (SimCLR, MoCo, BYOL, Barlow Twins, ...).
pub trait SslMethod {
    /// Short name used in logs and checkpoints: "simclr", "moco_v2", "byol", "barlow_twins".
    fn name(&self) -> &str;

    /// One step on a batch of two views of the same images.
    ///
    /// # Shapes
    /// `v1`, `v2`: `[N, 3, H, W]` float, normalised, on the method's device.
    fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput>;

    /// Called after the optimizer step with the global step just done (0-based) and the planned
    /// total number of steps: momentum updates of target networks, schedules of τ. Nothing, by
    /// default (methods without a target network: SimCLR, Barlow Twins).
    fn after_step(&mut self, step: usize, total_steps: usize) -> Result<()> {
        let _ = (step, total_steps);
        Ok(())
    }

    /// The variables the optimizer trains (backbone, projector, predictor), with their names.
    fn online(&self) -> &nn::VarStore;

    /// The backbone whose features are evaluated after pre-training.
    fn backbone(&self) -> &ResNet;

    /// Everything besides `online()` that a checkpoint must hold to resume exactly: target
    /// network variables, queue, queue pointer, counters — as named tensors. Empty by default
    /// (everything lives in `online()`).
    fn state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Restores what [`SslMethod::state`] returned.
    ///
    /// # Errors
    /// When a name is missing or a shape differs (a checkpoint of another method or config).
    /// The default expects the empty state of the default [`SslMethod::state`].
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        load_named(self.name(), &[], state)
    }
}

pub mod barlow_twins;
pub mod byol;
pub mod moco;
pub mod simclr;

pub use barlow_twins::{BarlowTwins, BarlowTwinsConfig};
pub use byol::{Byol, ByolConfig, MomentumSchedule};
pub use moco::{Moco, MocoConfig};
pub use simclr::{SimClr, SimClrConfig};

/// Checks a pair of views for a training step: both `[N, 3, H, W]`, same shape, N ≥ `min_batch`.
/// Returns N.
pub(crate) fn check_views(method: &str, v1: &Tensor, v2: &Tensor, min_batch: i64) -> Result<i64> {
    let s1 = v1.size();
    if s1.len() != 4 || s1[1] != 3 || s1[0] < min_batch {
        return Err(crate::Error::shape(
            format!("{method}: first view"),
            format!("[N, 3, H, W] with N >= {min_batch}"),
            &s1,
        ));
    }
    let s2 = v2.size();
    if s2 != s1 {
        return Err(crate::Error::shape(format!("{method}: second view (must match the first)"), format!("{s1:?}"), &s2));
    }
    Ok(s1[0])
}

/// A store's variables as named tensors (sorted by name), renamed by `rename`, for `state()`.
pub(crate) fn store_state(vs: &nn::VarStore, rename: impl Fn(&str) -> String) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(name, t)| (rename(&name), t.detach())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Copies `state` entries into the tensors `expected` (name → destination), in place and without
/// gradients, after checking that the names are exactly the expected ones and the shapes match.
pub(crate) fn load_named(method: &str, expected: &[(String, Tensor)], state: &[(String, Tensor)]) -> Result<()> {
    use std::collections::HashMap;
    let given: HashMap<&str, &Tensor> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let missing: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).filter(|n| !given.contains_key(n)).collect();
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).filter(|n| !known.contains(n)).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        let list = |v: &[&str]| {
            let shown = v.iter().take(5).copied().collect::<Vec<_>>().join(", ");
            format!("{} ({shown}{})", v.len(), if v.len() > 5 { ", …" } else { "" })
        };
        return Err(crate::Error::Data(format!(
            "{method}: the state does not fit this method: missing {}, unexpected {}; was it saved by another \
             method or config?",
            list(&missing),
            list(&unexpected)
        )));
    }
    for (name, dst) in expected {
        let src = given[name.as_str()];
        if src.size() != dst.size() {
            return Err(crate::Error::shape(format!("{method}: state entry '{name}'"), format!("{:?}", dst.size()), &src.size()));
        }
    }
    tch::no_grad(|| -> Result<()> {
        for (name, dst) in expected {
            let src = given[name.as_str()];
            dst.shallow_clone().f_copy_(&src.to_device(dst.device()).to_kind(dst.kind()))?;
        }
        Ok(())
    })
}

/// The numbers a step logs: `fixed` ones (config values) followed by `names[i] = stats[i]` read
/// from one small tensor, so each step copies its statistics to the host once.
pub(crate) fn with_stats(mut fixed: Vec<(String, f64)>, names: &[&str], stats: &Tensor) -> Result<Vec<(String, f64)>> {
    let values = Vec::<f64>::try_from(stats.to_kind(tch::Kind::Double).to_device(tch::Device::Cpu))?;
    fixed.extend(names.iter().map(|n| n.to_string()).zip(values));
    Ok(fixed)
}

/// A backbone under `root / backbone_path` and an MLP head under `root / head_path...`, the
/// encoder every method builds (online, and again for a target network).
pub(crate) fn backbone_and_head(
    root: &nn::Path,
    backbone_path: &str,
    backbone: &crate::models::ResNetConfig,
    head_path: &[&str],
    head: &crate::models::heads::HeadConfig,
) -> Result<(ResNet, crate::models::heads::Mlp)> {
    let net = ResNet::new(&(root / backbone_path), backbone)?;
    let head_root = head_path.iter().fold(root.clone(), |p, part| &p / *part);
    Ok((net, crate::models::heads::Mlp::new(&head_root, head)?))
}

/// The online network of the methods without a target network (SimCLR, Barlow Twins): a backbone
/// at `backbone.*` and a projection head at `projector.*`, in one `VarStore` the optimizer trains.
#[derive(Debug)]
pub(crate) struct ProjectedEncoder {
    pub(crate) online: nn::VarStore,
    pub(crate) backbone: ResNet,
    pub(crate) projector: crate::models::heads::Mlp,
}

impl ProjectedEncoder {
    pub(crate) fn new(
        backbone: &crate::models::ResNetConfig,
        projector: &crate::models::heads::HeadConfig,
        device: tch::Device,
    ) -> Result<Self> {
        let online = nn::VarStore::new(device);
        let (backbone, projector) = backbone_and_head(&online.root(), "backbone", backbone, &["projector"], projector)?;
        Ok(ProjectedEncoder { online, backbone, projector })
    }

    /// z = g(f(x)) in training mode: `[M, 3, H, W]` → `[M, D]`.
    pub(crate) fn project(&self, x: &Tensor) -> Result<Tensor> {
        self.projector.forward_t(&self.backbone.features(x, true)?, true) // [M, D]
    }
}
