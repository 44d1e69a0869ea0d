//! # selfsup — self-supervised learning for computer vision, taught in notebooks
//!
//! A support library for Jupyter notebooks on the evcxr Rust kernel: pre-train vision networks
//! with self-supervised methods, then probe, fine-tune, visualise and stress-test them, each
//! step one call. Built on [`tch`] (PyTorch 2.11.0).
//!
//! The architecture follows the pipeline a notebook walks through:
//! data ([`data`]) → augmentations ([`augment`]) → models ([`models`]) → methods ([`methods`],
//! [`losses`], [`momentum`]) → training ([`train`]) → evaluation ([`eval`]) → visualisation
//! ([`viz`]), with [`device`](mod@device) choosing the hardware. Every figure, image and table
//! renders inline. On top, [`experiments`] runs the seeds' experiments end to end and judges
//! their conclusions (the `selfsup-results` program; the notebooks' verdict tables), and [`cli`]
//! holds what the command-line programs share.
//! With the `distributed` feature, `distributed` adds the building blocks of data-parallel
//! training on PyTorch's c10d (docs/distributed.md).
//!
//! ## Papers
//! - He et al. 2016, *Deep Residual Learning* — [`models::resnet`].
//! - He et al. 2020, *Momentum Contrast (MoCo)*; Chen et al. 2020, *MoCo v2* — [`methods::moco`].
//! - Chen et al. 2020, *A Simple Framework for Contrastive Learning (SimCLR)* — [`methods::simclr`].
//! - Grill et al. 2020, *Bootstrap Your Own Latent (BYOL)* — [`methods::byol`].
//! - Zbontar et al. 2021, *Barlow Twins* — [`methods::barlow_twins`].
//!
//! ## Notebooks
//! - `notebooks/00_getting_started.ipynb`: environment check, the embedded dataset, one
//!   ResNet-18 training step.
//! - `notebooks/01_moco_v2_seminar.ipynb`: the MoCo v2 seminar (InfoNCE, MoCo part by part,
//!   pre-training, activation maps, linear probe vs scratch).
//! - `notebooks/02_supervised_vs_byol.ipynb`: supervised vs BYOL vs random weights, inline
//!   embedding explorers, logistic probes, BYOL without momentum.
//! - `notebooks/03_stl10_homework.ipynb`: the STL-10 homework: supervised baseline, SimCLR,
//!   BYOL with std(z), MoCo v2, t-SNE, linear probes, fine-tuning snapshots, OOD, optimum width.
//! - `notebooks/04_barlow_twins_label_fractions.ipynb`: Barlow Twins and label fractions.
//! - `notebooks/05_moco_code_reading.ipynb`: the reference MoCo code step by step, exact resume,
//!   linear classification from a checkpoint.
//!
//! ```no_run
//! use selfsup::prelude::*;
//! let device = pick_device();
//! seed_everything(0);
//! let train = data::synthetic::load(Split::Train, &SyntheticConfig::default())?;
//! let grid = train.show(16)?; // the last expression of a cell renders inline
//! # Ok::<(), selfsup::Error>(())
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod augment;
pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod device;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod error;
pub mod homework;
pub mod methods;
mod files;
mod progress;
pub mod models;
pub mod prelude;
pub mod viz;

pub use device::{environment, pick_device, seed_everything};
pub use error::{Error, Result};
pub use ndarray;
pub use tch;

/// The device the kit computes on: CUDA when present, else the CPU (prints which).
/// The same as [`pick_device`].
pub fn device() -> tch::Device {
    pick_device()
}
pub mod losses;
pub mod momentum;
pub mod train;
pub mod eval;
pub mod experiments;
