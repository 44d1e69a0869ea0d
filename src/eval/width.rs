//! How wide is the optimum? (S2.B1) Three measures of the flatness of the loss around trained
//! weights θ, for comparing models (supervised, SimCLR/BYOL + probe or fine-tuning). Flat minima
//! are linked to better generalisation (Hochreiter & Schmidhuber 1997; Keskar et al. 2017), with
//! the caveat that sharpness depends on the weights' scale (Dinh et al. 2017, "Sharp Minima Can
//! Generalize For Deep Nets", <https://arxiv.org/abs/1703.04933>) — which is why the directions
//! below are filter-normalised and the ε-box is relative to |θ|.
//!
//! 1. **ε-sharpness** ([`epsilon_sharpness`]), Keskar, Mudigere, Nocedal, Smelyanskiy, Tang 2017,
//!    "On Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima"
//!    (<https://arxiv.org/abs/1609.04836>, Metric 2.1): the largest loss within a box around θ
//!    whose half-width is ε(|θ_i| + 1) per weight, relative to the loss at θ:
//!    φ = 100 · (max_{y ∈ box} f(θ + y) − f(θ)) / (1 + f(θ)). Keskar et al. solve the inner
//!    maximisation with L-BFGS-B (10 iterations); we take a few projected sign-gradient ascent
//!    steps (as adversarial-perturbation methods do), keeping the largest loss seen. It is a
//!    lower bound of the true maximum; more steps can only raise it.
//! 2. **Loss along random filter-normalised directions** ([`loss_curve_1d`], [`loss_surface_2d`]),
//!    Li, Xu, Taylor, Studer, Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets"
//!    (<https://arxiv.org/abs/1712.09913>, Section 4): f(θ + α·d) (and f(θ + α·d1 + β·d2)) for a
//!    Gaussian direction d rescaled filter by filter to the norm of the corresponding filter of θ,
//!    "d_{i,j} ← d_{i,j} / ‖d_{i,j}‖ · ‖θ_{i,j}‖", so that the scale invariance of ReLU networks
//!    does not distort the comparison between networks; biases and BatchNorm parameters get a zero
//!    direction (their code's `--xignore biasbn`). A wide valley around α = 0 is a flat optimum;
//!    [`LossCurve::curvature`] summarises it as the second derivative dᵀHd of a fitted parabola.
//! 3. **Top Hessian eigenvalue** ([`top_hessian_eigenvalue`]): the largest curvature in any
//!    direction, λ_max(∇²f(θ)), by power iteration on Hessian-vector products
//!    H·v = ∇(∇f(θ)·v) computed with double backward (Pearlmutter 1994, "Fast Exact
//!    Multiplication by the Hessian"; used to compare minima by Yao et al. 2020, PyHessian,
//!    <https://arxiv.org/abs/1912.07145>). Never forms H.
//!
//! The functions take the weights as a list of tensors and the loss as a closure that
//! recomputes it from their current values (on a fixed batch, BatchNorm in eval mode, so it is a
//! deterministic function of θ); every function restores θ bit for bit before returning.
//! [`flatness_report`] runs all three on a [`Classifier`] and a labelled set.
use super::backbone::Classifier;
use super::compare::ModelMetrics;
use super::draws::Draws;
use crate::data::ImageSet;
use crate::error::{config_err, Error, Result};
use crate::models::Stage;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Settings of the flatness measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlatnessConfig {
    /// ε, the box half-width relative to |θ_i| + 1. 1e-3 (Keskar et al. 2017 report ε = 1e-3 and
    /// 5e-4).
    pub epsilon: f64,
    /// Projected ascent steps of ε-sharpness. 10 (Keskar et al.: 10 L-BFGS-B iterations).
    pub ascent_steps: usize,
    /// Size of one ascent step as a share of the box half-width. 0.25 (a corner in 4 steps).
    pub ascent_step_size: f64,
    /// Points along a 1-D direction, α evenly spaced in [−range, range]. 21.
    pub curve_points: usize,
    /// Points per axis of the 2-D surface (0: no surface). 11.
    pub surface_points: usize,
    /// Half-width of the α (and β) range. 1.0 (Li et al. plot α ∈ [−1, 1]).
    pub range: f64,
    /// Give biases and BatchNorm parameters (tensors of rank ≤ 1) a zero direction. `true`
    /// (Li et al.'s `--xignore biasbn`).
    pub ignore_bias_and_bn: bool,
    /// At most this many power iterations. 100.
    pub power_iterations: usize,
    /// Stop when the eigenvalue estimate changes by less than this, relatively. 1e-4.
    pub power_tolerance: f64,
    /// Images of the set the loss is computed on (the first ones). 256.
    pub max_images: usize,
    /// Seed of the random directions and starting vectors. 0.
    pub seed: u64,
}

