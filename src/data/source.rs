//! Where a notebook's images come from: real data when it is on disk, else the embedded set.
//!
//! Every notebook starts with one configuration cell that calls, e.g.,
//! `Source::stl10_or_synthetic(SyntheticConfig::stl10_like())` and prints [`Source::describe`],
//! so the output always says which data the numbers below it came from.
//!
//! Real data is looked for in [`data_dir`]: the folder named by the `SELFSUP_DATA` environment
//! variable, else `assets/data/` in the repository. Put the extracted archives there:
//! `stl10_binary/` (from `stl10_binary.tar.gz`), `cifar-10-batches-bin/` or
//! `cifar-10-batches-py/`, `cifar-100-binary/` or `cifar-100-python/`
//! (or fetch them with [`super::download`]).
use super::cifar::{self, Cifar100Labels, CifarDataset, CifarSource};
use super::synthetic::{self, SyntheticConfig};
use super::{stl10, ImageSet, Split};
use crate::error::Result;
use std::path::PathBuf;

/// The folder the kit looks in for real datasets: `$SELFSUP_DATA`, else `<repo>/assets/data`.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("SELFSUP_DATA") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets").join("data"),
    }
}

/// A dataset to train and evaluate on.
#[derive(Debug, Clone)]
pub enum Source {
    /// STL-10 binary files in this folder.
    Stl10(PathBuf),
    /// CIFAR-10 or CIFAR-100 (binary or python version).
    Cifar(CifarSource),
    /// The embedded shapes dataset.
    Synthetic(SyntheticConfig),
}

impl Source {
    /// STL-10 from [`data_dir`] when it is there, else the embedded set drawn with `fallback`.
    pub fn stl10_or_synthetic(fallback: SyntheticConfig) -> Source {
        match stl10::find_dir(data_dir()) {
            Ok(dir) => Source::Stl10(dir),
            Err(_) => Source::Synthetic(fallback),
        }
    }

    /// CIFAR-10 from [`data_dir`] when it is there, else the embedded set drawn with `fallback`.
    pub fn cifar10_or_synthetic(fallback: SyntheticConfig) -> Source {
        Self::cifar_or_synthetic(CifarDataset::Cifar10, fallback)
    }

    /// CIFAR-100 (fine labels) from [`data_dir`] when it is there, else the embedded set.
    pub fn cifar100_or_synthetic(fallback: SyntheticConfig) -> Source {
        Self::cifar_or_synthetic(CifarDataset::Cifar100, fallback)
    }

    fn cifar_or_synthetic(dataset: CifarDataset, fallback: SyntheticConfig) -> Source {
        match cifar::detect(data_dir(), dataset) {
            Ok(source) => Source::Cifar(source),
            Err(_) => Source::Synthetic(fallback),
        }
    }

    /// Whether this is a real dataset (not the embedded one).
    pub fn is_real(&self) -> bool {
        !matches!(self, Source::Synthetic(_))
    }

    /// One line for the notebook: which data, where from, and how to switch to real data.
    pub fn describe(&self) -> String {
        match self {
            Source::Stl10(dir) => format!("data: STL-10 from {}", dir.display()),
            Source::Cifar(s) => format!("data: {} ({:?} version) from {}", s.dataset.name(), s.format, s.dir.display()),
            Source::Synthetic(cfg) => format!(
                "data: the embedded shapes dataset ({0}x{0} px; no real dataset in {1} — put stl10_binary/ or cifar-10-batches-bin/ there, or set SELFSUP_DATA)",
                cfg.image_size,
                data_dir().display()
            ),
        }
    }

    /// Where the object is in images `indices` of `split` (`[n, H, W]` coverage in [0, 1]), for
    /// the embedded dataset, whose generator knows each shape ([`synthetic::object_masks`]);
    /// `None` for real data, which ships no masks.
    ///
    /// # Errors
    /// As [`synthetic::object_masks`].
    pub fn object_masks(&self, split: Split, indices: &[usize]) -> Result<Option<tch::Tensor>> {
        match self {
            Source::Synthetic(cfg) => synthetic::object_masks(split, cfg, indices).map(Some),
            _ => Ok(None),
        }
    }

    /// Loads a split. CIFAR has no unlabelled split: [`Split::Unlabeled`] gives its training
    /// images without labels, as SimCLR and MoCo pre-train on CIFAR.
    pub fn load(&self, split: Split) -> Result<ImageSet> {
        match self {
            Source::Stl10(dir) => stl10::load(dir, split),
            Source::Cifar(source) => {
                let labels = Cifar100Labels::Fine;
                match split {
                    Split::Unlabeled => {
                        let mut set = cifar::load(source, Split::Train, labels)?;
                        set.labels = None;
                        set.name = format!("{} / train images, unlabelled", source.dataset.name());
                        Ok(set)
                    }
                    _ => cifar::load(source, split, labels),
                }
            }
            Source::Synthetic(cfg) => synthetic::load(split, cfg),
        }
    }
}
