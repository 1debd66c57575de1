//! A checkpoint's header metadata: the model description, normalization statistics, class
//! names and training state, written as strings and read back with every value checked.

use super::tensors::read_f32;
use super::{ck_err, Checkpoint, TrainingState, FORMAT_VERSION};
use crate::backend::OptimizerState;
use crate::data::{Normalization, NormalizeMethod};
use crate::error::{Error, Result};
use crate::model::{Activation, Loss, ModelSpec};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// The metadata of `ck`: format, model, class names, normalization and training state.
pub(super) fn encode(ck: &Checkpoint) -> Result<HashMap<String, String>> {
    let mut meta = HashMap::new();
    meta.insert("format".into(), "gpumlp".into());
    meta.insert("format_version".into(), FORMAT_VERSION.into());
    meta.insert("sizes".into(), join(&ck.spec.sizes));
    meta.insert(
        "activations".into(),
        ck.spec
            .activations
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(","),
    );
    meta.insert("loss".into(), ck.spec.loss.name().into());
    if let Some(names) = &ck.class_names {
        meta.insert(
            "class_names".into(),
            serde_json::to_string(names)
                .map_err(|e| Error::InvalidModel(format!("class_names: {e}")))?,
        );
    }
    if let Some(n) = &ck.normalization {
        meta.insert("normalization".into(), n.method.name().into());
        meta.insert("normalization_shift".into(), json_floats(&n.shift));
        meta.insert("normalization_scale".into(), json_floats(&n.scale));
    }
    if let Some(t) = &ck.training {
        meta.insert("epoch".into(), t.epoch.to_string());
        meta.insert("steps".into(), t.steps.to_string());
        meta.insert("seed".into(), t.seed.to_string());
        meta.insert(
            "rng".into(),
            format!("chacha8 seed {} next stream {}", t.seed, t.epoch + 1),
        );
        for (k, v) in &t.extra {
            meta.insert(format!("extra.{k}"), v.clone());
        }
    }
    Ok(meta)
}

/// The metadata of the checkpoint at `path`, read back with every value checked; errors name
/// the file.
pub(super) struct Metadata<'a> {
    path: &'a Path,
    map: HashMap<String, String>,
}

impl<'a> Metadata<'a> {
    /// The header metadata of the safetensors `bytes` read from `path`.
    pub(super) fn read(path: &'a Path, bytes: &[u8]) -> Result<Self> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| ck_err(path, format!("not a readable safetensors file ({e})")))?;
        let map = header.metadata().clone().unwrap_or_default();
        Ok(Metadata { path, map })
    }

    /// The value of a key every gpumlp checkpoint has.
    fn get(&self, k: &str) -> Result<&String> {
        self.map
            .get(k)
            .ok_or_else(|| ck_err(self.path, format!("metadata '{k}' is missing: was this file written by gpumlp? (use --init for weights-only files)")))
    }

    /// `msg` as an error about this checkpoint.
    fn err(&self, msg: impl Into<String>) -> Error {
        ck_err(self.path, msg)
    }

    /// The model: checks the format version, then reads sizes, activations and loss.
    pub(super) fn spec(&self) -> Result<ModelSpec> {
        let version = self.get("format_version")?;
        if version != FORMAT_VERSION {
            return Err(self.err(format!(
                "format version {version}; this gpumlp reads version {FORMAT_VERSION}"
            )));
        }
        let sizes = parse_list::<usize>(self.get("sizes")?)
            .ok_or_else(|| self.err("metadata 'sizes' is not a list of sizes"))?;
        let activations = self
            .get("activations")?
            .split(',')
            .map(|a| a.parse::<Activation>())
            .collect::<Result<Vec<_>>>()
            .map_err(|e| self.err(e.to_string()))?;
        let loss: Loss = self
            .get("loss")?
            .parse()
            .map_err(|e: Error| self.err(e.to_string()))?;
        ModelSpec::with_activations(&sizes, activations, loss).map_err(|e| self.err(e.to_string()))
    }

    /// The normalization, if the file has one: a method and `spec.inputs()` finite shifts and
    /// non-zero finite scales.
    pub(super) fn normalization(&self, spec: &ModelSpec) -> Result<Option<Normalization>> {
        let Some(m) = self.map.get("normalization") else {
            return Ok(None);
        };
        let method: NormalizeMethod = m.parse().map_err(|e: Error| self.err(e.to_string()))?;
        let floats = |k: &str| {
            self.map
                .get(k)
                .and_then(|s| serde_json::from_str::<Vec<f32>>(s).ok())
        };
        match (floats("normalization_shift"), floats("normalization_scale")) {
            (Some(shift), Some(scale))
                if shift.len() == spec.inputs() && scale.len() == spec.inputs() =>
            {
                self.check_statistics(&shift, &scale)?;
                Ok(Some(Normalization {
                    method,
                    shift,
                    scale,
                }))
            }
            _ => Err(self.err(format!(
                "normalization statistics are missing or not {} numbers each",
                spec.inputs()
            ))),
        }
    }

