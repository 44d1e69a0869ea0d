//! The four methods behind `SslMethod`: MoCo's queue and key encoder, BYOL's target network and
//! its no-momentum variant, one training step + SGD step each on the embedded dataset, and
//! `state()` / `load_state()` round trips.
use selfsup::data::{synthetic, synthetic::SyntheticConfig, Normalization, Split};
use selfsup::losses::{info_nce, InfoNceConfig};
use selfsup::methods::{
    BarlowTwins, BarlowTwinsConfig, Byol, ByolConfig, Moco, MocoConfig, SimClr, SimClrConfig, SslMethod,
};
use selfsup::models::ResNetConfig;
use selfsup::tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};
use selfsup::Error;
use std::collections::HashMap;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Metrics = Vec<(String, f64)>;

/// Two views of the first `n` images of the tiny embedded set: the images and their mirror
/// images with a little noise (enough for a step; augmentation has its own tests).
fn views(n: usize) -> Result<(Tensor, Tensor), Box<dyn std::error::Error>> {
    selfsup::tch::manual_seed(0);
    let set = synthetic::load(Split::Train, &SyntheticConfig::tiny())?;
    let v1 = set.float_batch(0, n, Some(&Normalization::cifar10()), Device::Cpu)?; // [n, 3, 32, 32]
    let v2 = v1.flip([3]) + v1.randn_like() * 0.1; // [n, 3, 32, 32]
    Ok((v1, v2))
}

fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

fn metric(metrics: &[(String, f64)], name: &str) -> f64 {
    metrics.iter().find(|(n, _)| n == name).map(|(_, v)| *v).unwrap_or(f64::NAN)
}

/// One training step, backward, one SGD step, `after_step`; returns the loss and metrics.
fn step_once(
    method: &mut impl SslMethod,
    v1: &Tensor,
    v2: &Tensor,
) -> Result<(f64, Metrics), Box<dyn std::error::Error>> {
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(method.online(), 0.03)?;
    let out = method.training_step(v1, v2)?;
    let loss = out.loss.double_value(&[]);
    let z = out.z.as_ref().ok_or("the step returns z")?;
    assert_eq!(z.size()[0], v1.size()[0], "z has one row per image");
    assert!(!z.requires_grad(), "z is detached");
    opt.backward_step(&out.loss);
    method.after_step(0, 10)?;
    Ok((loss, out.metrics_f64()?))
}

// ---------------------------------------------------------------- MoCo

#[test]
fn moco_names_follow_builder_py() -> TestResult {
    let moco = Moco::new(MocoConfig::tiny(), Device::Cpu)?;
    let online = moco.online().variables();
    for key in
        ["encoder_q.conv1.weight", "encoder_q.layer4.1.bn2.running_var", "encoder_q.fc.0.weight", "encoder_q.fc.2.bias"]
    {
        assert!(online.contains_key(key), "online store lacks {key}");
    }
    let state: HashMap<String, Tensor> = moco.state().into_iter().collect();
    for key in ["encoder_k.conv1.weight", "encoder_k.fc.2.weight", "queue", "queue_ptr"] {
        assert!(state.contains_key(key), "state lacks {key}");
    }
    assert_eq!(state["queue"].size(), [32, 64], "queue is [C, K]");
    assert_eq!(moco.name(), "moco_v2");
    // The queue starts as random unit vectors.
    let norms = moco.queue().norm_scalaropt_dim(2.0, [0i64].as_slice(), false);
    assert!(max_diff(&norms, &norms.ones_like()) < 1e-5);
    Ok(())
}

