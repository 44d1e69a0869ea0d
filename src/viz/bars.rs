//! Bar charts: one value per category, in one or more groups side by side — the label histogram
//! of a subset (the Barlow Twins post's `ax.hist(ds['train'].labels, bins=10)`: does 1 % of
//! the labels keep every class?), or accuracies of several methods per class.
//!
//! Categories are discrete, so each sits at an integer position with its name under it, and a
//! group's bars share one palette colour with a legend entry. The value is written above each
//! bar: a histogram of 50 images is read by its counts, not by a y-axis tick.
use super::figure::{check_size, draw_legend, plot_err, Figure, Plot};
use super::palette::categorical_color;
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

/// One group of bars: a value per category, drawn in one colour under one legend entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bars {
    /// Legend entry ("1 % of the labels").
    pub name: String,
    /// One value per category, in the categories' order; finite and ≥ 0.
    pub values: Vec<f64>,
}

impl Bars {
    /// A group from its name and values.
    pub fn new(name: impl Into<String>, values: Vec<f64>) -> Bars {
        Bars { name: name.into(), values }
    }

    /// A group of counts (images per class: [`crate::data::ImageSet::class_counts`]).
    pub fn counts(name: impl Into<String>, counts: &[usize]) -> Bars {
        Bars { name: name.into(), values: counts.iter().map(|&c| c as f64).collect() }
    }
}

/// Title, axis labels and size of a bar chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarChartConfig {
    /// Title above the chart.
    pub title: String,
    /// Label under the category names ("class").
    pub x_label: String,
    /// y-axis label ("images").
    pub y_label: String,
    /// Width in pixels (800: readable in a notebook cell at 100% zoom).
    pub width: u32,
    /// Height in pixels (400).
    pub height: u32,
}

impl Default for BarChartConfig {
    fn default() -> Self {
        BarChartConfig { title: String::new(), x_label: String::new(), y_label: String::new(), width: 800, height: 400 }
    }
}

impl BarChartConfig {
    /// A config with a title and axis labels, other fields default.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        BarChartConfig { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), ..Default::default() }
    }
    /// The same config at another size.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }
}

/// Bars for each category, the groups side by side in palette order, with a legend when there is
/// more than one group.
///
/// # Errors
/// No category or no group; a group with another number of values than categories, or a value
/// that is negative, NaN or infinite; a size outside 200..=4000 × 150..=4000.
///
/// # Example
/// ```
/// use selfsup::viz::{bar_chart, BarChartConfig, Bars};
/// let classes = ["disc".to_string(), "ring".to_string(), "square".to_string()];
/// let fig = bar_chart(&classes, &[Bars::counts("1 % subset", &[5, 5, 4])], &BarChartConfig::new("Labels", "class", "images"))?;
/// assert_eq!((fig.width(), fig.height()), (800, 400));
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn bar_chart(categories: &[String], groups: &[Bars], cfg: &BarChartConfig) -> Result<Figure> {
    check_size("BarChartConfig", cfg.width, cfg.height)?;
    if categories.is_empty() || groups.is_empty() {
        return Err(Error::Data(format!(
            "bar_chart: expected at least one category and one group of bars, got {} categories and {} groups",
            categories.len(),
            groups.len()
        )));
    }
    for g in groups {
        if g.values.len() != categories.len() {
            return Err(Error::Data(format!(
                "bar_chart: group '{}' has {} values for {} categories; expected one value per category, in their order",
                g.name,
                g.values.len(),
                categories.len()
            )));
        }
        if let Some((i, v)) = g.values.iter().enumerate().find(|(_, v)| !v.is_finite() || **v < 0.0) {
            return Err(Error::Data(format!(
                "bar_chart: group '{}' has {v} for '{}'; expected a finite value ≥ 0 (a count, an accuracy)",
                g.name, categories[i]
            )));
        }
    }
    Figure::render(cfg.width, cfg.height, &Chart { categories, groups, cfg })
}

struct Chart<'a> {
    categories: &'a [String],
    groups: &'a [Bars],
    cfg: &'a BarChartConfig,
}

/// The share of a category's slot that its bars fill (the rest separates categories).
const SLOT: f64 = 0.8;

/// Units per category on the x axis. Integer coordinates (category `i` at `i * UNIT`) give the
/// axis plotters' default label formatting, which key points on an `f64` axis lack; a bar's edges
/// then land within 1/1000 of a slot of where they belong.
const UNIT: i32 = 1000;

/// A value as written above its bar and on the y axis: integers without decimals, others with two.
fn value_label(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Plot for Chart<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let n = self.categories.len();
        let top = self.groups.iter().flat_map(|g| g.values.iter().copied()).fold(0.0, f64::max);
        // Room above the tallest bar for its value and for the legend.
        let y_max = if top > 0.0 { top * if self.groups.len() > 1 { 1.3 } else { 1.15 } } else { 1.0 };
        // Counts get whole-number ticks: no "0.20 images".
        let counts = self.groups.iter().all(|g| g.values.iter().all(|v| v.fract() == 0.0));
        let y_ticks = if counts { (top as usize + 1).clamp(2, 10) } else { 10 };
        let x = (-UNIT / 2..n as i32 * UNIT - UNIT / 2).with_key_points((0..n as i32).map(|i| i * UNIT).collect());
        let mut b = ChartBuilder::on(area);
        b.margin(12).x_label_area_size(if self.cfg.x_label.is_empty() { 28 } else { 48 }).y_label_area_size(64);
        if !self.cfg.title.is_empty() {
            b.caption(self.cfg.title.clone(), ("sans-serif", 20));
        }
        let mut chart = b.build_cartesian_2d(x, 0.0..y_max).map_err(plot_err)?;
        let names = self.categories;
        let name_of = move |v: &i32| match usize::try_from(v / UNIT) {
            Ok(i) if v % UNIT == 0 && i < names.len() => names[i].clone(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&name_of)
            .y_labels(y_ticks)
            .y_label_formatter(&|v| if counts && v.fract() != 0.0 { String::new() } else { value_label(*v) })
            .x_desc(self.cfg.x_label.clone())
            .y_desc(self.cfg.y_label.clone())
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        let width = SLOT / self.groups.len() as f64;
        let label_style = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        for (j, g) in self.groups.iter().enumerate() {
            let color = categorical_color(j);
            let at = |i: usize, offset: f64| ((i as f64 - SLOT / 2.0 + (j as f64 + offset) * width) * UNIT as f64).round() as i32;
            let bars = g.values.iter().enumerate().map(|(i, &v)| Rectangle::new([(at(i, 0.0), 0.0), (at(i, 1.0), v)], color.filled()));
            let drawn = chart.draw_series(bars).map_err(plot_err)?;
            if self.groups.len() > 1 {
                drawn.label(g.name.clone()).legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
            }
            let labels = g.values.iter().enumerate().map(|(i, &v)| {
                EmptyElement::at((at(i, 0.5), v)) + Text::new(value_label(v), (0, -3), label_style.clone())
            });
            chart.draw_series(labels).map_err(plot_err)?;
        }
        if self.groups.len() > 1 {
            draw_legend(&mut chart)?;
        }
        Ok(())
    }
}
