//! Learning-rate schedules as pure functions of the step (nanoGPT's `get_lr`), so they can be
//! plotted, tested against PyTorch's schedulers and resumed from a step number alone.
//!
//! - [`cosine_lr`]: linear warm-up, then cosine decay to 0 (SGDR, Loshchilov & Hutter 2017,
//!   <https://arxiv.org/abs/1608.03983>, without restarts; MoCo v2's `--cos`; SimCLR, BYOL and
//!   Barlow Twins warm up first).
//! - [`one_cycle_lr`]: the 1cycle policy (Smith & Topin 2018, <https://arxiv.org/abs/1708.07120>)
//!   with PyTorch's `OneCycleLR` defaults (S3.6).
//! - [`step_decay_lr`]: multiply by γ at each milestone (PyTorch's `MultiStepLR`; MoCo v1's
//!   `--schedule 120 160`).
//!
//! [`LrSchedule`] names one of them with its parameters; the trainer stores it in `config.json`.
use crate::error::{config_err, Result};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Linear warm-up over `warmup` steps (`base·(step+1)/warmup`), then half a cosine from `base`
/// to 0 over the remaining `total − warmup` steps. Steps at or past `total` give 0.
///
/// Equals PyTorch's `SequentialLR([LinearLR(start_factor=1/warmup, total_iters=warmup−1),
/// CosineAnnealingLR(T_max=total−warmup)], milestones=[warmup])`; with `warmup = 0`, just
/// `CosineAnnealingLR(T_max=total, eta_min=0)`.
pub fn cosine_lr(step: usize, total: usize, base: f64, warmup: usize) -> f64 {
    if step >= total {
        return 0.0;
    }
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total - warmup) as f64; // in [0, 1)
    base * 0.5 * (1.0 + (PI * progress).cos())
}

/// PyTorch's `OneCycleLR(max_lr, total_steps, pct_start, anneal_strategy='cos', div_factor,
/// final_div_factor, three_phase=False)` at `step`: cosine from `max_lr/div_factor` up to
/// `max_lr` over the first `pct_start·total − 1` steps, then cosine down to
/// `max_lr/(div_factor·final_div_factor)` at step `total − 1`.
///
/// Deviation: PyTorch also cycles SGD's momentum / Adam's β1 (`cycle_momentum=True`); the
/// optimizers here keep theirs fixed.
pub fn one_cycle_lr(
    step: usize,
    total: usize,
    max_lr: f64,
    pct_start: f64,
    div_factor: f64,
    final_div_factor: f64,
) -> f64 {
    let initial = max_lr / div_factor;
    let min = initial / final_div_factor;
    let anneal = |start: f64, end: f64, pct: f64| end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0);
    let up_end = pct_start * total as f64 - 1.0;
    let down_end = total as f64 - 1.0;
    let s = step as f64;
    if s <= up_end {
        anneal(initial, max_lr, s / up_end)
    } else {
        anneal(max_lr, min, ((s - up_end) / (down_end - up_end)).min(1.0))
    }
}

/// `base · γ^(number of milestones ≤ epoch)`: PyTorch's `MultiStepLR(milestones, gamma)`.
pub fn step_decay_lr(epoch: usize, base: f64, milestones: &[usize], gamma: f64) -> f64 {
    let passed = milestones.iter().filter(|&&m| m <= epoch).count();
    base * gamma.powi(passed as i32)
}

/// A learning-rate schedule, evaluated per optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LrSchedule {
    /// The base learning rate throughout.
    Constant,
    /// [`cosine_lr`] over the whole run after `warmup_steps` of linear warm-up
    /// (MoCo v2 `main_moco.py --cos`: no warm-up; BYOL: 10 epochs).
    Cosine {
        /// Steps of linear warm-up (0 for none).
        warmup_steps: usize,
    },
    /// [`one_cycle_lr`] with the base learning rate as `max_lr` (the Barlow Twins seminar, S3.6).
    OneCycle {
        /// Fraction of the run spent increasing the rate (PyTorch: 0.3).
        pct_start: f64,
        /// `initial_lr = max_lr / div_factor` (PyTorch: 25).
        div_factor: f64,
        /// `min_lr = initial_lr / final_div_factor` (PyTorch: 1e4).
        final_div_factor: f64,
    },
    /// [`step_decay_lr`]: multiply by `gamma` at each milestone epoch (MoCo v1: epochs 120 and
    /// 160 of 200, γ = 0.1, `main_moco.py --schedule 120 160`).
    StepDecay {
        /// Epochs (0-based, counted at the step that starts them) at which the rate drops.
        milestones: Vec<usize>,
        /// Factor per milestone (PyTorch `MultiStepLR` default: 0.1).
        gamma: f64,
    },
}

impl Default for LrSchedule {
    /// Cosine without warm-up: MoCo v2 (`main_moco.py --cos`, Chen et al. 2020).
    fn default() -> Self {
        LrSchedule::Cosine { warmup_steps: 0 }
    }
}

