//! MoCo — "Momentum Contrast for Unsupervised Visual Representation Learning" (He, Fan, Wu, Xie,
//! Girshick 2020, <https://arxiv.org/abs/1911.05722>) and MoCo v2, "Improved Baselines with
//! Momentum Contrastive Learning" (Chen, Fan, Girshick, He 2020, <https://arxiv.org/abs/2003.04297>).
//!
//! A query encoder (backbone + head) is trained to pick its positive key — the other view of the
//! same image, encoded by a slowly moving *momentum* copy of the encoder — out of K negative keys
//! kept in a FIFO queue of past batches. "The dictionary is dynamic […] the keys are randomly
//! sampled, and the key encoder evolves during training" (§3.2). v1 uses a linear head and τ = 0.07;
//! v2 adds an MLP head, stronger augmentation, τ = 0.2 and a cosine schedule.
//!
//! [`Moco::training_step`] follows builder.py line by line: query → momentum update → keys
//! (no grad, shuffled BN) → logits `[N, 1+K]` → loss → enqueue. The pieces are public
//! ([`Moco::query`], [`Moco::momentum_update`], [`Moco::keys`], [`Moco::logits`], [`Moco::enqueue`],
//! [`Moco::queue`]) so the code-reading notebook can run them one by one on tiny tensors.
//!
//! ## Parameter names
//! The online store holds the query encoder exactly as builder.py's `encoder_q`: the backbone's
//! torchvision keys under `encoder_q.` (`encoder_q.conv1.weight`, `encoder_q.layer1.0.bn1.weight`, …)
//! and the head at `encoder_q.fc` (`encoder_q.fc.weight` for v1, `encoder_q.fc.0.weight` /
//! `encoder_q.fc.2.weight` for v2). The key encoder lives in its own, frozen store built with
//! the *same* paths, so [`crate::momentum::ema_update`] pairs the variables by name;
//! [`SslMethod::state`] reports it as `encoder_k.*`, next to `queue` `[C, K]` and `queue_ptr`, the
//! names of builder.py's state dict. main_lincls.py's recipe (keep `encoder_q.` but not
//! `encoder_q.fc`, strip the prefix) therefore gives torchvision keys.
//!
//! Used by `notebooks/*moco*` (the MoCo v2 seminar and the code reading).
use super::{backbone_and_head, check_views, load_named, with_stats, store_state, SslMethod, StepOutput};
use crate::error::{config_err, Error, Result};
use crate::losses::{info_nce_logits, l2_normalize};
use crate::models::heads::{HeadConfig, Mlp};
use crate::models::{Depth, ResNet, ResNetConfig};
use crate::momentum::ema_update;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// Path of the query encoder in the online store (and of the key encoder in the target store).
const PREFIX: &str = "encoder_q";

/// Settings of [`Moco`]. `Default` is MoCo v2 ([`MocoConfig::v2`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MocoConfig {
    /// The backbone (ResNet-50 in the papers); `num_classes` must be `None`.
    pub backbone: ResNetConfig,
    /// The projection head at `encoder_q.fc`; its `in_dim` is set to the backbone's feature width.
    pub head: HeadConfig,
    /// K, the number of negative keys in the queue.
    pub queue_size: i64,
    /// m, the momentum of the key encoder: θ_k ← m θ_k + (1 − m) θ_q.
    pub momentum: f64,
    /// τ (`T` in the code), the softmax temperature of InfoNCE.
    pub temperature: f64,
    /// Symmetric loss (both views serve as query and as key; the two losses are summed and 2N keys
    /// enqueued, as the seminar and the MoCo CIFAR demo do) or asymmetric (builder.py: v1 → query,
    /// v2 → key).
    pub symmetric: bool,
    /// Groups for the single-GPU emulation of shuffled BN: the batch is encoded in this many
    /// chunks, each with its own BatchNorm statistics, and the keys are shuffled across chunks.
    /// 1 turns the emulation off (plain BN over the whole batch).
    pub bn_splits: i64,
}

