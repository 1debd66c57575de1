//! The library's setup API: `Trainer::builder` places the model with the configuration's
//! optimizer and batch size; `Trainer::new` refuses a backend placed for another optimizer.

use gpumlp::{
    Activation, Dataset, Device, Error, Loss, ModelSpec, Optimizer, TrainConfig, Trainer,
};

fn spec() -> ModelSpec {
    ModelSpec::new(
        &[3, 7, 2],
        Activation::Tanh,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap()
}

/// 65 rows (not a multiple of the batch), 3 features, 2 classes.
fn data() -> Dataset {
    let rows = 65;
    let x: Vec<f32> = (0..rows * 3)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    let labels = (0..rows).map(|r| u32::from(x[r * 3] > 0.0)).collect();
    Dataset::from_classes(x, 3, labels, 2).unwrap()
}

fn config(optimizer: Optimizer) -> TrainConfig {
    let mut c = TrainConfig::default();
    c.lr = 0.01;
    c.optimizer = optimizer;
    c.batch_size = 16;
    c.epochs = 3;
    c.seed = 4;
    c
}

#[test]
fn the_builder_trains_as_placing_by_hand_with_the_same_configuration() {
    for device in [Device::Reference, Device::Cpu] {
        for opt in [
            Optimizer::Sgd,
            Optimizer::Momentum { mu: 0.9 },
            Optimizer::adam(),
        ] {
            let c = config(opt);
            let mut built = Trainer::builder(&spec())
                .device(device.clone())
                .config(c.clone())
                .init_seed(9)
                .build()
                .unwrap();
            assert!(built.placement().is_some(), "the builder says where");
            let by_hand = gpumlp::place(&device, &spec(), opt, c.batch_size).unwrap();
            let mut by_hand = Trainer::new(by_hand, &spec().init_params(9), c).unwrap();
            assert!(by_hand.placement().is_none());
            let a = built.fit(&data(), None, |_| {}).unwrap();
            let b = by_hand.fit(&data(), None, |_| {}).unwrap();
            let what = format!("{device:?} {opt:?}");
            assert_eq!(a.len(), 3, "{what}");
            assert_eq!(
                a.iter().map(|r| r.train_loss).collect::<Vec<_>>(),
                b.iter().map(|r| r.train_loss).collect::<Vec<_>>(),
                "{what}"
            );
            assert_eq!(built.params().unwrap(), by_hand.params().unwrap(), "{what}");
            // The optimizer's state is the configuration's: Adam keeps m and v, SGD none.
            let state = built.backend().optimizer_state().unwrap();
            let p = spec().param_count();
            state.check_shape(opt.state_slots(), p).unwrap();
        }
    }
}

#[test]
fn the_builder_starts_from_given_parameters_or_the_seed() {
    let params: Vec<f32> = (0..spec().param_count()).map(|i| i as f32 * 1e-3).collect();
    let mut t = Trainer::builder(&spec())
        .device(Device::Reference)
        .params(params.clone())
        .build()
        .unwrap();
    assert_eq!(t.params().unwrap(), params);
    // Without params or init_seed: initialized with the configuration's seed.
    let mut t = Trainer::builder(&spec())
        .device(Device::Reference)
        .config(config(Optimizer::Sgd))
        .build()
        .unwrap();
    assert_eq!(t.params().unwrap(), spec().init_params(4));
    // A batch larger than the data: sized for the data, trains full-batch.
    let mut big = config(Optimizer::Sgd);
    big.batch_size = 1 << 20;
    let mut t = Trainer::builder(&spec())
        .device(Device::Cpu)
        .config(big)
        .train_rows(65)
        .build()
        .unwrap();
    let r = t.fit(&data(), None, |_| {}).unwrap();
    assert_eq!(t.steps(), 3, "one step per epoch: {r:?}");
}

#[test]
fn the_builder_refuses_bad_input_with_typed_errors() {
    let wrong = Trainer::builder(&spec())
        .device(Device::Reference)
        .params(vec![0.0; 5])
        .build();
    assert!(
        matches!(wrong, Err(Error::Shape { .. })),
        "{:?}",
        wrong.err()
    );
    let mut zero = TrainConfig::default();
    zero.batch_size = 0;
    let r = Trainer::builder(&spec())
        .device(Device::Cpu)
        .config(zero)
        .build();
    assert!(matches!(r, Err(Error::InvalidConfig(_))), "{:?}", r.err());
}

#[test]
fn a_backend_placed_for_another_optimizer_is_refused() {
    for (placed, asked) in [
        (Optimizer::Sgd, Optimizer::adam()),
        (Optimizer::adam(), Optimizer::Momentum { mu: 0.5 }),
        (Optimizer::Momentum { mu: 0.5 }, Optimizer::Sgd),
    ] {
        for device in [Device::Reference, Device::Cpu] {
            let b = gpumlp::place(&device, &spec(), placed, 16).unwrap();
            let e = Trainer::new(b, &spec().init_params(0), config(asked))
                .err()
                .expect("refused");
            let msg = e.to_string();
            assert!(matches!(e, Error::InvalidConfig(_)), "{e:?}");
            assert!(
                msg.contains(placed.name()) && msg.contains(asked.name()),
                "{msg}"
            );
        }
    }
}
