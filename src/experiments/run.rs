//! The experiments' run, one function per phase: the supervised baseline, the three
//! pre-trainings, the probes, the fine-tunings, then the verdicts and the report.
#[cfg(feature = "cli")]
use super::plan::scales_help;
use super::plan::Plan;
use super::report::{accuracy_of, Experiment, Report};
use super::verdicts::{Comparison, Conclusion, ZStd};
use super::{date_utc, git_commit, Machine};
use crate::augment::{presets, MultiView};
use crate::data::{label_fraction, ImageSet, Split};
use crate::error::{Error, Result};
use crate::eval::{self, Backbone, Classifier, FeatureConfig, LogisticConfig};
use crate::methods::{Byol, Moco, SimClr, SslMethod};
use crate::train::{self, checkpoint, History, Scale};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

#[cfg(feature = "cli")]
const AFTER_HELP: &str = "Data: STL-10 from assets/data/stl10_binary (or $SELFSUP_DATA) when present, else the embedded \
shapes dataset. Running the same command again loads the finished trainings from their checkpoints in DIR and only \
redoes the (fast) probes and the report.";

/// The options of a run (`selfsup-results`' command line).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Parser))]
#[cfg_attr(feature = "cli", command(
    name = "selfsup-results",
    about = "selfsup-results: the seeds' experiments end to end, and which of their conclusions hold",
    after_help = AFTER_HELP,
    args_override_self = true
))]
pub struct ResultsConfig {
    /// The size of the experiments [$SELFSUP_SCALE, else smoke]
    #[cfg_attr(feature = "cli", arg(long, value_enum, ignore_case = true, value_name = "S", long_help = format!("The size of the experiments [$SELFSUP_SCALE, else smoke]:\n{}", scales_help())))]
    pub scale: Option<Scale>,
    /// Run folder: checkpoints, results.md, results.json [runs/results-<scale>, or ...-x<F> when shortened]
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub out: Option<PathBuf>,
    /// Where to compute (auto: CUDA when usable, else the CPU)
    #[cfg_attr(feature = "cli", arg(long, value_enum, ignore_case = true, value_name = "D", default_value_t = DeviceChoice::Auto))]
    pub device: DeviceChoice,
    /// Multiply every epoch count by F (at least 1 epoch each), to shorten a run; the report says so
    #[cfg_attr(feature = "cli", arg(long, value_name = "F", default_value_t = 1.0, value_parser = crate::cli::positive_number, allow_negative_numbers = true))]
    pub epochs_factor: f64,
    /// Draw the embedded dataset at N x N px instead of the scale's size, keeping torchvision's
    /// ResNet-18 (ImageNet stem): at 32 a step costs about a ninth of 96's, for a longer run on a
    /// CPU (no effect on real STL-10) [the scale's size]
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16..=256), allow_negative_numbers = true))]
    pub image_size: Option<u32>,
    /// Seed of training, augmentation and the random baseline
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", default_value_t = 0))]
    pub seed: u64,
    /// How to name the machine in the report [detected CPU/GPU model]
    #[cfg_attr(feature = "cli", arg(long, value_name = "TEXT"))]
    pub machine: Option<String>,
}

/// Where a run computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum DeviceChoice {
    /// The CPU.
    Cpu,
    /// The first CUDA device (an error when there is none).
    Cuda,
    /// CUDA when usable, else the CPU (`device::choose_device`).
    Auto,
}

impl DeviceChoice {
    /// The device and why it was chosen.
    ///
    /// # Errors
    /// [`Error::Config`] for `Cuda` when libtorch sees no CUDA device.
    pub fn resolve(self) -> Result<(Device, String)> {
        match self {
            DeviceChoice::Cpu => Ok((Device::Cpu, "--device cpu".into())),
            DeviceChoice::Cuda if crate::device::is_usable(Device::Cuda(0)) => Ok((Device::Cuda(0), "--device cuda".into())),
            DeviceChoice::Cuda => Err(Error::Config(
                "--device cuda: libtorch sees no usable CUDA device here. Check nvidia-smi, and that \
                 LD_LIBRARY_PATH points at the GPU machine's torch/lib (docs/gpu.md); or use --device cpu / auto"
                    .into(),
            )),
            DeviceChoice::Auto => Ok(crate::device::choose_device()),
        }
    }
}

