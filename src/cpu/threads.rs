//! How many threads the CPU backend uses, and the one pool per thread count that runs them.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// More threads than this is a typo, not a machine: refused with a clear error.
pub const MAX_THREADS: usize = 1024;

/// The machine's logical cores (1 when the OS will not say).
pub fn machine_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The thread count to use: `requested` (e.g. `--threads`), else `GPUMLP_THREADS`, else one per
/// logical core. 0, more than [`MAX_THREADS`] or a non-number is an error naming its source.
pub fn resolve_threads(requested: Option<usize>) -> Result<usize> {
    if let Some(n) = requested {
        return check(n, "--threads");
    }
    match std::env::var("GPUMLP_THREADS") {
        Ok(v) if !v.trim().is_empty() => {
            let n = v.trim().parse::<usize>().map_err(|_| {
                Error::InvalidConfig(format!(
                    "GPUMLP_THREADS='{v}' is not a whole number: set it to a thread count such as {}",
                    machine_threads()
                ))
            })?;
            check(n, "GPUMLP_THREADS")
        }
        _ => Ok(machine_threads()),
    }
}

fn check(n: usize, source: &str) -> Result<usize> {
    if n == 0 || n > MAX_THREADS {
        return Err(Error::InvalidConfig(format!(
            "{source} {n}: the CPU backend needs 1 to {MAX_THREADS} threads (this machine has {} logical cores)",
            machine_threads()
        )));
    }
    Ok(n)
}

/// The process-wide pool with `threads` workers, built on first use and shared by every model
/// placed with that count (so tests that place hundreds of models do not spawn hundreds of pools).
pub fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("gpumlp-cpu-{i}"))
        .build()
        .map_err(|e| Error::InvalidConfig(format!("could not start {threads} threads: {e}")))?;
    let p = Arc::new(p);
    pools.insert(threads, p.clone());
    Ok(p)
}
