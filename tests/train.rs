//! The training engine: optimizers and schedules against PyTorch, exact resume (S4.6), FAST
//! mode (S0.5), atomic checkpoints, NaN stops, history files, the collapse metric (B7).
use selfsup::augment::{self, Augment};
use selfsup::data::{
    synthetic::{self, SyntheticConfig},
    ImageSet, Split,
};
use selfsup::methods::{Moco, MocoConfig, SslMethod, StepMetrics, StepOutput};
use selfsup::models::{ResNet, ResNetConfig};
use selfsup::tch::{nn, Device, Kind, Tensor};
use selfsup::train::{
    self, checkpoint, cosine_lr, one_cycle_lr, step_decay_lr, History, LrSchedule, Optimizer, OptimizerConfig,
    ParamGroup, TrainConfig,
};
use selfsup::{Error, Result};
use std::path::PathBuf;

mod common;


// ---------------------------------------------------------------- optimizers vs PyTorch

/// Golden values from torch 2.11 (the kit's venv):
/// ```python
/// w0 = torch.tensor([[0.5, -1.0], [2.0, 0.25]]); b0 = torch.tensor([0.1, -0.2])
/// grads = [(torch.tensor([[0.1, -0.2], [0.3, 0.4]]), torch.tensor([0.05, -0.05])),
///          (torch.tensor([[-0.3, 0.1], [0.2, -0.1]]), torch.tensor([0.02, 0.01])),
///          (torch.tensor([[0.2, 0.2], [-0.4, 0.3]]), torch.tensor([-0.03, 0.04]))]
/// def run(make):
///     w = torch.nn.Parameter(w0.clone()); b = torch.nn.Parameter(b0.clone()); opt = make([w, b])
///     for gw, gb in grads:
///         opt.zero_grad(); w.grad = gw.clone(); b.grad = gb.clone(); opt.step()
///     return w.detach().flatten().tolist() + b.detach().tolist()
/// run(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01))
/// run(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01))
/// run(lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01))
/// run(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1))
/// run(lambda p: LARS(p, lr=0.5, weight_decay=0.01))  # facebookresearch/barlowtwins main.py's
///     # LARS (eta=0.001, momentum=0.9) with weight_decay_filter and lars_adaptation_filter
///     # = exclude_bias_and_norm (p.ndim == 1)
/// ```
///
/// Each case runs both ways of getting the gradients, which must agree bit for bit: the
/// optimizer's own [`Optimizer::backward`] (the engine's) and `zero_grad` + `loss.backward()`.
fn run_optimizer(config: OptimizerConfig, lr: f64, wd: f64) -> Result<Vec<f32>> {
    let held = run_optimizer_with(config.clone(), lr, wd, true)?;
    let through_grad = run_optimizer_with(config, lr, wd, false)?;
    assert_eq!(held, through_grad, "Optimizer::backward and zero_grad + backward() disagree");
    Ok(held)
}

fn run_optimizer_with(config: OptimizerConfig, lr: f64, wd: f64, held: bool) -> Result<Vec<f32>> {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let w = root.var_copy("weight", &Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.25]).view([2, 2]));
    let b = root.var_copy("bias", &Tensor::from_slice(&[0.1f32, -0.2]));
    let grads: [([f32; 4], [f32; 2]); 3] = [
        ([0.1, -0.2, 0.3, 0.4], [0.05, -0.05]),
        ([-0.3, 0.1, 0.2, -0.1], [0.02, 0.01]),
        ([0.2, 0.2, -0.4, 0.3], [-0.03, 0.04]),
    ];
    let mut opt = Optimizer::new(&vs, &config, wd, &[])?;
    opt.set_lr(lr);
    for (gw, gb) in grads {
        // d/dw sum(w * gw) = gw
        let loss = (&w * Tensor::from_slice(&gw).view([2, 2])).sum(Kind::Float)
            + (&b * Tensor::from_slice(&gb)).sum(Kind::Float);
        if held {
            opt.backward(&loss)?;
        } else {
            opt.zero_grad();
            loss.backward();
        }
        opt.step()?;
    }
    let mut out = Vec::<f32>::try_from(&w.detach().flatten(0, -1))?;
    out.extend(Vec::<f32>::try_from(&b.detach())?);
    Ok(out)
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((*g as f64 - w).abs() <= tol, "{what}[{i}]: got {g}, PyTorch {w}");
    }
}

