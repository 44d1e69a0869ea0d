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
//!
//! Data-parallel (built with `--features distributed`; docs/distributed.md): `--nproc N` starts
//! N ranks on this machine, and `torchrun --no-python --nproc-per-node N selfsup-train …` works
//! too. `-b` stays the global batch, split over the ranks.
use selfsup::augment::{presets, TwoViews};
use selfsup::data::synthetic::{self, SyntheticConfig};
use selfsup::data::{cifar, stl10, ImageSet, Split};
use selfsup::methods::registry::{self, MethodConfig, MethodKind, MethodSpec};
use selfsup::methods::{Moco, MocoConfig, SslMethod};
use selfsup::models::{Depth, HeadConfig, ResNetConfig};
use selfsup::tch::Device;
use selfsup::train::{self, KnnConfig, KnnMonitor, LrSchedule, OptimizerConfig, Precision, TrainConfig};
use selfsup::{Error, Result};
use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{ArgMatches, Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// The method names `--method` takes: `moco` (main_moco.py's, MoCo v1 unless --mlp/--aug-plus/--cos)
/// and every registry method.
fn method_names() -> PossibleValuesParser {
    let moco = PossibleValue::new("moco").help("MoCo v1 unless --mlp/--aug-plus/--cos (main_moco.py)");
    let moco_v2 = "= moco --mlp --moco-t 0.2 --aug-plus --cos";
    let registry = MethodKind::ALL.into_iter().map(|k| match k {
        MethodKind::MocoV2 => PossibleValue::new(k.name()).help(moco_v2),
        _ => PossibleValue::new(k.name()),
    });
    PossibleValuesParser::new(std::iter::once(moco).chain(registry))
}

/// Which data `--dataset` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dataset {
    /// The embedded shapes dataset
    Synthetic,
    /// STL-10's unlabelled split
    Stl10,
    /// CIFAR-10's train split
    Cifar10,
}

/// `-a, --arch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Arch {
    Resnet18,
    Resnet34,
    Resnet50,
}

/// `--optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OptimizerName {
    Sgd,
    Adam,
    Adamw,
    Lars,
}

/// selfsup-train: self-supervised pre-training from the command line (resumes by itself)
///
/// The defaults are main_moco.py's, except the architecture (ResNet-18: the kit's data is small).
#[derive(Debug, Parser)]
#[command(
    name = "selfsup-train",
    after_help = "Ctrl-C or SIGTERM: the current step ends, a checkpoint is written, and the same command continues \
                  the run; a second Ctrl-C quits at once.",
    args_override_self = true
)]
struct Args {
    #[command(flatten, next_help_heading = "Method and data")]
    data: DataArgs,
    #[command(flatten, next_help_heading = "main_moco.py options (S4.1)")]
    moco: MocoArgs,
    #[command(flatten, next_help_heading = "More")]
    more: MoreArgs,
}

#[derive(Debug, clap::Args)]
struct DataArgs {
    /// The method
    #[arg(long, value_name = "NAME", default_value = "moco_v2", value_parser = method_names())]
    method: String,
    /// The pre-training images
    #[arg(long, value_name = "NAME", value_enum, default_value_t = Dataset::Synthetic)]
    dataset: Dataset,
    /// Where stl10_binary/ or cifar-10-batches-*/ are
    #[arg(long, value_name = "DIR", default_value = "assets/data")]
    data_dir: PathBuf,
    /// Side of the augmented crops [the dataset's image size]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(16..=1024), allow_negative_numbers = true)]
    image_size: Option<i64>,
    /// Pre-train on the first N images only (quick tries, tests) [all]
    #[arg(long, value_name = "N", value_parser = selfsup::cli::at_least(1usize), allow_negative_numbers = true)]
    subset: Option<usize>,
    /// Run folder: checkpoint, config.json, history.jsonl [runs/<method>_<dataset>]
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Continue the run in PATH (a run folder or its checkpoint.safetensors); the run in --output
    /// is continued anyway, --restart starts it over
    #[arg(long, value_name = "PATH")]
    resume: Option<PathBuf>,
    /// Ignore an existing checkpoint in the output folder and start over
    #[arg(long)]
    restart: bool,
}

