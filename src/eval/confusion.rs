//! Confusion counts (S2.T4, S2.T6): how often each true class was predicted as each class —
//! the numbers behind the per-class report of [`super::logistic_probe`], the OOD report and
//! `viz::confusion_matrix`, which draws them.
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Counts `[C, C]` (i64, rows = true class) from `predictions` and `targets` (`[N]` class indices).
///
/// # Errors
/// Shapes that differ, float or negative labels, labels >= `num_classes`.
pub fn confusion_counts(predictions: &Tensor, targets: &Tensor, num_classes: i64) -> Result<Tensor> {
    let (p, t) = (predictions.size(), targets.size());
    if p.len() != 1 || p != t {
        return Err(Error::shape("confusion_counts predictions", format!("[N] like targets {t:?}"), &p));
    }
    if num_classes < 1 {
        return Err(Error::Config(format!("confusion_counts: expected num_classes >= 1, got {num_classes}")));
    }
    if predictions.is_floating_point() || targets.is_floating_point() {
        return Err(Error::Data("confusion_counts: expected integer class indices (argmax the logits first)".into()));
    }
    let p = predictions.to_device(Device::Cpu).to_kind(Kind::Int64);
    let t = targets.to_device(Device::Cpu).to_kind(Kind::Int64);
    for (what, v) in [("predictions", &p), ("targets", &t)] {
        if v.numel() > 0 {
            let (lo, hi) = (v.min().int64_value(&[]), v.max().int64_value(&[]));
            if lo < 0 || hi >= num_classes {
                return Err(Error::Data(format!(
                    "confusion_counts {what}: expected classes in 0..{num_classes}, got {lo}..={hi}"
                )));
            }
        }
    }
    let flat = t * num_classes + p; // [N]
    Ok(flat.bincount::<Tensor>(None, num_classes * num_classes).view([num_classes, num_classes]))
}
