//! The forward and backward passes over [`Buffers`], split into fixed row blocks.
//!
//! Every GEMM is cut into at most `threads` blocks of output rows, fixed by (rows, threads)
//! alone; each block runs the GEMM on one thread and then its epilogue (bias is inside the GEMM
//! as a row of `[W; b]`; activation, φ', loss or the optimizer update) on the same rows while
//! they are in cache. No reduction crosses a block, and the loss is summed in row order after
//! the pass, so a rerun with the same thread count is bit-identical. Work below
//! [`PAR_MIN_MACS`] runs on the calling thread: dispatching costs more than it saves.

use super::buffers::Buffers;
use super::kernels::{activate, gemm, loss_delta_row, times_derivative, update, View};
use crate::backend::{BatchStats, OptimizerState};
use crate::model::{softmax_row, Activation, LayerLayout, ModelSpec};
use crate::optim::{OptimizerKind, StepHyper};
use rayon::prelude::*;
use std::marker::PhantomData;

/// Multiply-adds below which a GEMM runs as one block on the calling thread (and a whole step
/// below it never enters the pool). Set from an estimate, not yet tuned: a rayon hand-off costs
/// some µs, about what one core needs for 250k multiply-adds. So 2-16-2 b256 never dispatches,
/// while every GEMM of 784-512-512-10 b1024 and the first layer of 784-128-10 b128 split.
pub const PAR_MIN_MACS: usize = 1 << 18;

/// Rows per block are rounded to this, the GEMM micro-kernel's row count.
const ROW_ALIGN: usize = 16;

/// A mutable slice shared by the blocks of one pass, each of which touches disjoint rows.
struct Shared<'a, T> {
    ptr: *mut T,
    len: usize,
    _life: PhantomData<&'a mut [T]>,
}
// SAFETY: blocks write disjoint ranges (see `range`), and the pass outlives none of them.
unsafe impl<T: Send> Send for Shared<'_, T> {}
unsafe impl<T: Send> Sync for Shared<'_, T> {}
impl<T> Clone for Shared<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    fn new(s: &'a mut [T]) -> Self {
        Shared {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _life: PhantomData,
        }
    }
    /// SAFETY: no two live ranges of one `Shared` may overlap.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, end: usize) -> &'a mut [T] {
        assert!(start <= end && end <= self.len, "block out of bounds");
        std::slice::from_raw_parts_mut(self.ptr.add(start), end - start)
    }
    /// `range`, or an empty slice when the whole slice is empty (optimizer state not kept).
    /// SAFETY: as for `range`.
    unsafe fn range_or_empty(&self, start: usize, end: usize) -> &'a mut [T] {
        if self.len == 0 {
            self.range(0, 0)
        } else {
            self.range(start, end)
        }
    }
}

/// How a pass is split: the thread count (the caller is already inside the pool when > 1).
#[derive(Clone, Copy)]
pub struct Split {
    pub threads: usize,
}

impl Split {
    /// Runs `f(r0, r1)` over fixed blocks covering `0..rows`; `macs` is the whole GEMM's work.
    fn run(self, rows: usize, macs: usize, f: impl Fn(usize, usize) + Sync) {
        let blocks = if self.threads == 1 || macs < PAR_MIN_MACS {
            1
        } else {
            self.threads.min(rows.div_ceil(ROW_ALIGN)).max(1)
        };
        let chunk = rows
            .div_ceil(blocks)
            .next_multiple_of(ROW_ALIGN)
            .min(rows.max(1));
        let blocks = rows.div_ceil(chunk.max(1)).max(1);
        if blocks == 1 {
            f(0, rows);
        } else {
            (0..blocks)
                .into_par_iter()
                .for_each(|i| f(i * chunk, ((i + 1) * chunk).min(rows)));
        }
    }
}

/// What the last layer's epilogue does with its pre-activations.
#[derive(Clone, Copy, PartialEq)]
pub enum Head {
    /// Loss and output delta (into `delta[0]`), scaled by `scale` (1/B when training).
    Loss { scale: f32 },
    /// The outputs into `y`.
    Outputs,
}

