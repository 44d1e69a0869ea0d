//! Confusion matrices (S2.T4, S2.T6): which classes a probe or a fine-tuned model mistakes for
//! which. Rows are true classes, columns predicted ones; each cell shows its count and its share
//! of the row, and its shade is that share (the per-class recall on the diagonal), so a good
//! classifier is a dark diagonal on white whatever the class sizes. The counts come from
//! [`confusion_counts`] (computed in `eval`, re-exported here).
pub use crate::eval::confusion_counts;
use super::figure::{plot_err, Figure, Plot};
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use tch::{Device, Kind, Tensor};

/// How a confusion matrix is drawn.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfusionConfig {
    /// Title above the matrix.
    pub title: String,
    /// Write count and row percentage in each cell (when the cells are large enough).
    pub annotate: bool,
}

impl Default for ConfusionConfig {
    fn default() -> Self {
        ConfusionConfig { title: "Confusion matrix".into(), annotate: true }
    }
}

/// matplotlib's "Blues" endpoints: #f7fbff (0) to #08306b (1), interpolated linearly in RGB.
fn blues(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
    RGBColor(mix(0xf7, 0x08), mix(0xfb, 0x30), mix(0xff, 0x6b))
}

struct Confusion {
    counts: Vec<Vec<i64>>,
    names: Vec<String>,
    cfg: ConfusionConfig,
    cell: i32,
    left: i32,
    top: i32,
    bottom: i32,
}

const TITLE_H: i32 = 36;
const BAR_W: i32 = 90;

impl Confusion {
    fn size(&self) -> (u32, u32) {
        let c = self.counts.len() as i32;
        ((self.left + c * self.cell + BAR_W) as u32, (self.top + c * self.cell + self.bottom) as u32)
    }
}

impl Plot for Confusion {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let c = self.counts.len();
        let (w, _) = self.size();
        let center = |size| ("sans-serif", size).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
        area.draw(&Text::new(self.cfg.title.clone(), (w as i32 / 2, 16), center(19))).map_err(plot_err)?;
        let grid_w = c as i32 * self.cell;
        for (i, row) in self.counts.iter().enumerate() {
            let total: i64 = row.iter().sum();
            for (j, &n) in row.iter().enumerate() {
                let share = if total > 0 { n as f64 / total as f64 } else { 0.0 };
                let (x0, y0) = (self.left + j as i32 * self.cell, self.top + i as i32 * self.cell);
                area.draw(&Rectangle::new([(x0, y0), (x0 + self.cell, y0 + self.cell)], blues(share).filled()))
                    .map_err(plot_err)?;
                if self.cfg.annotate && self.cell >= 34 {
                    let ink = if share > 0.5 { WHITE } else { BLACK };
                    let size = if self.cell >= 56 { 13 } else { 10 };
                    let style = ("sans-serif", size).into_font().color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                    let (cx, cy) = (x0 + self.cell / 2, y0 + self.cell / 2);
                    area.draw(&Text::new(n.to_string(), (cx, cy - size / 2 - 1), style.clone())).map_err(plot_err)?;
                    area.draw(&Text::new(format!("{:.0}%", 100.0 * share), (cx, cy + size / 2 + 1), style))
                        .map_err(plot_err)?;
                }
            }
        }
        area.draw(&Rectangle::new([(self.left, self.top), (self.left + grid_w, self.top + grid_w)], BLACK.mix(0.5)))
            .map_err(plot_err)?;
        // Class names: true classes left of the rows, predicted ones under the columns (rotated
        // when the columns are narrow).
        let name_size = if self.cell >= 24 { 13 } else { 10 };
        let right = ("sans-serif", name_size).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
        let max_chars = ((self.left - 30) / 7).max(3) as usize;
        let clip = |s: &String| {
            if s.chars().count() > max_chars {
                s.chars().take(max_chars - 1).chain(['…']).collect()
            } else {
                s.clone()
            }
        };
        for (i, name) in self.names.iter().enumerate() {
            let y = self.top + i as i32 * self.cell + self.cell / 2;
            area.draw(&Text::new(clip(name), (self.left - 6, y), right.clone())).map_err(plot_err)?;
            let x = self.left + i as i32 * self.cell + self.cell / 2;
            let y_names = self.top + grid_w + 6;
            if self.cell >= 70 {
                let style = ("sans-serif", name_size).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
                area.draw(&Text::new(clip(name), (x, y_names), style)).map_err(plot_err)?;
            } else {
                let style = ("sans-serif", name_size)
                    .into_font()
                    .transform(FontTransform::Rotate90)
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center));
                area.draw(&Text::new(clip(name), (x, y_names), style)).map_err(plot_err)?;
            }
        }
        let axis = ("sans-serif", 15).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
        area.draw(&Text::new("predicted class", (self.left + grid_w / 2, self.top + grid_w + self.bottom - 4), axis))
            .map_err(plot_err)?;
        let axis_v = ("sans-serif", 15)
            .into_font()
            .transform(FontTransform::Rotate270)
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new("true class", (4, self.top + grid_w / 2), axis_v)).map_err(plot_err)?;
        // Colour bar: share of the true class, 0% to 100%.
        let (bx, bh) = (self.left + grid_w + 20, grid_w.max(60));
        for k in 0..bh {
            let t = 1.0 - k as f64 / (bh - 1).max(1) as f64;
            area.draw(&Rectangle::new([(bx, self.top + k), (bx + 16, self.top + k + 1)], blues(t).filled()))
                .map_err(plot_err)?;
        }
        let left = ("sans-serif", 12).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new("100%", (bx + 20, self.top + 6), left.clone())).map_err(plot_err)?;
        area.draw(&Text::new("0%", (bx + 20, self.top + bh - 6), left)).map_err(plot_err)?;
        Ok(())
    }
}

