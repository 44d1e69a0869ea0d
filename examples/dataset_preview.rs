//! Saves a grid of the embedded dataset: `cargo run --example dataset_preview -- out/shapes.png [size] [count]`.
use selfsup::prelude::*;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "out/shapes.png".into());
    let size = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    let set = data::synthetic::load(Split::Train, &SyntheticConfig::default().image_size(size))?;
    println!("{set}");
    let n = args.next().and_then(|s| s.parse().ok()).unwrap_or(30i64);
    let idx: Vec<i64> = (0..n).collect();
    let fig = viz::image_grid(&set.select(&idx)?.images, &set.names_of(&idx), &GridConfig { columns: 10, ..Default::default() })?;
    fig.save(&path)?;
    println!("saved {path} ({}x{})", fig.width(), fig.height());
    Ok(())
}
