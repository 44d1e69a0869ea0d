//! Out-of-distribution robustness (S2.T6): classifiers trained on STL-10 (96×96 crops of
//! ImageNet-like photos) scored on the CIFAR-10 test set (32×32, other photographers, other
//! cameras). Nine of the ten classes are shared; STL-10 has "monkey" where CIFAR-10 has "frog",
//! and the homework counts a "monkey" prediction as "frog". The predicted STL-10 class goes
//! through [`crate::data::stl10::to_cifar10`] (FORMATS.md: 0→0, 1→2, 2→1, 3→3, 4→4, 5→5, 6→7,
//! 7 (monkey)→6 (frog), 8→8, 9→9) and is compared with the CIFAR-10 label.
//!
//! The homework runs it for five models — supervised, SimCLR + probe, SimCLR + fine-tuning,
//! BYOL + probe, BYOL + fine-tuning — and asks which representation transfers best.
use super::backbone::Classifier;
use crate::data::{self, stl10, ImageSet};
use crate::error::{config_err, Error, Result};
use crate::viz::{self, ConfusionConfig, Figure, Table};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// How the CIFAR-10 images are fed to the STL-10 models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodConfig {
    /// Resize the CIFAR-10 images to this side first (bilinear, antialiased) — 96 to match
    /// models trained on STL-10's 96×96 images; `None` feeds 32×32 as they are.
    pub resize_to: Option<i64>,
    /// Images per forward pass. 256.
    pub batch_size: usize,
}

impl Default for OodConfig {
    /// Upscale to 96×96 (STL-10's size), batches of 256.
    fn default() -> Self {
        OodConfig { resize_to: Some(96), batch_size: 256 }
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
    /// CIFAR-10 class names (the confusion matrices' order).
    pub class_names: Vec<String>,
}

impl OodReport {
    /// Model × accuracy table (inline HTML; text with `{}`).
    pub fn table(&self) -> Table {
        Table::new(
            vec!["model".into(), "CIFAR-10 accuracy (OOD)".into()],
            self.results.iter().map(|r| vec![r.name.clone(), format!("{:.2}%", 100.0 * r.accuracy)]).collect(),
        )
        .caption("STL-10 models on the CIFAR-10 test set (monkey counted as frog)")
    }
    /// The confusion matrix of model `index`, drawn.
    ///
    /// # Errors
    /// [`Error::Config`] for an index out of range; drawing errors.
    pub fn confusion_figure(&self, index: usize) -> Result<Figure> {
        let r = self
            .results
            .get(index)
            .ok_or_else(|| config_err!("OodReport: model index {index} out of range (0..{})", self.results.len()))?;
        let cfg = ConfusionConfig { title: format!("{} on CIFAR-10 (OOD)", r.name), ..Default::default() };
        viz::confusion_matrix(&r.confusion, &self.class_names, &cfg)
    }
    /// evcxr display hook: the table.
    pub fn evcxr_display(&self) {
        self.table().evcxr_display()
    }
}

impl std::fmt::Display for OodReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.table())
    }
}

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
    let (p, l) = (stl_predictions.size(), cifar_labels.size());
    if p.len() != 1 || p != l {
        return Err(Error::shape("ood_accuracy predictions", format!("[N] like the labels {l:?}"), &p));
    }
    if p[0] == 0 {
        return Err(Error::Data("ood_accuracy: no prediction to score".into()));
    }
    let mapped = stl10::to_cifar10(&stl_predictions.to_device(Device::Cpu))?; // [N] CIFAR-10 classes
    let labels = cifar_labels.to_device(Device::Cpu).to_kind(Kind::Int64);
    let confusion = viz::confusion_counts(&mapped, &labels, 10)?; // [10, 10]
    let accuracy = mapped.eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]) as f64 / labels.size()[0] as f64;
    Ok((accuracy, confusion))
}

/// Scores STL-10 classifiers on a CIFAR-10 test set (S2.T6): each model's predictions, mapped
/// to CIFAR-10 classes with the monkey→frog rule, give an accuracy and a confusion matrix.
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
/// without 10 classes, or a model without 10 classes.
pub fn ood_evaluate(models: &[&Classifier], cifar_test: &ImageSet, cfg: &OodConfig) -> Result<OodReport> {
    cfg.validate()?;
    if models.is_empty() {
        return Err(config_err!("ood_evaluate: give at least one model"));
    }
    let labels = cifar_test
        .labels
        .as_ref()
        .ok_or_else(|| Error::Data(format!("ood_evaluate: '{}' has no labels", cifar_test.name)))?;
    if cifar_test.num_classes() != 10 {
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
        if m.num_classes() != 10 {
            return Err(Error::Data(format!(
                "ood_evaluate: model '{}' has {} classes; an STL-10 classifier has 10",
                m.name,
                m.num_classes()
            )));
        }
        let pred = m.predict(&set, cfg.batch_size)?; // [N] STL-10 classes
        let (accuracy, confusion) = ood_accuracy(&pred, labels)?;
        results.push(OodResult { name: m.name.clone(), accuracy, confusion });
    }
    Ok(OodReport { results, class_names: cifar_test.class_names.clone() })
}
