//! Dataset readers on small files written here in the exact on-disk formats (FORMATS.md):
//! STL-10 binary (column-major channels, folds), CIFAR-10/100 binary and python pickles
//! (python-2 protocol-2 `_reconstruct` arrays built byte by byte, protocol-5 `_frombuffer`),
//! image folders in torchvision order, in-memory sets. Each format test puts a known pixel
//! pattern in and checks it comes out at the right (image, channel, y, x); the error tests check
//! that messages name the file and say what was expected.
use selfsup::data::cifar::{self, Cifar100Labels, CifarDataset, CifarFormat};
use selfsup::data::folder::{self, FolderConfig, ResizeMode};
use selfsup::data::stl10::{self, Stl10Split};
use selfsup::data::{memory, ImageSet, Split};
use selfsup::ndarray::{Array3, Array4};
use selfsup::tch::{Kind, Tensor};
use selfsup::{Error, Result};
use std::path::{Path, PathBuf};

/// A fresh, empty folder for one test (kept after the run for inspection).
fn tmp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("data_readers").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// All bytes of a `[N, 3, H, W]` u8 tensor in (n, c, y, x) order.
fn bytes_of(images: &Tensor) -> Vec<u8> {
    Vec::<u8>::try_from(images.contiguous().view([-1])).unwrap()
}

fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------- STL-10

/// The pattern: different weights for y and x, so a transposition shows.
fn stl_pixel(i: usize, c: usize, y: usize, x: usize) -> u8 {
    ((i * 7 + c * 50 + y * 3 + x * 11) % 256) as u8
}

/// Writes `n` images in STL-10's layout: channel planes stored column-major,
/// `offset(i, c, y, x) = i*27648 + c*9216 + x*96 + y`.
fn write_stl_images(path: &Path, n: usize, first: usize) {
    let mut bytes = vec![0u8; n * 27648];
    for i in 0..n {
        for c in 0..3 {
            for y in 0..96 {
                for x in 0..96 {
                    bytes[i * 27648 + c * 9216 + x * 96 + y] = stl_pixel(first + i, c, y, x);
                }
            }
        }
    }
    std::fs::write(path, bytes).unwrap();
}

fn expected_stl(first: usize, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * 27648);
    for i in first..first + n {
        for c in 0..3 {
            for y in 0..96 {
                for x in 0..96 {
                    v.push(stl_pixel(i, c, y, x));
                }
            }
        }
    }
    v
}

/// stl10_binary/ with `n_train` train, 3 test and 3 unlabelled images, names and folds.
fn write_stl(root: &Path, n_train: usize) -> PathBuf {
    let dir = root.join("stl10_binary");
    std::fs::create_dir_all(&dir).unwrap();
    write_stl_images(&dir.join("train_X.bin"), n_train, 0);
    std::fs::write(dir.join("train_y.bin"), (0..n_train).map(|i| (i % 10 + 1) as u8).collect::<Vec<_>>()).unwrap();
    write_stl_images(&dir.join("test_X.bin"), 3, 100);
    std::fs::write(dir.join("test_y.bin"), [10u8, 1, 8]).unwrap();
    write_stl_images(&dir.join("unlabeled_X.bin"), 3, 200);
    std::fs::write(dir.join("class_names.txt"), stl10::CLASS_NAMES.join("\n") + "\n").unwrap();
    let folds: Vec<String> = (0..10).map(|f| format!("{} {} ", f % n_train, (f + 1) % n_train)).collect();
    std::fs::write(dir.join("fold_indices.txt"), folds.join("\n") + "\n").unwrap();
    dir
}

#[test]
fn stl10_train_and_test_pixels_land_at_c_y_x() -> Result<()> {
    let root = tmp_dir("stl_train");
    write_stl(&root, 4);
    let train = stl10::load(&root, Split::Train)?; // the parent of stl10_binary/ works
    assert_eq!(train.images.size(), [4, 3, 96, 96]);
    assert_eq!(train.images.kind(), Kind::Uint8);
    assert_eq!(bytes_of(&train.images), expected_stl(0, 4));
    // One pixel by hand: image 2, green, row 5, column 9.
    assert_eq!(train.images.int64_value(&[2, 1, 5, 9]), i64::from(stl_pixel(2, 1, 5, 9)));
    assert_eq!(train.label_vec(), vec![0, 1, 2, 3]); // bytes 1..=10 become 0..10
    assert_eq!(train.class_names[7], "monkey");

    let test = stl10::load(root.join("stl10_binary"), Split::Test)?; // the folder itself works too
    assert_eq!(bytes_of(&test.images), expected_stl(100, 3));
    assert_eq!(test.label_vec(), vec![9, 0, 7]);
    Ok(())
}

#[test]
fn stl10_unlabeled_is_a_private_memory_map() -> Result<()> {
    let root = tmp_dir("stl_unlabeled");
    let dir = write_stl(&root, 4);
    let set = stl10::load(&root, Split::Unlabeled)?;
    assert!(set.labels.is_none());
    assert_eq!(set.images.size(), [3, 3, 96, 96]);
    // A strided view over the file (channels transposed), not a copy.
    assert!(!set.images.is_contiguous());
    assert_eq!(set.images.stride(), [27648, 9216, 1, 96]);
    assert_eq!(bytes_of(&set.images), expected_stl(200, 3));
    // Writing into the images changes this process's pages, never the file.
    let before = std::fs::read(dir.join("unlabeled_X.bin"))?;
    let _ = set.images.narrow(0, 0, 1).fill_(0);
    assert_eq!(set.images.int64_value(&[0, 0, 0, 0]), 0);
    assert_eq!(std::fs::read(dir.join("unlabeled_X.bin"))?, before);
    // The view outlives the set it came from.
    let images = stl10::load(&root, Split::Unlabeled)?.images;
    assert_eq!(bytes_of(&images), expected_stl(200, 3));
    Ok(())
}

