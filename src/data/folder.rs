//! ImageNet-style folders (`root/<class>/<image>`), read as torchvision's `ImageFolder` reads
//! them, decoded with the `image` crate and resized to one size (B2).
//!
//! The ordering is torchvision's, so class indices and sample order match a PyTorch run on the
//! same folder: classes are the sub-folders of the root sorted by name (byte order: "10" before
//! "2"), the class index is the position in that list; files are found recursively (following
//! symbolic links) in `sorted(os.walk(...))` order — folders sorted by their whole path, files
//! by name within a folder — and kept when the lower-cased name ends in one of
//! [`EXTENSIONS`]. Images are converted to RGB (alpha dropped, grayscale repeated); EXIF
//! orientation is not applied, as PIL does not apply it either.
//!
//! Deviation: folders and files whose name starts with '.' and `__MACOSX` folders (what zip
//! tools and macOS leave behind) are skipped, where torchvision would make them classes.
//! A file that does not decode stops the load naming it ([`BadImage::Fail`], the default) or
//! is skipped with a warning ([`BadImage::Skip`]); the memory the images need is checked
//! against the memory available before anything is allocated.
//!
//! Why resize at load time: an [`ImageSet`] is one `[N, 3, H, W]` tensor, so every image needs
//! the same size. [`ResizeMode::CenterCrop`] (the default) keeps the aspect ratio: shorter side
//! to the size, then the centre square, like `Resize(s)` + `CenterCrop(s)`.
//!
//! ```no_run
//! use selfsup::data::folder::{self, FolderConfig};
//! let pets = folder::load("assets/pets/train", &FolderConfig::default().image_size(96))?;
//! println!("{pets}"); // "pets/train: 740 images of 3x96x96, 2 classes"
//! # Ok::<(), selfsup::Error>(())
//! ```
use super::ImageSet;
use crate::error::{config_err, Error, Result};
use image::imageops::FilterType;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// File name endings kept (torchvision's `IMG_EXTENSIONS`), compared in lower case.
pub const EXTENSIONS: [&str; 9] = [".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"];

/// How an image is brought to the square output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ResizeMode {
    /// Shorter side to the size, then the centre square (keeps the aspect ratio).
    #[default]
    CenterCrop,
    /// Both sides to the size (distorts non-square images).
    Stretch,
}

/// What to do with an image file that cannot be read or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum BadImage {
    /// Stop the load with an error naming the file (the default: nothing is silently missing).
    #[default]
    Fail,
    /// Leave the file out, and print one warning naming how many and which were left out.
    Skip,
}

/// How to read an image folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FolderConfig {
    /// Side of the square output images in pixels. 224, torchvision's ImageNet evaluation size
    /// (`Resize(256)` + `CenterCrop(224)`); use 96 to match STL-10, 32 for CIFAR.
    pub image_size: u32,
    /// How images are brought to that size.
    pub resize: ResizeMode,
    /// Keep at most this many images per class (the first ones in torchvision order).
    pub max_per_class: Option<usize>,
    /// What to do with a file that does not decode. Fail.
    #[serde(default)]
    pub on_bad_image: BadImage,
}

impl Default for FolderConfig {
    /// 224×224, centre crop, every image.
    fn default() -> Self {
        FolderConfig { image_size: 224, resize: ResizeMode::CenterCrop, max_per_class: None, on_bad_image: BadImage::Fail }
    }
}

impl FolderConfig {
    /// The same config with another output size.
    pub fn image_size(mut self, size: u32) -> Self {
        self.image_size = size;
        self
    }
    /// The same config with another resize mode.
    pub fn resize(mut self, mode: ResizeMode) -> Self {
        self.resize = mode;
        self
    }
    /// The same config skipping (or not) the files that do not decode.
    pub fn on_bad_image(mut self, what: BadImage) -> Self {
        self.on_bad_image = what;
        self
    }
    /// The same config keeping at most `n` images per class.
    pub fn max_per_class(mut self, n: usize) -> Self {
        self.max_per_class = Some(n);
        self
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(1..=4096).contains(&self.image_size) {
            return Err(config_err!("FolderConfig.image_size must be in 1..=4096, got {}", self.image_size));
        }
        if self.max_per_class == Some(0) {
            return Err(config_err!("FolderConfig.max_per_class must be at least 1 (or None for all)"));
        }
        Ok(())
    }
}

/// What a folder holds: class names (index = label) and the image files with their labels, in
/// torchvision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderIndex {
    /// Sorted class folder names.
    pub class_names: Vec<String>,
    /// `(file, label)` in torchvision's `ImageFolder.samples` order.
    pub samples: Vec<(PathBuf, i64)>,
}

