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
                let smem =
                    2 * p.fused_tile_rows * sizes.iter().max().unwrap().next_multiple_of(4) * 4;
                assert!(
                    smem as u32 <= c.max_workgroup_storage,
                    "{name} {sizes:?}: {smem}"
                );
            }
        }
    }
}

#[test]
fn real_gpus_run_the_gemm_family_and_software_adapters_the_blocked_kernel() {
    let s = spec(&[784, 512, 512, 10]);
    for name in [
        "nvidia-h100",
        "nvidia-h200",
        "amd-rdna3",
        "apple-m2",
        "intel-arc",
        "dx12-gpu",
    ] {
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
        assert!(
            !p.kernels.subgroup_matmul && !p.kernels.image_matmul,
            "{name}"
        );
    }
    let llvmpipe = plan(&s, 1024, &caps("llvmpipe"), &GpuOptions::default()).unwrap();
    assert!(kernels_of(&llvmpipe).iter().all(|k| *k == "matmul_blocked"));
    // lavapipe: the subgroup kernels on aligned shapes, read from images.
    let lavapipe = plan(&s, 1024, &caps("lavapipe"), &GpuOptions::default()).unwrap();
    assert!(lavapipe.kernels.subgroup_matmul && lavapipe.kernels.image_matmul);
    assert_eq!(lavapipe.matmuls[0].kernel, "matmul_sg_forward");
    // ... and --tiled forces the GPU kernel there too.
    let tiled = GpuOptions {
        force_tiled_matmul: true,
        ..Default::default()
    };
    let forced = plan(&s, 1024, &caps("lavapipe"), &tiled).unwrap();
    assert!(kernels_of(&forced).iter().all(|k| *k == "matmul_tiled"));
    // A forced GEMM tile runs everywhere.
    let gemm = GpuOptions {
        force_gemm: Some(crate::gpu::kernels::GemmConfig::new(128, 128, 8, 8, 8)),
        ..Default::default()
    };
    let forced = plan(&s, 1024, &caps("llvmpipe"), &gemm).unwrap();
    assert!(forced
        .matmuls
        .iter()
        .all(|m| m.kernel == "matmul_gemm" && m.tile_m == 128));
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
