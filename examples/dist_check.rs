//! Checks a distributed set-up: every rank joins through the environment torchrun (or SLURM)
//! sets, checks an all-reduce, an all-gather and a broadcast on the CPU (Gloo) and, when this
//! rank has a GPU and the build has NCCL, on CUDA (NCCL), then times all-reduces of 25 MiB
//! (DDP's default bucket). Exit status 1 on any failure.
//!
//! ```text
//! cargo build --release --features distributed --example dist_check
//! torchrun --no-python --nproc-per-node 2 target/release/examples/dist_check
//! torchrun --no-python --nproc-per-node 2 target/release/examples/dist_check --require-nccl
//! ```
use std::time::Instant;

use selfsup::distributed::{nccl_build, Dist, ReduceOp};
use selfsup::tch::{Device, Kind, Tensor};
use selfsup::{Error, Result};

fn check(dist: &Dist, device: Device) -> Result<()> {
    let (rank, world) = (dist.rank() as f64, dist.world_size() as f64);
    let mut t = Tensor::full([4], rank + 1.0, (Kind::Float, device));
    dist.all_reduce_(&mut t, ReduceOp::Sum)?;
    let expected = world * (world + 1.0) / 2.0;
    if t.min().double_value(&[]) != expected || t.max().double_value(&[]) != expected {
        return Err(Error::Distributed(format!("all_reduce on {device:?}: expected {expected}, got {t}")));
    }
    let all = dist.all_gather(&Tensor::full([1], rank, (Kind::Float, device)))?;
    let ranks = Vec::<f32>::try_from(all.to(Device::Cpu))?;
    if ranks != (0..dist.world_size()).map(|r| r as f32).collect::<Vec<_>>() {
        return Err(Error::Distributed(format!("all_gather on {device:?}: expected the ranks in order, got {ranks:?}")));
    }
    let mut b = Tensor::full([4], rank, (Kind::Float, device));
    dist.broadcast_(&mut b, 0)?;
    if b.abs().max().double_value(&[]) != 0.0 {
        return Err(Error::Distributed(format!("broadcast on {device:?}: expected rank 0's zeros, got {b}")));
    }
    let mut bucket = Tensor::ones([25 << 18], (Kind::Float, device)); // 25 MiB of f32
    dist.all_reduce_(&mut bucket, ReduceOp::Avg)?; // warm-up (connections, NCCL communicators)
    dist.barrier()?;
    let start = Instant::now();
    let rounds = 10;
    for _ in 0..rounds {
        dist.all_reduce_(&mut bucket, ReduceOp::Avg)?;
    }
    let _ = bucket.sum(Kind::Float).double_value(&[]); // waits for the device
    let ms = start.elapsed().as_secs_f64() * 1e3 / rounds as f64;
    if dist.is_main() {
        let gb = (bucket.numel() * 4) as f64 / 1e9;
        println!("{device:?}: all_reduce/all_gather/broadcast ok; 25 MiB all_reduce {ms:.1} ms ({:.2} GB/s algorithm bandwidth)", gb / (ms / 1e3));
    }
    Ok(())
}

fn main() -> Result<()> {
    let require_nccl = std::env::args().any(|a| a == "--require-nccl");
    let dist = Dist::from_env()?;
    if dist.is_main() {
        println!("{dist:?}; NCCL {}", nccl_build());
    }
    check(&dist, Device::Cpu)?;
    if dist.device().is_cuda() {
        check(&dist, dist.device())?;
    } else if require_nccl {
        eprintln!("rank {}: no NCCL group (NCCL {}, {} CUDA device(s))", dist.rank(), nccl_build(), selfsup::device::cuda_device_count());
        std::process::exit(1);
    }
    dist.barrier()?;
    Ok(())
}
