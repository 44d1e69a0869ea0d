//! Benchmark of one training step of each method (issues 4 and 17, "Speed"): ResNet-18
//! (torchvision's, ImageNet stem; `--stem cifar`: the 3x3 stride-1 stem without max-pool),
//! 96×96, batch 256, two views, augmentation included, from u8 images already on the device
//! that `pick_device()` chooses. Prints a Markdown table: median and p90 ms per step, source
//! images per second (each image gives two views), and the median process CPU time per step
//! (all threads), the steadier figure on a shared machine; then where the time goes (median ms
//! of each part of the step: augmentation, layout, forward, backward, optimizer, `after_step`,
//! the logged scalars). On CUDA the parts are timed only with `--parts`, which synchronises at
//! each boundary (and so slows the step); on the CPU, where libtorch's kernels run on the
//! calling thread, they are always timed.
//!
//! ```text
//! cargo run --release --example bench_train_step -- [--batch 256] [--size 96] [--steps 20] [--warmup 5]
//!     [--methods simclr,moco_v2,byol,barlow_twins] [--precision off|bf16|fp16] [--channels-last]
//!     [--stem imagenet|cifar] [--width 64] [--parts] [--sgd-loop] [--batched-augment] [--json PATH] [--label TEXT]
//! ```
//!
//! `--precision bf16` on the CPU autocasts as the engine does (`amp::setup`): on CPUs with native
//! bf16, or anywhere with `SELFSUP_CPU_BF16=force` (emulated, labelled so); otherwise the row is
//! f32 and labelled so. `--channels-last` applies on the CPU too here (the engine uses it on CUDA
//! only), to measure the layout.
//!
//! The step is the engine's (`train::pretrain`, src/train/engine.rs), composed here in the same
//! order because the engine's step is private to its loop: schedule → seed → two views →
//! channels-last → `training_step` (under `amp::autocast`) → `zero_grad` → backward (loss-scaled for
//! fp16) → un-scale and finite check (fp16) → optimizer step → `after_step` → the step's logged
//! scalars (loss, std of ℓ2-normalised z, metrics) stacked on the device, not read. Left out:
//! the loader (the images are on the device already), the engine's reads once per log window
//! (here after the last step: NaN check), history, progress bar and checkpoints. Each timed step
//! ends with a device synchronisation. `bench/run_train_step.sh` runs this next to the PyTorch reference
//! (`bench/train_step_reference.py`) and prints both in one table.
//!
//! Methods, each with its paper's (ImageNet) preset on a ResNet-18 backbone and the engine's
//! default optimizer (SGD, momentum 0.9, weight decay 1e-4, cosine schedule from 0.03):
//! - `simclr`: `SimClrConfig::default()` (head 512→512→128 with BN, τ 0.1), `presets::simclr`;
//! - `moco_v2`: `MocoConfig::v2()` (head 512→512→128, K 65536, m 0.999, τ 0.2, 8 BN groups),
//!   `presets::moco_v2`;
//! - `byol`: `ByolConfig::default()` (projector 512→4096→256, predictor 256→4096→256, cosine τ
//!   from 0.996), `presets::byol`;
//! - `barlow_twins`: `BarlowTwinsConfig::default()` (projector 512→8192→8192→8192, λ 5e-3),
//!   `presets::barlow_twins`.
use clap::{Parser, ValueEnum};
use selfsup::augment::{self, presets, TwoViews};
use selfsup::methods::registry::MethodKind;
use selfsup::methods::{BarlowTwins, BarlowTwinsConfig, Byol, ByolConfig, Moco, MocoConfig, SimClr, SimClrConfig, SslMethod};
use selfsup::models::{Depth, ResNetConfig};
use selfsup::tch::{self, Device, Kind, Tensor};
use selfsup::train::amp::{self, Autocast, LossScaler, Precision};
use selfsup::train::{backward_and_step, std_of_l2_normalized_tensor, Optimizer, TrainConfig};
use selfsup::{Error, Result};
use std::time::Instant;

/// The methods benchmarked, in the table's order.
const ALL_METHODS: [MethodKind; 4] = [MethodKind::SimClr, MethodKind::MocoV2, MethodKind::Byol, MethodKind::BarlowTwins];

/// The first layers of the ResNet-18.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stem {
    /// torchvision's: 7x7 stride-2 conv and max-pool
    Imagenet,
    /// SimCLR's CIFAR stem: 3x3 stride-1 conv, no max-pool
    Cifar,
}

