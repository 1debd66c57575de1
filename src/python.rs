//! The Python extension `gpumlp._gpumlp` (cargo feature `python`, built by maturin): a thin
//! layer over the library. The scikit-learn estimators live in Python (`python/gpumlp/`); this
//! module gives them a placed model that trains one epoch per call with the GIL released,
//! predicts, and reads and writes checkpoints and ONNX files with the library's code.

use crate::checkpoint::Checkpoint;
use crate::data::{Normalization, NormalizeMethod};
use crate::files::{atomic_write, check_writable, WriteOptions};
use crate::{
    Activation, AdapterSelector, Dataset, Device, Error, Loss, ModelSpec, Optimizer, Schedule,
    TrainConfig, Trainer,
};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFloatingPointError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::Mutex;

/// Every library error as the Python exception a Python user expects, with our message.
fn py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Io { .. } | Error::File { .. } | Error::Format { .. } => PyOSError::new_err(msg),
        Error::Diverged { .. } => PyFloatingPointError::new_err(msg),
        Error::NoAdapter { .. }
        | Error::AdapterIndex { .. }
        | Error::DeviceLimit(_)
        | Error::Gpu(_) => PyRuntimeError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// The one place a device name becomes a [`Device`]. `reference` and `cpu` are both the naive
/// CPU reference until the fast CPU backend lands (then `cpu` maps to it and `reference` to
/// `Device::Reference`).
fn device(name: &str) -> PyResult<Device> {
    let sel = AdapterSelector::default();
    Ok(match name {
        "auto" => Device::Auto(sel),
        "gpu" => Device::Gpu(sel),
        "cpu" => Device::Cpu,
        "reference" => Device::Reference,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown device '{other}': use 'auto', 'gpu', 'cpu' or 'reference'"
            )))
        }
    })
}

fn spec(sizes: Vec<usize>, activations: Vec<String>, loss: &str) -> PyResult<ModelSpec> {
    let acts = activations
        .iter()
        .map(|a| a.parse::<Activation>())
        .collect::<crate::Result<Vec<_>>>()
        .map_err(py_err)?;
    let loss: Loss = loss.parse().map_err(py_err)?;
    ModelSpec::with_activations(&sizes, acts, loss).map_err(py_err)
}

fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{what} must be a contiguous array")))
}

fn slice2<'a>(a: &'a PyReadonlyArray2<'_, f32>, what: &str) -> PyResult<(&'a [f32], usize, usize)> {
    let shape = a.shape();
    let s = a.as_slice().map_err(|_| {
        PyValueError::new_err(format!("{what} must be a C-contiguous float32 array"))
    })?;
    Ok((s, shape[0], shape[1]))
}

struct Inner {
    trainer: Trainer,
    /// Rows given to `set_train_data` (0 before).
    train_rows: usize,
}

/// A model placed on a device with its trainer.
#[pyclass(module = "gpumlp._gpumlp", name = "Model")]
struct Model {
    inner: Mutex<Inner>,
    spec: ModelSpec,
    device_name: String,
    fallback: Option<String>,
}

/// A trainer for `spec` on `device` (built without holding the GIL), the backend's name, and
/// why `device='auto'` fell back to the CPU, if it did.
fn place(
    py: Python<'_>,
    spec: &ModelSpec,
    device: Device,
    config: TrainConfig,
    params: Vec<f32>,
) -> PyResult<(Trainer, String, Option<String>)> {
    let spec = spec.clone();
    py.detach(move || -> crate::Result<_> {
        let auto = matches!(device, Device::Auto(_));
        let mut trainer = Trainer::builder(&spec)
            .device(device)
            .config(config)
            .params(params)
            .build()?;
        let name = trainer.backend().name();
        // Auto fell back to the CPU when it says why in its "(auto: ...)" note.
        let reason = trainer.placement().unwrap_or_default();
        let fallback = (auto && reason.contains("(auto:")).then(|| reason.to_string());
        Ok((trainer, name, fallback))
    })
    .map_err(py_err)
}

