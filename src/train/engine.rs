//! The training loop shared by [`super::pretrain`] and [`super::train_supervised`]: resume,
//! schedule, autocast, backward, loss scaling, clipping, optimizer step, history, progress,
//! checkpoints, budgets.
//!
//! **No step waits for the device.** Reading a number back from a GPU waits for every kernel
//! queued before it, which idles the GPU while the host reads and then idles the host's kernel
//! launches; done every step, it costs throughput. So a step leaves its loss, z-std and
//! metrics on the device, stacked in one small f64 tensor ([`PendingStep`]), and a *flush*
//! reads the whole window in one transfer — every `log_every` steps, at the end of an epoch,
//! before a checkpoint is written and when the run stops — then checks the losses (the first
//! non-finite one stops the run, naming its step), runs the collapse monitor and writes the
//! step records. Because every checkpoint comes after a flush, none holds weights from after a
//! non-finite loss. The one per-step read left is fp16 loss scaling's finite check (see
//! [`backward_and_step`]).
use super::amp::{self, Autocast, LossScaler};
use super::bf16_probe;
use super::checkpoint::{self, Checkpoint, CheckpointMeta, CONFIG_FILE, HISTORY_FILE};
use super::collapse::{std_of_l2_normalized_tensor, CollapseMonitor};
use super::history::{EpochRecord, History, JsonlWriter, Record, StepRecord};
use super::knn::backbone_knn_accuracy;
use super::optim::Optimizer;
use super::parallel::DataParallel;
use super::progress::{duration, Line, Progress};
use super::{KnnMonitor, TrainConfig};
use crate::augment::{self, Augment, AugmentRng, MultiView};
use crate::data::{Batch, ImageSet, Loader, LoaderConfig};
use crate::device::{splitmix64, GOLDEN_GAMMA};
use crate::error::{config_err, Error, Result};
use crate::files::RunLock;
use crate::methods::{scalar_f64, SslMethod, StepMetrics, StepOutput};
use crate::models::weights::store_vars;
use super::identity::{self, RunIdentity, IDENTITY_FILE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// What the loop trains: a self-supervised method or a supervised classifier.
pub(crate) trait Trainee {
    /// "pretrain" or "supervised" (checked on resume).
    fn kind(&self) -> &'static str;
    /// The method's name (checked on resume).
    fn name(&self) -> String;
    /// The trained variables.
    fn vars(&self) -> &nn::VarStore;
    /// Other state to checkpoint.
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Restores [`Trainee::state`].
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()>;
    /// Augments the batch and computes the loss (inside `autocast`).
    fn forward(
        &mut self,
        batch: &Batch,
        rng: &mut AugmentRng,
        channels_last: bool,
        autocast: amp::Autocast,
    ) -> Result<StepOutput>;
    /// After the optimizer step.
    fn after_step(&mut self, step: usize, total: usize) -> Result<()>;
    /// Fills the evaluation fields of an epoch record; `steps` are the epoch's step records.
    fn end_epoch(&mut self, epoch: usize, last: bool, steps: &[StepRecord], record: &mut EpochRecord) -> Result<()>;
    /// What identifies the run besides the train config and the data (see [`super::identity`]):
    /// the method's described settings (`Null` when it does not describe them), the
    /// augmentations and the starting weights' fingerprint where they are an input.
    fn identity_parts(&self) -> Result<IdentityParts>;
    /// Joins the run's data-parallel job (one process: a job of one), so that a method computes
    /// its batch-wide terms over every rank. Nothing by default.
    fn join(&mut self, par: &DataParallel) -> Result<()> {
        let _ = par;
        Ok(())
    }
}

/// The trainee's share of a [`RunIdentity`].
pub(crate) struct IdentityParts {
    pub method: Value,
    pub augment: Value,
    pub init: Value,
    /// The method could describe its settings but does not (a student's `SslMethod`).
    pub undescribed: bool,
}

pub(crate) struct SslTrainee<'a, M: SslMethod + ?Sized, A: MultiView> {
    pub method: &'a mut M,
    pub augment: &'a A,
    pub knn: Option<KnnMonitor<'a>>,
    pub epochs: usize,
}

impl<M: SslMethod + ?Sized, A: MultiView> Trainee for SslTrainee<'_, M, A> {
    fn kind(&self) -> &'static str {
        "pretrain"
    }
    fn name(&self) -> String {
        self.method.name().to_string()
    }
    fn vars(&self) -> &nn::VarStore {
        self.method.online()
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        self.method.state()
    }
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        self.method.load_state(state)
    }
    fn forward(
        &mut self,
        batch: &Batch,
        rng: &mut AugmentRng,
        channels_last: bool,
        autocast: amp::Autocast,
    ) -> Result<StepOutput> {
        let (v1, v2) = self.augment.two_views(&batch.images, rng)?; // [B, 3, S, S] each
        let (v1, v2) = if channels_last { (amp::to_channels_last(&v1), amp::to_channels_last(&v2)) } else { (v1, v2) };
        let method = &mut *self.method;
        amp::autocast(autocast, || method.training_step(&v1, &v2))?
    }
    fn after_step(&mut self, step: usize, total: usize) -> Result<()> {
        self.method.after_step(step, total)
    }
    fn join(&mut self, par: &DataParallel) -> Result<()> {
        #[cfg(feature = "distributed")]
        self.method.set_distributed(par.dist().cloned())?;
        let _ = par;
        Ok(())
    }
    fn identity_parts(&self) -> Result<IdentityParts> {
        let method = self.method.config_json();
        let augment = serde_json::to_value([self.augment.pipeline(0), self.augment.pipeline(1)])?;
        Ok(IdentityParts { undescribed: method.is_none(), method: method.unwrap_or(Value::Null), augment, init: Value::Null })
    }
    fn end_epoch(&mut self, epoch: usize, last: bool, _steps: &[StepRecord], record: &mut EpochRecord) -> Result<()> {
        if let Some(knn) = &self.knn {
            if (epoch + 1) % knn.config.every_epochs == 0 || last || epoch + 1 == self.epochs {
                let norm = self.augment.pipeline(0).output_normalization();
                let device = self.method.online().device();
                record.knn_accuracy =
                    Some(backbone_knn_accuracy(self.method.backbone(), knn.train, knn.test, norm.as_ref(), knn.config, device)?);
            }
        }
        Ok(())
    }
}

