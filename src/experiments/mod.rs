//! The seeds' experiments end to end, and which of their conclusions hold (issue 7): what
//! `selfsup-results` runs, and the verdict tables the notebooks print.
//!
//! - [`verdicts`](Verdicts): the claim "accuracy a > accuracy b" on n test images by the
//!   two-standard-error rule of [`crate::eval::compare_accuracies`] ([`Comparison`]), the one
//!   verdict of several claims ([`overall`]), a notebook's verdict table ([`Verdicts`]), BYOL's
//!   collapse check ([`ZStd`]) and the seeds' conclusions ([`Conclusion`], [`conclusions`]);
//! - the run ([`run`] with a [`ResultsConfig`]): on the data [`crate::data::Source::stl10_or_synthetic`]
//!   picks, a supervised ResNet-18 from scratch (S2.T0); BYOL, SimCLR and MoCo v2 pre-training
//!   (S2.T1, S2.T2, S2.B2); logistic probes on the frozen embeddings of those and of random
//!   weights (S1.6, S1.7, S2.T4); fine-tuning of each SSL backbone (S2.T5). Every training
//!   checkpoints into its own folder, so running again loads the finished ones;
//! - the [`Report`] (`results.md` from [`Report::markdown`], `results.json`), with where and when
//!   it ran: [`Machine`], [`git_commit`], [`date_utc`].
//!
//! Two accuracies a, b on n test images differ when |a − b| > 2·se with
//! se = √((a(1−a) + b(1−b))/n); BYOL's std(z) is "away from 0" when its last value exceeds 0.25/√d.
//!
//! ## A verdict table in a notebook (01–03)
//!
//! One row per claim "a > b": a label ("<subject> vs <baseline>"), the two accuracies, the number
//! of test images. The last expression of a cell renders the table inline, with each row's
//! verdict and the overall one in the caption; `println!("{v}")` prints it as text.
//!
//! ```
//! use selfsup::experiments::Verdicts;
//! let n = 800; // test images
//! let v = Verdicts::new("probes on frozen embeddings")
//!     .compare("BYOL vs random weights", 0.62, 0.41, n)
//!     .compare("SimCLR vs random weights", 0.58, 0.41, n)
//!     .compare("MoCo v2 vs random weights", 0.43, 0.41, n);
//! assert_eq!(v.overall(), "holds for BYOL, SimCLR; not distinguishable for MoCo v2");
//! assert_eq!(v.holding(), 2);
//! println!("{v}"); // in a notebook, end the cell with `v` to show the table inline
//! ```
//!
//! The same from a list of rows: `Verdicts::from_rows("fine-tuning vs scratch", [("BYOL vs
//! scratch", byol_ft, scratch, n), …])`. One comparison alone: [`Comparison::new`].
mod machine;
mod plan;
mod report;
mod run;
mod verdicts;

pub use machine::{date_utc, date_utc_at, git_commit, Machine};
pub use report::{Experiment, Report};
pub use run::{conclusions, run, DeviceChoice, ResultsConfig};
pub use verdicts::{comparisons_text, overall, Comparison, Conclusion, Verdicts, ZStd};