#[test]
fn stl10_train_plus_unlabeled_concatenates_without_labels() -> Result<()> {
    // 4 train images end on a page boundary (4 × 27,648 = 27 × 4,096): back-to-back mapping.
    let root = tmp_dir("stl_train_unlabeled");
    write_stl(&root, 4);
    let set = stl10::load(&root, Stl10Split::TrainUnlabeled)?;
    assert_eq!(set.images.size(), [7, 3, 96, 96]);
    assert!(set.labels.is_none());
    let mut expected = expected_stl(0, 4);
    expected.extend(expected_stl(200, 3));
    assert_eq!(bytes_of(&set.images), expected);
    // Loading again reuses the mapping and gives the same bytes.
    assert_eq!(bytes_of(&stl10::load(&root, Stl10Split::TrainUnlabeled)?.images), expected);

    // 3 train images do not end on a page boundary: the copying fallback, same result.
    let root = tmp_dir("stl_train_unlabeled_copy");
    write_stl(&root, 3);
    let set = stl10::load(&root, Stl10Split::TrainUnlabeled)?;
    let mut expected = expected_stl(0, 3);
    expected.extend(expected_stl(200, 3));
    assert_eq!(bytes_of(&set.images), expected);
    assert_eq!(set.name, "STL-10 / train+unlabeled");
    Ok(())
}

#[test]
fn stl10_folds_parse_and_reject_bad_indices() -> Result<()> {
    let root = tmp_dir("stl_folds");
    let dir = write_stl(&root, 4);
    let folds = stl10::folds(&root)?;
    assert_eq!(folds.len(), 10);
    assert_eq!(folds[0], vec![0, 1]);
    assert_eq!(folds[3], vec![3, 0]);
    let fold3 = stl10::load_fold(&root, 3)?;
    assert_eq!(bytes_of(&fold3.images), [expected_stl(3, 1), expected_stl(0, 1)].concat());
    assert_eq!(fold3.label_vec(), vec![3, 0]);
    assert!(matches!(stl10::load_fold(&root, 10), Err(Error::Config(_))));

    // The official file has 1,000 indices per line, all below 5,000.
    let mut lines: Vec<String> = (0..10).map(|_| "0 4999".to_string()).collect();
    std::fs::write(dir.join("fold_indices.txt"), lines.join("\n"))?;
    assert_eq!(stl10::folds(&root)?[9], vec![0, 4999]);
    lines[4] = "12 5000 7".into();
    std::fs::write(dir.join("fold_indices.txt"), lines.join("\n"))?;
    let msg = err_text(stl10::folds(&root));
    assert!(msg.contains("fold_indices.txt") && msg.contains("5000") && msg.contains("fold 4"), "{msg}");
    lines[4] = "12 -3".into();
    std::fs::write(dir.join("fold_indices.txt"), lines.join("\n"))?;
    assert!(err_text(stl10::folds(&root)).contains("'-3'"));
    std::fs::write(dir.join("fold_indices.txt"), "1 2\n3 4\n")?;
    let msg = err_text(stl10::folds(&root));
    assert!(msg.contains("expected 10 lines") && msg.contains("found 2"), "{msg}");
    Ok(())
}

#[test]
fn stl10_errors_name_the_file_and_the_expectation() -> Result<()> {
    let root = tmp_dir("stl_errors");
    let msg = err_text(stl10::load(&root, Split::Train));
    assert!(msg.contains("STL-10 not found") && msg.contains("download::stl10"), "{msg}");

    let dir = write_stl(&root, 4);
    // Truncated images: 2 images and 5 bytes.
    std::fs::write(dir.join("test_X.bin"), vec![0u8; 2 * 27648 + 5])?;
    let msg = err_text(stl10::load(&root, Split::Test));
    assert!(msg.contains("test_X.bin") && msg.contains("27,648") && msg.contains("55,301 bytes"), "{msg}");
    // Label count does not match the images.
    write_stl_images(&dir.join("test_X.bin"), 3, 0);
    std::fs::write(dir.join("test_y.bin"), [1u8, 2])?;
    let msg = err_text(stl10::load(&root, Split::Test));
    assert!(msg.contains("test_y.bin") && msg.contains("expected 3 label bytes") && msg.contains("found 2"), "{msg}");
    // Label out of range (0 and 11 are not STL-10 labels).
    std::fs::write(dir.join("test_y.bin"), [1u8, 11, 2])?;
    let msg = err_text(stl10::load(&root, Split::Test));
    assert!(msg.contains("test_y.bin") && msg.contains("image 1 is 11") && msg.contains("1..=10"), "{msg}");
    // Missing label file.
    std::fs::remove_file(dir.join("test_y.bin"))?;
    let msg = err_text(stl10::load(&root, Split::Test));
    assert!(msg.contains("test_y.bin is missing"), "{msg}");
    // Bad class list.
    std::fs::write(dir.join("class_names.txt"), "airplane\nbird\n")?;
    let msg = err_text(stl10::load(&root, Split::Train));
    assert!(msg.contains("class_names.txt") && msg.contains("expected 10 class names"), "{msg}");
    Ok(())
}

