//! Self-supervised methods behind one trait, so one training engine drives them all.
//!
//! Each method owns its state (STYLE.md): the online networks that the optimizer trains (one
//! `VarStore`), and everything else — a momentum target network, a queue of keys, a step counter —
//! which it exposes through [`SslMethod::state`] so checkpoints can save and restore it exactly.
//!
//! The training engine calls, per batch of two augmented views:
//! 1. [`SslMethod::training_step`] (inside autocast when mixed precision is on) → loss + metrics,
//! 2. backward and the optimizer step on [`SslMethod::online`]'s trainable variables,
//! 3. [`SslMethod::after_step`] with the progress, for momentum (EMA) updates and schedules.
use crate::error::Result;
use crate::models::ResNet;
use tch::{nn, Tensor};

/// What one training step returns.
#[derive(Debug)]
pub struct StepOutput {
    /// The scalar loss, still attached to the graph (the engine calls backward on it).
    pub loss: Tensor,
    /// Detached, un-normalised projections `z` of the first view `[N, D]`, for the collapse
    /// monitor (std of ℓ2-normalised z ≈ 1/√D when healthy, → 0 when collapsed).
    pub z: Option<Tensor>,
    /// Other numbers worth logging, by name (e.g. "logits_pos_mean", "tau").
    pub metrics: Vec<(String, f64)>,
}

/// A self-supervised pre-training method (SimCLR, MoCo, BYOL, Barlow Twins, ...).
pub trait SslMethod {
    /// Short name used in logs and checkpoints: "simclr", "moco_v2", "byol", "barlow_twins".
    fn name(&self) -> &str;

    /// One step on a batch of two views of the same images.
    ///
    /// # Shapes
    /// `v1`, `v2`: `[N, 3, H, W]` float, normalised, on the method's device.
    fn training_step(&mut self, v1: &Tensor, v2: &Tensor) -> Result<StepOutput>;

    /// Called after the optimizer step with the global step just done (0-based) and the planned
    /// total number of steps: momentum updates of target networks, schedules of τ.
    fn after_step(&mut self, step: usize, total_steps: usize) -> Result<()>;

    /// The variables the optimizer trains (backbone, projector, predictor), with their names.
    fn online(&self) -> &nn::VarStore;

    /// The backbone whose features are evaluated after pre-training.
    fn backbone(&self) -> &ResNet;

    /// Everything besides `online()` that a checkpoint must hold to resume exactly: target
    /// network variables, queue, queue pointer, counters — as named tensors.
    fn state(&self) -> Vec<(String, Tensor)>;

    /// Restores what [`SslMethod::state`] returned.
    ///
    /// # Errors
    /// When a name is missing or a shape differs (a checkpoint of another method or config).
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()>;
}
