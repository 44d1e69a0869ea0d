//! The self-supervised losses, as pure functions of projections: `(z1, z2, &cfg) -> Result<Tensor>`.
//!
//! - [`info_nce`] — MoCo (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation
//!   Learning", <https://arxiv.org/abs/1911.05722>): one positive key and K negative keys from a
//!   queue, logits `[N, 1+K]` with the positive at index 0 and all-zero labels.
//! - [`nt_xent`] — SimCLR (Chen et al. 2020, <https://arxiv.org/abs/2002.05709>): the other
//!   2N−2 views of the batch are the negatives.
//! - [`normalized_mse`], [`byol_loss`] — BYOL (Grill et al. 2020, "Bootstrap Your Own Latent",
//!   <https://arxiv.org/abs/2006.07733>): 2 − 2·cos between prediction and target projection.
//! - [`negative_cosine`] — SimSiam's D(p, z) = −cos (Chen & He 2021, <https://arxiv.org/abs/2011.10566>).
//! - [`barlow_twins`] — Barlow Twins (Zbontar et al. 2021, <https://arxiv.org/abs/2103.03230>):
//!   the cross-correlation of the batch-normalised projections pushed towards the identity.
//!
//! Queues and memory banks live in the methods ([`crate::methods`]); these functions only check
//! their inputs and compute. Notebooks write each loss once by hand and compare it with these
//! (`check::assert_close`). Used by `notebooks/*moco*`, `*simclr*`, `*byol*`, `*barlow_twins*`.
use crate::error::{config_err, Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Settings of [`info_nce`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoNceConfig {
    /// Softmax temperature τ (`T` in MoCo's code).
    pub temperature: f64,
}

impl Default for InfoNceConfig {
    /// τ = 0.2: MoCo v2 (Chen et al. 2020, "we use τ = 0.2"; main_moco.py `--moco-t 0.2` in the
    /// v2 recipe). MoCo v1 and the seminar use 0.07 ([`InfoNceConfig::moco_v1`]).
    fn default() -> Self {
        InfoNceConfig { temperature: 0.2 }
    }
}

impl InfoNceConfig {
    /// τ = 0.07: MoCo v1 ("We set τ = 0.07", He et al. 2020, §3.3 / builder.py `T=0.07`).
    pub fn moco_v1() -> Self {
        InfoNceConfig { temperature: 0.07 }
    }
}

/// Settings of [`nt_xent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NtXentConfig {
    /// Softmax temperature τ.
    pub temperature: f64,
}

impl Default for NtXentConfig {
    /// τ = 0.1: SimCLR's ImageNet setting (official run.py `--temperature 0.1`; Table 5 of the paper).
    /// CIFAR-10 uses 0.5 (SimCLR Appendix B.9).
    fn default() -> Self {
        NtXentConfig { temperature: 0.1 }
    }
}

/// Settings of [`barlow_twins`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarlowTwinsLossConfig {
    /// λ, the weight of the redundancy-reduction (off-diagonal) term.
    pub off_diagonal_weight: f64,
    /// ε added to the per-dimension batch variance (BatchNorm1d's default).
    pub eps: f64,
}

impl Default for BarlowTwinsLossConfig {
    /// λ = 5·10⁻³ ("we find λ = 5·10⁻³ to work best", Barlow Twins, Zbontar et al. 2021, §4;
    /// the official main.py uses `--lambd 0.0051`); ε = 1e-5 (PyTorch BatchNorm1d default, which
    /// the official code uses to normalise `z`).
    fn default() -> Self {
        BarlowTwinsLossConfig { off_diagonal_weight: 5e-3, eps: 1e-5 }
    }
}

fn check_temperature(t: f64, who: &str) -> Result<()> {
    if !(t.is_finite() && t > 0.0) {
        return Err(config_err!("{who}: temperature must be a positive number, got {t}"));
    }
    Ok(())
}

fn check_pair(what: &str, a: &Tensor, b: &Tensor) -> Result<(i64, i64)> {
    let sa = a.size();
    if sa.len() != 2 || sa[0] < 1 || sa[1] < 1 {
        return Err(Error::shape(format!("{what}: first input"), "[N, D] with N, D >= 1", &sa));
    }
    let sb = b.size();
    if sb != sa {
        return Err(Error::shape(format!("{what}: second input (must match the first)"), format!("{sa:?}"), &sb));
    }
    Ok((sa[0], sa[1]))
}

