//! Checkpoints that resume a run exactly (S4.6) and survive an interrupted cell (S0.5).
//!
//! A run's `out_dir` holds:
//! - `checkpoint.safetensors`: the trained variables (`online/<name>`, torchvision names), the
//!   method's other state (`state/<name>`: target network, queue, …), the optimizer's buffers
//!   (`optim/<buffer>/<name>`), and the JSON [`CheckpointMeta`] (step, epoch, schedule, loss
//!   scale, history, config) as the `u8` tensor `meta`, so that one file — written to a
//!   temporary name and renamed — holds a consistent snapshot;
//! - `config.json`: the [`TrainConfig`] of the latest call, for people and notebooks;
//! - `history.jsonl`: the [`History`], appended while training;
//! - `run.json`: the run's [`super::identity::RunIdentity`] (method settings, augmentations,
//!   data), for people; the copy inside the checkpoint is the one that is checked on resume;
//! - `.lock`: the lock a trainer holds while it works in the folder (it holds the trainer's PID).
//!
//! Every file is written through [`write_atomic`] (temporary file, fsync, rename, fsync of the
//! folder), and no checkpoint holds a non-finite number: the engine checks the loss, and every
//! float tensor of a checkpoint is checked finite before it is written ([`first_non_finite`]).
//!
//! No random-generator state is stored: the loader's order derives from (seed, epoch) and every
//! step's augmentation and libtorch generators from (seed, step), so the step number is the
//! whole RNG state.
use super::history::History;
use super::TrainConfig;
use crate::error::{Error, Result};
use crate::models::weights::{load_by_name, store_vars, Mismatch};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// File name of the checkpoint inside a run's `out_dir`.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// File name of the saved training config inside a run's `out_dir`.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the history inside a run's `out_dir`.
pub const HISTORY_FILE: &str = "history.jsonl";

/// Version of the checkpoint layout.
pub const FORMAT_VERSION: u32 = 1;

/// Everything of a checkpoint that is not a tensor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// "pretrain" or "supervised".
    pub kind: String,
    /// The method's name ("moco_v2", …) or "supervised".
    pub method: String,
    /// Optimizer steps done (the next step to run).
    pub step: usize,
    /// Planned steps of the whole run (epochs × steps per epoch): the schedule's horizon.
    pub total_steps: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Whether all `total_steps` are done.
    pub finished: bool,
    /// Seconds already spent in the current (unfinished) epoch.
    pub epoch_seconds: f64,
    /// fp16 loss scaler, when used.
    pub loss_scaler: Option<super::amp::LossScaler>,
    /// The config the run was started with (its `max_steps` and budgets may change on resume).
    pub config: TrainConfig,
    /// The run's history up to `step`.
    pub history: History,
    /// What else determines the run's trajectory (method settings, augmentations, data); `None`
    /// in checkpoints written before selfsup recorded it.
    #[serde(default)]
    pub identity: Option<super::identity::RunIdentity>,
    /// The autocast the run trained in (on a CPU with native bf16 the run measured it, see
    /// [`super::bf16_probe`]; a resumed run keeps it); `None` in older checkpoints.
    #[serde(default)]
    pub autocast: Option<super::amp::Autocast>,
}

/// A loaded checkpoint: meta data and three groups of named tensors (on the CPU).
#[derive(Debug)]
pub struct Checkpoint {
    /// Step, config, history, …
    pub meta: CheckpointMeta,
    /// The trained variables, by `VarStore` name.
    pub online: Vec<(String, Tensor)>,
    /// The method's other state ([`crate::methods::SslMethod::state`]).
    pub state: Vec<(String, Tensor)>,
    /// The optimizer's state ([`super::Optimizer::state`]).
    pub optimizer: Vec<(String, Tensor)>,
}

pub use crate::files::{sweep_temp_files, write_atomic, RunLock, LOCK_FILE};

/// `<dir>/checkpoint.safetensors`.
pub fn checkpoint_path(dir: impl AsRef<Path>) -> PathBuf {
    dir.as_ref().join(CHECKPOINT_FILE)
}

/// Whether `dir` holds a checkpoint.
pub fn exists(dir: impl AsRef<Path>) -> bool {
    checkpoint_path(dir).is_file()
}

/// CPU, contiguous, detached copies (what safetensors can write).
fn portable(t: &Tensor) -> Tensor {
    t.detach().to_device(Device::Cpu).contiguous()
}

