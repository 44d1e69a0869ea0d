//! Fine-tuning (S2.T5): a pre-trained backbone and a new classifier `fc` trained together, the
//! backbone at a smaller learning rate than the new head — it already holds useful features,
//! which a large step would destroy before the random head has learned to read them (SimCLR,
//! Chen et al. 2020, Appendix B.5, fine-tunes the whole network; the homework compares this with
//! the frozen probe). The two rates are two parameter groups of the trainer's optimizer
//! ([`crate::train::ParamGroup`]).
//!
//! [`fine_tune_with`] calls back every N epochs, e.g. to take embeddings for the t-SNE snapshots
//! of how the embedding space moves during fine-tuning (S2.T5; see
//! [`crate::viz::tsne_snapshots`]). It trains in chunks through the trainer's exact resume, so the
//! result is the same as one uninterrupted run.
use super::backbone::{Backbone, Classifier};
use super::features::{extract_features, Embeddings, FeatureConfig};
use crate::augment::{Augment, Op};
use crate::data::{ImageSet, Normalization};
use crate::error::{config_err, Error, Result};
use crate::models::Stage;
use crate::train::{self, LrSchedule, OptimizerConfig, ParamGroup, TrainConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Tensor};

/// Settings of [`fine_tune`]. `Default`: Adam, head 1e-3 and backbone 1e-4 (the usual 10×
/// ratio between a new layer and pre-trained ones), cosine schedule, 10 epochs, batch 256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTuneConfig {
    /// Epochs, batch, optimizer, schedule, seed, checkpoints. Its `lr` is ignored: the two rates
    /// below are used (the schedule multiplies both).
    pub train: TrainConfig,
    /// Learning rate of the new `fc` layer. 1e-3 (Adam's default rate).
    pub head_lr: f64,
    /// Learning rate of the pre-trained backbone (0 trains only the head, though BatchNorm
    /// statistics still adapt). 1e-4.
    pub backbone_lr: f64,
    /// Augmentation of the training images, ending with the pre-training normalisation.
    /// Default: horizontal flip + ImageNet normalisation.
    pub augment: Augment,
    /// Standard deviation of `fc.weight` at the start. 0.01 (MoCo `main_lincls.py`).
    pub init_std: f64,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        FineTuneConfig {
            train: TrainConfig::default()
                .epochs(10)
                .batch_size(256)
                .optimizer(OptimizerConfig::adam())
                .weight_decay(0.0)
                .schedule(LrSchedule::cosine(0)),
            head_lr: 1e-3,
            backbone_lr: 1e-4,
            augment: Augment::new().then(Op::HorizontalFlip, 0.5).then(Op::Normalize(Normalization::imagenet()), 1.0),
            init_std: 0.01,
        }
    }
}

impl FineTuneConfig {
    /// A laptop-CPU run: 2 epochs of batches of 32, full precision, no progress bar.
    pub fn tiny() -> Self {
        FineTuneConfig {
            train: TrainConfig { epochs: 2, batch_size: 32, ..TrainConfig::tiny() }
                .optimizer(OptimizerConfig::adam())
                .weight_decay(0.0)
                .schedule(LrSchedule::cosine(0))
                .progress(false),
            ..FineTuneConfig::default()
        }
    }
    /// The same config with `epochs` epochs.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.train.epochs = epochs;
        self
    }
    /// The same config with other learning rates for the head and the backbone.
    pub fn lrs(mut self, head_lr: f64, backbone_lr: f64) -> Self {
        self.head_lr = head_lr;
        self.backbone_lr = backbone_lr;
        self
    }
    /// The same config with another augmentation.
    pub fn augment(mut self, augment: Augment) -> Self {
        self.augment = augment;
        self
    }
    /// The same config with another training config.
    pub fn train(mut self, train: TrainConfig) -> Self {
        self.train = train;
        self
    }
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        self.augment.validate()?;
        if !(self.head_lr > 0.0 && self.head_lr.is_finite()) {
            return Err(config_err!("FineTuneConfig.head_lr must be positive and finite, got {}", self.head_lr));
        }
        if !(self.backbone_lr >= 0.0 && self.backbone_lr.is_finite()) {
            return Err(config_err!("FineTuneConfig.backbone_lr must be finite and >= 0, got {}", self.backbone_lr));
        }
        if !(self.init_std >= 0.0 && self.init_std.is_finite()) {
            return Err(config_err!("FineTuneConfig.init_std must be finite and >= 0, got {}", self.init_std));
        }
        Ok(())
    }

    /// The trainer's config: base rate = `head_lr`, the backbone group scaled to `backbone_lr`.
    fn train_config(&self) -> TrainConfig {
        let backbone = ParamGroup::new("backbone", &["conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4."])
            .lr_scale(self.backbone_lr / self.head_lr);
        self.train.clone().lr(self.head_lr).param_groups(vec![backbone])
    }
}

