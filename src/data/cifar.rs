//! CIFAR-10 and CIFAR-100, in both the binary and the python-pickle versions (S0.6, S1.2, S3,
//! S2.T6).
//!
//! Krizhevsky 2009, *Learning Multiple Layers of Features from Tiny Images*,
//! <https://www.cs.toronto.edu/~kriz/cifar.html>: 32×32 colour images, 50,000 train and
//! 10,000 test, in 10 classes (CIFAR-10) or 100 fine classes grouped into 20 coarse ones
//! (CIFAR-100).
//!
//! Two versions circulate and students have either: the **binary** one (`cifar-10-batches-bin/`,
//! `cifar-100-binary/`: fixed-size records of label byte(s) + 3,072 pixel bytes) and the
//! **python** one that torchvision downloads (`cifar-10-batches-py/`, `cifar-100-python/`:
//! python-2 pickles of dicts holding a numpy array). [`detect`] finds which one a folder holds,
//! so [`load_cifar10`] and [`load_cifar100`] take either. Pixels are R, G, B planes of 32×32
//! row-major bytes in both.
//!
//! Why pickles are read without Python: `serde-pickle` decodes the dicts; the numpy array
//! arrives as the state tuple numpy's `_reconstruct` restores from
//! (`(version, shape, dtype, is_fortran, raw_bytes)`), or, in files re-pickled with protocol 5,
//! as the arguments of `_frombuffer(buffer, dtype, shape, order)`. Both are checked
//! (`raw.len() == prod(shape)`) before use.
//!
//! ```no_run
//! use selfsup::data::{cifar::{self, Cifar100Labels}, download, Split};
//! let test = cifar::load_cifar10(download::cifar10("assets/data")?, Split::Test)?;
//! let train100 = cifar::load_cifar100("assets/data", Split::Train, Cifar100Labels::Fine)?;
//! # Ok::<(), selfsup::Error>(())
//! ```
use super::fsutil::{io_error, read_all, read_lines, thousands};
use super::{ImageSet, Split};
use crate::error::{Error, Result};
use serde_pickle::{DeOptions, HashableValue, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// CIFAR-10's classes, in label order (`batches.meta.txt`).
pub const CIFAR10_CLASS_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Pixel bytes per image: 3 × 32 × 32.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Which of the two datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CifarDataset {
    /// 10 classes.
    Cifar10,
    /// 100 fine classes in 20 coarse superclasses.
    Cifar100,
}

impl CifarDataset {
    /// "CIFAR-10" or "CIFAR-100".
    pub fn name(self) -> &'static str {
        match self {
            CifarDataset::Cifar10 => "CIFAR-10",
            CifarDataset::Cifar100 => "CIFAR-100",
        }
    }
}

/// Which version of the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CifarFormat {
    /// Fixed-size binary records (`*.bin`).
    Binary,
    /// Python-2 pickles (what torchvision downloads).
    Python,
}

/// Which CIFAR-100 labels the set carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum Cifar100Labels {
    /// The 100 classes (the seed's S1.2 task).
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

/// Where a CIFAR dataset was found and in which version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarSource {
    /// CIFAR-10 or CIFAR-100.
    pub dataset: CifarDataset,
    /// Binary records or python pickles.
    pub format: CifarFormat,
    /// The folder that holds the batch files.
    pub dir: PathBuf,
}

