//! Embedding explorer (S1.5, B4): an interactive 2-D scatter of embeddings, inline in the
//! notebook — hover a point to see its image and class, wheel to zoom, drag to pan,
//! double-click to reset, click a legend entry to hide or show that class.
//!
//! # How it works
//! [`explorer`] returns an [`Html`] fragment that carries everything it needs: a `<canvas>`
//! (one path per class, so 10,000 points redraw in a few milliseconds where 10,000 SVG nodes
//! would stutter), about 150 lines of vanilla JavaScript, and the data as JSON inside a
//! `<script type="application/json">` (coordinates normalised to `0..=10000` integers, class
//! indices, names, colours from [`super::palette::categorical`], thumbnails as base64 PNGs
//! downscaled to at most 48 px). No external script, stylesheet, font or URL: it works offline
//! and survives in the saved `.ipynb`. Every call gets a random element id, so several
//! explorers in one notebook do not interfere (statics reset on every evcxr cell, so a counter
//! would not do).
//!
//! # In a notebook
//! In a live session the cell's HTML runs its script at once (JupyterLab, classic Notebook,
//! VS Code). A *saved* notebook opened later is untrusted: Jupyter strips the script and the
//! widget shows a short note instead of the plot. Use **File → Trust Notebook** (classic:
//! *Not Trusted* → *Trust*; JupyterLab: command palette → "Trust Notebook", or
//! `jupyter trust notebook.ipynb`), or just re-run the cell.
//!
//! # Size
//! Each thumbnail costs roughly 4–9 KB of notebook (48 px PNG, base64), so only
//! [`ExplorerConfig::max_thumbnails`] points (500 by default, evenly spread over the input)
//! carry one; the widget says so under the plot. Points without a thumbnail still show their
//! class and index.
//!
//! # Example
//! ```no_run
//! use selfsup::prelude::*;
//! # fn demo(emb: &Embeddings) -> Result<()> {
//! let html = viz::embedding_explorer(emb, &viz::ExplorerConfig::default())?; // t-SNE, then the widget
//! html.save("explorer.html")?;
//! # Ok(()) }
//! ```
use super::display::{escape_html, Html, Image};
use super::palette::categorical;
use super::tsne::{pca, tsne_embed, TsneConfig};
use crate::error::{Error, Result};
use crate::eval::Embeddings;
use base64::Engine;
use tch::{Device, Kind, Tensor};

/// How [`embedding_explorer`] projects `[N, D]` features to 2-D.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    /// t-SNE ([`tsne_embed`]): neighbourhoods are kept, so clusters of a good encoder show as
    /// islands (what S1.5 looks at). Seconds to a minute for 10,000 points. Default.
    Tsne(TsneConfig),
    /// The first two principal components ([`pca`]): instant and linear (distances mean
    /// something globally), but classes of a 512-D encoder mostly overlap in 2 components.
    Pca,
}

/// Parameters of [`explorer`].
#[derive(Debug, Clone, PartialEq)]
pub struct ExplorerConfig {
    /// Title above the plot.
    pub title: String,
    /// Plot width in CSS pixels: 640.
    pub width: u32,
    /// Plot height in CSS pixels: 480.
    pub height: u32,
    /// Point radius in CSS pixels: 3.
    pub point_radius: f64,
    /// Point opacity in `(0, 1]`: 0.8 (overlaps stay visible).
    pub opacity: f64,
    /// Longest side of a thumbnail in pixels, at most 48: 48 (larger images are downscaled
    /// by area averaging; smaller ones are kept as they are).
    pub thumbnail_size: u32,
    /// At most this many points carry a thumbnail: 500 (~2–4 MB of notebook); 0 for none.
    pub max_thumbnails: usize,
    /// Projection used by [`embedding_explorer`] (not by [`explorer`], which takes 2-D points).
    pub projection: Projection,
}

impl Default for ExplorerConfig {
    fn default() -> Self {
        ExplorerConfig {
            title: "Embedding explorer".into(),
            width: 640,
            height: 480,
            point_radius: 3.0,
            opacity: 0.8,
            thumbnail_size: 48,
            max_thumbnails: 500,
            projection: Projection::Tsne(TsneConfig::default()),
        }
    }
}

