//! Benchmark of the kit's t-SNE against linfa-tsne, openTSNE and scikit-learn (issue 6). Not a
//! test: it takes minutes. Same inputs, same quality scores for every tool:
//!
//! 1. `cargo run --release --example bench_tsne -- data` writes the embeddings (5,000 and 13,000
//!    ResNet-like 512-d features of 10 classes, deterministic) to `out/bench_tsne/`.
//! 2. `python bench/tsne_reference.py` runs openTSNE and scikit-learn on them and saves their
//!    layouts and times there.
//! 3. `cargo run --release --example bench_tsne -- run [--linfa]` runs ours (and linfa-tsne), then
//!    scores every layout in the folder with the same code ([`viz::trustworthiness`] and
//!    [`viz::knn_accuracy_2d`], k = 10, on the original 512-d features) and prints a table.
//!
//! `score` only scores the layouts already there.
use clap::{Parser, Subcommand};
use selfsup::prelude::*;
use selfsup::viz::{knn_accuracy_2d, trustworthiness, tsne_embed, TsneBackend, TsneConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

const SIZES: [i64; 2] = [5000, 13000];
const DIM: i64 = 512;
const CLASSES: i64 = 10;
const K: usize = 10;

/// ResNet-like features: 10 classes, 3 modes per class in a 32-d latent space, mapped through a
/// random linear layer into 512 dimensions with isotropic noise, then a ReLU (average-pooled
/// ResNet features are non-negative and sparse-ish), so class structure lives on a low-dimensional
/// subspace of a noisy high-dimensional space, with overlapping classes, as real embeddings.
fn make_features(n: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let opts = (Kind::Float, Device::Cpu);
    let latent = 32;
    let centres = Tensor::randn([CLASSES, latent], opts) * 0.75; // [10, 32]
    let modes = Tensor::randn([CLASSES, 3, latent], opts) * 0.6; // [10, 3, 32]
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(CLASSES); // balanced
    let mode = Tensor::randint(3, [n], (Kind::Int64, Device::Cpu));
    let z = centres.index_select(0, &labels)
        + modes.view([CLASSES * 3, latent]).index_select(0, &(&labels * 3 + &mode))
        + Tensor::randn([n, latent], opts); // [n, 32]
    let w = Tensor::randn([latent, DIM], opts) / (latent as f64).sqrt(); // [32, 512]
    let h = (z.matmul(&w) + Tensor::randn([n, DIM], opts) * 0.8 + 0.3).relu(); // [n, 512]
    (h, labels)
}

fn paths(dir: &Path, n: i64) -> (PathBuf, PathBuf) {
    (dir.join(format!("features_{n}.npy")), dir.join(format!("labels_{n}.npy")))
}

fn write_data(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for n in SIZES {
        let (f, l) = paths(dir, n);
        let (h, y) = make_features(n, n);
        h.write_npy(&f)?;
        y.write_npy(&l)?;
        println!("wrote {} and {}", f.display(), l.display());
    }
    Ok(())
}

fn run_tool(dir: &Path, n: i64, name: &str, cfg: &TsneConfig) -> Result<()> {
    let (f, _) = paths(dir, n);
    let h = Tensor::read_npy(&f)?;
    let start = Instant::now();
    let layout = tsne_embed(&h, None, cfg)?;
    let secs = start.elapsed().as_secs_f64();
    layout.write_npy(dir.join(format!("layout_{n}_{name}.npy")))?;
    std::fs::write(dir.join(format!("time_{n}_{name}.txt")), format!("{secs:.2}\n"))?;
    println!("{name} on {n} points: {secs:.1} s");
    Ok(())
}

fn score(dir: &Path) -> Result<()> {
    println!("\n| tool | points | time (s) | trustworthiness (k={K}) | kNN accuracy in 2-D (k={K}) |\n| --- | --- | --- | --- | --- |");
    for n in SIZES {
        let (f, l) = paths(dir, n);
        let (h, y) = (Tensor::read_npy(&f)?, Tensor::read_npy(&l)?);
        for name in ["selfsup", "selfsup-fft", "linfa", "opentsne", "sklearn"] {
            let layout_path = dir.join(format!("layout_{n}_{name}.npy"));
            if !layout_path.exists() {
                continue;
            }
            let low = Tensor::read_npy(&layout_path)?.to_kind(Kind::Float);
            let time = std::fs::read_to_string(dir.join(format!("time_{n}_{name}.txt"))).unwrap_or_default();
            let t = trustworthiness(&h, &low, K)?;
            let a = knn_accuracy_2d(&low, &y, K)?;
            println!("| {name} | {n} | {} | {t:.4} | {a:.4} |", time.trim());
        }
    }
    Ok(())
}

/// The kit's t-SNE against linfa-tsne, openTSNE and scikit-learn (files in out/bench_tsne/).
#[derive(Parser)]
#[command(name = "bench_tsne")]
struct Args {
    #[command(subcommand)]
    step: Step,
}

#[derive(Subcommand)]
enum Step {
    /// Write the embeddings (5,000 and 13,000 points)
    Data,
    /// Run the kit's t-SNE (and the others asked for), then score every layout
    Run {
        /// Also the FFT-accelerated backend
        #[arg(long)]
        fft: bool,
        /// Also linfa-tsne
        #[arg(long)]
        linfa: bool,
    },
    /// Score the layouts already written
    Score,
}

fn main() -> Result<()> {
    let dir = PathBuf::from("out/bench_tsne");
    match Args::parse().step {
        Step::Data => write_data(&dir),
        Step::Run { fft, linfa } => {
            if !paths(&dir, SIZES[0]).0.exists() {
                write_data(&dir)?;
            }
            for n in SIZES {
                run_tool(&dir, n, "selfsup", &TsneConfig::default())?;
                if fft {
                    run_tool(&dir, n, "selfsup-fft", &TsneConfig::default().backend(TsneBackend::Fft))?;
                }
                if linfa {
                    run_tool(&dir, n, "linfa", &TsneConfig::default().backend(TsneBackend::Linfa))?;
                }
            }
            score(&dir)
        }
        Step::Score => score(&dir),
    }
}
