//! Optimizers over the named trainable variables of a `VarStore`, written out so that their
//! state (momentum buffers, Adam moments, step count) can be saved as named tensors and a run
//! resumed exactly (S4.6) — tch's optimizers keep theirs inside libtorch.
//!
//! Each update follows PyTorch's own formula (`torch/optim/{sgd,adam,adamw}.py`, single-tensor
//! path); `tests/train.rs` checks one step of each against PyTorch's numbers.
//! - SGD with momentum (dampening 0) and Nesterov: Sutskever et al. 2013,
//!   <https://proceedings.mlr.press/v28/sutskever13.html>, as `torch.optim.SGD`.
//! - Adam: Kingma & Ba 2015, <https://arxiv.org/abs/1412.6980>; AdamW (decoupled weight decay):
//!   Loshchilov & Hutter 2019, <https://arxiv.org/abs/1711.05101>.
//! - LARS: You, Gitman & Ginsburg 2017, <https://arxiv.org/abs/1708.03888>, as BYOL and Barlow
//!   Twins use it (facebookresearch/barlowtwins `main.py`): trust coefficient η = 0.001, and
//!   "biases and batch normalization parameters" excluded from the adaptation and from weight
//!   decay (BYOL, Appendix C.1), recognised by rank ≤ 1 as `exclude_bias_and_norm` does.
//!
//! Parameter groups ([`ParamGroup`]) give variables whose names start with given prefixes their
//! own learning-rate multiplier and weight decay — the backbone vs head split of fine-tuning.
use super::fused_sgd::{self, FusedSgd};
use crate::error::{config_err, Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// Which update rule, with its hyper-parameters (learning rate and weight decay live in the
/// training config, because schedules change the rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OptimizerConfig {
    /// `torch.optim.SGD(momentum, dampening=0, nesterov)`.
    Sgd {
        /// Momentum μ (0 for plain SGD). MoCo: 0.9 (`main_moco.py --momentum`).
        momentum: f64,
        /// Nesterov's variant (needs momentum > 0).
        nesterov: bool,
    },
    /// `torch.optim.Adam(betas, eps)`, weight decay added to the gradient (L2).
    Adam {
        /// β1 (PyTorch: 0.9).
        beta1: f64,
        /// β2 (PyTorch: 0.999).
        beta2: f64,
        /// ε (PyTorch: 1e-8).
        eps: f64,
    },
    /// `torch.optim.AdamW(betas, eps)`: decoupled weight decay `p ← p·(1 − lr·wd)`.
    AdamW {
        /// β1 (PyTorch: 0.9).
        beta1: f64,
        /// β2 (PyTorch: 0.999).
        beta2: f64,
        /// ε (PyTorch: 1e-8).
        eps: f64,
    },
    /// LARS as in facebookresearch/barlowtwins `main.py` (and BYOL).
    Lars {
        /// Momentum (Barlow Twins, BYOL: 0.9).
        momentum: f64,
        /// Trust coefficient η (You et al. 2017; Barlow Twins `eta=0.001`).
        trust_coefficient: f64,
    },
}

impl Default for OptimizerConfig {
    /// SGD with momentum 0.9: MoCo v2 (`main_moco.py --momentum 0.9`).
    fn default() -> Self {
        OptimizerConfig::sgd(0.9)
    }
}