/// PyTorch's default `zero_grad(set_to_none=True)`: a variable the loss does not reach gets no
/// gradient and the step leaves it alone, weight decay and momentum included; the variables' own
/// `.grad()` stays untouched by [`Optimizer::backward`].
#[test]
fn a_variable_the_loss_does_not_reach_is_left_alone() -> Result<()> {
    let vs = nn::VarStore::new(Device::Cpu);
    let used = vs.root().var_copy("used", &Tensor::from_slice(&[1.0f32, 2.0]));
    let unused = vs.root().var_copy("unused", &Tensor::from_slice(&[3.0f32, -4.0]));
    let mut opt = Optimizer::new(&vs, &OptimizerConfig::sgd(0.9), 0.1, &[])?;
    opt.set_lr(0.5);
    for _ in 0..3 {
        opt.backward(&used.square().sum(Kind::Float))?;
        opt.step()?;
    }
    assert_eq!(Vec::<f32>::try_from(&unused.detach())?, vec![3.0, -4.0]);
    assert!(!used.grad().defined() && !unused.grad().defined(), "backward wrote into .grad()");
    // The used one moved: w ← w − lr·(2w + wd·w) with momentum, from (1, 2).
    let moved = Vec::<f32>::try_from(&used.detach())?;
    assert!(moved[0] < 1.0 && moved[1] < 2.0, "{moved:?}");
    // Autograd hands `w1 + w2` one gradient tensor for both, and `w.sum()` an expanded view: each
    // variable must still get a gradient of its own, so that in-place clipping scales each once.
    let vs2 = nn::VarStore::new(Device::Cpu);
    let (w1, w2) = (vs2.root().zeros("w1", &[2]), vs2.root().zeros("w2", &[2]));
    let mut opt2 = Optimizer::new(&vs2, &OptimizerConfig::sgd(0.0), 0.0, &[])?;
    opt2.backward(&((&w1 + &w2) * Tensor::from_slice(&[3.0f32, 1.0])).sum(Kind::Float))?; // (3, 1) each: norm √20
    let norm = opt2.clip_grad_norm(1.0)?;
    assert!((norm - 20f64.sqrt()).abs() < 1e-5, "{norm}");
    assert!((opt2.grad_norm() - 1.0).abs() < 1e-5, "clipped norm {}", opt2.grad_norm());
    // A loss that reaches no trainable weight is a clear error, not an autograd panic.
    let frozen = Tensor::from_slice(&[1.0f32]).sum(Kind::Float);
    let e = opt.backward(&frozen).unwrap_err().to_string();
    assert!(e.contains("does not depend on any trainable weight"), "{e}");
    Ok(())
}

#[test]
fn sgd_momentum_matches_pytorch() -> Result<()> {
    let got = run_optimizer(OptimizerConfig::sgd(0.9), 0.1, 0.01)?;
    let want = [
        0.5071053504943848,
        -0.9792607426643372,
        1.909623622894287,
        0.12934064865112305,
        0.08511047810316086,
        -0.19124697148799896,
    ];
    assert_close(&got, &want, 1e-6, "SGD");
    Ok(())
}

/// libtorch's fused SGD kernel (the optimizer's default on the CPU) and the per-variable loop
/// (PyTorch's CPU default) agree to rounding over several steps: weight decay, momentum, Nesterov,
/// no momentum, a group with its own rate and no weight decay, and a variable the loss skips in
/// one step (it keeps its weight and momentum there). The kernel must be found in the kit's
/// libtorch: a failed lookup would silently cost the speed.
#[test]
fn fused_sgd_agrees_with_the_per_variable_loop() -> Result<()> {
    let cases = [
        (OptimizerConfig::sgd(0.9), 5e-4),
        (OptimizerConfig::Sgd { momentum: 0.9, nesterov: true }, 1e-2),
        (OptimizerConfig::sgd(0.0), 1e-4),
        (OptimizerConfig::sgd(0.9), 0.0),
    ];
    for (config, wd) in cases {
        let run = |fused: bool| -> Result<Vec<(String, Vec<f32>)>> {
            // Fixed values, not tch's global generator, which tests running beside this one share.
            let vals = |shape: &[i64], phase: f64| {
                let n: i64 = shape.iter().product();
                (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + phase).sin().view(shape)
            };
            let vs = nn::VarStore::new(Device::Cpu);
            let root = vs.root();
            let a = root.var_copy("a", &vals(&[37, 5], 0.0));
            let b = root.var_copy("b", &(vals(&[64], 1.0) + 0.5));
            let c = (&root / "head").var_copy("c", &vals(&[3, 3, 2, 2], 2.0));
            // A channels-last weight, as a CUDA run keeps its convolutions (the kernel walks memory order).
            let mut d = root.var_copy("d", &vals(&[4, 3, 3, 3], 3.0));
            selfsup::tch::no_grad(|| d.set_data(&train::amp::to_channels_last(&d)));
            let head = ParamGroup::new("head", &["head."]).lr_scale(0.1).weight_decay(0.0);
            let mut opt = Optimizer::new(&vs, &config, wd, &[head])?;
            assert_eq!(opt.set_fused(fused), fused, "fused SGD not available (fused = {fused})");
            for step in 0..5 {
                opt.set_lr(0.05 * (step + 1) as f64);
                let mut loss = a.sin().sum(Kind::Float) + (&b * &b).sum(Kind::Float) * 0.5 + d.cos().sum(Kind::Float);
                if step != 2 {
                    loss += c.exp().mean(Kind::Float);
                }
                opt.backward(&loss)?;
                opt.step()?;
            }
            let mut out: Vec<(String, Vec<f32>)> = vec![];
            for (name, t) in vs.variables().into_iter().chain(opt.state().into_iter().filter(|(n, _)| n != "step")) {
                out.push((name, Vec::<f32>::try_from(&t.detach().flatten(0, -1))?));
            }
            out.sort_by(|x, y| x.0.cmp(&y.0));
            Ok(out)
        };
        let (fused, looped) = (run(true)?, run(false)?);
        assert_eq!(fused.len(), looped.len(), "{config:?}: the same variables and buffers");
        assert!(fused.len() >= 3, "{fused:?}");
        for ((name, f), (name2, l)) in fused.iter().zip(&looped) {
            assert_eq!(name, name2);
            for (i, (x, y)) in f.iter().zip(l).enumerate() {
                assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{config:?} wd {wd}: {name}[{i}] fused {x}, loop {y}");
            }
        }
    }
    // The default: fused for SGD on the CPU, the loop for the other rules.
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = vs.root().zeros("w", &[4]);
    assert!(Optimizer::new(&vs, &OptimizerConfig::sgd(0.9), 0.0, &[])?.fused());
    assert!(!Optimizer::new(&vs, &OptimizerConfig::adam(), 0.0, &[])?.fused());
    Ok(())
}