impl CifarSource {
    /// The batch files of `split`, in order.
    pub fn files(&self, split: Split) -> Result<Vec<PathBuf>> {
        let names: Vec<String> = match (self.dataset, self.format, split) {
            (_, _, Split::Unlabeled) => {
                return Err(Error::Config(format!(
                    "{} has no unlabelled split; pre-train on Split::Train (its labels are simply not used)",
                    self.dataset.name()
                )))
            }
            (CifarDataset::Cifar10, CifarFormat::Binary, Split::Train) => {
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
            }
            (CifarDataset::Cifar10, CifarFormat::Binary, Split::Test) => vec!["test_batch.bin".into()],
            (CifarDataset::Cifar10, CifarFormat::Python, Split::Train) => {
                (1..=5).map(|i| format!("data_batch_{i}")).collect()
            }
            (CifarDataset::Cifar10, CifarFormat::Python, Split::Test) => vec!["test_batch".into()],
            (CifarDataset::Cifar100, CifarFormat::Binary, Split::Train) => vec!["train.bin".into()],
            (CifarDataset::Cifar100, CifarFormat::Binary, Split::Test) => vec!["test.bin".into()],
            (CifarDataset::Cifar100, CifarFormat::Python, Split::Train) => vec!["train".into()],
            (CifarDataset::Cifar100, CifarFormat::Python, Split::Test) => vec!["test".into()],
        };
        Ok(names.into_iter().map(|n| self.dir.join(n)).collect())
    }
}

fn hint(dataset: CifarDataset) -> String {
    match dataset {
        CifarDataset::Cifar10 => "download CIFAR-10 with `data::download::cifar10(dir)?` or extract cifar-10-python.tar.gz \
                                  (or cifar-10-binary.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html into the folder"
            .into(),
        CifarDataset::Cifar100 => "download CIFAR-100 with `data::download::cifar100(dir)?` or extract cifar-100-python.tar.gz \
                                   (or cifar-100-binary.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html into the folder"
            .into(),
    }
}

/// Finds `dataset` in `dir`: the folder itself or its `cifar-10-batches-bin/`,
/// `cifar-10-batches-py/`, `cifar-100-binary/` or `cifar-100-python/` sub-folder. When both
/// versions are present the binary one is used (it needs no unpickling).
///
/// # Errors
/// [`Error::Data`] listing the places looked at when none holds the dataset.
pub fn detect(dir: impl AsRef<Path>, dataset: CifarDataset) -> Result<CifarSource> {
    let dir = dir.as_ref();
    let (bin_dir, py_dir, bin_probe, py_probe): (&str, &str, &[&str], &[&str]) = match dataset {
        CifarDataset::Cifar10 => (
            "cifar-10-batches-bin",
            "cifar-10-batches-py",
            &["test_batch.bin", "data_batch_1.bin"],
            &["test_batch", "data_batch_1"],
        ),
        CifarDataset::Cifar100 => ("cifar-100-binary", "cifar-100-python", &["test.bin", "train.bin"], &["meta"]),
    };
    let holds = |d: &Path, probe: &[&str]| probe.iter().any(|f| d.join(f).is_file());
    let candidates = [
        (dir.join(bin_dir), CifarFormat::Binary, bin_probe),
        (dir.join(py_dir), CifarFormat::Python, py_probe),
        (dir.to_path_buf(), CifarFormat::Binary, bin_probe),
        (dir.to_path_buf(), CifarFormat::Python, py_probe),
    ];
    for (d, format, probe) in candidates {
        if holds(&d, probe) {
            return Ok(CifarSource { dataset, format, dir: d });
        }
    }
    Err(Error::Data(format!(
        "{} not found in {}: looked for {bin_dir}/ and {py_dir}/ (or their files directly in the folder); {}",
        dataset.name(),
        dir.display(),
        hint(dataset)
    )))
}

/// Loads a split of CIFAR-10 (binary or python version, see [`detect`]) as `u8` images
/// `[N, 3, 32, 32]` with labels `0..10` and the class names of the meta file.
///
/// # Errors
/// [`Error::Config`] for [`Split::Unlabeled`]; [`Error::Data`] naming the file when a batch is
/// missing, truncated (not a whole number of 3,073-byte records), a pickle does not hold
/// `data` `[N, 3072]` and `labels` `[N]`, or a label is outside `0..10`.
///
/// # Example
/// ```no_run
/// use selfsup::data::{cifar, Split};
/// let test = cifar::load_cifar10("assets/data", Split::Test)?;
/// assert_eq!(test.images.size(), [10000, 3, 32, 32]);
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn load_cifar10(dir: impl AsRef<Path>, split: Split) -> Result<ImageSet> {
    let source = detect(dir, CifarDataset::Cifar10)?;
    load(&source, split, Cifar100Labels::Fine)
}

