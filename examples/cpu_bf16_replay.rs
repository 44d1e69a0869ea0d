//! A Barlow Twins (or SimCLR) run of `steps` steps, in f32 and under CPU bf16 autocast, that
//! saves what PyTorch needs to take the very same run: the starting weights (`init.npz`), every
//! step's two views (`views.npy`, `[steps, 2, batch, 3, 32, 32]`) and both runs' losses
//! (`losses_f32.npy`, `losses_bf16.npy`). `python bench/cpu_bf16_reference.py --replay DIR`
//! then trains on those views from those weights with the same schedule and compares the loss
//! curves and the kNN probes (issue 17, item 2: a gap between the precisions is bf16 training,
//! not the kit).
//!
//! The loop is the engine's, written out with the kit's public pieces: the lesson network
//! (ResNet-18 at width 16, 3×3 stem), the SimCLR augmentation at 32 px, a new shuffle each epoch,
//! SGD (lr 0.03, momentum 0.9, weight decay 1e-4, the kit's fused step) with cosine decay over
//! the planned epochs.
//!
//! ```text
//! cargo run --release --example cpu_bf16_replay -- DIR [--seed 0] [--steps 200] [--method barlow_twins]
//! ```
use clap::Parser;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use selfsup::methods::registry::{MethodConfig, MethodKind};
use selfsup::prelude::*;
use selfsup::train::amp::{self, Autocast, CpuBf16Mode};
use selfsup::train::{backbone_knn_accuracy, KnnConfig, Optimizer};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cpu_bf16_replay")]
struct Args {
    /// Folder for the weights, views and losses
    dir: PathBuf,
    /// Seed of the weights, the batch order and the augmentations
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training steps of each run
    #[arg(long, default_value_t = 200, value_parser = selfsup::cli::at_least(1usize))]
    steps: usize,
    /// barlow_twins or simclr (their `tiny` presets)
    #[arg(long, default_value = "barlow_twins")]
    method: MethodKind,
}

const BATCH: usize = 64;
const LR: f64 = 0.03;

fn build(kind: MethodKind, seed: u64) -> Result<Box<dyn SslMethod>> {
    seed_everything(seed);
    let config = match kind {
        MethodKind::BarlowTwins => MethodConfig::BarlowTwins(BarlowTwinsConfig::tiny()),
        MethodKind::SimClr => MethodConfig::SimClr(SimClrConfig::tiny()),
        other => return Err(Error::Config(format!("cpu_bf16_replay has no run for {other} (barlow_twins, simclr)"))),
    };
    config.backbone(ResNetConfig { small_images: true, ..Default::default() }.width(16)).build(Device::Cpu)
}

fn main() -> Result<()> {
    let Args { dir, seed, steps, method } = Args::parse();
    std::fs::create_dir_all(&dir)?;
    amp::set_cpu_bf16_mode(Some(CpuBf16Mode::Force));
    let data = SyntheticConfig::default(); // the lesson scale's embedded 32 px set
    let [unlabeled, train_set, test_set] =
        [Split::Unlabeled, Split::Train, Split::Test].map(|split| data::synthetic::load(split, &data));
    let (unlabeled, train_set, test_set) = (unlabeled?, train_set?, test_set?);
    let aug = augment::presets::simclr(32);
    let per_epoch = unlabeled.len() / BATCH;
    let planned = steps.div_ceil(per_epoch) * per_epoch; // whole epochs, as the engine plans them
    let init: Vec<(String, Tensor)> = build(method, seed)?.online().variables().into_iter().collect();
    Tensor::write_npz(&init, dir.join("init.npz"))?;
    for (tag, mode) in [("f32", Autocast::Off), ("bf16", Autocast::CpuBf16)] {
        let mut m = build(method, seed)?;
        let mut opt = Optimizer::new(m.online(), &selfsup::train::OptimizerConfig::default(), 1e-4, &[])?;
        let mut rng = augment::rng(seed); // the same views in both precisions
        let mut order = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (mut views, mut losses) = (vec![], vec![]);
        while losses.len() < steps {
            let mut perm: Vec<i64> = (0..unlabeled.len() as i64).collect();
            perm.shuffle(&mut order);
            for chunk in perm.chunks_exact(BATCH).take(steps - losses.len()) {
                let images = unlabeled.images.index_select(0, &Tensor::from_slice(chunk)); // [B, 3, 32, 32] u8
                let (v1, v2) = aug.two_views(&images, &mut rng)?;
                if tag == "f32" {
                    views.push(Tensor::stack(&[&v1, &v2], 0)); // [2, B, 3, 32, 32]
                }
                let step = losses.len() as f64;
                opt.set_lr(LR * 0.5 * (1.0 + (std::f64::consts::PI * step / planned as f64).cos()));
                let out = amp::autocast(mode, || m.training_step(&v1, &v2))??;
                opt.backward(&out.loss)?;
                opt.step()?;
                losses.push(out.loss.double_value(&[]));
            }
        }
        if tag == "f32" {
            Tensor::stack(&views, 0).write_npy(dir.join("views.npy"))?;
        }
        Tensor::from_slice(&losses).write_npy(dir.join(format!("losses_{tag}.npy")))?;
        let norm = aug.output_normalization();
        let knn = backbone_knn_accuracy(m.backbone(), &train_set, &test_set, norm.as_ref(), &KnnConfig::default(), Device::Cpu)?;
        let largest = losses.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "the kit, {method}, seed {seed}, {tag}: first loss {:.4}, last {:.4}, largest {largest:.4}, kNN {:.1}%",
            losses[0],
            losses[steps - 1],
            100.0 * knn
        );
    }
    let sets = [("train", &train_set), ("test", &test_set)];
    for (name, set) in sets {
        set.images.write_npy(dir.join(format!("{name}.npy")))?;
        let labels = set.labels.as_ref().ok_or_else(|| Error::Data(format!("the {name} set has no labels")))?;
        labels.to_kind(Kind::Int64).write_npy(dir.join(format!("{name}_labels.npy")))?;
    }
    println!("written to {}: python bench/cpu_bf16_reference.py --replay {} --methods {method}", dir.display(), dir.display());
    Ok(())
}
