//! The training engine: self-supervised pre-training ([`pretrain`]) and supervised training
//! ([`train_supervised`]) with our own optimizers ([`Optimizer`]: SGD, Adam, AdamW, LARS), pure
//! learning-rate schedules ([`LrSchedule`]), mixed precision (CUDA, and bf16 on CPUs with native
//! bf16) and channels-last on CUDA,
//! gradient clipping, a `\r` progress bar, a [`History`] written as JSON lines while training,
//! the collapse monitor and online kNN accuracy (B7), and checkpoints that resume exactly.
//!
//! **Re-running a cell resumes.** Interrupting an evcxr cell ends the kernel process, so a
//! training call is bounded (`max_steps`, `time_budget_secs`), checkpoints as it goes
//! (`checkpoint_every_steps`, `checkpoint_every_secs`, and at the end) into its `out_dir`, and
//! the same call with the same `out_dir` continues from the last checkpoint; on a finished run it
//! loads the weights and returns the history at once ("FAST" mode of S0.5). Because the order of
//! batches depends on (seed, epoch) and every random draw of a step on (seed, step), a run
//! stopped after k steps and continued reaches the same weights, bit for bit on the CPU, as one
//! that never stopped (S4.6).
//!
//! **No step waits for the GPU.** A step leaves its loss and metrics on the device; they are
//! read every `log_every` steps in one transfer (and at epoch ends, before checkpoints, at the
//! stop), so a NaN loss stops the run at the end of its log window, naming its step, and never
//! reaches a checkpoint. Only fp16 loss scaling reads one flag per step.
//!
//! **A run folder is one run.** The checkpoint records everything that determines the run's
//! trajectory — the [`TrainConfig`], the method's settings, the model, the augmentations, the
//! data ([`identity`]) — and a call whose run differs in any of them is refused, naming the
//! field (`method.temperature: 0.2 there, 0.5 now`) and the fix (another `out_dir`, or
//! `resume(false)`), instead of handing back the old run. One trainer at a time holds a folder
//! (a lock naming its PID); every file is written atomically and durably; no checkpoint or
//! history line holds a NaN; [`request_stop`] (the command lines' Ctrl-C) ends a run at the next
//! step with a checkpoint.
//!
//! `max_steps` and `time_budget_secs` only say where *this call* stops; the schedule always spans
//! the `epochs` of the config, so stopping and continuing does not change it.
//!
//! Notebooks: every pre-training seminar (S0.4, S1.3, S2.T1–T2, S3.5–3.6) and the supervised
//! baselines (S0.9, S1.2, S2.T0, S3.1); the `selfsup-train` command line (B8).
//!
//! ```no_run
//! use selfsup::prelude::*;
//! # fn demo(method: &mut impl selfsup::methods::SslMethod) -> selfsup::Result<()> {
//! let set = data::synthetic::load(Split::Unlabeled, &SyntheticConfig::tiny())?;
//! let history = train::pretrain(method, &set, &augment::presets::moco_v2(32), &TrainConfig::tiny(), "runs/moco_tiny")?;
//! println!("{} steps, last loss {:?}", history.num_steps(), history.last_step().map(|s| s.loss));
//! # Ok(()) }
//! ```
pub mod amp;
pub mod bf16_probe;
pub mod checkpoint;
pub mod collapse;
mod fused_sgd;
mod engine;
pub mod history;
pub mod identity;
pub mod knn;
pub mod optim;
pub mod parallel;
mod progress;
pub mod scale;
pub mod schedule;

pub use engine::backward_and_step;
pub use amp::Precision;
pub use checkpoint::{Checkpoint, CheckpointMeta};
pub use collapse::{healthy_std, std_of_l2_normalized, std_of_l2_normalized_tensor, CollapseMonitor};
pub use history::{EpochRecord, History, Record, StepRecord};
pub use identity::RunIdentity;
pub use knn::{backbone_knn_accuracy, KnnConfig};
pub use optim::{Optimizer, OptimizerConfig, ParamGroup};
pub use parallel::DataParallel;
pub use scale::Scale;
pub use schedule::{cosine_lr, one_cycle_lr, step_decay_lr, LrSchedule};

