//! `bench --profile`: one step with every dispatch timed by timestamp queries.

use super::*;

impl GpuBackend {
    /// Runs one training step with each dispatch in its own timed pass and returns the time of
    /// each (label, seconds). Needs timestamp queries; for `bench --profile`, not for training.
    /// Where the plan says so ([`super::plan::wall_clock_profiling`]: no timestamp queries, or
    /// a CPU adapter, whose timestamps cover only the coroutine that wrote them) each dispatch
    /// is submitted alone and timed by the host clock instead.
    pub fn profile_step(
        &mut self,
        start: usize,
        len: usize,
        hyper: &StepHyper,
    ) -> Result<Vec<(String, f64)>> {
        if !self.ctx.timestamps {
            return Err(Error::Gpu(format!(
                "{} does not support timestamp queries, so kernels cannot be timed",
                self.ctx.info
            )));
        }
        if len > self.micro {
            return Err(Error::InvalidConfig(format!(
                "profile a step of at most {} rows (one micro-batch)",
                self.micro
            )));
        }
        self.flush();
        self.ensure_stats_capacity(self.epoch_lens.len() + 1)?;
        self.write_step(
            0,
            len,
            self.epoch_lens.len(),
            start,
            hyper,
            1.0 / len as f32,
        );
        let d = self.step_items(true);
        let times = if super::plan::wall_clock_profiling(&self.ctx.capabilities()) {
            self.time_by_wall_clock(&d, len)?
        } else {
            self.time_by_timestamps(&d, len)?
        };
        drop(d);
        // The step ran: it counts as one of the epoch's (as `step` counts it), so that
        // `finish_epoch` has a place for its stats.
        self.slot_steps.push(self.epoch_steps);
        self.epoch_lens.push(len);
        self.epoch_steps += 1;
        Ok(times)
    }

    /// Each dispatch of `d` submitted alone and timed by the host clock around it.
    fn time_by_wall_clock(&self, d: &[Item<'_>], len: usize) -> Result<Vec<(String, f64)>> {
        let mut times = Vec::with_capacity(d.len());
        for x in d {
            let cmd = self.encode(len, std::slice::from_ref(x), 0);
            let t = std::time::Instant::now();
            self.ctx.queue.submit([cmd]);
            self.ctx.wait()?;
            times.push((x.label(), t.elapsed().as_secs_f64()));
        }
        Ok(times)
    }

    /// Every dispatch of `d` in its own compute pass, timed by timestamp queries written at
    /// the pass's start and end, in one submit.
    fn time_by_timestamps(&self, d: &[Item<'_>], len: usize) -> Result<Vec<(String, f64)>> {
        let device = &self.ctx.device;
        let count = (d.len() * 2) as u32;
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: count as u64 * 8,
                usage,
                mapped_at_creation: false,
            })
        };
        let resolve = buffer(
            "profile resolve",
            wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        );
        let staging = buffer(
            "profile readback",
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("profile"),
        });
        for (i, x) in d.iter().enumerate() {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&x.label()),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &queries,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                }),
            });
            self.record(&mut pass, x, len, 0);
        }
        enc.resolve_query_set(&queries, 0..count, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, count as u64 * 8);
        self.ctx.queue.submit([enc.finish()]);
        let raw = read_staging(&self.ctx, &staging)?;
        let ticks: &[u64] = bytemuck::cast_slice(&raw);
        let period = self.ctx.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(d.iter()
            .enumerate()
            .map(|(i, x)| {
                let t = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                (x.label(), t as f64 * period)
            })
            .collect())
    }
}
