//! Training data larger than memory: streamed in chunks, it must train exactly as the
//! in-memory path does (bit-identical on the deterministic CPU backends, within tolerance on
//! each GPU adapter), over several shuffled epochs with a last partial batch and a last partial
//! chunk; memory-mapped IDX and `.npy` sources must give the loaders' numbers.

mod common;

use common::{gpus, on_ci, report, uniform};
use gpumlp::data::{
    gather_all, split_indices, MappedIdx, MappedNpy, Normalization, NormalizeMethod, RowSource,
    Subset,
};
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::{
    Backend, CpuBackend, DataPlan, Dataset, GpuBackend, GpuContext, GpuOptions, Optimizer,
    ReferenceBackend, Tolerance, TrainConfig, Trainer,
};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// 203 rows in batches of 10 (a last batch of 3), chunks of 40 rows (a last chunk of 3).
const ROWS: usize = 203;
const BATCH: usize = 10;
const CHUNK: usize = 40;
const EPOCHS: usize = 3;

fn spec() -> ModelSpec {
    ModelSpec::with_activations(
        &[7, 13, 3],
        vec![Activation::Tanh, Activation::Softmax],
        Loss::CrossEntropy,
    )
    .unwrap()
}

fn data() -> Dataset {
    let features = uniform(ROWS * 7, -1.0, 1.0, 5);
    let labels = (0..ROWS).map(|i| ((i * 7 + i / 3) % 3) as u32).collect();
    Dataset::from_classes(features, 7, labels, 3).unwrap()
}

// Built by assignment: the config structs become #[non_exhaustive], so no literal outside src/.
#[allow(clippy::field_reassign_with_default)]
fn config() -> TrainConfig {
    let mut c = TrainConfig::default();
    c.lr = 0.01;
    c.optimizer = Optimizer::adam();
    c.batch_size = BATCH;
    c.epochs = EPOCHS;
    c.seed = 11;
    c
}

/// Bytes of the device cap that leaves room for two chunks of `chunk` rows beside what
/// `backend` holds before any data (features, dense targets and the order index per row).
fn cap_for(backend: &dyn Backend, chunk: usize) -> u64 {
    let s = backend.spec();
    let row = ((s.inputs() + s.outputs() + 1) * 4) as u64;
    backend.allocated_bytes() + 2 * chunk as u64 * row + row / 2
}

/// Trains `EPOCHS` epochs in memory and streamed (on backends from `place`), returning
/// (parameters, per-epoch losses) of each.
fn both(place: &dyn Fn() -> Box<dyn Backend>) -> [(Vec<f32>, Vec<f64>); 2] {
    let spec = spec();
    let init = spec.init_params(3);
    let data = data();
    let run = |stream: bool| {
        let backend = place();
        let mut config = config();
        if stream {
            config.max_device_memory = Some(cap_for(backend.as_ref(), CHUNK));
        }
        let mut t = Trainer::new(backend, &init, config).unwrap();
        let plan = t.set_train_source(Arc::new(data.clone())).unwrap();
        if stream {
            assert_eq!(plan, DataPlan::Stream { chunk_rows: CHUNK });
            assert_eq!(t.chunk_rows(), Some(CHUNK));
        } else {
            assert_eq!(plan, DataPlan::InMemory);
        }
        let losses: Vec<f64> = (0..EPOCHS)
            .map(|_| t.run_epoch(None).unwrap().train_loss)
            .collect();
        (t.params().unwrap(), losses)
    };
    [run(false), run(true)]
}

#[test]
fn streaming_is_bit_identical_on_the_reference() {
    let [memory, streamed] =
        both(&|| Box::new(ReferenceBackend::new(&spec(), Optimizer::adam()).unwrap()));
    assert_eq!(memory.1, streamed.1, "per-epoch losses");
    assert_eq!(memory.0, streamed.0, "parameters after {EPOCHS} epochs");
    assert_ne!(
        memory.0,
        spec().init_params(3),
        "training moved the parameters"
    );
}

#[test]
fn streaming_is_bit_identical_on_the_cpu_backend() {
    let [memory, streamed] =
        both(&|| Box::new(CpuBackend::new(&spec(), Optimizer::adam(), BATCH, Some(2)).unwrap()));
    assert_eq!(memory.1, streamed.1, "per-epoch losses");
    assert_eq!(memory.0, streamed.0, "parameters after {EPOCHS} epochs");
}

/// Streaming changes only where the rows come from (a slot filled by `write_buffer` instead
/// of the whole set): every kernel and its order of sums are the same, so the two runs agree
/// to rounding; the tolerance leaves room for a driver that schedules differently.
const STREAM_TOL: Tolerance = Tolerance::new(1e-5, 1e-6);

