//! The homework's checks (`selfsup::homework`): the notebooks' reference solutions pass them, and
//! each usual mistake fails with the message that names it. The solutions here are the code of
//! the solution regions of notebooks 03, 01, 04 and 05, so this also shows that a student's method
//! (a type of their own implementing `SslMethod`) fits the kit's engine and checks.
use selfsup::homework;
use selfsup::methods::{self, ByolConfig, SimClrConfig, SslMethod, StepMetrics, StepOutput};
use selfsup::models::{Mlp, ResNet};
use selfsup::tch::{nn, Device, Kind, Tensor};
use selfsup::{losses, Result};

// ------------------------------------------------------------------ the solutions of notebook 03

fn my_nt_xent(z1: &Tensor, z2: &Tensor, temperature: f64) -> Result<Tensor> {
    let n = z1.size()[0];
    let z = losses::l2_normalize(&Tensor::cat(&[z1, z2], 0))?; // [2N, D], unit rows
    let sim = z.mm(&z.tr()) / temperature; // [2N, 2N]: sim(z_i, z_k) / τ
    let self_mask = Tensor::eye(2 * n, (Kind::Bool, z.device())); // k = i
    let logits = sim.masked_fill(&self_mask, f64::NEG_INFINITY); // an anchor is not its own negative
    let partner = (Tensor::arange(2 * n, (Kind::Int64, z.device())) + n).remainder(2 * n); // i ↔ i ± N
    Ok(logits.cross_entropy_for_logits(&partner)) // the mean over the 2N anchors
}

struct MySimClr {
    online: nn::VarStore,
    backbone: ResNet,
    projector: Mlp,
    temperature: f64,
}

impl MySimClr {
    fn new(config: &SimClrConfig, device: Device) -> Result<MySimClr> {
        let online = nn::VarStore::new(device);
        let backbone = ResNet::new(&(online.root() / "backbone"), &config.backbone)?;
        let projector = Mlp::new(&(online.root() / "projector"), &config.projector)?;
        Ok(MySimClr { online, backbone, projector, temperature: config.temperature })
    }
}

impl SslMethod for MySimClr {
    fn name(&self) -> &str {
        "my_simclr"
    }
    fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
        let n = v1.size()[0];
        let h = self.backbone.features(&Tensor::cat(&[v1, v2], 0), true)?; // both views in one batch
        let z = self.projector.forward_t(&h, true)?; // [2N, D]
        let (z1, z2) = (z.narrow(0, 0, n), z.narrow(0, n, n));
        let loss = my_nt_xent(&z1, &z2, self.temperature)?;
        Ok(StepOutput { loss, z: Some(z1.detach()), metrics: StepMetrics::new() })
    }
    fn online(&self) -> &nn::VarStore {
        &self.online
    }
    fn backbone(&self) -> &ResNet {
        &self.backbone
    }
}

fn my_cosine_tau(step: usize, total: usize, base: f64) -> f64 {
    1.0 - (1.0 - base) * ((std::f64::consts::PI * step as f64 / total as f64).cos() + 1.0) / 2.0
}

fn my_ema_update(target: &nn::VarStore, online: &nn::VarStore, tau: f64) -> Result<()> {
    let online_vars = online.variables();
    tch::no_grad(|| {
        for (name, mut t) in target.variables() {
            if let Some(o) = online_vars.get(&name).filter(|o| o.requires_grad()) {
                let new = &t * tau + o * (1.0 - tau);
                t.copy_(&new);
            }
        }
    });
    Ok(())
}

fn my_byol_loss(p1: &Tensor, p2: &Tensor, z1: &Tensor, z2: &Tensor) -> Result<Tensor> {
    fn regression(p: &Tensor, z: &Tensor) -> Result<Tensor> {
        let cos = (losses::l2_normalize(p)? * losses::l2_normalize(&z.detach())?).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        Ok((cos * -2.0 + 2.0).mean(Kind::Float))
    }
    Ok(regression(p1, z2)? + regression(p2, z1)?)
}

struct MyByol {
    online: nn::VarStore,
    backbone: ResNet,
    projector: Mlp,
    predictor: Mlp,
    target: nn::VarStore,
    target_backbone: ResNet,
    target_projector: Mlp,
    base_tau: f64,
}