pub(crate) struct SupervisedTrainee<'a, F: Fn(&Tensor, bool) -> Result<Tensor>> {
    pub vs: &'a nn::VarStore,
    pub forward: F,
    pub augment: &'a Augment,
    pub test: Option<&'a ImageSet>,
    pub batch_size: usize,
    /// Fingerprint of the starting weights when they are an input of the run (a probe's or a
    /// fine-tuning's backbone, [`super::identity::weights_fingerprint`]).
    pub init: Option<String>,
}

impl<F: Fn(&Tensor, bool) -> Result<Tensor>> SupervisedTrainee<'_, F> {
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let logits = (self.forward)(x, train)?; // [N, C]
        let s = logits.size();
        if s.len() != 2 || s[0] != x.size()[0] {
            return Err(Error::shape(
                "train_supervised: forward's logits",
                format!("[{}, num_classes]", x.size()[0]),
                &s,
            ));
        }
        Ok(logits.to_kind(Kind::Float))
    }
}

impl<F: Fn(&Tensor, bool) -> Result<Tensor>> Trainee for SupervisedTrainee<'_, F> {
    fn kind(&self) -> &'static str {
        "supervised"
    }
    fn name(&self) -> String {
        "supervised".into()
    }
    fn vars(&self) -> &nn::VarStore {
        self.vs
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![]
    }
    fn load_state(&mut self, _state: &[(String, Tensor)]) -> Result<()> {
        Ok(())
    }
    fn forward(
        &mut self,
        batch: &Batch,
        rng: &mut AugmentRng,
        channels_last: bool,
        autocast: amp::Autocast,
    ) -> Result<StepOutput> {
        let labels =
            batch.labels.as_ref().ok_or_else(|| Error::Data("train_supervised: a batch came without labels".into()))?;
        let x = self.augment.apply(&batch.images, rng)?; // [B, 3, S, S]
        let x = if channels_last { amp::to_channels_last(&x) } else { x };
        let logits = amp::autocast(autocast, || self.logits(&x, true))??; // [B, C]
        let loss = logits.cross_entropy_for_logits(labels); // []
        let accuracy =
            tch::no_grad(|| logits.argmax(-1, false).eq_tensor(labels).to_kind(Kind::Float).mean(Kind::Float));
        Ok(StepOutput { loss, z: None, metrics: StepMetrics::new().with_tensor("accuracy", &accuracy) })
    }
    fn after_step(&mut self, _step: usize, _total: usize) -> Result<()> {
        Ok(())
    }
    fn identity_parts(&self) -> Result<IdentityParts> {
        Ok(IdentityParts {
            method: Value::Null,
            augment: serde_json::to_value(self.augment)?,
            init: self.init.clone().map_or(Value::Null, Value::String),
            undescribed: false,
        })
    }
    fn end_epoch(&mut self, _epoch: usize, _last: bool, steps: &[StepRecord], record: &mut EpochRecord) -> Result<()> {
        let acc: Vec<f64> = steps.iter().filter_map(|s| s.metrics.get("accuracy").copied()).collect();
        if !acc.is_empty() {
            record.train_accuracy = Some(acc.iter().sum::<f64>() / acc.len() as f64);
        }
        let Some(test) = self.test else { return Ok(()) };
        let Some(labels) = &test.labels else { return Ok(()) };
        let device = self.vs.device();
        let norm = self.augment.output_normalization();
        let (mut loss_sum, mut correct) = (0.0, 0i64);
        let n = test.len();
        for start in (0..n).step_by(self.batch_size.max(1)) {
            let len = self.batch_size.min(n - start);
            let x = test.float_batch(start, len, norm.as_ref(), device)?; // [b, 3, H, W]
            let y = labels.narrow(0, start as i64, len as i64).to_device(device); // [b]
            let (l, c) = tch::no_grad(|| -> Result<(f64, i64)> {
                let logits = self.logits(&x, false)?; // [b, C]
                let l = logits.cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Sum, -100, 0.0).double_value(&[]);
                let c = logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
                Ok((l, c))
            })?;
            loss_sum += l;
            correct += c;
        }
        if n > 0 {
            record.test_loss = Some(loss_sum / n as f64);
            record.test_accuracy = Some(correct as f64 / n as f64);
        }
        Ok(())
    }
}

/// Backward pass and optimizer step, as every training step of the engine takes them: the
/// gradients through [`Optimizer::backward`] (held by the optimizer, never zeroed and added
/// into; of the scaled loss with an fp16 [`LossScaler`], then unscaled, and the step skipped
/// when a gradient is not finite), the gradient norm clipped when asked, then the step. Returns what is
/// worth logging: `loss_scale`, `skipped_step` (known on the host) and `grad_norm` (left on the
/// device). The benchmark calls it too, so it times exactly this code.
///
/// Nothing is read back from the device, except with an fp16 [`LossScaler`]: whether the
/// gradients are finite decides on the host whether the optimizer steps and how the scale
/// changes, so that check waits for the backward pass (one sync per step, as PyTorch's
/// `GradScaler.step`, which reads its `found_inf`). bf16 and f32 need no loss scaling.
///
/// # Errors
/// Those of [`Optimizer::backward`], [`Optimizer::clip_grad_norm_tensor`] and [`Optimizer::step`].
pub fn backward_and_step(
    loss: &Tensor,
    opt: &mut Optimizer,
    scaler: Option<&mut LossScaler>,
    grad_clip: Option<f64>,
) -> Result<StepMetrics> {
    backward_sync_step(loss, opt, scaler, grad_clip, &DataParallel::default())
}

