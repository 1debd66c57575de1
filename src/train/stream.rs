//! Training sets larger than the device (or host) memory: the rows stream in chunks.
//!
//! Chunk c of an epoch holds the rows `order[c·C .. (c+1)·C]`, gathered in that order, with C a
//! multiple of the batch size, so every step sees exactly the rows, in the same order, that
//! the in-memory path gives it, and training gives the same parameters. A second thread
//! gathers (and normalizes) chunk c + 1 on the host while chunk c trains; the backend's
//! [`Backend::load_chunk`] uploads it.

use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use super::Trainer;
use crate::backend::{Backend, BatchStats};
use crate::data::{gather, gather_all, Dataset, RowSource, Targets};
use crate::error::{Error, Result};
use crate::limits::{bytes_of, host_memory_limit, show_bytes};
use crate::optim::StepHyper;

/// How a training set is held: whole on the backend, or streamed in chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPlan {
    /// The whole training set is stored on the backend once.
    InMemory,
    /// Chunks of `chunk_rows` rows (a multiple of the batch size).
    Stream {
        /// Rows per chunk, a multiple of the batch size.
        chunk_rows: usize,
    },
}

/// The steps of one epoch: batches of `batch` rows, the last one partial.
pub(super) struct Steps {
    batch: usize,
    total: usize,
    taken: usize,
    /// 0-based, for [`Error::Interrupted`].
    epoch: usize,
}

impl Steps {
    pub(super) fn new(rows: usize, batch_size: usize, epoch: usize) -> Steps {
        let batch = batch_size.min(rows).max(1);
        Steps {
            batch,
            total: rows.div_ceil(batch),
            taken: 0,
            epoch,
        }
    }

    /// Queues the steps over `rows` (as the backend's `step` counts them), asking `stop` before
    /// each: when it says `true`, ends the epoch with [`Error::Interrupted`].
    pub(super) fn run(
        &mut self,
        backend: &mut dyn Backend,
        steps: &mut u64,
        rows: Range<usize>,
        hyper: impl Fn(u64) -> StepHyper,
        on_step: &mut impl FnMut(usize, usize),
        stop: &mut impl FnMut() -> bool,
    ) -> Result<()> {
        let mut start = rows.start;
        while start < rows.end {
            if stop() {
                backend.finish_epoch()?;
                return Err(Error::Interrupted {
                    epoch: self.epoch + 1,
                    step: self.taken,
                });
            }
            self.taken += 1;
            let len = self.batch.min(rows.end - start);
            *steps += 1;
            backend.step(start, len, &hyper(*steps))?;
            start += len;
            on_step(self.taken, self.total);
        }
        Ok(())
    }
}

/// One chunk gathered on the host: x: [rows, in], dense targets t: [rows, out].
struct Chunk {
    x: Vec<f32>,
    t: Vec<f32>,
    rows: usize,
}

/// One streamed epoch over `order`: returns each step's stats.
pub(super) fn epoch(
    trainer: &mut Trainer,
    source: &dyn RowSource,
    chunk: usize,
    order: &[u32],
    hyper: impl Fn(u64) -> StepHyper,
    on_step: &mut impl FnMut(usize, usize),
    stop: &mut impl FnMut() -> bool,
) -> Result<Vec<BatchStats>> {
    let spec = trainer.backend.spec().clone();
    let (tx, rx) = sync_channel::<Result<Chunk>>(0);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for idx in order.chunks(chunk.max(1)) {
                let c = gather(source, idx).and_then(|d| {
                    let t = d.dense_targets(&spec)?;
                    Ok(Chunk {
                        x: d.features,
                        t,
                        rows: d.rows,
                    })
                });
                let failed = c.is_err();
                if tx.send(c).is_err() || failed {
                    break;
                }
            }
        });
        // `rx` is dropped when this returns, so the gathering thread ends with it.
        train_chunks(trainer, rx, hyper, on_step, stop)
    })
}

/// Trains each chunk as it arrives.
fn train_chunks(
    trainer: &mut Trainer,
    rx: Receiver<Result<Chunk>>,
    hyper: impl Fn(u64) -> StepHyper,
    on_step: &mut impl FnMut(usize, usize),
    stop: &mut impl FnMut() -> bool,
) -> Result<Vec<BatchStats>> {
    let mut steps = Steps::new(trainer.train_rows, trainer.config.batch_size, trainer.epoch);
    let backend = trainer.backend.as_mut();
    let mut stats = Vec::new();
    for (c, chunk) in rx.into_iter().enumerate() {
        let Chunk { x, t, rows } = chunk?;
        if c > 0 {
            stats.extend(backend.finish_chunk()?);
        }
        backend.load_chunk(&x, &t, rows)?;
        drop((x, t));
        steps.run(backend, &mut trainer.steps, 0..rows, &hyper, on_step, stop)?;
    }
    stats.extend(backend.finish_epoch()?);
    Ok(stats)
}

