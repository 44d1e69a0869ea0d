//! Everything a person looks at, rendered inline in the notebook and savable to files (B4).
//!
//! - [`Image`], [`Html`], [`Table`], [`Figure`]: the display family. The last expression of an
//!   evcxr cell that is one of these appears under the cell (PNG or HTML); `save` writes it.
//! - [`image_grid`] / [`show_images`]: a batch of images with captions (S0.6).
pub mod display;
pub mod figure;
pub mod grid;

pub use display::{escape_html, Html, Image, Payload, Table};
pub use figure::{Figure, Plot};
pub use grid::{image_grid, show_images, GridConfig};
