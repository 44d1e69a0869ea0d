//! Owned networks for evaluation: a [`Backbone`] (a ResNet without classifier, in its own
//! `VarStore`, torchvision names at the root) and a [`Classifier`] (the same ResNet with an `fc`
//! layer, as torchvision's `resnet18(num_classes=C)`).
//!
//! Why copies: evaluation must not touch what it evaluates. A linear probe that froze the
//! variables of a method's own store, or a fine-tuning run that moved them, would change the
//! pre-trained encoder the next cell uses; and a notebook cell must not return values that borrow
//! from another cell's variables (STYLE.md). So every protocol starts from an owned copy:
//! [`Backbone::from_method`] copies a method's encoder by name, and [`Classifier::from_backbone`]
//! copies a backbone into a fresh store with a new `fc`.
use crate::data::{ImageSet, Normalization};
use crate::error::{Error, Result};
use crate::methods::SslMethod;
use crate::models::{ResNet, ResNetConfig, Stage};
use crate::train::History;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use super::draws::Draws;
use tch::{nn, Device, Kind, Tensor};

/// First path components of a torchvision ResNet's backbone keys (`fc` is the classifier).
const BACKBONE_ROOTS: [&str; 6] = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"];

/// Whether `key` (torchvision naming) belongs to the backbone, not to `fc`.
pub(crate) fn is_backbone_key(key: &str) -> bool {
    BACKBONE_ROOTS.contains(&key.split('.').next().unwrap_or(""))
}

/// The variables of `vs` as `(name, tensor)`, sorted by name.
pub(crate) fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn short_list(names: &[String]) -> String {
    let shown = names.iter().take(6).cloned().collect::<Vec<_>>().join(", ");
    format!("{} ({shown}{})", names.len(), if names.len() > 6 { ", …" } else { "" })
}

/// Copies the backbone entries of `src` (torchvision keys; `fc.*` and `num_batches_tracked`
/// ignored) into the backbone variables of `dst` (a ResNet at the root), in place, after checking
/// that the names match exactly and the shapes agree.
pub(crate) fn copy_backbone_into(dst: &nn::VarStore, src: &[(String, Tensor)], what: &str) -> Result<()> {
    let given: HashMap<&str, &Tensor> = src
        .iter()
        .filter(|(k, _)| is_backbone_key(k) && !k.ends_with("num_batches_tracked"))
        .map(|(k, t)| (k.as_str(), t))
        .collect();
    let wanted: Vec<(String, Tensor)> = sorted_variables(dst).into_iter().filter(|(k, _)| is_backbone_key(k)).collect();
    let wanted_names: HashSet<&str> = wanted.iter().map(|(k, _)| k.as_str()).collect();
    let mut missing: Vec<String> =
        wanted_names.iter().filter(|k| !given.contains_key(*k)).map(|k| k.to_string()).collect();
    let mut unexpected: Vec<String> =
        given.keys().filter(|k| !wanted_names.contains(*k)).map(|k| k.to_string()).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        missing.sort();
        unexpected.sort();
        return Err(Error::Data(format!(
            "{what}: the weights do not fit this ResNet: missing {}, unexpected {}. Keys must be torchvision's \
             (conv1.weight, layer1.0.bn1.running_mean, …) and the depth and stem (small_images) must match",
            short_list(&missing),
            short_list(&unexpected)
        )));
    }
    for (k, t) in &wanted {
        let s = given[k.as_str()];
        if s.size() != t.size() {
            return Err(Error::shape(format!("{what}: '{k}'"), format!("{:?}", t.size()), &s.size()));
        }
    }
    tch::no_grad(|| -> Result<()> {
        for (k, t) in &wanted {
            t.shallow_clone().f_copy_(&given[k.as_str()].to_device(t.device()).to_kind(t.kind()))?;
        }
        Ok(())
    })
}

