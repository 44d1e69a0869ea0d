//! The seeds' linear probe (S0.8, S4.5): a new linear classifier `fc` trained on a frozen
//! pre-trained backbone, with augmented images, end to end through the network.
//!
//! Frozen means: the backbone's variables get no gradient and no optimizer entry (only
//! `fc.weight` and `fc.bias` are trained), and the backbone runs in eval mode, so BatchNorm's
//! running statistics do not move either — MoCo's `main_lincls.py` explains why: "Under the
//! protocol of linear classification on frozen features/models, it is not legitimate to change
//! any part of the pre-trained model. BatchNorm in train mode may revise running mean/std (even
//! if it receives no gradient), which are part of the model parameters too." A test checks that
//! every backbone variable is bit-for-bit unchanged after training.
//!
//! Deviation: the S0.8 seminar calls `model.train()`, so its BatchNorm statistics drift during
//! the probe; we follow `main_lincls.py`.
//!
//! `fc` starts as in `main_lincls.py`: `fc.weight.data.normal_(mean=0.0, std=0.01)`,
//! `fc.bias.data.zero_()`. The training itself is [`crate::train::train_supervised`]: the same
//! progress bar, per-epoch test accuracy, checkpoints and resume as every other run.
//!
//! Loading a MoCo checkpoint (S4.5) keeps only the query encoder, as `main_lincls.py` does:
//!
//! ```python
//! for k in list(state_dict.keys()):
//!     # retain only encoder_q up to before the embedding layer
//!     if k.startswith('module.encoder_q') and not k.startswith('module.encoder_q.fc'):
//!         # remove prefix
//!         state_dict[k[len("module.encoder_q."):]] = state_dict[k]
//!     # delete renamed or unused k
//!     del state_dict[k]
//! ```
//!
//! — [`moco_encoder_q`] is that loop, [`Backbone::from_moco_checkpoint`] applies it to a file.
use super::backbone::{Backbone, Classifier};
use crate::augment::ops::RandomResizedCrop;
use crate::augment::{Augment, Op};
use crate::data::{ImageSet, Normalization};
use crate::error::{config_err, Error, Result};
use crate::models::{ResNetConfig, Stage};
use crate::train::{self, LrSchedule, OptimizerConfig, TrainConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Tensor};

/// Settings of [`linear_probe`]. `Default` is the S0.8 seminar's probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearProbeConfig {
    /// Epochs, batch size, optimizer, learning rate and schedule. Default: Adam, lr 0.01, no
    /// weight decay, constant rate (S0.8: `torch.optim.Adam(model.parameters(), lr=0.01)`),
    /// 3 epochs (the seminar's `train(..., epochs=3)`), batches of 256.
    pub train: TrainConfig,
    /// Augmentation of the training images; it must end with the normalisation the backbone was
    /// pre-trained with. Default: horizontal flip (p = 0.5) + ImageNet normalisation.
    pub augment: Augment,
    /// Standard deviation of `fc.weight` at the start. 0.01 (`main_lincls.py`).
    pub init_std: f64,
}

impl Default for LinearProbeConfig {
    fn default() -> Self {
        LinearProbeConfig {
            train: TrainConfig::default()
                .epochs(3)
                .batch_size(256)
                .optimizer(OptimizerConfig::adam())
                .lr(0.01)
                .weight_decay(0.0)
                .schedule(LrSchedule::Constant),
            augment: Augment::new().then(Op::HorizontalFlip, 0.5).then(Op::Normalize(Normalization::imagenet()), 1.0),
            init_std: 0.01,
        }
    }
}