/// One training step of each method: ms per step, images per second, where the time goes.
#[derive(Debug, Parser)]
#[command(name = "bench_train_step", args_override_self = true)]
struct Args {
    /// Images per step (at least 2)
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = selfsup::cli::at_least(2i64))]
    batch: i64,
    /// Side of the images in pixels (at least 16)
    #[arg(long, value_name = "N", default_value_t = 96, value_parser = selfsup::cli::at_least(16i64))]
    size: i64,
    /// Timed steps
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = selfsup::cli::at_least(1usize))]
    steps: usize,
    /// Untimed steps first
    #[arg(long, value_name = "N", default_value_t = 5)]
    warmup: usize,
    /// The methods, comma-separated
    #[arg(long, value_name = "A,B,..", value_delimiter = ',', value_parser = selfsup::cli::methods_among(&ALL_METHODS), default_values_t = ALL_METHODS)]
    methods: Vec<MethodKind>,
    /// Precision of the forward pass (fp32 = off)
    #[arg(long, value_name = "P", value_enum, default_value_t = Precision::Off)]
    precision: Precision,
    /// Weights and inputs in channels-last order (here on the CPU too)
    #[arg(long)]
    channels_last: bool,
    /// The ResNet-18's stem
    #[arg(long, value_name = "STEM", value_enum, default_value_t = Stem::Imagenet)]
    stem: Stem,
    /// Channels of the ResNet-18's first stage (64: torchvision's; the lessons use 32); selfsup
    /// only, the PyTorch reference stays at 64
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = selfsup::cli::at_least(1i64))]
    width: i64,
    /// Time the parts of the step on CUDA too (a synchronisation at each boundary)
    #[arg(long)]
    parts: bool,
    /// SGD as a loop over the variables (PyTorch's CPU default) instead of libtorch's fused
    /// kernel (the kit's default on the CPU)
    #[arg(long)]
    sgd_loop: bool,
    /// Augment with the batched tensor ops (`Augment::apply_batched`, the GPU's path) instead of
    /// the CPU's per-image path that `Augment::apply` takes there
    #[arg(long)]
    batched_augment: bool,
    /// Also write the rows as JSON here
    #[arg(long, value_name = "PATH")]
    json: Option<String>,
    /// The configuration column's text [selfsup, <precision>, <layout>]
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,
}

/// The method and its views with the papers' ImageNet recipes (default configs, full-size heads)
/// on a torchvision ResNet-18 at any crop size, the step bench/train_step_reference.py mirrors in
/// PyTorch. Not `selfsup-train`'s recipe, which switches to the CIFAR presets at 64 px or less
/// (methods::registry); the benchmark keeps one workload per method across sizes.
fn build(kind: MethodKind, size: i64, stem: Stem, width: i64, device: Device) -> Result<(Box<dyn SslMethod>, TwoViews)> {
    // torchvision's resnet18: ImageNet stem, or SimCLR's CIFAR stem (3x3/1, no max-pool).
    let r18 = ResNetConfig { depth: Depth::R18, small_images: stem == Stem::Cifar, width, ..Default::default() };
    Ok(match kind {
        MethodKind::SimClr => (Box::new(SimClr::new(SimClrConfig::default().backbone(r18), device)?), presets::simclr(size).into()),
        MethodKind::MocoV2 => (Box::new(Moco::new(MocoConfig::v2().backbone(r18), device)?), presets::moco_v2(size).into()),
        MethodKind::Byol => (Box::new(Byol::new(ByolConfig::default().backbone(r18), device)?), presets::byol(size)),
        MethodKind::BarlowTwins => {
            (Box::new(BarlowTwins::new(BarlowTwinsConfig::default().backbone(r18), device)?), presets::barlow_twins(size))
        }
        other => return Err(Error::Config(format!("bench_train_step has no recipe for {other}"))),
    })
}


fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The `q`-quantile (0..=1) of `v` by the nearest rank.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let n = s.len();
    if q == 0.5 && n % 2 == 0 {
        return (s[n / 2 - 1] + s[n / 2]) / 2.0;
    }
    s[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
}

struct Row {
    method: String,
    median_ms: f64,
    p90_ms: f64,
    images_per_sec: f64,
    cpu_ms: f64,
    loss: f64,
    /// Median ms of each part of the step (when timed), in [`PARTS`] order.
    parts: Option<Vec<f64>>,
}

/// The parts of a step, in order.
const PARTS: [&str; 7] = ["augment", "layout", "forward", "backward", "optimizer", "after_step", "log row"];

