//! `selfsup-train`: long pre-training runs from a terminal while a notebook watches (B8).
//!
//! The options of facebookresearch/moco `main_moco.py` (S4.1) plus the method, the dataset and
//! the output folder. The run writes `<output>/checkpoint.safetensors`, `config.json` and
//! `history.jsonl`; a notebook reads the history with
//! `History::load_jsonl("<output>/history.jsonl")?` while the run goes on, and runs the same
//! `train::pretrain` call on that folder to load the finished model. Running the same command
//! again continues from the last checkpoint.
//!
//! ```text
//! # MoCo v2 (main_moco.py --mlp --moco-t 0.2 --aug-plus --cos) on the embedded data, 2 epochs:
//! selfsup-train --method moco --mlp --moco-t 0.2 --aug-plus --cos --epochs 2 -b 64 --moco-k 4096
//! # BYOL on STL-10's unlabelled split, watched from a notebook:
//! selfsup-train --method byol --dataset stl10 --data-dir assets/data --output runs/byol_stl10 --lr 0.2 --optimizer lars
//! ```
use selfsup::augment::{presets, TwoViews};
use selfsup::data::synthetic::{self, SyntheticConfig};
use selfsup::data::{cifar, stl10, ImageSet, Split};
use selfsup::methods::registry::{self, MethodConfig, MethodKind, MethodSpec};
use selfsup::methods::{Moco, MocoConfig, SslMethod};
use selfsup::models::{Depth, HeadConfig, ResNetConfig};
use selfsup::train::{self, KnnConfig, KnnMonitor, LrSchedule, OptimizerConfig, Precision, TrainConfig};
use selfsup::{Error, Result};
use std::path::PathBuf;
use std::process::ExitCode;

const HELP: &str = "selfsup-train: self-supervised pre-training from the command line (resumes by itself)

USAGE: selfsup-train [OPTIONS]

