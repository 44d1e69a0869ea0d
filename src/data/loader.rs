//! The batch loader: shuffled `u8` batches on the training device, seeded and prefetched, and
//! the n-view wrapper of S0.2 / S4.3 (MoCo's `TwoCropsTransform`).
//!
//! Why `u8` batches: images stay bytes until they reach the device, where the augmentation
//! turns them into floats (B3), so the CPU only gathers bytes and the copy to the GPU is a
//! quarter of a float copy. Why a background thread: gathering a batch (and, for the
//! memory-mapped STL-10 unlabelled split, reading it from disk) overlaps with the training step
//! of the previous batch; the thread keeps `prefetch` batches ready (pinned when the device is
//! CUDA) and the consuming thread moves each one to the device.
//!
//! Why an explicit epoch number: the order of epoch `e` depends only on `(seed, e)`, so a run
//! resumed at epoch 7 sees exactly the batches the interrupted run would have seen (S4.6), and
//! the same seed always gives the same order.
//!
//! ```
//! use selfsup::data::{Loader, LoaderConfig, Views, synthetic::{self, SyntheticConfig}, Split};
//! use selfsup::tch::Device;
//! let set = synthetic::load(Split::Unlabeled, &SyntheticConfig::tiny())?; // 200 images
//! let loader = Loader::new(&set, &LoaderConfig::default().batch_size(64).drop_last(true), Device::Cpu)?;
//! // Two views of each image; a real notebook passes an augmentation from `augment::presets`.
//! let mut views = Views::two(|x| Ok(x.flip([3])));
//! for batch in loader.epoch(0)? {
//!     let batch = batch?; // images [64, 3, 32, 32] u8 on the device
//!     let v = views.apply(&batch.images)?; // two [64, 3, 32, 32] f32 views
//!     assert_eq!(v.len(), 2);
//! }
//! # Ok::<(), selfsup::Error>(())
//! ```
use super::fsutil::mix_seed;
use super::{ImageSet, Normalization};
use crate::error::{config_err, Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;
use tch::{Device, Kind, Tensor};

/// How the loader batches a set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoaderConfig {
    /// Images per batch. 256 as in MoCo v2 (`main_moco.py -b 256`) and SimCLR's smallest batch.
    pub batch_size: usize,
    /// Shuffle the order every epoch (PyTorch `DataLoader(shuffle=True)`).
    pub shuffle: bool,
    /// Drop the last, smaller batch (PyTorch's default: keep it). Pre-training wants `true`:
    /// MoCo's queue needs equal batches and BatchNorm dislikes a batch of one.
    pub drop_last: bool,
    /// Seed of the shuffling: the same seed and epoch give the same order.
    pub seed: u64,
    /// Batches gathered ahead on a background thread; 0 gathers on the calling thread.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    /// Batch 256, shuffled, last batch kept, seed 0, two batches prefetched.
    fn default() -> Self {
        LoaderConfig { batch_size: 256, shuffle: true, drop_last: false, seed: 0, prefetch: 2 }
    }
}

impl LoaderConfig {
    /// For pre-training and training: shuffled, last partial batch dropped.
    pub fn train(batch_size: usize) -> Self {
        LoaderConfig { batch_size, drop_last: true, ..Default::default() }
    }
    /// For evaluation and feature extraction: in order, every image once.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig { batch_size, shuffle: false, ..Default::default() }
    }
    /// The same config with another batch size.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
    /// The same config with shuffling on or off.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }
    /// The same config dropping (or keeping) the last partial batch.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }
    /// The same config with another seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// The same config with another prefetch depth (0: no background thread).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch;
        self
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(config_err!("LoaderConfig.batch_size must be at least 1, got 0"));
        }
        if self.prefetch > 64 {
            return Err(config_err!("LoaderConfig.prefetch must be in 0..=64, got {}", self.prefetch));
        }
        Ok(())
    }
}

/// One batch: `u8` images and labels on the loader's device, and where they came from.
#[derive(Debug)]
pub struct Batch {
    /// `[B, 3, H, W]`, `u8`, on the device.
    pub images: Tensor,
    /// `[B]`, `i64`, on the device; `None` for unlabelled sets.
    pub labels: Option<Tensor>,
    /// Positions of the images in the set.
    pub indices: Vec<i64>,
}

