//! Benchmark of one training step of each method (issue 4, "Speed"): ResNet-18 (torchvision's,
//! ImageNet stem), 96×96, batch 256, two views, augmentation included, from u8 images already
//! on the device that `pick_device()` chooses. Prints a Markdown table: median and p90 ms per
//! step, source images per second (each image gives two views), and the median process CPU time
//! per step (all threads), the steadier figure on a shared machine.
//!
//! ```text
//! cargo run --release --bin bench_train_step -- [--batch 256] [--size 96] [--steps 20] [--warmup 5]
//!     [--methods simclr,moco_v2,byol,barlow_twins] [--precision off|bf16|fp16] [--channels-last]
//!     [--json PATH] [--label TEXT]
//! ```
//!
//! The step is the engine's (`train::pretrain`, src/train/engine.rs), composed here in the same
//! order because the engine's step is private to its loop: schedule → seed → two views →
//! channels-last → `training_step` (under autocast) → `zero_grad` → backward (loss-scaled for
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
use selfsup::augment::{self, presets, TwoViews};
use selfsup::methods::{BarlowTwins, BarlowTwinsConfig, Byol, ByolConfig, Moco, MocoConfig, SimClr, SimClrConfig, SslMethod};
use selfsup::models::{Depth, ResNetConfig};
use selfsup::tch::{self, Device, Kind, Tensor};
use selfsup::train::amp::{self, LossScaler, Precision};
use selfsup::train::{backward_and_step, std_of_l2_normalized_tensor, Optimizer, TrainConfig};
use selfsup::{Error, Result};
use std::time::Instant;

const ALL_METHODS: [&str; 4] = ["simclr", "moco_v2", "byol", "barlow_twins"];

struct Args {
    batch: i64,
    size: i64,
    steps: usize,
    warmup: usize,
    methods: Vec<String>,
    precision: Precision,
    channels_last: bool,
    json: Option<String>,
    label: Option<String>,
}

fn usage() -> Error {
    Error::Config(
        "usage: bench_train_step [--batch N] [--size N] [--steps N] [--warmup N] [--methods a,b,..] \
         [--precision off|bf16|fp16] [--channels-last] [--json PATH] [--label TEXT]"
            .into(),
    )
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        batch: 256,
        size: 96,
        steps: 20,
        warmup: 5,
        methods: ALL_METHODS.iter().map(|m| m.to_string()).collect(),
        precision: Precision::Off,
        channels_last: false,
        json: None,
        label: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--channels-last" {
            a.channels_last = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(usage());
        }
        let value = it.next().ok_or_else(usage)?;
        let int = |v: &str| v.parse::<i64>().map_err(|_| Error::Config(format!("{flag}: not a number: {v}")));
        match flag.as_str() {
            "--batch" => a.batch = int(&value)?,
            "--size" => a.size = int(&value)?,
            "--steps" => a.steps = int(&value)?.max(1) as usize,
            "--warmup" => a.warmup = int(&value)?.max(0) as usize,
            "--methods" => a.methods = value.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect(),
            "--precision" => {
                a.precision = match value.as_str() {
                    "off" | "fp32" => Precision::Off,
                    "bf16" => Precision::Bf16,
                    "fp16" => Precision::Fp16,
                    other => return Err(Error::Config(format!("--precision {other}: use off, bf16 or fp16"))),
                }
            }
            "--json" => a.json = Some(value),
            "--label" => a.label = Some(value),
            _ => return Err(usage()),
        }
    }
    if a.batch < 2 || a.size < 16 {
        return Err(Error::Config(format!("--batch must be >= 2 and --size >= 16, got {} and {}", a.batch, a.size)));
    }
    if let Some(bad) = a.methods.iter().find(|m| !ALL_METHODS.contains(&m.as_str())) {
        return Err(Error::Config(format!("unknown method '{bad}': use {}", ALL_METHODS.join(", "))));
    }
    Ok(a)
}