/// Embeddings taken during fine-tuning, after `epoch` epochs (0: before training).
#[derive(Debug)]
pub struct Snapshot {
    /// Epochs trained when taken.
    pub epoch: usize,
    /// Average-pool embeddings of the snapshot set.
    pub embeddings: Embeddings,
}

fn check_sets(train: &ImageSet) -> Result<()> {
    if train.labels.is_none() {
        return Err(Error::Data(format!("fine_tune: '{}' has no labels", train.name)));
    }
    if train.num_classes() < 2 {
        return Err(Error::Data(format!(
            "fine_tune: '{}' has {} classes, need at least 2",
            train.name,
            train.num_classes()
        )));
    }
    Ok(())
}

fn new_classifier(backbone: &Backbone, train: &ImageSet, cfg: &FineTuneConfig) -> Result<Classifier> {
    let mut clf = Classifier::from_backbone(backbone, &train.class_names, cfg.init_std, cfg.train.seed)?;
    clf.normalization = cfg.augment.output_normalization();
    clf.name = format!("{} + fine-tuning", backbone.name);
    Ok(clf)
}

/// Fine-tunes a copy of `backbone` with a new `fc` on `train` (test accuracy on `test` after
/// every epoch), checkpointing into `out_dir` (the same call again resumes, or loads a finished
/// run). `backbone` itself is not changed.
///
/// # Errors
/// [`Error::Data`] for an unlabelled set; [`Error::Config`] for a bad config; the errors of
/// [`crate::train::train_supervised`].
pub fn fine_tune(
    backbone: &Backbone,
    train: &ImageSet,
    test: Option<&ImageSet>,
    cfg: &FineTuneConfig,
    out_dir: impl AsRef<Path>,
) -> Result<Classifier> {
    cfg.validate()?;
    check_sets(train)?;
    let mut clf = new_classifier(backbone, train, cfg)?;
    let net = clf.net();
    // The backbone is an input of the fine-tuning: another backbone is another run.
    let init = train::identity::weights_fingerprint(clf.vs())?;
    let history = train::train_supervised_in(
        clf.vs(),
        |x, t| net.forward_until(x, Stage::Fc, t),
        train,
        test,
        &cfg.augment,
        &cfg.train_config(),
        out_dir.as_ref(),
        false,
        Some(init),
    )?;
    clf.history = history;
    Ok(clf)
}

/// [`fine_tune`] that stops every `every_epochs` epochs (and at the start and the end) to call
/// `callback(epochs_done, &classifier)` — for instance to take embeddings for t-SNE snapshots
/// (S2.T5). Training resumes exactly after each call (the trainer's checkpoint in `out_dir`),
/// so the final weights equal those of [`fine_tune`].
///
/// ```no_run
/// use selfsup::prelude::*;
/// use selfsup::eval::{self, Backbone, FeatureConfig, FineTuneConfig};
/// # fn demo(byol: &Byol, train: &ImageSet, test: &ImageSet) -> selfsup::Result<()> {
/// let mut snapshots = Vec::new();
/// let clf = eval::fine_tune_with(&Backbone::from_method(byol)?, train, Some(test), &FineTuneConfig::tiny(), "runs/byol_ft", 1,
///     |epoch, clf| {
///         let cfg = FeatureConfig::default().normalization(clf.normalization);
///         snapshots.push((epoch, eval::extract_features(clf.net(), test, &cfg, clf.device())?));
///         Ok(())
///     })?;
/// # Ok(()) }
/// ```
///
/// Note: a finished run already in `out_dir` is loaded at once, so every callback then sees the
/// final weights; use a fresh `out_dir` (or `resume(false)`) to watch the training.
///
/// # Errors
/// As [`fine_tune`]; [`Error::Config`] for `every_epochs = 0`; the callback's errors.
pub fn fine_tune_with(
    backbone: &Backbone,
    train: &ImageSet,
    test: Option<&ImageSet>,
    cfg: &FineTuneConfig,
    out_dir: impl AsRef<Path>,
    every_epochs: usize,
    mut callback: impl FnMut(usize, &Classifier) -> Result<()>,
) -> Result<Classifier> {
    cfg.validate()?;
    check_sets(train)?;
    if every_epochs == 0 {
        return Err(config_err!("fine_tune_with: every_epochs must be at least 1, got 0"));
    }
    let steps_per_epoch = train.len() / cfg.train.batch_size;
    if steps_per_epoch == 0 {
        return Err(Error::Data(format!(
            "fine_tune: '{}' has {} images, fewer than one batch of {}; lower the batch size",
            train.name,
            train.len(),
            cfg.train.batch_size
        )));
    }
    let mut clf = new_classifier(backbone, train, cfg)?;
    let init = train::identity::weights_fingerprint(clf.vs())?; // before the first chunk trains them
    callback(0, &clf)?;
    let epochs = cfg.train.epochs;
    let mut stops: Vec<usize> = (every_epochs..epochs).step_by(every_epochs).collect();
    stops.push(epochs);
    let base = cfg.train_config();
    let out_dir = out_dir.as_ref();
    for (i, &stop) in stops.iter().enumerate() {
        let mut tc = base.clone();
        tc.max_steps = Some(stop * steps_per_epoch);
        if i > 0 {
            tc.resume = true; // continue the chunk just written
        }
        let net = clf.net();
        let history = train::train_supervised_in(
            clf.vs(),
            |x, t| net.forward_until(x, Stage::Fc, t),
            train,
            test,
            &cfg.augment,
            &tc,
            out_dir,
            true, // one chunk of the run: no "stopped, run again" line between snapshots
            Some(init.clone()),
        )?;
        clf.history = history;
        callback(stop, &clf)?;
    }
    Ok(clf)
}