#[test]
fn sgd_nesterov_matches_pytorch() -> Result<()> {
    let got = run_optimizer(OptimizerConfig::Sgd { momentum: 0.9, nesterov: true }, 0.1, 0.01)?;
    let want = [
        0.504887044429779,
        -0.9884546399116516,
        1.9029407501220703,
        0.08090677857398987,
        0.08234016597270966,
        -0.19155582785606384,
    ];
    assert_close(&got, &want, 1e-6, "SGD nesterov");
    Ok(())
}

#[test]
fn adam_matches_pytorch() -> Result<()> {
    let got = run_optimizer(OptimizerConfig::adam(), 0.01, 0.01)?;
    let want = [
        0.49434930086135864,
        -0.9889522790908813,
        1.9793580770492554,
        0.22850459814071655,
        0.07780705392360687,
        -0.18485218286514282,
    ];
    assert_close(&got, &want, 1e-6, "Adam");
    Ok(())
}

#[test]
fn adamw_matches_pytorch() -> Result<()> {
    let got = run_optimizer(OptimizerConfig::adamw(), 0.01, 0.1)?;
    let want = [
        0.493270605802536,
        -0.9870893359184265,
        1.9740593433380127,
        0.22788646817207336,
        0.07778799533843994,
        -0.1851538121700287,
    ];
    assert_close(&got, &want, 1e-6, "AdamW");
    Ok(())
}

#[test]
fn lars_matches_barlow_twins_implementation() -> Result<()> {
    let got = run_optimizer(OptimizerConfig::lars(), 0.5, 0.01)?;
    let want = [
        0.5006492137908936,
        -0.9997337460517883,
        1.9977818727493286,
        0.24770022928714752,
        0.02825000509619713,
        -0.16175000369548798,
    ];
    assert_close(&got, &want, 1e-6, "LARS");
    Ok(())
}

#[test]
fn param_groups_scale_the_learning_rate() -> Result<()> {
    let vs = nn::VarStore::new(Device::Cpu);
    let body = vs.root().sub("layer1").zeros("weight", &[2]);
    let head = vs.root().sub("fc").zeros("weight", &[2]);
    let mut opt =
        Optimizer::new(&vs, &OptimizerConfig::sgd(0.0), 0.0, &[ParamGroup::new("head", &["fc."]).lr_scale(10.0)])?;
    opt.set_lr(0.1);
    opt.zero_grad();
    (body.sum(Kind::Float) + head.sum(Kind::Float)).backward(); // gradients of 1
    opt.step()?;
    assert_close(&Vec::<f32>::try_from(&body.detach())?, &[-0.1, -0.1], 1e-7, "backbone");
    assert_close(&Vec::<f32>::try_from(&head.detach())?, &[-1.0, -1.0], 1e-6, "head");
    // A group that selects nothing is a typo, said as such.
    let err = Optimizer::new(&vs, &OptimizerConfig::sgd(0.9), 0.0, &[ParamGroup::new("x", &["head."])]);
    assert!(matches!(err, Err(Error::Config(m)) if m.contains("selects no variable")));
    Ok(())
}

#[test]
fn optimizer_state_round_trip_continues_identically() -> Result<()> {
    for config in [OptimizerConfig::sgd(0.9), OptimizerConfig::adamw(), OptimizerConfig::lars()] {
        let make = || {
            let vs = nn::VarStore::new(Device::Cpu);
            let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0, 3.0]).view([1, 3]));
            (vs, w)
        };
        let step = |opt: &mut Optimizer, w: &Tensor, g: [f32; 3]| -> Result<()> {
            opt.zero_grad();
            (w * Tensor::from_slice(&g).view([1, 3])).sum(Kind::Float).backward();
            opt.step()
        };
        let (vs_a, w_a) = make();
        let mut a = Optimizer::new(&vs_a, &config, 0.01, &[])?;
        a.set_lr(0.1);
        step(&mut a, &w_a, [0.1, 0.2, -0.3])?;
        // b starts from a's state after one step
        let (vs_b, w_b) = make();
        checkpoint::load_vars(&vs_b, &[("w".to_string(), w_a.detach().copy())])?;
        let mut b = Optimizer::new(&vs_b, &config, 0.01, &[])?;
        let state: Vec<(String, Tensor)> = a.state().into_iter().map(|(n, t)| (n, t.copy())).collect();
        b.load_state(&state)?;
        b.set_lr(0.1);
        step(&mut a, &w_a, [0.3, -0.1, 0.2])?;
        step(&mut b, &w_b, [0.3, -0.1, 0.2])?;
        assert!(w_a.equal(&w_b), "{}: resumed optimizer diverged", config.name());
        assert_eq!(b.steps(), 2);
    }
    Ok(())
}