use crate::augment::{Augment, MultiView};
use crate::data::ImageSet;
use crate::error::{config_err, Error, Result};
use crate::methods::SslMethod;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::Tensor;

/// Set by [`request_stop`]; read by the engine after every step.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks the training running in this process to stop after its current step: it writes a
/// checkpoint and returns [`Error::Interrupted`], whose message says how to continue. The command
/// lines call it from their Ctrl-C and SIGTERM handlers (it is async-signal-safe: one atomic store).
pub fn request_stop() {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether [`request_stop`] was called (and not cleared since).
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Forgets an earlier [`request_stop`], so the next training runs to its end.
pub fn clear_stop_request() {
    STOP_REQUESTED.store(false, Ordering::SeqCst);
}

/// How to train. `Default` is MoCo v2's ImageNet recipe (facebookresearch/moco `main_moco.py
/// --lr 0.03 --batch-size 256 --mlp --moco-t 0.2 --aug-plus --cos`, 200 epochs);
/// [`TrainConfig::tiny`] runs on a laptop CPU in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Planned epochs; the schedule spans `epochs × steps per epoch` steps. 200 (`main_moco.py --epochs 200`).
    pub epochs: usize,
    /// Stop this call after this many steps in total (counting earlier sessions); call again with
    /// a larger value (or `None`) to continue. Does not change the schedule. `None`: no limit.
    pub max_steps: Option<usize>,
    /// Images per step. 256 (`main_moco.py -b 256`).
    pub batch_size: usize,
    /// Base (or, for OneCycle, maximum) learning rate. 0.03 (`main_moco.py --lr 0.03`).
    pub lr: f64,
    /// Weight decay. 1e-4 (`main_moco.py --wd 1e-4`).
    pub weight_decay: f64,
    /// Update rule. SGD, momentum 0.9 (`main_moco.py --momentum 0.9`).
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule. Cosine without warm-up (`main_moco.py --cos`, MoCo v2).
    pub schedule: LrSchedule,
    /// Parameter groups with their own rate multiplier or weight decay (fine-tuning); empty: one group.
    pub param_groups: Vec<ParamGroup>,
    /// Seed of the batch order, the augmentations and libtorch's generators during training. 0.
    pub seed: u64,
    /// Read the steps' losses and metrics back from the device every `log_every` steps, in one
    /// transfer (also at epoch ends, before checkpoints and at the stop), then check them for
    /// NaN, write their records and redraw the progress bar (at most about once a second). A
    /// step never waits for the GPU; a NaN loss stops the run at the end of its window, naming
    /// its step. 10 (`main_moco.py --print-freq 10`).
    pub log_every: usize,
    /// Checkpoint every this many steps (`None`: only by time and at the end).
    pub checkpoint_every_steps: Option<usize>,
    /// Checkpoint every this many seconds. 600 (ten minutes of work lost at most).
    pub checkpoint_every_secs: Option<f64>,
    /// Stop this call (after a checkpoint) once it has trained this long; run it again to go on.
    pub time_budget_secs: Option<f64>,
    /// Autocast precision. bf16: PyTorch's recommended recipe on A100/H100
    /// (`torch.autocast("cuda", dtype=torch.bfloat16)`) and on CPUs with native bf16
    /// (`torch.autocast("cpu", dtype=torch.bfloat16)`) where the run's step measures faster so
    /// ([`bf16_probe`]); other CPUs train in f32 and say why (see [`amp`]).
    pub mixed_precision: Precision,
    /// Channels-last memory format for weights and inputs on CUDA (PyTorch's performance
    /// tuning guide: faster convolutions with tensor cores). Ignored on the CPU.
    pub channels_last: bool,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// Warn when the std of ℓ2-normalised z falls below this fraction of 1/√d (0: never).
    /// 0.2: collapsed runs sit near 0, healthy ones near 1/√d (SimSiam, Section 4.1).
    pub collapse_warn_fraction: f64,
    /// Continue from the checkpoint in `out_dir` if there is one (`false`: start over and
    /// overwrite it).
    pub resume: bool,
    /// Batches the loader gathers ahead on a background thread, for a CUDA device (it overlaps
    /// the gather and the pinned copy with the GPU's work). The CPU gathers each batch when it
    /// needs it: there the thread's own tensor work competed with the training step's OpenMP
    /// threads, and on a 2-vCPU Xeon an epoch of notebook 03's lesson SimCLR took 6.0–7.9 s
    /// with the thread against 5.1–5.6 s without (three runs each, 2026-12-06).
    pub prefetch: usize,
    /// Print the progress bar and the epoch summaries.
    pub progress: bool,
    /// One process (the default), or one rank of a data-parallel job
    /// (`TrainConfig::distributed`, feature `distributed`). Not saved with the config: a run
    /// may resume with another number of processes.
    #[serde(skip)]
    pub distributed: DataParallel,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 200,
            max_steps: None,
            batch_size: 256,
            lr: 0.03,
            weight_decay: 1e-4,
            optimizer: OptimizerConfig::default(),
            schedule: LrSchedule::default(),
            param_groups: vec![],
            seed: 0,
            log_every: 10,
            checkpoint_every_steps: None,
            checkpoint_every_secs: Some(600.0),
            time_budget_secs: None,
            mixed_precision: Precision::Bf16,
            channels_last: true,
            grad_clip: None,
            collapse_warn_fraction: 0.2,
            resume: true,
            prefetch: 2,
            progress: true,
            distributed: DataParallel::default(),
        }
    }
}