#[derive(Debug, clap::Args)]
struct MocoArgs {
    /// The backbone (small-image stem at 64 px or less)
    #[arg(short = 'a', long, value_name = "NAME", value_enum, default_value_t = Arch::Resnet18)]
    arch: Arch,
    /// Batches prepared ahead (augmentation runs batched on the device)
    #[arg(short = 'j', long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=64), allow_negative_numbers = true)]
    workers: u64,
    /// Planned epochs (the schedule spans them)
    #[arg(long, value_name = "N", default_value_t = 200)]
    epochs: usize,
    /// Only 0 is accepted (main_moco.py's default): the epoch comes from the checkpoint
    #[arg(long, value_name = "N")]
    start_epoch: Option<usize>,
    /// Images per step
    #[arg(short = 'b', long, value_name = "N", default_value_t = 256)]
    batch_size: usize,
    /// Base learning rate
    #[arg(long, visible_alias = "learning-rate", value_name = "F", default_value_t = 0.03)]
    lr: f64,
    /// SGD / LARS momentum
    #[arg(long, value_name = "F", default_value_t = 0.9, value_parser = selfsup::cli::below_one, allow_negative_numbers = true)]
    momentum: f64,
    /// Weight decay
    #[arg(long = "wd", visible_alias = "weight-decay", value_name = "F", default_value_t = 1e-4)]
    wd: f64,
    /// MoCo feature dimension
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = selfsup::cli::at_least(1i64), allow_negative_numbers = true)]
    moco_dim: i64,
    /// MoCo queue size (a multiple of the batch size)
    #[arg(long, value_name = "N", default_value_t = 65536, value_parser = selfsup::cli::at_least(1i64), allow_negative_numbers = true)]
    moco_k: i64,
    /// MoCo momentum of the key encoder
    #[arg(long, value_name = "F", default_value_t = 0.999, value_parser = selfsup::cli::unit_interval, allow_negative_numbers = true)]
    moco_m: f64,
    /// Softmax temperature τ; for simclr NT-Xent's τ [moco: MocoConfig::v1's; moco_v2: v2's; simclr: the registry's]
    #[arg(long, value_name = "F", value_parser = selfsup::cli::positive_number, allow_negative_numbers = true, long_help = format!(
        "Softmax temperature τ; for simclr NT-Xent's τ [moco, moco_v1: {}; moco_v2: {}; simclr: the registry's recipe for the image size]",
        MocoConfig::v1().temperature, MocoConfig::v2().temperature
    ))]
    moco_t: Option<f64>,
    /// MLP head (MoCo v2)
    #[arg(long)]
    mlp: bool,
    /// MoCo v2 augmentation (with blur). --moco-dim/-k/-m, --mlp, --aug-plus apply to moco only
    /// and --moco-t to moco and simclr: given for another method they are rejected, not ignored
    #[arg(long)]
    aug_plus: bool,
    /// Cosine schedule (else x0.1 at 60% and 80% of the epochs: --schedule 120 160)
    #[arg(long)]
    cos: bool,
}

#[derive(Debug, clap::Args)]
struct MoreArgs {
    /// The optimizer
    #[arg(long, value_name = "NAME", value_enum, default_value_t = OptimizerName::Sgd)]
    optimizer: OptimizerName,
    /// Stop after N steps in total (run again with a larger N to continue)
    #[arg(long, value_name = "N")]
    max_steps: Option<usize>,
    /// Stop (with a checkpoint) after this long
    #[arg(long, value_name = "SECS", value_parser = selfsup::cli::positive_number, allow_negative_numbers = true)]
    time_budget: Option<f64>,
    /// Seed of the initial weights, the augmentations and the order of the images
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Precision of the forward pass
    #[arg(long, value_name = "P", value_enum, default_value_t = Precision::Bf16)]
    precision: Precision,
    /// Online kNN accuracy every N epochs (needs labelled train/test; 0: off)
    #[arg(long, value_name = "N", default_value_t = 0)]
    knn_every: usize,
    /// Checkpoint every N steps (and every 10 minutes, and at the end)
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<usize>,
    /// Data-parallel: start N processes on this machine (one per GPU; -b is split over them).
    /// Needs a build with --features distributed; under torchrun, leave it out
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = selfsup::cli::at_least(1usize), allow_negative_numbers = true)]
    nproc: usize,
    /// Synchronise BatchNorm over the processes (PyTorch's SyncBatchNorm; MoCo's keys keep their
    /// shuffled BN). Data-parallel runs only
    #[arg(long)]
    sync_bn: bool,
}

