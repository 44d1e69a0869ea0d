//! Plots, t-SNE, activation maps and Grad-CAM: pixels land where the data says, quality scores
//! mean what they claim, and wrong inputs are explained.
use selfsup::prelude::*;
use selfsup::viz::palette::{categorical, magma, magma_u8};
use selfsup::viz::{GradCamConfig, LinePlotConfig, Series, TsneConfig};

fn cpu() -> (Kind, Device) {
    (Kind::Float, Device::Cpu)
}

/// Pixels of exactly `rgb` in `img` with x < `max_x`: (count, centroid x, centroid y, spread).
fn colour_stats(img: &Image, rgb: [u8; 3], max_x: u32) -> (usize, f64, f64, f64) {
    let mut pts = Vec::new();
    for y in 0..img.height() {
        for x in 0..max_x.min(img.width()) {
            if img.pixel(x, y) == rgb {
                pts.push((x as f64, y as f64));
            }
        }
    }
    let n = pts.len().max(1) as f64;
    let (cx, cy) = pts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0 / n, a.1 + p.1 / n));
    let spread = (pts.iter().map(|p| (p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sum::<f64>() / n).sqrt();
    (pts.len(), cx, cy, spread)
}

/// Two Gaussian clusters of `n` points each in `d` dimensions, 20 standard deviations apart.
fn two_clusters(n: i64, d: i64) -> (Tensor, Tensor) {
    tch::manual_seed(0);
    let a = Tensor::randn([n, d], cpu());
    let b = Tensor::randn([n, d], cpu()) + 20.0;
    let labels = Tensor::cat(
        &[Tensor::zeros([n], (Kind::Int64, Device::Cpu)), Tensor::ones([n], (Kind::Int64, Device::Cpu))],
        0,
    );
    (Tensor::cat(&[a, b], 0), labels)
}

#[test]
fn magma_endpoints_match_matplotlib() {
    assert_eq!(magma(0.0), [0x00, 0x00, 0x04]);
    assert_eq!(magma(1.0), [0xfc, 0xfd, 0xbf]);
    assert_eq!(magma_u8(128), [0xb7, 0x37, 0x79], "matplotlib magma(128/255)");
    assert_eq!(categorical(0), [0x00, 0x72, 0xB2], "Okabe-Ito blue first");
}

#[test]
fn line_plot_draws_each_series_in_its_palette_colour() {
    let runs = [
        Series::indexed("1% labels", (0..40).map(|i| 2.0 - 0.02 * i as f64).collect()),
        Series::indexed("100% labels", (0..40).map(|i| 1.5 - 0.03 * i as f64).collect()),
    ];
    let fig = viz::line_plot(&runs, &LinePlotConfig::new("Test loss", "epoch", "loss")).unwrap();
    assert_eq!((fig.width(), fig.height()), (800, 480));
    for i in 0..2 {
        let (count, ..) = colour_stats(fig.image(), categorical(i), 800);
        assert!(count > 200, "series {i}: {count} pixels of its colour");
    }
    assert!(fig.svg().unwrap().contains("100% labels"), "legend text in the SVG");
    // Log axis and the second axis (S2.T2): both series visible.
    let loss = Series::indexed("loss", (1..=50).map(|i| 10.0 / i as f64).collect());
    let std = Series::indexed("std of z", (1..=50).map(|i| 0.05 + 0.001 * i as f64).collect());
    let fig = viz::line_plot_two_axes(
        &[loss],
        &[std],
        &LinePlotConfig::new("BYOL", "epoch", "loss").log_y(true).y2_label("std"),
    )
    .unwrap();
    for i in 0..2 {
        let (count, ..) = colour_stats(fig.image(), categorical(i), 800);
        assert!(count > 100, "two-axis series {i}: {count} pixels");
    }
}

#[test]
fn line_plot_explains_bad_series() {
    let cfg = LinePlotConfig::default();
    let err = viz::line_plot(&[Series::new("loss", vec![1.0, 2.0], vec![0.5])], &cfg).unwrap_err();
    assert!(err.to_string().contains("got 2 x and 1 y"), "{err}");
    let err = viz::line_plot(&[Series::indexed("loss", vec![0.5, f64::NAN])], &cfg).unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    let err = viz::line_plot(&[Series::indexed("loss", vec![0.5, 0.0])], &cfg.clone().log_y(true)).unwrap_err();
    assert!(err.to_string().contains("logarithmic"), "{err}");
    assert!(viz::line_plot(&[], &cfg).is_err());
    assert!(viz::line_plot_two_axes(&[Series::indexed("a", vec![1.0])], &[], &cfg).is_err());
    // Every chart takes the same size limits and names its config in the error.
    let err = viz::line_plot(&[Series::indexed("loss", vec![0.5])], &cfg.clone().size(100, 400)).unwrap_err();
    assert!(err.to_string().contains("LinePlotConfig size") && err.to_string().contains("100x400"), "{err}");
    let bars = viz::BarChartConfig::new("t", "x", "y").size(800, 5000);
    let err = viz::bar_chart(&["a".to_string()], &[viz::Bars::counts("n", &[1])], &bars).unwrap_err();
    assert!(err.to_string().contains("BarChartConfig size") && err.to_string().contains("800x5000"), "{err}");
}

#[test]
fn tsne_of_two_clusters_draws_two_colours_in_two_regions() {
    let (x, labels) = two_clusters(150, 50);
    let cfg = TsneConfig::tiny().title("two clusters");
    let layout = viz::tsne_embed(&x, None, &cfg).unwrap();
    assert_eq!(layout.size(), [300, 2]);
    assert!(viz::knn_accuracy_2d(&layout, &labels, 10).unwrap() > 0.99);
    assert!(viz::trustworthiness(&x, &layout, 10).unwrap() > 0.85);
    let fig = viz::tsne(&x, &labels, &["cats".into(), "dogs".into()], &cfg).unwrap();
    let panel = 560; // the scatter panel; the legend lies to its right
    let (n0, x0, y0, s0) = colour_stats(fig.image(), categorical(0), panel);
    let (n1, x1, y1, s1) = colour_stats(fig.image(), categorical(1), panel);
    assert!(n0 > 300 && n1 > 300, "dots of each class: {n0}, {n1}");
    let gap = ((x0 - x1).powi(2) + (y0 - y1).powi(2)).sqrt();
    assert!(gap > 150.0 && gap > s0 + s1, "centroids {gap:.0} px apart, spreads {s0:.0} and {s1:.0}");
    // Two separate regions: every dot lies on its own class's side of the line halfway between
    // the centroids.
    let side = |x: f64, y: f64| (x - (x0 + x1) / 2.0) * (x1 - x0) + (y - (y0 + y1) / 2.0) * (y1 - y0);
    for y in 0..fig.height() {
        for x in 0..panel {
            let p = fig.image().pixel(x, y);
            if p == categorical(0) {
                assert!(side(x as f64, y as f64) < 0.0, "class-0 dot at ({x}, {y}) on class 1's side");
            } else if p == categorical(1) {
                assert!(side(x as f64, y as f64) > 0.0, "class-1 dot at ({x}, {y}) on class 0's side");
            }
        }
    }
    assert!(fig.svg().unwrap().contains("dogs"), "legend names the classes");
}

#[test]
fn tsne_pair_and_snapshots_render_side_by_side() {
    let (x, labels) = two_clusters(60, 16);
    let cfg = TsneConfig {
        perplexity: 10.0,
        iterations: 200,
        exaggeration_iterations: 50,
        log_every: 0,
        ..Default::default()
    };
    let pair = viz::tsne_pair((&x, &labels), (&x.narrow(0, 30, 90), &labels.narrow(0, 30, 90)), &[], &cfg).unwrap();
    assert_eq!(pair.width(), 2 * 480 + 160);
    let snaps = vec![
        ("step 0".to_string(), x.shallow_clone()),
        ("step 1".to_string(), &x * 2.0),
        ("step 2".to_string(), &x * 3.0),
    ];
    let grid = viz::tsne_snapshots(&snaps, &labels, &[], &cfg).unwrap();
    assert_eq!(grid.width(), 3 * 320 + 160);
    assert!(grid.svg().unwrap().contains("step 2"));

    // The same from labelled embeddings and fine-tuning snapshots, captioned by epoch.
    let names = vec!["cats".to_string(), "dogs".to_string()];
    let emb = |f: Tensor| selfsup::eval::Embeddings::new(f, Some(labels.shallow_clone()), names.clone()).unwrap();
    let pair = viz::tsne_embeddings(&emb(x.shallow_clone()), &emb(&x * 2.0), &cfg).unwrap();
    assert_eq!(pair.width(), 2 * 480 + 160);
    let snapshots: Vec<selfsup::eval::Snapshot> =
        (0..3).map(|e| selfsup::eval::Snapshot { epoch: e * 5, embeddings: emb(&x * (e + 1) as f64) }).collect();
    let grid = viz::tsne_fine_tuning(&snapshots, &cfg).unwrap();
    let svg = grid.svg().unwrap();
    assert!(svg.contains("before fine-tuning") && svg.contains("after 10 epochs"), "captions");
    let unlabelled = selfsup::eval::Embeddings::new(x.shallow_clone(), None, vec![]).unwrap();
    let err = viz::tsne_embeddings(&unlabelled, &emb(x.shallow_clone()), &cfg).unwrap_err();
    assert!(err.to_string().contains("no labels"), "{err}");
    assert!(viz::tsne_fine_tuning(&[], &cfg).is_err());
}

#[test]
fn trustworthiness_is_one_for_a_faithful_embedding_and_lower_when_shuffled() {
    tch::manual_seed(1);
    let low = Tensor::randn([200, 2], cpu());
    let high = Tensor::cat(&[low.shallow_clone(), Tensor::zeros([200, 8], cpu())], 1); // same distances
    let t = viz::trustworthiness(&high, &low, 5).unwrap();
    assert!((t - 1.0).abs() < 1e-9, "faithful: {t}");
    let shuffled = low.index_select(0, &Tensor::randperm(200, (Kind::Int64, Device::Cpu)));
    let t_bad = viz::trustworthiness(&high, &shuffled, 5).unwrap();
    assert!(t_bad < 0.7, "shuffled: {t_bad}");
    // kNN accuracy: perfect on separated clusters, chance on shuffled labels.
    let (x, labels) = two_clusters(100, 2);
    assert_eq!(viz::knn_accuracy_2d(&x, &labels, 5).unwrap(), 1.0);
    let random = labels.index_select(0, &Tensor::randperm(200, (Kind::Int64, Device::Cpu)));
    assert!(viz::knn_accuracy_2d(&x, &random, 5).unwrap() < 0.75);
}

#[test]
fn tsne_rejects_bad_inputs_with_clear_errors() {
    let cfg = TsneConfig::tiny();
    let x = Tensor::randn([200, 8], cpu());
    let _ = x.get(3).get(2).fill_(f64::NAN);
    let err = viz::tsne_embed(&x, None, &cfg).unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    let err = viz::tsne_embed(&Tensor::randn([50, 8], cpu()), None, &cfg).unwrap_err();
    assert!(err.to_string().contains("lower TsneConfig.perplexity"), "{err}");
    assert!(viz::tsne_embed(&Tensor::randn([0, 8], cpu()), None, &cfg).is_err());
    assert!(viz::tsne_embed(&Tensor::randn([200], cpu()), None, &cfg).is_err());
    let labels = Tensor::zeros([199], (Kind::Int64, Device::Cpu));
    let err = viz::tsne(&Tensor::randn([200, 8], cpu()), &labels, &[], &cfg).unwrap_err();
    assert!(err.to_string().contains("[200]"), "{err}");
    assert!(viz::trustworthiness(&Tensor::randn([20, 3], cpu()), &Tensor::randn([19, 2], cpu()), 3).is_err());
    assert!(TsneConfig { exaggeration_iterations: 2000, ..TsneConfig::default() }.validate().is_err());
    let bad = Tensor::randn([20, 2], cpu());
    let _ = bad.get(0).get(0).fill_(f64::INFINITY);
    assert!(viz::knn_accuracy_2d(&bad, &Tensor::zeros([20], (Kind::Int64, Device::Cpu)), 3).is_err());
}

#[test]
fn linfa_and_fft_backends_run_on_the_same_checks() {
    let (x, labels) = two_clusters(60, 10);
    let cfg = TsneConfig { perplexity: 10.0, iterations: 300, exaggeration_iterations: 100, ..TsneConfig::tiny() }
        .backend(viz::TsneBackend::Linfa);
    let layout = viz::tsne_embed(&x, None, &cfg).unwrap();
    assert!(viz::knn_accuracy_2d(&layout, &labels, 5).unwrap() > 0.95);
    let layout = viz::tsne_embed(&x, None, &cfg.backend(viz::TsneBackend::Fft)).unwrap();
    assert!(viz::knn_accuracy_2d(&layout, &labels, 5).unwrap() > 0.95, "FFT backend");
}

#[test]
fn activation_energy_is_bright_where_the_features_are() {
    // Features with all their energy in the top-left cell of a 4x4 map.
    let f = Tensor::zeros([1, 8, 4, 4], cpu());
    let _ = f.narrow(2, 0, 1).narrow(3, 0, 1).fill_(3.0);
    let e = viz::activation_energy(&f).unwrap();
    assert_eq!(e.size(), [1, 4, 4]);
    assert_eq!(e.double_value(&[0, 0, 0]), 1.0);
    assert_eq!(e.double_value(&[0, 3, 3]), 0.0);
    // The triptych: image | map | overlay; the map tile is magma's top in the corner, its bottom elsewhere.
    let images = Tensor::full([1, 3, 32, 32], 128, (Kind::Uint8, Device::Cpu));
    let fig = viz::heatmap_triptych(&images, &e, None, "map", "test").unwrap();
    // image_grid layout: 4-px padding, a 26-px title band, 32 px enlarged 5x to 160-px tiles.
    let (tile, pad, title) = (160u32, 4u32, 26u32);
    let map_x = pad + (tile + pad);
    let at = |x, y| fig.image().pixel(map_x + x, title + pad + y);
    assert_eq!(at(5, 5), [0xfc, 0xfd, 0xbf], "corner bright");
    assert_eq!(at(150, 150), [0x00, 0x00, 0x04], "elsewhere dark");
    // Overlay = 0.7 image + 0.7 heat, clipped: grey 128 -> 89 (+ 0.7*4 = 2 in blue) where the map is dark.
    let overlay_x = pad + 2 * (tile + pad);
    assert_eq!(fig.image().pixel(overlay_x + 150, title + pad + 150), [89, 89, 92]);
    assert_eq!(fig.image().pixel(overlay_x + 5, title + pad + 5), [255, 255, 223]);
    assert!(viz::activation_energy(&Tensor::zeros([8, 4, 4], cpu())).is_err());
}

#[test]
fn activation_map_of_a_resnet_follows_the_input_energy() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = models::ResNet::new(&vs.root(), &ResNetConfig::default().small_images(true)).unwrap();
    // A zero image with a bright patch in its top-left corner: zero input gives zero activations
    // (no biases, BN at its initial statistics), so the energy sits where the patch is.
    let x = Tensor::zeros([1, 3, 64, 64], cpu());
    let _ = x.narrow(2, 0, 12).narrow(3, 0, 12).fill_(2.0);
    let maps = viz::activation_maps(&net, &x, Stage::Layer4).unwrap();
    assert_eq!(maps.size(), [1, 8, 8]);
    let top_left = maps.narrow(1, 0, 4).narrow(2, 0, 4).sum(Kind::Float).double_value(&[]);
    let rest = maps.sum(Kind::Float).double_value(&[]) - top_left;
    assert!(top_left > 2.0 * rest, "top-left quadrant {top_left:.2} vs the rest {rest:.2}");
    let fig = viz::activation_map(&net, &x, Stage::Layer4, &Normalization::imagenet()).unwrap();
    assert_eq!(fig.width(), 3 * (192 + 4) + 4, "64-px images enlarged 3x");
    assert!(viz::activation_maps(&net, &x, Stage::AvgPool).is_err());
}

