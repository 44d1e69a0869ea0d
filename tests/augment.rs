//! Augmentations against their definitions (torchvision's formulas, the papers' numbers):
//! grayscale weights, jitter factors, hue rotation, crop-box distribution, blur of an impulse,
//! solarize threshold, flips, per-sample probabilities, shapes, ranges and determinism.
use selfsup::augment::ops::{self, ColorJitter, CropBox, GaussianBlur, JitterParams, RandomResizedCrop};
use selfsup::augment::{self, presets, Augment, MultiView, Op, OpKind, TwoViews};
use selfsup::data::Normalization;
use selfsup::tch::{Device, Kind, Tensor};
use selfsup::Error;

type Result<T = ()> = anyhow::Result<T>;

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap_or_default()
}

fn assert_close(got: &Tensor, want: &[f32], tol: f32) {
    let g = to_vec(got);
    assert_eq!(g.len(), want.len(), "length: got {g:?}, want {want:?}");
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol, "element {i}: got {a}, want {b} (tol {tol}); all: {g:?}");
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// `[n, 3, h, w]` with one colour per sample.
fn colours(rgb: &[[f32; 3]], h: i64, w: i64) -> Tensor {
    let flat: Vec<f32> = rgb.iter().flat_map(|c| c.iter().copied()).collect();
    Tensor::from_slice(&flat).view([rgb.len() as i64, 3, 1, 1]).expand([rgb.len() as i64, 3, h, w], false).contiguous()
}

fn random_images(n: i64, size: i64, seed: i64) -> Tensor {
    selfsup::tch::manual_seed(seed);
    Tensor::rand([n, 3, size, size], (Kind::Float, Device::Cpu))
}

fn random_u8(n: i64, size: i64, seed: i64) -> Tensor {
    (random_images(n, size, seed) * 255.0).to_kind(Kind::Uint8)
}

/// Which samples differ from the original.
fn changed(before: &Tensor, after: &Tensor) -> Vec<bool> {
    let d = (before - after).abs().amax([1i64, 2, 3].as_slice(), false);
    to_vec(&d).into_iter().map(|v| v > 1e-6).collect()
}

// ---------------------------------------------------------------------------------------------
// Grayscale and the colour factors.
// ---------------------------------------------------------------------------------------------

#[test]
fn grayscale_uses_itu_r_601_weights() -> Result {
    let x = colours(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.2, 0.4, 0.6]], 2, 2);
    let g = ops::to_grayscale(&x)?;
    assert_eq!(g.size(), [5, 3, 2, 2]);
    let want = [0.299, 0.587, 0.114, 1.0, 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6];
    for (i, w) in want.iter().enumerate() {
        assert_close(&g.get(i as i64), &[*w as f32; 12], 1e-6);
    }
    Ok(())
}

#[test]
fn brightness_multiplies_and_clamps() -> Result {
    let x = colours(&[[0.4, 0.2, 0.0], [0.4, 0.2, 0.0], [0.4, 0.2, 0.0]], 1, 1);
    let y = ops::adjust_brightness(&x, &[1.5, 0.5, 3.0])?;
    assert_close(&y, &[0.6, 0.3, 0.0, 0.2, 0.1, 0.0, 1.0, 0.6, 0.0], 1e-6);
    Ok(())
}

#[test]
fn contrast_blends_with_the_mean_of_the_grayscale_image() -> Result {
    // Two pixels: (0.2, 0.4, 0.6) has luma 0.363, (0.8, 0.6, 0.4) has luma 0.637; mean 0.5.
    // torchvision: clamp(f * x + (1 - f) * mean, 0, 1).
    let x = Tensor::from_slice(&[0.2f32, 0.8, 0.4, 0.6, 0.6, 0.4]).view([1, 3, 1, 2]);
    let y = ops::adjust_contrast(&x, &[0.5])?;
    assert_close(&y, &[0.35, 0.65, 0.45, 0.55, 0.55, 0.45], 1e-6);
    let y = ops::adjust_contrast(&x, &[2.0])?; // 2x - 0.5, clamped
    assert_close(&y, &[0.0, 1.0, 0.3, 0.7, 0.7, 0.3], 1e-6);
    let y = ops::adjust_contrast(&x, &[0.0])?; // all grey at the mean
    assert_close(&y, &[0.5; 6], 1e-6);
    Ok(())
}

#[test]
fn saturation_blends_with_grayscale() -> Result {
    // (0.2, 0.4, 0.6): luma 0.363. torchvision: clamp(f * x + (1 - f) * gray, 0, 1).
    let x = colours(&[[0.2, 0.4, 0.6]; 3], 1, 1);
    let y = ops::adjust_saturation(&x, &[0.0, 0.5, 2.0])?;
    let g = 0.363f32;
    assert_close(
        &y,
        &[g, g, g, 0.5 * 0.2 + 0.5 * g, 0.5 * 0.4 + 0.5 * g, 0.5 * 0.6 + 0.5 * g, 0.4 - g, 0.8 - g, 1.2 - g],
        1e-6,
    );
    Ok(())
}

