//! Networks. [`resnet`]: ResNet-18/34/50 with torchvision's parameter names, and the
//! small-image variant used for CIFAR/STL-10 in the seeds.
pub mod resnet;

pub use resnet::{resnet18, resnet34, resnet50, Depth, ResNet, ResNetConfig, Stage};
pub mod heads;
pub mod norm;

pub use heads::{HeadConfig, Mlp};
pub mod weights;

pub use weights::{load_backbone, save_backbone};
