//! Checkpoints as safetensors files, the format PyTorch and Hugging Face use.
//!
//! Tensors (float32): `layers.{i}.weight` with shape `[out, in]` (PyTorch's `nn.Linear`
//! layout, the transpose of our `W: [in, out]`) and `layers.{i}.bias` `[out]`; with training
//! state also `optimizer.m` and `optimizer.v` (`[P]`, our flat parameter layout). The header's
//! metadata holds the layer sizes, activations, loss, normalization statistics, format version
//! and, for a resumable checkpoint, the epoch, step count and RNG state; a classifier may also
//! carry its class names (`class_names`, a JSON list: output `k` is `class_names[k]`).

use crate::backend::OptimizerState;
use crate::data::{Normalization, NormalizeMethod};
use crate::error::{Error, Result};
use crate::files::{atomic_write_with, WriteOptions};
use crate::model::{Activation, Loss, ModelSpec};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// The version written into every checkpoint's metadata (`format_version`).
pub const FORMAT_VERSION: &str = "1";

/// Where a run stands, for `--resume`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken (Adam's `t`).
    pub steps: u64,
    /// The shuffle seed; epoch `e` shuffles with ChaCha8 stream `e + 1` of it, so this and the
    /// epoch are the whole RNG state.
    pub seed: u64,
    /// The optimizer's per-parameter state (`m`, `v`) at that point.
    pub optimizer: OptimizerState,
    /// Anything else the caller needs to continue (the command line stores its arguments).
    pub extra: HashMap<String, String>,
}

/// A saved model: its description, parameters, normalization and (optionally) training state.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The network: layer widths, activations and loss.
    pub spec: ModelSpec,
    /// [P] in [`ModelSpec::layout`] order.
    pub params: Vec<f32>,
    /// The feature normalization fitted on the training data, if any.
    pub normalization: Option<Normalization>,
    /// Where training stopped, for resuming; `None` for a model saved only to predict.
    pub training: Option<TrainingState>,
    /// The class names, output `k` (or class `k` of a one-output sigmoid) being `class_names[k]`;
    /// `None` when classes are just their indices. Saved as the metadata `class_names` (a JSON list
    /// of strings), so a Python model's `classes_` (strings included) round-trips.
    pub class_names: Option<Vec<String>>,
}

fn ck_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