impl TrainConfig {
    /// A laptop-CPU run for notebooks and tests (nanoGPT's "baby" preset): 2 epochs, batch 32,
    /// the bar redrawn every step, a checkpoint every 20 steps, full precision.
    pub fn tiny() -> Self {
        TrainConfig {
            epochs: 2,
            batch_size: 32,
            log_every: 1,
            checkpoint_every_steps: Some(20),
            checkpoint_every_secs: Some(60.0),
            mixed_precision: Precision::Off,
            channels_last: false,
            prefetch: 1,
            ..TrainConfig::default()
        }
    }
    /// The same config with `epochs` planned epochs.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }
    /// The same config stopping this call after `max_steps` steps in total.
    pub fn max_steps(mut self, max_steps: usize) -> Self {
        self.max_steps = Some(max_steps);
        self
    }
    /// The same config with another batch size.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
    /// The same config with another base learning rate.
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }
    /// The same config with another weight decay.
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }
    /// The same config with another optimizer.
    pub fn optimizer(mut self, optimizer: OptimizerConfig) -> Self {
        self.optimizer = optimizer;
        self
    }
    /// The same config with another schedule.
    pub fn schedule(mut self, schedule: LrSchedule) -> Self {
        self.schedule = schedule;
        self
    }
    /// The same config with parameter groups.
    pub fn param_groups(mut self, groups: Vec<ParamGroup>) -> Self {
        self.param_groups = groups;
        self
    }
    /// The same config with another seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// The same config stopping this call after `secs` seconds of training.
    pub fn time_budget_secs(mut self, secs: f64) -> Self {
        self.time_budget_secs = Some(secs);
        self
    }
    /// The same config with another mixed-precision mode.
    pub fn mixed_precision(mut self, precision: Precision) -> Self {
        self.mixed_precision = precision;
        self
    }
    /// The same config with gradient clipping at `max_norm`.
    pub fn grad_clip(mut self, max_norm: f64) -> Self {
        self.grad_clip = Some(max_norm);
        self
    }
    /// The same config resuming (or not) from an existing checkpoint.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }
    /// The same config with the progress bar on or off.
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }
    /// The same config trained data-parallel as rank `dist.rank()` of `dist.world_size()`
    /// processes (see [`parallel`] and docs/distributed.md): `batch_size` stays the global batch,
    /// which the processes split; rank 0 writes the run folder.
    #[cfg(feature = "distributed")]
    pub fn distributed(mut self, dist: std::sync::Arc<crate::distributed::Dist>) -> Self {
        self.distributed = DataParallel::new(dist);
        self
    }
    /// The same config with BatchNorm synchronised over the processes during training (PyTorch's
    /// `SyncBatchNorm`; [`crate::models::norm`]): then `W` processes of `B` normalise as one of
    /// `W·B`. After [`TrainConfig::distributed`]; MoCo's keys keep their shuffled BN.
    #[cfg(feature = "distributed")]
    pub fn sync_batch_norm(mut self, sync: bool) -> Self {
        self.distributed = self.distributed.sync_batch_norm(sync);
        self
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field and its valid range.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(config_err!("TrainConfig.epochs must be at least 1, got 0"));
        }
        if self.batch_size == 0 {
            return Err(config_err!("TrainConfig.batch_size must be at least 1, got 0"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(config_err!("TrainConfig.lr must be positive and finite, got {}", self.lr));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(config_err!("TrainConfig.weight_decay must be >= 0, got {}", self.weight_decay));
        }
        if self.log_every == 0 {
            return Err(config_err!("TrainConfig.log_every must be at least 1, got 0"));
        }
        if self.checkpoint_every_steps == Some(0) {
            return Err(config_err!("TrainConfig.checkpoint_every_steps must be at least 1 (or None), got 0"));
        }
        for (field, v) in
            [("checkpoint_every_secs", self.checkpoint_every_secs), ("time_budget_secs", self.time_budget_secs)]
        {
            if let Some(v) = v {
                if v.is_nan() || v <= 0.0 {
                    return Err(config_err!("TrainConfig.{field} must be positive (or None), got {v}"));
                }
            }
        }
        if let Some(c) = self.grad_clip {
            if c.is_nan() || c <= 0.0 {
                return Err(config_err!("TrainConfig.grad_clip must be positive (or None), got {c}"));
            }
        }
        if !(0.0..=1.0).contains(&self.collapse_warn_fraction) {
            return Err(config_err!(
                "TrainConfig.collapse_warn_fraction must be in [0, 1], got {}",
                self.collapse_warn_fraction
            ));
        }
        if self.prefetch > 64 {
            return Err(config_err!("TrainConfig.prefetch must be in 0..=64, got {}", self.prefetch));
        }
        self.optimizer.validate()
    }

    /// The fields a resumed run must share with the checkpoint's (they shape the trajectory):
    /// the first that differs, as `(field, saved, now)`.
    fn trajectory_difference(&self, saved: &TrainConfig) -> Option<(&'static str, String, String)> {
        macro_rules! same {
            ($($f:ident),*) => {$(
                if self.$f != saved.$f {
                    return Some((stringify!($f), format!("{:?}", saved.$f), format!("{:?}", self.$f)));
                }
            )*};
        }
        same!(
            epochs,
            batch_size,
            lr,
            weight_decay,
            optimizer,
            schedule,
            param_groups,
            seed,
            grad_clip,
            mixed_precision
        );
        None
    }
}

