//! The longer numerics check of CPU bf16 autocast (issue 17): every method pre-trains `steps`
//! steps through `train::pretrain` at the lesson scale (the embedded 32 px dataset; the
//! network and batch of notebooks 01 and 02's `lesson`: ResNet-18 at width 16 with the 3×3
//! stem, batch 64; the methods' `tiny` heads) in f32 and under CPU bf16 autocast, from the same
//! seed on the same batches, then a kNN probe (k 200, τ 0.1) reads both backbones' frozen
//! features; for each of several seeds. One row per run: first, last and largest loss, the kNN
//! accuracy, seconds; then per method the probe's f32 − bf16 difference for each seed and their
//! mean. Exits with 1 when a loss is not finite, a bf16 first loss strays more than 5 % from the
//! f32 one, or the bf16 probe is on average more than `tolerance` (default 0.04) below the f32 one.
//!
//! Why a mean over seeds: after 200 steps a run in bf16 has followed another path than the one
//! in f32 (one step already moves the gradients by 7–48 %), so the two probes differ by chance:
//! by 4.0 points (standard deviation) over twelve seeds of Barlow Twins, from 7.0 points above
//! f32 to 6.8 below, with a mean of 0.2 above (BENCHMARKS.md; PyTorch's own runs of this recipe,
//! `bench/cpu_bf16_reference.py`, whose single step equals the kit's bit for bit, spread by 2.3
//! points from the same weights, with a mean of 0.7). One pair cannot be held to a few points;
//! the mean of four, with a standard error of about 2 points, can be held to 4.
//!
//! ```text
//! cargo run --release --example cpu_bf16_check -- [steps 200] [methods simclr,moco_v2,byol,barlow_twins] [tolerance 0.04] [--width 16] [--batch 64] [--seeds 0,1,2,3]
//! ```
//!
//! `--width 64 --batch 32` is the methods' full-width `tiny` preset (about ten times the compute).
//! `--save-data DIR` also writes, for `bench/cpu_bf16_reference.py` (PyTorch's own f32 / bf16
//! autocast runs of the same check): the three sets as `.npy` files, and each method's starting
//! weights (`{method}_seed{seed}_init.npz`), so that the reference can start from the same weights.
//!
//! The bf16 runs are forced (`CpuBf16Mode::Force`): natively where the CPU has bf16, without
//! the timing of both precisions that would let a run pick f32; emulated elsewhere (libtorch
//! emulates bf16, slowly), so the numerics can be checked on any CPU, and the seconds column then
//! says nothing about speed (see BENCHMARKS.md).
use clap::Parser;
use selfsup::methods::registry::{MethodConfig, MethodKind};
use selfsup::prelude::*;
use selfsup::train::amp::{self, CpuBf16Mode};
use selfsup::train::{backbone_knn_accuracy, KnnConfig};
use std::process::ExitCode;
use std::time::Instant;

/// The methods checked, each with its `tiny` preset.
const METHODS: [MethodKind; 4] = [MethodKind::SimClr, MethodKind::MocoV2, MethodKind::Byol, MethodKind::BarlowTwins];

/// f32 against CPU bf16 autocast for each method; exits with 1 when they disagree.
#[derive(Parser)]
#[command(name = "cpu_bf16_check")]
struct Args {
    /// Training steps of each run
    #[arg(default_value_t = 200, value_parser = selfsup::cli::at_least(1usize))]
    steps: usize,
    /// The methods, comma-separated (of simclr, moco_v2, byol, barlow_twins)
    #[arg(value_parser = method_list, default_value_t = MethodList(METHODS.to_vec()))]
    methods: MethodList,
    /// How far (accuracy, 0 to 1) the bf16 kNN probe may fall below the f32 one, on average over
    /// the seeds
    #[arg(default_value_t = 0.04, value_parser = selfsup::cli::unit_interval)]
    tolerance: f64,
    /// Channels of the ResNet-18's first stage (the lessons of notebooks 01 and 02: 16)
    #[arg(long, default_value_t = 16, value_parser = selfsup::cli::at_least(1i64))]
    width: i64,
    /// Images per batch (two views each)
    #[arg(long, default_value_t = 64, value_parser = selfsup::cli::at_least(2usize))]
    batch: usize,
    /// Seeds of the weights, the batches and the augmentations (each the same for both
    /// precisions), comma-separated: the probe is judged on the mean over them
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 1, 2, 3], num_args = 1..)]
    seeds: Vec<u64>,
    /// Also write the unlabelled, train and test sets (u8 images `[N, 3, 32, 32]`, i64 labels) as
    /// `.npy` files in this folder, for bench/cpu_bf16_reference.py
    #[arg(long)]
    save_data: Option<std::path::PathBuf>,
}

