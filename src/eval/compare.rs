//! One table of named models × metrics (S0.11, S2.T6): the seminar's "MoCo probe 84 % /
//! from scratch 76 % / ImageNet" comparison and the homework's five-model OOD table, rendered
//! inline as HTML (the last expression of a cell) and as aligned text with `{}` — `viz` draws the
//! [`Comparison`] this module builds.
use super::backbone::Classifier;
use crate::data::ImageSet;
use crate::error::{config_err, Error, Result};
use serde::{Deserialize, Serialize};

/// One number of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Column name ("CIFAR-10 test accuracy", "ε-sharpness").
    pub name: String,
    /// The value.
    pub value: f64,
    /// Show as a percentage (`0.8412` → `84.12%`).
    pub percent: bool,
}

impl Metric {
    /// A plain number, shown with 4 significant decimals.
    pub fn new(name: impl Into<String>, value: f64) -> Metric {
        Metric { name: name.into(), value, percent: false }
    }
    /// An accuracy or any share in [0, 1], shown as a percentage.
    pub fn accuracy(name: impl Into<String>, value: f64) -> Metric {
        Metric { name: name.into(), value, percent: true }
    }
    /// The value as a table cell: "84.12%", "12.5000", "3.000e-5".
    pub fn cell(&self) -> String {
        if !self.value.is_finite() {
            return format!("{}", self.value);
        }
        if self.percent {
            format!("{:.2}%", 100.0 * self.value)
        } else if self.value != 0.0 && (self.value.abs() >= 1e4 || self.value.abs() < 1e-3) {
            format!("{:.3e}", self.value)
        } else {
            format!("{:.4}", self.value)
        }
    }
}

/// A model's name and its metrics (a row of the table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    /// Row name ("SimCLR + probe").
    pub name: String,
    /// Its numbers; columns are the union of all models' metric names, in first-seen order.
    pub metrics: Vec<Metric>,
}

impl ModelMetrics {
    /// A model with no metric yet.
    pub fn new(name: impl Into<String>) -> ModelMetrics {
        ModelMetrics { name: name.into(), metrics: Vec::new() }
    }
    /// The same model with one more metric.
    pub fn with(mut self, metric: Metric) -> ModelMetrics {
        self.metrics.push(metric);
        self
    }
    /// The same model with an accuracy (shown as a percentage).
    pub fn accuracy(self, name: impl Into<String>, value: f64) -> ModelMetrics {
        self.with(Metric::accuracy(name, value))
    }
    /// The same model with a plain number.
    pub fn value(self, name: impl Into<String>, value: f64) -> ModelMetrics {
        self.with(Metric::new(name, value))
    }
}

/// [`compare`]'s result: the models in the order given and the metric columns (every model's
/// metric names, in first-seen order). It renders inline as an HTML table (the last expression
/// of a cell) and as aligned text with `{}`; the drawing (`table()`, `to_html()`, `save`,
/// `evcxr_display`) is in `viz`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The rows, checked: every model named, no metric twice in one model.
    pub models: Vec<ModelMetrics>,
    /// The metric columns, in first-seen order.
    pub columns: Vec<String>,
    /// Shown above the table (empty: none).
    pub caption: String,
}

/// The table of `models` × metrics: one row per model, one column per metric name (first-seen
/// order); a metric a model lacks shows as "–".
///
/// ```
/// use selfsup::eval::{compare, ModelMetrics};
/// let table = compare(&[
///     ModelMetrics::new("MoCo v2 + probe").accuracy("CIFAR-10 accuracy", 0.84),
///     ModelMetrics::new("from scratch").accuracy("CIFAR-10 accuracy", 0.76),
/// ], "S0.11: linear evaluation")?;
/// assert!(table.to_string().contains("84.00%"));
/// # Ok::<(), selfsup::Error>(())
/// ```
///
/// # Errors
/// [`Error::Config`] for no model, an empty name, or a metric given twice for one model.
pub fn compare(models: &[ModelMetrics], caption: &str) -> Result<Comparison> {
    if models.is_empty() {
        return Err(config_err!("compare: give at least one model"));
    }
    let mut columns: Vec<String> = Vec::new();
    for m in models {
        if m.name.trim().is_empty() {
            return Err(config_err!("compare: every model needs a name"));
        }
        for (i, metric) in m.metrics.iter().enumerate() {
            if m.metrics[..i].iter().any(|o| o.name == metric.name) {
                return Err(config_err!("compare: model '{}' has metric '{}' twice", m.name, metric.name));
            }
            if !columns.contains(&metric.name) {
                columns.push(metric.name.clone());
            }
        }
    }
    Ok(Comparison { models: models.to_vec(), columns, caption: caption.to_string() })
}