/// Rejects options that mean nothing for the chosen method, naming the option and what to do
/// (clap checks the ranges; those TrainConfig checks itself are left to it); `moco_v2` turns
/// on `--mlp`, `--aug-plus` and `--cos`.
fn check_args(mut a: Args, matches: &ArgMatches) -> Result<Args> {
    let method = a.data.method.as_str();
    if !is_moco(method) {
        for (id, flag) in [("moco_dim", "--moco-dim"), ("moco_k", "--moco-k"), ("moco_m", "--moco-m"), ("mlp", "--mlp"), ("aug_plus", "--aug-plus")] {
            if selfsup::cli::given(matches, id) {
                return Err(Error::Config(format!(
                    "{flag} applies to MoCo only, and --method is {method}: remove it (the method's own defaults are used)"
                )));
            }
        }
        if method != "simclr" && a.moco.moco_t.is_some() {
            return Err(Error::Config(format!(
                "--moco-t sets the softmax temperature of MoCo and SimCLR; {method} has none: remove it"
            )));
        }
    }
    if let Some(e) = a.moco.start_epoch.filter(|&e| e != 0) {
        return Err(Error::Config(format!(
            "--start-epoch {e}: the epoch to continue from comes from the checkpoint in the output folder; remove \
             the option (run the same command again to continue)"
        )));
    }
    if method == "moco_v2" {
        a.moco.mlp = true;
        a.moco.aug_plus = true;
        a.moco.cos = true;
    }
    Ok(a)
}

fn is_moco(method: &str) -> bool {
    matches!(method, "moco" | "moco_v1" | "moco_v2")
}

/// The pre-training set (its first `--subset` images) and, when it has them and `--knn-every`
/// asks for them, labelled train/test sets for the kNN monitor.
fn load_data(a: &DataArgs, knn_every: usize) -> Result<(ImageSet, Option<(ImageSet, ImageSet)>)> {
    let subset = a.subset;
    let (set, knn) = load_sets(a, subset, knn_every > 0)?;
    Ok((subset.map_or_else(|| set.clone(), |n| set.head(n)), knn))
}

fn load_sets(a: &DataArgs, subset: Option<usize>, knn: bool) -> Result<(ImageSet, Option<(ImageSet, ImageSet)>)> {
    match a.dataset {
        Dataset::Synthetic => {
            let mut cfg = SyntheticConfig::default();
            if let Some(s) = a.image_size {
                cfg = cfg.image_size(s as u32);
            }
            if let Some(n) = subset {
                cfg.unlabeled = n; // draw only these
            }
            let knn = if knn {
                Some((synthetic::load(Split::Train, &cfg)?, synthetic::load(Split::Test, &cfg)?))
            } else {
                None
            };
            Ok((synthetic::load(Split::Unlabeled, &cfg)?, knn))
        }
        Dataset::Stl10 => {
            let train = || stl10::load(&a.data_dir, Split::Train);
            let knn = if knn { Some((train()?, stl10::load(&a.data_dir, Split::Test)?)) } else { None };
            Ok((stl10::load(&a.data_dir, Split::Unlabeled)?, knn))
        }
        Dataset::Cifar10 => {
            let train = cifar::load_cifar10(&a.data_dir, Split::Train)?;
            let knn = if knn { Some((train.clone(), cifar::load_cifar10(&a.data_dir, Split::Test)?)) } else { None };
            Ok((train, knn))
        }
    }
}

fn backbone(arch: Arch, image_size: i64) -> ResNetConfig {
    let depth = match arch {
        Arch::Resnet18 => Depth::R18,
        Arch::Resnet34 => Depth::R34,
        Arch::Resnet50 => Depth::R50,
    };
    ResNetConfig { depth, small_images: registry::small_image_stem(image_size), ..Default::default() }
}

fn train_config(a: &Args) -> TrainConfig {
    let (m, more) = (&a.moco, &a.more);
    let optimizer = match more.optimizer {
        OptimizerName::Sgd => OptimizerConfig::sgd(m.momentum),
        OptimizerName::Adam => OptimizerConfig::adam(),
        OptimizerName::Adamw => OptimizerConfig::adamw(),
        OptimizerName::Lars => OptimizerConfig::Lars { momentum: m.momentum, trust_coefficient: 0.001 },
    };
    let schedule = if m.cos {
        LrSchedule::cosine(0)
    } else {
        // main_moco.py --schedule 120 160 of 200 epochs
        LrSchedule::step_decay(vec![m.epochs * 3 / 5, m.epochs * 4 / 5], 0.1)
    };
    TrainConfig {
        epochs: m.epochs,
        max_steps: more.max_steps,
        batch_size: m.batch_size,
        lr: m.lr,
        weight_decay: m.wd,
        optimizer,
        schedule,
        seed: more.seed,
        time_budget_secs: more.time_budget,
        checkpoint_every_steps: more.checkpoint_every,
        mixed_precision: more.precision,
        resume: !a.data.restart,
        prefetch: m.workers as usize,
        ..TrainConfig::default()
    }
}