/// [`backward_and_step`] with the gradients averaged over the ranks of `par` right after the
/// backward pass (before the finite check, clipping and the step, so every rank sees the same
/// gradients and takes the same decisions). The backward pass's own errors (a collective inside
/// the graph, SimCLR's gathered negatives, whose peer died) come back as errors, not panics.
fn backward_sync_step(
    loss: &Tensor,
    opt: &mut Optimizer,
    scaler: Option<&mut LossScaler>,
    grad_clip: Option<f64>,
    par: &DataParallel,
) -> Result<StepMetrics> {
    let mut metrics = StepMetrics::new();
    let mut apply = true;
    match scaler {
        Some(s) => {
            opt.backward(&(loss * s.scale))?;
            par.average_gradients(opt)?;
            opt.scale_grads(1.0 / s.scale);
            let finite = opt.grads_finite(); // the unavoidable sync, see above
            s.update(finite);
            apply = finite;
            metrics = metrics.with("loss_scale", s.scale);
        }
        None => {
            opt.backward(loss)?;
            par.average_gradients(opt)?;
        }
    }
    if apply {
        if let Some(max) = grad_clip {
            metrics = metrics.with_tensor("grad_norm", &opt.clip_grad_norm_tensor(max)?);
        }
        opt.step()?;
    } else {
        metrics = metrics.with("skipped_step", 1.0);
    }
    Ok(metrics)
}

/// SplitMix64 of (seed, salt, step): the seed of one step's random draws.
fn step_seed(seed: u64, salt: u64, step: usize) -> u64 {
    let z = seed ^ salt.rotate_left(32) ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    splitmix64(z.wrapping_add(GOLDEN_GAMMA))
}