#[test]
fn hue_rotates_pure_colours() -> Result {
    let red = [1.0, 0.0, 0.0];
    let green = [0.0, 1.0, 0.0];
    let x = colours(&[red, red, green, [1.0, 0.5, 0.0], [0.5, 0.5, 0.5]], 1, 1);
    let y = ops::adjust_hue(&x, &[1.0 / 3.0, -1.0 / 3.0, 1.0 / 3.0, 0.5, 0.25])?;
    assert_close(
        &y,
        &[
            0.0, 1.0, 0.0, // red + 1/3 = green
            0.0, 0.0, 1.0, // red - 1/3 = blue
            0.0, 0.0, 1.0, // green + 1/3 = blue
            0.0, 0.5, 1.0, // orange (h = 1/12) + 1/2 = azure (h = 7/12)
            0.5, 0.5, 0.5, // grey has no hue
        ],
        1e-5,
    );
    let images = random_images(4, 8, 0);
    let same = ops::adjust_hue(&images, &[0.0; 4])?;
    assert!(max_abs_diff(&same, &images) < 1e-5, "a zero hue shift must be the identity");
    Ok(())
}

#[test]
fn hue_matches_torchvision() -> Result {
    // Golden values from torchvision's float formula (functional_tensor.py `_rgb2hsv`,
    // `_hsv2rgb`, `adjust_hue`), run on torch 2.11:
    //
    //   x = torch.tensor([[[[0.9, 0.2, 0.5, 0.3]], [[0.1, 0.7, 0.5, 0.8]], [[0.4, 0.6, 0.5, 0.05]]],
    //                     [[[0.25, 1.0, 0.0, 0.6]], [[0.75, 0.0, 0.33, 0.6]], [[0.5, 0.5, 0.66, 0.1]]]],
    //                    dtype=torch.float64)
    //   out = torch.stack([adjust_hue(x[0], 0.2), adjust_hue(x[1], -0.35)])
    //   print([round(v, 6) for v in out.flatten().tolist()])
    let x = Tensor::from_slice(&[
        0.9f32, 0.2, 0.5, 0.3, 0.1, 0.7, 0.5, 0.8, 0.4, 0.6, 0.5, 0.05, //
        0.25, 1.0, 0.0, 0.6, 0.75, 0.0, 0.33, 0.6, 0.5, 0.5, 0.66, 0.1,
    ])
    .view([2, 3, 1, 4]);
    let y = ops::adjust_hue(&x, &[0.2, -0.35])?;
    let want = [
        0.9, 0.2, 0.5, 0.05, 0.76, 0.2, 0.5, 0.8, 0.1, 0.7, 0.5, 0.7, //
        0.75, 0.0, 0.396, 0.55, 0.45, 0.6, 0.66, 0.1, 0.25, 1.0, 0.0, 0.6,
    ];
    assert_close(&y, &want, 1e-5);
    Ok(())
}