/// Loads a split of CIFAR-100 (binary or python version) as `u8` images `[N, 3, 32, 32]` with
/// the fine (`0..100`) or coarse (`0..20`) labels and their names from the meta files.
///
/// # Errors
/// As [`load_cifar10`], with 3,074-byte binary records, `fine_labels`/`coarse_labels` keys,
/// and the meta files (`meta`, or `fine_label_names.txt`/`coarse_label_names.txt`) required.
pub fn load_cifar100(dir: impl AsRef<Path>, split: Split, labels: Cifar100Labels) -> Result<ImageSet> {
    let source = detect(dir, CifarDataset::Cifar100)?;
    load(&source, split, labels)
}

/// Loads `split` from a [`CifarSource`] (see [`detect`]); `labels` matters for CIFAR-100 only.
///
/// # Errors
/// As [`load_cifar10`] and [`load_cifar100`].
pub fn load(source: &CifarSource, split: Split, labels: Cifar100Labels) -> Result<ImageSet> {
    let files = source.files(split)?;
    let names = class_names(source, labels)?;
    let mut pixels = Vec::new();
    let mut targets = Vec::new();
    for file in &files {
        let (px, lb) = match source.format {
            CifarFormat::Binary => read_binary(file, source.dataset, labels)?,
            CifarFormat::Python => read_python(file, source.dataset, labels)?,
        };
        pixels.extend_from_slice(&px);
        targets.extend_from_slice(&lb);
    }
    let n = targets.len() as i64;
    if pixels.len() != targets.len() * IMAGE_BYTES {
        return Err(Error::Data(format!(
            "{}: {} bytes of pixels for {n} labels, expected {} (3x32x32 per image); a file is damaged, download again",
            source.dir.display(),
            pixels.len(),
            targets.len() * IMAGE_BYTES
        )));
    }
    let official = match split {
        Split::Train => 50_000,
        _ => 10_000,
    };
    if n != official {
        eprintln!(
            "selfsup: warning: {} / {} in {} holds {n} images, the official one {official}: a file is missing or \
             truncated (or a modified copy); results will not be comparable to published numbers",
            source.dataset.name(),
            split.name(),
            source.dir.display()
        );
    }
    let images = Tensor::from_slice(&pixels).view([n, 3, 32, 32]); // R, G, B planes, rows of 32
    drop(pixels);
    let suffix = match (source.dataset, labels) {
        (CifarDataset::Cifar100, Cifar100Labels::Coarse) => " (coarse labels)",
        _ => "",
    };
    ImageSet::new(
        images,
        Some(Tensor::from_slice(&targets)),
        names,
        format!("{} / {}{suffix}", source.dataset.name(), split.name()),
    )
}

/// The class names of `source`: CIFAR-10's ten (from `batches.meta.txt` / `batches.meta`, or
/// [`CIFAR10_CLASS_NAMES`] when the meta file is absent), or CIFAR-100's fine or coarse names
/// from its meta files (required).
///
/// # Errors
/// [`Error::Data`] when a meta file is missing (CIFAR-100), unreadable, or lists the wrong
/// number of names.
pub fn class_names(source: &CifarSource, labels: Cifar100Labels) -> Result<Vec<String>> {
    let (file, key, expected) = match (source.dataset, source.format, labels) {
        (CifarDataset::Cifar10, CifarFormat::Binary, _) => ("batches.meta.txt", "", 10),
        (CifarDataset::Cifar10, CifarFormat::Python, _) => ("batches.meta", "label_names", 10),
        (CifarDataset::Cifar100, CifarFormat::Binary, Cifar100Labels::Fine) => ("fine_label_names.txt", "", 100),
        (CifarDataset::Cifar100, CifarFormat::Binary, Cifar100Labels::Coarse) => ("coarse_label_names.txt", "", 20),
        (CifarDataset::Cifar100, CifarFormat::Python, Cifar100Labels::Fine) => ("meta", "fine_label_names", 100),
        (CifarDataset::Cifar100, CifarFormat::Python, Cifar100Labels::Coarse) => ("meta", "coarse_label_names", 20),
    };
    let path = source.dir.join(file);
    if source.dataset == CifarDataset::Cifar10 && !path.exists() {
        return Ok(CIFAR10_CLASS_NAMES.iter().map(|s| s.to_string()).collect());
    }
    let what = format!("{} class names", source.dataset.name());
    let names = match source.format {
        CifarFormat::Binary => read_lines(&path, &what, &hint(source.dataset))?,
        CifarFormat::Python => {
            let mut dict = read_pickle_dict(&path, source.dataset)?;
            let value = take(&mut dict, key).ok_or_else(|| missing_key(&path, key, &dict))?;
            strings(value)
                .ok_or_else(|| Error::Data(format!("{}: '{key}' should be a list of names", path.display())))?
        }
    };
    if names.len() != expected {
        return Err(Error::Data(format!("{}: expected {expected} class names, found {}", path.display(), names.len())));
    }
    Ok(names)
}