#[test]
fn stl10_to_cifar10_scores_monkey_as_frog() -> Result<()> {
    let stl = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let cifar = stl10::to_cifar10(&stl)?;
    assert_eq!(Vec::<i64>::try_from(&cifar)?, vec![0, 2, 1, 3, 4, 5, 7, 6, 8, 9]);
    // Names agree class by class, except monkey → frog.
    for (s, c) in stl10::STL10_TO_CIFAR10.iter().enumerate() {
        let (sn, cn) = (stl10::CLASS_NAMES[s], cifar::CIFAR10_CLASS_NAMES[*c as usize]);
        match sn {
            "car" => assert_eq!(cn, "automobile"),
            "monkey" => assert_eq!(cn, "frog"),
            _ => assert_eq!(sn, cn),
        }
    }
    // And back: frog (6) is scored against monkey (7).
    assert_eq!(Vec::<i64>::try_from(&stl10::from_cifar10(&cifar)?)?, (0..10).collect::<Vec<i64>>());
    assert!(err_text(stl10::to_cifar10(&Tensor::from_slice(&[3i64, 10]))).contains("value 10 at position 1"));
    assert!(matches!(
        stl10::to_cifar10(&Tensor::zeros([2, 2], (Kind::Int64, selfsup::tch::Device::Cpu))),
        Err(Error::Shape { .. })
    ));
    Ok(())
}

// ---------------------------------------------------------------- CIFAR binary

fn cifar_pixel(i: usize, c: usize, y: usize, x: usize) -> u8 {
    ((i * 13 + c * 70 + y * 7 + x * 2) % 256) as u8
}

/// 3,072 pixel bytes of image `i`: R, G, B planes, each 32×32 row-major.
fn cifar_pixels(i: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(3072);
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                v.push(cifar_pixel(i, c, y, x));
            }
        }
    }
    v
}

fn expected_cifar(range: std::ops::Range<usize>) -> Vec<u8> {
    range.flat_map(cifar_pixels).collect()
}

/// cifar-10-batches-bin/ with 2 images per train batch (labels i % 10) and 3 test images.
fn write_cifar10_binary(root: &Path) -> PathBuf {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let record = |i: usize| [vec![(i % 10) as u8], cifar_pixels(i)].concat();
    for b in 0..5 {
        std::fs::write(dir.join(format!("data_batch_{}.bin", b + 1)), [record(2 * b), record(2 * b + 1)].concat())
            .unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), (100..103).flat_map(record).collect::<Vec<_>>()).unwrap();
    std::fs::write(dir.join("batches.meta.txt"), cifar::CIFAR10_CLASS_NAMES.join("\n") + "\n\n").unwrap();
    dir
}

#[test]
fn cifar10_binary_pixels_and_labels() -> Result<()> {
    let root = tmp_dir("cifar10_bin");
    write_cifar10_binary(&root);
    let source = cifar::detect(&root, CifarDataset::Cifar10)?;
    assert_eq!(source.format, CifarFormat::Binary);
    let train = cifar::load_cifar10(&root, Split::Train)?;
    assert_eq!(train.images.size(), [10, 3, 32, 32]);
    assert_eq!(bytes_of(&train.images), expected_cifar(0..10));
    assert_eq!(train.images.int64_value(&[7, 2, 3, 30]), i64::from(cifar_pixel(7, 2, 3, 30)));
    assert_eq!(train.label_vec(), (0..10).collect::<Vec<i64>>());
    assert_eq!(train.class_names[1], "automobile");
    let test = cifar::load_cifar10(&root, Split::Test)?;
    assert_eq!(bytes_of(&test.images), expected_cifar(100..103));
    assert_eq!(test.label_vec(), vec![0, 1, 2]);
    assert!(matches!(cifar::load_cifar10(&root, Split::Unlabeled), Err(Error::Config(_))));
    Ok(())
}

#[test]
fn cifar_binary_errors() -> Result<()> {
    let root = tmp_dir("cifar_bin_errors");
    let msg = err_text(cifar::load_cifar10(&root, Split::Test));
    assert!(msg.contains("CIFAR-10 not found") && msg.contains("cifar-10-batches-py"), "{msg}");
    let dir = write_cifar10_binary(&root);
    // A truncated record.
    let mut bytes = std::fs::read(dir.join("test_batch.bin"))?;
    bytes.truncate(3073 * 2 + 100);
    std::fs::write(dir.join("test_batch.bin"), &bytes)?;
    let msg = err_text(cifar::load_cifar10(&root, Split::Test));
    assert!(
        msg.contains("test_batch.bin") && msg.contains("3073-byte records") && msg.contains("2 records and 100 bytes"),
        "{msg}"
    );
    // A label out of range.
    bytes.truncate(3073 * 2);
    bytes[3073] = 10;
    std::fs::write(dir.join("test_batch.bin"), &bytes)?;
    let msg = err_text(cifar::load_cifar10(&root, Split::Test));
    assert!(msg.contains("test_batch.bin") && msg.contains("record 1 is 10") && msg.contains("0..10"), "{msg}");
    // A missing batch.
    std::fs::remove_file(dir.join("data_batch_4.bin"))?;
    let msg = err_text(cifar::load_cifar10(&root, Split::Train));
    assert!(msg.contains("data_batch_4.bin is missing"), "{msg}");
    Ok(())
}

