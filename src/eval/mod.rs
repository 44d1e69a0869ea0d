//! Evaluation: how good is a representation, and how does it behave?
//!
//! The seeds judge a pre-trained encoder in several ways, and this module gives each one call:
//!
//! | question | call | spec |
//! |---|---|---|
//! | embeddings of a whole set at a named stage | [`extract_features`] → [`Embeddings`] | S1.4 |
//! | fast linear evaluation on embeddings (sklearn-style logistic regression) | [`logistic_probe`] | S1.7 |
//! | weighted kNN (InstDisc / MoCo demo), offline and as the trainer's monitor | [`knn_predict`], [`knn_accuracy`] | B7 |
//! | the seeds' linear probe: frozen backbone + trained `fc`, with augmentation | [`linear_probe`](fn@linear_probe) | S0.8, S4.5 |
//! | fine-tuning with separate learning rates for backbone and head | [`fine_tune`] | S2.T5 |
//! | 1 % / 10 % / 100 % of the labels: scratch vs ImageNet vs SSL | [`label_fractions`] | S3.2, S3.3, S3.7 |
//! | random-weights and ImageNet-weights baselines | [`Backbone::random`], [`Backbone::from_torchvision`] | S1.6, S0.10 |
//! | STL-10 models on CIFAR-10 (monkey → frog) | [`ood_evaluate`] | S2.T6 |
//! | how wide is the optimum: ε-sharpness, filter-normalised loss curves, top Hessian eigenvalue | [`width`] | S2.B1 |
//! | how much of an activation map (or Grad-CAM) lands on the object | [`energy_in_mask`], [`ObjectEnergy`] | S0.7, B6 |
//! | one table of models × metrics | [`compare`](fn@compare), [`evaluate_models`] | S0.11, S2.T6 |
//!
//! Everything a notebook keeps between cells is owned ([`Backbone`], [`Classifier`],
//! [`Embeddings`]): no value borrows from a method, so a cell can drop the method and keep the
//! classifier.
//!
//! ```no_run
//! use selfsup::prelude::*;
//! use selfsup::eval::{self, Backbone, FeatureConfig, LogisticConfig};
//! # fn demo(simclr: &SimClr) -> selfsup::Result<()> {
//! let test = data::synthetic::load(Split::Test, &SyntheticConfig::tiny())?;
//! let emb = eval::extract_features(simclr.backbone(), &test, &FeatureConfig::default(), Device::Cpu)?;
//! let report = eval::logistic_probe(&emb, &LogisticConfig::default())?;
//! println!("{report}"); // accuracy and per-class precision / recall
//! let random = Backbone::random(simclr.backbone().config(), 0, Device::Cpu)?;
//! # Ok(()) }
//! ```
pub mod backbone;
pub mod baselines;
pub mod compare;
mod confusion;
mod draws;
pub mod features;
pub mod finetune;
pub mod fractions;
pub mod knn;
pub mod linear_probe;
pub mod localization;
pub mod logistic;
pub mod ood;
pub mod width;

pub use backbone::{Backbone, Classifier};
pub use baselines::{imagenet_backbone, random_backbone};
pub use compare::{
    compare, compare_accuracies, evaluate_models, AccuracyComparison, Comparison, Metric, ModelMetrics, Verdict,
};
pub use confusion::confusion_counts;
pub use features::{extract_features, Embeddings, FeatureConfig};
pub use finetune::{fine_tune, fine_tune_snapshots, fine_tune_with, FineTuneConfig, Snapshot};
pub use fractions::{label_fractions, FractionRun, FractionsConfig, FractionsReport, Protocol};
pub use knn::{knn_accuracy, knn_predict};
pub use linear_probe::{linear_probe, moco_encoder_q, LinearProbeConfig};
pub use localization::{activation_energy_raw, channel_energy, energy_in_mask, ObjectEnergy};
pub use logistic::{
    fit_logistic, logistic_probe, logistic_probe_split, ClassReport, LogisticConfig, LogisticModel, Multiclass,
    ProbeReport,
};
pub use ood::{ood_accuracy, ood_evaluate, ood_test_set, ClassMapping, OodConfig, OodReport, OodResult, OodSet};
pub use width::{
    epsilon_sharpness, filter_normalized_direction, flatness_report, flatness_report_saved, loss_curve_1d, loss_surface_2d,
    top_hessian_eigenvalue, FlatnessConfig, FlatnessReport, LossCurve, LossSurface, Sharpness,
};