#[test]
fn gradient_clipping_bounds_the_global_norm() -> Result<()> {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().zeros("w", &[2]);
    let mut opt = Optimizer::new(&vs, &OptimizerConfig::sgd(0.0), 0.0, &[])?;
    (&w * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float).backward(); // grad (3, 4), norm 5
    let before = opt.clip_grad_norm(1.0)?;
    assert!((before - 5.0).abs() < 1e-5);
    assert!((opt.grad_norm() - 1.0).abs() < 1e-5);
    Ok(())
}

// ---------------------------------------------------------------- schedules vs PyTorch

/// ```python
/// p = torch.nn.Parameter(torch.zeros(1)); opt = torch.optim.SGD([p], lr=0.1)
/// s = CosineAnnealingLR(opt, T_max=10)                                  # "cos"
/// s = SequentialLR(opt, [LinearLR(opt, start_factor=1/3, total_iters=2),
///                        CosineAnnealingLR(opt, T_max=7)], milestones=[3])  # "warm"
/// s = OneCycleLR(opt, max_lr=0.1, total_steps=10, cycle_momentum=False)  # "one"
/// s = MultiStepLR(opt, milestones=[2, 4], gamma=0.1)                    # "multi"
/// # record opt.param_groups[0]['lr'], then opt.step(); s.step()
/// ```
#[test]
fn schedules_match_pytorch() {
    let close =
        |got: f64, want: f64, what: &str| assert!((got - want).abs() < 1e-9, "{what}: got {got}, PyTorch {want}");
    let cos = [
        0.1,
        0.09755282581475769,
        0.09045084971874738,
        0.07938926261462367,
        0.06545084971874739,
        0.05000000000000001,
        0.03454915028125264,
        0.020610737385376353,
        0.009549150281252635,
        0.002447174185242324,
    ];
    let warm = [
        0.03333333333333333,
        0.06666666666666667,
        0.1,
        0.1,
        0.09504844339512096,
        0.08117449009293669,
        0.061126046697815725,
        0.03887395330218429,
        0.018825509907063328,
        0.004951556604879048,
    ];
    let one = [
        0.0040000000000000036,
        0.052000000000000005,
        0.1,
        0.09504846320134738,
        0.0811745653949763,
        0.06112620219362893,
        0.03887419780637107,
        0.0188258346050237,
        0.004951936798652629,
        4e-07,
    ];
    let multi = [0.1, 0.1, 0.010000000000000002, 0.010000000000000002, 0.0010000000000000002, 0.0010000000000000002];
    for s in 0..10 {
        close(cosine_lr(s, 10, 0.1, 0), cos[s], "cosine");
        close(cosine_lr(s, 10, 0.1, 3), warm[s], "cosine with warm-up");
        close(one_cycle_lr(s, 10, 0.1, 0.3, 25.0, 1e4), one[s], "one cycle");
        close(LrSchedule::one_cycle().lr(0.1, s, 10, 5), one[s], "LrSchedule::OneCycle");
    }
    for (e, want) in multi.iter().enumerate() {
        close(step_decay_lr(e, 0.1, &[2, 4], 0.1), *want, "step decay");
        // 3 steps per epoch: the schedule works in epochs
        close(LrSchedule::step_decay(vec![2, 4], 0.1).lr(0.1, 3 * e + 1, 100, 3), *want, "LrSchedule::StepDecay");
    }
    assert_eq!(cosine_lr(10, 10, 0.1, 0), 0.0);
    assert!(LrSchedule::cosine(10).validate(10).is_err());
}

// ---------------------------------------------------------------- collapse metric

#[test]
fn collapse_metric_is_one_over_sqrt_d_for_random_and_zero_for_constant() -> Result<()> {
    selfsup::seed_everything(0);
    let z = Tensor::randn([2048, 64], (Kind::Float, Device::Cpu));
    let s = train::std_of_l2_normalized(&z)?;
    assert!((s - 0.125).abs() < 0.005, "random z: {s}, expected ≈ 1/√64");
    let c = Tensor::ones([16, 64], (Kind::Float, Device::Cpu)) * 3.0;
    assert!(train::std_of_l2_normalized(&c)? < 1e-6);
    assert!(matches!(
        train::std_of_l2_normalized(&Tensor::ones([4], (Kind::Float, Device::Cpu))),
        Err(Error::Shape { .. })
    ));
    let mut monitor = train::CollapseMonitor::new(0.2);
    assert!(monitor.check(0.0, 64, 5, 0).is_some_and(|w| w.contains("step 5")));
    assert!(monitor.check(0.0, 64, 6, 0).is_none(), "once per epoch");
    assert!(monitor.check(0.12, 64, 7, 1).is_none(), "healthy");
    Ok(())
}

// ---------------------------------------------------------------- history files

