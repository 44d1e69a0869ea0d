//! What a run records: one [`StepRecord`] per optimizer step and one [`EpochRecord`] per epoch,
//! saved as JSON lines (`history.jsonl`) and appended while training runs, so a notebook can
//! reload the file and plot a run that a command-line trainer is still doing (B8).
//!
//! Each line is one JSON object with a `"type"` of `"step"` or `"epoch"`:
//! `{"type":"step","step":12,"epoch":0,"loss":5.1,"lr":0.03,"z_std":0.084,"images_per_sec":812.5,"metrics":{}}`.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Global step (0-based).
    pub step: usize,
    /// Epoch of the step (0-based).
    pub epoch: usize,
    /// Training loss of the batch.
    pub loss: f64,
    /// Base learning rate used for the step.
    pub lr: f64,
    /// Std of the ℓ2-normalised projections z over the batch, averaged over dimensions
    /// (collapse monitor; ≈ 1/√d when healthy, → 0 when collapsed). `None` if not reported.
    #[serde(default)]
    pub z_std: Option<f64>,
    /// Training throughput (images per second, augmentation included), averaged over the step's
    /// log window: the host does not wait for each step's kernels, so a step's own wall time is
    /// only its launch time; the window's time ends with the read that waits for them.
    pub images_per_sec: f64,
    /// Other numbers the method or trainer reported (e.g. "tau", "accuracy", "grad_norm"). Only
    /// finite values: the engine leaves a NaN or infinite metric out (JSON has no NaN), and the
    /// reader drops the `null`s that older files hold for them.
    #[serde(default, deserialize_with = "finite_metrics")]
    pub metrics: BTreeMap<String, f64>,
}

/// Reads a metrics map, leaving out `null` values (the NaN of an older writer).
fn finite_metrics<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<BTreeMap<String, f64>, D::Error> {
    let raw: BTreeMap<String, Option<f64>> = Deserialize::deserialize(d)?;
    Ok(raw.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
}

/// One epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub mean_loss: f64,
    /// Online kNN top-1 accuracy of the backbone's features, when asked for (B7).
    #[serde(default)]
    pub knn_accuracy: Option<f64>,
    /// Training accuracy (supervised training).
    #[serde(default)]
    pub train_accuracy: Option<f64>,
    /// Test loss (supervised training).
    #[serde(default)]
    pub test_loss: Option<f64>,
    /// Test accuracy (supervised training).
    #[serde(default)]
    pub test_accuracy: Option<f64>,
    /// Wall-clock seconds spent in the epoch (summed over resumed sessions).
    pub seconds: f64,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    /// A step.
    Step(StepRecord),
    /// An epoch summary.
    Epoch(EpochRecord),
}

