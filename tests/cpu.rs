//! The fast CPU backend (src/cpu/) against the reference (src/reference/): one step for every
//! activation × loss, awkward shapes, 50-step trajectories with momentum, Adam and L2, reruns
//! bit-identical for a thread count, and 1 and 2 threads both within tolerance. One test per
//! case, so one failure never hides another.

mod common;

use common::{targets, uniform, GRAD_TOL, OUTPUT_TOL, PARAM_TOL};
use gpumlp::backend::Backend;
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::Optimizer;
use gpumlp::{
    BatchStats, CpuBackend, Dataset, Error, OptimizerState, ReferenceBackend, Tolerance,
    TrainConfig, Trainer,
};

/// What one step leaves behind: outputs before it, its stats, gradients, parameters, state.
type StepResult = (Vec<f32>, BatchStats, Vec<f32>, Vec<f32>, OptimizerState);

fn one_step(
    b: &mut dyn Backend,
    spec: &ModelSpec,
    opt: Optimizer,
    l2: f32,
    rows: usize,
) -> StepResult {
    let x = uniform(rows * spec.inputs(), -1.0, 1.0, 30);
    let t = targets(spec, rows, 31);
    let order: Vec<u32> = (0..rows as u32).collect();
    b.set_params(&spec.init_params(32)).unwrap();
    let before = b.predict(&x, rows).unwrap();
    b.set_train_data(&x, &t, rows).unwrap();
    b.begin_epoch(&order).unwrap();
    // One step: Adam's m/√v turns last-ulp gradient differences near 0 into ±lr, so later
    // steps are compared by the trajectories' tolerances below.
    b.step(0, rows, &opt.hyper(lr(opt), 1, l2)).unwrap();
    let stats = b.finish_epoch().unwrap();
    let grads = b.last_gradients().unwrap();
    (
        before,
        stats[0],
        grads,
        b.params().unwrap(),
        b.optimizer_state().unwrap(),
    )
}

/// Adam at its usual rate, the others at 0.1.
fn lr(opt: Optimizer) -> f32 {
    if opt == Optimizer::adam() {
        1e-3
    } else {
        0.1
    }
}

/// Adam's first step is `w − η·g/(|g| + ε)`: a gradient within GRAD_TOL's absolute 2e-6 of the
/// reference can still move its weight by up to 2η where |g| is that small, so Adam's updated
/// parameters get η-scaled slack (its m and v are held to GRAD_TOL like the gradients).
const ADAM_PARAM_TOL: Tolerance = Tolerance::new(1e-3, 1e-5);

/// One step on the CPU backend (1 and 2 threads) and on the reference; compares everything.
fn compare_step(spec: &ModelSpec, opt: Optimizer, l2: f32, rows: usize) {
    let want = one_step(
        &mut ReferenceBackend::new(spec, opt).unwrap(),
        spec,
        opt,
        l2,
        rows,
    );
    for threads in [1, 2] {
        let mut cpu = CpuBackend::new(spec, opt, rows, Some(threads)).unwrap();
        let got = one_step(&mut cpu, spec, opt, l2, rows);
        let what = format!(
            "{:?} {:?} {} rows {rows}, {threads} threads",
            spec.sizes,
            spec.activations,
            opt.name()
        );
        OUTPUT_TOL.assert_close(&format!("{what}: outputs"), &got.0, &want.0);
        OUTPUT_TOL.assert_close(
            &format!("{what}: loss"),
            &[got.1.loss_sum as f32],
            &[want.1.loss_sum as f32],
        );
        assert_eq!(got.1.correct, want.1.correct, "{what}: correct count");
        GRAD_TOL.assert_close(&format!("{what}: gradients"), &got.2, &want.2);
        let param_tol = if opt == Optimizer::adam() {
            ADAM_PARAM_TOL
        } else {
            PARAM_TOL
        };
        param_tol.assert_close(&format!("{what}: parameters"), &got.3, &want.3);
        GRAD_TOL.assert_close(&format!("{what}: optimizer m"), &got.4.m, &want.4.m);
        GRAD_TOL.assert_close(&format!("{what}: optimizer v"), &got.4.v, &want.4.v);
    }
}