/// Times `warmup + steps` engine steps of `name`; returns per-step wall seconds of the timed ones.
fn bench_method(name: MethodKind, a: &Args, device: Device, images: &Tensor) -> Result<Row> {
    tch::manual_seed(0);
    let (mut method, views) = build(name, a.size, a.stem, a.width, device)?;
    let cfg = TrainConfig { batch_size: a.batch as usize, mixed_precision: a.precision, channels_last: a.channels_last, ..TrainConfig::default() };
    let mut opt = Optimizer::new(method.online(), &cfg.optimizer, cfg.weight_decay, &cfg.param_groups)?;
    if opt.set_fused(!a.sgd_loop) == a.sgd_loop {
        eprintln!("note: libtorch's fused SGD kernel is not available here: the SGD loop is timed");
    }
    let cuda = matches!(device, Device::Cuda(_));
    // Here channels-last applies on the CPU too (the engine: CUDA only), to measure the layout.
    let channels_last = cfg.channels_last;
    // As the engine: CUDA autocast, CPU bf16 autocast where the CPU has bf16 (or it is forced).
    let setup = amp::setup(cfg.mixed_precision, device)?;
    if let Some(note) = &setup.note {
        eprintln!("{note}");
    }
    let autocast = setup.autocast;
    let mut scaler = setup.fp16.then(LossScaler::default);
    // Parts are timed on the CPU always, on CUDA with --parts (a sync at each boundary).
    let time_parts = !cuda || a.parts;
    let mut part_times: Vec<Vec<f64>> = vec![Vec::with_capacity(a.steps); PARTS.len()];
    if channels_last {
        // As the engine: the online store's 4-D variables in channels-last order.
        tch::no_grad(|| {
            for (_, mut v) in method.online().variables() {
                if v.dim() == 4 {
                    let cl = amp::to_channels_last(&v);
                    v.set_data(&cl);
                }
            }
        });
    }
    let total = a.warmup + a.steps;
    let (mut times, mut cpu) = (Vec::with_capacity(a.steps), Vec::with_capacity(a.steps));
    let mut losses = Vec::with_capacity(total); // [] f64 each, on the device until the end
    sync(device);
    for step in 0..total {
        let (t0, c0) = (Instant::now(), selfsup::cli::process_cpu_seconds());
        let mut marks = [0.0f64; PARTS.len() + 1];
        let mut mark = |i: usize| {
            if time_parts {
                sync(device);
                marks[i] = t0.elapsed().as_secs_f64();
            }
        };
        // --- one step, in the engine's order ---
        let lr = cfg.schedule.lr(cfg.lr, step, total, total);
        opt.set_lr(lr);
        tch::manual_seed(step as i64);
        let mut rng = augment::rng(step as u64);
        let (v1, v2) = if a.batched_augment {
            (views.view1.apply_batched(images, &mut rng)?, views.view2.apply_batched(images, &mut rng)?)
        } else {
            views.two_views(images, &mut rng)?
        }; // [B, 3, S, S] each
        mark(1);
        let (v1, v2) = if channels_last { (amp::to_channels_last(&v1), amp::to_channels_last(&v2)) } else { (v1, v2) };
        mark(2);
        let m = &mut *method;
        let out = amp::autocast(autocast, || m.training_step(&v1, &v2))??;
        mark(3);
        let mut metrics = out.metrics;
        if scaler.is_none() && time_parts {
            // `backward_and_step` without a loss scaler or clipping, split to time its parts: the
            // gradients handed to the optimizer, as in the engine.
            opt.backward(&out.loss)?;
            mark(4);
            opt.step()?;
            mark(5);
        } else {
            metrics.extend(backward_and_step(&out.loss, &mut opt, scaler.as_mut(), None)?);
            mark(4);
            mark(5);
        }
        method.after_step(step, total)?;
        mark(6);
        // As the engine's `PendingStep`: the scalars it logs, stacked in one f64 row, not read.
        let mut row = vec![out.loss.detach().to_kind(Kind::Double)];
        if let Some(z) = &out.z {
            row.push(std_of_l2_normalized_tensor(z)?.to_kind(Kind::Double));
        }
        row.extend(metrics.device.iter().map(|(_, t)| t.to_kind(Kind::Double).reshape([] as [i64; 0])));
        let row = Tensor::stack(&row, 0); // [1 + z? + K]
        losses.push(row.get(0));
        mark(7);
        // --- end of the step ---
        sync(device);
        if step >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
            cpu.push(selfsup::cli::process_cpu_seconds() - c0);
            if time_parts {
                for (i, t) in part_times.iter_mut().enumerate() {
                    t.push(marks[i + 1] - marks[i]);
                }
            }
        }
    }
    // The engine's flush, once: all losses in one transfer, the first non-finite one stops.
    let losses = Vec::<f64>::try_from(Tensor::stack(&losses, 0).to_device(Device::Cpu))?;
    if let Some(step) = losses.iter().position(|l| !l.is_finite()) {
        return Err(Error::Diverged(format!("{name}: loss {} at step {step}", losses[step])));
    }
    let last_loss = losses.last().copied().unwrap_or(f64::NAN);
    let median = quantile(&times, 0.5);
    Ok(Row {
        method: name.to_string(),
        median_ms: median * 1e3,
        p90_ms: quantile(&times, 0.9) * 1e3,
        images_per_sec: a.batch as f64 / median,
        cpu_ms: quantile(&cpu, 0.5) * 1e3,
        loss: last_loss,
        parts: time_parts.then(|| part_times.iter().map(|t| quantile(t, 0.5) * 1e3).collect()),
    })
}

