//! Weighted k-nearest-neighbour classification on features (B7), offline.
//!
//! The vote itself (InstDisc, Wu et al. 2018, <https://arxiv.org/abs/1805.01978>, Section 3.4:
//! the k most cosine-similar training images vote with weight exp(s/τ)) lives in
//! [`crate::train::knn`], because the trainer's online monitor needs it and `train` sits below
//! `eval`; it is re-exported here, so `eval::knn::knn_accuracy`, `eval::knn_predict` and
//! `eval::knn::KnnConfig` are the same items. This module adds the vote on [`Embeddings`].
use super::features::Embeddings;
use crate::error::{Error, Result};
pub use crate::train::knn::{knn_accuracy, knn_predict, knn_scores, KnnConfig};

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