#[test]
fn cifar100_binary_fine_and_coarse() -> Result<()> {
    let root = tmp_dir("cifar100_bin");
    let dir = root.join("cifar-100-binary");
    std::fs::create_dir_all(&dir)?;
    // Record: coarse byte, fine byte, pixels.
    let record = |i: usize| [vec![(i % 20) as u8, (i * 9 % 100) as u8], cifar_pixels(i)].concat();
    std::fs::write(dir.join("train.bin"), (0..5).flat_map(record).collect::<Vec<_>>())?;
    std::fs::write(dir.join("test.bin"), (50..52).flat_map(record).collect::<Vec<_>>())?;
    let fine: Vec<String> = (0..100).map(|i| format!("fine{i}")).collect();
    let coarse: Vec<String> = (0..20).map(|i| format!("coarse{i}")).collect();
    std::fs::write(dir.join("fine_label_names.txt"), fine.join("\n"))?;
    std::fs::write(dir.join("coarse_label_names.txt"), coarse.join("\n"))?;

    let train = cifar::load_cifar100(&root, Split::Train, Cifar100Labels::Fine)?;
    assert_eq!(bytes_of(&train.images), expected_cifar(0..5));
    assert_eq!(train.label_vec(), vec![0, 9, 18, 27, 36]);
    assert_eq!(train.num_classes(), 100);
    assert_eq!(train.class_names[27], "fine27");
    let test = cifar::load_cifar100(&root, Split::Test, Cifar100Labels::Coarse)?;
    assert_eq!(bytes_of(&test.images), expected_cifar(50..52));
    assert_eq!(test.label_vec(), vec![10, 11]);
    assert_eq!(test.class_names, coarse);

    // A fine label of 100 is out of range; the names files are required.
    let mut bad = record(0);
    bad[1] = 100;
    std::fs::write(dir.join("test.bin"), &bad)?;
    let msg = err_text(cifar::load_cifar100(&root, Split::Test, Cifar100Labels::Coarse));
    assert!(msg.contains("fine label of record 0 is 100") && msg.contains("0..100"), "{msg}");
    std::fs::remove_file(dir.join("coarse_label_names.txt"))?;
    let msg = err_text(cifar::load_cifar100(&root, Split::Train, Cifar100Labels::Coarse));
    assert!(msg.contains("coarse_label_names.txt is missing"), "{msg}");
    Ok(())
}

// ---------------------------------------------------------------- CIFAR python pickles

/// Writes pickle opcodes by hand, as python 2's cPickle (protocol 2) and python 3's pickle
/// (protocol 5) write them for CIFAR batches.
struct Pickle(Vec<u8>);

