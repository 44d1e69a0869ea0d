//! The embedding explorer (viz::explorer): the fragment itself (self-contained, one point per
//! input, thumbnails ≤ 48 px and capped, input checks), then the widget running in Debian's
//! headless Chromium: hover shows the right class and thumbnail, wheel zoom keeps the point
//! under the cursor, drag pans, a legend click hides a class, no script errors, two explorers
//! on one page, and a screenshot that shows the palette's colours.
mod common;
use base64::Engine;
use selfsup::prelude::*;
use selfsup::viz::explorer::Projection;
use selfsup::viz::palette::categorical;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

fn names() -> Vec<String> {
    // The third name would close a <script> element if it were not escaped.
    vec!["cat".into(), "dog".into(), "ship </script><b>".into()]
}

/// `n` points in three Gaussian clusters (label i % 3), except point 0: label 1 ("dog"),
/// alone far from the clusters, so a hover on it can only find it.
fn clusters(n: i64) -> (Tensor, Tensor) {
    tch::manual_seed(0);
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3); // [N]
    let _ = labels.get(0).fill_(1);
    let centres = Tensor::from_slice(&[0.0f32, 0.0, 6.0, 0.0, 3.0, 5.0]).view([3, 2]); // [3, 2]
    let points = centres.index_select(0, &labels) + Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * 0.8; // [N, 2]
    points.get(0).copy_(&Tensor::from_slice(&[12.0f32, 11.0]));
    (points, labels)
}

/// `[N, 3, size, size]` u8 images, a flat grey per class plus a gradient.
fn images(labels: &Tensor, size: i64) -> Tensor {
    let n = labels.size()[0];
    let base = (labels.to_kind(Kind::Float) * 60.0 + 40.0).view([n, 1, 1, 1]); // [N, 1, 1, 1]
    let ramp = Tensor::arange(size, (Kind::Float, Device::Cpu)).view([1, 1, 1, size]) * (100.0 / size as f64); // [1, 1, 1, S]
    (base + ramp).expand([n, 3, size, size], false).to_kind(Kind::Uint8) // [N, 3, S, S]
}

/// The JSON data block of a fragment.
fn data_of(html: &str) -> serde_json::Value {
    let start = html.find("<script type=\"application/json\" class=\"sx-data\">").expect("data block") + 48;
    let end = start + html[start..].find("</script>").expect("end of data block");
    serde_json::from_str(&html[start..end]).expect("data block is JSON")
}

