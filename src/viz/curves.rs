//! Line plots for learning curves (S2.0, S3.1, S3.2, S3.7) and the collapse check of BYOL
//! (S2.T2: the loss on the left axis, the std of the l2-normalised projections on the right).
//!
//! Plain series in, [`Figure`] out: the trainer's history, a label-fraction sweep or numbers typed
//! into a cell all become [`Series`], so any of them is one call away from a plot. Several runs
//! share one plot with a legend; colours come from the colour-blind-safe
//! [`palette`](super::palette) in the order the series are given.
use super::figure::{check_size, draw_legend, plot_err, Figure, Plot};
use super::palette::categorical_color;
use crate::error::{Error, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// One named curve: `y[i]` at `x[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Legend entry ("train loss", "BYOL 10% labels").
    pub name: String,
    /// Positions on the x axis (step, epoch).
    pub x: Vec<f64>,
    /// Values; as many as `x`.
    pub y: Vec<f64>,
}

impl Series {
    /// A series from explicit x and y values (lengths are checked when plotted).
    pub fn new(name: impl Into<String>, x: Vec<f64>, y: Vec<f64>) -> Series {
        Series { name: name.into(), x, y }
    }

    /// A series whose x values are 1, 2, …, n: one value per epoch, counted as people count them.
    pub fn indexed(name: impl Into<String>, y: Vec<f64>) -> Series {
        let x = (1..=y.len()).map(|i| i as f64).collect();
        Series { name: name.into(), x, y }
    }

