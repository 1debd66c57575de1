//! The fast CPU backend: the reference's exact semantics (`crate::reference`), computed with a
//! GEMM crate on a pool of threads, in passes that fuse bias + activation into the forward
//! GEMM, φ' into the delta GEMM, and `+ λW` + the optimizer update into the gradient GEMM.
//! Every buffer is sized when the model is placed (or the batch capacity grows), so a step
//! allocates nothing; a rerun with the same thread count is bit-identical (see `pass`).

mod buffers;
pub mod kernels;
mod pass;
pub mod threads;

use crate::backend::{Backend, BatchStats, OptimizerState};
use crate::error::{Error, Result};
use crate::model::{LayerLayout, ModelSpec};
use crate::optim::{Optimizer, StepHyper};
use buffers::{bytes_needed, check_host_memory, zeros, Buffers};
use pass::{Head, Model, Split};
use std::sync::Arc;
pub use threads::{machine_threads, resolve_threads, MAX_THREADS};

/// The fast CPU backend. Parameters use the layout of [`ModelSpec::layout`]: per layer `W` then
/// `b`, which is one `[(in + 1), out]` matrix, so the bias rides inside every GEMM.
pub struct CpuBackend {
    spec: ModelSpec,
    layout: Vec<LayerLayout>,
    optimizer: Optimizer,
    threads: usize,
    pool: Option<Arc<rayon::ThreadPool>>,
    /// params, grads: [P]; the optimizer's m, v: [P] or empty.
    params: Vec<f32>,
    grads: Vec<f32>,
    state: OptimizerState,
    buf: Buffers,
    /// train_x: [rows, in]; train_t: [rows, out].
    train_x: Vec<f32>,
    train_t: Vec<f32>,
    train_rows: usize,
    order: Vec<u32>,
    epoch_stats: Vec<BatchStats>,
}

impl CpuBackend {
    /// Places `spec` with zero parameters, buffers for batches of `max_batch` rows, and `threads`
    /// threads (None: `GPUMLP_THREADS`, else one per logical core). Refuses a model that does
    /// not fit in host memory before allocating it.
    pub fn new(
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        threads: Option<usize>,
    ) -> Result<Self> {
        spec.validate()?;
        let threads = resolve_threads(threads)?;
        let slots = optimizer.state_slots();
        let cap = max_batch.max(1);
        let what = format!("the model ({} parameters)", spec.param_count());
        check_host_memory(&what, bytes_needed(spec, slots, cap, 0))?;
        let p = spec.param_count();
        Ok(CpuBackend {
            layout: spec.layout(),
            spec: spec.clone(),
            optimizer,
            threads,
            pool: if threads > 1 {
                Some(threads::pool(threads)?)
            } else {
                None
            },
            params: zeros(p)?,
            grads: zeros(p)?,
            state: OptimizerState {
                m: zeros(if slots >= 1 { p } else { 0 })?,
                v: zeros(if slots >= 2 { p } else { 0 })?,
            },
            buf: Buffers::new(spec, cap)?,
            train_x: Vec::new(),
            train_t: Vec::new(),
            train_rows: 0,
            order: Vec::new(),
            epoch_stats: Vec::new(),
        })
    }

    /// The number of threads this backend runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` inside the pool when the work is worth threads, else on this thread.
    fn run<R: Send>(&mut self, rows: usize, f: impl FnOnce(&mut Self, Split) -> R + Send) -> R {
        let big = rows * self.spec.macs_per_sample() >= pass::PAR_MIN_MACS;
        match self.pool.clone() {
            Some(pool) if big => {
                let split = Split {
                    threads: self.threads,
                };
                pool.install(|| f(self, split))
            }
            _ => f(self, Split { threads: 1 }),
        }
    }

    /// Grows the batch buffers to hold `rows` rows (the only allocation after placement, and only
    /// when a batch larger than every earlier one arrives).
    fn reserve_rows(&mut self, rows: usize) -> Result<()> {
        if rows > self.buf.cap {
            self.buf = Buffers::new(&self.spec, rows)?;
        }
        Ok(())
    }

    /// Copies x: [rows, in] into the first rows of `xs[0]` (whose ones column stays).
    fn load_inputs(&mut self, x: &[f32], rows: usize) {
        let inp = self.spec.inputs();
        let dst = self.buf.xs[0].chunks_exact_mut(inp + 1);
        for (d, s) in dst.zip(x.chunks_exact(inp)).take(rows) {
            d[..inp].copy_from_slice(s);
        }
    }

