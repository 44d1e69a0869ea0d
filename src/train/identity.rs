//! What makes a run *this* run: everything that determines its trajectory besides the
//! [`super::TrainConfig`] — the method's settings (τ, EMA momentum, queue size, heads, backbone),
//! the model's architecture, the augmentation pipelines, the dataset (name, count, image size,
//! a cheap content fingerprint) and, for probes and fine-tuning, the starting weights.
//!
//! A checkpoint records its run's [`RunIdentity`] (also written as `run.json` beside it, for
//! people). Resuming or loading a run whose identity differs from the call's is refused with an
//! error that names the first differing field, the saved and the current value, and the
//! one-line fix: a notebook cell re-run after changing τ from 0.2 to 0.5 must not hand back the
//! τ = 0.2 run as "finished run loaded".
//!
//! Methods describe their settings through [`crate::methods::SslMethod::config_json`]. A method
//! that does not (a student's own) is still identified by what the engine can see — its name,
//! the names and shapes of its trained variables and of its other state (a queue's size shows
//! there) — and the engine prints a note that a change of its other settings cannot be
//! detected.
use crate::data::ImageSet;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{nn, Device, Kind, Tensor};

/// File name of the run identity inside a run's `out_dir` (a copy for people; the checkpoint
/// holds the one that is checked).
pub const IDENTITY_FILE: &str = "run.json";

/// Everything besides the train config that determines a run's trajectory; see the module doc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// The method's settings as it describes them (`SslMethod::config_json`), or `null` when it
    /// does not (a student's method) — then [`RunIdentity::model`] and [`RunIdentity::state`]
    /// are what identifies it.
    pub method: Value,
    /// The trained variables' architecture: count, total size and a fingerprint of the names
    /// and shapes.
    pub model: Value,
    /// The names and shapes of the method's other state (target network, queue), fingerprinted.
    pub state: Value,
    /// The augmentation pipeline of each view, as their configs.
    pub augment: Value,
    /// The dataset: name, image count, image shape, number of classes, content fingerprint.
    pub dataset: Value,
    /// A fingerprint of the starting weights, where they are an input of the run (a probe's or a
    /// fine-tuning's backbone); `null` otherwise.
    pub init: Value,
}

/// FNV-1a over 64-bit words (the tail byte by byte): a fast, stable, non-cryptographic hash for
/// fingerprints (Rust's `DefaultHasher` may change between Rust versions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fingerprint(u64);

impl Fingerprint {
    pub(crate) fn new() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
    pub(crate) fn bytes(mut self, bytes: &[u8]) -> Self {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0 ^ w).wrapping_mul(PRIME);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0 ^ b as u64).wrapping_mul(PRIME);
        }
        self
    }
    pub(crate) fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes()).bytes(&[0xff])
    }
    /// The bytes of a tensor (moved to the CPU, made contiguous).
    pub(crate) fn tensor(self, t: &Tensor) -> Result<Self> {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let t = if t.kind() == Kind::BFloat16 || t.kind() == Kind::Half { t.to_kind(Kind::Float) } else { t };
        let n = t.numel() * t.kind().elt_size_in_bytes();
        let mut buf = vec![0u8; n];
        if n > 0 {
            t.f_copy_data_u8(&mut buf, t.numel())?;
        }
        Ok(self.str(&format!("{:?}{:?}", t.kind(), t.size())).bytes(&buf))
    }
    pub(crate) fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Names and shapes of named tensors as `{count, elements, fingerprint}`.
pub(crate) fn signature(named: &[(String, Tensor)]) -> Value {
    let mut sorted: Vec<(&String, Vec<i64>)> = named.iter().map(|(n, t)| (n, t.size())).collect();
    sorted.sort();
    let mut fp = Fingerprint::new();
    let mut elements: i64 = 0;
    for (name, size) in &sorted {
        fp = fp.str(name).str(&format!("{size:?}"));
        elements += size.iter().product::<i64>();
    }
    serde_json::json!({ "tensors": sorted.len(), "elements": elements, "fingerprint": fp.hex() })
}

/// The signature of a store's variables.
pub(crate) fn store_signature(vs: &nn::VarStore) -> Value {
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    signature(&named)
}

/// A fingerprint of the values of every variable of `vs` (sorted by name): the identity of a
/// probe's or a fine-tuning's starting point (which backbone).
///
/// # Errors
/// [`crate::Error::Torch`] when a variable cannot be read.
pub fn weights_fingerprint(vs: &nn::VarStore) -> Result<String> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut fp = Fingerprint::new();
    for (name, t) in &vars {
        fp = fp.str(name).tensor(t)?;
    }
    Ok(fp.hex())
}

/// How many images the dataset fingerprint reads, evenly spaced (all of a smaller set).
const SAMPLED_IMAGES: i64 = 32;