/// The prefix under which a method's store keeps its ResNet (`"encoder_q"` for MoCo,
/// `"backbone"` for the others, `""` at the root), found from the stem's `conv1.weight`.
pub(crate) fn find_backbone_prefix(vs: &nn::VarStore) -> Result<String> {
    let mut prefixes: Vec<String> = vs
        .variables()
        .keys()
        .filter_map(|k| {
            let p = k.strip_suffix("conv1.weight")?;
            if p.is_empty() {
                return Some(String::new());
            }
            let p = p.strip_suffix('.')?;
            (!p.contains("layer")).then(|| p.to_string())
        })
        .collect();
    prefixes.sort();
    match prefixes.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::Data("no ResNet found in this VarStore (no '<prefix>.conv1.weight' variable)".into())),
        many => Err(Error::Data(format!(
            "several ResNets in this VarStore (prefixes {many:?}); use Backbone::from_store with the one you want"
        ))),
    }
}

/// A ResNet without classifier in its own `VarStore` (torchvision names at the root), frozen:
/// the encoder being evaluated. Build one from a method, a file, or random weights.
///
/// ```no_run
/// use selfsup::prelude::*;
/// use selfsup::eval::Backbone;
/// let simclr = SimClr::new(SimClrConfig::tiny(), Device::Cpu)?;
/// let ssl = Backbone::from_method(&simclr)?; // a copy: simclr is left as it was
/// let random = Backbone::random(simclr.backbone().config(), 0, Device::Cpu)?; // S1.6
/// # Ok::<(), selfsup::Error>(())
/// ```
#[derive(Debug)]
pub struct Backbone {
    vs: nn::VarStore,
    net: ResNet,
    /// A label for tables and plots ("simclr", "random", "imagenet").
    pub name: String,
}

impl Backbone {
    /// An empty (freshly initialised) backbone of architecture `config` (its `num_classes` is
    /// ignored) on `device`, frozen.
    fn build(config: &ResNetConfig, device: Device, name: &str) -> Result<Backbone> {
        let config = ResNetConfig { num_classes: None, ..config.clone() };
        let mut vs = nn::VarStore::new(device);
        let net = ResNet::new(&vs.root(), &config)?;
        vs.freeze();
        Ok(Backbone { vs, net, name: name.to_string() })
    }

    /// A randomly initialised backbone (torchvision's Kaiming init), drawn with `seed`: the
    /// random-weights baseline of S1.6.
    ///
    /// # Errors
    /// An invalid `config`.
    pub fn random(config: &ResNetConfig, seed: u64, device: Device) -> Result<Backbone> {
        config.validate()?;
        tch::manual_seed(seed as i64);
        Backbone::build(config, device, "random")
    }

    /// A copy of the backbone of a self-supervised method (its prefix — `encoder_q` or
    /// `backbone` — is found from the variable names), on the method's device, frozen. The
    /// method is not changed.
    ///
    /// # Errors
    /// [`Error::Data`] when the method's store holds no (or several) ResNets.
    pub fn from_method<M: SslMethod + ?Sized>(method: &M) -> Result<Backbone> {
        let vs = method.online();
        let prefix = find_backbone_prefix(vs)?;
        let mut b = Backbone::from_store(vs, &prefix, method.backbone().config())?;
        b.name = method.name().to_string();
        Ok(b)
    }

    /// A copy of the ResNet stored under `prefix` (`""` for the root) in `vs`, of architecture
    /// `config`, on `vs`'s device.
    ///
    /// # Errors
    /// [`Error::Data`] when the names under `prefix` do not form that ResNet; [`Error::Shape`]
    /// for a shape that differs.
    pub fn from_store(vs: &nn::VarStore, prefix: &str, config: &ResNetConfig) -> Result<Backbone> {
        let lead = if prefix.is_empty() { String::new() } else { format!("{}.", prefix.trim_end_matches('.')) };
        let named: Vec<(String, Tensor)> = sorted_variables(vs)
            .into_iter()
            .filter_map(|(k, t)| k.strip_prefix(lead.as_str()).map(|s| (s.to_string(), t)))
            .collect();
        Backbone::from_named(&named, config, vs.device(), &format!("Backbone::from_store('{prefix}')"))
    }