#[test]
fn jitter_applies_each_samples_parts_in_its_own_order() -> Result {
    let images = random_images(32, 6, 1);
    for jitter in [
        ColorJitter::new(0.4, 0.4, 0.4, 0.1),
        ColorJitter::new(0.8, 0.0, 0.8, 0.2),
        ColorJitter::new(0.0, 0.5, 0.0, 0.0),
    ] {
        let mut rng = augment::rng(3);
        let params = ops::sample_jitter(32, &jitter, &mut rng)?;
        let batched = ops::jitter_with(&images, &jitter, &params)?;
        let strengths = [jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue];
        for i in 0..32 {
            let mut x = images.narrow(0, i as i64, 1);
            for &part in params.order[i].iter().filter(|&&part| strengths[part] > 0.0) {
                x = match part {
                    0 => ops::adjust_brightness(&x, &[params.brightness[i]])?,
                    1 => ops::adjust_contrast(&x, &[params.contrast[i]])?,
                    2 => ops::adjust_saturation(&x, &[params.saturation[i]])?,
                    _ => ops::adjust_hue(&x, &[params.hue[i]])?,
                };
            }
            assert!(max_abs_diff(&x, &batched.narrow(0, i as i64, 1)) < 1e-6, "{jitter:?}, sample {i}");
        }
    }
    let jitter = ColorJitter::new(0.4, 0.4, 0.4, 0.1);
    // The order matters: hue then contrast differs from contrast then hue.
    let two = images.narrow(0, 0, 1).repeat([2, 1, 1, 1]);
    let p = JitterParams {
        order: vec![[3, 1, 0, 2], [1, 3, 0, 2]],
        brightness: vec![1.0; 2],
        contrast: vec![1.8; 2],
        saturation: vec![1.0; 2],
        hue: vec![0.25; 2],
    };
    let y = ops::jitter_with(&two, &jitter, &p)?;
    assert!(max_abs_diff(&y.get(0), &y.get(1)) > 1e-3);
    // The factor ranges are torchvision's: [max(0, 1 - s), 1 + s] and [-h, h].
    let mut rng = augment::rng(0);
    let p = ops::sample_jitter(2000, &ColorJitter::new(0.8, 1.5, 0.2, 0.1), &mut rng)?;
    let range = |v: &[f64]| (v.iter().cloned().fold(f64::MAX, f64::min), v.iter().cloned().fold(f64::MIN, f64::max));
    let (lo, hi) = range(&p.brightness);
    assert!((0.2..0.21).contains(&lo) && hi <= 1.8 && hi > 1.79, "brightness {lo}..{hi}");
    let (lo, hi) = range(&p.contrast);
    assert!((0.0..0.01).contains(&lo) && hi <= 2.5 && hi > 2.49, "contrast {lo}..{hi}");
    let (lo, hi) = range(&p.hue);
    assert!((-0.1..-0.099).contains(&lo) && hi <= 0.1 && hi > 0.099, "hue {lo}..{hi}");
    // Every one of the 24 orders occurs.
    let orders: std::collections::HashSet<[usize; 4]> = p.order.iter().copied().collect();
    assert_eq!(orders.len(), 24);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RandomResizedCrop.
// ---------------------------------------------------------------------------------------------

#[test]
fn crop_boxes_follow_the_requested_scale_and_ratio() -> Result {
    let (h, w, n) = (96i64, 96i64, 20_000);
    let crop = RandomResizedCrop::new(32); // scale (0.08, 1), ratio (3/4, 4/3)
    let boxes = ops::sample_crop_boxes(h, w, n, &crop, &mut augment::rng(7))?;
    assert_eq!(boxes.len(), n as usize);
    let mut area_bins = [0usize; 8]; // [0.08, 0.72) in 8 bins: every scale here always fits
    let mut ratio_bins = [0usize; 4]; // log-ratio of small boxes in 4 bins
    for b in &boxes {
        assert!(b.top >= 0 && b.left >= 0 && b.top + b.height <= h && b.left + b.width <= w, "{b:?} out of bounds");
        let area = (b.height * b.width) as f64 / (h * w) as f64;
        let ratio = b.width as f64 / b.height as f64;
        // Rounding the sides to whole pixels moves area and ratio by a few percent at most.
        assert!((0.08 * 0.93..=1.0).contains(&area), "area fraction {area}");
        assert!((0.75 * 0.93..=4.0 / 3.0 * 1.07).contains(&ratio), "ratio {ratio}");
        if (0.08..0.72).contains(&area) {
            area_bins[((area - 0.08) / 0.08) as usize] += 1;
        }
        if area < 0.5 {
            let t = (ratio.ln() - 0.75f64.ln()) / ((4.0f64 / 3.0).ln() - 0.75f64.ln());
            ratio_bins[((t * 4.0).floor().clamp(0.0, 3.0)) as usize] += 1;
        }
    }
    let uniform = |bins: &[usize], tol: f64| {
        let mean = bins.iter().sum::<usize>() as f64 / bins.len() as f64;
        for (i, &c) in bins.iter().enumerate() {
            assert!((c as f64 - mean).abs() < tol * mean, "bin {i}: {c} vs mean {mean} ({bins:?})");
        }
    };
    uniform(&area_bins, 0.10);
    uniform(&ratio_bins, 0.12);
    // Positions are uniform: the box centres average to the image centre.
    let cx = boxes.iter().map(|b| b.left as f64 + b.width as f64 / 2.0).sum::<f64>() / n as f64;
    assert!((cx - 48.0).abs() < 1.0, "mean centre x {cx}");
    Ok(())
}

#[test]
fn crop_falls_back_to_a_central_crop() -> Result {
    // A 10x200 strip cannot hold a box of 90-100% of its area with ratio <= 4/3: after ten tries
    // torchvision takes the central crop with the largest allowed ratio.
    let crop = RandomResizedCrop::new(8).scale(0.9, 1.0);
    let boxes = ops::sample_crop_boxes(10, 200, 3, &crop, &mut augment::rng(0))?;
    for b in boxes {
        assert_eq!(b, CropBox { top: 0, left: 93, height: 10, width: 13 });
    }
    Ok(())
}

#[test]
fn resized_crop_is_bilinear_with_half_pixel_centres() -> Result {
    // On a linear ramp bilinear interpolation is exact, so each output pixel must equal the ramp
    // at its source coordinate: left + (x + 0.5) * w / S - 0.5 (F.interpolate, align_corners=False).
    let (h, w) = (12i64, 16i64);
    let rows = Tensor::arange(h, (Kind::Float, Device::Cpu)).view([1, 1, h, 1]);
    let cols = Tensor::arange(w, (Kind::Float, Device::Cpu)).view([1, 1, 1, w]);
    let ramp = (rows * 0.03 + cols * 0.02 + Tensor::from_slice(&[0.0f32, 0.1, 0.2]).view([1, 3, 1, 1]))
        .expand([2, 3, h, w], false);
    let boxes = [CropBox { top: 2, left: 3, height: 6, width: 8 }, CropBox { top: 0, left: 0, height: 12, width: 16 }];
    let s = 10;
    let y = ops::resized_crop(&ramp, &boxes, s)?;
    assert_eq!(y.size(), [2, 3, s, s]);
    for (b, bx) in boxes.iter().enumerate() {
        for c in 0..3 {
            for oy in 0..s {
                for ox in 0..s {
                    let sy = bx.top as f64 + (oy as f64 + 0.5) * bx.height as f64 / s as f64 - 0.5;
                    let sx = bx.left as f64 + (ox as f64 + 0.5) * bx.width as f64 / s as f64 - 0.5;
                    let (sy, sx) = (sy.clamp(0.0, (h - 1) as f64), sx.clamp(0.0, (w - 1) as f64));
                    let want = 0.03 * sy + 0.02 * sx + 0.1 * c as f64;
                    let got = y.double_value(&[b as i64, c, oy, ox]);
                    assert!((got - want).abs() < 1e-5, "sample {b} c {c} ({oy}, {ox}): {got} vs {want}");
                }
            }
        }
    }
    // A box outside the image is refused.
    let bad = [CropBox { top: 8, left: 0, height: 6, width: 4 }, boxes[1]];
    assert!(matches!(ops::resized_crop(&ramp, &bad, s), Err(Error::Data(_))));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Blur, solarize, flip.
// ---------------------------------------------------------------------------------------------

#[test]
fn blur_of_an_impulse_is_the_gaussian() -> Result {
    let n = 21;
    let impulse = Tensor::zeros([2, 3, n, n], (Kind::Float, Device::Cpu));
    let _ = impulse.narrow(2, n / 2, 1).narrow(3, n / 2, 1).fill_(1.0);
    let (k, sigmas) = (9, [0.7, 1.8]);
    let y = ops::blur(&impulse, &sigmas, k)?;
    for (b, &sigma) in sigmas.iter().enumerate() {
        let g = ops::gaussian_kernel(sigma, k)?;
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let raw: Vec<f64> = (-4..=4).map(|x: i32| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp()).collect();
        let total: f64 = raw.iter().sum();
        for c in 0..3 {
            let img = y.get(b as i64).get(c);
            assert!((img.sum(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-5, "sums to 1");
            assert!(max_abs_diff(&img, &img.flip([0])) < 1e-7, "symmetric vertically");
            assert!(max_abs_diff(&img, &img.flip([1])) < 1e-7, "symmetric horizontally");
            assert!(max_abs_diff(&img, &img.transpose(0, 1)) < 1e-7, "isotropic");
            for dy in -4..=4i64 {
                for dx in -4..=4i64 {
                    let want = raw[(dy + 4) as usize] * raw[(dx + 4) as usize] / (total * total);
                    let got = img.double_value(&[n / 2 + dy, n / 2 + dx]);
                    assert!((got - want).abs() < 1e-6, "sigma {sigma} at ({dy}, {dx}): {got} vs {want}");
                }
            }
            assert_eq!(img.double_value(&[n / 2, n / 2 + 5]), 0.0, "nothing beyond the kernel");
        }
    }
    // SimCLR's kernel rule: 10% of the image, odd.
    let auto = GaussianBlur::default();
    assert_eq!((auto.kernel_for(224), auto.kernel_for(96), auto.kernel_for(32)), (23, 9, 3));
    Ok(())
}

#[test]
fn solarize_inverts_at_and_above_the_threshold() -> Result {
    let x = Tensor::from_slice(&[0.2f32, 0.49, 0.5, 0.6, 1.0, 0.0]).view([1, 3, 1, 2]);
    assert_close(&ops::solarize_all(&x, 0.5)?, &[0.2, 0.49, 0.5, 0.4, 0.0, 0.0], 1e-6);
    assert!(matches!(ops::solarize_all(&x, 2.0), Err(Error::Config(_))));
    Ok(())
}

#[test]
fn flips_mirror_left_right() -> Result {
    let x = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([1, 3, 1, 4]) / 12.0;
    let y = ops::flip_horizontal(&x)?;
    assert_close(&(&y * 12.0), &[3., 2., 1., 0., 7., 6., 5., 4., 11., 10., 9., 8.], 1e-5);
    let mut rng = augment::rng(0);
    assert!(max_abs_diff(&ops::hflip(&x, 1.0, &mut rng)?, &y) == 0.0);
    assert!(max_abs_diff(&ops::hflip(&x, 0.0, &mut rng)?, &x) == 0.0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Per-sample probabilities.
// ---------------------------------------------------------------------------------------------

#[test]
fn random_apply_is_drawn_per_sample() -> Result {
    let n = 400;
    let images = random_images(n, 12, 2);
    let mut rng = augment::rng(11);
    let outputs = [
        ("hflip", ops::hflip(&images, 0.5, &mut rng)?),
        ("grayscale", ops::grayscale(&images, 0.5, &mut rng)?),
        ("solarize", ops::solarize(&images, 0.5, 0.5, &mut rng)?),
        ("color_jitter", ops::color_jitter(&images, &ColorJitter::new(0.4, 0.4, 0.4, 0.1), 0.5, &mut rng)?),
        (
            "gaussian_blur",
            ops::gaussian_blur(
                &images,
                &GaussianBlur { kernel_size: Some(3), ..GaussianBlur::default() },
                0.5,
                &mut rng,
            )?,
        ),
    ];
    for (name, out) in &outputs {
        let count = changed(&images, out).iter().filter(|&&c| c).count();
        // Binomial(400, 0.5): mean 200, sd 10.
        assert!((150..=250).contains(&count), "{name}: {count} of {n} samples changed with p = 0.5");
    }
    // An unselected sample is untouched, a selected one is exactly the op's result.
    let flipped = &outputs[0].1;
    for i in 0..n {
        let (a, x) = (flipped.get(i), images.get(i));
        assert!(max_abs_diff(&a, &x) == 0.0 || max_abs_diff(&a, &x.flip([2])) == 0.0, "sample {i}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pipelines and presets.
// ---------------------------------------------------------------------------------------------

fn all_presets(size: i64) -> Vec<(&'static str, TwoViews)> {
    vec![
        ("simclr", presets::simclr(size).into()),
        ("simclr_cifar", presets::simclr_cifar(size).into()),
        ("moco_v1", presets::moco_v1(size).into()),
        ("moco_v2", presets::moco_v2(size).into()),
        ("byol", presets::byol(size)),
        ("barlow_twins", presets::barlow_twins(size)),
        ("barlow_twins_cifar10", presets::barlow_twins_cifar10(size).into()),
    ]
}

#[test]
fn presets_give_shapes_ranges_and_same_seed_same_views() -> Result {
    let images = random_u8(6, 40, 5);
    for (name, views) in all_presets(24) {
        views.validate()?;
        let (v1, v2) = views.two_views(&images, &mut augment::rng(1))?;
        for (i, v) in [&v1, &v2].into_iter().enumerate() {
            assert_eq!(v.size(), [6, 3, 24, 24], "{name}");
            assert_eq!(v.kind(), Kind::Float, "{name}");
            let shown = match views.pipeline(i).output_normalization() {
                Some(n) => n.denormalize(v)?,
                None => v.shallow_clone(),
            };
            let (lo, hi) = (shown.min().double_value(&[]), shown.max().double_value(&[]));
            assert!(lo > -1e-4 && hi < 1.0 + 1e-4, "{name} view {i}: values {lo}..{hi} outside [0, 1]");
        }
        assert!(max_abs_diff(&v1, &v2) > 1e-3, "{name}: the two views must differ");
        let (w1, w2) = views.two_views(&images, &mut augment::rng(1))?;
        assert!(max_abs_diff(&v1, &w1) == 0.0 && max_abs_diff(&v2, &w2) == 0.0, "{name}: same seed, same views");
        let (u1, _) = views.two_views(&images, &mut augment::rng(2))?;
        assert!(max_abs_diff(&v1, &u1) > 1e-3, "{name}: another seed, other views");
        // Floats in [0, 1] give the same result as the u8 batch they came from.
        let floats = images.to_kind(Kind::Float) / 255.0;
        let (f1, _) = views.two_views(&floats, &mut augment::rng(1))?;
        assert!(max_abs_diff(&v1, &f1) < 1e-5, "{name}: u8 and float inputs");
    }
    Ok(())
}

/// The CPU's per-image path (`Augment::apply` on the CPU) against the batched ops
/// (`apply_batched`): the same draws (the generators end in the same state) and the same pixels
/// to float rounding, for every preset and for pipelines in unusual orders.
#[test]
fn per_image_cpu_path_matches_the_batched_ops() -> Result {
    use rand::RngCore;
    let check = |name: &str, augment: &Augment, images: &Tensor, seed: u64| -> Result {
        let (mut r1, mut r2) = (augment::rng(seed), augment::rng(seed));
        let per_image = augment.apply(images, &mut r1)?;
        let batched = augment.apply_batched(images, &mut r2)?;
        assert_eq!(per_image.size(), batched.size(), "{name}");
        assert_eq!(per_image.kind(), Kind::Float, "{name}");
        let d = max_abs_diff(&per_image, &batched);
        assert!(d < 1e-4, "{name}: per-image and batched paths differ by {d}");
        assert_eq!(r1.next_u64(), r2.next_u64(), "{name}: the two paths drew different amounts");
        Ok(())
    };
    // Presets: a source larger than the crop (shrinking boxes), at 32 px (a 3-pixel blur) and
    // at 64 px (a 7-pixel blur); u8 and float inputs; every view's pipeline.
    for (source, size) in [(40, 24), (32, 32), (72, 64)] {
        let images = random_u8(10, source, 21);
        let floats = random_images(10, source, 22);
        for (name, views) in all_presets(size) {
            for i in 0..2 {
                let pipeline = views.pipeline(i);
                check(&format!("{name} view {i} at {size} (u8)"), pipeline, &images, 3)?;
                check(&format!("{name} view {i} at {size} (f32)"), pipeline, &floats, 4)?;
            }
        }
    }
    // Every op with p = 1 and other orders: flip before the crop, jitter parts left out, hue
    // alone, grey then jitter, blur before solarize, no crop and no normalisation.
    let images = random_u8(9, 20, 23);
    let crop = Op::RandomResizedCrop(RandomResizedCrop::new(16).scale(0.3, 1.0));
    let custom = [
        ("flip, crop, jitter, grey, blur, solarize", Augment::new()
            .then(Op::HorizontalFlip, 1.0)
            .then(crop.clone(), 1.0)
            .then(Op::ColorJitter(ColorJitter::new(0.8, 0.8, 0.8, 0.2)), 1.0)
            .then(Op::Grayscale, 1.0)
            .then(Op::GaussianBlur(GaussianBlur { sigma: (0.5, 2.0), kernel_size: Some(5) }), 1.0)
            .then(Op::Solarize { threshold: 0.5 }, 1.0)),
        ("hue only, then brightness only", Augment::new()
            .then(Op::ColorJitter(ColorJitter::new(0.0, 0.0, 0.0, 0.5)), 0.7)
            .then(Op::ColorJitter(ColorJitter::new(0.9, 0.0, 0.0, 0.0)), 0.7)),
        ("grey, jitter, solarize, blur, normalise", Augment::new()
            .then(Op::Grayscale, 0.5)
            .then(Op::ColorJitter(ColorJitter::new(0.4, 0.4, 0.4, 0.1)), 0.9)
            .then(Op::Solarize { threshold: 0.3 }, 0.5)
            .then(Op::GaussianBlur(GaussianBlur::default()), 0.5)
            .then(Op::Normalize(Normalization { mean: [0.4, 0.5, 0.6], std: [0.2, 0.25, 0.3] }), 1.0)),
        ("the identity", Augment::new()),
    ];
    for (name, augment) in &custom {
        check(name, augment, &images, 5)?;
    }
    // The same errors: a blur kernel too large for the image, a dtype that is not an image.
    let too_large = Augment::new().then(Op::GaussianBlur(GaussianBlur { sigma: (1.0, 1.0), kernel_size: Some(17) }), 1.0);
    let small = random_u8(2, 8, 24);
    for result in [too_large.apply(&small, &mut augment::rng(0)), too_large.apply_batched(&small, &mut augment::rng(0))] {
        let err = result.expect_err("a 17-pixel kernel on 8x8 images").to_string();
        assert!(err.contains("too large"), "{err}");
    }
    let ints = small.to_kind(Kind::Int64);
    assert!(Augment::new().apply(&ints, &mut augment::rng(0)).is_err());
    assert!(Augment::new().apply_batched(&ints, &mut augment::rng(0)).is_err());
    Ok(())
}

#[test]
fn presets_carry_the_papers_numbers() -> Result {
    let p = |a: &Augment, k: OpKind| a.step(k).map(|s| s.p);
    let simclr = presets::simclr(96);
    assert_eq!(simclr.output_size(), Some(96));
    assert_eq!(
        simclr.step(OpKind::ColorJitter).map(|s| s.op.clone()),
        Some(Op::ColorJitter(ColorJitter::new(0.8, 0.8, 0.8, 0.2)))
    );
    assert_eq!(
        (p(&simclr, OpKind::ColorJitter), p(&simclr, OpKind::Grayscale), p(&simclr, OpKind::Blur)),
        (Some(0.8), Some(0.2), Some(0.5))
    );
    assert_eq!(p(&presets::simclr_cifar(32), OpKind::Blur), None);

    let moco_v2 = presets::moco_v2(224);
    match moco_v2.step(OpKind::Crop).map(|s| &s.op) {
        Some(Op::RandomResizedCrop(c)) => assert_eq!(c.scale, (0.2, 1.0)),
        other => panic!("moco_v2 crop: {other:?}"),
    }
    assert_eq!(
        moco_v2.step(OpKind::ColorJitter).map(|s| s.op.clone()),
        Some(Op::ColorJitter(ColorJitter::new(0.4, 0.4, 0.4, 0.1)))
    );
    assert_eq!(moco_v2.output_normalization(), Some(Normalization::imagenet()));

    // MoCo v1: grayscale before an always-on jitter (main_moco.py order).
    let kinds: Vec<OpKind> = presets::moco_v1(224).steps.iter().map(|s| s.op.kind()).collect();
    assert_eq!(kinds, [OpKind::Crop, OpKind::Grayscale, OpKind::ColorJitter, OpKind::Flip, OpKind::Normalize]);
    assert_eq!(p(&presets::moco_v1(224), OpKind::ColorJitter), Some(1.0));

    // BYOL / Barlow Twins: blur 1.0 / 0.1, solarize 0.0 / 0.2.
    for pair in [presets::byol(224), presets::barlow_twins(224)] {
        assert_eq!((p(&pair.view1, OpKind::Blur), p(&pair.view2, OpKind::Blur)), (Some(1.0), Some(0.1)));
        assert_eq!((p(&pair.view1, OpKind::Solarize), p(&pair.view2, OpKind::Solarize)), (Some(0.0), Some(0.2)));
        assert_eq!(
            pair.view1.step(OpKind::ColorJitter).map(|s| s.op.clone()),
            Some(Op::ColorJitter(ColorJitter::new(0.4, 0.4, 0.2, 0.1)))
        );
    }

    // The seminar's albumentations list: no blur, no normalisation, p = 0.3 each.
    let seed = presets::barlow_twins_cifar10(32);
    assert_eq!(
        (p(&seed, OpKind::ColorJitter), p(&seed, OpKind::Grayscale), p(&seed, OpKind::Solarize)),
        (Some(0.3), Some(0.3), Some(0.3))
    );
    assert_eq!((p(&seed, OpKind::Blur), seed.output_normalization()), (None, None));
    Ok(())
}

#[test]
fn setters_change_the_config_and_it_round_trips_through_json() -> Result {
    let a = presets::moco_v2(96).blur_p(0.0).crop_scale(0.08, 1.0).jitter_p(0.5).normalization(None);
    assert_eq!(a.step(OpKind::Blur).map(|s| s.p), Some(0.0));
    assert_eq!(a.step(OpKind::ColorJitter).map(|s| s.p), Some(0.5));
    assert_eq!(a.output_normalization(), None);
    // A missing op is inserted at its canonical place: solarize goes before the normalisation.
    let b = presets::simclr(32).solarize_p(0.2);
    let kinds: Vec<OpKind> = b.steps.iter().map(|s| s.op.kind()).collect();
    assert_eq!(kinds[kinds.len() - 2..], [OpKind::Solarize, OpKind::Normalize]);
    let json = serde_json::to_string(&presets::byol(64))?;
    let back: TwoViews = serde_json::from_str(&json)?;
    assert_eq!(back, presets::byol(64));
    // A crop range without a crop size is a configuration error that says what to do.
    let err = Augment::new().crop_scale(0.2, 1.0).apply(&random_u8(1, 8, 0), &mut augment::rng(0));
    assert!(matches!(&err, Err(Error::Config(m)) if m.contains("size")), "{err:?}");
    Ok(())
}

#[test]
fn bad_inputs_are_refused_with_expected_vs_got() -> Result {
    let mut rng = augment::rng(0);
    let gray = Tensor::zeros([2, 1, 8, 8], (Kind::Float, Device::Cpu));
    assert!(matches!(presets::simclr(8).apply(&gray, &mut rng), Err(Error::Shape { .. })));
    let x = random_images(2, 8, 0);
    assert!(matches!(ops::hflip(&x, 1.5, &mut rng), Err(Error::Config(_))));
    assert!(matches!(ops::adjust_brightness(&x, &[1.0]), Err(Error::Shape { .. })));
    assert!(matches!(ops::adjust_hue(&x, &[0.1, 0.7]), Err(Error::Config(_))));
    let ints = Tensor::zeros([2, 3, 8, 8], (Kind::Int64, Device::Cpu));
    assert!(matches!(presets::simclr(8).apply(&ints, &mut rng), Err(Error::Data(_))));
    assert!(matches!(ops::blur(&x, &[1.0, 1.0], 17), Err(Error::Config(_))));
    assert!(matches!(presets::simclr(8).then(Op::HorizontalFlip, 2.0).validate(), Err(Error::Config(_))));
    let crop_half = Augment::new().then(Op::RandomResizedCrop(RandomResizedCrop::new(8)), 0.5);
    assert!(matches!(crop_half.validate(), Err(Error::Config(_))));
    Ok(())
}

#[test]
fn n_views_and_show_views() -> Result {
    let images = random_u8(3, 32, 9);
    let views = presets::byol(16).views(&images, 3, &mut augment::rng(0))?;
    assert_eq!(views.len(), 3);
    assert!(views.iter().all(|v| v.size() == [3, 3, 16, 16]));
    assert!(presets::simclr(16).views(&images, 0, &mut augment::rng(0)).is_err());
    let grid = augment::show_views(&images, &presets::moco_v2(16), 2, 0)?;
    assert_eq!((grid.tiles.size(), grid.captions.len()), (vec![6, 3, 16, 16], 6));
    let fig = grid.figure()?;
    assert!(fig.width() > 0 && fig.height() > 0);
    // The kit's own shapes, as a notebook shows them (saved for a look: target/augment_views.png).
    let set = selfsup::data::synthetic::load(
        selfsup::data::Split::Train,
        &selfsup::data::synthetic::SyntheticConfig::tiny(),
    )?;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("augment_views.png");
    augment::show_views(&set.images, &presets::byol(32), 4, 0)?.save(&path)?;
    assert!(path.exists());
    assert!(augment::show_views(&images, &presets::moco_v2(16), 4, 0).is_err());
    Ok(())
}

/// torchvision's `adjust_hue` for one pixel, written out with its six-sector table
/// (functional_tensor.py `_rgb2hsv`, `_hsv2rgb`), as an independent reference.
fn hue_reference(rgb: [f64; 3], shift: f64) -> [f64; 3] {
    let [r, g, b] = rgb;
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let cr = maxc - minc;
    let s = if cr == 0.0 { 0.0 } else { cr / maxc };
    let div = if cr == 0.0 { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
    let h6 = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = ((h6 / 6.0 + 1.0) % 1.0 + shift).rem_euclid(1.0);
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (maxc * (1.0 - s), maxc * (1.0 - s * f), maxc * (1.0 - s * (1.0 - f)));
    match (i as i64).rem_euclid(6) {
        0 => [maxc, t, p],
        1 => [q, maxc, p],
        2 => [p, maxc, t],
        3 => [p, q, maxc],
        4 => [t, p, maxc],
        _ => [maxc, p, q],
    }
}

#[test]
fn hue_matches_the_six_sector_reference_on_random_pixels() -> Result {
    let (n, hw) = (64i64, 16i64);
    let images = random_images(n, 4, 21); // [64, 3, 4, 4]
    let shifts: Vec<f64> = (0..n).map(|i| -0.5 + i as f64 / (n - 1) as f64).collect();
    let y = ops::adjust_hue(&images, &shifts)?;
    let (x, y) = (to_vec(&images), to_vec(&y));
    for (s, &shift) in shifts.iter().enumerate() {
        for p in 0..hw as usize {
            let at = |c: usize| s * 3 * hw as usize + c * hw as usize + p;
            let want = hue_reference([x[at(0)] as f64, x[at(1)] as f64, x[at(2)] as f64], shift);
            for c in 0..3 {
                assert!(
                    (y[at(c)] as f64 - want[c]).abs() < 2e-5,
                    "sample {s} pixel {p} channel {c}: {} vs {}",
                    y[at(c)],
                    want[c]
                );
            }
        }
    }
    Ok(())
}

#[test]
fn into_fn_draws_fresh_views_from_its_own_seed() -> Result {
    let images = random_u8(4, 20, 3);
    let mut f = presets::simclr(16).into_fn(5);
    let (a, b) = (f(&images)?, f(&images)?);
    assert!(max_abs_diff(&a, &b) > 1e-3, "each call draws new parameters");
    let mut g = presets::simclr(16).into_fn(5);
    assert!(max_abs_diff(&a, &g(&images)?) == 0.0, "same seed, same first view");
    Ok(())
}

#[test]
fn normalize_equals_the_datasets_normalization() -> Result {
    let x = random_images(4, 8, 4);
    for n in [Normalization::imagenet(), Normalization::cifar10()] {
        assert!(max_abs_diff(&ops::normalize(&x, &n)?, &n.normalize(&x)?) < 1e-6);
    }
    let bad = Normalization { mean: [0.5; 3], std: [0.2, 0.0, 0.2] };
    assert!(matches!(ops::normalize(&x, &bad), Err(Error::Config(_))));
    Ok(())
}