impl ResultsConfig {
    /// `--scale`, else `$SELFSUP_SCALE`, else smoke.
    ///
    /// # Errors
    /// [`Error::Config`] when `SELFSUP_SCALE` holds an unknown name.
    pub fn scale(&self) -> Result<Scale> {
        match self.scale {
            Some(s) => Ok(s),
            None => Scale::from_env().map_err(|e| match e {
                Error::Config(m) => Error::Config(format!("{m}; or pass --scale smoke|lesson|demo|full")),
                other => other,
            }),
        }
    }

    /// The epoch counts are not the scale's (`--epochs-factor` is not 1).
    pub fn shortened(&self) -> bool {
        (self.epochs_factor - 1.0).abs() > 1e-12
    }

    /// `--out`, else `runs/results-<scale>[-<N>px][-x<F>]`.
    pub fn out_dir(&self, scale: Scale) -> PathBuf {
        if let Some(out) = &self.out {
            return out.clone();
        }
        let size = self.image_size.map_or(String::new(), |n| format!("-{n}px"));
        if self.shortened() {
            PathBuf::from(format!("runs/results-{scale}{size}-x{}", self.epochs_factor))
        } else {
            PathBuf::from(format!("runs/results-{scale}{size}"))
        }
    }
}

/// Runs every experiment of the seeds at `config`'s scale, writes `<out>/results.md` and
/// `<out>/results.json`, prints the Markdown, and returns the report. Finished trainings found
/// in `<out>` are loaded, unfinished ones continued. A program that calls it should first call
/// [`crate::cli::install_stop_handlers`], so that Ctrl-C checkpoints.
///
/// # Errors
/// A bad scale or device, an unwritable folder, and any error of the data, training or probes.
pub fn run(config: &ResultsConfig) -> Result<Report> {
    let t0 = Instant::now();
    let session = Session::start(config)?;
    let data = Data::load(&session)?;
    let mut experiments = vec![];
    let scratch = session.supervised_scratch(&data, &mut experiments)?;
    let ssl = session.pretrain_all(&data.unlabeled, &mut experiments)?;
    session.probe_all(&data, &scratch, &ssl, &mut experiments)?;
    session.fine_tune_all(&data, &ssl, &mut experiments)?;
    let z_stds: Vec<f64> = ssl.byol_history.z_stds().into_iter().map(|(_, z)| z).collect();
    let byol_z_std = ZStd::from_stds(&z_stds, session.plan.byol.projector.out_dim);
    let conclusions = conclusions(&experiments, data.test.len(), byol_z_std.as_ref());
    let report = session.report(config, &data, experiments, byol_z_std, conclusions, t0);
    let (md, json) = report.write(&session.out)?;
    println!("\n{}", report.markdown());
    println!("written: {} and {}", md.display(), json.display());
    Ok(report)
}

/// The seeds' three conclusions from the experiments' test accuracies on `n_test` images (a
/// missing accuracy is NaN, "not distinguishable") and BYOL's collapse check.
pub fn conclusions(experiments: &[Experiment], n_test: usize, byol_z_std: Option<&ZStd>) -> Vec<Conclusion> {
    let acc = |id: &str| accuracy_of(experiments, id).unwrap_or(f64::NAN);
    let ssl = [("BYOL", "byol"), ("SimCLR", "simclr"), ("MoCo v2", "moco_v2")];
    let vs_random = ssl
        .iter()
        .map(|(name, id)| Comparison::new(format!("{name} vs random"), acc(&format!("probe_{id}")), acc("probe_random"), n_test))
        .collect();
    let vs_scratch = ssl
        .iter()
        .map(|(name, id)| {
            let label = format!("{name} fine-tuned vs scratch");
            Comparison::new(label, acc(&format!("{id}_finetune")), acc("supervised_scratch"), n_test)
        })
        .collect();
    vec![
        Conclusion::from_comparisons("ssl_probe_beats_random", "SSL probe > random weights", "S1.7, S2.T4", vs_random, ""),
        Conclusion::from_comparisons(
            "finetune_at_least_scratch",
            "fine-tuning ≥ scratch",
            "S2.T5, same epochs",
            vs_scratch,
            " (\"not distinguishable\" is consistent with ≥ but does not show it)",
        ),
        Conclusion::byol_std_z(byol_z_std),
    ]
}

