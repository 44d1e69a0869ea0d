//! The engine's data-parallel side: what changes when several processes (ranks) train one model
//! through `distributed::Dist` (feature `distributed`; docs/distributed.md).
//!
//! PyTorch's `DistributedDataParallel` in the engine's own terms:
//!
//! - **One batch, split.** [`super::TrainConfig::batch_size`] stays the *global* batch: each of
//!   the `W` ranks reads `batch_size / W` images of the single process's batch (its stride of the
//!   epoch's order, [`crate::data::Loader::shard`]), so the optimizer, the schedule, the learning
//!   rate and the checkpoint mean what they mean in one process, and a run can resume with
//!   another number of ranks.
//! - **Same start.** After resume, rank 0's variables (parameters and buffers) and the method's
//!   state are broadcast to every rank, and the ranks check that they start at the same step.
//! - **Averaged gradients.** After every backward pass the gradients are averaged over the ranks
//!   in flat buckets of about 25 MiB (DDP's `bucket_cap_mb` default): one all-reduce per bucket
//!   instead of one per parameter. c10d's `Reducer`, which overlaps these all-reduces with the
//!   backward pass through autograd hooks, is not used: tch exposes no hook on a gradient's
//!   arrival, so the kit reduces after backward, as DDP does with `no_sync` accumulation or
//!   Horovod without overlap. Correct, slower on large models.
//! - **One writer.** Rank 0 alone takes the run folder's lock and writes the checkpoint, the
//!   history and the progress; the logged loss and metrics are the ranks' means (one all-reduce
//!   per log window). Every rank reads the checkpoint when resuming, so the run folder must be on
//!   a file system the ranks share.
//! - **One decision.** Whether to stop (time budget, stop request) or to checkpoint by time is
//!   decided by clocks and signals that differ between ranks, so the ranks agree on it every
//!   step (a tiny all-reduce over Gloo, on the CPU: it does not wait for the GPU).
//!
//! Without the feature, or without a `Dist` in the config, every
//! function here is the single-process identity.
use std::fmt;

use tch::Tensor;

use super::optim::Optimizer;
use crate::error::Result;

#[cfg(feature = "distributed")]
use crate::distributed::{Dist, ReduceOp};
#[cfg(feature = "distributed")]
use std::sync::Arc;

/// DDP's default bucket size (`bucket_cap_mb=25`).
#[cfg(feature = "distributed")]
const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// The job a run belongs to: one process (the default), or rank `r` of `W` (feature
/// `distributed`, `TrainConfig::distributed`).
///
/// Not part of the run's trajectory: it is not saved with the config, compares equal to any
/// other, and a run may resume with another world size.
#[derive(Clone, Default)]
pub struct DataParallel {
    #[cfg(feature = "distributed")]
    dist: Option<Arc<Dist>>,
    /// BatchNorm synchronised over the ranks during training steps ([`crate::models::norm`]).
    #[cfg(feature = "distributed")]
    sync_batch_norm: bool,
}

impl PartialEq for DataParallel {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataParallel {{ rank: {}, world_size: {} }}", self.rank(), self.world_size())
    }
}

impl DataParallel {
    /// Rank `dist.rank()` of `dist.world_size()` processes.
    #[cfg(feature = "distributed")]
    pub fn new(dist: Arc<Dist>) -> DataParallel {
        DataParallel { dist: Some(dist), sync_batch_norm: false }
    }

    /// The same job with BatchNorm synchronised over the ranks in training steps (PyTorch's
    /// `SyncBatchNorm`, [`crate::models::norm`]), or not (the default, as DDP).
    #[cfg(feature = "distributed")]
    pub fn sync_batch_norm(mut self, sync: bool) -> DataParallel {
        self.sync_batch_norm = sync;
        self
    }