impl Checkpoint {
    /// The safetensors bytes of this checkpoint.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, l) in self.spec.layout().iter().enumerate() {
            // our W: [in, out] → PyTorch's [out, in]
            let mut wt = vec![0.0f32; l.weight_len()];
            for r in 0..l.inputs {
                for c in 0..l.outputs {
                    wt[c * l.inputs + r] = self.params[l.weight + r * l.outputs + c];
                }
            }
            tensors.push((
                format!("layers.{i}.weight"),
                Dtype::F32,
                vec![l.outputs, l.inputs],
                f32_bytes(&wt),
            ));
            tensors.push((
                format!("layers.{i}.bias"),
                Dtype::F32,
                vec![l.outputs],
                f32_bytes(&self.params[l.bias..l.end()]),
            ));
        }
        let mut meta = HashMap::new();
        meta.insert("format".into(), "gpumlp".into());
        meta.insert("format_version".into(), FORMAT_VERSION.into());
        meta.insert("sizes".into(), join(&self.spec.sizes));
        meta.insert(
            "activations".into(),
            self.spec
                .activations
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(","),
        );
        meta.insert("loss".into(), self.spec.loss.name().into());
        if let Some(names) = &self.class_names {
            meta.insert(
                "class_names".into(),
                serde_json::to_string(names)
                    .map_err(|e| Error::InvalidModel(format!("class_names: {e}")))?,
            );
        }
        if let Some(n) = &self.normalization {
            meta.insert("normalization".into(), n.method.name().into());
            meta.insert("normalization_shift".into(), json_floats(&n.shift));
            meta.insert("normalization_scale".into(), json_floats(&n.scale));
        }
        if let Some(t) = &self.training {
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
            for (name, v) in [
                ("optimizer.m", &t.optimizer.m),
                ("optimizer.v", &t.optimizer.v),
            ] {
                if !v.is_empty() {
                    tensors.push((name.into(), Dtype::F32, vec![v.len()], f32_bytes(v)));
                }
            }
        }
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, d, s, b)| {
                Ok((
                    n.clone(),
                    TensorView::new(*d, s.clone(), b).map_err(|e| Error::Gpu(e.to_string()))?,
                ))
            })
            .collect::<Result<_>>()?;
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::InvalidModel(format!("serializing: {e}")))
    }

    /// Saves atomically (temporary file, then rename), refusing a read-only target; see
    /// [`crate::files`] for what every write promises.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, WriteOptions::default())
    }

    /// [`Checkpoint::save`] with explicit [`WriteOptions`].
    pub fn save_with(&self, path: &Path, options: WriteOptions) -> Result<()> {
        let bytes = self.to_bytes()?;
        atomic_write_with(path, options, |f| f.write_all(&bytes))
    }

    /// Loads a checkpoint written by [`Checkpoint::save`], checking every tensor.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_safetensors(path)?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| ck_err(path, format!("not a readable safetensors file ({e})")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k)
                .ok_or_else(|| ck_err(path, format!("metadata '{k}' is missing: was this file written by gpumlp? (use --init for weights-only files)")))
        };
        let version = get("format_version")?;
        if version != FORMAT_VERSION {
            return Err(ck_err(
                path,
                format!("format version {version}; this gpumlp reads version {FORMAT_VERSION}"),
            ));
        }
        let sizes = parse_list::<usize>(get("sizes")?)
            .ok_or_else(|| ck_err(path, "metadata 'sizes' is not a list of sizes"))?;
        let activations = get("activations")?
            .split(',')
            .map(|a| a.parse::<Activation>())
            .collect::<Result<Vec<_>>>()
            .map_err(|e| ck_err(path, e.to_string()))?;
        let loss: Loss = get("loss")?
            .parse()
            .map_err(|e: Error| ck_err(path, e.to_string()))?;
        let spec = ModelSpec::with_activations(&sizes, activations, loss)
            .map_err(|e| ck_err(path, e.to_string()))?;
        let params = load_weights(path, &bytes, &spec)?;
        let normalization = match meta.get("normalization") {
            None => None,
            Some(m) => {
                let method: NormalizeMethod =
                    m.parse().map_err(|e: Error| ck_err(path, e.to_string()))?;
                let shift = meta
                    .get("normalization_shift")
                    .and_then(|s| serde_json::from_str::<Vec<f32>>(s).ok());
                let scale = meta
                    .get("normalization_scale")
                    .and_then(|s| serde_json::from_str::<Vec<f32>>(s).ok());
                match (shift, scale) {
                    (Some(shift), Some(scale))
                        if shift.len() == spec.inputs() && scale.len() == spec.inputs() =>
                    {
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
                        if let Some((name, i, v)) = bad {
                            return Err(ck_err(
                                path,
                                format!("metadata '{name}' holds {v} for feature {i}: normalization statistics must be finite, and scales non-zero; the checkpoint is damaged"),
                            ));
                        }
                        Some(Normalization {
                            method,
                            shift,
                            scale,
                        })
                    }
                    _ => {
                        return Err(ck_err(
                            path,
                            format!(
                                "normalization statistics are missing or not {} numbers each",
                                spec.inputs()
                            ),
                        ))
                    }
                }
            }
        };
        let training = match meta.get("epoch") {
            None => None,
            Some(epoch) => {
                let num = |k: &str| {
                    get(k).and_then(|v| {
                        v.parse::<u64>().map_err(|_| {
                            ck_err(path, format!("metadata '{k}' is not a whole number"))
                        })
                    })
                };
                let epoch = epoch
                    .parse::<usize>()
                    .map_err(|_| ck_err(path, "metadata 'epoch' is not a whole number"))?;
                let st =
                    SafeTensors::deserialize(&bytes).map_err(|e| ck_err(path, e.to_string()))?;
                // Missing slots are checked against the optimizer by whoever resumes; values are
                // checked here: a moment must be finite, and Adam's second moment `v` ≥ 0.
                let slot = |name: &str| -> Result<Vec<f32>> {
                    let Ok(t) = st.tensor(name) else {
                        return Ok(Vec::new());
                    };
                    let v = read_f32(path, name, &t, &[spec.param_count()])?;
                    let bad = v
                        .iter()
                        .position(|x| !x.is_finite() || (name == "optimizer.v" && *x < 0.0));
                    if let Some(i) = bad {
                        return Err(ck_err(
                            path,
                            format!(
                                "tensor '{name}' holds {} at index {i}, but optimizer state must be finite{}: the checkpoint is damaged; resume from an earlier one or start a new run",
                                v[i],
                                if name == "optimizer.v" { " and ≥ 0 (it is Adam's second moment)" } else { "" }
                            ),
                        ));
                    }
                    Ok(v)
                };
                Some(TrainingState {
                    epoch,
                    steps: num("steps")?,
                    seed: num("seed")?,
                    optimizer: OptimizerState {
                        m: slot("optimizer.m")?,
                        v: slot("optimizer.v")?,
                    },
                    extra: meta
                        .iter()
                        .filter_map(|(k, v)| {
                            k.strip_prefix("extra.").map(|k| (k.to_string(), v.clone()))
                        })
                        .collect(),
                })
            }
        };
        let class_names = match meta.get("class_names") {
            None => None,
            Some(text) => {
                let names: Vec<String> = serde_json::from_str(text).map_err(|e| {
                    ck_err(
                        path,
                        format!("metadata 'class_names' is not a JSON list of names ({e})"),
                    )
                })?;
                let classes = spec.outputs().max(2);
                if names.len() != classes {
                    return Err(ck_err(
                        path,
                        format!("metadata 'class_names' holds {} names for a model of {classes} classes: the checkpoint is damaged", names.len()),
                    ));
                }
                Some(names)
            }
        };
        Ok(Checkpoint {
            spec,
            params,
            normalization,
            training,
            class_names,
        })
    }
}