Method and data:
  --method NAME        moco (MoCo v1 unless --mlp/--aug-plus/--cos), moco_v2 (= moco --mlp --moco-t 0.2
                       --aug-plus --cos), simclr, byol, byol_no_momentum, barlow_twins   [moco_v2]
  --dataset NAME       synthetic | stl10 (unlabelled split) | cifar10 (train split)      [synthetic]
  --data-dir DIR       where stl10_binary/ or cifar-10-batches-*/ are                    [assets/data]
  --image-size N       side of the augmented crops, 16..=1024               [the dataset's image size]
  --subset N           pre-train on the first N images only (quick tries, tests)             [all]
  --output DIR         run folder: checkpoint, config.json, history.jsonl     [runs/<method>_<dataset>]
  --resume PATH        continue the run in PATH (a run folder or its checkpoint.safetensors);
                       the run in --output is continued anyway, --restart starts it over
  --restart            ignore an existing checkpoint in the output folder and start over

main_moco.py options (S4.1):
  -a, --arch NAME      resnet18 | resnet34 | resnet50 (small-image stem at 64 px or less) [resnet18]
  -j, --workers N      batches prepared ahead (augmentation runs batched on the device)  [2]
  --epochs N           planned epochs (the schedule spans them)                       [200]
  --start-epoch N      only 0 is accepted (main_moco.py's default): the epoch comes from the checkpoint
  -b, --batch-size N   images per step                                                [256]
  --lr F               base learning rate                                             [0.03]
  --momentum F         SGD / LARS momentum                                            [0.9]
  --wd, --weight-decay F                                                              [1e-4]
  --moco-dim N         MoCo feature dimension                                         [128]
  --moco-k N           MoCo queue size (a multiple of the batch size)                 [65536]
  --moco-m F           MoCo momentum of the key encoder                               [0.999]
  --moco-t F           softmax temperature τ; for simclr NT-Xent's τ    [0.07; moco_v2: 0.2; simclr: 0.5]
  --mlp                MLP head (MoCo v2)
  --aug-plus           MoCo v2 augmentation (with blur)
                       (--moco-dim/-k/-m, --mlp, --aug-plus apply to moco only and --moco-t to moco and
                       simclr: given for another method they are rejected, not ignored)
  --cos                cosine schedule (else x0.1 at 60% and 80% of the epochs: --schedule 120 160)

More:
  --optimizer NAME     sgd | adam | adamw | lars                                      [sgd]
  --max-steps N        stop after N steps in total (run again with a larger N to continue)
  --time-budget SECS   stop (with a checkpoint) after this long
  --seed N                                                                            [0]
  --precision P        off | bf16 | fp16 (CUDA only)                                  [bf16]
  --knn-every N        online kNN accuracy every N epochs (needs labelled train/test)   [off]
  --checkpoint-every N checkpoint every N steps (and every 10 minutes, and at the end)
  -h, --help

Ctrl-C or SIGTERM: the current step ends, a checkpoint is written, and the same command continues
the run; a second Ctrl-C quits at once.";

#[derive(Debug)]
struct Args {
    method: String,
    dataset: String,
    data_dir: PathBuf,
    image_size: Option<i64>,
    subset: Option<usize>,
    output: Option<PathBuf>,
    resume: Option<PathBuf>,
    restart: bool,
    arch: String,
    workers: usize,
    epochs: usize,
    start_epoch: Option<usize>,
    batch_size: usize,
    lr: f64,
    momentum: f64,
    wd: f64,
    moco_dim: i64,
    moco_k: i64,
    moco_m: f64,
    moco_t: Option<f64>,
    mlp: bool,
    aug_plus: bool,
    cos: bool,
    optimizer: String,
    max_steps: Option<usize>,
    time_budget: Option<f64>,
    seed: u64,
    precision: String,
    knn_every: usize,
    checkpoint_every: Option<usize>,
    /// The flags given on the command line (to reject those that mean nothing for the method).
    given: Vec<String>,
}

impl Default for Args {
    /// main_moco.py's defaults, except the architecture (ResNet-18: the kit's data is small).
    fn default() -> Self {
        Args {
            method: "moco_v2".into(),
            dataset: "synthetic".into(),
            data_dir: PathBuf::from("assets/data"),
            image_size: None,
            subset: None,
            output: None,
            resume: None,
            restart: false,
            arch: "resnet18".into(),
            workers: 2,
            epochs: 200,
            start_epoch: None,
            batch_size: 256,
            lr: 0.03,
            momentum: 0.9,
            wd: 1e-4,
            moco_dim: 128,
            moco_k: 65536,
            moco_m: 0.999,
            moco_t: None,
            mlp: false,
            aug_plus: false,
            cos: false,
            optimizer: "sgd".into(),
            max_steps: None,
            time_budget: None,
            seed: 0,
            precision: "bf16".into(),
            knn_every: 0,
            checkpoint_every: None,
            given: vec![],
        }
    }
}

fn parse<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T> {
    selfsup::cli::value(flag, value, "")
}

/// `Ok(None)` when help was asked for.
fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Option<Args>> {
    let mut a = Args::default();
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        // --flag=value as well as --flag value
        let (flag, inline) = selfsup::cli::split_flag(&arg);
        let mut value = || inline.clone().or_else(|| it.next());
        a.given.push(flag.clone());
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--method" => a.method = parse(&flag, value())?,
            "--dataset" => a.dataset = parse(&flag, value())?,
            "--data-dir" => a.data_dir = parse(&flag, value())?,
            "--image-size" => a.image_size = Some(parse(&flag, value())?),
            "--subset" => a.subset = Some(parse(&flag, value())?),
            "--output" => a.output = Some(parse(&flag, value())?),
            "--resume" => a.resume = Some(parse(&flag, value())?),
            "--restart" => a.restart = true,
            "-a" | "--arch" => a.arch = parse(&flag, value())?,
            "-j" | "--workers" => a.workers = parse(&flag, value())?,
            "--epochs" => a.epochs = parse(&flag, value())?,
            "--start-epoch" => a.start_epoch = Some(parse(&flag, value())?),
            "-b" | "--batch-size" => a.batch_size = parse(&flag, value())?,
            "--lr" | "--learning-rate" => a.lr = parse(&flag, value())?,
            "--momentum" => a.momentum = parse(&flag, value())?,
            "--wd" | "--weight-decay" => a.wd = parse(&flag, value())?,
            "--moco-dim" => a.moco_dim = parse(&flag, value())?,
            "--moco-k" => a.moco_k = parse(&flag, value())?,
            "--moco-m" => a.moco_m = parse(&flag, value())?,
            "--moco-t" => a.moco_t = Some(parse(&flag, value())?),
            "--mlp" => a.mlp = true,
            "--aug-plus" => a.aug_plus = true,
            "--cos" => a.cos = true,
            "--optimizer" => a.optimizer = parse(&flag, value())?,
            "--max-steps" => a.max_steps = Some(parse(&flag, value())?),
            "--time-budget" => a.time_budget = Some(parse(&flag, value())?),
            "--seed" => a.seed = parse(&flag, value())?,
            "--precision" => a.precision = parse(&flag, value())?,
            "--knn-every" => a.knn_every = parse(&flag, value())?,
            "--checkpoint-every" => a.checkpoint_every = Some(parse(&flag, value())?),
            other => return Err(Error::Config(format!("unknown option '{other}' (see --help)"))),
        }
    }
    check_args(&a)?;
    if a.method == "moco_v2" {
        a.mlp = true;
        a.aug_plus = true;
        a.cos = true;
    }
    Ok(Some(a))
}

