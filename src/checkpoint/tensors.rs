//! The tensors of a checkpoint: reading a safetensors file no further than its header promises,
//! and converting layer weights between our `W: [in, out]` and PyTorch's `[out, in]`.

use super::ck_err;
use crate::error::{Error, Result};
use crate::model::{LayerLayout, ModelSpec};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::io::{BufReader, Read};
use std::path::Path;

/// One tensor to serialize: name, dtype, shape and little-endian bytes.
pub(super) type OwnedTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// The little-endian bytes of `v`.
fn f32_bytes(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// A float32 tensor of shape `[v.len()]`.
pub(super) fn flat_tensor(name: &str, v: &[f32]) -> OwnedTensor {
    (name.into(), Dtype::F32, vec![v.len()], f32_bytes(v))
}

/// `layers.{i}.weight` `[out, in]` and `layers.{i}.bias` `[out]` for every layer of `spec`,
/// from params: [P] in [`ModelSpec::layout`] order.
pub(super) fn layer_tensors(spec: &ModelSpec, params: &[f32]) -> Vec<OwnedTensor> {
    let mut tensors = Vec::new();
    for (i, l) in spec.layout().iter().enumerate() {
        // our W: [in, out] → PyTorch's [out, in]
        let mut wt = vec![0.0f32; l.weight_len()];
        for r in 0..l.inputs {
            for c in 0..l.outputs {
                wt[c * l.inputs + r] = params[l.weight + r * l.outputs + c];
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
            f32_bytes(&params[l.bias..l.end()]),
        ));
    }
    tensors
}

/// The safetensors bytes of `tensors` with the header metadata `meta`.
pub(super) fn serialize(
    tensors: &[OwnedTensor],
    meta: std::collections::HashMap<String, String>,
) -> Result<Vec<u8>> {
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
    let (mut reader, file_len) = open_file(path)?;
    let mut bytes = read_header(path, &mut reader, file_len)?;
    let data_len = header_data_len(path, &bytes[8..])?;
    let total = (bytes.len() as u64).saturating_add(data_len);
    crate::limits::check_host_bytes(
        &format!("reading the checkpoint {}", path.display()),
        total,
        "the file's header describes more data than fits: it is damaged, or not a gpumlp checkpoint",
    )?;
    if let Some(len) = file_len {
        if len != total {
            return Err(truncated(path, len, total));
        }
    }
    // One byte more than promised tells a longer stream from an exact one.
    (&mut reader)
        .take(data_len.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 != total {
        return Err(truncated(path, bytes.len() as u64, total));
    }
    Ok(bytes)
}

/// Opens `path` for reading, refusing a folder; also returns its length when it is a regular
/// file (a pipe or device has none to check against).
fn open_file(path: &Path) -> Result<(BufReader<std::fs::File>, Option<u64>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(ck_err(path, "is a folder, not a safetensors file"));
    }
    let file_len = meta.is_file().then_some(meta.len());
    Ok((BufReader::new(file), file_len))
}

/// The 8-byte header length and the header itself (bytes: [8 + n]), the length checked
/// against [`crate::limits::MAX_SAFETENSORS_HEADER_BYTES`] and the file's length.
fn read_header(
    path: &Path,
    reader: &mut BufReader<std::fs::File>,
    file_len: Option<u64>,
) -> Result<Vec<u8>> {
    let max_header = crate::limits::MAX_SAFETENSORS_HEADER_BYTES;
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
    if let Some(len) = file_len {
        if len < 8 + n {
            return Err(truncated(path, len, 8 + n));
        }
    }
    let mut bytes = len8.to_vec();
    reader
        .take(n)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if (bytes.len() as u64) < 8 + n {
        return Err(truncated(path, bytes.len() as u64, 8 + n));
    }
    Ok(bytes)
}

/// How many data bytes the header's tensors describe: the largest end offset.
fn header_data_len(path: &Path, header: &[u8]) -> Result<u64> {
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| {
            ck_err(
                path,
                format!("the header is not valid safetensors JSON ({e})"),
            )
        })?;
    Ok(header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0))
}

/// The error for a file of `len` bytes whose header describes `want`.
fn truncated(path: &Path, len: u64, want: u64) -> Error {
    ck_err(
        path,
        format!(
            "is {len} bytes, but its header describes {want}: the file is truncated or damaged"
        ),
    )
}

/// params: [P] of `spec` from the `layers.{i}.*` tensors in `bytes`, checking every name,
/// dtype and shape, that no extra layers are present, and that every value is finite.
pub(super) fn load_weights(path: &Path, bytes: &[u8], spec: &ModelSpec) -> Result<Vec<f32>> {
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
        read_layer(path, &st, spec, (i, l), &mut params)?;
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

/// Copies layer `i` (at `l` in the layout of `spec`): its weight, transposed from `[out, in]`,
/// and its bias into params: [P].
fn read_layer(
    path: &Path,
    st: &SafeTensors,
    spec: &ModelSpec,
    (i, l): (usize, &LayerLayout),
    params: &mut [f32],
) -> Result<()> {
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
    Ok(())
}

/// The values of float32 tensor `name`, which must have exactly `shape`.
pub(super) fn read_f32(
    path: &Path,
    name: &str,
    t: &TensorView,
    shape: &[usize],
) -> Result<Vec<f32>> {
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
