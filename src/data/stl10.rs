//! STL-10, the binary version (`stl10_binary/`), as the homework uses it (S2.0).
//!
//! Coates, Lee & Ng 2011, *An Analysis of Single-Layer Networks in Unsupervised Feature
//! Learning* (AISTATS), <https://cs.stanford.edu/~acoates/stl10/>: 96×96 colour images of ten
//! classes, 5,000 labelled train images (in 10 predefined folds of 1,000), 8,000 test images and
//! 100,000 unlabelled images for self-supervised pre-training.
//!
//! The files have no header: every image is 3 × 96 × 96 bytes, R then G then B, and each
//! channel is stored **column-major** (`offset = i·27648 + c·9216 + x·96 + y`), so the raw bytes
//! viewed as `[N, 3, 96, 96]` are `[N, C, W, H]` and one `transpose(2, 3)` puts them right.
//!
//! Why memory maps: the unlabelled file is 2.76 GB of `u8` (11 GB as `f32`). It is mapped,
//! never read into memory, and [`load`] returns a *view* over the mapping; the pages are read
//! when a batch is taken (`select`, the loader) and the kernel can drop them again. The
//! libtorch tensor owns its mapping (`Tensor::from_file`), so the view stays valid however long
//! the tensor lives. The mapping is private: writing into the images changes this process's
//! copy, never the file.
//!
//! Used by `notebooks/` for the STL-10 homework (S2): SimCLR/BYOL pre-training on the unlabelled
//! split, linear probes on train, and the out-of-distribution test on CIFAR-10 ([`to_cifar10`]).
//!
//! ```no_run
//! use selfsup::data::{download, stl10, Split};
//! let dir = download::stl10("assets/data")?; // skips the download when already there
//! let unlabeled = stl10::load(&dir, Split::Unlabeled)?; // a 2.76 GB memory map, u8
//! let train = stl10::load(&dir, Split::Train)?;
//! let fold0 = stl10::load_fold(&dir, 0)?; // the 1,000 images of fold 0
//! # Ok::<(), selfsup::Error>(())
//! ```
use super::fsutil::{file_len, path_str, read_all, read_lines, thousands};
use super::{ImageSet, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The ten classes, in label order (`class_names.txt`).
pub const CLASS_NAMES: [&str; 10] =
    ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"];

/// Side of the square images.
pub const IMAGE_SIZE: i64 = 96;
/// Bytes per image: 3 × 96 × 96.
pub const IMAGE_BYTES: u64 = 3 * 96 * 96;
/// Images in the labelled train split; fold indices point into it.
pub const TRAIN_LEN: usize = 5000;
/// Number of predefined folds in `fold_indices.txt`.
pub const NUM_FOLDS: usize = 10;

/// The CIFAR-10 label of each STL-10 class, for the out-of-distribution test (S2.T6).
///
/// Nine classes are shared (STL-10 "car" is CIFAR-10 "automobile"). STL-10 has "monkey" where
/// CIFAR-10 has "frog"; the homework scores a "monkey" prediction on CIFAR-10 as "frog", so
/// index 7 maps to 6. The table is its own inverse: it also maps CIFAR-10 labels to STL-10
/// labels (frog → monkey).
pub const STL10_TO_CIFAR10: [i64; 10] = [0, 2, 1, 3, 4, 5, 7, 6, 8, 9];

/// Which images to load. [`Split`] converts into it, so `load(dir, Split::Train)` works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Stl10Split {
    /// 5,000 labelled images (`train_X.bin`, `train_y.bin`).
    Train,
    /// 8,000 labelled images (`test_X.bin`, `test_y.bin`).
    Test,
    /// 100,000 unlabelled images (`unlabeled_X.bin`), memory-mapped.
    Unlabeled,
    /// Train followed by unlabelled (105,000 images, no labels): torchvision's
    /// `split="train+unlabeled"`, the usual pre-training set.
    TrainUnlabeled,
}