/// Rejects values out of range and options that mean nothing for the chosen method, naming the
/// option and what to do (the ranges TrainConfig checks itself are left to it).
fn check_args(a: &Args) -> Result<()> {
    let moco = matches!(a.method.as_str(), "moco" | "moco_v1" | "moco_v2");
    let given = |f: &[&str]| a.given.iter().find(|g| f.contains(&g.as_str())).cloned();
    if !moco {
        for flags in [&["--moco-dim"][..], &["--moco-k"], &["--moco-m"], &["--mlp"], &["--aug-plus"]] {
            if let Some(f) = given(flags) {
                return Err(Error::Config(format!(
                    "{f} applies to MoCo only, and --method is {}: remove it (the method's own defaults are used)",
                    a.method
                )));
            }
        }
        if a.method != "simclr" && a.moco_t.is_some() {
            return Err(Error::Config(format!(
                "--moco-t sets the softmax temperature of MoCo and SimCLR; {} has none: remove it",
                a.method
            )));
        }
    }
    if let Some(s) = a.image_size {
        if !(16..=1024).contains(&s) {
            return Err(Error::Config(format!("--image-size must be in 16..=1024 pixels, got {s}")));
        }
    }
    if let Some(e) = a.start_epoch.filter(|&e| e != 0) {
        return Err(Error::Config(format!(
            "--start-epoch {e}: the epoch to continue from comes from the checkpoint in the output folder; remove \
             the option (run the same command again to continue)"
        )));
    }
    if a.subset == Some(0) {
        return Err(Error::Config("--subset must be at least 1 image (or left out for all)".into()));
    }
    if a.workers > 64 {
        return Err(Error::Config(format!("--workers must be in 0..=64, got {}", a.workers)));
    }
    if let Some(t) = a.moco_t.filter(|t| !(t.is_finite() && *t > 0.0)) {
        return Err(Error::Config(format!("--moco-t must be a positive temperature, got {t}")));
    }
    if !(a.moco_m.is_finite() && (0.0..=1.0).contains(&a.moco_m)) {
        return Err(Error::Config(format!("--moco-m must be in [0, 1], got {}", a.moco_m)));
    }
    if !(a.momentum.is_finite() && (0.0..1.0).contains(&a.momentum)) {
        return Err(Error::Config(format!("--momentum must be in [0, 1), got {}", a.momentum)));
    }
    if a.moco_k <= 0 || a.moco_dim <= 0 {
        return Err(Error::Config(format!(
            "--moco-k and --moco-dim must be positive, got {} and {}",
            a.moco_k, a.moco_dim
        )));
    }
    if a.time_budget.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
        return Err(Error::Config("--time-budget must be a positive number of seconds".into()));
    }
    Ok(())
}