impl ExplorerConfig {
    /// The same config with another title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }
    /// The same config with another projection.
    pub fn projection(mut self, projection: Projection) -> Self {
        self.projection = projection;
        self
    }
    /// The same config with another thumbnail cap.
    pub fn max_thumbnails(mut self, max_thumbnails: usize) -> Self {
        self.max_thumbnails = max_thumbnails;
        self
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(120..=4000).contains(&self.width) || !(120..=4000).contains(&self.height) {
            return Err(Error::Config(format!(
                "ExplorerConfig: width and height must lie in 120..=4000 CSS pixels, got {}x{}",
                self.width, self.height
            )));
        }
        if !(self.point_radius.is_finite() && self.point_radius > 0.0 && self.point_radius <= 20.0) {
            return Err(Error::Config(format!(
                "ExplorerConfig.point_radius must lie in (0, 20], got {}",
                self.point_radius
            )));
        }
        if !(self.opacity.is_finite() && self.opacity > 0.0 && self.opacity <= 1.0) {
            return Err(Error::Config(format!("ExplorerConfig.opacity must lie in (0, 1], got {}", self.opacity)));
        }
        if !(4..=48).contains(&self.thumbnail_size) {
            return Err(Error::Config(format!(
                "ExplorerConfig.thumbnail_size must lie in 4..=48 pixels, got {}",
                self.thumbnail_size
            )));
        }
        if let Projection::Tsne(t) = &self.projection {
            t.validate()?;
        }
        Ok(())
    }
}

/// Quantisation of the normalised coordinates sent to the page (`0..=Q` integers).
const Q: f64 = 10_000.0;

