//! `cargo bench`: matmul GFLOP/s in each of the three forms a step uses and whole training steps
//! in samples/s, on the GPU backend and the CPU reference, with a CPU roofline (threaded sgemm
//! from `matrixmultiply`) on the same shapes in the same run. Measures; never fails a build.
//!
//! Kernel times come from `GpuBackend::profile_step`: GPU timestamp queries, so the kernels' own
//! time, or where the plan says so (`plan::wall_clock_profiling`: CPU adapters) each dispatch
//! submitted alone and timed by the host clock. The largest shape (1024-4096-4096-1024, batch
//! 8192) takes minutes per step on a software adapter: it runs only with GPUMLP_BENCH_LARGE=1
//! or on a non-CPU adapter.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gpumlp::{
    Activation, AdapterSelector, Backend, CpuBackend, GpuBackend, GpuContext, GpuOptions, Loss,
    ModelSpec, Optimizer, ReferenceBackend,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The suite: layer sizes and batch.
const SHAPES: [(&[usize], usize); 6] = [
    (&[784, 512, 512, 10], 1024),
    (&[64, 128, 128, 10], 4096),
    (&[2, 16, 2], 256),
    (&[784, 128, 10], 128),
    (&[1024, 4096, 4096, 1024], 8192),
    (&[32, 64, 64, 64, 1], 65536),
];

fn name(sizes: &[usize], batch: usize) -> String {
    format!(
        "{}/b{batch}",
        sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("-")
    )
}

fn gpu() -> Option<Arc<GpuContext>> {
    static CTX: OnceLock<Option<Arc<GpuContext>>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new(&AdapterSelector::from_env()) {
        Ok(c) => {
            eprintln!("GPU adapter: {}", c.info);
            Some(Arc::new(c))
        }
        Err(e) => {
            eprintln!("no GPU benchmarks: {e}");
            None
        }
    })
    .clone()
}

fn large_ok(ctx: &GpuContext) -> bool {
    gpumlp::gpu::plan::large_benchmarks_practical(&ctx.capabilities())
        || std::env::var_os("GPUMLP_BENCH_LARGE").is_some()
}

/// The `gpumlp bench` protocol's data: inputs uniform in [0, 1), random one-hot targets.
fn batch_data(spec: &ModelSpec, batch: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x = (0..batch * spec.inputs())
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let out = spec.outputs();
    let mut t = vec![0.0; batch * out];
    for r in 0..batch {
        t[r * out + rng.random_range(0..out)] = 1.0;
    }
    (x, t)
}