/// The pre-training set (its first `--subset` images) and, when it has them and `--knn-every`
/// asks for them, labelled train/test sets for the kNN monitor.
fn load_data(a: &Args) -> Result<(ImageSet, Option<(ImageSet, ImageSet)>)> {
    let (set, knn) = load_sets(a)?;
    Ok((a.subset.map_or_else(|| set.clone(), |n| set.head(n)), knn))
}

fn load_sets(a: &Args) -> Result<(ImageSet, Option<(ImageSet, ImageSet)>)> {
    match a.dataset.as_str() {
        "synthetic" => {
            let mut cfg = SyntheticConfig::default();
            if let Some(s) = a.image_size {
                cfg = cfg.image_size(s as u32);
            }
            if let Some(n) = a.subset {
                cfg.unlabeled = n; // draw only these
            }
            let knn = if a.knn_every > 0 {
                Some((synthetic::load(Split::Train, &cfg)?, synthetic::load(Split::Test, &cfg)?))
            } else {
                None
            };
            Ok((synthetic::load(Split::Unlabeled, &cfg)?, knn))
        }
        "stl10" => {
            let train = || stl10::load(&a.data_dir, Split::Train);
            let knn = if a.knn_every > 0 { Some((train()?, stl10::load(&a.data_dir, Split::Test)?)) } else { None };
            Ok((stl10::load(&a.data_dir, Split::Unlabeled)?, knn))
        }
        "cifar10" => {
            let train = cifar::load_cifar10(&a.data_dir, Split::Train)?;
            let knn = if a.knn_every > 0 {
                Some((train.clone(), cifar::load_cifar10(&a.data_dir, Split::Test)?))
            } else {
                None
            };
            Ok((train, knn))
        }
        other => Err(Error::Config(format!("unknown --dataset '{other}': use synthetic, stl10 or cifar10"))),
    }
}

fn backbone(a: &Args, image_size: i64) -> Result<ResNetConfig> {
    let depth = match a.arch.as_str() {
        "resnet18" => Depth::R18,
        "resnet34" => Depth::R34,
        "resnet50" => Depth::R50,
        other => return Err(Error::Config(format!("unknown --arch '{other}': use resnet18, resnet34 or resnet50"))),
    };
    Ok(ResNetConfig { depth, small_images: registry::small_image_stem(image_size), ..Default::default() })
}

fn train_config(a: &Args) -> Result<TrainConfig> {
    let optimizer = match a.optimizer.as_str() {
        "sgd" => OptimizerConfig::sgd(a.momentum),
        "adam" => OptimizerConfig::adam(),
        "adamw" => OptimizerConfig::adamw(),
        "lars" => OptimizerConfig::Lars { momentum: a.momentum, trust_coefficient: 0.001 },
        other => return Err(Error::Config(format!("unknown --optimizer '{other}': use sgd, adam, adamw or lars"))),
    };
    let schedule = if a.cos {
        LrSchedule::cosine(0)
    } else {
        // main_moco.py --schedule 120 160 of 200 epochs
        LrSchedule::step_decay(vec![a.epochs * 3 / 5, a.epochs * 4 / 5], 0.1)
    };
    let mixed_precision = match a.precision.as_str() {
        "off" => Precision::Off,
        "bf16" => Precision::Bf16,
        "fp16" => Precision::Fp16,
        other => return Err(Error::Config(format!("unknown --precision '{other}': use off, bf16 or fp16"))),
    };
    Ok(TrainConfig {
        epochs: a.epochs,
        max_steps: a.max_steps,
        batch_size: a.batch_size,
        lr: a.lr,
        weight_decay: a.wd,
        optimizer,
        schedule,
        seed: a.seed,
        time_budget_secs: a.time_budget,
        checkpoint_every_steps: a.checkpoint_every,
        mixed_precision,
        resume: !a.restart,
        prefetch: a.workers.min(64),
        ..TrainConfig::default()
    })
}