impl Default for FlatnessConfig {
    fn default() -> Self {
        FlatnessConfig {
            epsilon: 1e-3,
            ascent_steps: 10,
            ascent_step_size: 0.25,
            curve_points: 21,
            surface_points: 11,
            range: 1.0,
            ignore_bias_and_bn: true,
            power_iterations: 100,
            power_tolerance: 1e-4,
            max_images: 256,
            seed: 0,
        }
    }
}

impl FlatnessConfig {
    /// Fewer points and iterations, for CPU notebooks and tests.
    pub fn tiny() -> Self {
        FlatnessConfig {
            curve_points: 9,
            surface_points: 0,
            power_iterations: 20,
            max_images: 32,
            ..Default::default()
        }
    }
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(config_err!("FlatnessConfig.epsilon must be positive, got {}", self.epsilon));
        }
        if !(self.ascent_step_size > 0.0 && self.ascent_step_size <= 2.0) {
            return Err(config_err!(
                "FlatnessConfig.ascent_step_size must be in (0, 2], got {}",
                self.ascent_step_size
            ));
        }
        if self.curve_points < 3 {
            return Err(config_err!("FlatnessConfig.curve_points must be at least 3, got {}", self.curve_points));
        }
        if self.surface_points == 1 {
            return Err(config_err!("FlatnessConfig.surface_points must be 0 (no surface) or at least 2, got 1"));
        }
        if !(self.range > 0.0 && self.range.is_finite()) {
            return Err(config_err!("FlatnessConfig.range must be positive, got {}", self.range));
        }
        if self.power_iterations == 0 || self.max_images == 0 {
            return Err(config_err!("FlatnessConfig.power_iterations and max_images must be at least 1"));
        }
        if self.power_tolerance.is_nan() || self.power_tolerance <= 0.0 {
            return Err(config_err!("FlatnessConfig.power_tolerance must be positive, got {}", self.power_tolerance));
        }
        Ok(())
    }
}

fn check_params(params: &[Tensor], what: &str) -> Result<()> {
    if params.is_empty() {
        return Err(config_err!("{what}: no weight tensor given"));
    }
    if let Some(p) = params.iter().find(|p| !p.is_floating_point()) {
        return Err(Error::Data(format!("{what}: weights must be floating point, got {:?}", p.kind())));
    }
    Ok(())
}

fn scalar_loss(loss: &mut dyn FnMut() -> Result<Tensor>, what: &str) -> Result<Tensor> {
    let l = loss()?;
    if l.numel() != 1 {
        return Err(Error::shape(format!("{what}: the loss closure's result"), "a scalar []", &l.size()));
    }
    Ok(l.view([]))
}

fn value(l: &Tensor) -> f64 {
    l.to_kind(Kind::Double).double_value(&[])
}

/// Sets every weight to `base + delta` in place (no autograd).
fn set_weights(params: &[Tensor], base: &[Tensor], delta: &[Tensor]) {
    tch::no_grad(|| {
        for ((p, b), d) in params.iter().zip(base).zip(delta) {
            p.shallow_clone().copy_(&(b + d));
        }
    });
}

fn restore(params: &[Tensor], base: &[Tensor]) {
    tch::no_grad(|| {
        for (p, b) in params.iter().zip(base) {
            p.shallow_clone().copy_(b);
        }
    });
}

