//! Whether bf16 autocast pays on this CPU for *this* run's step: measured, not guessed from the
//! CPU's features (issue 17).
//!
//! **Why measure.** Native bf16 instructions do not make every network faster under autocast.
//! On three 2-vCPU machines (BENCHMARKS.md, "CPU training step") the kit's ResNet-18 step at
//! 32 px with the ImageNet stem was *slower* in bf16 than in f32 on every one: AMD EPYC with
//! `avx512_bf16` 275 vs 265 ms, Intel Xeon with AMX 216 vs 190 ms, Intel Xeon with
//! `avx512_bf16` and no AMX 255 vs 230 ms (and the lessons' width-32 network 9 % slower), while
//! at the CIFAR stem, whose convolutions are 16 times larger, bf16 was 2.6× *faster* on the
//! EPYC. The casts around small convolutions cost more than the bf16 arithmetic saves; which
//! side wins depends on the CPU and on the network. So, as `torch.backends.cudnn.benchmark`
//! times the candidate kernels of a convolution before it picks one, a run with
//! `Precision::Bf16` on a CPU with native bf16 times its own training step both ways before its
//! first step, and trains under bf16 autocast only when that is at least
//! [`BF16_MUST_SAVE`] faster (bf16 rounds; for a tie, f32's exact numbers win).
//!
//! **What is timed.** The forward and backward pass of the run's first batch, with the run's
//! augmentations: one warm-up pass per precision (oneDNN builds its kernels then), then
//! [`TIMED_PASSES`] timed passes per precision, interleaved so that a disturbance hits both,
//! compared by their medians. At the lessons' sizes on a 2-vCPU Xeon that is 2–7 seconds per
//! network (eight passes of 0.3–0.9 s).
//!
//! **It changes nothing.** Every variable (BatchNorm's running statistics included) and the
//! method's state (a queue, a target network) is copied before and written back after, the
//! gradients are dropped, and the augmentations draw from their own seed; the steps that follow
//! reseed everything else. A run that measured trains bit for bit as one told the same
//! precision would (tested).
//!
//! **Once.** The result is kept for the process, per workload (method, architecture, batch
//! shape, threads), so a notebook measures each network once; the checkpoint records the
//! precision a run trained in, and a resumed run keeps it without measuring again.
//! `SELFSUP_CPU_BF16=force` trains in bf16 without measuring, `off` in f32. Data-parallel runs
//! on the CPU do not measure (their ranks would have to agree): they autocast as the CPU's
//! features say.
use super::amp::Autocast;
use super::engine::Trainee;
use super::optim::Optimizer;
use crate::augment;
use crate::data::Batch;
use crate::error::Result;
use crate::models::weights::store_vars;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use tch::Tensor;

/// bf16 must take at most this fraction of f32's time (3 % faster) to be used.
pub const BF16_MUST_SAVE: f64 = 0.97;
/// Timed passes per precision, after one warm-up each.
pub const TIMED_PASSES: usize = 3;
/// Seed of the augmentations of the timed passes (their own, so the run's draws are untouched).
const PROBE_SEED: u64 = 0xBF16;

/// Median milliseconds of one forward and backward pass in each precision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Under `torch.autocast("cpu", dtype=torch.bfloat16)`.
    pub bf16_ms: f64,
    /// In f32.
    pub f32_ms: f64,
}

impl Measured {
    /// Whether bf16 saves at least 3 % ([`BF16_MUST_SAVE`]).
    pub fn bf16_pays(&self) -> bool {
        self.bf16_ms <= BF16_MUST_SAVE * self.f32_ms
    }
    /// The autocast to train in.
    pub fn choice(&self) -> Autocast {
        if self.bf16_pays() {
            Autocast::CpuBf16
        } else {
            Autocast::Off
        }
    }
    /// The line a run prints: both times and what it trains in.
    pub fn note(&self, again: bool) -> String {
        let when = if again { "measured earlier in this process" } else { "measured now" };
        let verdict = if self.bf16_pays() {
            "training under bf16 autocast".to_string()
        } else {
            format!(
                "training in f32 (bf16 must be {:.0} % faster to be used; SELFSUP_CPU_BF16=force trains in bf16 anyway)",
                100.0 * (1.0 - BF16_MUST_SAVE)
            )
        };
        format!(
            "precision: a forward and backward pass of this run's batch takes {:.0} ms under bf16 autocast and {:.0} ms \
             in f32 on this CPU ({when}, median of {TIMED_PASSES}): {verdict}",
            self.bf16_ms, self.f32_ms
        )
    }
}