impl LinearProbeConfig {
    /// MoCo's `main_lincls.py` recipe for `image_size` inputs: SGD lr 30, momentum 0.9, no
    /// weight decay, 100 epochs, ×0.1 at epochs 60 and 80 (`--lr 30.0 --schedule 60 80
    /// --wd 0.`), batch 256, `RandomResizedCrop(image_size)` + flip + ImageNet normalisation.
    pub fn moco_lincls(image_size: i64) -> Self {
        LinearProbeConfig {
            train: TrainConfig::default()
                .epochs(100)
                .batch_size(256)
                .optimizer(OptimizerConfig::sgd(0.9))
                .lr(30.0)
                .weight_decay(0.0)
                .schedule(LrSchedule::step_decay(vec![60, 80], 0.1)),
            augment: Augment::new()
                .then(Op::RandomResizedCrop(RandomResizedCrop::new(image_size)), 1.0)
                .then(Op::HorizontalFlip, 0.5)
                .then(Op::Normalize(Normalization::imagenet()), 1.0),
            init_std: 0.01,
        }
    }
    /// A laptop-CPU probe for tests and notebooks: [`Default`] with 2 epochs of batches of 32,
    /// full precision, no progress bar.
    pub fn tiny() -> Self {
        let d = LinearProbeConfig::default();
        LinearProbeConfig {
            train: TrainConfig { epochs: 2, batch_size: 32, ..TrainConfig::tiny() }
                .optimizer(OptimizerConfig::adam())
                .lr(0.01)
                .weight_decay(0.0)
                .schedule(LrSchedule::Constant)
                .progress(false),
            ..d
        }
    }
    /// The same config with `epochs` epochs.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.train.epochs = epochs;
        self
    }
    /// The same config with another learning rate.
    pub fn lr(mut self, lr: f64) -> Self {
        self.train.lr = lr;
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
        if !(self.init_std >= 0.0 && self.init_std.is_finite()) {
            return Err(config_err!("LinearProbeConfig.init_std must be finite and >= 0, got {}", self.init_std));
        }
        Ok(())
    }
}

/// Trains a linear classifier on the frozen `backbone` (a copy: `backbone` itself is not
/// changed) with `train`'s labels, reporting the accuracy on `test` after every epoch
/// (`classifier.history.test_accuracies()`); checkpoints go to `out_dir`, and the same call
/// again resumes or, when finished, loads the result at once.
///
/// ```no_run
/// use selfsup::prelude::*;
/// use selfsup::eval::{self, Backbone, LinearProbeConfig};
/// # fn demo(moco: &Moco, train: &ImageSet, test: &ImageSet) -> selfsup::Result<()> {
/// let probe = eval::linear_probe(&Backbone::from_method(moco)?, train, Some(test), &LinearProbeConfig::default(), "runs/moco_probe")?;
/// println!("test accuracy {:.3}", probe.accuracy(test)?); // the seminar: 84% on CIFAR-10
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Data`] for an unlabelled set or fewer than 2 classes; [`Error::Config`] for a bad
/// config; the errors of [`crate::train::train_supervised`].
pub fn linear_probe(
    backbone: &Backbone,
    train: &ImageSet,
    test: Option<&ImageSet>,
    cfg: &LinearProbeConfig,
    out_dir: impl AsRef<Path>,
) -> Result<Classifier> {
    cfg.validate()?;
    if train.labels.is_none() {
        return Err(Error::Data(format!("linear_probe: '{}' has no labels", train.name)));
    }
    if train.num_classes() < 2 {
        return Err(Error::Data(format!(
            "linear_probe: '{}' has {} classes, need at least 2",
            train.name,
            train.num_classes()
        )));
    }
    let mut clf = Classifier::from_backbone(backbone, &train.class_names, cfg.init_std, cfg.train.seed)?;
    clf.freeze_backbone(); // only fc.weight and fc.bias require gradients → the only optimizer entries
    clf.normalization = cfg.augment.output_normalization();
    clf.name = format!("{} + linear probe", backbone.name);
    let net = clf.net();
    // The backbone is an input of the probe: a probe of another backbone is another run.
    let init = train::identity::weights_fingerprint(clf.vs())?;
    // Eval mode throughout (train = false): frozen BatchNorm statistics, as main_lincls.py.
    let history = train::train_supervised_in(
        clf.vs(),
        |x, _train| net.forward_until(x, Stage::Fc, false),
        train,
        test,
        &cfg.augment,
        &cfg.train,
        out_dir.as_ref(),
        false,
        Some(init),
    )?;
    clf.history = history;
    Ok(clf)
}

/// `main_lincls.py`'s renaming of a MoCo checkpoint's state dict: keeps the query encoder's
/// backbone (`module.encoder_q.*` or `encoder_q.*`, also under our checkpoints' `online/`
/// prefix), strips the prefix so the names become torchvision's, and drops the projection head
/// `encoder_q.fc.*` and everything else (`encoder_k`, `queue`, `queue_ptr`).
///
/// ```
/// use selfsup::eval::moco_encoder_q;
/// use selfsup::tch::Tensor;
/// let sd = vec![
///     ("module.encoder_q.conv1.weight".to_string(), Tensor::zeros([1], (selfsup::tch::Kind::Float, selfsup::tch::Device::Cpu))),
///     ("module.encoder_q.fc.0.weight".to_string(), Tensor::zeros([1], (selfsup::tch::Kind::Float, selfsup::tch::Device::Cpu))),
///     ("module.queue".to_string(), Tensor::zeros([1], (selfsup::tch::Kind::Float, selfsup::tch::Device::Cpu))),
/// ];
/// let kept: Vec<String> = moco_encoder_q(sd)?.into_iter().map(|(k, _)| k).collect();
/// assert_eq!(kept, vec!["conv1.weight".to_string()]);
/// # Ok::<(), selfsup::Error>(())
/// ```
///
/// # Errors
/// [`Error::Data`] when no `encoder_q` backbone key is found (the message lists a few keys).
pub fn moco_encoder_q(state_dict: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
    let some: Vec<String> = state_dict.iter().take(5).map(|(k, _)| k.clone()).collect();
    let kept: Vec<(String, Tensor)> = state_dict
        .into_iter()
        .filter_map(|(k, t)| {
            let k2 = k.strip_prefix("online/").unwrap_or(&k);
            let k2 = k2.strip_prefix("module.").unwrap_or(k2);
            let rest = k2.strip_prefix("encoder_q.")?;
            (!(rest == "fc" || rest.starts_with("fc."))).then(|| (rest.to_string(), t))
        })
        .collect();
    if kept.is_empty() {
        return Err(Error::Data(format!(
            "no 'module.encoder_q.*' / 'encoder_q.*' backbone keys in this MoCo checkpoint (keys look like {some:?}); \
             is it a MoCo checkpoint?"
        )));
    }
    Ok(kept)
}

