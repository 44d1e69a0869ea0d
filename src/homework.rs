//! Checks for the exercises of the notebooks: the student writes a piece (a loss, an update, a
//! whole method), a check runs it next to the kit's on fixed inputs and says what differs.
//!
//! Every check returns `Ok(())` or an [`Error::Data`] whose message starts with
//! `check failed (<what>)` and says what differs — the shape, the value (both numbers and the
//! inputs' sizes), or which term, when the wrong value is one of the usual mistakes (a
//! self-similarity left in NT-Xent's denominator, the EMA's weights swapped, a BYOL loss that
//! forgets one direction, …). In a notebook a check is one line, `homework::check_nt_xent(my_nt_xent)?;`;
//! notebook 03 grades such cells with nbgrader (see the README, "For teachers").
//!
//! **One check, one piece.** A check of a whole method feeds the method's own loss (and EMA
//! update and τ schedule) the kit's intermediate values, so a wrong NT-Xent costs the NT-Xent
//! check and not also the SimCLR one: [`check_simclr_step`] grades the encoder, the batching of
//! the views and what goes into the loss, [`check_nt_xent`] the loss.
//!
//! Inputs are fixed numbers (no random generator is used for them); the method checks build the
//! kit's method next to the student's, which draws its initial weights from libtorch's generator
//! (they are overwritten with the student's weights): seed again after a check if a later cell
//! depends on the generator's state.
use crate::error::{Error, Result};
use crate::losses::{self, NtXentConfig};
use crate::methods::{Byol, ByolConfig, SimClr, SimClrConfig, SslMethod};
use crate::models::weights::{listed, load_by_name, store_vars, Mismatch};
use crate::momentum;
use std::collections::BTreeMap;
use tch::{nn, Device, Kind, Tensor};

/// Relative tolerance of the value comparisons: `|got − want| ≤ TOL · (1 + |want|)`.
const TOL: f64 = 1e-4;

fn fail(what: &str, msg: impl std::fmt::Display) -> Error {
    Error::Data(format!("check failed ({what}): {msg}"))
}

/// Fixed, irregular numbers in [−1, 1] (a hash of the index and `salt`), `shape`, f32 on `device`.
/// Deterministic and independent of libtorch's generator.
pub fn fixed_input(shape: &[i64], salt: f64, device: Device) -> Tensor {
    let numel: i64 = shape.iter().product();
    let i = Tensor::arange(numel, (Kind::Double, Device::Cpu)); // [numel]
    let h = ((i * 12.9898 + salt * 78.233).sin() * 43758.5453).frac(); // (−1, 1)
    h.to_kind(Kind::Float).reshape(shape).to_device(device)
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOL * (1.0 + want.abs())
}

/// The one number of a scalar result, after checking it is a scalar.
fn scalar(what: &str, t: &Tensor, describe: &str) -> Result<f64> {
    if t.dim() != 0 {
        return Err(fail(what, format!("shape: got {:?}, want [] (a scalar: {describe})", t.size())));
    }
    let v = t.detach().to_kind(Kind::Double).double_value(&[]);
    if !v.is_finite() {
        return Err(fail(what, format!("value: got {v}, want a finite number ({describe})")));
    }
    Ok(v)
}

/// The first named candidate whose value is `got`, as a hint sentence.
fn hint(got: f64, candidates: &[(f64, &str)]) -> String {
    candidates
        .iter()
        .find(|(v, _)| v.is_finite() && close(got, *v))
        .map(|(_, h)| format!(" Your value is {h}."))
        .unwrap_or_else(|| " It matches none of the usual mistakes: compare your code term by term with the formula.".into())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.detach().to_kind(Kind::Double).to_device(Device::Cpu) - b.detach().to_kind(Kind::Double).to_device(Device::Cpu))
        .abs()
        .max()
        .double_value(&[])
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && max_abs_diff(a, b) <= TOL * (1.0 + b.abs().max().double_value(&[]))
}

// ------------------------------------------------------------------------------------ NT-Xent

/// NT-Xent written out in f64 with switches for the usual mistakes, for the hints.
fn nt_xent_variant(z1: &Tensor, z2: &Tensor, tau: f64, mask_self: bool, normalize: bool, keep_pos: bool) -> f64 {
    let n = z1.size()[0];
    let z = Tensor::cat(&[z1.detach(), z2.detach()], 0).to_kind(Kind::Double).to_device(Device::Cpu); // [2N, D]
    let z = if normalize { &z / z.norm_scalaropt_dim(2.0, [1i64].as_slice(), true) } else { z };
    let sim = z.mm(&z.tr()) / tau; // [2N, 2N]
    let eye = Tensor::eye(2 * n, (Kind::Bool, Device::Cpu));
    let targets = (Tensor::arange(2 * n, (Kind::Int64, Device::Cpu)) + n).remainder(2 * n); // [2N]
    let pos = sim.gather(1, &targets.unsqueeze(1), false).squeeze_dim(1); // [2N]
    let mut logits = if mask_self { sim.masked_fill(&eye, f64::NEG_INFINITY) } else { sim };
    if !keep_pos {
        let pos_mask = targets.one_hot(2 * n).to_kind(Kind::Bool); // [2N, 2N]
        logits = logits.masked_fill(&pos_mask, f64::NEG_INFINITY);
    }
    (logits.logsumexp([1i64].as_slice(), false) - pos).mean(Kind::Double).double_value(&[])
}

/// [`check_nt_xent_on`] on the standard cases: N = 4, D = 8, τ = 0.5 and N = 3, D = 5, τ = 0.1.
///
/// `f(z1, z2, τ)` takes the un-normalised projections `[N, D]` of the two views and returns the
/// scalar loss averaged over the 2N anchors.
///
/// # Errors
/// See [`check_nt_xent_on`].
pub fn check_nt_xent(f: impl Fn(&Tensor, &Tensor, f64) -> Result<Tensor>) -> Result<()> {
    check_nt_xent_on(&f, 4, 8, 0.5, 1.0)?;
    check_nt_xent_on(&f, 3, 5, 0.1, 2.0)
}

