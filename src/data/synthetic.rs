//! The embedded dataset: seeded, procedurally drawn "shapes", no download needed (B1).
//!
//! Ten classes of shapes — disc, ring, square, frame, triangle, star, cross, hexagon, crescent,
//! bars — each drawn with a random colour, size, position and rotation over a random textured
//! background (gradient, stripes, checkerboard or blobs), with pixel noise. The class is carried
//! only by the *outline*: colour, position, scale, rotation and texture are nuisances, exactly the
//! things the SSL augmentations (crops, colour jitter, grayscale) teach a network to ignore. So a
//! pre-trained encoder has something real to learn, and a linear probe on it beats random
//! weights, while a notebook still runs end to end on a laptop CPU in minutes.
//!
//! Splits are shaped like STL-10 (labelled train, test, and a larger unlabelled split) but small
//! by default. The same seed gives the same bytes: each image draws from its own generator seeded
//! by (seed, split, index), so results do not depend on the number of threads.
//!
//! ```no_run
//! use selfsup::data::{synthetic::{self, SyntheticConfig}, Split};
//! let train = synthetic::load(Split::Train, &SyntheticConfig::default())?; // 1000 images, 32x32
//! let unlabeled = synthetic::load(Split::Unlabeled, &SyntheticConfig::stl10_like())?; // 96x96
//! # Ok::<(), selfsup::Error>(())
//! ```
use super::{ImageSet, Split};
use crate::device::{splitmix64, GOLDEN_GAMMA};
use crate::error::{config_err, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::f32::consts::PI;
use tch::Tensor;

/// The ten classes, in label order.
pub const CLASS_NAMES: [&str; 10] =
    ["disc", "ring", "square", "frame", "triangle", "star", "cross", "hexagon", "crescent", "bars"];

/// Size and seed of the embedded dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SyntheticConfig {
    /// Side of the square images in pixels (32 like CIFAR, 96 like STL-10; 16..=256).
    pub image_size: u32,
    /// Labelled training images per class.
    pub train_per_class: usize,
    /// Test images per class.
    pub test_per_class: usize,
    /// Unlabelled images (for self-supervised pre-training).
    pub unlabeled: usize,
    /// Seed: the same seed gives the same bytes.
    pub seed: u64,
    /// Standard deviation of the Gaussian pixel noise, on the `[0, 1]` scale.
    pub noise: f32,
}

impl Default for SyntheticConfig {
    /// CIFAR-sized: 32x32, 1,000 labelled train, 1,000 test, 5,000 unlabelled images.
    fn default() -> Self {
        SyntheticConfig { image_size: 32, train_per_class: 100, test_per_class: 100, unlabeled: 5000, seed: 0, noise: 0.04 }
    }
}

impl SyntheticConfig {
    /// STL-10-shaped: 96x96, 500 train, 800 test, 5,000 unlabelled (STL-10 is 5k/8k/100k).
    pub fn stl10_like() -> Self {
        SyntheticConfig { image_size: 96, train_per_class: 50, test_per_class: 80, unlabeled: 5000, ..Default::default() }
    }
    /// A very small set for tests: 32x32, 100 train, 100 test, 200 unlabelled.
    pub fn tiny() -> Self {
        SyntheticConfig { image_size: 32, train_per_class: 10, test_per_class: 10, unlabeled: 200, ..Default::default() }
    }
    /// The same config with another image size.
    pub fn image_size(mut self, size: u32) -> Self {
        self.image_size = size;
        self
    }
    /// The same config with another seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(16..=256).contains(&self.image_size) {
            return Err(config_err!("SyntheticConfig.image_size must be in 16..=256, got {}", self.image_size));
        }
        if !(0.0..=0.5).contains(&self.noise) {
            return Err(config_err!("SyntheticConfig.noise must be in 0..=0.5, got {}", self.noise));
        }
        Ok(())
    }
    /// Number of images in `split`.
    pub fn len(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train_per_class * CLASS_NAMES.len(),
            Split::Test => self.test_per_class * CLASS_NAMES.len(),
            Split::Unlabeled => self.unlabeled,
        }
    }
}

