//! Checks the engine's CUDA speed settings end to end: every method pre-trains a few steps
//! through `train::pretrain` in float32 (NCHW), bf16 autocast + channels-last, and fp16
//! autocast + loss scaling + channels-last, from the same seed on the same images. It prints one
//! row per run (first and last loss, loss scale, images/s) and exits with 1 when a loss is not
//! finite or a mixed-precision run's first loss strays from the float32 one by more than the
//! precision explains (bf16 5 %, fp16 2 %: the first step sees the same weights and views).
//!
//! ```text
//! cargo build --release --example amp_check
//! LD_LIBRARY_PATH=<torch/lib> ./target/release/examples/amp_check [steps]   # default 20 steps
//! ```
//!
//! On the CPU the engine ignores channels-last and fp16, and autocasts bf16 only on CPUs with
//! native bf16 (or with `SELFSUP_CPU_BF16=force`); elsewhere the three rows of a method agree
//! exactly: the run checks the harness, not the precision. `examples/cpu_bf16_check.rs` is the
//! CPU's own check.
use clap::Parser;
use selfsup::prelude::*;
use std::process::ExitCode;

/// Every method a few steps in float32, bf16 + channels-last and fp16 + channels-last, from the
/// same seed: exits with 1 when a loss is not finite or strays from float32's.
#[derive(Parser)]
#[command(name = "amp_check")]
struct Args {
    /// Training steps of each run
    #[arg(default_value_t = 20, value_parser = selfsup::cli::at_least(1usize))]
    steps: usize,
}

/// A method built fresh from seed 0, with its paper's augmentation at `size`.
fn method(name: &str, backbone: &ResNetConfig, device: Device) -> Result<Box<dyn SslMethod>> {
    seed_everything(0);
    Ok(match name {
        "simclr" => Box::new(SimClr::new(SimClrConfig::tiny().backbone(backbone.clone()), device)?),
        "moco_v2" => Box::new(Moco::new(MocoConfig::tiny().backbone(backbone.clone()), device)?),
        "byol" => Box::new(Byol::new(ByolConfig::tiny().backbone(backbone.clone()), device)?),
        _ => Box::new(BarlowTwins::new(BarlowTwinsConfig::tiny().backbone(backbone.clone()), device)?),
    })
}

struct Run {
    first: f64,
    last: f64,
    loss_scale: Option<f64>,
    images_per_sec: f64,
}

fn run(name: &str, precision: Precision, channels_last: bool, steps: usize, set: &ImageSet, device: Device) -> Result<Run> {
    let backbone = ResNetConfig { depth: Depth::R18, ..Default::default() }; // ImageNet stem, as the benchmarks
    let mut m = method(name, &backbone, device)?;
    let cfg = TrainConfig {
        mixed_precision: precision,
        channels_last,
        max_steps: Some(steps),
        epochs: steps.div_ceil(set.len() / 32).max(1),
        log_every: 5,
        checkpoint_every_steps: None,
        checkpoint_every_secs: None,
        ..TrainConfig::tiny()
    }
    .resume(false)
    .progress(false);
    let out = std::env::temp_dir().join(format!("selfsup_amp_check_{name}_{precision:?}_{}", std::process::id()));
    let aug = augment::presets::simclr(set.image_size().0);
    let history = train::pretrain(m.as_mut(), set, &aug, &cfg, &out)?;
    let _ = std::fs::remove_dir_all(&out);
    let losses = history.losses();
    let rates: Vec<f64> = history.throughput().iter().skip(1).map(|p| p.1).collect();
    Ok(Run {
        first: losses.first().map_or(f64::NAN, |p| p.1),
        last: losses.last().map_or(f64::NAN, |p| p.1),
        loss_scale: history.metric("loss_scale").last().map(|p| p.1),
        images_per_sec: if rates.is_empty() { f64::NAN } else { rates.iter().sum::<f64>() / rates.len() as f64 },
    })
}

fn main() -> ExitCode {
    match check(Args::parse().steps) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(steps: usize) -> Result<bool> {
    let device = pick_device();
    if !device.is_cuda() {
        println!(
            "note: on the CPU the engine ignores channels-last and fp16 ({}); see examples/cpu_bf16_check.rs",
            selfsup::device::describe(device)
        );
    }
    let size = if device.is_cuda() { 96 } else { 32 };
    let set = data::synthetic::load(Split::Unlabeled, &SyntheticConfig::default().image_size(size))?;
    println!("| method | precision | channels-last | first loss | last loss | loss scale | images/s | check |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut ok = true;
    for name in ["simclr", "moco_v2", "byol", "barlow_twins"] {
        let mut reference = None;
        for (precision, channels_last, tolerance) in
            [(Precision::Off, false, 0.0), (Precision::Bf16, true, 0.05), (Precision::Fp16, true, 0.02)]
        {
            let r = run(name, precision, channels_last, steps, &set, device)?;
            let base: f64 = *reference.get_or_insert(r.first);
            let finite = r.first.is_finite() && r.last.is_finite();
            let close = (r.first - base).abs() <= tolerance * base.abs();
            let verdict = match (finite, close) {
                (false, _) => "FAIL: loss not finite",
                (true, false) => "FAIL: first loss too far from float32",
                (true, true) => "ok",
            };
            ok &= finite && close;
            println!(
                "| {name} | {precision:?} | {channels_last} | {:.4} | {:.4} | {} | {:.0} | {verdict} |",
                r.first,
                r.last,
                r.loss_scale.map_or("-".to_string(), |s| format!("{s:.0}")),
                r.images_per_sec
            );
        }
    }
    println!("{}", if ok { "all runs finite and consistent" } else { "some runs FAILED (see the table)" });
    Ok(ok)
}
