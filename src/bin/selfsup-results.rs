//! `selfsup-results`: the seeds' experiments end to end at one scale, and a report of which of
//! their conclusions hold (issue 7).
//!
//! On the data [`selfsup::data::Source::stl10_or_synthetic`] picks (the embedded shapes dataset unless STL-10 is
//! in `assets/data/` or `$SELFSUP_DATA`; STL-10-shaped 96×96 at demo and full, the same drawn at 32×32 at
//! lesson, a tiny 16×16 set at smoke), it runs:
//!
//! 1. a supervised ResNet-18 from scratch (S2.T0): a random backbone trained with its new `fc`,
//!    backbone and head at the same rate (the scratch run of `eval::label_fractions`);
//! 2. BYOL, SimCLR and MoCo v2 pre-training on the unlabelled split (S2.T1, S2.T2, S2.B2),
//!    recording BYOL's std of the ℓ2-normalised projections z (first, min, last; healthy 1/√d);
//! 3. a random-weights baseline (S1.6);
//! 4. for each of the five backbones, a logistic probe on frozen average-pool embeddings: fitted
//!    on the labelled train split, scored on the test split (S1.7, S2.T4);
//! 5. fine-tuning of each SSL backbone with the same epochs as the scratch run (S2.T5).
//!
//! and writes `<out>/results.md` (also printed) and `<out>/results.json`, with one verdict per
//! conclusion of the seeds: SSL probe > random weights, fine-tuning ≥ scratch, BYOL's std(z)
//! away from 0. Two accuracies a, b on n test images differ when |a − b| > 2·se with
//! se = √((a(1−a) + b(1−b))/n); std(z) is "away from 0" when its last value exceeds 0.25/√d.
//!
//! Every training run checkpoints into its own folder under `<out>`; running the same command
//! again loads the finished runs instead of training them (and continues unfinished ones).
//!
//! The experiments, verdicts and report live in [`selfsup::experiments`]; this program is its
//! command line ([`selfsup::experiments::ResultsConfig`], `--help` for the options).
//!
//! ```text
//! selfsup-results --scale demo                          # runs/results-demo, CUDA when present
//! selfsup-results --scale demo --device cpu --epochs-factor 0.02 --out runs/results-demo-cpu
//! ```
use selfsup::experiments::{self, ResultsConfig};
use std::process::ExitCode;

fn main() -> ExitCode {
    selfsup::cli::main(
        // A bad $SELFSUP_SCALE is a bad argument (exit 2), found before anything runs.
        |config: ResultsConfig, _| config.scale().map(|_| config),
        |config| {
            selfsup::cli::install_stop_handlers(); // Ctrl-C: finish the step, checkpoint, say how to go on
            experiments::run(&config).map(|_| ())
        },
    )
}
