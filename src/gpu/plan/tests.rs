use super::*;
use crate::gpu::profiles::{profile, PROFILE_NAMES};
use crate::model::{Activation, Loss};

fn spec(sizes: &[usize]) -> ModelSpec {
    ModelSpec::new(
        sizes,
        Activation::Relu,
        Activation::Softmax,
        Loss::CrossEntropy,
    )
    .unwrap()
}

fn caps(name: &str) -> Capabilities {
    profile(name).unwrap_or_else(|| panic!("no profile {name}"))
}

fn kernels_of(p: &StepPlan) -> Vec<&'static str> {
    p.matmuls.iter().map(|m| m.kernel).collect()
}

#[test]
fn every_profile_plans_every_suite_shape_within_its_limits() {
    let suite: &[(&[usize], usize)] = &[
        (&[784, 512, 512, 10], 1024),
        (&[64, 128, 128, 10], 4096),
        (&[2, 16, 2], 256),
        (&[784, 128, 10], 128),
        (&[1024, 4096, 4096, 1024], 8192),
        (&[7, 63, 65, 1], 1),
    ];
    for name in PROFILE_NAMES {
        let c = caps(name);
        for (sizes, batch) in suite {
            let p = plan(&spec(sizes), *batch, &c, &GpuOptions::default()).unwrap();
            let forms = 3 * (sizes.len() - 1) - 1;
            assert_eq!(p.matmuls.len(), forms, "{name} {sizes:?}");
            for m in &p.matmuls {
                assert!(m.invocations <= c.max_invocations, "{name}: {m:?}");
                assert!(m.tile_m > 0 && m.tile_n > 0 && m.outputs_per_invocation > 0);
                assert!(m.split_k >= 1 && m.split_k <= 64, "{name}: {m:?}");
                assert!(m.workgroups.0 <= c.max_workgroups_per_dimension);
            }
            assert!(p.micro_batch >= 1 && p.micro_batch <= (*batch).max(1));
            if p.step == "fused-mlp" {
                let f = fused_shape(&spec(sizes), *batch, &c, None).unwrap();
                assert_eq!(f.tile, p.fused_tile_rows, "{name} {sizes:?}");
                // the two tiles and the W slab, as the shader declares them
                let stride = sizes.iter().max().unwrap().next_multiple_of(4);
                let smem = 2 * f.tile * stride * 4 + f.w_slab * f.w_row * 16;
                assert_eq!(smem, f.workgroup_bytes, "{name} {sizes:?}");
                assert!(
                    smem as u32 <= c.max_workgroup_storage,
                    "{name} {sizes:?}: {smem}"
                );
                assert!(
                    f.w_row * 4 >= stride && f.w_row.is_multiple_of(8),
                    "{name}: {f:?}"
                );
                assert!(f.workgroup <= c.max_invocations && f.tile <= f.workgroup as usize);
            }
        }
    }
}

#[test]
fn every_adapter_runs_the_gemm_family_by_shape() {
    let s = spec(&[784, 512, 512, 10]);
    for name in PROFILE_NAMES {
        let p = plan(&s, 1024, &caps(name), &GpuOptions::default()).unwrap();
        assert!(
            kernels_of(&p).iter().all(|k| *k == "matmul_gemm"),
            "{name}: {:?}",
            kernels_of(&p)
        );
        let last = p
            .matmuls
            .iter()
            .find(|m| m.layer == 2 && m.form == "forward")
            .unwrap();
        assert_eq!(
            (last.tile_m, last.tile_n),
            (64, 16),
            "{name}: the narrow tile for 10 outputs"
        );
        assert!(p.matmuls.iter().all(|m| m.choice == "static"));
        assert!(p.tuning.is_none() && p.static_step.is_none());
    }
    // --tiled forces the shared-memory kernel...
    let tiled = GpuOptions {
        force_tiled_matmul: true,
        ..Default::default()
    };
    let forced = plan(&s, 1024, &caps("lavapipe"), &tiled).unwrap();
    assert!(kernels_of(&forced).iter().all(|k| *k == "matmul_tiled"));
    // ... and a forced GEMM tile runs everywhere.
    let gemm = GpuOptions {
        force_gemm: Some(crate::gpu::kernels::GemmConfig::new(128, 128, 8, 8, 8)),
        ..Default::default()
    };
    let forced = plan(&s, 1024, &caps("llvmpipe"), &gemm).unwrap();
    assert!(forced
        .matmuls
        .iter()
        .all(|m| m.kernel == "matmul_gemm" && m.tile_m == 128));
    // A device too small for any GEMM tile runs matmul_tiled.
    let mut tiny = caps("nvidia-h100");
    tiny.max_workgroup_storage = 4096;
    let p = plan(&s, 1024, &tiny, &GpuOptions::default()).unwrap();
    assert!(kernels_of(&p).iter().all(|k| *k == "matmul_tiled"));
}

