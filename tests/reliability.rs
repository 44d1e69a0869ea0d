//! Runs that cannot be silently wrong or lost (docs/reliability.md): the run identity refuses a
//! changed setting, nothing non-finite reaches the disk, one trainer per folder, a failed load
//! changes nothing, and `selfsup-train` survives `kill -9` (also during a checkpoint write),
//! Ctrl-C and a full disk.
mod common;
use selfsup::data::{
    synthetic::{self, SyntheticConfig},
    ImageSet, Split,
};
use selfsup::methods::{SslMethod, StepMetrics, StepOutput};
use selfsup::models::{ResNet, ResNetConfig};
use selfsup::tch::{nn, Device, Kind, Tensor};
use selfsup::train::{self, checkpoint, History, TrainConfig};
use selfsup::{augment, Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};


fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("selfsup-reliability-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

// ---------------------------------------------------------------- a tiny method

/// The settings of [`Tiny`], described to the engine unless `describe` is off.
#[derive(Debug, Clone, serde::Serialize)]
struct TinyConfig {
    temperature: f64,
    queue: i64,
}

/// A method small enough to train in milliseconds: a linear map of 4x4-pooled views, a
/// temperature-scaled cosine loss, a "queue" state whose size is a setting. `poison_at`: after
/// that step its weights become NaN while the loss stays finite (a NaN in the gradients under
/// mixed precision does that); `nan_metric_at`: that step logs a NaN metric.
struct Tiny {
    cfg: TinyConfig,
    describe: bool,
    online: nn::VarStore,
    lin: nn::Linear,
    _backbone_vs: nn::VarStore,
    backbone: ResNet,
    queue: Tensor,
    poison_at: Option<usize>,
    nan_metric_at: Option<usize>,
    calls: usize,
}

impl Tiny {
    fn new(cfg: TinyConfig) -> Result<Self> {
        selfsup::tch::manual_seed(0);
        let online = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(online.root().sub("lin"), 48, 8, nn::LinearConfig { bias: false, ..Default::default() });
        let backbone_vs = nn::VarStore::new(Device::Cpu);
        let backbone = ResNet::new(&backbone_vs.root(), &ResNetConfig::default().small_images(true))?;
        let queue = Tensor::zeros([cfg.queue, 8], (Kind::Float, Device::Cpu));
        Ok(Tiny {
            cfg,
            describe: true,
            online,
            lin,
            _backbone_vs: backbone_vs,
            backbone,
            queue,
            poison_at: None,
            nan_metric_at: None,
            calls: 0,
        })
    }
}

impl SslMethod for Tiny {
    fn name(&self) -> &str {
        "tiny"
    }
    fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
        self.calls += 1;
        let w = self.lin.ws.nan_to_num(0.0, 0.0, 0.0); // the loss stays finite when the weights are not
        let z = |v: &Tensor| v.adaptive_avg_pool2d([4, 4]).flatten(1, -1).matmul(&w.tr()); // [N, 8]
        let (z1, z2) = (z(v1), z(v2));
        let loss = -Tensor::cosine_similarity(&z1, &z2, 1, 1e-8).mean(Kind::Float) / self.cfg.temperature; // []
        let mut metrics = StepMetrics::new();
        if self.nan_metric_at == Some(self.calls) {
            metrics = metrics.with_tensor("grad_norm", &Tensor::from(f64::NAN));
        }
        Ok(StepOutput { loss, z: Some(z1.detach()), metrics })
    }
    fn after_step(&mut self, step: usize, _total: usize) -> Result<()> {
        if self.poison_at == Some(step) {
            selfsup::tch::no_grad(|| {
                let _ = self.lin.ws.fill_(f64::NAN);
            });
        }
        Ok(())
    }
    fn online(&self) -> &nn::VarStore {
        &self.online
    }
    fn backbone(&self) -> &ResNet {
        &self.backbone
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![("queue".into(), self.queue.shallow_clone())]
    }
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        for (n, t) in state {
            if n == "queue" {
                selfsup::tch::no_grad(|| self.queue.copy_(t));
            }
        }
        Ok(())
    }
    fn config_json(&self) -> Option<serde_json::Value> {
        if self.describe {
            serde_json::to_value(&self.cfg).ok()
        } else {
            None
        }
    }
}

fn tiny_set() -> Result<ImageSet> {
    let cfg = SyntheticConfig { image_size: 16, unlabeled: 16, ..SyntheticConfig::tiny() };
    synthetic::load(Split::Unlabeled, &cfg)
}

