//! t-SNE of embeddings (S2.T3, S2.T5): van der Maaten & Hinton 2008, "Visualizing Data using
//! t-SNE" (<https://jmlr.org/papers/v9/vandermaaten08a.html>), with the Barnes-Hut gradient of
//! van der Maaten 2014 (<https://jmlr.org/papers/v15/vandermaaten14a.html>).
//!
//! Features `[N, D]` → PCA to 50 dimensions → exact k nearest neighbours (k = 3·perplexity) →
//! Gaussian affinities of perplexity 30 → 250 iterations with early exaggeration 12, then 750
//! without → a 2-D scatter coloured by class. The defaults are openTSNE's and scikit-learn's
//! (Poličar et al. 2024; Kobak & Berens 2019, "The art of using t-SNE for single-cell
//! transcriptomics": PCA initialisation and a learning rate of N/12).
//!
//! Two backends ([`TsneBackend`]), both behind the same checks, because the crates panic on
//! bad input (NaN, empty, too few points for the perplexity) instead of returning an error:
//! - **`BarnesHut`** (default): the neighbour search is ours (exact, a matrix product on the
//!   PCA'd data with tch), the optimisation is `bhtsne` 0.7's parallel Barnes-Hut fed with those
//!   neighbours, in two phases with openTSNE's learning rates (N/12 while exaggerated, then N)
//!   and a PCA initialisation. Measured in BENCHMARKS.md: as trustworthy as openTSNE and
//!   scikit-learn, several times faster.
//! - **`Linfa`**: `linfa-tsne` 0.8 as it is (one thread, vantage-point-tree neighbour search,
//!   learning rate fixed at 200, random initialisation); kept for comparison, on the PCA'd data.
//!
//! Quality scores computed the same way for any 2-D embedding (ours, openTSNE's, sklearn's):
//! [`trustworthiness`] (Venna & Kaski 2001, as `sklearn.manifold.trustworthiness`) and
//! [`knn_accuracy_2d`].
use super::figure::{plot_err, Figure, Plot};
use super::palette::categorical_color;
use crate::error::{Error, Result};
use crate::eval::{Embeddings, Snapshot};
use crate::train::identity::Fingerprint;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Which implementation runs the optimisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TsneBackend {
    /// Exact kNN affinities (ours) + `bhtsne` 0.7 parallel Barnes-Hut, openTSNE's schedule.
    BarnesHut,
    /// Exact kNN affinities (ours) + `bhtsne` 0.7's FFT-interpolated repulsion (FIt-SNE,
    /// Linderman et al. 2019, openTSNE's default), same schedule; no θ.
    Fft,
    /// `linfa-tsne` 0.8 as it is (single-threaded; ignores `learning_rate`; random init).
    Linfa,
}

/// Parameters of [`tsne`] and friends. `Default` is the openTSNE / scikit-learn setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TsneConfig {
    /// Perplexity (effective number of neighbours): 30 (scikit-learn and openTSNE default;
    /// van der Maaten & Hinton 2008 suggest 5–50).
    pub perplexity: f64,
    /// Gradient-descent iterations in all: 1000 (scikit-learn `max_iter`, van der Maaten 2014).
    pub iterations: usize,
    /// Early exaggeration factor α: 12 (van der Maaten 2014, §4.3; scikit-learn, openTSNE).
    pub early_exaggeration: f64,
    /// Iterations with exaggeration, included in `iterations`: 250 (van der Maaten 2014).
    pub exaggeration_iterations: usize,
    /// Learning rate; `None` = auto: max(N/α, 50) while exaggerated, then max(N, 50), as
    /// openTSNE (Belkina et al. 2019). Ignored by the `Linfa` backend (fixed 200 there).
    pub learning_rate: Option<f64>,
    /// PCA to this many dimensions before t-SNE: 50 (van der Maaten & Hinton 2008 §5; removes
    /// noise and makes the neighbour search 10x cheaper); `None` keeps all dimensions.
    pub pca_dims: Option<usize>,
    /// Barnes-Hut accuracy θ: 0.5 (van der Maaten 2014; scikit-learn `angle`, openTSNE `theta`).
    pub theta: f64,
    /// Seed of the initial layout (`Linfa`); the `BarnesHut` backend starts from PCA.
    pub seed: u64,
    /// Which implementation optimises.
    pub backend: TsneBackend,
    /// Print progress every this many iterations (0: silent). 250: four lines per run.
    pub log_every: usize,
    /// Title drawn above the figure.
    pub title: String,
    /// Where to keep the layouts (`None`: nowhere, the default). With a folder, a layout computed
    /// before for the same features, starting layout and settings is loaded from there instead of
    /// optimised again ([`TsneConfig::saved_in`]).
    #[serde(skip)]
    pub save_dir: Option<std::path::PathBuf>,
}

