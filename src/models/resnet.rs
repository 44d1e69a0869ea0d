//! ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition",
//! <https://arxiv.org/abs/1512.03385>) in torchvision's layout.
//!
//! Every parameter lives at the path torchvision's `state_dict` uses (`conv1.weight`,
//! `layer1.0.bn1.running_mean`, `layer2.0.downsample.0.weight`, `fc.bias`, …), so weights
//! exported from torchvision load by name. Stages are struct fields, not closures, so features
//! can be read at any named stage ([`ResNet::forward_until`]) — what the seeds do with forward
//! hooks — and fine-tuning can give the stages their own learning rates.
//!
//! The small-image variant (`small_images: true`) replaces the 7x7/2 stem and its max-pool with a
//! 3x3/1 convolution, as SimCLR (Appendix B.9) and the MoCo CIFAR demo do for 32x32 inputs.
use super::norm::batch_norm as batch_norm_t;
use crate::error::{config_err, Error, Result};
use tch::nn;
use tch::Tensor;

/// How deep: 18 and 34 use basic blocks, 50 uses bottlenecks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Depth {
    /// ResNet-18: [2, 2, 2, 2] basic blocks, 512-d features.
    R18,
    /// ResNet-34: [3, 4, 6, 3] basic blocks, 512-d features.
    R34,
    /// ResNet-50: [3, 4, 6, 3] bottlenecks, 2048-d features.
    R50,
}

/// Architecture of a [`ResNet`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResNetConfig {
    /// 18, 34 or 50 layers.
    pub depth: Depth,
    /// 3x3 stride-1 stem without max-pool, for 32x32..96x96 images (SimCLR's CIFAR variant).
    pub small_images: bool,
    /// Classes of the final `fc` layer; `None` builds the backbone only (features out).
    pub num_classes: Option<i64>,
    /// Start the last BN of each residual branch at zero (Goyal et al. 2017), as torchvision's
    /// `zero_init_residual=True`; off by default, like torchvision.
    pub zero_init_residual: bool,
    /// Channels of the stem and `layer1` (64 in the paper); each later stage doubles them. A
    /// narrower network (16 or 32) keeps the depth, the stages and torchvision's names at a
    /// fraction of the compute — about (width/64)² — for pre-training on a laptop CPU (SimCLR,
    /// Chen et al. 2020, Figure 7, trains ResNet-50 at 1×, 2× and 4× width: wider is better,
    /// not required).
    #[serde(default = "default_width")]
    pub width: i64,
}

fn default_width() -> i64 {
    64
}

impl Default for ResNetConfig {
    /// ResNet-18, ImageNet stem, no classifier.
    fn default() -> Self {
        ResNetConfig { depth: Depth::R18, small_images: false, num_classes: None, zero_init_residual: false, width: 64 }
    }
}

impl ResNetConfig {
    /// The same config with the small-image stem.
    pub fn small_images(mut self, small: bool) -> Self {
        self.small_images = small;
        self
    }
    /// The same config with `width` channels in the stem and `layer1` (64 in the paper).
    pub fn width(mut self, width: i64) -> Self {
        self.width = width;
        self
    }
    /// The same config with a `num_classes`-way `fc` head.
    pub fn num_classes(mut self, n: i64) -> Self {
        self.num_classes = Some(n);
        self
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(4..=1024).contains(&self.width) {
            return Err(config_err!("ResNetConfig.width must be in 4..=1024 (64 in the paper), got {}", self.width));
        }
        if let Some(n) = self.num_classes {
            if n < 1 {
                return Err(config_err!("ResNetConfig.num_classes must be at least 1, got {n}"));
            }
        }
        Ok(())
    }
    /// Width of the pooled features: 512 for ResNet-18/34, 2048 for ResNet-50 (at width 64;
    /// 8 × width and 32 × width in general).
    pub fn feature_dim(&self) -> i64 {
        match self.depth {
            Depth::R18 | Depth::R34 => 8 * self.width,
            Depth::R50 => 32 * self.width,
        }
    }
}

/// A point in the network at which features can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Stage {
    /// After conv1 → bn1 → relu.
    Stem,
    /// After the stem's max-pool (the seed's `max_pool` hook; equal to `Stem` for small images).
    MaxPool,
    /// After `layer1` .. `layer4`.
    Layer1,
    /// After `layer2`.
    Layer2,
    /// After `layer3`.
    Layer3,
    /// After `layer4` (the seminar's activation maps).
    Layer4,
    /// Global average pool, flattened: `[N, feature_dim]`.
    AvgPool,
    /// Logits of `fc` (needs `num_classes`).
    Fc,
}