impl Pickle {
    fn new(protocol: u8) -> Pickle {
        Pickle(vec![0x80, protocol]) // PROTO
    }
    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// A python-2 `str` (bytes): SHORT_BINSTRING or BINSTRING.
    fn py2_str(&mut self, s: &[u8]) -> &mut Self {
        if s.len() < 256 {
            self.op(b"U").op(&[s.len() as u8]).op(s)
        } else {
            self.op(b"T").op(&(s.len() as u32).to_le_bytes()).op(s)
        }
    }
    /// A python-3 `str`: SHORT_BINUNICODE.
    fn unicode(&mut self, s: &str) -> &mut Self {
        self.op(&[0x8c, s.len() as u8]).op(s.as_bytes())
    }
    fn key(&mut self, s: &str, py3: bool) -> &mut Self {
        if py3 {
            self.unicode(s)
        } else {
            self.py2_str(s.as_bytes())
        }
    }
    fn int(&mut self, v: i64) -> &mut Self {
        match v {
            0..=255 => self.op(b"K").op(&[v as u8]),
            256..=65535 => self.op(b"M").op(&(v as u16).to_le_bytes()),
            _ => self.op(b"J").op(&(v as i32).to_le_bytes()),
        }
    }
    /// A python-2 `long` (`10000L`): LONG1 with a minimal little-endian two's complement.
    fn long(&mut self, v: u64) -> &mut Self {
        let mut b = v.to_le_bytes().to_vec();
        while b.len() > 1 && b[b.len() - 1] == 0 && b[b.len() - 2] < 0x80 {
            b.pop();
        }
        self.op(&[0x8a, b.len() as u8]).op(&b)
    }
    /// `numpy.dtype('u1')` as pickled: REDUCE then BUILD with the dtype state.
    fn dtype_u1(&mut self, py3: bool) -> &mut Self {
        if py3 {
            self.unicode("numpy").unicode("dtype").op(&[0x93]).unicode("u1")
        } else {
            self.op(b"cnumpy\ndtype\n").py2_str(b"u1")
        }
        .op(&[0x89, 0x88, 0x87]) // False, True, TUPLE3
        .op(b"R(")
        .int(3);
        if py3 {
            self.unicode("|");
        } else {
            self.py2_str(b"|");
        }
        self.op(b"NNN").int(-1).int(-1).int(0).op(b"tb")
    }
    /// A uint8 array `[rows, cols]` as numpy ≤ 1.x pickles it with protocol 2:
    /// `_reconstruct(ndarray, (0,), b'b')` + BUILD `(1, shape, dtype, False, raw)`.
    fn ndarray_reconstruct(&mut self, rows: usize, cols: usize, raw: &[u8], long_shape: bool) -> &mut Self {
        self.op(b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02").int(0).op(&[0x85]).py2_str(b"b");
        self.op(&[0x87]).op(b"Rq\x03(").int(1);
        if long_shape {
            self.long(rows as u64).long(cols as u64);
        } else {
            self.int(rows as i64).int(cols as i64);
        }
        self.op(&[0x86]).dtype_u1(false).op(&[0x89]).py2_str(raw).op(b"tb")
    }
    /// A uint8 array as numpy pickles it with protocol 5 (in-band buffer):
    /// `_frombuffer(bytearray(raw), dtype('u1'), shape, 'C')`.
    fn ndarray_frombuffer(&mut self, shape: &[usize], raw: &[u8]) -> &mut Self {
        self.unicode("numpy.core.numeric").unicode("_frombuffer").op(&[0x93, 0x94]).op(b"(");
        self.op(&[0x96]).op(&(raw.len() as u64).to_le_bytes()).op(raw); // BYTEARRAY8
        self.dtype_u1(true).op(b"(");
        for &d in shape {
            self.int(d as i64);
        }
        self.op(b"t").unicode("C").op(b"tR")
    }
    fn int_list(&mut self, values: &[i64]) -> &mut Self {
        self.op(b"](");
        for &v in values {
            self.int(v);
        }
        self.op(b"e")
    }
    fn str_list(&mut self, values: &[&str], py3: bool) -> &mut Self {
        self.op(b"](");
        for v in values {
            self.key(v, py3);
        }
        self.op(b"e")
    }
    fn finish(&mut self) -> Vec<u8> {
        self.op(b".");
        std::mem::take(&mut self.0)
    }
}

/// How the `data` array is pickled.
#[derive(Clone, Copy)]
enum ArrayForm {
    /// Python 2, protocol 2, shape as ints.
    Reconstruct,
    /// Python 2, protocol 2, shape as longs (`10000L`).
    ReconstructLong,
    /// Python 3, protocol 5, `_frombuffer`.
    FromBuffer,
}

/// A batch dict: data, label lists, filenames, batch_label.
fn batch_pickle(first: usize, n: usize, labels: &[(&str, Vec<i64>)], form: ArrayForm) -> Vec<u8> {
    let py3 = matches!(form, ArrayForm::FromBuffer);
    let mut p = Pickle::new(if py3 { 5 } else { 2 });
    p.op(b"}q\x00(");
    p.key("batch_label", py3).key("training batch 1 of 5", py3);
    p.key("data", py3);
    let raw = expected_cifar(first..first + n);
    match form {
        ArrayForm::Reconstruct => p.ndarray_reconstruct(n, 3072, &raw, false),
        ArrayForm::ReconstructLong => p.ndarray_reconstruct(n, 3072, &raw, true),
        ArrayForm::FromBuffer => p.ndarray_frombuffer(&[n, 3072], &raw),
    };
    for (key, values) in labels {
        p.key(key, py3).int_list(values);
    }
    p.key("filenames", py3);
    let names: Vec<String> = (0..n).map(|i| format!("img_{i}.png")).collect();
    p.str_list(&names.iter().map(String::as_str).collect::<Vec<_>>(), py3);
    p.op(b"u").finish()
}

#[test]
fn cifar10_python_protocol2_pickles() -> Result<()> {
    let root = tmp_dir("cifar10_py");
    let dir = root.join("cifar-10-batches-py");
    std::fs::create_dir_all(&dir)?;
    for b in 0..5 {
        let form = if b % 2 == 0 { ArrayForm::Reconstruct } else { ArrayForm::ReconstructLong };
        let labels = vec![(2 * b % 10) as i64, ((2 * b + 1) % 10) as i64];
        std::fs::write(dir.join(format!("data_batch_{}", b + 1)), batch_pickle(2 * b, 2, &[("labels", labels)], form))?;
    }
    std::fs::write(dir.join("test_batch"), batch_pickle(100, 3, &[("labels", vec![9, 0, 5])], ArrayForm::Reconstruct))?;
    let mut meta = Pickle::new(2);
    meta.op(b"}(").key("num_cases_per_batch", false).int(10000);
    meta.key("label_names", false).str_list(&cifar::CIFAR10_CLASS_NAMES, false);
    meta.key("num_vis", false).int(3072).op(b"u");
    std::fs::write(dir.join("batches.meta"), meta.finish())?;

    assert_eq!(cifar::detect(&root, CifarDataset::Cifar10)?.format, CifarFormat::Python);
    let train = cifar::load_cifar10(&root, Split::Train)?;
    assert_eq!(train.images.size(), [10, 3, 32, 32]);
    assert_eq!(bytes_of(&train.images), expected_cifar(0..10));
    assert_eq!(train.images.int64_value(&[3, 1, 31, 4]), i64::from(cifar_pixel(3, 1, 31, 4)));
    assert_eq!(train.label_vec(), (0..10).collect::<Vec<i64>>());
    assert_eq!(train.class_names, cifar::CIFAR10_CLASS_NAMES.map(String::from).to_vec());
    let test = cifar::load_cifar10(&dir, Split::Test)?; // the batches folder itself works too
    assert_eq!(bytes_of(&test.images), expected_cifar(100..103));
    assert_eq!(test.label_vec(), vec![9, 0, 5]);
    Ok(())
}

#[test]
fn cifar100_python_protocol5_frombuffer_with_string_keys() -> Result<()> {
    let root = tmp_dir("cifar100_py");
    let dir = root.join("cifar-100-python");
    std::fs::create_dir_all(&dir)?;
    let labels = |fine: Vec<i64>, coarse: Vec<i64>| vec![("fine_labels", fine), ("coarse_labels", coarse)];
    std::fs::write(
        dir.join("train"),
        batch_pickle(0, 4, &labels(vec![99, 0, 42, 7], vec![19, 0, 3, 4]), ArrayForm::FromBuffer),
    )?;
    // The test file in python-2 form: one folder may mix both, as re-pickled copies do.
    std::fs::write(dir.join("test"), batch_pickle(60, 2, &labels(vec![1, 2], vec![5, 6]), ArrayForm::Reconstruct))?;
    let fine: Vec<String> = (0..100).map(|i| format!("fine{i}")).collect();
    let coarse: Vec<String> = (0..20).map(|i| format!("coarse{i}")).collect();
    let mut meta = Pickle::new(5);
    meta.op(b"}(").key("fine_label_names", true).str_list(&fine.iter().map(String::as_str).collect::<Vec<_>>(), true);
    meta.key("coarse_label_names", true)
        .str_list(&coarse.iter().map(String::as_str).collect::<Vec<_>>(), true)
        .op(b"u");
    std::fs::write(dir.join("meta"), meta.finish())?;

    let train = cifar::load_cifar100(&root, Split::Train, Cifar100Labels::Fine)?;
    assert_eq!(bytes_of(&train.images), expected_cifar(0..4));
    assert_eq!(train.label_vec(), vec![99, 0, 42, 7]);
    assert_eq!(train.class_names[42], "fine42");
    let coarse_train = cifar::load_cifar100(&root, Split::Train, Cifar100Labels::Coarse)?;
    assert_eq!(coarse_train.label_vec(), vec![19, 0, 3, 4]);
    assert_eq!(coarse_train.class_names[19], "coarse19");
    let test = cifar::load_cifar100(&root, Split::Test, Cifar100Labels::Fine)?;
    assert_eq!(bytes_of(&test.images), expected_cifar(60..62));
    assert_eq!(test.label_vec(), vec![1, 2]);
    Ok(())
}

#[test]
fn cifar_python_errors() -> Result<()> {
    let root = tmp_dir("cifar_py_errors");
    let dir = root.join("cifar-10-batches-py");
    std::fs::create_dir_all(&dir)?;
    let write_test = |bytes: Vec<u8>| std::fs::write(dir.join("test_batch"), bytes);

    // Raw bytes shorter than the shape says.
    let mut p = Pickle::new(2);
    p.op(b"}(").key("data", false).ndarray_reconstruct(2, 3072, &vec![0u8; 3072 + 10], false);
    p.key("labels", false).int_list(&[0, 1]).op(b"u");
    write_test(p.finish())?;
    let msg = err_text(cifar::load_cifar10(&root, Split::Test));
    assert!(msg.contains("test_batch") && msg.contains("3082 bytes") && msg.contains("expected 6144"), "{msg}");

    // Wrong row length.
    let mut p = Pickle::new(2);
    p.op(b"}(").key("data", false).ndarray_reconstruct(2, 100, &[0u8; 200], false);
    p.key("labels", false).int_list(&[0, 1]).op(b"u");
    write_test(p.finish())?;
    let msg = err_text(cifar::load_cifar10(&root, Split::Test));
    assert!(msg.contains("shape [2, 100]") && msg.contains("[N, 3072]"), "{msg}");

    // Labels: too few, out of range, missing.
    write_test(batch_pickle(0, 2, &[("labels", vec![1])], ArrayForm::Reconstruct))?;
    let msg = err_text(cifar::load_cifar10(&root, Split::Test));
    assert!(msg.contains("'labels' holds 1 labels, expected 2"), "{msg}");
    write_test(batch_pickle(0, 2, &[("labels", vec![1, 12])], ArrayForm::Reconstruct))?;
    let msg = err_text(cifar::load_cifar10(&root, Split::Test));
    assert!(msg.contains("labels[1] is 12") && msg.contains("0..10"), "{msg}");
    write_test(batch_pickle(0, 2, &[("fine_labels", vec![1, 2])], ArrayForm::Reconstruct))?;
    let msg = err_text(cifar::load_cifar10(&root, Split::Test));
    assert!(msg.contains("no 'labels' entry") && msg.contains("fine_labels"), "{msg}");

    // A damaged shape whose size overflows: a clear error, no overflow (checked arithmetic).
    let mut p = Pickle::new(2);
    p.op(b"}(").key("data", false).ndarray_reconstruct(1 << 62, 3072, &[0u8; 16], true);
    p.key("labels", false).int_list(&[0, 1]).op(b"u");
    write_test(p.finish())?;
    let msg = err_text(cifar::load_cifar10(&root, Split::Test));
    assert!(msg.contains("test_batch") && msg.contains("impossible shape"), "{msg}");

    // Not a pickle at all (truncated download).
    write_test(b"\x80\x02}q\x00(U\x04data".to_vec())?;
    let msg = err_text(cifar::load_cifar10(&root, Split::Test));
    assert!(msg.contains("test_batch") && msg.contains("not a readable python pickle"), "{msg}");
    Ok(())
}

#[test]
fn cifar_detect_prefers_binary_when_both_are_present() -> Result<()> {
    let root = tmp_dir("cifar_both");
    write_cifar10_binary(&root);
    let py = root.join("cifar-10-batches-py");
    std::fs::create_dir_all(&py)?;
    std::fs::write(py.join("test_batch"), batch_pickle(0, 1, &[("labels", vec![0])], ArrayForm::Reconstruct))?;
    let source = cifar::detect(&root, CifarDataset::Cifar10)?;
    assert_eq!((source.format, source.dir.clone()), (CifarFormat::Binary, root.join("cifar-10-batches-bin")));
    let python = cifar::CifarSource { format: CifarFormat::Python, dir: py, ..source };
    assert_eq!(cifar::load(&python, Split::Test, Cifar100Labels::Fine)?.len(), 1);
    Ok(())
}

// ---------------------------------------------------------------- image folders

fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save_with_format(path, image::ImageFormat::Png).unwrap();
}

