//! Online kNN accuracy (B7): a weighted k-nearest-neighbour classifier on the backbone's
//! ℓ2-normalised features, the cheap monitor of representation quality used during
//! pre-training by InstDisc (Wu et al. 2018, <https://arxiv.org/abs/1805.01978>, Section 3.4)
//! and the MoCo CIFAR-10 demo (`knn_predict`, k = 200, τ = 0.1).
//!
//! InstDisc (Wu, Xiong, Yu, Lin 2018, "Unsupervised Feature Learning via Non-Parametric
//! Instance Discrimination", Section 3.4) classifies a test image by its k most similar training
//! images under cosine similarity s_i, each neighbour voting for its class with weight
//! α_i = exp(s_i/τ), so the class c scores w_c = Σ_i α_i · 1(c_i = c) (the paper uses k = 200,
//! τ = 0.07; the MoCo CIFAR-10 demo, `knn_predict` in facebookresearch/moco
//! `colab/moco_cifar10_demo.ipynb`, uses k = 200, τ = 0.1 — our [`KnnConfig`] default).
//!
//! The vote ([`knn_scores`], [`knn_predict`], [`knn_accuracy`]) works on features and is written
//! once, here, because the trainer's monitor needs it and `train` sits below `eval`;
//! [`crate::eval::knn`] re-exports it for offline evaluation. [`backbone_knn_accuracy`] is the
//! monitor's entry: it extracts the features of two image sets first.
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

fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2.0, [1i64].as_slice(), true).clamp_min(1e-12) // [N, D]
}

/// Class scores `[M, C]` of `queries` by weighted vote of their `cfg.k` most cosine-similar rows
/// of `bank` (weights exp(s/τ)), and the predicted classes `[M]` (argmax; ties go to the lower
/// class index). Queries run in chunks of `cfg.batch_size`, so an `[M, N]` similarity matrix is
/// never held at once.
///
/// # Shapes
/// `bank` `[N, D]`, `bank_labels` `[N]` in `0..num_classes`, `queries` `[M, D]` →
/// (`[M, C]` f32, `[M]` i64), on `bank`'s device.
///
/// # Errors
/// [`Error::Shape`] for mismatched shapes; [`Error::Config`] for a bad config or
/// `num_classes = 0`; [`Error::Data`] for an empty bank or labels outside `0..num_classes`.
pub fn knn_scores(
    bank: &Tensor,
    bank_labels: &Tensor,
    queries: &Tensor,
    num_classes: usize,
    cfg: &KnnConfig,
) -> Result<(Tensor, Tensor)> {
    cfg.validate()?;
    let (sb, sl, sq) = (bank.size(), bank_labels.size(), queries.size());
    if sb.len() != 2 || sb[0] == 0 {
        return Err(Error::shape("knn bank features", "[N, D] with N >= 1", &sb));
    }
    if sl != [sb[0]] {
        return Err(Error::shape("knn bank labels", format!("[{}]", sb[0]), &sl));
    }
    if sq.len() != 2 || sq[1] != sb[1] {
        return Err(Error::shape("knn query features", format!("[M, {}] like the bank", sb[1]), &sq));
    }
    if num_classes == 0 {
        return Err(Error::Config("knn: num_classes must be at least 1, got 0".into()));
    }
    let device = bank.device();
    let labels = bank_labels.to_kind(Kind::Int64).to_device(device); // [N]
    let (lo, hi) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
    if lo < 0 || hi >= num_classes as i64 {
        return Err(Error::Data(format!("knn bank labels must lie in 0..{num_classes}, found {lo}..={hi}")));
    }
    let c = num_classes as i64;
    let k = cfg.k.min(sb[0] as usize) as i64;
    tch::no_grad(|| {
        let bank = l2_normalize(&bank.to_kind(Kind::Float)); // [N, D]
        let queries = l2_normalize(&queries.to_kind(Kind::Float).to_device(device)); // [M, D]
        let mut scores = Vec::new();
        for q in queries.split(cfg.batch_size as i64, 0) {
            let b = q.size()[0];
            let sim = q.matmul(&bank.tr()); // [b, N]
            let (s, idx) = sim.topk(k, -1, true, true); // [b, k] each
            let nn_labels = labels.index_select(0, &idx.flatten(0, -1)).view([b, k]); // [b, k]
            let w = (s / cfg.temperature).exp(); // [b, k]
            let votes = Tensor::zeros([b, c], (Kind::Float, device)).scatter_add(1, &nn_labels, &w); // [b, C]
            scores.push(votes);
        }
        let scores =
            if scores.is_empty() { Tensor::zeros([0, c], (Kind::Float, device)) } else { Tensor::cat(&scores, 0) }; // [M, C]
        let pred = scores.argmax(-1, false); // [M]
        Ok((scores, pred))
    })
}