/// Each row divided by its ℓ2 norm (PyTorch's `F.normalize(x, dim=1)`, ε = 1e-12).
///
/// # Shapes
/// `x`: `[N, D]` → `[N, D]`.
///
/// # Errors
/// [`Error::Shape`] when `x` is not 2-D.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let s = x.size();
    if s.len() != 2 {
        return Err(Error::shape("l2_normalize input", "[N, D]", &s));
    }
    let norm = x.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12); // [N, 1]
    Ok(x / norm) // [N, D]
}

/// MoCo's logits: `[q·k⁺, q·queue] / τ` with the positive key in column 0.
///
/// `q` and `k` should already be ℓ2-normalised (MoCo normalises them before this step); the queue
/// holds normalised keys as columns, as builder.py's `queue` buffer `[C, K]` does. Autograd keeps
/// the queue for the backward pass, so pass a copy if it is overwritten in place before backward
/// (builder.py's `self.queue.clone().detach()`; [`crate::methods::Moco::logits`] does this).
///
/// ```text
/// l_pos  = einsum('nc,nc->n', q, k).unsqueeze(-1)   # [N, 1]
/// l_neg  = einsum('nc,ck->nk', q, queue)            # [N, K]
/// logits = cat([l_pos, l_neg], dim=1) / T           # [N, 1+K]
/// ```
///
/// # Shapes
/// `q`, `k`: `[N, C]`; `queue`: `[C, K]` → `[N, 1+K]`.
///
/// # Errors
/// [`Error::Shape`] on mismatched shapes, [`Error::Config`] on a non-positive temperature.
pub fn info_nce_logits(q: &Tensor, k: &Tensor, queue: &Tensor, temperature: f64) -> Result<Tensor> {
    let (_, c) = check_pair("info_nce (q, k)", q, k)?;
    let sq = queue.size();
    if sq.len() != 2 || sq[0] != c || sq[1] < 1 {
        return Err(Error::shape("info_nce queue (keys as columns)", format!("[{c}, K] with K >= 1"), &sq));
    }
    check_temperature(temperature, "info_nce")?;
    let l_pos = (q * k).sum_dim_intlist([1i64].as_slice(), true, q.kind()); // [N, 1]
    let l_neg = q.mm(&queue.to_kind(q.kind()).detach()); // [N, K]
    Ok(Tensor::cat(&[l_pos, l_neg], 1) / temperature) // [N, 1+K]
}

/// InfoNCE with a queue of negatives (MoCo): cross-entropy of [`info_nce_logits`] against the
/// label 0 (the positive's column) for every row.
///
/// "L_q = −log exp(q·k₊/τ) / Σ_{i=0}^{K} exp(q·k_i/τ)" (MoCo, He et al. 2020, Eq. 1).
/// `q` and `k` are ℓ2-normalised here (a no-op when they already are); the queue is used as given.
/// When every logit is equal the loss is ln(K+1).
///
/// # Shapes
/// `q`, `k`: `[N, C]`; `queue`: `[C, K]` → scalar.
///
/// # Errors
/// As [`info_nce_logits`].
pub fn info_nce(q: &Tensor, k: &Tensor, queue: &Tensor, cfg: &InfoNceConfig) -> Result<Tensor> {
    check_pair("info_nce (q, k)", q, k)?;
    let q = l2_normalize(q)?; // [N, C]
    let k = l2_normalize(k)?; // [N, C]
    let logits = info_nce_logits(&q, &k, queue, cfg.temperature)?; // [N, 1+K]
    let labels = Tensor::zeros([logits.size()[0]], (Kind::Int64, logits.device())); // [N], all 0
    Ok(logits.cross_entropy_for_logits(&labels)) // []
}

/// NT-Xent, SimCLR's normalised-temperature cross-entropy over the 2N views of a batch.
///
/// "We randomly sample a minibatch of N examples and define the contrastive prediction task on
/// pairs of augmented examples derived from the minibatch, resulting in 2N data points. […] we
/// treat the other 2(N − 1) augmented examples within a minibatch as negative examples."
/// (SimCLR, Chen et al. 2020, §2.1). The loss is averaged over all 2N anchors. When all cosine
/// similarities are equal it is ln(2N−1).
///
/// # Shapes
/// `z1`, `z2`: `[N, D]` (un-normalised projections of the two views) → scalar.
///
/// # Errors
/// [`Error::Shape`] when the inputs are not the same `[N, D]`; [`Error::Config`] on a
/// non-positive temperature.
pub fn nt_xent(z1: &Tensor, z2: &Tensor, cfg: &NtXentConfig) -> Result<Tensor> {
    let (n, _) = check_pair("nt_xent (z1, z2)", z1, z2)?;
    check_temperature(cfg.temperature, "nt_xent")?;
    let z = l2_normalize(&Tensor::cat(&[z1, z2], 0))?; // [2N, D]
    let sim = z.mm(&z.tr()) / cfg.temperature; // [2N, 2N]
    let self_mask = Tensor::eye(2 * n, (Kind::Bool, z.device())); // [2N, 2N]
    let logits = sim.masked_fill(&self_mask, f64::NEG_INFINITY); // [2N, 2N], an anchor is not its own negative
    let targets = (Tensor::arange(2 * n, (Kind::Int64, z.device())) + n).remainder(2 * n); // [2N]: i <-> i±N
    Ok(logits.cross_entropy_for_logits(&targets)) // []
}

