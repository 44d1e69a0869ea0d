//! How the values of the layers below look inline: an [`ImageSet`] (`set.show(n)` and its
//! display hook), the [`ViewGrid`] of [`crate::augment::show_views`], and the [`Environment`]
//! table of [`crate::environment`].
//!
//! These are inherent methods of types that `data`, `augment` and `device` define; they live here
//! because drawing is this layer's work and those modules must not import `viz`. The calls a
//! notebook writes are the same (`train.show(20)?`, `augment::show_views(...)?`, `environment()`).
use super::display::{Payload, Table};
use super::figure::Figure;
use super::grid::{image_grid, GridConfig};
use crate::augment::ViewGrid;
use crate::data::ImageSet;
use crate::device::Environment;
use crate::error::{Error, Result};
use std::path::Path;

impl ImageSet {
    /// A grid of the first `n` images with their class names, shown inline.
    ///
    /// # Errors
    /// [`Error::Data`] for a set without images.
    pub fn show(&self, n: usize) -> Result<Figure> {
        let n = n.min(self.len()).max(1).min(self.len());
        if n == 0 {
            return Err(Error::Data(format!("'{}' has no image to show", self.name)));
        }
        let indices: Vec<i64> = (0..n as i64).collect();
        let captions = if self.labels.is_some() { self.names_of(&indices) } else { Vec::new() };
        let columns = (n as f64).sqrt().ceil().max(1.0) as usize;
        let columns = columns.max(n.min(8));
        image_grid(&self.images.narrow(0, 0, n as i64), &captions, &GridConfig { columns, ..Default::default() })
    }

    /// evcxr display hook: a one-line summary and a grid of the first 16 images.
    pub fn evcxr_display(&self) {
        println!("{self}");
        match self.show(16) {
            Ok(fig) => fig.evcxr_display(),
            Err(e) => println!("(no preview: {e})"),
        }
    }
}

impl ViewGrid {
    /// The grid as a figure: `columns` tiles a row, each with its caption, the title above.
    ///
    /// # Errors
    /// Those of [`image_grid`] (a wrong tile shape, captions that do not match the tiles).
    pub fn figure(&self) -> Result<Figure> {
        let cfg = GridConfig { columns: self.columns, title: Some(self.title.clone()), ..Default::default() };
        image_grid(&self.tiles, &self.captions, &cfg)
    }

    /// Writes the grid as PNG or SVG (by the extension), as [`Figure::save`] does.
    ///
    /// # Errors
    /// Those of [`ViewGrid::figure`] and [`Figure::save`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.figure()?.save(path)
    }

    /// evcxr display hook: the grid as an image.
    pub fn evcxr_display(&self) {
        Payload::emit(self.figure().and_then(|f| f.payload()));
    }
}

impl Environment {
    /// The environment as a displayable table.
    pub fn table(&self) -> Table {
        let rows = self.rows().into_iter().map(|(k, v)| vec![k, v]).collect();
        Table::new(vec!["".into(), "value".into()], rows)
    }

    /// evcxr display hook: shows the environment as an HTML table.
    pub fn evcxr_display(&self) {
        self.table().evcxr_display()
    }
}