/// Turns gradients on for `params` and returns the previous flags.
fn require_grad(params: &[Tensor]) -> Vec<bool> {
    params
        .iter()
        .map(|p| {
            let was = p.requires_grad();
            if !was {
                let _ = p.set_requires_grad(true);
            }
            was
        })
        .collect()
}

fn reset_grad_flags(params: &[Tensor], flags: &[bool]) {
    for (p, &f) in params.iter().zip(flags) {
        if !f {
            let _ = p.set_requires_grad(false);
        }
    }
}

/// Runs `f` with gradients on for `params`, restoring the weights and the flags afterwards even
/// when `f` fails.
fn with_weights<T>(params: &[Tensor], f: impl FnOnce(&[Tensor]) -> Result<T>) -> Result<T> {
    let base: Vec<Tensor> = params.iter().map(|p| p.detach().copy()).collect();
    let flags = require_grad(params);
    let out = f(&base);
    restore(params, &base);
    reset_grad_flags(params, &flags);
    for p in params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    out
}

/// The ε-sharpness of [`epsilon_sharpness`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sharpness {
    /// f(θ).
    pub loss: f64,
    /// The largest loss found in the box, max f(θ + y).
    pub max_loss: f64,
    /// Keskar et al.'s φ = 100 · (max_loss − loss) / (1 + loss).
    pub sharpness: f64,
}

/// ε-sharpness (Keskar et al. 2017, Metric 2.1; see the module docs): the largest loss within
/// the box |y_i| ≤ ε(|θ_i| + 1), found by `cfg.ascent_steps` projected sign-gradient ascent
/// steps from the centre (plus a tiny seeded jitter, so that a zero gradient at θ does not stall
/// the ascent). `params` are restored bit for bit.
///
/// # Errors
/// [`Error::Config`] for a bad config or no weights; [`Error::Shape`] when the closure does not
/// return a scalar; the closure's errors.
pub fn epsilon_sharpness(
    params: &[Tensor],
    mut loss: impl FnMut() -> Result<Tensor>,
    cfg: &FlatnessConfig,
) -> Result<Sharpness> {
    cfg.validate()?;
    check_params(params, "epsilon_sharpness")?;
    with_weights(params, |base| {
        let f0 = tch::no_grad(|| scalar_loss(&mut loss, "epsilon_sharpness").map(|l| value(&l)))?;
        let radius: Vec<Tensor> = base.iter().map(|b| (b.abs() + 1.0) * cfg.epsilon).collect(); // per weight
        let mut draws = Draws::new(cfg.seed);
        let mut delta: Vec<Tensor> = radius.iter().map(|r| draws.uniform_like(r, -1.0, 1.0) * r * 1e-3).collect();
        let mut best = f0;
        for _ in 0..cfg.ascent_steps {
            set_weights(params, base, &delta);
            let l = scalar_loss(&mut loss, "epsilon_sharpness")?;
            best = best.max(value(&l));
            let grads = Tensor::run_backward(&[&l], params, false, false);
            delta = tch::no_grad(|| {
                delta
                    .iter()
                    .zip(&grads)
                    .zip(&radius)
                    .map(|((d, g), r)| {
                        let stepped = d + g.sign() * r * cfg.ascent_step_size; // ascent
                        stepped.clamp_tensor(Some(&-r), Some(r)) // projection onto the box
                    })
                    .collect()
            });
        }
        set_weights(params, base, &delta);
        let last = tch::no_grad(|| scalar_loss(&mut loss, "epsilon_sharpness").map(|l| value(&l)))?;
        best = best.max(last);
        Ok(Sharpness { loss: f0, max_loss: best, sharpness: 100.0 * (best - f0) / (1.0 + f0) })
    })
}