fn run(a: Args) -> Result<()> {
    selfsup::cli::install_stop_handlers();
    let device = selfsup::pick_device();
    let (set, knn_sets) = load_data(&a)?;
    let image_size = a.image_size.unwrap_or(set.image_size().0);
    let output = match &a.resume {
        Some(p) if p.extension().is_some_and(|e| e == "safetensors") => {
            p.parent().map(PathBuf::from).unwrap_or_default()
        }
        Some(p) => p.clone(),
        None => a.output.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{}_{}", a.method, a.dataset))),
    };
    let cfg = train_config(&a)?;
    let bb = backbone(&a, image_size)?;
    let knn_cfg = KnnConfig { every_epochs: a.knn_every.max(1), ..KnnConfig::default() };
    let knn = match (&knn_sets, a.knn_every) {
        (Some((train, test)), n) if n > 0 => Some(KnnMonitor { train, test, config: &knn_cfg }),
        _ => None,
    };
    // --seed decides the initial weights too, so the same command gives the same run.
    selfsup::seed_everything(a.seed);
    let (mut method, augment): (Box<dyn SslMethod>, TwoViews) = match a.method.as_str() {
        // main_moco.py's flags decide MoCo's recipe: `moco` is v1 unless --mlp/--aug-plus/--cos.
        "moco" | "moco_v1" | "moco_v2" => {
            let base = if a.mlp { MocoConfig::v2() } else { MocoConfig::v1() };
            let head = if a.mlp { HeadConfig::moco_v2() } else { HeadConfig::moco_v1() };
            let t = a.moco_t.unwrap_or(if a.method == "moco_v2" { 0.2 } else { 0.07 });
            let cfg = base
                .backbone(bb.clone())
                .head(head.for_features(bb.feature_dim()).out_dim(a.moco_dim))
                .queue_size(a.moco_k)
                .momentum(a.moco_m)
                .temperature(t);
            let aug = if a.aug_plus { presets::moco_v2(image_size) } else { presets::moco_v1(image_size) };
            (Box::new(Moco::new(cfg, device)?), aug.into())
        }
        // The other methods: the registry's recipe for this image size (methods::registry).
        name => {
            let spec = MethodSpec { kind: name.parse::<MethodKind>()?, backbone: bb, image_size };
            let config = match (spec.config(), a.moco_t) {
                (MethodConfig::SimClr(c), Some(t)) => MethodConfig::SimClr(c.temperature(t)),
                (config, _) => config,
            };
            (config.build(device)?, spec.views())
        }
    };
    println!(
        "selfsup-train: {} on {} ({} images, crops {image_size}px) on {}; run folder {}",
        method.name(),
        set.name,
        set.len(),
        selfsup::device::describe(device),
        output.display()
    );
    println!("watch it from a notebook: History::load_jsonl(\"{}/history.jsonl\")?", output.display());
    let history = train::pretrain_monitored(method.as_mut(), &set, &augment, &cfg, &output, knn)?;
    if let Some(last) = history.last_epoch() {
        println!("last epoch {}: mean loss {:.4}", last.epoch + 1, last.mean_loss);
    }
    Ok(())
}

fn main() -> ExitCode {
    selfsup::cli::main(HELP, parse_args, run)
}
