//! How a training step is queued: one submit per step (or several steps per submit over a
//! device-resident training set), micro-batches accumulating the gradient where a step does
//! not fit the batch buffers; and the data-parallel split step's buffers and checks.

use super::*;

impl GpuBackend {
    /// Rows of the training set (0 before `set_train_data`).
    pub(super) fn train_rows(&self) -> usize {
        self.data.rows()
    }

    /// The buffer holding a step's whole gradient in the split schedule: the micro-batch total,
    /// else `grads`.
    pub(super) fn gradient_buffer(&self) -> &wgpu::Buffer {
        self.grad_total.as_ref().unwrap_or(&self.grads)
    }

    /// The split step needs a model placed as a data-parallel replica.
    pub(super) fn check_split(&self) -> Result<()> {
        if self.options.data_parallel {
            return Ok(());
        }
        Err(Error::InvalidConfig(
            "backward_shard, shard_gradient and apply_gradient need a model placed for data parallelism: GpuOptions { data_parallel: true, .. }".into(),
        ))
    }

    /// Queues a step on rows `order[start..start + len]` (1 ≤ len), the output delta scaled by
    /// `1/global_batch`; `update: false` stops at the gradient (a data-parallel shard, whose
    /// `hyper.l2` is 0).
    pub(super) fn run_step(
        &mut self,
        start: usize,
        len: usize,
        global_batch: usize,
        hyper: &StepHyper,
        update: bool,
    ) -> Result<()> {
        self.check_step_rows(start, len)?;
        let step_no = self.epoch_steps;
        // One submit per step; a step larger than the batch buffers runs as micro-batches that
        // accumulate the gradient (λW added once), then one update.
        let chunks = len.div_ceil(self.micro);
        for c in 0..chunks {
            let offset = c * self.micro;
            let rows_here = self.micro.min(len - offset);
            self.ensure_stats_capacity(self.epoch_lens.len() + 1)?;
            self.upload_host_rows(start + offset, rows_here);
            let mut h = *hyper;
            if c > 0 {
                h.l2 = 0.0;
            }
            // Steps over a device-resident training set queue up, each with its own uniform
            // slot. Micro-batched schedules (whose steps clear and accumulate the gradient
            // total, even a step that fits one micro-batch) and uploads submit one by one, from
            // slot 0, after whatever is queued: the slot is rewritten below.
            let queued = self.accumulate.is_none() && self.data.on_device().is_some();
            let slot = if queued {
                self.pending.borrow().len()
            } else {
                self.flush();
                0
            };
            self.write_step(
                slot,
                rows_here,
                self.epoch_lens.len(),
                start + offset,
                &h,
                1.0 / global_batch as f32,
            );
            let mut items = self.step_items(update);
            if c + 1 == chunks && self.accumulate.is_some() && update {
                items.extend(self.update.iter().map(Item::Kernel));
            }
            if queued {
                self.queue_step(rows_here, &items, slot);
            } else {
                let clear = if c == 0 {
                    self.grad_total.as_ref()
                } else {
                    None
                };
                self.submit(rows_here, &items, clear);
            }
            self.epoch_lens.push(rows_here);
            self.slot_steps.push(step_no);
        }
        self.epoch_steps += 1;
        Ok(())
    }

    /// Steps cover 1 to `max_batch` rows inside the epoch's.
    fn check_step_rows(&self, start: usize, len: usize) -> Result<()> {
        let rows = self.train_rows();
        if len == 0 || len > self.max_batch || start.checked_add(len).is_none_or(|end| end > rows) {
            return Err(Error::InvalidConfig(format!(
                "step rows {start}..{} must be 1..={} rows inside the epoch's {rows}",
                start + len,
                self.max_batch
            )));
        }
        Ok(())
    }

    /// Training data kept on the host: gathers rows `order[from..from + rows]` into x: [rows, in]
    /// and t: [rows, out] and uploads them to the batch buffers (nothing for device data).
    fn upload_host_rows(&self, from: usize, rows: usize) {
        let TrainData::Host(h) = &self.data else {
            return;
        };
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        let mut x = Vec::with_capacity(rows * inp);
        let mut t = Vec::with_capacity(rows * out);
        for &r in &h.order[from..from + rows] {
            let r = r as usize;
            x.extend_from_slice(&h.x[r * inp..(r + 1) * inp]);
            t.extend_from_slice(&h.t[r * out..(r + 1) * out]);
        }
        self.upload(&self.x_batch, &x);
        self.upload(&self.t_batch, &t);
    }
}
