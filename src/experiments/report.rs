//! The report of a `selfsup-results` run: what ran ([`Experiment`]), on what, with which
//! verdicts ([`Report`]), as Markdown (`results.md`) and JSON (`results.json`).
use super::verdicts::{Conclusion, ZStd};
use crate::error::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One row of the experiments table: a training run or a probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    /// Short id ("byol", "byol_finetune", "probe_random", …).
    pub id: String,
    /// What it is, in words.
    pub what: String,
    /// Output folder (training runs only).
    pub dir: Option<String>,
    /// Planned epochs (training runs only).
    pub epochs: Option<usize>,
    /// Batch size (training runs only).
    pub batch_size: Option<usize>,
    /// Optimizer steps of the whole run.
    pub steps: Option<usize>,
    /// A checkpoint was found and loaded.
    pub resumed: bool,
    /// Steps trained by this invocation (0 when a finished run was loaded).
    pub steps_this_run: usize,
    /// Training seconds recorded in the run's history (all sessions together).
    pub train_seconds: Option<f64>,
    /// Wall-clock seconds of this invocation for this experiment.
    pub wall_seconds: f64,
    /// Test accuracy (probe or classifier), when it has one.
    pub test_accuracy: Option<f64>,
}

impl Experiment {
    /// A probe: no folder, no training, its wall time and test accuracy.
    pub fn probe(id: &str, what: &str, wall_seconds: f64, test_accuracy: f64) -> Experiment {
        Experiment {
            id: id.into(),
            what: what.into(),
            dir: None,
            epochs: None,
            batch_size: None,
            steps: None,
            resumed: false,
            steps_this_run: 0,
            train_seconds: None,
            wall_seconds,
            test_accuracy: Some(test_accuracy),
        }
    }

    /// The "resumed" cell: "—" for a probe, else whether and how a checkpoint was continued.
    fn resumed_text(&self) -> String {
        if self.dir.is_none() {
            "—".to_string()
        } else if self.resumed && self.steps_this_run == 0 {
            "yes (loaded, not retrained)".into()
        } else if self.resumed {
            format!("yes (continued, {} steps)", self.steps_this_run)
        } else {
            "no".into()
        }
    }
}

/// Everything a run found, as `results.json` holds it; [`Report::markdown`] is `results.md`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// "selfsup-results".
    pub tool: String,
    /// The scale's name.
    pub scale: String,
    /// `--epochs-factor`.
    pub epochs_factor: f64,
    /// The factor is not 1: the report says these are not the scale's numbers.
    pub shortened: bool,
    /// The machine, in words ([`super::Machine`] or `--machine`).
    pub machine: String,
    /// The device and why it was chosen.
    pub device: String,
    /// "YYYY-MM-DD HH:MM UTC".
    pub date_utc: String,
    /// [`super::git_commit`].
    pub git_commit: String,
    /// The data source, in words.
    pub data: String,
    /// Unlabelled images (pre-training).
    pub n_unlabeled: usize,
    /// Labelled train images.
    pub n_train: usize,
    /// Test images (the n of every verdict).
    pub n_test: usize,
    /// Side of the images in pixels.
    pub image_size: i64,
    /// The backbone, in words.
    pub backbone: String,
    /// SSL pre-training epochs.
    pub ssl_epochs: usize,
    /// Supervised (scratch and fine-tuning) epochs.
    pub supervised_epochs: usize,
    /// The scale's own (SSL, supervised) epochs, before `--epochs-factor`.
    pub scale_epochs: (usize, usize),
    /// `--seed`.
    pub seed: u64,
    /// Wall-clock seconds of the whole invocation.
    pub total_wall_seconds: f64,
    /// Optimizers, rates and heads, in words.
    pub recipes: String,
    /// Every training run and probe, in the order they ran.
    pub experiments: Vec<Experiment>,
    /// BYOL's collapse check, when its history recorded std(z).
    pub byol_z_std: Option<ZStd>,
    /// The seeds' conclusions and their verdicts.
    pub conclusions: Vec<Conclusion>,
}

/// The test-accuracy table's rows: name, probe id, fine-tuning id ("" for none).
const ACCURACY_ROWS: [(&str, &str, &str); 5] = [
    ("random weights", "probe_random", ""),
    ("supervised from scratch", "probe_supervised", "supervised_scratch"),
    ("BYOL", "probe_byol", "byol_finetune"),
    ("SimCLR", "probe_simclr", "simclr_finetune"),
    ("MoCo v2", "probe_moco_v2", "moco_v2_finetune"),
];

impl Report {
    /// The test accuracy of experiment `id`, when it ran and has one.
    pub fn accuracy(&self, id: &str) -> Option<f64> {
        accuracy_of(&self.experiments, id)
    }

    /// `results.md`: the header, the experiments, the accuracy table, BYOL's std(z) and the
    /// conclusions.
    pub fn markdown(&self) -> String {
        let mut md = Markdown::default();
        self.header(&mut md);
        self.experiments_table(&mut md);
        self.accuracy_table(&mut md);
        self.z_std_section(&mut md);
        self.conclusions_section(&mut md);
        md.0
    }

