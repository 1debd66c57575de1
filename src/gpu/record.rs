//! Recording and submitting: the per-step uniform, dispatches recorded into one encoder per
//! step, the queue of steps not yet submitted, and the transfers between steps.

use super::*;

impl GpuBackend {
    /// The per-step uniform. `inv_batch` scales the output delta: 1/rows of the whole step, also
    /// for each of its micro-batches.
    pub(super) fn write_step(
        &self,
        slot: usize,
        batch: usize,
        step_index: usize,
        row_start: usize,
        h: &StepHyper,
        inv_batch: f32,
    ) {
        let u = StepUniform {
            step_index: step_index as u32,
            row_start: row_start as u32,
            ..StepUniform::new(batch, h, inv_batch)
        };
        self.ctx.queue.write_buffer(
            &self.step_uniform,
            slot as u64 * self.step_stride,
            bytemuck::bytes_of(&u),
        );
    }

    /// Submits the steps recorded so far. Called before anything else reaches the device from
    /// the host: a `write_buffer` takes effect before every command buffer of the next submit.
    pub(super) fn flush(&self) {
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            self.ctx.queue.submit(pending.drain(..));
        }
    }

    /// Records one item for a batch of `batch` rows reading step uniform slot `slot`.
    pub(super) fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        item: &Item<'_>,
        batch: usize,
        slot: usize,
    ) {
        let offset = (slot as u64 * self.step_stride) as u32;
        let d = match item {
            Item::Kernel(d) => d,
            Item::Fused(f) => return f.record(pass, batch, offset),
        };
        let (x, y) = match d.grid {
            Grid::BatchRows { cols, cfg } => cfg.groups(batch as u32, cols),
            Grid::Fixed(x, y) => (x, y),
            Grid::Split(x, y, z) => {
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[offset]);
                pass.dispatch_workgroups(x, y, z);
                return;
            }
            Grid::PerRow { per_row } => groups_1d(
                batch as u64 * per_row as u64,
                self.ctx.limits.max_compute_workgroups_per_dimension,
            ),
        };
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[offset]);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// A new encoder holding one compute pass over `items` for a batch of `batch` rows reading
    /// step uniform slot `slot`.
    pub(super) fn encoder_with(
        &self,
        label: &str,
        batch: usize,
        items: &[Item<'_>],
        slot: usize,
    ) -> wgpu::CommandEncoder {
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: None,
            });
            for d in items {
                self.record(&mut pass, d, batch, slot);
            }
        }
        enc
    }

    /// Records `items` over a batch of `batch` rows reading step uniform slot `slot` into one
    /// command buffer.
    pub(super) fn encode(
        &self,
        batch: usize,
        items: &[Item<'_>],
        slot: usize,
    ) -> wgpu::CommandBuffer {
        self.encoder_with("step", batch, items, slot).finish()
    }

    /// Queues `items` (written for slot `slot`, the number of steps pending) and submits the
    /// queue when it is full.
    pub(super) fn queue_step(&self, batch: usize, items: &[Item<'_>], slot: usize) {
        let cmd = self.encode(batch, items, slot);
        let full = {
            let mut pending = self.pending.borrow_mut();
            pending.push(cmd);
            pending.len() >= self.options.steps_per_submit.max(1)
        };
        if full {
            self.flush();
        }
    }

    /// Submits what is queued, then records and submits `items` over a batch of `batch` rows
    /// (step uniform slot 0), in one encoder; `clear` is zeroed first.
    pub(super) fn submit(&self, batch: usize, items: &[Item<'_>], clear: Option<&wgpu::Buffer>) {
        self.flush();
        let step = self.encode(batch, items, 0);
        match clear {
            Some(b) => {
                let mut first =
                    self.ctx
                        .device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("clear"),
                        });
                first.clear_buffer(b, 0, None);
                self.ctx.queue.submit([first.finish(), step]);
            }
            None => {
                self.ctx.queue.submit([step]);
            }
        }
    }

    /// What one (micro-)batch records, in order: gathers, then the fused step or the layered
    /// forward, loss, backward (with gradient accumulation, or the update where separate and
    /// `update` asks for it).
    pub(super) fn step_items(&self, update: bool) -> Vec<Item<'_>> {
        let mut v: Vec<Item> = Vec::new();
        if let Some(data) = self.data.on_device() {
            v.extend(data.gather.iter().map(Item::Kernel));
        }
        if let Some(f) = &self.fused_mlp {
            v.push(Item::Fused(f));
            return v;
        }
        v.extend(self.forward.iter().map(Item::Kernel));
        v.extend(self.loss.iter().map(Item::Kernel));
        v.extend(self.backward.iter().map(Item::Kernel));
        v.extend(self.accumulate.iter().map(Item::Kernel));
        if self.accumulate.is_none() && update {
            v.extend(self.update.iter().map(Item::Kernel));
        }
        v
    }

    /// Dispatches per training step (gathers included when the data lives on the device).
    pub fn dispatches_per_step(&self) -> usize {
        self.step_items(true)
            .iter()
            .map(|i| match i {
                Item::Kernel(_) => 1,
                Item::Fused(f) => f.dispatches(),
            })
            .sum()
    }

    /// Reads `count` f32 from `buf` (a readback: only between steps).
    pub(super) fn read(&self, buf: &wgpu::Buffer, count: usize) -> Result<Vec<f32>> {
        self.flush();
        if count == 0 {
            return Ok(Vec::new());
        }
        let size = count as u64 * F32;
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
        self.ctx.queue.submit([enc.finish()]);
        read_staging(&self.ctx, &staging)
    }

    pub(super) fn upload(&self, buf: &wgpu::Buffer, data: &[f32]) {
        self.flush();
        if !data.is_empty() {
            self.ctx
                .queue
                .write_buffer(buf, 0, bytemuck::cast_slice(data));
        }
    }
}

/// Maps a MAP_READ buffer and returns its f32 contents.
pub(super) fn read_staging(ctx: &GpuContext, staging: &wgpu::Buffer) -> Result<Vec<f32>> {
    let slice = staging.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    ctx.wait()?;
    rx.recv()
        .map_err(|_| Error::Gpu("readback callback never ran".into()))?
        .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
    let data = {
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
        bytemuck::cast_slice::<u8, f32>(&view).to_vec()
    };
    staging.unmap();
    Ok(data)
}