impl Checkpoint {
    /// Writes `<dir>/checkpoint.safetensors` atomically.
    ///
    /// # Errors
    /// [`Error::Torch`] when a tensor cannot be written (undefined, unsupported dtype),
    /// [`Error::Io`] when the folder is not writable. The previous checkpoint is then intact.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let meta = serde_json::to_vec(&self.meta)?;
        let mut named: Vec<(String, Tensor)> = vec![("meta".to_string(), Tensor::from_slice(&meta))];
        for (prefix, group) in [("online", &self.online), ("state", &self.state), ("optim", &self.optimizer)] {
            for (name, t) in group.iter() {
                if !t.defined() {
                    return Err(Error::Data(format!(
                        "checkpoint: tensor '{prefix}/{name}' is undefined and cannot be saved"
                    )));
                }
                named.push((format!("{prefix}/{name}"), portable(t)));
            }
        }
        write_atomic(&checkpoint_path(dir), |tmp| Ok(Tensor::write_safetensors(&named, tmp)?))
    }

    /// Reads `<dir>/checkpoint.safetensors` (tensors on the CPU).
    ///
    /// # Errors
    /// [`Error::Data`] when the file is missing, not a selfsup checkpoint, or of another layout
    /// version.
    pub fn load(dir: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = checkpoint_path(&dir);
        if !path.is_file() {
            return Err(Error::Data(format!(
                "no checkpoint at {}: train first (train::pretrain writes it)",
                path.display()
            )));
        }
        let tensors = Tensor::read_safetensors(&path)?;
        let mut meta = None;
        let (mut online, mut state, mut optimizer) = (vec![], vec![], vec![]);
        for (name, t) in tensors {
            if name == "meta" {
                let bytes: Vec<u8> = Vec::<u8>::try_from(&t.to_kind(Kind::Uint8).flatten(0, -1))?;
                meta = Some(serde_json::from_slice::<CheckpointMeta>(&bytes).map_err(|e| {
                    Error::Data(format!(
                        "{}: unreadable meta data ({e}); delete the folder to start over",
                        path.display()
                    ))
                })?);
            } else if let Some(n) = name.strip_prefix("online/") {
                online.push((n.to_string(), t));
            } else if let Some(n) = name.strip_prefix("state/") {
                state.push((n.to_string(), t));
            } else if let Some(n) = name.strip_prefix("optim/") {
                optimizer.push((n.to_string(), t));
            }
        }
        let meta = meta.ok_or_else(|| {
            Error::Data(format!(
                "{} is a safetensors file but not a selfsup training checkpoint (no 'meta')",
                path.display()
            ))
        })?;
        if meta.format != FORMAT_VERSION {
            return Err(Error::Data(format!(
                "{}: checkpoint layout {} but this selfsup reads {FORMAT_VERSION}; retrain or use the matching version",
                path.display(),
                meta.format
            )));
        }
        for list in [&mut online, &mut state, &mut optimizer] {
            list.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(Checkpoint { meta, online, state, optimizer })
    }
}

/// Copies `tensors` into the variables of `vs` by name (under `no_grad`, keeping each
/// variable's device, dtype and layout), after [`check_vars`].
///
/// # Errors
/// [`Error::Data`] listing the variables missing from `tensors` and the tensors that name no
/// variable; [`Error::Shape`] when a shape differs.
pub fn load_vars(vs: &nn::VarStore, tensors: &[(String, Tensor)]) -> Result<()> {
    load_by_name(VARS, VARS_HINT, &store_vars(vs), tensors)
}

/// Checks that `tensors` name exactly the variables of `vs`, with their shapes, without changing
/// anything (validate first, then copy: a failed load leaves the model as it was).
///
/// # Errors
/// As [`load_vars`].
pub fn check_vars(vs: &nn::VarStore, tensors: &[(String, Tensor)]) -> Result<()> {
    check_named_as(VARS, VARS_HINT, &store_vars(vs), tensors)
}

/// Checks that `given` (a checkpoint's method state) holds exactly the names of `expected` (the
/// method's current state) with the same shapes, before anything is copied.
///
/// # Errors
/// [`Error::Data`] naming the missing and unexpected entries; [`Error::Shape`] for a shape.
pub(crate) fn check_named(what: &str, expected: &[(String, Tensor)], given: &[(String, Tensor)]) -> Result<()> {
    check_named_as(&format!("the checkpoint's {what} entries and this method's"), STATE_HINT, expected, given)
}

const VARS: &str = "the checkpoint's variables and the model's";
const VARS_HINT: &str = "; was it saved from another architecture or method?";
const STATE_HINT: &str = "; was it saved by another method or config?";

fn check_named_as(what: &str, hint: &str, expected: &[(String, Tensor)], given: &[(String, Tensor)]) -> Result<()> {
    Mismatch::find(expected, given).map_or(Ok(()), |m| Err(m.into_error(what, hint)))
}

/// The name (`<group>/<name>`) of the first floating-point tensor in `groups` that holds a NaN
/// or an infinity, checked with one read from the device.
///
/// # Errors
/// [`Error::Torch`] when a tensor cannot be read.
pub fn first_non_finite(groups: &[(&str, &[(String, Tensor)])]) -> Result<Option<String>> {
    let mut names = vec![];
    let mut flags = vec![];
    for (group, tensors) in groups {
        for (name, t) in tensors.iter() {
            if t.defined() && t.is_floating_point() && t.numel() > 0 {
                names.push(format!("{group}/{name}"));
                flags.push(tch::no_grad(|| t.detach().isfinite().all().to_device(Device::Cpu)));
            }
        }
    }
    if flags.is_empty() {
        return Ok(None);
    }
    let ok = Vec::<bool>::try_from(&Tensor::f_stack(&flags, 0)?)?;
    Ok(ok.iter().position(|f| !f).map(|i| names[i].clone()))
}

/// The history saved in the checkpoint of `dir` (consistent with its weights; the
/// `history.jsonl` beside it may hold a few more steps of an interrupted session).
///
/// # Errors
/// As [`Checkpoint::load`].
pub fn load_history(dir: impl AsRef<Path>) -> Result<History> {
    Ok(Checkpoint::load(dir)?.meta.history)
}

/// Loads the trained variables of the checkpoint in `dir` into `vs` (FAST mode of S0.5 for a
/// model built by hand; `train::pretrain` on a finished run does this by itself).
///
/// # Errors
/// As [`Checkpoint::load`] and [`load_vars`].
pub fn load_online(dir: impl AsRef<Path>, vs: &nn::VarStore) -> Result<CheckpointMeta> {
    let ck = Checkpoint::load(&dir)?;
    if let Some(name) = first_non_finite(&[("online", &ck.online)])? {
        return Err(Error::Data(format!(
            "{}: '{name}' holds NaN or infinite values; the checkpoint is damaged: train again",
            checkpoint_path(dir).display()
        )));
    }
    load_vars(vs, &ck.online)?;
    Ok(ck.meta)
}