/// The interactive explorer of 2-D `points` `[N, 2]` coloured by `labels` `[N]` (integers in
/// `0..class_names.len()`), with optional `thumbnails` `[N, 3, H, W]` (or `[N, 1, H, W]`) u8
/// shown on hover. The points keep their aspect ratio (one scale for both axes).
///
/// # Errors
/// [`Error::Shape`] for points not `[N, 2]` with N >= 1, labels not `[N]`, thumbnails not
/// `[N, 1|3, H, W]`; [`Error::Data`] for NaN or infinite points, non-integer labels or labels
/// outside `0..class_names.len()`, non-u8 thumbnails; [`Error::Config`] for an invalid config.
pub fn explorer(
    points: &Tensor,
    labels: &Tensor,
    class_names: &[String],
    thumbnails: Option<&Tensor>,
    cfg: &ExplorerConfig,
) -> Result<Html> {
    cfg.validate()?;
    // ---- checks
    let size = points.size();
    if size.len() != 2 || size[1] != 2 || size[0] < 1 {
        return Err(Error::shape("explorer points", "[N, 2] with N >= 1 (a 2-D projection)", &size));
    }
    let n = size[0];
    if !points.is_floating_point() {
        return Err(Error::Data(format!("explorer points: expected floating-point values, got {:?}", points.kind())));
    }
    let xy = Vec::<f64>::try_from(points.to_device(Device::Cpu).to_kind(Kind::Double).contiguous().view([-1]))?; // [2N]
    if let Some(bad) = xy.iter().position(|v| !v.is_finite()) {
        return Err(Error::Data(format!(
            "explorer points: point {} has a NaN or infinite coordinate; expected finite values (a diverged run?)",
            bad / 2
        )));
    }
    if labels.size() != [n] {
        return Err(Error::shape("explorer labels", format!("[{n}] (one label per point)"), &labels.size()));
    }
    if labels.is_floating_point() {
        return Err(Error::Data(format!("explorer labels: expected integer class indices, got {:?}", labels.kind())));
    }
    let labels = Vec::<i64>::try_from(labels.to_device(Device::Cpu).to_kind(Kind::Int64).contiguous())?; // [N]
    let k = class_names.len() as i64;
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l >= k) {
        return Err(Error::Data(format!(
            "explorer labels: label {l} of point {i} is outside 0..{k} (one class name per label; got {k} names)"
        )));
    }
    if let Some(t) = thumbnails {
        let s = t.size();
        if s.len() != 4 || s[0] != n || !(s[1] == 1 || s[1] == 3) || s[2] < 1 || s[3] < 1 {
            return Err(Error::shape("explorer thumbnails", format!("[{n}, 3, H, W] (or [{n}, 1, H, W]) u8"), &s));
        }
        if t.kind() != Kind::Uint8 {
            return Err(Error::Data(format!(
                "explorer thumbnails: expected u8 images (0..=255), got {:?}; convert float images in [0, 1] with (x * 255).to_kind(Kind::Uint8)",
                t.kind()
            )));
        }
    }

    // ---- data: coordinates normalised with one scale for both axes
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for p in xy.chunks(2) {
        for a in 0..2 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]);
    let scale = if span > 0.0 { Q / span } else { 0.0 };
    let qx: Vec<i64> = xy.chunks(2).map(|p| ((p[0] - lo[0]) * scale).round() as i64).collect();
    let qy: Vec<i64> = xy.chunks(2).map(|p| ((p[1] - lo[1]) * scale).round() as i64).collect();
    let (ex, ey) = if span > 0.0 { ((hi[0] - lo[0]) / span, (hi[1] - lo[1]) / span) } else { (0.0, 0.0) };
    let mut counts = vec![0usize; class_names.len()];
    for &l in &labels {
        counts[l as usize] += 1;
    }
    let colors: Vec<String> = (0..class_names.len())
        .map(|c| {
            let [r, g, b] = categorical(c);
            format!("#{r:02x}{g:02x}{b:02x}")
        })
        .collect();
    let (thumbs, thumb_note) = match thumbnails {
        Some(t) if cfg.max_thumbnails > 0 => {
            let chosen = spread_indices(n as usize, cfg.max_thumbnails);
            let map = encode_thumbnails(t, &chosen, cfg.thumbnail_size)?;
            let note = if chosen.len() < n as usize {
                format!(
                    " Thumbnails for {} of {} points (evenly spread; <code>ExplorerConfig.max_thumbnails</code> caps the notebook's size).",
                    chosen.len(),
                    n
                )
            } else {
                String::new()
            };
            (map, note)
        }
        Some(_) => (serde_json::Map::new(), " No thumbnails (<code>max_thumbnails</code> is 0).".to_string()),
        None => (serde_json::Map::new(), String::new()),
    };
    let data = serde_json::json!({
        "q": Q, "ex": ex, "ey": ey, "x": qx, "y": qy, "c": labels,
        "names": class_names, "colors": colors,
        "width": cfg.width, "height": cfg.height, "radius": cfg.point_radius, "alpha": cfg.opacity,
        "thumbs": thumbs,
    });
    // `<` escaped so nothing in a class name can close the <script> element; still valid JSON.
    let data = serde_json::to_string(&data)?.replace('<', "\\u003c");

    // ---- HTML
    let id = format!("selfsup-explorer-{:016x}", rand::random::<u64>());
    let (w, h) = (cfg.width, cfg.height);
    let mut legend = String::new();
    for (c, name) in class_names.iter().enumerate() {
        legend += &format!(
            "<button type=\"button\" data-class=\"{c}\" title=\"click to hide or show\" style=\"display:flex;align-items:center;gap:6px;width:100%;margin:0 0 2px;padding:2px 6px;border:1px solid #ddd;border-radius:3px;background:#fff;color:#222;font:inherit;cursor:pointer;text-align:left\"><span style=\"flex:none;display:inline-block;width:11px;height:11px;border-radius:50%;background:{col}\"></span><span class=\"sx-cname\">{name}</span><small style=\"color:#777\">{cnt}</small></button>",
            col = colors[c],
            name = escape_html(name),
            cnt = counts[c]
        );
    }
    let mut html = String::with_capacity(data.len() + 8192);
    html += &format!(
        "<div class=\"selfsup-explorer\" id=\"{id}\" data-points=\"{n}\" style=\"display:inline-block;max-width:100%;box-sizing:border-box;padding:8px;border:1px solid #ddd;border-radius:4px;background:#fff;color:#222;font:13px/1.35 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif\">\n"
    );
    html += &format!("<div style=\"font-weight:600;margin-bottom:6px\">{}</div>\n", escape_html(&cfg.title));
    html += "<div style=\"display:flex;gap:10px;align-items:flex-start\">\n";
    html += &format!(
        "<div class=\"sx-plot\" style=\"position:relative;flex:none;width:{w}px;height:{h}px;border:1px solid #ccc\">\
<canvas width=\"{w}\" height=\"{h}\" style=\"display:block;width:{w}px;height:{h}px;cursor:crosshair\"></canvas>\
<div class=\"sx-nojs\" style=\"position:absolute;inset:0;padding:16px;color:#555\">The explorer needs JavaScript. In a saved notebook: trust it (File &rarr; Trust Notebook, or <code>jupyter trust</code>) and reload, or re-run this cell.</div>\
<div class=\"sx-tip\" style=\"position:absolute;display:none;pointer-events:none;z-index:10;padding:4px;border:1px solid #888;border-radius:3px;background:rgba(255,255,255,0.96);box-shadow:0 1px 4px rgba(0,0,0,0.3);white-space:nowrap\">\
<img alt=\"\" style=\"display:none;width:96px;height:auto;image-rendering:pixelated;margin:0 auto 3px\"><b class=\"sx-name\"></b> <small class=\"sx-index\" style=\"color:#666\"></small></div>\
</div>\n"
    );
    html += &format!(
        "<div class=\"sx-legend\" style=\"max-height:{h}px;overflow-y:auto;min-width:110px\">{legend}</div>\n</div>\n"
    );
    html += &format!(
        "<div class=\"sx-note\" style=\"margin-top:6px;color:#555;font-size:12px\">{n} points, {k} classes. Hover: image and class &middot; wheel: zoom &middot; drag: pan &middot; double-click: reset &middot; click a class: hide/show.{thumb_note}</div>\n"
    );
    html += &format!("<script type=\"application/json\" class=\"sx-data\">{data}</script>\n");
    html += &format!("<script>{}</script>\n</div>", SCRIPT.replace("__ID__", &id));
    Ok(Html(html))
}