/// Accuracy of every classifier on every named labelled set, as one table (S0.11: probe vs
/// scratch vs ImageNet on the test set; add a CIFAR-10 set for the OOD column of S2.T6 — for the
/// STL-10 → CIFAR-10 class mapping use [`crate::eval::ood_evaluate`]).
///
/// # Errors
/// [`Error::Config`] for no model or no set; [`Error::Data`] for an unlabelled set or one whose
/// classes differ from a model's; the models' prediction errors.
pub fn evaluate_models(models: &[&Classifier], sets: &[(&str, &ImageSet)]) -> Result<Comparison> {
    if models.is_empty() || sets.is_empty() {
        return Err(config_err!("evaluate_models: give at least one model and one set"));
    }
    let mut rows = Vec::with_capacity(models.len());
    for m in models {
        let mut row = ModelMetrics::new(m.name.clone());
        for (name, set) in sets {
            if set.num_classes() != m.num_classes() {
                return Err(Error::Data(format!(
                    "evaluate_models: '{}' has {} classes but model '{}' predicts {}",
                    set.name,
                    set.num_classes(),
                    m.name,
                    m.num_classes()
                )));
            }
            row = row.accuracy(format!("{name} accuracy"), m.accuracy(set)?);
        }
        rows.push(row);
    }
    compare(&rows, "accuracy of each model")
}

/// Whether one accuracy is above another, by the rule every notebook and `selfsup-results`
/// use: a difference counts only beyond two standard errors of the difference of two
/// accuracies measured on `n` test images each, 2·√((a(1−a) + b(1−b))/n) — below that, a rerun
/// with another seed could flip it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// `a` is above `b` by more than two standard errors.
    Higher,
    /// `a` is below `b` by more than two standard errors.
    Lower,
    /// Within two standard errors.
    NotDistinguishable,
}

impl Verdict {
    /// "yes", "no" or "not distinguishable on this many test images" — the answer to "is a above b?".
    pub fn yes_no(self) -> &'static str {
        match self {
            Verdict::Higher => "yes",
            Verdict::Lower => "no",
            Verdict::NotDistinguishable => "not distinguishable on this many test images",
        }
    }
    /// "holds", "does not hold" or "not distinguishable" — for a claim "a > b".
    pub fn claim(self) -> &'static str {
        match self {
            Verdict::Higher => "holds",
            Verdict::Lower => "does not hold",
            Verdict::NotDistinguishable => "not distinguishable",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.yes_no())
    }
}

/// Two accuracies compared by [`Verdict`]'s rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AccuracyComparison {
    /// The first accuracy, in [0, 1].
    pub a: f64,
    /// The second accuracy, in [0, 1].
    pub b: f64,
    /// Test images behind each.
    pub n: usize,
    /// Two standard errors of `a − b`.
    pub two_se: f64,
    /// Is `a` above `b`?
    pub verdict: Verdict,
}

/// Is accuracy `a` above accuracy `b`, both measured on `n` test images? See [`Verdict`].
///
/// ```
/// use selfsup::eval::{compare_accuracies, Verdict};
/// // 60 % vs 50 % on 800 images: 2·se ≈ 4.9 points, so the 10 points count.
/// assert_eq!(compare_accuracies(0.60, 0.50, 800).verdict, Verdict::Higher);
/// // The same on 100 images: 2·se ≈ 13.9 points.
/// assert_eq!(compare_accuracies(0.60, 0.50, 100).verdict, Verdict::NotDistinguishable);
/// println!("{}", compare_accuracies(0.60, 0.50, 800).verdict); // "yes"
/// ```
pub fn compare_accuracies(a: f64, b: f64, n: usize) -> AccuracyComparison {
    let se = ((a * (1.0 - a) + b * (1.0 - b)) / n.max(1) as f64).sqrt();
    let verdict = if a - b > 2.0 * se {
        Verdict::Higher
    } else if b - a > 2.0 * se {
        Verdict::Lower
    } else {
        Verdict::NotDistinguishable
    };
    AccuracyComparison { a, b, n, two_se: 2.0 * se, verdict }
}