    /// One training step on the rows already in `xs[0]` and `t`, with the loss scaled by
    /// `1/global_batch`; `h: None` stops at the gradient (a data-parallel shard).
    fn train_rows(
        &mut self,
        rows: usize,
        global_batch: usize,
        h: Option<&StepHyper>,
    ) -> BatchStats {
        self.run(rows, |s, split| {
            let scale = 1.0 / global_batch as f32;
            let (spec, layout) = (&s.spec, &s.layout[..]);
            pass::forward(
                &mut s.buf,
                spec,
                layout,
                &s.params,
                rows,
                Head::Loss { scale },
                split,
            );
            let model = Model {
                params: &mut s.params,
                grads: &mut s.grads,
                state: &mut s.state,
                kind: s.optimizer.kind(),
            };
            pass::backward(&mut s.buf, spec, layout, model, rows, h, split);
            pass::batch_stats(&s.buf, rows)
        })
    }

    /// Copies the rows `order[start..start + len]` into the batch buffers (`xs[0]` and `t`).
    fn load_rows(&mut self, start: usize, len: usize) -> Result<()> {
        self.reserve_rows(len)?;
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        let rows = &self.order[start..start + len];
        let xs = self.buf.xs[0].chunks_exact_mut(inp + 1);
        for ((x, t), &r) in xs.zip(self.buf.t.chunks_exact_mut(out)).zip(rows) {
            let r = r as usize;
            x[..inp].copy_from_slice(&self.train_x[r * inp..(r + 1) * inp]);
            t.copy_from_slice(&self.train_t[r * out..(r + 1) * out]);
        }
        Ok(())
    }

    /// Forward over x: [len, in] (len ≤ the batch capacity), ending in `head`.
    fn forward_block(&mut self, x: &[f32], len: usize, head: Head) {
        self.load_inputs(x, len);
        self.run(len, |s, split| {
            let (spec, layout) = (&s.spec, &s.layout[..]);
            pass::forward(&mut s.buf, spec, layout, &s.params, len, head, split);
        });
    }