#[test]
fn history_jsonl_round_trip() -> Result<()> {
    let text = concat!(
        r#"{"type":"step","step":0,"epoch":0,"loss":2.5,"lr":0.1,"z_std":0.1,"images_per_sec":100.0,"metrics":{"tau":0.99}}"#,
        "\n",
        r#"{"type":"step","step":1,"epoch":0,"loss":2.0,"lr":0.05,"images_per_sec":120.0}"#,
        "\n",
        r#"{"type":"epoch","epoch":0,"mean_loss":2.25,"knn_accuracy":0.5,"seconds":1.5}"#,
        "\n",
        r#"{"type":"step","step":2,"epoch":1,"loss":1.5,"lr":0.01,"z_std":null,"images_per_sec":110.0,"metrics":{}}"#,
        "\n",
        r#"{"type":"step","step":3,"ep"#, // a line being written while the file is read
    );
    let h = History::from_jsonl(text)?;
    assert_eq!(h.num_steps(), 3);
    assert_eq!(h.epoch_losses(), vec![(0, 2.25)]);
    assert_eq!(h.knn_accuracies(), vec![(0, 0.5)]);
    assert_eq!(h.metric("tau"), vec![(0, 0.99)]);
    assert_eq!(h.z_stds(), vec![(0, 0.1)]);
    let dir = fresh_dir("history");
    let path = dir.join("h.jsonl");
    h.save_jsonl(&path)?;
    assert_eq!(History::load_jsonl(&path)?, h);
    assert!(matches!(History::from_jsonl("{\"type\":\"nope\"}\n"), Err(Error::Data(_))));
    Ok(())
}

// ---------------------------------------------------------------- a tiny method for the engine

/// ResNet-18 (small-image stem) + a linear head, with a momentum (EMA) copy of the head as
/// state, trained to make the two views' projections agree (negative cosine, BYOL-like).
struct TinyMethod {
    online: nn::VarStore,
    backbone: ResNet,
    head: nn::Linear,
    target: nn::VarStore,
    target_head: nn::Linear,
    calls: usize,
    nan_at_call: Option<usize>,
    /// Per call, read at once as the engine did before it read a log window at a time (one
    /// sync per value): loss, std of the ℓ2-normalised z, and the device metric `z_mean`.
    read_each_step: Vec<(f64, f64, f64)>,
}

impl TinyMethod {
    fn new(seed: i64) -> Result<Self> {
        selfsup::tch::manual_seed(seed);
        let online = nn::VarStore::new(Device::Cpu);
        let backbone = ResNet::new(&online.root(), &ResNetConfig::default().small_images(true))?;
        let head = nn::linear(online.root().sub("head"), 512, 32, Default::default());
        let mut target = nn::VarStore::new(Device::Cpu);
        let target_head = nn::linear(target.root().sub("head"), 512, 32, Default::default());
        target.freeze();
        Ok(TinyMethod { online, backbone, head, target, target_head, calls: 0, nan_at_call: None, read_each_step: vec![] })
    }
}

impl SslMethod for TinyMethod {
    fn name(&self) -> &str {
        "tiny"
    }
    fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
        self.calls += 1;
        let z1 = self.backbone.features(v1, true)?.apply(&self.head); // [N, 32]
        let h2 = self.backbone.features(v2, true)?; // [N, 512]
        let t2 = selfsup::tch::no_grad(|| h2.detach().apply(&self.target_head)); // [N, 32]
        let cos = |a: &Tensor, b: &Tensor| Tensor::cosine_similarity(a, b, 1, 1e-8).mean(Kind::Float);
        let mut loss: Tensor = -cos(&z1, &t2) - 0.5 * cos(&z1, &h2.apply(&self.head));
        if self.nan_at_call == Some(self.calls) {
            loss *= f64::NAN;
        }
        let z_mean = z1.detach().mean(Kind::Float); // []
        let z_std = train::std_of_l2_normalized(&z1.detach())?;
        self.read_each_step.push((loss.double_value(&[]), z_std, z_mean.double_value(&[])));
        let metrics = StepMetrics::new().with("calls", self.calls as f64).with_tensor("z_mean", &z_mean);
        Ok(StepOutput { loss, z: Some(z1.detach()), metrics })
    }
    fn after_step(&mut self, _step: usize, _total: usize) -> Result<()> {
        selfsup::tch::no_grad(|| {
            let online = self.online.variables();
            for (name, mut t) in self.target.variables() {
                if let Some(o) = online.get(&name) {
                    t.copy_(&(&t * 0.9 + o * 0.1));
                }
            }
        });
        Ok(())
    }
    fn online(&self) -> &nn::VarStore {
        &self.online
    }
    fn backbone(&self) -> &ResNet {
        &self.backbone
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> =
            self.target.variables().into_iter().map(|(n, t)| (format!("target.{n}"), t)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let vars = self.target.variables();
        for (name, t) in state {
            let key = name.strip_prefix("target.").unwrap_or(name);
            let mut dst = vars.get(key).ok_or_else(|| Error::Data(format!("unknown state '{name}'")))?.shallow_clone();
            selfsup::tch::no_grad(|| dst.copy_(t));
        }
        Ok(())
    }
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("selfsup-train-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// 32 unlabelled 16x16 images: 4 steps of 8 per epoch.
fn tiny_set() -> Result<ImageSet> {
    Ok(synthetic::load(Split::Unlabeled, &SyntheticConfig::tiny().image_size(16))?.head(32))
}

fn tiny_augment() -> Augment {
    augment::presets::simclr_cifar(16)
}

fn tiny_config() -> TrainConfig {
    TrainConfig::tiny().epochs(2).batch_size(8).lr(0.05).progress(false).schedule(LrSchedule::cosine(2))
}

fn all_tensors(m: &TinyMethod) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = m.online.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.extend(m.state());
    v
}

// ---------------------------------------------------------------- resume, FAST mode

#[test]
fn killed_and_resumed_run_is_bit_identical() -> Result<()> {
    let _serial = common::serial();
    let (set, aug) = (tiny_set()?, tiny_augment());
    // Log windows of 3 steps: flushes at 3, 4 (epoch end, checkpoint), 7, 8.
    let cfg = TrainConfig { checkpoint_every_steps: Some(4), log_every: 3, ..tiny_config() };
    // One run of all 8 steps.
    let dir_a = fresh_dir("resume-a");
    let mut a = TinyMethod::new(1)?;
    let ha = train::pretrain(&mut a, &set, &aug, &cfg, &dir_a)?;
    assert_eq!(ha.num_steps(), 8);
    assert_eq!(ha.epochs.len(), 2);
    // A run "killed" after 3 steps (mid-epoch), then the same call again.
    let dir_b = fresh_dir("resume-b");
    let mut b = TinyMethod::new(1)?;
    let hb = train::pretrain(&mut b, &set, &aug, &cfg.clone().max_steps(3), &dir_b)?;
    assert_eq!(hb.num_steps(), 3);
    let mut b = TinyMethod::new(2)?; // a new process: other initial weights, all replaced by the checkpoint
    let hb = train::pretrain(&mut b, &set, &aug, &cfg, &dir_b)?;
    assert_eq!(hb.num_steps(), 8);
    for ((name, ta), (_, tb)) in all_tensors(&a).iter().zip(all_tensors(&b).iter()) {
        assert!(ta.equal(tb), "{name} differs after resume");
    }
    // The recorded losses agree too (to the last digit JSON keeps: serde_json parses floats to
    // within one ulp unless its `float_roundtrip` feature is on).
    let losses = |h: &History| {
        h.steps
            .iter()
            .map(|s| (s.step, (s.loss * 1e12).round() as i64, (s.lr * 1e12).round() as i64))
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&ha), losses(&hb));
    // The history file a notebook watches holds the same steps.
    let watched = History::load_jsonl(dir_b.join(checkpoint::HISTORY_FILE))?;
    assert_eq!(losses(&watched), losses(&hb));
    assert_eq!(watched.epochs.len(), 2);

    // FAST mode: the same call on a finished run loads it and returns at once, training nothing.
    let mut c = TinyMethod::new(3)?;
    let hc = train::pretrain(&mut c, &set, &aug, &cfg, &dir_a)?;
    assert_eq!(c.calls, 0);
    assert_eq!(losses(&hc), losses(&ha));
    for ((name, ta), (_, tc)) in all_tensors(&a).iter().zip(all_tensors(&c).iter()) {
        assert!(ta.equal(tc), "{name} not loaded in FAST mode");
    }
    // Another trajectory in the same folder is refused with a way out.
    let err = train::pretrain(&mut c, &set, &aug, &cfg.clone().lr(0.1), &dir_a);
    assert!(matches!(err, Err(Error::Config(m)) if m.contains("lr") && m.contains("resume(false)")));
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
    Ok(())
}