impl Model {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Inner) -> crate::Result<T> + Send,
    ) -> PyResult<T> {
        let inner = &self.inner;
        py.detach(move || {
            let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .map_err(py_err)
    }
}

#[pymethods]
impl Model {
    /// A model `sizes` (input first) with one activation per layer and `loss`, placed on
    /// `device`, starting from `params` ([P], our layout) or the library's seeded initialization.
    #[new]
    #[pyo3(signature = (sizes, activations, loss, params=None, init_seed=0, device_name="auto",
        optimizer="adam", lr=0.001, momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8, l2=0.0,
        batch_size=32, seed=0, shuffle=true, schedule="constant"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        sizes: Vec<usize>,
        activations: Vec<String>,
        loss: &str,
        params: Option<PyReadonlyArray1<'_, f32>>,
        init_seed: u64,
        device_name: &str,
        optimizer: &str,
        lr: f32,
        momentum: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        l2: f32,
        batch_size: usize,
        seed: u64,
        shuffle: bool,
        schedule: &str,
    ) -> PyResult<Self> {
        let spec = spec(sizes, activations, loss)?;
        let optimizer = match optimizer {
            "sgd" => Optimizer::Sgd,
            "momentum" => Optimizer::Momentum { mu: momentum },
            "adam" => Optimizer::Adam { beta1, beta2, eps },
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown solver '{other}': use 'adam', 'sgd' or 'momentum'"
                )))
            }
        };
        let config = TrainConfig {
            lr,
            optimizer,
            l2,
            batch_size,
            epochs: usize::MAX,
            seed,
            shuffle,
            schedule: schedule.parse::<Schedule>().map_err(py_err)?,
            ..Default::default()
        };
        config.validate().map_err(py_err)?;
        let params = match params {
            Some(p) => slice(&p, "params")?.to_vec(),
            None => spec.init_params(init_seed),
        };
        let (trainer, device_name, fallback) =
            place(py, &spec, device(device_name)?, config, params)?;
        Ok(Model {
            inner: Mutex::new(Inner {
                trainer,
                train_rows: 0,
            }),
            spec,
            device_name,
            fallback,
        })
    }

    /// Where the model runs, e.g. `cpu-reference` or `vulkan: llvmpipe (...)`.
    #[getter]
    fn device(&self) -> String {
        self.device_name.clone()
    }

    /// Why `device='auto'` fell back to the CPU, or None.
    #[getter]
    fn fallback(&self) -> Option<String> {
        self.fallback.clone()
    }

    /// Epochs completed.
    #[getter]
    fn epoch(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |i| Ok(i.trainer.epoch()))
    }

    /// Stores the training set on the device: x [rows, in] float32 (C order) with class indices
    /// `labels` [rows] (uint32, `0..classes`) or real targets `values` [rows, out] float32.
    #[pyo3(signature = (x, labels=None, classes=0, values=None))]
    fn set_train_data(
        &self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        labels: Option<PyReadonlyArray1<'_, u32>>,
        classes: usize,
        values: Option<PyReadonlyArray2<'_, f32>>,
    ) -> PyResult<()> {
        let (xs, rows, cols) = slice2(&x, "X")?;
        let ds = match (labels, values) {
            (Some(l), None) => {
                Dataset::from_classes(xs.to_vec(), cols, slice(&l, "labels")?.to_vec(), classes)
            }
            (None, Some(v)) => {
                let (vs, _, width) = slice2(&v, "y")?;
                Dataset::from_values(xs.to_vec(), cols, vs.to_vec(), width)
            }
            _ => {
                return Err(PyValueError::new_err(
                    "give exactly one of labels and values",
                ))
            }
        }
        .map_err(py_err)?;
        if ds.rows != rows {
            return Err(PyValueError::new_err(format!(
                "X has {rows} rows but y has {}",
                ds.rows
            )));
        }
        self.with(py, move |i| {
            i.trainer.set_train_data(&ds)?;
            i.train_rows = ds.rows;
            Ok(())
        })
    }

    /// Trains one epoch over the stored data with the GIL released; returns the mean training
    /// loss. Ctrl-C stops it before the next step and raises KeyboardInterrupt (the steps taken
    /// stay applied).
    fn run_epoch(&self, py: Python<'_>) -> PyResult<f64> {
        let mut interrupt: Option<PyErr> = None;
        let pending = &mut interrupt;
        // Python runs its signal handlers only with the GIL: take it briefly before each step.
        let stop = move || match Python::attach(|py| py.check_signals()) {
            Ok(()) => false,
            Err(e) => {
                *pending = Some(e);
                true
            }
        };
        let result = self.with(py, |i| i.trainer.run_epoch_until(None, stop));
        match (result, interrupt) {
            (Err(_), Some(e)) => Err(e),
            (r, _) => Ok(r?.train_loss),
        }
    }

    /// The outputs y [rows, out] (after the output activation) for x [rows, in].
    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (xs, rows, cols) = slice2(&x, "X")?;
        if cols != self.spec.inputs() {
            return Err(PyValueError::new_err(format!(
                "X has {cols} features, but the model takes {}",
                self.spec.inputs()
            )));
        }
        let xs = xs.to_vec();
        let y = self.with(py, move |i| i.trainer.predict(&xs, rows))?;
        let out = self.spec.outputs();
        Ok(PyArray1::from_vec(py, y).reshape([rows, out])?.into_any())
    }

    /// The parameters [P]: per layer W [in, out] row-major, then b [out].
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let p = self.with(py, |i| i.trainer.params())?;
        Ok(PyArray1::from_vec(py, p))
    }

    /// Replaces the parameters [P].
    fn set_params(&self, py: Python<'_>, params: PyReadonlyArray1<'_, f32>) -> PyResult<()> {
        let p = slice(&params, "params")?.to_vec();
        self.with(py, move |i| i.trainer.backend().set_params(&p))
    }
}