impl From<Split> for Stl10Split {
    fn from(split: Split) -> Self {
        match split {
            Split::Train => Stl10Split::Train,
            Split::Test => Stl10Split::Test,
            Split::Unlabeled => Stl10Split::Unlabeled,
        }
    }
}

impl Stl10Split {
    /// Lower-case name as torchvision spells it: "train", "test", "unlabeled", "train+unlabeled".
    pub fn name(self) -> &'static str {
        match self {
            Stl10Split::Train => "train",
            Stl10Split::Test => "test",
            Stl10Split::Unlabeled => "unlabeled",
            Stl10Split::TrainUnlabeled => "train+unlabeled",
        }
    }
}

const HINT: &str = "download STL-10 with `data::download::stl10(dir)?` or extract stl10_binary.tar.gz \
                    (http://ai.stanford.edu/~acoates/stl10/) into the folder";

/// The folder that holds the `.bin` files: `dir` itself, or `dir/stl10_binary`.
///
/// # Errors
/// [`Error::Data`] when neither holds an STL-10 file.
pub fn find_dir(dir: impl AsRef<Path>) -> Result<PathBuf> {
    let dir = dir.as_ref();
    let nested = dir.join("stl10_binary");
    let has_files = |d: &Path| ["train_X.bin", "test_X.bin", "unlabeled_X.bin"].iter().any(|f| d.join(f).is_file());
    if has_files(&nested) {
        return Ok(nested);
    }
    if has_files(dir) {
        return Ok(dir.to_path_buf());
    }
    Err(Error::Data(format!(
        "STL-10 not found in {}: expected stl10_binary/ with train_X.bin, test_X.bin, unlabeled_X.bin; {HINT}",
        dir.display()
    )))
}

/// Loads one split of STL-10 from `dir` (the `stl10_binary` folder or its parent) as `u8`
/// images `[N, 3, 96, 96]` with labels `0..10` (none for the unlabelled splits).
///
/// Train and test are read into memory (138 MB and 221 MB). Unlabelled is a view over a
/// memory map of the file (see the module doc); train+unlabeled is a view over both files
/// mapped back to back (Linux), or one copy in memory elsewhere.
///
/// # Errors
/// [`Error::Data`] naming the file when it is missing, its size is not a whole number of
/// 27,648-byte images, the label file does not hold one byte per image, a label is outside
/// 1..=10, or `class_names.txt` does not list ten names.
///
/// # Example
/// ```no_run
/// use selfsup::data::{stl10, Split};
/// let test = stl10::load("assets/data", Split::Test)?;
/// assert_eq!(test.images.size(), [8000, 3, 96, 96]);
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn load(dir: impl AsRef<Path>, split: impl Into<Stl10Split>) -> Result<ImageSet> {
    let split = split.into();
    let dir = find_dir(dir)?;
    let names = class_names(&dir)?;
    let name = format!("STL-10 / {}", split.name());
    match split {
        Stl10Split::Train | Stl10Split::Test => {
            let stem = if split == Stl10Split::Train { "train" } else { "test" };
            let x_path = dir.join(format!("{stem}_X.bin"));
            let n = image_count(&x_path)?;
            warn_unofficial(&x_path, n, if split == Stl10Split::Train { TRAIN_LEN } else { 8_000 });
            let labels = read_labels(&dir.join(format!("{stem}_y.bin")), &x_path, n)?;
            // Map, fix the column-major layout, and copy once into a contiguous tensor.
            let images = map_images(&x_path, n)?.contiguous(); // [N, 3, 96, 96]
            ImageSet::new(images, Some(Tensor::from_slice(&labels)), names, name)
        }
        Stl10Split::Unlabeled => {
            let x_path = dir.join("unlabeled_X.bin");
            let n = image_count(&x_path)?;
            warn_unofficial(&x_path, n, 100_000);
            let images = map_images(&x_path, n)?; // [N, 3, 96, 96], a strided view of the map
            ImageSet::new(images, None, names, name)
        }
        Stl10Split::TrainUnlabeled => {
            let paths = [dir.join("train_X.bin"), dir.join("unlabeled_X.bin")];
            let counts = [image_count(&paths[0])?, image_count(&paths[1])?];
            warn_unofficial(&paths[0], counts[0], TRAIN_LEN);
            warn_unofficial(&paths[1], counts[1], 100_000);
            let images = map_concatenated(&paths, &counts)?; // [N1 + N2, 3, 96, 96]
            ImageSet::new(images, None, names, name)
        }
    }
}

