//! Image grids (S0.6): a batch shown as tiles with captions, like d2l's `show_images`.
use super::display::Image;
use super::figure::{plot_err, register_fonts, Figure};
use crate::data::Normalization;
use crate::error::{Error, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use tch::{Kind, Tensor};

/// How to lay out an image grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridConfig {
    /// Tiles per row.
    pub columns: usize,
    /// Small images are enlarged (nearest neighbour, by a whole factor) to at least this many
    /// pixels per side, so a 32x32 image is readable.
    pub min_tile: u32,
    /// For normalised float images: the normalisation to undo before showing them.
    pub normalization: Option<Normalization>,
    /// Optional title above the grid.
    pub title: Option<String>,
}

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig { columns: 8, min_tile: 96, normalization: None, title: None }
    }
}

const PAD: u32 = 4;
const CAPTION: u32 = 18;
const TITLE: u32 = 26;

/// A grid of `images` (`[N, 3, H, W]`: `u8`, or float in `[0, 1]`, or normalised float with
/// `cfg.normalization` set) with one caption per image (or none: pass `&[]`).
///
/// # Errors
/// A wrong rank or channel count, or a number of captions that is neither 0 nor N.
///
/// # Example
/// ```no_run
/// use selfsup::prelude::*;
/// let set = data::synthetic::load(Split::Train, &SyntheticConfig::tiny())?;
/// let fig = viz::image_grid(&set.images.narrow(0, 0, 8), &set.names_of(&[0, 1, 2, 3, 4, 5, 6, 7]), &viz::GridConfig::default())?;
/// fig.save("grid.png")?;
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn image_grid(images: &Tensor, captions: &[String], cfg: &GridConfig) -> Result<Figure> {
    let size = images.size();
    if size.len() != 4 || !(size[1] == 3 || size[1] == 1) || size[0] == 0 {
        return Err(Error::shape("image_grid images", "[N, 3, H, W] with N > 0", &size));
    }
    let n = size[0] as usize;
    if !captions.is_empty() && captions.len() != n {
        return Err(Error::Data(format!("image_grid: {} captions for {n} images; pass one per image or none", captions.len())));
    }
    if cfg.columns == 0 {
        return Err(Error::Config("GridConfig.columns must be at least 1".into()));
    }
    let images = match (images.kind(), &cfg.normalization) {
        (Kind::Uint8, _) => images.shallow_clone(),
        (_, Some(norm)) => norm.denormalize(&images.to_kind(Kind::Float))?,
        (_, None) => images.to_kind(Kind::Float),
    };
    let (h, w) = (size[2] as u32, size[3] as u32);
    let factor = cfg.min_tile.div_ceil(h.max(w)).max(1);
    let (tw, th) = (w * factor, h * factor);
    let columns = cfg.columns.min(n) as u32;
    let rows = (n as u32).div_ceil(columns);
    let caption_h = if captions.is_empty() { 0 } else { CAPTION };
    let title_h = if cfg.title.is_some() { TITLE } else { 0 };
    let width = columns * (tw + PAD) + PAD;
    let height = title_h + rows * (th + caption_h + PAD) + PAD;
    let mut rgb = vec![255u8; 3 * (width * height) as usize];
    let mut origins = Vec::with_capacity(n);
    for i in 0..n {
        let tile = Image::from_tensor(&images.get(i as i64))?.upscale(factor);
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        let (x0, y0) = (PAD + col * (tw + PAD), title_h + PAD + row * (th + caption_h + PAD));
        for y in 0..th {
            let src = &tile.rgb()[(3 * y * tw) as usize..(3 * (y + 1) * tw) as usize];
            let dst = (3 * ((y0 + y) * width + x0)) as usize;
            rgb[dst..dst + src.len()].copy_from_slice(src);
        }
        origins.push((x0, y0));
    }
    if !captions.is_empty() || cfg.title.is_some() {
        register_fonts();
        let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let style = ("sans-serif", 13).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
        let max_chars = (tw / 7).max(3) as usize;
        for (caption, &(x0, y0)) in captions.iter().zip(&origins) {
            let text: String = if caption.chars().count() > max_chars {
                caption.chars().take(max_chars - 1).chain(std::iter::once('…')).collect()
            } else {
                caption.clone()
            };
            area.draw(&Text::new(text, ((x0 + tw / 2) as i32, (y0 + th + 2) as i32), style.clone()))
                .map_err(plot_err)?;
        }
        if let Some(title) = &cfg.title {
            let title_style = ("sans-serif", 17).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
            area.draw(&Text::new(title.clone(), ((width / 2) as i32, 5), title_style)).map_err(plot_err)?;
        }
        area.present().map_err(plot_err)?;
    }
    Ok(Figure::from_image(Image::from_rgb(width, height, rgb)?))
}

/// [`image_grid`] with `columns` tiles per row and default settings.
pub fn show_images(images: &Tensor, captions: &[String], columns: usize) -> Result<Figure> {
    image_grid(images, captions, &GridConfig { columns, ..Default::default() })
}
