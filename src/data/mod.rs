//! Data: image sets as `u8` tensors, kept small in memory and turned into floats per batch on
//! the device.
//!
//! - [`ImageSet`]: images `[N, 3, H, W]` u8, optional labels `[N]` i64, class names.
//! - [`synthetic`]: the embedded, procedurally generated dataset every notebook falls back to
//!   when no real data is found (no download needed).
//! - [`Normalization`]: per-channel mean/std (ImageNet's by default) and its inverse, for
//!   feeding networks and for showing images again.
//! - Readers for the formats users have: [`stl10`], [`cifar`] (CIFAR-10/100, binary and python
//!   pickle), [`folder`] (ImageNet-style folders), [`memory`] (tensors and ndarrays), and
//!   [`download`] (official archives with md5 check, resume and progress).
//! - [`source::Source`]: real data from [`source::data_dir`] when present, else the embedded set.
//! - [`subset`]: label fractions and train/validation splits; [`loader`]: seeded, prefetched
//!   batches on the device, with n augmented views.
pub mod cifar;
pub mod download;
pub mod folder;
mod fsutil;
pub mod loader;
pub mod memory;
pub mod source;
pub mod stl10;
pub mod subset;
pub mod synthetic;

pub use loader::{Batch, Epoch, Loader, LoaderConfig, Views, ViewBatch, ViewEpoch, ViewFn};
pub use memory::resize;
pub use source::{data_dir, Source};
pub use stl10::Stl10Split;
pub use subset::{label_fraction, label_fraction_indices, train_val_split};

use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Which part of a dataset, named as STL-10 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Split {
    /// Labelled training images.
    Train,
    /// Labelled test images.
    Test,
    /// Images without labels, for self-supervised pre-training.
    Unlabeled,
}

impl Split {
    /// Lower-case name: "train", "test", "unlabeled".
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Unlabeled => "unlabeled",
        }
    }
}

/// A set of images (`[N, 3, H, W]`, `u8`, on the CPU) with optional labels and class names.
///
/// Images stay `u8` so that even large sets fit in memory; convert a batch with
/// [`ImageSet::float_batch`] on the device that trains.
#[derive(Debug)]
pub struct ImageSet {
    /// `[N, 3, H, W]`, `u8`.
    pub images: Tensor,
    /// `[N]`, `i64` in `0..class_names.len()`; `None` for unlabelled data.
    pub labels: Option<Tensor>,
    /// Names of the classes, index = label.
    pub class_names: Vec<String>,
    /// A short description ("synthetic shapes 32px / train").
    pub name: String,
}

impl Clone for ImageSet {
    fn clone(&self) -> Self {
        ImageSet {
            images: self.images.shallow_clone(),
            labels: self.labels.as_ref().map(Tensor::shallow_clone),
            class_names: self.class_names.clone(),
            name: self.name.clone(),
        }
    }
}

impl ImageSet {
    /// Builds a set and checks it: images `[N, 3, H, W]` u8, labels `[N]` integer within
    /// `0..class_names.len()`.
    pub fn new(images: Tensor, labels: Option<Tensor>, class_names: Vec<String>, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let size = images.size();
        if size.len() != 4 || size[1] != 3 {
            return Err(Error::shape(format!("images of '{name}'"), "[N, 3, H, W]", &size));
        }
        if images.kind() != Kind::Uint8 {
            return Err(Error::Data(format!(
                "images of '{name}' must be u8 (0..=255), got {:?}; convert with `(x * 255).to_kind(Kind::Uint8)`",
                images.kind()
            )));
        }
        let labels = match labels {
            None => None,
            Some(l) => {
                if l.size() != [size[0]] {
                    return Err(Error::shape(format!("labels of '{name}'"), format!("[{}]", size[0]), &l.size()));
                }
                let l = l.to_kind(Kind::Int64).to_device(Device::Cpu);
                if size[0] > 0 {
                    let (lo, hi) = (l.min().int64_value(&[]), l.max().int64_value(&[]));
                    if lo < 0 || hi >= class_names.len() as i64 {
                        return Err(Error::Data(format!(
                            "labels of '{name}' must lie in 0..{}, found {lo}..={hi}",
                            class_names.len()
                        )));
                    }
                }
                Some(l)
            }
        };
        Ok(ImageSet { images: images.to_device(Device::Cpu), labels, class_names, name })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.size()[0] as usize
    }
    /// Whether the set has no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `(height, width)` of the images.
    pub fn image_size(&self) -> (i64, i64) {
        let s = self.images.size();
        (s[2], s[3])
    }
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The labels as a `Vec` (empty for unlabelled data).
    pub fn label_vec(&self) -> Vec<i64> {
        match &self.labels {
            Some(l) => Vec::<i64>::try_from(l).unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// How many images of each class (zeros for unlabelled data).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for l in self.label_vec() {
            counts[l as usize] += 1;
        }
        counts
    }

