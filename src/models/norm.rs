//! BatchNorm as the networks call it: `nn::BatchNorm` as it is, or, inside
//! `with_sync_batch_norm` (feature `distributed`), synchronised over the ranks of a
//! data-parallel job — PyTorch's `SyncBatchNorm`.
//!
//! Why: in training mode BatchNorm normalises with the batch's statistics, and with `W` ranks of
//! `B` images each rank's batch is its own `B`, so `W` ranks are not one process with `W·B`
//! (SimCLR and BYOL train with BN statistics over the whole batch: the official code
//! synchronises them across TPU cores, and Barlow Twins converts its model with
//! `convert_sync_batchnorm`). Synchronised, each channel's mean and variance are those of every
//! rank's images: the per-channel sums (then the sums of squared deviations) are summed over the
//! ranks with an all-reduce whose backward is an all-reduce too (`Dist::sum_with_grad`), so
//! the gradients are the single process's as well.
//!
//! A scope rather than a setting of each layer: the engine turns it on around a training step
//! (`TrainConfig::sync_batch_norm`), so models and methods need no change, and evaluation
//! (`train = false`: running statistics) never synchronises.
use crate::error::Result;
use tch::{nn, Tensor};

#[cfg(feature = "distributed")]
use crate::distributed::Dist;
#[cfg(feature = "distributed")]
use std::cell::RefCell;
#[cfg(feature = "distributed")]
use std::sync::Arc;

/// `nn::BatchNormConfig::default()`'s ε and momentum, which every BatchNorm of the kit uses
/// (tch keeps a layer's config private).
#[cfg(feature = "distributed")]
const EPS: f64 = 1e-5;
#[cfg(feature = "distributed")]
const MOMENTUM: f64 = 0.1;

#[cfg(feature = "distributed")]
thread_local! {
    /// The job whose ranks this thread's BatchNorm layers synchronise over, if any.
    static SYNC: RefCell<Option<Arc<Dist>>> = const { RefCell::new(None) };
}

/// Runs `f` with every BatchNorm layer in training mode synchronised over `dist`'s ranks
/// (`None`: each rank its own batch, as outside any scope). The previous scope comes back
/// afterwards, also when `f` panics. Every rank must run the same layers inside it.
#[cfg(feature = "distributed")]
pub fn with_sync_batch_norm<R>(dist: Option<Arc<Dist>>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<Dist>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SYNC.with(|s| *s.borrow_mut() = previous);
        }
    }
    let _restore = Restore(SYNC.with(|s| s.replace(dist)));
    f()
}

/// `bn` applied to `x` (`[N, C]` or `[N, C, H, W]`); synchronised over the ranks inside
/// `with_sync_batch_norm` (feature `distributed`) in training mode.
///
/// # Errors
/// [`crate::Error::Distributed`] when a synchronising all-reduce fails.
pub(crate) fn batch_norm(bn: &nn::BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    #[cfg(feature = "distributed")]
    if train {
        if let Some(dist) = SYNC.with(|s| s.borrow().clone()).filter(|d| d.world_size() > 1) {
            return sync_batch_norm(bn, x, &dist);
        }
    }
    Ok(x.apply_t(bn, train))
}

/// BatchNorm in training mode with the statistics of every rank's `x` (PyTorch's
/// `SyncBatchNorm`): biased variance for normalising, unbiased for the running variance, both
/// over the `W·N·H·W'` values of each channel. Computed in f32 (as autocast runs BatchNorm).
#[cfg(feature = "distributed")]
fn sync_batch_norm(bn: &nn::BatchNorm, x: &Tensor, dist: &Dist) -> Result<Tensor> {
    use tch::Kind;
    let size = x.size();
    if size.len() < 2 || size[1] < 1 {
        return Err(crate::Error::shape("SyncBatchNorm input", "[N, C] or [N, C, H, W]", &size));
    }
    let c = size[1];
    let dims: Vec<i64> = (0..size.len() as i64).filter(|&d| d != 1).collect();
    let shape: Vec<i64> = (0..size.len()).map(|d| if d == 1 { c } else { 1 }).collect(); // [1, C(, 1, 1)]
    let total = (x.numel() as i64 / c * dist.world_size() as i64) as f64;
    let x32 = x.to_kind(Kind::Float);
    let mean = dist.sum_with_grad(&x32.sum_dim_intlist(dims.as_slice(), false, Kind::Float))? / total; // [C]
    let centred = &x32 - mean.view(shape.as_slice());
    let var = dist.sum_with_grad(&centred.square().sum_dim_intlist(dims.as_slice(), false, Kind::Float))? / total; // [C]
    let mut y = centred / (&var + EPS).sqrt().view(shape.as_slice());
    if let Some(w) = &bn.ws {
        y = y * w.view(shape.as_slice());
    }
    if let Some(b) = &bn.bs {
        y = y + b.view(shape.as_slice());
    }
    tch::no_grad(|| {
        let unbiased = var.detach() * (total / (total - 1.0).max(1.0));
        let (mut rm, mut rv) = (bn.running_mean.shallow_clone(), bn.running_var.shallow_clone());
        let new_mean = &rm * (1.0 - MOMENTUM) + mean.detach() * MOMENTUM;
        let new_var = &rv * (1.0 - MOMENTUM) + unbiased * MOMENTUM;
        rm.f_copy_(&new_mean)?;
        rv.f_copy_(&new_var)
    })?;
    Ok(y.to_kind(x.kind()))
}