fn main() -> Result<()> {
    let a = Args::parse();
    let device = selfsup::pick_device();
    let setup = amp::setup(a.precision, device)?;
    let precision = match (setup.autocast, setup.fp16) {
        (Autocast::Off, _) => "fp32".to_string(),
        (Autocast::Cuda, true) => "fp16 autocast".to_string(),
        (Autocast::Cuda, false) => "bf16 autocast".to_string(),
        (Autocast::CpuBf16, _) => match amp::cpu_bf16() {
            amp::CpuBf16::Native(f) => format!("bf16 autocast (native, {f})"),
            _ => "bf16 autocast, emulated (no native bf16)".to_string(),
        },
    };
    let layout = if a.channels_last { "channels-last" } else { "NCHW" };
    let stem = selfsup::cli::value_name(&a.stem);
    // The fused kernel takes CPU weights only; CUDA weights take the loop either way.
    let sgd = if a.sgd_loop || device != Device::Cpu { "SGD loop" } else { "fused SGD" };
    let augmentation = if a.batched_augment { ", batched augmentation" } else { "" };
    let config = a.label.clone().unwrap_or_else(|| format!("selfsup, {precision}, {layout}, {sgd}{augmentation}"));
    tch::manual_seed(1234);
    let images = Tensor::randint(256, [a.batch, 3, a.size, a.size], (Kind::Uint8, device)); // [B, 3, S, S] u8
    let mut rows = Vec::new();
    for &m in &a.methods {
        let row = bench_method(m, &a, device, &images)?;
        eprintln!("{config}: {} {:.1} ms/step (loss {:.4})", row.method, row.median_ms, row.loss);
        rows.push(row);
    }
    let dev = selfsup::device::describe(device);
    println!(
        "# bench_train_step: ResNet-18 ({stem} stem{width}), {s}x{s}, batch {b}, two views, {n} steps after {w} warm-up, {dev}",
        width = if a.width == 64 { String::new() } else { format!(", width {}", a.width) },
        s = a.size,
        b = a.batch,
        n = a.steps,
        w = a.warmup
    );
    println!();
    println!("| configuration | method | median ms/step | p90 ms/step | images/s | CPU ms/step |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {config} | {} | {:.1} | {:.1} | {:.0} | {:.0} |",
            r.method, r.median_ms, r.p90_ms, r.images_per_sec, r.cpu_ms
        );
    }
    if rows.iter().any(|r| r.parts.is_some()) {
        println!();
        println!("Where the time goes (median ms of each part; % of the sum of the part medians):");
        println!();
        println!("| configuration | method | {} |", PARTS.join(" | "));
        println!("|---|---|{}", "---|".repeat(PARTS.len()));
        for r in &rows {
            let Some(p) = &r.parts else { continue };
            let sum: f64 = p.iter().sum::<f64>().max(1e-12);
            let cells: Vec<String> = p.iter().map(|t| format!("{t:.1} ({:.0}%)", 100.0 * t / sum)).collect();
            println!("| {config} | {} | {} |", r.method, cells.join(" | "));
        }
    }
    if let Some(path) = &a.json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "impl": "selfsup", "config": config, "method": r.method, "device": dev,
                    "precision": precision, "layout": layout, "batch": a.batch, "size": a.size,
                    "steps": a.steps, "warmup": a.warmup, "median_ms": r.median_ms, "p90_ms": r.p90_ms,
                    "images_per_sec": r.images_per_sec, "cpu_ms": r.cpu_ms, "loss": r.loss, "stem": stem,
                    "parts": r.parts.as_ref().map(|p| PARTS.iter().zip(p).map(|(n, t)| (n.to_string(), serde_json::Value::from(*t))).collect::<serde_json::Map<_, _>>()),
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_vec_pretty(&list)?)?;
    }
    Ok(())
}