    /// A backbone of architecture `config` on `device` holding the named tensors `named`
    /// (torchvision keys; `fc.*` and `num_batches_tracked` ignored), frozen.
    ///
    /// # Errors
    /// [`Error::Data`] listing missing and unexpected names; [`Error::Shape`] for a shape that
    /// differs.
    pub fn from_named(
        named: &[(String, Tensor)],
        config: &ResNetConfig,
        device: Device,
        what: &str,
    ) -> Result<Backbone> {
        config.validate()?;
        let b = Backbone::build(config, device, "pretrained")?;
        copy_backbone_into(&b.vs, named, what)?;
        Ok(b)
    }

    /// A copy of this backbone (same weights, new store) on `device`.
    ///
    /// # Errors
    /// Errors of libtorch while copying.
    pub fn copy_to(&self, device: Device) -> Result<Backbone> {
        let mut b = Backbone::from_named(&self.named_variables(), self.net.config(), device, "Backbone::copy_to")?;
        b.name = self.name.clone();
        Ok(b)
    }

    /// The network.
    pub fn net(&self) -> &ResNet {
        &self.net
    }
    /// The store of the network (torchvision names at the root).
    pub fn vs(&self) -> &nn::VarStore {
        &self.vs
    }
    /// The device of the weights.
    pub fn device(&self) -> Device {
        self.vs.device()
    }
    /// The architecture.
    pub fn config(&self) -> &ResNetConfig {
        self.net.config()
    }
    /// The same backbone with another label.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// All variables (weights and BatchNorm statistics) with torchvision names, sorted.
    pub fn named_variables(&self) -> Vec<(String, Tensor)> {
        sorted_variables(&self.vs)
    }
    /// Saves the weights as safetensors with torchvision keys (see [`crate::models::save_backbone`]).
    ///
    /// # Errors
    /// I/O and libtorch errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<Vec<String>> {
        crate::models::save_backbone(&self.vs, "", path)
    }
}

/// A ResNet with a classifier `fc` in its own store (torchvision's layout), the result of
/// [`crate::eval::linear_probe`](fn@crate::eval::linear_probe) and [`crate::eval::fine_tune`]: predicts classes of image sets,
/// and keeps its training history and the normalisation its inputs need.
#[derive(Debug)]
pub struct Classifier {
    vs: nn::VarStore,
    net: ResNet,
    /// Names of the classes, index = label.
    pub class_names: Vec<String>,
    /// Normalisation applied to `[0, 1]` images before the network (the training augmentation's
    /// last step).
    pub normalization: Option<Normalization>,
    /// The training history (per-epoch test accuracy in `history.test_accuracies()`).
    pub history: History,
    /// A label for tables ("SimCLR + probe").
    pub name: String,
}

impl Classifier {
    /// `backbone`'s weights copied into a new ResNet with a `num_classes`-way `fc` initialised as
    /// MoCo's main_lincls.py does (`fc.weight.data.normal_(mean=0.0, std=0.01)`,
    /// `fc.bias.data.zero_()`), with `init_std` as the standard deviation, drawn with `seed`.
    /// Nothing is frozen yet.
    ///
    /// # Errors
    /// [`Error::Config`] for fewer than 2 classes or a negative `init_std`.
    pub fn from_backbone(backbone: &Backbone, class_names: &[String], init_std: f64, seed: u64) -> Result<Classifier> {
        if class_names.len() < 2 {
            return Err(Error::Config(format!("a classifier needs at least 2 classes, got {}", class_names.len())));
        }
        if !(init_std >= 0.0 && init_std.is_finite()) {
            return Err(Error::Config(format!("fc init std must be finite and >= 0, got {init_std}")));
        }
        let config = backbone.config().clone().num_classes(class_names.len() as i64);
        let vs = nn::VarStore::new(backbone.device());
        tch::manual_seed(seed as i64);
        let net = ResNet::new(&vs.root(), &config)?;
        copy_backbone_into(&vs, &backbone.named_variables(), "Classifier::from_backbone")?;
        let vars = vs.variables();
        let (Some(w), Some(b)) = (vars.get("fc.weight"), vars.get("fc.bias")) else {
            return Err(Error::Data("Classifier: the ResNet has no fc.weight / fc.bias".into()));
        };
        // Drawn from the kit's own seeded generator, not libtorch's global one: that one is shared
        // by every thread, so another thread's draws between a manual_seed and this normal_ would
        // change the fc, and with it the run identity of a probe or fine-tuning (which includes
        // these starting weights), from one call to the next.
        let fc = Tensor::from_slice(&Draws::new(seed).normal(w.numel(), init_std)).to_kind(Kind::Float).view(w.size().as_slice());
        tch::no_grad(|| {
            w.shallow_clone().copy_(&fc);
            let _ = b.shallow_clone().zero_();
        });
        Ok(Classifier {
            vs,
            net,
            class_names: class_names.to_vec(),
            normalization: Some(Normalization::imagenet()),
            history: History::new(),
            name: backbone.name.clone(),
        })
    }