/// [`step_seed`] of rank `rank`: rank 0's is the single process's, the others draw their own
/// augmentations (as each DDP worker does), so `W` ranks are one process's batch with other
/// random views, not the same views.
fn rank_step_seed(seed: u64, salt: u64, step: usize, rank: usize) -> u64 {
    match rank {
        0 => step_seed(seed, salt, step),
        r => splitmix64(step_seed(seed, salt, step) ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
    }
}
const SALT_AUGMENT: u64 = 0xA4;
const SALT_TORCH: u64 = 0x7C;

fn diverged(loss: f64, step: usize, epoch: usize, lr: f64, last_checkpoint: Option<usize>, out_dir: &Path) -> Error {
    let what = if loss.is_nan() { "NaN" } else { "infinite" };
    let ck = match last_checkpoint {
        Some(s) => format!("The last checkpoint in {} is from step {s}.", out_dir.display()),
        None => "No checkpoint was written.".into(),
    };
    Error::Diverged(format!(
        "the loss is {what} at step {step} (epoch {epoch}, lr {lr:.3e}). Losses are read once per log window \
         (log_every steps), so training went on to the end of this step's window and the weights in memory are not \
         usable; no checkpoint holds weights from this step or later. Likely causes: a learning rate too high (try \
         10x lower, or a warm-up: LrSchedule::cosine(warmup_steps)); \
         fp16 overflow (use Precision::Bf16 or Precision::Off); images not normalised (the augmentation should end with \
         Normalize); a temperature too small. {ck} Fix the config, then run again with resume(false) or another out_dir."
    ))
}

/// The error for a resume or load whose run identity differs from the checkpoint's.
fn identity_mismatch(out_dir: &Path, finished: bool, field: &str, was: &str, now: &str) -> Error {
    let leaf = field.rsplit(['.', '[']).next().unwrap_or(field).trim_end_matches(']');
    let value = now.trim_matches('"');
    let simple = value.len() <= 16 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
    let suggestion = if simple && !field.ends_with("fingerprint") && field != "init" {
        format!("{}-{leaf}-{value}", out_dir.display())
    } else {
        format!("{}-2", out_dir.display())
    };
    let what = if field == "init" {
        " (the starting weights: a probe or fine-tuning of another backbone, or one pre-trained again)"
    } else if field.starts_with("dataset") {
        " (other images)"
    } else if field.starts_with("model") || field.starts_with("state") {
        " (another architecture or method setting)"
    } else {
        ""
    };
    config_err!(
        "{} holds a{} run with another {field}: {was} there, {now} now{what}, so loading it would give you that run, \
         not this one. Train this setting in its own folder (out_dir \"{suggestion}\"), or set resume(false) to \
         overwrite that run",
        out_dir.display(),
        if finished { " finished" } else { "n unfinished" }
    )
}

/// Takes `out_dir`'s [`RunLock`]; when another process holds it, the error also says how to
/// watch that run (the lock itself knows nothing of runs).
fn lock_run_folder(out_dir: &Path) -> Result<RunLock> {
    RunLock::acquire(out_dir).map_err(|e| match e {
        Error::Locked(msg) => Error::Locked(format!(
            "{msg} To watch a running run, read its history with History::load_jsonl(\"{}\")",
            out_dir.join(HISTORY_FILE).display()
        )),
        other => other,
    })
}

/// The error for weights that are no longer finite when a checkpoint is due.
fn non_finite_weights(
    name: &str,
    step: usize,
    last_checkpoint: Option<usize>,
    first_metric: Option<&(usize, String)>,
    out_dir: &Path,
) -> Error {
    let ck = match last_checkpoint {
        Some(s) => format!("The checkpoint in {} (step {s}) is intact and finite.", out_dir.display()),
        None => "No checkpoint was written.".into(),
    };
    let metric = match first_metric {
        Some((s, m)) => format!(" The first non-finite logged number was '{m}' at step {s}."),
        None => String::new(),
    };
    Error::Diverged(format!(
        "'{name}' holds NaN or infinite values after step {step}, though the loss stayed finite: the gradients \
         overflowed (bf16/fp16) or a method's state went bad.{metric} This checkpoint was not written. {ck} Try a \
         lower learning rate, gradient clipping (grad_clip), or Precision::Off, then run again with resume(false) or \
         another out_dir."
    ))
}

/// The loop; see the module docs of `train`. Its steps, in order: [`Setup::new`] (loader,
/// optimizer, precision, the folder's lock, the run's identity), [`resume`] (from the checkpoint
/// in `out_dir`, if any), [`nothing_to_train`] (a finished run, or `max_steps` reached already),
/// then a [`Session`]: [`Session::train`] runs the epochs, each step ([`Session::step`]) followed
/// by its bookkeeping ([`Session::after_step`]: log flush, epoch record, stop, checkpoint), and
/// [`Session::finish`] says how the call ended.
pub(crate) fn run<T: Trainee + ?Sized>(
    t: &mut T,
    set: &ImageSet,
    cfg: &TrainConfig,
    out_dir: &Path,
    chunked: bool,
) -> Result<History> {
    cfg.validate()?;
    t.join(&cfg.distributed)?;
    let mut setup = Setup::new(t, set, cfg, out_dir)?;
    let start = resume(t, cfg, out_dir, &mut setup)?;
    if cfg.distributed.is_parallel() {
        // Rank 0's weights, buffers and method state everywhere (a fresh run's random init
        // differs between ranks; a resumed one is checked to start at the same step).
        let state = cfg.distributed.sync_start(start.step, &store_vars(t.vars()), t.state())?;
        t.load_state(&state)?;
    }
    if setup.channels_last {
        to_channels_last(t.vars());
    }
    let stop_at = cfg.max_steps.map_or(setup.total, |m| m.min(setup.total));
    if nothing_to_train(&start, stop_at, setup.total, cfg, out_dir, chunked, &mut setup.progress) {
        return Ok(start.history);
    }
    if setup.measure_bf16 {
        settle_cpu_precision(t, &mut setup, &start)?;
    }
    let mut session = Session::start(setup, start, stop_at, cfg, out_dir, chunked)?;
    let outcome = session.train(t);
    session.finish(outcome)
}

/// What a run sets up before it reads a checkpoint: the loader, the optimizer, the precision,
/// the progress printer, the folder's lock and the run's identity.
struct Setup {
    device: Device,
    loader: Loader,
    /// Steps per epoch.
    spe: usize,
    /// Steps of the whole schedule (`epochs × spe`).
    total: usize,
    opt: Optimizer,
    channels_last: bool,
    autocast: amp::Autocast,
    /// CPU bf16 from the CPU's features only: time the step both ways before training
    /// ([`settle_cpu_precision`]).
    measure_bf16: bool,
    scaler: Option<LossScaler>,
    /// For the notes and warnings before training (the session starts its own at its first step).
    progress: Progress,
    identity: RunIdentity,
    /// Held until the run returns; rank 0's only (the other ranks never write the folder).
    lock: Option<RunLock>,
}

impl Setup {
    fn new<T: Trainee + ?Sized>(t: &T, set: &ImageSet, cfg: &TrainConfig, out_dir: &Path) -> Result<Setup> {
        let device = t.vars().device();
        let par = &cfg.distributed;
        // No background gathering on the CPU: it slows the step there (see TrainConfig::prefetch).
        let prefetch = if matches!(device, Device::Cuda(_)) { cfg.prefetch } else { 0 };
        let loader =
            Loader::new(set, &LoaderConfig::train(cfg.batch_size).seed(cfg.seed).prefetch(prefetch), device)?
                .shard(par.rank(), par.world_size())?;
        let spe = loader.batches_per_epoch();
        let total = cfg.epochs * spe;
        cfg.schedule.validate(total)?;
        let opt = Optimizer::new(t.vars(), &cfg.optimizer, cfg.weight_decay, &cfg.param_groups)?;
        let cuda = matches!(device, Device::Cuda(_));
        let channels_last = cfg.channels_last && cuda;
        let mut progress = Progress::new(cfg.progress && par.is_main(), cfg.log_every, 0);
        // CUDA autocast, CPU bf16 autocast where the CPU has bf16 (and the run's step measures
        // faster in it, see settle_cpu_precision), else f32 (with a note saying why).
        let amp::AmpSetup { autocast, fp16, note, measure_cpu_bf16 } = amp::setup(cfg.mixed_precision, device)?;
        let measure_bf16 = measure_cpu_bf16 && !par.is_parallel();
        if let Some(note) = note {
            progress.warn(&note);
        }
        let scaler = fp16.then(LossScaler::default);

        // One trainer per folder (a second one would overwrite this one's checkpoints); the
        // temporary files of a killed trainer's interrupted writes go.
        let lock = if par.is_main() {
            let lock = lock_run_folder(out_dir)?;
            for stale in crate::files::sweep_temp_files(out_dir)? {
                progress.warn(&format!("removed {}, left by an interrupted write", stale.display()));
            }
            Some(lock)
        } else {
            None
        };
        let parts = t.identity_parts()?;
        if parts.undescribed {
            progress.warn(&format!(
                "note: the method '{}' does not describe its settings (SslMethod::config_json), so a run in {} is \
                 recognised by its variables' shapes, augmentations and data only: after changing another setting \
                 (a temperature, say), use a new out_dir or resume(false)",
                t.name(),
                out_dir.display()
            ));
        }
        let identity = RunIdentity {
            method: parts.method,
            model: identity::store_signature(t.vars()),
            state: identity::signature(&t.state()),
            augment: parts.augment,
            dataset: identity::dataset_identity(set)?,
            init: parts.init,
        };
        Ok(Setup { device, loader, spe, total, opt, channels_last, autocast, measure_bf16, scaler, progress, identity, lock })
    }
}

/// Where a run starts: step 0 with an empty history, or a checkpoint's step with its history.
struct Start {
    history: History,
    /// The next step to train.
    step: usize,
    /// Seconds the checkpoint's unfinished epoch had trained already.
    carried_secs: f64,
    last_checkpoint: Option<usize>,
    /// The autocast the checkpoint trained in (`None`: a fresh run or an older checkpoint).
    autocast: Option<Autocast>,
}

/// Continues from the checkpoint in `out_dir` when `cfg.resume` and there is one: everything is
/// read and checked (the kind and method, the trajectory settings, the run identity, the schedule's
/// length, names, shapes, finiteness) before the first variable changes; then the optimizer's
/// state, the weights, the trainee's state and the loss scale are loaded.
fn resume<T: Trainee + ?Sized>(t: &mut T, cfg: &TrainConfig, out_dir: &Path, setup: &mut Setup) -> Result<Start> {
    let fresh = Start { history: History::new(), step: 0, carried_secs: 0.0, last_checkpoint: None, autocast: None };
    if !(cfg.resume && checkpoint::exists(out_dir)) {
        return Ok(fresh);
    }
    let (total, spe) = (setup.total, setup.spe);
    let ck = Checkpoint::load(out_dir)?;
    let m = &ck.meta;
    if m.kind != t.kind() || m.method != t.name() {
        return Err(config_err!(
            "{} holds a {} run of '{}', not of '{}': use another out_dir, or set resume(false) to overwrite it",
            out_dir.display(),
            m.kind,
            m.method,
            t.name()
        ));
    }
    if let Some((field, saved, now)) = cfg.trajectory_difference(&m.config) {
        return Err(config_err!(
            "{} holds a run with another {field} (saved {saved}, now {now}); resuming would not continue the same \
             run. Use the saved value, another out_dir, or resume(false) to start over",
            out_dir.display()
        ));
    }
    match &m.identity {
        Some(saved) => {
            if let Some((field, was, now)) = identity::first_difference(saved, &setup.identity) {
                return Err(identity_mismatch(out_dir, m.finished, &field, &was, &now));
            }
        }
        None => setup.progress.warn(&format!(
            "note: {} was written by an older selfsup that did not record the method's settings, augmentations \
             and data, so they cannot be checked: if you changed any, use another out_dir or resume(false)",
            out_dir.display()
        )),
    }
    if m.total_steps != total || m.steps_per_epoch != spe {
        return Err(config_err!(
            "{} holds a run of {} steps ({} per epoch) but this data gives {total} ({spe} per epoch): another dataset? \
             Use another out_dir or resume(false)",
            out_dir.display(),
            m.total_steps,
            m.steps_per_epoch
        ));
    }
    checkpoint::check_vars(t.vars(), &ck.online)?;
    checkpoint::check_named("method state", &t.state(), &ck.state)?;
    if let Some(name) = checkpoint::first_non_finite(&[("online", &ck.online), ("state", &ck.state)])? {
        return Err(Error::Data(format!(
            "{}: the checkpoint's '{name}' holds NaN or infinite values, so it is damaged; delete the folder \
             (or set resume(false)) to train again",
            out_dir.display()
        )));
    }
    setup.opt.load_state(&ck.optimizer)?; // this call's own optimizer: nothing the user sees changes yet
    checkpoint::load_vars(t.vars(), &ck.online)?;
    t.load_state(&ck.state)?;
    if let (Some(s), Some(saved)) = (setup.scaler.as_mut(), m.loss_scaler.clone()) {
        *s = saved;
    }
    let (step, carried_secs) = (m.step, m.epoch_seconds);
    let autocast = m.autocast;
    Ok(Start { history: ck.meta.history, step, carried_secs, last_checkpoint: Some(step), autocast })
}

/// On a CPU with native bf16, whether this run trains under bf16 autocast or in f32
/// ([`bf16_probe`]): a resumed run keeps the precision its checkpoint trained in; else what this
/// process measured for the same workload, or a measurement now on the first batch. Says which
/// and why.
fn settle_cpu_precision<T: Trainee + ?Sized>(t: &mut T, setup: &mut Setup, start: &Start) -> Result<()> {
    if let Some(saved @ (Autocast::Off | Autocast::CpuBf16)) = start.autocast {
        setup.autocast = saved;
        let which = if saved == Autocast::Off { "f32" } else { "bf16 autocast" };
        // The checkpoint records what the run trained in, whether a measurement chose it or the
        // first machine had no native bf16: the resumed run keeps it so its steps stay comparable.
        setup.progress.warn(&format!("precision: {which}, the precision this run's checkpoint records"));
        return Ok(());
    }
    let Some(batch) = setup.loader.epoch(0)?.next().transpose()? else { return Ok(()) };
    let key = bf16_probe::workload_key(t.kind(), &t.name(), &setup.identity.model, &batch, setup.channels_last);
    let (measured, again) = match bf16_probe::recall(&key) {
        Some(m) => (m, true),
        None => (bf16_probe::measure(t, &mut setup.opt, &batch, setup.channels_last, key)?, false),
    };
    setup.progress.warn(&measured.note(again));
    setup.autocast = measured.choice();
    Ok(())
}

/// Converts every 4-d variable of `vs` to channels-last memory format in place (CUDA runs with
/// `channels_last`; the checkpoint's weights are loaded first).
fn to_channels_last(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut v) in store_vars(vs) {
            if v.dim() == 4 {
                let cl = amp::to_channels_last(&v);
                v.set_data(&cl);
            }
        }
    });
}

