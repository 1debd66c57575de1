//! The tuner's cache: one JSON file of choices keyed by adapter, driver and shape, read
//! leniently (a bad file is a warning) and written atomically.

use super::super::GpuContext;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The cache file's format version: entries of another version are ignored.
pub(super) const CACHE_VERSION: u32 = 1;

/// The cache file: `entries` maps `adapter|rows=R|matmul` (or `|step SIZES`) to a choice.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct CacheFile {
    pub(super) version: u32,
    pub(super) entries: BTreeMap<String, String>,
}

/// The cache file's path from the environment (see the module's docs), or `None` where no
/// folder is known.
pub fn cache_path() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = var("GPUMLP_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("gpumlp")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("gpumlp")))?;
    Some(dir.join("tune.json"))
}

/// Reads the cache at `path`: empty where there is none; empty with a warning where it
/// cannot be read or parsed.
pub(super) fn load(path: &Path, warnings: &mut Vec<String>) -> CacheFile {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CacheFile::default(),
        Err(e) => {
            warnings.push(format!(
                "the tuning cache {} cannot be read ({e}): tuning again",
                path.display()
            ));
            return CacheFile::default();
        }
    };
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(c) if c.version == CACHE_VERSION => c,
        Ok(_) => CacheFile::default(),
        Err(e) => {
            warnings.push(format!(
                "the tuning cache {} is corrupt ({e}): ignoring it, tuning again and replacing it",
                path.display()
            ));
            CacheFile::default()
        }
    }
}

/// Writes the cache at `path` atomically, creating its folder.
pub(super) fn save(path: &Path, cache: &CacheFile) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let text = serde_json::to_string_pretty(cache)
        .map_err(|e| Error::Gpu(format!("tuning cache: {e}")))?;
    crate::files::atomic_write(path, text.as_bytes())
}

/// The adapter and driver part of every cache key.
pub(super) fn adapter_key(ctx: &GpuContext) -> String {
    let i = &ctx.info;
    format!("{}|{}|{} {}", i.backend, i.name, i.driver, i.driver_info)
}

/// The cache's value for a matmul the tuner could not time within `budget` seconds.
pub(super) fn untimed(budget: f64) -> String {
    format!("untimed budget={budget}")
}

/// The budget of an [`untimed`] value.
pub(super) fn untimed_budget(value: &str) -> Option<f64> {
    value.strip_prefix("untimed budget=")?.parse().ok()
}
