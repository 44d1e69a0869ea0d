//! Embeddings of a whole image set at a named stage of a ResNet (S1.4): what the BYOL
//! embeddings seed collects with a forward hook on `max_pool` and a loop over the test loader —
//! features, targets, class names and the images themselves — in one call.
//!
//! The network runs in eval mode (BatchNorm uses its running statistics, so an embedding does not
//! depend on the other images of its batch) and without autograd, in batches on the device.
//! Spatial stages (`Stem` … `Layer4`) are global-average-pooled to one vector per image, as the
//! STL-10 homework's "average-pool embeddings" (S2.T3) and torchvision's `avgpool`.
//!
//! Used by the embedding notebooks (S1.4–S1.7, S2.T3), the fast probe
//! ([`crate::eval::logistic_probe`]) and the kNN classifier ([`crate::eval::knn_predict`]).
use crate::data::{ImageSet, Normalization};
use crate::error::{config_err, Error, Result};
use crate::models::{ResNet, Stage};
use ndarray::{Array1, Array2, Array4};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Where and how to read features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureConfig {
    /// The stage to read; spatial stages are average-pooled. `AvgPool`: the representation the
    /// SSL methods train (and every linear-evaluation protocol reads).
    pub stage: Stage,
    /// Images per forward pass. 256 (MoCo's lincls batch).
    pub batch_size: usize,
    /// Normalisation of `[0, 1]` images before the network; must match pre-training (ImageNet's,
    /// as every augmentation preset ends with it).
    pub normalization: Option<Normalization>,
}

impl Default for FeatureConfig {
    /// `AvgPool`, batches of 256, ImageNet normalisation.
    fn default() -> Self {
        FeatureConfig { stage: Stage::AvgPool, batch_size: 256, normalization: Some(Normalization::imagenet()) }
    }
}

impl FeatureConfig {
    /// The same config reading another stage (`Stage::MaxPool` as the BYOL seed's hook).
    pub fn stage(mut self, stage: Stage) -> Self {
        self.stage = stage;
        self
    }
    /// The same config with another batch size.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
    /// The same config with another normalisation (`None`: raw `[0, 1]` pixels).
    pub fn normalization(mut self, normalization: Option<Normalization>) -> Self {
        self.normalization = normalization;
        self
    }
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero batch size.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(config_err!("FeatureConfig.batch_size must be at least 1, got 0"));
        }
        Ok(())
    }
}

/// Features of a whole set with what a notebook shows next to them (S1.4).
#[derive(Debug)]
pub struct Embeddings {
    /// `[N, D]` f32, on the device they were computed on.
    pub features: Tensor,
    /// `[N]` i64 on the same device; `None` for unlabelled data.
    pub labels: Option<Tensor>,
    /// Class names, index = label.
    pub class_names: Vec<String>,
    /// The images, `[N, 3, H, W]` u8 on the CPU (shared with the set, not copied); `None` for
    /// features that did not come from images (precomputed vectors, tabular data).
    pub images: Option<Tensor>,
    /// Which stage the features were read at (`None` for precomputed features).
    pub stage: Option<Stage>,
}

impl Clone for Embeddings {
    fn clone(&self) -> Self {
        Embeddings {
            features: self.features.shallow_clone(),
            labels: self.labels.as_ref().map(Tensor::shallow_clone),
            class_names: self.class_names.clone(),
            images: self.images.as_ref().map(Tensor::shallow_clone),
            stage: self.stage,
        }
    }
}

impl Embeddings {
    /// Embeddings from precomputed features `[N, D]` (any float kind; stored as f32) and optional
    /// labels `[N]` in `0..class_names.len()` — for features computed elsewhere or tabular data
    /// (the digits of the tests).
    ///
    /// # Errors
    /// [`Error::Shape`] unless features are `[N, D]` and labels `[N]`; [`Error::Data`] for labels
    /// outside `0..class_names.len()` or non-finite features.
    pub fn new(features: Tensor, labels: Option<Tensor>, class_names: Vec<String>) -> Result<Embeddings> {
        let s = features.size();
        if s.len() != 2 {
            return Err(Error::shape("Embeddings features", "[N, D]", &s));
        }
        if !features.is_floating_point() {
            return Err(Error::Data(format!("Embeddings features must be floating point, got {:?}", features.kind())));
        }
        let features = features.to_kind(Kind::Float);
        if s[0] > 0 && !bool::try_from(features.isfinite().all())? {
            return Err(Error::Data("Embeddings features contain NaN or infinite values".into()));
        }
        let labels = match labels {
            None => None,
            Some(l) => {
                if l.size() != [s[0]] {
                    return Err(Error::shape("Embeddings labels", format!("[{}]", s[0]), &l.size()));
                }
                if l.is_floating_point() {
                    return Err(Error::Data("Embeddings labels must be integer class indices".into()));
                }
                let l = l.to_kind(Kind::Int64).to_device(features.device());
                if s[0] > 0 {
                    let (lo, hi) = (l.min().int64_value(&[]), l.max().int64_value(&[]));
                    if lo < 0 || hi >= class_names.len() as i64 {
                        return Err(Error::Data(format!(
                            "Embeddings labels must lie in 0..{} (one name per class), found {lo}..={hi}",
                            class_names.len()
                        )));
                    }
                }
                Some(l)
            }
        };
        Ok(Embeddings { features, labels, class_names, images: None, stage: None })
    }