impl Default for MocoConfig {
    fn default() -> Self {
        MocoConfig::v2()
    }
}

impl MocoConfig {
    /// MoCo v1: ResNet-50, linear 2048→128 head, K = 65536, m = 0.999, τ = 0.07, asymmetric.
    ///
    /// - K = 65536: main_moco.py `--moco-k` default ("K = 65536", He et al. 2020, §4).
    /// - m = 0.999: `--moco-m` default ("a relatively large momentum (e.g., m = 0.999, our
    ///   default) works much better than a smaller value (e.g., m = 0.9)", §3.2).
    /// - τ = 0.07: `--moco-t` default ("We set τ = 0.07", §3.3).
    /// - dim 128: `--moco-dim` default.
    /// - bn_splits = 8: the reference runs on 8 GPUs, 32 images each (§3.3 Shuffling BN).
    pub fn v1() -> Self {
        MocoConfig {
            backbone: ResNetConfig { depth: Depth::R50, ..Default::default() },
            head: HeadConfig::moco_v1(),
            queue_size: 65536,
            momentum: 0.999,
            temperature: 0.07,
            symmetric: false,
            bn_splits: 8,
        }
    }

    /// MoCo v2: v1 with the 2048→2048→128 MLP head and τ = 0.2.
    ///
    /// "Using an MLP head […] we also search for the optimal τ w.r.t. ImageNet linear
    /// classification accuracy […] the optimal value is 0.2" (Chen et al. 2020, §2 and Table 1);
    /// the v2 recipe runs main_moco.py with `--mlp --moco-t 0.2 --aug-plus --cos`.
    /// The seminar (S0.1) keeps τ = 0.07 and a symmetric loss:
    /// `MocoConfig::v2().temperature(0.07).symmetric(true)`.
    pub fn v2() -> Self {
        MocoConfig { head: HeadConfig::moco_v2(), temperature: 0.2, ..MocoConfig::v1() }
    }

    /// The MoCo CIFAR-10 demo (moco/colab/moco_cifar10_demo.ipynb): small-image ResNet-18, linear
    /// 512→128 head, K = 4096, m = 0.99, τ = 0.1, symmetric loss, split-BN in 8 groups
    /// (`--moco-k 4096 --moco-m 0.99 --moco-t 0.1 --bn-splits 8 --symmetric`).
    pub fn cifar() -> Self {
        MocoConfig {
            backbone: ResNetConfig { depth: Depth::R18, small_images: true, ..Default::default() },
            head: HeadConfig::moco_v1().for_features(512),
            queue_size: 4096,
            momentum: 0.99,
            temperature: 0.1,
            symmetric: true,
            bn_splits: 8,
        }
    }

    /// A CPU-sized v2 for tests and notebooks: small-image ResNet-18, 512→512→32 MLP head,
    /// K = 64 (batches of 8, 16, 32 or 64 fit), m = 0.99, τ = 0.2, asymmetric, 2 BN groups.
    pub fn tiny() -> Self {
        MocoConfig {
            backbone: ResNetConfig { depth: Depth::R18, small_images: true, ..Default::default() },
            head: HeadConfig::moco_v2().for_features(512).out_dim(32),
            queue_size: 64,
            momentum: 0.99,
            temperature: 0.2,
            symmetric: false,
            bn_splits: 2,
        }
    }

