//! Bad input gets a clear error, never a panic.

mod common;

use std::sync::Arc;

use common::gpus;
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::Optimizer;
use gpumlp::{
    Backend, CpuBackend, Dataset, Error, GpuBackend, GpuContext, GpuOptions, ReferenceBackend,
    TrainConfig, Trainer,
};

fn spec() -> ModelSpec {
    ModelSpec::new(
        &[3, 4, 2],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap()
}

fn backends(spec: &ModelSpec) -> Vec<Box<dyn Backend>> {
    let mut v: Vec<Box<dyn Backend>> = vec![
        Box::new(ReferenceBackend::new(spec, Optimizer::Sgd).unwrap()),
        Box::new(CpuBackend::new(spec, Optimizer::Sgd, 8, Some(2)).unwrap()),
    ];
    for ctx in gpus() {
        v.push(Box::new(
            GpuBackend::new(ctx.clone(), spec, Optimizer::Sgd, 8, GpuOptions::default()).unwrap(),
        ));
    }
    v
}

#[test]
fn invalid_models_are_refused() {
    let e = ModelSpec::new(
        &[3, 0, 2],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap_err();
    assert!(e.to_string().contains("is 0"), "{e}");
    let e = ModelSpec::new(
        &[3],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidModel(_)), "{e}");
    let e = ModelSpec::new(
        &[3, 2],
        Activation::Relu,
        Activation::Sigmoid,
        Loss::CrossEntropy,
    )
    .unwrap_err();
    assert!(e.to_string().contains("softmax"), "{e}");
    let e = ModelSpec::new(
        &[3, 2],
        Activation::Relu,
        Activation::Softmax,
        Loss::BinaryCrossEntropy,
    )
    .unwrap_err();
    assert!(e.to_string().contains("sigmoid"), "{e}");
    let e = ModelSpec::new(
        &[3, 4, 2],
        Activation::Softmax,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap_err();
    assert!(e.to_string().contains("output layer"), "{e}");
    assert!("swish".parse::<Activation>().is_err());
    assert!("hinge".parse::<Loss>().is_err());
}

#[test]
fn bad_data_is_refused_on_every_backend() {
    let spec = spec();
    assert!(matches!(
        Dataset::from_classes(vec![], 3, vec![], 2),
        Err(Error::InvalidData(_))
    ));
    let e = Dataset::from_classes(vec![0.0, f32::NAN, 0.0], 3, vec![0], 2).unwrap_err();
    assert!(matches!(e, Error::NonFinite { row: 0, col: 1, .. }), "{e}");
    let e = Dataset::from_classes(vec![0.0; 6], 3, vec![0, 2], 2).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LabelOutOfRange {
                label: 2,
                index: 1,
                ..
            }
        ),
        "{e}"
    );
    let wrong_width = Dataset::from_classes(vec![0.0; 8], 4, vec![0, 1], 2).unwrap();
    let wrong_targets = Dataset::from_values(vec![0.0; 6], 3, vec![0.0; 6], 3).unwrap();
    let too_many_classes = Dataset::from_classes(vec![0.0; 6], 3, vec![0, 4], 5).unwrap();
    for b in backends(&spec) {
        let name = b.name();
        let mut t = Trainer::new(b, &spec.init_params(0), TrainConfig::default()).unwrap();
        let e = t.fit(&wrong_width, None, |_| {}).unwrap_err();
        assert!(e.to_string().contains("input width"), "{name}: {e}");
        let e = t.fit(&wrong_targets, None, |_| {}).unwrap_err();
        assert!(e.to_string().contains("target width"), "{name}: {e}");
        let e = t.fit(&too_many_classes, None, |_| {}).unwrap_err();
        assert!(
            matches!(e, Error::LabelOutOfRange { label: 4, .. }),
            "{name}: {e}"
        );
        let e = t
            .backend()
            .predict(&[0.0, f32::INFINITY, 0.0], 1)
            .unwrap_err();
        assert!(matches!(e, Error::NonFinite { .. }), "{name}: {e}");
        let e = t.backend().predict(&[0.0; 5], 2).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{name}: {e}");
        let e = t.backend().set_params(&[0.0; 3]).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }), "{name}: {e}");
    }
}