#[test]
fn moco_queue_is_fifo_keeps_k_entries_and_the_pointer_wraps() -> TestResult {
    let mut moco = Moco::new(MocoConfig::tiny(), Device::Cpu)?; // C = 32, K = 64
    let batch = |i: i64| Tensor::full([16, 32], i as f64, (Kind::Float, Device::Cpu)); // [16, C], batch i
    for i in 0..4 {
        moco.enqueue(&batch(i))?;
        assert_eq!(moco.queue_ptr(), (16 * (i + 1)) % 64);
    }
    assert_eq!(moco.queue_ptr(), 0, "the pointer wrapped after K keys");
    assert_eq!(moco.queue().size(), [32, 64], "the queue keeps K entries");
    assert!((moco.queue_fill() - 1.0).abs() < 1e-12);
    for i in 0..4 {
        let slot = moco.queue().narrow(1, 16 * i, 16);
        assert!(max_diff(&slot, &batch(i).tr()) == 0.0, "batch {i} sits at columns {}..{}", 16 * i, 16 * (i + 1));
    }
    // The fifth batch replaces the oldest (batch 0); the others stay.
    moco.enqueue(&batch(4))?;
    assert_eq!(moco.queue_ptr(), 16);
    assert!(max_diff(&moco.queue().narrow(1, 0, 16), &batch(4).tr()) == 0.0);
    assert!(max_diff(&moco.queue().narrow(1, 16, 48), &Tensor::cat(&[batch(1), batch(2), batch(3)], 0).tr()) == 0.0);
    Ok(())
}