/// Forward pass over the first `rows` rows of `xs[0]`: every layer's GEMM with its epilogue.
pub fn forward(
    buf: &mut Buffers,
    spec: &ModelSpec,
    layout: &[LayerLayout],
    params: &[f32],
    rows: usize,
    head: Head,
    split: Split,
) {
    let last = layout.len() - 1;
    let Buffers {
        xs,
        pre,
        y,
        t,
        delta,
        row_loss,
        row_ok,
        ..
    } = buf;
    for (l, lay) in layout.iter().enumerate() {
        let (inp, out, act) = (lay.inputs + 1, lay.outputs, spec.activations[l]);
        let (xs_in, xs_out) = xs.split_at_mut(l + 1);
        let x = &xs_in[l];
        let a = Shared::new(&mut pre[l]);
        let next = xs_out.first_mut().map(|v| Shared::new(v));
        let y = Shared::new(&mut y[..]);
        let d = Shared::new(&mut delta[0]);
        let ok = Shared::new(&mut row_ok[..]);
        let losses = Shared::new(&mut row_loss[..]);
        let t = &t[..];
        split.run(rows, rows * inp * out, |r0, r1| {
            // SAFETY (all ranges below): rows r0..r1 belong to this block alone.
            let a = unsafe { a.range(r0 * out, r1 * out) };
            let wb = View::rows(params, lay.weight, out);
            gemm(a, out, View::rows(x, r0 * inp, inp), wb, r1 - r0, out, inp);
            if l < last {
                let z = unsafe {
                    next.expect("a next layer")
                        .range(r0 * (out + 1), r1 * (out + 1))
                };
                for (z, a) in z.chunks_exact_mut(out + 1).zip(a.chunks_exact(out)) {
                    activate(&mut z[..out], a, act);
                }
                return;
            }
            match head {
                Head::Outputs => {
                    let y = unsafe { y.range(r0 * out, r1 * out) };
                    for (y, a) in y.chunks_exact_mut(out).zip(a.chunks_exact(out)) {
                        activate(y, a, act);
                        if act == Activation::Softmax {
                            softmax_row(y);
                        }
                    }
                }
                Head::Loss { scale } => {
                    let d = unsafe { d.range(r0 * out, r1 * out) };
                    let losses = unsafe { losses.range(r0, r1) };
                    let ok = unsafe { ok.range(r0, r1) };
                    for (r, (d, a)) in d.chunks_exact_mut(out).zip(a.chunks_exact(out)).enumerate()
                    {
                        let t = &t[(r0 + r) * out..(r0 + r + 1) * out];
                        (losses[r], ok[r]) = loss_delta_row(d, a, t, act, spec.loss, scale);
                    }
                }
            }
        });
    }
}

/// The loss and correct count of the last `Head::Loss` pass, summed in row order in f64 (as
/// the reference does).
pub fn batch_stats(buf: &Buffers, rows: usize) -> BatchStats {
    let mut s = BatchStats::default();
    for (&j, &ok) in buf.row_loss[..rows].iter().zip(&buf.row_ok[..rows]) {
        s.loss_sum += j as f64;
        s.correct += ok as u64;
    }
    s.samples = rows as u64;
    s
}

/// What the backward pass updates: parameters, their gradients and the optimizer's state.
pub struct Model<'a> {
    pub params: &'a mut [f32],
    pub grads: &'a mut [f32],
    pub state: &'a mut OptimizerState,
    pub kind: OptimizerKind,
}

/// Backward pass and update, after `forward` with `Head::Loss` left δ_L in `delta[0]`. Per layer,
/// last first: δ_{l−1} = (δ_l·W_lᵀ) ⊙ φ'(a_{l−1}) with the old W_l, then
/// [∂W; ∂b] = [x 1]ᵀ·δ_l with `+ λW` and the optimizer update fused into the same row blocks.
/// `h: None` (a data-parallel shard) leaves the plain gradient, without `λW` or update.
pub fn backward(
    buf: &mut Buffers,
    spec: &ModelSpec,
    layout: &[LayerLayout],
    mut model: Model,
    rows: usize,
    h: Option<&StepHyper>,
    split: Split,
) {
    let mut cur = 0;
    for (l, lay) in layout.iter().enumerate().rev() {
        let (inp, out) = (lay.inputs, lay.outputs);
        let [d0, d1] = &mut buf.delta;
        let (delta, prev) = if cur == 0 { (d0, d1) } else { (d1, d0) };
        if l > 0 {
            let (w, act) = (&*model.params, spec.activations[l - 1]);
            let a_prev = &buf.pre[l - 1];
            let dp = Shared::new(prev);
            let delta = &*delta;
            split.run(rows, rows * inp * out, |r0, r1| {
                let dp = unsafe { dp.range(r0 * inp, r1 * inp) };
                let wt = View::transposed(w, lay.weight, out);
                gemm(
                    dp,
                    inp,
                    View::rows(delta, r0 * out, out),
                    wt,
                    r1 - r0,
                    inp,
                    out,
                );
                times_derivative(dp, &a_prev[r0 * inp..r1 * inp], act);
            });
        }
        update_layer(&buf.xs[l], delta, lay, &mut model, rows, h, split);
        cur = 1 - cur;
    }
}