/// Lists the classes and image files of `root` without decoding anything.
///
/// # Errors
/// [`Error::Data`] when `root` is not a folder, has no class sub-folder, or a class folder
/// holds no image with a known extension.
pub fn scan(root: impl AsRef<Path>) -> Result<FolderIndex> {
    let root = root.as_ref();
    let entries = std::fs::read_dir(root).map_err(|e| {
        Error::Data(format!(
            "image folder {} cannot be read ({e}); expected root/<class>/<image> files",
            root.display()
        ))
    })?;
    let mut classes: Vec<std::ffi::OsString> = Vec::new();
    for entry in entries {
        let entry = entry?;
        // `metadata` follows symbolic links, as `DirEntry.is_dir()` does in Python.
        if !skipped(&entry.file_name()) && std::fs::metadata(entry.path()).map(|m| m.is_dir()).unwrap_or(false) {
            classes.push(entry.file_name());
        }
    }
    classes.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes())); // Python's sorted(): code-point order
    if classes.is_empty() {
        return Err(Error::Data(format!(
            "no class folder in {}: expected one sub-folder per class (root/<class>/<image>), as torchvision's ImageFolder",
            root.display()
        )));
    }
    let mut samples = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let files = walk_sorted(&root.join(class))?;
        if files.is_empty() {
            return Err(Error::Data(format!(
                "class folder {} holds no image (looked for {} files, recursively)",
                root.join(class).display(),
                EXTENSIONS.join(" ")
            )));
        }
        samples.extend(files.into_iter().map(|f| (f, label as i64)));
    }
    let class_names = classes.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    Ok(FolderIndex { class_names, samples })
}

/// Reads an image folder into a set of `[N, 3, S, S]` `u8` images, `S = cfg.image_size`, with
/// the class folders as labels. Decoding runs on all cores.
///
/// # Errors
/// The errors of [`scan`] and [`FolderConfig::validate`], and [`Error::Data`] naming the file
/// for an image that cannot be read or decoded.
pub fn load(root: impl AsRef<Path>, cfg: &FolderConfig) -> Result<ImageSet> {
    cfg.validate()?;
    let root = root.as_ref();
    let mut index = scan(root)?;
    if let Some(max) = cfg.max_per_class {
        let mut seen = vec![0usize; index.class_names.len()];
        index.samples.retain(|(_, l)| {
            seen[*l as usize] += 1;
            seen[*l as usize] <= max
        });
    }
    let s = cfg.image_size as usize;
    let per_image = 3 * s * s;
    let n = index.samples.len();
    let mut pixels = allocate(n, per_image, cfg, root)?;
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1).clamp(1, 16);
    let chunk = n.div_ceil(threads).max(1);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = pixels
            .chunks_mut(chunk * per_image)
            .zip(index.samples.chunks(chunk))
            .map(|(px, files)| {
                scope.spawn(move || -> Vec<Result<()>> {
                    px.chunks_mut(per_image).zip(files).map(|(out, (path, _))| decode_into(path, cfg, out)).collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| vec![Err(Error::Data("an image decoding thread panicked".into()))])
            })
            .collect()
    });
    // The failures, in sample order: the first stops the load, or all are left out.
    let failed: Vec<(usize, Error)> =
        results.into_iter().enumerate().filter_map(|(i, r)| r.err().map(|e| (i, e))).collect();
    let mut n = n;
    if let Some((_, first)) = failed.first() {
        if cfg.on_bad_image == BadImage::Fail {
            return Err(Error::Data(format!(
                "{first} ({} unreadable image(s) in {}; FolderConfig::on_bad_image(BadImage::Skip) leaves them out)",
                failed.len(),
                root.display()
            )));
        }
        eprintln!("selfsup: warning: left out {} unreadable image(s) of {}; the first: {first}", failed.len(), root.display());
        let bad: HashSet<usize> = failed.iter().map(|(i, _)| *i).collect();
        let mut kept = 0;
        for i in 0..n {
            if !bad.contains(&i) {
                pixels.copy_within(i * per_image..(i + 1) * per_image, kept * per_image);
                kept += 1;
            }
        }
        pixels.truncate(kept * per_image);
        let mut i = 0;
        index.samples.retain(|_| {
            i += 1;
            !bad.contains(&(i - 1))
        });
        n = kept;
        if n == 0 {
            return Err(Error::Data(format!("no image of {} could be read", root.display())));
        }
    }
    let labels: Vec<i64> = index.samples.iter().map(|(_, l)| *l).collect();
    let images = Tensor::from_slice(&pixels).view([n as i64, 3, s as i64, s as i64]);
    let name = root
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("/");
    ImageSet::new(images, Some(Tensor::from_slice(&labels)), index.class_names, name)
}