#[test]
fn folder_follows_torchvision_order_and_decodes_rgb() -> Result<()> {
    let root = tmp_dir("folder");
    // Classes sort by bytes: "10" < "2" < "a".
    write_png(&root.join("2/b.png"), 20, 10, [0, 255, 0]);
    write_png(&root.join("2/A.PNG"), 10, 10, [0, 0, 255]); // upper-case extension counts
    write_png(&root.join("10/x.png"), 8, 8, [255, 0, 0]);
    write_png(&root.join("a/sub/z.png"), 8, 8, [10, 20, 30]); // found recursively
    write_png(&root.join("a/sub b/y.png"), 8, 8, [40, 50, 60]);
    write_png(&root.join("a/sub/deep/w.png"), 8, 8, [1, 2, 3]); // "sub b" < "sub/deep": whole-path order
    write_png(&root.join("a/m.png"), 8, 8, [70, 80, 90]);
    std::fs::write(root.join("a/notes.txt"), "not an image")?;
    std::fs::write(root.join("README"), "a file at the root is not a class")?;
    // Grayscale with alpha becomes RGB.
    image::GrayAlphaImage::from_pixel(8, 8, image::LumaA([128, 7])).save(root.join("a/sub/gray.png")).unwrap();

    let index = folder::scan(&root)?;
    assert_eq!(index.class_names, vec!["10", "2", "a"]);
    let rel: Vec<(String, i64)> = index
        .samples
        .iter()
        .map(|(p, l)| (p.strip_prefix(&root).unwrap().to_string_lossy().into_owned(), *l))
        .collect();
    let expected = [
        ("10/x.png", 0),
        ("2/A.PNG", 1),
        ("2/b.png", 1),
        ("a/m.png", 2),
        ("a/sub/gray.png", 2),
        ("a/sub/z.png", 2),
        ("a/sub b/y.png", 2),
        ("a/sub/deep/w.png", 2),
    ];
    // (Python's `sorted(os.walk(...))` gives exactly this order for these folders.)
    assert_eq!(rel, expected.iter().map(|(p, l)| (p.to_string(), *l)).collect::<Vec<_>>());

    let set = folder::load(&root, &FolderConfig::default().image_size(4))?;
    assert_eq!(set.images.size(), [8, 3, 4, 4]);
    assert_eq!(set.label_vec(), vec![0, 1, 1, 2, 2, 2, 2, 2]);
    // Solid colours survive the resize: (image, channel) → value at every (y, x).
    let colours =
        [[255, 0, 0], [0, 0, 255], [0, 255, 0], [70, 80, 90], [128, 128, 128], [10, 20, 30], [40, 50, 60], [1, 2, 3]];
    for (i, rgb) in colours.iter().enumerate() {
        for (c, v) in rgb.iter().enumerate() {
            let plane = set.images.get(i as i64).get(c as i64);
            assert_eq!((plane.min().int64_value(&[]), plane.max().int64_value(&[])), (*v, *v), "image {i} channel {c}");
        }
    }
    let capped = folder::load(&root, &FolderConfig::default().image_size(4).max_per_class(1))?;
    assert_eq!(capped.label_vec(), vec![0, 1, 2]);
    Ok(())
}