impl Default for TsneConfig {
    fn default() -> Self {
        TsneConfig {
            perplexity: 30.0,
            iterations: 1000,
            early_exaggeration: 12.0,
            exaggeration_iterations: 250,
            learning_rate: None,
            pca_dims: Some(50),
            theta: 0.5,
            seed: 0,
            backend: TsneBackend::BarnesHut,
            log_every: 250,
            title: "t-SNE".into(),
            save_dir: None,
        }
    }
}

impl TsneConfig {
    /// A quick setting for tests and a laptop: 500 iterations (125 exaggerated), silent.
    pub fn tiny() -> Self {
        TsneConfig { iterations: 500, exaggeration_iterations: 125, log_every: 0, ..Default::default() }
    }
    /// The same config with another perplexity.
    pub fn perplexity(mut self, perplexity: f64) -> Self {
        self.perplexity = perplexity;
        self
    }
    /// The same config with another number of iterations.
    pub fn iterations(mut self, iterations: usize) -> Self {
        self.iterations = iterations;
        self
    }
    /// The same config with another backend.
    pub fn backend(mut self, backend: TsneBackend) -> Self {
        self.backend = backend;
        self
    }
    /// The same config with another seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// The same config with another title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }
    /// The same config, keeping every layout it computes in `dir` (one small JSON file per
    /// layout, named after a fingerprint of its inputs) and loading it from there when the same
    /// features, starting layout and settings come again. Why: the Barnes-Hut optimisation takes
    /// seconds per figure, and after `./kit prepare` a notebook's Run All should not redo it for
    /// the same trained models; it also shows the same picture on every run, although bhtsne's
    /// parallel sums are not bit-reproducible. The title does not take part.
    pub fn saved_in(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.save_dir = Some(dir.into());
        self
    }
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.perplexity.is_finite() && self.perplexity >= 1.0) {
            return Err(Error::Config(format!(
                "TsneConfig.perplexity must be >= 1 (typically 5..50), got {}",
                self.perplexity
            )));
        }
        if self.iterations == 0 || self.exaggeration_iterations > self.iterations {
            return Err(Error::Config(format!(
                "TsneConfig: expected 0 < iterations and exaggeration_iterations <= iterations, got {} and {}",
                self.iterations, self.exaggeration_iterations
            )));
        }
        if !(self.early_exaggeration.is_finite() && self.early_exaggeration >= 1.0) {
            return Err(Error::Config(format!(
                "TsneConfig.early_exaggeration must be >= 1, got {}",
                self.early_exaggeration
            )));
        }
        if let Some(lr) = self.learning_rate {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(Error::Config(format!(
                    "TsneConfig.learning_rate must be > 0 (or None for auto), got {lr}"
                )));
            }
        }
        if self.pca_dims == Some(0) || self.pca_dims == Some(1) {
            return Err(Error::Config("TsneConfig.pca_dims must be at least 2 (or None for no PCA)".into()));
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            return Err(Error::Config(format!("TsneConfig.theta must be > 0 (0.5 is usual), got {}", self.theta)));
        }
        Ok(())
    }
}

/// Checks a `[N, D]` float matrix of finite values and returns it on the CPU as contiguous f32.
fn check_matrix(x: &Tensor, what: &str, min_rows: i64) -> Result<Tensor> {
    let size = x.size();
    if size.len() != 2 || size[0] < min_rows || size[1] < 1 {
        return Err(Error::shape(what, format!("[N, D] with N >= {min_rows} and D >= 1"), &size));
    }
    if !x.is_floating_point() {
        return Err(Error::Data(format!("{what}: expected floating-point values, got {:?}", x.kind())));
    }
    let x = x.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let bad = x.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
    if bad > 0 {
        return Err(Error::Data(format!(
            "{what}: {bad} values are NaN or infinite; expected finite features (check the model and inputs for a diverged run)"
        )));
    }
    Ok(x)
}

/// Checks labels `[N]` (integers >= 0) and returns them as class indices.
fn check_labels(labels: &Tensor, n: i64, what: &str) -> Result<Vec<usize>> {
    let size = labels.size();
    if size != [n] {
        return Err(Error::shape(what, format!("[{n}] (one label per point)"), &size));
    }
    if labels.is_floating_point() {
        return Err(Error::Data(format!("{what}: expected integer class indices, got {:?}", labels.kind())));
    }
    let v = Vec::<i64>::try_from(labels.to_device(Device::Cpu).to_kind(Kind::Int64).flatten(0, -1))?;
    v.into_iter()
        .map(|l| usize::try_from(l).map_err(|_| Error::Data(format!("{what}: expected class indices >= 0, got {l}"))))
        .collect()
}

/// Principal components: `x` `[N, D]` centred and projected on its top `k` principal axes,
/// `[N, k]` (f32, CPU). Computed from the eigen-decomposition of the D x D covariance;
/// each axis' sign makes its largest loading positive (scikit-learn's `svd_flip`), so results
/// do not flip between runs. With `k >= D` the centred data is returned unrotated.
///
/// # Errors
/// `x` not `[N, D]` with N >= 2, non-float, NaN or infinite values; `k == 0`.
pub fn pca(x: &Tensor, k: usize) -> Result<Tensor> {
    let x = check_matrix(x, "pca input", 2)?;
    if k == 0 {
        return Err(Error::Config("pca: expected k >= 1 components, got 0".into()));
    }
    Ok(pca_checked(&x, k))
}