impl Batch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    /// Whether the batch holds no image (never, for batches from a [`Loader`]).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
    /// The images as floats in `[0, 1]`, normalised if asked: `[B, 3, H, W]` f32 on the device.
    ///
    /// # Errors
    /// As [`Normalization::normalize`].
    pub fn float(&self, normalization: Option<&Normalization>) -> Result<Tensor> {
        let x = self.images.to_kind(Kind::Float) / 255.0; // [B, 3, H, W] in [0, 1]
        match normalization {
            Some(n) => n.normalize(&x),
            None => Ok(x),
        }
    }
}

/// Batches of an [`ImageSet`] in a seeded order, moved to a device; see the module doc.
#[derive(Debug)]
pub struct Loader {
    set: ImageSet,
    cfg: LoaderConfig,
    device: Device,
    /// `(rank, world)`: this loader reads rank `rank`'s share of every batch ([`Loader::shard`]).
    shard: (usize, usize),
}

impl Loader {
    /// A loader over `set` (shallow: the images are shared, not copied).
    ///
    /// # Errors
    /// [`Error::Config`] for a zero batch size; [`Error::Data`] for an empty set, or when
    /// `drop_last` would leave no batch at all (fewer images than `batch_size`).
    pub fn new(set: &ImageSet, cfg: &LoaderConfig, device: Device) -> Result<Loader> {
        cfg.validate()?;
        if set.is_empty() {
            return Err(Error::Data(format!("'{}' has no image to load", set.name)));
        }
        if cfg.drop_last && set.len() < cfg.batch_size {
            return Err(Error::Data(format!(
                "'{}' has {} images, fewer than batch_size {}, so drop_last leaves no batch; \
                 lower the batch size or set drop_last(false)",
                set.name,
                set.len(),
                cfg.batch_size
            )));
        }
        Ok(Loader { set: set.clone(), cfg: cfg.clone(), device, shard: (0, 1) })
    }

    /// This loader for rank `rank` of `world` data-parallel processes: `batch_size` stays the
    /// global batch, and each epoch this rank reads `batch_size / world` images per batch, those
    /// at positions `rank, rank + world, …` of the single process's batch. So step `s` of all
    /// ranks together reads exactly the single process's batch `s`, the epoch has as many steps
    /// as in one process, and the union over ranks is the single process's epoch: PyTorch's
    /// `DistributedSampler(drop_last=True)` over the epoch's order (the same strides as
    /// `distributed::shard_indices`), cut to whole global batches.
    ///
    /// # Errors
    /// [`Error::Config`] for `rank >= world`, a batch size that `world` does not divide, or a
    /// loader that keeps its last partial batch (`drop_last(false)`: its share would differ
    /// between ranks).
    pub fn shard(mut self, rank: usize, world: usize) -> Result<Loader> {
        if world == 0 || rank >= world {
            return Err(config_err!("Loader::shard: rank {rank} out of range for {world} processes"));
        }
        if self.cfg.batch_size % world != 0 {
            return Err(config_err!(
                "the batch size {} (the global batch, split over the processes) must be a multiple of the number of \
                 processes, {world}; choose a batch size divisible by {world}",
                self.cfg.batch_size
            ));
        }
        if world > 1 && !self.cfg.drop_last {
            return Err(config_err!("Loader::shard needs drop_last(true), so that every process takes the same steps"));
        }
        self.shard = (rank, world);
        Ok(self)
    }

    /// `(rank, world)` of [`Loader::shard`]; `(0, 1)` for the whole batch.
    pub fn shard_of(&self) -> (usize, usize) {
        self.shard
    }