/// `--resume`'s folder (or its checkpoint's), else `--output`, else `runs/<method>_<dataset>`.
fn output_dir(a: &DataArgs) -> PathBuf {
    match &a.resume {
        Some(p) if p.extension().is_some_and(|e| e == "safetensors") => {
            p.parent().map(PathBuf::from).unwrap_or_default()
        }
        Some(p) => p.clone(),
        None => a.output.clone().unwrap_or_else(|| {
            PathBuf::from(format!("runs/{}_{}", a.method, selfsup::cli::value_name(&a.dataset)))
        }),
    }
}

/// The method and its two views: MoCo from main_moco.py's flags, the others from the registry.
fn build_method(a: &Args, bb: ResNetConfig, image_size: i64, device: Device) -> Result<(Box<dyn SslMethod>, TwoViews)> {
    let (method, m) = (a.data.method.as_str(), &a.moco);
    if is_moco(method) {
        // main_moco.py's flags decide MoCo's recipe: `moco` is v1 unless --mlp/--aug-plus/--cos.
        let base = if m.mlp { MocoConfig::v2() } else { MocoConfig::v1() };
        let head = if m.mlp { HeadConfig::moco_v2() } else { HeadConfig::moco_v1() };
        let t = m.moco_t.unwrap_or(if method == "moco_v2" { MocoConfig::v2() } else { MocoConfig::v1() }.temperature);
        let cfg = base
            .backbone(bb.clone())
            .head(head.for_features(bb.feature_dim()).out_dim(m.moco_dim))
            .queue_size(m.moco_k)
            .momentum(m.moco_m)
            .temperature(t);
        let aug = if m.aug_plus { presets::moco_v2(image_size) } else { presets::moco_v1(image_size) };
        return Ok((Box::new(Moco::new(cfg, device)?), aug.into()));
    }
    // The other methods: the registry's recipe for this image size (methods::registry).
    let spec = MethodSpec { kind: method.parse::<MethodKind>()?, backbone: bb, image_size };
    let config = match (spec.config(), m.moco_t) {
        (MethodConfig::SimClr(c), Some(t)) => MethodConfig::SimClr(c.temperature(t)),
        (config, _) => config,
    };
    Ok((config.build(device)?, spec.views()))
}

/// Where this process stands: one process, a launcher of `--nproc` ranks, or a rank (its
/// environment says so: `--nproc`'s launcher and torchrun set `RANK` and `WORLD_SIZE`).
enum Role {
    Alone,
    Launcher(usize),
    Rank,
}

fn role(a: &Args) -> Result<Role> {
    let world: usize = match std::env::var("WORLD_SIZE") {
        Ok(w) => w.trim().parse().map_err(|_| Error::Config(format!("WORLD_SIZE={w:?} is not a number")))?,
        Err(_) => 1,
    };
    let in_job = std::env::var_os("RANK").is_some() && world > 1;
    let role = match (in_job, a.more.nproc) {
        (true, _) => Role::Rank,
        (false, 1) => Role::Alone,
        (false, n) => Role::Launcher(n),
    };
    if a.more.sync_bn && matches!(role, Role::Alone) {
        return Err(Error::Config(
            "--sync-bn synchronises BatchNorm over the processes of a data-parallel run: add --nproc N (or start \
             the command with torchrun)"
                .into(),
        ));
    }
    if !cfg!(feature = "distributed") && !matches!(role, Role::Alone) {
        return Err(Error::Config(format!(
            "{} asks for data-parallel training, but this selfsup-train was built without it: build it with \
             `cargo build --release --features distributed --bin selfsup-train` (docs/distributed.md)",
            if in_job { format!("WORLD_SIZE={world} (torchrun?)") } else { format!("--nproc {}", a.more.nproc) }
        )));
    }
    Ok(role)
}

