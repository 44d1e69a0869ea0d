//! Interop with PyTorch (B5, S0.10, S3.3): torchvision's ResNet weights load into our ResNet by
//! name and give the same logits, and our weights load into torchvision strictly and give ours.
//! The reference side is tests/fixtures/torchvision_resnet.py, run with the kit's venv python
//! (torch 2.11.0 + torchvision 0.26.0, from scripts/requirements.txt).
mod common;
use selfsup::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn python(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchvision_resnet.py");
    let out = Command::new("python3").arg(&script).args(args).output().expect("python3 runs (use ./kit test, or eval \"$(./kit env)\")");
    assert!(
        out.status.success(),
        "the torchvision reference failed (is the kit's venv first on PATH? ./kit test sets it up):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(path).unwrap()
}

fn get(named: &[(String, Tensor)], name: &str) -> Tensor {
    named.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone()).unwrap()
}

fn scratch(arch: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("selfsup-tv-{arch}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn round_trip(arch: &str, depth: Depth) {
    let test = format!("{arch}_weights_and_logits_match_torchvision_both_ways");
    if !common::tool_present(&test, common::python_imports(&["torch", "torchvision", "safetensors"]),
        "python3 on PATH does not import torch, torchvision and safetensors (use the kit's venv: eval \"$(./kit env)\")") {
        return;
    }
    let dir = scratch(arch);
    let d = dir.to_str().unwrap();
    python(&["export", arch, d]);

    // torchvision -> selfsup: same keys, same logits.
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = ResNet::new(&vs.root(), &ResNetConfig { depth, num_classes: Some(1000), ..Default::default() }).unwrap();
    vs.load(dir.join("weights.safetensors")).unwrap();
    let io = tensors(&dir.join("io.safetensors"));
    let logits = tch::no_grad(|| net.forward(&get(&io, "x"), false)).unwrap();
    let diff = (&logits - get(&io, "logits")).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "{arch}: max |logits - torchvision| = {diff}");

    // selfsup -> torchvision: fresh weights of ours load strictly and give our logits.
    tch::manual_seed(1);
    let vs2 = nn::VarStore::new(Device::Cpu);
    let ours = ResNet::new(&vs2.root(), &ResNetConfig { depth, num_classes: Some(1000), ..Default::default() }).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in vs2.variables() {
            if name.ends_with("running_var") {
                t.copy_(&(Tensor::rand_like(&t) + 0.5));
            } else if name.ends_with("running_mean") {
                t.copy_(&(Tensor::rand_like(&t) * 0.2 - 0.1));
            }
        }
    });
    vs2.save(dir.join("ours.safetensors")).unwrap();
    python(&["check", arch, d]);
    let mine = tch::no_grad(|| ours.forward(&get(&io, "x"), false)).unwrap();
    let theirs = get(&tensors(&dir.join("theirs.safetensors")), "logits");
    let diff = (&mine - theirs).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "{arch}: max |ours in torchvision - ours| = {diff}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resnet18_weights_and_logits_match_torchvision_both_ways() {
    round_trip("resnet18", Depth::R18);
}

#[test]
fn resnet50_weights_and_logits_match_torchvision_both_ways() {
    round_trip("resnet50", Depth::R50);
}
