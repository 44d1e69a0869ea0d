//! Loss-landscape plots for the optimum-width metrics (S2.B1): the loss along one direction in
//! weight space (a line) and over a plane spanned by two directions (a heatmap with contours),
//! as in Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets"
//! (<https://arxiv.org/abs/1712.09913>). Plain grids in: whoever computes the losses (the
//! evaluation module) hands over numbers, this module only draws them.
use super::curves::{line_plot, LinePlotConfig, Series};
use super::figure::{plot_err, Figure, Plot};
use super::palette::magma_color;
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The loss along a direction, one curve per model: `x` = step α along the (filter-normalised)
/// direction, 0 = the trained weights. A wide, flat valley around 0 is a wide optimum.
///
/// # Errors
/// As [`line_plot`].
pub fn loss_landscape_1d(curves: &[Series], title: &str) -> Result<Figure> {
    let cfg = LinePlotConfig::new(title, "α (step along the direction; 0 = trained weights)", "loss");
    line_plot(curves, &cfg)
}

/// Titles and scale of a 2-D landscape.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LandscapeConfig {
    /// Title above the plot.
    pub title: String,
    /// Label of the first direction (x).
    pub x_label: String,
    /// Label of the second direction (y).
    pub y_label: String,
    /// Contour levels, evenly spaced over the (log) loss range: 12, enough to see the bowl.
    pub levels: usize,
    /// Colour and contour by log(loss): losses away from the minimum grow by decades (Li et al.
    /// plot log-scale contours for the same reason). Needs losses > 0.
    pub log_scale: bool,
}

impl Default for LandscapeConfig {
    fn default() -> Self {
        LandscapeConfig {
            title: "Loss landscape".into(),
            x_label: "α (direction 1)".into(),
            y_label: "β (direction 2)".into(),
            levels: 12,
            log_scale: true,
        }
    }
}

/// The loss over a plane: `losses[i][j]` at `(xs[j], ys[i])` as a magma heatmap (dark = low)
/// with contour lines and a cross at (0, 0), the trained weights, when it is on the grid.
///
/// # Errors
/// Fewer than 2 values per axis, axes not strictly increasing, a grid whose shape is not
/// `ys.len()` rows of `xs.len()`, NaN or infinite losses, losses <= 0 with `log_scale`.
pub fn loss_landscape_2d(xs: &[f64], ys: &[f64], losses: &[Vec<f64>], cfg: &LandscapeConfig) -> Result<Figure> {
    for (name, axis) in [("xs", xs), ("ys", ys)] {
        if axis.len() < 2
            || axis.windows(2).any(|w| w[1].partial_cmp(&w[0]) != Some(std::cmp::Ordering::Greater))
            || axis.iter().any(|v| !v.is_finite())
        {
            return Err(Error::Data(format!(
                "loss_landscape_2d {name}: expected at least 2 finite, strictly increasing values, got {} values",
                axis.len()
            )));
        }
    }
    if losses.len() != ys.len() {
        return Err(Error::Data(format!(
            "loss_landscape_2d: expected {} rows (one per y), got {}",
            ys.len(),
            losses.len()
        )));
    }
    for (i, row) in losses.iter().enumerate() {
        if row.len() != xs.len() {
            return Err(Error::Data(format!(
                "loss_landscape_2d: row {i} has {} values, expected {} (one per x)",
                row.len(),
                xs.len()
            )));
        }
        if let Some(v) = row.iter().find(|v| !v.is_finite() || (cfg.log_scale && **v <= 0.0)) {
            return Err(Error::Data(format!(
                "loss_landscape_2d: row {i} holds {v}; expected finite losses{}",
                if cfg.log_scale { " > 0 (or set log_scale: false)" } else { "" }
            )));
        }
    }
    if cfg.levels == 0 || cfg.levels > 100 {
        return Err(Error::Config(format!("LandscapeConfig.levels: expected 1..=100, got {}", cfg.levels)));
    }
    let z: Vec<Vec<f64>> =
        losses.iter().map(|r| r.iter().map(|&v| if cfg.log_scale { v.log10() } else { v }).collect()).collect();
    let plot = Landscape { xs, ys, z, cfg };
    Figure::render(720, 600, &plot)
}

struct Landscape<'a> {
    xs: &'a [f64],
    ys: &'a [f64],
    z: Vec<Vec<f64>>,
    cfg: &'a LandscapeConfig,
}

/// Cell edges halfway between grid points (the outer ones mirrored), so each value fills the
/// area around its grid point.
fn edges(v: &[f64]) -> Vec<f64> {
    let n = v.len();
    let mut e = Vec::with_capacity(n + 1);
    e.push(v[0] - (v[1] - v[0]) / 2.0);
    for w in v.windows(2) {
        e.push((w[0] + w[1]) / 2.0);
    }
    e.push(v[n - 1] + (v[n - 1] - v[n - 2]) / 2.0);
    e
}