/// What was measured in this process, by [`workload_key`].
static MEASURED: Mutex<Option<HashMap<String, Measured>>> = Mutex::new(None);

/// What decides a step's speed: the trainee, its architecture, the batch's shape, the layout
/// and libtorch's threads.
pub(crate) fn workload_key(kind: &str, name: &str, model: &serde_json::Value, batch: &Batch, channels_last: bool) -> String {
    format!("{kind}/{name}/{model}/{:?}/{channels_last}/{}", batch.images.size(), tch::get_num_threads())
}

/// The measurement kept for `key`, if this process made one.
pub(crate) fn recall(key: &str) -> Option<Measured> {
    MEASURED.lock().ok()?.as_ref()?.get(key).copied()
}

fn keep(key: String, m: Measured) {
    if let Ok(mut guard) = MEASURED.lock() {
        guard.get_or_insert_with(HashMap::new).insert(key, m);
    }
}

/// Times `t`'s forward and backward pass on `batch` in bf16 and in f32 (see the module doc),
/// then writes every variable and the trainee's state back as they were and drops the
/// gradients; keeps the result for `key`.
///
/// # Errors
/// Those of the trainee's forward pass and of [`Optimizer::backward`]; the variables and state
/// are restored first.
pub(crate) fn measure<T: Trainee + ?Sized>(
    t: &mut T,
    opt: &mut Optimizer,
    batch: &Batch,
    channels_last: bool,
    key: String,
) -> Result<Measured> {
    let vars = store_vars(t.vars());
    let saved_vars: Vec<Tensor> = tch::no_grad(|| vars.iter().map(|(_, v)| v.copy()).collect());
    let saved_state: Vec<(String, Tensor)> =
        tch::no_grad(|| t.state().into_iter().map(|(n, v)| (n, v.copy())).collect());
    let timed = time_both(t, opt, batch, channels_last);
    opt.drop_grads();
    tch::no_grad(|| {
        for ((_, v), s) in vars.iter().zip(&saved_vars) {
            let mut v = v.shallow_clone();
            v.copy_(s);
        }
    });
    t.load_state(&saved_state)?;
    let m = timed?;
    keep(key, m);
    Ok(m)
}

fn time_both<T: Trainee + ?Sized>(t: &mut T, opt: &mut Optimizer, batch: &Batch, channels_last: bool) -> Result<Measured> {
    let mut pass = |autocast: Autocast| -> Result<f64> {
        let mut rng = augment::rng(PROBE_SEED);
        let started = Instant::now();
        let out = t.forward(batch, &mut rng, channels_last, autocast)?;
        opt.backward(&out.loss)?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    pass(Autocast::CpuBf16)?;
    pass(Autocast::Off)?;
    let (mut bf16, mut f32) = (Vec::new(), Vec::new());
    for _ in 0..TIMED_PASSES {
        bf16.push(pass(Autocast::CpuBf16)?);
        f32.push(pass(Autocast::Off)?);
    }
    Ok(Measured { bf16_ms: median(&mut bf16), f32_ms: median(&mut f32) })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_is_used_only_when_it_saves_three_percent() {
        let m = |bf16_ms, f32_ms| Measured { bf16_ms, f32_ms };
        assert_eq!(m(289.4, 266.7).choice(), Autocast::Off); // the lessons' network, Xeon without AMX
        assert_eq!(m(1328.0, 3502.0).choice(), Autocast::CpuBf16); // CIFAR stem, EPYC with avx512_bf16
        assert_eq!(m(98.0, 100.0).choice(), Autocast::Off); // 2 %: a tie, f32 wins
        assert_eq!(m(97.0, 100.0).choice(), Autocast::CpuBf16);
        let slow = m(289.4, 266.7).note(false);
        assert!(slow.contains("289 ms under bf16") && slow.contains("267 ms in f32") && slow.contains("training in f32"), "{slow}");
        assert!(slow.contains("SELFSUP_CPU_BF16=force"), "{slow}");
        let fast = m(1328.0, 3502.0).note(true);
        assert!(fast.contains("training under bf16 autocast") && fast.contains("earlier in this process"), "{fast}");
    }

    #[test]
    fn the_median_ignores_one_disturbed_pass() {
        assert_eq!(median(&mut [230.0, 6094.0, 228.0]), 230.0);
    }
}
