//! Projection heads, predictors and linear classifiers: one [`Mlp`] built from a [`HeadConfig`].
//!
//! Every self-supervised method in the kit puts a small MLP on top of the backbone's pooled
//! features `h` and computes its loss on the output `z = g(h)` (SimCLR: Chen et al. 2020,
//! "A Simple Framework for Contrastive Learning of Visual Representations",
//! <https://arxiv.org/abs/2002.05709>). The presets reproduce the papers' heads:
//!
//! | preset | layers (for a ResNet-50) | BatchNorm | source |
//! |---|---|---|---|
//! | [`HeadConfig::moco_v1`] | 2048→128 | no | MoCo, He et al. 2020, builder.py |
//! | [`HeadConfig::moco_v2`] | 2048→2048→128 | no | MoCo v2, Chen et al. 2020, `--mlp` |
//! | [`HeadConfig::simclr`] | 2048→2048→128 | hidden | SimCLR v1, Chen et al. 2020 |
//! | [`HeadConfig::simclr_v2`] | 2048→2048→2048→128 | hidden | SimCLR v2, Chen et al. 2020b |
//! | [`HeadConfig::byol_projector`] | 2048→4096→256 | hidden | BYOL, Grill et al. 2020 |
//! | [`HeadConfig::byol_predictor`] | 256→4096→256 | hidden | BYOL, Grill et al. 2020 |
//! | [`HeadConfig::barlow_twins`] | 2048→8192→8192→8192 | hidden | Barlow Twins, Zbontar et al. 2021 |
//! | [`HeadConfig::linear_classifier`] | D→classes | no | MoCo main_lincls.py |
//!
//! Widths are given for a ResNet-50 (2048-d features); [`HeadConfig::for_features`] rescales a
//! preset to another backbone (a hidden width equal to the input width follows it, as MoCo's
//! `dim_mlp = fc.weight.shape[1]` does, so MoCo v2 on a ResNet-18 is 512→512→128).
//!
//! ## Parameter names
//! Layers are named like the entries of a PyTorch `nn.Sequential` (Linear, BatchNorm1d, ReLU,
//! each taking an index), so state dicts of the reference code load by name: MoCo v2's
//! `encoder_q.fc.0.weight` / `encoder_q.fc.2.weight`, Barlow Twins' `projector.0.weight`,
//! `projector.1.running_mean`, `projector.3.weight`, …, `projector.6.weight`. A single linear
//! layer without BatchNorm sits directly at the head's path (`fc.weight`), like torchvision's
//! classifier and MoCo v1's head.
//!
//! Used by every method in [`crate::methods`] and by the linear probe.
use crate::error::{config_err, Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// Architecture of an [`Mlp`] head: `num_layers` linear layers, `in_dim → hidden_dim → … →
/// out_dim`, ReLU between layers, optional BatchNorm after the hidden layers and after the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Input width: the backbone's feature width (2048 for ResNet-50, 512 for ResNet-18).
    pub in_dim: i64,
    /// Width of every hidden layer (unused when `num_layers == 1`).
    pub hidden_dim: i64,
    /// Output width (the projection `z` or the class logits).
    pub out_dim: i64,
    /// Number of linear layers, at least 1 (1 = a linear head).
    pub num_layers: usize,
    /// BatchNorm1d after each hidden linear layer, before its ReLU.
    pub batch_norm: bool,
    /// BatchNorm1d after the last linear layer too (no ReLU after it).
    pub last_batch_norm: bool,
    /// Linear layers with a bias (Barlow Twins' official projector has none).
    pub bias: bool,
    /// Initialise the weights from N(0, std²) and the biases at 0; `None` keeps PyTorch's default
    /// `nn.Linear` init (Kaiming-uniform with a = √5).
    pub weight_std: Option<f64>,
}

impl Default for HeadConfig {
    /// The MoCo v2 head ([`HeadConfig::moco_v2`]).
    fn default() -> Self {
        HeadConfig::moco_v2()
    }
}

impl HeadConfig {
    /// MoCo v1: a single linear layer 2048→128.
    ///
    /// "We use a ResNet as the encoder, whose last fully-connected layer (after global average
    /// pooling) has a fixed-dimensional output (128-D)." (MoCo, He et al. 2020, §3.3).
    /// dim = 128: `--moco-dim` default in main_moco.py.
    pub fn moco_v1() -> Self {
        HeadConfig {
            in_dim: 2048,
            hidden_dim: 2048,
            out_dim: 128,
            num_layers: 1,
            batch_norm: false,
            last_batch_norm: false,
            bias: true,
            weight_std: None,
        }
    }

    /// MoCo v2: 2048→2048→128 with a ReLU, no BatchNorm.
    ///
    /// "Using an MLP head: following \[SimCLR\], we replace the fc head in MoCo with a 2-layer MLP
    /// head (hidden layer 2048-d, with ReLU)." (MoCo v2, Chen et al. 2020, §2). builder.py:
    /// `nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_q.fc)`.
    pub fn moco_v2() -> Self {
        HeadConfig { num_layers: 2, ..HeadConfig::moco_v1() }
    }

