//! Self-supervised methods behind one trait, so one training engine drives them all.
//!
//! Each method owns its state (STYLE.md): the online networks that the optimizer trains (one
//! `VarStore`), and everything else — a momentum target network, a queue of keys, a step counter —
//! which it exposes through [`SslMethod::state`] so checkpoints can save and restore it exactly.
//!
//! The training engine calls, per batch of two augmented views:
//! 1. [`SslMethod::training_step`] (inside autocast when mixed precision is on) → loss + metrics,
//!    left on the device (the engine reads them once per log window),
//! 2. backward and the optimizer step on [`SslMethod::online`]'s trainable variables,
//! 3. [`SslMethod::after_step`] with the progress, for momentum (EMA) updates and schedules.
use crate::error::Result;
use crate::models::ResNet;
use tch::{nn, Tensor};

/// What one training step returns.
///
/// Nothing in it has been read back to the host: on a GPU, reading a value waits for every
/// kernel queued before it, so the engine keeps the loss and the metrics on the device and reads
/// a whole log window of steps at once (see [`crate::train`]). In a notebook,
/// [`StepOutput::metrics_f64`] and `out.loss.double_value(&[])` read them.
#[derive(Debug)]
pub struct StepOutput {
    /// The scalar loss, still attached to the graph (the engine calls backward on it).
    pub loss: Tensor,
    /// Detached, un-normalised projections `z` of the first view `[N, D]`, for the collapse
    /// monitor (std of ℓ2-normalised z ≈ 1/√D when healthy, → 0 when collapsed).
    pub z: Option<Tensor>,
    /// Other numbers worth logging, by name (e.g. "pos_sim", "tau").
    pub metrics: StepMetrics,
}

impl StepOutput {
    /// The metrics as numbers, host values first, in one transfer from the device.
    /// Syncs with the device; for notebooks and tests (the engine reads many steps at once).
    ///
    /// # Errors
    /// As [`StepMetrics::to_f64`].
    pub fn metrics_f64(&self) -> Result<Vec<(String, f64)>> {
        self.metrics.to_f64()
    }
}

/// The numbers a training step logs, by name, each kept where it was computed so that taking
/// a step never waits for the device: numbers the host knows already (config values such as
/// τ, counters) as `f64`, and statistics computed on the device as detached one-element
/// tensors, which the engine reads for a whole log window in one transfer.
#[derive(Debug, Default)]
pub struct StepMetrics {
    /// Known on the host (e.g. "temperature", "tau", "queue_fill", "loss_scale").
    pub host: Vec<(String, f64)>,
    /// Detached one-element tensors on the device (e.g. "pos_sim", "acc1", "grad_norm").
    pub device: Vec<(String, Tensor)>,
}

impl StepMetrics {
    /// No metrics.
    pub fn new() -> Self {
        StepMetrics::default()
    }

    /// These metrics and a number known on the host.
    pub fn with(mut self, name: impl Into<String>, value: f64) -> Self {
        self.host.push((name.into(), value));
        self
    }

    /// These metrics and a one-element tensor (detached here), read later.
    pub fn with_tensor(mut self, name: impl Into<String>, value: &Tensor) -> Self {
        self.device.push((name.into(), value.detach()));
        self
    }

    /// Adds `other`'s metrics after these.
    pub fn extend(&mut self, other: StepMetrics) {
        self.host.extend(other.host);
        self.device.extend(other.device);
    }

    /// The number of metrics.
    pub fn len(&self) -> usize {
        self.host.len() + self.device.len()
    }

    /// Whether there is no metric.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device values as 0-dim f64 tensors on `device`, in order, ready to be stacked with
    /// other scalars into one transfer.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] when a value has more than one element.
    pub(crate) fn device_scalars(&self, device: tch::Device) -> Result<Vec<Tensor>> {
        self.device.iter().map(|(name, t)| scalar_f64(&format!("metric '{name}'"), t, device)).collect()
    }

    /// All metrics as numbers, host values first, the device values read in one transfer.
    /// Syncs with the device; for notebooks and tests.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] when a device value has more than one element.
    pub fn to_f64(&self) -> Result<Vec<(String, f64)>> {
        let mut out = self.host.clone();
        if let Some((_, first)) = self.device.first() {
            let values = tch::no_grad(|| -> Result<Vec<f64>> {
                let row = Tensor::f_stack(&self.device_scalars(first.device())?, 0)?; // [K] f64
                Ok(Vec::<f64>::try_from(row.to_device(tch::Device::Cpu))?)
            })?;
            out.extend(self.device.iter().map(|(n, _)| n.clone()).zip(values));
        }
        Ok(out)
    }
}

