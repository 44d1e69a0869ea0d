//! The embedded dataset: shapes, balance, determinism, and that its classes are carried by the
//! shape (not by colour), so self-supervised learning has something to find.
use selfsup::data::synthetic::{self, CLASS_NAMES};
use selfsup::prelude::*;

#[test]
fn splits_have_stl10_like_shapes_and_balanced_labels() {
    let cfg = SyntheticConfig::tiny();
    let train = synthetic::load(Split::Train, &cfg).unwrap();
    assert_eq!(train.images.size(), [100, 3, 32, 32]);
    assert_eq!(train.images.kind(), Kind::Uint8);
    assert_eq!(train.class_counts(), vec![10; 10]);
    assert_eq!(train.class_names, CLASS_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let unlabeled = synthetic::load(Split::Unlabeled, &cfg).unwrap();
    assert_eq!(unlabeled.len(), 200);
    assert!(unlabeled.labels.is_none());
    let big = synthetic::load(Split::Test, &SyntheticConfig { test_per_class: 2, ..SyntheticConfig::stl10_like() }).unwrap();
    assert_eq!(big.images.size(), [20, 3, 96, 96]);
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let cfg = SyntheticConfig::tiny();
    let a = synthetic::load(Split::Train, &cfg).unwrap();
    let b = synthetic::load(Split::Train, &cfg).unwrap();
    assert!(a.images.equal(&b.images));
    let c = synthetic::load(Split::Train, &cfg.clone().seed(1)).unwrap();
    assert!(!a.images.equal(&c.images));
    let test = synthetic::load(Split::Test, &cfg).unwrap();
    assert!(!a.images.equal(&test.images), "train and test differ");
}

#[test]
fn images_use_the_full_range_and_differ_from_each_other() {
    let set = synthetic::load(Split::Train, &SyntheticConfig::tiny()).unwrap();
    let x = set.images.to_kind(Kind::Float);
    assert!(x.min().double_value(&[]) < 30.0 && x.max().double_value(&[]) > 225.0);
    // Per-image std is well above the noise level: there is a shape on a background.
    let per_image_std = x.view([100, -1]).std_dim(1, true, false);
    assert!(per_image_std.min().double_value(&[]) > 10.0);
}

/// Shape, not colour, carries the class: the mean colour of an image says almost nothing about
/// its label, while the outline (the gradient magnitude) differs between classes.
#[test]
fn mean_colour_does_not_predict_the_class() {
    let set = synthetic::load(Split::Train, &SyntheticConfig { train_per_class: 60, ..SyntheticConfig::tiny() }).unwrap();
    let x = set.images.to_kind(Kind::Float) / 255.0; // [N, 3, 32, 32]
    let colour = x.mean_dim([2, 3].as_slice(), false, Kind::Float); // [N, 3]
    let labels = set.labels.as_ref().unwrap();
    // Nearest class-mean classifier on the mean colour, fitted and scored on the same data.
    let centroids = Tensor::stack(
        &(0..10).map(|c| colour.index_select(0, &labels.eq(c).nonzero().squeeze_dim(1)).mean_dim(0, false, Kind::Float)).collect::<Vec<_>>(),
        0,
    ); // [10, 3]
    let d = colour.unsqueeze(1) - centroids.unsqueeze(0); // [N, 10, 3]
    let pred = d.square().sum_dim_intlist(2, false, Kind::Float).argmin(1, false);
    let acc = pred.eq_tensor(labels).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    assert!(acc < 0.3, "mean colour predicts the class too well: {acc}");
}

#[test]
fn invalid_configs_are_refused_with_the_field_name() {
    let err = synthetic::load(Split::Train, &SyntheticConfig::tiny().image_size(8)).unwrap_err();
    assert!(err.to_string().contains("image_size"), "{err}");
}

#[test]
fn image_set_helpers() {
    let set = synthetic::load(Split::Train, &SyntheticConfig::tiny()).unwrap();
    let sub = set.select(&[3, 0, 11]).unwrap();
    assert_eq!(sub.label_vec(), vec![3, 0, 1]);
    assert_eq!(sub.names_of(&[0, 1]), vec!["frame".to_string(), "disc".to_string()]);
    assert!(set.select(&[100]).is_err());
    let x = set.float_batch(0, 4, Some(&Normalization::imagenet()), Device::Cpu).unwrap();
    assert_eq!(x.size(), [4, 3, 32, 32]);
    let back = Normalization::imagenet().denormalize(&x).unwrap();
    let orig = set.images.narrow(0, 0, 4).to_kind(Kind::Float) / 255.0;
    assert!((back - orig).abs().max().double_value(&[]) < 1e-5);
    assert!(set.float_batch(98, 4, None, Device::Cpu).is_err());
    assert_eq!(set.label_batch(10, 3, Device::Cpu).unwrap().size(), [3]);
    let unl = synthetic::load(Split::Unlabeled, &SyntheticConfig::tiny()).unwrap();
    assert!(unl.label_batch(0, 1, Device::Cpu).unwrap_err().to_string().contains("no labels"));
}

#[test]
fn source_falls_back_to_the_embedded_set_and_finds_real_data_via_selfsup_data() {
    // Only this test touches SELFSUP_DATA in this test binary.
    let empty = std::env::temp_dir().join(format!("selfsup-nodata-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    std::env::set_var("SELFSUP_DATA", &empty);
    let src = Source::stl10_or_synthetic(SyntheticConfig::tiny());
    assert!(!src.is_real());
    assert!(src.describe().contains("embedded") && src.describe().contains("SELFSUP_DATA"));
    assert_eq!(src.load(Split::Test).unwrap().len(), 100);
    // A CIFAR-10 binary folder with one test record is found and read.
    let bin = empty.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mut record = vec![3u8];
    record.extend(std::iter::repeat_n(9u8, 3072));
    std::fs::write(bin.join("test_batch.bin"), &record).unwrap();
    std::fs::write(bin.join("batches.meta.txt"), CIFAR10.join("\n")).unwrap();
    let src = Source::cifar10_or_synthetic(SyntheticConfig::tiny());
    assert!(src.is_real(), "{}", src.describe());
    let test = src.load(Split::Test).unwrap();
    assert_eq!(test.images.size(), [1, 3, 32, 32]);
    assert_eq!(test.label_vec(), vec![3]);
    std::env::remove_var("SELFSUP_DATA");
    std::fs::remove_dir_all(&empty).unwrap();
}

const CIFAR10: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
