//! Shared by the integration tests: every GPU adapter found, deterministic data, tolerances.
#![allow(dead_code)]

use gpumlp::{AdapterSelector, GpuContext};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::sync::{Arc, OnceLock};

/// Every usable adapter on this machine (narrowed by GPUMLP_BACKEND / GPUMLP_ADAPTER), opened
/// once per test binary. Fails with a clear message when there is none.
pub fn gpus() -> &'static [Arc<GpuContext>] {
    static ALL: OnceLock<Vec<Arc<GpuContext>>> = OnceLock::new();
    ALL.get_or_init(|| {
        let all = GpuContext::all(&AdapterSelector::from_env())
            .unwrap_or_else(|e| panic!("opening GPU adapters failed: {e}"));
        assert!(
            !all.is_empty(),
            "no GPU adapter found: the GPU tests need one. Install a driver, or a software \
             Vulkan device: apt-get install -y mesa-vulkan-drivers libvulkan1"
        );
        // Written to stderr directly so that it shows even when the test harness captures output.
        let mut err = std::io::stderr();
        for c in &all {
            let _ = writeln!(err, "[gpumlp tests] GPU adapter under test: {}", c.info);
        }
        all.into_iter().map(Arc::new).collect()
    })
}

/// `n` values uniform in [lo, hi) from `seed`.
pub fn uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// `rows` one-hot rows of width `classes`.
pub fn one_hot(rows: usize, classes: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut t = vec![0.0; rows * classes];
    for r in 0..rows {
        t[r * classes + rng.random_range(0..classes)] = 1.0;
    }
    t
}

/// The awkward sizes every kernel is tested on.
pub const AWKWARD: [usize; 5] = [1, 7, 63, 65, 257];

/// Shapes (m, k, n) in which every dimension takes every awkward size, plus one that spans many
/// workgroups in every direction.
pub fn awkward_shapes() -> Vec<(usize, usize, usize)> {
    let s = AWKWARD;
    let mut v = Vec::new();
    for i in 0..s.len() {
        v.push((s[i], s[(i + 1) % 5], s[(i + 2) % 5]));
        v.push((s[i], s[(i + 3) % 5], s[(i + 1) % 5]));
    }
    v.push((300, 190, 270));
    v
}
