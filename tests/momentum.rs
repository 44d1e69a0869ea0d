//! The EMA update of target networks and BYOL's τ schedule.
use selfsup::momentum::{cosine_tau, ema_update};
use selfsup::tch::{nn, Device, Kind, Tensor};
use selfsup::Error;
use std::collections::HashMap;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A linear layer and a BatchNorm under `prefix`: parameters `fc.weight`, `fc.bias`, `bn.weight`,
/// `bn.bias` and buffers `bn.running_mean`, `bn.running_var`.
fn net(vs: &nn::VarStore, prefix: &str) -> (nn::Linear, nn::BatchNorm) {
    let p = vs.root() / prefix;
    (nn::linear(&p / "fc", 3, 2, Default::default()), nn::batch_norm1d(&p / "bn", 2, Default::default()))
}

/// An online net and a frozen target copied from it, then the online net moved away (as after
/// some optimizer steps) and its BN buffers changed.
fn pair() -> Result<(nn::VarStore, nn::VarStore), Box<dyn std::error::Error>> {
    let online = nn::VarStore::new(Device::Cpu);
    let _ = net(&online, "m");
    let mut target = nn::VarStore::new(Device::Cpu);
    let _ = net(&target, "m");
    target.copy(&online)?;
    target.freeze();
    selfsup::tch::no_grad(|| {
        for (_, mut v) in online.variables() {
            v.copy_(&v.randn_like());
        }
    });
    Ok((online, target))
}

fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn tau_one_changes_nothing() -> TestResult {
    let (online, target) = pair()?;
    let before = snapshot(&target);
    ema_update(&target, &online, 1.0)?;
    for (name, v) in target.variables() {
        assert_eq!(max_diff(&v, &before[&name]), 0.0, "{name} changed with τ = 1");
    }
    Ok(())
}

#[test]
fn tau_zero_copies_the_online_parameters_and_leaves_buffers() -> TestResult {
    let (online, target) = pair()?;
    let before = snapshot(&target);
    ema_update(&target, &online, 0.0)?;
    let on = online.variables();
    for (name, v) in target.variables() {
        if name.contains("running_") {
            assert_eq!(max_diff(&v, &before[&name]), 0.0, "buffer {name} must be left to the target's own forward");
        } else {
            assert_eq!(max_diff(&v, &on[&name]), 0.0, "{name} is not a copy with τ = 0");
        }
    }
    Ok(())
}

#[test]
fn the_update_equals_the_formula() -> TestResult {
    let (online, target) = pair()?;
    let before = snapshot(&target);
    let tau = 0.9;
    ema_update(&target, &online, tau)?;
    let on = online.variables();
    for (name, v) in target.variables() {
        if name.contains("running_") {
            continue;
        }
        let want = &before[&name] * tau + &on[&name] * (1.0 - tau); // ξ ← τ ξ + (1 − τ) θ
        assert!(max_diff(&v, &want) < 1e-6, "{name}: EMA differs from τ·ξ + (1 − τ)·θ");
    }
    Ok(())
}

#[test]
fn the_update_records_no_gradient_and_keeps_the_target_frozen() -> TestResult {
    let (online, target) = pair()?;
    ema_update(&target, &online, 0.5)?;
    for (name, v) in target.variables() {
        assert!(!v.requires_grad(), "{name} requires grad after the update");
    }
    Ok(())
}

#[test]
fn names_must_match() -> TestResult {
    let online = nn::VarStore::new(Device::Cpu);
    let _ = net(&online, "encoder_q");
    let target = nn::VarStore::new(Device::Cpu);
    let _ = net(&target, "encoder_k");
    match ema_update(&target, &online, 0.99) {
        Err(Error::Data(msg)) => assert!(
            msg.contains("encoder_k.bn.bias") && msg.contains("6 target"),
            "the message names the variables: {msg}"
        ),
        other => panic!("expected a Data error naming the missing variables, got {other:?}"),
    }
    // Extra online variables (BYOL's predictor) are fine.
    let target2 = nn::VarStore::new(Device::Cpu);
    let _ = nn::linear(target2.root() / "encoder_q" / "fc", 3, 2, Default::default());
    ema_update(&target2, &online, 0.99)?;
    // Same names, different shapes.
    let target3 = nn::VarStore::new(Device::Cpu);
    let _ = nn::linear(target3.root() / "encoder_q" / "fc", 4, 2, Default::default());
    assert!(matches!(ema_update(&target3, &online, 0.99), Err(Error::Shape { .. })));
    Ok(())
}

#[test]
fn tau_out_of_range_is_an_error() {
    let online = nn::VarStore::new(Device::Cpu);
    let target = nn::VarStore::new(Device::Cpu);
    assert!(matches!(ema_update(&target, &online, 1.5), Err(Error::Config(_))));
    assert!(matches!(ema_update(&target, &online, -0.1), Err(Error::Config(_))));
}

#[test]
fn cosine_tau_follows_byol() -> TestResult {
    // τ = 1 − (1 − τ_base)(cos(πk/K) + 1)/2
    let base = 0.996;
    assert!((cosine_tau(0, 1000, base)? - base).abs() < 1e-12);
    assert!((cosine_tau(1000, 1000, base)? - 1.0).abs() < 1e-12);
    let k = 250;
    let want = 1.0 - (1.0 - base) * ((std::f64::consts::PI * k as f64 / 1000.0).cos() + 1.0) / 2.0;
    assert!((cosine_tau(k, 1000, base)? - want).abs() < 1e-12);
    let mut last = 0.0;
    for step in (0..=1000).step_by(50) {
        let tau = cosine_tau(step, 1000, base)?;
        assert!(tau >= last, "τ must not decrease");
        last = tau;
    }
    assert!(matches!(cosine_tau(1001, 1000, base), Err(Error::Config(_))));
    Ok(())
}

#[test]
fn mixed_kinds_are_averaged_in_the_target_kind() -> TestResult {
    let (online, mut target) = pair()?;
    target.double();
    ema_update(&target, &online, 0.5)?;
    for (name, v) in target.variables() {
        assert_eq!(v.kind(), Kind::Double, "{name}");
    }
    Ok(())
}