/// Online kNN evaluation during pre-training (B7): the backbone's features on `train` form the
/// memory bank, `test` is classified.
#[derive(Debug, Clone, Copy)]
pub struct KnnMonitor<'a> {
    /// Labelled images of the memory bank.
    pub train: &'a ImageSet,
    /// Labelled images to classify.
    pub test: &'a ImageSet,
    /// k, τ, how often.
    pub config: &'a KnnConfig,
}

/// Self-supervised pre-training of `method` on `set` (labels ignored) with two views per image
/// from `augment` (an [`Augment`] for both views or a [`crate::augment::TwoViews`] pair),
/// checkpointing into `out_dir` and resuming from it; see the module doc.
///
/// Per batch: views → `training_step` (under autocast when asked: CUDA, CPUs with bf16) → backward
/// (loss-scaled for fp16) → gradient clipping → optimizer step → `after_step`; every
/// `log_every` steps (and at epoch ends and before checkpoints) the window's losses and metrics
/// are read at once: NaN check, collapse monitor, history, progress bar.
///
/// # Errors
/// [`Error::Config`] for an invalid config, or an `out_dir` holding a run of another method or
/// config; [`Error::Diverged`] when the loss becomes NaN or infinite (the message names the
/// step and the likely causes; no checkpoint holds weights from that step or later);
/// [`Error::Data`] when the set is smaller than a batch; errors of the method and the
/// augmentation.
pub fn pretrain<M: SslMethod + ?Sized, A: MultiView>(
    method: &mut M,
    set: &ImageSet,
    augment: &A,
    cfg: &TrainConfig,
    out_dir: impl AsRef<Path>,
) -> Result<History> {
    pretrain_monitored(method, set, augment, cfg, out_dir, None)
}