/// BYOL's regression loss for one direction: `mean_i (2 − 2·⟨p_i/‖p_i‖, z_i/‖z_i‖⟩)`.
///
/// "we finally define the following mean squared error between the normalized predictions and
/// target projections, L_θ,ξ ≜ ‖q̄_θ(z_θ) − z̄′_ξ‖²₂ = 2 − 2·⟨q_θ(z_θ), z′_ξ⟩ / (‖q_θ(z_θ)‖₂·‖z′_ξ‖₂)"
/// (BYOL, Grill et al. 2020, Eq. 2). 0 for identical directions, 4 for opposite ones.
/// No stop-gradient here; [`byol_loss`] adds it.
///
/// # Shapes
/// `p`, `z`: `[N, D]` → scalar.
///
/// # Errors
/// [`Error::Shape`] when the inputs are not the same `[N, D]`.
pub fn normalized_mse(p: &Tensor, z: &Tensor) -> Result<Tensor> {
    check_pair("normalized_mse (p, z)", p, z)?;
    let cos = (l2_normalize(p)? * l2_normalize(z)?).sum_dim_intlist([1i64].as_slice(), false, p.kind()); // [N]
    Ok((cos * -2.0 + 2.0).mean(p.kind())) // []
}

/// BYOL's symmetric loss: `normalized_mse(p1, sg(z2)) + normalized_mse(p2, sg(z1))`.
///
/// "We symmetrize the loss L_θ,ξ by separately feeding v′ to the online network and v to the
/// target network to compute L̃_θ,ξ. At each training step, we perform a stochastic optimization
/// step to minimize L^BYOL_θ,ξ = L_θ,ξ + L̃_θ,ξ with respect to θ only" (BYOL, §3.1). The targets
/// are detached (stop-gradient), which also makes this the SimSiam loss when `z` comes from the
/// online network.
///
/// # Shapes
/// `p1`, `p2`: predictions `[N, D]`; `z1`, `z2`: target projections `[N, D]` → scalar.
///
/// # Errors
/// [`Error::Shape`] when the four inputs are not the same `[N, D]`.
pub fn byol_loss(p1: &Tensor, p2: &Tensor, z1: &Tensor, z2: &Tensor) -> Result<Tensor> {
    check_pair("byol_loss (p1, p2)", p1, p2)?;
    check_pair("byol_loss (z1, z2)", z1, z2)?;
    Ok(normalized_mse(p1, &z2.detach())? + normalized_mse(p2, &z1.detach())?) // []
}

/// SimSiam's D(p, z) = −mean_i cos(p_i, z_i) (no stop-gradient; between −1 and 1).
///
/// "D(p₁, z₂) = − p₁/‖p₁‖₂ · z₂/‖z₂‖₂" (SimSiam, Chen & He 2021, Eq. 1). Equals
/// `(normalized_mse(p, z) − 2) / 2`.
///
/// # Shapes
/// `p`, `z`: `[N, D]` → scalar.
///
/// # Errors
/// [`Error::Shape`] when the inputs are not the same `[N, D]`.
pub fn negative_cosine(p: &Tensor, z: &Tensor) -> Result<Tensor> {
    check_pair("negative_cosine (p, z)", p, z)?;
    let cos = (l2_normalize(p)? * l2_normalize(z)?).sum_dim_intlist([1i64].as_slice(), false, p.kind()); // [N]
    Ok(-cos.mean(p.kind())) // []
}