/// Predicted classes `[M]` of `queries` by weighted kNN over `bank` (see [`knn_scores`]).
///
/// # Errors
/// As [`knn_scores`].
pub fn knn_predict(
    bank: &Tensor,
    bank_labels: &Tensor,
    queries: &Tensor,
    num_classes: usize,
    cfg: &KnnConfig,
) -> Result<Tensor> {
    Ok(knn_scores(bank, bank_labels, queries, num_classes, cfg)?.1)
}

/// Top-1 accuracy of weighted kNN: the train features and labels are the memory bank, the test
/// features are classified and compared with the test labels. The trainer's online monitor and
/// offline evaluation both call this.
///
/// ```
/// use selfsup::eval::{knn_accuracy, knn::KnnConfig};
/// use selfsup::tch::Tensor;
/// let bank = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
/// let labels = Tensor::from_slice(&[0i64, 1]);
/// let queries = Tensor::from_slice(&[0.9f32, 0.1, 0.2, 0.8]).view([2, 2]);
/// let acc = knn_accuracy(&bank, &labels, &queries, &Tensor::from_slice(&[0i64, 1]), 2, &KnnConfig::default())?;
/// assert_eq!(acc, 1.0);
/// # Ok::<(), selfsup::Error>(())
/// ```
///
/// # Errors
/// As [`knn_scores`]; [`Error::Shape`] when `test_labels` is not `[M]`; [`Error::Data`] for an
/// empty test set.
pub fn knn_accuracy(
    train_features: &Tensor,
    train_labels: &Tensor,
    test_features: &Tensor,
    test_labels: &Tensor,
    num_classes: usize,
    cfg: &KnnConfig,
) -> Result<f64> {
    let m = test_features.size().first().copied().unwrap_or(0);
    if test_labels.size() != [m] {
        return Err(Error::shape("knn test labels", format!("[{m}]"), &test_labels.size()));
    }
    if m == 0 {
        return Err(Error::Data("knn_accuracy needs at least one test vector".into()));
    }
    let pred = knn_predict(train_features, train_labels, test_features, num_classes, cfg)?; // [M]
    let truth = test_labels.to_kind(Kind::Int64).to_device(pred.device());
    Ok(pred.eq_tensor(&truth).sum(Kind::Int64).int64_value(&[]) as f64 / m as f64)
}

/// Pooled features of every image of `set`, `[N, D]` on `device`, in eval mode (the vote
/// normalises them).
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
/// weight exp(sim/τ) ([`knn_accuracy`] on the backbone's features). The trainer's online monitor.
///
/// # Errors
/// [`Error::Data`] when a set has no labels or no image; [`Error::Config`] for a bad config.
pub fn backbone_knn_accuracy(
    backbone: &ResNet,
    train: &ImageSet,
    test: &ImageSet,
    normalization: Option<&Normalization>,
    cfg: &KnnConfig,
    device: Device,
) -> Result<f64> {
    cfg.validate()?;
    let (Some(train_labels), Some(test_labels)) = (&train.labels, &test.labels) else {
        return Err(Error::Data("the kNN monitor needs labelled train and test sets (labels: None found)".into()));
    };
    if train.is_empty() || test.is_empty() {
        return Err(Error::Data("the kNN monitor needs at least one train and one test image".into()));
    }
    let classes = train.num_classes().max(test.num_classes()).max(1);
    let bank = features(backbone, train, normalization, device, cfg.batch_size)?; // [Ntr, D]
    let queries = features(backbone, test, normalization, device, cfg.batch_size)?; // [Nte, D]
    knn_accuracy(&bank, train_labels, &queries, test_labels, classes, cfg)
}