#[test]
fn tuning_is_on_by_default_only_on_hardware_gpus() {
    for name in PROFILE_NAMES {
        let c = caps(name);
        let software = c.class == DeviceClass::Software;
        assert_eq!(tune_by_default(&c, Tune::Auto), !software, "{name}");
        assert!(tune_by_default(&c, Tune::On) && !tune_by_default(&c, Tune::Off));
    }
}

#[test]
fn candidates_include_the_static_choice_and_fit_the_device() {
    let support_of = |c: &Capabilities| kernel_support(c, &GpuOptions::default());
    for name in PROFILE_NAMES {
        let c = caps(name);
        let support = support_of(&c);
        for (_, _, mode, dims, _) in step_matmuls(&spec(&[784, 512, 512, 10]), 1024) {
            let cands = matmul_candidates(&c, &support, mode, &dims);
            assert_eq!(cands[0], matmul_config(&support, mode, &dims).variant);
            for v in &cands {
                if let MatmulVariant::Gemm(g) = v {
                    assert!(gemm_fits(g, &c), "{name}: {g}");
                }
            }
            let blocked = cands.contains(&MatmulVariant::Blocked);
            assert_eq!(blocked, c.class == DeviceClass::Software, "{name}");
            assert!(cands.len() >= 2, "{name}: nothing to choose from");
        }
    }
}

#[test]
fn a_tuning_overrides_the_static_choice_and_says_so() {
    let s = spec(&[784, 512, 512, 10]);
    let c = caps("nvidia-h100");
    let options = GpuOptions::default();
    let (_, _, mode, dims, _) = step_matmuls(&s, 1024)[0];
    let big = MatmulVariant::Gemm(GemmConfig::new(128, 128, 8, 8, 8));
    let mut tuning = Tuning::default();
    tuning.matmuls.insert(MatmulKey::of(mode, &dims), big);
    tuning.fused_mlp = Some(false);
    let p = plan_tuned(&s, 1024, &c, &options, Some(&tuning)).unwrap();
    let first = &p.matmuls[0];
    assert_eq!(
        (first.choice, first.tile_m, first.tile_n),
        ("tuned", 128, 128)
    );
    assert_eq!(first.static_kernel.as_deref(), Some("gemm:64x64x8/8x4"));
    assert!(p.matmuls[1..].iter().all(|m| m.choice == "static"));
    assert!(p.tuning.is_some());
    // Forcing a kernel wins over the tuning.
    let forced = GpuOptions {
        force_tiled_matmul: true,
        ..Default::default()
    };
    let p = plan_tuned(&s, 1024, &c, &forced, Some(&tuning)).unwrap();
    assert!(p.tuning.is_none() && p.matmuls[0].kernel == "matmul_tiled");
    // The tuner's step choice replaces the static one.
    let narrow = spec(&[64, 128, 128, 10]);
    assert_eq!(plan(&narrow, 4096, &c, &options).unwrap().step, "fused-mlp");
    let p = plan_tuned(&narrow, 4096, &c, &options, Some(&tuning)).unwrap();
    assert_eq!((p.step, p.static_step), ("layered", Some("fused-mlp")));
}