fn on(backend: &str, body: fn(&Arc<GpuContext>)) {
    static LOCK: Mutex<()> = Mutex::new(());
    let Some(ctx) = gpus().iter().find(|c| c.info.backend == backend) else {
        assert!(!on_ci(), "CI needs a {backend} adapter");
        report(format!("no {backend} adapter here: skipped"));
        return;
    };
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    body(ctx)
}

fn gpu_streaming(ctx: &Arc<GpuContext>) {
    let ctx = ctx.clone();
    let [memory, streamed] = both(&|| {
        Box::new(
            GpuBackend::new(
                ctx.clone(),
                &spec(),
                Optimizer::adam(),
                BATCH,
                GpuOptions::default(),
            )
            .unwrap(),
        )
    });
    STREAM_TOL.assert_close("parameters", &streamed.0, &memory.0);
    let l = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    STREAM_TOL.assert_close("per-epoch losses", &l(&streamed.1), &l(&memory.1));
}

mod gpu_streaming {
    #[test]
    fn vulkan() {
        super::on("vulkan", super::gpu_streaming)
    }
    #[test]
    fn gl() {
        super::on("gl", super::gpu_streaming)
    }
}

#[test]
fn a_model_larger_than_the_cap_and_a_cap_without_room_for_two_batches_are_named_errors() {
    let spec = spec();
    let backend = Box::new(ReferenceBackend::new(&spec, Optimizer::adam()).unwrap());
    let model = backend.allocated_bytes();
    let mut c = config();
    c.max_device_memory = Some(model - 1);
    let mut t = Trainer::new(backend, &spec.init_params(0), c).unwrap();
    let e = t
        .set_train_source(Arc::new(data()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&model.to_string()) && e.contains("--max-device-memory"),
        "{e}"
    );

    let backend = Box::new(ReferenceBackend::new(&spec, Optimizer::adam()).unwrap());
    let mut c = config();
    c.max_device_memory = Some(cap_for(backend.as_ref(), BATCH - 1));
    let mut t = Trainer::new(backend, &spec.init_params(0), c).unwrap();
    let e = t
        .set_train_source(Arc::new(data()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("two chunks of at least one batch"), "{e}");
}

#[test]
fn a_split_subset_and_its_streaming_fit_match_the_in_memory_split_and_fit() {
    let data = data();
    let (train, val) = data.split(0.2, 4).unwrap();
    let (ti, vi) = split_indices(data.rows, &data.targets, 0.2, 4).unwrap();
    let u32s = |v: &[usize]| v.iter().map(|&i| i as u32).collect::<Vec<_>>();
    let sub = Subset::new(Arc::new(data.clone()), u32s(&ti)).unwrap();
    assert_eq!(gather_all(&sub).unwrap(), train);
    let vsub = Subset::new(Arc::new(data.clone()), u32s(&vi.unwrap())).unwrap();
    assert_eq!(Some(gather_all(&vsub).unwrap()), val);
    for method in [NormalizeMethod::Standard, NormalizeMethod::Unit] {
        let want = Normalization::fit(method, &train, None);
        let got = Normalization::fit_source(method, &sub, None).unwrap();
        assert_eq!(got, want, "{method}");
        assert_ne!(got, Normalization::identity(7));
    }
}

fn idx_file(dir: &Path, name: &str, magic: u32, dims: &[u32], data: &[u8]) -> std::path::PathBuf {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, b).unwrap();
    p
}

fn npy_file(dir: &Path, name: &str, descr: &str, shape: &str, data: &[u8]) -> std::path::PathBuf {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.as_bytes());
    b.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, b).unwrap();
    p
}