/// Marching squares: the segments where the bilinear grid crosses `level`.
fn contour_segments(xs: &[f64], ys: &[f64], z: &[Vec<f64>], level: f64) -> Vec<[(f64, f64); 2]> {
    let mut out = Vec::new();
    for i in 0..ys.len() - 1 {
        for j in 0..xs.len() - 1 {
            // Corners counter-clockwise from (x_j, y_i).
            let corners = [
                (xs[j], ys[i], z[i][j]),
                (xs[j + 1], ys[i], z[i][j + 1]),
                (xs[j + 1], ys[i + 1], z[i + 1][j + 1]),
                (xs[j], ys[i + 1], z[i + 1][j]),
            ];
            let mut points = Vec::with_capacity(4);
            for e in 0..4 {
                let (a, b) = (corners[e], corners[(e + 1) % 4]);
                if (a.2 < level) != (b.2 < level) {
                    let t = (level - a.2) / (b.2 - a.2);
                    points.push((a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)));
                }
            }
            if points.len() >= 2 {
                out.push([points[0], points[1]]);
            }
            if points.len() == 4 {
                out.push([points[2], points[3]]);
            }
        }
    }
    out
}

impl Plot for Landscape<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let (lo, hi) =
            self.z.iter().flatten().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        let span = if hi > lo { hi - lo } else { 1.0 };
        let (ex, ey) = (edges(self.xs), edges(self.ys));
        let (plot_area, bar_area) = area.split_horizontally(area.dim_in_pixel().0 - 110);
        let mut chart = ChartBuilder::on(&plot_area)
            .margin(12)
            .caption(self.cfg.title.clone(), ("sans-serif", 20))
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(ex[0]..ex[ex.len() - 1], ey[0]..ey[ey.len() - 1])
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(self.cfg.x_label.clone())
            .y_desc(self.cfg.y_label.clone())
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        let cells = self.z.iter().enumerate().flat_map(|(i, row)| {
            let (ex, ey) = (&ex, &ey);
            row.iter().enumerate().map(move |(j, &v)| {
                Rectangle::new([(ex[j], ey[i]), (ex[j + 1], ey[i + 1])], magma_color((v - lo) / span).filled())
            })
        });
        chart.draw_series(cells).map_err(plot_err)?;
        for l in 1..=self.cfg.levels {
            let level = lo + span * l as f64 / (self.cfg.levels + 1) as f64;
            let segments = contour_segments(self.xs, self.ys, &self.z, level);
            chart
                .draw_series(
                    segments.into_iter().map(|s| PathElement::new(s.to_vec(), WHITE.mix(0.75).stroke_width(1))),
                )
                .map_err(plot_err)?;
        }
        let (x0, x1, y0, y1) = (ex[0], ex[ex.len() - 1], ey[0], ey[ey.len() - 1]);
        if x0 < 0.0 && 0.0 < x1 && y0 < 0.0 && 0.0 < y1 {
            chart
                .draw_series([Cross::new((0.0, 0.0), 7, RGBColor(0x56, 0xB4, 0xE9).stroke_width(3))])
                .map_err(plot_err)?;
        }
        // Colour bar with the loss at its ends (and middle).
        let (_, h) = bar_area.dim_in_pixel();
        let (top, bottom) = (50i32, h as i32 - 60);
        for k in top..bottom {
            let t = 1.0 - (k - top) as f64 / (bottom - top - 1).max(1) as f64;
            bar_area.draw(&Rectangle::new([(14, k), (34, k + 1)], magma_color(t).filled())).map_err(plot_err)?;
        }
        let label = |v: f64| {
            let v = if self.cfg.log_scale { 10f64.powf(v) } else { v };
            if v.abs() >= 1e3 || (v != 0.0 && v.abs() < 1e-2) {
                format!("{v:.2e}")
            } else {
                format!("{v:.3}")
            }
        };
        let style = ("sans-serif", 12).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        for (t, y) in [(1.0, top), (0.5, (top + bottom) / 2), (0.0, bottom - 1)] {
            bar_area.draw(&Text::new(label(lo + t * span), (38, y), style.clone())).map_err(plot_err)?;
        }
        let head = ("sans-serif", 13).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Bottom));
        bar_area
            .draw(&Text::new(if self.cfg.log_scale { "loss (log)" } else { "loss" }, (6, top - 8), head))
            .map_err(plot_err)?;
        Ok(())
    }
}