impl std::str::FromStr for Stage {
    type Err = Error;
    /// Accepts torchvision/seed names: "stem", "maxpool"/"max_pool", "layer1".."layer4",
    /// "avgpool"/"avg_pool", "fc"/"logits".
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "stem" | "relu" => Stage::Stem,
            "maxpool" | "max_pool" => Stage::MaxPool,
            "layer1" => Stage::Layer1,
            "layer2" => Stage::Layer2,
            "layer3" => Stage::Layer3,
            "layer4" => Stage::Layer4,
            "avgpool" | "avg_pool" => Stage::AvgPool,
            "fc" | "logits" => Stage::Fc,
            other => {
                return Err(config_err!(
                    "unknown stage '{other}': use stem, max_pool, layer1, layer2, layer3, layer4, avgpool or fc"
                ))
            }
        })
    }
}

/// Basic block (ResNet-18/34) or bottleneck (ResNet-50), torchvision names.
#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>, // conv1/bn1, conv2/bn2[, conv3/bn3]
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Block {
    fn new(p: &nn::Path, c_in: i64, planes: i64, stride: i64, bottleneck: bool, zero_init: bool) -> Block {
        let expansion = if bottleneck { 4 } else { 1 };
        let c_out = planes * expansion;
        // (kernel, in, out, stride) per conv; torchvision (v1.5) strides the 3x3 conv.
        let specs: Vec<(i64, i64, i64, i64)> = if bottleneck {
            vec![(1, c_in, planes, 1), (3, planes, planes, stride), (1, planes, c_out, 1)]
        } else {
            vec![(3, c_in, planes, stride), (3, planes, planes, 1)]
        };
        let last = specs.len();
        let convs = specs
            .into_iter()
            .enumerate()
            .map(|(i, (k, cin, cout, s))| {
                let conv = conv(&(p / format!("conv{}", i + 1)), cin, cout, k, s);
                let bn = batch_norm(&(p / format!("bn{}", i + 1)), cout, zero_init && i + 1 == last);
                (conv, bn)
            })
            .collect();
        let downsample = (stride != 1 || c_in != c_out)
            .then(|| (conv(&(p / "downsample" / "0"), c_in, c_out, 1, stride), batch_norm(&(p / "downsample" / "1"), c_out, false)));
        Block { convs, downsample }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut h = x.shallow_clone();
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            h = batch_norm_t(bn, &h.apply(conv), train)?;
            if i < last {
                let _ = h.relu_();
            }
        }
        let identity = match &self.downsample {
            Some((conv, bn)) => batch_norm_t(bn, &x.apply(conv), train)?,
            None => x.shallow_clone(),
        };
        let mut out = h + identity;
        let _ = out.relu_();
        Ok(out)
    }
}

/// A ResNet with torchvision's parameter names. See the module docs.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: [Vec<Block>; 4],
    fc: Option<nn::Linear>,
    config: ResNetConfig,
}

/// `conv{k}x{k}` without bias, Kaiming-normal (fan-out) init as torchvision.
fn conv(p: &nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: k / 2,
        bias: false,
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

fn batch_norm(p: &nn::Path, c: i64, zero: bool) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig { ws_init: nn::Init::Const(if zero { 0.0 } else { 1.0 }), ..Default::default() };
    nn::batch_norm2d(p, c, cfg)
}

impl ResNet {
    /// Builds the network under `p` (use `&vs.root()` so names match torchvision's keys).
    pub fn new(p: &nn::Path, config: &ResNetConfig) -> Result<ResNet> {
        config.validate()?;
        let (blocks, bottleneck) = match config.depth {
            Depth::R18 => ([2, 2, 2, 2], false),
            Depth::R34 => ([3, 4, 6, 3], false),
            Depth::R50 => ([3, 4, 6, 3], true),
        };
        let (k, stride) = if config.small_images { (3, 1) } else { (7, 2) };
        let w = config.width;
        let conv1 = conv(&(p / "conv1"), 3, w, k, stride);
        let bn1 = batch_norm(&(p / "bn1"), w, false);
        let expansion = if bottleneck { 4 } else { 1 };
        let mut c_in = w;
        let mut layers: [Vec<Block>; 4] = Default::default();
        for (i, (&n, planes)) in blocks.iter().zip([w, 2 * w, 4 * w, 8 * w]).enumerate() {
            let lp = p / format!("layer{}", i + 1);
            for j in 0..n {
                let stride = if j == 0 && i > 0 { 2 } else { 1 };
                layers[i].push(Block::new(&(&lp / j.to_string()), c_in, planes, stride, bottleneck, config.zero_init_residual));
                c_in = planes * expansion;
            }
        }
        let fc = config.num_classes.map(|n| nn::linear(p / "fc", c_in, n, Default::default()));
        Ok(ResNet { conv1, bn1, layers, fc, config: config.clone() })
    }