    fn check_rows(&self, what: &str, data: &[f32], rows: usize, width: usize) -> Result<()> {
        if data.len() != rows * width {
            return Err(Error::shape(
                what,
                format!("{rows} rows × {width} = {} values", rows * width),
                data.len(),
            ));
        }
        crate::data::check_finite(what, data, width)
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({} threads)", self.threads)
    }
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        crate::backend::set_params_checked(&mut self.params, params)
    }
    fn params(&mut self) -> Result<Vec<f32>> {
        Ok(self.params.clone())
    }
    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        state.check_shape(self.optimizer.state_slots(), self.params.len())?;
        self.state.m.copy_from_slice(&state.m);
        self.state.v.copy_from_slice(&state.v);
        Ok(())
    }
    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        Ok(self.state.clone())
    }
    fn set_train_data(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<()> {
        if rows == 0 {
            return Err(Error::InvalidData("the training set is empty".into()));
        }
        self.check_rows("inputs", x, rows, self.spec.inputs())?;
        self.check_rows("targets", t, rows, self.spec.outputs())?;
        let bytes = (x.len() as u64 + t.len() as u64) * 4 + rows as u64 * 4;
        check_host_memory(&format!("a training set of {rows} rows"), Some(bytes))?;
        self.train_x = zeros(x.len())?;
        self.train_x.copy_from_slice(x);
        self.train_t = zeros(t.len())?;
        self.train_t.copy_from_slice(t);
        self.train_rows = rows;
        self.order = Vec::with_capacity(rows);
        Ok(())
    }
    fn begin_epoch(&mut self, order: &[u32]) -> Result<()> {
        if order.len() != self.train_rows || order.iter().any(|&i| i as usize >= self.train_rows) {
            return Err(Error::InvalidConfig(format!(
                "epoch order must index the {} training rows",
                self.train_rows
            )));
        }
        self.order.clear();
        self.order.extend_from_slice(order);
        self.epoch_stats.clear();
        Ok(())
    }
    fn step(&mut self, start: usize, len: usize, hyper: &StepHyper) -> Result<()> {
        self.spec.check_trainable()?;
        if len == 0 || start + len > self.order.len() {
            return Err(Error::InvalidConfig(format!(
                "step rows {start}..{} outside the epoch's {} rows",
                start + len,
                self.order.len()
            )));
        }
        self.load_rows(start, len)?;
        let stats = self.train_rows(len, len, Some(hyper));
        self.epoch_stats.push(stats);
        Ok(())
    }
    fn backward_shard(
        &mut self,
        start: usize,
        len: usize,
        global_batch: usize,
        _hyper: &StepHyper,
    ) -> Result<()> {
        self.spec.check_trainable()?;
        crate::backend::check_shard(start, len, global_batch, self.order.len())?;
        let stats = if len == 0 {
            self.grads.fill(0.0);
            BatchStats::default()
        } else {
            self.load_rows(start, len)?;
            self.train_rows(len, global_batch, None)
        };
        self.epoch_stats.push(stats);
        Ok(())
    }
    fn shard_gradient(&mut self, out: &mut [f32]) -> Result<()> {
        crate::backend::check_gradient_len(out, self.grads.len())?;
        out.copy_from_slice(&self.grads);
        Ok(())
    }
    fn apply_gradient(&mut self, grad: &[f32], hyper: &StepHyper) -> Result<()> {
        crate::backend::check_gradient_len(grad, self.grads.len())?;
        self.grads.copy_from_slice(grad);
        let model = Model {
            params: &mut self.params,
            grads: &mut self.grads,
            state: &mut self.state,
            kind: self.optimizer.kind(),
        };
        pass::apply(&self.layout, model, hyper);
        Ok(())
    }
    fn finish_epoch(&mut self) -> Result<Vec<BatchStats>> {
        Ok(std::mem::take(&mut self.epoch_stats))
    }
    /// The chunk replaces the training rows in place (the buffers of an earlier chunk as
    /// large are reused) and keeps the epoch's stats; the trainer gathers the next chunk on
    /// another thread meanwhile.
    fn load_chunk(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<()> {
        if rows == 0 {
            return Err(Error::InvalidData("a training chunk is empty".into()));
        }
        self.check_rows("inputs", x, rows, self.spec.inputs())?;
        self.check_rows("targets", t, rows, self.spec.outputs())?;
        for (dst, src) in [(&mut self.train_x, x), (&mut self.train_t, t)] {
            if dst.capacity() < src.len() {
                *dst = zeros(src.len())?;
            }
            dst.clear();
            dst.extend_from_slice(src);
        }
        self.train_rows = rows;
        self.order.clear();
        self.order.extend(0..rows as u32);
        Ok(())
    }
    fn finish_chunk(&mut self) -> Result<Vec<BatchStats>> {
        Ok(Vec::new())
    }
    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        self.check_rows("inputs", x, rows, inp)?;
        let mut y = zeros(rows * out)?;
        let mut start = 0;
        while start < rows {
            let len = self.buf.cap.min(rows - start);
            self.forward_block(&x[start * inp..(start + len) * inp], len, Head::Outputs);
            y[start * out..(start + len) * out].copy_from_slice(&self.buf.y[..len * out]);
            start += len;
        }
        Ok(y)
    }
    fn evaluate(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<BatchStats> {
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        self.check_rows("inputs", x, rows, inp)?;
        self.check_rows("targets", t, rows, out)?;
        let mut stats = BatchStats::default();
        let mut start = 0;
        while start < rows {
            let len = self.buf.cap.min(rows - start);
            self.buf.t[..len * out].copy_from_slice(&t[start * out..(start + len) * out]);
            let head = Head::Loss { scale: 1.0 };
            self.forward_block(&x[start * inp..(start + len) * inp], len, head);
            stats.add(&pass::batch_stats(&self.buf, len));
            start += len;
        }
        Ok(stats)
    }
    fn last_gradients(&mut self) -> Result<Vec<f32>> {
        Ok(self.grads.clone())
    }
    fn allocated_bytes(&self) -> u64 {
        let floats = self.params.len()
            + self.grads.len()
            + self.state.m.len()
            + self.state.v.len()
            + self.train_x.len()
            + self.train_t.len()
            + self.buf.floats();
        (floats * 4 + self.order.capacity() * 4 + self.buf.cap) as u64
    }
}
