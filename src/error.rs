//! The library's one error type. Every message says what went wrong and what to do about it.

use std::path::PathBuf;

/// Everything the library can refuse or fail at. Library code never panics on user input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid model: {0}")]
    InvalidModel(String),

    #[error("invalid training configuration: {0}")]
    InvalidConfig(String),

    #[error("shape mismatch: {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },

    #[error("invalid data: {0}")]
    InvalidData(String),

    #[error("class label {label} at sample {index} is out of range: the model has {classes} outputs (labels 0..{classes})")]
    LabelOutOfRange {
        label: i64,
        index: usize,
        classes: usize,
    },

    #[error("class label '{label}' at row {row} is not one the model was trained on (it knows: {known})")]
    UnknownLabel {
        label: String,
        row: usize,
        known: String,
    },

    #[error("non-finite value ({value}) in {what} at row {row}, column {col}: clean or drop that sample")]
    NonFinite {
        what: String,
        row: usize,
        col: usize,
        value: f32,
    },

    #[error("training diverged: the loss became {value} at epoch {epoch}, step {step}; lower the learning rate (--lr) or add L2 (--l2)")]
    Diverged {
        epoch: usize,
        step: usize,
        value: f64,
    },

    #[error("training interrupted in epoch {epoch} after step {step}: the parameters keep the steps taken")]
    Interrupted { epoch: usize, step: usize },

    /// No adapter matches: any at all, or those narrowed to a `backend` and/or a `name`
    /// substring.
    #[error("no GPU adapter found{}: install a GPU driver, or a software Vulkan device (on Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1), or train on the fast CPU backend (--device cpu)", adapter_wanted(.backend, .name))]
    NoAdapter {
        backend: Option<String>,
        name: Option<String>,
    },

    /// No `index`-th adapter (0-based) among the `found` that match `backend` (`vulkan:1` in
    /// `--devices` on a machine with one Vulkan adapter).
    #[error("no GPU adapter at index {index}{}: found {found} (indices start at 0)", adapter_wanted(.backend, &None))]
    AdapterIndex {
        backend: Option<String>,
        index: usize,
        found: usize,
    },

    /// A GPU backend name that is none of vulkan, metal, dx12 or gl; `from_env` when it came
    /// from `GPUMLP_BACKEND`.
    #[error("{}unknown backend '{name}': use vulkan, metal, dx12 or gl{}", if *.from_env { format!("GPUMLP_BACKEND={name}: ") } else { String::new() }, if *.from_env { " (or unset GPUMLP_BACKEND)" } else { "" })]
    UnknownBackend { name: String, from_env: bool },

    #[error("{0}")]
    DeviceLimit(String),

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    /// A data file's content is malformed at a known place: `line` and `column` count from 1,
    /// like an editor (`column` is `None` where the whole line or record is at fault). The
    /// message names them too.
    #[error("{path}: {message}")]
    Format {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    // The cause is part of the message and deliberately not a `#[source]`: callers that print
    // the whole chain (anyhow's `{:#}`) would otherwise show it twice.
    #[error("I/O error on {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// A distributed run (MPI) that cannot start or whose ranks disagree.
    #[error("distributed run: {0}")]
    Distributed(String),

    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    /// Something would need more memory (or a longer read) than a limit allows; refused before
    /// anything is allocated. `needed` is `u64::MAX` when the size does not even fit 64 bits.
    #[error("{what} needs {}, over the limit of {} ({limit_source}): {hint}", crate::limits::show_bytes(*.needed), crate::limits::show_bytes(*.limit))]
    TooLarge {
        what: String,
        needed: u64,
        limit: u64,
        /// Where the limit comes from, e.g. "memory available on this machine".
        limit_source: String,
        /// What to do about it.
        hint: String,
    },

    /// A model produced NaN or infinite outputs; `rows` are the first offending sample indices.
    #[error("the model's outputs are not finite (NaN or infinite) for {count} of {total} samples, first at sample(s) {} (0-based): the weights or the inputs are far out of range; check the data's scale and normalization, or retrain with a lower learning rate", .rows.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))]
    NonFiniteOutput {
        rows: Vec<usize>,
        count: usize,
        total: usize,
    },
}

/// " for backend 'b' with a name containing 'n'", as far as either is given.
fn adapter_wanted(backend: &Option<String>, name: &Option<String>) -> String {
    let mut detail = String::new();
    if let Some(b) = backend {
        detail += &format!(" for backend '{b}'");
    }
    if let Some(n) = name {
        detail += &format!(" with a name containing '{n}'");
    }
    detail
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn shape(
        what: impl Into<String>,
        expected: impl ToString,
        got: impl ToString,
    ) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }
}