#[test]
fn variants_print_and_parse_back() {
    for v in [
        MatmulVariant::Tiled,
        MatmulVariant::Blocked,
        MatmulVariant::Gemm(GemmConfig::NARROW),
    ] {
        assert_eq!(v.to_string().parse::<MatmulVariant>(), Ok(v));
    }
    assert!("gemm:3x3x3/3x3".parse::<MatmulVariant>().is_err());
    assert!("subgroup".parse::<MatmulVariant>().is_err());
}

#[test]
fn the_fused_step_fills_the_device_where_it_is_chosen() {
    let s = spec(&[64, 128, 128, 10]);
    let h100 = plan(&s, 4096, &caps("nvidia-h100"), &GpuOptions::default()).unwrap();
    assert_eq!(h100.step, "fused-mlp");
    assert!(
        h100.fused_workgroups >= 132,
        "{} workgroups leave SMs idle on 132",
        h100.fused_workgroups
    );
    // On software adapters the layered step measured faster at this size...
    let lava = plan(&s, 4096, &caps("lavapipe"), &GpuOptions::default()).unwrap();
    assert_eq!(lava.step, "layered");
    // ... and the fused step wins on tiny steps.
    let tiny = plan(
        &spec(&[2, 16, 2]),
        256,
        &caps("lavapipe"),
        &GpuOptions::default(),
    )
    .unwrap();
    assert_eq!(tiny.step, "fused-mlp");
    // Too wide for the fused step: layered everywhere.
    let wide = plan(
        &spec(&[784, 512, 10]),
        1024,
        &caps("nvidia-h100"),
        &GpuOptions::default(),
    );
    assert_eq!(wide.unwrap().step, "layered");
}

#[test]
fn split_k_keeps_a_large_device_busy_and_a_small_grid_whole() {
    let h100 = caps("nvidia-h100");
    // 784x512 grad on 64x64 tiles: 8 x 13 = 104 workgroups, under 264 busy.
    assert!(split_k_slices(&h100, 104, 1024) > 1);
    assert_eq!(split_k_slices(&h100, 104, 256), 1, "too few rows to split");
    assert_eq!(split_k_slices(&h100, 4096, 8192), 1, "already busy");
    assert_eq!(split_k_slices(&caps("lavapipe"), 8, 8192), 1);
}

#[test]
fn a_binding_limit_splits_the_batch_into_micro_batches() {
    let mut small = caps("lavapipe");
    small.max_storage_binding = 1 << 20; // 256 rows of 1024 floats
    let p = plan(&spec(&[1024, 64, 10]), 1000, &small, &GpuOptions::default()).unwrap();
    assert_eq!(p.micro_batch, 256);
    assert_eq!(
        p.update, "split",
        "micro-batches update once, after the whole batch"
    );
    small.max_storage_binding = 16;
    assert!(plan(&spec(&[1024, 64, 10]), 1000, &small, &GpuOptions::default()).is_err());
}

#[test]
fn unknown_profiles_are_none() {
    assert!(profile("nvidia-h9000").is_none());
}

#[test]
fn a_data_parallel_replica_updates_after_the_whole_gradient() {
    let h100 = caps("nvidia-h100");
    let one = plan(
        &spec(&[64, 128, 128, 10]),
        4096,
        &h100,
        &GpuOptions::default(),
    )
    .unwrap();
    assert_eq!((one.update, one.step), ("fused", "fused-mlp"));
    let options = GpuOptions {
        data_parallel: true,
        ..Default::default()
    };
    let replica = plan(&spec(&[64, 128, 128, 10]), 4096, &h100, &options).unwrap();
    assert_eq!(
        (replica.update, replica.step),
        ("split", "layered"),
        "the gradient is all-reduced before the update: no update in any epilogue"
    );
}