/// What every phase needs: the plan, the device, the run folder, the seed.
struct Session {
    scale: Scale,
    plan: Plan,
    device: Device,
    device_text: String,
    out: PathBuf,
    seed: u64,
    epochs_factor: f64,
    shortened: bool,
}

/// The three splits, capped at smoke scale.
struct Data {
    unlabeled: ImageSet,
    train: ImageSet,
    test: ImageSet,
}

/// The pre-trained backbones and BYOL's history (for its std(z)).
struct Pretrained {
    byol: Backbone,
    simclr: Backbone,
    moco: Backbone,
    byol_history: History,
}

impl Session {
    /// Chooses the device, seeds, plans and creates the run folder.
    fn start(config: &ResultsConfig) -> Result<Session> {
        let scale = config.scale()?;
        let (device, why) = config.device.resolve()?;
        let device_text = format!("{} ({why})", crate::device::describe(device));
        println!("selfsup-results: using {device_text}");
        crate::seed_everything(config.seed);
        let plan = Plan::new(scale, config.epochs_factor, config.image_size);
        let out = config.out_dir(scale);
        std::fs::create_dir_all(&out).map_err(|e| {
            Error::Config(format!("--out {}: cannot create the folder ({e}); choose a writable folder", out.display()))
        })?;
        println!("{}", plan.source.describe());
        let (seed, epochs_factor, shortened) = (config.seed, config.epochs_factor, config.shortened());
        Ok(Session { scale, plan, device, device_text, out, seed, epochs_factor, shortened })
    }

    /// Supervised from scratch (S2.T0): a random backbone and its fc trained together at one rate.
    fn supervised_scratch(&self, data: &Data, experiments: &mut Vec<Experiment>) -> Result<Classifier> {
        let ft = self.plan.fine_tune_config(self.seed);
        let scratch_cfg = ft.clone().lrs(ft.head_lr, ft.head_lr);
        let random = Backbone::random(&self.plan.backbone, self.seed, self.device)?.named("scratch");
        let (id, what) = ("supervised_scratch", "supervised ResNet-18 from scratch (S2.T0)");
        self.fine_tune(id, what, &random, &scratch_cfg, data, experiments)
    }

    /// BYOL, SimCLR and MoCo v2 pre-training on the unlabelled split.
    fn pretrain_all(&self, unlabeled: &ImageSet, experiments: &mut Vec<Experiment>) -> Result<Pretrained> {
        let (size, p, device) = (self.plan.image_size, &self.plan, self.device);
        // Each method is built right before its training and dropped right after it.
        let (byol, byol_history) = self.pretrain(
            "byol",
            "BYOL pre-training (S2.T2)",
            Byol::new(p.byol.clone(), device)?,
            unlabeled,
            &presets::byol(size),
            experiments,
        )?;
        let simclr_aug = if size <= 32 { presets::simclr_cifar(size) } else { presets::simclr(size) };
        let simclr = SimClr::new(p.simclr.clone(), device)?;
        let (simclr, _) = self.pretrain("simclr", "SimCLR pre-training (S2.T1)", simclr, unlabeled, &simclr_aug, experiments)?;
        let moco = Moco::new(p.moco.clone(), device)?;
        let moco_aug = presets::moco_v2(size);
        let (moco, _) = self.pretrain("moco_v2", "MoCo v2 pre-training (S2.B2)", moco, unlabeled, &moco_aug, experiments)?;
        Ok(Pretrained { byol, simclr, moco, byol_history })
    }

