//! The `Backend` trait for the wgpu backend: data upload, epochs, steps (micro-batched where a
//! step does not fit the buffers), readbacks between epochs, prediction and evaluation.

use super::*;

/// The largest readback buffer `predict` creates at once.
const PREDICT_STAGING_BYTES: u64 = 256 << 20;

impl Backend for GpuBackend {
    fn name(&self) -> String {
        self.ctx.info.to_string()
    }
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        if params.len() != self.spec.param_count() {
            return Err(Error::shape(
                "parameters",
                self.spec.param_count(),
                params.len(),
            ));
        }
        crate::data::check_finite("parameters", params, params.len())?;
        self.upload(&self.params, params);
        Ok(())
    }
    fn params(&mut self) -> Result<Vec<f32>> {
        self.read(&self.params, self.spec.param_count())
    }
    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        state.check_shape(self.optimizer.state_slots(), self.spec.param_count())?;
        self.upload(&self.opt_m, &state.m);
        self.upload(&self.opt_v, &state.v);
        Ok(())
    }
    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        let p = self.spec.param_count();
        let slots = self.optimizer.state_slots();
        Ok(OptimizerState {
            m: if slots >= 1 {
                self.read(&self.opt_m, p)?
            } else {
                Vec::new()
            },
            v: if slots >= 2 {
                self.read(&self.opt_v, p)?
            } else {
                Vec::new()
            },
        })
    }

    fn set_train_data(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<()> {
        if rows == 0 {
            return Err(Error::InvalidData("the training set is empty".into()));
        }
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        self.check_rows("inputs", x, rows, inp)?;
        self.check_rows("targets", t, rows, out)?;
        // Per-step stats: room for an epoch of full batches (a step of more rows than the
        // batch buffers takes one slot per micro-batch), within one binding; `step` grows it
        // further if an epoch ever needs more, or says what to change.
        let expected_slots = rows
            .div_ceil(self.micro)
            .saturating_add(rows.div_ceil(self.max_batch))
            .min(self.max_stats_slots());
        self.ensure_stats_capacity(expected_slots)?;
        if let TrainData::Device(old) = std::mem::replace(&mut self.data, TrainData::None) {
            self.bytes -= old.bytes;
        }
        let before = self.bytes;
        let limit = self.ctx.max_binding_bytes();
        let (x_bytes, t_bytes) = (
            crate::limits::bytes_of(&[rows, inp], 4),
            crate::limits::bytes_of(&[rows, out], 4),
        );
        if x_bytes > limit || t_bytes > limit || u32::try_from(rows).is_err() {
            // Too large for one binding: kept on the host and uploaded a batch at a time.
            crate::limits::check_host_bytes(
                &format!("the GPU backend's host copy of the training set ({rows} rows)"),
                x_bytes.saturating_add(t_bytes),
                "use a smaller training set",
            )?;
            self.data = TrainData::Host(HostData {
                x: x.to_vec(),
                t: t.to_vec(),
                rows,
                order: Vec::new(),
            });
            return Ok(());
        }
        let ctx = self.ctx.clone();
        let (data_x, data_t, order) = ctx.scoped("uploading the training set", || {
            (
                self.storage_buffer("data_x", bytemuck::cast_slice(x)),
                self.storage_buffer("data_t", bytemuck::cast_slice(t)),
                self.storage_buffer("order", bytemuck::cast_slice(&vec![0u32; rows])),
            )
        })?;
        let device = &self.ctx.device;
        let gather = |src: &wgpu::Buffer, dst: &wgpu::Buffer, width: usize| {
            let dims = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("gather"),
                contents: bytemuck::bytes_of(&OneU32 {
                    value: width as u32,
                    _pad: [0; 3],
                }),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            Dispatch {
                label: format!("gather rows [B,{width}]"),
                pipeline: self
                    .kernels
                    .pipeline(device, Family::Data, "gather_rows", &[]),
                bind_group: self.kernels.bind_group(
                    device,
                    Family::Data,
                    &[&dims, &self.step_uniform, &order, src, dst],
                ),
                grid: Grid::PerRow {
                    per_row: width as u32,
                },
            }
        };
        let gather_x = match &self.x_image {
            Some(view) => images::gather_to_image(
                &self.ctx,
                &self.kernels,
                &self.step_uniform,
                &data_x,
                &order,
                inp,
                view,
            ),
            None => gather(&data_x, &self.x_batch, inp),
        };
        let gather = [gather_x, gather(&data_t, &self.t_batch, out)];
        self.data = TrainData::Device(DeviceData {
            rows,
            bytes: self.bytes - before,
            order,
            gather,
            _x: data_x,
            _t: data_t,
        });
        Ok(())
    }

    fn begin_epoch(&mut self, order: &[u32]) -> Result<()> {
        let rows = match &self.data {
            TrainData::None => {
                return Err(Error::InvalidConfig(
                    "no training data: call set_train_data first".into(),
                ))
            }
            TrainData::Device(d) => d.rows,
            TrainData::Host(h) => h.rows,
        };
        if order.len() != rows || order.iter().any(|&i| i as usize >= rows) {
            return Err(Error::InvalidConfig(format!(
                "epoch order must index the {rows} training rows"
            )));
        }
        self.flush();
        match &mut self.data {
            TrainData::Device(d) => {
                self.ctx
                    .queue
                    .write_buffer(&d.order, 0, bytemuck::cast_slice(order))
            }
            TrainData::Host(h) => h.order = order.to_vec(),
            TrainData::None => {}
        }
        self.epoch_lens.clear();
        self.slot_steps.clear();
        self.epoch_steps = 0;
        Ok(())
    }

    fn step(&mut self, start: usize, len: usize, hyper: &StepHyper) -> Result<()> {
        self.spec.check_trainable()?;
        if len == 0 {
            return Err(Error::InvalidConfig(format!(
                "step rows {start}..{start} must be 1..={} rows",
                self.max_batch
            )));
        }
        self.run_step(start, len, len, hyper, true)
    }
    fn backward_shard(
        &mut self,
        start: usize,
        len: usize,
        global_batch: usize,
        hyper: &StepHyper,
    ) -> Result<()> {
        self.spec.check_trainable()?;
        self.check_split()?;
        crate::backend::check_shard(start, len, global_batch, self.train_rows())?;
        let h = StepHyper { l2: 0.0, ..*hyper };
        if len > 0 {
            return self.run_step(start, len, global_batch, &h, false);
        }
        // An empty shard: a zero gradient, and a step without stats.
        self.flush();
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("empty shard"),
            });
        enc.clear_buffer(self.gradient_buffer(), 0, None);
        self.ctx.queue.submit([enc.finish()]);
        self.epoch_steps += 1;
        Ok(())
    }
    fn shard_gradient(&mut self, out: &mut [f32]) -> Result<()> {
        self.check_split()?;
        crate::backend::check_gradient_len(out, self.spec.param_count())?;
        let grad = self.read(self.gradient_buffer(), out.len())?;
        out.copy_from_slice(&grad);
        Ok(())
    }
    fn apply_gradient(&mut self, grad: &[f32], hyper: &StepHyper) -> Result<()> {
        self.check_split()?;
        crate::backend::check_gradient_len(grad, self.spec.param_count())?;
        self.upload(self.gradient_buffer(), grad);
        self.write_step(0, 1, 0, 0, hyper, 1.0);
        let mut items: Vec<Item> = self.weight_decay.iter().map(Item::Kernel).collect();
        items.extend(self.update.iter().map(Item::Kernel));
        self.submit(1, &items, None);
        Ok(())
    }

    fn finish_epoch(&mut self) -> Result<Vec<BatchStats>> {
        let lens = std::mem::take(&mut self.epoch_lens);
        let steps = std::mem::take(&mut self.slot_steps);
        let raw = self.read(&self.stats, lens.len() * 2)?;
        let mut out = vec![BatchStats::default(); std::mem::take(&mut self.epoch_steps)];
        for ((c, len), step) in raw.chunks(2).zip(lens).zip(steps) {
            let s = &mut out[step];
            s.loss_sum += c[0] as f64;
            s.correct += c[1] as u64;
            s.samples += len as u64;
        }
        Ok(out)
    }

    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        self.check_rows("inputs", x, rows, inp)?;
        crate::limits::check_host_bytes(
            &format!("the outputs of {rows} samples × {out} values"),
            crate::limits::bytes_of(&[rows, out], F32),
            "predict fewer samples at a time",
        )?;
        // Rows are read back in groups whose staging buffer stays within the device's buffer
        // limit (and PREDICT_STAGING_BYTES), a whole number of micro-batches each.
        let staging_limit = self.ctx.limits.max_buffer_size.min(PREDICT_STAGING_BYTES);
        let per_row = out as u64 * F32;
        let micro_bytes = per_row * self.micro as u64;
        let group = (staging_limit / micro_bytes.max(1)).max(1) as usize * self.micro;
        let mut y = Vec::with_capacity(rows * out);
        let mut start = 0;
        while start < rows {
            let n = group.min(rows - start);
            let size = (n as u64 * per_row).max(4);
            if size > self.ctx.limits.max_buffer_size {
                return Err(Error::DeviceLimit(format!(
                    "one batch of {n} outputs needs {}, over this device's buffer limit of {} bytes ({}): use a smaller --batch",
                    crate::limits::show_bytes(size),
                    self.ctx.limits.max_buffer_size,
                    self.ctx.info
                )));
            }
            let staging = self
                .ctx
                .scoped("creating the prediction readback buffer", || {
                    self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("predict"),
                        size,
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    })
                })?;
            self.forward_chunks(
                &x[start * inp..(start + n) * inp],
                None,
                n,
                |me, s, len, enc| {
                    let z = &me.layers.last().expect("a layer").z;
                    enc.copy_buffer_to_buffer(
                        z,
                        0,
                        &staging,
                        (s * out) as u64 * F32,
                        (len * out) as u64 * F32,
                    );
                },
            );
            let mut part = read_staging(&self.ctx, &staging)?;
            part.truncate(n * out);
            y.extend(part);
            start += n;
        }
        Ok(y)
    }

    fn evaluate(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<BatchStats> {
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        self.check_rows("inputs", x, rows, inp)?;
        self.check_rows("targets", t, rows, out)?;
        if !self.epoch_lens.is_empty() {
            return Err(Error::InvalidConfig(
                "evaluate inside an epoch: call finish_epoch first".into(),
            ));
        }
        // Groups of micro-batches whose per-chunk stats fit the stats buffer's binding.
        let group_chunks = self.max_stats_slots().clamp(1, 1024);
        let group = group_chunks * self.micro;
        let mut s = BatchStats {
            samples: rows as u64,
            ..Default::default()
        };
        let mut start = 0;
        while start < rows {
            let n = group.min(rows - start);
            let chunks = n.div_ceil(self.micro);
            self.ensure_stats_capacity(chunks)?;
            self.forward_chunks(
                &x[start * inp..(start + n) * inp],
                Some(&t[start * out..(start + n) * out]),
                n,
                |_, _, _, _| {},
            );
            let raw = self.read(&self.stats, chunks * 2)?;
            for c in raw.chunks(2) {
                s.loss_sum += c[0] as f64;
                s.correct += c[1] as u64;
            }
            start += n;
        }
        Ok(s)
    }

    fn last_gradients(&mut self) -> Result<Vec<f32>> {
        if self.options.fused && !self.options.capture_gradients {
            return Err(Error::InvalidConfig(
                "gradients are not kept by the fused schedule: place the model with GpuOptions { capture_gradients: true, .. }".into(),
            ));
        }
        let grads = self.grad_total.as_ref().unwrap_or(&self.grads);
        self.read(grads, self.spec.param_count())
    }
    fn allocated_bytes(&self) -> u64 {
        self.bytes
    }
}