/// Whether this call has no step to train (the run is finished, or at `stop_at` already); says
/// so, unless a chunked caller does not want to hear it.
fn nothing_to_train(
    start: &Start,
    stop_at: usize,
    total: usize,
    cfg: &TrainConfig,
    out_dir: &Path,
    chunked: bool,
    progress: &mut Progress,
) -> bool {
    let start = start.step;
    if start < stop_at {
        return false;
    }
    if start >= total {
        if !chunked || stop_at >= total {
            progress.message(&format!(
                "{}: finished run loaded ({total} steps, {} epochs); delete the folder or set resume(false) to train again",
                out_dir.display(),
                cfg.epochs
            ));
        }
    } else if !chunked {
        progress.message(&format!("{}: at step {start} of {total} already; raise max_steps to continue", out_dir.display()));
    }
    true
}

/// The training of one call, from its first step to its stop: what carries from step to step.
struct Session<'a> {
    cfg: &'a TrainConfig,
    chunked: bool,
    device: Device,
    loader: Loader,
    total: usize,
    opt: Optimizer,
    scaler: Option<LossScaler>,
    autocast: amp::Autocast,
    channels_last: bool,
    identity: RunIdentity,
    log: StepLog,
    plan: RunPlan<'a>,
    /// The next step to train.
    step: usize,
    /// Seconds the first epoch of this call had trained in an earlier call.
    carried_secs: f64,
    last_checkpoint: Option<usize>,
    last_save: Instant,
    /// When this call's training began (for `time_budget_secs`).
    started: Instant,
    budget_hit: bool,
    interrupted: bool,
    _lock: Option<RunLock>,
}

/// When an epoch's training began, and the seconds it had trained in an earlier call.
struct EpochClock {
    started: Instant,
    carried: f64,
}