/// Reads the weights and biases of `spec` from a safetensors file that holds at least
/// `layers.{i}.weight` `[out, in]` and `layers.{i}.bias` `[out]` in float32 (for example one
/// written by PyTorch's `safetensors.torch.save_file`). Returns params: [P].
pub fn load_weights_file(path: &Path, spec: &ModelSpec) -> Result<Vec<f32>> {
    let bytes = read_safetensors(path)?;
    load_weights(path, &bytes, spec)
}

/// The bytes of a safetensors file, read no further than its header promises: the 8-byte
/// header length (at most [`crate::limits::MAX_SAFETENSORS_HEADER_BYTES`]), the header, and
/// the data its tensors' offsets describe (checked against the host memory limit first). A
/// stream that never ends (`/dev/zero`) or a header that lies fails before anything large is
/// allocated.
pub fn read_safetensors(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let max_header = crate::limits::MAX_SAFETENSORS_HEADER_BYTES;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(ck_err(path, "is a folder, not a safetensors file"));
    }
    let file_len = meta.is_file().then_some(meta.len());
    let mut reader = std::io::BufReader::new(file);
    let mut len8 = [0u8; 8];
    reader.read_exact(&mut len8).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ck_err(
            path,
            "is shorter than 8 bytes, so not a safetensors file (it starts with the 8-byte header length)",
        ),
        _ => Error::io(path, e),
    })?;
    let n = u64::from_le_bytes(len8);
    if !(2..=max_header).contains(&n) {
        return Err(ck_err(
            path,
            format!(
                "the header length is {n} bytes, but a safetensors header is 2 to {max_header} bytes: this is not a safetensors file"
            ),
        ));
    }
    let short = |len: u64, want: u64| {
        ck_err(
            path,
            format!(
                "is {len} bytes, but its header describes {want}: the file is truncated or damaged"
            ),
        )
    };
    if let Some(len) = file_len {
        if len < 8 + n {
            return Err(short(len, 8 + n));
        }
    }
    let mut bytes = len8.to_vec();
    (&mut reader)
        .take(n)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if (bytes.len() as u64) < 8 + n {
        return Err(short(bytes.len() as u64, 8 + n));
    }
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..])
        .map_err(|e| {
            ck_err(
                path,
                format!("the header is not valid safetensors JSON ({e})"),
            )
        })?;
    let data_len = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let total = (8 + n).saturating_add(data_len);
    crate::limits::check_host_bytes(
        &format!("reading the checkpoint {}", path.display()),
        total,
        "the file's header describes more data than fits: it is damaged, or not a gpumlp checkpoint",
    )?;
    if let Some(len) = file_len {
        if len != total {
            return Err(short(len, total));
        }
    }
    // One byte more than promised tells a longer stream from an exact one.
    (&mut reader)
        .take(data_len.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 != total {
        return Err(short(bytes.len() as u64, total));
    }
    Ok(bytes)
}

