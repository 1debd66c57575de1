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