/// A random Gaussian direction with the shapes of `params`, normalised filter by filter (Li et al.
/// 2018): for weights of rank ≥ 2 each slice along dim 0 (a filter, or a row of a linear layer)
/// gets the norm of the same slice of the weights; tensors of rank ≤ 1 (biases, BatchNorm) get
/// zeros when `ignore_bias_and_bn`, else a copy of the weights (their code's choice). Drawn with
/// `seed` from the kit's own generator, so the same seed gives the same direction whatever other
/// threads draw meanwhile.
///
/// # Errors
/// [`Error::Config`] for no weights.
pub fn filter_normalized_direction(params: &[Tensor], ignore_bias_and_bn: bool, seed: u64) -> Result<Vec<Tensor>> {
    check_params(params, "filter_normalized_direction")?;
    let mut draws = Draws::new(seed);
    Ok(tch::no_grad(|| {
        params
            .iter()
            .map(|p| {
                let p = p.detach();
                if p.dim() <= 1 {
                    return if ignore_bias_and_bn { p.zeros_like() } else { p.copy() };
                }
                let d = draws.normal_like(&p); // same shape
                let mut shape = vec![p.size()[0]];
                shape.extend(std::iter::repeat_n(1, p.dim() - 1));
                let pn = p.flatten(1, -1).norm_scalaropt_dim(2.0, [1i64].as_slice(), false).view(shape.as_slice()); // [F, 1, ...]
                let dn = d.flatten(1, -1).norm_scalaropt_dim(2.0, [1i64].as_slice(), false).view(shape.as_slice());
                d * pn / (dn + 1e-10)
            })
            .collect()
    }))
}

/// The loss along one direction: `losses[i] = f(θ + alphas[i]·d)`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LossCurve {
    /// α values, increasing, 0 in the middle.
    pub alphas: Vec<f64>,
    /// Losses at each α.
    pub losses: Vec<f64>,
    /// The direction d (shapes of the weights); empty in a report loaded by
    /// [`flatness_report_saved`], which keeps the numbers, not the tensors.
    #[serde(skip)]
    pub direction: Vec<Tensor>,
}

impl LossCurve {
    /// Curvature along d: twice the α² coefficient of the least-squares parabola through the
    /// curve (exactly dᵀHd for a quadratic loss; larger = sharper).
    pub fn curvature(&self) -> f64 {
        // Normal equations of f ≈ c0 + c1 α + c2 α², solved by Cramer's rule.
        let n = self.alphas.len() as f64;
        let (mut s1, mut s2, mut s3, mut s4, mut t0, mut t1, mut t2) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (&a, &f) in self.alphas.iter().zip(&self.losses) {
            s1 += a;
            s2 += a * a;
            s3 += a * a * a;
            s4 += a * a * a * a;
            t0 += f;
            t1 += a * f;
            t2 += a * a * f;
        }
        let det3 = |m: [[f64; 3]; 3]| {
            m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
        };
        let m = [[n, s1, s2], [s1, s2, s3], [s2, s3, s4]];
        let d = det3(m);
        if d.abs() < 1e-300 {
            return f64::NAN;
        }
        let m2 = [[n, s1, t0], [s1, s2, t1], [s2, s3, t2]];
        2.0 * det3(m2) / d
    }
    // `series(name)` (the curve for `viz::line_plot`) is in `viz`.
}

fn linspace(range: f64, points: usize) -> Vec<f64> {
    (0..points).map(|i| -range + 2.0 * range * i as f64 / (points - 1) as f64).collect()
}

/// f(θ + α·d) for `cfg.curve_points` values of α in [−range, range], along `direction` or, when
/// `None`, a fresh [`filter_normalized_direction`] (Li et al. 2018). `params` are restored bit for
/// bit.
///
/// # Errors
/// [`Error::Config`] for a bad config; [`Error::Shape`] when the direction's shapes differ from
/// the weights'; the closure's errors.
pub fn loss_curve_1d(
    params: &[Tensor],
    mut loss: impl FnMut() -> Result<Tensor>,
    direction: Option<&[Tensor]>,
    cfg: &FlatnessConfig,
) -> Result<LossCurve> {
    cfg.validate()?;
    check_params(params, "loss_curve_1d")?;
    let d = match direction {
        Some(d) => check_direction(params, d)?,
        None => filter_normalized_direction(params, cfg.ignore_bias_and_bn, cfg.seed)?,
    };
    let alphas = linspace(cfg.range, cfg.curve_points);
    let losses = with_weights(params, |base| {
        tch::no_grad(|| {
            alphas
                .iter()
                .map(|&a| {
                    let delta: Vec<Tensor> = d.iter().map(|t| t * a).collect();
                    set_weights(params, base, &delta);
                    scalar_loss(&mut loss, "loss_curve_1d").map(|l| value(&l))
                })
                .collect::<Result<Vec<f64>>>()
        })
    })?;
    Ok(LossCurve { alphas, losses, direction: d })
}

