//! Momentum (exponential moving average) target networks: [`ema_update`] and BYOL's [`cosine_tau`].
//!
//! MoCo (He et al. 2020, <https://arxiv.org/abs/1911.05722>): "θ_k ← m θ_k + (1 − m) θ_q. Here
//! m ∈ [0, 1) is a momentum coefficient. Only the parameters θ_q are updated by back-propagation."
//! (§3.2). BYOL (Grill et al. 2020, <https://arxiv.org/abs/2006.07733>) does the same with
//! ξ ← τ ξ + (1 − τ) θ and lets τ rise from τ_base to 1 on a cosine (§3.1, §3.3; see
//! [`cosine_tau`]).
//!
//! The target network lives in its own `VarStore`, built with the same paths as the online
//! network (so the names pair up), initialised with `VarStore::copy` and `freeze()`d; this module
//! is the only thing that changes its parameters. Used by [`crate::methods::moco`] and
//! [`crate::methods::byol`], and shown by hand in the MoCo notebooks.
use crate::error::{config_err, Error, Result};
use std::collections::HashSet;
use tch::nn::VarStore;

/// `target ← τ·target + (1 − τ)·online` for every parameter of `target`, paired with `online`'s
/// variable of the same name, without recording gradients.
///
/// Only *parameters* are averaged: a target variable whose online namesake is not trainable (a
/// BatchNorm `running_mean`/`running_var`) is left alone, as builder.py's
/// `zip(encoder_q.parameters(), encoder_k.parameters())` does; the target's own forward passes in
/// training mode keep those statistics. `online` may hold more variables than `target` (BYOL's
/// predictor). τ = 1 leaves the target unchanged, τ = 0 copies the online parameters.
///
/// # Errors
/// [`Error::Config`] when τ is not in [0, 1]; [`Error::Data`] naming the variables of `target`
/// that `online` lacks; [`Error::Shape`] when two namesakes differ in shape.
///
/// # Example
/// ```
/// use selfsup::{momentum::ema_update, tch::nn};
/// let online = nn::VarStore::new(selfsup::tch::Device::Cpu);
/// let _ = nn::linear(online.root() / "fc", 4, 2, Default::default());
/// let mut target = nn::VarStore::new(selfsup::tch::Device::Cpu);
/// let _ = nn::linear(target.root() / "fc", 4, 2, Default::default());
/// target.copy(&online)?;
/// target.freeze();
/// ema_update(&target, &online, 0.99)?;
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn ema_update(target: &VarStore, online: &VarStore, tau: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&tau) {
        return Err(config_err!("ema_update: tau (momentum) must be in [0, 1], got {tau}"));
    }
    let online_vars = online.variables();
    let target_vars = target.variables();
    let mut missing: Vec<&str> =
        target_vars.keys().filter(|name| !online_vars.contains_key(*name)).map(String::as_str).collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        let shown = missing.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        return Err(Error::Data(format!(
            "ema_update: {} target variable(s) have no online namesake ({shown}{}); build the target \
             network with the same paths as the online one",
            missing.len(),
            if missing.len() > 5 { ", …" } else { "" }
        )));
    }
    // Trainable variables of `online` are its parameters; the rest are buffers.
    let params: HashSet<usize> = online.trainable_variables().iter().map(|t| t.data_ptr() as usize).collect();
    let mut pairs = Vec::with_capacity(target_vars.len());
    for (name, t) in &target_vars {
        let o = &online_vars[name];
        if t.size() != o.size() {
            return Err(Error::shape(
                format!("ema_update: target variable '{name}'"),
                format!("{:?} (online)", o.size()),
                &t.size(),
            ));
        }
        if params.contains(&(o.data_ptr() as usize)) {
            pairs.push((t.shallow_clone(), o.shallow_clone()));
        }
    }
    tch::no_grad(|| {
        for (mut t, o) in pairs {
            // lerp: t + (1 − τ)(o − t) = τ·t + (1 − τ)·o, exact at τ = 0 and τ = 1.
            let _ = t.lerp_(&o.to_kind(t.kind()), 1.0 - tau);
        }
    });
    Ok(())
}

/// BYOL's target decay at step k of K: `τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2`.
///
/// "the exponential moving average parameter τ starts from τ_base = 0.996 and is increased to one
/// during training. Specifically, we set τ ≜ 1 − (1 − τ_base)·(cos(πk/K) + 1)/2 with k the current
/// training step and K the maximum number of training steps." (BYOL, Grill et al. 2020, §3.3).
/// τ(0) = τ_base, τ(K) = 1.
///
/// # Errors
/// [`Error::Config`] when `total` is 0, `step > total`, or `base` is not in [0, 1].
pub fn cosine_tau(step: usize, total: usize, base: f64) -> Result<f64> {
    if total == 0 {
        return Err(config_err!("cosine_tau: total steps must be at least 1, got 0"));
    }
    if step > total {
        return Err(config_err!("cosine_tau: step {step} is past the planned total of {total} steps"));
    }
    if !(0.0..=1.0).contains(&base) {
        return Err(config_err!("cosine_tau: base τ must be in [0, 1], got {base}"));
    }
    let progress = step as f64 / total as f64;
    Ok(1.0 - (1.0 - base) * ((std::f64::consts::PI * progress).cos() + 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_tau_runs_from_base_to_one() {
        assert!((cosine_tau(0, 100, 0.996).unwrap() - 0.996).abs() < 1e-12);
        assert!((cosine_tau(50, 100, 0.996).unwrap() - 0.998).abs() < 1e-12);
        assert!((cosine_tau(100, 100, 0.996).unwrap() - 1.0).abs() < 1e-12);
        assert!(cosine_tau(101, 100, 0.996).is_err());
        assert!(cosine_tau(0, 0, 0.996).is_err());
        assert!(cosine_tau(0, 10, 1.5).is_err());
    }
}