fn pca_checked(x: &Tensor, k: usize) -> Tensor {
    let (n, d) = (x.size()[0], x.size()[1]);
    let centred = x - x.mean_dim(0, true, Kind::Float); // [N, D]
    if k as i64 >= d {
        return centred;
    }
    // The covariance product in f32 (the bulk of the work), its eigen-decomposition in f64.
    let cov = centred.tr().matmul(&centred).to_kind(Kind::Double) / ((n - 1).max(1) as f64); // [D, D]
    let (_values, vectors) = cov.linalg_eigh("L"); // ascending eigenvalues, vectors in columns
    let top = vectors.narrow(1, d - k as i64, k as i64).flip([1]); // [D, k], largest first
    let biggest = top.abs().argmax(0, true); // [1, k]
    let signs = top.gather(0, &biggest, false).sign(); // [1, k]
    let signs = signs.where_self(&signs.ne(0.0), &signs.ones_like());
    centred.matmul(&(top * signs).to_kind(Kind::Float)) // [N, k]
}

/// The `k` nearest neighbours of every row of `x` (`[N, d]`, f32, CPU), itself excluded, by
/// increasing Euclidean distance: (indices `[N, k]`, distances `[N, k]`). Exact: squared
/// distances by a matrix product, a block of rows at a time so memory stays at ~64 MB.
fn knn(x: &Tensor, k: i64) -> (Tensor, Tensor) {
    let n = x.size()[0];
    let x = x.to_kind(Kind::Float);
    let sq = x.square().sum_dim_intlist(1, false, Kind::Float); // [N]
    let block = (16_000_000 / n).clamp(1, n);
    let (mut idx, mut dist) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < n {
        let len = block.min(n - start);
        let rows = x.narrow(0, start, len); // [B, d]
        let d2 = (sq.narrow(0, start, len).unsqueeze(1) + sq.unsqueeze(0) - rows.matmul(&x.tr()) * 2.0).clamp_min(0.0); // [B, N]
        let own = Tensor::arange_start(start, start + len, (Kind::Int64, Device::Cpu)).unsqueeze(1); // [B, 1]
        let d2 = d2.scatter_value(1, &own, f64::INFINITY); // self excluded
        let (v, i) = d2.topk(k, 1, false, true); // [B, k]
        dist.push(v.sqrt());
        idx.push(i);
        start += len;
    }
    (Tensor::cat(&idx, 0), Tensor::cat(&dist, 0))
}

/// Rescales a layout so its first coordinate has standard deviation 1e-4 (openTSNE's and
/// scikit-learn's PCA initialisation: small, so early exaggeration can rearrange it).
fn rescale_init(y: &Tensor) -> Tensor {
    let y = y.to_kind(Kind::Double);
    let y = &y - y.mean_dim(0, true, Kind::Double);
    let sd = y.select(1, 0).std(true).double_value(&[]);
    let sd = if sd > 0.0 && sd.is_finite() { sd } else { 1.0 };
    (y * (1e-4 / sd)).to_kind(Kind::Float)
}

/// Runs t-SNE on `features` `[N, D]` and returns the 2-D layout `[N, 2]` (f32, CPU).
///
/// `init`: an optional starting layout `[N, 2]` (rescaled to std 1e-4); by default the first
/// two principal components. [`tsne_snapshots`] passes the previous snapshot's layout so the
/// pictures stay comparable.
///
/// # Errors
/// Features not `[N, D]` float, NaN or infinite values, fewer than 3·perplexity + 1 points
/// (lower the perplexity), an invalid config.
///
/// # Example
/// ```no_run
/// use selfsup::prelude::*;
/// let features = Tensor::randn([500, 64], (Kind::Float, Device::Cpu));
/// let layout = viz::tsne_embed(&features, None, &viz::TsneConfig::default())?; // [500, 2]
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn tsne_embed(features: &Tensor, init: Option<&Tensor>, cfg: &TsneConfig) -> Result<Tensor> {
    cfg.validate()?;
    let x = check_matrix(features, "tsne features", 2)?;
    let n = x.size()[0];
    let k = (3.0 * cfg.perplexity).floor() as i64;
    if n - 1 < k {
        return Err(Error::Config(format!(
            "t-SNE with perplexity {} needs at least {} points, got {n}: lower TsneConfig.perplexity to at most {:.1}",
            cfg.perplexity,
            k + 1,
            (n - 1) as f64 / 3.0
        )));
    }
    if let Some(init) = init {
        if init.size() != [n, 2] {
            return Err(Error::shape("tsne init", format!("[{n}, 2]"), &init.size()));
        }
    }
    let init = init.map(|t| check_matrix(t, "tsne init", n)).transpose()?;
    let Some(dir) = &cfg.save_dir else { return optimise(&x, init.as_ref(), k, cfg) };
    let key = serde_json::json!({
        "version": SAVED_TSNE_VERSION,
        "features": Fingerprint::new().tensor(&x)?.hex(),
        "init": match &init { Some(t) => Fingerprint::new().tensor(t)?.hex(), None => "pca".into() },
        "config": TsneConfig { title: String::new(), log_every: 0, save_dir: None, ..cfg.clone() },
    });
    let path = dir.join(format!("tsne-{}.json", Fingerprint::new().str(&key.to_string()).hex()));
    let (values, loaded) = crate::files::remembered(&path, &key, || {
        Ok(Vec::<f32>::try_from(optimise(&x, init.as_ref(), k, cfg)?.flatten(0, -1))?)
    })?;
    if loaded && cfg.log_every > 0 {
        println!("t-SNE: {n} points, layout loaded from {} (computed before for these features and settings)", path.display());
    }
    Ok(Tensor::from_slice(&values).view([n, 2]))
}

