//! Data parallelism: one model trained by several replicas, each holding the whole model and
//! taking a shard of every global batch; their gradients are summed (across the replicas in
//! this process, then across processes through a [`Collective`]) before one identical update,
//! so the parameters stay identical and equal to those of one device with the same batch.
//!
//! [`DataParallel`] wraps any [`crate::Backend`]s (a GPU, the CPU backend, the reference) and is
//! a `Backend` itself, so the trainer, checkpoints and resume work unchanged.

mod data_parallel;
#[cfg(feature = "mpi")]
pub mod mpi;

pub use data_parallel::DataParallel;

use crate::error::Result;
use std::ops::Range;

/// Sums across the processes of a distributed run (MPI behind the `mpi` feature). Every
/// process calls each method in the same order with buffers of the same length; afterwards
/// every process holds the element-wise sum.
pub trait Collective: Send {
    /// This process's index, `0..size`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// buf: [n], summed element-wise across processes, in place.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()>;
    /// buf: [n], summed element-wise across processes, in place (per-step statistics).
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()>;
}

/// The collective of a run in one process: rank 0 of 1, every sum is the buffer itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
}

/// Shard `i` of `n` of the rows `start..start + len`: contiguous and balanced (sizes differ by
/// at most one; the first shards are the smaller), `start + i·len/n .. start + (i+1)·len/n`.
/// With `len < n` some shards are empty.
pub fn shard(start: usize, len: usize, i: usize, n: usize) -> Range<usize> {
    let at = |k: usize| start + (k as u128 * len as u128 / n.max(1) as u128) as usize;
    at(i)..at(i + 1)
}

#[cfg(test)]
mod tests {
    use super::shard;

    #[test]
    fn shards_cover_the_batch_once_balanced_and_in_order() {
        for (len, n) in [(7, 2), (65, 2), (1, 2), (0, 3), (10, 3), (2, 5)] {
            let shards: Vec<_> = (0..n).map(|i| shard(100, len, i, n)).collect();
            assert_eq!(shards[0].start, 100);
            assert_eq!(shards[n - 1].end, 100 + len);
            for w in shards.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{len}/{n}: contiguous");
            }
            let sizes: Vec<usize> = shards.iter().map(|s| s.len()).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{len}/{n}: balanced {sizes:?}");
        }
        assert_eq!(shard(0, 7, 0, 2), 0..3);
        assert_eq!(shard(0, 7, 1, 2), 3..7);
        assert_eq!(
            shard(0, 1, 0, 2),
            0..0,
            "a 1-row batch leaves replica 0 empty"
        );
        assert_eq!(shard(0, 1, 1, 2), 0..1);
    }
}
