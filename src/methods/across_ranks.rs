//! The methods' batch-wide terms across data-parallel ranks (feature `distributed`), as the
//! reference implementations compute them on several GPUs.
//!
//! With `W` ranks of `N` images each, a loss that only averages per-image terms needs nothing
//! here: averaging the gradients over ranks (the engine does) already gives the gradient of the
//! `W·N` batch. The terms below couple images of the batch, so each rank needs the others':
//!
//! | method | term | across ranks |
//! |---|---|---|
//! | SimCLR | negatives | every rank's projections, [`Dist::gather_with_grad`] ([`nt_xent_across_ranks`]) |
//! | Barlow Twins | batch statistics, cross-correlation C | sums over ranks ([`cross_correlation_across_ranks`]) |
//! | MoCo | shuffled BN; keys into the queue | [`shuffle_across_ranks`] / [`unshuffle_across_ranks`]; [`Dist::concat_all_gather`] |
//! | BYOL | — | per-image loss: unchanged |
//!
//! Each function gives the ranks, once the engine averages their gradients, the gradient of the
//! single-process loss over the `W·N` batch (up to float round-off); tests/distributed.rs checks
//! it against one process. BatchNorm layers inside the networks normalise over each rank's own
//! `N` images unless the run synchronises them (`TrainConfig::sync_batch_norm`,
//! [`crate::models::norm`]).
use crate::distributed::{Dist, ReduceOp};
use crate::error::{Error, Result};
use crate::losses::l2_normalize;
use tch::{Kind, Tensor};

fn check_pair(what: &str, a: &Tensor, b: &Tensor) -> Result<(i64, i64)> {
    let s = a.size();
    if s.len() != 2 || b.size() != s || s[0] < 1 {
        return Err(Error::shape(format!("{what}: two equal [N, D]"), format!("{s:?} twice"), &b.size()));
    }
    Ok((s[0], s[1]))
}

/// NT-Xent with the negatives of every rank: SimCLR's loss of the whole `W·N` batch, each rank
/// computing it for its own `2N` anchors against all `2·W·N` projections (the official
/// implementation's `add_contrastive_loss` over `tpu_cross_replica_concat`, with the labels
/// offset by the rank).
///
/// The gathered projections keep their gradient ([`Dist::gather_with_grad`]): with each rank's
/// loss the mean over its anchors, the ranks' mean of the gradients is the single-process
/// gradient of `nt_xent` over the `W·N` images. With one rank it is `nt_xent`.
///
/// # Shapes
/// `z1`, `z2`: `[N, D]` (un-normalised projections of the two views) → scalar.
///
/// # Errors
/// [`Error::Shape`] for inputs that are not the same `[N, D]`; [`Error::Distributed`] when a
/// gather fails.
pub fn nt_xent_across_ranks(z1: &Tensor, z2: &Tensor, temperature: f64, dist: &Dist) -> Result<Tensor> {
    let (n, _) = check_pair("nt_xent_across_ranks", z1, z2)?;
    let (r, w) = (dist.rank() as i64, dist.world_size() as i64);
    let device = z1.device();
    let z1 = l2_normalize(z1)?; // [N, D]
    let z2 = l2_normalize(z2)?; // [N, D]
    let all = Tensor::cat(&[dist.gather_with_grad(&z1)?, dist.gather_with_grad(&z2)?], 0); // [2WN, D]: views 1, then views 2
    let anchors = Tensor::cat(&[&z1, &z2], 0); // [2N, D]
    let logits = anchors.mm(&all.tr()) / temperature; // [2N, 2WN]
    let i = Tensor::arange(n, (Kind::Int64, device)); // [N]
    let first = &i + r * n; // [N]: this rank's first views among all
    let second = &i + (w * n + r * n); // [N]: its second views
    let own = Tensor::cat(&[&first, &second], 0); // [2N]: each anchor's own column
    let positive = Tensor::cat(&[&second, &first], 0); // [2N]: the other view of its image
    let columns = Tensor::arange(2 * w * n, (Kind::Int64, device)).unsqueeze(0); // [1, 2WN]
    let self_mask = columns.eq_tensor(&own.unsqueeze(1)); // [2N, 2WN]
    let logits = logits.masked_fill(&self_mask, f64::NEG_INFINITY); // an anchor is not its own negative
    Ok(logits.cross_entropy_for_logits(&positive)) // []
}

