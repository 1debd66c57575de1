//! The CPU reference backend: naive and readable, the oracle every GPU kernel is tested against.

pub mod ops;

use crate::backend::{Backend, BatchStats, OptimizerState};
use crate::error::{Error, Result};
use crate::model::ModelSpec;
use crate::optim::{Optimizer, StepHyper};
use ops::{backprop_delta, dense_forward, optimizer_update, output_delta_row, weight_grad};

/// Per-layer values of one forward/backward pass. Each `[rows, out_l]`.
struct Pass {
    a: Vec<Vec<f32>>,
    z: Vec<Vec<f32>>,
}

/// The reference backend: the model's parameters in one `Vec<f32>` and plain loops.
pub struct ReferenceBackend {
    spec: ModelSpec,
    optimizer: Optimizer,
    params: Vec<f32>,
    state: OptimizerState,
    grads: Vec<f32>,
    train_x: Vec<f32>,
    train_t: Vec<f32>,
    train_rows: usize,
    order: Vec<u32>,
    epoch_stats: Vec<BatchStats>,
}

impl ReferenceBackend {
    /// Places `spec` on the CPU with zero parameters (set them with `set_params`).
    pub fn new(spec: &ModelSpec, optimizer: Optimizer) -> Result<Self> {
        spec.validate()?;
        let p = spec.param_count();
        let slots = optimizer.state_slots();
        Ok(ReferenceBackend {
            spec: spec.clone(),
            optimizer,
            params: vec![0.0; p],
            state: OptimizerState {
                m: vec![0.0; if slots >= 1 { p } else { 0 }],
                v: vec![0.0; if slots >= 2 { p } else { 0 }],
            },
            grads: vec![0.0; p],
            train_x: Vec::new(),
            train_t: Vec::new(),
            train_rows: 0,
            order: Vec::new(),
            epoch_stats: Vec::new(),
        })
    }

    /// Forward pass. x: [rows, in]. Returns a_l, z_l for every layer.
    fn forward_pass(&self, x: &[f32], rows: usize) -> Pass {
        let mut pass = Pass {
            a: Vec::new(),
            z: Vec::new(),
        };
        for (l, (lay, &act)) in self
            .spec
            .layout()
            .iter()
            .zip(&self.spec.activations)
            .enumerate()
        {
            let input = if l == 0 { x } else { &pass.z[l - 1] };
            let mut a = vec![0.0; rows * lay.outputs];
            let mut z = vec![0.0; rows * lay.outputs];
            dense_forward(
                &mut a,
                &mut z,
                input,
                &self.params[lay.weight..lay.bias],
                &self.params[lay.bias..lay.end()],
                rows,
                lay.inputs,
                lay.outputs,
                act,
            );
            pass.a.push(a);
            pass.z.push(z);
        }
        pass
    }

    /// Loss of every row and the output delta scaled by `scale`. a: [rows, out], t: [rows, out].
    fn loss_and_delta(
        &self,
        a: &[f32],
        t: &[f32],
        rows: usize,
        scale: f32,
    ) -> (BatchStats, Vec<f32>) {
        let out = self.spec.outputs();
        let mut delta = vec![0.0; rows * out];
        let mut stats = BatchStats::default();
        for r in 0..rows {
            let (j, ok) = output_delta_row(
                &mut delta[r * out..(r + 1) * out],
                &a[r * out..(r + 1) * out],
                &t[r * out..(r + 1) * out],
                self.spec.output_activation(),
                self.spec.loss,
                scale,
            );
            stats.loss_sum += j as f64;
            stats.correct += ok as u64;
            stats.samples += 1;
        }
        (stats, delta)
    }

    /// One step on x: [rows, in], t: [rows, out]: forward, loss, backward, update.
    pub fn train_batch(&mut self, x: &[f32], t: &[f32], rows: usize, h: &StepHyper) -> BatchStats {
        let stats = self.gradients(x, t, rows, 1.0 / rows as f32, h.l2);
        self.update(h);
        stats
    }