#[test]
fn grad_cam_is_non_negative_and_sums_to_the_class_logit() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = models::ResNet::new(&vs.root(), &ResNetConfig::default().small_images(true).num_classes(3)).unwrap();
    let x = Tensor::randn([2, 3, 32, 32], cpu());
    let maps = viz::grad_cam_maps(&net, &x, &GradCamConfig::class(1)).unwrap();
    assert_eq!(maps.size(), [2, 4, 4]);
    assert!(maps.min().double_value(&[]) >= 0.0);
    // With positive fc weights every term is positive (Layer4 follows a ReLU), so the ReLU is
    // inactive and the map sums over the positions to the logit minus its bias:
    // Σ_ij Σ_k (W_ck / hw) A_k(i, j) = W_c · avgpool(A).
    tch::no_grad(|| {
        let fc = vs.root() / "fc";
        let _ = fc.get("weight").unwrap().uniform_(0.1, 1.0);
    });
    let maps = viz::grad_cam_maps(&net, &x, &GradCamConfig::class(1)).unwrap();
    let logits = tch::no_grad(|| net.forward(&x, false)).unwrap();
    let bias = (vs.root() / "fc").get("bias").unwrap().double_value(&[1]);
    for b in 0..2 {
        let sum = maps.get(b).sum(Kind::Double).double_value(&[]);
        let logit = logits.double_value(&[b, 1]) - bias;
        assert!(
            (sum - logit).abs() < 1e-4 * logit.abs().max(1.0),
            "image {b}: map sums to {sum}, logit - bias = {logit}"
        );
    }
    // Earlier stages run the network's tail from there: shapes follow the stage.
    let maps3 = viz::grad_cam_maps(&net, &x, &GradCamConfig::default().stage(Stage::Layer3)).unwrap();
    assert_eq!(maps3.size(), [2, 8, 8]);
    assert!(maps3.min().double_value(&[]) >= 0.0);
    let fig = viz::grad_cam(&net, &x, &GradCamConfig::class(2), &Normalization::imagenet()).unwrap();
    assert_eq!(fig.height(), 26 + 2 * (160 + 18 + 4) + 4);
    // No classifier, or a class out of range: explained.
    let vs2 = nn::VarStore::new(Device::Cpu);
    let backbone = models::ResNet::new(&vs2.root(), &ResNetConfig::default().small_images(true)).unwrap();
    let err = viz::grad_cam_maps(&backbone, &x, &GradCamConfig::default()).unwrap_err();
    assert!(err.to_string().contains("num_classes"), "{err}");
    assert!(viz::grad_cam_maps(&net, &x, &GradCamConfig::class(3)).is_err());
}