    /// The same config with another backbone; the head's input (and a hidden width equal to it)
    /// follows the backbone's feature width.
    pub fn backbone(mut self, backbone: ResNetConfig) -> Self {
        self.head = self.head.for_features(backbone.feature_dim());
        self.backbone = backbone;
        self
    }
    /// The same config with another head.
    pub fn head(mut self, head: HeadConfig) -> Self {
        self.head = head;
        self
    }
    /// The same config with another queue size K.
    pub fn queue_size(mut self, k: i64) -> Self {
        self.queue_size = k;
        self
    }
    /// The same config with another momentum m.
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
    /// The same config with another temperature τ.
    pub fn temperature(mut self, t: f64) -> Self {
        self.temperature = t;
        self
    }
    /// The same config with a symmetric (true) or asymmetric (false) loss.
    pub fn symmetric(mut self, symmetric: bool) -> Self {
        self.symmetric = symmetric;
        self
    }
    /// The same config with another number of BN groups (1 = no shuffled-BN emulation).
    pub fn bn_splits(mut self, n: i64) -> Self {
        self.bn_splits = n;
        self
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        self.backbone.validate()?;
        self.head.validate()?;
        if self.backbone.num_classes.is_some() {
            return Err(config_err!(
                "MocoConfig.backbone.num_classes must be None: the head takes the place of fc (encoder_q.fc)"
            ));
        }
        if self.queue_size < 1 {
            return Err(config_err!("MocoConfig.queue_size (K) must be at least 1, got {}", self.queue_size));
        }
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(config_err!("MocoConfig.momentum (m) must be in [0, 1], got {}", self.momentum));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(config_err!("MocoConfig.temperature (τ) must be positive, got {}", self.temperature));
        }
        if self.bn_splits < 1 {
            return Err(config_err!("MocoConfig.bn_splits must be at least 1, got {}", self.bn_splits));
        }
        Ok(())
    }
}

/// MoCo v1/v2 with its query encoder, momentum key encoder and queue. See the module docs.
///
/// # Example
/// ```no_run
/// use selfsup::prelude::*;
/// use selfsup::methods::{Moco, MocoConfig, SslMethod};
/// let mut moco = Moco::new(MocoConfig::tiny(), Device::Cpu)?;
/// let v1 = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
/// let v2 = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
/// let out = moco.training_step(&v1, &v2)?; // out.loss ≈ ln(1 + K) at the start
/// # Ok::<(), selfsup::Error>(())
/// ```
#[derive(Debug)]
pub struct Moco {
    config: MocoConfig,
    online: nn::VarStore,
    target: nn::VarStore,
    encoder_q: ResNet,
    head_q: Mlp,
    encoder_k: ResNet,
    head_k: Mlp,
    /// `[C, K]`, the keys as columns (builder.py's layout).
    queue: Tensor,
    queue_ptr: i64,
    /// Keys enqueued so far, capped at K (how much of the queue holds real keys).
    queue_filled: i64,
    /// The data-parallel job: shuffled BN across its ranks, and every rank's keys into the queue.
    #[cfg(feature = "distributed")]
    dist: Option<std::sync::Arc<crate::distributed::Dist>>,
}

impl Moco {
    /// Builds the query encoder (trainable, `online()`), the key encoder (a frozen copy) and a
    /// queue of K random unit vectors.
    ///
    /// "the queue is initialized with random normalized vectors" — builder.py:
    /// `queue = normalize(randn(dim, K), dim=0)`.
    ///
    /// # Errors
    /// [`Error::Config`] when the config is out of range.
    pub fn new(config: MocoConfig, device: Device) -> Result<Moco> {
        config.validate()?;
        let mut config = config;
        config.head = config.head.clone().for_features(config.backbone.feature_dim());
        let online = nn::VarStore::new(device);
        let (encoder_q, head_q) = backbone_and_head(&online.root(), PREFIX, &config.backbone, &[PREFIX, "fc"], &config.head)?;
        let mut target = nn::VarStore::new(device);
        let (encoder_k, head_k) = backbone_and_head(&target.root(), PREFIX, &config.backbone, &[PREFIX, "fc"], &config.head)?;
        target.copy(&online)?; // θ_k ← θ_q
        target.freeze(); // "not update by gradient"
        let c = config.head.out_dim;
        let queue = Tensor::randn([c, config.queue_size], (Kind::Float, device)); // [C, K]
        let queue = queue.shallow_clone() / queue.norm_scalaropt_dim(2.0, [0i64].as_slice(), true).clamp_min(1e-12); // [C, K], unit columns
        Ok(Moco {
            config,
            online,
            target,
            encoder_q,
            head_q,
            encoder_k,
            head_k,
            queue,
            queue_ptr: 0,
            queue_filled: 0,
            #[cfg(feature = "distributed")]
            dist: None,
        })
    }

