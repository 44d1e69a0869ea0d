//! Image grids (S0.6): tiles land where they should, captions are drawn, and normalised images
//! are shown in their original colours.
use selfsup::prelude::*;

fn solid(rgb: [u8; 3], n: i64) -> Tensor {
    Tensor::from_slice(&rgb).view([1, 3, 1, 1]).expand([n, 3, 32, 32], false).contiguous()
}

#[test]
fn tiles_are_enlarged_placed_in_rows_and_captioned() {
    let images = Tensor::cat(&[solid([255, 0, 0], 1), solid([0, 0, 255], 1), solid([0, 200, 0], 1)], 0);
    let captions = vec!["red".to_string(), "blue".to_string(), "green".to_string()];
    let fig = viz::image_grid(&images, &captions, &GridConfig { columns: 2, min_tile: 96, ..Default::default() }).unwrap();
    let img = fig.image();
    // 2 columns of 96-px tiles with 4-px padding; 2 rows with an 18-px caption band.
    assert_eq!((img.width(), img.height()), (2 * 100 + 4, 2 * (96 + 18 + 4) + 4));
    assert_eq!(img.pixel(4 + 48, 4 + 48), [255, 0, 0]);
    assert_eq!(img.pixel(104 + 48, 4 + 48), [0, 0, 255]);
    assert_eq!(img.pixel(4 + 48, 122 + 48), [0, 200, 0]);
    assert_eq!(img.pixel(104 + 48, 122 + 48), [255, 255, 255], "no fourth tile");
    // Captions: dark text pixels in the band under the first tile.
    let dark = (4..100).flat_map(|x| (100..118).map(move |y| (x, y))).filter(|&(x, y)| img.pixel(x, y)[0] < 100).count();
    assert!(dark > 15, "caption pixels: {dark}");
}

#[test]
fn normalised_float_images_are_shown_in_their_original_colours() {
    let norm = Normalization::imagenet();
    let x = solid([255, 128, 0], 2).to_kind(Kind::Float) / 255.0;
    let z = norm.normalize(&x).unwrap();
    let fig = viz::image_grid(&z, &[], &GridConfig { columns: 2, normalization: Some(norm), ..Default::default() }).unwrap();
    assert_eq!(fig.image().pixel(50, 50), [255, 128, 0]);
}

#[test]
fn bad_inputs_are_explained() {
    let images = solid([1, 2, 3], 2);
    let err = viz::image_grid(&images, &["one".to_string()], &GridConfig::default()).unwrap_err();
    assert!(err.to_string().contains("1 captions for 2 images"), "{err}");
    assert!(viz::image_grid(&Tensor::zeros([3, 32, 32], (Kind::Uint8, Device::Cpu)), &[], &GridConfig::default()).is_err());
}

#[test]
fn image_set_show_uses_class_names() {
    let set = data::synthetic::load(Split::Train, &SyntheticConfig::tiny()).unwrap();
    let fig = set.show(10).unwrap();
    assert!(fig.width() > 8 * 96 && fig.height() > 96);
}
