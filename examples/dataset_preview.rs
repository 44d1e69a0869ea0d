//! Saves a grid of the embedded dataset: `cargo run --example dataset_preview -- out/shapes.png [size] [count]`.
use clap::Parser;
use selfsup::prelude::*;
use std::path::PathBuf;

/// Saves a grid of the embedded dataset's train images with their labels.
#[derive(Parser)]
#[command(name = "dataset_preview")]
struct Args {
    /// Where to save the grid (.png or .svg)
    #[arg(default_value = "out/shapes.png")]
    path: PathBuf,
    /// Side of the images in pixels
    #[arg(default_value_t = 32, value_parser = clap::value_parser!(u32).range(16..=256))]
    size: u32,
    /// How many images
    #[arg(default_value_t = 30, value_parser = selfsup::cli::at_least(1i64))]
    count: i64,
}

fn main() -> Result<()> {
    let Args { path, size, count } = Args::parse();
    let set = data::synthetic::load(Split::Train, &SyntheticConfig::default().image_size(size))?;
    println!("{set}");
    let idx: Vec<i64> = (0..count).collect();
    let fig = viz::image_grid(&set.select(&idx)?.images, &set.names_of(&idx), &GridConfig { columns: 10, ..Default::default() })?;
    fig.save(&path)?;
    println!("saved {} ({}x{})", path.display(), fig.width(), fig.height());
    Ok(())
}