    /// Logistic probes on frozen embeddings (S1.6, S1.7, S2.T4): fitted on train, scored on test.
    fn probe_all(&self, data: &Data, scratch: &Classifier, ssl: &Pretrained, experiments: &mut Vec<Experiment>) -> Result<()> {
        println!("\n== probes: logistic regression on frozen avg-pool embeddings, fitted on train, scored on test");
        let random = Backbone::random(&self.plan.backbone, self.seed, self.device)?;
        let scratch = scratch.backbone()?;
        for (id, what, bb) in [
            ("probe_random", "probe: random weights (S1.6)", &random),
            ("probe_supervised", "probe: supervised-from-scratch backbone", &scratch),
            ("probe_byol", "probe: BYOL backbone (S2.T4)", &ssl.byol),
            ("probe_simclr", "probe: SimCLR backbone (S2.T4)", &ssl.simclr),
            ("probe_moco_v2", "probe: MoCo v2 backbone (S2.T4)", &ssl.moco),
        ] {
            experiments.push(self.probe(id, what, bb, data)?);
        }
        Ok(())
    }

    /// Fine-tuning of each SSL backbone (S2.T5), the same epochs as the scratch run.
    fn fine_tune_all(&self, data: &Data, ssl: &Pretrained, experiments: &mut Vec<Experiment>) -> Result<()> {
        let ft = self.plan.fine_tune_config(self.seed);
        for (id, what, bb) in [
            ("byol_finetune", "fine-tuning of BYOL (S2.T5)", &ssl.byol),
            ("simclr_finetune", "fine-tuning of SimCLR (S2.T5)", &ssl.simclr),
            ("moco_v2_finetune", "fine-tuning of MoCo v2 (S2.T5)", &ssl.moco),
        ] {
            self.fine_tune(id, what, bb, &ft, data, experiments)?;
        }
        Ok(())
    }

    /// One supervised training of `backbone` into `<out>/<id>`, scored on the test split.
    fn fine_tune(
        &self,
        id: &str,
        what: &str,
        backbone: &Backbone,
        cfg: &eval::FineTuneConfig,
        data: &Data,
        experiments: &mut Vec<Experiment>,
    ) -> Result<Classifier> {
        let dir = self.out.join(id);
        let (clf, _, mut exp) = training(id, what, &dir, self.plan.sup_epochs, self.plan.sup_batch, || {
            let clf = eval::fine_tune(backbone, &data.train, Some(&data.test), cfg, &dir)?;
            let h = clf.history.clone();
            Ok((clf, h))
        })?;
        exp.test_accuracy = Some(last_test_accuracy(&clf, &data.test)?);
        experiments.push(exp);
        Ok(clf)
    }

    /// One SSL pre-training into `<out>/<id>`; its backbone and history.
    fn pretrain<M: SslMethod, A: MultiView>(
        &self,
        id: &str,
        what: &str,
        mut method: M,
        set: &ImageSet,
        aug: &A,
        experiments: &mut Vec<Experiment>,
    ) -> Result<(Backbone, History)> {
        let cfg = self.plan.ssl_train_config(self.seed);
        let dir = self.out.join(id);
        let ((), history, exp) = training(id, what, &dir, self.plan.ssl_epochs, self.plan.ssl_batch, || {
            Ok(((), train::pretrain(&mut method, set, aug, &cfg, &dir)?))
        })?;
        experiments.push(exp);
        Ok((Backbone::from_method(&method)?, history))
    }

    /// A logistic probe of `backbone`'s frozen average-pool embeddings.
    fn probe(&self, id: &str, what: &str, backbone: &Backbone, data: &Data) -> Result<Experiment> {
        let started = Instant::now();
        let features = FeatureConfig::default();
        let tr = eval::extract_features(backbone.net(), &data.train, &features, self.device)?;
        let te = eval::extract_features(backbone.net(), &data.test, &features, self.device)?;
        let report = eval::logistic_probe_split(&tr, &te, &LogisticConfig::default())?;
        let wall = started.elapsed().as_secs_f64();
        println!("{id}: {what}: test accuracy {:.3} ({:.1} s)", report.accuracy, wall);
        Ok(Experiment::probe(id, what, wall, report.accuracy))
    }

