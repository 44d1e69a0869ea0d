//! Out-of-distribution robustness (S2.T6): classifiers trained on STL-10 (96×96 crops of
//! ImageNet-like photos) scored on the CIFAR-10 test set (32×32, other photographers, other
//! cameras). Nine of the ten classes are shared; STL-10 has "monkey" where CIFAR-10 has "frog",
//! and the homework counts a "monkey" prediction as "frog". The predicted STL-10 class goes
//! through [`crate::data::stl10::to_cifar10`] (FORMATS.md: 0→0, 1→2, 2→1, 3→3, 4→4, 5→5, 6→7,
//! 7 (monkey)→6 (frog), 8→8, 9→9) and is compared with the CIFAR-10 label.
//!
//! The homework runs it for five models — supervised, SimCLR + probe, SimCLR + fine-tuning,
//! BYOL + probe, BYOL + fine-tuning — and asks which representation transfers best.
//!
//! Without real data, [`ood_test_set`] gives the embedded dataset's version of the same shift:
//! the shapes drawn at a third of the resolution (as CIFAR-10's 32 px are to STL-10's 96 px),
//! from another seed and with twice the pixel noise, upscaled back to the training size and
//! scored class for class ([`ClassMapping::Identity`]).
use super::backbone::Classifier;
use crate::data::cifar::{self, Cifar100Labels, CifarDataset};
use crate::data::synthetic::{self, SyntheticConfig};
use crate::data::{self, stl10, ImageSet, Source, Split};
use crate::error::{config_err, Error, Result};
use super::confusion::confusion_counts;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// How a model's predicted class is compared with the OOD set's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ClassMapping {
    /// STL-10 prediction → CIFAR-10 class with [`stl10::to_cifar10`] ("monkey" counts as
    /// "frog"), the homework's rule.
    #[default]
    Stl10ToCifar10,
    /// The OOD set has the model's classes in the same order (the embedded dataset's shifted
    /// test set from [`ood_test_set`]).
    Identity,
}

/// How the out-of-distribution images are fed to the models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodConfig {
    /// Resize the OOD images to this side first (bilinear, antialiased) — 96 to match
    /// models trained on STL-10's 96×96 images; `None` feeds 32×32 as they are.
    pub resize_to: Option<i64>,
    /// Images per forward pass. 256.
    pub batch_size: usize,
    /// How predictions map onto the OOD labels. STL-10 → CIFAR-10.
    #[serde(default)]
    pub mapping: ClassMapping,
}

impl Default for OodConfig {
    /// Upscale to 96×96 (STL-10's size), batches of 256, STL-10 → CIFAR-10 classes.
    fn default() -> Self {
        OodConfig { resize_to: Some(96), batch_size: 256, mapping: ClassMapping::Stl10ToCifar10 }
    }
}

impl OodConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(config_err!("OodConfig.batch_size must be at least 1, got 0"));
        }
        if let Some(s) = self.resize_to {
            if s < 8 {
                return Err(config_err!("OodConfig.resize_to must be at least 8 (or None), got {s}"));
            }
        }
        Ok(())
    }
}

/// The OOD score of one model.
#[derive(Debug)]
pub struct OodResult {
    /// The model's name.
    pub name: String,
    /// Top-1 accuracy on CIFAR-10 after the class mapping.
    pub accuracy: f64,
    /// `[10, 10]` i64 counts, rows = true CIFAR-10 class, columns = mapped prediction.
    pub confusion: Tensor,
}

/// [`ood_evaluate`]'s result: one [`OodResult`] per model.
#[derive(Debug)]
pub struct OodReport {
    /// One per model, in the order given.
    pub results: Vec<OodResult>,
    /// The OOD set's class names (the confusion matrices' order).
    pub class_names: Vec<String>,
    /// The OOD set's name, for captions.
    pub set_name: String,
    /// How predictions were mapped.
    pub mapping: ClassMapping,
}

// `table`, `confusion_figure`, `evcxr_display` and `Display` of an `OodReport` are in `viz`.