    /// Runs a training step's forward pass `f`, with BatchNorm synchronised over the ranks when
    /// asked. One process: `f()`.
    pub(crate) fn forward<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "distributed")]
        if let Some(d) = self.dist().filter(|_| self.sync_batch_norm) {
            return crate::models::norm::with_sync_batch_norm(Some(d.clone()), f);
        }
        f()
    }

    /// The job, when there is one of more than one process.
    #[cfg(feature = "distributed")]
    pub fn dist(&self) -> Option<&Arc<Dist>> {
        self.dist.as_ref().filter(|d| d.world_size() > 1)
    }

    /// This process's rank (0 in one process).
    pub fn rank(&self) -> usize {
        #[cfg(feature = "distributed")]
        if let Some(d) = &self.dist {
            return d.rank();
        }
        0
    }

    /// Number of processes (1 in one process).
    pub fn world_size(&self) -> usize {
        #[cfg(feature = "distributed")]
        if let Some(d) = &self.dist {
            return d.world_size();
        }
        1
    }

    /// Whether this rank writes the run folder (rank 0).
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// Whether more than one process trains.
    pub fn is_parallel(&self) -> bool {
        self.world_size() > 1
    }

    /// Checks that every rank starts at `step`, then gives every rank rank 0's `vars` (in place)
    /// and returns rank 0's `state` (for the trainee's `load_state`). One process: `state` as is.
    ///
    /// # Errors
    /// [`crate::Error::Distributed`] when the ranks resumed from different steps (a run folder
    /// that is not shared), or a collective fails.
    pub(crate) fn sync_start(
        &self,
        step: usize,
        vars: &[(String, Tensor)],
        state: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>> {
        #[cfg(feature = "distributed")]
        if let Some(d) = self.dist() {
            let steps = d.all_gather(&Tensor::from_slice(&[step as i64]))?;
            let steps = Vec::<i64>::try_from(&steps)?;
            if steps.iter().any(|s| *s != steps[0]) {
                return Err(crate::Error::Distributed(format!(
                    "the ranks would start at different steps ({steps:?} for ranks 0..{}): each rank resumes from \
                     the checkpoint in the run folder, so that folder must be the same (a shared file system) for \
                     every rank",
                    steps.len()
                )));
            }
            tch::no_grad(|| -> Result<()> {
                for (_, v) in vars {
                    let mut buf = v.detach().copy();
                    d.broadcast_(&mut buf, 0)?;
                    v.detach().copy_(&buf);
                }
                Ok(())
            })?;
            return state
                .into_iter()
                .map(|(name, t)| {
                    let mut buf = t.detach().copy();
                    d.broadcast_(&mut buf, 0)?;
                    Ok((name, buf))
                })
                .collect();
        }
        let _ = (step, vars);
        Ok(state)
    }

    /// Averages `opt`'s gradients over the ranks, in flat buckets of about 25 MiB of one kind and
    /// device each (DDP's bucketing). One process: nothing. The engine calls it after every
    /// backward pass; a loop of your own calls it between `backward` and [`Optimizer::step`].
    ///
    /// # Errors
    /// [`crate::Error::Distributed`] when an all-reduce fails (a rank died or stalled).
    pub fn average_gradients(&self, opt: &Optimizer) -> Result<()> {
        #[cfg(feature = "distributed")]
        if let Some(d) = self.dist() {
            let grads = opt.gradients();
            tch::no_grad(|| -> Result<()> {
                for bucket in buckets(&grads, BUCKET_BYTES) {
                    let parts: Vec<Tensor> = bucket.iter().map(|g| g.reshape([-1])).collect();
                    let mut flat = Tensor::f_cat(&parts, 0)?;
                    d.all_reduce_(&mut flat, ReduceOp::Avg)?;
                    let mut offset = 0;
                    for g in bucket {
                        let n = g.numel() as i64;
                        g.shallow_clone().f_copy_(&flat.narrow(0, offset, n).view_as(g))?;
                        offset += n;
                    }
                }
                Ok(())
            })?;
        }
        let _ = opt;
        Ok(())
    }

    /// Whether any rank says yes, for each flag (every rank must call it at the same step).
    /// One process: `flags` as they are.
    ///
    /// # Errors
    /// [`crate::Error::Distributed`] when the all-reduce fails.
    pub(crate) fn any(&self, flags: [bool; 3]) -> Result<[bool; 3]> {
        #[cfg(feature = "distributed")]
        if let Some(d) = self.dist() {
            let mut t = Tensor::from_slice(&flags.map(i64::from));
            d.all_reduce_(&mut t, ReduceOp::Sum)?;
            let v = Vec::<i64>::try_from(&t)?;
            return Ok([v[0] > 0, v[1] > 0, v[2] > 0]);
        }
        Ok(flags)
    }

    /// The ranks' mean of `values` (a log window's losses and metrics, every rank's laid out
    /// alike). One process: `values`.
    ///
    /// # Errors
    /// [`crate::Error::Distributed`] when the all-reduce fails.
    pub(crate) fn mean(&self, values: Tensor) -> Result<Tensor> {
        #[cfg(feature = "distributed")]
        if let Some(d) = self.dist() {
            let mut values = values;
            d.all_reduce_(&mut values, ReduceOp::Avg)?;
            return Ok(values);
        }
        Ok(values)
    }
}

/// Consecutive gradients of one kind and device, at most `cap` bytes each unless a single
/// gradient is larger.
#[cfg(feature = "distributed")]
fn buckets(grads: &[Tensor], cap: usize) -> Vec<Vec<&Tensor>> {
    let mut out: Vec<Vec<&Tensor>> = Vec::new();
    let mut bytes = 0;
    for g in grads {
        let size = g.numel() * g.kind().elt_size_in_bytes();
        let fits = out.last().is_some_and(|b: &Vec<&Tensor>| {
            let first = b[0];
            first.kind() == g.kind() && first.device() == g.device() && bytes + size <= cap
        });
        if fits {
            out.last_mut().expect("a bucket").push(g);
            bytes += size;
        } else {
            out.push(vec![g]);
            bytes = size;
        }
    }
    out
}
