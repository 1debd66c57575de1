//! The library's one error type. Every message says what went wrong and what to do about it.

use std::path::PathBuf;

/// Everything the library can refuse or fail at. Library code never panics on user input.
#[derive(Debug, thiserror::Error)]
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

    #[error("no GPU adapter found{detail}: install a GPU driver, or a software Vulkan device (on Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1), or train on the fast CPU backend (--device cpu)")]
    NoAdapter { detail: String },

    #[error("{0}")]
    DeviceLimit(String),

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

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