/// [∂W; ∂b]: [in + 1, out] = [x 1]ᵀ·δ, fused with `+ λW` (weight rows) and the update
/// (unless `h` is `None`).
fn update_layer(
    x: &[f32],
    delta: &[f32],
    lay: &LayerLayout,
    model: &mut Model,
    rows: usize,
    h: Option<&StepHyper>,
    split: Split,
) {
    let (inp, out, kind) = (lay.inputs + 1, lay.outputs, model.kind);
    let range = lay.weight..lay.end();
    let p = Shared::new(&mut model.params[range.clone()]);
    let g = Shared::new(&mut model.grads[range.clone()]);
    // Optimizer state the optimizer does not keep is empty: every block gets an empty slice.
    let (m, v) = (
        Shared::new(state_range(&mut model.state.m, range.clone())),
        Shared::new(state_range(&mut model.state.v, range.clone())),
    );
    split.run(inp, rows * inp * out, |i0, i1| {
        let (a, b) = (i0 * out, i1 * out);
        // SAFETY: rows i0..i1 of this layer's parameters belong to this block alone.
        let (g, p) = unsafe { (g.range(a, b), p.range(a, b)) };
        let (m, v) = unsafe { (m.range_or_empty(a, b), v.range_or_empty(a, b)) };
        gemm(
            g,
            out,
            View::transposed(x, i0, inp),
            View::rows(delta, 0, out),
            i1 - i0,
            out,
            rows,
        );
        if let Some(h) = h {
            update_rows(p, g, m, v, (i0, i1), lay.inputs, out, kind, h);
        }
    });
}

/// The update of rows i0..i1 of one layer's `[W; b]` (`[in + 1, out]`, `inputs` weight rows):
/// weight rows get `λW`, the bias row does not. p, g, m, v: those rows (m, v may be empty).
#[allow(clippy::too_many_arguments)]
fn update_rows(
    p: &mut [f32],
    g: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    (i0, i1): (usize, usize),
    inputs: usize,
    out: usize,
    kind: OptimizerKind,
    h: &StepHyper,
) {
    let w = (i1.min(inputs).max(i0) - i0) * out;
    let (pw, pb) = p.split_at_mut(w);
    let (gw, gb) = g.split_at_mut(w);
    let (mw, mb) = m.split_at_mut(w.min(m.len()));
    let (vw, vb) = v.split_at_mut(w.min(v.len()));
    update(pw, gw, mw, vw, Some(h.l2), kind, h);
    update(pb, gb, mb, vb, None, kind, h);
}

/// `+ λW` and the optimizer update of every layer with the gradient already in `model.grads`
/// (the second half of a data-parallel step), on the calling thread.
pub fn apply(layout: &[LayerLayout], model: Model, h: &StepHyper) {
    for lay in layout {
        let r = lay.weight..lay.end();
        let out = lay.outputs;
        update_rows(
            &mut model.params[r.clone()],
            &mut model.grads[r.clone()],
            state_range(&mut model.state.m, r.clone()),
            state_range(&mut model.state.v, r),
            (0, lay.inputs + 1),
            lay.inputs,
            out,
            model.kind,
            h,
        );
    }
}

/// `v[range]`, or all of `v` when it is empty (a state slot the optimizer does not keep).
fn state_range(v: &mut [f32], range: std::ops::Range<usize>) -> &mut [f32] {
    if v.is_empty() {
        v
    } else {
        &mut v[range]
    }
}