#[test]
fn mapped_idx_gives_the_loaders_rows_and_refuses_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let (n, h, w) = (9usize, 3usize, 5usize);
    let pixels: Vec<u8> = (0..n * h * w).map(|i| (i * 37 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
    let images = idx_file(dir.path(), "img", 0x803, &[9, 3, 5], &pixels);
    let lab = idx_file(dir.path(), "lab", 0x801, &[9], &labels);
    let want = gpumlp::data::load_idx(&images, &lab).unwrap();
    let mapped = MappedIdx::open(&images, &lab).unwrap();
    assert!(mapped.mapped());
    assert_eq!(gather_all(&mapped).unwrap(), want);
    let picked = gpumlp::data::gather(&mapped, &[8, 0, 3]).unwrap();
    assert_eq!(picked, want.select(&[8, 0, 3]));

    let gz = dir.path().join("img.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &std::fs::read(&images).unwrap()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let e = MappedIdx::open(&gz, &lab).unwrap_err().to_string();
    assert!(e.contains("gzip") && e.contains("memory-mapped"), "{e}");
    // A truncated file is refused like the loader refuses it.
    let short = idx_file(dir.path(), "short", 0x803, &[9, 3, 5], &pixels[..100]);
    let e = MappedIdx::open(&short, &lab).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn mapped_npy_gives_the_loaders_rows_and_names_dtypes_it_cannot_map() {
    let dir = tempfile::tempdir().unwrap();
    let (n, k) = (11usize, 7usize);
    let x = uniform(n * k, -3.0, 3.0, 9);
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let labels: Vec<u8> = (0..n)
        .flat_map(|i| ((i % 3) as i64).to_le_bytes())
        .collect();
    let feats = npy_file(dir.path(), "x.npy", "<f4", &format!("({n}, {k})"), &xb);
    let lab = npy_file(dir.path(), "y.npy", "<i8", &format!("({n},)"), &labels);
    let want = gpumlp::data::load_npy(&feats, &lab).unwrap();
    let mapped = MappedNpy::open(&feats, &lab).unwrap();
    assert_eq!(gather_all(&mapped).unwrap(), want);
    assert_eq!(
        gpumlp::data::gather(&mapped, &[10, 2]).unwrap(),
        want.select(&[10, 2])
    );

    let x64: Vec<u8> = x.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect();
    let f64s = npy_file(dir.path(), "x64.npy", "<f8", &format!("({n}, {k})"), &x64);
    let e = MappedNpy::open(&f64s, &lab).unwrap_err().to_string();
    assert!(e.contains("float32") && e.contains("memory-mapped"), "{e}");
    assert!(
        gpumlp::data::load_npy(&f64s, &lab).is_ok(),
        "in memory it loads"
    );
}

#[test]
fn a_mapped_source_streams_like_the_loaded_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let d = data();
    let xb: Vec<u8> = d.features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let gpumlp::Targets::Classes { labels, .. } = &d.targets else {
        unreachable!()
    };
    let yb: Vec<u8> = labels.iter().flat_map(|&l| l.to_le_bytes()).collect();
    let feats = npy_file(dir.path(), "x.npy", "<f4", &format!("({ROWS}, 7)"), &xb);
    let lab = npy_file(dir.path(), "y.npy", "<u4", &format!("({ROWS},)"), &yb);
    let spec = spec();
    let run = |source: Arc<dyn RowSource>, cap: bool| {
        let backend = Box::new(ReferenceBackend::new(&spec, Optimizer::adam()).unwrap());
        let mut config = config();
        if cap {
            config.max_device_memory = Some(cap_for(backend.as_ref(), 2 * BATCH));
        }
        let mut t = Trainer::new(backend, &spec.init_params(3), config).unwrap();
        t.set_train_source(source).unwrap();
        for _ in 0..2 {
            t.run_epoch(None).unwrap();
        }
        t.params().unwrap()
    };
    let mapped = Arc::new(MappedNpy::open(&feats, &lab).unwrap());
    assert_eq!(
        run(mapped, true),
        run(
            Arc::new(gpumlp::data::load_npy(&feats, &lab).unwrap()),
            false
        )
    );
}

/// `gpumlp train --max-device-memory` small enough for chunks of 40 of the 162 training rows
/// writes the checkpoint an unlimited run writes (the CPU backend on one thread: bit-identical).
#[test]
fn cli_streaming_run_writes_the_unlimited_runs_checkpoint() {
    use common::cli::{fails, ok, p};
    // The rows per chunk below: (7 features + 3 targets + 1 index) × 4 bytes = 44 per row.
    let dir = tempfile::tempdir().unwrap();
    let d = data();
    let xb: Vec<u8> = d.features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let gpumlp::Targets::Classes { labels, .. } = &d.targets else {
        unreachable!()
    };
    let yb: Vec<u8> = labels
        .iter()
        .flat_map(|&l| (l as i64).to_le_bytes())
        .collect();
    npy_file(dir.path(), "x.npy", "<f4", &format!("({ROWS}, 7)"), &xb);
    npy_file(dir.path(), "y.npy", "<i8", &format!("({ROWS},)"), &yb);
    let data = format!("npy:{},{}", p(dir.path(), "x.npy"), p(dir.path(), "y.npy"));
    let spec = ModelSpec::with_activations(
        &[7, 16, 3],
        vec![Activation::Relu, Activation::Softmax],
        Loss::CrossEntropy,
    )
    .unwrap();
    let model = CpuBackend::new(&spec, Optimizer::adam(), BATCH, Some(1))
        .unwrap()
        .allocated_bytes();
    let cap = (model + 2 * 40 * 44 + 22).to_string();
    let (a, b) = (
        p(dir.path(), "a.safetensors"),
        p(dir.path(), "b.safetensors"),
    );
    let args = |out: &str| {
        let mut v: Vec<String> = [
            "train",
            "--data",
            &data,
            "--device",
            "cpu",
            "--threads",
            "1",
            "--layers",
            "7,16,3",
            "--batch",
            "10",
            "--epochs",
            "3",
            "--out",
            out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(["--max-device-memory".into(), cap.clone()]);
        v
    };
    let unlimited = args(&a);
    let unlimited: Vec<&str> = unlimited[..unlimited.len() - 2]
        .iter()
        .map(String::as_str)
        .collect();
    let out = ok(&unlimited);
    assert!(!out.contains("streaming"), "{out}");
    let limited = args(&b);
    let limited: Vec<&str> = limited.iter().map(String::as_str).collect();
    let out = ok(&limited);
    assert!(
        out.contains("streaming it in chunks of 40 rows"),
        "the run must stream:\n{out}"
    );
    let load = |f: &str| gpumlp::checkpoint::Checkpoint::load(Path::new(f)).unwrap();
    let (ca, cb) = (load(&a), load(&b));
    assert_eq!(ca.normalization, cb.normalization);
    assert_eq!(ca.params, cb.params, "streamed and in-memory parameters");

    // Host memory too short for the features twice: the mapped input streams by itself.
    let c = p(dir.path(), "c.safetensors");
    let host = args(&c);
    let host: Vec<&str> = host[..host.len() - 2].iter().map(String::as_str).collect();
    let out = common::cli::ok_env(&host, &[("GPUMLP_MAX_HOST_BYTES", "11000")]);
    assert!(
        out.contains("in host memory: streaming it in chunks of 60 rows"),
        "{out}"
    );
    assert_eq!(load(&c).params, ca.params, "streamed for host memory");

    let mut tiny = limited.clone();
    let n = tiny.len();
    tiny[n - 1] = "1K";
    fails(
        &tiny,
        &["--max-device-memory", "1024 bytes", &model.to_string()],
    );
    tiny[n - 1] = "12Q";
    fails(&tiny, "64M or 2G");
}

/// An epoch interrupted in its third chunk keeps the steps taken, and the rerun epoch trains as
/// the in-memory path does after the same interruption.
#[test]
fn an_interrupted_streamed_epoch_resumes_like_the_in_memory_one() {
    let spec = spec();
    let run = |stream: bool| {
        let backend: Box<dyn Backend> =
            Box::new(ReferenceBackend::new(&spec, Optimizer::adam()).unwrap());
        let mut c = config();
        if stream {
            c.max_device_memory = Some(cap_for(backend.as_ref(), CHUNK));
        }
        let mut t = Trainer::new(backend, &spec.init_params(3), c).unwrap();
        t.set_train_source(Arc::new(data())).unwrap();
        let mut asked = 0;
        let e = t
            .run_epoch_until(None, || {
                asked += 1;
                asked > 9
            })
            .unwrap_err();
        assert!(
            matches!(e, gpumlp::Error::Interrupted { epoch: 1, step: 9 }),
            "{e}"
        );
        assert_eq!((t.epoch(), t.steps()), (0, 9));
        t.run_epoch(None).unwrap();
        t.params().unwrap()
    };
    assert_eq!(run(true), run(false));
}

/// `Trainer::fit` on an in-memory dataset honours `max_device_memory` too: it streams, and
/// trains as without the cap.
#[test]
fn fit_streams_under_a_cap() {
    let spec = spec();
    let run = |cap: bool| {
        let backend: Box<dyn Backend> =
            Box::new(ReferenceBackend::new(&spec, Optimizer::adam()).unwrap());
        let mut c = config();
        if cap {
            c.max_device_memory = Some(cap_for(backend.as_ref(), CHUNK));
        }
        let mut t = Trainer::new(backend, &spec.init_params(3), c).unwrap();
        let reports = t.fit(&data(), None, |_| ()).unwrap();
        assert_eq!(reports.len(), EPOCHS);
        assert_eq!(t.chunk_rows(), cap.then_some(CHUNK));
        t.params().unwrap()
    };
    assert_eq!(run(true), run(false));
}
