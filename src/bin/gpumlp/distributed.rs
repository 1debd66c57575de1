//! `gpumlp train --distributed`: this process is one rank of an MPI job started by
//! `mpirun -np N gpumlp train --distributed ...`. Every rank reads the same data spec, places
//! one replica by its rank on the machine, and trains the same loop; the replicas' gradients
//! are summed by MPI's all-reduce, so all ranks hold the same parameters. Rank 0 alone writes
//! files and prints; a rank that fails says so and ends the whole job.

use crate::train::TrainArgs;
use std::process::ExitCode;

/// Without the `mpi` feature there is no job to be part of.
#[cfg(not(feature = "mpi"))]
pub enum Job {}

#[cfg(not(feature = "mpi"))]
impl Job {
    pub fn report(&self, _: bool) {
        match *self {}
    }
    pub fn is_root(&self) -> bool {
        match *self {}
    }
    pub fn check_same_start(
        &self,
        _: &str,
        _: &gpumlp::Dataset,
        _: Option<&gpumlp::Dataset>,
        _: &[f32],
    ) -> anyhow::Result<()> {
        match *self {}
    }
    pub fn place(
        &self,
        _: &crate::DeviceArgs,
        _: Option<&str>,
        _: &gpumlp::ModelSpec,
        _: gpumlp::Optimizer,
        _: usize,
        _: bool,
    ) -> anyhow::Result<Box<dyn gpumlp::Backend>> {
        match *self {}
    }
}

#[cfg(not(feature = "mpi"))]
pub fn run(_args: TrainArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "--distributed needs gpumlp built with MPI: install Open MPI (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev), build with `cargo build --release --features mpi`, then run `mpirun -np N gpumlp train --distributed ...`"
    )
}