/// On a CPU with native bf16, a `Precision::Bf16` run times its step under bf16 autocast and
/// in f32 before it trains (`train::bf16_probe`). Those passes must leave no trace: a run that
/// measured trains bit for bit as a second one, which finds the measurement kept in the process
/// and trains straight away in the same precision; the checkpoint says which precision that was.
#[test]
fn timing_bf16_against_f32_before_a_run_leaves_no_trace() -> Result<()> {
    let _serial = common::serial();
    let (set, aug) = (tiny_set()?, tiny_augment());
    let cfg = tiny_config().mixed_precision(train::Precision::Bf16).max_steps(3);
    let setup = train::amp::setup(train::Precision::Bf16, Device::Cpu)?;
    let passes = if setup.measure_cpu_bf16 { 2 * (1 + train::bf16_probe::TIMED_PASSES) } else { 0 };
    let run = |name: &str| -> Result<(TinyMethod, Option<train::amp::Autocast>)> {
        let dir = fresh_dir(name);
        let mut m = TinyMethod::new(1)?;
        train::pretrain(&mut m, &set, &aug, &cfg, &dir)?;
        let autocast = checkpoint::Checkpoint::load(&dir)?.meta.autocast;
        let _ = std::fs::remove_dir_all(&dir);
        Ok((m, autocast))
    };
    let (first, first_autocast) = run("bf16-measured")?;
    let (second, second_autocast) = run("bf16-recalled")?;
    // The first run did the timed passes (BatchNorm statistics and the EMA state moved in
    // them), the second none: each step is one training_step call.
    assert_eq!((first.calls, second.calls), (3 + passes, 3), "native bf16 measured: {}", setup.measure_cpu_bf16);
    for ((name, a), (_, b)) in all_tensors(&first).iter().zip(all_tensors(&second).iter()) {
        assert!(a.equal(b), "{name} differs: the timed passes left a trace");
    }
    assert_eq!(first_autocast, second_autocast);
    let expected = if setup.measure_cpu_bf16 {
        vec![train::amp::Autocast::Off, train::amp::Autocast::CpuBf16]
    } else {
        vec![setup.autocast]
    };
    assert!(first_autocast.is_some_and(|a| expected.contains(&a)), "{first_autocast:?}");

    // MoCo v2 changes its state inside the step (momentum encoder, queue and its pointer): the
    // timed passes put that back too.
    let moco_run = |name: &str| -> Result<Vec<(String, Tensor)>> {
        let dir = fresh_dir(name);
        selfsup::tch::manual_seed(1);
        let mut m = Moco::new(MocoConfig::tiny(), Device::Cpu)?;
        train::pretrain(&mut m, &set, &aug, &cfg, &dir)?;
        let _ = std::fs::remove_dir_all(&dir);
        let mut all: Vec<(String, Tensor)> = m.online().variables().into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.extend(m.state());
        Ok(all)
    };
    let (first, second) = (moco_run("moco-measured")?, moco_run("moco-recalled")?);
    for ((name, a), (_, b)) in first.iter().zip(second.iter()) {
        assert!(a.equal(b), "MoCo's {name} differs: the timed passes left a trace");
    }
    Ok(())
}

