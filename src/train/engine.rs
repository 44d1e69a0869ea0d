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
use super::amp::{self, LossScaler};
use super::checkpoint::{self, Checkpoint, CheckpointMeta, CONFIG_FILE, HISTORY_FILE};
use super::collapse::{std_of_l2_normalized_tensor, CollapseMonitor};
use super::history::{EpochRecord, History, JsonlWriter, Record, StepRecord};
use super::knn::backbone_knn_accuracy;
use super::optim::Optimizer;
use super::progress::{duration, Line, Progress};
use super::{KnnMonitor, TrainConfig};
use crate::augment::{self, Augment, AugmentRng, MultiView};
use crate::data::{Batch, ImageSet, Loader, LoaderConfig};
use crate::device::{splitmix64, GOLDEN_GAMMA};
use crate::error::{config_err, Error, Result};
use crate::files::RunLock;
use crate::methods::{scalar_f64, SslMethod, StepMetrics, StepOutput};
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

/// Backward pass and optimizer step, as every training step of the engine takes them: zero the
/// gradients, backward (of the scaled loss with an fp16 [`LossScaler`], then unscale and skip the
/// step when a gradient is not finite), clip the gradient norm when asked, step. Returns what is
/// worth logging: `loss_scale`, `skipped_step` (known on the host) and `grad_norm` (left on the
/// device). The benchmark calls it too, so it times exactly this code.
///
/// Nothing is read back from the device, except with an fp16 [`LossScaler`]: whether the
/// gradients are finite decides on the host whether the optimizer steps and how the scale
/// changes, so that check waits for the backward pass (one sync per step, as PyTorch's
/// `GradScaler.step`, which reads its `found_inf`). bf16 and f32 need no loss scaling.
///
/// # Errors
/// Those of [`Optimizer::clip_grad_norm_tensor`] and [`Optimizer::step`].
pub fn backward_and_step(
    loss: &Tensor,
    opt: &mut Optimizer,
    scaler: Option<&mut LossScaler>,
    grad_clip: Option<f64>,
) -> Result<StepMetrics> {
    let mut metrics = StepMetrics::new();
    opt.zero_grad();
    let mut apply = true;
    match scaler {
        Some(s) => {
            (loss * s.scale).backward();
            opt.scale_grads(1.0 / s.scale);
            let finite = opt.grads_finite(); // the unavoidable sync, see above
            s.update(finite);
            apply = finite;
            metrics = metrics.with("loss_scale", s.scale);
        }
        None => loss.backward(),
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
const SALT_AUGMENT: u64 = 0xA4;
const SALT_TORCH: u64 = 0x7C;

/// All variables of `vs`, sorted by name.
fn sorted_vars(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

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

/// The loop; see the module docs of `train`.
pub(crate) fn run<T: Trainee + ?Sized>(
    t: &mut T,
    set: &ImageSet,
    cfg: &TrainConfig,
    out_dir: &Path,
    chunked: bool,
) -> Result<History> {
    cfg.validate()?;
    let device = t.vars().device();
    let loader = Loader::new(set, &LoaderConfig::train(cfg.batch_size).seed(cfg.seed).prefetch(cfg.prefetch), device)?;
    let spe = loader.batches_per_epoch();
    let total = cfg.epochs * spe;
    cfg.schedule.validate(total)?;
    let mut opt = Optimizer::new(t.vars(), &cfg.optimizer, cfg.weight_decay, &cfg.param_groups)?;
    let cuda = matches!(device, Device::Cuda(_));
    let channels_last = cfg.channels_last && cuda;
    let mut progress = Progress::new(cfg.progress, cfg.log_every, 0);
    // CUDA autocast, CPU bf16 autocast where the CPU has bf16, else f32 (with a note saying why).
    let amp::AmpSetup { autocast, fp16, note } = amp::setup(cfg.mixed_precision, device)?;
    if let Some(note) = note {
        progress.warn(&note);
    }
    let mut scaler = fp16.then(LossScaler::default);

    // One trainer per folder (a second one would overwrite this one's checkpoints); the
    // temporary files of a killed trainer's interrupted writes go.
    let _lock = lock_run_folder(out_dir)?;
    for stale in crate::files::sweep_temp_files(out_dir)? {
        progress.warn(&format!("removed {}, left by an interrupted write", stale.display()));
    }
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

    // Resume: everything is read and checked before the first variable changes.
    let mut history = History::new();
    let mut start = 0;
    let mut carried_secs = 0.0;
    let mut last_checkpoint = None;
    if cfg.resume && checkpoint::exists(out_dir) {
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
                if let Some((field, was, now)) = identity::first_difference(saved, &identity) {
                    return Err(identity_mismatch(out_dir, m.finished, &field, &was, &now));
                }
            }
            None => progress.warn(&format!(
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
        opt.load_state(&ck.optimizer)?; // this call's own optimizer: nothing the user sees changes yet
        checkpoint::load_vars(t.vars(), &ck.online)?;
        t.load_state(&ck.state)?;
        start = m.step;
        carried_secs = m.epoch_seconds;
        last_checkpoint = Some(m.step);
        if let (Some(s), Some(saved)) = (scaler.as_mut(), m.loss_scaler.clone()) {
            *s = saved;
        }
        history = ck.meta.history;
    }
    if channels_last {
        tch::no_grad(|| {
            for (_, mut v) in sorted_vars(t.vars()) {
                if v.dim() == 4 {
                    let cl = amp::to_channels_last(&v);
                    v.set_data(&cl);
                }
            }
        });
    }
    let stop_at = cfg.max_steps.map_or(total, |m| m.min(total));
    if start >= stop_at {
        if start >= total {
            if !chunked || stop_at >= total {
                progress.message(&format!(
                    "{}: finished run loaded ({total} steps, {} epochs); delete the folder or set resume(false) to train again",
                    out_dir.display(),
                    cfg.epochs
                ));
            }
        } else if !chunked {
            progress.message(&format!(
                "{}: at step {start} of {total} already; raise max_steps to continue",
                out_dir.display()
            ));
        }
        return Ok(history);
    }
    if start > 0 && !chunked {
        progress.message(&format!(
            "resuming {} from step {start} of {total} (epoch {})",
            out_dir.display(),
            start / spe + 1
        ));
    }
    crate::files::write_file(&out_dir.join(CONFIG_FILE), &serde_json::to_vec_pretty(cfg)?)?;
    crate::files::write_file(&out_dir.join(IDENTITY_FILE), &serde_json::to_vec_pretty(&identity)?)?;
    let writer = JsonlWriter::start(&out_dir.join(HISTORY_FILE), &history)?;
    let progress = Progress::new(cfg.progress, cfg.log_every, start);
    let mut log = StepLog {
        pending: Vec::new(),
        window_started: Instant::now(),
        history,
        writer,
        collapse: CollapseMonitor::new(cfg.collapse_warn_fraction),
        progress,
        first_non_finite: None,
    };
    let plan = RunPlan { epochs: cfg.epochs, steps_per_epoch: spe, stop_at, out_dir };
    let session = Instant::now();
    let mut last_save = Instant::now();
    let mut step = start;
    let mut budget_hit = false;
    let mut interrupted = false;

    let outcome = (|| -> Result<()> {
        while step < stop_at {
            let epoch = step / spe;
            let skip = step - epoch * spe;
            let epoch_started = Instant::now();
            let carried = if skip > 0 { carried_secs } else { 0.0 };
            let mut batches = loader.epoch(epoch as u64)?;
            for _ in 0..skip {
                // The batches already trained on in an earlier session: same order, not used.
                batches.next().transpose()?;
            }
            log.restart_clock();
            for batch in batches {
                let batch = batch?;
                let lr = cfg.schedule.lr(cfg.lr, step, total, spe);
                opt.set_lr(lr);
                tch::manual_seed(step_seed(cfg.seed, SALT_TORCH, step) as i64);
                let mut rng = augment::rng(step_seed(cfg.seed, SALT_AUGMENT, step));
                let StepOutput { loss, z, mut metrics } = t.forward(&batch, &mut rng, channels_last, autocast)?;
                let ls = loss.size();
                if !(ls.is_empty() || ls == [1]) {
                    return Err(Error::shape("the loss returned by the training step", "a scalar []", &ls));
                }
                metrics.extend(backward_and_step(&loss, &mut opt, scaler.as_mut(), cfg.grad_clip)?);
                t.after_step(step, total)?;
                log.pending.push(PendingStep::new(step, epoch, lr, batch.len(), &loss, z.as_ref(), metrics, device)?);
                step += 1;
                let epoch_done = step - epoch * spe == spe;
                if log.pending.len() >= cfg.log_every || epoch_done {
                    log.flush(&plan, last_checkpoint)?;
                }
                if epoch_done {
                    end_epoch(t, &mut log, cfg, epoch, step >= total, carried + epoch_started.elapsed().as_secs_f64())?;
                }
                budget_hit = cfg.time_budget_secs.is_some_and(|b| session.elapsed().as_secs_f64() >= b);
                interrupted = super::stop_requested();
                let stop = step >= stop_at || budget_hit || interrupted;
                let periodic = cfg.checkpoint_every_steps.is_some_and(|n| step % n == 0)
                    || cfg.checkpoint_every_secs.is_some_and(|s| last_save.elapsed().as_secs_f64() >= s);
                if stop || periodic {
                    // Read (and check) every step before saving weights that went through them.
                    log.flush(&plan, last_checkpoint)?;
                    let epoch_seconds = if epoch_done { 0.0 } else { carried + epoch_started.elapsed().as_secs_f64() };
                    let meta = CheckpointMeta {
                        format: checkpoint::FORMAT_VERSION,
                        kind: t.kind().into(),
                        method: t.name(),
                        step,
                        total_steps: total,
                        steps_per_epoch: spe,
                        finished: step >= total,
                        epoch_seconds,
                        loss_scaler: scaler.clone(),
                        config: cfg.clone(),
                        history: log.history.clone(),
                        identity: Some(identity.clone()),
                    };
                    let ck = Checkpoint { meta, online: sorted_vars(t.vars()), state: t.state(), optimizer: opt.state() };
                    let groups = [("online", &ck.online[..]), ("state", &ck.state[..]), ("optim", &ck.optimizer[..])];
                    if let Some(name) = checkpoint::first_non_finite(&groups)? {
                        return Err(non_finite_weights(&name, step, last_checkpoint, log.first_non_finite.as_ref(), out_dir));
                    }
                    ck.save(out_dir)?;
                    log.writer.flush()?;
                    last_save = Instant::now();
                    last_checkpoint = Some(step);
                    log.restart_clock();
                }
                if stop {
                    break;
                }
            }
            if budget_hit || interrupted {
                break;
            }
        }
        log.flush(&plan, last_checkpoint)
    })();
    if let Err(e) = outcome {
        // Steps trained before the error may still wait on the device: log them, so that their
        // records are not lost; a non-finite loss among them is the cause to report.
        return Err(match log.flush(&plan, last_checkpoint) {
            Err(d @ Error::Diverged(_)) => d,
            _ => e,
        });
    }
    log.writer.flush()?;
    if interrupted && step < total {
        return Err(Error::Interrupted(format!(
            "stopped at step {step} of {total} with a checkpoint in {}; run the same command (or call) again to \
             continue from there",
            out_dir.display()
        )));
    }
    if step >= total {
        log.progress.message(&format!("finished {total} steps; checkpoint in {}", out_dir.display()));
    } else if budget_hit || !chunked {
        let why = if budget_hit { "time budget reached" } else { "max_steps reached" };
        log.progress.message(&format!(
            "{why}: stopped at step {step} of {total} with a checkpoint in {}; run the same call again to continue",
            out_dir.display()
        ));
    }
    Ok(log.history)
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
    log.writer.append(&Record::Epoch(rec.clone()))?;
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
    writer: JsonlWriter,
    collapse: CollapseMonitor,
    progress: Progress,
    /// The first step and metric name whose value was NaN or infinite (left out of the history).
    first_non_finite: Option<(usize, String)>,
}

impl StepLog {
    fn restart_clock(&mut self) {
        self.window_started = Instant::now();
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
        let values = Vec::<f64>::try_from(tch::no_grad(|| Tensor::f_cat(&rows, 0))?.to_device(Device::Cpu))?;
        let seconds = self.window_started.elapsed().as_secs_f64();
        self.restart_clock();
        let images: usize = pending.iter().map(|p| p.images).sum();
        let images_per_sec = images as f64 / seconds.max(1e-9);
        let mut offset = 0;
        for p in pending {
            let n = p.row.numel();
            let v = &values[offset..offset + n];
            offset += n;
            let loss = v[0];
            if !loss.is_finite() {
                self.writer.flush()?;
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
            self.writer.append(&Record::Step(record.clone()))?;
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
        self.writer.flush()
    }
}