/// The method and its views, as `selfsup-train` builds them, on a torchvision ResNet-18.
fn build(name: &str, size: i64, device: Device) -> Result<(Box<dyn SslMethod>, TwoViews)> {
    let r18 = ResNetConfig { depth: Depth::R18, ..Default::default() }; // torchvision's resnet18, ImageNet stem
    Ok(match name {
        "simclr" => (Box::new(SimClr::new(SimClrConfig::default().backbone(r18), device)?), presets::simclr(size).into()),
        "moco_v2" => (Box::new(Moco::new(MocoConfig::v2().backbone(r18), device)?), presets::moco_v2(size).into()),
        "byol" => (Box::new(Byol::new(ByolConfig::default().backbone(r18), device)?), presets::byol(size)),
        "barlow_twins" => {
            (Box::new(BarlowTwins::new(BarlowTwinsConfig::default().backbone(r18), device)?), presets::barlow_twins(size))
        }
        other => return Err(Error::Config(format!("unknown method '{other}'"))),
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
}

/// Times `warmup + steps` engine steps of `name`; returns per-step wall seconds of the timed ones.
fn bench_method(name: &str, a: &Args, device: Device, images: &Tensor) -> Result<Row> {
    tch::manual_seed(0);
    let (mut method, views) = build(name, a.size, device)?;
    let cfg = TrainConfig { batch_size: a.batch as usize, mixed_precision: a.precision, channels_last: a.channels_last, ..TrainConfig::default() };
    let mut opt = Optimizer::new(method.online(), &cfg.optimizer, cfg.weight_decay, &cfg.param_groups)?;
    let cuda = matches!(device, Device::Cuda(_));
    let channels_last = cfg.channels_last && cuda;
    let autocast = amp::autocast_enabled(cfg.mixed_precision, device);
    let mut fp16 = autocast && cfg.mixed_precision == Precision::Fp16;
    if autocast {
        let kind = if fp16 { Kind::Half } else { Kind::BFloat16 };
        if !amp::set_cuda_autocast_dtype(kind) && !fp16 {
            eprintln!("note: bf16 autocast is not available in this libtorch; using fp16 with loss scaling");
            fp16 = true;
        }
    }
    let mut scaler = fp16.then(LossScaler::default);
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
        // --- one step, in the engine's order ---
        let lr = cfg.schedule.lr(cfg.lr, step, total, total);
        opt.set_lr(lr);
        tch::manual_seed(step as i64);
        let mut rng = augment::rng(step as u64);
        let (v1, v2) = views.two_views(images, &mut rng)?; // [B, 3, S, S] each
        let (v1, v2) = if channels_last { (amp::to_channels_last(&v1), amp::to_channels_last(&v2)) } else { (v1, v2) };
        let out = if autocast {
            let m = &mut *method;
            tch::autocast(true, || m.training_step(&v1, &v2))?
        } else {
            method.training_step(&v1, &v2)?
        };
        let mut metrics = out.metrics;
        metrics.extend(backward_and_step(&out.loss, &mut opt, scaler.as_mut(), None)?);
        method.after_step(step, total)?;
        // As the engine's `PendingStep`: the scalars it logs, stacked in one f64 row, not read.
        let mut row = vec![out.loss.detach().to_kind(Kind::Double)];
        if let Some(z) = &out.z {
            row.push(std_of_l2_normalized_tensor(z)?.to_kind(Kind::Double));
        }
        row.extend(metrics.device.iter().map(|(_, t)| t.to_kind(Kind::Double).reshape([] as [i64; 0])));
        let row = Tensor::stack(&row, 0); // [1 + z? + K]
        losses.push(row.get(0));
        // --- end of the step ---
        sync(device);
        if step >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
            cpu.push(selfsup::cli::process_cpu_seconds() - c0);
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
    })
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let device = selfsup::pick_device();
    let cuda = matches!(device, Device::Cuda(_));
    let precision = match (cuda, a.precision) {
        (false, _) | (true, Precision::Off) => "fp32",
        (true, Precision::Bf16) => "bf16 autocast",
        (true, Precision::Fp16) => "fp16 autocast",
    };
    let layout = if a.channels_last && cuda { "channels-last" } else { "NCHW" };
    let config = a.label.clone().unwrap_or_else(|| format!("selfsup, {precision}, {layout}"));
    tch::manual_seed(1234);
    let images = Tensor::randint(256, [a.batch, 3, a.size, a.size], (Kind::Uint8, device)); // [B, 3, S, S] u8
    let mut rows = Vec::new();
    for m in &a.methods {
        let row = bench_method(m, &a, device, &images)?;
        eprintln!("{config}: {} {:.1} ms/step (loss {:.4})", row.method, row.median_ms, row.loss);
        rows.push(row);
    }
    let dev = selfsup::device::describe(device);
    println!(
        "# bench_train_step: ResNet-18, {s}x{s}, batch {b}, two views, {n} steps after {w} warm-up, {dev}",
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
    if let Some(path) = &a.json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "impl": "selfsup", "config": config, "method": r.method, "device": dev,
                    "precision": precision, "layout": layout, "batch": a.batch, "size": a.size,
                    "steps": a.steps, "warmup": a.warmup, "median_ms": r.median_ms, "p90_ms": r.p90_ms,
                    "images_per_sec": r.images_per_sec, "cpu_ms": r.cpu_ms, "loss": r.loss,
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_vec_pretty(&list)?)?;
    }
    Ok(())
}
