//! One place that builds any method from its name: the binaries (`selfsup-train`,
//! `selfsup-results`), the benches and the notebooks' helpers all go through [`MethodSpec`], so a
//! rule such as "which stem for small images" or "which preset at 32 px" is written once.
//!
//! Adding a method: its file in `methods/` (config struct with the paper's defaults, the type
//! implementing [`SslMethod`]), then one [`MethodKind`] variant with its name and a line in
//! [`MethodSpec::config`] and [`MethodConfig::build`] (docs/architecture.md walks through it).
//!
//! ```no_run
//! use selfsup::methods::registry::{MethodKind, MethodSpec};
//! use selfsup::models::Depth;
//! # fn main() -> selfsup::Result<()> {
//! let spec = MethodSpec::new("byol".parse::<MethodKind>()?, Depth::R18, 32);
//! let (mut method, views) = spec.build(tch::Device::Cpu)?; // BYOL's CIFAR preset, 3x3 stem, BYOL's two views
//! # let _ = (&mut method, views); Ok(()) }
//! ```
use super::{BarlowTwins, BarlowTwinsConfig, Byol, ByolConfig, Moco, MocoConfig, SimClr, SimClrConfig, SslMethod};
use crate::augment::{presets, TwoViews};
use crate::error::{Error, Result};
use crate::models::{Depth, ResNetConfig};
use tch::Device;

/// Every method the kit trains, by the name the papers and the CLIs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// MoCo v1 (He et al. 2020): linear head, τ = 0.07, the v1 augmentation.
    MocoV1,
    /// MoCo v2 (Chen et al. 2020): MLP head, τ = 0.2, the v2 augmentation ("aug-plus").
    MocoV2,
    /// SimCLR (Chen et al. 2020): NT-Xent over the 2N views of a batch.
    SimClr,
    /// BYOL (Grill et al. 2020): predictor + EMA target.
    Byol,
    /// BYOL with the target equal to the online network (the paper's τ = 0 ablation; the post's
    /// "no momentum" model).
    ByolNoMomentum,
    /// Barlow Twins (Zbontar et al. 2021): the cross-correlation towards the identity.
    BarlowTwins,
}

impl MethodKind {
    /// Every kind, in the order the help texts list them.
    pub const ALL: [MethodKind; 6] = [
        MethodKind::MocoV1,
        MethodKind::MocoV2,
        MethodKind::SimClr,
        MethodKind::Byol,
        MethodKind::ByolNoMomentum,
        MethodKind::BarlowTwins,
    ];

    /// The name on the command line and in run folders.
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::MocoV1 => "moco_v1",
            MethodKind::MocoV2 => "moco_v2",
            MethodKind::SimClr => "simclr",
            MethodKind::Byol => "byol",
            MethodKind::ByolNoMomentum => "byol_no_momentum",
            MethodKind::BarlowTwins => "barlow_twins",
        }
    }

    /// The names, comma-separated, for error messages and help texts.
    pub fn names() -> String {
        MethodKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    }
}

impl std::fmt::Display for MethodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MethodKind {
    type Err = Error;
    /// A name from [`MethodKind::name`] (case and `-` for `_` do not matter).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        MethodKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::Config(format!("unknown method '{s}': use one of {}", MethodKind::names())))
    }
}

/// Whether images of this side get the small-image stem (3×3 stride-1 first convolution, no
/// max-pool), as SimCLR, MoCo's CIFAR demo and BYOL's CIFAR runs do: at 64 px or less the
/// ImageNet stem would shrink the image 4× before the first block. The one place this rule lives.
pub fn small_image_stem(image_size: i64) -> bool {
    image_size <= 64
}

/// A method's config, one variant per config struct, so callers can adjust a field the CLI
/// exposes (MoCo's K, a temperature) before building.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodConfig {
    /// MoCo v1 or v2.
    Moco(MocoConfig),
    /// SimCLR.
    SimClr(SimClrConfig),
    /// BYOL, with or without momentum.
    Byol(ByolConfig),
    /// Barlow Twins.
    BarlowTwins(BarlowTwinsConfig),
}