fn bad_configs_are_refused(ctx: &Arc<GpuContext>) {
    let spec = spec();
    let cpu =
        || Box::new(ReferenceBackend::new(&spec, Optimizer::Sgd).unwrap()) as Box<dyn Backend>;
    let p = spec.init_params(0);
    for config in [
        {
            let mut c = TrainConfig::default();
            c.batch_size = 0;
            c
        },
        {
            let mut c = TrainConfig::default();
            c.lr = f32::NAN;
            c
        },
        {
            let mut c = TrainConfig::default();
            c.lr = -1.0;
            c
        },
        {
            let mut c = TrainConfig::default();
            c.l2 = -0.1;
            c
        },
        {
            let mut c = TrainConfig::default();
            c.optimizer = Optimizer::Momentum { mu: 1.5 };
            c
        },
    ] {
        assert!(matches!(
            Trainer::new(cpu(), &p, config),
            Err(Error::InvalidConfig(_))
        ));
    }
    assert!("step:0:0.5".parse::<gpumlp::Schedule>().is_err());
    assert!("cosine".parse::<gpumlp::Schedule>().is_err());
    let e = GpuBackend::new(ctx.clone(), &spec, Optimizer::Sgd, 0, GpuOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
}

fn a_batch_over_the_binding_limit_runs_as_micro_batches_and_too_many_parameters_are_refused(
    ctx: &Arc<GpuContext>,
) {
    let spec = ModelSpec::new(
        &[3, 1 << 16, 2],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let limit = ctx.limits.max_storage_buffer_binding_size;
    let fits = (limit / (4 << 16)) as usize;
    let g = GpuBackend::new(
        ctx.clone(),
        &spec,
        Optimizer::Sgd,
        fits + 1,
        GpuOptions::default(),
    )
    .unwrap();
    assert_eq!(
        g.micro_batch(),
        fits,
        "{}: layer 1 [batch × 65536] fits {fits} rows",
        ctx.info
    );
    let huge = ModelSpec::new(
        &[1 << 13, 1 << 13, 2],
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap();
    let e = GpuBackend::new(ctx.clone(), &huge, Optimizer::Sgd, 1, GpuOptions::default())
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(matches!(e, Error::DeviceLimit(_)), "{msg}");
    assert!(
        msg.contains("parameters") && msg.contains("fewer or narrower layers"),
        "{msg}"
    );
    assert!(
        msg.contains("layer 1 (8192x8192"),
        "names the largest layer: {msg}"
    );
}

fn divergence_stops_training_naming_epoch_and_step(ctx: &Arc<GpuContext>) {
    let spec = ModelSpec::new(
        &[1, 1],
        Activation::Identity,
        Activation::Identity,
        Loss::SquaredError,
    )
    .unwrap();
    let x: Vec<f32> = (0..16).map(|i| i as f32 * 100.0).collect();
    let data = Dataset::from_values(x.clone(), 1, x, 1).unwrap();
    let mut all: Vec<Box<dyn Backend>> = vec![
        Box::new(ReferenceBackend::new(&spec, Optimizer::Sgd).unwrap()),
        Box::new(CpuBackend::new(&spec, Optimizer::Sgd, 8, Some(2)).unwrap()),
    ];
    {
        all.push(Box::new(
            GpuBackend::new(ctx.clone(), &spec, Optimizer::Sgd, 4, GpuOptions::default()).unwrap(),
        ));
    }
    for b in all {
        let name = b.name();
        let mut config = TrainConfig::default();
        config.lr = 10.0;
        config.batch_size = 4;
        config.epochs = 50;
        config.shuffle = false;
        let mut t = Trainer::new(b, &[0.5, 0.0], config).unwrap();
        match t.fit(&data, None, |_| {}) {
            Err(Error::Diverged { epoch, step, .. }) => {
                assert!(epoch >= 1 && (1..=4).contains(&step), "{name}")
            }
            other => panic!("{name}: expected divergence, got {other:?}"),
        }
    }
}

common::on_each_adapter!(
    bad_configs_are_refused,
    a_batch_over_the_binding_limit_runs_as_micro_batches_and_too_many_parameters_are_refused,
    divergence_stops_training_naming_epoch_and_step,
);