    /// Checks lengths and finiteness, and positivity when the axis is logarithmic.
    fn validate(&self, log: bool) -> Result<()> {
        if self.y.is_empty() || self.x.len() != self.y.len() {
            return Err(Error::Data(format!(
                "series '{}': expected as many x as y values (at least one), got {} x and {} y",
                self.name,
                self.x.len(),
                self.y.len()
            )));
        }
        for (i, (&x, &y)) in self.x.iter().zip(&self.y).enumerate() {
            if !x.is_finite() || !y.is_finite() {
                return Err(Error::Data(format!(
                    "series '{}': point {i} is ({x}, {y}); expected finite numbers (a diverged run gives NaN: plot the steps before it)",
                    self.name
                )));
            }
            if log && y <= 0.0 {
                return Err(Error::Data(format!(
                    "series '{}': y[{i}] = {y} on a logarithmic axis; expected y > 0 (turn log_y off)",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

/// Titles, labels and scales of a line plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinePlotConfig {
    /// Title above the plot.
    pub title: String,
    /// x-axis label, with units ("epoch", "step").
    pub x_label: String,
    /// Left y-axis label ("InfoNCE loss").
    pub y_label: String,
    /// Logarithmic left y axis (losses spanning decades).
    pub log_y: bool,
    /// Right y-axis label, used by [`line_plot_two_axes`] ("std of z / (1/sqrt(d))").
    pub y2_label: String,
    /// Logarithmic right y axis.
    pub log_y2: bool,
    /// Width in pixels (800: readable in a notebook cell at 100% zoom).
    pub width: u32,
    /// Height in pixels (480).
    pub height: u32,
}

impl Default for LinePlotConfig {
    fn default() -> Self {
        LinePlotConfig {
            title: String::new(),
            x_label: "epoch".into(),
            y_label: String::new(),
            log_y: false,
            y2_label: String::new(),
            log_y2: false,
            width: 800,
            height: 480,
        }
    }
}

impl LinePlotConfig {
    /// A config with a title and axis labels, other fields default.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        LinePlotConfig { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), ..Default::default() }
    }
    /// The same config with a logarithmic (or linear) left axis.
    pub fn log_y(mut self, log: bool) -> Self {
        self.log_y = log;
        self
    }
    /// The same config with a right-axis label.
    pub fn y2_label(mut self, label: impl Into<String>) -> Self {
        self.y2_label = label.into();
        self
    }
    /// The same config with a logarithmic (or linear) right axis.
    pub fn log_y2(mut self, log: bool) -> Self {
        self.log_y2 = log;
        self
    }
    /// The same config at another size.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }
    /// Checks the size.
    pub fn validate(&self) -> Result<()> {
        check_size("LinePlotConfig", self.width, self.height)
    }
}

/// Several series on one plot with a legend (runs, label fractions, train vs test).
///
/// # Errors
/// No series; a series with mismatched or zero lengths, a NaN or infinite value, or a value
/// `<= 0` on a logarithmic axis; a size out of range.
///
/// # Example
/// ```
/// use selfsup::viz::{line_plot, LinePlotConfig, Series};
/// let runs = [
///     Series::indexed("1% labels", vec![2.1, 1.7, 1.5]),
///     Series::indexed("100% labels", vec![1.9, 1.1, 0.7]),
/// ];
/// let fig = line_plot(&runs, &LinePlotConfig::new("Test loss", "epoch", "cross-entropy"))?;
/// assert_eq!(fig.width(), 800);
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn line_plot(series: &[Series], cfg: &LinePlotConfig) -> Result<Figure> {
    cfg.validate()?;
    if series.is_empty() {
        return Err(Error::Data("line_plot: expected at least one series, got none".into()));
    }
    for s in series {
        s.validate(cfg.log_y)?;
    }
    Figure::render(cfg.width, cfg.height, &Lines { left: series, right: &[], cfg })
}

/// Two groups of series against two y axes sharing x: `left` (solid lines) on the left axis,
/// `right` (dashed) on the right, e.g. the BYOL loss and the std of its normalised projections
/// (S2.T2: a std near 0 while the loss drops means collapse; `1/sqrt(d)` means healthy).
///
/// # Errors
/// As [`line_plot`], for either group; `right` may not be empty (use [`line_plot`]).
pub fn line_plot_two_axes(left: &[Series], right: &[Series], cfg: &LinePlotConfig) -> Result<Figure> {
    cfg.validate()?;
    if left.is_empty() || right.is_empty() {
        return Err(Error::Data(format!(
            "line_plot_two_axes: expected at least one series per axis, got {} left and {} right (one axis only: use line_plot)",
            left.len(),
            right.len()
        )));
    }
    for s in left {
        s.validate(cfg.log_y)?;
    }
    for s in right {
        s.validate(cfg.log_y2)?;
    }
    Figure::render(cfg.width, cfg.height, &Lines { left, right, cfg })
}

struct Lines<'a> {
    left: &'a [Series],
    right: &'a [Series],
    cfg: &'a LinePlotConfig,
}

/// The x or y extent of a group of series, padded by 5% (a factor on a log axis) so lines do
/// not run along the frame.
fn extent(series: &[Series], pick: impl Fn(&Series) -> &[f64], log: bool) -> (f64, f64) {
    let values = series.iter().flat_map(|s| pick(s).iter().copied());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if log {
        let (lo, hi) = if hi / lo < 1.01 { (lo / 2.0, hi * 2.0) } else { (lo, hi) };
        (lo / 1.15, hi * 1.15)
    } else {
        let span = if hi - lo > 1e-12 * hi.abs().max(1.0) { hi - lo } else { hi.abs().max(1.0) };
        (lo - 0.05 * span, hi + 0.05 * span)
    }
}

const LEGEND_SAMPLE: i32 = 22;

impl Lines<'_> {
    fn x_range(&self) -> std::ops::Range<f64> {
        let all: Vec<Series> = self.left.iter().chain(self.right).cloned().collect();
        let (lo, hi) = extent(&all, |s| &s.x, false);
        lo..hi
    }

    fn y_range(series: &[Series], log: bool) -> std::ops::Range<f64> {
        let (lo, hi) = extent(series, |s| &s.y, log);
        lo..hi
    }

    fn builder<'a, 'b, DB: DrawingBackend>(&self, area: &'a DrawingArea<DB, Shift>) -> ChartBuilder<'a, 'b, DB> {
        let mut b = ChartBuilder::on(area);
        b.margin(12).x_label_area_size(44).y_label_area_size(72);
        if !self.right.is_empty() {
            b.right_y_label_area_size(72);
        }
        if !self.cfg.title.is_empty() {
            b.caption(self.cfg.title.clone(), ("sans-serif", 20));
        }
        b
    }

    /// The series as plotters points and its line style.
    fn line(s: &Series, color: RGBColor) -> (Vec<(f64, f64)>, ShapeStyle) {
        (s.x.iter().copied().zip(s.y.iter().copied()).collect(), color.stroke_width(2))
    }

    fn draw_single<DB, Y>(&self, area: &DrawingArea<DB, Shift>, y: Y) -> Result<()>
    where
        DB: DrawingBackend,
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = self.builder(area).build_cartesian_2d(self.x_range(), y).map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(self.cfg.x_label.clone())
            .y_desc(self.cfg.y_label.clone())
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        for (i, s) in self.left.iter().enumerate() {
            let (points, style) = Self::line(s, categorical_color(i));
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(plot_err)?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + LEGEND_SAMPLE, y)], style));
            if points.len() <= 30 {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, style.filled()))).map_err(plot_err)?;
            }
        }
        draw_legend(&mut chart)?;
        Ok(())
    }

    fn draw_dual<DB, Y1, Y2>(&self, area: &DrawingArea<DB, Shift>, y1: Y1, y2: Y2) -> Result<()>
    where
        DB: DrawingBackend,
        Y1: AsRangedCoord<Value = f64>,
        Y1::CoordDescType: ValueFormatter<f64>,
        Y2: AsRangedCoord<Value = f64>,
        Y2::CoordDescType: ValueFormatter<f64>,
    {
        let x = self.x_range();
        let mut chart =
            self.builder(area).build_cartesian_2d(x.clone(), y1).map_err(plot_err)?.set_secondary_coord(x, y2);
        chart
            .configure_mesh()
            .x_desc(self.cfg.x_label.clone())
            .y_desc(self.cfg.y_label.clone())
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        chart
            .configure_secondary_axes()
            .y_desc(self.cfg.y2_label.clone())
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        for (i, s) in self.left.iter().enumerate() {
            let (points, style) = Self::line(s, categorical_color(i));
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(plot_err)?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + LEGEND_SAMPLE, y)], style));
            if points.len() <= 30 {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, style.filled()))).map_err(plot_err)?;
            }
        }
        for (j, s) in self.right.iter().enumerate() {
            let (points, style) = Self::line(s, categorical_color(self.left.len() + j));
            chart
                .draw_secondary_series(DashedLineSeries::new(points.clone(), 8, 5, style))
                .map_err(plot_err)?
                .label(format!("{} (right axis)", s.name))
                .legend(move |(x, y)| {
                    plotters::element::DashedPathElement::new(vec![(x, y), (x + LEGEND_SAMPLE, y)], 6, 3, style)
                });
            if points.len() <= 30 {
                chart
                    .draw_secondary_series(points.iter().map(|&p| TriangleMarker::new(p, 4, style.filled())))
                    .map_err(plot_err)?;
            }
        }
        draw_legend(&mut chart)?;
        Ok(())
    }
}

impl Plot for Lines<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let y1 = Self::y_range(self.left, self.cfg.log_y);
        if self.right.is_empty() {
            return match self.cfg.log_y {
                false => self.draw_single(area, y1),
                true => self.draw_single(area, y1.log_scale()),
            };
        }
        let y2 = Self::y_range(self.right, self.cfg.log_y2);
        match (self.cfg.log_y, self.cfg.log_y2) {
            (false, false) => self.draw_dual(area, y1, y2),
            (true, false) => self.draw_dual(area, y1.log_scale(), y2),
            (false, true) => self.draw_dual(area, y1, y2.log_scale()),
            (true, true) => self.draw_dual(area, y1.log_scale(), y2.log_scale()),
        }
    }
}