    /// The config (with the head's `in_dim` set to the backbone's feature width).
    pub fn config(&self) -> &MocoConfig {
        &self.config
    }
    /// The key encoder's store (frozen; changed only by [`Moco::momentum_update`]).
    pub fn target(&self) -> &nn::VarStore {
        &self.target
    }
    /// The queue of negative keys, `[C, K]`, one normalised key per column.
    pub fn queue(&self) -> &Tensor {
        &self.queue
    }
    /// Where the next batch of keys will be written (builder.py's `queue_ptr`).
    pub fn queue_ptr(&self) -> i64 {
        self.queue_ptr
    }
    /// Fraction of the queue that holds real keys rather than the random initial vectors.
    pub fn queue_fill(&self) -> f64 {
        self.queue_filled as f64 / self.config.queue_size as f64
    }
    /// Keys enqueued per training step: N, or 2N with the symmetric loss, times the ranks of a
    /// data-parallel job (every rank's keys go into every rank's queue).
    fn keys_per_step(&self, n: i64) -> i64 {
        let per_rank = if self.config.symmetric { 2 * n } else { n };
        per_rank * self.world_size()
    }

    /// The ranks of the data-parallel job this MoCo trains in (1 alone).
    fn world_size(&self) -> i64 {
        #[cfg(feature = "distributed")]
        if let Some(d) = &self.dist {
            return d.world_size() as i64;
        }
        1
    }

    /// `keys` of this rank, or in a data-parallel job every rank's, in rank order (builder.py's
    /// `concat_all_gather` before `_dequeue_and_enqueue`): the queue is the same on every rank.
    fn keys_of_all_ranks(&self, keys: Tensor) -> Result<Tensor> {
        #[cfg(feature = "distributed")]
        if let Some(d) = &self.dist {
            return d.concat_all_gather(&keys); // [W·B, C]
        }
        Ok(keys)
    }

    /// Checks that a batch of `n` images fits: K divisible by the keys enqueued per step, and `n`
    /// divisible by `bn_splits`.
    ///
    /// # Errors
    /// [`Error::Config`] saying which numbers to change.
    pub fn check_batch_size(&self, n: i64) -> Result<()> {
        let per_step = self.keys_per_step(n);
        if n < 1 || self.config.queue_size % per_step != 0 {
            return Err(config_err!(
                "MoCo: the queue size K = {} is not divisible by the {} keys enqueued per step (batch size {n}{}); \
                 choose a batch size that divides K, or set queue_size to a multiple of {per_step}",
                self.config.queue_size,
                per_step,
                match (self.config.symmetric, self.world_size()) {
                    (false, 1) => String::new(),
                    (true, 1) => ", two views with the symmetric loss".into(),
                    (sym, w) => format!("{} on each of {w} ranks", if sym { ", two views" } else { "" }),
                }
            ));
        }
        if n % self.config.bn_splits != 0 {
            return Err(config_err!(
                "MoCo: the batch size {n} is not divisible by bn_splits = {} (shuffled-BN groups); \
                 change the batch size or MocoConfig::bn_splits",
                self.config.bn_splits
            ));
        }
        Ok(())
    }

