//! Online kNN accuracy (B7): a weighted k-nearest-neighbour classifier on the backbone's
//! ℓ2-normalised features, the cheap monitor of representation quality used during
//! pre-training by InstDisc (Wu et al. 2018, <https://arxiv.org/abs/1805.01978>, Section 3.4)
//! and the MoCo CIFAR-10 demo (`knn_predict`, k = 200, τ = 0.1).
use crate::data::{ImageSet, Normalization};
use crate::error::{config_err, Error, Result};
use crate::models::ResNet;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Settings of the kNN monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnConfig {
    /// Neighbours k (InstDisc and the MoCo CIFAR demo: 200).
    pub k: usize,
    /// Temperature τ of the weights exp(sim/τ) (InstDisc, MoCo CIFAR demo: 0.1).
    pub temperature: f64,
    /// Measure after every `every_epochs` epochs (and after the last).
    pub every_epochs: usize,
    /// Images per forward pass.
    pub batch_size: usize,
}

impl Default for KnnConfig {
    /// k = 200, τ = 0.1 (InstDisc; MoCo CIFAR demo), every epoch, batches of 256.
    fn default() -> Self {
        KnnConfig { k: 200, temperature: 0.1, every_epochs: 1, batch_size: 256 }
    }
}

impl KnnConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 || self.every_epochs == 0 || self.batch_size == 0 {
            return Err(config_err!(
                "KnnConfig: k, every_epochs and batch_size must be at least 1, got {}, {}, {}",
                self.k,
                self.every_epochs,
                self.batch_size
            ));
        }
        if self.temperature <= 0.0 {
            return Err(config_err!("KnnConfig.temperature must be positive, got {}", self.temperature));
        }
        Ok(())
    }
}

/// Pooled features of every image of `set`, `[N, D]` on `device`, in eval mode (the vote in
/// [`crate::eval::knn`] normalises them).
fn features(
    backbone: &ResNet,
    set: &ImageSet,
    norm: Option<&Normalization>,
    device: Device,
    batch: usize,
) -> Result<Tensor> {
    let n = set.len();
    let mut parts = Vec::with_capacity(n.div_ceil(batch));
    for start in (0..n).step_by(batch) {
        let len = batch.min(n - start);
        let x = set.float_batch(start, len, norm, device)?; // [b, 3, H, W]
        let h = tch::no_grad(|| backbone.features(&x, false))?; // [b, D]
        parts.push(h.to_kind(Kind::Float));
    }
    Ok(Tensor::cat(&parts, 0)) // [N, D]
}

/// Top-1 accuracy on `test` of a weighted kNN classifier whose memory bank is `train`'s
/// features: each test image's k most cosine-similar training images vote for their labels with
/// weight exp(sim/τ) ([`crate::eval::knn::knn_accuracy`] on the backbone's features).
///
/// # Errors
/// [`Error::Data`] when a set has no labels or no image; [`Error::Config`] for a bad config.
pub fn knn_accuracy(
    backbone: &ResNet,
    train: &ImageSet,
    test: &ImageSet,
    normalization: Option<&Normalization>,
    cfg: &KnnConfig,
    device: Device,
) -> Result<f64> {
    cfg.validate()?;
    let (Some(train_labels), Some(test_labels)) = (&train.labels, &test.labels) else {
        return Err(Error::Data("knn_accuracy needs labelled train and test sets (labels: None found)".into()));
    };
    if train.is_empty() || test.is_empty() {
        return Err(Error::Data("knn_accuracy needs at least one train and one test image".into()));
    }
    let classes = train.num_classes().max(test.num_classes()).max(1);
    let bank = features(backbone, train, normalization, device, cfg.batch_size)?; // [Ntr, D]
    let queries = features(backbone, test, normalization, device, cfg.batch_size)?; // [Nte, D]
    crate::eval::knn::knn_accuracy(&bank, train_labels, &queries, test_labels, classes, cfg)
}