fn checkpoint(
    sizes: Vec<usize>,
    activations: Vec<String>,
    loss: &str,
    params: PyReadonlyArray1<'_, f32>,
    normalization: Option<(String, Vec<f32>, Vec<f32>)>,
    labels: Option<Vec<String>>,
) -> PyResult<Checkpoint> {
    let spec = spec(sizes, activations, loss)?;
    let params = slice(&params, "params")?.to_vec();
    if params.len() != spec.param_count() {
        return Err(PyValueError::new_err(format!(
            "{} parameters given, the model has {}",
            params.len(),
            spec.param_count()
        )));
    }
    let normalization = match normalization {
        None => None,
        Some((method, shift, scale)) => Some(Normalization {
            method: method.parse::<NormalizeMethod>().map_err(py_err)?,
            shift,
            scale,
        }),
    };
    Ok(Checkpoint {
        spec,
        params,
        normalization,
        training: None,
        class_names: labels,
    })
}

/// Writes a checkpoint in the command line's safetensors format (atomically).
#[pyfunction]
#[pyo3(signature = (path, sizes, activations, loss, params, normalization=None, labels=None))]
#[allow(clippy::too_many_arguments)] // Python's keyword arguments
fn save_checkpoint(
    py: Python<'_>,
    path: PathBuf,
    sizes: Vec<usize>,
    activations: Vec<String>,
    loss: &str,
    params: PyReadonlyArray1<'_, f32>,
    normalization: Option<(String, Vec<f32>, Vec<f32>)>,
    labels: Option<Vec<String>>,
) -> PyResult<()> {
    let ck = checkpoint(sizes, activations, loss, params, normalization, labels)?;
    py.detach(move || ck.save(&path)).map_err(py_err)
}

/// Writes the ONNX model of a checkpoint (atomically; see `gpumlp::onnx`).
#[pyfunction]
#[pyo3(signature = (path, sizes, activations, loss, params, normalization=None, labels=None))]
#[allow(clippy::too_many_arguments)] // Python's keyword arguments
fn write_onnx(
    py: Python<'_>,
    path: PathBuf,
    sizes: Vec<usize>,
    activations: Vec<String>,
    loss: &str,
    params: PyReadonlyArray1<'_, f32>,
    normalization: Option<(String, Vec<f32>, Vec<f32>)>,
    labels: Option<Vec<String>>,
) -> PyResult<()> {
    let ck = checkpoint(sizes, activations, loss, params, normalization, labels)?;
    py.detach(move || {
        check_writable(&path, WriteOptions::default())?;
        atomic_write(&path, &crate::onnx::to_onnx(&ck)?)
    })
    .map_err(py_err)
}

/// Reads a checkpoint: a dict with sizes, activations, loss, params [P] (our layout),
/// normalization (method, shift, scale) or None, labels or None.
#[pyfunction]
fn load_checkpoint<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let ck = py.detach(move || Checkpoint::load(&path)).map_err(py_err)?;
    let d = PyDict::new(py);
    d.set_item("sizes", ck.spec.sizes.clone())?;
    d.set_item(
        "activations",
        ck.spec
            .activations
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>(),
    )?;
    d.set_item("loss", ck.spec.loss.name())?;
    d.set_item("params", PyArray1::from_vec(py, ck.params))?;
    d.set_item(
        "normalization",
        ck.normalization
            .map(|n| (n.method.name().to_string(), n.shift, n.scale)),
    )?;
    d.set_item("labels", ck.class_names)?;
    Ok(d)
}

#[pymodule]
fn _gpumlp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(save_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(load_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(write_onnx, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