/// Version of the kept layouts ([`TsneConfig::saved_in`]): raise it when the optimisation's code
/// changes, so that layouts of older code are computed again.
const SAVED_TSNE_VERSION: u32 = 1;

/// PCA, then the backend's optimisation, of checked features `x` `[N, D]`.
fn optimise(x: &Tensor, init: Option<&Tensor>, k: i64, cfg: &TsneConfig) -> Result<Tensor> {
    let n = x.size()[0];
    let start = Instant::now();
    let log = |msg: String| {
        if cfg.log_every > 0 {
            println!("t-SNE: {msg} ({:.1} s)", start.elapsed().as_secs_f64());
        }
    };
    let x = match cfg.pca_dims {
        Some(dims) => pca_checked(x, dims),
        None => x - x.mean_dim(0, true, Kind::Float),
    };
    log(format!("{n} points, {} dimensions after PCA", x.size()[1]));
    let layout = match cfg.backend {
        TsneBackend::BarnesHut | TsneBackend::Fft => barnes_hut(&x, init, k, cfg, &log)?,
        TsneBackend::Linfa => linfa(&x, cfg)?,
    };
    log("done".into());
    Ok(layout)
}

fn barnes_hut(x: &Tensor, init: Option<&Tensor>, k: i64, cfg: &TsneConfig, log: &dyn Fn(String)) -> Result<Tensor> {
    let n = x.size()[0];
    let (idx, dist) = knn(x, k); // [N, k] each
    let idx = Vec::<i64>::try_from(idx.flatten(0, -1))?;
    let dist = Vec::<f32>::try_from(dist.flatten(0, -1))?;
    let neighbors: Vec<Vec<bhtsne::Neighbor<f32>>> = idx
        .chunks(k as usize)
        .zip(dist.chunks(k as usize))
        .map(|(i, d)| {
            i.iter().zip(d).map(|(&index, &distance)| bhtsne::Neighbor { index: index as usize, distance }).collect()
        })
        .collect();
    log(format!("exact {k} nearest neighbours"));
    let init = match init {
        Some(t) => rescale_init(t),
        None if x.size()[1] >= 2 => rescale_init(&pca_checked(x, 2)),
        None => return Err(Error::Data("t-SNE needs at least 2 feature dimensions for its PCA initialisation".into())),
    };
    let mut y = Vec::<f32>::try_from(init.flatten(0, -1))?;
    // bhtsne only counts the samples (the neighbours carry the geometry).
    let samples = vec![(); n as usize];
    let mut t: bhtsne::tSNE<f32, ()> = bhtsne::tSNE::new(&samples);
    t.perplexity(cfg.perplexity as f32).early_exaggeration(cfg.early_exaggeration as f32);
    let phases = [
        // (iterations, exaggerated, momentum): momentum 0.5 then 0.8 (van der Maaten 2014).
        (cfg.exaggeration_iterations, true, 0.5f32),
        (cfg.iterations - cfg.exaggeration_iterations, false, 0.8f32),
    ];
    let mut done = 0;
    for (iterations, exaggerated, momentum) in phases {
        if iterations == 0 {
            continue;
        }
        let auto = if exaggerated { n as f64 / cfg.early_exaggeration } else { n as f64 };
        let lr = cfg.learning_rate.unwrap_or(auto.max(50.0));
        let (every, offset, total) = (cfg.log_every, done, cfg.iterations);
        let phase = if exaggerated { " (exaggerated)" } else { "" };
        let started = Instant::now();
        t.epochs(iterations)
            .learning_rate(lr as f32)
            .momentum(momentum)
            .final_momentum(momentum)
            .momentum_switch_epoch(usize::MAX)
            // Exaggerated phase: never stop lying inside it; plain phase: 0 = no exaggeration.
            .stop_lying_epoch(if exaggerated { usize::MAX } else { 0 })
            .initial_embedding(y.clone())
            .epoch_callback(move |epoch, _| {
                let it = offset + epoch + 1;
                if every > 0 && (it % every == 0 || it == total) {
                    println!(
                        "t-SNE: iteration {it}/{total}{phase}, {:.1} s in this phase",
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        if cfg.backend == TsneBackend::Fft {
            t.fit_sne_with_neighbors(&neighbors);
        } else {
            t.barnes_hut_with_neighbors(cfg.theta as f32, &neighbors);
        }
        y = t.embedding();
        done += iterations;
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(Error::Data(format!(
            "t-SNE diverged (non-finite coordinates); lower TsneConfig.learning_rate (auto gives {:.0})",
            n as f64
        )));
    }
    Ok(Tensor::from_slice(&y).view([n, 2]))
}

fn linfa(x: &Tensor, cfg: &TsneConfig) -> Result<Tensor> {
    use linfa::traits::Transformer;
    use ndarray_rand::rand::SeedableRng;
    let (n, d) = (x.size()[0], x.size()[1]);
    let data = Vec::<f32>::try_from(x.flatten(0, -1))?;
    let array = ndarray::Array2::from_shape_vec((n as usize, d as usize), data)?; // row-major, as linfa-tsne needs
    let rng = ndarray_rand::rand::rngs::SmallRng::seed_from_u64(cfg.seed);
    let out = linfa_tsne::TSneParams::embedding_size_with_rng(2, rng)
        .perplexity(cfg.perplexity as f32)
        .approx_threshold(cfg.theta as f32)
        .max_iter(cfg.iterations)
        .preliminary_iter(cfg.exaggeration_iterations)
        .transform(array)
        .map_err(|e| Error::Data(format!("linfa-tsne: {e}")))?;
    let flat: Vec<f32> = out.iter().copied().collect();
    if flat.iter().any(|v| !v.is_finite()) {
        return Err(Error::Data("linfa-tsne returned non-finite coordinates; try the BarnesHut backend".into()));
    }
    Ok(Tensor::from_slice(&flat).view([n, 2]))
}

/// Trustworthiness T(k) of a low-dimensional embedding (Venna & Kaski 2001), exactly as
/// `sklearn.manifold.trustworthiness`: 1 − 2/(N k (2N − 3k − 1)) · Σᵢ Σ_{j ∈ Uₖ(i)} (r(i, j) − k),
/// where Uₖ(i) are the k nearest neighbours of i in `low` that are not among its k nearest in
/// `high`, and r(i, j) the rank of j among i's neighbours in `high`. 1 = no false neighbours.
///
/// # Errors
/// Not `[N, D]` / `[N, d]` with the same N, NaN values, `k` not in `1..N/2`.
pub fn trustworthiness(high: &Tensor, low: &Tensor, k: usize) -> Result<f64> {
    let high = check_matrix(high, "trustworthiness high", 3)?;
    let low = check_matrix(low, "trustworthiness low", 3)?;
    let n = high.size()[0];
    if low.size()[0] != n {
        return Err(Error::shape("trustworthiness low", format!("[{n}, d] (as many rows as high)"), &low.size()));
    }
    let k = k as i64;
    if k < 1 || 2 * k >= n {
        return Err(Error::Config(format!("trustworthiness: expected 1 <= k < N/2 = {}, got {k}", n / 2)));
    }
    let (low_nn, _) = knn(&low, k); // [N, k]
    let sq = high.square().sum_dim_intlist(1, false, Kind::Float); // [N]
    let block = (16_000_000 / n).clamp(1, n);
    let mut penalty = 0.0;
    let mut start = 0;
    while start < n {
        let len = block.min(n - start);
        let rows = high.narrow(0, start, len); // [B, D]
        let d2 =
            (sq.narrow(0, start, len).unsqueeze(1) + sq.unsqueeze(0) - rows.matmul(&high.tr()) * 2.0).clamp_min(0.0); // [B, N]
        let own = Tensor::arange_start(start, start + len, (Kind::Int64, Device::Cpu)).unsqueeze(1); // [B, 1]
        let d2 = d2.scatter_value(1, &own, -1.0); // self ranks 0, before everyone
                                                  // Rank of every point in each row, 0 = self: sorting twice inverts the permutation.
        let order = d2.argsort(1, false); // [B, N]
        let ranks = order.argsort(1, false); // [B, N]
        let r = ranks.gather(1, &low_nn.narrow(0, start, len), false); // [B, k]
        penalty += (r - k).clamp_min(0).sum(Kind::Double).double_value(&[]);
        start += len;
    }
    let (n, k) = (n as f64, k as f64);
    Ok(1.0 - 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)) * penalty)
}

/// Leave-one-out k-nearest-neighbour accuracy in the embedding: the share of points whose
/// class is the majority class among their `k` nearest neighbours in `low` (ties go to the
/// lower class index). A 2-D map that keeps classes apart scores near the linear probe.
///
/// # Errors
/// `low` not `[N, d]`, labels not `[N]` integers >= 0, NaN values, `k` not in `1..N`.
pub fn knn_accuracy_2d(low: &Tensor, labels: &Tensor, k: usize) -> Result<f64> {
    let low = check_matrix(low, "knn_accuracy_2d embedding", 2)?;
    let n = low.size()[0];
    let classes = check_labels(labels, n, "knn_accuracy_2d labels")?;
    if k < 1 || k as i64 >= n {
        return Err(Error::Config(format!("knn_accuracy_2d: expected 1 <= k < N = {n}, got {k}")));
    }
    let (nn, _) = knn(&low, k as i64);
    let nn = Vec::<i64>::try_from(nn.flatten(0, -1))?;
    let n_classes = classes.iter().max().map_or(1, |m| m + 1);
    let mut correct = 0usize;
    let mut votes = vec![0usize; n_classes];
    for (i, row) in nn.chunks(k).enumerate() {
        votes.iter_mut().for_each(|v| *v = 0);
        for &j in row {
            votes[classes[j as usize]] += 1;
        }
        let best = votes.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0))).map_or(0, |(c, _)| c);
        correct += usize::from(best == classes[i]);
    }
    Ok(correct as f64 / n as f64)
}