/// The ten class names from `class_names.txt` (or [`CLASS_NAMES`] when the file is absent).
///
/// # Errors
/// [`Error::Data`] when the file exists but does not hold exactly ten names.
pub fn class_names(dir: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = dir.as_ref().join("class_names.txt");
    if !path.exists() {
        return Ok(CLASS_NAMES.iter().map(|s| s.to_string()).collect());
    }
    let names = read_lines(&path, "STL-10 class names", HINT)?;
    if names.len() != CLASS_NAMES.len() {
        return Err(Error::Data(format!(
            "{}: expected 10 class names (one per line), found {}: {:?}",
            path.display(),
            names.len(),
            names
        )));
    }
    Ok(names)
}

/// The ten predefined training folds from `fold_indices.txt`: each a list of 0-based indices
/// into the train split (1,000 per fold in the official file).
///
/// # Errors
/// [`Error::Data`] when the file is missing, does not have ten non-empty lines, or holds
/// something other than indices in `0..5000`.
pub fn folds(dir: impl AsRef<Path>) -> Result<Vec<Vec<i64>>> {
    let dir = find_dir(dir)?;
    let path = dir.join("fold_indices.txt");
    let bytes = read_all(&path, "STL-10 fold indices", HINT)?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != NUM_FOLDS {
        return Err(Error::Data(format!(
            "{}: expected {NUM_FOLDS} lines of indices (one per fold), found {}",
            path.display(),
            lines.len()
        )));
    }
    let mut out = Vec::with_capacity(NUM_FOLDS);
    for (l, line) in lines.iter().enumerate() {
        let mut fold = Vec::new();
        for token in line.split_whitespace() {
            let i: usize = token.parse().map_err(|_| {
                Error::Data(format!(
                    "{}: fold {l} holds '{token}', expected a non-negative integer index",
                    path.display()
                ))
            })?;
            if i >= TRAIN_LEN {
                return Err(Error::Data(format!(
                    "{}: fold {l} holds index {i}, expected indices in 0..{TRAIN_LEN} (the train split)",
                    path.display()
                )));
            }
            fold.push(i as i64);
        }
        out.push(fold);
    }
    Ok(out)
}

/// The train images of fold `fold` (`0..10`), in the order the file lists them.
///
/// # Errors
/// [`Error::Config`] for a fold outside `0..10`, plus the errors of [`load`] and [`folds`].
pub fn load_fold(dir: impl AsRef<Path>, fold: usize) -> Result<ImageSet> {
    if fold >= NUM_FOLDS {
        return Err(Error::Config(format!("STL-10 fold must be in 0..{NUM_FOLDS}, got {fold}")));
    }
    let dir = find_dir(dir)?;
    let indices = folds(&dir)?;
    let train = load(&dir, Stl10Split::Train)?;
    let mut set = train.select(&indices[fold])?;
    set.name = format!("STL-10 / train fold {fold}");
    Ok(set)
}

/// Maps predictions of an STL-10 classifier (`[N]` labels `0..10`) to CIFAR-10 labels with
/// [`STL10_TO_CIFAR10`], "monkey" scored as "frog" (S2.T6). Compare the result with the CIFAR-10
/// test labels for the out-of-distribution accuracy.
///
/// # Errors
/// [`Error::Shape`] unless `predictions` is 1-D; [`Error::Data`] for a value outside `0..10`.
pub fn to_cifar10(predictions: &Tensor) -> Result<Tensor> {
    remap(predictions, "STL-10 predictions")
}