impl MethodConfig {
    /// The method, with fresh weights from libtorch's seeded generator.
    ///
    /// # Errors
    /// The method's own checks of its config.
    pub fn build(self, device: Device) -> Result<Box<dyn SslMethod>> {
        Ok(match self {
            MethodConfig::Moco(c) => Box::new(Moco::new(c, device)?),
            MethodConfig::SimClr(c) => Box::new(SimClr::new(c, device)?),
            MethodConfig::Byol(c) => Box::new(Byol::new(c, device)?),
            MethodConfig::BarlowTwins(c) => Box::new(BarlowTwins::new(c, device)?),
        })
    }

    /// The same config with another backbone (each config keeps its head in step with it).
    pub fn backbone(self, backbone: ResNetConfig) -> Self {
        match self {
            MethodConfig::Moco(c) => MethodConfig::Moco(c.backbone(backbone)),
            MethodConfig::SimClr(c) => MethodConfig::SimClr(c.backbone(backbone)),
            MethodConfig::Byol(c) => MethodConfig::Byol(c.backbone(backbone)),
            MethodConfig::BarlowTwins(c) => MethodConfig::BarlowTwins(c.backbone(backbone)),
        }
    }
}

/// What decides a method's recipe: the kind, the backbone, the side of the training crops.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSpec {
    /// Which method.
    pub kind: MethodKind,
    /// The encoder; [`MethodSpec::new`] picks the stem from the image size.
    pub backbone: ResNetConfig,
    /// Side of the training crops in pixels.
    pub image_size: i64,
}

impl MethodSpec {
    /// `kind` on a ResNet of `depth` with the stem [`small_image_stem`] picks for `image_size`.
    pub fn new(kind: MethodKind, depth: Depth, image_size: i64) -> Self {
        let backbone = ResNetConfig { depth, small_images: small_image_stem(image_size), ..Default::default() };
        MethodSpec { kind, backbone, image_size }
    }

    /// The same spec with another backbone (a width, the other stem).
    pub fn backbone(mut self, backbone: ResNetConfig) -> Self {
        self.backbone = backbone;
        self
    }

    /// The method's config: the papers' ImageNet recipe, or its CIFAR preset at 64 px or less
    /// (SimCLR, BYOL, Barlow Twins; MoCo's K, m and τ are `main_moco.py`'s at every size), on
    /// this spec's backbone.
    pub fn config(&self) -> MethodConfig {
        let small = small_image_stem(self.image_size);
        let config = match self.kind {
            MethodKind::MocoV1 => MethodConfig::Moco(MocoConfig::v1()),
            MethodKind::MocoV2 => MethodConfig::Moco(MocoConfig::v2()),
            MethodKind::SimClr => MethodConfig::SimClr(if small { SimClrConfig::cifar() } else { SimClrConfig::default() }),
            MethodKind::Byol | MethodKind::ByolNoMomentum => {
                let base = if small { ByolConfig::cifar() } else { ByolConfig::default() };
                MethodConfig::Byol(base.momentum(self.kind == MethodKind::Byol))
            }
            MethodKind::BarlowTwins => {
                MethodConfig::BarlowTwins(if small { BarlowTwinsConfig::cifar() } else { BarlowTwinsConfig::default() })
            }
        };
        config.backbone(self.backbone.clone())
    }

    /// The method's augmentation of two views at this image size (SimCLR's CIFAR pipeline, without
    /// blur, at 32 px or less).
    pub fn views(&self) -> TwoViews {
        let size = self.image_size;
        match self.kind {
            MethodKind::MocoV1 => presets::moco_v1(size).into(),
            MethodKind::MocoV2 => presets::moco_v2(size).into(),
            MethodKind::SimClr if size <= 32 => presets::simclr_cifar(size).into(),
            MethodKind::SimClr => presets::simclr(size).into(),
            MethodKind::Byol | MethodKind::ByolNoMomentum => presets::byol(size),
            MethodKind::BarlowTwins => presets::barlow_twins(size),
        }
    }

    /// The method (fresh weights) and its views.
    ///
    /// # Errors
    /// The method's own checks of its config.
    pub fn build(&self, device: Device) -> Result<(Box<dyn SslMethod>, TwoViews)> {
        Ok((self.config().build(device)?, self.views()))
    }
}