#[test]
fn confusion_matrix_diagonal_is_darkest_for_a_diagonal_matrix() {
    let predictions = Tensor::from_slice(&[0i64, 1, 2, 2, 1, 0, 0]);
    let targets = Tensor::from_slice(&[0i64, 1, 2, 2, 1, 0, 1]);
    let counts = viz::confusion_counts(&predictions, &targets, 3).unwrap();
    assert_eq!(Vec::<i64>::try_from(counts.flatten(0, -1)).unwrap(), vec![2, 0, 0, 1, 2, 0, 0, 0, 2]);
    let diagonal = Tensor::eye(3, (Kind::Int64, Device::Cpu)) * 10;
    let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let fig = viz::confusion_matrix(&diagonal, &names, &viz::ConfusionConfig::default()).unwrap();
    // Layout: 72-px cells from x = 30 + 7·1 + 8 = 45, y = 36; sample a corner of each cell (no text).
    let luma = |p: [u8; 3]| p.iter().map(|&v| v as u32).sum::<u32>();
    let cell = |i: u32, j: u32| luma(fig.image().pixel(45 + j * 72 + 4, 36 + i * 72 + 4));
    for i in 0..3 {
        for j in 0..3 {
            if i != j {
                assert!(cell(i, i) + 300 < cell(i, j), "diagonal ({i},{i}) darker than ({i},{j})");
            }
        }
    }
    assert!(
        viz::confusion_matrix(&Tensor::zeros([2, 3], (Kind::Int64, Device::Cpu)), &[], &Default::default()).is_err()
    );
    assert!(viz::confusion_counts(&Tensor::from_slice(&[0i64, 5]), &Tensor::from_slice(&[0i64, 1]), 3).is_err());
}

