//! Backbone weights to and from safetensors files with torchvision's keys (B5, S0.5, S3.6).
//!
//! A method keeps its backbone under a prefix of its `VarStore` (`encoder_q.` for MoCo,
//! `backbone.` for SimCLR, BYOL and Barlow Twins; a supervised ResNet sits at the root). The file
//! holds the backbone alone under torchvision's `state_dict` keys (`conv1.weight`,
//! `layer1.0.bn1.running_mean`, …), so PyTorch reads it with
//! `torchvision.models.resnet18().load_state_dict(safetensors.torch.load_file(path), strict=False)`
//! (only `fc.*` is then missing) — what MoCo's main_lincls.py does after renaming
//! `module.encoder_q.*` — and a torchvision export loads here into any method's backbone.
//!
//! ```no_run
//! use selfsup::prelude::*;
//! let moco = Moco::new(MocoConfig::tiny(), Device::Cpu)?;
//! models::save_backbone(moco.online(), "encoder_q", "out/moco_backbone.safetensors")?;
//! let simclr = SimClr::new(SimClrConfig::tiny(), Device::Cpu)?;
//! models::load_backbone(simclr.online(), "backbone", "out/moco_backbone.safetensors")?;
//! # Ok::<(), selfsup::Error>(())
//! ```
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tch::{nn, Tensor};

// ---------------------------------------------------------------- loading tensors by name
//
// Every load of named tensors into existing ones goes through `load_by_name`: a checkpoint's
// variables and method state (`train::checkpoint`), a method's own state (`methods::load_named`),
// a torchvision backbone file (`load_backbone`), the homework's copy of a student's weights.
// They differ only in what they call the two sides in their messages.

/// How a list of named tensors differs from the list a destination expects — the check a
/// name-matched load makes before it copies anything, so a failed load changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mismatch {
    /// Names the destination has and the source lacks, and names only the source has (sorted).
    Names { missing: Vec<String>, unexpected: Vec<String> },
    /// A name in both whose shapes differ (the first in the destination's order).
    Shape { name: String, expected: Vec<i64>, got: Vec<i64> },
}

impl Mismatch {
    /// The first way `given` differs from `expected` (names first, then shapes), if any.
    pub(crate) fn find(expected: &[(String, Tensor)], given: &[(String, Tensor)]) -> Option<Mismatch> {
        let want: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let have: HashMap<&str, &Tensor> = given.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut missing: Vec<String> = want.iter().filter(|n| !have.contains_key(*n)).map(|n| n.to_string()).collect();
        let mut unexpected: Vec<String> =
            have.keys().filter(|n| !want.contains(*n)).map(|n| n.to_string()).collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            missing.sort_unstable();
            unexpected.sort_unstable();
            return Some(Mismatch::Names { missing, unexpected });
        }
        expected.iter().find_map(|(name, dst)| {
            let src = have[name.as_str()];
            (src.size() != dst.size()).then(|| Mismatch::Shape { name: name.clone(), expected: dst.size(), got: src.size() })
        })
    }

    /// The error: [`Error::Data`] "`what` do not match: missing N (…), unexpected M (…)`hint`", or
    /// [`Error::Shape`] naming `what` and the tensor. `what` is a plural noun phrase ("the
    /// checkpoint's variables"); `hint` ends the message with the likely cause.
    pub(crate) fn into_error(self, what: &str, hint: &str) -> Error {
        match self {
            Mismatch::Names { missing, unexpected } => Error::Data(format!(
                "{what} do not match: missing {}, unexpected {}{hint}",
                listed(&missing),
                listed(&unexpected)
            )),
            Mismatch::Shape { name, expected, got } => Error::shape(format!("{what}: '{name}'"), format!("{expected:?}"), &got),
        }
    }
}

/// "3 (a, b, c)", the first six names shown.
pub(crate) fn listed(names: &[String]) -> String {
    let shown = names.iter().take(6).map(String::as_str).collect::<Vec<_>>().join(", ");
    format!("{} ({shown}{})", names.len(), if names.len() > 6 { ", …" } else { "" })
}