    /// Encodes `x` in `bn_splits` chunks, each with its own BatchNorm statistics.
    fn encode(&self, backbone: &ResNet, head: &Mlp, x: &Tensor) -> Result<Tensor> {
        let splits = self.config.bn_splits;
        if splits == 1 {
            return head.forward_t(&backbone.features(x, true)?, true); // [N, C]
        }
        let n = x.size()[0];
        if n % splits != 0 {
            return Err(config_err!("MoCo: the batch size {n} is not divisible by bn_splits = {splits}"));
        }
        let zs = x
            .chunk(splits, 0) // bn_splits × [N/bn_splits, 3, H, W]
            .iter()
            .map(|part| head.forward_t(&backbone.features(part, true)?, true)) // [N/bn_splits, C]
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&zs, 0)) // [N, C]
    }

    /// The query encoder's projections of `x`, **not** normalised, with gradients.
    ///
    /// # Shapes
    /// `x`: `[N, 3, H, W]` → `[N, C]`.
    ///
    /// # Errors
    /// On a malformed input or a batch not divisible by `bn_splits`.
    pub fn query(&self, x: &Tensor) -> Result<Tensor> {
        self.encode(&self.encoder_q, &self.head_q, x) // [N, C]
    }

    /// The key encoder's normalised projections of `x`, without gradients, computed with
    /// shuffled BN: the batch is permuted, encoded in `bn_splits` groups, and un-permuted, so
    /// a key never shares BatchNorm statistics with its own query's group.
    ///
    /// "we shuffle the sample order in the current mini-batch for the key encoder f_k before
    /// distributing it among GPUs (and shuffle back after encoding); the sample order of the
    /// mini-batch for the query encoder f_q is not altered." (MoCo §3.3).
    // Deviation: one device has no per-GPU BN; as the MoCo CIFAR demo's SplitBatchNorm, the
    // groups are chunks of one batch. Running statistics are updated once per chunk (the demo
    // averages the chunks' statistics first).
    ///
    /// # Shapes
    /// `x`: `[N, 3, H, W]` → `[N, C]`, unit rows.
    ///
    /// # Errors
    /// As [`Moco::query`].
    pub fn keys(&self, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "distributed")]
        if let Some(dist) = &self.dist {
            // builder.py's _batch_shuffle_ddp / _batch_unshuffle_ddp: each rank's BatchNorm sees
            // a random share of every rank's images; bn_splits then splits that share further.
            // Shuffled BN is MoCo's own answer to BN across ranks: never synchronised
            // (TrainConfig::sync_batch_norm then applies to the queries only).
            return tch::no_grad(|| {
                let (shuffled, unshuffle) = super::across_ranks::shuffle_across_ranks(x, dist)?; // [N, 3, H, W]
                let k = crate::models::norm::with_sync_batch_norm(None, || {
                    self.encode(&self.encoder_k, &self.head_k, &shuffled)
                })?; // [N, C], shuffled order
                l2_normalize(&super::across_ranks::unshuffle_across_ranks(&k, &unshuffle, dist)?) // [N, C]
            });
        }
        tch::no_grad(|| {
            if self.config.bn_splits == 1 {
                return l2_normalize(&self.encode(&self.encoder_k, &self.head_k, x)?);
                // [N, C]
            }
            let n = x.size().first().copied().unwrap_or(0);
            let shuffle = Tensor::randperm(n, (Kind::Int64, x.device())); // [N]
            let unshuffle = shuffle.argsort(0, false); // [N]
            let k = self.encode(&self.encoder_k, &self.head_k, &x.index_select(0, &shuffle))?; // [N, C], shuffled order
            l2_normalize(&k.index_select(0, &unshuffle)) // [N, C], original order
        })
    }

    /// The momentum update of the key encoder, θ_k ← m θ_k + (1 − m) θ_q (parameters only;
    /// see [`crate::momentum::ema_update`]).
    ///
    /// # Errors
    /// Only if the two stores stopped matching (they are built with the same paths).
    pub fn momentum_update(&self) -> Result<()> {
        ema_update(&self.target, &self.online, self.config.momentum)
    }

    /// The logits of queries against their keys (column 0) and the queue (columns 1..=K),
    /// divided by τ.
    ///
    /// # Shapes
    /// `q`, `k`: `[N, C]`, normalised → `[N, 1+K]`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `q`, `k` are not `[N, C]` with the queue's C.
    pub fn logits(&self, q: &Tensor, k: &Tensor) -> Result<Tensor> {
        // A copy, as builder.py's `self.queue.clone().detach()`: backward needs the queue as it was,
        // and `enqueue` overwrites it in place before backward runs.
        let queue = self.queue.detach().copy(); // [C, K]
        info_nce_logits(q, k, &queue, self.config.temperature) // [N, 1+K]
    }

    /// Dequeue and enqueue: the oldest `B` keys are overwritten by `k`, at the pointer, and the
    /// pointer moves on by `B` modulo K (builder.py's `_dequeue_and_enqueue`).
    ///
    /// # Shapes
    /// `k`: `[B, C]`, normalised keys.
    ///
    /// # Errors
    /// [`Error::Shape`] when `k` is not `[B, C]`; [`Error::Config`] when K is not divisible by B
    /// (builder.py asserts `K % batch_size == 0`).
    pub fn enqueue(&mut self, k: &Tensor) -> Result<()> {
        let (c, big_k) = (self.config.head.out_dim, self.config.queue_size);
        let s = k.size();
        if s.len() != 2 || s[1] != c || s[0] < 1 {
            return Err(Error::shape("Moco::enqueue keys", format!("[B, {c}]"), &s));
        }
        let b = s[0];
        if big_k % b != 0 {
            return Err(config_err!(
                "MoCo: the queue size K = {big_k} is not divisible by the {b} keys to enqueue; choose a batch size \
                 that divides K, or set queue_size to a multiple of {b}"
            ));
        }
        let ptr = self.queue_ptr;
        tch::no_grad(|| -> Result<()> {
            let mut slot = self.queue.narrow(1, ptr, b); // [C, B] view at the pointer
            slot.f_copy_(&k.detach().to_kind(self.queue.kind()).tr())?; // [C, B]
            Ok(())
        })?;
        self.queue_ptr = (ptr + b) % big_k; // move the pointer
        self.queue_filled = (self.queue_filled + b).min(big_k);
        Ok(())
    }

    /// Cross-entropy of logits `[N, 1+K]` against label 0, and the numbers worth logging:
    /// positive and negative cosine means and top-1 accuracy of the positive.
    fn loss_and_stats(&self, logits: &Tensor) -> (Tensor, Tensor) {
        let n = logits.size()[0];
        let labels = Tensor::zeros([n], (Kind::Int64, logits.device())); // [N], all 0: the positive's column
        let loss = logits.cross_entropy_for_logits(&labels); // []
        let stats = tch::no_grad(|| {
            let t = self.config.temperature;
            let l = logits.detach().to_kind(Kind::Float);
            let pos = l.select(1, 0).mean(Kind::Float) * t; // [] mean q·k⁺
            let neg = l.narrow(1, 1, self.config.queue_size).mean(Kind::Float) * t; // [] mean q·queue
            let acc = l.argmax(1, false).eq(0).to_kind(Kind::Float).mean(Kind::Float); // []
            Tensor::stack(&[pos, neg, acc], 0) // [3]
        });
        (loss, stats)
    }
}