impl EpochClock {
    fn seconds(&self) -> f64 {
        self.carried + self.started.elapsed().as_secs_f64()
    }
}

impl<'a> Session<'a> {
    /// Says where the run resumes, writes the config and the identity beside the checkpoint, and
    /// opens the history file (rewritten with the resumed history, then appended to).
    fn start(
        setup: Setup,
        start: Start,
        stop_at: usize,
        cfg: &'a TrainConfig,
        out_dir: &'a Path,
        chunked: bool,
    ) -> Result<Session<'a>> {
        let Setup { device, loader, spe, total, opt, channels_last, autocast, scaler, mut progress, identity, lock, .. } =
            setup;
        crate::device::tune_allocator();
        if start.step > 0 && !chunked {
            progress.message(&format!(
                "resuming {} from step {} of {total} (epoch {})",
                out_dir.display(),
                start.step,
                start.step / spe + 1
            ));
        }
        let writer = if cfg.distributed.is_main() {
            crate::files::write_file(&out_dir.join(CONFIG_FILE), &serde_json::to_vec_pretty(cfg)?)?;
            crate::files::write_file(&out_dir.join(IDENTITY_FILE), &serde_json::to_vec_pretty(&identity)?)?;
            Some(JsonlWriter::start(&out_dir.join(HISTORY_FILE), &start.history)?)
        } else {
            None
        };
        let log = StepLog {
            pending: Vec::new(),
            window_started: Instant::now(),
            history: start.history,
            writer,
            collapse: CollapseMonitor::new(cfg.collapse_warn_fraction),
            progress: Progress::new(cfg.progress && cfg.distributed.is_main(), cfg.log_every, start.step),
            first_non_finite: None,
            par: cfg.distributed.clone(),
        };
        Ok(Session {
            cfg,
            chunked,
            device,
            loader,
            total,
            opt,
            scaler,
            autocast,
            channels_last,
            identity,
            log,
            plan: RunPlan { epochs: cfg.epochs, steps_per_epoch: spe, stop_at, out_dir },
            step: start.step,
            carried_secs: start.carried_secs,
            last_checkpoint: start.last_checkpoint,
            last_save: Instant::now(),
            started: Instant::now(),
            budget_hit: false,
            interrupted: false,
            _lock: lock,
        })
    }

    /// Trains epoch after epoch until `stop_at`, the time budget or a stop request, then reads
    /// the last steps.
    fn train<T: Trainee + ?Sized>(&mut self, t: &mut T) -> Result<()> {
        while self.step < self.plan.stop_at {
            self.train_epoch(t)?;
            if self.budget_hit || self.interrupted {
                break;
            }
        }
        self.log.flush(&self.plan, self.last_checkpoint)
    }

    /// The rest of the current epoch: its batches, in the order of (seed, epoch), from the step
    /// the run is at.
    fn train_epoch<T: Trainee + ?Sized>(&mut self, t: &mut T) -> Result<()> {
        let spe = self.plan.steps_per_epoch;
        let epoch = self.step / spe;
        let skip = self.step - epoch * spe;
        let clock = EpochClock { started: Instant::now(), carried: if skip > 0 { self.carried_secs } else { 0.0 } };
        let mut batches = self.loader.epoch(epoch as u64)?;
        for _ in 0..skip {
            // The batches already trained on in an earlier session: same order, not used.
            batches.next().transpose()?;
        }
        self.log.restart_clock();
        for batch in batches {
            self.step(t, &batch?, epoch)?;
            if self.after_step(t, epoch, &clock)? {
                break;
            }
        }
        Ok(())
    }

    /// One optimizer step on `batch`: the scheduled learning rate, the step's own seeds (from
    /// seed and step, so a resumed run draws what an unbroken one would), forward, backward and
    /// update; its numbers stay on the device until the next flush.
    fn step<T: Trainee + ?Sized>(&mut self, t: &mut T, batch: &Batch, epoch: usize) -> Result<()> {
        let (cfg, step) = (self.cfg, self.step);
        let lr = cfg.schedule.lr(cfg.lr, step, self.total, self.plan.steps_per_epoch);
        self.opt.set_lr(lr);
        let rank = cfg.distributed.rank();
        tch::manual_seed(rank_step_seed(cfg.seed, SALT_TORCH, step, rank) as i64);
        let mut rng = augment::rng(rank_step_seed(cfg.seed, SALT_AUGMENT, step, rank));
        let (channels_last, autocast) = (self.channels_last, self.autocast);
        let StepOutput { loss, z, mut metrics } =
            cfg.distributed.forward(|| t.forward(batch, &mut rng, channels_last, autocast))?;
        let ls = loss.size();
        if !(ls.is_empty() || ls == [1]) {
            return Err(Error::shape("the loss returned by the training step", "a scalar []", &ls));
        }
        metrics.extend(backward_sync_step(&loss, &mut self.opt, self.scaler.as_mut(), cfg.grad_clip, &cfg.distributed)?);
        t.after_step(step, self.total)?;
        self.log.pending.push(PendingStep::new(step, epoch, lr, batch.len(), &loss, z.as_ref(), metrics, self.device)?);
        self.step += 1;
        Ok(())
    }

    /// What follows a step: the log window's flush, the epoch's record when the epoch is done,
    /// the stop (at `stop_at`, the time budget, a stop request) and a checkpoint at the stop or
    /// when one is due. Returns whether the call stops here.
    fn after_step<T: Trainee + ?Sized>(&mut self, t: &mut T, epoch: usize, clock: &EpochClock) -> Result<bool> {
        let cfg = self.cfg;
        let epoch_done = self.step - epoch * self.plan.steps_per_epoch == self.plan.steps_per_epoch;
        if self.log.pending.len() >= cfg.log_every || epoch_done {
            self.log.flush(&self.plan, self.last_checkpoint)?;
        }
        if epoch_done {
            end_epoch(t, &mut self.log, cfg, epoch, self.step >= self.total, clock.seconds())?;
        }
        let budget_hit = cfg.time_budget_secs.is_some_and(|b| self.started.elapsed().as_secs_f64() >= b);
        let timed_save = cfg.checkpoint_every_secs.is_some_and(|s| self.last_save.elapsed().as_secs_f64() >= s);
        // Clocks and signals differ between ranks: all stop (and save) when one says so.
        let [budget_hit, interrupted, timed_save] =
            cfg.distributed.any([budget_hit, super::stop_requested(), timed_save && cfg.distributed.is_main()])?;
        (self.budget_hit, self.interrupted) = (budget_hit, interrupted);
        let stop = self.step >= self.plan.stop_at || self.budget_hit || self.interrupted;
        let periodic = cfg.checkpoint_every_steps.is_some_and(|n| self.step % n == 0) || timed_save;
        if stop || periodic {
            // Read (and check) every step before saving weights that went through them.
            self.log.flush(&self.plan, self.last_checkpoint)?;
            let epoch_seconds = if epoch_done { 0.0 } else { clock.seconds() };
            self.checkpoint(t, epoch_seconds)?;
        }
        Ok(stop)
    }

    /// Saves the weights, the trainee's state, the optimizer's state and the run's record at
    /// the current step (after a flush), unless a tensor is no longer finite.
    fn checkpoint<T: Trainee + ?Sized>(&mut self, t: &T, epoch_seconds: f64) -> Result<()> {
        let (step, out_dir) = (self.step, self.plan.out_dir);
        if !self.cfg.distributed.is_main() {
            self.last_save = Instant::now();
            self.last_checkpoint = Some(step);
            self.log.restart_clock();
            return Ok(());
        }
        let meta = CheckpointMeta {
            format: checkpoint::FORMAT_VERSION,
            kind: t.kind().into(),
            method: t.name(),
            step,
            total_steps: self.total,
            steps_per_epoch: self.plan.steps_per_epoch,
            finished: step >= self.total,
            epoch_seconds,
            loss_scaler: self.scaler.clone(),
            config: self.cfg.clone(),
            history: self.log.history.clone(),
            identity: Some(self.identity.clone()),
            autocast: Some(self.autocast),
        };
        let ck = Checkpoint { meta, online: store_vars(t.vars()), state: t.state(), optimizer: self.opt.state() };
        let groups = [("online", &ck.online[..]), ("state", &ck.state[..]), ("optim", &ck.optimizer[..])];
        if let Some(name) = checkpoint::first_non_finite(&groups)? {
            return Err(non_finite_weights(
                &name,
                step,
                self.last_checkpoint,
                self.log.first_non_finite.as_ref(),
                out_dir,
            ));
        }
        ck.save(out_dir)?;
        self.log.flush_file()?;
        self.last_save = Instant::now();
        self.last_checkpoint = Some(step);
        self.log.restart_clock();
        Ok(())
    }

    /// The end of the call: on an error, the steps still waiting on the device are logged (a
    /// non-finite loss among them is the cause to report); otherwise the history file is flushed
    /// and the call says where it stopped — an interrupted run returns [`Error::Interrupted`].
    fn finish(mut self, outcome: Result<()>) -> Result<History> {
        if let Err(e) = outcome {
            // Alone: the other ranks may be gone, so no collective here.
            self.log.par = DataParallel::default();
            return Err(match self.log.flush(&self.plan, self.last_checkpoint) {
                Err(d @ Error::Diverged(_)) => d,
                _ => e,
            });
        }
        self.log.flush_file()?;
        let (step, total, out_dir) = (self.step, self.total, self.plan.out_dir);
        if self.interrupted && step < total {
            return Err(Error::Interrupted(format!(
                "stopped at step {step} of {total} with a checkpoint in {}; run the same command (or call) again to \
                 continue from there",
                out_dir.display()
            )));
        }
        if step >= total {
            self.log.progress.message(&format!("finished {total} steps; checkpoint in {}", out_dir.display()));
        } else if self.budget_hit || !self.chunked {
            let why = if self.budget_hit { "time budget reached" } else { "max_steps reached" };
            self.log.progress.message(&format!(
                "{why}: stopped at step {step} of {total} with a checkpoint in {}; run the same call again to continue",
                out_dir.display()
            ));
        }
        Ok(self.log.history)
    }
}

