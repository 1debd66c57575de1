//! Data parallelism: replicas of one model that each take a shard of every batch and sum
//! their gradients. (Provisional: the `replicas` branch brings `DataParallel`; this branch
//! needs only the [`Collective`] seam it agreed on.)

use crate::error::Result;

#[cfg(feature = "mpi")]
pub mod mpi;

/// Sums buffers across the processes of a job (MPI ranks). Every rank calls each method in
/// the same order with buffers of the same length.
pub trait Collective: Send {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// buf: [n], replaced by its sum over ranks.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()>;
    /// buf: [n], replaced by its sum over ranks.
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()>;
}

use crate::backend::{Backend, BatchStats, OptimizerState};
use crate::error::Error;
use crate::model::ModelSpec;
use crate::optim::StepHyper;

/// Rows `i*len/n..(i+1)*len/n` of `start..start + len`: shard `i` of `n`, contiguous and
/// balanced (sizes differ by at most one; some are empty when `len < n`).
pub fn shard(start: usize, len: usize, i: usize, n: usize) -> (usize, usize) {
    let (a, b) = (i * len / n, (i + 1) * len / n);
    (start + a, b - a)
}

/// Replicas of one model, here and on other ranks, trained as one: each step's global batch
/// is sharded across ranks and then across the local replicas, the shard gradients are summed
/// (and all-reduced across ranks), and every replica applies the same update. (Provisional:
/// the `replicas` branch brings the full one.)
pub struct DataParallel {
    replicas: Vec<Box<dyn Backend>>,
    collective: Option<Box<dyn Collective>>,
    /// The summed gradient, [P].
    grad: Vec<f32>,
    part: Vec<f32>,
}

impl DataParallel {
    /// # Errors
    /// No replica, or replicas of different models.
    pub fn new(
        replicas: Vec<Box<dyn Backend>>,
        collective: Option<Box<dyn Collective>>,
    ) -> Result<Self> {
        let first = replicas
            .first()
            .ok_or_else(|| Error::InvalidConfig("data parallelism needs a replica".into()))?;
        if replicas.iter().any(|r| r.spec() != first.spec()) {
            return Err(Error::InvalidConfig(
                "data-parallel replicas must hold the same model".into(),
            ));
        }
        let p = first.spec().param_count();
        Ok(DataParallel {
            replicas,
            collective,
            grad: vec![0.0; p],
            part: vec![0.0; p],
        })
    }

    fn rank_size(&self) -> (usize, usize) {
        self.collective
            .as_ref()
            .map_or((0, 1), |c| (c.rank(), c.size()))
    }

    fn all_reduce_stats(&mut self, stats: &mut [BatchStats]) -> Result<()> {
        let Some(c) = self.collective.as_mut() else {
            return Ok(());
        };
        let mut flat: Vec<f64> = stats
            .iter()
            .flat_map(|s| [s.loss_sum, s.correct as f64, s.samples as f64])
            .collect();
        c.all_reduce_sum_f64(&mut flat)?;
        for (s, v) in stats.iter_mut().zip(flat.chunks(3)) {
            *s = BatchStats {
                loss_sum: v[0],
                correct: v[1] as u64,
                samples: v[2] as u64,
            };
        }
        Ok(())
    }
}

impl Backend for DataParallel {
    fn name(&self) -> String {
        let (_, size) = self.rank_size();
        format!(
            "{} × {} replica(s) × {size} rank(s)",
            self.replicas[0].name(),
            self.replicas.len()
        )
    }
    fn spec(&self) -> &ModelSpec {
        self.replicas[0].spec()
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
        let (rank, size) = self.rank_size();
        let (s, l) = shard(start, len, rank, size);
        self.grad.fill(0.0);
        let n = self.replicas.len();
        for (i, r) in self.replicas.iter_mut().enumerate() {
            let (s, l) = shard(s, l, i, n);
            r.backward_shard(s, l, len, hyper)?;
            r.shard_gradient(&mut self.part)?;
            self.grad
                .iter_mut()
                .zip(&self.part)
                .for_each(|(g, p)| *g += p);
        }
        if let Some(c) = self.collective.as_mut() {
            c.all_reduce_sum(&mut self.grad)?;
        }
        let grad = &self.grad;
        self.replicas
            .iter_mut()
            .try_for_each(|r| r.apply_gradient(grad, hyper))
    }
    fn backward_shard(&mut self, _: usize, _: usize, _: usize, _: &StepHyper) -> Result<()> {
        Err(Error::InvalidConfig(
            "a data-parallel model is not itself a shard".into(),
        ))
    }
    fn shard_gradient(&mut self, _: &mut [f32]) -> Result<()> {
        Err(Error::InvalidConfig(
            "a data-parallel model is not itself a shard".into(),
        ))
    }
    fn apply_gradient(&mut self, grad: &[f32], hyper: &StepHyper) -> Result<()> {
        self.replicas
            .iter_mut()
            .try_for_each(|r| r.apply_gradient(grad, hyper))
    }
    fn finish_epoch(&mut self) -> Result<Vec<BatchStats>> {
        let mut total: Vec<BatchStats> = Vec::new();
        for r in &mut self.replicas {
            let steps = r.finish_epoch()?;
            total.resize(steps.len().max(total.len()), BatchStats::default());
            total.iter_mut().zip(&steps).for_each(|(t, s)| t.add(s));
        }
        self.all_reduce_stats(&mut total)?;
        Ok(total)
    }
    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.replicas[0].predict(x, rows)
    }
    /// Each rank evaluates its shard of the rows and the sums are all-reduced, so every rank
    /// gets the same numbers (and decides early stopping alike).
    fn evaluate(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<BatchStats> {
        let (rank, size) = self.rank_size();
        let (s, l) = shard(0, rows, rank, size);
        let (inp, out) = (self.spec().inputs(), self.spec().outputs());
        if x.len() != rows * inp || t.len() != rows * out {
            return Err(Error::shape(
                "evaluation data",
                format!("{} inputs and {} targets", rows * inp, rows * out),
                format!("{} and {}", x.len(), t.len()),
            ));
        }
        let mut stats = [match l {
            0 => BatchStats::default(),
            _ => self.replicas[0].evaluate(
                &x[s * inp..(s + l) * inp],
                &t[s * out..(s + l) * out],
                l,
            )?,
        }];
        self.all_reduce_stats(&mut stats)?;
        Ok(stats[0])
    }
    fn last_gradients(&mut self) -> Result<Vec<f32>> {
        Err(Error::InvalidConfig(
            "a data-parallel model does not record its last gradient".into(),
        ))
    }
    fn allocated_bytes(&self) -> u64 {
        self.replicas.iter().map(|r| r.allocated_bytes()).sum()
    }
}