    /// Forward, loss and backward on x: [rows, in], t: [rows, out], leaving in `grads` the
    /// gradient of `scale·Σ_rows J` plus `l2·W` on the weights.
    fn gradients(&mut self, x: &[f32], t: &[f32], rows: usize, scale: f32, l2: f32) -> BatchStats {
        let pass = self.forward_pass(x, rows);
        let layout = self.spec.layout();
        let last = layout.len() - 1;
        let (stats, mut delta) = self.loss_and_delta(&pass.a[last], t, rows, scale);
        for l in (0..=last).rev() {
            let lay = layout[l];
            let input = if l == 0 { x } else { &pass.z[l - 1] };
            let (gw, gb) = self.grads[lay.weight..lay.end()].split_at_mut(lay.weight_len());
            weight_grad(
                gw,
                gb,
                input,
                &delta,
                &self.params[lay.weight..lay.bias],
                l2,
                rows,
                lay.inputs,
                lay.outputs,
            );
            if l > 0 {
                let mut prev = vec![0.0; rows * lay.inputs];
                backprop_delta(
                    &mut prev,
                    &delta,
                    &self.params[lay.weight..lay.bias],
                    &pass.a[l - 1],
                    rows,
                    lay.inputs,
                    lay.outputs,
                    self.spec.activations[l - 1],
                );
                delta = prev;
            }
        }
        stats
    }

    /// The optimizer update with the gradient in `grads`.
    fn update(&mut self, h: &StepHyper) {
        let p = self.params.len();
        let mut m = std::mem::take(&mut self.state.m);
        let mut v = std::mem::take(&mut self.state.v);
        let (mut m_buf, mut v_buf) = (m.clone(), v.clone());
        if m_buf.is_empty() {
            m_buf = vec![0.0; p];
        }
        if v_buf.is_empty() {
            v_buf = vec![0.0; p];
        }
        optimizer_update(
            &mut self.params,
            &mut m_buf,
            &mut v_buf,
            &self.grads,
            self.optimizer.kind(),
            h,
        );
        if !m.is_empty() {
            m = m_buf;
        }
        if !v.is_empty() {
            v = v_buf;
        }
        self.state.m = m;
        self.state.v = v;
    }

    /// The rows `order[start..start + len]` of the training set: x: [len, in], t: [len, out].
    fn gather(&self, start: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        let mut x = Vec::with_capacity(len * inp);
        let mut t = Vec::with_capacity(len * out);
        for &r in &self.order[start..start + len] {
            let r = r as usize;
            x.extend_from_slice(&self.train_x[r * inp..(r + 1) * inp]);
            t.extend_from_slice(&self.train_t[r * out..(r + 1) * out]);
        }
        (x, t)
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

impl Backend for ReferenceBackend {
    fn name(&self) -> String {
        "cpu-reference".into()
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
        self.state = state.clone();
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
        self.train_x = x.to_vec();
        self.train_t = t.to_vec();
        self.train_rows = rows;
        Ok(())
    }
    fn begin_epoch(&mut self, order: &[u32]) -> Result<()> {
        if order.len() != self.train_rows || order.iter().any(|&i| i as usize >= self.train_rows) {
            return Err(Error::InvalidConfig(format!(
                "epoch order must index the {} training rows",
                self.train_rows
            )));
        }
        self.order = order.to_vec();
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
        let (x, t) = self.gather(start, len);
        let stats = self.train_batch(&x, &t, len, hyper);
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
        let (x, t) = self.gather(start, len);
        let stats = self.gradients(&x, &t, len, 1.0 / global_batch as f32, 0.0);
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
        for lay in self.spec.layout() {
            let w = &self.params[lay.weight..lay.bias];
            for (g, &w) in self.grads[lay.weight..lay.bias].iter_mut().zip(w) {
                *g += hyper.l2 * w;
            }
        }
        self.update(hyper);
        Ok(())
    }
    fn finish_epoch(&mut self) -> Result<Vec<BatchStats>> {
        Ok(std::mem::take(&mut self.epoch_stats))
    }
    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.check_rows("inputs", x, rows, self.spec.inputs())?;
        let mut pass = self.forward_pass(x, rows);
        Ok(pass.z.pop().unwrap_or_default())
    }
    fn evaluate(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<BatchStats> {
        self.check_rows("inputs", x, rows, self.spec.inputs())?;
        self.check_rows("targets", t, rows, self.spec.outputs())?;
        let pass = self.forward_pass(x, rows);
        let a = pass.a.last().expect("at least one layer");
        Ok(self.loss_and_delta(a, t, rows, 1.0).0)
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
            + self.train_t.len();
        (floats * 4 + self.order.len() * 4) as u64
    }
}