/// Checks that `given` fits `expected` ([`Mismatch::find`]), then copies each of its tensors into
/// the one of `expected` with the same name, in place and without gradients; each destination
/// keeps its device, dtype and memory layout.
///
/// # Errors
/// [`Mismatch::into_error`] with `what` and `hint`; libtorch errors from the copy.
pub(crate) fn load_by_name(what: &str, hint: &str, expected: &[(String, Tensor)], given: &[(String, Tensor)]) -> Result<()> {
    if let Some(m) = Mismatch::find(expected, given) {
        return Err(m.into_error(what, hint));
    }
    let given: HashMap<&str, &Tensor> = given.iter().map(|(n, t)| (n.as_str(), t)).collect();
    tch::no_grad(|| -> Result<()> {
        for (name, dst) in expected {
            dst.shallow_clone().f_copy_(given[name.as_str()])?;
        }
        Ok(())
    })
}

/// The variables of `vs`, sorted by name (the tensors themselves, not copies).
pub(crate) fn store_vars(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

// ---------------------------------------------------------------- backbones as torchvision files

/// The first path component of every torchvision ResNet backbone key (the classifier `fc` is not
/// part of the backbone).
const BACKBONE_ROOTS: [&str; 6] = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"];

/// Variables of `vs` under `prefix` that belong to a ResNet backbone, renamed to torchvision's
/// keys (prefix stripped), sorted by name. `prefix` may be empty (a ResNet at the root).
fn backbone_vars(vs: &nn::VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let lead = if prefix.is_empty() { String::new() } else { format!("{}.", prefix.trim_end_matches('.')) };
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter_map(|(name, t)| {
            let key = name.strip_prefix(lead.as_str())?.to_string();
            let root = key.split('.').next().unwrap_or("");
            BACKBONE_ROOTS.contains(&root).then_some((key, t))
        })
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Writes the ResNet backbone found under `prefix` in `vs` to a safetensors file with torchvision
/// keys (CPU, contiguous copies); returns the keys written. Heads and the classifier `fc` are left
/// out.
///
/// # Errors
/// [`Error::Data`] when `vs` has no backbone variables under `prefix` (the message lists the
/// prefixes it has); i/o and libtorch errors from writing.
pub fn save_backbone(vs: &nn::VarStore, prefix: &str, path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let vars = backbone_vars(vs, prefix);
    if vars.is_empty() {
        let mut tops: Vec<String> = vs
            .variables()
            .keys()
            .filter_map(|n| n.split('.').next().map(str::to_string))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        tops.sort();
        return Err(Error::Data(format!(
            "save_backbone: no ResNet variables under prefix '{prefix}'; this store has top-level names {tops:?} \
             (MoCo uses \"encoder_q\", the other methods \"backbone\", a supervised ResNet \"\")"
        )));
    }
    let named: Vec<(String, Tensor)> =
        vars.iter().map(|(k, t)| (k.clone(), t.detach().to_device(tch::Device::Cpu).contiguous())).collect();
    crate::files::write_atomic(path, |tmp| Ok(Tensor::write_safetensors(&named, tmp)?))?;
    Ok(vars.into_iter().map(|(k, _)| k).collect())
}

/// Loads a backbone saved with torchvision keys (by [`save_backbone`] or exported from PyTorch)
/// into the ResNet under `prefix` in `vs`, in place. The file's `fc.*` and BatchNorm
/// `num_batches_tracked` entries are ignored; every other name must match exactly.
///
/// # Errors
/// [`Error::Data`] listing the backbone variables the file lacks and the file entries the backbone
/// does not have (another depth, a not-yet-renamed MoCo checkpoint); [`Error::Shape`] when a
/// tensor's shape differs (e.g. the small-image stem against the ImageNet one).
pub fn load_backbone(vs: &nn::VarStore, prefix: &str, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(Error::Data(format!(
            "load_backbone: {} not found; save one with models::save_backbone",
            path.display()
        )));
    }
    let dst = backbone_vars(vs, prefix);
    if dst.is_empty() {
        return Err(Error::Data(format!("load_backbone: no ResNet variables under prefix '{prefix}' in this store")));
    }
    let file: Vec<(String, Tensor)> = Tensor::read_safetensors(path)?
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked") && !k.starts_with("fc."))
        .collect();
    load_by_name(
        &format!("load_backbone: the keys of {} and this backbone's", path.display()),
        ". Keys must be torchvision's (strip 'module.encoder_q.' or 'backbone.' first) and the depth must match",
        &dst,
        &file,
    )
}
