//! Benchmark of the batched augmentations (issue 3, "Speed"; B3): augmented images per second
//! for the SimCLR preset on 96×96 u8 batches of 256, two views per batch, on the device
//! `pick_device()` chooses. Prints a Markdown table (median of the repetitions after warm-up)
//! and the median time of each step alone, so the expensive op shows.
//!
//! ```text
//! cargo run --release --example bench_augment [-- REPS [BATCH [SIZE]]]     # defaults 10 256 96
//! ```
//!
//! Target (issue 3): on an H100 the two views of a batch cost under 15% of a ResNet-18 SimCLR
//! training step (256 pairs at 96×96, about 12–22 ms there), i.e. under about 2–3 ms.
use clap::Parser;
use selfsup::augment::{self, ops, presets};
use selfsup::tch::{self, Device, Kind, Tensor};
use std::time::Instant;

/// Augmented images per second of the SimCLR preset, two views per batch.
#[derive(Parser)]
#[command(name = "bench_augment")]
struct Args {
    /// Timed repetitions (after 3 warm-up ones)
    #[arg(default_value_t = 10, value_parser = selfsup::cli::at_least(1usize))]
    reps: usize,
    /// Images per batch
    #[arg(default_value_t = 256, value_parser = selfsup::cli::at_least(1i64))]
    batch: i64,
    /// Side of the images in pixels (at least 16)
    #[arg(default_value_t = 96, value_parser = selfsup::cli::at_least(16i64))]
    size: i64,
}

/// A deterministic jitter part: images and one factor per sample.
type Adjust = fn(&Tensor, &[f64]) -> selfsup::Result<Tensor>;

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}


/// Median wall seconds and median CPU seconds of `f` over `reps` runs after `warmup` runs.
fn time<F: FnMut() -> selfsup::Result<()>>(
    device: Device,
    warmup: usize,
    reps: usize,
    mut f: F,
) -> selfsup::Result<(f64, f64)> {
    for _ in 0..warmup {
        f()?;
    }
    sync(device);
    let (mut wall, mut cpu) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for _ in 0..reps {
        let (t, c) = (Instant::now(), selfsup::cli::process_cpu_seconds());
        f()?;
        sync(device);
        wall.push(t.elapsed().as_secs_f64());
        cpu.push(selfsup::cli::process_cpu_seconds() - c);
    }
    Ok((median(wall), median(cpu)))
}

fn main() -> selfsup::Result<()> {
    let Args { reps, batch, size } = Args::parse();
    let warmup = 3;
    let device = selfsup::pick_device();
    let augment = presets::simclr(size);
    tch::manual_seed(0);
    let images = Tensor::randint(256, [batch, 3, size, size], (Kind::Uint8, device)); // [B, 3, S, S] u8
    let mut rng = augment::rng(0);

    let _guard = tch::no_grad_guard();
    // `Augment::apply`'s path (per image on the CPU), and on the CPU the batched ops beside it.
    let mut rows = vec![("Augment::apply", time(device, warmup, reps, || augment.two_views(&images, &mut rng).map(|_| ()))?)];
    if device == Device::Cpu {
        let batched = || -> selfsup::Result<()> {
            let _ = augment.apply_batched(&images, &mut rng)?;
            let _ = augment.apply_batched(&images, &mut rng)?;
            Ok(())
        };
        rows.push(("batched ops (apply_batched)", time(device, warmup, reps, batched)?));
    }

    println!("# bench_augment: SimCLR preset, {size}x{size}, batch {batch}, two views, {reps} reps after {warmup} warm-up, median");
    println!();
    println!("| device | threads | path | batch | two views of a batch, wall (ms) | augmented images/s | CPU time (ms) |");
    println!("|---|---|---|---|---|---|---|");
    for (path, (pair, pair_cpu)) in &rows {
        println!(
            "| {} | {} | {path} | {batch} | {:.1} | {:.0} | {:.1} |",
            selfsup::device::describe(device),
            tch::get_num_threads(),
            pair * 1e3,
            2.0 * batch as f64 / pair,
            pair_cpu * 1e3
        );
    }
    println!();
    println!("Per step of the batched ops, one view, every sample (p = 1; the preset applies it with p), median ms:");
    println!();
    println!("| step | preset p | ms at p = 1 |");
    println!("|---|---|---|");
    let mut x = images.to_kind(Kind::Float) / 255.0; // [B, 3, S, S] f32
    for step in &augment.steps {
        // Every step at p = 1 shows its full cost; the preset's own p scales it down.
        let full = augment::Step::new(step.op.clone(), 1.0);
        let input = x.shallow_clone();
        let (t, _) = time(device, 1, reps, || full.apply(&input, &mut rng).map(|_| ()))?;
        println!("| {:?} | {} | {:.2} |", step.op.kind(), step.p, t * 1e3);
        if let augment::Op::ColorJitter(_) = step.op {
            // The four parts of the jitter, each on the whole batch with factor 1.1 / shift 0.1.
            let f = vec![1.1; batch as usize];
            let parts: [(&str, Adjust); 4] = [
                ("brightness", ops::adjust_brightness),
                ("contrast", ops::adjust_contrast),
                ("saturation", ops::adjust_saturation),
                ("hue", ops::adjust_hue),
            ];
            for (name, part) in parts {
                let factors = if name == "hue" { vec![0.1; batch as usize] } else { f.clone() };
                let (t, _) = time(device, 1, reps, || part(&input, &factors).map(|_| ()))?;
                println!("| - {name} | | {:.2} |", t * 1e3);
            }
        }
        x = step.apply(&x, &mut rng)?;
    }
    Ok(())
}