#[test]
fn nan_loss_stops_naming_the_step() -> Result<()> {
    let _serial = common::serial();
    let (set, aug) = (tiny_set()?, tiny_augment());
    let dir = fresh_dir("nan");
    let mut m = TinyMethod::new(0)?;
    m.nan_at_call = Some(3); // the third call is step 2
    let before: Vec<Tensor> = all_tensors(&m).into_iter().map(|(_, t)| t.copy()).collect();
    let err = train::pretrain(&mut m, &set, &aug, &tiny_config().max_steps(4), &dir).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("NaN at step 2"), "{msg}");
    assert!(msg.contains("learning rate") && msg.contains("fp16"), "{msg}");
    assert_eq!(m.calls, 3);
    assert!(before.iter().zip(all_tensors(&m)).any(|(b, (_, t))| !b.equal(&t)), "the first steps trained");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Issue 4: losses are read once per log window, so a NaN in the middle of a window is found at
/// the window's end; the run then stops naming the NaN step, writes no checkpoint after it, and
/// keeps the records and checkpoint from before it.
#[test]
fn nan_in_the_middle_of_a_log_window_stops_at_that_step_and_no_checkpoint_follows_it() -> Result<()> {
    let _serial = common::serial();
    let (set, aug) = (tiny_set()?, tiny_augment());
    // (checkpoint every, NaN at step, the window's last step + 1 (calls), last checkpoint):
    // windows end at epoch ends (4 steps) and before checkpoints; log_every is larger.
    for (every, nan_step, calls, last_ck) in [(4, 5, 8, 4), (3, 4, 6, 3)] {
        let dir = fresh_dir(&format!("nan-window-{every}"));
        let mut m = TinyMethod::new(0)?;
        m.nan_at_call = Some(nan_step + 1);
        let cfg = TrainConfig { log_every: 100, checkpoint_every_steps: Some(every), ..tiny_config() };
        let msg = match train::pretrain(&mut m, &set, &aug, &cfg, &dir) {
            Err(Error::Diverged(msg)) => msg,
            other => panic!("expected Error::Diverged, got {other:?}"),
        };
        assert!(msg.contains(&format!("NaN at step {nan_step} ")), "{msg}");
        assert!(msg.contains(&format!("is from step {last_ck}.")), "{msg}");
        assert_eq!(m.calls, calls, "trained to the end of the window");
        let ck = train::Checkpoint::load(&dir)?;
        assert_eq!(ck.meta.step, last_ck, "no checkpoint after the NaN step");
        assert_eq!(ck.meta.history.num_steps(), last_ck);
        for (name, t) in ck.online.iter().chain(&ck.state) {
            assert!(t.isfinite().all().int64_value(&[]) == 1, "{name} is not finite in the checkpoint");
        }
        // Every step before the NaN one is in the file, once; the NaN step and later are not.
        let watched = History::load_jsonl(dir.join(checkpoint::HISTORY_FILE))?;
        assert_eq!(watched.steps.iter().map(|s| s.step).collect::<Vec<_>>(), (0..nan_step).collect::<Vec<_>>());
        assert_eq!(watched.epochs.len(), nan_step / 4);
        for (s, read) in watched.steps.iter().zip(&m.read_each_step) {
            assert_eq!(s.loss, read.0, "step {}", s.step); // serde_json's float_roundtrip: exact
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Issue 4: the records written from log windows are the per-step reads of before: one per
/// step, in order, the same loss, z-std and metrics, whatever `log_every` is.
#[test]
fn windowed_records_equal_the_per_step_reads() -> Result<()> {
    let _serial = common::serial();
    let (set, aug) = (tiny_set()?, tiny_augment());
    let run = |log_every: usize, name: &str| -> Result<(TinyMethod, History, PathBuf)> {
        let dir = fresh_dir(name);
        let mut m = TinyMethod::new(4)?;
        let cfg = TrainConfig { log_every, ..tiny_config().grad_clip(1.0) };
        let h = train::pretrain(&mut m, &set, &aug, &cfg, &dir)?;
        Ok((m, h, dir))
    };
    let (m, h, dir) = run(3, "window-3")?;
    assert_eq!(h.steps.iter().map(|s| s.step).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    assert_eq!(m.read_each_step.len(), 8);
    for (s, &(loss, z_std, z_mean)) in h.steps.iter().zip(&m.read_each_step) {
        assert!(loss.is_finite() && z_std.is_finite() && z_mean.is_finite());
        assert_eq!(s.loss, loss, "step {}", s.step);
        assert_eq!(s.z_std, Some(z_std), "step {}", s.step);
        assert_eq!(s.metrics.get("z_mean"), Some(&z_mean), "step {}", s.step);
        assert_eq!(s.metrics.get("calls"), Some(&((s.step + 1) as f64)));
        assert!(s.metrics.get("grad_norm").is_some_and(|g| g.is_finite() && *g > 0.0));
        assert!(s.images_per_sec.is_finite() && s.images_per_sec > 0.0);
    }
    // Windows [0, 1, 2], [3] (epoch end), [4, 5, 6], [7]: one throughput per window.
    assert!(h.steps[0].images_per_sec == h.steps[2].images_per_sec);
    assert!(h.steps[4].images_per_sec == h.steps[6].images_per_sec);
    // The file holds exactly the returned history, one line per step and epoch.
    assert_eq!(std::fs::read_to_string(dir.join(checkpoint::HISTORY_FILE))?, h.to_jsonl()?);
    // Read every step: the same records but for the throughput.
    let (_, h1, dir1) = run(1, "window-1")?;
    let strip = |h: &History| {
        let mut h = h.clone();
        h.steps.iter_mut().for_each(|s| s.images_per_sec = 0.0);
        h.epochs.iter_mut().for_each(|e| e.seconds = 0.0);
        h
    };
    assert_eq!(strip(&h), strip(&h1));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir1);
    Ok(())
}

#[test]
fn failed_checkpoint_write_keeps_the_previous_one() -> Result<()> {
    let _serial = common::serial();
    let (set, aug) = (tiny_set()?, tiny_augment());
    let dir = fresh_dir("atomic");
    let mut m = TinyMethod::new(0)?;
    train::pretrain(&mut m, &set, &aug, &tiny_config().max_steps(2), &dir)?;
    let path = checkpoint::checkpoint_path(&dir);
    let bytes = std::fs::read(&path)?;
    // A write that fails half-way (disk full, killed process): the old file stays.
    let failed = checkpoint::write_atomic(&path, |tmp| {
        std::fs::write(tmp, &bytes[..bytes.len() / 2])?;
        Err(Error::Data("disk full".into()))
    });
    assert!(failed.is_err());
    assert_eq!(std::fs::read(&path)?, bytes);
    // A checkpoint that cannot be serialised (a complex tensor) fails without touching the file.
    let mut ck = train::Checkpoint::load(&dir)?;
    ck.state.push(("bad".into(), Tensor::zeros([2], (Kind::ComplexFloat, Device::Cpu))));
    assert!(ck.save(&dir).is_err());
    assert_eq!(std::fs::read(&path)?, bytes);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // And it still resumes.
    let h = train::pretrain(&mut m, &set, &aug, &tiny_config().max_steps(3), &dir)?;
    assert_eq!(h.num_steps(), 3);
    assert_eq!(train::Checkpoint::load(&dir)?.meta.step, 3);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

// ---------------------------------------------------------------- supervised training

#[test]
fn supervised_training_records_test_accuracy_and_resumes() -> Result<()> {
    let _serial = common::serial();
    let cfg_data = SyntheticConfig::tiny().image_size(16);
    let train_set = synthetic::load(Split::Train, &cfg_data)?.head(32);
    let test_set = synthetic::load(Split::Test, &cfg_data)?.head(20);
    let dir = fresh_dir("supervised");
    let build = || -> Result<(nn::VarStore, ResNet)> {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ResNet::new(&vs.root(), &ResNetConfig::default().small_images(true).num_classes(10))?;
        Ok((vs, net))
    };
    let cfg = tiny_config().epochs(1).optimizer(OptimizerConfig::adam()).lr(1e-3).schedule(LrSchedule::Constant);
    let (vs, net) = build()?;
    let h = train::train_supervised(
        &vs,
        |x, t| net.forward(x, t),
        &train_set,
        Some(&test_set),
        &tiny_augment(),
        &cfg,
        &dir,
    )?;
    assert_eq!(h.num_steps(), 4);
    let e = h.last_epoch().ok_or_else(|| Error::Data("no epoch".into()))?;
    assert!(e.test_accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
    assert!(e.test_loss.is_some_and(f64::is_finite));
    assert!(e.train_accuracy.is_some());
    // FAST mode: a fresh network gets the trained weights back.
    let (vs2, net2) = build()?;
    let h2 = train::train_supervised(
        &vs2,
        |x, t| net2.forward(x, t),
        &train_set,
        Some(&test_set),
        &tiny_augment(),
        &cfg,
        &dir,
    )?;
    assert_eq!(h2.num_steps(), h.num_steps());
    assert_eq!(h2.epochs.len(), 1);
    let (a, b) = (vs.variables(), vs2.variables());
    assert!(a.iter().all(|(n, t)| b.get(n).is_some_and(|u| u.equal(t))));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn knn_monitor_fills_the_epoch_records() -> Result<()> {
    let _serial = common::serial();
    let data = SyntheticConfig::tiny().image_size(16);
    let (bank, queries) =
        (synthetic::load(Split::Train, &data)?.head(30), synthetic::load(Split::Test, &data)?.head(20));
    let knn_cfg = train::KnnConfig { k: 5, ..Default::default() };
    let knn = train::KnnMonitor { train: &bank, test: &queries, config: &knn_cfg };
    let dir = fresh_dir("knn");
    let mut m = TinyMethod::new(0)?;
    let h =
        train::pretrain_monitored(&mut m, &tiny_set()?, &tiny_augment(), &tiny_config().epochs(1), &dir, Some(knn))?;
    let acc = h.knn_accuracies();
    assert_eq!(acc.len(), 1);
    assert!((0.0..=1.0).contains(&acc[0].1));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
