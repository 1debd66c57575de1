//! N replicas with global batch B against one device with batch B, over shuffled epochs with
//! momentum/Adam and L2, in one process and across simulated ranks.

use super::*;
use gpumlp::dist::{Collective, DataParallel};
use gpumlp::train::epoch_order;
use gpumlp::Tolerance;

/// Losses over a trajectory: f32 sums in another order, compounded over the steps (as
/// tests/step.rs allows GPU against CPU).
const TRAJ_LOSS_TOL: Tolerance = Tolerance::new(1e-3, 1e-5);
/// Parameters after a trajectory (tests/step.rs: GPU against CPU after 50 steps).
pub(super) const TRAJ_PARAM_TOL: Tolerance = Tolerance::new(1e-3, 1e-4);

/// The global batch: odd, so two replicas get uneven shards, and 71 = 10·7 + 1 rows leave a
/// last batch of one row (an empty shard for replica 0).
const BATCH: usize = 7;
const ROWS: usize = 71;
const EPOCHS: usize = 3;

/// Per-step loss sums and samples over a run, and the parameters at its end.
struct Trained {
    losses: Vec<f32>,
    samples: Vec<u64>,
    params: Vec<f32>,
}

/// Trains `b` for `EPOCHS` shuffled epochs of global batches of `BATCH` rows with L2, as the
/// trainer does (one step count across epochs for Adam's bias correction).
fn train(b: &mut dyn Backend, opt: Optimizer) -> Trained {
    let spec = b.spec().clone();
    let x = uniform(ROWS * spec.inputs(), -1.0, 1.0, 70);
    let t = targets(&spec, ROWS, 71);
    b.set_params(&spec.init_params(72)).unwrap();
    b.set_train_data(&x, &t, ROWS).unwrap();
    let (mut losses, mut samples, mut step) = (Vec::new(), Vec::new(), 0);
    for epoch in 0..EPOCHS {
        b.begin_epoch(&epoch_order(ROWS, 73, epoch, true)).unwrap();
        let mut start = 0;
        while start < ROWS {
            let len = BATCH.min(ROWS - start);
            step += 1;
            b.step(start, len, &opt.hyper(0.05, step, 1e-3)).unwrap();
            start += len;
        }
        for s in b.finish_epoch().unwrap() {
            losses.push(s.loss_sum as f32);
            samples.push(s.samples);
        }
    }
    Trained {
        losses,
        samples,
        params: b.params().unwrap(),
    }
}

/// The one-device run every replicated run must match: the reference with batch `BATCH`.
fn one_device(opt: Optimizer) -> Trained {
    train(&mut ReferenceBackend::new(&spec(), opt).unwrap(), opt)
}

/// Trains the replicas from `place` against one device, for momentum and Adam; checks losses,
/// samples and parameters against it, and that the replicas hold the same parameters.
fn replicas_match_one_device(name: &str, place: impl Fn(Optimizer) -> DataParallel) {
    for opt in [Optimizer::Momentum { mu: 0.9 }, Optimizer::adam()] {
        let what = format!("{name} {}", opt.name());
        let want = one_device(opt);
        let mut dp = place(opt);
        let got = train(&mut dp, opt);
        assert_eq!(got.samples, want.samples, "{what}: samples per step");
        let l = TRAJ_LOSS_TOL.assert_close(&format!("{what}: losses"), &got.losses, &want.losses);
        let p = TRAJ_PARAM_TOL.assert_close(&format!("{what}: params"), &got.params, &want.params);
        let mut worst_replica = 0.0f32;
        for i in 1..dp.replicas() {
            let other = dp.replica(i).unwrap().params().unwrap();
            let c =
                PARAM_TOL.assert_close(&format!("{what}: replica {i} vs 0"), &other, &got.params);
            worst_replica = worst_replica.max(c.max_abs_diff);
        }
        // predict and evaluate shard their rows across the replicas: as replica 0 alone.
        let x = uniform(ROWS * spec().inputs(), -1.0, 1.0, 74);
        let t = targets(&spec(), ROWS, 75);
        let y = dp.predict(&x, ROWS).unwrap();
        let e = dp.evaluate(&x, &t, ROWS).unwrap();
        let r0 = dp.replica(0).unwrap();
        OUTPUT_TOL.assert_close(
            &format!("{what}: predict"),
            &y,
            &r0.predict(&x, ROWS).unwrap(),
        );
        let e0 = r0.evaluate(&x, &t, ROWS).unwrap();
        assert_eq!(
            (e.samples, e.correct),
            (e0.samples, e0.correct),
            "{what}: evaluate"
        );
        OUTPUT_TOL.assert_close(
            &format!("{what}: evaluate"),
            &[e.loss_sum as f32],
            &[e0.loss_sum as f32],
        );
        report(format!(
            "{what}: {} replicas vs one device, batch {BATCH}, {EPOCHS} epochs: largest |Δ| loss {:.2e}, params {:.2e}; between replicas {worst_replica:.2e}",
            dp.replicas(),
            l.max_abs_diff,
            p.max_abs_diff
        ));
    }
}

/// Room for a replica's shard of a global batch over `n` replicas.
fn shard_rows(n: usize) -> usize {
    BATCH.div_ceil(n)
}