    /// Refuses statistics that would turn inputs into NaN or infinity.
    fn check_statistics(&self, shift: &[f32], scale: &[f32]) -> Result<()> {
        // x' = (x − shift) / scale: a scale of 0 or a non-finite value would
        // turn every input into NaN or infinity.
        let bad = shift
            .iter()
            .position(|v| !v.is_finite())
            .map(|i| ("normalization_shift", i, shift[i]))
            .or_else(|| {
                scale
                    .iter()
                    .position(|v| !v.is_finite() || *v == 0.0)
                    .map(|i| ("normalization_scale", i, scale[i]))
            });
        match bad {
            Some((name, i, v)) => Err(self.err(format!("metadata '{name}' holds {v} for feature {i}: normalization statistics must be finite, and scales non-zero; the checkpoint is damaged"))),
            None => Ok(()),
        }
    }

    /// Where training stopped, if the file records it (`epoch` present), with the optimizer
    /// state from the tensors in `bytes`.
    pub(super) fn training(&self, bytes: &[u8], spec: &ModelSpec) -> Result<Option<TrainingState>> {
        let Some(epoch) = self.map.get("epoch") else {
            return Ok(None);
        };
        let num = |k: &str| {
            self.get(k).and_then(|v| {
                v.parse::<u64>()
                    .map_err(|_| self.err(format!("metadata '{k}' is not a whole number")))
            })
        };
        let epoch = epoch
            .parse::<usize>()
            .map_err(|_| self.err("metadata 'epoch' is not a whole number"))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| self.err(e.to_string()))?;
        let slot = |name: &str| self.optimizer_slot(&st, name, spec.param_count());
        Ok(Some(TrainingState {
            epoch,
            steps: num("steps")?,
            seed: num("seed")?,
            optimizer: OptimizerState {
                m: slot("optimizer.m")?,
                v: slot("optimizer.v")?,
            },
            extra: self
                .map
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("extra.").map(|k| (k.to_string(), v.clone())))
                .collect(),
        }))
    }

    /// Optimizer tensor `name` ([P], empty when absent). Missing slots are checked against the
    /// optimizer by whoever resumes; values are checked here: a moment must be finite, and
    /// Adam's second moment `v` ≥ 0.
    fn optimizer_slot(&self, st: &SafeTensors, name: &str, p: usize) -> Result<Vec<f32>> {
        let Ok(t) = st.tensor(name) else {
            return Ok(Vec::new());
        };
        let v = read_f32(self.path, name, &t, &[p])?;
        let bad = v
            .iter()
            .position(|x| !x.is_finite() || (name == "optimizer.v" && *x < 0.0));
        if let Some(i) = bad {
            return Err(self.err(format!(
                "tensor '{name}' holds {} at index {i}, but optimizer state must be finite{}: the checkpoint is damaged; resume from an earlier one or start a new run",
                v[i],
                if name == "optimizer.v" { " and ≥ 0 (it is Adam's second moment)" } else { "" }
            )));
        }
        Ok(v)
    }

    /// The class names, if any: a JSON list with one name per class of `spec`.
    pub(super) fn class_names(&self, spec: &ModelSpec) -> Result<Option<Vec<String>>> {
        let Some(text) = self.map.get("class_names") else {
            return Ok(None);
        };
        let names: Vec<String> = serde_json::from_str(text).map_err(|e| {
            self.err(format!(
                "metadata 'class_names' is not a JSON list of names ({e})"
            ))
        })?;
        let classes = spec.outputs().max(2);
        if names.len() != classes {
            return Err(self.err(format!("metadata 'class_names' holds {} names for a model of {classes} classes: the checkpoint is damaged", names.len())));
        }
        Ok(Some(names))
    }
}

/// `v` as a comma-separated list.
fn join(v: &[usize]) -> String {
    v.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `v` as a JSON list.
fn json_floats(v: &[f32]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// A comma-separated list of `T`, or `None` if any item does not parse.
fn parse_list<T: std::str::FromStr>(s: &str) -> Option<Vec<T>> {
    s.split(',').map(|p| p.trim().parse().ok()).collect()
}