fn tiny_cfg() -> TrainConfig {
    TrainConfig::tiny().batch_size(4).epochs(2).progress(false)
}

fn aug() -> augment::Augment {
    augment::presets::simclr_cifar(16)
}

fn config_error(r: Result<History>) -> String {
    match r {
        Err(Error::Config(msg)) => msg,
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

// ---------------------------------------------------------------- run identity

#[test]
fn a_changed_method_setting_is_refused_naming_the_field() -> Result<()> {
    let _s = common::serial();
    let dir = fresh_dir("identity");
    let set = tiny_set()?;
    let cfg = tiny_cfg();
    let first = train::pretrain(&mut Tiny::new(TinyConfig { temperature: 0.2, queue: 4 })?, &set, &aug(), &cfg, &dir)?;
    assert_eq!(first.num_steps(), 8);
    // The same cell again: the finished run is loaded (FAST mode), nothing trains.
    let mut again = Tiny::new(TinyConfig { temperature: 0.2, queue: 4 })?;
    assert_eq!(train::pretrain(&mut again, &set, &aug(), &cfg, &dir)?, first);
    assert_eq!(again.calls, 0);
    // τ changed: refused, naming the field, both values and the fix.
    let msg = config_error(train::pretrain(
        &mut Tiny::new(TinyConfig { temperature: 0.5, queue: 4 })?,
        &set,
        &aug(),
        &cfg,
        &dir,
    ));
    assert!(msg.contains("method.temperature: 0.2 there, 0.5 now"), "{msg}");
    assert!(msg.contains("temperature-0.5") && msg.contains("resume(false)"), "{msg}");
    // Another augmentation, another data set: refused as well.
    let msg = config_error(train::pretrain(
        &mut Tiny::new(TinyConfig { temperature: 0.2, queue: 4 })?,
        &set,
        &augment::presets::simclr_cifar(12),
        &cfg,
        &dir,
    ));
    assert!(msg.contains("augment"), "{msg}");
    let msg = config_error(train::pretrain(
        &mut Tiny::new(TinyConfig { temperature: 0.2, queue: 4 })?,
        &set.head(12),
        &aug(),
        &cfg,
        &dir,
    ));
    assert!(msg.contains("dataset.images: 16 there, 12 now"), "{msg}");
    // A method that does not describe itself is still told apart by its state's shapes.
    let mut undescribed = Tiny::new(TinyConfig { temperature: 0.2, queue: 4 })?;
    undescribed.describe = false;
    let dir2 = fresh_dir("identity-undescribed");
    train::pretrain(&mut undescribed, &set, &aug(), &cfg, &dir2)?;
    let mut bigger_queue = Tiny::new(TinyConfig { temperature: 0.2, queue: 6 })?;
    bigger_queue.describe = false;
    let msg = config_error(train::pretrain(&mut bigger_queue, &set, &aug(), &cfg, &dir2));
    assert!(msg.contains("state."), "{msg}");
    // The identity is written for people too.
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("run.json"))?)?;
    assert_eq!(run["method"]["temperature"], 0.2);
    assert_eq!(run["dataset"]["images"], 16);
    // resume(false) overwrites the run with the new setting.
    let cfg_over = tiny_cfg().resume(false);
    train::pretrain(&mut Tiny::new(TinyConfig { temperature: 0.5, queue: 4 })?, &set, &aug(), &cfg_over, &dir)?;
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("run.json"))?)?;
    assert_eq!(run["method"]["temperature"], 0.5);
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_dir_all(&dir2)?;
    Ok(())
}

#[test]
fn the_kits_methods_describe_their_settings() -> Result<()> {
    use selfsup::methods::{Moco, MocoConfig};
    let moco = Moco::new(MocoConfig::tiny().temperature(0.5), Device::Cpu)?;
    let json = moco.config_json().expect("Moco describes its config");
    assert_eq!(json["temperature"], 0.5);
    assert_eq!(json["queue_size"], MocoConfig::tiny().queue_size);
    Ok(())
}