/// The epoch record of `epoch` (all its steps flushed already): mean loss, the trainee's
/// evaluations, `seconds`; written, kept and summarised on its own line.
fn end_epoch<T: Trainee + ?Sized>(
    t: &mut T,
    log: &mut StepLog,
    cfg: &TrainConfig,
    epoch: usize,
    last: bool,
    seconds: f64,
) -> Result<()> {
    let steps: Vec<StepRecord> = log.history.steps.iter().filter(|s| s.epoch == epoch).cloned().collect();
    let mean_loss = steps.iter().map(|s| s.loss).sum::<f64>() / steps.len().max(1) as f64;
    let mut rec = EpochRecord {
        epoch,
        mean_loss,
        knn_accuracy: None,
        train_accuracy: None,
        test_loss: None,
        test_accuracy: None,
        seconds,
    };
    t.end_epoch(epoch, last, &steps, &mut rec)?;
    for v in [&mut rec.knn_accuracy, &mut rec.train_accuracy, &mut rec.test_loss, &mut rec.test_accuracy] {
        *v = v.filter(|x| x.is_finite()); // recorded as absent, never as JSON null
    }
    let mut summary = format!("epoch {}/{} done: loss {mean_loss:.4}", epoch + 1, cfg.epochs);
    for (name, v) in [("knn", rec.knn_accuracy), ("train acc", rec.train_accuracy), ("test acc", rec.test_accuracy)] {
        if let Some(v) = v {
            summary.push_str(&format!(" | {name} {:.1}%", 100.0 * v));
        }
    }
    if let Some(l) = rec.test_loss {
        summary.push_str(&format!(" | test loss {l:.4}"));
    }
    summary.push_str(&format!(" | {}", duration(rec.seconds)));
    log.append(&Record::Epoch(rec.clone()))?;
    log.history.epochs.push(rec);
    log.progress.message(&summary);
    log.restart_clock();
    Ok(())
}

/// What a flush needs to know of the run: where the bar stands, where a divergence leaves the
/// user.
struct RunPlan<'a> {
    epochs: usize,
    steps_per_epoch: usize,
    stop_at: usize,
    out_dir: &'a Path,
}

