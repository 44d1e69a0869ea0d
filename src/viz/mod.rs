//! Everything a person looks at, rendered inline in the notebook and savable to files (B4).
//!
//! - [`Image`], [`Html`], [`Table`], [`Figure`]: the display family. The last expression of an
//!   evcxr cell that is one of these appears under the cell (PNG or HTML); `save` writes it.
//! - [`image_grid`] / [`show_images`]: a batch of images with captions (S0.6).
//! - How the other layers' values look: `ImageSet::show`, `augment::ViewGrid`, `History::plot`
//!   and `plot_z_std`, `eval::Comparison` and the eval reports' `table`/`series`, and the
//!   `Environment` table. They are inherent methods of those types, written here (`show.rs`,
//!   `history.rs`, `reports.rs`) because this is the layer that draws and no layer below it may
//!   import it; a notebook calls them as before.
pub mod display;
pub mod figure;
pub mod grid;
// The display methods of the lower layers' values (inherent impls; see each file).
mod history;
mod reports;
mod show;

pub use display::{escape_html, Html, Image, Payload, Table};
pub use figure::{Figure, Plot};
pub use grid::{image_grid, show_images, GridConfig};

// Plots and embeddings (issue 6): palette, learning curves, t-SNE, activation maps and
// Grad-CAM, confusion matrices, loss landscapes, bar charts.
pub mod activation;
pub mod bars;
pub mod confusion;
pub mod curves;
pub mod landscape;
pub mod palette;
pub mod tsne;

pub use activation::{
    activation_energy, activation_map, activation_maps, grad_cam, grad_cam_from, grad_cam_maps, heatmap_triptych,
    magma_colorize, GradCamConfig,
};
pub use bars::{bar_chart, BarChartConfig, Bars};
pub use confusion::{confusion_counts, confusion_matrix, ConfusionConfig};
pub use curves::{line_plot, line_plot_two_axes, LinePlotConfig, Series};
pub use landscape::{loss_landscape_1d, loss_landscape_2d, LandscapeConfig};
pub use tsne::{
    knn_accuracy_2d, pca, scatter, trustworthiness, tsne, tsne_embed, tsne_embeddings, tsne_fine_tuning, tsne_pair, tsne_snapshots, TsneBackend,
    TsneConfig,
};

// Inline embedding explorer (S1.5, B4): canvas + vanilla JS, self-contained.
pub mod explorer;
pub use explorer::{embedding_explorer, explorer, ExplorerConfig, Projection};