    /// Writes `<out>/results.md` and `<out>/results.json`; returns their paths.
    ///
    /// # Errors
    /// The file system's.
    pub fn write(&self, out: &Path) -> Result<(PathBuf, PathBuf)> {
        let (md, json) = (out.join("results.md"), out.join("results.json"));
        std::fs::write(&md, self.markdown())?;
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)?;
        Ok((md, json))
    }

    fn header(&self, md: &mut Markdown) {
        md.line(format!("## selfsup-results: {} scale, {}", self.scale, self.date_utc));
        md.line("");
        if self.shortened {
            md.line(format!(
                "**Shortened run: every epoch count × {f} (`--epochs-factor {f}`, at least 1 epoch each)**: SSL pre-training \
                 {} instead of {}, supervised from scratch and fine-tuning {} instead of {}. These are not the {} scale's numbers.",
                epochs(self.ssl_epochs),
                epochs(self.scale_epochs.0),
                epochs(self.supervised_epochs),
                epochs(self.scale_epochs.1),
                self.scale,
                f = self.epochs_factor,
            ));
            md.line("");
        }
        md.line(format!("- machine: {}", self.machine));
        md.line(format!("- device: {}", self.device));
        md.line(format!("- date: {}", self.date_utc));
        md.line(format!("- git commit: {}", self.git_commit));
        md.line(format!(
            "- scale: {}; epochs: SSL pre-training {}, supervised from scratch and fine-tuning {} each{}",
            self.scale,
            self.ssl_epochs,
            self.supervised_epochs,
            if self.shortened { format!(" (× {} of the scale's)", self.epochs_factor) } else { String::new() }
        ));
        md.line(format!("- {}", self.data));
        md.line(format!(
            "- images: {} unlabelled (pre-training), {} labelled train, {} test, {}×{} px; backbone {}",
            self.n_unlabeled, self.n_train, self.n_test, self.image_size, self.image_size, self.backbone
        ));
        md.line(format!("- recipes: {}", self.recipes));
        md.line(format!(
            "- seed: {}; total wall time: {:.0} s ({:.1} min)",
            self.seed,
            self.total_wall_seconds,
            self.total_wall_seconds / 60.0
        ));
        md.line("");
    }

    fn experiments_table(&self, md: &mut Markdown) {
        md.line("### Experiments");
        md.line("");
        md.line("| experiment | what | epochs | batch | steps | training time (s, all sessions) | wall time this run (s) | resumed | test accuracy |");
        md.line("|---|---|---|---|---|---|---|---|---|");
        let count = |v: Option<usize>| v.map(|v| v.to_string()).unwrap_or_else(|| "—".into());
        for e in &self.experiments {
            md.line(format!(
                "| `{}` | {} | {} | {} | {} | {} | {:.1} | {} | {} |",
                e.id,
                e.what,
                count(e.epochs),
                count(e.batch_size),
                count(e.steps),
                fmt_opt(e.train_seconds, 1),
                e.wall_seconds,
                e.resumed_text(),
                fmt_opt(e.test_accuracy, 3)
            ));
        }
        md.line("");
    }

    fn accuracy_table(&self, md: &mut Markdown) {
        md.line(format!("### Test accuracy (n = {} test images)", self.n_test));
        md.line("");
        md.line("| backbone | logistic probe on frozen avg-pool embeddings | fine-tuned (same epochs as scratch) |");
        md.line("|---|---|---|");
        for (name, probe, fine_tuned) in ACCURACY_ROWS {
            let ft = match fine_tuned {
                "" => "—".to_string(),
                "supervised_scratch" => format!("{} (the scratch baseline)", fmt_opt(self.accuracy(fine_tuned), 3)),
                id => fmt_opt(self.accuracy(id), 3),
            };
            md.line(format!("| {name} | {} | {ft} |", fmt_opt(self.accuracy(probe), 3)));
        }
        md.line("");
    }

    fn z_std_section(&self, md: &mut Markdown) {
        let Some(z) = &self.byol_z_std else { return };
        md.line("### BYOL: std of ℓ2-normalised z during pre-training (collapse check)");
        md.line("");
        md.line(format!(
            "first {:.4}, min {:.4}, last {:.4}; healthy ≈ 1/√d = {:.4} (d = {}); collapsed ≈ 0; threshold for \"away from 0\": 0.25/√d = {:.4}",
            z.first, z.min, z.last, z.healthy, z.dim, z.threshold
        ));
        md.line("");
    }

    fn conclusions_section(&self, md: &mut Markdown) {
        md.line("### Conclusions of the seeds");
        md.line("");
        md.line(format!(
            "Rule: accuracies a and b on n = {} test images differ when |a − b| > 2·se, se = √((a(1−a) + b(1−b))/n); \
             otherwise \"not distinguishable\".",
            self.n_test
        ));
        md.line("");
        for c in &self.conclusions {
            md.line(&c.line);
        }
    }
}

/// The test accuracy of experiment `id` among `experiments`.
pub(crate) fn accuracy_of(experiments: &[Experiment], id: &str) -> Option<f64> {
    experiments.iter().find(|e| e.id == id).and_then(|e| e.test_accuracy)
}

/// A Markdown text built line by line.
#[derive(Default)]
struct Markdown(String);

impl Markdown {
    fn line(&mut self, line: impl AsRef<str>) {
        self.0.push_str(line.as_ref());
        self.0.push('\n');
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "—".into())
}

fn epochs(n: usize) -> String {
    format!("{n} epoch{}", if n == 1 { "" } else { "s" })
}
