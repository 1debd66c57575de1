//! Driving the built `gpumlp` as a user would: run it, and assert it succeeds or fails cleanly.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `gpumlp args` with `env` set (and the adapter and memory-limit variables cleared).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gpumlp"));
    c.args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env_remove("GPUMLP_BACKEND")
        .env_remove("GPUMLP_MAX_HOST_BYTES");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the gpumlp binary runs")
}

/// Runs `gpumlp args`.
pub fn gpumlp(args: &[&str]) -> Output {
    run(args, &[])
}

/// stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
pub fn ok_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = run(args, env);
    assert!(o.status.success(), "gpumlp {args:?} failed:\n{}", text(&o));
    text(&o)
}

#[track_caller]
pub fn ok(args: &[&str]) -> String {
    ok_env(args, &[])
}

/// What a failure's message must hold: one text, or every one of several.
pub trait Wanted {
    fn parts(&self) -> Vec<&str>;
}

impl Wanted for &str {
    fn parts(&self) -> Vec<&str> {
        vec![self]
    }
}

impl<const N: usize> Wanted for &[&str; N] {
    fn parts(&self) -> Vec<&str> {
        self.to_vec()
    }
}

impl Wanted for &[&str] {
    fn parts(&self) -> Vec<&str> {
        self.to_vec()
    }
}

/// Fails cleanly: exit 1 or 2 (2 for a flag clap refuses, or a failed --verify; not a signal or
/// a panic's 101), with a message holding everything `want` names.
#[track_caller]
pub fn fails_env(args: &[&str], env: &[(&str, &str)], want: impl Wanted) -> String {
    let o = run(args, env);
    let t = text(&o);
    assert!(
        matches!(o.status.code(), Some(1 | 2)),
        "gpumlp {args:?} should fail cleanly (exit 1 or 2), got {:?}:\n{t}",
        o.status
    );
    assert!(!t.contains("panicked"), "gpumlp {args:?} panicked:\n{t}");
    for w in want.parts() {
        assert!(
            t.contains(w),
            "gpumlp {args:?}: message should mention '{w}':\n{t}"
        );
    }
    t
}

#[track_caller]
pub fn fails(args: &[&str], want: impl Wanted) -> String {
    fails_env(args, &[], want)
}

/// `dir/name` as a string, for arguments.
pub fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}
