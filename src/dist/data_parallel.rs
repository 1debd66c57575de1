//! [`DataParallel`]: replicas in this process (and, through a [`Collective`], in others)
//! training one model as one big batch.

use super::{shard, Collective};
use crate::backend::{Backend, BatchStats, OptimizerState};
use crate::error::{Error, Result};
use crate::model::ModelSpec;
use crate::optim::StepHyper;

/// One model on several replicas, as one [`Backend`]. A step of `len` rows is sharded first
/// across the processes of the collective, then across the local replicas (see [`shard`]);
/// the replicas run their shards concurrently (one thread each), their gradients are summed in
/// replica order (deterministic), all-reduced across processes, and every replica applies the
/// same update. Parameters, optimizer state, predictions and checkpoints come from replica 0;
/// `evaluate` shards its rows across processes and local replicas (and all-reduces the sums);
/// `predict` shards across the local replicas.
pub struct DataParallel {
    spec: ModelSpec,
    replicas: Vec<Box<dyn Backend>>,
    collective: Option<Box<dyn Collective>>,
    /// Each replica's shard gradient: [replicas][P].
    grads: Vec<Vec<f32>>,
    /// Their sum, then the all-reduced step gradient: [P].
    sum: Vec<f32>,
}

/// Runs `f(i, replica, slot)` on every replica with its slot, concurrently (one scoped thread per
/// replica beyond the first, which runs on this thread), and returns the first error.
fn on_each<T: Send>(
    replicas: &mut [Box<dyn Backend>],
    slots: &mut [T],
    f: impl Fn(usize, &mut dyn Backend, &mut T) -> Result<()> + Sync,
) -> Result<()> {
    if replicas.len() == 1 {
        return f(0, replicas[0].as_mut(), &mut slots[0]);
    }
    let f = &f;
    std::thread::scope(|s| {
        let mut work = replicas.iter_mut().zip(slots.iter_mut()).enumerate();
        let (_, (first, first_slot)) = work.next().expect("at least one replica");
        let handles: Vec<_> = work
            .map(|(i, (r, slot))| s.spawn(move || f(i, r.as_mut(), slot)))
            .collect();
        let mut result = f(0, first.as_mut(), first_slot);
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(Error::Gpu("a replica's thread panicked".into())));
            result = result.and(r);
        }
        result
    })
}

/// Every replica applies grad: [P] with `hyper`, concurrently.
fn apply_to_all(replicas: &mut [Box<dyn Backend>], grad: &[f32], hyper: &StepHyper) -> Result<()> {
    let mut slots = vec![(); replicas.len()];
    on_each(replicas, &mut slots, |_, r, _| {
        r.apply_gradient(grad, hyper)
    })
}

impl DataParallel {
    /// Wraps `replicas` (each placed for the model with room for its shard of the largest batch;
    /// GPU ones with `GpuOptions::data_parallel`) and, for a run over several processes, the
    /// `collective` that sums across them. Parameters are taken from replica 0 and copied to the
    /// others, so they start identical.
    ///
    /// # Errors
    /// No replicas, or replicas of different models.
    pub fn new(
        mut replicas: Vec<Box<dyn Backend>>,
        collective: Option<Box<dyn Collective>>,
    ) -> Result<Self> {
        let Some(first) = replicas.first_mut() else {
            return Err(Error::InvalidConfig(
                "data parallelism needs at least one replica".into(),
            ));
        };
        let spec = first.spec().clone();
        if let Some(other) = replicas.iter().find(|r| r.spec() != &spec) {
            return Err(Error::InvalidConfig(format!(
                "every replica must hold the same model: {:?} on {} vs {:?}",
                spec.sizes,
                other.name(),
                other.spec().sizes
            )));
        }
        let params = replicas[0].params()?;
        for r in &mut replicas[1..] {
            r.set_params(&params)?;
        }
        let p = spec.param_count();
        Ok(DataParallel {
            grads: vec![vec![0.0; p]; replicas.len()],
            sum: vec![0.0; p],
            spec,
            replicas,
            collective,
        })
    }

