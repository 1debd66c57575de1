//! The limits gpumlp enforces before it allocates or reads: sizes are computed with checked
//! arithmetic and compared with what the machine (or the format) allows, so that an absurd
//! size becomes an [`Error::TooLarge`] that names the bytes needed and the limit, never a wrapped
//! number, a panic or an abort in the allocator.

use crate::error::{Error, Result};

/// Overrides the host memory limit (bytes); by default it is the memory available on this
/// machine (`MemAvailable` in `/proc/meminfo`), and unlimited where that cannot be read.
pub const HOST_MEMORY_ENV: &str = "GPUMLP_MAX_HOST_BYTES";

/// The longest CSV line read (bytes, line ending included): a file with no newline in the
/// first 64 MiB is not a CSV of samples.
pub const MAX_CSV_LINE_BYTES: usize = 64 << 20;

/// The largest safetensors header read (the same bound the `safetensors` crate uses).
pub const MAX_SAFETENSORS_HEADER_BYTES: u64 = 100_000_000;

/// The most steps `--verify` compares (the CPU reference runs them all).
pub const MAX_VERIFY_STEPS: usize = 10_000;

/// `n` bytes for messages: `123456789 bytes (117.7 MiB)`, or "more than 2^64 bytes".
pub fn show_bytes(n: u64) -> String {
    if n == u64::MAX {
        return "more than 2^64 bytes".into();
    }
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = None;
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = Some(u);
    }
    match unit {
        Some(u) => format!("{n} bytes ({v:.1} {u})"),
        None => format!("{n} bytes"),
    }
}

/// Parses a byte count: plain bytes (`1048576`, `4096B`), or a number (whole or decimal) with
/// a unit, case-insensitive: `K`, `M`, `G`, `T` and `KiB`, `MiB`, `GiB`, `TiB` are powers of
/// 1024 (`64M` = 64 MiB); `KB`, `MB`, `GB`, `TB` are powers of 1000.
///
/// # Errors
/// [`Error::InvalidConfig`] saying which forms are accepted.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => u64::MAX,
    };
    let value = number.parse::<f64>().ok().filter(|v| v.is_finite());
    match value.map(|v| v * scale as f64) {
        Some(bytes) if scale != u64::MAX && bytes >= 1.0 && bytes < u64::MAX as f64 => {
            Ok(bytes as u64)
        }
        _ => Err(Error::InvalidConfig(format!(
            "\"{text}\" is not a size in bytes: write plain bytes (1048576) or a number with \
             K, M, G, T (or KiB, MiB, GiB, TiB: powers of 1024) or KB, MB, GB, TB (powers of \
             1000), e.g. 64M or 2G"
        ))),
    }
}

/// `Π factors × elem` in bytes, or `u64::MAX` when it overflows.
pub fn bytes_of(factors: &[usize], elem: u64) -> u64 {
    factors
        .iter()
        .try_fold(elem, |acc, &f| acc.checked_mul(f as u64))
        .unwrap_or(u64::MAX)
}

/// The host memory limit in bytes and where it comes from: [`HOST_MEMORY_ENV`] when set, else
/// the memory available now, else `u64::MAX` (unknown: no check).
pub fn host_memory_limit() -> Result<(u64, String)> {
    if let Ok(v) = std::env::var(HOST_MEMORY_ENV) {
        let v = v.trim();
        return match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok((n, format!("set by {HOST_MEMORY_ENV}"))),
            _ => Err(Error::InvalidConfig(format!(
                "{HOST_MEMORY_ENV}={v:?} is not a number of bytes ≥ 1: unset it to use the memory available on this machine"
            ))),
        };
    }
    Ok(match mem_available() {
        Some(n) => (n, "the memory available on this machine".into()),
        None => (u64::MAX, "unknown".into()),
    })
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Errors when `needed` bytes of host memory for `what` exceed [`host_memory_limit`].
pub fn check_host_bytes(what: &str, needed: u64, hint: &str) -> Result<()> {
    let (limit, limit_source) = host_memory_limit()?;
    check_bytes(what, needed, limit, &limit_source, hint)
}

/// Errors when `needed > limit`, naming both.
pub fn check_bytes(
    what: &str,
    needed: u64,
    limit: u64,
    limit_source: &str,
    hint: &str,
) -> Result<()> {
    if needed > limit {
        return Err(Error::TooLarge {
            what: what.into(),
            needed,
            limit,
            limit_source: limit_source.into(),
            hint: hint.into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_that_overflow_are_saturated_and_named() {
        assert_eq!(bytes_of(&[3, 5], 4), 60);
        assert_eq!(bytes_of(&[usize::MAX, 2], 4), u64::MAX);
        assert_eq!(show_bytes(u64::MAX), "more than 2^64 bytes");
        assert_eq!(show_bytes(2048), "2048 bytes (2.0 KiB)");
        for (text, bytes) in [
            ("4096", 4096),
            ("4096B", 4096),
            ("64M", 64 << 20),
            ("2G", 2 << 30),
            ("512KiB", 512 << 10),
            ("1.5 MiB", 3 << 19),
            ("3kb", 3000),
            ("2GB", 2_000_000_000),
        ] {
            assert_eq!(parse_bytes(text).unwrap(), bytes, "{text}");
        }
        for bad in ["", "M", "-5", "0", "12Q", "1e3", "99999999999T"] {
            let e = parse_bytes(bad).unwrap_err().to_string();
            assert!(e.contains("64M or 2G"), "{bad}: {e}");
        }
        let e = check_bytes("x", u64::MAX, 10, "a test", "do less").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("more than 2^64") && m.contains("10 bytes") && m.contains("a test"),
            "{m}"
        );
    }
}
