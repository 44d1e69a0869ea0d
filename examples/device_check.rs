//! Checks that this build sees the GPU: prints the environment, runs a matrix product and one
//! ResNet-18 training step on the chosen device.
//!
//! ```text
//! cargo build --release --example device_check
//! ./target/release/examples/device_check --require-cuda   # exit code 1 when CUDA is not usable
//! ```
use clap::Parser;
use selfsup::prelude::*;
use std::time::Instant;

/// Prints the environment, times a matrix product and three ResNet-18 training steps.
#[derive(Parser)]
#[command(name = "device_check")]
struct Args {
    /// Exit with 1 when CUDA is not usable
    #[arg(long)]
    require_cuda: bool,
}

fn main() -> Result<()> {
    let require_cuda = Args::parse().require_cuda;
    print!("{}", environment());
    let device = pick_device();
    if require_cuda && !device.is_cuda() {
        eprintln!("CUDA is not usable here: check LD_LIBRARY_PATH points at torch/lib and that nvidia-smi works");
        std::process::exit(1);
    }
    let a = Tensor::randn([2048, 2048], (Kind::Float, device));
    let t = Instant::now();
    let s = a.matmul(&a).sum(Kind::Float).double_value(&[]);
    println!("2048x2048 matmul on {device:?}: {:.1} ms (checksum {s:.3e})", t.elapsed().as_secs_f64() * 1e3);
    let vs = nn::VarStore::new(device);
    let net = ResNet::new(&vs.root(), &ResNetConfig::default().small_images(true).num_classes(10))?;
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 0.05)?;
    let x = Tensor::randn([256, 3, 96, 96], (Kind::Float, device));
    let y = Tensor::randint(10, [256], (Kind::Int64, device));
    for step in 0..3 {
        let t = Instant::now();
        let loss = net.forward(&x, true)?.cross_entropy_for_logits(&y);
        opt.backward_step(&loss);
        let l = loss.double_value(&[]); // synchronises
        println!("ResNet-18 step {step} (256 x 3 x 96 x 96): loss {l:.4}, {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}