impl MyByol {
    fn new(config: &ByolConfig, device: Device) -> Result<MyByol> {
        let online = nn::VarStore::new(device);
        let backbone = ResNet::new(&(online.root() / "backbone"), &config.backbone)?;
        let projector = Mlp::new(&(online.root() / "projector"), &config.projector)?;
        let predictor = Mlp::new(&(online.root() / "predictor"), &config.predictor)?;
        let mut target = nn::VarStore::new(device);
        let target_backbone = ResNet::new(&(target.root() / "backbone"), &config.backbone)?;
        let target_projector = Mlp::new(&(target.root() / "projector"), &config.projector)?;
        target.copy(&online)?;
        target.freeze();
        Ok(MyByol { online, backbone, projector, predictor, target, target_backbone, target_projector, base_tau: config.base_momentum })
    }
}

impl SslMethod for MyByol {
    fn name(&self) -> &str {
        "my_byol"
    }
    fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
        let online = |x: &Tensor| -> Result<(Tensor, Tensor)> {
            let z = self.projector.forward_t(&self.backbone.features(x, true)?, true)?;
            let p = self.predictor.forward_t(&z, true)?;
            Ok((z, p))
        };
        let target = |x: &Tensor| -> Result<Tensor> {
            tch::no_grad(|| self.target_projector.forward_t(&self.target_backbone.features(x, true)?, true))
        };
        let ((z1, p1), (_, p2)) = (online(v1)?, online(v2)?);
        let (t1, t2) = (target(v1)?, target(v2)?);
        let loss = my_byol_loss(&p1, &p2, &t1, &t2)?;
        Ok(StepOutput { loss, z: Some(z1.detach()), metrics: StepMetrics::new() })
    }
    fn after_step(&mut self, step: usize, total_steps: usize) -> Result<()> {
        my_ema_update(&self.target, &self.online, my_cosine_tau(step.min(total_steps), total_steps, self.base_tau))
    }
    fn online(&self) -> &nn::VarStore {
        &self.online
    }
    fn backbone(&self) -> &ResNet {
        &self.backbone
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        methods::store_state(&self.target, |n| format!("target.{n}"))
    }
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        methods::load_named("my_byol", &self.state(), state)
    }
}