    /// Number of vectors N.
    pub fn len(&self) -> usize {
        self.features.size()[0] as usize
    }
    /// Whether there is no vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Width D of the vectors.
    pub fn dim(&self) -> usize {
        self.features.size()[1] as usize
    }
    /// Number of classes (names).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The rows at `indices`, in that order (labels and images follow).
    ///
    /// # Errors
    /// [`Error::Data`] for an index out of range.
    pub fn select(&self, indices: &[i64]) -> Result<Embeddings> {
        let n = self.len() as i64;
        if let Some(bad) = indices.iter().find(|&&i| i < 0 || i >= n) {
            return Err(Error::Data(format!("Embeddings::select: index {bad} out of range for {n} vectors")));
        }
        let idx = Tensor::from_slice(indices);
        let on = |t: &Tensor| t.index_select(0, &idx.to_device(t.device()));
        Ok(Embeddings {
            features: on(&self.features),
            labels: self.labels.as_ref().map(on),
            class_names: self.class_names.clone(),
            images: self.images.as_ref().map(on),
            stage: self.stage,
        })
    }

    /// The same embeddings on `device` (images stay on the CPU).
    pub fn to_device(&self, device: Device) -> Embeddings {
        Embeddings {
            features: self.features.to_device(device),
            labels: self.labels.as_ref().map(|l| l.to_device(device)),
            ..self.clone()
        }
    }

    /// Features `[N, D]` and labels `[N]` as `ndarray`s on the CPU (for linfa, plotting, or
    /// anything outside libtorch).
    ///
    /// # Errors
    /// Errors of the conversion.
    pub fn to_ndarray(&self) -> Result<(Array2<f32>, Option<Array1<i64>>)> {
        let (n, d) = (self.len(), self.dim());
        let flat = Vec::<f32>::try_from(self.features.to_device(Device::Cpu).contiguous().view([-1]))?;
        let x = Array2::from_shape_vec((n, d), flat)?;
        let y = match &self.labels {
            Some(l) => Some(Array1::from_vec(Vec::<i64>::try_from(l.to_device(Device::Cpu))?)),
            None => None,
        };
        Ok((x, y))
    }

    /// The images `[N, 3, H, W]` as a u8 `ndarray`.
    ///
    /// # Errors
    /// [`Error::Data`] when these embeddings carry no images.
    pub fn images_ndarray(&self) -> Result<Array4<u8>> {
        let images = self.images.as_ref().ok_or_else(|| Error::Data("these embeddings carry no images".into()))?;
        let s = images.size();
        let flat = Vec::<u8>::try_from(images.to_device(Device::Cpu).contiguous().view([-1]))?;
        Ok(Array4::from_shape_vec((s[0] as usize, s[1] as usize, s[2] as usize, s[3] as usize), flat)?)
    }

    /// The class name of every vector (`"?"` without labels).
    pub fn label_names(&self) -> Vec<String> {
        match &self.labels {
            Some(l) => Vec::<i64>::try_from(l.to_device(Device::Cpu))
                .unwrap_or_default()
                .into_iter()
                .map(|i| self.class_names.get(i as usize).cloned().unwrap_or_else(|| "?".into()))
                .collect(),
            None => vec!["?".into(); self.len()],
        }
    }
}

/// Embeddings of every image of `set` at `cfg.stage` of `net` (eval mode, no gradients, batches
/// of `cfg.batch_size` on `device`, which must be where `net`'s weights are). Spatial stages are
/// average-pooled over H × W.
///
/// # Shapes
/// `set`: N images → `features` `[N, C]` (C: channels of the stage; 512 at `AvgPool` of a
/// ResNet-18, the number of classes at `Fc`).
///
/// # Errors
/// [`Error::Config`] for a bad config or `Stage::Fc` on a network without `fc`; [`Error::Data`]
/// for an empty set; errors of the network (images too small for the stem).
pub fn extract_features(net: &ResNet, set: &ImageSet, cfg: &FeatureConfig, device: Device) -> Result<Embeddings> {
    cfg.validate()?;
    if set.is_empty() {
        return Err(Error::Data(format!("extract_features: '{}' has no image", set.name)));
    }
    let n = set.len();
    let mut parts = Vec::with_capacity(n.div_ceil(cfg.batch_size));
    for start in (0..n).step_by(cfg.batch_size) {
        let len = cfg.batch_size.min(n - start);
        let x = set.float_batch(start, len, cfg.normalization.as_ref(), device)?; // [b, 3, H, W]
        let h = tch::no_grad(|| net.forward_until(&x, cfg.stage, false))?; // [b, C, h, w] or [b, C]
        let h = if h.dim() == 4 { h.mean_dim([2i64, 3].as_slice(), false, Kind::Float) } else { h }; // [b, C]
        parts.push(h.to_kind(Kind::Float));
    }
    let features = Tensor::cat(&parts, 0); // [N, C]
    Ok(Embeddings {
        features,
        labels: set.labels.as_ref().map(|l| l.to_device(device)),
        class_names: set.class_names.clone(),
        images: Some(set.images.shallow_clone()),
        stage: Some(cfg.stage),
    })
}