#[test]
fn a_probe_of_another_backbone_is_another_run() -> Result<()> {
    use selfsup::eval::{self, Backbone, LinearProbeConfig};
    let _s = common::serial();
    let dir = fresh_dir("probe");
    let data = SyntheticConfig { image_size: 16, train_per_class: 2, test_per_class: 1, ..SyntheticConfig::tiny() };
    let train_set = synthetic::load(Split::Train, &data)?;
    let arch = ResNetConfig::default().small_images(true);
    let mut cfg = LinearProbeConfig::tiny();
    cfg.augment = augment::presets::simclr_cifar(16);
    cfg.train = cfg.train.batch_size(10).epochs(1).progress(false);
    eval::linear_probe(&Backbone::random(&arch, 1, Device::Cpu)?, &train_set, None, &cfg, &dir)?;
    eval::linear_probe(&Backbone::random(&arch, 1, Device::Cpu)?, &train_set, None, &cfg, &dir)?; // loaded
    let msg = match eval::linear_probe(&Backbone::random(&arch, 2, Device::Cpu)?, &train_set, None, &cfg, &dir) {
        Err(Error::Config(msg)) => msg,
        other => panic!("expected Error::Config, got {:?}", other.map(|_| ())),
    };
    assert!(msg.contains("another init"), "{msg}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

// ---------------------------------------------------------------- non-finite, locks, loads

#[test]
fn nothing_non_finite_reaches_the_disk() -> Result<()> {
    let _s = common::serial();
    let dir = fresh_dir("nan");
    let set = tiny_set()?;
    let cfg = tiny_cfg().epochs(3); // 12 steps, a checkpoint every 2
    let mut cfg = cfg;
    cfg.checkpoint_every_steps = Some(2);
    let mut m = Tiny::new(TinyConfig { temperature: 0.2, queue: 4 })?;
    m.nan_metric_at = Some(2); // step 1 logs a NaN grad_norm
    m.poison_at = Some(4); // the weights are NaN after step 4; the loss stays finite
    let err = train::pretrain(&mut m, &set, &aug(), &cfg, &dir).unwrap_err();
    let msg = match err {
        Error::Diverged(msg) => msg,
        other => panic!("expected Error::Diverged, got {other:?}"),
    };
    assert!(msg.contains("online/lin.weight") && msg.contains("after step 6"), "{msg}");
    assert!(msg.contains("'grad_norm' at step 1") && msg.contains("(step 4) is intact"), "{msg}");
    // On disk: the checkpoint of step 4, finite; a history that reads back, with no null.
    let ck = train::Checkpoint::load(&dir)?;
    assert_eq!(ck.meta.step, 4);
    assert!(checkpoint::first_non_finite(&[("online", &ck.online), ("state", &ck.state)])?.is_none());
    let text = std::fs::read_to_string(dir.join(checkpoint::HISTORY_FILE))?;
    assert!(!text.contains("grad_norm") && !text.contains("NaN"), "{text}");
    let h = History::from_jsonl(&text)?;
    assert!(h.steps.iter().all(|s| !s.metrics.contains_key("grad_norm")));
    assert!(ck.meta.history.steps.iter().all(|s| s.loss.is_finite()));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_second_trainer_is_refused_naming_the_holder() -> Result<()> {
    let _s = common::serial();
    let dir = fresh_dir("lock");
    let held = checkpoint::RunLock::acquire(&dir)?;
    let r = train::pretrain(&mut Tiny::new(TinyConfig { temperature: 0.2, queue: 4 })?, &tiny_set()?, &aug(), &tiny_cfg(), &dir);
    match r {
        Err(Error::Locked(msg)) => assert!(msg.contains(&format!("process {}", std::process::id())), "{msg}"),
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    drop(held);
    // A stale temporary file of a killed writer is swept when the next trainer starts.
    std::fs::write(dir.join(".checkpoint.safetensors.tmp4000000"), b"half a checkpoint")?;
    train::pretrain(&mut Tiny::new(TinyConfig { temperature: 0.2, queue: 4 })?, &tiny_set()?, &aug(), &tiny_cfg(), &dir)?;
    assert!(!dir.join(".checkpoint.safetensors.tmp4000000").exists());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_failed_load_changes_no_weight() -> Result<()> {
    let vs = nn::VarStore::new(Device::Cpu);
    let a = vs.root().var_copy("a", &Tensor::from_slice(&[1.0f32, 2.0]));
    let _b = vs.root().var_copy("b", &Tensor::from_slice(&[3.0f32, 4.0, 5.0]));
    let tensors = vec![
        ("a".to_string(), Tensor::from_slice(&[9.0f32, 9.0])),
        ("b".to_string(), Tensor::from_slice(&[9.0f32, 9.0, 9.0, 9.0])), // wrong shape
    ];
    assert!(matches!(checkpoint::load_vars(&vs, &tensors), Err(Error::Shape { .. })));
    assert_eq!(Vec::<f32>::try_from(&a)?, vec![1.0, 2.0], "'a' must not change before 'b' is checked");
    Ok(())
}

// ---------------------------------------------------------------- selfsup-train under faults

const BIN: &str = env!("CARGO_BIN_EXE_selfsup-train");

/// A tiny SimCLR run: 16 images of 16 px, batch 4 (4 steps an epoch), 3 epochs, a checkpoint
/// every 2 steps, on the CPU in full precision.
fn trainer(out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["--method", "simclr", "--image-size", "16", "--subset", "16", "-b", "4", "--epochs", "3"])
        .args(["--checkpoint-every", "2", "--precision", "off", "-j", "0", "--output"])
        .arg(out)
        .args(extra)
        .env("SELFSUP_DEVICE", "cpu")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn finish(out: &Path) -> Result<()> {
    let o = trainer(out, &[]).stderr(Stdio::piped()).output()?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Ok(())
}

fn steps_in_history(out: &Path) -> Vec<usize> {
    let text = std::fs::read_to_string(out.join(checkpoint::HISTORY_FILE)).unwrap_or_default();
    History::from_jsonl(&text).map(|h| h.steps.iter().map(|s| s.step).collect()).unwrap_or_default()
}

fn temp_files(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.contains(".tmp")).collect())
        .unwrap_or_default()
}

/// Waits (at most 60 s) until `ready` holds, then kills the child with SIGKILL.
fn kill_when(mut child: Child, ready: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the trainer ended ({status}) before the point it was to be killed at");
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the trainer never reached the kill point");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
}

fn final_weights(out: &Path) -> Result<Vec<(String, Tensor)>> {
    let ck = train::Checkpoint::load(out)?;
    assert!(ck.meta.finished);
    Ok(ck.online)
}

#[test]
fn kill_9_at_any_point_then_rerun_gives_the_uninterrupted_run() -> Result<()> {
    let _s = common::serial();
    let reference = fresh_dir("kill-ref");
    finish(&reference)?;
    let expected = final_weights(&reference)?;
    assert_eq!(steps_in_history(&reference), (0..12).collect::<Vec<_>>());

    let out = fresh_dir("kill");
    // 1. Between steps, after the first checkpoint (the history may run ahead of it).
    kill_when(trainer(&out, &[]).spawn()?, || steps_in_history(&out).len() >= 3 && checkpoint::exists(&out));
    // 2. In the middle of a checkpoint write: the temporary file is complete, not yet renamed.
    let child = trainer(&out, &[]).env("SELFSUP_TEST_WRITE_PAUSE_MS", "400").spawn()?;
    kill_when(child, || temp_files(&out).iter().any(|n| n.starts_with(".checkpoint.safetensors.tmp")));
    assert!(!temp_files(&out).is_empty(), "the kill left its temporary file");
    let step_before = train::Checkpoint::load(&out)?.meta.step;
    // 3. Killed again right after it resumed (its history rewritten back to the checkpoint's).
    let left = steps_in_history(&out).len();
    kill_when(trainer(&out, &[]).spawn()?, || {
        let n = steps_in_history(&out).len();
        n != left || (left == step_before && n > step_before)
    });
    finish(&out)?;

    assert_eq!(steps_in_history(&out), (0..12).collect::<Vec<_>>(), "every step exactly once");
    assert!(temp_files(&out).is_empty(), "stale temporary files swept: {:?}", temp_files(&out));
    let got = final_weights(&out)?;
    assert_eq!(got.len(), expected.len());
    for ((n1, a), (n2, b)) in got.iter().zip(&expected) {
        assert_eq!(n1, n2);
        assert!(a.equal(b), "{n1} differs from the uninterrupted run");
    }
    std::fs::remove_dir_all(&reference)?;
    std::fs::remove_dir_all(&out)?;
    Ok(())
}

#[test]
fn ctrl_c_checkpoints_and_says_how_to_continue() -> Result<()> {
    let _s = common::serial();
    let out = fresh_dir("sigint");
    let mut child = trainer(&out, &[]).stderr(Stdio::piped()).spawn()?;
    let t0 = Instant::now();
    while steps_in_history(&out).len() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(60) && child.try_wait()?.is_none(), "no steps");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: sends SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("run the same command"), "{stderr}");
    let ck = train::Checkpoint::load(&out)?;
    assert!(!ck.meta.finished && ck.meta.step >= 2);
    assert_eq!(steps_in_history(&out), (0..ck.meta.step).collect::<Vec<_>>(), "nothing lost since the checkpoint");
    finish(&out)?;
    assert_eq!(steps_in_history(&out), (0..12).collect::<Vec<_>>());
    std::fs::remove_dir_all(&out)?;
    Ok(())
}

#[test]
fn a_full_disk_keeps_the_previous_checkpoint() -> Result<()> {
    let _s = common::serial();
    let dir = fresh_dir("fulldisk");
    std::fs::create_dir_all(&dir)?;
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(&dir).output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            common::skip("a_full_disk_keeps_the_previous_checkpoint",
                &format!("cannot mount a small tmpfs (needs root): {}", String::from_utf8_lossy(&o.stderr).trim()));
            return Ok(());
        }
        Err(e) => {
            common::skip("a_full_disk_keeps_the_previous_checkpoint", &format!("cannot run mount: {e}"));
            return Ok(());
        }
    }
    let result = (|| -> Result<()> {
        let run = dir.join("run");
        let set = tiny_set()?;
        let mut cfg = tiny_cfg();
        cfg.checkpoint_every_steps = Some(2);
        // A 640 kB queue makes the checkpoint larger than what is left once the disk is filled.
        let big = || Tiny::new(TinyConfig { temperature: 0.2, queue: 20_000 });
        train::pretrain(&mut big()?, &set, &aug(), &cfg.clone().max_steps(2), &run)?;
        // Fill the disk, then give back 64 kB: enough for the small files, not for a checkpoint.
        let mut filler = std::fs::File::create(dir.join("filler"))?;
        let block = vec![1u8; 16 * 1024];
        while std::io::Write::write_all(&mut filler, &block).is_ok() {}
        let len = filler.metadata()?.len();
        filler.set_len(len.saturating_sub(64 * 1024))?;
        let err = train::pretrain(&mut big()?, &set, &aug(), &cfg, &run).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("the disk is full") && msg.contains("intact"), "{msg}");
        assert_eq!(train::Checkpoint::load(&run)?.meta.step, 2, "the previous checkpoint is kept");
        assert!(temp_files(&run).is_empty(), "{:?}", temp_files(&run));
        Ok(())
    })();
    let _ = Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