    /// The local replicas.
    pub fn replicas(&self) -> usize {
        self.replicas.len()
    }

    /// Local replica `i` (e.g. to check that its parameters equal replica 0's).
    pub fn replica(&mut self, i: usize) -> Option<&mut dyn Backend> {
        Some(self.replicas.get_mut(i)?.as_mut())
    }

    /// Bytes each process all-reduces per step (the gradient, `P` f32), 0 without a collective.
    pub fn bytes_all_reduced_per_step(&self) -> u64 {
        match &self.collective {
            Some(c) if c.size() > 1 => self.sum.len() as u64 * 4,
            _ => 0,
        }
    }

    /// This process's shard of a global batch `start..start + len`.
    fn rank_shard(&self, start: usize, len: usize) -> std::ops::Range<usize> {
        match &self.collective {
            Some(c) => shard(start, len, c.rank(), c.size()),
            None => start..start + len,
        }
    }

    /// Sums `stats` element-wise across processes (loss, correct and sample counts as f64,
    /// exact below 2^53), in place.
    fn all_reduce_stats(&mut self, stats: &mut [BatchStats]) -> Result<()> {
        let Some(c) = &mut self.collective else {
            return Ok(());
        };
        let mut buf: Vec<f64> = stats
            .iter()
            .flat_map(|s| [s.loss_sum, s.correct as f64, s.samples as f64])
            .collect();
        c.all_reduce_sum_f64(&mut buf)?;
        for (t, b) in stats.iter_mut().zip(buf.chunks_exact(3)) {
            *t = BatchStats {
                loss_sum: b[0],
                correct: b[1] as u64,
                samples: b[2] as u64,
            };
        }
        Ok(())
    }

    /// Rows `rows` of x: [rows, width] for local replica `i` of `n`.
    fn rows_of(x: &[f32], width: usize, rows: usize, i: usize, n: usize) -> &[f32] {
        let r = shard(0, rows, i, n);
        &x[r.start * width..r.end * width]
    }
}

