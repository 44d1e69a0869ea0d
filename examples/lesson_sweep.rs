//! Sizing a notebook's `lesson` scale (issue 11): one SSL method at candidate sizes on the embedded
//! data, then the logistic probe against random weights (2-standard-error verdict), the share of
//! activation energy on the object at layer2..4, and optionally the seminar's linear probe and a
//! scratch run. Every size is an environment variable, so a sweep is a shell loop:
//!
//! ```text
//! eval "$(./kit env)"
//! M=moco W=16 SMALL=true STEPS=1248 B=64 K=1024 PE=20 SE=15 cargo run --release --example lesson_sweep
//! ```
//!
//! M = moco | simclr | byol | byol_nomom | byol_default | barlow; DATA = shapes | stl10 (03's data); SIZE (px), W (ResNet width), SMALL (3x3 stem),
//! NU (unlabelled images), STEPS, B (batch), LR, K (MoCo queue), TAU, PREC (off | bf16), SE / PE
//! (scratch / linear-probe epochs, 0 = skip), PC (labelled images per class), PF (batches prefetched, 0: none). Runs go to /tmp/sweep.
use selfsup::prelude::*;
use selfsup::eval::{self, Backbone, FeatureConfig, LogisticConfig};
use std::time::Instant;

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn main() -> selfsup::Result<()> {
    let method: String = env("M", "moco".to_string());
    let size: u32 = env("SIZE", 32);
    let width: i64 = env("W", 16);
    let small: bool = env("SMALL", true);
    let n_unl: usize = env("NU", 5000);
    let steps: usize = env("STEPS", 300);
    let batch: usize = env("B", 64);
    let lr: f64 = env("LR", 0.06);
    let k: i64 = env("K", 1024);
    let tau: f64 = env("TAU", 0.2);
    let scratch_epochs: usize = env("SE", 0);
    let probe_epochs: usize = env("PE", 0);
    let per_class: usize = env("PC", 100);
    let out = format!("/tmp/sweep/{method}-{size}-{width}-{small}-{n_unl}-{steps}-{batch}-{lr}-{k}-{tau}");
    let device = Device::Cpu;
    let cfg = if env("DATA", "shapes".to_string()) == "stl10" {
        SyntheticConfig::stl10_like().image_size(size) // notebook 03's embedded data
    } else {
        SyntheticConfig { train_per_class: per_class, test_per_class: 100, unlabeled: n_unl, ..SyntheticConfig::default() }.image_size(size)
    };
    let unl = data::synthetic::load(Split::Unlabeled, &cfg)?;
    let train = data::synthetic::load(Split::Train, &cfg)?;
    let test = data::synthetic::load(Split::Test, &cfg)?;
    let bb = ResNetConfig { small_images: small, ..Default::default() }.width(width);
    seed_everything(0);
    let t0 = Instant::now();
    let tc = TrainConfig::tiny().batch_size(batch).epochs(steps * batch / n_unl + 1).max_steps(steps).lr(lr)
        .weight_decay(5e-4).optimizer(train::OptimizerConfig::sgd(0.9)).progress(false);
    let precision = if env("PREC", "bf16".to_string()) == "off" { train::Precision::Off } else { train::Precision::Bf16 };
    let tc = TrainConfig { checkpoint_every_steps: None, log_every: 50, prefetch: env("PF", 1), ..tc }.mixed_precision(precision);
    let backbone: Backbone;
    let random;
    let mut zstd = f64::NAN;
    match method.as_str() {
        "moco" => {
            let mut m = Moco::new(MocoConfig::v2().temperature(tau).symmetric(env("SYM", true)).backbone(bb.clone()).queue_size(k).momentum(env("MOM", 0.99)).bn_splits(env("BNS", 2)), device)?;
            random = Backbone::from_method(&m)?;
            let h = train::pretrain(&mut m, &unl, &augment::presets::moco_v2(size as i64), &tc, &out)?;
            println!("loss first {:?} last {:?}", h.steps.first().map(|s| s.loss), h.last_step().map(|s| s.loss));
            backbone = Backbone::from_method(&m)?;
        }
        "simclr" => {
            let mut m = SimClr::new(SimClrConfig::cifar().temperature(tau).backbone(bb.clone()), device)?;
            random = Backbone::from_method(&m)?;
            let h = train::pretrain(&mut m, &unl, &augment::presets::simclr(size as i64), &tc, &out)?;
            println!("loss first {:?} last {:?}", h.steps.first().map(|s| s.loss), h.last_step().map(|s| s.loss));
            backbone = Backbone::from_method(&m)?;
        }
        "byol" | "byol_nomom" | "byol_default" => {
            let c = match method.as_str() {
                "byol" => ByolConfig::cifar(),
                "byol_default" => ByolConfig::default(), // the paper's heads (4096 hidden, 256 out), τ 0.996 cosine
                _ => ByolConfig::no_momentum(),
            };
            let mut m = Byol::new(c.backbone(bb.clone()), device)?;
            random = Backbone::from_method(&m)?;
            let h = train::pretrain(&mut m, &unl, &augment::presets::byol(size as i64), &tc, &out)?;
            println!("loss first {:?} last {:?}", h.steps.first().map(|s| s.loss), h.last_step().map(|s| s.loss));
            zstd = h.last_step().and_then(|s| s.z_std).unwrap_or(f64::NAN);
            backbone = Backbone::from_method(&m)?;
        }
        "barlow" => {
            let mut m = BarlowTwins::new(BarlowTwinsConfig::cifar().backbone(bb.clone()), device)?;
            random = Backbone::from_method(&m)?;
            let h = train::pretrain(&mut m, &unl, &augment::presets::barlow_twins(size as i64), &tc, &out)?;
            println!("loss first {:?} last {:?}", h.steps.first().map(|s| s.loss), h.last_step().map(|s| s.loss));
            backbone = Backbone::from_method(&m)?;
        }
        other => return Err(Error::Config(format!("M must be moco, simclr, byol, byol_nomom, byol_default or barlow, got {other}"))),
    }
    let t_pre = t0.elapsed().as_secs_f64();
    let probe = |b: &Backbone| -> selfsup::Result<f64> {
        let etr = eval::extract_features(b.net(), &train, &FeatureConfig::default(), device)?;
        let ete = eval::extract_features(b.net(), &test, &FeatureConfig::default(), device)?;
        Ok(eval::logistic_probe_split(&etr, &ete, &LogisticConfig::default())?.accuracy)
    };
    let (a, r) = (probe(&backbone)?, probe(&random)?);
    let n = test.len();
    println!("RESULT {method} size {size} w {width} small {small} nu {n_unl} steps {steps} batch {batch} lr {lr} K {k} tau {tau}: pretrain {t_pre:.0}s; logistic ssl {a:.3} random {r:.3} -> {} (2se {:.3}); zstd {zstd:.4}",
        eval::compare_accuracies(a, r, n).verdict.claim(), eval::compare_accuracies(a, r, n).two_se);
    // energy in mask
    let norm = Normalization::imagenet();
    let idx: Vec<usize> = (0..200).collect();
    let masks = data::synthetic::object_masks(Split::Test, &cfg, &idx)?;
    let x = test.float_batch(0, 200, Some(&norm), device)?;
    for stage in [Stage::Layer2, Stage::Layer3, Stage::Layer4] {
        let ea = eval::energy_in_mask(&eval::activation_energy_raw(backbone.net(), &x, stage)?, &masks)?;
        let er = eval::energy_in_mask(&eval::activation_energy_raw(random.net(), &x, stage)?, &masks)?;
        println!("ENERGY {stage:?}: {}", eval::ObjectEnergy::compare(&ea, &er, &masks)?);
    }
    if probe_epochs > 0 {
        let t = Instant::now();
        let pc = eval::LinearProbeConfig::tiny().epochs(probe_epochs);
        let pc = eval::LinearProbeConfig { train: pc.train.clone().batch_size(64), ..pc };
        let p1 = eval::linear_probe(&backbone, &train, Some(&test), &pc, format!("{out}/probe"))?.accuracy(&test)?;
        let p2 = eval::linear_probe(&random, &train, Some(&test), &pc, format!("{out}/probe_r"))?.accuracy(&test)?;
        println!("LINPROBE {probe_epochs} ep: ssl {p1:.3} random {p2:.3} ({:.0}s)", t.elapsed().as_secs_f64());
    }
    if scratch_epochs > 0 {
        let t = Instant::now();
        let vs = nn::VarStore::new(device);
        let net = ResNet::new(&vs.root(), &bb.clone().num_classes(10))?;
        let pc = eval::LinearProbeConfig::tiny();
        let sc = pc.train.clone().epochs(scratch_epochs).batch_size(64);
        let h = train::train_supervised(&vs, |x, t| net.forward(x, t), &train, Some(&test), &pc.augment, &sc, format!("{out}/scratch"))?;
        println!("SCRATCH {scratch_epochs} ep: {:?} ({:.0}s)", h.test_accuracies().last(), t.elapsed().as_secs_f64());
    }
    Ok(())
}
