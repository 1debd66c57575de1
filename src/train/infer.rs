//! Evaluation and prediction on any [`Backend`], over a dataset in chunks small enough that
//! dense targets and outputs of many samples are never held at once.

use crate::backend::{Backend, BatchStats};
use crate::data::Dataset;
use crate::error::{Error, Result};

/// The most bytes of dense targets (or outputs) one evaluation or prediction chunk holds.
const CHUNK_BYTES: usize = 64 << 20;

/// Rows per chunk for `spec`: each row holds every layer's width in floats (inputs, targets and
/// activations a backend computes for it, which the CPU reference allocates per call), so a
/// chunk holds at most about [`CHUNK_BYTES`] per such array; at least 1 row.
fn chunk_rows(spec: &crate::model::ModelSpec) -> usize {
    let width = spec
        .sizes
        .iter()
        .fold(0usize, |acc, &w| acc.saturating_add(w));
    (CHUNK_BYTES / width.max(1).saturating_mul(4)).max(1)
}

/// Summed loss and correct count of `backend`'s model on `data`, in chunks whose dense targets
/// stay small (one-hot targets of many classes are never built for the whole set). A loss that
/// is not finite is an error naming the samples whose outputs are NaN or infinite.
pub fn evaluate(backend: &mut dyn Backend, data: &Dataset) -> Result<BatchStats> {
    data.validate()?;
    let spec = backend.spec().clone();
    let (cols, out) = (data.cols, spec.outputs());
    let step = chunk_rows(&spec);
    let mut total = BatchStats::default();
    let mut start = 0;
    while start < data.rows {
        let n = step.min(data.rows - start);
        let t = data.dense_targets_rows(&spec, start..start + n)?;
        let x = &data.features[start * cols..(start + n) * cols];
        let s = backend.evaluate(x, &t, n)?;
        if !s.loss_sum.is_finite() {
            let y = backend.predict(x, n)?;
            check_finite_outputs(&y, out, start, data.rows)?;
            return Err(Error::InvalidData(format!(
                "the loss over samples {start}..{} is {} although every output is finite: the outputs are too far from the targets for a 32-bit loss; check the data's scale and normalization",
                start + n,
                s.loss_sum
            )));
        }
        total.add(&s);
        start += n;
    }
    Ok(total)
}

/// `backend`'s outputs y: [rows, out] for x: [rows, in], computed in chunks, with the host
/// bytes of y checked first. Errors naming the samples whose outputs are NaN or infinite.
pub fn predict(backend: &mut dyn Backend, x: &[f32], rows: usize) -> Result<Vec<f32>> {
    let (inp, out) = (backend.spec().inputs(), backend.spec().outputs());
    if Some(x.len()) != rows.checked_mul(inp) {
        return Err(Error::shape(
            "inputs",
            format!("{rows} rows × {inp} values"),
            x.len(),
        ));
    }
    crate::limits::check_host_bytes(
        &format!("the outputs of {rows} samples × {out} values"),
        crate::limits::bytes_of(&[rows, out], 4),
        "predict fewer samples at a time",
    )?;
    let step = chunk_rows(backend.spec());
    let mut y = Vec::with_capacity(rows * out);
    let mut start = 0;
    while start < rows {
        let n = step.min(rows - start);
        y.extend(backend.predict(&x[start * inp..(start + n) * inp], n)?);
        start += n;
    }
    check_finite_outputs(&y, out, 0, rows)?;
    Ok(y)
}

/// Errors with [`Error::NonFiniteOutput`] when any row of y: [rows, out] holds NaN or infinity,
/// naming the first few samples (counted from `first`, out of `total`).
pub fn check_finite_outputs(y: &[f32], out: usize, first: usize, total: usize) -> Result<()> {
    let bad: Vec<usize> = y
        .chunks(out.max(1))
        .enumerate()
        .filter(|(_, r)| r.iter().any(|v| !v.is_finite()))
        .map(|(i, _)| first + i)
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(Error::NonFiniteOutput {
        count: bad.len(),
        rows: bad.into_iter().take(10).collect(),
        total,
    })
}