/// Methods given as one comma-separated positional argument (a list there would swallow the
/// tolerance after it).
#[derive(Clone)]
struct MethodList(Vec<MethodKind>);

impl std::fmt::Display for MethodList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.iter().map(|k| k.name()).collect::<Vec<_>>().join(","))
    }
}

fn method_list(s: &str) -> std::result::Result<MethodList, String> {
    let one = |name: &str| match name.trim().parse::<MethodKind>() {
        Ok(k) if METHODS.contains(&k) => Ok(k),
        _ => Err(format!("'{}' is not one of {}", name.trim(), MethodList(METHODS.to_vec()))),
    };
    s.split(',').map(one).collect::<std::result::Result<_, _>>().map(MethodList)
}

/// The method's `tiny` preset on ResNet-18 at `width` with the 3×3 stem, its weights from `seed`.
fn method(kind: MethodKind, width: i64, seed: u64) -> Result<Box<dyn SslMethod>> {
    seed_everything(seed);
    let config = match kind {
        MethodKind::SimClr => MethodConfig::SimClr(SimClrConfig::tiny()),
        MethodKind::MocoV2 => MethodConfig::Moco(MocoConfig::tiny()),
        MethodKind::Byol => MethodConfig::Byol(ByolConfig::tiny()),
        MethodKind::BarlowTwins => MethodConfig::BarlowTwins(BarlowTwinsConfig::tiny()),
        other => return Err(Error::Config(format!("cpu_bf16_check has no run for {other}"))),
    };
    config.backbone(ResNetConfig { small_images: true, ..Default::default() }.width(width)).build(Device::Cpu)
}

struct Run {
    first: f64,
    last: f64,
    max: f64,
    knn: f64,
    seconds: f64,
}

/// The network, batch and seed of every run.
#[derive(Clone, Copy)]
struct Setting {
    width: i64,
    batch: usize,
    seed: u64,
}

fn run(kind: MethodKind, precision: Precision, steps: usize, sets: &[ImageSet; 3], s: Setting) -> Result<Run> {
    let [unlabeled, train_set, test_set] = sets;
    let Setting { width, batch, seed } = s;
    let mut m = method(kind, width, seed)?;
    let cfg = TrainConfig {
        mixed_precision: precision,
        max_steps: Some(steps),
        batch_size: batch,
        seed,
        epochs: steps.div_ceil((unlabeled.len() / batch).max(1)).max(1),
        log_every: 10,
        checkpoint_every_steps: None,
        checkpoint_every_secs: None,
        ..TrainConfig::tiny()
    }
    .resume(false)
    .progress(false);
    let out = std::env::temp_dir().join(format!("selfsup_cpu_bf16_check_{kind}_{precision:?}_{}", std::process::id()));
    let aug = augment::presets::simclr(32);
    let started = Instant::now();
    let history = train::pretrain(m.as_mut(), unlabeled, &aug, &cfg, &out)?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&out);
    let losses: Vec<f64> = history.losses().iter().map(|p| p.1).collect();
    let norm = aug.output_normalization();
    let knn = backbone_knn_accuracy(m.backbone(), train_set, test_set, norm.as_ref(), &KnnConfig::default(), Device::Cpu)?;
    Ok(Run {
        first: losses.first().copied().unwrap_or(f64::NAN),
        last: losses.last().copied().unwrap_or(f64::NAN),
        max: losses.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        knn,
        seconds,
    })
}