/// Number of label bytes before the pixels of a binary record, and the label ranges.
fn label_layout(dataset: CifarDataset) -> (&'static [(&'static str, u8)], usize) {
    match dataset {
        CifarDataset::Cifar10 => (&[("label", 10)], 1),
        CifarDataset::Cifar100 => (&[("coarse label", 20), ("fine label", 100)], 2),
    }
}

/// Reads a binary batch: records of label byte(s) + 3,072 pixel bytes.
fn read_binary(path: &Path, dataset: CifarDataset, labels: Cifar100Labels) -> Result<(Vec<u8>, Vec<i64>)> {
    let bytes = read_all(path, &format!("{} batch", dataset.name()), &hint(dataset))?;
    let (ranges, label_bytes) = label_layout(dataset);
    let record = label_bytes + IMAGE_BYTES;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(Error::Data(format!(
            "{}: expected a whole number of {record}-byte records ({label_bytes} label byte(s) + 3,072 pixel bytes), \
             found {} bytes ({} records and {} bytes left over); the file is truncated or not {} binary",
            path.display(),
            thousands(bytes.len() as u64),
            bytes.len() / record,
            bytes.len() % record,
            dataset.name()
        )));
    }
    let n = bytes.len() / record;
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut targets = Vec::with_capacity(n);
    let pick = if dataset == CifarDataset::Cifar100 && labels == Cifar100Labels::Fine { 1 } else { 0 };
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        for (k, &(what, classes)) in ranges.iter().enumerate() {
            if rec[k] >= classes {
                return Err(Error::Data(format!(
                    "{}: {what} of record {i} is {}, expected 0..{classes}",
                    path.display(),
                    rec[k]
                )));
            }
        }
        targets.push(i64::from(rec[pick]));
        pixels.extend_from_slice(&rec[label_bytes..]);
    }
    Ok((pixels, targets))
}

/// Reads a python batch: a dict with `data` (numpy uint8 `[N, 3072]`) and the label list(s).
fn read_python(path: &Path, dataset: CifarDataset, labels: Cifar100Labels) -> Result<(Vec<u8>, Vec<i64>)> {
    let mut dict = read_pickle_dict(path, dataset)?;
    let data = take(&mut dict, "data").ok_or_else(|| missing_key(path, "data", &dict))?;
    let array = NdArray::from_value(data).map_err(|why| Error::Data(format!("{}: 'data' {why}", path.display())))?;
    if array.shape.len() != 2 || array.shape[1] != IMAGE_BYTES {
        return Err(Error::Data(format!(
            "{}: 'data' has shape {:?}, expected [N, 3072] (3x32x32 uint8 pixels per row)",
            path.display(),
            array.shape
        )));
    }
    let n = array.shape[0];
    let keys: &[(&str, u8)] = match dataset {
        CifarDataset::Cifar10 => &[("labels", 10)],
        CifarDataset::Cifar100 => &[("coarse_labels", 20), ("fine_labels", 100)],
    };
    let pick = if dataset == CifarDataset::Cifar100 && labels == Cifar100Labels::Fine { 1 } else { 0 };
    let mut chosen = Vec::new();
    for (k, &(key, classes)) in keys.iter().enumerate() {
        let value = take(&mut dict, key).ok_or_else(|| missing_key(path, key, &dict))?;
        let values = integers(value)
            .ok_or_else(|| Error::Data(format!("{}: '{key}' should be a list of integers", path.display())))?;
        if values.len() != n {
            return Err(Error::Data(format!(
                "{}: '{key}' holds {} labels, expected {n} (one per row of 'data')",
                path.display(),
                values.len()
            )));
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, &v)| !(0..i64::from(classes)).contains(&v)) {
            return Err(Error::Data(format!("{}: {key}[{i}] is {v}, expected 0..{classes}", path.display())));
        }
        if k == pick {
            chosen = values;
        }
    }
    Ok((array.into_row_major(), chosen))
}