    /// Turns gradients off for every variable but `fc.weight` and `fc.bias` (S0.8: "freeze
    /// everything but the classifier"), so the optimizer never sees them.
    pub fn freeze_backbone(&self) {
        for (k, t) in self.vs.variables() {
            if is_backbone_key(&k) {
                let _ = t.set_requires_grad(false);
            }
        }
    }

    /// The network (with `fc`).
    pub fn net(&self) -> &ResNet {
        &self.net
    }
    /// The store (torchvision names; `fc.weight`, `fc.bias`).
    pub fn vs(&self) -> &nn::VarStore {
        &self.vs
    }
    /// The device of the weights.
    pub fn device(&self) -> Device {
        self.vs.device()
    }
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }
    /// A copy of the backbone part (without `fc`), frozen.
    ///
    /// # Errors
    /// Errors of libtorch while copying.
    pub fn backbone(&self) -> Result<Backbone> {
        let named = sorted_variables(&self.vs);
        let mut b = Backbone::from_named(&named, self.net.config(), self.device(), "Classifier::backbone")?;
        b.name = self.name.clone();
        Ok(b)
    }

    /// Logits of a batch of normalised float images, in eval mode, without gradients.
    ///
    /// # Shapes
    /// `[B, 3, H, W]` → `[B, C]`.
    ///
    /// # Errors
    /// As [`ResNet::forward_until`].
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| self.net.forward_until(&x.to_device(self.device()), Stage::Fc, false))
    }

    /// Predicted classes of every image of `set`, `[N]` i64 on the CPU (batches of
    /// `batch_size`, images normalised with [`Classifier::normalization`]).
    ///
    /// # Errors
    /// [`Error::Config`] for a zero batch size; errors of the network (e.g. images too small).
    pub fn predict(&self, set: &ImageSet, batch_size: usize) -> Result<Tensor> {
        if batch_size == 0 {
            return Err(Error::Config("Classifier::predict: batch_size must be at least 1, got 0".into()));
        }
        let n = set.len();
        let mut parts = Vec::with_capacity(n.div_ceil(batch_size));
        for start in (0..n).step_by(batch_size) {
            let len = batch_size.min(n - start);
            let x = set.float_batch(start, len, self.normalization.as_ref(), self.device())?; // [b, 3, H, W]
            parts.push(self.logits(&x)?.argmax(-1, false).to_device(Device::Cpu));
            // [b]
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros([0], (Kind::Int64, Device::Cpu)));
        }
        Ok(Tensor::cat(&parts, 0)) // [N]
    }

    /// Top-1 accuracy on a labelled set.
    ///
    /// # Errors
    /// [`Error::Data`] for an unlabelled or empty set; as [`Classifier::predict`].
    pub fn accuracy(&self, set: &ImageSet) -> Result<f64> {
        let labels = set
            .labels
            .as_ref()
            .ok_or_else(|| Error::Data(format!("Classifier::accuracy: '{}' has no labels", set.name)))?;
        if set.is_empty() {
            return Err(Error::Data(format!("Classifier::accuracy: '{}' has no image", set.name)));
        }
        let pred = self.predict(set, 256)?;
        Ok(pred.eq_tensor(labels).sum(Kind::Int64).int64_value(&[]) as f64 / set.len() as f64)
    }
}
