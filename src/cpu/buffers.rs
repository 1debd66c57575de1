//! Every buffer a step touches, sized once for a batch capacity, and the host-memory check that
//! refuses a model or batch too large before anything is allocated.

use crate::error::{Error, Result};
use crate::model::ModelSpec;

/// Per-batch buffers for batches of up to `cap` rows. Layer `l` reads `xs[l]` and writes
/// `pre[l]`; the activations of layer `l` are `xs[l + 1]`, so no copy sits between layers.
pub struct Buffers {
    pub cap: usize,
    /// xs[l]: [cap, in_l + 1], the layer's input with a last column of ones, so that
    /// `[x 1]·[W; b]` adds the bias inside the GEMM and `[x 1]ᵀ·δ` yields `[∂W; ∂b]` in one.
    pub xs: Vec<Vec<f32>>,
    /// pre[l]: [cap, out_l], the pre-activations `a = x·W + b` (φ' and the loss read them).
    pub pre: Vec<Vec<f32>>,
    /// y: [cap, out], the network's outputs (predict only).
    pub y: Vec<f32>,
    /// t: [cap, out], the batch's targets.
    pub t: Vec<f32>,
    /// Deltas of two adjacent layers, ping-ponged: each [cap, widest layer].
    pub delta: [Vec<f32>; 2],
    /// Per-row loss `J` and correctness, summed in row order after the pass.
    pub row_loss: Vec<f32>,
    pub row_ok: Vec<bool>,
}

/// Floats a batch of `cap` rows needs in [`Buffers`] (None on overflow).
fn batch_floats(spec: &ModelSpec, cap: usize) -> Option<usize> {
    let inputs: usize = spec.sizes[..spec.layers()].iter().map(|&w| w + 1).sum();
    let outputs: usize = spec.sizes[1..].iter().sum();
    let widest = *spec.sizes[1..].iter().max()?;
    let per_row = inputs + outputs + 2 * spec.outputs() + 2 * widest + 1;
    per_row.checked_mul(cap)
}

/// Bytes of host memory the model (parameters, gradients, `slots` optimizer vectors) and a
/// batch of `cap` rows take, with the bytes of any `extra` data. None on overflow.
pub fn bytes_needed(spec: &ModelSpec, slots: usize, cap: usize, extra: u64) -> Option<u64> {
    let params = (spec.param_count() as u64).checked_mul(2 + slots as u64)?;
    let floats = params.checked_add(batch_floats(spec, cap)? as u64)?;
    floats
        .checked_mul(4)?
        .checked_add(cap as u64)?
        .checked_add(extra)
}

/// `MemAvailable` from /proc/meminfo, in bytes (None where the OS does not say).
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses `what` when it needs more bytes than the host has available (or than u64 counts).
pub fn check_host_memory(what: &str, bytes: Option<u64>) -> Result<()> {
    let Some(bytes) = bytes else {
        return Err(Error::DeviceLimit(format!(
            "{what} needs more than 2^64 bytes of host memory: use a smaller model or --batch"
        )));
    };
    if let Some(avail) = available_memory() {
        if bytes > avail {
            return Err(Error::DeviceLimit(format!(
                "{what} needs {bytes} bytes ({:.2} GiB) of host memory, but only {avail} bytes ({:.2} GiB) are available: use a smaller model or --batch",
                bytes as f64 / (1u64 << 30) as f64,
                avail as f64 / (1u64 << 30) as f64
            )));
        }
    }
    Ok(())
}

/// `n` zeros, or an error instead of an abort when the allocation fails.
pub fn zeros(n: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|e| {
        Error::DeviceLimit(format!(
            "could not allocate {} bytes of host memory: {e}",
            n.saturating_mul(4)
        ))
    })?;
    v.resize(n, 0.0);
    Ok(v)
}

impl Buffers {
    /// Buffers for batches of up to `cap` rows (at least 1), checked against host memory.
    pub fn new(spec: &ModelSpec, cap: usize) -> Result<Self> {
        let cap = cap.max(1);
        let floats = batch_floats(spec, cap).map(|f| f as u64 * 4 + cap as u64);
        check_host_memory(&format!("a batch of {cap} rows"), floats)?;
        let widest = spec.sizes[1..].iter().copied().max().unwrap_or(1);
        let mut xs = Vec::with_capacity(spec.layers());
        for &w in &spec.sizes[..spec.layers()] {
            let mut x = zeros(cap * (w + 1))?;
            x.chunks_exact_mut(w + 1).for_each(|row| row[w] = 1.0);
            xs.push(x);
        }
        let pre = spec.sizes[1..]
            .iter()
            .map(|&w| zeros(cap * w))
            .collect::<Result<_>>()?;
        Ok(Buffers {
            cap,
            xs,
            pre,
            y: zeros(cap * spec.outputs())?,
            t: zeros(cap * spec.outputs())?,
            delta: [zeros(cap * widest)?, zeros(cap * widest)?],
            row_loss: zeros(cap)?,
            row_ok: vec![false; cap],
        })
    }

    /// Floats held, for `allocated_bytes`.
    pub fn floats(&self) -> usize {
        let sum = |v: &[Vec<f32>]| v.iter().map(Vec::len).sum::<usize>();
        sum(&self.xs)
            + sum(&self.pre)
            + sum(&self.delta)
            + self.y.len()
            + self.t.len()
            + self.row_loss.len()
    }
}