fn message(r: Result<()>) -> String {
    match r {
        Ok(()) => panic!("the check passed a wrong implementation"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(r: Result<()>, words: &[&str]) {
    let m = message(r);
    for w in words {
        assert!(m.contains(w), "message lacks '{w}': {m}");
    }
}

// ----------------------------------------------------------------------------------- NT-Xent

#[test]
fn nt_xent_solution_passes_and_the_usual_mistakes_are_named() -> Result<()> {
    homework::check_nt_xent(my_nt_xent)?;
    homework::check_nt_xent_on(my_nt_xent, 16, 32, 0.07, 9.0)?;
    homework::check_nt_xent_on(my_nt_xent, 2, 3, 1.0, 5.0)?;
    // self-similarity not masked
    let unmasked = |z1: &Tensor, z2: &Tensor, t: f64| -> Result<Tensor> {
        let n = z1.size()[0];
        let z = losses::l2_normalize(&Tensor::cat(&[z1, z2], 0))?;
        let sim = z.mm(&z.tr()) / t;
        Ok(sim.cross_entropy_for_logits(&(Tensor::arange(2 * n, (Kind::Int64, Device::Cpu)) + n).remainder(2 * n)))
    };
    assert_mentions(homework::check_nt_xent(unmasked), &["check failed (NT-Xent)", "self-similarity", "want"]);
    // sum instead of mean
    assert_mentions(homework::check_nt_xent(|a: &Tensor, b: &Tensor, t| Ok(my_nt_xent(a, b, t)? * 8.0)), &["sum over the 2N anchors"]);
    // raw dot products
    let raw = |z1: &Tensor, z2: &Tensor, t: f64| -> Result<Tensor> {
        let n = z1.size()[0];
        let z = Tensor::cat(&[z1, z2], 0);
        let sim = (z.mm(&z.tr()) / t).masked_fill(&Tensor::eye(2 * n, (Kind::Bool, Device::Cpu)), f64::NEG_INFINITY);
        Ok(sim.cross_entropy_for_logits(&(Tensor::arange(2 * n, (Kind::Int64, Device::Cpu)) + n).remainder(2 * n)))
    };
    assert_mentions(homework::check_nt_xent(raw), &["raw dot products"]);
    assert_mentions(homework::check_nt_xent(|a: &Tensor, b: &Tensor, _t| my_nt_xent(a, b, 1.0)), &["without the temperature"]);
    // shape, error, gradient
    assert_mentions(homework::check_nt_xent(|a: &Tensor, b: &Tensor, t| Ok(my_nt_xent(a, b, t)?.reshape([1]))), &["shape", "[1]"]);
    assert_mentions(
        homework::check_nt_xent(|_: &Tensor, _: &Tensor, _| Err(selfsup::Error::Data("nope".into()))),
        &["returned an error", "nope"],
    );
    assert_mentions(homework::check_nt_xent(|a: &Tensor, b: &Tensor, t| Ok(my_nt_xent(a, b, t)?.detach())), &["no gradient"]);
    Ok(())
}

// ------------------------------------------------------------------------------------ SimCLR

#[test]
fn a_students_simclr_passes_the_step_check_and_trains_with_the_engine() -> Result<()> {
    let config = SimClrConfig::tiny();
    let mut mine = MySimClr::new(&config, Device::Cpu)?;
    homework::check_simclr_step(&mut mine, &config, my_nt_xent)?;
    // a wrong NT-Xent is not this check's business: the expected value uses the student's loss
    let unmasked = |z1: &Tensor, z2: &Tensor, t: f64| -> Result<Tensor> {
        let n = z1.size()[0];
        let z = losses::l2_normalize(&Tensor::cat(&[z1, z2], 0))?;
        Ok((z.mm(&z.tr()) / t).cross_entropy_for_logits(&(Tensor::arange(2 * n, (Kind::Int64, z.device())) + n).remainder(2 * n)))
    };
    struct Unmasked(MySimClr);
    impl SslMethod for Unmasked {
        fn name(&self) -> &str {
            "unmasked"
        }
        fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
            let n = v1.size()[0];
            let z = self.0.projector.forward_t(&self.0.backbone.features(&Tensor::cat(&[v1, v2], 0), true)?, true)?;
            let (z1, z2) = (z.narrow(0, 0, n), z.narrow(0, n, n));
            let unmasked = |z1: &Tensor, z2: &Tensor, t: f64| -> Result<Tensor> {
                let z = losses::l2_normalize(&Tensor::cat(&[z1, z2], 0))?;
                Ok((z.mm(&z.tr()) / t).cross_entropy_for_logits(&(Tensor::arange(2 * n, (Kind::Int64, z.device())) + n).remainder(2 * n)))
            };
            Ok(StepOutput { loss: unmasked(&z1, &z2, self.0.temperature)?, z: Some(z1.detach()), metrics: StepMetrics::new() })
        }
        fn online(&self) -> &nn::VarStore {
            &self.0.online
        }
        fn backbone(&self) -> &ResNet {
            &self.0.backbone
        }
    }
    let mut wrong_loss = Unmasked(MySimClr::new(&config, Device::Cpu)?);
    homework::check_simclr_step(&mut wrong_loss, &config, unmasked)?;

    // the views through the encoder one at a time: BatchNorm over N, not 2N
    struct Separate(MySimClr);
    impl SslMethod for Separate {
        fn name(&self) -> &str {
            "separate"
        }
        fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
            let g = |x: &Tensor| -> Result<Tensor> { self.0.projector.forward_t(&self.0.backbone.features(x, true)?, true) };
            let (z1, z2) = (g(v1)?, g(v2)?);
            Ok(StepOutput { loss: my_nt_xent(&z1, &z2, self.0.temperature)?, z: Some(z1.detach()), metrics: StepMetrics::new() })
        }
        fn online(&self) -> &nn::VarStore {
            &self.0.online
        }
        fn backbone(&self) -> &ResNet {
            &self.0.backbone
        }
    }
    let mut separate = Separate(MySimClr::new(&config, Device::Cpu)?);
    assert_mentions(homework::check_simclr_step(&mut separate, &config, my_nt_xent), &["one batch", "BatchNorm"]);

    // variables under other names
    struct Renamed(MySimClr);
    impl Renamed {
        fn new(config: &SimClrConfig) -> Result<Renamed> {
            let online = nn::VarStore::new(Device::Cpu);
            let backbone = ResNet::new(&(online.root() / "encoder"), &config.backbone)?;
            let projector = Mlp::new(&(online.root() / "head"), &config.projector)?;
            Ok(Renamed(MySimClr { online, backbone, projector, temperature: config.temperature }))
        }
    }
    impl SslMethod for Renamed {
        fn name(&self) -> &str {
            "renamed"
        }
        fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
            self.0.training_step(v1, v2)
        }
        fn online(&self) -> &nn::VarStore {
            &self.0.online
        }
        fn backbone(&self) -> &ResNet {
            &self.0.backbone
        }
    }
    let mut renamed = Renamed::new(&config)?;
    assert_mentions(homework::check_simclr_step(&mut renamed, &config, my_nt_xent), &["missing", "\"backbone\""]);

    // the engine trains the student's type, and its backbone goes on to the evaluations
    let set = selfsup::data::synthetic::load(selfsup::prelude::Split::Unlabeled, &selfsup::prelude::SyntheticConfig::tiny())?.head(16);
    let dir = std::env::temp_dir().join(format!("selfsup-homework-simclr-{}", std::process::id()));
    let cfg = selfsup::prelude::TrainConfig::tiny().epochs(1).batch_size(8).progress(false);
    let history = selfsup::train::pretrain(&mut mine, &set, &selfsup::augment::presets::simclr_cifar(32), &cfg, &dir)?;
    assert_eq!(history.num_steps(), 2);
    assert!(history.losses().iter().all(|p| p.1.is_finite()));
    let backbone = selfsup::eval::Backbone::from_method(&mine)?;
    assert_eq!(backbone.name, "my_simclr");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

// -------------------------------------------------------------------------------------- BYOL

#[test]
fn byol_pieces_pass_and_their_usual_mistakes_are_named() -> Result<()> {
    homework::check_cosine_tau(my_cosine_tau)?;
    assert_mentions(homework::check_cosine_tau(|k, total, base| base + (1.0 - base) * k as f64 / total as f64), &["linear schedule"]);
    assert_mentions(homework::check_cosine_tau(|_, _, base| base), &["τ_base"]);

    homework::check_ema_update(my_ema_update)?;
    homework::check_ema_update(selfsup::momentum::ema_update)?;
    let swapped = |target: &nn::VarStore, online: &nn::VarStore, tau: f64| -> Result<()> { my_ema_update(target, online, 1.0 - tau) };
    assert_mentions(homework::check_ema_update(swapped), &["swapped"]);
    let with_buffers = |target: &nn::VarStore, online: &nn::VarStore, tau: f64| -> Result<()> {
        let o = online.variables();
        tch::no_grad(|| {
            for (name, mut t) in target.variables() {
                let new = &t * tau + &o[&name] * (1.0 - tau);
                t.copy_(&new);
            }
        });
        Ok(())
    };
    assert_mentions(homework::check_ema_update(with_buffers), &["buffer"]);
    let not_in_place = |target: &nn::VarStore, online: &nn::VarStore, tau: f64| -> Result<()> {
        let o = online.variables();
        for (name, t) in target.variables() {
            let _new = &t * tau + &o[&name] * (1.0 - tau); // computed, never written back
        }
        Ok(())
    };
    assert_mentions(homework::check_ema_update(not_in_place), &["did not change"]);

    homework::check_byol_loss(my_byol_loss)?;
    homework::check_byol_loss(losses::byol_loss)?;
    assert_mentions(homework::check_byol_loss(|p1, _p2, _z1, z2| losses::normalized_mse(p1, &z2.detach())), &["one direction"]);
    assert_mentions(
        homework::check_byol_loss(|p1, p2, z1, z2| Ok(losses::normalized_mse(p1, &z1.detach())? + losses::normalized_mse(p2, &z2.detach())?)),
        &["same view"],
    );
    assert_mentions(
        homework::check_byol_loss(|p1, p2, z1, z2| Ok(losses::normalized_mse(p1, z2)? + losses::normalized_mse(p2, z1)?)),
        &["stop it there"],
    );
    Ok(())
}

#[test]
fn a_students_byol_passes_the_step_check_and_a_constant_tau_is_named() -> Result<()> {
    let config = ByolConfig::tiny();
    let mut mine = MyByol::new(&config, Device::Cpu)?;
    homework::check_byol_step(&mut mine, &config, my_byol_loss, my_cosine_tau, my_ema_update)?;

    struct ConstantTau(MyByol);
    impl SslMethod for ConstantTau {
        fn name(&self) -> &str {
            "constant"
        }
        fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
            self.0.training_step(v1, v2)
        }
        fn after_step(&mut self, _step: usize, _total: usize) -> Result<()> {
            my_ema_update(&self.0.target, &self.0.online, self.0.base_tau)
        }
        fn online(&self) -> &nn::VarStore {
            &self.0.online
        }
        fn backbone(&self) -> &ResNet {
            &self.0.backbone
        }
        fn state(&self) -> Vec<(String, Tensor)> {
            self.0.state()
        }
    }
    let mut constant = ConstantTau(MyByol::new(&config, Device::Cpu)?);
    assert_mentions(homework::check_byol_step(&mut constant, &config, my_byol_loss, my_cosine_tau, my_ema_update), &["τ_base"]);

    // targets from the online network
    struct OnlineTargets(MyByol);
    impl SslMethod for OnlineTargets {
        fn name(&self) -> &str {
            "online_targets"
        }
        fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
            let b = &self.0;
            let online = |x: &Tensor| -> Result<(Tensor, Tensor)> {
                let z = b.projector.forward_t(&b.backbone.features(x, true)?, true)?;
                Ok((z.shallow_clone(), b.predictor.forward_t(&z, true)?))
            };
            let ((z1, p1), (z2, p2)) = (online(v1)?, online(v2)?);
            Ok(StepOutput { loss: my_byol_loss(&p1, &p2, &z1, &z2)?, z: Some(z1.detach()), metrics: StepMetrics::new() })
        }
        fn online(&self) -> &nn::VarStore {
            &self.0.online
        }
        fn backbone(&self) -> &ResNet {
            &self.0.backbone
        }
        fn state(&self) -> Vec<(String, Tensor)> {
            self.0.state()
        }
    }
    let mut online_targets = OnlineTargets(MyByol::new(&config, Device::Cpu)?);
    assert_mentions(
        homework::check_byol_step(&mut online_targets, &config, my_byol_loss, my_cosine_tau, my_ema_update),
        &["online projections as targets"],
    );
    Ok(())
}

