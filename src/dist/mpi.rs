//! Replicas across processes and machines: [`Collective`] over MPI (rsmpi on Open MPI), for
//! runs started by `mpirun -np N gpumlp train --distributed ...`.
//!
//! One process per replica. Every rank holds the whole model and the same data, takes its
//! contiguous shard of each global batch ([`super::DataParallel`]), and the shard gradients
//! are summed here, in place in the flat gradient, by MPI's all-reduce.
//!
//! What overlaps: the flat gradient is split into buckets, one per layer, and every bucket's
//! non-blocking all-reduce (`MPI_Iallreduce`) is started before any is waited on, last layer
//! first (the order a backward produces them), so the buckets are in flight together and the
//! network pipelines them. What cannot overlap today: the backends read the gradient back once
//! per step, after the whole backward, so no bucket starts while a later layer's backward is
//! still computing (that would need a readback per layer and a hook inside the backward). The
//! bucketing is the seam where that overlap would go.

use super::Collective;
use crate::error::{Error, Result};
use crate::model::ModelSpec;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Threading;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The MPI environment of this process: initialized once by [`Mpi::init`], finalized when
/// dropped. Everything that uses MPI (a [`MpiCollective`]) must be dropped first.
pub struct Mpi {
    // Finalizes MPI when dropped.
    _universe: Universe,
    world: SimpleCommunicator,
    local_rank: usize,
    local_size: usize,
}

impl Mpi {
    /// Initializes MPI (`MPI_Init_thread`, serialized threading: calls may come from any
    /// thread, never two at once), and finds this rank's place on its machine (the ranks that
    /// share memory with it, `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)`).
    ///
    /// # Errors
    /// [`Error::Distributed`] when MPI is already initialized or cannot give serialized threads.
    pub fn init() -> Result<Mpi> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| {
                Error::Distributed("MPI was already initialized in this process".into())
            })?;
        if threading < Threading::Serialized {
            return Err(Error::Distributed(format!(
                "this MPI library gives threading level {threading:?}, but gpumlp needs Serialized: use an MPI built with thread support (Open MPI's default)"
            )));
        }
        let world = universe.world();
        let node = world.split_shared(world.rank());
        let (local_rank, local_size) = (node.rank() as usize, node.size() as usize);
        Ok(Mpi {
            _universe: universe,
            world,
            local_rank,
            local_size,
        })
    }

    /// This process's rank in the job, `0..size`.
    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    /// The number of ranks in the job.
    pub fn size(&self) -> usize {
        self.world.size() as usize
    }
    /// This process's rank among those on its machine (which adapter it takes).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }
    /// How many ranks run on this machine (how they share its cores).
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// The all-reduce for `spec`'s gradients, bucketed by layer ([`layer_buckets`]).
    pub fn collective(&self, spec: &ModelSpec) -> MpiCollective {
        MpiCollective {
            world: SimpleCommunicator::world(),
            buckets: layer_buckets(spec),
            stats: Arc::default(),
            send: Vec::new(),
            send64: Vec::new(),
        }
    }

    /// Every rank's `value`, in rank order (`MPI_Allgather`), e.g. a fingerprint of the data
    /// each one read.
    pub fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.size()];
        self.world.all_gather_into(&value, &mut all[..]);
        all
    }

    /// Rank 0's `values` on every rank (`MPI_Bcast`).
    pub fn broadcast_u64(&self, values: &mut [u64]) {
        self.world.process_at_rank(0).broadcast_into(values);
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self) {
        self.world.barrier();
    }

    /// Ends every rank of the job with `code` (`MPI_Abort`): what a rank that failed calls, so
    /// that no other rank waits forever in a collective it will never join.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// One bucket per layer: the lengths of each layer's weights and biases, a contiguous range of
/// the flat gradient, in layout order (first layer first).
pub fn layer_buckets(spec: &ModelSpec) -> Vec<usize> {
    spec.layout().iter().map(|l| l.end() - l.weight).collect()
}

/// What a [`MpiCollective`]'s gradient all-reduces have done so far.
#[derive(Debug, Default)]
pub struct ReduceStats {
    /// Calls of `all_reduce_sum` (one per step).
    pub calls: AtomicU64,
    /// Bytes each rank contributed (`4·P` per step).
    pub bytes: AtomicU64,
    /// Non-blocking reductions started (buckets).
    pub buckets: AtomicU64,
    /// Wall time inside `all_reduce_sum`, waiting for the slowest rank included.
    pub nanos: AtomicU64,
}

/// [`Collective`] over `MPI_COMM_WORLD`.
pub struct MpiCollective {
    world: SimpleCommunicator,
    /// Bucket lengths in layout order; they tile the model's flat gradient.
    buckets: Vec<usize>,
    stats: Arc<ReduceStats>,
    /// A copy of the buffer being reduced: rsmpi has no `MPI_IN_PLACE` (and mpi-sys cannot
    /// export it: it is a cast macro whose value differs between Open MPI and MPICH), so each
    /// bucket is sent from here and its sum lands in place in the caller's buffer. One memcpy
    /// of `P` floats per step, nothing beside the network's time.
    send: Vec<f32>,
    send64: Vec<f64>,
}

// SAFETY: the communicator is a handle to MPI_COMM_WORLD, which MPI lets any thread use once
// MPI runs with `Threading::Serialized` or more (checked in `Mpi::init`); every call goes
// through `&mut self`, so no two calls on one collective overlap.
unsafe impl Send for MpiCollective {}

impl MpiCollective {
    /// Counters of the gradient all-reduces, updated as they happen.
    pub fn stats(&self) -> Arc<ReduceStats> {
        self.stats.clone()
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// buf: [P], summed over ranks in place, one non-blocking reduction per bucket, all in
    /// flight together.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        if self.size() == 1 || buf.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        // A buffer the layer buckets do not tile (not this model's gradient) goes whole.
        let whole = [buf.len()];
        let lens = match self.buckets.iter().sum::<usize>() == buf.len() {
            true => &self.buckets[..],
            false => &whole[..],
        };
        self.send.clear();
        self.send.extend_from_slice(buf);
        let buf_len = buf.len();
        // One (send, receive) pair per bucket, in layout order.
        let mut pairs = Vec::with_capacity(lens.len());
        let (mut send, mut recv) = (&self.send[..], buf);
        for &len in lens {
            let (s, s_rest) = send.split_at(len);
            let (r, r_rest) = recv.split_at_mut(len);
            pairs.push((s, r));
            (send, recv) = (s_rest, r_rest);
        }
        let world = &self.world;
        mpi::request::multiple_scope(pairs.len(), |scope, requests| {
            // Last layer first: the order a backward finishes them.
            for (s, r) in pairs.into_iter().rev() {
                requests.add(world.immediate_all_reduce_into(scope, s, r, SystemOperation::sum()));
            }
            let mut done = Vec::new();
            requests.wait_all(&mut done);
        });
        let st = &self.stats;
        st.calls.fetch_add(1, Ordering::Relaxed);
        st.bytes.fetch_add(4 * buf_len as u64, Ordering::Relaxed);
        st.buckets.fetch_add(lens.len() as u64, Ordering::Relaxed);
        st.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// buf: e.g. per-step loss sums, summed over ranks in place (one blocking reduction).
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        if self.size() == 1 || buf.is_empty() {
            return Ok(());
        }
        self.send64.clear();
        self.send64.extend_from_slice(buf);
        self.world
            .all_reduce_into(&self.send64[..], buf, SystemOperation::sum());
        Ok(())
    }
}