/// The record of a run: steps and epochs in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// One entry per optimizer step.
    pub steps: Vec<StepRecord>,
    /// One entry per finished epoch.
    pub epochs: Vec<EpochRecord>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }
    /// Whether no step was recorded.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.epochs.is_empty()
    }
    /// Number of steps recorded.
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }
    /// The last step record.
    pub fn last_step(&self) -> Option<&StepRecord> {
        self.steps.last()
    }
    /// The last epoch record.
    pub fn last_epoch(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }
    /// `(step, loss)` per step.
    pub fn losses(&self) -> Vec<(usize, f64)> {
        self.steps.iter().map(|s| (s.step, s.loss)).collect()
    }
    /// `(step, lr)` per step.
    pub fn lrs(&self) -> Vec<(usize, f64)> {
        self.steps.iter().map(|s| (s.step, s.lr)).collect()
    }
    /// `(step, std of ℓ2-normalised z)` for the steps that reported it.
    pub fn z_stds(&self) -> Vec<(usize, f64)> {
        self.steps.iter().filter_map(|s| s.z_std.map(|z| (s.step, z))).collect()
    }
    /// `(step, images/s)` per step.
    pub fn throughput(&self) -> Vec<(usize, f64)> {
        self.steps.iter().map(|s| (s.step, s.images_per_sec)).collect()
    }
    /// `(step, value)` of a named step metric (e.g. "tau").
    pub fn metric(&self, name: &str) -> Vec<(usize, f64)> {
        self.steps.iter().filter_map(|s| s.metrics.get(name).map(|&v| (s.step, v))).collect()
    }
    /// Names of all step metrics that appear.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.steps.iter().flat_map(|s| s.metrics.keys().cloned()).collect();
        names.sort();
        names.dedup();
        names
    }
    /// `(epoch, mean loss)` per epoch.
    pub fn epoch_losses(&self) -> Vec<(usize, f64)> {
        self.epochs.iter().map(|e| (e.epoch, e.mean_loss)).collect()
    }
    /// `(epoch, kNN accuracy)` for the epochs that measured it.
    pub fn knn_accuracies(&self) -> Vec<(usize, f64)> {
        self.epochs.iter().filter_map(|e| e.knn_accuracy.map(|a| (e.epoch, a))).collect()
    }
    /// `(epoch, train accuracy)` for the epochs that measured it.
    pub fn train_accuracies(&self) -> Vec<(usize, f64)> {
        self.epochs.iter().filter_map(|e| e.train_accuracy.map(|a| (e.epoch, a))).collect()
    }
    /// `(epoch, test loss)` for the epochs that measured it.
    pub fn test_losses(&self) -> Vec<(usize, f64)> {
        self.epochs.iter().filter_map(|e| e.test_loss.map(|a| (e.epoch, a))).collect()
    }
    /// `(epoch, test accuracy)` for the epochs that measured it.
    pub fn test_accuracies(&self) -> Vec<(usize, f64)> {
        self.epochs.iter().filter_map(|e| e.test_accuracy.map(|a| (e.epoch, a))).collect()
    }
    /// Total wall-clock seconds of the finished epochs.
    pub fn seconds(&self) -> f64 {
        self.epochs.iter().map(|e| e.seconds).sum()
    }

    /// All records in order of occurrence (each epoch after its last step).
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.steps.len() + self.epochs.len());
        let mut epochs = self.epochs.iter().peekable();
        for s in &self.steps {
            while let Some(e) = epochs.next_if(|e| e.epoch < s.epoch) {
                out.push(Record::Epoch(e.clone()));
            }
            out.push(Record::Step(s.clone()));
        }
        out.extend(epochs.map(|e| Record::Epoch(e.clone())));
        out
    }

    /// Adds one record.
    pub fn push(&mut self, record: Record) {
        match record {
            Record::Step(s) => self.steps.push(s),
            Record::Epoch(e) => self.epochs.push(e),
        }
    }

    /// The whole history as JSON lines.
    ///
    /// # Errors
    /// [`Error::Json`] if a record cannot be serialised. (A non-finite number would be written as
    /// `null`; the engine never records one.)
    pub fn to_jsonl(&self) -> Result<String> {
        let mut out = String::new();
        for r in self.records() {
            out.push_str(&serde_json::to_string(&r)?);
            out.push('\n');
        }
        Ok(out)
    }

    /// Parses JSON lines; blank lines are skipped, and so is an unfinished last line (a file
    /// being appended while it is read).
    ///
    /// # Errors
    /// [`Error::Data`] naming the line that is not a record.
    pub fn from_jsonl(text: &str) -> Result<History> {
        let mut h = History::new();
        let lines: Vec<&str> = text.lines().collect();
        let complete = text.ends_with('\n');
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(line) {
                Ok(r) => h.push(r),
                Err(_) if i + 1 == lines.len() && !complete => break,
                Err(e) => {
                    return Err(Error::Data(format!("history line {} is not a step or epoch record: {e}", i + 1)))
                }
            }
        }
        Ok(h)
    }

    /// Writes the history to `path` as JSON lines, atomically (temporary file + rename).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn save_jsonl(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::files::write_file(path.as_ref(), self.to_jsonl()?.as_bytes())
    }

    // `plot` and `plot_z_std` (figures of the run) are in `viz`, which renders.

    /// Reads a history written by [`History::save_jsonl`] or appended by a running trainer
    /// (`<out_dir>/history.jsonl`): what a notebook calls to watch a run.
    ///
    /// # Errors
    /// [`Error::Data`] when the file is missing or a line is not a record.
    pub fn load_jsonl(path: impl AsRef<Path>) -> Result<History> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Data(format!(
                "cannot read the history {}: {e}; is the path the run's out_dir/history.jsonl?",
                path.display()
            ))
        })?;
        History::from_jsonl(&text)
    }
}

/// Appends records to a JSON-lines file as training goes (buffered; flushed on request).
#[derive(Debug)]
pub(crate) struct JsonlWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
}

impl JsonlWriter {
    /// Rewrites `path` with `history` (atomically), then opens it for appending.
    pub(crate) fn start(path: &Path, history: &History) -> Result<JsonlWriter> {
        history.save_jsonl(path)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(JsonlWriter { file: std::io::BufWriter::new(file), path: path.to_path_buf() })
    }
    pub(crate) fn append(&mut self, record: &Record) -> Result<()> {
        let line = serde_json::to_vec(record)?;
        self.file.write_all(&line).and_then(|()| self.file.write_all(b"\n")).map_err(|e| self.error(e))
    }
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| self.error(e))
    }
    fn error(&self, e: std::io::Error) -> Error {
        crate::files::write_error(&self.path, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_metrics_of_older_files_read_back_as_absent() {
        let line = r#"{"type":"step","step":3,"epoch":0,"loss":1.5,"lr":0.1,"z_std":null,"images_per_sec":9.0,"metrics":{"grad_norm":null,"tau":0.99}}"#;
        let h = History::from_jsonl(&format!("{line}\n")).unwrap();
        assert_eq!(h.steps[0].metrics.len(), 1);
        assert_eq!(h.steps[0].metrics["tau"], 0.99);
        let again = History::from_jsonl(&h.to_jsonl().unwrap()).unwrap();
        assert_eq!(again, h);
    }
}