    /// SimCLR (v1): 2048→2048→128, BatchNorm on the hidden layer.
    ///
    /// "We use a MLP with one hidden layer to obtain z_i = g(h_i) = W⁽²⁾σ(W⁽¹⁾h_i) where σ is a
    /// ReLU non-linearity." (SimCLR, Chen et al. 2020, §2.1); output 128-d (§B.9 and Figure 8);
    /// BatchNorm in the hidden layer as the official code's `use_bn=True` and lightly's
    /// `SimCLRProjectionHead`.
    // Deviation: the official TF code also batch-normalises the 128-d output (without centring);
    // the paper's formula has no BN there, and we follow the paper.
    pub fn simclr() -> Self {
        HeadConfig { batch_norm: true, ..HeadConfig::moco_v2() }
    }

    /// SimCLR v2: a deeper 3-layer head 2048→2048→2048→128 with BatchNorm on the hidden layers.
    ///
    /// "We also increase the capacity of the non-linear network g(·) (a.k.a. projection head), by
    /// making it deeper. […] we use a 3-layer projection head" (SimCLR v2, Chen et al. 2020b, §2).
    pub fn simclr_v2() -> Self {
        HeadConfig { num_layers: 3, ..HeadConfig::simclr() }
    }

    /// BYOL projector: 2048→4096→256, BatchNorm on the hidden layer.
    ///
    /// "the representation y is projected to a smaller space by a multi-layer perceptron (MLP)
    /// g_θ […] This MLP consists in a linear layer with output size 4096 followed by batch
    /// normalization, rectified linear units (ReLU), and a final linear layer with output
    /// dimension 256." (BYOL, Grill et al. 2020, §3.3).
    pub fn byol_projector() -> Self {
        HeadConfig {
            in_dim: 2048,
            hidden_dim: 4096,
            out_dim: 256,
            num_layers: 2,
            batch_norm: true,
            last_batch_norm: false,
            bias: true,
            weight_std: None,
        }
    }

    /// BYOL predictor: 256→4096→256, the projector's architecture on the projection.
    ///
    /// "The predictor q_θ uses the same architecture as g_θ." (BYOL, Grill et al. 2020, §3.3).
    pub fn byol_predictor() -> Self {
        HeadConfig { in_dim: 256, ..HeadConfig::byol_projector() }
    }

    /// Barlow Twins projector: 2048→8192→8192→8192, BatchNorm + ReLU after the first two layers,
    /// no bias (the official code's `nn.Linear(…, bias=False)`).
    ///
    /// "The projector network has three linear layers, each with 8192 output units. The first two
    /// layers of the projector are followed by a batch normalization layer and rectified linear
    /// units." (Barlow Twins, Zbontar et al. 2021, §4 Implementation details).
    pub fn barlow_twins() -> Self {
        HeadConfig {
            in_dim: 2048,
            hidden_dim: 8192,
            out_dim: 8192,
            num_layers: 3,
            batch_norm: true,
            last_batch_norm: false,
            bias: false,
            weight_std: None,
        }
    }

    /// A linear classifier `in_dim → num_classes`, weights N(0, 0.01²), biases 0.
    ///
    /// main_lincls.py (MoCo): `model.fc.weight.data.normal_(mean=0.0, std=0.01)`,
    /// `model.fc.bias.data.zero_()`.
    pub fn linear_classifier(in_dim: i64, num_classes: i64) -> Self {
        HeadConfig {
            in_dim,
            hidden_dim: in_dim,
            out_dim: num_classes,
            num_layers: 1,
            batch_norm: false,
            last_batch_norm: false,
            bias: true,
            weight_std: Some(0.01),
        }
    }

    /// The same head for a backbone with `feature_dim`-wide features: sets `in_dim`, and a hidden
    /// width that equalled the old input width follows it (MoCo's `dim_mlp`, SimCLR's hidden = input),
    /// while fixed widths (BYOL's 4096, Barlow Twins' 8192) stay.
    pub fn for_features(mut self, feature_dim: i64) -> Self {
        if self.hidden_dim == self.in_dim {
            self.hidden_dim = feature_dim;
        }
        self.in_dim = feature_dim;
        self
    }
    /// The same head with another input width (nothing else changes).
    pub fn in_dim(mut self, d: i64) -> Self {
        self.in_dim = d;
        self
    }
    /// The same head with another hidden width.
    pub fn hidden_dim(mut self, d: i64) -> Self {
        self.hidden_dim = d;
        self
    }
    /// The same head with another output width.
    pub fn out_dim(mut self, d: i64) -> Self {
        self.out_dim = d;
        self
    }
    /// The same head with another number of linear layers.
    pub fn num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if self.num_layers < 1 {
            return Err(config_err!("HeadConfig.num_layers must be at least 1, got 0"));
        }
        for (field, v) in [("in_dim", self.in_dim), ("hidden_dim", self.hidden_dim), ("out_dim", self.out_dim)] {
            if v < 1 {
                return Err(config_err!("HeadConfig.{field} must be at least 1, got {v}"));
            }
        }
        if let Some(std) = self.weight_std {
            if !(std.is_finite() && std > 0.0) {
                return Err(config_err!("HeadConfig.weight_std must be a positive number, got {std}"));
            }
        }
        Ok(())
    }

    /// Whether any layer has BatchNorm (then training needs batches of at least 2).
    pub fn has_batch_norm(&self) -> bool {
        (self.batch_norm && self.num_layers > 1) || self.last_batch_norm
    }
}