#[test]
fn two_reference_replicas_train_like_one_device() {
    replicas_match_one_device("reference + reference", |opt| {
        let r = || Box::new(ReferenceBackend::new(&spec(), opt).unwrap()) as Box<dyn Backend>;
        DataParallel::new(vec![r(), r()], None).unwrap()
    });
}

#[test]
fn two_cpu_replicas_train_like_one_device() {
    replicas_match_one_device("cpu + cpu", |opt| {
        let c = || {
            Box::new(CpuBackend::new(&spec(), opt, shard_rows(2), Some(1)).unwrap())
                as Box<dyn Backend>
        };
        DataParallel::new(vec![c(), c()], None).unwrap()
    });
}

#[test]
fn lavapipe_and_llvmpipe_replicas_train_like_one_device() {
    on_both(|vk, gl| {
        let name = format!("{} + {}", vk.info, gl.info);
        replicas_match_one_device(&name, |opt| {
            let mut options = GpuOptions::default();
            options.data_parallel = true;
            let g = |ctx: &Arc<GpuContext>| {
                Box::new(
                    GpuBackend::new(ctx.clone(), &spec(), opt, shard_rows(2), options).unwrap(),
                ) as Box<dyn Backend>
            };
            DataParallel::new(vec![g(vk), g(gl)], None).unwrap()
        });
    });
}

#[test]
fn a_gpu_and_a_cpu_replica_train_like_one_device() {
    on("vulkan", |vk| {
        replicas_match_one_device(&format!("{} + cpu", vk.info), |opt| {
            let mut options = GpuOptions::default();
            options.data_parallel = true;
            let gpu = GpuBackend::new(vk.clone(), &spec(), opt, shard_rows(2), options).unwrap();
            let cpu = CpuBackend::new(&spec(), opt, shard_rows(2), Some(1)).unwrap();
            DataParallel::new(vec![Box::new(gpu), Box::new(cpu)], None).unwrap()
        });
    });
}

/// Ranks simulated by threads in this process: each `all_reduce` adds every rank's buffer into
/// a shared total in rank order, then hands the total back (what MPI's all-reduce does).
struct ThreadRanks {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

/// The running total and the next rank to add to it, and the barrier every rank meets at.
type Shared = (Mutex<(Vec<f64>, usize)>, std::sync::Barrier);

impl ThreadRanks {
    fn group(size: usize) -> Vec<ThreadRanks> {
        let shared = Arc::new((Mutex::new((Vec::new(), 0)), std::sync::Barrier::new(size)));
        (0..size)
            .map(|rank| ThreadRanks {
                rank,
                size,
                shared: shared.clone(),
            })
            .collect()
    }
    fn sum(&mut self, buf: &mut [f64]) {
        let (lock, barrier) = &*self.shared;
        // Ranks add in rank order (deterministic): rank r waits for its turn.
        loop {
            let mut g = lock.lock().unwrap();
            if g.1 == self.rank {
                if self.rank == 0 {
                    g.0 = buf.to_vec();
                } else {
                    g.0.iter_mut().zip(&*buf).for_each(|(t, b)| *t += b);
                }
                g.1 += 1;
                break;
            }
            drop(g);
            std::thread::yield_now();
        }
        barrier.wait();
        buf.copy_from_slice(&lock.lock().unwrap().0);
        if barrier.wait().is_leader() {
            lock.lock().unwrap().1 = 0;
        }
        barrier.wait();
    }
}

impl Collective for ThreadRanks {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> gpumlp::Result<()> {
        let mut wide: Vec<f64> = buf.iter().map(|&v| v as f64).collect();
        self.sum(&mut wide);
        buf.iter_mut().zip(wide).for_each(|(b, w)| *b = w as f32);
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> gpumlp::Result<()> {
        self.sum(buf);
        Ok(())
    }
}

/// Two ranks (threads standing in for processes) of two CPU replicas each: four shards of a
/// batch of 7 (one of them empty in the last batch of 1 row), trained like one device; every
/// rank ends with the same parameters and the same per-step stats.
#[test]
fn two_ranks_of_two_replicas_train_like_one_device() {
    for opt in [Optimizer::Momentum { mu: 0.9 }, Optimizer::adam()] {
        let want = one_device(opt);
        let runs: Vec<Trained> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadRanks::group(2)
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let r = || {
                            Box::new(CpuBackend::new(&spec(), opt, shard_rows(4), Some(1)).unwrap())
                                as Box<dyn Backend>
                        };
                        let mut dp = DataParallel::new(vec![r(), r()], Some(Box::new(c))).unwrap();
                        assert_eq!(
                            dp.bytes_all_reduced_per_step(),
                            spec().param_count() as u64 * 4
                        );
                        train(&mut dp, opt)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (rank, got) in runs.iter().enumerate() {
            let what = format!("rank {rank} of 2 × 2 cpu replicas {}", opt.name());
            assert_eq!(got.samples, want.samples, "{what}: samples");
            TRAJ_LOSS_TOL.assert_close(&format!("{what}: losses"), &got.losses, &want.losses);
            let p =
                TRAJ_PARAM_TOL.assert_close(&format!("{what}: params"), &got.params, &want.params);
            assert_eq!(got.params, runs[0].params, "{what}: ranks agree");
            report(format!(
                "{what}: params vs one device {:.2e}",
                p.max_abs_diff
            ));
        }
    }
}