impl LrSchedule {
    /// Cosine decay with `warmup_steps` of linear warm-up.
    pub fn cosine(warmup_steps: usize) -> Self {
        LrSchedule::Cosine { warmup_steps }
    }
    /// PyTorch's `OneCycleLR` defaults: pct_start 0.3, div_factor 25, final_div_factor 1e4.
    pub fn one_cycle() -> Self {
        LrSchedule::OneCycle { pct_start: 0.3, div_factor: 25.0, final_div_factor: 1e4 }
    }
    /// MoCo v1's step decay: ×0.1 at each of `milestones` (epochs).
    pub fn step_decay(milestones: Vec<usize>, gamma: f64) -> Self {
        LrSchedule::StepDecay { milestones, gamma }
    }

    /// Checks the ranges against a run of `total_steps` steps.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the field and its valid range.
    pub fn validate(&self, total_steps: usize) -> Result<()> {
        match self {
            LrSchedule::Constant => {}
            LrSchedule::Cosine { warmup_steps } => {
                if *warmup_steps >= total_steps.max(1) {
                    return Err(config_err!(
                        "LrSchedule::Cosine.warmup_steps must be below the run's {total_steps} steps, got {warmup_steps}"
                    ));
                }
            }
            LrSchedule::OneCycle { pct_start, div_factor, final_div_factor } => {
                if !(*pct_start > 0.0 && *pct_start < 1.0) {
                    return Err(config_err!("LrSchedule::OneCycle.pct_start must be in (0, 1), got {pct_start}"));
                }
                if pct_start * total_steps as f64 - 1.0 <= 0.0
                    || pct_start * (total_steps as f64) >= total_steps as f64 - 1.0
                {
                    return Err(config_err!(
                        "LrSchedule::OneCycle needs at least two steps in each phase: pct_start {pct_start} of {total_steps} steps; train longer"
                    ));
                }
                if *div_factor <= 0.0 || *final_div_factor <= 0.0 {
                    return Err(config_err!(
                        "LrSchedule::OneCycle.div_factor and final_div_factor must be positive, got {div_factor} and {final_div_factor}"
                    ));
                }
            }
            LrSchedule::StepDecay { gamma, .. } => {
                if !(*gamma > 0.0 && *gamma <= 1.0) {
                    return Err(config_err!("LrSchedule::StepDecay.gamma must be in (0, 1], got {gamma}"));
                }
            }
        }
        Ok(())
    }

    /// The learning rate at `step` (0-based) of a run of `total_steps` steps with
    /// `steps_per_epoch` steps per epoch, for base (or maximum) rate `base`.
    pub fn lr(&self, base: f64, step: usize, total_steps: usize, steps_per_epoch: usize) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine { warmup_steps } => cosine_lr(step, total_steps, base, *warmup_steps),
            LrSchedule::OneCycle { pct_start, div_factor, final_div_factor } => {
                one_cycle_lr(step, total_steps, base, *pct_start, *div_factor, *final_div_factor)
            }
            LrSchedule::StepDecay { milestones, gamma } => {
                step_decay_lr(step / steps_per_epoch.max(1), base, milestones, *gamma)
            }
        }
    }

    /// The rate at every step of the run, for plotting.
    pub fn curve(&self, base: f64, total_steps: usize, steps_per_epoch: usize) -> Vec<f64> {
        (0..total_steps).map(|s| self.lr(base, s, total_steps, steps_per_epoch)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_linearly_then_decays_to_zero() {
        assert_eq!(cosine_lr(0, 10, 1.0, 4), 0.25);
        assert_eq!(cosine_lr(3, 10, 1.0, 4), 1.0);
        assert_eq!(cosine_lr(4, 10, 1.0, 4), 1.0);
        assert!((cosine_lr(7, 10, 1.0, 4) - 0.5).abs() < 1e-12); // half-way through the decay
        assert_eq!(cosine_lr(10, 10, 1.0, 4), 0.0);
    }

    #[test]
    fn one_cycle_starts_peaks_and_ends_where_pytorch_does() {
        let (total, max) = (100, 0.1);
        assert!((one_cycle_lr(0, total, max, 0.3, 25.0, 1e4) - max / 25.0).abs() < 1e-15);
        assert!((one_cycle_lr(29, total, max, 0.3, 25.0, 1e4) - max).abs() < 1e-15);
        assert!((one_cycle_lr(99, total, max, 0.3, 25.0, 1e4) - max / 25.0 / 1e4).abs() < 1e-15);
    }

    #[test]
    fn step_decay_counts_passed_milestones() {
        assert_eq!(step_decay_lr(119, 1.0, &[120, 160], 0.5), 1.0);
        assert_eq!(step_decay_lr(120, 1.0, &[120, 160], 0.5), 0.5);
        assert_eq!(step_decay_lr(199, 1.0, &[120, 160], 0.5), 0.25);
    }

    #[test]
    fn schedules_serialise_for_config_json() -> Result<()> {
        for s in
            [LrSchedule::Constant, LrSchedule::cosine(5), LrSchedule::one_cycle(), LrSchedule::step_decay(vec![3], 0.1)]
        {
            let text = serde_json::to_string(&s)?;
            assert_eq!(serde_json::from_str::<LrSchedule>(&text)?, s);
        }
        Ok(())
    }
}