fn spec(sizes: &[usize]) -> ModelSpec {
    ModelSpec::new(
        sizes,
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .expect("valid shape")
}

fn placed(b: &mut dyn Backend, spec: &ModelSpec, batch: usize) {
    let (x, t) = batch_data(spec, batch);
    b.set_params(&spec.init_params(0)).unwrap();
    b.set_train_data(&x, &t, batch).unwrap();
    b.begin_epoch(&(0..batch as u32).collect::<Vec<_>>())
        .unwrap();
}

/// Timed steps, the clock stopped after the final loss is read back.
fn time_steps(b: &mut dyn Backend, batch: usize, iters: u64) -> Duration {
    let h = Optimizer::Sgd.hyper(0.1, 1, 0.0);
    b.finish_epoch().unwrap();
    b.begin_epoch(&(0..batch as u32).collect::<Vec<_>>())
        .unwrap();
    let start = Instant::now();
    for _ in 0..iters {
        b.step(0, batch, &h).unwrap();
    }
    b.finish_epoch().unwrap();
    let d = start.elapsed();
    b.begin_epoch(&(0..batch as u32).collect::<Vec<_>>())
        .unwrap();
    d
}

/// FLOPs of each matmul form over the whole net: forward/grad `2·B·Σ in·out`, delta for all
/// but the first layer.
fn form_flops(sizes: &[usize], batch: usize) -> [f64; 3] {
    let macs: f64 = sizes.windows(2).map(|w| (w[0] * w[1]) as f64).sum();
    let delta: f64 = sizes.windows(2).skip(1).map(|w| (w[0] * w[1]) as f64).sum();
    let b = batch as f64;
    [2.0 * b * macs, 2.0 * b * delta, 2.0 * b * macs]
}

/// GPU kernel time of each form in one step (timestamp queries).
fn form_times(g: &mut GpuBackend, batch: usize) -> Option<[f64; 3]> {
    let h = Optimizer::Sgd.hyper(0.1, 1, 0.0);
    let profile = g.profile_step(0, batch, &h).ok()?;
    let mut t = [0.0; 3];
    for (label, s) in profile {
        let i = if label.starts_with("forward") {
            0
        } else if label.starts_with("delta") {
            1
        } else if label.starts_with("grad") {
            2
        } else {
            continue;
        };
        t[i] += s;
    }
    Some(t)
}

/// Threaded sgemm `c[m,n] = a·b` with strides, so the transposed forms cost nothing extra.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    rsb: isize,
    csb: isize,
    c: &mut [f32],
) {
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// CPU roofline: seconds for each form over the whole net with threaded sgemm.
fn roofline(sizes: &[usize], batch: usize) -> [f64; 3] {
    let mut t = [0.0; 3];
    for w in sizes.windows(2) {
        let (i, o) = (w[0], w[1]);
        let x = vec![0.5f32; batch * i];
        let wm = vec![0.25f32; i * o];
        let d = vec![0.125f32; batch * o];
        let mut y = vec![0.0f32; batch * o];
        let mut dx = vec![0.0f32; batch * i];
        let mut gw = vec![0.0f32; i * o];
        let best = |f: &mut dyn FnMut()| {
            f();
            (0..3)
                .map(|_| {
                    let s = Instant::now();
                    f();
                    s.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        t[0] += best(&mut || sgemm(batch, i, o, &x, i as isize, 1, &wm, o as isize, 1, &mut y));
        if w.as_ptr() != sizes.as_ptr() {
            t[1] +=
                best(&mut || sgemm(batch, o, i, &d, o as isize, 1, &wm, 1, o as isize, &mut dx));
        }
        t[2] += best(&mut || sgemm(i, batch, o, &x, 1, i as isize, &d, o as isize, 1, &mut gw));
    }
    t
}

fn matmul_forms(c: &mut Criterion) {
    let Some(ctx) = gpu() else { return };
    let mut summary = Vec::new();
    for (sizes, batch) in SHAPES {
        if sizes[1] >= 4096 && !large_ok(&ctx) {
            continue;
        }
        let spec = spec(sizes);
        // the layered schedule, whose kernels are the three forms
        let mut layered = GpuOptions::default();
        layered.fused_mlp = Some(false);
        let mut g = GpuBackend::new(ctx.clone(), &spec, Optimizer::Sgd, batch, layered).unwrap();
        placed(&mut g, &spec, batch);
        let flops = form_flops(sizes, batch);
        let mut group = c.benchmark_group(format!("matmul/{}", name(sizes, batch)));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_secs(2));
        for (f, form) in ["x·W", "δ·Wᵀ", "xᵀ·δ"].iter().enumerate() {
            group.throughput(Throughput::Elements(flops[f] as u64));
            group.bench_function(BenchmarkId::new("gpu", form), |bch| {
                bch.iter_custom(|iters| {
                    let s: f64 = (0..iters)
                        .map(|_| form_times(&mut g, batch).map_or(0.0, |t| t[f]))
                        .sum();
                    Duration::from_secs_f64(s)
                })
            });
        }
        group.finish();
        if let Some(gpu_t) = form_times(&mut g, batch) {
            summary.push((name(sizes, batch), flops, gpu_t, roofline(sizes, batch)));
        }
    }
    println!("\nmatmul GFLOP/s per form (GPU by profile_step, CPU roofline = threaded matrixmultiply sgemm), adapter {}", ctx.info);
    println!(
        "{:<28} {:>24} {:>24} {:>24}",
        "shape", "x·W gpu/cpu (ratio)", "δ·Wᵀ gpu/cpu (ratio)", "xᵀ·δ gpu/cpu (ratio)"
    );
    for (n, flops, g, r) in summary {
        let cell = |i: usize| {
            if flops[i] == 0.0 {
                return "-".to_string();
            }
            let (gg, rr) = (flops[i] / g[i] / 1e9, flops[i] / r[i] / 1e9);
            format!("{gg:.1}/{rr:.1} ({:.0}%)", 100.0 * gg / rr)
        };
        println!("{n:<28} {:>24} {:>24} {:>24}", cell(0), cell(1), cell(2));
    }
}

fn training_steps(c: &mut Criterion) {
    let ctx = gpu();
    for (sizes, batch) in SHAPES {
        let spec = spec(sizes);
        let mut group = c.benchmark_group(format!("step/{}", name(sizes, batch)));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_secs(3));
        group.throughput(Throughput::Elements(batch as u64));
        if let Some(ctx) = &ctx {
            if sizes[1] < 4096 || large_ok(ctx) {
                let narrow = sizes.iter().all(|&w| w <= 128);
                let schedules = [
                    ("gpu", GpuOptions::default()),
                    ("gpu-unfused", {
                        let mut c = GpuOptions::default();
                        c.fused = false;
                        c.fused_mlp = Some(false);
                        c
                    }),
                    ("gpu-fully-fused", {
                        let mut c = GpuOptions::default();
                        c.fused_mlp = Some(true);
                        c
                    }),
                ];
                for (label, options) in schedules {
                    if label == "gpu-fully-fused" && !narrow {
                        continue;
                    }
                    let mut g = GpuBackend::new(ctx.clone(), &spec, Optimizer::Sgd, batch, options)
                        .unwrap();
                    placed(&mut g, &spec, batch);
                    group.bench_function(label, |bch| {
                        bch.iter_custom(|iters| time_steps(&mut g, batch, iters))
                    });
                }
            }
        }
        // The fast CPU backend, on the machine's threads (GPUMLP_THREADS narrows them).
        let mut fast = CpuBackend::new(&spec, Optimizer::Sgd, batch, None).unwrap();
        placed(&mut fast, &spec, batch);
        group.bench_function("cpu", |bch| {
            bch.iter_custom(|iters| time_steps(&mut fast, batch, iters))
        });
        // The naive reference is the oracle, not a competitor: only where a step takes < ~1 s.
        if 6.0 * batch as f64 * spec.macs_per_sample() as f64 <= 3e9 {
            let mut cpu = ReferenceBackend::new(&spec, Optimizer::Sgd).unwrap();
            placed(&mut cpu, &spec, batch);
            group.bench_function("cpu-reference", |bch| {
                bch.iter_custom(|iters| time_steps(&mut cpu, batch, iters))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, matmul_forms, training_steps);
criterion_main!(benches);