fn check_direction(params: &[Tensor], d: &[Tensor]) -> Result<Vec<Tensor>> {
    if d.len() != params.len() {
        return Err(config_err!("direction has {} tensors, the weights {}", d.len(), params.len()));
    }
    for (i, (p, t)) in params.iter().zip(d).enumerate() {
        if p.size() != t.size() {
            return Err(Error::shape(
                format!("direction tensor {i}"),
                format!("{:?} like the weights", p.size()),
                &t.size(),
            ));
        }
    }
    Ok(d.iter().map(|t| t.detach().to_device(params[0].device()).to_kind(params[0].kind())).collect())
}

/// The loss over a plane: `losses[i][j] = f(θ + alphas[j]·d1 + betas[i]·d2)` (rows follow β, as
/// `viz::loss_landscape_2d` takes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossSurface {
    /// α values (x axis).
    pub alphas: Vec<f64>,
    /// β values (y axis).
    pub betas: Vec<f64>,
    /// `betas.len()` rows of `alphas.len()` losses.
    pub losses: Vec<Vec<f64>>,
}

/// f over the plane spanned by two random filter-normalised directions (Li et al. 2018, the
/// contour plots), `cfg.surface_points` per axis in [−range, range]. `params` are restored bit
/// for bit.
///
/// # Errors
/// [`Error::Config`] for a bad config or `surface_points = 0`; the closure's errors.
pub fn loss_surface_2d(
    params: &[Tensor],
    mut loss: impl FnMut() -> Result<Tensor>,
    cfg: &FlatnessConfig,
) -> Result<LossSurface> {
    cfg.validate()?;
    check_params(params, "loss_surface_2d")?;
    if cfg.surface_points < 2 {
        return Err(config_err!(
            "loss_surface_2d: FlatnessConfig.surface_points must be at least 2, got {}",
            cfg.surface_points
        ));
    }
    let d1 = filter_normalized_direction(params, cfg.ignore_bias_and_bn, cfg.seed)?;
    let d2 = filter_normalized_direction(params, cfg.ignore_bias_and_bn, cfg.seed.wrapping_add(1))?;
    let axis = linspace(cfg.range, cfg.surface_points);
    let losses = with_weights(params, |base| {
        tch::no_grad(|| {
            axis.iter()
                .map(|&b| {
                    axis.iter()
                        .map(|&a| {
                            let delta: Vec<Tensor> = d1.iter().zip(&d2).map(|(x, y)| x * a + y * b).collect();
                            set_weights(params, base, &delta);
                            scalar_loss(&mut loss, "loss_surface_2d").map(|l| value(&l))
                        })
                        .collect::<Result<Vec<f64>>>()
                })
                .collect::<Result<Vec<Vec<f64>>>>()
        })
    })?;
    Ok(LossSurface { alphas: axis.clone(), betas: axis, losses })
}