#[test]
fn moco_k_not_divisible_by_the_batch_is_a_clear_error() -> TestResult {
    let mut moco = Moco::new(MocoConfig::tiny().queue_size(60), Device::Cpu)?;
    let before = moco.queue().copy();
    let (v1, v2) = views(8)?;
    match moco.training_step(&v1, &v2) {
        Err(Error::Config(msg)) => {
            assert!(msg.contains("K = 60") && msg.contains("not divisible"), "message: {msg}")
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
    assert!(max_diff(moco.queue(), &before) == 0.0, "nothing changed");
    assert_eq!(moco.queue_ptr(), 0);
    assert!(matches!(moco.enqueue(&Tensor::zeros([7, 32], (Kind::Float, Device::Cpu))), Err(Error::Config(_))));
    // Symmetric: 2N = 16 keys per step; K = 40 is a multiple of N = 8 but not of 16.
    let mut sym = Moco::new(MocoConfig::tiny().queue_size(40).symmetric(true), Device::Cpu)?;
    assert!(matches!(sym.training_step(&v1, &v2), Err(Error::Config(_))));
    Ok(())
}

#[test]
fn moco_step_runs_with_finite_loss_and_metrics_and_the_key_encoder_gets_no_gradient() -> TestResult {
    let mut moco = Moco::new(MocoConfig::tiny(), Device::Cpu)?;
    let (v1, v2) = views(8)?;
    let target_before = snapshot(moco.target());
    let out = moco.training_step(&v1, &v2)?;
    let loss = out.loss.double_value(&[]);
    assert!(loss.is_finite(), "loss {loss}");
    out.loss.backward();
    for (name, v) in moco.target().variables() {
        assert!(!v.requires_grad() && !v.grad().defined(), "key encoder variable {name} got a gradient");
    }
    assert!(moco.online().trainable_variables().iter().any(|v| v.grad().defined()), "the query encoder gets gradients");
    let metrics = out.metrics_f64()?;
    for name in ["pos_sim", "neg_sim", "acc1", "temperature", "momentum", "queue_fill"] {
        assert!(metric(&metrics, name).is_finite(), "metric {name} missing or not finite");
    }
    assert_eq!(metric(&metrics, "queue_fill"), 8.0 / 64.0);
    assert_eq!(moco.queue_ptr(), 8);
    // The step's momentum update ran on identical encoders, so the key encoder's parameters are
    // unchanged (only its BN running statistics moved with its own forward pass).
    let online = moco.online().variables();
    for (name, v) in moco.target().variables() {
        if !name.contains("running_") {
            assert!(max_diff(&v, &target_before[&name]) < 1e-6, "{name} changed");
            assert!(max_diff(&v, &online[&name]) < 1e-6, "{name} differs from the query encoder");
        }
    }
    Ok(())
}

#[test]
fn moco_key_encoder_moves_only_by_the_momentum_update() -> TestResult {
    let mut moco = Moco::new(MocoConfig::tiny().bn_splits(1), Device::Cpu)?;
    let (v1, v2) = views(8)?;
    step_once(&mut moco, &v1, &v2)?; // the query encoder moves (SGD); the key encoder does not
    let target_before = snapshot(moco.target());
    let online = snapshot(moco.online());
    moco.momentum_update()?;
    let m = moco.config().momentum;
    let mut moved = false;
    for (name, v) in moco.target().variables() {
        if name.contains("running_") {
            continue;
        }
        let want = &target_before[&name] * m + &online[&name] * (1.0 - m); // θ_k ← m θ_k + (1 − m) θ_q
        assert!(max_diff(&v, &want) < 1e-6, "{name}");
        moved |= max_diff(&v, &target_before[&name]) > 0.0;
    }
    assert!(moved, "the key encoder follows the query encoder");
    Ok(())
}

#[test]
fn moco_symmetric_loss_is_the_sum_of_both_directions() -> TestResult {
    let mut moco = Moco::new(MocoConfig::tiny().symmetric(true).bn_splits(1), Device::Cpu)?;
    let (v1, v2) = views(8)?;
    let queue = moco.queue().copy();
    // Before any optimizer step both encoders are equal, and with bn_splits = 1 nothing is random.
    let cfg = InfoNceConfig { temperature: moco.config().temperature };
    let (q1, q2) = (moco.query(&v1)?, moco.query(&v2)?);
    let (k1, k2) = (moco.keys(&v1)?, moco.keys(&v2)?);
    let want =
        info_nce(&q1, &k2, &queue, &cfg)?.double_value(&[]) + info_nce(&q2, &k1, &queue, &cfg)?.double_value(&[]);
    let out = moco.training_step(&v1, &v2)?;
    assert!((out.loss.double_value(&[]) - want).abs() < 1e-4, "{} vs {want}", out.loss.double_value(&[]));
    assert_eq!(moco.queue_ptr(), 16, "2N keys enqueued");
    assert!(max_diff(&moco.queue().narrow(1, 0, 16), &Tensor::cat(&[&k1, &k2], 0).tr()) < 1e-5, "k1 then k2");
    Ok(())
}

#[test]
fn moco_state_round_trips() -> TestResult {
    let mut a = Moco::new(MocoConfig::tiny(), Device::Cpu)?;
    let (v1, v2) = views(8)?;
    step_once(&mut a, &v1, &v2)?;
    step_once(&mut a, &v1, &v2)?;
    let saved: Vec<(String, Tensor)> = a.state().into_iter().map(|(n, t)| (n, t.copy())).collect();
    let mut b = Moco::new(MocoConfig::tiny(), Device::Cpu)?;
    b.load_state(&saved)?;
    assert_eq!(b.queue_ptr(), 16);
    assert!((b.queue_fill() - a.queue_fill()).abs() < 1e-12);
    let restored: HashMap<String, Tensor> = b.state().into_iter().collect();
    for (name, t) in &saved {
        assert!(max_diff(t, &restored[name]) == 0.0, "{name} differs after load_state");
    }
    // A state of another method is refused with the names.
    let mut wrong: Vec<(String, Tensor)> = saved.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    wrong.pop();
    wrong.push(("target.backbone.conv1.weight".into(), Tensor::zeros([1], (Kind::Float, Device::Cpu))));
    match b.load_state(&wrong) {
        Err(Error::Data(msg)) => {
            assert!(msg.contains("queue_filled") && msg.contains("target.backbone"), "message: {msg}")
        }
        other => panic!("expected a Data error, got {other:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------- BYOL

#[test]
fn byol_target_gets_no_gradient_and_changes_only_by_ema() -> TestResult {
    let mut byol = Byol::new(ByolConfig::tiny(), Device::Cpu)?;
    let (v1, v2) = views(8)?;
    let target_before = snapshot(byol.target().ok_or("momentum target")?);
    let mut opt = nn::Sgd::default().build(byol.online(), 0.1)?;
    let out = byol.training_step(&v1, &v2)?;
    opt.backward_step(&out.loss);
    let target = byol.target().ok_or("momentum target")?;
    for (name, v) in target.variables() {
        assert!(!v.grad().defined(), "target variable {name} got a gradient");
        if !name.contains("running_") {
            assert!(max_diff(&v, &target_before[&name]) == 0.0, "{name} moved before the EMA update");
        }
    }
    let online = snapshot(byol.online());
    byol.after_step(3, 10)?;
    let tau = selfsup::momentum::cosine_tau(3, 10, 0.99)?;
    assert!((byol.tau() - tau).abs() < 1e-12);
    let target = byol.target().ok_or("momentum target")?;
    for (name, v) in target.variables() {
        if !name.contains("running_") {
            let want = &target_before[&name] * tau + &online[&name] * (1.0 - tau); // ξ ← τ ξ + (1 − τ) θ
            assert!(max_diff(&v, &want) < 1e-6, "{name}");
        }
    }
    assert!(!target.variables().keys().any(|k| k.starts_with("predictor")), "the target has no predictor");
    Ok(())
}

#[test]
fn byol_without_momentum_shares_the_online_weights() -> TestResult {
    let mut byol = Byol::new(ByolConfig::tiny().momentum(false), Device::Cpu)?;
    assert!(byol.target().is_none());
    assert!(byol.state().is_empty());
    let (v1, _) = views(8)?;
    let (z, _) = byol.online_forward(&v1)?;
    let t = byol.target_forward(&v1)?;
    assert!(max_diff(&z, &t) < 1e-6, "the target projection is the online projection");
    assert!(!t.requires_grad(), "behind a stop-gradient");
    let (v1, v2) = views(8)?;
    let (loss, metrics) = step_once(&mut byol, &v1, &v2)?;
    assert!(loss.is_finite() && (0.0..=8.0).contains(&loss));
    assert_eq!(metric(&metrics, "tau"), 0.0);
    Ok(())
}

#[test]
fn byol_state_round_trips() -> TestResult {
    let mut a = Byol::new(ByolConfig::tiny(), Device::Cpu)?;
    let (v1, v2) = views(8)?;
    step_once(&mut a, &v1, &v2)?;
    let saved: Vec<(String, Tensor)> = a.state().into_iter().map(|(n, t)| (n, t.copy())).collect();
    assert!(saved.iter().any(|(n, _)| n == "target.backbone.conv1.weight"));
    let mut b = Byol::new(ByolConfig::tiny(), Device::Cpu)?;
    b.load_state(&saved)?;
    let restored: HashMap<String, Tensor> = b.state().into_iter().collect();
    for (name, t) in &saved {
        assert!(max_diff(t, &restored[name]) == 0.0, "{name}");
    }
    let mut bad: Vec<(String, Tensor)> = saved.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    bad[0].1 = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
    assert!(matches!(b.load_state(&bad), Err(Error::Shape { .. })));
    Ok(())
}

// ---------------------------------------------------------------- every method, one step

#[test]
fn every_method_takes_a_step_with_finite_loss_and_its_metrics() -> TestResult {
    let (v1, v2) = views(8)?;

    let mut moco = Moco::new(MocoConfig::tiny(), Device::Cpu)?;
    let (loss, m) = step_once(&mut moco, &v1, &v2)?;
    assert!(loss.is_finite() && loss > 0.0, "moco loss {loss}");
    // At the start the loss is near ln(1 + K) (random queue, unit logits / τ spread).
    assert!(loss < 2.0 * (65f64).ln(), "moco loss {loss}");
    assert!(metric(&m, "acc1").is_finite());

    let mut simclr = SimClr::new(SimClrConfig::tiny(), Device::Cpu)?;
    let (loss, m) = step_once(&mut simclr, &v1, &v2)?;
    assert!(loss.is_finite() && loss > 0.0, "simclr loss {loss}");
    for name in ["pos_sim", "neg_sim", "temperature"] {
        assert!(metric(&m, name).is_finite(), "simclr metric {name}");
    }
    assert!(metric(&m, "pos_sim") <= 1.0 + 1e-6 && metric(&m, "neg_sim") >= -1.0 - 1e-6);
    assert!(simclr.state().is_empty());

    let mut byol = Byol::new(ByolConfig::tiny(), Device::Cpu)?;
    let (loss, m) = step_once(&mut byol, &v1, &v2)?;
    assert!(loss.is_finite() && (0.0..=8.0).contains(&loss), "byol loss {loss}");
    for name in ["tau", "loss_12", "loss_21", "cos_p_z"] {
        assert!(metric(&m, name).is_finite(), "byol metric {name}");
    }

    let mut bt = BarlowTwins::new(BarlowTwinsConfig::tiny(), Device::Cpu)?;
    let (loss, m) = step_once(&mut bt, &v1, &v2)?;
    assert!(loss.is_finite() && loss >= 0.0, "barlow twins loss {loss}");
    let want = metric(&m, "on_diag") + 5e-3 * metric(&m, "off_diag");
    assert!((loss - want).abs() < 1e-3 * loss.max(1.0), "loss = on + λ·off");
    assert!(bt.state().is_empty());
    Ok(())
}

/// A step reads nothing back (issue 4): config values stay host numbers, statistics stay
/// detached one-element tensors until the engine reads a log window at once.
#[test]
fn metrics_stay_on_the_device_until_read() -> TestResult {
    let (v1, v2) = views(8)?;
    let mut simclr = SimClr::new(SimClrConfig::tiny(), Device::Cpu)?;
    let out = simclr.training_step(&v1, &v2)?;
    let host: Vec<&str> = out.metrics.host.iter().map(|(n, _)| n.as_str()).collect();
    let device: Vec<&str> = out.metrics.device.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(host, ["temperature"]);
    assert_eq!(device, ["pos_sim", "neg_sim"]);
    assert!(out.metrics.device.iter().all(|(_, t)| t.numel() == 1 && !t.requires_grad()));
    let read = out.metrics_f64()?;
    assert_eq!(read.len(), 3);
    for (name, t) in &out.metrics.device {
        assert_eq!(metric(&read, name), t.double_value(&[]), "{name} read in one transfer");
    }
    Ok(())
}

#[test]
fn methods_check_their_inputs() -> TestResult {
    let mut simclr = SimClr::new(SimClrConfig::tiny(), Device::Cpu)?;
    let (v1, v2) = views(4)?;
    assert!(matches!(simclr.training_step(&v1, &v2.narrow(0, 0, 2)), Err(Error::Shape { .. })));
    assert!(matches!(simclr.training_step(&v1.narrow(0, 0, 1), &v2.narrow(0, 0, 1)), Err(Error::Shape { .. })));
    assert!(matches!(Moco::new(MocoConfig::tiny().temperature(0.0), Device::Cpu), Err(Error::Config(_))));
    assert!(matches!(Byol::new(ByolConfig::tiny().base_momentum(1.5), Device::Cpu), Err(Error::Config(_))));
    let mut cfg = ByolConfig::tiny();
    cfg.predictor.out_dim = 16;
    assert!(matches!(Byol::new(cfg, Device::Cpu), Err(Error::Config(_))));
    assert!(matches!(
        simclr.load_state(&[("x".into(), Tensor::zeros([1], (Kind::Float, Device::Cpu)))]),
        Err(Error::Data(_))
    ));
    Ok(())
}

#[test]
fn heads_follow_the_backbone_width() -> TestResult {
    // MoCo v2's head on a ResNet-18 is 512→512→128 (dim_mlp follows fc.weight.shape[1]).
    let cfg = MocoConfig::v2().backbone(selfsup::models::ResNetConfig::default());
    assert_eq!((cfg.head.in_dim, cfg.head.hidden_dim, cfg.head.out_dim), (512, 512, 128));
    // BYOL's 4096 hidden width is fixed.
    let cfg = ByolConfig::default().backbone(selfsup::models::ResNetConfig::default());
    assert_eq!((cfg.projector.in_dim, cfg.projector.hidden_dim, cfg.projector.out_dim), (512, 4096, 256));
    Ok(())
}

// ---------------------------------------------------------------- backbone weights (B5)

#[test]
fn backbone_weights_round_trip_through_safetensors_with_torchvision_keys() -> TestResult {
    let dir = std::env::temp_dir().join(format!("selfsup-backbone-{}", std::process::id()));
    let path = dir.join("moco_backbone.safetensors");
    let moco = Moco::new(MocoConfig::tiny(), Device::Cpu)?;
    let keys = selfsup::models::save_backbone(moco.online(), "encoder_q", &path)?;
    assert!(keys.contains(&"conv1.weight".to_string()) && keys.contains(&"layer4.1.bn2.running_var".to_string()));
    assert!(!keys.iter().any(|k| k.starts_with("fc") || k.starts_with("encoder_q")), "torchvision keys, no head");
    let file: HashMap<String, Tensor> = Tensor::read_safetensors(&path)?.into_iter().collect();
    assert_eq!(file.len(), keys.len());

    // Into another method's backbone: the same features.
    let simclr = SimClr::new(SimClrConfig::tiny(), Device::Cpu)?;
    selfsup::models::load_backbone(simclr.online(), "backbone", &path)?;
    let (v1, _) = views(4)?;
    let a = moco.backbone().features(&v1, false)?;
    let b = simclr.backbone().features(&v1, false)?;
    assert!(max_diff(&a, &b) == 0.0, "the loaded backbone computes the same features");

    // A ResNet at the root (prefix "") with a classifier: fc is neither written nor required.
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = selfsup::models::ResNetConfig::default().small_images(true).num_classes(10);
    let _net = selfsup::models::ResNet::new(&vs.root(), &cfg)?;
    selfsup::models::load_backbone(&vs, "", &path)?;

    // Mismatches are clear errors.
    let imagenet_stem = Byol::new(ByolConfig::tiny().backbone(selfsup::models::ResNetConfig::default()), Device::Cpu)?;
    assert!(matches!(
        selfsup::models::load_backbone(imagenet_stem.online(), "backbone", &path),
        Err(Error::Shape { .. })
    ));
    let r34 = nn::VarStore::new(Device::Cpu);
    let _ = selfsup::models::resnet34(&r34.root(), None)?;
    match selfsup::models::load_backbone(&r34, "", &path) {
        Err(Error::Data(msg)) => {
            assert!(msg.contains("missing") && msg.contains("layer1.2.bn1.bias"), "message: {msg}")
        }
        other => panic!("expected a Data error naming the missing keys, got {other:?}"),
    }
    assert!(matches!(selfsup::models::load_backbone(simclr.online(), "encoder_q", &path), Err(Error::Data(_))));
    assert!(matches!(
        selfsup::models::save_backbone(simclr.online(), "encoder_q", dir.join("x.safetensors")),
        Err(Error::Data(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The registry (methods::registry): every name round-trips, an unknown one names the choices,
/// and the recipe follows the image size in one place (stem, CIFAR presets, BYOL's momentum).
#[test]
fn the_registry_builds_every_method_by_name_with_the_size_rules() -> selfsup::Result<()> {
    use selfsup::methods::registry::{small_image_stem, MethodConfig, MethodKind, MethodSpec};
    use selfsup::models::Depth;
    for kind in MethodKind::ALL {
        assert_eq!(kind.name().parse::<MethodKind>()?, kind);
        assert_eq!(kind.name().to_uppercase().replace('_', "-").parse::<MethodKind>()?, kind);
    }
    let err = "dino".parse::<MethodKind>().unwrap_err().to_string();
    assert!(err.contains("unknown method 'dino'") && err.contains("barlow_twins"), "{err}");
    assert!(small_image_stem(32) && small_image_stem(64) && !small_image_stem(96));

    let at = |kind, size| MethodSpec::new(kind, Depth::R18, size);
    assert!(at(MethodKind::SimClr, 32).backbone.small_images);
    assert!(!at(MethodKind::SimClr, 96).backbone.small_images);
    match (at(MethodKind::SimClr, 32).config(), at(MethodKind::SimClr, 96).config()) {
        (MethodConfig::SimClr(small), MethodConfig::SimClr(large)) => {
            assert_eq!(small, SimClrConfig::cifar().backbone(at(MethodKind::SimClr, 32).backbone));
            assert_eq!(large, SimClrConfig::default().backbone(at(MethodKind::SimClr, 96).backbone));
        }
        other => panic!("SimCLR's spec gave {other:?}"),
    }
    match (at(MethodKind::Byol, 32).config(), at(MethodKind::ByolNoMomentum, 32).config()) {
        (MethodConfig::Byol(with), MethodConfig::Byol(without)) => {
            assert_eq!(with, ByolConfig::cifar().backbone(at(MethodKind::Byol, 32).backbone));
            assert_eq!(without, with.clone().momentum(false));
            assert_ne!(with, without);
        }
        other => panic!("BYOL's spec gave {other:?}"),
    }
    // Every kind builds on a small network, and its views produce crops of the asked size.
    let images = Tensor::rand([2, 3, 40, 40], (Kind::Float, Device::Cpu));
    for kind in MethodKind::ALL {
        let spec = at(kind, 32).backbone(ResNetConfig { width: 8, ..at(kind, 32).backbone });
        let (method, views) = spec.build(Device::Cpu)?;
        assert!(!method.name().is_empty());
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let (v1, v2) = views.two_views(&images, &mut rng)?;
        assert_eq!((v1.size(), v2.size()), (vec![2, 3, 32, 32], vec![2, 3, 32, 32]), "{kind}");
    }
    Ok(())
}