#[cfg(feature = "mpi")]
pub use with_mpi::{run, Job};

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::*;
    use crate::DeviceArgs;
    use anyhow::{bail, Context};
    use gpumlp::dist::mpi::{Mpi, ReduceStats};
    use gpumlp::dist::DataParallel;
    use gpumlp::{
        AdapterSelector, Backend, CpuBackend, Dataset, GpuBackend, GpuContext, ModelSpec,
        Optimizer, ReferenceBackend,
    };
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    /// This process's place in the job.
    pub struct Job {
        mpi: Mpi,
        /// The gradient all-reduce's counters, once the replica is placed.
        reduced: std::sync::OnceLock<Arc<ReduceStats>>,
    }

    /// Runs `gpumlp train` as one rank. An error on any rank is printed as `rank R: ...` and
    /// ends every rank (`MPI_Abort`), so none waits forever for a rank that is gone.
    pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
        let job = Job {
            mpi: Mpi::init()?,
            reduced: Default::default(),
        };
        match crate::train::run_as(args, Some(&job)) {
            Ok(code) => Ok(code),
            Err(e) => {
                eprintln!("gpumlp: rank {}: error: {e:#}", job.rank());
                // mpirun forwards each rank's stderr asynchronously and stops forwarding once
                // the abort kills the job: give it a moment to carry the message.
                std::thread::sleep(std::time::Duration::from_millis(300));
                job.mpi.abort(1)
            }
        }
    }

    impl Job {
        pub fn rank(&self) -> usize {
            self.mpi.rank()
        }
        pub fn size(&self) -> usize {
            self.mpi.size()
        }
        /// Whether this rank writes files and prints.
        pub fn is_root(&self) -> bool {
            self.rank() == 0
        }

        /// This rank's replica of `spec` (or, with `--devices`, its replicas on every listed
        /// device), wrapped so that its steps take this rank's shard of each global batch of up
        /// to `batch` rows and sum gradients over all ranks. Says on stderr (rank 0, unless
        /// `quiet`) where it runs.
        pub fn place(
            &self,
            device: &DeviceArgs,
            devices: Option<&str>,
            spec: &ModelSpec,
            optimizer: Optimizer,
            batch: usize,
            quiet: bool,
        ) -> anyhow::Result<Box<dyn Backend>> {
            let collective = self.mpi.collective(spec);
            let _ = self.reduced.set(collective.stats());
            let collective = Some(Box::new(collective) as Box<dyn gpumlp::dist::Collective>);
            let (backend, reason) = match devices {
                Some(list) => {
                    let list = gpumlp::parse_devices(list).context("--devices")?;
                    let cpus = list.iter().filter(|d| **d == gpumlp::Device::Cpu).count();
                    let threads = device
                        .threads
                        .or_else(|| self.cpu_threads().map(|t| (t / cpus.max(1)).max(1)));
                    let mut options = device.place_options();
                    options.threads = threads;
                    let placed = gpumlp::place_replicas_with(
                        &list, spec, optimizer, batch, &options, collective,
                    )?;
                    (placed.backend, placed.reason)
                }
                None => {
                    // The most rows one rank's shard of a global batch holds.
                    let shard = batch.div_ceil(self.size()).max(1);
                    let (replica, reason) = self.place_replica(device, spec, optimizer, shard)?;
                    let dp: Box<dyn Backend> =
                        Box::new(DataParallel::new(vec![replica], collective)?);
                    (dp, reason)
                }
            };
            if !quiet && self.is_root() {
                eprintln!(
                    "gpumlp: distributed over {} MPI ranks; rank 0: {reason}",
                    self.size()
                );
            }
            Ok(backend)
        }

        /// The replica by this rank's place on its machine: the `local_rank`-th GPU adapter
        /// (round-robin when there are fewer), else the fast CPU backend with this machine's
        /// cores shared among its ranks. `--device`, `--backend` and `--adapter` filter as in a
        /// single-process run.
        fn place_replica(
            &self,
            device: &DeviceArgs,
            spec: &ModelSpec,
            optimizer: Optimizer,
            shard: usize,
        ) -> anyhow::Result<(Box<dyn Backend>, String)> {
            let local = self.mpi.local_rank();
            let cpu = |why: &str| -> anyhow::Result<(Box<dyn Backend>, String)> {
                let threads = device.threads.or_else(|| self.cpu_threads());
                let b = CpuBackend::new(spec, optimizer, shard, threads)?;
                let reason = format!("{} ({why})", b.name());
                Ok((Box::new(b), reason))
            };
            let mut sel = AdapterSelector::default();
            sel.backend = device.backend.map(|b| b.to_string());
            sel.name = device.adapter.clone();
            let sel = sel.or_env();
            let narrowed = sel.backend.is_some() || sel.name.is_some();
            match device.device()? {
                gpumlp::Device::Cpu => cpu("--device cpu"),
                gpumlp::Device::Reference => Ok((
                    Box::new(ReferenceBackend::new(spec, optimizer)?),
                    "the CPU reference (--device reference)".into(),
                )),
                gpumlp::Device::Gpu(_) => match GpuContext::for_local_rank(&sel, false, local)? {
                    Some(ctx) => self.on_gpu(ctx, spec, optimizer, shard, "--device gpu"),
                    None => Err(gpumlp::Error::NoAdapter {
                        backend: sel.backend.clone(),
                        name: sel.name.clone(),
                    }
                    .into()),
                },
                // Auto: hardware GPUs only, unless the selector narrows the choice.
                _ => match GpuContext::for_local_rank(&sel, !narrowed, local)? {
                    Some(ctx) => self.on_gpu(ctx, spec, optimizer, shard, "auto"),
                    None => cpu("auto: no GPU adapter"),
                },
            }
        }

        fn on_gpu(
            &self,
            ctx: GpuContext,
            spec: &ModelSpec,
            optimizer: Optimizer,
            shard: usize,
            why: &str,
        ) -> anyhow::Result<(Box<dyn Backend>, String)> {
            let reason = format!(
                "{} ({why}, adapter for local rank {})",
                ctx.info,
                self.mpi.local_rank()
            );
            let b = GpuBackend::new(Arc::new(ctx), spec, optimizer, shard, gpu_options())?;
            Ok((Box::new(b), reason))
        }

        /// The CPU backend's threads when neither `--threads` nor `GPUMLP_THREADS` says: this
        /// machine's cores shared evenly among the ranks on it.
        fn cpu_threads(&self) -> Option<usize> {
            if std::env::var_os("GPUMLP_THREADS").is_some() {
                return None;
            }
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Some((cores / self.mpi.local_size()).max(1))
        }

        /// On rank 0 (unless `quiet`): what the gradient all-reduce cost, per step.
        pub fn report(&self, quiet: bool) {
            let Some(st) = self.reduced.get().filter(|_| !quiet && self.is_root()) else {
                return;
            };
            // A job of one reduces nothing.
            let calls = st.calls.load(Ordering::Relaxed);
            if calls == 0 {
                return;
            }
            eprintln!(
                "gpumlp: all-reduce: {} bytes per step from each rank in {} buckets, {:.3} ms per step (the wait for the slowest rank included), {} steps",
                st.bytes.load(Ordering::Relaxed) / calls,
                st.buckets.load(Ordering::Relaxed) / calls,
                st.nanos.load(Ordering::Relaxed) as f64 / calls as f64 / 1e6,
                st.calls.load(Ordering::Relaxed)
            );
        }

        /// Refuses to train unless every rank read the same training and validation data and
        /// starts from the same parameters (a node whose copy of a file differs, or a path that
        /// names another file there): the rank that differs from rank 0 names itself.
        pub fn check_same_start(
            &self,
            data: &str,
            train: &Dataset,
            val: Option<&Dataset>,
            params: &[f32],
        ) -> anyhow::Result<()> {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for d in std::iter::once(train).chain(val) {
                fingerprint(d, &mut h);
            }
            params.iter().for_each(|v| v.to_bits().hash(&mut h));
            let all = self.mpi.all_gather_u64(h.finish());
            let differ: Vec<usize> = (1..all.len()).filter(|&r| all[r] != all[0]).collect();
            if differ.contains(&self.rank()) {
                bail!(
                    "--data {data} (with its split, normalization and starting parameters) differs here from rank 0's ({} train rows, fingerprint {:016x} here, {:016x} on rank 0): every rank must read the same data and checkpoint",
                    train.rows,
                    all[self.rank()],
                    all[0]
                );
            }
            if !differ.is_empty() {
                // The ranks that differ end the job; rank 0 waits for their abort.
                self.mpi.barrier();
                bail!("rank(s) {differ:?} read other data than rank 0");
            }
            Ok(())
        }
    }

    /// A GPU replica runs the split step (shard gradient, then the summed update).
    // Built from Default and assigned: `GpuOptions` becomes #[non_exhaustive] (no struct literal
    // outside the library).
    #[allow(clippy::field_reassign_with_default)]
    fn gpu_options() -> gpumlp::GpuOptions {
        let mut o = gpumlp::GpuOptions::default();
        o.data_parallel = true;
        o
    }

    /// Hashes every feature, target and the shape of `d`.
    fn fingerprint(d: &Dataset, h: &mut impl Hasher) {
        (d.rows, d.cols).hash(h);
        d.features.iter().for_each(|v| v.to_bits().hash(h));
        match &d.targets {
            gpumlp::Targets::Classes { labels, classes } => (labels, classes).hash(h),
            gpumlp::Targets::Values { values, width } => {
                width.hash(h);
                values.iter().for_each(|v| v.to_bits().hash(h));
            }
            // A target kind added later is covered by the features and the shape.
            _ => {}
        }
    }
}