/// Unpickles a file that must hold a dict (batches and meta files).
fn read_pickle_dict(path: &Path, dataset: CifarDataset) -> Result<BTreeMap<HashableValue, Value>> {
    let file = std::fs::File::open(path)
        .map_err(|e| io_error(path, &format!("{} batch", dataset.name()), &hint(dataset), e))?;
    // Never `decode_strings()`: the pixels are a python-2 `str` that is not UTF-8.
    let options = DeOptions::new().keep_restore_state().replace_unresolved_globals();
    let value = serde_pickle::value_from_reader(std::io::BufReader::new(file), options).map_err(|e| {
        Error::Data(format!(
            "{}: not a readable python pickle ({e}); expected a {} batch as the python version ships it",
            path.display(),
            dataset.name()
        ))
    })?;
    match value {
        Value::Dict(d) => Ok(d),
        other => Err(Error::Data(format!("{}: expected a pickled dict, found {}", path.display(), kind_of(&other)))),
    }
}

/// Removes `key` from a pickled dict, whose keys are byte strings (python 2) or strings (3).
fn take(dict: &mut BTreeMap<HashableValue, Value>, key: &str) -> Option<Value> {
    dict.remove(&HashableValue::Bytes(key.as_bytes().to_vec()))
        .or_else(|| dict.remove(&HashableValue::String(key.into())))
}