// ---------------------------------------------------------------- selfsup-train's options

fn rejected(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).env("SELFSUP_DEVICE", "cpu").output().expect("run selfsup-train");
    assert_eq!(o.status.code(), Some(2), "{args:?} should be rejected");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn meaningless_or_out_of_range_options_are_rejected() {
    // Ranges: clap names the flag and the bad value.
    assert!(rejected(&["--image-size", "-1"]).contains("invalid value '-1' for '--image-size <N>': -1 is not in 16..=1024"));
    assert!(rejected(&["--moco-m", "1.5"]).contains("invalid value '1.5' for '--moco-m <F>': must be in [0, 1]"));
    assert!(rejected(&["--subset", "0"]).contains("invalid value '0' for '--subset <N>'"));
    assert!(rejected(&["--workers", "100"]).contains("invalid value '100' for '--workers <N>': 100 is not in 0..=64"));
    assert!(rejected(&["--method", "mocov2"]).contains("[possible values: moco, moco_v1, moco_v2, simclr,"));
    assert!(rejected(&["--bogus"]).contains("unexpected argument '--bogus'"));
    // Options that mean nothing for the method.
    assert!(rejected(&["--method", "byol", "--moco-t", "0.3"]).contains("--moco-t"));
    assert!(rejected(&["--method", "simclr", "--moco-k", "4096"]).contains("--moco-k applies to MoCo only"));
    assert!(rejected(&["--method", "barlow_twins", "--mlp"]).contains("--mlp applies to MoCo only"));
    assert!(rejected(&["--start-epoch", "5"]).contains("--start-epoch 5"));
}