    /// The set being loaded.
    pub fn set(&self) -> &ImageSet {
        &self.set
    }
    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }
    /// Where batches are moved.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Batches per epoch (the last partial batch counts unless `drop_last`).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.set.len(), self.cfg.batch_size);
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order in which epoch `epoch` visits the images: a permutation seeded by
    /// `(seed, epoch)`, or `0..N` without shuffling.
    pub fn order(&self, epoch: u64) -> Vec<i64> {
        let mut order: Vec<i64> = (0..self.set.len() as i64).collect();
        if self.cfg.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seed(self.cfg.seed, epoch)));
        }
        order
    }

    /// The batches of epoch `epoch`, gathered ahead on a background thread when `prefetch > 0`.
    ///
    /// # Errors
    /// [`Error::Io`] if the background thread cannot be started; each batch is itself a
    /// `Result` (a failed gather ends the epoch with that error).
    pub fn epoch(&self, epoch: u64) -> Result<Epoch> {
        let order = self.order(epoch);
        let b = self.cfg.batch_size;
        let mut chunks: VecDeque<Vec<i64>> = order.chunks(b).map(<[i64]>::to_vec).collect();
        if self.cfg.drop_last && chunks.back().is_some_and(|c| c.len() < b) {
            chunks.pop_back();
        }
        let (rank, world) = self.shard;
        if world > 1 {
            // This rank's stride of each (whole) global batch.
            for chunk in chunks.iter_mut() {
                *chunk = chunk.iter().skip(rank).step_by(world).copied().collect();
            }
        }
        let remaining = chunks.len();
        let pin = matches!(self.device, Device::Cuda(_)).then_some(self.device);
        let source = if self.cfg.prefetch == 0 {
            Source::Inline { set: self.set.clone(), chunks }
        } else {
            let (tx, rx) = sync_channel(self.cfg.prefetch);
            let set = self.set.clone();
            let handle = std::thread::Builder::new().name("selfsup-loader".into()).spawn(move || {
                for chunk in chunks {
                    let batch = gather(&set, chunk, pin);
                    let failed = batch.is_err();
                    // A send fails when the consumer dropped the epoch: stop quietly.
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                }
            })?;
            Source::Thread { rx: Some(rx), handle: Some(handle) }
        };
        Ok(Epoch { source, remaining, device: self.device, failed: false })
    }
}

/// A batch gathered on the CPU, not yet on the device.
struct CpuBatch {
    images: Tensor,
    labels: Option<Tensor>,
    indices: Vec<i64>,
    pinned: bool,
}

/// Copies the images (and labels) at `indices` into fresh contiguous tensors, pinned for a fast
/// copy to `pin` when given.
fn gather(set: &ImageSet, indices: Vec<i64>, pin: Option<Device>) -> Result<CpuBatch> {
    let idx = Tensor::from_slice(&indices);
    let images = set.images.f_index_select(0, &idx)?.f_contiguous()?; // [B, 3, H, W] u8
    let labels = set.labels.as_ref().map(|l| l.f_index_select(0, &idx)).transpose()?; // [B]
    let (images, pinned) = match pin {
        // Pinning can fail (no CUDA runtime in this thread's view); an unpinned copy still works.
        Some(device) => match images.f_pin_memory(device) {
            Ok(p) => (p, true),
            Err(_) => (images, false),
        },
        None => (images, false),
    };
    Ok(CpuBatch { images, labels, indices, pinned })
}

enum Source {
    Thread { rx: Option<Receiver<Result<CpuBatch>>>, handle: Option<JoinHandle<()>> },
    Inline { set: ImageSet, chunks: VecDeque<Vec<i64>> },
}

/// The batches of one epoch, in order; an iterator of `Result<Batch>`.
pub struct Epoch {
    source: Source,
    remaining: usize,
    device: Device,
    failed: bool,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Epoch {{ remaining: {}, device: {:?} }}", self.remaining, self.device)
    }
}