// ---------------------------------------------------------------- drawing

/// One scatter panel: points, their classes and a caption.
struct Panel {
    xy: Vec<(f64, f64)>,
    classes: Vec<usize>,
    caption: String,
}

/// Panels in a grid with one shared legend of class names on the right.
struct ScatterGrid {
    panels: Vec<Panel>,
    columns: usize,
    panel_size: u32,
    names: Vec<String>,
    title: String,
}

const TITLE_H: u32 = 34;
const LEGEND_ROW: u32 = 20;
const LEGEND_COL: u32 = 160;

impl ScatterGrid {
    fn legend_columns(&self) -> u32 {
        let rows_fit = ((self.rows() * self.panel_size).saturating_sub(20) / LEGEND_ROW).max(1);
        (self.names.len() as u32).div_ceil(rows_fit).max(1)
    }
    fn rows(&self) -> u32 {
        (self.panels.len() as u32).div_ceil(self.columns as u32)
    }
    fn size(&self) -> (u32, u32) {
        let w = self.columns as u32 * self.panel_size + self.legend_columns() * LEGEND_COL;
        (w, TITLE_H + self.rows() * self.panel_size)
    }
}

impl Plot for ScatterGrid {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let (w, _) = self.size();
        let title_style = ("sans-serif", 20).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(self.title.clone(), (w as i32 / 2, 6), title_style)).map_err(plot_err)?;
        let radius = match self.panels.iter().map(|p| p.xy.len()).max().unwrap_or(0) {
            0..=2000 => 3,
            2001..=20000 => 2,
            _ => 1,
        };
        for (p, panel) in self.panels.iter().enumerate() {
            let (col, row) = ((p % self.columns) as i32, (p / self.columns) as i32);
            let s = self.panel_size as i32;
            let x0 = col * s;
            let y0 = TITLE_H as i32 + row * s;
            let sub = area.clone().shrink((x0, y0), (self.panel_size, self.panel_size));
            let ((xl, xh), (yl, yh)) = bounds(&panel.xy);
            let mut builder = ChartBuilder::on(&sub);
            builder.margin(8);
            if !panel.caption.is_empty() {
                builder.caption(panel.caption.clone(), ("sans-serif", 15));
            }
            let mut chart = builder.build_cartesian_2d(xl..xh, yl..yh).map_err(plot_err)?;
            // t-SNE axes have no units: a frame, no ticks.
            chart.configure_mesh().disable_mesh().disable_x_axis().disable_y_axis().draw().map_err(plot_err)?;
            chart
                .plotting_area()
                .draw(&Rectangle::new([(xl, yl), (xh, yh)], BLACK.mix(0.3).stroke_width(1)))
                .map_err(plot_err)?;
            // A fixed shuffle, so no class is always drawn on top of the others.
            let m = panel.xy.len();
            let mut order: Vec<usize> = (0..m).collect();
            order.sort_by_key(|&i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17);
            chart
                .draw_series(
                    order
                        .iter()
                        .map(|&i| Circle::new(panel.xy[i], radius, categorical_color(panel.classes[i]).filled())),
                )
                .map_err(plot_err)?;
        }
        // Legend: a dot and the class name per row, in as many columns as needed.
        let lx0 = self.columns as i32 * self.panel_size as i32;
        let rows_fit = ((self.rows() * self.panel_size).saturating_sub(20) / LEGEND_ROW).max(1) as usize;
        let text = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        for (c, name) in self.names.iter().enumerate() {
            let x = lx0 + 12 + (c / rows_fit) as i32 * LEGEND_COL as i32;
            let y = TITLE_H as i32 + 24 + (c % rows_fit) as i32 * LEGEND_ROW as i32;
            area.draw(&Circle::new((x, y), 5, categorical_color(c).filled())).map_err(plot_err)?;
            let label: String =
                if name.chars().count() > 18 { name.chars().take(17).chain(['…']).collect() } else { name.clone() };
            area.draw(&Text::new(label, (x + 12, y), text.clone())).map_err(plot_err)?;
        }
        Ok(())
    }
}

