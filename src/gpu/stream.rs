//! Streamed training data on the GPU: two device slots, so that uploading chunk c + 1
//! (`queue.write_buffer`, no readback) overlaps the queued steps of chunk c.

use super::*;
use kernels::DataBindings;

impl GpuBackend {
    /// Drops the training data, releasing its bytes from [`Backend::allocated_bytes`].
    pub(super) fn release_data(&mut self) {
        match std::mem::replace(&mut self.data, TrainData::None) {
            TrainData::Device(old) => self.bytes -= old.bytes,
            TrainData::Stream(s) => self.bytes -= s.slots.iter().map(|d| d.bytes).sum::<u64>(),
            TrainData::Host(_) | TrainData::None => {}
        }
    }

    /// Uploads x: [rows, in] and t: [rows, out] into new device buffers read through `order`
    /// ([rows]), with their gather launches.
    pub(super) fn device_data(
        &mut self,
        x: &[f32],
        t: &[f32],
        rows: usize,
        order: &[u32],
    ) -> Result<DeviceData> {
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        let before = self.bytes;
        let ctx = self.ctx.clone();
        let (data_x, data_t, order) = ctx.scoped("uploading the training set", || {
            (
                self.storage_buffer("data_x", bytemuck::cast_slice(x)),
                self.storage_buffer("data_t", bytemuck::cast_slice(t)),
                self.storage_buffer("order", bytemuck::cast_slice(order)),
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
                    &DataBindings {
                        gather: &dims,
                        step: &self.step_uniform,
                        order: &order,
                        src,
                        dst,
                    },
                ),
                grid: Grid::PerRow {
                    per_row: width as u32,
                },
            }
        };
        let gather = [
            gather(&data_x, &self.x_batch, inp),
            gather(&data_t, &self.t_batch, out),
        ];
        Ok(DeviceData {
            rows,
            bytes: self.bytes - before,
            order,
            gather,
            _x: data_x,
            _t: data_t,
        })
    }

    /// [`Backend::load_chunk`]: the chunk goes to the slot the previous chunk did not use,
    /// reusing its buffers when they are large enough. Every chunk's per-step stats stay on
    /// the device until `finish_epoch`.
    pub(super) fn load_stream_chunk(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<()> {
        if rows == 0 {
            return Err(Error::InvalidData("a training chunk is empty".into()));
        }
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        self.check_rows("inputs", x, rows, inp)?;
        self.check_rows("targets", t, rows, out)?;
        let limit = self.ctx.max_binding_bytes();
        let too_large = crate::limits::bytes_of(&[rows, inp.max(out)], F32) > limit
            || u32::try_from(rows).is_err();
        self.ensure_stats_capacity(self.epoch_lens.len() + rows.div_ceil(self.micro))?;
        if too_large {
            // Past one binding: kept on the host and uploaded a batch at a time.
            self.release_data();
            self.data = TrainData::Host(HostData {
                x: x.to_vec(),
                t: t.to_vec(),
                rows,
                order: (0..rows as u32).collect(),
            });
            return Ok(());
        }
        if !matches!(self.data, TrainData::Stream(_)) {
            self.release_data();
            self.data = TrainData::Stream(StreamData {
                slots: Vec::new(),
                current: 1,
                rows: 0,
            });
        }
        let TrainData::Stream(s) = &self.data else {
            unreachable!("set above")
        };
        let next = 1 - s.current;
        let identity: Vec<u32> = (0..rows as u32).collect();
        match s.slots.get(next) {
            Some(slot) if slot.rows >= rows => {
                // Steps recorded on this slot's previous chunk are submitted first; the writes
                // run after them, in queue order, while the other slot's steps need not wait.
                self.flush();
                let q = &self.ctx.queue;
                q.write_buffer(&slot._x, 0, bytemuck::cast_slice(x));
                q.write_buffer(&slot._t, 0, bytemuck::cast_slice(t));
                q.write_buffer(&slot.order, 0, bytemuck::cast_slice(&identity));
            }
            _ => {
                self.flush();
                let slot = self.device_data(x, t, rows, &identity)?;
                let TrainData::Stream(s) = &mut self.data else {
                    unreachable!("set above")
                };
                if next < s.slots.len() {
                    let old = std::mem::replace(&mut s.slots[next], slot);
                    self.bytes -= old.bytes;
                } else {
                    s.slots.push(slot);
                }
            }
        }
        let TrainData::Stream(s) = &mut self.data else {
            unreachable!("set above")
        };
        s.current = next;
        s.rows = rows;
        Ok(())
    }
}
