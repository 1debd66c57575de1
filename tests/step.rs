//! Whole training steps and trajectories: the GPU backend against the CPU reference, on every
//! adapter, for every activation × loss pair that makes sense.

mod common;

use common::{
    gpus, one_hot, report, targets, uniform, GRAD_TOL, HIDDEN, OUTPUT_PAIRS, OUTPUT_TOL, PARAM_TOL,
};
use gpumlp::backend::Backend;
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::Optimizer;
use gpumlp::{
    Dataset, EpochReport, GpuBackend, GpuContext, GpuOptions, ReferenceBackend, Schedule,
    Tolerance, TrainConfig, Trainer,
};
use std::sync::Arc;

/// One step on both backends from the same parameters; compares everything.
fn compare_one_step(
    ctx: &Arc<GpuContext>,
    spec: &ModelSpec,
    opt: Optimizer,
    l2: f32,
    rows: usize,
    options: GpuOptions,
    worst: &mut [f32; 4],
) {
    let x = uniform(rows * spec.inputs(), -1.0, 1.0, 30);
    let t = targets(spec, rows, 31);
    let params = spec.init_params(32);
    let hyper = opt.hyper(0.1, 1, l2);
    let order: Vec<u32> = (0..rows as u32).collect();
    let mut options = options;
    options.capture_gradients = true;
    let mut gpu = GpuBackend::new(ctx.clone(), spec, opt, rows, options).unwrap();
    let mut cpu = ReferenceBackend::new(spec, opt).unwrap();
    let mut results = Vec::new();
    for b in [&mut gpu as &mut dyn Backend, &mut cpu] {
        b.set_params(&params).unwrap();
        let before = b.predict(&x, rows).unwrap();
        b.set_train_data(&x, &t, rows).unwrap();
        b.begin_epoch(&order).unwrap();
        b.step(0, rows, &hyper).unwrap();
        let stats = b.finish_epoch().unwrap();
        let grads = b.last_gradients().unwrap();
        let after = b.params().unwrap();
        let state = b.optimizer_state().unwrap();
        results.push((before, stats[0], grads, after, state));
    }
    let (g, c) = (&results[0], &results[1]);
    let what = format!(
        "{} ({}) {:?} {} l2={l2} {options:?}",
        ctx.info,
        spec.sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("-"),
        spec.activations,
        opt.name()
    );
    let outputs = OUTPUT_TOL.assert_close(&format!("{what}: outputs"), &g.0, &c.0);
    let loss = OUTPUT_TOL.assert_close(
        &format!("{what}: loss"),
        &[g.1.loss_sum as f32],
        &[c.1.loss_sum as f32],
    );
    assert_eq!(g.1.correct, c.1.correct, "{what}: correct count");
    let grads = GRAD_TOL.assert_close(&format!("{what}: gradients"), &g.2, &c.2);
    let params = PARAM_TOL.assert_close(&format!("{what}: updated parameters"), &g.3, &c.3);
    GRAD_TOL.assert_close(&format!("{what}: optimizer m"), &g.4.m, &c.4.m);
    GRAD_TOL.assert_close(&format!("{what}: optimizer v"), &g.4.v, &c.4.v);
    for (w, c) in worst.iter_mut().zip([&outputs, &loss, &grads, &params]) {
        *w = w.max(c.max_abs_diff);
    }
}