/// One SGD step with L2 on 7-65-63-N, at 33 rows (one block) and 257 rows (blocks on threads).
fn activation_case(hidden: Activation, out_act: Activation, loss: Loss) {
    let outputs = if out_act == Activation::Softmax {
        10
    } else {
        3
    };
    let spec = ModelSpec::new(&[7, 65, 63, outputs], hidden, out_act, loss).unwrap();
    for rows in [33, 257] {
        compare_step(&spec, Optimizer::Sgd, 0.01, rows);
    }
}

/// A module of one test per hidden activation for each output activation and loss.
macro_rules! every_activation {
    ($($name:ident: $out:expr, $loss:expr;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn identity() { activation_case(Activation::Identity, $out, $loss) }
            #[test]
            fn sigmoid() { activation_case(Activation::Sigmoid, $out, $loss) }
            #[test]
            fn tanh() { activation_case(Activation::Tanh, $out, $loss) }
            #[test]
            fn relu() { activation_case(Activation::Relu, $out, $loss) }
            #[test]
            fn leaky_relu() { activation_case(Activation::LeakyRelu(0.01), $out, $loss) }
        }
    )*};
}

every_activation! {
    identity_squared_error: Activation::Identity, Loss::SquaredError;
    sigmoid_squared_error: Activation::Sigmoid, Loss::SquaredError;
    tanh_squared_error: Activation::Tanh, Loss::SquaredError;
    relu_squared_error: Activation::Relu, Loss::SquaredError;
    leaky_relu_squared_error: Activation::LeakyRelu(0.01), Loss::SquaredError;
    softmax_squared_error: Activation::Softmax, Loss::SquaredError;
    softmax_cross_entropy: Activation::Softmax, Loss::CrossEntropy;
    sigmoid_binary_cross_entropy: Activation::Sigmoid, Loss::BinaryCrossEntropy;
}