fn missing_key(path: &Path, key: &str, dict: &BTreeMap<HashableValue, Value>) -> Error {
    let keys: Vec<String> = dict
        .keys()
        .map(|k| match k {
            HashableValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            HashableValue::String(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    Error::Data(format!(
        "{}: the pickled dict has no '{key}' entry (keys: {keys:?}); is this the right file?",
        path.display()
    ))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::I64(_) | Value::Int(_) => "an int",
        Value::F64(_) => "a float",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a string",
        Value::List(_) => "a list",
        Value::Tuple(_) => "a tuple",
        Value::Set(_) | Value::FrozenSet(_) => "a set",
        Value::Dict(_) => "a dict",
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::I64(i) => Some(*i),
        Value::Int(b) => b.to_string().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn as_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::Bytes(b) => Some(b),
        // A `str` decoded as latin-1 (never produced with our options, but harmless).
        Value::String(s) if s.chars().all(|c| (c as u32) < 256) => Some(s.chars().map(|c| c as u8).collect()),
        _ => None,
    }
}

/// A list of names (bytes or strings).
fn strings(v: Value) -> Option<Vec<String>> {
    match v {
        Value::List(items) | Value::Tuple(items) => items
            .into_iter()
            .map(|i| match i {
                Value::Bytes(b) => Some(String::from_utf8_lossy(&b).trim().to_string()),
                Value::String(s) => Some(s.trim().to_string()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// A list of integers, or a 1-D numpy integer array.
fn integers(v: Value) -> Option<Vec<i64>> {
    match v {
        Value::List(items) => items.iter().map(as_i64).collect(),
        other => {
            let a = NdArray::from_value(other).ok()?;
            if a.shape.len() != 1 {
                return None;
            }
            let n = a.shape[0];
            let size = a.raw.len().checked_div(n).unwrap_or(1);
            if n.checked_mul(size) != Some(a.raw.len()) || !matches!(size, 1 | 2 | 4 | 8) {
                return None;
            }
            // Item sizes 1 (uint8) and 2/4/8 (little-endian signed ints, numpy's default).
            Some(
                a.raw
                    .chunks_exact(size)
                    .map(|c| match size {
                        1 => i64::from(c[0]),
                        2 => i64::from(i16::from_le_bytes([c[0], c[1]])),
                        4 => i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                        _ => i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                    })
                    .collect(),
            )
        }
    }
}

/// A numpy array recovered from a pickle: shape, raw bytes, memory order.
struct NdArray {
    shape: Vec<usize>,
    raw: Vec<u8>,
    fortran: bool,
}

impl NdArray {
    /// Reads the `_reconstruct` state `(version, shape, dtype, is_fortran, raw)` or the
    /// protocol-5 `_frombuffer(buffer, dtype, shape, order)` arguments. The error says what was
    /// found instead ("… is not a numpy uint8 array: …").
    fn from_value(v: Value) -> std::result::Result<NdArray, String> {
        let items = match v {
            Value::Tuple(items) => items,
            other => return Err(format!("is {}, expected a numpy uint8 array", kind_of(&other))),
        };
        let shape_of = |v: &Value| -> Option<Vec<usize>> {
            match v {
                Value::Tuple(d) | Value::List(d) => {
                    d.iter().map(|x| as_i64(x).and_then(|i| usize::try_from(i).ok())).collect()
                }
                _ => None,
            }
        };
        let (shape, raw, fortran) = match items.len() {
            5 => {
                let mut it = items.into_iter();
                let (_version, shape, _dtype, fortran, raw) =
                    match (it.next(), it.next(), it.next(), it.next(), it.next()) {
                        (Some(a), Some(b), Some(c), Some(d), Some(e)) => (a, b, c, d, e),
                        _ => return Err("is a malformed numpy state".into()),
                    };
                let shape = shape_of(&shape).ok_or("has a malformed numpy shape")?;
                let raw = as_bytes(raw).ok_or("holds no raw bytes (object arrays are not supported)")?;
                (shape, raw, as_i64(&fortran) == Some(1))
            }
            4 if matches!(items[0], Value::Bytes(_)) => {
                let mut it = items.into_iter();
                let (buf, _dtype, shape, order) = match (it.next(), it.next(), it.next(), it.next()) {
                    (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
                    _ => return Err("is a malformed numpy buffer".into()),
                };
                let shape = shape_of(&shape).ok_or("has a malformed numpy shape")?;
                let raw = as_bytes(buf).ok_or("holds no buffer")?;
                let fortran =
                    matches!(&order, Value::String(s) if s == "F") || matches!(&order, Value::Bytes(b) if b == b"F");
                (shape, raw, fortran)
            }
            n => return Err(format!("is a tuple of {n} items, expected a numpy array's pickled state")),
        };
        // Checked: a damaged file may claim a shape whose product overflows.
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("claims the impossible shape {shape:?} (its size overflows)"))?;
        if shape.len() == 2 && raw.len() != count {
            // 2-D arrays here are always uint8 pixels: one byte per element.
            return Err(format!(
                "holds {} bytes, expected {} (one uint8 per element of shape {shape:?}); the file is damaged or not uint8",
                raw.len(),
                count
            ));
        }
        if count > 0 && raw.len() % count != 0 {
            return Err(format!("holds {} bytes, not a whole multiple of its {count} elements", raw.len()));
        }
        Ok(NdArray { shape, raw, fortran })
    }

    /// The bytes of a 2-D uint8 array in row-major (C) order.
    fn into_row_major(self) -> Vec<u8> {
        if !self.fortran || self.shape.len() != 2 {
            return self.raw;
        }
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let mut out = vec![0u8; self.raw.len()];
        for c in 0..cols {
            for r in 0..rows {
                out[r * cols + c] = self.raw[c * rows + r];
            }
        }
        out
    }
}