#[test]
fn loss_landscape_is_dark_at_the_minimum() {
    let xs: Vec<f64> = (-10..=10).map(|i| i as f64 / 10.0).collect();
    let grid: Vec<Vec<f64>> = xs.iter().map(|y| xs.iter().map(|x| 0.1 + x * x + y * y).collect()).collect();
    let fig = viz::loss_landscape_2d(&xs, &xs, &grid, &viz::LandscapeConfig::default()).unwrap();
    let luma = |p: [u8; 3]| p.iter().map(|&v| v as u32).sum::<u32>();
    // Plot area ≈ x 72..598, y 42..556: near (0, 0) (beside the cross) dark, at a corner bright.
    let centre = luma(fig.image().pixel(335 + 25, 299 + 25));
    let corner = luma(fig.image().pixel(85, 60));
    assert!(centre + 200 < corner, "centre {centre} vs corner {corner}");
    let curve = [Series::new("SimCLR", xs.clone(), xs.iter().map(|a| 1.0 + a * a).collect())];
    assert!(viz::loss_landscape_1d(&curve, "1-D").is_ok());
    let err = viz::loss_landscape_2d(&xs, &xs, &grid[..3], &Default::default()).unwrap_err();
    assert!(err.to_string().contains("expected 21 rows"), "{err}");
}