/// Barlow Twins' cross-correlation of the `W·N` batch: each projection standardised with the
/// batch's mean and (biased) variance over every rank (BatchNorm1d without affine, synchronised),
/// `C = Σ_ranks z1ᵀ z2 / (W·N)` (the official code's `c = bn(z1).T @ bn(z2)`, `c.div_(batch_size)`,
/// `all_reduce(c)` with `SyncBatchNorm`).
///
/// Gradients: the statistics are summed with a differentiable all-reduce; for C, whose `D × D`
/// would cost `W` copies through a gather, each rank's own share carries the gradient, scaled by
/// `W`, while the forward value is the exact all-reduced sum. Every rank computes the same loss
/// of C, so the scaled share is what the sum over ranks of their gradients would bring, and the
/// ranks' mean of the parameter gradients is the single-process gradient. (The official code's
/// in-place `all_reduce(c)` is not seen by autograd, which passes on the local share unscaled:
/// by our reading its gradients are those of one process divided by `W`.)
///
/// # Shapes
/// `z1`, `z2`: `[N, D]` → `[D, D]`.
///
/// # Errors
/// [`Error::Shape`] for inputs that are not the same `[N, D]`, or a global batch under 2;
/// [`Error::Distributed`] when a collective fails.
pub fn cross_correlation_across_ranks(z1: &Tensor, z2: &Tensor, eps: f64, dist: &Dist) -> Result<Tensor> {
    let (n, _) = check_pair("cross_correlation_across_ranks", z1, z2)?;
    let w = dist.world_size() as i64;
    let total = (n * w) as f64;
    if n * w < 2 {
        return Err(Error::shape("cross_correlation_across_ranks: batch statistics need two samples", "[N >= 2, D]", &z1.size()));
    }
    let standardize = |z: &Tensor| -> Result<Tensor> {
        let mean = dist.sum_with_grad(&z.sum_dim_intlist([0i64].as_slice(), false, z.kind()))? / total; // [D]
        let centred = z - mean.unsqueeze(0); // [N, D]
        let var = dist.sum_with_grad(&centred.square().sum_dim_intlist([0i64].as_slice(), false, z.kind()))? / total; // [D]
        Ok(centred / (var + eps).sqrt().unsqueeze(0)) // [N, D]
    };
    let z1n = standardize(z1)?; // [N, D]
    let z2n = standardize(z2)?; // [N, D]
    let mine = (z1n.tr().mm(&z2n) / total).to_kind(Kind::Float); // [D, D], this rank's share (f32 under autocast)
    let mut summed = mine.detach().copy();
    dist.all_reduce_(&mut summed, ReduceOp::Sum)?; // [D, D], the whole batch's C
    let scaled = &mine * w as f64;
    Ok(&scaled - scaled.detach() + summed) // value: the sum; gradient: W × this rank's share
}

/// MoCo's `_batch_shuffle_ddp`: gathers every rank's images, rank 0 draws a permutation of the
/// `W·N` and broadcasts it, and this rank keeps its `N` of the shuffled batch. Returns them and
/// the inverse permutation for [`unshuffle_across_ranks`]. So the key encoder's BatchNorm of a
/// rank sees images of all ranks, never its queries' own group (MoCo §3.3).
///
/// # Shapes
/// `x`: `[N, ...]` → (`[N, ...]`, `[W·N]` int64).
///
/// # Errors
/// [`Error::Distributed`] when a collective fails.
pub fn shuffle_across_ranks(x: &Tensor, dist: &Dist) -> Result<(Tensor, Tensor)> {
    let all = dist.concat_all_gather(x)?; // [WN, ...]
    let total = all.size()[0];
    let mut shuffle = if dist.is_main() {
        Tensor::randperm(total, (Kind::Int64, x.device()))
    } else {
        Tensor::zeros([total], (Kind::Int64, x.device()))
    }; // [WN]
    dist.broadcast_(&mut shuffle, 0)?;
    let unshuffle = shuffle.argsort(0, false); // [WN]
    let mine = shuffle.view([dist.world_size() as i64, -1]).get(dist.rank() as i64); // [N]
    Ok((all.index_select(0, &mine), unshuffle))
}

/// MoCo's `_batch_unshuffle_ddp`: gathers the encoded shuffled batch and gives this rank the
/// rows of its own images, in their original order.
///
/// # Shapes
/// `x`: `[N, C]`, `unshuffle`: `[W·N]` → `[N, C]`.
///
/// # Errors
/// [`Error::Distributed`] when a collective fails.
pub fn unshuffle_across_ranks(x: &Tensor, unshuffle: &Tensor, dist: &Dist) -> Result<Tensor> {
    let all = dist.concat_all_gather(x)?; // [WN, C]
    let mine = unshuffle.view([dist.world_size() as i64, -1]).get(dist.rank() as i64); // [N]
    Ok(all.index_select(0, &mine))
}