/// The explorer of [`Embeddings`]: projects the features to 2-D with `cfg.projection`
/// (t-SNE by default: it keeps the neighbourhoods that S1.5 asks about; [`Projection::Pca`]
/// for an instant, linear view), colours by label (all one class, "unlabelled", without
/// labels) and shows `emb.images` as thumbnails.
///
/// # Errors
/// Those of [`tsne_embed`] / [`pca`] (e.g. too few points for the perplexity) and [`explorer`].
pub fn embedding_explorer(emb: &Embeddings, cfg: &ExplorerConfig) -> Result<Html> {
    cfg.validate()?;
    let points = match &cfg.projection {
        Projection::Tsne(t) => tsne_embed(&emb.features, None, t)?, // [N, 2]
        Projection::Pca => {
            let p = pca(&emb.features, 2)?; // [N, min(D, 2)]
            if p.size()[1] < 2 {
                Tensor::cat(&[&p, &p.zeros_like()], 1) // [N, 2]: 1-D features on a line
            } else {
                p
            }
        }
    };
    let (labels, names) = match &emb.labels {
        Some(l) => (l.shallow_clone(), emb.class_names.clone()),
        None => (Tensor::zeros([emb.len() as i64], (Kind::Int64, Device::Cpu)), vec!["unlabelled".to_string()]),
    };
    explorer(&points, &labels, &names, emb.images.as_ref(), cfg)
}

/// At most `cap` indices evenly spread over `0..n` (all of them when `n <= cap`).
fn spread_indices(n: usize, cap: usize) -> Vec<usize> {
    if n <= cap {
        (0..n).collect()
    } else {
        (0..cap).map(|j| j * n / cap).collect()
    }
}