/// One linear layer with its optional BatchNorm and ReLU.
#[derive(Debug)]
struct MlpLayer {
    linear: nn::Linear,
    bn: Option<nn::BatchNorm>,
    relu: bool,
}

/// A multi-layer perceptron head (projector, predictor or classifier). See the module docs.
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<MlpLayer>,
    config: HeadConfig,
}

impl Mlp {
    /// Builds the head under `p` (e.g. `&(vs.root() / "projector")`), with `nn.Sequential`-style
    /// indices as parameter names (module docs).
    ///
    /// # Errors
    /// [`Error::Config`] when the config is out of range.
    ///
    /// # Example
    /// ```
    /// use selfsup::models::heads::{HeadConfig, Mlp};
    /// use selfsup::tch::{nn, Device, Kind, Tensor};
    /// let vs = nn::VarStore::new(Device::Cpu);
    /// let head = Mlp::new(&(vs.root() / "fc"), &HeadConfig::moco_v2().for_features(512))?;
    /// let z = head.forward_t(&Tensor::randn([4, 512], (Kind::Float, Device::Cpu)), true)?; // [4, 128]
    /// assert_eq!(z.size(), [4, 128]);
    /// assert!(vs.variables().contains_key("fc.2.weight"));
    /// # Ok::<(), selfsup::Error>(())
    /// ```
    pub fn new(p: &nn::Path, config: &HeadConfig) -> Result<Mlp> {
        config.validate()?;
        let n = config.num_layers;
        let single = n == 1 && !config.last_batch_norm;
        let mut index = 0usize; // position in the equivalent nn.Sequential
        let mut layers = Vec::with_capacity(n);
        for i in 0..n {
            let last = i + 1 == n;
            let c_in = if i == 0 { config.in_dim } else { config.hidden_dim };
            let c_out = if last { config.out_dim } else { config.hidden_dim };
            let lp = if single { p.clone() } else { p / index.to_string() };
            index += 1;
            let mut lcfg = nn::LinearConfig { bias: config.bias, ..Default::default() };
            if let Some(std) = config.weight_std {
                lcfg.ws_init = nn::Init::Randn { mean: 0.0, stdev: std };
                lcfg.bs_init = Some(nn::Init::Const(0.0));
            }
            let linear = nn::linear(&lp, c_in, c_out, lcfg);
            let with_bn = if last { config.last_batch_norm } else { config.batch_norm };
            let bn = with_bn.then(|| {
                // PyTorch's BatchNorm1d starts at weight 1, bias 0 (tch's default weight is U(0, 1)).
                let bcfg = nn::BatchNormConfig { ws_init: nn::Init::Const(1.0), ..Default::default() };
                let bn = nn::batch_norm1d(p / index.to_string(), c_out, bcfg);
                index += 1;
                bn
            });
            let relu = !last;
            if relu {
                index += 1; // nn.ReLU has no parameters but takes an index
            }
            layers.push(MlpLayer { linear, bn, relu });
        }
        Ok(Mlp { layers, config: config.clone() })
    }

    /// The architecture.
    pub fn config(&self) -> &HeadConfig {
        &self.config
    }

    /// Applies the head; `train` selects batch statistics (true) or running statistics in BatchNorm.
    ///
    /// # Shapes
    /// `x`: `[N, in_dim]` → `[N, out_dim]`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` is not `[N, in_dim]`, or when `N < 2` in training mode with
    /// BatchNorm (batch statistics of one sample are undefined).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let s = x.size();
        if s.len() != 2 || s[1] != self.config.in_dim {
            return Err(Error::shape("Mlp input", format!("[N, {}]", self.config.in_dim), &s));
        }
        if train && self.config.has_batch_norm() && s[0] < 2 {
            return Err(Error::shape(
                "Mlp input in training mode (BatchNorm needs batch statistics)",
                "[N >= 2, D]",
                &s,
            ));
        }
        let mut h = x.shallow_clone(); // [N, in_dim]
        for layer in &self.layers {
            h = h.apply(&layer.linear); // [N, hidden_dim] or [N, out_dim]
            if let Some(bn) = &layer.bn {
                h = super::norm::batch_norm(bn, &h, train)?; // same shape
            }
            if layer.relu {
                h = h.relu(); // same shape
            }
        }
        Ok(h)
    }
}