#[test]
fn fragment_is_self_contained_with_one_point_per_input() -> anyhow::Result<()> {
    let (points, labels) = clusters(300);
    let thumbs = images(&labels, 96);
    let cfg = ExplorerConfig::default();
    let html = viz::explorer(&points, &labels, &names(), Some(&thumbs), &cfg)?;
    let s = html.as_str();
    for bad in ["src=\"http", "<link", "http://", "https://", "@import", "url(", "<iframe"] {
        assert!(!s.contains(bad), "fragment must be self-contained, found {bad:?}");
    }
    assert_eq!(s.matches("<canvas").count(), 1);
    assert_eq!(s.matches("<script").count(), 2, "one data block and one script");
    assert_eq!(s.matches("</script>").count(), 2, "a class name must not close a script element");
    assert_eq!(s.matches("<div").count(), s.matches("</div>").count(), "balanced <div>s");
    assert!(s.contains("ship &lt;/script&gt;&lt;b&gt;"), "class names are escaped in the legend");
    assert!(s.contains("data-points=\"300\""));

    let d = data_of(s);
    for key in ["x", "y", "c"] {
        assert_eq!(d[key].as_array().unwrap().len(), 300, "one {key} per point");
    }
    assert_eq!(d["names"][2], "ship </script><b>");
    let c: Vec<i64> = d["c"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(c, Vec::<i64>::try_from(&labels)?);
    // Same scale on both axes: the wider axis spans 0..=10000.
    let max_x = d["x"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).max().unwrap();
    let max_y = d["y"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).max().unwrap();
    assert_eq!(max_x.max(max_y), 10_000);
    // All 300 thumbnails (under the cap of 500), downscaled 96 -> 48 px PNGs.
    let t = d["thumbs"].as_object().unwrap();
    assert_eq!(t.len(), 300);
    let png = base64::engine::general_purpose::STANDARD.decode(t["7"].as_str().unwrap())?;
    let img = image::load_from_memory(&png)?;
    assert_eq!((img.width(), img.height()), (48, 48));
    assert!(!s.contains("Thumbnails for"), "no cap note when every point has a thumbnail");

    // A second explorer gets another element id.
    let again = viz::explorer(&points, &labels, &names(), None, &cfg)?;
    let id = |h: &str| h.split("id=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert_ne!(id(s), id(again.as_str()));
    assert!(again.as_str().contains(&format!("\"{}\"", id(again.as_str()))), "the script looks up its own id");
    assert_eq!(data_of(again.as_str())["thumbs"].as_object().unwrap().len(), 0);
    Ok(())
}

#[test]
fn thumbnails_are_capped_with_a_note() -> anyhow::Result<()> {
    let (points, labels) = clusters(1000);
    let thumbs = images(&labels, 20);
    let cfg = ExplorerConfig::default().max_thumbnails(100);
    let html = viz::explorer(&points, &labels, &names(), Some(&thumbs), &cfg)?;
    let t = data_of(html.as_str())["thumbs"].as_object().unwrap().clone();
    assert_eq!(t.len(), 100);
    assert!(t.contains_key("0") && t.contains_key("990"), "evenly spread over the points");
    assert!(html.as_str().contains("Thumbnails for 100 of 1000 points"));
    // Small images are not enlarged.
    let png = base64::engine::general_purpose::STANDARD.decode(t["0"].as_str().unwrap())?;
    assert_eq!(image::load_from_memory(&png)?.width(), 20);
    Ok(())
}

#[test]
fn bad_inputs_are_refused_with_clear_errors() {
    let (points, labels) = clusters(50);
    let cfg = ExplorerConfig::default();
    let n = names();
    let err = |r: selfsup::Result<Html>| r.expect_err("should be refused").to_string();
    let e = err(viz::explorer(&Tensor::zeros([50, 3], (Kind::Float, Device::Cpu)), &labels, &n, None, &cfg));
    assert!(e.contains("[N, 2]"), "{e}");
    let nan = points.copy();
    let _ = nan.get(7).get(1).fill_(f64::NAN);
    let e = err(viz::explorer(&nan, &labels, &n, None, &cfg));
    assert!(e.contains("point 7") && e.contains("NaN"), "{e}");
    let e = err(viz::explorer(&points, &(&labels + 1), &n, None, &cfg));
    assert!(e.contains("outside 0..3"), "{e}");
    let e = err(viz::explorer(&points, &labels.narrow(0, 0, 49), &n, None, &cfg));
    assert!(e.contains("[50]"), "{e}");
    let e = err(viz::explorer(&points, &labels.to_kind(Kind::Float), &n, None, &cfg));
    assert!(e.contains("integer"), "{e}");
    let e = err(viz::explorer(&points, &labels, &n, Some(&images(&labels.narrow(0, 0, 40), 8)), &cfg));
    assert!(e.contains("thumbnails"), "{e}");
    let e = err(viz::explorer(&points, &labels, &n, Some(&images(&labels, 8).to_kind(Kind::Float)), &cfg));
    assert!(e.contains("u8"), "{e}");
    let big = ExplorerConfig { thumbnail_size: 64, ..ExplorerConfig::default() };
    let e = err(viz::explorer(&points, &labels, &n, None, &big));
    assert!(e.contains("thumbnail_size"), "{e}");
}

#[test]
fn embeddings_explorer_projects_with_pca_or_tsne() -> anyhow::Result<()> {
    tch::manual_seed(1);
    let labels = Tensor::arange(120, (Kind::Int64, Device::Cpu)).remainder(2); // [120]
    let features =
        Tensor::randn([120, 16], (Kind::Float, Device::Cpu)) + labels.to_kind(Kind::Float).unsqueeze(1) * 4.0; // [120, 16]
    let mut emb = Embeddings::new(features, Some(labels.shallow_clone()), vec!["a".into(), "b".into()])?;
    emb.images = Some(images(&labels, 32));
    let pca_cfg = ExplorerConfig::default().projection(Projection::Pca);
    let html = viz::embedding_explorer(&emb, &pca_cfg)?;
    let d = data_of(html.as_str());
    assert_eq!(d["x"].as_array().unwrap().len(), 120);
    assert_eq!(d["thumbs"].as_object().unwrap().len(), 120);
    let tsne_cfg =
        ExplorerConfig::default().projection(Projection::Tsne(TsneConfig::tiny().perplexity(10.0).iterations(250)));
    let html = viz::embedding_explorer(&emb, &tsne_cfg)?;
    assert_eq!(data_of(html.as_str())["c"].as_array().unwrap().len(), 120);
    // Without labels: one "unlabelled" class.
    let unlabelled = Embeddings::new(emb.features.shallow_clone(), None, vec![])?;
    let html = viz::embedding_explorer(&unlabelled, &pca_cfg)?;
    assert_eq!(data_of(html.as_str())["names"][0], "unlabelled");
    Ok(())
}

// ------------------------------------------------------------------ headless Chromium

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("explorer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs Debian's Chromium headless (the flags that work on a closed network, a fresh profile)
/// with `args`; stdout goes to a file (a dumped DOM can outgrow a pipe). Fails after 30 s.
fn have_chromium(test: &str) -> bool {
    common::tool_present(test, Path::new(CHROMIUM).exists(), "no headless Chromium at /usr/bin/chromium (Debian: apt-get install chromium)")
}

fn chromium(dir: &Path, args: &[String], virtual_time: bool) -> String {
    let profile = dir.join("profile");
    std::fs::create_dir_all(&profile).unwrap();
    let stdout = dir.join("stdout.txt");
    let stderr = dir.join("stderr.txt");
    let start = Instant::now();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1000,700",
        ])
        // Virtual time lets timers and animation frames run before the dump or screenshot, but it
        // also freezes performance.now(), so the timing run goes without it.
        .args(virtual_time.then_some("--virtual-time-budget=2000"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("could not start /usr/bin/chromium");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "chromium failed ({status}): {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish in 30 s: {}", std::fs::read_to_string(&stderr).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("chromium {:?}: {:.1} s", args.last(), start.elapsed().as_secs_f64());
    std::fs::read_to_string(&stdout).unwrap()
}

const ERROR_HOOKS: &str = r#"<script>
window.__errs = [];
window.addEventListener("error", function (e) { window.__errs.push("error: " + e.message); });
window.addEventListener("unhandledrejection", function (e) { window.__errs.push("rejection: " + e.reason); });
(function () { var ce = console.error; console.error = function () { window.__errs.push("console.error: " + Array.prototype.join.call(arguments, " ")); ce.apply(console, arguments); }; })();
</script>"#;

/// After load: hovers point 0 (class 1, "dog"), zooms at it, drags, hides and re-shows class 1
/// from the legend, and writes what it saw (plus any error) as JSON into `<pre id="result">`.
const HARNESS: &str = r#"<pre id="result">pending</pre>
<script>
window.addEventListener("load", function () { setTimeout(run, 200); });
function run() {
  var out = { errors: window.__errs };
  try {
    var roots = document.querySelectorAll(".selfsup-explorer");
    out.explorers = roots.length;
    out.ids = Array.prototype.map.call(roots, function (r) { return r.id; });
    out.second = roots[1] && roots[1].selfsupExplorer ? roots[1].selfsupExplorer.points : null;
    var root = roots[0], api = root.selfsupExplorer, cv = root.querySelector("canvas");
    out.points = api.points;
    out.nojs = root.querySelector(".sx-nojs").style.display;
    function hover(i) {
      var p = api.clientPos(i);
      cv.dispatchEvent(new MouseEvent("mousemove", { clientX: p[0], clientY: p[1], bubbles: true }));
      var tip = root.querySelector(".sx-tip");
      return { shown: tip.style.display !== "none", name: root.querySelector(".sx-name").textContent,
               index: root.querySelector(".sx-index").textContent,
               img: (tip.querySelector("img").getAttribute("src") || "").slice(0, 22),
               otherTip: roots[1] ? roots[1].querySelector(".sx-tip").style.display : "" };
    }
    out.hover = hover(0);
    var a = api.clientPos(0);
    cv.dispatchEvent(new WheelEvent("wheel", { clientX: a[0], clientY: a[1], deltaY: -300, bubbles: true, cancelable: true }));
    var b = api.clientPos(0);
    out.zoom = api.view().k;
    out.zoomDrift = Math.abs(b[0] - a[0]) + Math.abs(b[1] - a[1]);
    out.hoverZoomed = hover(0);
    cv.dispatchEvent(new MouseEvent("mousedown", { clientX: b[0], clientY: b[1], button: 0, bubbles: true }));
    window.dispatchEvent(new MouseEvent("mousemove", { clientX: b[0] + 40, clientY: b[1] + 25 }));
    window.dispatchEvent(new MouseEvent("mouseup", {}));
    var c = api.clientPos(0);
    out.pan = [c[0] - b[0], c[1] - b[1]];
    out.hoverPanned = hover(0);
    var entry = root.querySelector('.sx-legend [data-class="1"]');
    entry.click();
    out.hidden = api.hidden();
    out.hoverHidden = hover(0);
    entry.click();
    out.hoverShown = hover(0);
  } catch (e) { out.errors.push("harness: " + e + " " + e.stack); }
  document.getElementById("result").textContent = JSON.stringify(out);
}
</script>"#;

/// Redraws the first explorer 20 times and writes the mean time (ms) into `<pre id="timing">`.
const TIMING: &str = r#"<pre id="timing">pending</pre>
<script>
(function () {
  var api = document.querySelector(".selfsup-explorer").selfsupExplorer, t0 = performance.now();
  for (var i = 0; i < 20; i++) api.draw();
  document.getElementById("timing").textContent = window.__errs.length ? "NaN" : String((performance.now() - t0) / 20);
})();
</script>"#;

fn page(body: &str) -> String {
    format!("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>explorer test</title></head><body style=\"margin:10px;background:#fff\">\n{body}\n</body></html>\n")
}

#[test]
fn hover_zoom_pan_and_legend_work_in_headless_chromium() -> anyhow::Result<()> {
    if !have_chromium("hover_zoom_pan_and_legend_work_in_headless_chromium") {
        return Ok(());
    }
    let (points, labels) = clusters(10_000);
    let thumbs = images(&labels, 32);
    let big = viz::explorer(&points, &labels, &names(), Some(&thumbs), &ExplorerConfig::default())?;
    let (p2, l2) = clusters(50);
    let small = viz::explorer(&p2, &l2, &names(), None, &ExplorerConfig::default().title("second"))?;
    let dir = scratch("dom");
    let file = dir.join("page.html");
    std::fs::write(&file, page(&format!("{ERROR_HOOKS}\n{}\n{}\n{HARNESS}", big.as_str(), small.as_str())))?;
    let dom = chromium(&dir, &["--dump-dom".into(), format!("file://{}", file.display())], true);
    let start = dom.find("<pre id=\"result\">").expect("result element in the dumped DOM") + 17;
    let end = start + dom[start..].find("</pre>").unwrap();
    let text = dom[start..end].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
    assert_ne!(text, "pending", "the harness did not run");
    let r: serde_json::Value = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{e}: {text}"))?;
    eprintln!("{r:#}");

    assert_eq!(r["errors"], serde_json::json!([]), "script errors in the page");
    assert_eq!(r["explorers"], 2);
    assert_ne!(r["ids"][0], r["ids"][1]);
    assert_eq!(r["second"], 50, "the second explorer started on its own data");
    assert_eq!(r["points"], 10_000);
    assert_eq!(r["nojs"], "none", "the no-JavaScript note is hidden once the script runs");
    for key in ["hover", "hoverZoomed", "hoverPanned", "hoverShown"] {
        assert_eq!(r[key]["shown"], true, "{key}: tooltip shown");
        assert_eq!(r[key]["name"], "dog", "{key}: class name of point 0");
        assert_eq!(r[key]["index"], "#0", "{key}");
        assert_eq!(r[key]["img"], "data:image/png;base64,", "{key}: thumbnail");
        assert_eq!(r[key]["otherTip"], "none", "{key}: the other explorer's tooltip stays hidden");
    }
    assert!(r["zoom"].as_f64().unwrap() > 1.2, "wheel up zooms in: {}", r["zoom"]);
    assert!(r["zoomDrift"].as_f64().unwrap() < 0.5, "the point under the cursor stays put");
    let pan: Vec<f64> = r["pan"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!((pan[0] - 40.0).abs() < 0.5 && (pan[1] - 25.0).abs() < 0.5, "drag pans by the mouse's move: {pan:?}");
    assert_eq!(r["hidden"], serde_json::json!([0, 1, 0]));
    assert_eq!(r["hoverHidden"]["shown"], false, "a hidden class is not hovered");

    // Smooth with 10,000 points: a full redraw, timed in real time (no virtual time here).
    let timing = dir.join("timing.html");
    std::fs::write(&timing, page(&format!("{ERROR_HOOKS}\n{}\n{TIMING}", big.as_str())))?;
    let dom = chromium(&dir, &["--dump-dom".into(), format!("file://{}", timing.display())], false);
    let start = dom.find("<pre id=\"timing\">").expect("timing element in the dumped DOM") + 17;
    let ms: f64 = dom[start..start + dom[start..].find("</pre>").unwrap()].trim().parse()?;
    eprintln!("one redraw of 10,000 points: {ms:.1} ms");
    assert!(ms > 0.0 && ms < 100.0, "10,000 points must redraw in well under 100 ms, took {ms:.1} ms");
    std::fs::remove_dir_all(&dir).ok(); // kept for a look when the test fails
    Ok(())
}

#[test]
fn screenshot_in_headless_chromium_shows_the_classes() -> anyhow::Result<()> {
    if !have_chromium("screenshot_in_headless_chromium_shows_the_classes") {
        return Ok(());
    }
    let (points, labels) = clusters(3000);
    let html = viz::explorer(&points, &labels, &names(), None, &ExplorerConfig::default())?;
    let dir = scratch("shot");
    let file = dir.join("page.html");
    let png = dir.join("shot.png");
    std::fs::write(&file, page(html.as_str()))?;
    chromium(&dir, &[format!("--screenshot={}", png.display()), format!("file://{}", file.display())], true);
    let img = image::open(&png)?.to_rgb8();
    let near = |p: &image::Rgb<u8>, c: [f64; 3]| (0..3).all(|k| (p[k] as f64 - c[k]).abs() <= 30.0);
    let non_white = img.pixels().filter(|p| p.0.iter().any(|&v| v < 235)).count();
    assert!(non_white > 5_000, "screenshot looks blank: {non_white} non-white pixels");
    for class in 0..3 {
        let c = categorical(class).map(|v| v as f64);
        let blended = c.map(|v| 0.8 * v + 0.2 * 255.0); // opacity 0.8 on white
        let count = img.pixels().filter(|p| near(p, c) || near(p, blended)).count();
        assert!(count > 500, "class {class} colour {c:?}: only {count} pixels in the screenshot");
    }
    std::fs::remove_dir_all(&dir).ok(); // kept for a look when the test fails
    Ok(())
}