#[test]
fn method_options_take_effect_in_the_run_identity() -> Result<()> {
    let _s = common::serial();
    let out = fresh_dir("options");
    let o = Command::new(BIN)
        .args(["--method", "moco", "--moco-t", "0.5", "--moco-k", "8", "--moco-m", "0.9", "--moco-dim", "16", "--mlp"])
        .args(["--image-size", "16", "--subset", "16", "-b", "8", "--epochs", "1", "--max-steps", "1", "--seed", "3"])
        .args(["--precision", "off", "--lr", "0.01", "--wd", "0.001", "--optimizer", "adamw", "--output"])
        .arg(&out)
        .env("SELFSUP_DEVICE", "cpu")
        .output()?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("run.json"))?)?;
    assert_eq!(run["method"]["temperature"], 0.5);
    assert_eq!(run["method"]["queue_size"], 8);
    assert_eq!(run["method"]["momentum"], 0.9);
    assert_eq!(run["method"]["head"]["out_dim"], 16);
    assert_eq!(run["dataset"]["images"], 16);
    assert_eq!(run["dataset"]["image_shape"], serde_json::json!([3, 16, 16]));
    let cfg: TrainConfig = serde_json::from_slice(&std::fs::read(out.join(checkpoint::CONFIG_FILE))?)?;
    assert_eq!((cfg.batch_size, cfg.epochs, cfg.max_steps, cfg.seed), (8, 1, Some(1), 3));
    assert_eq!((cfg.lr, cfg.weight_decay), (0.01, 0.001));
    assert_eq!(cfg.optimizer, train::OptimizerConfig::adamw());
    // The same command with another τ is refused, naming it.
    let o = Command::new(BIN)
        .args(["--method", "moco", "--moco-t", "0.2", "--moco-k", "8", "--moco-m", "0.9", "--moco-dim", "16", "--mlp"])
        .args(["--image-size", "16", "--subset", "16", "-b", "8", "--epochs", "1", "--max-steps", "1", "--seed", "3"])
        .args(["--precision", "off", "--lr", "0.01", "--wd", "0.001", "--optimizer", "adamw", "--output"])
        .arg(&out)
        .env("SELFSUP_DEVICE", "cpu")
        .output()?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("method.temperature: 0.5 there, 0.2 now"), "{stderr}");
    std::fs::remove_dir_all(&out)?;
    Ok(())
}