/// A one-element tensor as a detached 0-dim f64 tensor on `device` (exact: f64 holds every
/// f32/f16/bf16 value), to be stacked with other scalars and read in one transfer.
///
/// # Errors
/// [`crate::Error::Shape`] naming `what` unless `t` has one element.
pub(crate) fn scalar_f64(what: &str, t: &Tensor, device: tch::Device) -> Result<Tensor> {
    if t.numel() != 1 {
        return Err(crate::Error::shape(what.to_string(), "one element", &t.size()));
    }
    Ok(t.detach().to_device(device).to_kind(tch::Kind::Double).reshape([] as [i64; 0]))
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

    /// The method's settings as JSON (its `<Name>Config`: τ, momentum, queue size, heads,
    /// backbone), recorded in the run's identity so that resuming or loading a run with other
    /// settings is refused, naming the setting that differs (see [`crate::train::identity`]).
    ///
    /// `None` by default: a method of your own may leave it so, and the engine then identifies
    /// runs by the names and shapes of the method's variables and state only, and prints a note
    /// that a change of its other settings (a temperature, say) cannot be detected. Return
    /// `serde_json::to_value(&self.config).ok()` to be safe.
    fn config_json(&self) -> Option<serde_json::Value> {
        None
    }

    /// Restores what [`SslMethod::state`] returned.
    ///
    /// # Errors
    /// When a name is missing or a shape differs (a checkpoint of another method or config).
    /// The default expects the empty state of the default [`SslMethod::state`].
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        load_named(self.name(), &[], state)
    }

    /// Joins a data-parallel job (feature `distributed`; the engine calls it with the run's
    /// job, `None` for one process): a method whose loss couples the images of a batch computes
    /// that term over every rank's images ([`across_ranks`]). The default does nothing, which
    /// is right for losses that average per-image terms (BYOL): averaging the gradients over
    /// ranks then gives the whole batch's.
    ///
    /// # Errors
    /// When the method cannot train across ranks with its settings.
    #[cfg(feature = "distributed")]
    fn set_distributed(&mut self, dist: Option<std::sync::Arc<crate::distributed::Dist>>) -> Result<()> {
        let _ = dist;
        Ok(())
    }
}

#[cfg(feature = "distributed")]
pub mod across_ranks;
pub mod barlow_twins;
pub mod byol;
pub mod moco;
pub mod registry;
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

/// A store's variables as named tensors (sorted by name), renamed by `rename`, for
/// [`SslMethod::state`]: a method with a target network returns it as
/// `store_state(&target, |n| format!("target.{n}"))` (as [`Byol`] does).
pub fn store_state(vs: &nn::VarStore, rename: impl Fn(&str) -> String) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(name, t)| (rename(&name), t.detach())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Copies `state` entries into the tensors `expected` (name → destination), in place and without
/// gradients, after checking that the names are exactly the expected ones and the shapes match:
/// [`SslMethod::load_state`] of a method whose `state()` comes from [`store_state`] is
/// `load_named(self.name(), &self.state(), state)`.
///
/// # Errors
/// [`crate::Error::Data`] listing missing and unexpected names; [`crate::Error::Shape`] when a
/// shape differs.
pub fn load_named(method: &str, expected: &[(String, Tensor)], state: &[(String, Tensor)]) -> Result<()> {
    crate::models::weights::load_by_name(
        &format!("{method}: the state's entries and this method's"),
        "; was it saved by another method or config?",
        expected,
        state,
    )
}

/// The numbers a step logs: `fixed` ones (config values, known on the host) followed by
/// `names[i] = stats[i]` of one small detached tensor `[len(names)]`, left on the device so the
/// step does not wait for it (the engine reads it with the rest of its log window).
pub(crate) fn with_stats(fixed: Vec<(String, f64)>, names: &[&str], stats: &Tensor) -> StepMetrics {
    let stats = stats.detach();
    let device = names.iter().enumerate().map(|(i, n)| (n.to_string(), stats.get(i as i64))).collect();
    StepMetrics { host: fixed, device }
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