/// Draws `split` of the embedded dataset. Train and test are class-balanced (`label = i % 10`);
/// the unlabelled split has no labels (its images are drawn from all classes at random).
pub fn load(split: Split, cfg: &SyntheticConfig) -> Result<ImageSet> {
    cfg.validate()?;
    let n = cfg.len(split);
    let s = cfg.image_size as usize;
    let per_image = 3 * s * s;
    let mut pixels = vec![0u8; n * per_image];
    let mut labels = vec![0i64; n];
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1).min(16);
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (c, (px, lb)) in pixels.chunks_mut(chunk * per_image).zip(labels.chunks_mut(chunk)).enumerate() {
            scope.spawn(move || {
                for (j, (img, label)) in px.chunks_mut(per_image).zip(lb.iter_mut()).enumerate() {
                    let (class, mut rng) = image_rng(cfg, split, c * chunk + j);
                    draw(class, cfg.image_size, cfg.noise, &mut rng, img);
                    *label = class as i64;
                }
            });
        }
    });
    let images = Tensor::from_slice(&pixels).view([n as i64, 3, s as i64, s as i64]);
    let labels = match split {
        Split::Unlabeled => None,
        _ => Some(Tensor::from_slice(&labels)),
    };
    let names = CLASS_NAMES.iter().map(|c| c.to_string()).collect();
    ImageSet::new(images, labels, names, format!("synthetic shapes {s}px / {}", split.name()))
}

/// One seed per (seed, split, index), mixed with SplitMix64 so neighbours are unrelated.
fn image_seed(seed: u64, split: Split, index: u64) -> u64 {
    let salt = match split {
        Split::Train => 0x7472_6169_6e00_0000,
        Split::Test => 0x7465_7374_0000_0000,
        Split::Unlabeled => 0x756e_6c61_6265_6c00,
    };
    splitmix64(seed ^ salt ^ index.wrapping_mul(GOLDEN_GAMMA))
}

/// The random choices behind one image, drawn in a fixed order from the image's own generator,
/// so the pixels ([`draw`]) and the object's mask ([`object_masks`]) come from the same scene.
struct Scene {
    bg1: [f32; 3],
    bg2: [f32; 3],
    fg: [f32; 3],
    texture: Texture,
    /// Radius in pixels.
    r: f32,
    centre: (f32, f32),
    /// Rotation as (sin θ, cos θ).
    rotation: (f32, f32),
    shade_dir: (f32, f32),
}

impl Scene {
    fn sample(size: u32, rng: &mut ChaCha8Rng) -> Scene {
        let s = size as f32;
        // Light shape on dark ground or dark shape on light ground, so the outline always shows,
        // in colour and in grayscale.
        let dark_ground = rng.random_bool(0.5);
        let (bg_v, fg_v) = if dark_ground { ((0.08, 0.42), (0.65, 1.0)) } else { ((0.62, 0.95), (0.05, 0.38)) };
        let bg1 = hsv(rng.random::<f32>(), rng.random_range(0.0..0.7), rng.random_range(bg_v.0..bg_v.1));
        let bg2 = hsv(rng.random::<f32>(), rng.random_range(0.0..0.7), rng.random_range(bg_v.0..bg_v.1));
        let fg = hsv(rng.random::<f32>(), rng.random_range(0.3..1.0), rng.random_range(fg_v.0..fg_v.1));
        let texture = Texture::random(rng, s);
        let r = rng.random_range(0.2..0.34) * s;
        let cx = rng.random_range(0.32..0.68) * s;
        let cy = rng.random_range(0.32..0.68) * s;
        let theta = rng.random_range(0.0..2.0 * PI);
        let shade_dir = rng.random_range(0.0..2.0 * PI).sin_cos();
        Scene { bg1, bg2, fg, texture, r, centre: (cx, cy), rotation: theta.sin_cos(), shade_dir }
    }

    /// The pixel centre `(px, py)` in the shape's frame: translated, rotated by −θ, in radii.
    fn shape_frame(&self, px: f32, py: f32) -> (f32, f32) {
        let (sin, cos) = self.rotation;
        let (dx, dy) = (px - self.centre.0, py - self.centre.1);
        ((cos * dx + sin * dy) / self.r, (-sin * dx + cos * dy) / self.r)
    }