/// The padded extent of a layout.
fn bounds(xy: &[(f64, f64)]) -> ((f64, f64), (f64, f64)) {
    let mut b = ((f64::INFINITY, f64::NEG_INFINITY), (f64::INFINITY, f64::NEG_INFINITY));
    for &(x, y) in xy {
        b = ((b.0 .0.min(x), b.0 .1.max(x)), (b.1 .0.min(y), b.1 .1.max(y)));
    }
    let pad = |(lo, hi): (f64, f64)| {
        if !lo.is_finite() {
            return (-1.0, 1.0);
        }
        let span = if hi - lo > 1e-12 { hi - lo } else { 1.0 };
        (lo - 0.04 * span, hi + 0.04 * span)
    };
    (pad(b.0), pad(b.1))
}

/// Class names for the legend: the given ones, else "class 0", "class 1", ….
fn legend_names(class_names: &[String], classes: &[&[usize]]) -> Result<Vec<String>> {
    let n_classes = classes.iter().flat_map(|c| c.iter()).max().map_or(0, |m| m + 1);
    if class_names.is_empty() {
        return Ok((0..n_classes).map(|c| format!("class {c}")).collect());
    }
    if class_names.len() < n_classes {
        return Err(Error::Data(format!(
            "t-SNE legend: labels go up to {}, but {} class names were given; pass one name per class or none",
            n_classes - 1,
            class_names.len()
        )));
    }
    Ok(class_names.to_vec())
}