#[test]
fn z_std_plot_shows_loss_std_and_the_healthy_level() {
    use selfsup::train::{History, Record, StepRecord};
    let mut h = History::new();
    assert!(h.plot_z_std("empty", 64).is_err());
    for s in 0..40usize {
        h.push(Record::Step(StepRecord {
            step: s,
            epoch: 0,
            loss: 4.0 - 0.05 * s as f64,
            lr: 0.1,
            z_std: Some(0.125 - 0.001 * s as f64),
            images_per_sec: 1.0,
            metrics: Default::default(),
        }));
    }
    let fig = h.plot_z_std("BYOL", 64).unwrap();
    for i in 0..3 {
        let (count, ..) = colour_stats(fig.image(), categorical(i), 800);
        assert!(count > 50, "series {i} (loss, std, healthy 1/√d): {count} pixels");
    }
    let mut no_z = History::new();
    no_z.push(Record::Step(StepRecord { z_std: None, ..h.steps[0].clone() }));
    let err = no_z.plot_z_std("SimCLR", 64).unwrap_err();
    assert!(err.to_string().contains("no std(z)"), "{err}");
}

/// The label histogram of the Barlow Twins post: one bar per class in the group's palette
/// colour, as tall as its count (the bar of 8 twice the height of the bar of 4), groups side
/// by side, and bad values explained.
#[test]
fn bar_chart_draws_bars_as_tall_as_their_values() {
    let classes: Vec<String> = ["disc", "ring", "square", "star"].iter().map(|s| s.to_string()).collect();
    let cfg = viz::BarChartConfig::new("Labels in the 1 % subset", "class", "images");
    let fig = viz::bar_chart(&classes, &[viz::Bars::counts("1 %", &[4, 8, 0, 2])], &cfg).unwrap();
    assert_eq!((fig.width(), fig.height()), (800, 400));
    let colour = categorical(0);
    // Height of the bar in each column of pixels: the rows of the bar's colour.
    let column_height = |x: u32| (0..fig.height()).filter(|&y| fig.image().pixel(x, y) == colour).count();
    let columns: Vec<usize> = (0..fig.width()).map(column_height).collect();
    let tallest = *columns.iter().max().unwrap();
    assert!(tallest > 150, "the bar of 8 fills most of the plot's height: {tallest} px");
    // Bars as runs of columns with the colour, left to right: disc, ring, star (square is 0).
    let mut bars: Vec<usize> = Vec::new();
    let mut in_bar = false;
    for &h in &columns {
        if h > 0 && !in_bar {
            bars.push(h);
        } else if h > 0 {
            let last = bars.last_mut().unwrap();
            *last = (*last).max(h);
        }
        in_bar = h > 0;
    }
    assert_eq!(bars.len(), 3, "three non-empty bars: {bars:?}");
    let ratio = bars[1] as f64 / bars[0] as f64;
    assert!((ratio - 2.0).abs() < 0.05, "8 vs 4: heights {bars:?}");
    assert!((bars[0] as f64 / bars[2] as f64 - 2.0).abs() < 0.1, "4 vs 2: heights {bars:?}");
    let svg = fig.svg().unwrap();
    let texts: Vec<&str> = svg.lines().map(str::trim).collect();
    assert!(texts.contains(&"square") && texts.contains(&"8"), "class names and counts in the SVG");
    let ticks_of = |svg: &str| -> Vec<String> {
        svg.lines().map(str::trim).filter(|t| !t.starts_with('<') && t.parse::<f64>().is_ok()).map(String::from).collect()
    };
    assert!(ticks_of(svg).iter().all(|t| !t.contains('.')), "counts have whole-number ticks: {:?}", ticks_of(svg));
    // One image per class (a 1 % subset of a small set): ticks 0 and 1, nothing in between.
    let ones = viz::bar_chart(&classes, &[viz::Bars::counts("1 %", &[1, 1, 1, 1])], &cfg).unwrap();
    let ticks = ticks_of(ones.svg().unwrap());
    assert!(ticks.iter().all(|t| t == "0" || t == "1"), "ticks {ticks:?}");
    // Two groups: both colours, with a legend.
    let two = [viz::Bars::counts("1 %", &[4, 8, 0, 2]), viz::Bars::new("10 %", vec![40.0, 80.0, 5.0, 20.0])];
    let fig = viz::bar_chart(&classes, &two, &cfg).unwrap();
    for i in 0..2 {
        let (count, ..) = colour_stats(fig.image(), categorical(i), 800);
        assert!(count > 300, "group {i}: {count} pixels of its colour");
    }
    assert!(fig.svg().unwrap().contains("10 %"), "legend entry");
    // Bad input is explained.
    let err = viz::bar_chart(&classes, &[viz::Bars::counts("1 %", &[1, 2])], &cfg).unwrap_err();
    assert!(err.to_string().contains("2 values for 4 categories"), "{err}");
    let err = viz::bar_chart(&classes, &[viz::Bars::new("acc", vec![0.1, f64::NAN, 0.2, 0.3])], &cfg).unwrap_err();
    assert!(err.to_string().contains("'ring'"), "{err}");
    assert!(viz::bar_chart(&[], &[], &cfg).is_err());
    assert!(viz::bar_chart(&classes, &[viz::Bars::counts("1 %", &[1, 2, 3, 4])], &cfg.clone().size(10, 10)).is_err());
}

