//! Everything a notebook needs: `use selfsup::prelude::*;`
pub use crate::augment::{self, Augment, MultiView, TwoViews};
pub use crate::data::{self, synthetic::SyntheticConfig, ImageSet, Loader, LoaderConfig, Normalization, Source, Split, Views};
pub use crate::device::{environment, pick_device, seed_everything};
pub use crate::error::{Error, Result};
pub use crate::models::{self, Depth, ResNet, ResNetConfig, Stage};
pub use crate::viz::{self, Figure, GridConfig, Html, Image, Table};
pub use tch::{self, nn, nn::OptimizerConfig, Device, Kind, Tensor};
pub use crate::check;
pub use crate::homework;
pub use crate::losses;
pub use crate::methods::{
    BarlowTwins, BarlowTwinsConfig, Byol, ByolConfig, Moco, MocoConfig, SimClr, SimClrConfig, SslMethod, StepMetrics,
    StepOutput,
};
pub use crate::models::{HeadConfig, Mlp};
pub use crate::momentum;
pub use crate::viz::{GradCamConfig, LinePlotConfig, Series, TsneConfig};
pub use crate::train::{self, History, LrSchedule, Precision, TrainConfig};
pub use crate::experiments::{self, Verdicts};
pub use crate::eval::{
    self, Backbone, Classifier, Embeddings, FeatureConfig, FineTuneConfig, FlatnessConfig, FractionsConfig, LinearProbeConfig,
    LogisticConfig, OodConfig,
};
pub use crate::viz::ExplorerConfig;