/// Momentum and Adam with L2 on an awkward shape: sizes and batch from the awkward list.
fn awkward_case(sizes: &[usize], rows: usize) {
    let spec = ModelSpec::new(
        sizes,
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    compare_step(&spec, Optimizer::Momentum { mu: 0.9 }, 0.01, rows);
    compare_step(&spec, Optimizer::adam(), 0.01, rows);
}

#[test]
fn awkward_1_7_63_batch_65() {
    awkward_case(&[1, 7, 63], 65);
}
#[test]
fn awkward_7_63_65_batch_257() {
    awkward_case(&[7, 63, 65], 257);
}
#[test]
fn awkward_63_65_257_batch_1() {
    awkward_case(&[63, 65, 257], 1);
}
#[test]
fn awkward_65_257_1_7_batch_63() {
    let spec = ModelSpec::new(
        &[65, 257, 1, 7],
        Activation::Relu,
        Activation::Sigmoid,
        Loss::SquaredError,
    )
    .unwrap();
    compare_step(&spec, Optimizer::Momentum { mu: 0.9 }, 0.01, 63);
    compare_step(&spec, Optimizer::adam(), 0.01, 63);
}
#[test]
fn awkward_257_1_7_batch_7() {
    awkward_case(&[257, 1, 7], 7);
}
#[test]
fn awkward_wide_batch_300_spans_blocks() {
    awkward_case(&[190, 270, 257, 10], 300);
}

/// 50 steps through the trainer (shuffled, partial last batch, L2); returns (losses, params).
fn trajectory(backend: Box<dyn Backend>, spec: &ModelSpec, opt: Optimizer) -> (Vec<f32>, Vec<f32>) {
    let (inp, classes, rows) = (spec.inputs(), spec.outputs(), 90);
    let x = uniform(rows * inp, -1.0, 1.0, 40);
    let labels = x
        .chunks(inp)
        .map(|r| {
            if r[0] + r[1] > 0.3 {
                0
            } else if r[2] > 0.0 {
                1
            } else {
                classes as u32 - 1
            }
        })
        .collect();
    let data = Dataset::from_classes(x, inp, labels, classes).unwrap();
    let lr = if opt == Optimizer::adam() { 0.01 } else { 0.05 };
    let mut config = TrainConfig::default();
    config.lr = lr;
    config.optimizer = opt;
    config.l2 = 1e-3;
    config.batch_size = 20;
    config.epochs = 10;
    config.seed = 3;
    let mut trainer = Trainer::new(backend, &spec.init_params(5), config).unwrap();
    let reports = trainer.fit(&data, None, |_| {}).unwrap();
    assert_eq!(trainer.steps(), 50);
    (
        reports.iter().map(|r| r.train_loss as f32).collect(),
        trainer.params().unwrap(),
    )
}

fn trajectory_case(opt: Optimizer, threads: usize) {
    let spec = ModelSpec::new(
        &[9, 65, 33, 4],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let (want_loss, want) = trajectory(
        Box::new(ReferenceBackend::new(&spec, opt).unwrap()),
        &spec,
        opt,
    );
    assert!(
        want_loss[9] < want_loss[0] * 0.8,
        "the reference should learn: {want_loss:?}"
    );
    let cpu = Box::new(CpuBackend::new(&spec, opt, 20, Some(threads)).unwrap());
    let (loss, params) = trajectory(cpu, &spec, opt);
    let what = format!("50 steps of {} on {threads} threads", opt.name());
    Tolerance::new(1e-3, 1e-5).assert_close(&format!("{what}: losses"), &loss, &want_loss);
    Tolerance::new(1e-3, 1e-4).assert_close(&format!("{what}: parameters"), &params, &want);
}

#[test]
fn fifty_steps_momentum_l2_one_thread() {
    trajectory_case(Optimizer::Momentum { mu: 0.9 }, 1);
}
#[test]
fn fifty_steps_momentum_l2_two_threads() {
    trajectory_case(Optimizer::Momentum { mu: 0.9 }, 2);
}
#[test]
fn fifty_steps_adam_l2_one_thread() {
    trajectory_case(Optimizer::adam(), 1);
}
#[test]
fn fifty_steps_adam_l2_two_threads() {
    trajectory_case(Optimizer::adam(), 2);
}

/// Steps large enough to be split into blocks on every thread, run twice from scratch.
fn rerun_case(threads: usize) {
    let spec = ModelSpec::new(
        &[64, 257, 129, 10],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let run = || {
        let cpu = CpuBackend::new(&spec, Optimizer::adam(), 200, Some(threads)).unwrap();
        trajectory_big(Box::new(cpu), &spec)
    };
    let (a, b) = (run(), run());
    assert!(
        a.0.iter()
            .zip(&b.0)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "losses differ between reruns"
    );
    let same =
        a.1.iter()
            .zip(&b.1)
            .all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(
        same,
        "parameters differ between reruns on {threads} threads"
    );
}

fn trajectory_big(backend: Box<dyn Backend>, spec: &ModelSpec) -> (Vec<f32>, Vec<f32>) {
    let rows = 600;
    let x = uniform(rows * spec.inputs(), 0.0, 1.0, 7);
    let labels = (0..rows as u32).map(|r| r % 10).collect();
    let data = Dataset::from_classes(x, spec.inputs(), labels, 10).unwrap();
    let mut config = TrainConfig::default();
    config.lr = 0.01;
    config.optimizer = Optimizer::adam();
    config.l2 = 1e-4;
    config.batch_size = 200;
    config.epochs = 3;
    let mut trainer = Trainer::new(backend, &spec.init_params(1), config).unwrap();
    let r = trainer.fit(&data, None, |_| {}).unwrap();
    (
        r.iter().map(|r| r.train_loss as f32).collect(),
        trainer.params().unwrap(),
    )
}

#[test]
fn reruns_are_bit_identical_on_one_thread() {
    rerun_case(1);
}
#[test]
fn reruns_are_bit_identical_on_two_threads() {
    rerun_case(2);
}
#[test]
fn reruns_are_bit_identical_on_three_threads() {
    rerun_case(3);
}

#[test]
fn evaluate_and_predict_in_blocks_larger_than_the_batch_match_reference() {
    let spec = ModelSpec::new(
        &[5, 17, 3],
        Activation::Sigmoid,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let rows = 301;
    let (x, t) = (uniform(rows * 5, -2.0, 2.0, 1), targets(&spec, rows, 2));
    let mut cpu = CpuBackend::new(&spec, Optimizer::Sgd, 64, Some(2)).unwrap();
    let mut reference = ReferenceBackend::new(&spec, Optimizer::Sgd).unwrap();
    let params = spec.init_params(4);
    cpu.set_params(&params).unwrap();
    reference.set_params(&params).unwrap();
    let (y, want_y) = (
        cpu.predict(&x, rows).unwrap(),
        reference.predict(&x, rows).unwrap(),
    );
    OUTPUT_TOL.assert_close("predict", &y, &want_y);
    let (s, want) = (
        cpu.evaluate(&x, &t, rows).unwrap(),
        reference.evaluate(&x, &t, rows).unwrap(),
    );
    assert_eq!((s.correct, s.samples), (want.correct, want.samples));
    OUTPUT_TOL.assert_close(
        "evaluate loss",
        &[s.loss_sum as f32],
        &[want.loss_sum as f32],
    );
}

#[test]
fn zero_threads_is_a_clear_error() {
    let spec = ModelSpec::new(
        &[2, 3, 1],
        Activation::Relu,
        Activation::Sigmoid,
        Loss::SquaredError,
    )
    .unwrap();
    let e = CpuBackend::new(&spec, Optimizer::Sgd, 4, Some(0))
        .err()
        .expect("0 threads refused");
    assert!(
        matches!(e, Error::InvalidConfig(_)) && e.to_string().contains("1 to"),
        "{e}"
    );
}

#[test]
fn absurd_thread_counts_are_a_clear_error() {
    let spec = ModelSpec::new(
        &[2, 3, 1],
        Activation::Relu,
        Activation::Sigmoid,
        Loss::SquaredError,
    )
    .unwrap();
    let e = CpuBackend::new(&spec, Optimizer::Sgd, 4, Some(1 << 20))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("--threads 1048576"), "{e}");
}

#[test]
fn a_model_too_large_for_host_memory_is_refused_before_allocation() {
    let spec = ModelSpec::new(
        &[200_000, 200_000, 10],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let e = CpuBackend::new(&spec, Optimizer::adam(), 32, Some(1))
        .err()
        .expect("refused");
    let msg = e.to_string();
    assert!(
        matches!(e, Error::DeviceLimit(_)) && msg.contains("bytes"),
        "{msg}"
    );
    // 4 floats per parameter (params, grads, m, v) of 40,002,200,010 parameters, plus the batch.
    assert!(
        msg.contains("40002200010 parameters") && msg.contains("needs 640163"),
        "{msg}"
    );
}

#[test]
fn a_batch_too_large_for_host_memory_is_refused_before_allocation() {
    let spec = ModelSpec::new(
        &[784, 128, 10],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let e = CpuBackend::new(&spec, Optimizer::Sgd, usize::MAX / 8, Some(1))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("bytes"), "{e}");
}

#[test]
fn divergence_stops_training_with_epoch_and_step() {
    let spec = ModelSpec::new(
        &[4, 8, 1],
        Activation::Identity,
        Activation::Identity,
        Loss::SquaredError,
    )
    .unwrap();
    let x = uniform(64 * 4, 10.0, 20.0, 1);
    let data = Dataset::from_values(x, 4, uniform(64, 0.0, 1.0, 2), 1).unwrap();
    let mut config = TrainConfig::default();
    config.lr = 1e6;
    config.batch_size = 16;
    config.epochs = 5;
    let cpu = CpuBackend::new(&spec, Optimizer::Sgd, 16, Some(2)).unwrap();
    let mut trainer = Trainer::new(Box::new(cpu), &spec.init_params(0), config).unwrap();
    match trainer.fit(&data, None, |_| {}) {
        Err(Error::Diverged { epoch, step, .. }) => assert!(epoch >= 1 && step >= 1),
        other => panic!("expected divergence, got {other:?}"),
    }
}