/// A confusion-matrix heatmap from counts `[C, C]` (rows = true class, e.g. from
/// [`confusion_counts`]) with `class_names` (one per class, or none for "0", "1", …).
///
/// # Errors
/// `counts` not square integer `[C, C]` with non-negative entries; a wrong number of names.
///
/// # Example
/// ```
/// use selfsup::prelude::*;
/// let counts = Tensor::from_slice(&[9i64, 1, 2, 8]).view([2, 2]);
/// let fig = viz::confusion_matrix(&counts, &["cat".into(), "dog".into()], &viz::ConfusionConfig::default())?;
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn confusion_matrix(counts: &Tensor, class_names: &[String], cfg: &ConfusionConfig) -> Result<Figure> {
    let s = counts.size();
    if s.len() != 2 || s[0] != s[1] || s[0] == 0 {
        return Err(Error::shape("confusion_matrix counts", "[C, C] (rows = true class)", &s));
    }
    if counts.is_floating_point() {
        return Err(Error::Data("confusion_matrix: expected integer counts (see confusion_counts)".into()));
    }
    let c = s[0] as usize;
    if !class_names.is_empty() && class_names.len() != c {
        return Err(Error::Data(format!(
            "confusion_matrix: {} class names for {c} classes; pass one per class or none",
            class_names.len()
        )));
    }
    let flat = Vec::<i64>::try_from(counts.to_device(Device::Cpu).to_kind(Kind::Int64).flatten(0, -1))?;
    if let Some(v) = flat.iter().find(|&&v| v < 0) {
        return Err(Error::Data(format!("confusion_matrix: counts must be >= 0, got {v}")));
    }
    let counts: Vec<Vec<i64>> = flat.chunks(c).map(|r| r.to_vec()).collect();
    let names: Vec<String> =
        if class_names.is_empty() { (0..c).map(|i| i.to_string()).collect() } else { class_names.to_vec() };
    let cell = (600 / c as i32).clamp(12, 72);
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(1).min(16) as i32;
    let left = 30 + 7 * longest + 8;
    let bottom = if cell >= 70 { 44 } else { 7 * longest + 34 };
    let plot = Confusion { counts, names, cfg: cfg.clone(), cell, left, top: TITLE_H, bottom };
    let (w, h) = plot.size();
    Figure::render(w, h, &plot)
}