impl SslMethod for Moco {
    fn name(&self) -> &str {
        if self.config.head.num_layers > 1 {
            "moco_v2"
        } else {
            "moco_v1"
        }
    }
    fn config_json(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.config).ok()
    }

    /// One MoCo step in builder.py's order. The momentum update of the key encoder happens here,
    /// between the queries and the keys (as builder.py's `forward`), using the query encoder as the
    /// previous optimizer step left it; [`SslMethod::after_step`] does nothing for MoCo.
    ///
    /// Metrics: `pos_sim`, `neg_sim` (mean cosine of q with its key and with the queue), `acc1`
    /// (how often the positive has the largest logit), `temperature`, `momentum`, `queue_fill`.
    ///
    /// # Errors
    /// [`Error::Shape`] on malformed views; [`Error::Config`] when K is not divisible by the keys
    /// enqueued per step or the batch by `bn_splits` — checked before anything changes.
    fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput> {
        let n = check_views("MoCo", v1, v2, 1)?;
        self.check_batch_size(n)?;
        // 1. queries (with gradients)
        let z1 = self.query(v1)?; // [N, C], un-normalised (for the collapse monitor)
        let q1 = l2_normalize(&z1)?; // [N, C]
        let q2 = if self.config.symmetric { Some(l2_normalize(&self.query(v2)?)?) } else { None }; // [N, C]
                                                                                                   // 2. momentum update of the key encoder
        self.momentum_update()?;
        // 3. keys (no gradients, shuffled BN)
        let k2 = self.keys(v2)?; // [N, C]
        let k1 = if self.config.symmetric { Some(self.keys(v1)?) } else { None }; // [N, C]
                                                                                  // 4. logits, positive at index 0
        let logits12 = self.logits(&q1, &k2)?; // [N, 1+K]
                                               // 5. loss (symmetric: the sum of both directions)
        let (loss12, stats12) = self.loss_and_stats(&logits12); // [], [3]
        let (loss, stats, keys) = match (&q2, &k1) {
            (Some(q2), Some(k1)) => {
                let logits21 = self.logits(q2, k1)?; // [N, 1+K]
                let (loss21, stats21) = self.loss_and_stats(&logits21); // [], [3]
                (loss12 + loss21, (stats12 + stats21) / 2.0, Tensor::cat(&[k1, &k2], 0))
                // [], [3], [2N, C]
            }
            _ => (loss12, stats12, k2), // [], [3], [N, C]
        };
        // 6. dequeue and enqueue (in a data-parallel job, the keys of every rank)
        let keys = self.keys_of_all_ranks(keys)?;
        self.enqueue(&keys)?;
        let fixed = vec![
            ("temperature".to_string(), self.config.temperature),
            ("momentum".to_string(), self.config.momentum),
            ("queue_fill".to_string(), self.queue_fill()),
        ];
        let metrics = with_stats(fixed, &["pos_sim", "neg_sim", "acc1"], &stats);
        Ok(StepOutput { loss, z: Some(z1.detach()), metrics })
    }

    /// Nothing to do: MoCo's momentum update sits inside [`SslMethod::training_step`].
    fn after_step(&mut self, _step: usize, _total_steps: usize) -> Result<()> {
        Ok(())
    }

    fn online(&self) -> &nn::VarStore {
        &self.online
    }

    fn backbone(&self) -> &ResNet {
        &self.encoder_q
    }

    /// Shuffled BN across the ranks and every rank's keys into the queue, as builder.py.
    #[cfg(feature = "distributed")]
    fn set_distributed(&mut self, dist: Option<std::sync::Arc<crate::distributed::Dist>>) -> Result<()> {
        self.dist = dist.filter(|d| d.world_size() > 1);
        Ok(())
    }

    /// The key encoder as `encoder_k.*`, `queue` `[C, K]`, `queue_ptr` `[1]` and `queue_filled`
    /// `[1]` (int64).
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut state =
            store_state(&self.target, |name| format!("encoder_k{}", name.strip_prefix(PREFIX).unwrap_or(name)));
        state.push(("queue".into(), self.queue.detach()));
        state.push(("queue_ptr".into(), Tensor::from_slice(&[self.queue_ptr])));
        state.push(("queue_filled".into(), Tensor::from_slice(&[self.queue_filled])));
        state
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let ptr = Tensor::zeros([1], (Kind::Int64, Device::Cpu));
        let filled = Tensor::zeros([1], (Kind::Int64, Device::Cpu));
        let mut expected =
            store_state(&self.target, |name| format!("encoder_k{}", name.strip_prefix(PREFIX).unwrap_or(name)));
        expected.push(("queue".into(), self.queue.shallow_clone()));
        expected.push(("queue_ptr".into(), ptr.shallow_clone()));
        expected.push(("queue_filled".into(), filled.shallow_clone()));
        // store_state detaches; detached tensors share storage, so copies land in the stores.
        load_named("MoCo", &expected, state)?;
        let (ptr, filled) = (ptr.int64_value(&[0]), filled.int64_value(&[0]));
        let k = self.config.queue_size;
        if !(0..k).contains(&ptr) || !(0..=k).contains(&filled) {
            return Err(Error::Data(format!(
                "MoCo: the saved queue_ptr {ptr} / queue_filled {filled} do not fit a queue of K = {k}"
            )));
        }
        self.queue_ptr = ptr;
        self.queue_filled = filled;
        Ok(())
    }
}