/// Accuracy and `[10, 10]` confusion counts of STL-10 predictions (`[N]`, 0..10) against
/// CIFAR-10 labels (`[N]`, 0..10), mapping each prediction with [`stl10::to_cifar10`] ("monkey"
/// counts as "frog").
///
/// ```
/// use selfsup::eval::ood_accuracy;
/// use selfsup::tch::Tensor;
/// let stl_predictions = Tensor::from_slice(&[7i64, 1, 2]); // monkey, bird, car
/// let cifar_labels = Tensor::from_slice(&[6i64, 2, 1]); // frog, bird, automobile
/// let (accuracy, _) = ood_accuracy(&stl_predictions, &cifar_labels)?;
/// assert_eq!(accuracy, 1.0);
/// # Ok::<(), selfsup::Error>(())
/// ```
///
/// # Errors
/// [`Error::Shape`] for shapes that are not the same `[N]`; [`Error::Data`] for values outside
/// 0..10 or no prediction.
pub fn ood_accuracy(stl_predictions: &Tensor, cifar_labels: &Tensor) -> Result<(f64, Tensor)> {
    mapped_accuracy(stl_predictions, cifar_labels, ClassMapping::Stl10ToCifar10, 10)
}

/// Accuracy and `[C, C]` confusion counts of predictions against labels after `mapping`.
fn mapped_accuracy(predictions: &Tensor, labels: &Tensor, mapping: ClassMapping, classes: i64) -> Result<(f64, Tensor)> {
    let (p, l) = (predictions.size(), labels.size());
    if p.len() != 1 || p != l {
        return Err(Error::shape("ood_accuracy predictions", format!("[N] like the labels {l:?}"), &p));
    }
    if p[0] == 0 {
        return Err(Error::Data("ood_accuracy: no prediction to score".into()));
    }
    let predictions = predictions.to_device(Device::Cpu).to_kind(Kind::Int64);
    let mapped = match mapping {
        ClassMapping::Stl10ToCifar10 => stl10::to_cifar10(&predictions)?, // [N] CIFAR-10 classes
        ClassMapping::Identity => predictions,
    };
    let labels = labels.to_device(Device::Cpu).to_kind(Kind::Int64);
    let confusion = confusion_counts(&mapped, &labels, classes)?; // [C, C]
    let accuracy = mapped.eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]) as f64 / labels.size()[0] as f64;
    Ok((accuracy, confusion))
}

/// Scores STL-10 classifiers on a CIFAR-10 test set (S2.T6): each model's predictions, mapped
/// to CIFAR-10 classes with the monkey→frog rule, give an accuracy and a confusion matrix. With
/// [`ClassMapping::Identity`] the set may be any labelled set with the models' classes (the
/// embedded stand-in from [`ood_test_set`]).
///
/// ```no_run
/// use selfsup::prelude::*;
/// use selfsup::eval::{self, Classifier, OodConfig};
/// # fn demo(models: &[&Classifier], cifar_test: &ImageSet) -> selfsup::Result<()> {
/// let report = eval::ood_evaluate(models, cifar_test, &OodConfig::default())?;
/// report.table() // model × CIFAR-10 accuracy, inline
/// # ; Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Config`] for a bad config or no model; [`Error::Data`] for an unlabelled set, a set
/// without 10 classes, or a model without 10 classes (with `Identity`: a model whose class
/// count differs from the set's).
pub fn ood_evaluate(models: &[&Classifier], cifar_test: &ImageSet, cfg: &OodConfig) -> Result<OodReport> {
    cfg.validate()?;
    if models.is_empty() {
        return Err(config_err!("ood_evaluate: give at least one model"));
    }
    let labels = cifar_test
        .labels
        .as_ref()
        .ok_or_else(|| Error::Data(format!("ood_evaluate: '{}' has no labels", cifar_test.name)))?;
    let classes = cifar_test.num_classes();
    if cfg.mapping == ClassMapping::Stl10ToCifar10 && classes != 10 {
        return Err(Error::Data(format!(
            "ood_evaluate: expected the CIFAR-10 test set (10 classes), '{}' has {}",
            cifar_test.name,
            cifar_test.num_classes()
        )));
    }
    let set = match cfg.resize_to {
        Some(s) => data::resize(cifar_test, s, s)?,
        None => cifar_test.clone(),
    };
    let mut results = Vec::with_capacity(models.len());
    for m in models {
        if m.num_classes() != classes {
            return Err(Error::Data(format!(
                "ood_evaluate: model '{}' has {} classes but '{}' has {classes}; {}",
                m.name,
                m.num_classes(),
                cifar_test.name,
                match cfg.mapping {
                    ClassMapping::Stl10ToCifar10 => "score STL-10 classifiers (10 classes) on CIFAR-10",
                    ClassMapping::Identity => "the OOD set must have the models' classes",
                }
            )));
        }
        let pred = m.predict(&set, cfg.batch_size)?; // [N] the model's classes
        let (accuracy, confusion) = mapped_accuracy(&pred, labels, cfg.mapping, classes as i64)?;
        results.push(OodResult { name: m.name.clone(), accuracy, confusion });
    }
    Ok(OodReport { results, class_names: cifar_test.class_names.clone(), set_name: cifar_test.name.clone(), mapping: cfg.mapping })
}