fn main() -> ExitCode {
    match check(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(Args { steps, methods, tolerance, width, batch, seeds, save_data }: Args) -> Result<bool> {
    let native = amp::cpu_bf16();
    // Forced in any case: with native bf16 a run would otherwise time both precisions and train in
    // the faster one (train::bf16_probe), and the "bf16" run could be an f32 one.
    amp::set_cpu_bf16_mode(Some(CpuBf16Mode::Force));
    if !native.enabled() {
        println!("note: no native bf16 on this CPU: bf16 is forced and emulated (slow); the numerics are what is checked");
    }
    println!("device: {}", selfsup::device::describe(Device::Cpu));
    let seed_list = seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    println!("network: ResNet-18 at width {width}, 3x3 stem; batch {batch} of 32 px images, two views each; seeds {seed_list}");
    let data = SyntheticConfig::default(); // the lesson scale's embedded 32 px dataset
    let sets = [
        data::synthetic::load(Split::Unlabeled, &data)?,
        data::synthetic::load(Split::Train, &data)?,
        data::synthetic::load(Split::Test, &data)?,
    ];
    if let Some(dir) = &save_data {
        save_sets(&sets, dir)?;
        println!("data: the three sets written to {} as .npy", dir.display());
    }
    println!("| method | seed | precision | steps | first loss | last loss | largest loss | kNN accuracy | seconds | check |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut ok = true;
    let mut summaries = vec![];
    for name in methods.0 {
        let mut gaps = vec![]; // f32 − bf16 probe, per seed
        for &seed in &seeds {
            let setting = Setting { width, batch, seed };
            if let Some(dir) = &save_data {
                let weights: Vec<(String, Tensor)> = method(name, width, seed)?.online().variables().into_iter().collect();
                Tensor::write_npz(&weights, dir.join(format!("{name}_seed{seed}_init.npz")))?;
            }
            let f32_run = run(name, Precision::Off, steps, &sets, setting)?;
            let bf16_run = run(name, Precision::Bf16, steps, &sets, setting)?;
            gaps.push(f32_run.knn - bf16_run.knn);
            for (precision, r) in [("f32", &f32_run), ("bf16", &bf16_run)] {
                let finite = r.first.is_finite() && r.last.is_finite() && r.max.is_finite();
                let close = (r.first - f32_run.first).abs() <= 0.05 * f32_run.first.abs();
                let verdict = match (finite, close) {
                    (false, _) => "FAIL: loss not finite",
                    (_, false) => "FAIL: first loss too far from f32",
                    _ => "ok",
                };
                ok &= finite && close;
                println!(
                    "| {name} | {seed} | {precision} | {steps} | {:.4} | {:.4} | {:.4} | {:.1}% | {:.0} | {verdict} |",
                    r.first,
                    r.last,
                    r.max,
                    100.0 * r.knn,
                    r.seconds
                );
            }
        }
        let n = gaps.len() as f64;
        let mean = gaps.iter().sum::<f64>() / n;
        let se = if gaps.len() > 1 {
            (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt()
        } else {
            f64::NAN
        };
        let probe = mean <= tolerance;
        ok &= probe;
        let each = gaps.iter().map(|g| format!("{:+.1}", 100.0 * g)).collect::<Vec<_>>().join(", ");
        let verdict = if probe { "ok" } else { "FAIL: bf16 probes below f32 on average" };
        summaries.push(format!(
            "{name}: f32 minus bf16 probe, points: {each}; mean {:+.1} (standard error {:.1}), tolerance {:.1}: {verdict}",
            100.0 * mean,
            100.0 * se,
            100.0 * tolerance
        ));
    }
    for line in summaries {
        println!("{line}");
    }
    println!("{}", if ok { "all runs finite and consistent" } else { "some runs FAILED (see the table)" });
    Ok(ok)
}

/// The sets as `unlabeled.npy`, `train.npy`, `train_labels.npy`, `test.npy`, `test_labels.npy`.
fn save_sets([unlabeled, train_set, test_set]: &[ImageSet; 3], dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    unlabeled.images.write_npy(dir.join("unlabeled.npy"))?;
    for (name, set) in [("train", train_set), ("test", test_set)] {
        set.images.write_npy(dir.join(format!("{name}.npy")))?;
        let labels = set.labels.as_ref().ok_or_else(|| Error::Data(format!("the {name} set has no labels")))?;
        labels.to_kind(Kind::Int64).write_npy(dir.join(format!("{name}_labels.npy")))?;
    }
    Ok(())
}

