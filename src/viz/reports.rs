//! How `eval`'s results look: the [`Comparison`] of [`crate::eval::compare`], the label
//! fractions, OOD and logistic-probe reports as tables (inline HTML, aligned text with `{}`), and
//! their curves and confusion matrices.
//!
//! These are inherent methods (and `Display`) of types that `eval` defines; they live here because
//! drawing is this layer's work and `eval` must not import `viz`. The calls a notebook writes are
//! the same: `eval::compare(&rows, "…")?` as the last expression of a cell, `report.table()`,
//! `report.series()`, `ood_report.confusion_figure(i)?`, `curve.series(name)`.
use super::confusion::{confusion_matrix, ConfusionConfig};
use super::curves::Series;
use super::display::{Payload, Table};
use super::figure::Figure;
use crate::error::{config_err, Result};
use crate::eval::fractions::percent;
use crate::eval::{ClassMapping, Comparison, FractionsReport, LossCurve, OodReport, ProbeReport};
use std::path::Path;

/// `evcxr_display` (the table, inline) and `Display` (the table as aligned text) of report types
/// that have a `table()`.
macro_rules! shown_as_table {
    ($($report:ty),*) => {$(
        impl $report {
            /// evcxr display hook: the table.
            pub fn evcxr_display(&self) {
                self.table().evcxr_display()
            }
        }

        impl std::fmt::Display for $report {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.table())
            }
        }
    )*};
}

shown_as_table!(Comparison, FractionsReport, OodReport, ProbeReport);

impl Comparison {
    /// The comparison as a table: a "model" column, then one column per metric; a metric a
    /// model lacks shows as "–".
    pub fn table(&self) -> Table {
        let rows = self
            .models
            .iter()
            .map(|m| {
                std::iter::once(m.name.clone())
                    .chain(self.columns.iter().map(|c| {
                        m.metrics.iter().find(|x| &x.name == c).map(|x| x.cell()).unwrap_or_else(|| "–".into())
                    }))
                    .collect()
            })
            .collect();
        let header = std::iter::once("model".to_string()).chain(self.columns.iter().cloned()).collect();
        let table = Table::new(header, rows);
        if self.caption.is_empty() {
            table
        } else {
            table.caption(self.caption.clone())
        }
    }

    /// The table as an HTML fragment ([`Table::to_html`]).
    pub fn to_html(&self) -> String {
        self.table().to_html()
    }

    /// Saves the table by extension: `.html`, `.md`, `.csv` or `.txt` ([`Table::save`]).
    ///
    /// # Errors
    /// As [`Table::save`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.table().save(path)
    }

    /// The evcxr payload: `text/html`.
    pub fn payload(&self) -> Payload {
        self.table().payload()
    }
}

impl FractionsReport {
    /// Final test accuracy: one row per initialisation, one column per fraction.
    pub fn table(&self) -> Table {
        let mut fractions: Vec<f64> = Vec::new();
        let mut inits: Vec<String> = Vec::new();
        for r in &self.runs {
            if !fractions.contains(&r.fraction) {
                fractions.push(r.fraction);
            }
            if !inits.contains(&r.init) {
                inits.push(r.init.clone());
            }
        }
        let header = std::iter::once("init".to_string())
            .chain(fractions.iter().map(|f| format!("{}% labels", percent(*f))))
            .collect();
        let rows = inits
            .iter()
            .map(|i| {
                std::iter::once(i.clone())
                    .chain(fractions.iter().map(|f| {
                        self.runs
                            .iter()
                            .find(|r| &r.init == i && r.fraction == *f)
                            .map(|r| format!("{:.2}%", 100.0 * r.final_accuracy()))
                            .unwrap_or_else(|| "–".into())
                    }))
                    .collect()
            })
            .collect();
        Table::new(header, rows).caption("test accuracy by label fraction")
    }
    /// One curve per run (test accuracy by epoch, epochs counted from 1), for
    /// `viz::line_plot(&report.series(), ...)`.
    pub fn series(&self) -> Vec<Series> {
        self.runs
            .iter()
            .map(|r| {
                Series::new(r.label(), (1..=r.test_accuracy.len()).map(|e| e as f64).collect(), r.test_accuracy.clone())
            })
            .collect()
    }
}

impl OodReport {
    /// Model × accuracy table (inline HTML; text with `{}`).
    pub fn table(&self) -> Table {
        let caption = match self.mapping {
            ClassMapping::Stl10ToCifar10 => format!("STL-10 models on {} (monkey counted as frog)", self.set_name),
            ClassMapping::Identity => format!("Out-of-distribution accuracy on {}", self.set_name),
        };
        Table::new(
            vec!["model".into(), "OOD accuracy".into()],
            self.results.iter().map(|r| vec![r.name.clone(), format!("{:.2}%", 100.0 * r.accuracy)]).collect(),
        )
        .caption(caption)
    }
    /// The confusion matrix of model `index`, drawn.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) for an index out of range; drawing errors.
    pub fn confusion_figure(&self, index: usize) -> Result<Figure> {
        let r = self
            .results
            .get(index)
            .ok_or_else(|| config_err!("OodReport: model index {index} out of range (0..{})", self.results.len()))?;
        let cfg = ConfusionConfig { title: format!("{} out of distribution", r.name), ..Default::default() };
        confusion_matrix(&r.confusion, &self.class_names, &cfg)
    }
}

impl ProbeReport {
    /// The per-class report as a table (inline HTML in a notebook, text with `{}`).
    pub fn table(&self) -> Table {
        let mut rows: Vec<Vec<String>> = self
            .per_class
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    format!("{:.3}", c.precision),
                    format!("{:.3}", c.recall),
                    format!("{:.3}", c.f1),
                    c.support.to_string(),
                ]
            })
            .collect();
        rows.push(vec![
            "macro avg".into(),
            String::new(),
            String::new(),
            format!("{:.3}", self.macro_f1()),
            self.n_test.to_string(),
        ]);
        Table::new(["class", "precision", "recall", "f1", "support"].iter().map(|s| s.to_string()).collect(), rows)
            .caption(format!(
                "logistic probe ({:?}): test accuracy {:.4} (train {:.4}), {} train / {} test, {} L-BFGS iterations{}",
                self.model.multiclass,
                self.accuracy,
                self.train_accuracy,
                self.n_train,
                self.n_test,
                self.model.iterations,
                if self.model.converged { "" } else { " (not converged: raise max_iter)" }
            ))
    }
}

impl LossCurve {
    /// The curve as a [`Series`] named `name`, for [`super::line_plot`] or
    /// [`super::loss_landscape_1d`].
    pub fn series(&self, name: impl Into<String>) -> Series {
        Series::new(name, self.alphas.clone(), self.losses.clone())
    }
}