#[test]
fn folder_resize_keeps_layout() -> Result<()> {
    // A 6×4 image, left half red, right half blue; y-gradient in green.
    let root = tmp_dir("folder_layout");
    let img = image::RgbImage::from_fn(6, 4, |x, y| {
        image::Rgb([if x < 3 { 255 } else { 0 }, (y * 80) as u8, if x < 3 { 0 } else { 255 }])
    });
    std::fs::create_dir_all(root.join("c"))?;
    img.save(root.join("c/i.png")).unwrap();
    let set = folder::load(&root, &FolderConfig::default().image_size(4).resize(ResizeMode::Stretch))?;
    let x = set.images.get(0);
    assert!(x.int64_value(&[0, 0, 0]) > 200 && x.int64_value(&[0, 0, 3]) < 50, "red on the left");
    assert!(x.int64_value(&[2, 0, 3]) > 200 && x.int64_value(&[2, 0, 0]) < 50, "blue on the right");
    assert!(x.int64_value(&[1, 3, 1]) > x.int64_value(&[1, 0, 1]), "green grows downwards");
    Ok(())
}

#[test]
fn folder_errors() -> Result<()> {
    let root = tmp_dir("folder_errors");
    let msg = err_text(folder::load(root.join("nope"), &FolderConfig::default()));
    assert!(msg.contains("nope") && msg.contains("cannot be read"), "{msg}");
    let msg = err_text(folder::load(&root, &FolderConfig::default()));
    assert!(msg.contains("no class folder"), "{msg}");
    std::fs::create_dir_all(root.join("cats"))?;
    write_png(&root.join("dogs/d.png"), 4, 4, [1, 2, 3]);
    std::fs::write(root.join("cats/readme.txt"), "x")?;
    let msg = err_text(folder::load(&root, &FolderConfig::default()));
    assert!(msg.contains("cats") && msg.contains("holds no image"), "{msg}");
    std::fs::write(root.join("cats/broken.jpg"), b"\xff\xd8\xff\xe0 this is not a jpeg")?;
    let msg = err_text(folder::load(&root, &FolderConfig::default().image_size(8)));
    assert!(msg.contains("broken.jpg") && msg.contains("could not read image"), "{msg}");
    assert!(matches!(folder::load(&root, &FolderConfig::default().image_size(0)), Err(Error::Config(_))));
    Ok(())
}