/// [`fine_tune_with`] taking average-pool embeddings of `snapshot_set` every `every_epochs`
/// epochs (and before and after), for `viz::tsne_snapshots` (S2.T5).
///
/// Each snapshot is also saved as `<out_dir>/snapshots/epoch_NNNN.safetensors` the moment it is
/// taken, and read back from there when present: a finished run is loaded at once on a second
/// call (a notebook re-run, or a kernel restart), and without the files every snapshot would
/// then show the final weights.
///
/// # Errors
/// As [`fine_tune_with`] and [`extract_features`]; [`Error::Data`] for a saved snapshot that does
/// not match `snapshot_set` (delete `<out_dir>/snapshots` to take them again).
pub fn fine_tune_snapshots(
    backbone: &Backbone,
    train: &ImageSet,
    test: Option<&ImageSet>,
    snapshot_set: &ImageSet,
    cfg: &FineTuneConfig,
    out_dir: impl AsRef<Path>,
    every_epochs: usize,
) -> Result<(Classifier, Vec<Snapshot>)> {
    let dir = out_dir.as_ref().join("snapshots");
    let mut snapshots = Vec::new();
    let clf = fine_tune_with(backbone, train, test, cfg, out_dir.as_ref(), every_epochs, |epoch, clf| {
        let path = dir.join(format!("epoch_{epoch:04}.safetensors"));
        let embeddings = if path.exists() {
            load_snapshot(&path, snapshot_set, clf.device())?
        } else {
            let fc = FeatureConfig::default().normalization(clf.normalization);
            let e = extract_features(clf.net(), snapshot_set, &fc, clf.device())?;
            save_snapshot(&path, &e)?;
            e
        };
        snapshots.push(Snapshot { epoch, embeddings });
        Ok(())
    })?;
    Ok((clf, snapshots))
}

fn save_snapshot(path: &Path, e: &Embeddings) -> Result<()> {
    let mut named = vec![("features", e.features.to_device(Device::Cpu))];
    if let Some(l) = &e.labels {
        named.push(("labels", l.to_device(Device::Cpu)));
    }
    train::checkpoint::write_atomic(path, |tmp| Ok(Tensor::write_safetensors(&named, tmp)?))
}

fn load_snapshot(path: &Path, set: &ImageSet, device: Device) -> Result<Embeddings> {
    let mut features = None;
    let mut labels = None;
    for (name, t) in Tensor::read_safetensors(path)? {
        match name.as_str() {
            "features" => features = Some(t),
            "labels" => labels = Some(t),
            _ => {}
        }
    }
    let features = features.ok_or_else(|| Error::Data(format!("snapshot {} has no 'features' tensor", path.display())))?;
    if features.size().first().copied() != Some(set.len() as i64) {
        return Err(Error::Data(format!(
            "snapshot {} holds {:?} features but the snapshot set '{}' has {} images; delete {} to take the snapshots again",
            path.display(),
            features.size(),
            set.name,
            set.len(),
            path.parent().map_or_else(|| path.display().to_string(), |d| d.display().to_string())
        )));
    }
    let mut e = Embeddings::new(features.to_device(device), labels.map(|l| l.to_device(device)), set.class_names.clone())?;
    e.images = Some(set.images.shallow_clone());
    e.stage = Some(Stage::AvgPool);
    Ok(e)
}