/// The largest eigenvalue of the Hessian of the loss at θ and the power iterations it took:
/// v ← Hv/‖Hv‖ with Hv = ∇(∇f·v) by double backward (`create_graph`), λ = vᵀHv, until λ changes
/// by less than `cfg.power_tolerance` relatively. Power iteration finds the eigenvalue of largest
/// magnitude; near a minimum the Hessian is (nearly) positive semi-definite, so that is λ_max.
/// `params` are left unchanged.
///
/// # Errors
/// [`Error::Config`] for a bad config; [`Error::Data`] when the loss does not depend on the
/// weights twice-differentiably (Hv is zero everywhere); the closure's errors.
pub fn top_hessian_eigenvalue(
    params: &[Tensor],
    mut loss: impl FnMut() -> Result<Tensor>,
    cfg: &FlatnessConfig,
) -> Result<(f64, usize)> {
    cfg.validate()?;
    check_params(params, "top_hessian_eigenvalue")?;
    with_weights(params, |_| {
        let l = scalar_loss(&mut loss, "top_hessian_eigenvalue")?;
        let grads = Tensor::run_backward(&[&l], params, true, true); // ∇f, still differentiable
        let mut draws = Draws::new(cfg.seed);
        let normalize = |v: Vec<Tensor>| -> (Vec<Tensor>, f64) {
            let norm = v.iter().map(|t| value(&t.square().sum(Kind::Double))).sum::<f64>().sqrt();
            (v.iter().map(|t| t / norm.max(1e-300)).collect(), norm)
        };
        let (mut v, _) = normalize(params.iter().map(|p| draws.normal_like(p)).collect());
        let mut lambda = f64::NAN;
        for it in 1..=cfg.power_iterations {
            let gv = grads
                .iter()
                .zip(&v)
                .map(|(g, x)| (g * x).sum(Kind::Float))
                .fold(Tensor::from(0.0f32).to_device(l.device()), |a, b| a + b);
            let hv: Vec<Tensor> =
                Tensor::run_backward(&[&gv], params, true, false).into_iter().map(|t| t.detach()).collect();
            let new_lambda: f64 = v.iter().zip(&hv).map(|(a, b)| value(&(a * b).sum(Kind::Double))).sum();
            let (next, norm) = normalize(hv);
            if norm == 0.0 {
                return Err(Error::Data(
                    "top_hessian_eigenvalue: H·v = 0; the loss is linear in these weights (or does not depend on them)"
                        .into(),
                ));
            }
            v = next;
            let done =
                lambda.is_finite() && (new_lambda - lambda).abs() <= cfg.power_tolerance * new_lambda.abs().max(1e-12);
            lambda = new_lambda;
            if done {
                return Ok((lambda, it));
            }
        }
        Ok((lambda, cfg.power_iterations))
    })
}

/// All three measures of one classifier.
#[derive(Debug, Serialize, Deserialize)]
pub struct FlatnessReport {
    /// The model's name.
    pub name: String,
    /// ε-sharpness (Keskar et al. 2017).
    pub sharpness: Sharpness,
    /// Loss along a random filter-normalised direction (Li et al. 2018).
    pub curve: LossCurve,
    /// Loss over a random filter-normalised plane (`None` when `surface_points` is 0).
    pub surface: Option<LossSurface>,
    /// λ_max of the Hessian.
    pub top_eigenvalue: f64,
    /// Power iterations used.
    pub power_iterations: usize,
}

impl FlatnessReport {
    /// The numbers as a row of [`crate::eval::compare`](fn@crate::eval::compare)'s table.
    pub fn metrics(&self) -> ModelMetrics {
        ModelMetrics::new(self.name.clone())
            .value("loss", self.sharpness.loss)
            .value("ε-sharpness (Keskar)", self.sharpness.sharpness)
            .value("curvature along d (Li)", self.curve.curvature())
            .value("λ_max (Hessian)", self.top_eigenvalue)
    }
}

/// The weights of a classifier that the measures perturb: every variable but BatchNorm's running
/// statistics, sorted by name.
fn classifier_weights(clf: &Classifier) -> Vec<Tensor> {
    super::backbone::sorted_variables(clf.vs())
        .into_iter()
        .filter(|(k, _)| {
            !(k.ends_with("running_mean") || k.ends_with("running_var") || k.ends_with("num_batches_tracked"))
        })
        .map(|(_, t)| t)
        .collect()
}