    /// How much of the pixel the shape covers, with a 1-pixel anti-aliased edge: in [0, 1].
    fn coverage(&self, class: usize, q: (f32, f32)) -> f32 {
        (0.5 - sdf(class, q) * self.r).clamp(0.0, 1.0)
    }
}

/// The class of image `index` of `split`, and its generator positioned after that choice.
fn image_rng(cfg: &SyntheticConfig, split: Split, index: usize) -> (usize, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(image_seed(cfg.seed, split, index as u64));
    let class = match split {
        Split::Unlabeled => rng.random_range(0..CLASS_NAMES.len()),
        _ => index % CLASS_NAMES.len(),
    };
    (class, rng)
}

/// Draws one image of `class` into `out` (`[3, size, size]`, channel-major).
fn draw(class: usize, size: u32, noise: f32, rng: &mut ChaCha8Rng, out: &mut [u8]) {
    let scene = Scene::sample(size, rng);
    let plane = (size * size) as usize;
    for y in 0..size {
        for x in 0..size {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let t = scene.texture.at(px, py);
            let q = scene.shape_frame(px, py);
            let coverage = scene.coverage(class, q);
            let shade = 0.88 + 0.12 * (q.0 * scene.shade_dir.0 + q.1 * scene.shade_dir.1).clamp(-1.0, 1.0);
            let i = y as usize * size as usize + x as usize;
            for c in 0..3 {
                let ground = scene.bg1[c] + (scene.bg2[c] - scene.bg1[c]) * t;
                let v = ground + (scene.fg[c] * shade - ground) * coverage + noise * gaussian(rng);
                out[c * plane + i] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
}

/// Where the object is in images `indices` of `split`: `[n, S, S]` float in [0, 1], the
/// fraction of each pixel the shape covers (1 inside, 0 on the ground, in between on the
/// anti-aliased edge). The generator replays each image's scene, so the masks match
/// [`load`]'s images pixel for pixel — what lets a notebook measure how much of an activation
/// map lands on the object ([`crate::eval::energy_in_mask`]).
///
/// # Errors
/// An invalid config; an index out of range for the split.
///
/// ```
/// use selfsup::data::{synthetic::{self, SyntheticConfig}, Split};
/// let cfg = SyntheticConfig::tiny();
/// let masks = synthetic::object_masks(Split::Test, &cfg, &[0, 1, 2])?; // [3, 32, 32]
/// assert_eq!(masks.size(), [3, 32, 32]);
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn object_masks(split: Split, cfg: &SyntheticConfig, indices: &[usize]) -> Result<Tensor> {
    cfg.validate()?;
    let n = cfg.len(split);
    if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
        return Err(config_err!("object_masks: index {bad} is out of range for the {} split of {n} images", split.name()));
    }
    let size = cfg.image_size;
    let plane = (size * size) as usize;
    let mut out = vec![0f32; indices.len() * plane];
    for (mask, &i) in out.chunks_mut(plane).zip(indices) {
        let (class, mut rng) = image_rng(cfg, split, i);
        let scene = Scene::sample(size, &mut rng);
        for y in 0..size {
            for x in 0..size {
                let q = scene.shape_frame(x as f32 + 0.5, y as f32 + 0.5);
                mask[(y * size + x) as usize] = scene.coverage(class, q);
            }
        }
    }
    Ok(Tensor::from_slice(&out).view([indices.len() as i64, size as i64, size as i64]))
}

/// Background textures: a value in `[0, 1]` per pixel that mixes the two ground colours.
enum Texture {
    Gradient { dir: (f32, f32), size: f32 },
    Stripes { dir: (f32, f32), freq: f32, phase: f32 },
    Checker { dir: (f32, f32), cell: f32 },
    Blobs { centres: [(f32, f32, f32); 3] },
}

impl Texture {
    fn random(rng: &mut ChaCha8Rng, s: f32) -> Texture {
        let dir = rng.random_range(0.0..2.0 * PI).sin_cos();
        match rng.random_range(0..4) {
            0 => Texture::Gradient { dir, size: s },
            1 => Texture::Stripes { dir, freq: rng.random_range(2.0..7.0) * 2.0 * PI / s, phase: rng.random_range(0.0..2.0 * PI) },
            2 => Texture::Checker { dir, cell: rng.random_range(0.1..0.3) * s },
            _ => {
                let mut blob = || (rng.random_range(0.0..s), rng.random_range(0.0..s), rng.random_range(0.15..0.4) * s);
                Texture::Blobs { centres: [blob(), blob(), blob()] }
            }
        }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        match *self {
            Texture::Gradient { dir, size } => ((x - size / 2.0) * dir.0 + (y - size / 2.0) * dir.1) / size + 0.5,
            Texture::Stripes { dir, freq, phase } => 0.5 + 0.5 * ((x * dir.0 + y * dir.1) * freq + phase).sin(),
            Texture::Checker { dir, cell } => {
                let (u, v) = (x * dir.0 + y * dir.1, -x * dir.1 + y * dir.0);
                (((u / cell).floor() + (v / cell).floor()).rem_euclid(2.0)) * 0.8 + 0.1
            }
            Texture::Blobs { centres } => centres
                .iter()
                .map(|&(bx, by, br)| (-((x - bx).powi(2) + (y - by).powi(2)) / (2.0 * br * br)).exp())
                .sum::<f32>()
                .min(1.0),
        }
        .clamp(0.0, 1.0)
    }
}

/// Signed distance (negative inside) from `q` to the shape of `class`, in units of the radius.
/// Formulas after Inigo Quilez, "2D distance functions".
fn sdf(class: usize, q: (f32, f32)) -> f32 {
    let len = |x: f32, y: f32| (x * x + y * y).sqrt();
    let bx = |(x, y): (f32, f32), hx: f32, hy: f32| {
        let (dx, dy) = (x.abs() - hx, y.abs() - hy);
        len(dx.max(0.0), dy.max(0.0)) + dx.max(dy).min(0.0)
    };
    let (x, y) = q;
    match class {
        0 => len(x, y) - 0.95,                                 // disc
        1 => (len(x, y) - 0.72).abs() - 0.24,                  // ring
        2 => bx(q, 0.75, 0.75),                                // square
        3 => bx(q, 0.8, 0.8).abs() - 0.17,                     // frame
        4 => triangle(q, 1.7),                                 // triangle
        5 => star5(q, 1.05, 0.42),                             // star
        6 => bx(q, 0.95, 0.27).min(bx(q, 0.27, 0.95)),         // cross
        7 => hexagon(q, 0.85),                                 // hexagon
        8 => (len(x, y) - 0.95).max(-(len(x - 0.5, y) - 0.75)), // crescent
        _ => [-0.6f32, 0.0, 0.6].iter().map(|&o| bx((x, y - o), 0.9, 0.16)).fold(f32::MAX, f32::min), // bars
    }
}

fn triangle((x, y): (f32, f32), side: f32) -> f32 {
    let k = 3f32.sqrt();
    let r = side / 2.0;
    let (mut px, mut py) = (x.abs() - r, y + r / k);
    if px + k * py > 0.0 {
        (px, py) = ((px - k * py) / 2.0, (-k * px - py) / 2.0);
    }
    px -= px.clamp(-2.0 * r, 0.0);
    -(px * px + py * py).sqrt() * py.signum()
}

fn star5((x, y): (f32, f32), r: f32, rf: f32) -> f32 {
    let k1 = (0.809_017, -0.587_785);
    let k2 = (-k1.0, k1.1);
    let (mut px, mut py) = (x.abs(), y);
    let d1 = (k1.0 * px + k1.1 * py).max(0.0);
    (px, py) = (px - 2.0 * d1 * k1.0, py - 2.0 * d1 * k1.1);
    let d2 = (k2.0 * px + k2.1 * py).max(0.0);
    (px, py) = (px - 2.0 * d2 * k2.0, py - 2.0 * d2 * k2.1);
    px = px.abs();
    py -= r;
    let ba = (rf * -k1.1 - 0.0, rf * k1.0 - 1.0);
    let h = ((px * ba.0 + py * ba.1) / (ba.0 * ba.0 + ba.1 * ba.1)).clamp(0.0, r);
    let (ex, ey) = (px - ba.0 * h, py - ba.1 * h);
    (ex * ex + ey * ey).sqrt() * (py * ba.0 - px * ba.1).signum()
}

fn hexagon((x, y): (f32, f32), r: f32) -> f32 {
    let k = (-0.866_025_4, 0.5, 0.577_350_3);
    let (mut px, mut py) = (x.abs(), y.abs());
    let d = (k.0 * px + k.1 * py).min(0.0);
    (px, py) = (px - 2.0 * d * k.0, py - 2.0 * d * k.1);
    px -= px.clamp(-k.2 * r, k.2 * r);
    py -= r;
    (px * px + py * py).sqrt() * py.signum()
}

/// HSV (all in `[0, 1]`) to RGB.
fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let f = |n: f32| {
        let k = (n + h6).rem_euclid(6.0);
        v - v * s * k.min(4.0 - k).clamp(0.0, 1.0)
    };
    [f(5.0), f(3.0), f(1.0)]
}

/// A standard normal sample (Box–Muller).
fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdf_is_negative_at_the_centre_of_filled_shapes_and_positive_far_away() {
        for class in [0, 2, 4, 5, 6, 7] {
            assert!(sdf(class, (0.0, 0.0)) < 0.0, "class {class} centre");
        }
        for class in 0..10 {
            assert!(sdf(class, (3.0, 3.0)) > 0.0, "class {class} far");
        }
        // Hollow shapes are empty in the middle.
        assert!(sdf(1, (0.0, 0.0)) > 0.0);
        assert!(sdf(3, (0.0, 0.0)) > 0.0);
    }

    #[test]
    fn object_masks_line_up_with_the_drawn_shapes() {
        // Without pixel noise, the shape and the ground differ in brightness (light on dark or
        // dark on light): the mean of max(R, G, B) inside the mask and outside it must be far
        // apart in every image, and much less so with another image's mask.
        let cfg = SyntheticConfig { noise: 0.0, ..SyntheticConfig::tiny() };
        let set = load(Split::Test, &cfg).unwrap();
        let n = 40;
        let masks = object_masks(Split::Test, &cfg, &(0..n).collect::<Vec<_>>()).unwrap(); // [n, 32, 32]
        let value = set.images.narrow(0, 0, n as i64).to_kind(tch::Kind::Float).amax(1, false) / 255.0; // [n, 32, 32]
        let gap = |img: i64, mask: i64| {
            let (v, m) = (value.get(img), masks.get(mask));
            let inside = m.ge(0.99);
            let outside = m.le(0.01);
            let mean = |sel: &Tensor| v.masked_select(sel).mean(tch::Kind::Float).double_value(&[]);
            (mean(&inside) - mean(&outside)).abs()
        };
        let aligned: Vec<f64> = (0..n as i64).map(|i| gap(i, i)).collect();
        let shifted: Vec<f64> = (0..n as i64).map(|i| gap(i, (i + 1) % n as i64)).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(aligned.iter().all(|&g| g > 0.1), "{aligned:?}");
        assert!(mean(&aligned) > 2.0 * mean(&shifted), "aligned {} vs shifted {}", mean(&aligned), mean(&shifted));
        assert!(object_masks(Split::Test, &cfg, &[100]).unwrap_err().to_string().contains("out of range"));
    }

    #[test]
    fn hsv_primaries() {
        let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(hsv(0.0, 1.0, 1.0), [1.0, 0.0, 0.0]));
        assert!(close(hsv(1.0 / 3.0, 1.0, 1.0), [0.0, 1.0, 0.0]));
        assert!(close(hsv(2.0 / 3.0, 1.0, 1.0), [0.0, 0.0, 1.0]));
        assert!(close(hsv(0.5, 0.0, 0.5), [0.5, 0.5, 0.5]));
    }
}