/// A step trained but not read yet: its numbers wait on the device in `row` until a flush.
struct PendingStep {
    step: usize,
    epoch: usize,
    lr: f64,
    images: usize,
    /// D of z when `row[1]` is the std of the ℓ2-normalised z (the collapse monitor's 1/√D).
    z_dim: Option<i64>,
    /// Metrics known on the host.
    host: Vec<(String, f64)>,
    /// Names of the device metrics, the last entries of `row`.
    device_names: Vec<String>,
    /// `[loss, z_std (when z_dim), device metrics…]`: f64 (exact for every f32/bf16/f16 value),
    /// detached, on the training device.
    row: Tensor,
}

impl PendingStep {
    /// Stacks the step's scalars into one row on `device`; queues a few small kernels, reads
    /// nothing back. z-std is measured when `z` is `[N, D]` with N ≥ 2.
    #[allow(clippy::too_many_arguments)]
    fn new(
        step: usize,
        epoch: usize,
        lr: f64,
        images: usize,
        loss: &Tensor,
        z: Option<&Tensor>,
        metrics: StepMetrics,
        device: Device,
    ) -> Result<Self> {
        let mut values = vec![scalar_f64("the loss", loss, device)?];
        let z_dim = match z {
            Some(z) if z.dim() == 2 && z.size()[0] >= 2 => {
                values.push(scalar_f64("z_std", &std_of_l2_normalized_tensor(z)?, device)?);
                Some(z.size()[1])
            }
            _ => None,
        };
        values.extend(metrics.device_scalars(device)?);
        let row = tch::no_grad(|| Tensor::f_stack(&values, 0))?; // [1 + z? + K]
        let device_names = metrics.device.into_iter().map(|(name, _)| name).collect();
        Ok(PendingStep { step, epoch, lr, images, z_dim, host: metrics.host, device_names, row })
    }
}

/// The steps since the last flush, and what reading them feeds: the history, its JSON-lines
/// file, the collapse monitor and the progress bar.
struct StepLog {
    pending: Vec<PendingStep>,
    /// When the current window's training began (restarted after evaluations and checkpoints,
    /// which are not training time).
    window_started: Instant,
    history: History,
    /// The history file; rank 0's only.
    writer: Option<JsonlWriter>,
    collapse: CollapseMonitor,
    progress: Progress,
    /// The first step and metric name whose value was NaN or infinite (left out of the history).
    first_non_finite: Option<(usize, String)>,
    /// The job: a flush logs the ranks' mean.
    par: DataParallel,
}

impl StepLog {
    fn restart_clock(&mut self) {
        self.window_started = Instant::now();
    }

    fn append(&mut self, record: &Record) -> Result<()> {
        self.writer.as_mut().map_or(Ok(()), |w| w.append(record))
    }

    fn flush_file(&mut self) -> Result<()> {
        self.writer.as_mut().map_or(Ok(()), JsonlWriter::flush)
    }

    /// Reads the pending steps in one transfer and logs them in order; the first non-finite
    /// loss stops there with [`Error::Diverged`] naming its step (the steps before it are
    /// written, it and the later ones are not).
    ///
    /// Throughput: the host only queues a step's kernels, so its wall time is the launch time,
    /// not the device's; the transfer waits for the window's last kernel, so the window's images
    /// over the window's time (up to after the transfer) is the honest figure, and every step of
    /// the window records it as its `images_per_sec` (with `log_every` 1 it is the step's own).
    fn flush(&mut self, plan: &RunPlan<'_>, last_checkpoint: Option<usize>) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let rows: Vec<&Tensor> = pending.iter().map(|p| &p.row).collect();
        let window = self.par.mean(tch::no_grad(|| Tensor::f_cat(&rows, 0))?)?;
        let values = Vec::<f64>::try_from(window.to_device(Device::Cpu))?;
        let seconds = self.window_started.elapsed().as_secs_f64();
        self.restart_clock();
        let images: usize = pending.iter().map(|p| p.images).sum::<usize>() * self.par.world_size();
        let images_per_sec = images as f64 / seconds.max(1e-9);
        let mut offset = 0;
        for p in pending {
            let n = p.row.numel();
            let v = &values[offset..offset + n];
            offset += n;
            let loss = v[0];
            if !loss.is_finite() {
                self.flush_file()?;
                return Err(diverged(loss, p.step, p.epoch, p.lr, last_checkpoint, plan.out_dir));
            }
            let (z_std, device_values) = match p.z_dim {
                Some(d) => {
                    if let Some(w) = self.collapse.check(v[1], d, p.step, p.epoch) {
                        self.progress.warn(&w);
                    }
                    (Some(v[1]).filter(|s| s.is_finite()), &v[2..])
                }
                None => (None, &v[1..]),
            };
            let mut metrics: BTreeMap<String, f64> = p.host.into_iter().collect();
            metrics.extend(p.device_names.into_iter().zip(device_values.iter().copied()));
            // JSON has no NaN: a non-finite metric (a grad_norm under bf16, say) is left out of the
            // record, so the history reads back; the first one is named if the weights go bad.
            let first = &mut self.first_non_finite;
            metrics.retain(|name, v| {
                if !v.is_finite() && first.is_none() {
                    *first = Some((p.step, name.clone()));
                }
                v.is_finite()
            });
            let record = StepRecord { step: p.step, epoch: p.epoch, loss, lr: p.lr, z_std, images_per_sec, metrics };
            self.append(&Record::Step(record.clone()))?;
            self.history.steps.push(record);
            let in_epoch = p.step - p.epoch * plan.steps_per_epoch;
            let line = Line {
                epoch: p.epoch,
                epochs: plan.epochs,
                step_in_epoch: in_epoch,
                steps_per_epoch: plan.steps_per_epoch,
                step: p.step,
                stop_at: plan.stop_at,
                loss,
                lr: p.lr,
                images_per_sec,
            };
            self.progress.step(&line, in_epoch + 1 == plan.steps_per_epoch || p.step + 1 == plan.stop_at);
        }
        // A notebook may be watching the file (History::load_jsonl): one write per window.
        self.flush_file()
    }
}