/// ε-sharpness, the 1-D (and, with `surface_points > 0`, 2-D) filter-normalised loss landscape
/// and λ_max of the cross-entropy of `clf` on the first `cfg.max_images` images of `set` (eval
/// mode, a fixed batch), over all its weights (frozen ones included). The classifier's weights are
/// unchanged afterwards.
///
/// # Errors
/// [`Error::Data`] for an unlabelled or empty set; [`Error::Config`] for a bad config; the
/// network's errors.
pub fn flatness_report(clf: &Classifier, set: &ImageSet, cfg: &FlatnessConfig) -> Result<FlatnessReport> {
    let (x, y) = flatness_batch(clf, set, cfg)?;
    measure_flatness(clf, &x, &y, cfg)
}

/// Version of [`flatness_report_saved`]'s files: raise it when the measures' code or the report's
/// fields change, so that reports computed by older code are computed again.
const SAVED_FLATNESS_VERSION: u32 = 1;

/// [`flatness_report`], kept in `dir` (one JSON file per model name, so give the models of one
/// folder different names) and loaded from there when it was computed before for the same
/// weights, the same images and the same settings: the key is a fingerprint of every variable of
/// the classifier, of the exact images and labels measured, the config and a version of this code.
/// Notebook 03's bonus cell measures seven models, which took a quarter or more of its Run All
/// after `./kit prepare`; with this, a re-run loads them and prints so. A loaded report has no direction tensors (`curve.direction` is empty); its
/// numbers are the computed ones, bit for bit.
///
/// # Errors
/// As [`flatness_report`]; [`Error::Io`] when the file cannot be written.
pub fn flatness_report_saved(
    clf: &Classifier,
    set: &ImageSet,
    cfg: &FlatnessConfig,
    dir: impl AsRef<std::path::Path>,
) -> Result<FlatnessReport> {
    let (x, y) = flatness_batch(clf, set, cfg)?;
    let key = serde_json::json!({
        "version": SAVED_FLATNESS_VERSION,
        "model": clf.name,
        "weights": crate::train::identity::weights_fingerprint(clf.vs())?,
        "images": crate::train::identity::Fingerprint::new().tensor(&x)?.tensor(&y)?.hex(),
        "config": cfg,
    });
    let file: String =
        clf.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let path = dir.as_ref().join(format!("flatness-{file}.json"));
    let (report, loaded) = crate::files::remembered(&path, &key, || measure_flatness(clf, &x, &y, cfg))?;
    if loaded {
        println!("flatness of {}: loaded from {} (measured before for these weights, images and settings)", clf.name, path.display());
    }
    Ok(report)
}

/// The fixed batch the measures use: the first `cfg.max_images` images of `set`, normalised as
/// the classifier expects, and their labels.
fn flatness_batch(clf: &Classifier, set: &ImageSet, cfg: &FlatnessConfig) -> Result<(Tensor, Tensor)> {
    cfg.validate()?;
    if set.is_empty() {
        return Err(Error::Data(format!("flatness_report: '{}' has no image", set.name)));
    }
    let n = cfg.max_images.min(set.len());
    let x = set.float_batch(0, n, clf.normalization.as_ref(), clf.device())?; // [n, 3, H, W]
    let y = set.label_batch(0, n, clf.device())?; // [n]
    Ok((x, y))
}

fn measure_flatness(clf: &Classifier, x: &Tensor, y: &Tensor, cfg: &FlatnessConfig) -> Result<FlatnessReport> {
    let params = classifier_weights(clf);
    let net = clf.net();
    let loss = || -> Result<Tensor> { Ok(net.forward_until(x, Stage::Fc, false)?.cross_entropy_for_logits(y)) };
    let sharpness = epsilon_sharpness(&params, loss, cfg)?;
    let curve = loss_curve_1d(&params, loss, None, cfg)?;
    let surface = if cfg.surface_points >= 2 { Some(loss_surface_2d(&params, loss, cfg)?) } else { None };
    let (top_eigenvalue, power_iterations) = top_hessian_eigenvalue(&params, loss, cfg)?;
    Ok(FlatnessReport { name: clf.name.clone(), sharpness, curve, surface, top_eigenvalue, power_iterations })
}