/// An out-of-distribution test set and how to score on it, from [`ood_test_set`].
#[derive(Debug, Clone)]
pub struct OodSet {
    /// The labelled images.
    pub set: ImageSet,
    /// Resize and class mapping for [`ood_evaluate`].
    pub config: OodConfig,
    /// One line for the notebook: what the set is.
    pub description: String,
}

/// The OOD test set for models trained on `source` (S2.T6):
/// - STL-10 → the CIFAR-10 test set from [`data::data_dir`], upscaled to 96 px, monkey → frog;
/// - the embedded dataset → its test split drawn at a third of the resolution (at least 16 px),
///   from seed + 1 with twice the noise, upscaled to the training size, same classes — the
///   shift CIFAR-10 is to STL-10: fewer pixels, other images.
///
/// ```no_run
/// use selfsup::prelude::*;
/// let ood = eval::ood_test_set(&Source::stl10_or_synthetic(SyntheticConfig::stl10_like()))?;
/// println!("{}", ood.description);
/// # Ok::<(), selfsup::Error>(())
/// ```
///
/// # Errors
/// [`Error::Data`] for STL-10 without CIFAR-10 on disk (the message says where to put it) and
/// for a CIFAR source (the homework's OOD test is defined for STL-10 models).
pub fn ood_test_set(source: &Source) -> Result<OodSet> {
    match source {
        Source::Stl10(_) => {
            let found = cifar::detect(data::data_dir(), CifarDataset::Cifar10).map_err(|e| {
                Error::Data(format!(
                    "the OOD test needs the CIFAR-10 test set next to STL-10: put cifar-10-batches-bin/ (or \
                     cifar-10-batches-py/) in {} or fetch it with selfsup::data::download::cifar10 ({e})",
                    data::data_dir().display()
                ))
            })?;
            let set = cifar::load(&found, Split::Test, Cifar100Labels::Fine)?;
            let description = format!("OOD: {} ({} images, 32 px upscaled to 96, monkey counted as frog)", set.name, set.len());
            Ok(OodSet { set, config: OodConfig::default(), description })
        }
        Source::Synthetic(cfg) => {
            let shifted = SyntheticConfig {
                image_size: (cfg.image_size / 3).max(16),
                seed: cfg.seed.wrapping_add(1),
                noise: (2.0 * cfg.noise).min(0.5),
                ..cfg.clone()
            };
            let mut set = synthetic::load(Split::Test, &shifted)?;
            set.name = format!(
                "the embedded shapes at {0}x{0} px (seed {1}, noise {2:.2}), a stand-in for CIFAR-10",
                shifted.image_size, shifted.seed, shifted.noise
            );
            let description = format!(
                "OOD: {} ({} images upscaled to {} px; the same 10 classes)",
                set.name,
                set.len(),
                cfg.image_size
            );
            let config = OodConfig { resize_to: Some(cfg.image_size as i64), mapping: ClassMapping::Identity, ..OodConfig::default() };
            Ok(OodSet { set, config, description })
        }
        Source::Cifar(_) => Err(Error::Data(
            "ood_test_set: the homework's OOD test scores STL-10 models on CIFAR-10; train on STL-10 \
             (Source::stl10_or_synthetic) or on the embedded dataset"
                .into(),
        )),
    }
}