/// The dataset's identity: name, count, image shape, classes, and a fingerprint of up to 32
/// evenly spaced images and all labels (cheap even for a memory-mapped 100,000-image set).
///
/// # Errors
/// [`crate::Error::Torch`] when the images cannot be read.
pub fn dataset_identity(set: &ImageSet) -> Result<Value> {
    let n = set.len() as i64;
    let mut fp = Fingerprint::new();
    if n > 0 {
        let k = SAMPLED_IMAGES.min(n);
        let idx: Vec<i64> = (0..k).map(|i| i * n / k).collect();
        let idx = Tensor::from_slice(&idx).to_device(set.images.device());
        fp = fp.tensor(&set.images.index_select(0, &idx))?;
    }
    if let Some(labels) = &set.labels {
        fp = fp.tensor(labels)?;
    }
    let size = set.images.size();
    Ok(serde_json::json!({
        "name": set.name,
        "images": n,
        "image_shape": size.get(1..).map(|s| s.to_vec()).unwrap_or_default(),
        "classes": set.class_names.len(),
        "fingerprint": fp.hex(),
    }))
}

/// All leaves of a JSON value as `(path, value)`, paths joined with '.' (arrays by index).
fn leaves(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                leaves(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, x, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, x) in items.iter().enumerate() {
                leaves(&format!("{prefix}[{i}]"), x, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// The first field where `saved` and `now` differ, as `(path, saved value, current value)`
/// ("absent" for a field only one has). Fields are compared in the order method, model, state,
/// augment, dataset, init, so the most telling difference (τ rather than a fingerprint) is named.
pub fn first_difference(saved: &RunIdentity, now: &RunIdentity) -> Option<(String, String, String)> {
    let parts = |r: &RunIdentity| {
        vec![
            ("method", r.method.clone()),
            ("model", r.model.clone()),
            ("state", r.state.clone()),
            ("augment", r.augment.clone()),
            ("dataset", r.dataset.clone()),
            ("init", r.init.clone()),
        ]
    };
    for ((name, a), (_, b)) in parts(saved).into_iter().zip(parts(now)) {
        if a == b {
            continue;
        }
        let (mut la, mut lb) = (vec![], vec![]);
        leaves(name, &a, &mut la);
        leaves(name, &b, &mut lb);
        let show = |v: Option<&Value>| v.map_or_else(|| "absent".to_string(), |v| v.to_string());
        let mut diffs = vec![];
        for (path, va) in &la {
            let vb = lb.iter().find(|(p, _)| p == path).map(|(_, v)| v);
            if vb != Some(va) {
                diffs.push((path.clone(), show(Some(va)), show(vb)));
            }
        }
        for (path, vb) in &lb {
            if !la.iter().any(|(p, _)| p == path) {
                diffs.push((path.clone(), "absent".into(), show(Some(vb))));
            }
        }
        // A readable field (a count, a size) says more than a fingerprint that differs with it.
        let readable = diffs.iter().position(|d| !d.0.ends_with("fingerprint")).unwrap_or(0);
        return Some(if diffs.is_empty() {
            (name.to_string(), a.to_string(), b.to_string())
        } else {
            diffs.swap_remove(readable)
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(method: Value) -> RunIdentity {
        RunIdentity {
            method,
            model: serde_json::json!({"tensors": 2}),
            state: Value::Null,
            augment: serde_json::json!([{"ops": [1, 2]}]),
            dataset: serde_json::json!({"name": "x", "images": 4}),
            init: Value::Null,
        }
    }

    #[test]
    fn the_first_difference_names_the_nested_field() {
        let a = id(serde_json::json!({"temperature": 0.2, "head": {"out_dim": 128}}));
        assert_eq!(first_difference(&a, &a.clone()), None);
        let b = id(serde_json::json!({"temperature": 0.5, "head": {"out_dim": 128}}));
        assert_eq!(first_difference(&a, &b), Some(("method.temperature".into(), "0.2".into(), "0.5".into())));
        let c = id(serde_json::json!({"temperature": 0.2, "head": {"out_dim": 64}}));
        assert_eq!(first_difference(&a, &c), Some(("method.head.out_dim".into(), "128".into(), "64".into())));
        let mut d = a.clone();
        d.dataset = serde_json::json!({"name": "x", "images": 8});
        assert_eq!(first_difference(&a, &d), Some(("dataset.images".into(), "4".into(), "8".into())));
        d.dataset = serde_json::json!({"name": "x", "images": 8, "fingerprint": "b"});
        let mut a2 = a.clone();
        a2.dataset = serde_json::json!({"name": "x", "images": 4, "fingerprint": "a"});
        assert_eq!(first_difference(&a2, &d).map(|d| d.0), Some("dataset.images".into()));
        let e = id(Value::Null);
        assert_eq!(first_difference(&e, &a).map(|d| (d.0, d.1)), Some(("method".into(), "null".into())));
    }

    #[test]
    fn fingerprints_see_one_changed_byte() {
        let a = Tensor::from_slice(&[1u8, 2, 3, 4, 5, 6, 7, 8, 9]);
        let b = Tensor::from_slice(&[1u8, 2, 3, 4, 5, 6, 7, 8, 10]);
        let fa = Fingerprint::new().tensor(&a).unwrap().hex();
        assert_eq!(fa, Fingerprint::new().tensor(&a.copy()).unwrap().hex());
        assert_ne!(fa, Fingerprint::new().tensor(&b).unwrap().hex());
    }
}