// --------------------------------------------------------------------- notebooks 01, 04, 05

#[test]
fn the_lighter_exercises_pass_with_the_notebooks_solutions() -> Result<()> {
    let my_info_nce = |q: &Tensor, k: &Tensor, queue: &Tensor, tau: f64| -> Result<Tensor> {
        let pos = ((q * k).sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / tau).exp();
        let neg = (q.mm(queue) / tau).exp().sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        Ok(-(&pos / (&pos + &neg)).log().mean(Kind::Float))
    };
    homework::check_info_nce(my_info_nce)?;
    let only_neg = |q: &Tensor, k: &Tensor, queue: &Tensor, tau: f64| -> Result<Tensor> {
        let pos = ((q * k).sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / tau).exp();
        let neg = (q.mm(queue) / tau).exp().sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        Ok(-(&pos / &neg).log().mean(Kind::Float))
    };
    assert_mentions(homework::check_info_nce(only_neg), &["only the negatives"]);

    let my_logits = |q: &Tensor, k: &Tensor, queue: &Tensor, tau: f64| -> Result<Tensor> {
        let l_pos = (q * k).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
        Ok(Tensor::cat(&[l_pos, q.mm(queue)], 1) / tau)
    };
    homework::check_moco_logits(my_logits)?;
    assert_mentions(homework::check_moco_logits(|q, k, queue, tau| Ok(my_logits(q, k, queue, tau)?.narrow(1, 1, 12))), &["shape"]);

    let my_barlow_twins = |z1: &Tensor, z2: &Tensor, lambda: f64| -> Result<Tensor> {
        let n = z1.size()[0];
        let bn = |z: &Tensor| (z - z.mean_dim([0i64].as_slice(), true, Kind::Float)) / (z.var_correction([0i64].as_slice(), 0, true) + 1e-5).sqrt();
        let c = bn(z1).tr().mm(&bn(z2)) / n as f64;
        let eye = Tensor::eye(c.size()[0], (Kind::Float, Device::Cpu));
        let c_diff = (&c - &eye).square();
        Ok((&c_diff * &eye).sum(Kind::Float) + (&c_diff * (eye.ones_like() - &eye)).sum(Kind::Float) * lambda)
    };
    homework::check_barlow_twins(my_barlow_twins)?;
    assert_mentions(homework::check_barlow_twins(|z1, z2, _l| my_barlow_twins(z1, z2, 1.0)), &["without λ"]);

    let my_enqueue = |queue: &Tensor, ptr: i64, keys: &Tensor| -> Result<i64> {
        let b = keys.size()[0];
        tch::no_grad(|| queue.narrow(1, ptr, b).copy_(&keys.tr()));
        Ok((ptr + b) % queue.size()[1])
    };
    homework::check_enqueue(my_enqueue)?;
    assert_mentions(
        homework::check_enqueue(|queue, ptr, keys| {
            let b = keys.size()[0];
            queue.narrow(1, ptr, b).copy_(&keys.tr());
            Ok(ptr + b)
        }),
        &["pointer", "% K"],
    );
    assert_mentions(homework::check_enqueue(|_q, ptr, keys| Ok(ptr + keys.size()[0])), &["did not change"]);
    Ok(())
}