/// Maps CIFAR-10 labels (`[N]`, `0..10`) to the STL-10 label of the same class ("automobile" →
/// "car", "frog" → "monkey"), the inverse of [`to_cifar10`]: a CIFAR-10 test set relabelled this
/// way can be scored directly against an STL-10 classifier.
///
/// # Errors
/// As [`to_cifar10`].
pub fn from_cifar10(labels: &Tensor) -> Result<Tensor> {
    remap(labels, "CIFAR-10 labels")
}

fn remap(labels: &Tensor, what: &str) -> Result<Tensor> {
    if labels.dim() != 1 {
        return Err(Error::shape(what, "[N]", &labels.size()));
    }
    let values = Vec::<i64>::try_from(labels.to_kind(Kind::Int64).to_device(Device::Cpu))?;
    let mut out = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        let Some(&m) = usize::try_from(v).ok().and_then(|v| STL10_TO_CIFAR10.get(v)) else {
            return Err(Error::Data(format!("{what}: value {v} at position {i} is outside 0..10")));
        };
        out.push(m);
    }
    Ok(Tensor::from_slice(&out).to_device(labels.device()))
}

/// Number of whole images in an `_X.bin` file, checking that nothing is left over.
/// Prints a warning when a split holds another number of images than the official release: a
/// file truncated exactly on an image boundary passes the size check.
fn warn_unofficial(path: &Path, n: usize, official: usize) {
    if n != official {
        eprintln!(
            "selfsup: warning: {} holds {} images, the official STL-10 file {}: it is truncated or modified \
             (download it again for comparable results)",
            path.display(),
            thousands(n as u64),
            thousands(official as u64)
        );
    }
}

fn image_count(path: &Path) -> Result<usize> {
    let len = file_len(path, "STL-10 images", HINT)?;
    if len == 0 || len % IMAGE_BYTES != 0 {
        return Err(Error::Data(format!(
            "{}: expected a whole number of 27,648-byte STL-10 images (3x96x96), found {} bytes \
             ({} images and {} bytes left over); the file is truncated or not STL-10, download it again",
            path.display(),
            thousands(len),
            len / IMAGE_BYTES,
            len % IMAGE_BYTES
        )));
    }
    Ok((len / IMAGE_BYTES) as usize)
}

/// Reads `n` labels (bytes 1..=10) and returns them as 0..10.
fn read_labels(path: &Path, images: &Path, n: usize) -> Result<Vec<i64>> {
    let bytes = read_all(path, "STL-10 labels", HINT)?;
    if bytes.len() != n {
        return Err(Error::Data(format!(
            "{}: expected {n} label bytes (one per image of {}), found {}",
            path.display(),
            images.display(),
            bytes.len()
        )));
    }
    bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (1..=10).contains(&b) {
                Ok(i64::from(b) - 1)
            } else {
                Err(Error::Data(format!("{}: label of image {i} is {b}, expected 1..=10", path.display())))
            }
        })
        .collect()
}

/// A private memory map of `path` as `[n, 3, 96, 96]` u8 with the column-major channels
/// transposed (a strided view; nothing is read yet).
fn map_images(path: &Path, n: usize) -> Result<Tensor> {
    let n = n as i64;
    let flat = Tensor::f_from_file(path_str(path)?, false, n * IMAGE_BYTES as i64, (Kind::Uint8, Device::Cpu))
        .map_err(|e| Error::Data(format!("could not memory-map {}: {e}", path.display())))?;
    Ok(flat.view([n, 3, IMAGE_SIZE, IMAGE_SIZE]).transpose(2, 3)) // bytes are [N, C, W, H] → [N, C, H, W]
}