/// Starts the ranks: this program again, with the same arguments, in the environment of a job.
#[cfg(feature = "distributed")]
fn launch(nproc: usize) -> Result<()> {
    selfsup::cli::install_stop_handlers();
    let program = std::env::current_exe()?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    println!("selfsup-train: starting {nproc} processes on this machine (data-parallel, rank 0 writes the run folder)");
    selfsup::distributed::launch_local(nproc, &program, &args)
}

#[cfg(not(feature = "distributed"))]
fn launch(_nproc: usize) -> Result<()> {
    Err(Error::Config("--nproc needs a build with --features distributed".into()))
}

/// This rank's job and device, and the config that trains in it.
#[cfg(feature = "distributed")]
fn join(cfg: TrainConfig, sync_bn: bool) -> Result<(TrainConfig, Device, bool)> {
    let dist = std::sync::Arc::new(selfsup::distributed::Dist::from_env()?);
    let (device, main) = (dist.device(), dist.is_main());
    Ok((cfg.distributed(dist).sync_batch_norm(sync_bn), device, main))
}

#[cfg(not(feature = "distributed"))]
fn join(_cfg: TrainConfig, _sync_bn: bool) -> Result<(TrainConfig, Device, bool)> {
    Err(Error::Config("data-parallel training needs a build with --features distributed".into()))
}

fn run(a: Args) -> Result<()> {
    let (cfg, device, main) = match role(&a)? {
        Role::Launcher(n) => return launch(n),
        Role::Rank => join(train_config(&a), a.more.sync_bn)?,
        Role::Alone => (train_config(&a), selfsup::pick_device(), true),
    };
    selfsup::cli::install_stop_handlers();
    let knn_every = a.more.knn_every;
    let (set, knn_sets) = load_data(&a.data, knn_every)?;
    let image_size = a.data.image_size.unwrap_or(set.image_size().0);
    let output = output_dir(&a.data);
    let knn_cfg = KnnConfig { every_epochs: knn_every.max(1), ..KnnConfig::default() };
    let knn = match &knn_sets {
        Some((train, test)) if knn_every > 0 => Some(KnnMonitor { train, test, config: &knn_cfg }),
        _ => None,
    };
    // --seed decides the initial weights too, so the same command gives the same run.
    selfsup::seed_everything(a.more.seed);
    let (mut method, augment) = build_method(&a, backbone(a.moco.arch, image_size), image_size, device)?;
    if main {
        let ranks = cfg.distributed.world_size();
        println!(
            "selfsup-train: {} on {} ({} images, crops {image_size}px) on {}{}; run folder {}",
            method.name(),
            set.name,
            set.len(),
            selfsup::device::describe(device),
            if ranks > 1 { format!(" × {ranks} processes") } else { String::new() },
            output.display()
        );
        println!("watch it from a notebook: History::load_jsonl(\"{}/history.jsonl\")?", output.display());
    }
    let history = train::pretrain_monitored(method.as_mut(), &set, &augment, &cfg, &output, knn)?;
    if let Some(last) = history.last_epoch().filter(|_| main) {
        println!("last epoch {}: mean loss {:.4}", last.epoch + 1, last.mean_loss);
    }
    Ok(())
}

fn main() -> ExitCode {
    selfsup::cli::main(check_args, run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_keeps_main_moco_flags() {
        Args::command().debug_assert();
        let a = Args::try_parse_from(["selfsup-train", "-a", "resnet50", "-j", "0", "-b", "64", "--wd=0.001"]).unwrap();
        assert_eq!((a.moco.arch, a.moco.workers, a.moco.batch_size, a.moco.wd), (Arch::Resnet50, 0, 64, 0.001));
        let a = Args::try_parse_from(["selfsup-train", "--learning-rate", "0.1", "--weight-decay", "0", "--lr", "0.2"]).unwrap();
        assert_eq!((a.moco.lr, a.moco.wd), (0.2, 0.0), "aliases, and the last of a repeated flag wins");
        assert_eq!(output_dir(&Args::try_parse_from(["selfsup-train", "--dataset", "stl10"]).unwrap().data), PathBuf::from("runs/moco_v2_stl10"));
    }

    #[cfg(not(feature = "distributed"))]
    #[test]
    fn nproc_without_the_distributed_feature_says_how_to_build() {
        let a = Args::try_parse_from(["selfsup-train", "--nproc", "2"]).unwrap();
        match role(&a) {
            Err(e) => assert!(e.to_string().contains("--features distributed"), "{e}"),
            Ok(_) => panic!("--nproc 2 accepted without the distributed feature"),
        }
    }
}