impl Epoch {
    /// The same batches with `views.num_views()` augmented views of each, for the two-view
    /// training loop of S0.2.
    pub fn views(self, views: &mut Views) -> ViewEpoch<'_> {
        ViewEpoch { epoch: self, views }
    }

    fn to_device(&self, cpu: CpuBatch) -> Result<Batch> {
        let images = cpu.images.f_to_device_(self.device, Kind::Uint8, cpu.pinned, false)?;
        let labels = cpu.labels.map(|l| l.f_to_device(self.device)).transpose()?;
        Ok(Batch { images, labels, indices: cpu.indices })
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.failed {
            return None;
        }
        let cpu = match &mut self.source {
            Source::Inline { set, chunks } => {
                let chunk = chunks.pop_front()?;
                gather(set, chunk, None)
            }
            Source::Thread { rx, .. } => match rx.as_ref().map(Receiver::recv) {
                Some(Ok(batch)) => batch,
                _ => Err(Error::Data("the loader's background thread stopped before the end of the epoch".into())),
            },
        };
        self.remaining -= 1;
        let batch = cpu.and_then(|cpu| self.to_device(cpu));
        if batch.is_err() {
            self.failed = true;
        }
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Epoch {}

impl Drop for Epoch {
    fn drop(&mut self) {
        if let Source::Thread { rx, handle } = &mut self.source {
            // Closing the channel first makes a thread blocked on `send` return; then wait for it.
            drop(rx.take());
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// An augmentation applied to a batch of float images `[B, 3, H, W]` in `[0, 1]` on the device.
pub type ViewFn = Box<dyn FnMut(&Tensor) -> Result<Tensor>>;

/// Several augmented views of each batch: two by default (SimCLR, MoCo's `TwoCropsTransform`,
/// S0.2/S4.3), n for multi-crop, or one augmentation per view (BYOL's asymmetric `t`, `t'`).
///
/// The augmentation is any closure `FnMut(&Tensor) -> Result<Tensor>`, so this module does not
/// depend on the augmentation module; each call draws fresh random parameters, which is what
/// makes the views independent. With the kit's pipelines, move a seeded generator into the
/// closure: `Views::two(move |x| aug.apply(x, &mut rng))`, `aug` from `augment::presets`.
pub struct Views {
    augments: Vec<ViewFn>,
    num_views: usize,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Views {{ num_views: {}, augmentations: {} }}", self.num_views, self.augments.len())
    }
}

impl Views {
    /// Two views, each from its own call of `augment` (MoCo v2, SimCLR, Barlow Twins).
    pub fn two(augment: impl FnMut(&Tensor) -> Result<Tensor> + 'static) -> Views {
        Views { augments: vec![Box::new(augment)], num_views: 2 }
    }

    /// `n` views from `n` calls of the same augmentation.
    ///
    /// # Errors
    /// [`Error::Config`] for `n == 0`.
    pub fn new(n: usize, augment: impl FnMut(&Tensor) -> Result<Tensor> + 'static) -> Result<Views> {
        if n == 0 {
            return Err(config_err!("Views needs at least one view, got 0"));
        }
        Ok(Views { augments: vec![Box::new(augment)], num_views: n })
    }

    /// One view per augmentation, in order (BYOL: `vec![Box::new(t), Box::new(t_prime)]`).
    ///
    /// # Errors
    /// [`Error::Config`] for an empty list.
    pub fn asymmetric(augments: Vec<ViewFn>) -> Result<Views> {
        if augments.is_empty() {
            return Err(config_err!("Views::asymmetric needs at least one augmentation"));
        }
        let num_views = augments.len();
        Ok(Views { augments, num_views })
    }

    /// Number of views per batch.
    pub fn num_views(&self) -> usize {
        self.num_views
    }

    /// The views of `images` (`[B, 3, H, W]`, `u8` or floats in `[0, 1]`): `u8` is converted to
    /// floats in `[0, 1]` once, on the images' device, and each augmentation receives that.
    ///
    /// # Errors
    /// [`Error::Shape`] unless `images` is `[B, 3, H, W]` or an augmentation returns a batch of
    /// another size; any error an augmentation returns.
    pub fn apply(&mut self, images: &Tensor) -> Result<Vec<Tensor>> {
        let s = images.size();
        if s.len() != 4 || s[1] != 3 {
            return Err(Error::shape("Views::apply images", "[B, 3, H, W]", &s));
        }
        let x = if images.kind() == Kind::Uint8 { images.to_kind(Kind::Float) / 255.0 } else { images.shallow_clone() }; // [B, 3, H, W]
        let mut out = Vec::with_capacity(self.num_views);
        for v in 0..self.num_views {
            let augment = if self.augments.len() == 1 { &mut self.augments[0] } else { &mut self.augments[v] };
            let view = augment(&x)?; // [B, 3, h, w]
            let vs = view.size();
            if vs.len() != 4 || vs[0] != s[0] {
                return Err(Error::shape(
                    format!("view {v} returned by the augmentation"),
                    format!("[{}, C, H, W]", s[0]),
                    &vs,
                ));
            }
            out.push(view);
        }
        Ok(out)
    }
}

/// One batch with its augmented views.
#[derive(Debug)]
pub struct ViewBatch {
    /// `num_views` tensors `[B, 3, h, w]` (what the augmentations returned).
    pub views: Vec<Tensor>,
    /// `[B]` `i64` on the device; `None` for unlabelled sets.
    pub labels: Option<Tensor>,
    /// Positions of the images in the set.
    pub indices: Vec<i64>,
}

/// The batches of one epoch with their views; see [`Epoch::views`].
#[derive(Debug)]
pub struct ViewEpoch<'a> {
    epoch: Epoch,
    views: &'a mut Views,
}

impl Iterator for ViewEpoch<'_> {
    type Item = Result<ViewBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.epoch.next()?;
        Some(batch.and_then(|b| {
            let views = self.views.apply(&b.images)?;
            Ok(ViewBatch { views, labels: b.labels, indices: b.indices })
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.epoch.size_hint()
    }
}