    /// The architecture.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }
    /// Width of the pooled features (512 or 2048 at the paper's width).
    pub fn feature_dim(&self) -> i64 {
        self.config.feature_dim()
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let s = x.size();
        if s.len() != 4 || s[1] != 3 {
            return Err(Error::shape("ResNet input", "[N, 3, H, W] float, normalised", &s));
        }
        let min = if self.config.small_images { 8 } else { 32 };
        if s[2] < min || s[3] < min {
            return Err(Error::shape(
                "ResNet input",
                format!("images of at least {min}x{min} (use small_images for small inputs)"),
                &s,
            ));
        }
        if !matches!(x.kind(), tch::Kind::Float | tch::Kind::Half | tch::Kind::BFloat16 | tch::Kind::Double) {
            return Err(Error::Data(format!(
                "ResNet input must be floating point, got {:?}: convert u8 images with ImageSet::float_batch",
                x.kind()
            )));
        }
        Ok(())
    }

    /// Runs the network up to `stage` and returns the output there.
    ///
    /// # Shapes
    /// For 224x224 inputs of ResNet-18: Stem `[N, 64, 112, 112]`, MaxPool/Layer1 `[N, 64, 56, 56]`,
    /// Layer2 `[N, 128, 28, 28]`, Layer3 `[N, 256, 14, 14]`, Layer4 `[N, 512, 7, 7]`,
    /// AvgPool `[N, 512]`, Fc `[N, num_classes]`.
    pub fn forward_until(&self, x: &Tensor, stage: Stage, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        self.check_stage(stage)?;
        let mut h = batch_norm_t(&self.bn1, &x.apply(&self.conv1), train)?;
        let _ = h.relu_(); // [N, 64, H/2, W/2] (H, W small)
        if stage == Stage::Stem {
            return Ok(h);
        }
        if !self.config.small_images {
            h = h.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false); // [N, 64, H/4, W/4]
        }
        if stage == Stage::MaxPool {
            return Ok(h);
        }
        self.run_stages(h, Stage::MaxPool, stage, train)
    }

    /// Continues from the output `h` of stage `from` up to stage `to` (after `from`): the other
    /// half of [`ResNet::forward_until`], so `forward_from(forward_until(x, s), s, Fc)` equals
    /// `forward_until(x, Fc)`. Grad-CAM uses it to get the logits from a stage's activations.
    ///
    /// # Errors
    /// `from` is `Stem` (the max-pool needs the stem's own output; start from `MaxPool`), `to`
    /// does not come after `from`, or `to` is `Fc` on a network without `fc`.
    pub fn forward_from(&self, h: &Tensor, from: Stage, to: Stage, train: bool) -> Result<Tensor> {
        self.check_stage(to)?;
        if from == Stage::Stem || to <= from || from >= Stage::AvgPool {
            return Err(Error::Config(format!(
                "forward_from: cannot run from {from:?} to {to:?}; start at MaxPool..Layer4 and end at a later stage"
            )));
        }
        self.run_stages(h.shallow_clone(), from, to, train)
    }

    fn check_stage(&self, stage: Stage) -> Result<()> {
        if stage == Stage::Fc && self.fc.is_none() {
            return Err(Error::Config("this ResNet has no fc layer (num_classes is None); read Stage::AvgPool instead".into()));
        }
        Ok(())
    }

    /// The residual stages after `from` up to `to`, then pooling and `fc` as `to` asks.
    fn run_stages(&self, mut h: Tensor, from: Stage, to: Stage, train: bool) -> Result<Tensor> {
        let stages = [Stage::Layer1, Stage::Layer2, Stage::Layer3, Stage::Layer4];
        for (layer, &here) in self.layers.iter().zip(&stages) {
            if here <= from {
                continue;
            }
            for block in layer {
                h = block.forward_t(&h, train)?; // [N, C_i, H_i, W_i]
            }
            if to == here {
                return Ok(h);
            }
        }
        let h = h.adaptive_avg_pool2d([1, 1]).flatten(1, -1); // [N, D]
        Ok(match (to, &self.fc) {
            (Stage::Fc, Some(fc)) => h.apply(fc), // [N, classes]
            _ => h,
        })
    }

    /// Pooled features `[N, feature_dim]` (the representation SSL methods train).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_until(x, Stage::AvgPool, train)
    }

    /// Logits `[N, num_classes]` when the network has `fc`, else the pooled features.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let stage = if self.fc.is_some() { Stage::Fc } else { Stage::AvgPool };
        self.forward_until(x, stage, train)
    }
}

/// ResNet-18 (ImageNet stem) with an optional classifier, under `p`.
pub fn resnet18(p: &nn::Path, num_classes: Option<i64>) -> Result<ResNet> {
    ResNet::new(p, &ResNetConfig { depth: Depth::R18, num_classes, ..Default::default() })
}
/// ResNet-34 (ImageNet stem) with an optional classifier, under `p`.
pub fn resnet34(p: &nn::Path, num_classes: Option<i64>) -> Result<ResNet> {
    ResNet::new(p, &ResNetConfig { depth: Depth::R34, num_classes, ..Default::default() })
}
/// ResNet-50 (ImageNet stem) with an optional classifier, under `p`.
pub fn resnet50(p: &nn::Path, num_classes: Option<i64>) -> Result<ResNet> {
    ResNet::new(p, &ResNetConfig { depth: Depth::R50, num_classes, ..Default::default() })
}