impl Backend for DataParallel {
    fn name(&self) -> String {
        let names: Vec<String> = self.replicas.iter().map(|r| r.name()).collect();
        let ranks = match &self.collective {
            Some(c) if c.size() > 1 => format!(", rank {} of {}", c.rank(), c.size()),
            _ => String::new(),
        };
        format!(
            "data-parallel ×{}{ranks}: {}",
            self.replicas.len(),
            names.join(" + ")
        )
    }
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        self.replicas
            .iter_mut()
            .try_for_each(|r| r.set_params(params))
    }
    fn params(&mut self) -> Result<Vec<f32>> {
        self.replicas[0].params()
    }
    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.replicas
            .iter_mut()
            .try_for_each(|r| r.set_optimizer_state(state))
    }
    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        self.replicas[0].optimizer_state()
    }
    fn set_train_data(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<()> {
        self.replicas
            .iter_mut()
            .try_for_each(|r| r.set_train_data(x, t, rows))
    }
    fn begin_epoch(&mut self, order: &[u32]) -> Result<()> {
        self.replicas
            .iter_mut()
            .try_for_each(|r| r.begin_epoch(order))
    }
    fn step(&mut self, start: usize, len: usize, hyper: &StepHyper) -> Result<()> {
        if len == 0 {
            return Err(Error::InvalidConfig(format!(
                "step rows {start}..{start}: a step needs at least one row"
            )));
        }
        let mine = self.rank_shard(start, len);
        self.backward_shard(mine.start, mine.len(), len, hyper)?;
        if let Some(c) = &mut self.collective {
            c.all_reduce_sum(&mut self.sum)?;
        }
        apply_to_all(&mut self.replicas, &self.sum, hyper)
    }
    fn backward_shard(
        &mut self,
        start: usize,
        len: usize,
        global_batch: usize,
        hyper: &StepHyper,
    ) -> Result<()> {
        let n = self.replicas.len();
        on_each(&mut self.replicas, &mut self.grads, |i, r, g| {
            let s = shard(start, len, i, n);
            r.backward_shard(s.start, s.len(), global_batch, hyper)?;
            r.shard_gradient(g)
        })?;
        // Summed in replica order, whatever order the threads finished in.
        self.sum.copy_from_slice(&self.grads[0]);
        for g in &self.grads[1..] {
            self.sum.iter_mut().zip(g).for_each(|(s, g)| *s += g);
        }
        Ok(())
    }
    fn shard_gradient(&mut self, out: &mut [f32]) -> Result<()> {
        crate::backend::check_gradient_len(out, self.sum.len())?;
        out.copy_from_slice(&self.sum);
        Ok(())
    }
    fn apply_gradient(&mut self, grad: &[f32], hyper: &StepHyper) -> Result<()> {
        crate::backend::check_gradient_len(grad, self.sum.len())?;
        apply_to_all(&mut self.replicas, grad, hyper)
    }
    fn finish_epoch(&mut self) -> Result<Vec<BatchStats>> {
        let mut total: Vec<BatchStats> = Vec::new();
        for r in &mut self.replicas {
            let stats = r.finish_epoch()?;
            if total.is_empty() {
                total = stats;
                continue;
            }
            if stats.len() != total.len() {
                return Err(Error::Gpu(format!(
                    "replicas disagree on the epoch's steps: {} vs {}",
                    stats.len(),
                    total.len()
                )));
            }
            total.iter_mut().zip(&stats).for_each(|(t, s)| t.add(s));
        }
        self.all_reduce_stats(&mut total)?;
        Ok(total)
    }
    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let (inp, n) = (self.spec.inputs(), self.replicas.len());
        if x.len() != rows * inp {
            return Err(Error::shape("inputs", rows * inp, x.len()));
        }
        let mut parts = vec![Vec::new(); n];
        on_each(&mut self.replicas, &mut parts, |i, r, y| {
            let part = Self::rows_of(x, inp, rows, i, n);
            if !part.is_empty() {
                *y = r.predict(part, part.len() / inp)?;
            }
            Ok(())
        })?;
        Ok(parts.concat())
    }
    fn evaluate(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<BatchStats> {
        let (inp, out, n) = (self.spec.inputs(), self.spec.outputs(), self.replicas.len());
        if x.len() != rows * inp || t.len() != rows * out {
            return Err(Error::shape(
                "inputs and targets",
                format!("{} and {} values", rows * inp, rows * out),
                format!("{} and {}", x.len(), t.len()),
            ));
        }
        // Across processes: this rank's shard of the rows, and the sums all-reduced below, so
        // every rank gets the same numbers whatever its device (early stopping and a plateau
        // schedule then decide alike on every rank).
        let mine = self.rank_shard(0, rows);
        let (x, t, rows) = (
            &x[mine.start * inp..mine.end * inp],
            &t[mine.start * out..mine.end * out],
            mine.len(),
        );
        let mut parts = vec![BatchStats::default(); n];
        on_each(&mut self.replicas, &mut parts, |i, r, s| {
            let (xi, ti) = (
                Self::rows_of(x, inp, rows, i, n),
                Self::rows_of(t, out, rows, i, n),
            );
            if !xi.is_empty() {
                *s = r.evaluate(xi, ti, xi.len() / inp)?;
            }
            Ok(())
        })?;
        let mut total = [BatchStats::default()];
        parts.iter().for_each(|s| total[0].add(s));
        self.all_reduce_stats(&mut total)?;
        Ok(total[0])
    }
    fn last_gradients(&mut self) -> Result<Vec<f32>> {
        self.replicas[0].last_gradients()
    }
    fn allocated_bytes(&self) -> u64 {
        self.replicas.iter().map(|r| r.allocated_bytes()).sum()
    }
}