impl OptimizerConfig {
    /// SGD with `momentum`, no Nesterov.
    pub fn sgd(momentum: f64) -> Self {
        OptimizerConfig::Sgd { momentum, nesterov: false }
    }
    /// Adam with PyTorch's defaults (β 0.9, 0.999; ε 1e-8).
    pub fn adam() -> Self {
        OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
    /// AdamW with PyTorch's defaults (β 0.9, 0.999; ε 1e-8).
    pub fn adamw() -> Self {
        OptimizerConfig::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
    /// LARS with momentum 0.9 and η = 0.001 (Barlow Twins `main.py`).
    pub fn lars() -> Self {
        OptimizerConfig::Lars { momentum: 0.9, trust_coefficient: 0.001 }
    }
    /// Short name: "sgd", "adam", "adamw", "lars".
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd { .. } => "sgd",
            OptimizerConfig::Adam { .. } => "adam",
            OptimizerConfig::AdamW { .. } => "adamw",
            OptimizerConfig::Lars { .. } => "lars",
        }
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field and its valid range.
    pub fn validate(&self) -> Result<()> {
        match *self {
            OptimizerConfig::Sgd { momentum, nesterov } => {
                if !(0.0..1.0).contains(&momentum) {
                    return Err(config_err!("OptimizerConfig::Sgd.momentum must be in [0, 1), got {momentum}"));
                }
                if nesterov && momentum == 0.0 {
                    return Err(config_err!("OptimizerConfig::Sgd: Nesterov momentum needs momentum > 0, got 0"));
                }
            }
            OptimizerConfig::Adam { beta1, beta2, eps } | OptimizerConfig::AdamW { beta1, beta2, eps } => {
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
                    return Err(config_err!("Adam betas must be in [0, 1), got ({beta1}, {beta2})"));
                }
                if eps <= 0.0 {
                    return Err(config_err!("Adam eps must be positive, got {eps}"));
                }
            }
            OptimizerConfig::Lars { momentum, trust_coefficient } => {
                if !(0.0..1.0).contains(&momentum) {
                    return Err(config_err!("OptimizerConfig::Lars.momentum must be in [0, 1), got {momentum}"));
                }
                if trust_coefficient <= 0.0 {
                    return Err(config_err!(
                        "OptimizerConfig::Lars.trust_coefficient must be positive, got {trust_coefficient}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Variables whose names start with one of `prefixes` train at `lr_scale` × the scheduled rate,
/// with their own weight decay if given (PyTorch's parameter groups).
///
/// ```
/// use selfsup::train::ParamGroup;
/// // Fine-tuning: the new classifier learns 10x faster than the pre-trained backbone.
/// let head = ParamGroup::new("head", &["fc."]).lr_scale(10.0);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamGroup {
    /// A name for logs ("backbone", "head").
    pub name: String,
    /// Variable-name prefixes that select the group's variables (`"fc."`, `"layer4."`).
    pub prefixes: Vec<String>,
    /// Multiplier of the scheduled learning rate.
    pub lr_scale: f64,
    /// Weight decay of this group; `None` uses the optimizer's.
    pub weight_decay: Option<f64>,
}

impl ParamGroup {
    /// A group of the variables starting with any of `prefixes`, at the scheduled rate.
    pub fn new(name: &str, prefixes: &[&str]) -> Self {
        ParamGroup {
            name: name.to_string(),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            lr_scale: 1.0,
            weight_decay: None,
        }
    }
    /// The same group at `scale` × the scheduled rate (0 freezes it).
    pub fn lr_scale(mut self, scale: f64) -> Self {
        self.lr_scale = scale;
        self
    }
    /// The same group with its own weight decay.
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = Some(wd);
        self
    }
    fn matches(&self, name: &str) -> bool {
        self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}

/// One trained variable and its optimizer state.
#[derive(Debug)]
struct Param {
    name: String,
    tensor: Tensor,
    group: usize,
    /// Momentum buffer (SGD, LARS) or Adam's first moment.
    buf1: Option<Tensor>,
    /// Adam's second moment.
    buf2: Option<Tensor>,
    /// The gradient of the last [`Optimizer::backward`], until the next [`Optimizer::step`]
    /// takes it; `None` makes the optimizer read the variable's own `.grad()` instead.
    grad: Option<Tensor>,
}

/// An optimizer over the trainable variables of a `VarStore`; see the module doc.
///
/// ```
/// use selfsup::train::{Optimizer, OptimizerConfig};
/// use selfsup::tch::{nn, Device, Kind, Tensor};
/// let vs = nn::VarStore::new(Device::Cpu);
/// let w = vs.root().zeros("w", &[3]);
/// let mut opt = Optimizer::new(&vs, &OptimizerConfig::sgd(0.9), 1e-4, &[])?;
/// opt.set_lr(0.1);
/// opt.backward(&(&w - 1.0).square().sum(Kind::Float))?; // the gradients, held by the optimizer
/// opt.step()?;
/// // or PyTorch's way, through the variables' own `.grad()`:
/// opt.zero_grad();
/// (&w - 1.0).square().sum(Kind::Float).backward();
/// opt.step()?;
/// # Ok::<(), selfsup::Error>(())
/// ```
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    weight_decay: f64,
    groups: Vec<ParamGroup>,
    params: Vec<Param>,
    lr: f64,
    steps: u64,
    /// libtorch's fused SGD kernel, where SGD runs on the CPU and the kernel can be called
    /// ([`super::fused_sgd`]); `None`: the per-variable loop.
    fused: Option<FusedSgd>,
}

impl Optimizer {
    /// An optimizer over every variable of `vs` that requires a gradient (sorted by name),
    /// with `weight_decay` and optional parameter `groups` (variables in no group form a
    /// "default" group at the scheduled rate). The learning rate starts at 0: set it with
    /// [`Optimizer::set_lr`] before each step (the trainer does, from the schedule).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config, a negative weight decay, a `VarStore` with no
    /// trainable variable, or a group that selects no variable (a typo in a prefix).
    pub fn new(
        vs: &nn::VarStore,
        config: &OptimizerConfig,
        weight_decay: f64,
        groups: &[ParamGroup],
    ) -> Result<Optimizer> {
        config.validate()?;
        if weight_decay < 0.0 || !weight_decay.is_finite() {
            return Err(config_err!("weight_decay must be finite and >= 0, got {weight_decay}"));
        }
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        if named.is_empty() {
            return Err(config_err!(
                "the VarStore has no trainable variable (frozen, or empty): build the model on it before the optimizer"
            ));
        }
        let mut all_groups: Vec<ParamGroup> = groups.to_vec();
        for g in &all_groups {
            if g.lr_scale < 0.0 || !g.lr_scale.is_finite() {
                return Err(config_err!(
                    "ParamGroup '{}'.lr_scale must be finite and >= 0, got {}",
                    g.name,
                    g.lr_scale
                ));
            }
            if !named.iter().any(|(n, _)| g.matches(n)) {
                let some: Vec<&str> = named.iter().take(5).map(|(n, _)| n.as_str()).collect();
                return Err(config_err!(
                    "ParamGroup '{}' with prefixes {:?} selects no variable; names look like {:?}",
                    g.name,
                    g.prefixes,
                    some
                ));
            }
        }
        all_groups.push(ParamGroup { name: "default".into(), prefixes: vec![], lr_scale: 1.0, weight_decay: None });
        let default = all_groups.len() - 1;
        let params = named
            .into_iter()
            .map(|(name, tensor)| {
                let group = all_groups.iter().position(|g| g.matches(&name)).unwrap_or(default);
                Param { name, tensor, group, buf1: None, buf2: None, grad: None }
            })
            .collect();
        let fused = if matches!(config, OptimizerConfig::Sgd { .. }) { fused_sgd::api() } else { None };
        Ok(Optimizer { config: config.clone(), weight_decay, groups: all_groups, params, lr: 0.0, steps: 0, fused })
    }

    /// Whether SGD steps of CPU weights go through libtorch's fused kernel (`torch.optim.SGD(...,
    /// fused=True)`): on by default where the loaded libtorch is the one the crate was built
    /// against; CUDA weights always take the per-variable loop. The same formula in the same order
    /// as the loop (the results agree to rounding, `tests/train.rs`), in one pass over each weight
    /// instead of about thirteen, which on a 2-core CPU takes ResNet-18's update from about 21 to
    /// about 8 ms (BENCHMARKS.md).
    pub fn fused(&self) -> bool {
        self.fused.is_some()
    }

    /// Turns the fused SGD kernel off (the per-variable loop: PyTorch's CPU default), or back on
    /// where it is available; returns whether it is on. Other update rules have no fused kernel.
    pub fn set_fused(&mut self, on: bool) -> bool {
        self.fused = if on && matches!(self.config, OptimizerConfig::Sgd { .. }) { fused_sgd::api() } else { None };
        self.fused.is_some()
    }

    /// The update rule.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }
    /// Sets the base learning rate of the next steps (each group multiplies it by its scale).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }
    /// Steps taken so far (Adam's `t`).
    pub fn steps(&self) -> u64 {
        self.steps
    }
    /// Names of the optimised variables, sorted, with their group's name.
    pub fn param_names(&self) -> Vec<(String, String)> {
        self.params.iter().map(|p| (p.name.clone(), self.groups[p.group].name.clone())).collect()
    }

    /// Zeroes the variables' own gradients (PyTorch's `zero_grad(set_to_none=False)`), for a
    /// step through `loss.backward()`, and drops those of [`Optimizer::backward`].
    ///
    /// Deviation: PyTorch now sets gradients to `None` by default, which also skips variables
    /// that received no gradient in the next step; tch cannot drop a variable's gradient, so here
    /// they get zeros (only weight decay and momentum then move them). [`Optimizer::backward`]
    /// behaves as PyTorch's default.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.grad = None;
            p.tensor.zero_grad();
        }
    }

    /// Forgets the gradients [`Optimizer::backward`] handed over, without a step (the engine's
    /// timing of bf16 against f32 runs backward passes that must not move anything).
    pub(crate) fn drop_grads(&mut self) {
        for p in &mut self.params {
            p.grad = None;
        }
    }

    /// The gradients of `loss` with respect to every optimised variable, computed by autograd
    /// and held by the optimizer for the next [`Optimizer::step`] (and for clipping, scaling,
    /// the finiteness check in between). The variables' own `.grad()` is left alone.
    ///
    /// This is the engine's backward pass. It costs less than `zero_grad` + `loss.backward()` on
    /// the CPU: that pair writes zeros into every gradient, then adds the new gradient into them
    /// (two passes over all weights), where autograd hands these gradients over as computed,
    /// as PyTorch does after its default `zero_grad(set_to_none=True)`. Likewise, a variable
    /// the loss does not reach gets no gradient, and the step leaves it (and its momentum) as it is.
    ///
    /// # Errors
    /// [`Error::Config`] when the loss depends on no trainable weight (computed under `no_grad`,
    /// or from frozen weights only); [`Error::Torch`] from autograd.
    pub fn backward(&mut self, loss: &Tensor) -> Result<()> {
        if !loss.requires_grad() {
            return Err(config_err!(
                "backward: the loss does not depend on any trainable weight (computed under no_grad, or from frozen weights only)"
            ));
        }
        let inputs: Vec<&Tensor> = self.params.iter().map(|p| &p.tensor).collect();
        let grads = Tensor::f_run_backward(&[loss], &inputs, false, false)?;
        // The optimizer updates these in place (clipping, unscaling, weight decay), so each must
        // own its memory, as PyTorch's AccumulateGrad makes sure before it keeps a gradient: autograd
        // may hand over an expanded view (of `w.sum()`) or one tensor for two variables (`w1 + w2`).
        // A dense gradient keeps its layout (a channels-last one stays so, as its weight).
        let mut seen = std::collections::HashSet::new();
        for (p, g) in self.params.iter_mut().zip(grads) {
            let g = if !g.defined() {
                g
            } else if !fused_sgd::dense(&g.size(), &g.stride()) {
                g.f_contiguous()? // a copy of its own
            } else if !seen.insert(g.data_ptr() as usize) {
                g.copy()
            } else {
                g
            };
            p.grad = Some(g); // undefined when the loss does not reach the variable
        }
        Ok(())
    }

    /// A variable's current gradient: the one [`Optimizer::backward`] computed, else its own
    /// `.grad()` (undefined when there is none).
    fn grad_of(p: &Param) -> Tensor {
        match &p.grad {
            Some(g) => g.shallow_clone(),
            None => p.tensor.grad(),
        }
    }

    /// The defined gradients, in parameter order (sharing storage: in-place changes stick).
    fn grads(&self) -> Vec<Tensor> {
        self.params.iter().map(Self::grad_of).filter(Tensor::defined).collect()
    }

    /// The defined gradients, in parameter order (shallow: writing into them changes the
    /// gradients), for averaging them over ranks ([`super::parallel`]).
    #[cfg(feature = "distributed")]
    pub(crate) fn gradients(&self) -> Vec<Tensor> {
        self.grads()
    }

    /// The global ℓ2 norm of all gradients (before clipping). Reads it from the device; the
    /// engine uses [`Optimizer::grad_norm_tensor`].
    pub fn grad_norm(&self) -> f64 {
        self.grad_norm_tensor().double_value(&[])
    }

    /// [`Optimizer::grad_norm`] as a 0-dim f32 tensor on the gradients' device, not read back
    /// (0 when no variable has a gradient).
    pub fn grad_norm_tensor(&self) -> Tensor {
        let grads = self.grads();
        if grads.is_empty() {
            let device = self.params.first().map_or(tch::Device::Cpu, |p| p.tensor.device());
            return Tensor::zeros([], (Kind::Float, device));
        }
        tch::no_grad(|| {
            let norms: Vec<Tensor> = grads.iter().map(|g| g.to_kind(Kind::Float).norm()).collect();
            Tensor::stack(&norms, 0).norm()
        })
    }

    /// Rescales all gradients so that their global ℓ2 norm is at most `max_norm`
    /// (`torch.nn.utils.clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, clamped to 1).
    /// Returns the norm before clipping, read from the device; the engine uses
    /// [`Optimizer::clip_grad_norm_tensor`].
    ///
    /// # Errors
    /// [`Error::Config`] unless `max_norm` is positive.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        Ok(self.clip_grad_norm_tensor(max_norm)?.double_value(&[]))
    }

    /// [`Optimizer::clip_grad_norm`] without reading anything back: as PyTorch's
    /// `clip_grad_norm_`, every gradient is multiplied by the clamped coefficient on the device,
    /// also when it is 1 (exact: x·1 = x), instead of asking the host whether to clip. Returns
    /// the norm before clipping as a 0-dim f32 tensor.
    ///
    /// # Errors
    /// [`Error::Config`] unless `max_norm` is positive.
    pub fn clip_grad_norm_tensor(&mut self, max_norm: f64) -> Result<Tensor> {
        if max_norm <= 0.0 || max_norm.is_nan() {
            return Err(config_err!("clip_grad_norm: max_norm must be positive, got {max_norm}"));
        }
        let total = self.grad_norm_tensor(); // []
        tch::no_grad(|| {
            // In f64 as the host computed it before: max_norm / (total + 1e-6), at most 1.
            let denom = total.to_kind(Kind::Double) + 1e-6; // []
            let coef = denom.full_like(max_norm).divide(&denom).clamp_max(1.0); // []
            for mut g in self.grads() {
                let _ = g.g_mul_(&coef);
            }
        });
        Ok(total)
    }

    /// Multiplies every gradient by `factor` (un-scaling after fp16 loss scaling).
    pub fn scale_grads(&mut self, factor: f64) {
        tch::no_grad(|| {
            for mut g in self.grads() {
                let _ = g.g_mul_scalar_(factor);
            }
        });
    }

    /// Whether every gradient is finite. One device sync, which fp16 loss scaling cannot avoid:
    /// the answer decides on the host whether the optimizer steps (PyTorch's `GradScaler.step`
    /// reads its `found_inf` the same way).
    pub fn grads_finite(&self) -> bool {
        let grads = self.grads();
        if grads.is_empty() {
            return true;
        }
        tch::no_grad(|| {
            let bad: Vec<Tensor> = grads.iter().map(|g| g.isfinite().logical_not().any()).collect();
            Tensor::stack(&bad, 0).any().int64_value(&[]) == 0
        })
    }

    /// One update of every variable that has a gradient, under `no_grad`, with PyTorch's
    /// formulas (see the module doc).
    ///
    /// # Errors
    /// [`Error::Config`] when the learning rate is negative or not finite.
    pub fn step(&mut self) -> Result<()> {
        if self.lr < 0.0 || !self.lr.is_finite() {
            return Err(config_err!("learning rate must be finite and >= 0, got {}", self.lr));
        }
        self.steps += 1;
        let t = self.steps as i32;
        let (config, groups, base_lr, base_wd, fused) = (&self.config, &self.groups, self.lr, self.weight_decay, self.fused);
        tch::no_grad(|| {
            // The fused kernel's lists: one per parameter group (its rate and weight decay) and
            // whether its momentum buffers are still empty.
            let mut batches: Vec<((usize, bool), fused_sgd::Batch)> = Vec::new();
            for p in &mut self.params {
                let g = match p.grad.take() {
                    Some(g) => g,
                    None => p.tensor.grad(),
                };
                if !g.defined() {
                    continue;
                }
                if let (Some(_), OptimizerConfig::Sgd { momentum, .. }) = (fused, config) {
                    if let Some(buf) = fused_buffer(p, &g, *momentum) {
                        let key = (p.group, *momentum != 0.0 && p.buf1.is_none());
                        let i = match batches.iter().position(|(k, _)| *k == key) {
                            Some(i) => i,
                            None => {
                                batches.push((key, fused_sgd::Batch::default()));
                                batches.len() - 1
                            }
                        };
                        let b = &mut batches[i].1;
                        b.params.push(p.tensor.shallow_clone());
                        b.grads.push(g);
                        if let Some(buf) = buf {
                            b.bufs.push(buf.shallow_clone());
                            p.buf1 = Some(buf);
                        }
                        continue;
                    }
                }
                let group = &groups[p.group];
                let lr = base_lr * group.lr_scale;
                let wd = group.weight_decay.unwrap_or(base_wd);
                match *config {
                    OptimizerConfig::Sgd { momentum, nesterov } => {
                        // d_p = grad + wd·p; buf = μ·buf + d_p (buf = d_p at first); p -= lr·d_p.
                        // One full-size temporary, as PyTorch's `grad.add(p, alpha=wd)`: on the CPU each
                        // fresh temporary of a large weight costs page faults (bench_train_step). Not
                        // `addcmul_` into the gradient, which saves it but rounds differently (fused
                        // multiply-add), so runs trained before would no longer replay bit for bit.
                        let d = if wd != 0.0 {
                            let mut d = &p.tensor * wd;
                            let _ = d.g_add_(&g);
                            d
                        } else {
                            g
                        };
                        let d = if momentum != 0.0 {
                            let buf = match p.buf1.take() {
                                None => d.detach().copy(),
                                Some(mut b) => {
                                    let _ = b.g_mul_scalar_(momentum).g_add_(&d);
                                    b
                                }
                            };
                            let d = if nesterov { &d + &buf * momentum } else { buf.shallow_clone() };
                            p.buf1 = Some(buf);
                            d
                        } else {
                            d
                        };
                        // p += d_p·(−lr) in one pass without a temporary (tch has no `add_(…, alpha)`;
                        // a 0-dim CPU tensor is a scalar operand on any device).
                        let _ = p.tensor.addcmul_(&d, &Tensor::from(-lr as f32));
                    }
                    OptimizerConfig::Adam { beta1, beta2, eps } | OptimizerConfig::AdamW { beta1, beta2, eps } => {
                        let decoupled = matches!(config, OptimizerConfig::AdamW { .. });
                        let g = if wd != 0.0 && !decoupled { &g + &p.tensor * wd } else { g };
                        if wd != 0.0 && decoupled {
                            let _ = p.tensor.g_mul_scalar_(1.0 - lr * wd); // p ← p·(1 − lr·wd)
                        }
                        let mut m = p.buf1.take().unwrap_or_else(|| g.zeros_like());
                        let mut v = p.buf2.take().unwrap_or_else(|| g.zeros_like());
                        let _ = m.lerp_(&g, 1.0 - beta1); // m ← β1·m + (1−β1)·g
                        let _ = v.g_mul_scalar_(beta2).addcmul_(&(&g * (1.0 - beta2)), &g); // v ← β2·v + (1−β2)·g²
                        let bias1 = 1.0 - beta1.powi(t);
                        let bias2_sqrt = (1.0 - beta2.powi(t)).sqrt();
                        let denom = (v.sqrt() / bias2_sqrt) + eps; // √v̂ + ε
                        let _ = p.tensor.g_add_(&(&m / denom * (-lr / bias1)));
                        p.buf1 = Some(m);
                        p.buf2 = Some(v);
                    }
                    OptimizerConfig::Lars { momentum, trust_coefficient } => {
                        // Biases and BN parameters (rank ≤ 1): no weight decay, no adaptation.
                        let adapt = p.tensor.dim() > 1;
                        let mut d = if adapt && wd != 0.0 { &g + &p.tensor * wd } else { g };
                        if adapt {
                            let param_norm = p.tensor.norm(); // ‖w‖
                            let update_norm = d.norm(); // ‖∇ + wd·w‖
                            let one = param_norm.ones_like();
                            let q = (&param_norm * trust_coefficient / &update_norm)
                                .where_self(&update_norm.gt(0.0), &one)
                                .where_self(&param_norm.gt(0.0), &one); // η‖w‖/‖d‖, or 1
                            d *= q;
                        }
                        let mut mu = p.buf1.take().unwrap_or_else(|| d.zeros_like());
                        let _ = mu.g_mul_scalar_(momentum).g_add_(&d); // μ ← m·μ + d
                        let _ = p.tensor.g_add_(&(&mu * -lr));
                        p.buf1 = Some(mu);
                    }
                }
            }
            if let (Some(kernel), OptimizerConfig::Sgd { momentum, nesterov }) = (fused, config) {
                for ((group, first), batch) in &batches {
                    let group = &groups[*group];
                    let update = fused_sgd::Update {
                        lr: base_lr * group.lr_scale,
                        weight_decay: group.weight_decay.unwrap_or(base_wd),
                        momentum: *momentum,
                        nesterov: *nesterov,
                        first: *first,
                    };
                    kernel.step(batch, &update);
                }
            }
        });
        Ok(())
    }

    fn buffer_names(&self) -> (&'static str, Option<&'static str>) {
        match self.config {
            OptimizerConfig::Sgd { .. } => ("momentum_buffer", None),
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => ("exp_avg", Some("exp_avg_sq")),
            OptimizerConfig::Lars { .. } => ("mu", None),
        }
    }

    /// The optimizer's state as named tensors: `"step"` (`[1]` i64) and, per variable with a
    /// buffer, `"<buffer>/<variable name>"` with PyTorch's buffer names (`momentum_buffer`,
    /// `exp_avg`, `exp_avg_sq`; LARS: `mu`). Shallow handles: copy before changing them.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let (first, second) = self.buffer_names();
        let mut out = vec![("step".to_string(), Tensor::from_slice(&[self.steps as i64]))];
        for p in &self.params {
            if let Some(b) = &p.buf1 {
                out.push((format!("{first}/{}", p.name), b.shallow_clone()));
            }
            if let (Some(b), Some(n)) = (&p.buf2, second) {
                out.push((format!("{n}/{}", p.name), b.shallow_clone()));
            }
        }
        out
    }

    /// Restores what [`Optimizer::state`] returned (copied onto the variables' devices).
    ///
    /// # Errors
    /// [`Error::Data`] when `"step"` is missing, a buffer names no variable of this optimizer,
    /// or a buffer's shape differs from its variable's (the state of another model or optimizer).
    pub fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let (first, second) = self.buffer_names();
        let step = state
            .iter()
            .find(|(n, _)| n == "step")
            .ok_or_else(|| Error::Data("optimizer state has no 'step' entry: not a selfsup optimizer state".into()))?;
        let steps = step.1.f_int64_value(&[0])?;
        let mut bufs: Vec<(Option<Tensor>, Option<Tensor>)> = self.params.iter().map(|_| (None, None)).collect();
        for (name, t) in state.iter().filter(|(n, _)| n != "step") {
            let (kind, var) = name
                .split_once('/')
                .ok_or_else(|| Error::Data(format!("optimizer state entry '{name}' is not '<buffer>/<variable>'")))?;
            let i = self.params.iter().position(|p| p.name == var).ok_or_else(|| {
                Error::Data(format!("optimizer state has a buffer for '{var}', which this model does not train"))
            })?;
            let p = &self.params[i];
            if t.size() != p.tensor.size() {
                return Err(Error::shape(
                    format!("optimizer buffer '{name}'"),
                    format!("{:?}", p.tensor.size()),
                    &t.size(),
                ));
            }
            let copy = tch::no_grad(|| -> Result<Tensor> {
                let mut dst = p.tensor.f_zeros_like()?; // same device, dtype and memory layout
                dst.f_copy_(t)?;
                Ok(dst)
            })?;
            if kind == first {
                bufs[i].0 = Some(copy);
            } else if Some(kind) == second {
                bufs[i].1 = Some(copy);
            } else {
                return Err(Error::Data(format!(
                    "optimizer state entry '{name}' is not a {} buffer: the checkpoint used another optimizer",
                    self.config.name()
                )));
            }
        }
        for (p, (b1, b2)) in self.params.iter_mut().zip(bufs) {
            p.buf1 = b1;
            p.buf2 = b2;
        }
        self.steps = steps.max(0) as u64;
        Ok(())
    }
}

/// The momentum buffer the fused SGD kernel updates for `p` (`Some(None)` without momentum), or
/// `None` when the kernel does not take this weight (see [`fused_sgd::fits`]): the loop steps it.
/// A weight without a buffer yet gets an uninitialised one, which the kernel's first step fills.
fn fused_buffer(p: &Param, g: &Tensor, momentum: f64) -> Option<Option<Tensor>> {
    if !fused_sgd::fits(&p.tensor, g) {
        return None;
    }
    if momentum == 0.0 {
        return Some(None);
    }
    match &p.buf1 {
        None => {
            let b = p.tensor.empty_like(); // keeps a dense layout (channels-last too)
            (b.stride() == p.tensor.stride()).then_some(Some(b))
        }
        Some(b) if b.kind() == p.tensor.kind() && b.size() == p.tensor.size() && b.stride() == p.tensor.stride() => {
            Some(Some(b.shallow_clone()))
        }
        Some(_) => None,
    }
}
