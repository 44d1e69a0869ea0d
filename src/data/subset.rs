//! Subsets of a labelled set: label fractions (S3.2, S3.7) and a train/validation split.
//!
//! The Barlow Twins seed trains with 1 %, 10 % and 100 % of the labels; Zbontar et al. 2021
//! (arXiv:2103.03230) and SimCLR (Chen et al. 2020, arXiv:2002.05709) take such subsets
//! *per class*. [`label_fraction`] does the same: from every class it keeps
//! `round(fraction × count)` images (at least one), drawn with a seed. Why per class: at 1 % of
//! CIFAR-10 a plain random draw of 500 images leaves classes under-represented by chance, and
//! the curves of S3.2 would compare different class balances.
//!
//! For one seed the subsets are nested: the 1 % subset lies inside the 10 % one, because every
//! class is shuffled once and a fraction keeps a prefix of that order.
//!
//! ```
//! use selfsup::data::{label_fraction, train_val_split, synthetic::{self, SyntheticConfig}, Split};
//! let train = synthetic::load(Split::Train, &SyntheticConfig::tiny())?; // 10 per class
//! let tenth = label_fraction(&train, 0.1, 0)?; // 1 per class
//! assert_eq!(tenth.class_counts(), vec![1; 10]);
//! let (fit, val) = train_val_split(&train, 0.2, 0)?;
//! assert_eq!((fit.len(), val.len()), (80, 20));
//! # Ok::<(), selfsup::Error>(())
//! ```
use super::fsutil::mix_seed;
use super::ImageSet;
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Indices (ascending) of a stratified subset: from each class, `round(fraction × count)`
/// images, at least one when the class has any, chosen by `seed`.
///
/// # Errors
/// [`Error::Config`] unless `0 < fraction <= 1`; [`Error::Data`] for a label outside
/// `0..num_classes`.
pub fn label_fraction_indices(labels: &[i64], num_classes: usize, fraction: f64, seed: u64) -> Result<Vec<i64>> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(Error::Config(format!(
            "label fraction must be in (0, 1] (0.01 for 1%, 0.1 for 10%), got {fraction}"
        )));
    }
    let mut chosen = Vec::new();
    for order in shuffled_classes(labels, num_classes, seed)? {
        if order.is_empty() {
            continue;
        }
        let keep = ((fraction * order.len() as f64).round() as usize).clamp(1, order.len());
        chosen.extend_from_slice(&order[..keep]);
    }
    chosen.sort_unstable();
    Ok(chosen)
}

/// A stratified, seeded subset holding `fraction` of the images of each class (at least one per
/// class): `label_fraction(&train, 0.01, seed)` for the 1 % curve of S3.2. A subset that keeps
/// every image (1.0) is the set itself, name included, so runs trained on either are one run.
///
/// # Errors
/// [`Error::Data`] for an unlabelled set; [`Error::Config`] unless `0 < fraction <= 1`.
pub fn label_fraction(set: &ImageSet, fraction: f64, seed: u64) -> Result<ImageSet> {
    if set.labels.is_none() {
        return Err(Error::Data(format!("'{}' has no labels; a label fraction needs a labelled set", set.name)));
    }
    let indices = label_fraction_indices(&set.label_vec(), set.num_classes(), fraction, seed)?;
    let mut out = set.select(&indices)?;
    // Every image kept (100 %, or classes of one image) is the set itself: same name, so a run
    // trained on `set` is recognised as the same run (its identity includes the dataset name).
    if indices.len() != set.len() {
        out.name = format!("{} ({}% of labels, seed {seed})", set.name, fraction * 100.0);
    }
    Ok(out)
}

/// Splits a set into (train, validation) with `val_fraction` of the images in validation,
/// seeded. Labelled sets are split per class (each class keeps its share on both sides);
/// unlabelled ones at random. Both parts keep the original order.
///
/// # Errors
/// [`Error::Config`] unless `0 < val_fraction < 1`; [`Error::Data`] when a side would be empty.
pub fn train_val_split(set: &ImageSet, val_fraction: f64, seed: u64) -> Result<(ImageSet, ImageSet)> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return Err(Error::Config(format!("validation fraction must be in (0, 1), e.g. 0.1, got {val_fraction}")));
    }
    let groups = match &set.labels {
        Some(_) => shuffled_classes(&set.label_vec(), set.num_classes(), seed)?,
        None => {
            let mut all: Vec<i64> = (0..set.len() as i64).collect();
            all.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seed(seed, u64::MAX)));
            vec![all]
        }
    };
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for order in groups {
        let k = (val_fraction * order.len() as f64).round() as usize;
        val.extend_from_slice(&order[..k]);
        train.extend_from_slice(&order[k..]);
    }
    if train.is_empty() || val.is_empty() {
        return Err(Error::Data(format!(
            "splitting '{}' ({} images) with validation fraction {val_fraction} leaves {} train and {} validation images",
            set.name,
            set.len(),
            train.len(),
            val.len()
        )));
    }
    train.sort_unstable();
    val.sort_unstable();
    let (mut a, mut b) = (set.select(&train)?, set.select(&val)?);
    a.name = format!("{} / fit", set.name);
    b.name = format!("{} / validation", set.name);
    Ok((a, b))
}

/// The indices of each class, each list shuffled by its own generator seeded by (seed, class),
/// so one class's order does not depend on the others.
fn shuffled_classes(labels: &[i64], num_classes: usize, seed: u64) -> Result<Vec<Vec<i64>>> {
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        let slot = usize::try_from(l).ok().and_then(|c| by_class.get_mut(c));
        match slot {
            Some(v) => v.push(i as i64),
            None => return Err(Error::Data(format!("label {l} at index {i} is outside 0..{num_classes}"))),
        }
    }
    for (c, v) in by_class.iter_mut().enumerate() {
        v.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seed(seed, c as u64)));
    }
    Ok(by_class)
}