/// Barlow Twins' cross-correlation matrix of two batches, each normalised per dimension along the
/// batch: `C_ij = Σ_b ẑ1_bi ẑ2_bj / N` with `ẑ = (z − mean_b z) / sqrt(var_b z + ε)`.
///
/// "C_ij ≜ Σ_b z^A_b,i z^B_b,j / (√Σ_b (z^A_b,i)² · √Σ_b (z^B_b,j)²)" with z "mean-centered along
/// the batch dimension" (Barlow Twins, Zbontar et al. 2021, Eq. 2). As the official code,
/// normalisation is `BatchNorm1d(affine=False)` in training mode (biased variance + ε).
/// The seed notebook divides by the unbiased `std(0)` without ε instead, which scales C by (N−1)/N.
///
/// # Shapes
/// `z1`, `z2`: `[N, D]` → `[D, D]`.
///
/// # Errors
/// [`Error::Shape`] unless both are the same `[N, D]` with N ≥ 2 (batch statistics need two samples).
pub fn cross_correlation(z1: &Tensor, z2: &Tensor, eps: f64) -> Result<Tensor> {
    let (n, _) = check_pair("cross_correlation (z1, z2)", z1, z2)?;
    if n < 2 {
        return Err(Error::shape("cross_correlation: batch statistics need two samples", "[N >= 2, D]", &z1.size()));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(config_err!("cross_correlation: eps must be a non-negative number, got {eps}"));
    }
    let standardize = |z: &Tensor| {
        let mean = z.mean_dim([0i64].as_slice(), true, z.kind()); // [1, D]
        let var = z.var_correction([0i64].as_slice(), 0, true); // [1, D], biased (BatchNorm in training mode)
        (z - mean) / (var + eps).sqrt() // [N, D]
    };
    let z1n = standardize(z1); // [N, D]
    let z2n = standardize(z2); // [N, D]
    Ok(z1n.tr().mm(&z2n) / n as f64) // [D, D]
}

/// The off-diagonal entries of a square matrix, flattened (the official Barlow Twins helper:
/// `x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()`).
///
/// # Shapes
/// `c`: `[D, D]` → `[D·(D−1)]`.
///
/// # Errors
/// [`Error::Shape`] when `c` is not square.
pub fn off_diagonal(c: &Tensor) -> Result<Tensor> {
    let s = c.size();
    if s.len() != 2 || s[0] != s[1] || s[0] < 1 {
        return Err(Error::shape("off_diagonal input", "a square [D, D] matrix", &s));
    }
    let d = s[0];
    let flat = c.flatten(0, -1); // [D·D]
    Ok(flat.narrow(0, 0, d * d - 1).view([d - 1, d + 1]).narrow(1, 1, d).flatten(0, -1))
    // [D·(D−1)]
}

/// The two terms of the Barlow Twins loss, unweighted: `(Σ_i (1 − C_ii)², Σ_{i≠j} C_ij²)`, from
/// the cross-correlation matrix `c` of [`cross_correlation`].
///
/// # Shapes
/// `c`: `[D, D]` → two scalars.
///
/// # Errors
/// [`Error::Shape`] when `c` is not square.
pub fn barlow_twins_terms(c: &Tensor) -> Result<(Tensor, Tensor)> {
    let off = off_diagonal(c)?; // [D·(D−1)]
    let on_diag = (c.diagonal(0, 0, 1) - 1.0).square().sum(c.kind()); // []
    let off_diag = off.square().sum(c.kind()); // []
    Ok((on_diag, off_diag))
}

/// Barlow Twins: `Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²` on the batch cross-correlation C.
///
/// "L_BT ≜ Σ_i (1 − C_ii)² + λ Σ_i Σ_{j≠i} C_ij², where λ is a positive constant trading off
/// the importance of the first and second terms of the loss" (Barlow Twins, Eq. 1).
/// Perfectly decorrelated identical views give ≈ 0; a collapsed representation (every sample
/// the same) gives C = 0, so the loss is D.
///
/// # Shapes
/// `z1`, `z2`: `[N, D]`, N ≥ 2 → scalar.
///
/// # Errors
/// As [`cross_correlation`]; [`Error::Config`] on a negative λ.
pub fn barlow_twins(z1: &Tensor, z2: &Tensor, cfg: &BarlowTwinsLossConfig) -> Result<Tensor> {
    let lambda = cfg.off_diagonal_weight;
    if !(lambda.is_finite() && lambda >= 0.0) {
        return Err(config_err!("barlow_twins: off_diagonal_weight (λ) must be a non-negative number, got {lambda}"));
    }
    let c = cross_correlation(z1, z2, cfg.eps)?; // [D, D]
    let (on_diag, off_diag) = barlow_twins_terms(&c)?; // [], []
    Ok(on_diag + lambda * off_diag) // []
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_diagonal_drops_the_diagonal_in_row_major_order() {
        let c = Tensor::arange(9, (Kind::Float, tch::Device::Cpu)).view([3, 3]);
        let off = Vec::<f32>::try_from(off_diagonal(&c).unwrap()).unwrap();
        assert_eq!(off, vec![1.0, 2.0, 3.0, 5.0, 6.0, 7.0]);
        assert!(off_diagonal(&Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu))).is_err());
    }
}