    /// The images at `indices` (in that order), with their labels.
    pub fn select(&self, indices: &[i64]) -> Result<ImageSet> {
        let n = self.len() as i64;
        if let Some(bad) = indices.iter().find(|&&i| i < 0 || i >= n) {
            return Err(Error::Data(format!("index {bad} out of range for '{}' with {n} images", self.name)));
        }
        let idx = Tensor::from_slice(indices);
        Ok(ImageSet {
            images: self.images.index_select(0, &idx),
            labels: self.labels.as_ref().map(|l| l.index_select(0, &idx)),
            class_names: self.class_names.clone(),
            name: self.name.clone(),
        })
    }

    /// The first `n` images (or all, if fewer).
    pub fn head(&self, n: usize) -> ImageSet {
        let n = n.min(self.len()) as i64;
        ImageSet {
            images: self.images.narrow(0, 0, n),
            labels: self.labels.as_ref().map(|l| l.narrow(0, 0, n)),
            class_names: self.class_names.clone(),
            name: self.name.clone(),
        }
    }

    /// Images `start..start+len` as floats in `[0, 1]`, normalised if `normalization` is given,
    /// on `device`: `[len, 3, H, W]` f32. The u8 → f32 conversion happens on the device.
    pub fn float_batch(&self, start: usize, len: usize, normalization: Option<&Normalization>, device: Device) -> Result<Tensor> {
        if start + len > self.len() {
            return Err(Error::Data(format!(
                "batch {start}..{} is past the end of '{}' ({} images)",
                start + len,
                self.name,
                self.len()
            )));
        }
        let x = self.images.narrow(0, start as i64, len as i64).to_device(device).to_kind(Kind::Float) / 255.0;
        Ok(match normalization {
            Some(n) => n.normalize(&x)?,
            None => x,
        })
    }

    /// Labels `start..start+len` on `device`: `[len]` i64.
    ///
    /// # Errors
    /// When the set has no labels or the range is past its end.
    pub fn label_batch(&self, start: usize, len: usize, device: Device) -> Result<Tensor> {
        let labels = self.labels.as_ref().ok_or_else(|| {
            Error::Data(format!("'{}' has no labels (an unlabelled split); use a labelled split for supervised steps", self.name))
        })?;
        if start + len > self.len() {
            return Err(Error::Data(format!("labels {start}..{} are past the end of '{}' ({} images)", start + len, self.name, self.len())));
        }
        Ok(labels.narrow(0, start as i64, len as i64).to_device(device))
    }

    /// Class names of the images at `indices` (`"?"` for unlabelled data).
    pub fn names_of(&self, indices: &[i64]) -> Vec<String> {
        let labels = self.label_vec();
        indices
            .iter()
            .map(|&i| {
                labels
                    .get(i as usize)
                    .and_then(|&l| self.class_names.get(l as usize))
                    .cloned()
                    .unwrap_or_else(|| "?".into())
            })
            .collect()
    }

    // `show(n)` (a grid of the first images) and `evcxr_display` are in `viz`, which renders.
}

impl std::fmt::Display for ImageSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (h, w) = self.image_size();
        write!(
            f,
            "{}: {} images of 3x{h}x{w}, {}",
            self.name,
            self.len(),
            if self.labels.is_some() { format!("{} classes", self.num_classes()) } else { "unlabelled".into() }
        )
    }
}

/// Per-channel normalisation `x' = (x - mean) / std` for images in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    /// Per-channel mean (R, G, B).
    pub mean: [f64; 3],
    /// Per-channel standard deviation (R, G, B).
    pub std: [f64; 3],
}

impl Default for Normalization {
    /// ImageNet's statistics, as torchvision's pre-trained models expect.
    fn default() -> Self {
        Normalization::imagenet()
    }
}

impl Normalization {
    /// ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) (torchvision's
    /// `transforms.Normalize` in every seed).
    pub fn imagenet() -> Self {
        Normalization { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
    }

    /// CIFAR-10 training-set statistics (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616).
    pub fn cifar10() -> Self {
        Normalization { mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616] }
    }

    fn check(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let s = x.size();
        if s.len() < 3 || s[s.len() - 3] != 3 {
            return Err(Error::shape("normalize", "[..., 3, H, W]", &s));
        }
        if self.std.iter().any(|&v| v <= 0.0) {
            return Err(Error::Config(format!("normalization std must be positive, got {:?}", self.std)));
        }
        let opts = (Kind::Float, x.device());
        let mean = Tensor::from_slice(&self.mean).to_kind(opts.0).to_device(opts.1).view([3, 1, 1]);
        let std = Tensor::from_slice(&self.std).to_kind(opts.0).to_device(opts.1).view([3, 1, 1]);
        Ok((mean, std))
    }

    /// `(x - mean) / std` on `[..., 3, H, W]` floats.
    pub fn normalize(&self, x: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.check(x)?;
        Ok((x - mean) / std)
    }

    /// The inverse, `x * std + mean`, to show a normalised image again.
    pub fn denormalize(&self, x: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.check(x)?;
        Ok(x * std + mean)
    }
}