/// [`pretrain`] with the online kNN accuracy measured every `knn.config.every_epochs` epochs
/// and at the end, recorded in the epoch records (B7).
///
/// # Errors
/// As [`pretrain`]; [`Error::Data`] when the kNN sets have no labels.
pub fn pretrain_monitored<M: SslMethod + ?Sized, A: MultiView>(
    method: &mut M,
    set: &ImageSet,
    augment: &A,
    cfg: &TrainConfig,
    out_dir: impl AsRef<Path>,
    knn: Option<KnnMonitor<'_>>,
) -> Result<History> {
    if let Some(k) = &knn {
        k.config.validate()?;
        if k.train.labels.is_none() || k.test.labels.is_none() {
            return Err(Error::Data("the kNN monitor needs labelled train and test sets".into()));
        }
    }
    let mut trainee = engine::SslTrainee { method, augment, knn, epochs: cfg.epochs };
    engine::run(&mut trainee, set, cfg, out_dir.as_ref(), false)
}

/// Supervised training of the classifier `forward(x, train) → logits [N, C]` whose variables
/// live in `vs`, on labelled `train` images augmented by `augment` (cross-entropy), with the
/// test loss and accuracy on `test` after every epoch (images normalised as `augment`'s last
/// step normalises, not augmented otherwise). Same engine, checkpoints and resume as
/// [`pretrain`] (S0.9, S1.2, S2.T0, S3.1; linear probes and fine-tuning with
/// [`TrainConfig::param_groups`]).
///
/// ```no_run
/// use selfsup::prelude::*;
/// let train = data::synthetic::load(Split::Train, &SyntheticConfig::tiny())?;
/// let test = data::synthetic::load(Split::Test, &SyntheticConfig::tiny())?;
/// let vs = nn::VarStore::new(Device::Cpu);
/// let net = ResNet::new(&vs.root(), &ResNetConfig::default().small_images(true).num_classes(10))?;
/// let cfg = TrainConfig::tiny().optimizer(train::OptimizerConfig::adam()).lr(1e-3);
/// let history = train::train_supervised(&vs, |x, t| net.forward(x, t), &train, Some(&test),
///     &augment::presets::simclr_cifar(32), &cfg, "runs/supervised_tiny")?;
/// # Ok::<(), selfsup::Error>(())
/// ```
///
/// # Errors
/// As [`pretrain`]; [`Error::Data`] when a set has no labels; [`Error::Shape`] when `forward`
/// does not return `[N, C]` logits.
pub fn train_supervised<F>(
    vs: &tch::nn::VarStore,
    forward: F,
    train: &ImageSet,
    test: Option<&ImageSet>,
    augment: &Augment,
    cfg: &TrainConfig,
    out_dir: impl AsRef<Path>,
) -> Result<History>
where
    F: Fn(&Tensor, bool) -> Result<Tensor>,
{
    train_supervised_in(vs, forward, train, test, augment, cfg, out_dir.as_ref(), false, None)
}

/// [`train_supervised`]; `chunked` marks one chunk of a longer run cut by `max_steps` (fine-tuning
/// with snapshots), whose intermediate "stopped" and "resuming" lines would only be noise; `init`
/// is the fingerprint of the starting weights when they are an input of the run (probes and
/// fine-tuning: which backbone), part of the run's identity.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_supervised_in<F>(
    vs: &tch::nn::VarStore,
    forward: F,
    train: &ImageSet,
    test: Option<&ImageSet>,
    augment: &Augment,
    cfg: &TrainConfig,
    out_dir: &Path,
    chunked: bool,
    init: Option<String>,
) -> Result<History>
where
    F: Fn(&Tensor, bool) -> Result<Tensor>,
{
    if train.labels.is_none() {
        return Err(Error::Data(format!("train_supervised needs labels, and '{}' has none", train.name)));
    }
    if let Some(t) = test {
        if t.labels.is_none() {
            return Err(Error::Data(format!("train_supervised: the test set '{}' has no labels", t.name)));
        }
    }
    let mut trainee = engine::SupervisedTrainee { vs, forward, augment, test, batch_size: cfg.batch_size, init };
    engine::run(&mut trainee, train, cfg, out_dir, chunked)
}