/// Names left out of the scan: hidden ones ('.git', '._x.jpg') and macOS zip leftovers.
fn skipped(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') || name == "__MACOSX"
}

/// Bytes of memory available to this process (`MemAvailable` of /proc/meminfo), when known.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The zeroed pixel buffer of `n` images, after checking that it fits in memory: an error
/// that says how much is needed and what to do, rather than an abort.
fn allocate(n: usize, per_image: usize, cfg: &FolderConfig, root: &Path) -> Result<Vec<u8>> {
    let gb = |b: u64| b as f64 / 1e9;
    let advice = |need: u64, have: Option<u64>| {
        let have = have.map_or(String::new(), |h| format!(", and {:.2} GB are available", gb(h)));
        Error::Data(format!(
            "{n} images of {root} at {s}x{s} need {need:.2} GB of memory{have}: load fewer \
             (FolderConfig::max_per_class) or smaller ones (image_size(96) needs {small:.2} GB)",
            root = root.display(),
            s = cfg.image_size,
            need = gb(need),
            small = gb((n as u64).saturating_mul(3 * 96 * 96)),
        ))
    };
    let Some(bytes) = n.checked_mul(per_image) else { return Err(advice(u64::MAX, available_memory())) };
    if let Some(have) = available_memory() {
        if bytes as u64 > have {
            return Err(advice(bytes as u64, Some(have)));
        }
    }
    let mut pixels = Vec::new();
    pixels.try_reserve_exact(bytes).map_err(|_| advice(bytes as u64, available_memory()))?;
    pixels.resize(bytes, 0);
    Ok(pixels)
}

/// Decodes one image, converts it to RGB, resizes it and writes it channel-major into `out`.
fn decode_into(path: &Path, cfg: &FolderConfig, out: &mut [u8]) -> Result<()> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::Data(format!("could not read image {}: {e}; remove it or replace it with a valid image", path.display()))
    };
    let reader = image::ImageReader::open(path).map_err(|e| unreadable(&e))?;
    let reader = reader.with_guessed_format().map_err(|e| unreadable(&e))?;
    let img = reader.decode().map_err(|e| unreadable(&e))?;
    let rgb = image::DynamicImage::ImageRgb8(img.to_rgb8());
    let s = cfg.image_size;
    let resized = match cfg.resize {
        ResizeMode::CenterCrop => rgb.resize_to_fill(s, s, FilterType::Triangle),
        ResizeMode::Stretch => rgb.resize_exact(s, s, FilterType::Triangle),
    }
    .to_rgb8();
    let plane = (s * s) as usize;
    for (i, p) in resized.pixels().enumerate() {
        out[i] = p[0];
        out[plane + i] = p[1];
        out[2 * plane + i] = p[2];
    }
    Ok(())
}

/// Image files under `dir`, recursively and following links, in `sorted(os.walk(dir))` order:
/// folders by their whole path (as bytes), files by name within each folder.
fn walk_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut folders: Vec<(PathBuf, Vec<std::ffi::OsString>)> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut visited = HashSet::new();
    while let Some(d) = stack.pop() {
        // A link back to an ancestor would loop forever; visit each real folder once.
        if !visited.insert(std::fs::canonicalize(&d).unwrap_or_else(|_| d.clone())) {
            continue;
        }
        let entries = std::fs::read_dir(&d).map_err(|e| Error::Data(format!("could not list {}: {e}", d.display())))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if skipped(&entry.file_name()) {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(_) => {
                    let lower = entry.file_name().to_string_lossy().to_lowercase();
                    if EXTENSIONS.iter().any(|ext| lower.ends_with(ext)) {
                        files.push(entry.file_name());
                    }
                }
                Err(_) => {} // a dangling link: os.walk skips it too
            }
        }
        files.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        folders.push((d, files));
    }
    // Whole-path string order, not component order: "a b" sorts before "a/x" (' ' < '/').
    folders.sort_by(|a, b| a.0.as_os_str().as_encoded_bytes().cmp(b.0.as_os_str().as_encoded_bytes()));
    Ok(folders.into_iter().flat_map(|(d, files)| files.into_iter().map(move |f| d.join(f))).collect())
}