impl Backbone {
    /// The query encoder of a MoCo checkpoint (S4.5), renamed by [`moco_encoder_q`], in a ResNet
    /// of architecture `config` on `device`, frozen. `path` is either
    /// - a run folder of [`crate::train::pretrain`] with a MoCo method (its `checkpoint.safetensors`), or
    /// - a safetensors file of a state dict, e.g. the official checkpoints converted once in
    ///   Python:
    ///   ```python
    ///   import torch, safetensors.torch as st
    ///   sd = torch.load("moco_v2_800ep_pretrain.pth.tar", map_location="cpu")["state_dict"]
    ///   st.save_file({k: v.contiguous() for k, v in sd.items()}, "moco_v2_800ep.safetensors")
    ///   ```
    ///
    /// Every backbone variable must be found (`main_lincls.py` asserts that only `fc.weight` and
    /// `fc.bias` are missing).
    ///
    /// # Errors
    /// [`Error::Data`] for a missing file or keys that do not fit; [`Error::Shape`] for another
    /// depth or stem.
    pub fn from_moco_checkpoint(path: impl AsRef<Path>, config: &ResNetConfig, device: Device) -> Result<Backbone> {
        let path = path.as_ref();
        let state = if path.is_dir() {
            train::Checkpoint::load(path)?.online
        } else if path.exists() {
            Tensor::read_safetensors(path)?
        } else {
            return Err(Error::Data(format!(
                "MoCo checkpoint {} not found: pass a pretrain run folder or a .safetensors state dict",
                path.display()
            )));
        };
        let named = moco_encoder_q(state)?;
        Ok(Backbone::from_named(&named, config, device, &format!("MoCo checkpoint {}", path.display()))?.named("moco"))
    }
}