/// Train and unlabelled images as one `[N1 + N2, 3, 96, 96]` tensor without copying them, when
/// the platform allows; otherwise one copy in memory.
fn map_concatenated(paths: &[PathBuf; 2], counts: &[usize; 2]) -> Result<Tensor> {
    let n = (counts[0] + counts[1]) as i64;
    #[cfg(target_os = "linux")]
    if let Some(addr) = concat_map::map(paths)? {
        // SAFETY: `addr` is the start of a private mapping of `n * 27648` bytes that this process
        // never unmaps (see `concat_map`), so the pointer stays valid for any tensor lifetime.
        let flat = unsafe {
            Tensor::f_from_blob(addr as *const u8, &[n, 3, IMAGE_SIZE, IMAGE_SIZE], &[], Kind::Uint8, Device::Cpu)?
        };
        return Ok(flat.transpose(2, 3));
    }
    // Deviation: elsewhere (or when the train file does not end on a page boundary) the two
    // files are copied into one tensor, 2.9 GB of u8 in memory.
    println!("STL-10 train+unlabeled: copying {n} images into memory (no back-to-back memory map here)");
    let parts = [map_images(&paths[0], counts[0])?, map_images(&paths[1], counts[1])?];
    Ok(Tensor::cat(&parts, 0))
}

/// Back-to-back private mappings of several files in one address range (Linux).
///
/// Why not a plain `cat`: that would copy 2.9 GB. Instead an address range of the total size
/// is reserved and each file is mapped into its place with `MAP_FIXED`, which needs every file
/// but the last to end on a page boundary (the 138,240,000-byte train file does, for 4 KiB
/// pages). A tensor made with `from_blob` cannot own such a mapping, so the mappings are never
/// unmapped: they live in a process-wide table and the same files map once per process. A
/// mapping costs address space, not memory; its pages are the page cache's to drop.
#[cfg(target_os = "linux")]
mod concat_map {
    use crate::error::{Error, Result};
    use std::os::unix::io::AsRawFd;
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::time::SystemTime;

    type Key = Vec<(PathBuf, u64, Option<SystemTime>)>;
    static MAPPINGS: Mutex<Vec<(Key, usize)>> = Mutex::new(Vec::new());

    /// The address of the files mapped back to back, or `None` when a file does not end on a
    /// page boundary.
    pub(super) fn map(paths: &[PathBuf]) -> Result<Option<usize>> {
        let mut key = Key::new();
        for p in paths {
            let meta = std::fs::metadata(p)?;
            key.push((std::fs::canonicalize(p)?, meta.len(), meta.modified().ok()));
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = if page > 0 { page as u64 } else { 4096 };
        let (_, all_but_last) = key.split_last().ok_or_else(|| Error::Data("no file to map".into()))?;
        if all_but_last.iter().any(|(_, len, _)| len % page != 0) {
            return Ok(None);
        }
        let mut table = MAPPINGS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, addr)) = table.iter().find(|(k, _)| *k == key) {
            return Ok(Some(*addr));
        }
        let total: u64 = key.iter().map(|(_, len, _)| len).sum();
        let total = usize::try_from(total).map_err(|_| Error::Data("files too large to map".into()))?;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: reserving a fresh anonymous range; the kernel picks the address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Error::Data(format!(
                "could not reserve {total} bytes of address space: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut offset = 0usize;
        for (path, len, _) in &key {
            let file = std::fs::File::open(path)?;
            let len = *len as usize;
            // SAFETY: the target lies inside the range reserved above, which nothing else uses;
            // MAP_FIXED replaces our own reservation there. The fd may close afterwards.
            let got = unsafe {
                libc::mmap(
                    (base as *mut u8).add(offset) as *mut libc::c_void,
                    len,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_FIXED,
                    file.as_raw_fd(),
                    0,
                )
            };
            if got == libc::MAP_FAILED {
                let e = std::io::Error::last_os_error();
                // SAFETY: unmapping exactly the range reserved above, which no tensor uses yet.
                unsafe { libc::munmap(base, total) };
                return Err(Error::Data(format!("could not memory-map {}: {e}", path.display())));
            }
            offset += len;
        }
        table.push((key, base as usize));
        Ok(Some(base as usize))
    }
}