/// The schedules a test runs on every adapter: the default kernels for the adapter, and the
/// GPU matmul (shared-memory tiles, what real GPUs run) forced onto it, so that the kernel every
/// real GPU uses is tested on the software adapters too.
fn schedules() -> [(&'static str, GpuOptions); 2] {
    [
        ("default kernels", GpuOptions::default()),
        ("tiled GPU matmul", {
            let mut c = GpuOptions::default();
            c.force_tiled_matmul = true;
            c.fused_mlp = Some(false);
            c
        }),
    ]
}

#[test]
fn one_step_matches_reference_for_every_activation_and_loss() {
    for ctx in gpus() {
        for (name, options) in schedules() {
            let mut worst = [0.0f32; 4];
            for (i, (out_act, loss)) in OUTPUT_PAIRS.into_iter().enumerate() {
                for j in 0..2 {
                    let hidden = HIDDEN[(i + j * 3) % HIDDEN.len()];
                    let outputs = if loss == Loss::CrossEntropy || out_act == Activation::Softmax {
                        10
                    } else if i % 2 == 0 {
                        1
                    } else {
                        3
                    };
                    let spec = ModelSpec::with_activations(
                        &[7, 65, 63, outputs],
                        vec![hidden, HIDDEN[(i + j) % 5], out_act],
                        loss,
                    )
                    .unwrap();
                    compare_one_step(ctx, &spec, Optimizer::Sgd, 0.01, 33, options, &mut worst);
                }
            }
            report(format!("{} ({name}): largest |GPU − CPU| after one step: outputs {:.2e}, loss {:.2e}, gradients {:.2e}, parameters {:.2e}", ctx.info, worst[0], worst[1], worst[2], worst[3]));
        }
    }
}

#[test]
fn one_step_matches_reference_for_every_optimizer_fused_and_unfused() {
    let spec = ModelSpec::new(
        &[65, 63, 7],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    for ctx in gpus() {
        let mut worst = [0.0f32; 4];
        for opt in [
            Optimizer::Sgd,
            Optimizer::Momentum { mu: 0.9 },
            Optimizer::adam(),
        ] {
            for fused in [true, false] {
                let mut options = GpuOptions::default();
                options.fused = fused;
                compare_one_step(ctx, &spec, opt, 0.001, 1, options, &mut worst);
                compare_one_step(ctx, &spec, opt, 0.001, 257, options, &mut worst);
            }
        }
    }
}

#[test]
fn batch_spanning_many_workgroups_matches_reference() {
    let spec = ModelSpec::new(
        &[63, 257, 65, 10],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    for ctx in gpus() {
        let mut worst = [0.0f32; 4];
        for (_, options) in schedules() {
            let momentum = Optimizer::Momentum { mu: 0.9 };
            compare_one_step(ctx, &spec, momentum, 0.0, 1000, options, &mut worst);
        }
    }
    // Tall, thin gradients ([33, B]·[B, 64] and [65, B]·[B, 1]) at a large batch: split-K over
    // the batch with a fixed-order reduction.
    let thin = ModelSpec::new(
        &[32, 64, 1],
        Activation::Tanh,
        Activation::Sigmoid,
        Loss::BinaryCrossEntropy,
    )
    .unwrap();
    for ctx in gpus() {
        let mut worst = [0.0f32; 4];
        compare_one_step(
            ctx,
            &thin,
            Optimizer::adam(),
            0.01,
            4099,
            {
                let mut c = GpuOptions::default();
                c.fused_mlp = Some(false);
                c
            },
            &mut worst,
        );
        let tiled = schedules()[1].1;
        compare_one_step(ctx, &thin, Optimizer::adam(), 0.01, 4099, tiled, &mut worst);
        report(format!(
            "{}: split-K gradients at batch 4099: largest |GPU − CPU| gradients {:.2e}",
            ctx.info, worst[2]
        ));
    }
}

/// Widths that are multiples of 4 run the subgroup matmul on CPU adapters with 8-lane
/// subgroups (lavapipe): every form, the fused optimizer, split-K over a large batch, batch 1.
#[test]
fn aligned_widths_on_the_subgroup_matmul_match_reference() {
    let mut layered = GpuOptions::default();
    layered.fused_mlp = Some(false);
    let cases = [
        (
            &[64, 128, 128, 12][..],
            Activation::Relu,
            Activation::Softmax,
            Loss::CrossEntropy,
            257,
        ),
        (
            &[8, 36, 4][..],
            Activation::LeakyRelu(0.01),
            Activation::Identity,
            Loss::SquaredError,
            1,
        ),
        (
            &[32, 64, 4][..],
            Activation::Tanh,
            Activation::Sigmoid,
            Loss::BinaryCrossEntropy,
            4099,
        ),
    ];
    for ctx in gpus() {
        let mut worst = [0.0f32; 4];
        for (sizes, hidden, out, loss, rows) in cases {
            let spec = ModelSpec::new(sizes, hidden, out, loss).unwrap();
            // (Adam's first step, p − lr·g/(|g| + ε), turns rounding-level differences in
            // near-zero gradients into visible parameter differences; its epilogue is shared
            // with the kernels the other tests cover.)
            for opt in [Optimizer::Sgd, Optimizer::Momentum { mu: 0.9 }] {
                compare_one_step(ctx, &spec, opt, 0.01, rows, layered, &mut worst);
            }
        }
        report(format!(
            "{}: aligned widths (subgroup matmul where available): largest |GPU − CPU| outputs {:.2e}, loss {:.2e}, gradients {:.2e}, parameters {:.2e}",
            ctx.info, worst[0], worst[1], worst[2], worst[3]
        ));
    }
}

fn trajectory(backend: Box<dyn Backend>, spec: &ModelSpec, data: &Dataset) -> (Vec<f64>, Vec<f32>) {
    let mut config = TrainConfig::default();
    config.lr = 0.05;
    config.optimizer = Optimizer::Momentum { mu: 0.9 };
    config.l2 = 1e-3;
    config.batch_size = 16;
    config.epochs = 10;
    config.seed = 7;
    config.shuffle = true;
    config.schedule = Schedule::Exponential { gamma: 0.9 };
    let mut trainer = Trainer::new(backend, &spec.init_params(3), config).unwrap();
    let reports = trainer.fit(data, None, |_| {}).unwrap();
    assert_eq!(
        trainer.steps(),
        50,
        "80 rows in batches of 16 for 10 epochs"
    );
    (
        reports.iter().map(|r| r.train_loss).collect(),
        trainer.params().unwrap(),
    )
}

#[test]
fn fifty_step_trajectory_matches_reference_and_reruns_bit_identically() {
    // Awkward widths (the blocked matmul on CPU adapters), then widths that are multiples of 4
    // (the subgroup matmul where the adapter has one).
    for sizes in [[7, 65, 63, 3], [8, 64, 36, 4]] {
        let spec = ModelSpec::new(
            &sizes,
            Activation::Tanh,
            Activation::Softmax,
            Loss::CrossEntropy,
        )
        .unwrap();
        fifty_step_case(&spec);
    }
}

fn fifty_step_case(spec: &ModelSpec) {
    let (inp, classes) = (spec.inputs(), spec.outputs());
    let rows = 80;
    let x = uniform(rows * inp, -1.0, 1.0, 40);
    let labels: Vec<u32> = x
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
    let (cpu_loss, cpu_params) = trajectory(
        Box::new(ReferenceBackend::new(spec, Optimizer::Momentum { mu: 0.9 }).unwrap()),
        spec,
        &data,
    );
    assert!(
        cpu_loss.last().unwrap() < &(cpu_loss[0] * 0.8),
        "the reference should learn: {cpu_loss:?}"
    );
    for ctx in gpus() {
        let place_with = |steps_per_submit: usize| {
            let mut options = GpuOptions::default();
            options.steps_per_submit = steps_per_submit;
            let momentum = Optimizer::Momentum { mu: 0.9 };
            Box::new(GpuBackend::new(ctx.clone(), spec, momentum, 16, options).unwrap())
        };
        let place = || place_with(GpuOptions::default().steps_per_submit);
        let (gpu_loss, gpu_params) = trajectory(place(), spec, &data);
        let gl: Vec<f32> = gpu_loss.iter().map(|&v| v as f32).collect();
        let cl: Vec<f32> = cpu_loss.iter().map(|&v| v as f32).collect();
        let l = Tolerance::new(1e-3, 1e-5).assert_close(
            &format!("{}: 50-step losses", ctx.info),
            &gl,
            &cl,
        );
        let p = Tolerance::new(1e-3, 1e-4).assert_close(
            &format!("{}: params after 50 steps", ctx.info),
            &gpu_params,
            &cpu_params,
        );
        report(format!(
            "{}: 50-step trajectory {:?}: largest |GPU − CPU| loss {:.2e}, parameters {:.2e}",
            ctx.info, spec.sizes, l.max_abs_diff, p.max_abs_diff
        ));
        let (again_loss, again_params) = trajectory(place(), spec, &data);
        assert_eq!(
            again_loss, gpu_loss,
            "{}: rerun losses must be bit-identical",
            ctx.info
        );
        let same = again_params
            .iter()
            .zip(&gpu_params)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{}: rerun parameters must be bit-identical", ctx.info);
        // Steps queued several to a submit (each with its own uniform slot) run exactly as
        // steps submitted one by one: 5 steps an epoch against queues of 1 and 2 (full
        // queues mid-epoch) and the default (flushed at the epoch's end).
        for steps_per_submit in [1, 2] {
            let (loss, params) = trajectory(place_with(steps_per_submit), spec, &data);
            let same = params
                .iter()
                .zip(&gpu_params)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                loss == gpu_loss && same,
                "{}: {steps_per_submit} step(s) per submit changed the trajectory",
                ctx.info
            );
        }
    }
}

/// 83 rows in batches of 16: five full batches and a partial one of 3 rows per epoch.
const PARTIAL_ROWS: usize = 83;
const PARTIAL_EPOCHS: usize = 4;

fn partial_batch_data() -> (ModelSpec, Dataset) {
    let spec = ModelSpec::new(
        &[7, 65, 3],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let x = uniform(PARTIAL_ROWS * 7, -1.0, 1.0, 60);
    let labels: Vec<u32> = x
        .chunks(7)
        .map(|r| {
            if r[0] - r[3] > 0.2 {
                0
            } else if r[1] + r[5] > 0.0 {
                1
            } else {
                2
            }
        })
        .collect();
    (spec, Dataset::from_classes(x, 7, labels, 3).unwrap())
}

/// Step decay, halving every 2 epochs: η = 0.1, 0.1, 0.05, 0.05.
const STEP_DECAY: Schedule = Schedule::Step {
    every: 2,
    gamma: 0.5,
};

/// A Trainer run over the partial-batch data: per-epoch reports and the final parameters.
fn partial_batch_run(
    backend: Box<dyn Backend>,
    spec: &ModelSpec,
    data: &Dataset,
    shuffle: bool,
) -> (Vec<EpochReport>, Vec<f32>) {
    let mut config = TrainConfig::default();
    config.lr = 0.1;
    config.optimizer = Optimizer::Momentum { mu: 0.9 };
    config.l2 = 1e-3;
    config.batch_size = 16;
    config.epochs = PARTIAL_EPOCHS;
    config.seed = 11;
    config.shuffle = shuffle;
    config.schedule = STEP_DECAY;
    let mut trainer = Trainer::new(backend, &spec.init_params(5), config).unwrap();
    let reports = trainer.fit(data, None, |_| {}).unwrap();
    assert_eq!(
        trainer.steps(),
        6 * PARTIAL_EPOCHS as u64,
        "83 rows in batches of 16: 6 steps an epoch, the last of 3 rows"
    );
    let lrs: Vec<f32> = reports.iter().map(|r| r.lr).collect();
    assert_eq!(lrs, vec![0.1, 0.1, 0.05, 0.05], "step decay every 2 epochs");
    (reports, trainer.params().unwrap())
}

fn losses(reports: &[EpochReport]) -> Vec<f32> {
    reports.iter().map(|r| r.train_loss as f32).collect()
}

fn bit_identical(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The Trainer's shuffle, its last partial batch (mean over 3 rows, not 16) and the step-decay
/// schedule, on both backends: per-epoch losses, accuracies and final parameters agree.
#[test]
fn trainer_with_partial_batches_shuffle_and_step_decay_matches_reference() {
    let (spec, data) = partial_batch_data();
    let cpu = || Box::new(ReferenceBackend::new(&spec, Optimizer::Momentum { mu: 0.9 }).unwrap());
    for shuffle in [true, false] {
        let (cpu_reports, cpu_params) = partial_batch_run(cpu(), &spec, &data, shuffle);
        assert!(
            cpu_reports.last().unwrap().train_loss < cpu_reports[0].train_loss,
            "the reference should learn: {cpu_reports:?}"
        );
        for ctx in gpus() {
            let gpu = GpuBackend::new(
                ctx.clone(),
                &spec,
                Optimizer::Momentum { mu: 0.9 },
                16,
                GpuOptions::default(),
            )
            .unwrap();
            let (gpu_reports, gpu_params) = partial_batch_run(Box::new(gpu), &spec, &data, shuffle);
            let what = format!("{}: 83 rows, batch 16, shuffle {shuffle}", ctx.info);
            let l = Tolerance::new(1e-3, 1e-5).assert_close(
                &format!("{what}: per-epoch losses"),
                &losses(&gpu_reports),
                &losses(&cpu_reports),
            );
            for (g, c) in gpu_reports.iter().zip(&cpu_reports) {
                // A row whose top two outputs are within rounding may flip: allow one row.
                let (g, c) = (g.train_accuracy.unwrap(), c.train_accuracy.unwrap());
                assert!(
                    (g - c).abs() <= 1.0 / PARTIAL_ROWS as f64 + 1e-12,
                    "{what}: accuracy {g} vs {c}"
                );
            }
            let p = Tolerance::new(1e-3, 1e-4).assert_close(
                &format!("{what}: final parameters"),
                &gpu_params,
                &cpu_params,
            );
            report(format!(
                "{what}, step decay: largest |GPU − CPU| loss {:.2e}, parameters {:.2e}",
                l.max_abs_diff, p.max_abs_diff
            ));
        }
    }
}

/// Places a fresh model on one backend.
type Place<'a> = Box<dyn Fn() -> Box<dyn Backend> + 'a>;

/// Shuffling changes the trajectory (the batches hold other rows), and each setting is
/// deterministic: a rerun on the same backend is bit-identical.
#[test]
fn shuffle_changes_the_trajectory_and_each_setting_reruns_bit_identically() {
    let (spec, data) = partial_batch_data();
    let mut backends: Vec<(String, Place)> = vec![(
        "cpu".into(),
        Box::new(|| {
            Box::new(ReferenceBackend::new(&spec, Optimizer::Momentum { mu: 0.9 }).unwrap())
        }),
    )];
    for ctx in gpus() {
        let spec = spec.clone();
        backends.push((
            ctx.info.to_string(),
            Box::new(move || {
                Box::new(
                    GpuBackend::new(
                        ctx.clone(),
                        &spec,
                        Optimizer::Momentum { mu: 0.9 },
                        16,
                        GpuOptions::default(),
                    )
                    .unwrap(),
                )
            }),
        ));
    }
    for (name, place) in &backends {
        let (on_reports, on_params) = partial_batch_run(place(), &spec, &data, true);
        let (off_reports, off_params) = partial_batch_run(place(), &spec, &data, false);
        let changed = on_params
            .iter()
            .zip(&off_params)
            .filter(|(a, b)| (*a - *b).abs() > 1e-4)
            .count();
        assert!(
            changed > on_params.len() / 10,
            "{name}: shuffle on and off should train differently, but only {changed} of {} \
             parameters differ by more than 1e-4",
            on_params.len()
        );
        assert_ne!(
            losses(&on_reports),
            losses(&off_reports),
            "{name}: shuffle on and off gave the same losses"
        );
        for (shuffle, reports, params) in [
            (true, &on_reports, &on_params),
            (false, &off_reports, &off_params),
        ] {
            let (again_reports, again_params) = partial_batch_run(place(), &spec, &data, shuffle);
            let bits =
                |r: &[EpochReport]| r.iter().map(|e| e.train_loss.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&again_reports),
                bits(reports),
                "{name}: shuffle {shuffle}: rerun losses differ"
            );
            assert!(
                bit_identical(&again_params, params),
                "{name}: shuffle {shuffle}: rerun parameters differ"
            );
        }
    }
}

#[test]
fn evaluate_and_predict_match_reference_in_chunks() {
    let spec = ModelSpec::new(
        &[7, 63, 10],
        Activation::Sigmoid,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let rows = 300;
    let x = uniform(rows * 7, -1.0, 1.0, 50);
    let t = one_hot(rows, 10, 51);
    let params = spec.init_params(52);
    let mut cpu = ReferenceBackend::new(&spec, Optimizer::Sgd).unwrap();
    cpu.set_params(&params).unwrap();
    let want_y = cpu.predict(&x, rows).unwrap();
    let want_e = cpu.evaluate(&x, &t, rows).unwrap();
    for ctx in gpus() {
        // max batch 64: five chunks, the last partial
        let mut gpu = GpuBackend::new(
            ctx.clone(),
            &spec,
            Optimizer::Sgd,
            64,
            GpuOptions::default(),
        )
        .unwrap();
        gpu.set_params(&params).unwrap();
        let y = gpu.predict(&x, rows).unwrap();
        OUTPUT_TOL.assert_close(&format!("{}: predict", ctx.info), &y, &want_y);
        let e = gpu.evaluate(&x, &t, rows).unwrap();
        assert_eq!(e.samples, 300);
        assert_eq!(e.correct, want_e.correct);
        assert!(
            (e.loss_sum - want_e.loss_sum).abs() < 1e-3 * want_e.loss_sum.abs(),
            "{e:?} vs {want_e:?}"
        );
    }
}

#[test]
fn device_memory_does_not_grow_across_epochs_or_new_data() {
    let spec = ModelSpec::new(
        &[7, 65, 3],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let x = uniform(300 * 7, -1.0, 1.0, 70);
    let labels: Vec<u32> = (0..300).map(|i| i % 3).collect();
    let data = Dataset::from_classes(x, 7, labels, 3).unwrap();
    for ctx in gpus() {
        let gpu = GpuBackend::new(
            ctx.clone(),
            &spec,
            Optimizer::adam(),
            32,
            GpuOptions::default(),
        )
        .unwrap();
        let placed = gpu.allocated_bytes();
        // parameters, Adam's two slots, and per layer a, z, δ for 32 rows, at least
        let p = spec.param_count() as u64 * 4;
        assert!(placed >= 3 * p + 3 * 32 * (65 + 3) * 4, "{placed} bytes");
        // Trained with the optimizer it was placed with (Trainer::new refuses another).
        let mut trainer = Trainer::new(Box::new(gpu), &spec.init_params(0), {
            let mut c = TrainConfig::default();
            c.epochs = 1;
            c.optimizer = Optimizer::adam();
            c
        })
        .unwrap();
        trainer.set_train_data(&data).unwrap();
        trainer.run_epoch(None).unwrap();
        let after_first = trainer.backend().allocated_bytes();
        for _ in 0..4 {
            trainer.run_epoch(Some(&data)).unwrap();
        }
        assert_eq!(
            trainer.backend().allocated_bytes(),
            after_first,
            "{}: memory grew across epochs",
            ctx.info
        );
        trainer.set_train_data(&data).unwrap();
        assert_eq!(
            trainer.backend().allocated_bytes(),
            after_first,
            "{}: replacing the data leaked its buffers",
            ctx.info
        );
        report(format!(
            "{}: 7-65-3 with Adam, batch 32, 300 rows: {after_first} bytes allocated",
            ctx.info
        ));
    }
}

#[test]
fn micro_batches_with_gradient_accumulation_match_one_big_batch() {
    let spec = ModelSpec::new(
        &[7, 65, 63, 10],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    for ctx in gpus() {
        let mut worst = [0.0f32; 4];
        for (opt, micro, rows) in [
            (Optimizer::adam(), 7, 33),
            (Optimizer::Sgd, 64, 257),
            (Optimizer::Momentum { mu: 0.9 }, 1, 5),
        ] {
            let mut options = GpuOptions::default();
            options.micro_batch = Some(micro);
            compare_one_step(ctx, &spec, opt, 0.01, rows, options, &mut worst);
        }
        report(format!(
            "{}: micro-batched steps: largest |GPU − CPU| gradients {:.2e}, parameters {:.2e}",
            ctx.info, worst[2], worst[3]
        ));
    }
}

/// A micro-batched step followed by one that fits a single micro-batch (an epoch's short last
/// batch): the second must not add the first step's accumulated gradient again.
#[test]
fn a_step_within_one_micro_batch_after_a_micro_batched_step_matches_reference() {
    let spec = ModelSpec::new(
        &[7, 65, 10],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let rows = 20;
    let x = uniform(rows * spec.inputs(), -1.0, 1.0, 60);
    let t = targets(&spec, rows, 61);
    let opt = Optimizer::Sgd;
    let order: Vec<u32> = (0..rows as u32).collect();
    let run = |b: &mut dyn Backend| {
        b.set_params(&spec.init_params(62)).unwrap();
        b.set_train_data(&x, &t, rows).unwrap();
        b.begin_epoch(&order).unwrap();
        for (s, (start, len)) in [(0, 16), (16, 4), (0, 3), (3, 16)].into_iter().enumerate() {
            b.step(start, len, &opt.hyper(0.1, s as u64 + 1, 0.01))
                .unwrap();
        }
        b.finish_epoch().unwrap();
        b.params().unwrap()
    };
    let want = run(&mut ReferenceBackend::new(&spec, opt).unwrap());
    for ctx in gpus() {
        let mut options = GpuOptions::default();
        options.micro_batch = Some(8);
        let mut gpu = GpuBackend::new(ctx.clone(), &spec, opt, 16, options).unwrap();
        let got = run(&mut gpu);
        PARAM_TOL.assert_close(
            &format!("{}: micro-batched, then single-micro-batch steps", ctx.info),
            &got,
            &want,
        );
    }
}

#[test]
fn fully_fused_narrow_step_matches_reference_when_scheduled() {
    let spec = ModelSpec::new(
        &[64, 128, 128, 10],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    for ctx in gpus() {
        let mut options = GpuOptions::default();
        options.fused_mlp = Some(true);
        let g = GpuBackend::new(ctx.clone(), &spec, Optimizer::Sgd, 300, options).unwrap();
        assert!(
            g.uses_fused_mlp(),
            "{}: 64-128-128-10 is eligible for the fused step",
            ctx.info
        );
        assert_eq!(g.dispatches_per_step(), 2);
        let mut worst = [0.0f32; 4];
        compare_one_step(
            ctx,
            &spec,
            Optimizer::Momentum { mu: 0.9 },
            0.01,
            300,
            options,
            &mut worst,
        );
        let wide = ModelSpec::new(
            &[64, 129, 10],
            Activation::Relu,
            Activation::Softmax,
            Loss::CrossEntropy,
        )
        .unwrap();
        let g = GpuBackend::new(ctx.clone(), &wide, Optimizer::Sgd, 300, options).unwrap();
        assert!(!g.uses_fused_mlp(), "a 129-wide layer is not eligible");
    }
}
