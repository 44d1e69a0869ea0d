//! Label fractions (S3.2, S3.3, S3.7): how much does a pre-trained backbone help when labels are
//! scarce? The Barlow Twins seminar trains with 1 %, 10 % and 100 % of the CIFAR-10 labels
//! (per class, [`crate::data::label_fraction`]) three ways — from scratch, on a frozen
//! ImageNet-supervised backbone, and on the self-supervised backbone — and plots one test-accuracy
//! curve per run. The semi-supervised tables of SimCLR (Chen et al. 2020, Table 7) and Barlow
//! Twins (Zbontar et al. 2021, Table 2) use the same 1 % / 10 % subsets of ImageNet.
//!
//! Expect: scratch collapses at 1 % (a ResNet cannot learn features from a few hundred images),
//! the pre-trained backbones degrade gracefully.
use super::backbone::Backbone;
use super::finetune::{fine_tune, FineTuneConfig};
use super::linear_probe::{linear_probe, LinearProbeConfig};
use crate::data::{label_fraction, ImageSet};
use crate::error::{config_err, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a pre-trained backbone (ImageNet or SSL) learns the labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// Frozen backbone, trained `fc` (S3.3: "ImageNet-pretrained frozen backbone").
    LinearProbe,
    /// Whole network trained, backbone at a lower rate.
    FineTune,
}

/// Settings of [`label_fractions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FractionsConfig {
    /// Shares of the labelled images, per class. 1 %, 10 %, 100 % (the seminar, S3.2).
    pub fractions: Vec<f64>,
    /// How the pre-trained backbones are trained. Linear probe (S3.3, S3.7).
    pub protocol: Protocol,
    /// The probe's settings (frozen backbones).
    pub probe: LinearProbeConfig,
    /// Fine-tuning settings; also the from-scratch run, with both rates equal to `head_lr`.
    pub fine_tune: FineTuneConfig,
    /// Include the from-scratch run (S3.2). `true`.
    pub scratch: bool,
    /// torchvision ImageNet weights for the same architecture (a safetensors file, see
    /// [`crate::eval::baselines`]); `None` leaves the ImageNet run out.
    pub imagenet_weights: Option<PathBuf>,
    /// Seed of the subsets (nested: the 1 % subset lies inside the 10 % one) and of the runs. 0.
    pub seed: u64,
}

impl Default for FractionsConfig {
    /// 1 / 10 / 100 %, probes for the pre-trained backbones, scratch on, no ImageNet file.
    fn default() -> Self {
        FractionsConfig {
            fractions: vec![0.01, 0.1, 1.0],
            protocol: Protocol::LinearProbe,
            probe: LinearProbeConfig::default(),
            fine_tune: FineTuneConfig::default(),
            scratch: true,
            imagenet_weights: None,
            seed: 0,
        }
    }
}

impl FractionsConfig {
    /// Laptop-CPU settings: the tiny probe and fine-tuning configs.
    pub fn tiny() -> Self {
        FractionsConfig { probe: LinearProbeConfig::tiny(), fine_tune: FineTuneConfig::tiny(), ..Default::default() }
    }
    /// The same config with other fractions.
    pub fn fractions(mut self, fractions: Vec<f64>) -> Self {
        self.fractions = fractions;
        self
    }
    /// The same config with an ImageNet weights file.
    pub fn imagenet_weights(mut self, path: impl Into<PathBuf>) -> Self {
        self.imagenet_weights = Some(path.into());
        self
    }
    /// The same config with another protocol for the pre-trained backbones.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }
    /// The same config with `epochs` epochs for every run.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.probe.train.epochs = epochs;
        self.fine_tune.train.epochs = epochs;
        self
    }
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.fractions.is_empty() {
            return Err(config_err!("FractionsConfig.fractions must not be empty (e.g. [0.01, 0.1, 1.0])"));
        }
        if let Some(f) = self.fractions.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
            return Err(config_err!("FractionsConfig.fractions must lie in (0, 1], got {f}"));
        }
        self.probe.validate()?;
        self.fine_tune.validate()
    }
}

/// One training run: an initialisation at one label fraction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FractionRun {
    /// "scratch", "imagenet" or the SSL backbone's name.
    pub init: String,
    /// Share of the labels.
    pub fraction: f64,
    /// Labelled images used.
    pub n_train: usize,
    /// Test accuracy after each epoch (the curve of the plot).
    pub test_accuracy: Vec<f64>,
}