// ---------------------------------------------------------------- readers

#[test]
fn an_image_folder_skips_hidden_folders_and_names_a_bad_file() -> Result<()> {
    use selfsup::data::folder::{self, BadImage, FolderConfig};
    let root = fresh_dir("folder");
    for class in ["cat", "dog", "__MACOSX", ".thumbnails"] {
        std::fs::create_dir_all(root.join(class))?;
        for i in 0..2 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([i * 100, 50, 200])).save(root.join(class).join(format!("{i}.png")))?;
        }
    }
    std::fs::write(root.join("cat").join("._0.png"), b"AppleDouble resource fork")?; // hidden: skipped
    let cfg = FolderConfig::default().image_size(8);
    let set = folder::load(&root, &cfg)?;
    assert_eq!(set.class_names, vec!["cat", "dog"]);
    assert_eq!(set.len(), 4);
    // One damaged file: the load stops naming it, or leaves it out when asked to.
    let bad = root.join("dog").join("1.png");
    std::fs::write(&bad, b"not a png")?;
    let msg = match folder::load(&root, &cfg) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a damaged image must stop the load by default"),
    };
    assert!(msg.contains(&bad.display().to_string()) && msg.contains("BadImage::Skip"), "{msg}");
    let set = folder::load(&root, &cfg.clone().on_bad_image(BadImage::Skip))?;
    assert_eq!(set.len(), 3);
    let labels = Vec::<i64>::try_from(set.labels.as_ref().expect("labels"))?;
    assert_eq!(labels, vec![0, 0, 1]);
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

#[test]
fn an_image_folder_too_large_for_memory_says_how_much_and_what_to_do() -> Result<()> {
    use selfsup::data::folder::{self, FolderConfig};
    let root = fresh_dir("folder-huge");
    std::fs::create_dir_all(root.join("a"))?;
    image::RgbImage::new(4, 4).save(root.join("a").join("x.png"))?;
    // One image at 4096 px is 50 MB; claim it by listing it many times through links.
    for i in 0..2000 {
        std::os::unix::fs::symlink(root.join("a").join("x.png"), root.join("a").join(format!("l{i}.png")))?;
    }
    let msg = match folder::load(&root, &FolderConfig::default().image_size(4096)) {
        Err(e) => e.to_string(),
        Ok(_) => {
            common::skip("an_image_folder_too_large_for_memory_says_how_much_and_what_to_do", "this machine has more than 100 GB available");
            return Ok(());
        }
    };
    assert!(msg.contains("GB of memory") && msg.contains("max_per_class") && msg.contains("image_size(96)"), "{msg}");
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