fn load_weights(path: &Path, bytes: &[u8], spec: &ModelSpec) -> Result<Vec<f32>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| ck_err(path, format!("not a readable safetensors file ({e})")))?;
    // The parameters must be in the file: sizes (from the metadata or the command line) that
    // describe more than it holds fail here, before they are allocated.
    let p = spec.param_count();
    if crate::limits::bytes_of(&[p], 4) > bytes.len() as u64 {
        return Err(ck_err(
            path,
            format!(
                "the model {:?} has {p} parameters ({}), but the file holds only {} bytes: the sizes do not match this file's tensors",
                spec.sizes,
                crate::limits::show_bytes(crate::limits::bytes_of(&[p], 4)),
                bytes.len()
            ),
        ));
    }
    let mut params = vec![0.0f32; p];
    for (i, l) in spec.layout().iter().enumerate() {
        let wname = format!("layers.{i}.weight");
        let w = st.tensor(&wname).map_err(|_| {
            ck_err(
                path,
                format!(
                    "tensor '{wname}' is missing: a {}-layer model needs layers.0 … layers.{}",
                    spec.layers(),
                    spec.layers() - 1
                ),
            )
        })?;
        let wt = read_f32(path, &wname, &w, &[l.outputs, l.inputs])?;
        for r in 0..l.inputs {
            for c in 0..l.outputs {
                params[l.weight + r * l.outputs + c] = wt[c * l.inputs + r];
            }
        }
        let bname = format!("layers.{i}.bias");
        let b = st
            .tensor(&bname)
            .map_err(|_| ck_err(path, format!("tensor '{bname}' is missing")))?;
        params[l.bias..l.end()].copy_from_slice(&read_f32(path, &bname, &b, &[l.outputs])?);
    }
    if st
        .names()
        .iter()
        .any(|n| n.starts_with(&format!("layers.{}.", spec.layers())))
    {
        return Err(ck_err(
            path,
            format!(
                "the file has more layers than the requested {}-layer model {:?}",
                spec.layers(),
                spec.sizes
            ),
        ));
    }
    crate::data::check_finite("parameters", &params, params.len())
        .map_err(|e| ck_err(path, e.to_string()))?;
    Ok(params)
}

fn read_f32(path: &Path, name: &str, t: &TensorView, shape: &[usize]) -> Result<Vec<f32>> {
    if t.dtype() != Dtype::F32 {
        return Err(ck_err(
            path,
            format!(
                "tensor '{name}' is {:?}, expected F32 (save it with .float())",
                t.dtype()
            ),
        ));
    }
    if t.shape() != shape {
        return Err(ck_err(
            path,
            format!(
                "tensor '{name}' has shape {:?}, but the model needs {:?}",
                t.shape(),
                shape
            ),
        ));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn json_floats(v: &[f32]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_list<T: std::str::FromStr>(s: &str) -> Option<Vec<T>> {
    s.split(',').map(|p| p.trim().parse().ok()).collect()
}
