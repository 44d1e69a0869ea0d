//! [`Figure`]: a rendered plot that shows inline (PNG) and saves as PNG or SVG.
//!
//! Plots are drawn once per backend through the [`Plot`] trait, so the same drawing code gives
//! the bitmap a notebook shows and the vector file a report wants. Text is drawn with the
//! DejaVu Sans font embedded in the crate, so figures look the same on a machine without fonts.
use super::display::{extension, Image, Payload};
use crate::error::{Error, Result};
use crate::files::write_file;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// The legend of every plot with named series: upper right, on a translucent white box with a
/// grey border, so that it stays readable where it covers a line or a bar.
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(plot_err)
}

/// Something that can draw itself on any plotters backend.
pub trait Plot {
    /// Draws on `area` (already filled white).
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// A rendered figure: the bitmap shown in the notebook and, for vector plots, its SVG.
#[derive(Debug, Clone)]
pub struct Figure {
    image: Image,
    svg: Option<String>,
}

impl Figure {
    /// Renders `plot` at `width` x `height` pixels, as a bitmap and as SVG.
    pub fn render<P: Plot>(width: u32, height: u32, plot: &P) -> Result<Figure> {
        register_fonts();
        let mut rgb = vec![255u8; 3 * width as usize * height as usize];
        {
            let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
            area.fill(&WHITE).map_err(plot_err)?;
            plot.draw(&area)?;
            area.present().map_err(plot_err)?;
        }
        let mut svg = String::new();
        {
            let area = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            area.fill(&WHITE).map_err(plot_err)?;
            plot.draw(&area)?;
            area.present().map_err(plot_err)?;
        }
        Ok(Figure { image: Image::from_rgb(width, height, rgb)?, svg: Some(svg) })
    }

    /// A figure that is only a bitmap (an image grid, an activation map).
    pub fn from_image(image: Image) -> Figure {
        Figure { image, svg: None }
    }

    /// The bitmap.
    pub fn image(&self) -> &Image {
        &self.image
    }
    /// The SVG source, for plots drawn as vectors.
    pub fn svg(&self) -> Option<&str> {
        self.svg.as_deref()
    }
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.image.width()
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.image.height()
    }

    /// Saves as `.png` or `.svg` by extension (a bitmap-only figure is embedded in the SVG).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        match (extension(path).as_str(), &self.svg) {
            ("svg", Some(svg)) => write_file(path, svg.as_bytes()),
            _ => self.image.save(path),
        }
    }

    /// The evcxr payload: `image/png`.
    pub fn payload(&self) -> Result<Payload> {
        self.image.payload()
    }

    /// evcxr display hook: the figure appears under the cell.
    pub fn evcxr_display(&self) {
        Payload::emit(self.payload())
    }
}

/// Checks a chart config's size, the same limits for every chart: `what` names the config.
pub(crate) fn check_size(what: &str, width: u32, height: u32) -> Result<()> {
    if !(200..=4000).contains(&width) || !(150..=4000).contains(&height) {
        return Err(Error::Config(format!(
            "{what} size: expected width in 200..=4000 and height in 150..=4000, got {width}x{height}"
        )));
    }
    Ok(())
}

/// Converts any plotters error into the kit's error.
pub(crate) fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Plot(e.to_string())
}

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font for every family and style plotters may ask for. Registration
/// lives in a static that each evcxr cell gets afresh, so this runs before every render; it only
/// parses the font's tables (no copy).
pub(crate) fn register_fonts() {
    for family in ["sans-serif", "serif", "monospace"] {
        for style in [FontStyle::Normal, FontStyle::Bold, FontStyle::Italic, FontStyle::Oblique] {
            // The embedded font is valid (tests render text), so failure is impossible here.
            let _ = plotters::style::register_font(family, style, DEJAVU_SANS);
        }
    }
}