/// Checks `f` against [`losses::nt_xent`] on fixed `[n, d]` inputs (`salt` picks them) at
/// temperature `tau`: the shape (a scalar), the value, and the gradient with respect to `z1`.
///
/// # Errors
/// [`Error::Data`] saying what differs, with a hint when the value is a known mistake
/// (self-similarity not masked, cosine not normalised, τ not applied, sum instead of mean, only
/// one view's anchors, the positive left out of the denominator).
pub fn check_nt_xent_on(
    f: impl Fn(&Tensor, &Tensor, f64) -> Result<Tensor>,
    n: i64,
    d: i64,
    tau: f64,
    salt: f64,
) -> Result<()> {
    let what = "NT-Xent";
    let z1 = (fixed_input(&[n, d], salt, Device::Cpu) * 2.0).set_requires_grad(true); // [N, D]
    let z2 = (z1.detach() + fixed_input(&[n, d], salt + 0.5, Device::Cpu)).set_requires_grad(true); // [N, D], near z1
    let want = losses::nt_xent(&z1, &z2, &NtXentConfig { temperature: tau })?; // []
    let got = f(&z1, &z2, tau).map_err(|e| fail(what, format!("your function returned an error: {e}")))?;
    let describe = format!("the loss averaged over the 2N = {} anchors", 2 * n);
    let g = scalar(what, &got, &describe)?;
    let w = want.double_value(&[]);
    if !close(g, w) {
        let two_n = (2 * n) as f64;
        let candidates = [
            (nt_xent_variant(&z1, &z2, tau, false, true, true), "NT-Xent with the self-similarity sim(z_i, z_i) left in the denominator: mask the diagonal of the 2N × 2N similarity matrix (k ≠ i), e.g. with masked_fill(eye, −∞)"),
            (nt_xent_variant(&z1, &z2, tau, true, false, true), "NT-Xent on raw dot products: sim(u, v) is the cosine, ℓ2-normalise z first"),
            (nt_xent_variant(&z1, &z2, 1.0, true, true, true), "NT-Xent without the temperature: divide the similarities by τ"),
            (nt_xent_variant(&z1, &z2, 1.0 / tau, true, true, true), "NT-Xent with the similarities multiplied by τ: divide by τ"),
            (w * two_n, "the sum over the 2N anchors: average it"),
            (w * 2.0, "twice NT-Xent: the mean over all 2N anchors already counts both directions"),
            (nt_xent_variant(&z1, &z2, tau, true, true, false), "NT-Xent with the positive left out of the denominator: the denominator sums over every k ≠ i, the positive included"),
        ];
        let mut extra = candidates.to_vec();
        let one_view = {
            // only the first view's N anchors
            let z = losses::l2_normalize(&Tensor::cat(&[z1.detach(), z2.detach()], 0))?;
            let sim = z.mm(&z.tr()) / tau;
            let logits = sim.masked_fill(&Tensor::eye(2 * n, (Kind::Bool, Device::Cpu)), f64::NEG_INFINITY).narrow(0, 0, n);
            let targets = Tensor::arange(n, (Kind::Int64, Device::Cpu)) + n;
            logits.cross_entropy_for_logits(&targets).double_value(&[])
        };
        extra.push((one_view, "the loss of the first view's N anchors only: average over all 2N (each view is an anchor once)"));
        return Err(fail(
            what,
            format!("value: got {g:.6}, want {w:.6} (losses::nt_xent) for N = {n}, D = {d}, τ = {tau}.{}", hint(g, &extra)),
        ));
    }
    if !got.requires_grad() {
        return Err(fail(
            what,
            "the value is right but the loss carries no gradient: do not compute it under no_grad, detach it or \
             rebuild it from numbers (the optimizer needs d loss / d z)",
        ));
    }
    let grad_of = |loss: &Tensor| -> Tensor {
        match Tensor::f_run_backward(&[loss], &[&z1], false, false) {
            Ok(g) => g.into_iter().next().filter(Tensor::defined).unwrap_or_else(|| z1.zeros_like()),
            Err(_) => z1.zeros_like(),
        }
    };
    let (g_got, g_want) = (grad_of(&got), grad_of(&want));
    if !same(&g_got, &g_want) {
        return Err(fail(
            what,
            format!(
                "the value is right but the gradient with respect to z1 differs by up to {:.2e}: is part of the loss \
                 detached (e.g. the positives or the normalisation)?",
                max_abs_diff(&g_got, &g_want)
            ),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------------------- a whole method

/// Variables of `vs` by name (detached).
fn vars_of(vs: &nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables().into_iter().map(|(k, t)| (k, t.detach())).collect()
}

/// Checks that `mine` holds exactly the variables of `kit` (names and shapes) and copies them in.
fn copy_weights(what: &str, mine: &BTreeMap<String, Tensor>, kit: &nn::VarStore, layout: &str) -> Result<()> {
    let mine: Vec<(String, Tensor)> = mine.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    let want = store_vars(kit);
    match Mismatch::find(&want, &mine) {
        Some(Mismatch::Names { missing, unexpected }) => Err(fail(
            what,
            format!("the variables differ from the kit's: missing {}, unexpected {}. {layout}", listed(&missing), listed(&unexpected)),
        )),
        Some(Mismatch::Shape { name, expected, got }) => Err(fail(
            what,
            format!("variable '{name}' has shape {got:?}, the kit's {expected:?}: build it from the config"),
        )),
        None => load_by_name("the variables", "", &want, &mine),
    }
}

/// The fixed pair of views of the method checks: `[4, 3, 32, 32]` each, on `device`.
fn fixed_views(device: Device) -> (Tensor, Tensor) {
    (fixed_input(&[4, 3, 32, 32], 3.0, device), fixed_input(&[4, 3, 32, 32], 4.0, device))
}

/// How many trainable variables of `vs` got no gradient from `loss` (and one of their names).
fn without_gradient(vs: &nn::VarStore, loss: &Tensor) -> (usize, Option<String>) {
    let vars: Vec<(String, Tensor)> =
        vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    if vars.is_empty() {
        return (0, None);
    }
    let mut names: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    if !loss.requires_grad() {
        return (names.len(), names.first().cloned());
    }
    let inputs: Vec<&Tensor> = vars.iter().map(|(_, t)| t).collect();
    let Ok(grads) = Tensor::f_run_backward(&[loss], inputs.as_slice(), true, false) else {
        return (names.len(), names.first().cloned());
    };
    let mut none = vars
        .iter()
        .zip(grads)
        .filter(|(_, g)| !g.defined() || g.abs().sum(Kind::Double).double_value(&[]) == 0.0)
        .map(|((n, _), _)| n.clone())
        .collect::<Vec<_>>();
    none.sort();
    (none.len(), none.first().cloned())
}

/// Checks one `training_step` of a student's SimCLR against the kit's [`SimClr`] with the same
/// weights, on fixed views `[4, 3, 32, 32]`.
///
/// `mine` must keep its variables as the kit does (`backbone.*` for the ResNet of
/// `config.backbone`, `projector.*` for the head of `config.projector`, in
/// [`SslMethod::online`]); its step must pass both views through the encoder as **one batch of
/// 2N** (BatchNorm statistics over all 2N views, as the official code), return
/// `loss = nt_xent(z1, z2, τ)` and `z = Some(z1)` (the first view's projections, detached).
/// `nt_xent` is the student's own loss: it is applied to the kit's projections for the expected
/// value, so a mistake in it is not counted here (that is [`check_nt_xent`]'s job).
///
/// # Errors
/// [`Error::Data`] saying what differs: the variables, `z` (with a hint when the views went
/// through the encoder separately or `z` is the backbone's features), the loss, or the
/// gradient (trainable variables the loss does not reach).
pub fn check_simclr_step<M: SslMethod + ?Sized>(
    mine: &mut M,
    config: &SimClrConfig,
    nt_xent: impl Fn(&Tensor, &Tensor, f64) -> Result<Tensor>,
) -> Result<()> {
    let what = "SimCLR training step";
    let device = mine.online().device();
    let kit = SimClr::new(config.clone(), device)?;
    copy_weights(
        what,
        &vars_of(mine.online()),
        kit.online(),
        "Build the ResNet under `online.root() / \"backbone\"` and the projection head under `online.root() / \"projector\"`, from the config, in one VarStore.",
    )?;
    let (v1, v2) = fixed_views(device);
    let n = v1.size()[0];
    let out = mine.training_step(&v1, &v2).map_err(|e| fail(what, format!("training_step returned an error: {e}")))?;
    // the kit's projections: both views as one batch of 2N
    let z = kit.project(&Tensor::cat(&[&v1, &v2], 0))?; // [2N, D]
    let (z1, z2) = (z.narrow(0, 0, n), z.narrow(0, n, n)); // [N, D]
    let d = z1.size()[1];
    let Some(my_z) = &out.z else {
        return Err(fail(what, "z is None: return Some(z1.detach()), the first view's projections, for the collapse monitor"));
    };
    if my_z.size() != z1.size() {
        let feat = config.backbone.feature_dim();
        let why = if my_z.size() == [n, feat] {
            " — the backbone's features: z is the projection g(f(x)), after the head"
        } else if my_z.size() == [2 * n, d] {
            " — both views: return the first view's projections only"
        } else {
            ""
        };
        return Err(fail(what, format!("z: shape {:?}, want [{n}, {d}] (the first view's projections){why}", my_z.size())));
    }
    if !same(my_z, &z1) {
        let separate = kit.project(&v1)?; // [N, D], BatchNorm over the first view only
        let why = if same(my_z, &separate) {
            "it equals the projections of the first view passed through the encoder on its own: pass both views as \
             one batch, Tensor::cat(&[v1, v2], 0), so that BatchNorm normalises over all 2N views as SimCLR does"
        } else {
            "is the encoder in training mode (features(x, true), forward_t(h, true))?"
        };
        return Err(fail(what, format!("z differs from the kit's by up to {:.2e}: {why}", max_abs_diff(my_z, &z1))));
    }
    let want = nt_xent(&z1, &z2, config.temperature).map_err(|e| fail(what, format!("your nt_xent returned an error: {e}")))?;
    let w = scalar(what, &want, "your nt_xent")?;
    let g = scalar(what, &out.loss, "the loss of the step")?;
    if !close(g, w) {
        let swapped = scalar(what, &nt_xent(&z2, &z1, config.temperature)?, "")?;
        let other_t = nt_xent(&z1, &z2, 0.5).ok().map(|t| t.double_value(&[])).unwrap_or(f64::NAN);
        let why = hint(
            g,
            &[
                (swapped, "your nt_xent of (z2, z1): pass the first view's projections first"),
                (other_t, "your nt_xent at τ = 0.5: use the config's temperature"),
            ],
        );
        return Err(fail(what, format!("loss: got {g:.6}, want {w:.6} = your nt_xent(z1, z2, τ = {}) of the kit's projections.{why}", config.temperature)));
    }
    let (count, first) = without_gradient(mine.online(), &out.loss);
    if count > 0 {
        return Err(fail(
            what,
            format!(
                "the loss does not reach {count} trainable variable(s) (e.g. {}): compute the features and projections \
                 with gradients",
                first.unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------ BYOL

/// Checks a cosine τ schedule `f(k, K, τ_base)` against [`momentum::cosine_tau`] at a few
/// steps: τ(0) = τ_base, τ(K/2) halfway, τ(K) = 1, and steps in between.
///
/// # Errors
/// [`Error::Data`] naming the step, both values and, when recognised, the mistake (a linear
/// schedule, a decreasing one, the cosine without its `(· + 1)/2`).
pub fn check_cosine_tau(f: impl Fn(usize, usize, f64) -> f64) -> Result<()> {
    let what = "cosine τ schedule";
    for (k, total, base) in [(0, 100, 0.996), (50, 100, 0.996), (100, 100, 0.996), (25, 100, 0.99), (7, 13, 0.9)] {
        let want = momentum::cosine_tau(k, total, base)?;
        let got = f(k, total, base);
        if !close(got, want) || !got.is_finite() {
            let p = k as f64 / total as f64;
            let c = (std::f64::consts::PI * p).cos();
            let why = hint(
                got,
                &[
                    (base + (1.0 - base) * p, "a linear schedule: τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2"),
                    ((1.0 - base) * (c + 1.0) / 2.0, "(1 − τ_base)·(cos(πk/K) + 1)/2: τ is one minus that"),
                    (1.0 - (1.0 - base) * c, "1 − (1 − τ_base)·cos(πk/K): the cosine needs (· + 1)/2 to run from 1 to 0"),
                    (1.0 - (1.0 - base) * (1.0 - c) / 2.0, "a schedule running from 1 down to τ_base: it should rise from τ_base to 1"),
                    (base, "τ_base: the schedule should move τ from τ_base at k = 0 to 1 at k = K"),
                ],
            );
            return Err(fail(what, format!("τ(k = {k}, K = {total}, τ_base = {base}): got {got}, want {want}.{why}")));
        }
    }
    Ok(())
}

/// Two small stores with the same paths (a linear layer and a BatchNorm with its running
/// statistics), with fixed weights; the online one has one more layer ("predictor"), as BYOL's.
fn ema_stores() -> Result<(nn::VarStore, nn::VarStore)> {
    let build = |with_extra: bool, salt: f64| -> Result<nn::VarStore> {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let _ = nn::linear(&root / "layer", 3, 2, Default::default());
        let _ = nn::batch_norm1d(&root / "bn", 2, Default::default());
        if with_extra {
            let _ = nn::linear(&root / "predictor", 2, 2, Default::default());
        }
        tch::no_grad(|| -> Result<()> {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0)); // the same values for the same names, every time
            for (i, (_, mut t)) in vars.into_iter().enumerate() {
                let shape = t.size();
                t.f_copy_(&fixed_input(&shape, salt + i as f64, Device::Cpu))?;
            }
            Ok(())
        })?;
        Ok(vs)
    };
    let online = build(true, 10.0)?;
    let mut target = build(false, 20.0)?;
    target.freeze();
    Ok((target, online))
}

/// Checks an EMA update `f(target, online, τ)` (ξ ← τ ξ + (1 − τ) θ, in place) against
/// [`momentum::ema_update`] on two small stores: every target parameter, the target's
/// BatchNorm buffers (left alone), and the online store (unchanged).
///
/// # Errors
/// [`Error::Data`] naming the variable that differs and, when recognised, the mistake (the
/// weights swapped, the target not updated in place, the online weights copied, the buffers
/// averaged too).
pub fn check_ema_update(f: impl Fn(&nn::VarStore, &nn::VarStore, f64) -> Result<()>) -> Result<()> {
    let what = "EMA update";
    let tau = 0.9;
    let (target, online) = ema_stores()?;
    let (want_target, _) = ema_stores()?;
    momentum::ema_update(&want_target, &online, tau)?;
    let before = vars_of(&target);
    let online_before = vars_of(&online).into_iter().map(|(k, t)| (k, t.copy())).collect::<BTreeMap<_, _>>();
    let before: BTreeMap<String, Tensor> = before.into_iter().map(|(k, t)| (k, t.copy())).collect();
    f(&target, &online, tau).map_err(|e| fail(what, format!("your function returned an error: {e}")))?;
    for (name, t) in vars_of(&online) {
        if !same(&t, &online_before[&name]) {
            return Err(fail(what, format!("your update changed the online network's '{name}': only the target moves")));
        }
    }
    let got = vars_of(&target);
    let online_vars = vars_of(&online);
    for (name, want) in vars_of(&want_target) {
        let g = &got[&name];
        if same(g, &want) {
            continue;
        }
        let (old, o) = (&before[&name], &online_vars[&name]);
        let is_buffer = same(&want, old);
        let why = if is_buffer {
            "it is a BatchNorm running statistic, a buffer rather than a parameter: average only the online \
             network's trainable variables (online.trainable_variables()); the target keeps its own statistics"
        } else if same(g, old) {
            "it did not change: update the target's tensors in place (under tch::no_grad, e.g. t.copy_(..) or \
             t.lerp_(..)); assigning to a copy leaves the store as it was"
        } else if same(g, &(old * (1.0 - tau) + o * tau)) {
            "it is (1 − τ)·ξ + τ·θ: the weights are swapped, the target keeps τ of itself, ξ ← τ ξ + (1 − τ) θ"
        } else if same(g, o) {
            "it equals the online weights: that is τ = 0, the target should move only (1 − τ) of the way"
        } else {
            "compare with ξ ← τ ξ + (1 − τ) θ"
        };
        return Err(fail(
            what,
            format!("target variable '{name}' differs from the kit's by up to {:.2e} (τ = {tau}): {why}", max_abs_diff(g, &want)),
        ));
    }
    Ok(())
}

/// Checks BYOL's symmetric loss `f(p1, p2, z′1, z′2)` (predictions of the two views, target
/// projections of the two views) against [`losses::byol_loss`] on fixed `[5, 6]` inputs: the
/// shape, the value, that the gradient reaches the predictions, and that it does not reach the
/// target projections (stop-gradient).
///
/// # Errors
/// [`Error::Data`] saying what differs, with a hint for a known mistake (one direction only,
/// each view paired with its own target, no normalisation, the SimSiam form, a sum over the
/// batch).
pub fn check_byol_loss(f: impl Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<Tensor>) -> Result<()> {
    let what = "BYOL loss";
    let shape = [5i64, 6];
    let p1 = fixed_input(&shape, 31.0, Device::Cpu).set_requires_grad(true);
    let p2 = fixed_input(&shape, 32.0, Device::Cpu).set_requires_grad(true);
    let z1 = fixed_input(&shape, 33.0, Device::Cpu).set_requires_grad(true);
    let z2 = fixed_input(&shape, 34.0, Device::Cpu).set_requires_grad(true);
    let want = losses::byol_loss(&p1, &p2, &z1, &z2)?;
    let got = f(&p1, &p2, &z1, &z2).map_err(|e| fail(what, format!("your function returned an error: {e}")))?;
    let g = scalar(what, &got, "the sum of the two directions, each averaged over the batch")?;
    let w = want.double_value(&[]);
    if !close(g, w) {
        let nm = |p: &Tensor, z: &Tensor| losses::normalized_mse(p, z).map(|t| t.double_value(&[])).unwrap_or(f64::NAN);
        let mse = |p: &Tensor, z: &Tensor| (p - z).square().sum_dim_intlist([1i64].as_slice(), false, Kind::Float).mean(Kind::Float).double_value(&[]);
        let neg = |p: &Tensor, z: &Tensor| losses::negative_cosine(p, z).map(|t| t.double_value(&[])).unwrap_or(f64::NAN);
        let why = hint(
            g,
            &[
                (nm(&p1, &z2), "one direction only, ‖p̄1 − z̄′2‖²: add the symmetric term ‖p̄2 − z̄′1‖²"),
                (nm(&p2, &z1), "one direction only, ‖p̄2 − z̄′1‖²: add the symmetric term ‖p̄1 − z̄′2‖²"),
                (nm(&p1, &z1) + nm(&p2, &z2), "each view's prediction against the target of the same view: predict the other view's target (p1 with z′2, p2 with z′1)"),
                (mse(&p1, &z2) + mse(&p2, &z1), "the squared error without ℓ2-normalising p and z′ first"),
                (neg(&p1, &z2) + neg(&p2, &z1), "SimSiam's −cos form: BYOL's is 2 − 2·cos for each direction"),
                (w / 2.0, "half the loss: the two directions are summed, not averaged"),
                (w * shape[0] as f64, "summed over the batch: average each direction over the N samples"),
            ],
        );
        return Err(fail(what, format!("value: got {g:.6}, want {w:.6} (losses::byol_loss) for N = 5, D = 6.{why}")));
    }
    if !got.requires_grad() {
        return Err(fail(what, "the loss carries no gradient to the predictions p: do not detach them"));
    }
    let reached = |x: &Tensor| match Tensor::f_run_backward(&[&got], &[x], true, false) {
        Ok(g) => g.first().is_some_and(|g| g.defined() && g.abs().sum(Kind::Double).double_value(&[]) > 0.0),
        Err(_) => false,
    };
    let grads = [reached(&p1), reached(&z1), reached(&z2)];
    if !grads[0] {
        return Err(fail(what, "the loss carries no gradient to the predictions p: do not detach them"));
    }
    if grads[1] || grads[2] {
        return Err(fail(
            what,
            "the gradient reaches the target projections z′: stop it there (z.detach()), only the online network learns \
             from the loss",
        ));
    }
    Ok(())
}

/// Moves every trainable variable of `mine`'s online network by a fixed small amount (what an
/// optimizer step would do) and copies the result into `kit`.
fn nudge_online<M: SslMethod + ?Sized>(mine: &M, kit: &nn::VarStore, salt: f64) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        let mut vars: Vec<(String, Tensor)> = mine.online().variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (_, mut t)) in vars.into_iter().enumerate() {
            let nudge = fixed_input(&t.size(), 100.0 * salt + i as f64, Device::Cpu).to_device(t.device()) * 0.05;
            let _ = t.f_add_(&nudge)?;
        }
        Ok(())
    })?;
    let mine: Vec<(String, Tensor)> = vars_of(mine.online()).into_iter().collect();
    load_by_name("the variables of the kit's copy", "", &store_vars(kit), &mine)
}

/// Checks one step of a student's BYOL against the kit's [`Byol`] with the same weights, on
/// fixed views `[4, 3, 32, 32]`: the online and target networks' variables, the target starting
/// as a copy of the online network, the first view's projections `z`, the loss, and the target
/// after [`SslMethod::after_step`].
///
/// `mine` keeps its variables as the kit's `Byol` does: [`SslMethod::online`] holds
/// `backbone.*`, `projector.*`, `predictor.*`; [`SslMethod::state`] returns the target network
/// as `target.backbone.*`, `target.projector.*`. Each view goes through the networks on its own
/// (BYOL's BatchNorm statistics are per view). Before the step and again before `after_step`
/// the check moves every online parameter by a fixed small amount in both copies, as an optimizer
/// step would, so that targets taken from the online network or a τ that ignores the schedule
/// show. The expected values use the student's own
/// `loss`, `tau` and `ema` (the other exercises), so this check grades how the method plugs them
/// together, not the pieces.
///
/// # Errors
/// [`Error::Config`] for a config without momentum; [`Error::Data`] saying what differs.
pub fn check_byol_step<M: SslMethod + ?Sized>(
    mine: &mut M,
    config: &ByolConfig,
    loss: impl Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    tau: impl Fn(usize, usize, f64) -> f64,
    ema: impl Fn(&nn::VarStore, &nn::VarStore, f64) -> Result<()>,
) -> Result<()> {
    let what = "BYOL training step";
    if !config.momentum {
        return Err(crate::error::config_err!("check_byol_step needs a config with a momentum target (momentum: true)"));
    }
    let device = mine.online().device();
    let mut kit = Byol::new(config.clone(), device)?;
    let online = vars_of(mine.online());
    copy_weights(
        what,
        &online,
        kit.online(),
        "The online VarStore holds the ResNet under \"backbone\", the projector under \"projector\" and the predictor under \"predictor\".",
    )?;
    let state: BTreeMap<String, Tensor> = mine.state().into_iter().collect();
    for (name, t) in &state {
        let Some(o) = name.strip_prefix("target.").and_then(|n| online.get(n)) else { continue };
        if t.size() == o.size() && !same(t, o) && !name.contains("running_") && !name.contains("num_batches") {
            return Err(fail(
                what,
                format!("the target's '{name}' differs from the online network's: the target starts as a copy (target.copy(&online)) before the first step"),
            ));
        }
    }
    let kit_state: Vec<String> = kit.state().into_iter().map(|(k, _)| k).collect();
    let mine_names: Vec<&String> = state.keys().collect();
    if kit_state.iter().collect::<Vec<_>>() != mine_names {
        let shown = |v: Vec<&String>| v.iter().take(3).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        return Err(fail(
            what,
            format!(
                "state() returns {} tensors ({}…), the kit's BYOL {} ({}…): return the target network's variables named \
                 \"target.\" + their name (methods::store_state(&self.target, |n| format!(\"target.{{n}}\")))",
                mine_names.len(),
                shown(mine_names.clone()),
                kit_state.len(),
                shown(kit_state.iter().collect())
            ),
        ));
    }
    kit.load_state(&state.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect::<Vec<_>>())?;
    // as after an optimizer step, the online network differs from the target
    nudge_online(mine, kit.online(), 1.0)?;
    let (v1, v2) = fixed_views(device);
    let out = mine.training_step(&v1, &v2).map_err(|e| fail(what, format!("training_step returned an error: {e}")))?;
    let (z1, p1) = kit.online_forward(&v1)?;
    let (z2, p2) = kit.online_forward(&v2)?;
    let (t1, t2) = (kit.target_forward(&v1)?, kit.target_forward(&v2)?);
    let Some(my_z) = &out.z else {
        return Err(fail(what, "z is None: return Some(z1.detach()), the first view's online projections, for the collapse monitor"));
    };
    if my_z.size() != z1.size() || !same(my_z, &z1) {
        let both = kit.online_forward(&Tensor::cat(&[&v1, &v2], 0))?.0.narrow(0, 0, 4);
        let why = if my_z.size() == z1.size() && same(my_z, &both) {
            ": it matches both views passed as one batch; BYOL passes each view on its own (BatchNorm statistics per view)"
        } else {
            ": z is the projector's output for the first view (not the prediction), in training mode"
        };
        return Err(fail(what, format!("z differs from the kit's online projection of the first view (shape {:?}, want {:?}){why}", my_z.size(), z1.size())));
    }
    let want = scalar(what, &loss(&p1, &p2, &t1, &t2).map_err(|e| fail(what, format!("your loss returned an error: {e}")))?, "your loss")?;
    let g = scalar(what, &out.loss, "the loss of the step")?;
    if !close(g, want) {
        let cand = |a: &Tensor, b: &Tensor, c: &Tensor, d: &Tensor| loss(a, b, c, d).ok().map(|t| t.double_value(&[])).unwrap_or(f64::NAN);
        let why = hint(
            g,
            &[
                (cand(&p1, &p2, &z1.detach(), &z2.detach()), "your loss with the online projections as targets: the targets come from the target network"),
                (cand(&p1, &p2, &t2, &t1), "your loss with the two targets swapped: pass (p1, p2, z′1, z′2), the loss pairs them across views"),
                (cand(&z1, &z2, &t1, &t2), "your loss of the projections: the online side goes through the predictor, p = q(z)"),
            ],
        );
        return Err(fail(what, format!("loss: got {g:.6}, want {want:.6} = your loss(p1, p2, z′1, z′2) of the kit's networks.{why}")));
    }
    let (count, first) = without_gradient(mine.online(), &out.loss);
    if count > 0 {
        return Err(fail(
            what,
            format!("the loss does not reach {count} trainable online variable(s) (e.g. {}): compute the online side with gradients", first.unwrap_or_default()),
        ));
    }
    // another optimizer step moves the online network, then after_step updates the target with
    // the schedule's τ
    nudge_online(mine, kit.online(), 2.0)?;
    let (step, total) = (3, 10);
    mine.after_step(step, total).map_err(|e| fail(what, format!("after_step returned an error: {e}")))?;
    let target = kit.target().ok_or_else(|| fail(what, "the kit's BYOL has no target"))?;
    let before = vars_of(target).into_iter().map(|(k, t)| (k, t.copy())).collect::<BTreeMap<_, _>>();
    let scheduled = tau(step, total, config.base_momentum);
    ema(target, kit.online(), scheduled).map_err(|e| fail(what, format!("your EMA update returned an error: {e}")))?;
    let trainable: std::collections::HashSet<usize> =
        kit.online().trainable_variables().iter().map(|t| t.data_ptr() as usize).collect();
    let kit_online = kit.online().variables();
    let got: BTreeMap<String, Tensor> = mine.state().into_iter().collect();
    for (name, want_t) in vars_of(target) {
        let is_param = kit_online.get(&name).is_some_and(|o| trainable.contains(&(o.data_ptr() as usize)));
        let Some(g) = got.get(&format!("target.{name}")) else { continue };
        if !is_param || same(g, &want_t) {
            continue;
        }
        let why = if same(g, &before[&name]) {
            "after_step left the target unchanged: call your EMA update there"
        } else {
            let constant = before[&name].shallow_clone() * config.base_momentum + kit_online[&name].detach() * (1.0 - config.base_momentum);
            if same(g, &constant) {
                "it was updated with τ_base: use the scheduled τ(k, K) of your cosine schedule with the step and total after_step receives"
            } else {
                "after_step should apply your EMA update with τ = your_cosine_tau(step, total_steps, τ_base)"
            }
        };
        return Err(fail(what, format!("target variable '{name}' after after_step({step}, {total}) differs from the kit's by up to {:.2e}: {why}", max_abs_diff(g, &want_t))));
    }
    Ok(())
}

// ------------------------------------------------------------------- notebooks 01, 04 and 05

/// Checks MoCo's InfoNCE `f(q, k, queue, τ)` (normalised queries and positive keys `[N, C]`,
/// the queue of negatives as columns `[C, K]`) against [`losses::info_nce`] on fixed inputs.
///
/// # Errors
/// [`Error::Data`] saying what differs, with a hint for a known mistake (the positive left out
/// of the denominator, a sum over the queries, τ not applied).
pub fn check_info_nce(f: impl Fn(&Tensor, &Tensor, &Tensor, f64) -> Result<Tensor>) -> Result<()> {
    let what = "InfoNCE";
    let (n, c, k, tau) = (4i64, 8i64, 16i64, 0.2);
    let q = losses::l2_normalize(&fixed_input(&[n, c], 41.0, Device::Cpu))?.set_requires_grad(true);
    let kp = losses::l2_normalize(&(q.detach() + fixed_input(&[n, c], 42.0, Device::Cpu) * 0.5))?;
    let queue = losses::l2_normalize(&fixed_input(&[k, c], 43.0, Device::Cpu))?.tr().contiguous(); // [C, K]
    let want = losses::info_nce(&q, &kp, &queue, &losses::InfoNceConfig { temperature: tau })?;
    let got = f(&q, &kp, &queue, tau).map_err(|e| fail(what, format!("your function returned an error: {e}")))?;
    let g = scalar(what, &got, "the loss averaged over the N queries")?;
    let w = want.double_value(&[]);
    if !close(g, w) {
        let pos = (&q * &kp).sum_dim_intlist([1i64].as_slice(), false, Kind::Double).detach(); // [N]
        let neg = q.detach().to_kind(Kind::Double).mm(&queue.to_kind(Kind::Double)); // [N, K]
        let only_neg = (neg.shallow_clone() / tau).logsumexp([1i64].as_slice(), false) - &pos / tau;
        let no_tau = Tensor::cat(&[pos.unsqueeze(1), neg], 1).logsumexp([1i64].as_slice(), false) - &pos;
        let why = hint(
            g,
            &[
                (only_neg.mean(Kind::Double).double_value(&[]), "InfoNCE with only the negatives in the denominator: it sums over the positive and the K negatives"),
                (w * n as f64, "the sum over the N queries: average it"),
                (no_tau.mean(Kind::Double).double_value(&[]), "InfoNCE without the temperature: divide the logits by τ"),
            ],
        );
        return Err(fail(what, format!("value: got {g:.6}, want {w:.6} (losses::info_nce) for N = {n}, C = {c}, K = {k}, τ = {tau}.{why}")));
    }
    if !got.requires_grad() {
        return Err(fail(what, "the value is right but the loss carries no gradient to q"));
    }
    Ok(())
}

/// Checks MoCo's logits `f(q, k, queue, τ)` → `[N, 1+K]` (the positive's logit in column 0, then
/// one per queued key) against [`losses::info_nce_logits`] on fixed inputs.
///
/// # Errors
/// [`Error::Data`] for a shape or a value that differs, naming the column.
pub fn check_moco_logits(f: impl Fn(&Tensor, &Tensor, &Tensor, f64) -> Result<Tensor>) -> Result<()> {
    let what = "MoCo logits";
    let (n, c, k, tau) = (4i64, 8i64, 12i64, 0.2);
    let q = losses::l2_normalize(&fixed_input(&[n, c], 51.0, Device::Cpu))?;
    let kp = losses::l2_normalize(&fixed_input(&[n, c], 52.0, Device::Cpu))?;
    let queue = losses::l2_normalize(&fixed_input(&[k, c], 53.0, Device::Cpu))?.tr().contiguous(); // [C, K]
    let want = losses::info_nce_logits(&q, &kp, &queue, tau)?; // [N, 1+K]
    let got = f(&q, &kp, &queue, tau).map_err(|e| fail(what, format!("your function returned an error: {e}")))?;
    if got.size() != want.size() {
        return Err(fail(what, format!("shape: got {:?}, want [{n}, {}]: [N, 1 + K], the positive first, then the K queued keys", got.size(), k + 1)));
    }
    if !same(&got, &want) {
        let col = (got.detach().to_kind(Kind::Double) - want.to_kind(Kind::Double)).abs().amax([0i64].as_slice(), false).argmax(0, false).int64_value(&[]);
        let why = if col == 0 { "column 0 holds q·k⁺/τ, the positive" } else { "columns 1..=K hold q·queue/τ, one per queued key" };
        return Err(fail(what, format!("values differ by up to {:.2e}, first in column {col}: {why}", max_abs_diff(&got, &want))));
    }
    Ok(())
}

/// Checks the Barlow Twins loss `f(z1, z2, λ)` against [`losses::barlow_twins`] (ε = 1e-5,
/// biased batch variance, as `BatchNorm1d`) on fixed `[8, 16]` inputs.
///
/// # Errors
/// [`Error::Data`] saying what differs, with a hint for a known mistake (λ on the wrong term,
/// no λ, the unbiased std, no normalisation).
pub fn check_barlow_twins(f: impl Fn(&Tensor, &Tensor, f64) -> Result<Tensor>) -> Result<()> {
    let what = "Barlow Twins loss";
    let (n, d, lambda) = (8i64, 16i64, 5e-3);
    let z1 = fixed_input(&[n, d], 61.0, Device::Cpu).set_requires_grad(true);
    let z2 = (z1.detach() + fixed_input(&[n, d], 62.0, Device::Cpu) * 0.5).set_requires_grad(true);
    let cfg = losses::BarlowTwinsLossConfig { off_diagonal_weight: lambda, ..Default::default() };
    let want = losses::barlow_twins(&z1, &z2, &cfg)?;
    let got = f(&z1, &z2, lambda).map_err(|e| fail(what, format!("your function returned an error: {e}")))?;
    let g = scalar(what, &got, "Σ(1 − C_ii)² + λ Σ_{i≠j} C_ij²")?;
    let w = want.double_value(&[]);
    if !close(g, w) {
        let terms = |c: &Tensor| losses::barlow_twins_terms(c).map(|(a, b)| (a.double_value(&[]), b.double_value(&[])));
        let (on, off) = terms(&losses::cross_correlation(&z1, &z2, cfg.eps)?)?;
        let unbiased = {
            let s = |z: &Tensor| (z - z.mean_dim([0i64].as_slice(), true, Kind::Float)) / z.std_dim([0i64].as_slice(), true, true);
            let c = s(&z1).tr().mm(&s(&z2)) / n as f64;
            terms(&c).map(|(a, b)| a + lambda * b).unwrap_or(f64::NAN)
        };
        let raw = terms(&(z1.tr().mm(&z2) / n as f64)).map(|(a, b)| a + lambda * b).unwrap_or(f64::NAN);
        let why = hint(
            g,
            &[
                (lambda * on + off, "λ on the invariance (diagonal) term: λ weighs the redundancy (off-diagonal) term"),
                (on + off, "without λ on the off-diagonal term"),
                (on, "the invariance term alone: add λ Σ_{i≠j} C_ij²"),
                (unbiased, "the loss with the unbiased std and no ε: normalise as BatchNorm1d does, biased variance + ε = 1e-5"),
                (raw, "the loss without normalising z along the batch: subtract the mean and divide by the std per dimension"),
            ],
        );
        return Err(fail(what, format!("value: got {g:.6}, want {w:.6} (losses::barlow_twins) for N = {n}, D = {d}, λ = {lambda}.{why}")));
    }
    if !got.requires_grad() {
        return Err(fail(what, "the value is right but the loss carries no gradient"));
    }
    Ok(())
}

/// Checks a queue update `f(queue, ptr, keys) → new ptr` (builder.py's `_dequeue_and_enqueue`:
/// the columns `ptr..ptr+B` of `queue` `[C, K]` become `keys.T`, in place, and the pointer moves
/// to `(ptr + B) % K`), as [`crate::methods::Moco::enqueue`] does, on a queue of K = 8 keys of
/// dimension 4: twice with a batch of 4 (the second wraps around) and once more.
///
/// # Errors
/// [`Error::Data`] naming the call, the pointer or the columns that differ.
pub fn check_enqueue(f: impl Fn(&Tensor, i64, &Tensor) -> Result<i64>) -> Result<()> {
    let what = "queue update";
    let (c, big_k, b) = (4i64, 8i64, 4i64);
    let queue = fixed_input(&[c, big_k], 71.0, Device::Cpu);
    let want_queue = queue.copy();
    let mut ptr = 0i64;
    for call in 0..3 {
        let keys = fixed_input(&[b, c], 72.0 + call as f64, Device::Cpu); // [B, C]
        let before = queue.copy();
        let got_ptr = f(&queue, ptr, &keys).map_err(|e| fail(what, format!("call {}: your function returned an error: {e}", call + 1)))?;
        want_queue.narrow(1, ptr, b).copy_(&keys.tr());
        let want_ptr = (ptr + b) % big_k;
        if same(&queue, &before) && !same(&before, &want_queue) {
            return Err(fail(what, format!("call {}: the queue did not change: write the keys into it in place (queue.narrow(1, ptr, B).copy_(&keys.tr()))", call + 1)));
        }
        if !same(&queue, &want_queue) {
            let cols = (queue.to_kind(Kind::Double) - want_queue.to_kind(Kind::Double)).abs().amax([0i64].as_slice(), false);
            let wrong: Vec<i64> = (0..big_k).filter(|&j| cols.double_value(&[j]) > TOL).collect();
            return Err(fail(
                what,
                format!(
                    "call {} (ptr = {ptr}, B = {b}, K = {big_k}): columns {wrong:?} differ; columns {ptr}..{} should hold keys.T (the keys as columns) and the rest stay as they were",
                    call + 1,
                    ptr + b
                ),
            ));
        }
        if got_ptr != want_ptr {
            return Err(fail(what, format!("call {}: the new pointer is {got_ptr}, want (ptr + B) % K = ({ptr} + {b}) % {big_k} = {want_ptr}", call + 1)));
        }
        ptr = want_ptr;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_input_is_deterministic_and_in_range() {
        let a = fixed_input(&[3, 5], 1.0, Device::Cpu);
        assert!(same(&a, &fixed_input(&[3, 5], 1.0, Device::Cpu)));
        assert!(!same(&a, &fixed_input(&[3, 5], 2.0, Device::Cpu)));
        assert!(a.abs().max().double_value(&[]) <= 1.0);
    }
}