impl FractionRun {
    /// Test accuracy after the last epoch (NaN when no epoch finished).
    pub fn final_accuracy(&self) -> f64 {
        self.test_accuracy.last().copied().unwrap_or(f64::NAN)
    }
    /// "simclr 10%".
    pub fn label(&self) -> String {
        format!("{} {}%", self.init, percent(self.fraction))
    }
}

/// A share as a percentage without trailing zeros: 0.1 → "10", 0.005 → "0.5".
pub(crate) fn percent(f: f64) -> String {
    let p = f * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round() as i64)
    } else {
        format!("{p}")
    }
}

/// The runs of [`label_fractions`], as a table and as curves.
#[derive(Debug, Clone, PartialEq)]
pub struct FractionsReport {
    /// Every run, grouped by initialisation, fractions in the given order.
    pub runs: Vec<FractionRun>,
}

// `table`, `series`, `evcxr_display` and `Display` of a `FractionsReport` are in `viz`.

/// Runs scratch / ImageNet weights (when `cfg.imagenet_weights` is given) / the SSL backbone
/// `ssl` at every fraction of `train`'s labels, each scored on `test` after every epoch, each in
/// its own folder under `out_dir` (`scratch_1pct`, `imagenet_10pct`, `<ssl name>_100pct`, …;
/// re-running the call resumes or loads them). The batch size shrinks to the subset's size when
/// a subset is smaller than a batch.
///
/// ```no_run
/// use selfsup::prelude::*;
/// use selfsup::eval::{self, Backbone, FractionsConfig};
/// # fn demo(bt: &BarlowTwins, train: &ImageSet, test: &ImageSet) -> selfsup::Result<()> {
/// let cfg = FractionsConfig::default().imagenet_weights("assets/resnet18_imagenet.safetensors");
/// let report = eval::label_fractions(&Backbone::from_method(bt)?, train, test, &cfg, "runs/fractions")?;
/// let fig = viz::line_plot(&report.series(), &LinePlotConfig::new("label fractions", "epoch", "test accuracy"))?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Config`] for a bad config; [`Error::Data`] for unlabelled sets; the errors of the
/// runs and of loading the ImageNet weights.
pub fn label_fractions(
    ssl: &Backbone,
    train: &ImageSet,
    test: &ImageSet,
    cfg: &FractionsConfig,
    out_dir: impl AsRef<Path>,
) -> Result<FractionsReport> {
    cfg.validate()?;
    if train.labels.is_none() || test.labels.is_none() {
        return Err(Error::Data("label_fractions needs labelled train and test sets".into()));
    }
    let out_dir = out_dir.as_ref();
    let device = ssl.device();
    // (name, backbone, pre-trained?)
    let mut inits: Vec<(String, Backbone, bool)> = Vec::new();
    if cfg.scratch {
        inits.push(("scratch".into(), Backbone::random(ssl.config(), cfg.seed, device)?, false));
    }
    if let Some(path) = &cfg.imagenet_weights {
        inits.push(("imagenet".into(), Backbone::from_torchvision(path, ssl.config(), device)?, true));
    }
    inits.push((ssl.name.clone(), ssl.copy_to(device)?, true));
    let mut runs = Vec::new();
    for (name, backbone, pretrained) in &inits {
        for &fraction in &cfg.fractions {
            let subset = label_fraction(train, fraction, cfg.seed)?;
            let dir =
                out_dir.join(format!("{}_{}pct", name.replace(['/', ' '], "_"), percent(fraction).replace('.', "_")));
            let history = if *pretrained && cfg.protocol == Protocol::LinearProbe {
                let mut pc = cfg.probe.clone();
                pc.train.batch_size = pc.train.batch_size.min(subset.len());
                linear_probe(backbone, &subset, Some(test), &pc, &dir)?.history
            } else {
                let mut fc = cfg.fine_tune.clone();
                fc.train.batch_size = fc.train.batch_size.min(subset.len());
                if !pretrained {
                    fc.backbone_lr = fc.head_lr; // from scratch: one rate for the whole network
                }
                fine_tune(backbone, &subset, Some(test), &fc, &dir)?.history
            };
            runs.push(FractionRun {
                init: name.clone(),
                fraction,
                n_train: subset.len(),
                test_accuracy: history.test_accuracies().into_iter().map(|(_, a)| a).collect(),
            });
        }
    }
    Ok(FractionsReport { runs })
}