#[test]
fn tsne_saved_in_keeps_each_layout_and_computes_a_new_one_for_new_inputs() {
    let (x, _) = two_clusters(40, 8);
    let dir = std::env::temp_dir().join(format!("selfsup-tsne-saved-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = TsneConfig { perplexity: 5.0, iterations: 120, exaggeration_iterations: 40, log_every: 0, ..Default::default() };
    let kept = cfg.clone().saved_in(&dir);
    let files = || std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let first = viz::tsne_embed(&x, None, &kept).unwrap();
    assert_eq!(first.size(), [80, 2]);
    assert_eq!(files(), 1, "one file per layout");
    // The same features and settings (another title): the kept layout, bit for bit, nothing new written.
    let again = viz::tsne_embed(&x, None, &kept.clone().title("another title")).unwrap();
    assert!(again.equal(&first));
    assert_eq!(files(), 1);
    // A file changed on disk is what comes back: proof that it was loaded, not recomputed.
    let path = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut kept_json: serde_json::Value = serde_json::from_str(&text).unwrap();
    kept_json["value"][0] = serde_json::json!(1234.5);
    std::fs::write(&path, kept_json.to_string()).unwrap();
    assert_eq!(viz::tsne_embed(&x, None, &kept).unwrap().double_value(&[0, 0]), 1234.5);
    // Other features, another starting layout or other settings: computed and kept beside it.
    let other = viz::tsne_embed(&(&x * 2.0), None, &kept).unwrap();
    assert!(!other.equal(&first));
    let _ = viz::tsne_embed(&x, Some(&first), &kept).unwrap();
    let _ = viz::tsne_embed(&x, None, &kept.clone().perplexity(6.0)).unwrap();
    assert_eq!(files(), 4);
    // Without a folder nothing is written.
    let _ = viz::tsne_embed(&x, None, &cfg).unwrap();
    assert_eq!(files(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}