impl Trainer {
    /// Takes the training rows from `source`: uploaded once when they fit the device and host
    /// memory, else streamed in chunks (see [`Trainer::plan_data`]). Returns the plan.
    ///
    /// # Errors
    /// Data that does not fit the model, or a model that alone exceeds
    /// [`super::TrainConfig::max_device_memory`].
    pub fn set_train_source(&mut self, source: Arc<dyn RowSource>) -> Result<DataPlan> {
        let rows = source.rows();
        if rows == 0 {
            return Err(Error::InvalidData(
                "the dataset is empty (0 samples)".into(),
            ));
        }
        if u32::try_from(rows).is_err() {
            return Err(Error::InvalidData(format!(
                "{rows} training rows are more than the {} a training set may have: use a subset",
                u32::MAX
            )));
        }
        let spec = self.backend.spec().clone();
        if source.cols() != spec.inputs() {
            return Err(Error::shape(
                "input width",
                spec.inputs(),
                format!("{} feature columns in the data", source.cols()),
            ));
        }
        let plan = self.plan_data(rows, source.mapped())?;
        let DataPlan::Stream { chunk_rows } = plan else {
            self.upload_train_data(&gather_all(&*source)?)?;
            return Ok(plan);
        };
        check_targets(source.targets(), rows, &spec, chunk_rows)?;
        self.train_rows = rows;
        self.classification =
            matches!(source.targets(), Targets::Classes { .. }) || spec.is_classifier();
        self.stream = Some((source, chunk_rows));
        Ok(plan)
    }

    /// Whether `rows` training rows fit: on the device within
    /// [`super::TrainConfig::max_device_memory`] beside what the backend holds now (model,
    /// optimizer state, batch buffers), and on the host (two copies) within
    /// [`crate::limits::host_memory_limit`]. Else the largest chunk, a whole number of batches,
    /// of which two fit each (one trains while the next is gathered and uploaded).
    ///
    /// # Errors
    /// When the model alone, or the model and two batches, exceed the limit: naming the numbers.
    pub fn plan_data(&self, rows: usize, mapped: bool) -> Result<DataPlan> {
        let spec = self.backend.spec();
        // Features, dense targets and the order index of one row.
        let row_bytes = bytes_of(&[spec.inputs() + spec.outputs() + 1], 4);
        let data = bytes_of(&[rows], row_bytes);
        let batch = self.config.batch_size.min(rows).max(1);
        let mut chunk = usize::MAX;
        if let Some(cap) = self.config.max_device_memory {
            let model = self.backend.allocated_bytes();
            let left = cap.checked_sub(model).ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "the model, its optimizer state and batch buffers take {} on {}, more than the {} --max-device-memory allows: raise the limit, or use a smaller model or batch",
                    show_bytes(model),
                    self.backend.name(),
                    show_bytes(cap)
                ))
            })?;
            if data > left {
                let fit = left / row_bytes.saturating_mul(2).max(1);
                if fit < batch as u64 {
                    return Err(Error::InvalidConfig(format!(
                        "--max-device-memory {} leaves {} beside the model ({}): streaming needs two chunks of at least one batch ({batch} rows × {row_bytes} bytes each): raise the limit, or use a smaller batch",
                        show_bytes(cap),
                        show_bytes(left),
                        show_bytes(model)
                    )));
                }
                chunk = chunk.min(usize::try_from(fit).unwrap_or(usize::MAX));
            }
        }
        // The host holds the gathered rows and the backend's copy; a mapped source reads its
        // rows from the file as they are gathered.
        let (limit, source) = host_memory_limit()?;
        if data.saturating_mul(2) > limit {
            let fit = limit / row_bytes.saturating_mul(4).max(1);
            if fit < batch as u64 {
                return Err(Error::TooLarge {
                    what: format!(
                        "streaming {rows} rows in chunks of at least one batch ({batch} rows)"
                    ),
                    needed: bytes_of(&[batch, 4], row_bytes),
                    limit,
                    limit_source: source,
                    hint: "use a smaller batch".into(),
                });
            }
            if !mapped && chunk == usize::MAX {
                // Rows already in memory, with room for one more copy but not two: stream
                // them rather than copy them whole.
                chunk = usize::try_from(fit).unwrap_or(usize::MAX);
            } else {
                chunk = chunk.min(usize::try_from(fit).unwrap_or(usize::MAX));
            }
        }
        if chunk >= rows {
            return Ok(DataPlan::InMemory);
        }
        Ok(DataPlan::Stream {
            chunk_rows: (chunk / batch) * batch,
        })
    }

    /// The rows per chunk when the training data streams.
    pub fn chunk_rows(&self) -> Option<usize> {
        self.stream.as_ref().map(|(_, c)| *c)
    }
}

/// Checks every row's targets against the model before training (a chunk at a time, so the
/// dense targets are never held whole).
fn check_targets(
    targets: &Targets,
    rows: usize,
    spec: &crate::model::ModelSpec,
    chunk: usize,
) -> Result<()> {
    let probe = Dataset {
        features: Vec::new(),
        rows,
        cols: spec.inputs(),
        targets: targets.clone(),
        class_names: None,
    };
    let mut start = 0;
    while start < rows {
        let end = rows.min(start + chunk.clamp(1, 1 << 16));
        probe.dense_targets_rows(spec, start..end)?;
        start = end;
    }
    Ok(())
}