fn panel(layout: &Tensor, classes: Vec<usize>, caption: String) -> Result<Panel> {
    let v = Vec::<f32>::try_from(layout.to_kind(Kind::Float).flatten(0, -1))?;
    let xy = v.chunks(2).map(|p| (p[0] as f64, p[1] as f64)).collect();
    Ok(Panel { xy, classes, caption })
}

fn render(panels: Vec<Panel>, columns: usize, panel_size: u32, names: Vec<String>, title: String) -> Result<Figure> {
    let grid = ScatterGrid { panels, columns, panel_size, names, title };
    let (w, h) = grid.size();
    Figure::render(w, h, &grid)
}

/// A scatter of any 2-D layout `[N, 2]` (t-SNE, PCA, UMAP from elsewhere), one colour per class
/// with a legend of `class_names` (or "class i" when empty).
///
/// # Errors
/// `points` not `[N, 2]`, labels not `[N]` integers >= 0, NaN, too few class names.
pub fn scatter(points: &Tensor, labels: &Tensor, class_names: &[String], title: &str) -> Result<Figure> {
    let xy = check_matrix(points, "scatter points", 1)?;
    if xy.size()[1] != 2 {
        return Err(Error::shape("scatter points", "[N, 2]", &xy.size()));
    }
    let classes = check_labels(labels, xy.size()[0], "scatter labels")?;
    let names = legend_names(class_names, &[&classes])?;
    render(vec![panel(&xy, classes, String::new())?], 1, 560, names, title.to_string())
}

/// t-SNE of `features` `[N, D]` coloured by `labels` `[N]`, legend from `class_names` (S2.T3).
///
/// # Errors
/// As [`tsne_embed`], plus labels not `[N]` integers >= 0 or fewer class names than classes.
///
/// # Example
/// ```no_run
/// use selfsup::prelude::*;
/// let (h, y) = (Tensor::randn([600, 512], (Kind::Float, Device::Cpu)), Tensor::randint(10, [600], (Kind::Int64, Device::Cpu)));
/// let fig = viz::tsne(&h, &y, &[], &viz::TsneConfig::default().title("SimCLR, STL-10 test"))?;
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn tsne(features: &Tensor, labels: &Tensor, class_names: &[String], cfg: &TsneConfig) -> Result<Figure> {
    let n = features.size().first().copied().unwrap_or(0);
    let classes = check_labels(labels, n, "tsne labels")?;
    let names = legend_names(class_names, &[&classes])?;
    let layout = tsne_embed(features, None, cfg)?;
    render(vec![panel(&layout, classes, String::new())?], 1, 560, names, cfg.title.clone())
}

