//! Weighted k-nearest-neighbour classification on features (B7).
//!
//! InstDisc (Wu, Xiong, Yu, Lin 2018, "Unsupervised Feature Learning via Non-Parametric
//! Instance Discrimination", <https://arxiv.org/abs/1805.01978>, Section 3.4) classifies a test
//! image by its k most similar training images under cosine similarity s_i, each neighbour
//! voting for its class with weight α_i = exp(s_i/τ), so the class c scores
//! w_c = Σ_i α_i · 1(c_i = c) (the paper uses k = 200, τ = 0.07; the MoCo CIFAR-10 demo,
//! `knn_predict` in facebookresearch/moco `colab/moco_cifar10_demo.ipynb`, uses k = 200, τ = 0.1 —
//! our [`KnnConfig`] default). It needs no training, so it is the cheap monitor of a
//! representation during pre-training; the same function serves offline evaluation.
//!
//! These functions work on features; [`crate::train::knn_accuracy`] extracts them from a backbone
//! and image sets first.
use super::features::Embeddings;
use crate::error::{Error, Result};
pub use crate::train::KnnConfig;
use tch::{Kind, Tensor};

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

/// [`knn_accuracy`] on two sets of [`Embeddings`] (e.g. of the train and test splits).
///
/// # Errors
/// [`Error::Data`] when either has no labels; as [`knn_accuracy`].
pub fn knn_embeddings(train: &Embeddings, test: &Embeddings, cfg: &KnnConfig) -> Result<f64> {
    let (Some(ytr), Some(yte)) = (&train.labels, &test.labels) else {
        return Err(Error::Data("knn_embeddings needs labelled train and test embeddings".into()));
    };
    let classes = train.num_classes().max(test.num_classes());
    knn_accuracy(&train.features, ytr, &test.features, yte, classes, cfg)
}