/// PNG thumbnails (base64) of `images[chosen]`, longest side at most `size`, keyed by index.
fn encode_thumbnails(
    images: &Tensor,
    chosen: &[usize],
    size: u32,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let s = images.size();
    let (h, w) = (s[2], s[3]);
    let f = (size as f64 / h.max(w) as f64).min(1.0);
    let (th, tw) = (((h as f64 * f).round() as i64).max(1), ((w as f64 * f).round() as i64).max(1));
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut map = serde_json::Map::new();
    for block in chosen.chunks(256) {
        let idx = Tensor::from_slice(&block.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let x = images.to_device(Device::Cpu).index_select(0, &idx); // [B, C, H, W] u8
        let x = if (th, tw) != (h, w) {
            x.to_kind(Kind::Float).adaptive_avg_pool2d([th, tw]).round().clamp(0.0, 255.0).to_kind(Kind::Uint8)
        // [B, C, th, tw]
        } else {
            x
        };
        let x = x.expand([block.len() as i64, 3, th, tw], false).permute([0, 2, 3, 1]).contiguous(); // [B, th, tw, 3]
        let bytes = Vec::<u8>::try_from(x.view([-1]))?;
        let per = (3 * th * tw) as usize;
        for (j, &i) in block.iter().enumerate() {
            let img = Image::from_rgb(tw as u32, th as u32, bytes[j * per..(j + 1) * per].to_vec())?;
            map.insert(i.to_string(), serde_json::Value::String(b64.encode(img.png_bytes()?)));
        }
    }
    Ok(map)
}

/// The widget's script; `__ID__` is replaced by the element id. It waits for its element
/// (JupyterLab may run an output's script before attaching it), then exposes
/// `element.selfsupExplorer` (`clientPos(i)`, `view()`, `hidden()`, `drawMs()`) for tests.
const SCRIPT: &str = r##"
(function () {
  var ID = "__ID__", tries = 0;
  function start() {
    var root = document.getElementById(ID);
    if (!root) { if (tries++ < 200) setTimeout(start, 50); return; }
    if (root.selfsupExplorer) return;
    var D = JSON.parse(root.querySelector("script.sx-data").textContent);
    var cv = root.querySelector("canvas"), ctx = cv.getContext("2d");
    var tip = root.querySelector(".sx-tip"), tipImg = tip.querySelector("img");
    var tipName = tip.querySelector(".sx-name"), tipIndex = tip.querySelector(".sx-index");
    root.querySelector(".sx-nojs").style.display = "none";
    var W = D.width, H = D.height, R = D.radius, P = R + 10, n = D.c.length, TAU = 2 * Math.PI;
    var dpr = window.devicePixelRatio || 1;
    cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr);
    // Base layout (zoom 1): one scale for both axes, centred, y up.
    var S = Math.min(W - 2 * P, H - 2 * P), ox = (W - S * D.ex) / 2, oy = (H - S * D.ey) / 2;
    var bx = new Float64Array(n), by = new Float64Array(n), i;
    for (i = 0; i < n; i++) { bx[i] = ox + D.x[i] / D.q * S; by[i] = H - oy - D.y[i] / D.q * S; }
    var byClass = D.names.map(function () { return []; });
    for (i = 0; i < n; i++) byClass[D.c[i]].push(i);
    var hidden = new Uint8Array(D.names.length), view = { k: 1, tx: 0, ty: 0 }, hover = -1, lastMs = 0, queued = false;
    function sx(i) { return bx[i] * view.k + view.tx; }
    function sy(i) { return by[i] * view.k + view.ty; }
    function draw() {
      var t0 = performance.now();
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.globalAlpha = 1; ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, W, H);
      ctx.globalAlpha = D.alpha;
      for (var c = 0; c < byClass.length; c++) {
        if (hidden[c]) continue;
        var idx = byClass[c];
        ctx.fillStyle = D.colors[c]; ctx.beginPath();
        for (var j = 0; j < idx.length; j++) {
          var x = sx(idx[j]), y = sy(idx[j]);
          if (x < -R || y < -R || x > W + R || y > H + R) continue;
          ctx.moveTo(x + R, y); ctx.arc(x, y, R, 0, TAU);
        }
        ctx.fill();
      }
      ctx.globalAlpha = 1;
      if (hover >= 0) {
        ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5; ctx.beginPath();
        ctx.arc(sx(hover), sy(hover), R + 2.5, 0, TAU); ctx.stroke();
      }
      lastMs = performance.now() - t0;
    }
    function redraw() {
      if (queued) return;
      queued = true;
      (window.requestAnimationFrame || setTimeout)(function () { queued = false; draw(); });
    }
    function local(e) { var r = cv.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
    function nearest(mx, my) {
      var best = -1, bd = (R + 4) * (R + 4);
      for (var i = 0; i < n; i++) {
        if (hidden[D.c[i]]) continue;
        var dx = sx(i) - mx, dy = sy(i) - my, d = dx * dx + dy * dy;
        if (d <= bd) { bd = d; best = i; }
      }
      return best;
    }
    function showTip(i, mx, my) {
      if (i < 0) { tip.style.display = "none"; return; }
      tipName.textContent = D.names[D.c[i]];
      tipIndex.textContent = "#" + i;
      var t = D.thumbs[i];
      if (t) { tipImg.src = "data:image/png;base64," + t; tipImg.style.display = "block"; }
      else { tipImg.removeAttribute("src"); tipImg.style.display = "none"; }
      tip.style.display = "block";
      var x = mx + 14, y = my + 14;
      if (x + tip.offsetWidth > W) x = mx - 14 - tip.offsetWidth;
      if (y + tip.offsetHeight > H) y = my - 14 - tip.offsetHeight;
      x = Math.max(0, Math.min(x, W - tip.offsetWidth)); y = Math.max(0, Math.min(y, H - tip.offsetHeight));
      tip.style.left = x + "px"; tip.style.top = y + "px";
    }
    var drag = null;
    cv.addEventListener("mousedown", function (e) {
      if (e.button !== 0) return;
      var p = local(e);
      drag = { x: p[0], y: p[1], tx: view.tx, ty: view.ty };
      cv.style.cursor = "grabbing"; tip.style.display = "none"; e.preventDefault();
    });
    window.addEventListener("mousemove", function (e) {
      if (!drag) return;
      var p = local(e);
      view.tx = drag.tx + p[0] - drag.x; view.ty = drag.ty + p[1] - drag.y; redraw();
    });
    window.addEventListener("mouseup", function () { if (drag) { drag = null; cv.style.cursor = "crosshair"; } });
    cv.addEventListener("mousemove", function (e) {
      if (drag) return;
      var p = local(e), i = nearest(p[0], p[1]);
      if (i !== hover) { hover = i; redraw(); }
      showTip(i, p[0], p[1]);
    });
    cv.addEventListener("mouseleave", function () { hover = -1; tip.style.display = "none"; redraw(); });
    cv.addEventListener("wheel", function (e) {
      e.preventDefault();
      var p = local(e), f = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
      var k = Math.min(500, Math.max(0.2, view.k * f));
      f = k / view.k;
      view.tx = p[0] - (p[0] - view.tx) * f; view.ty = p[1] - (p[1] - view.ty) * f; view.k = k;
      tip.style.display = "none"; redraw();
    }, { passive: false });
    cv.addEventListener("dblclick", function () { view.k = 1; view.tx = 0; view.ty = 0; redraw(); });
    Array.prototype.forEach.call(root.querySelectorAll(".sx-legend [data-class]"), function (el) {
      el.addEventListener("click", function () {
        var c = +el.getAttribute("data-class");
        hidden[c] ^= 1;
        el.style.opacity = hidden[c] ? "0.4" : "1";
        el.querySelector(".sx-cname").style.textDecoration = hidden[c] ? "line-through" : "none";
        if (hover >= 0 && hidden[D.c[hover]]) { hover = -1; tip.style.display = "none"; }
        redraw();
      });
    });
    root.selfsupExplorer = {
      points: n,
      clientPos: function (i) { var r = cv.getBoundingClientRect(); return [r.left + sx(i), r.top + sy(i)]; },
      view: function () { return { k: view.k, tx: view.tx, ty: view.ty }; },
      hidden: function () { return Array.prototype.slice.call(hidden); },
      drawMs: function () { return lastMs; },
      draw: draw
    };
    draw();
  }
  start();
})();
"##;
