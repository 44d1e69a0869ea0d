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

fn list(names: &[&str]) -> String {
    let shown = names.iter().take(6).copied().collect::<Vec<_>>().join(", ");
    format!("{} ({shown}{})", names.len(), if names.len() > 6 { ", …" } else { "" })
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
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let named: Vec<(String, Tensor)> =
        vars.iter().map(|(k, t)| (k.clone(), t.detach().to_device(tch::Device::Cpu).contiguous())).collect();
    Tensor::write_safetensors(&named, path)?;
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
    let file = Tensor::read_safetensors(path)?;
    let given: HashMap<&str, &Tensor> = file
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked") && !k.starts_with("fc."))
        .map(|(k, t)| (k.as_str(), t))
        .collect();
    let dst = backbone_vars(vs, prefix);
    if dst.is_empty() {
        return Err(Error::Data(format!("load_backbone: no ResNet variables under prefix '{prefix}' in this store")));
    }
    let wanted: HashSet<&str> = dst.iter().map(|(k, _)| k.as_str()).collect();
    let mut missing: Vec<&str> = wanted.iter().copied().filter(|k| !given.contains_key(k)).collect();
    let mut unexpected: Vec<&str> = given.keys().copied().filter(|k| !wanted.contains(k)).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        missing.sort_unstable();
        unexpected.sort_unstable();
        return Err(Error::Data(format!(
            "load_backbone: {} does not fit this backbone: missing {}, unexpected {}. Keys must be torchvision's \
             (strip 'module.encoder_q.' or 'backbone.' first) and the depth must match",
            path.display(),
            list(&missing),
            list(&unexpected)
        )));
    }
    for (k, t) in &dst {
        let src = given[k.as_str()];
        if src.size() != t.size() {
            return Err(Error::shape(
                format!("load_backbone: '{k}' in {}", path.display()),
                format!("{:?}", t.size()),
                &src.size(),
            ));
        }
    }
    tch::no_grad(|| -> Result<()> {
        for (k, t) in &dst {
            t.shallow_clone().f_copy_(&given[k.as_str()].to_device(t.device()).to_kind(t.kind()))?;
        }
        Ok(())
    })
}