    fn report(
        &self,
        config: &ResultsConfig,
        data: &Data,
        experiments: Vec<Experiment>,
        byol_z_std: Option<ZStd>,
        conclusions: Vec<Conclusion>,
        t0: Instant,
    ) -> Report {
        let p = &self.plan;
        Report {
            tool: "selfsup-results".into(),
            scale: self.scale.to_string(),
            epochs_factor: config.epochs_factor,
            shortened: config.shortened(),
            machine: config.machine.clone().unwrap_or_else(|| Machine::detect().to_string()),
            device: self.device_text.clone(),
            date_utc: date_utc(),
            git_commit: git_commit(),
            data: p.source.describe(),
            n_unlabeled: data.unlabeled.len(),
            n_train: data.train.len(),
            n_test: data.test.len(),
            image_size: p.image_size,
            backbone: p.backbone_text(),
            ssl_epochs: p.ssl_epochs,
            supervised_epochs: p.sup_epochs,
            scale_epochs: p.scale_epochs,
            seed: self.seed,
            total_wall_seconds: t0.elapsed().as_secs_f64(),
            recipes: p.recipes(),
            experiments,
            byol_z_std,
            conclusions,
        }
    }
}

impl Data {
    /// The three splits of the plan's source; at smoke scale capped (the unlabelled split to its
    /// first images, train and test to stratified fractions).
    fn load(s: &Session) -> Result<Data> {
        let p = &s.plan;
        let mut unlabeled = p.source.load(Split::Unlabeled)?;
        let mut train = p.source.load(Split::Train)?;
        let mut test = p.source.load(Split::Test)?;
        if let Some((nu, ntr, nte)) = p.caps {
            unlabeled = unlabeled.head(nu);
            if train.len() > ntr {
                train = label_fraction(&train, ntr as f64 / train.len() as f64, 0)?;
            }
            if test.len() > nte {
                test = label_fraction(&test, nte as f64 / test.len() as f64, 0)?;
            }
        }
        println!(
            "scale {}{}: {} unlabelled, {} train, {} test images; SSL {} epochs, supervised {} epochs; runs in {}",
            s.scale,
            if s.shortened { format!(" (epochs × {})", s.epochs_factor) } else { String::new() },
            unlabeled.len(),
            train.len(),
            test.len(),
            p.ssl_epochs,
            p.sup_epochs,
            s.out.display()
        );
        Ok(Data { unlabeled, train, test })
    }
}

/// The step a checkpoint in `dir` is at, if there is one.
fn checkpoint_step(dir: &Path) -> Result<Option<usize>> {
    if !checkpoint::exists(dir) {
        return Ok(None);
    }
    Ok(Some(checkpoint::Checkpoint::load(dir)?.meta.step))
}

/// Runs one training call with resume bookkeeping and timing.
fn training<T>(
    id: &str,
    what: &str,
    dir: &Path,
    epochs: usize,
    batch: usize,
    run: impl FnOnce() -> Result<(T, History)>,
) -> Result<(T, History, Experiment)> {
    let before = checkpoint_step(dir)?;
    match before {
        Some(s) => println!("\n== {id}: {what} — checkpoint at step {s} in {}, loading it", dir.display()),
        None => println!("\n== {id}: {what} — training into {}", dir.display()),
    }
    let started = Instant::now();
    let (value, history) = run()?;
    let wall = started.elapsed().as_secs_f64();
    let steps_this_run = history.num_steps().saturating_sub(before.unwrap_or(0));
    if before.is_some() && steps_this_run == 0 {
        println!("resumed {id}: finished run loaded from its checkpoint, nothing retrained");
    }
    let exp = Experiment {
        id: id.into(),
        what: what.into(),
        dir: Some(dir.display().to_string()),
        epochs: Some(epochs),
        batch_size: Some(batch),
        steps: Some(history.num_steps()),
        resumed: before.is_some(),
        steps_this_run,
        train_seconds: Some(history.seconds()),
        wall_seconds: wall,
        test_accuracy: None,
    };
    Ok((value, history, exp))
}

fn last_test_accuracy(clf: &Classifier, test: &ImageSet) -> Result<f64> {
    match clf.history.test_accuracies().last() {
        Some(&(_, a)) => Ok(a),
        None => clf.accuracy(test),
    }
}