// ---------------------------------------------------------------- in-memory sets

#[test]
fn memory_sets_from_ndarray_and_tensors() -> Result<()> {
    // Channels-last u8, as numpy images are: pixel (n, y, x, c).
    let nhwc = Array4::<u8>::from_shape_fn((2, 5, 4, 3), |(n, y, x, c)| (n * 100 + y * 10 + x * 3 + c) as u8);
    let set = memory::from_ndarray(&nhwc, Some(&[1, 0]), vec!["a".into(), "b".into()], "mine")?;
    assert_eq!(set.images.size(), [2, 3, 5, 4]);
    assert_eq!(set.images.int64_value(&[1, 2, 4, 3]), i64::from(nhwc[[1, 4, 3, 2]]));
    assert_eq!(set.label_vec(), vec![1, 0]);
    // Round trip to ndarray in [N, 3, H, W].
    let back = memory::to_ndarray(&set)?;
    assert_eq!(back[[1, 2, 4, 3]], nhwc[[1, 4, 3, 2]]);

    // Grayscale [N, H, W] is repeated into three channels; empty names become "0", "1", "2".
    let gray = Array3::<u8>::from_shape_fn((3, 2, 2), |(n, y, x)| (n + y + x) as u8);
    let set = memory::from_ndarray(&gray, Some(&[2, 0, 1]), vec![], "gray")?;
    assert_eq!(set.images.size(), [3, 3, 2, 2]);
    assert_eq!(set.images.int64_value(&[2, 1, 1, 1]), 4);
    assert_eq!(set.class_names, vec!["0", "1", "2"]);

    // Floats in [0, 1] become bytes.
    let x = Tensor::from_slice(&[0.0f32, 0.5, 1.0, 0.25]).view([1, 1, 2, 2]);
    let set = memory::from_tensors(&x, None, vec![], "floats")?;
    assert_eq!(bytes_of(&set.images.narrow(1, 0, 1)), vec![0, 128, 255, 64]);

    // Errors: floats outside [0, 1], a bad shape, wrong label count, float labels.
    let msg = err_text(memory::from_tensors(&(x * 255.0), None, vec![], "raw"));
    assert!(msg.contains("[0, 1]") && msg.contains("divide by 255"), "{msg}");
    let bad = Tensor::zeros([2, 5, 4, 4], (Kind::Uint8, selfsup::tch::Device::Cpu));
    assert!(matches!(memory::from_tensors(&bad, None, vec![], "bad"), Err(Error::Shape { .. })));
    assert!(matches!(memory::from_ndarray(&nhwc, Some(&[0]), vec!["a".into()], "n"), Err(Error::Shape { .. })));
    let float_labels = Tensor::from_slice(&[0.0f32, 1.0]);
    let msg = err_text(memory::from_tensors(&bad.narrow(1, 0, 3), Some(&float_labels), vec![], "l"));
    assert!(msg.contains("must be integers"), "{msg}");
    Ok(())
}

#[test]
fn resize_changes_size_and_keeps_labels() -> Result<()> {
    let x = Tensor::full([3, 3, 8, 8], 200, (Kind::Uint8, selfsup::tch::Device::Cpu));
    let set = ImageSet::new(x, Some(Tensor::from_slice(&[0i64, 1, 0])), vec!["a".into(), "b".into()], "flat")?;
    let big = memory::resize(&set, 24, 16)?;
    assert_eq!(big.images.size(), [3, 3, 24, 16]);
    assert_eq!(big.label_vec(), vec![0, 1, 0]);
    assert_eq!((big.images.min().int64_value(&[]), big.images.max().int64_value(&[])), (200, 200));
    let small = selfsup::data::resize(&big, 4, 4)?;
    assert_eq!(small.image_size(), (4, 4));
    assert!(matches!(memory::resize(&set, 0, 4), Err(Error::Config(_))));
    Ok(())
}