/// t-SNE of the train and the test embeddings side by side, one legend (S2.T3). Each set is
/// `(features [N, D], labels [N])`; each gets its own t-SNE (t-SNE layouts of two runs are
/// not aligned: compare the cluster structure, not positions).
///
/// # Errors
/// As [`tsne`], for either set.
pub fn tsne_pair(
    train: (&Tensor, &Tensor),
    test: (&Tensor, &Tensor),
    class_names: &[String],
    cfg: &TsneConfig,
) -> Result<Figure> {
    let n_train = train.0.size().first().copied().unwrap_or(0);
    let n_test = test.0.size().first().copied().unwrap_or(0);
    let c_train = check_labels(train.1, n_train, "tsne_pair train labels")?;
    let c_test = check_labels(test.1, n_test, "tsne_pair test labels")?;
    let names = legend_names(class_names, &[&c_train, &c_test])?;
    let l_train = tsne_embed(train.0, None, cfg)?;
    let l_test = tsne_embed(test.0, None, cfg)?;
    let panels = vec![
        panel(&l_train, c_train, format!("train ({n_train} points)"))?,
        panel(&l_test, c_test, format!("test ({n_test} points)"))?,
    ];
    render(panels, 2, 480, names, cfg.title.clone())
}

/// [`tsne_pair`] of two labelled [`Embeddings`] (e.g. `eval::extract_features` of the train and
/// the test split), with their class names: the homework's task 3 in one call.
///
/// ```no_run
/// use selfsup::prelude::*;
/// # fn demo(net: &ResNet, train: &ImageSet, test: &ImageSet) -> selfsup::Result<()> {
/// let cfg = FeatureConfig::default(); // average-pool embeddings
/// let (a, b) = (eval::extract_features(net, train, &cfg, Device::Cpu)?, eval::extract_features(net, test, &cfg, Device::Cpu)?);
/// let figure = viz::tsne_embeddings(&a, &b, &TsneConfig::default().title("SimCLR"))?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Data`] for unlabelled embeddings; as [`tsne_pair`].
pub fn tsne_embeddings(train: &Embeddings, test: &Embeddings, cfg: &TsneConfig) -> Result<Figure> {
    let names = if train.class_names.len() >= test.class_names.len() { &train.class_names } else { &test.class_names };
    tsne_pair((&train.features, labels_of(train, "train")?), (&test.features, labels_of(test, "test")?), names, cfg)
}

/// [`tsne_snapshots`] of fine-tuning snapshots (`eval::fine_tune_snapshots`), captioned with
/// their epoch: the homework's task 5 in one call.
///
/// # Errors
/// [`Error::Data`] for no snapshot or unlabelled embeddings; as [`tsne_snapshots`].
pub fn tsne_fine_tuning(snapshots: &[Snapshot], cfg: &TsneConfig) -> Result<Figure> {
    let first = snapshots.first().ok_or_else(|| {
        Error::Data("tsne_fine_tuning: expected at least one snapshot (eval::fine_tune_snapshots), got none".into())
    })?;
    let labels = labels_of(&first.embeddings, "snapshot")?;
    let panels: Vec<(String, Tensor)> = snapshots
        .iter()
        .map(|s| {
            let caption = match s.epoch {
                0 => "before fine-tuning".to_string(),
                1 => "after 1 epoch".to_string(),
                e => format!("after {e} epochs"),
            };
            (caption, s.embeddings.features.shallow_clone())
        })
        .collect();
    tsne_snapshots(&panels, labels, &first.embeddings.class_names, cfg)
}

fn labels_of<'a>(e: &'a Embeddings, what: &str) -> Result<&'a Tensor> {
    e.labels.as_ref().ok_or_else(|| {
        Error::Data(format!("t-SNE of the {what} embeddings: they have no labels to colour by; embed a labelled split"))
    })
}

/// A grid of t-SNE snapshots of the same points as their features change, e.g. during
/// fine-tuning (S2.T5). `snapshots` are `(caption, features [N, D])` in order; each layout
/// starts from the previous one (rescaled), so clusters keep their place and the pictures show
/// movement rather than arbitrary rotations.
///
/// # Errors
/// No snapshots; snapshots with different N; as [`tsne`] for each.
pub fn tsne_snapshots(
    snapshots: &[(String, Tensor)],
    labels: &Tensor,
    class_names: &[String],
    cfg: &TsneConfig,
) -> Result<Figure> {
    let n = match snapshots.first() {
        Some((_, f)) => f.size().first().copied().unwrap_or(0),
        None => {
            return Err(Error::Data(
                "tsne_snapshots: expected at least one (caption, features) snapshot, got none".into(),
            ))
        }
    };
    for (caption, f) in snapshots {
        if f.size().first() != Some(&n) {
            return Err(Error::shape(
                format!("tsne_snapshots '{caption}'"),
                format!("[{n}, D] (the same points in every snapshot)"),
                &f.size(),
            ));
        }
    }
    let classes = check_labels(labels, n, "tsne_snapshots labels")?;
    let names = legend_names(class_names, &[&classes])?;
    let mut panels = Vec::with_capacity(snapshots.len());
    let mut previous: Option<Tensor> = None;
    for (caption, features) in snapshots {
        let layout = tsne_embed(features, previous.as_ref(), cfg)?;
        panels.push(panel(&layout, classes.clone(), caption.clone())?);
        previous = Some(layout);
    }
    let columns = snapshots.len().min(4);
    render(panels, columns, 320, names, cfg.title.clone())
}
