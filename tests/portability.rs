//! Portability without the hardware: every kernel entry point, specialized as the plans
//! specialize it, translated by naga into what each API wgpu targets takes (SPIR-V for
//! Vulkan, MSL for Metal, HLSL for DX12, GLSL for GL), so a kernel that Metal or DX12 would
//! refuse fails here, on a machine that has neither.

use common::translate::{constants, for_every_api, specialize};
use gpumlp::gpu::fused::{FusedMlp, FusedOptions};
use gpumlp::gpu::kernels::{Family, GemmConfig};
use gpumlp::gpu::plan;
use gpumlp::gpu::profiles::{profile, PROFILE_NAMES};
use gpumlp::model::{Activation, Loss, ModelSpec};
use gpumlp::optim::Optimizer;
use naga::back::PipelineConstants;
use naga::valid::{Capabilities, ValidationFlags, Validator};

mod common;

/// The override sets a plan gives each family's matmul entry points (the rest run with their
/// defaults): every form, every blocked width, every GEMM tile.
fn specializations(file: &str) -> Vec<PipelineConstants> {
    let mut sets = vec![constants(&[])];
    if file.ends_with("fused.wgsl") {
        sets.extend(fused_specializations());
    }
    if file.ends_with("matmul.wgsl") {
        for mode in 0..3 {
            for wg_n in [1, 2, 4, 8] {
                sets.push(constants(&[("MODE", mode as f64), ("WG_N", wg_n as f64)]));
            }
            sets.push(constants(&[
                ("MODE", mode as f64),
                ("SPLIT_K", 1.0),
                ("OPT", 3.0),
            ]));
        }
    }
    if file.ends_with("matmul_gemm.wgsl") {
        for g in GemmConfig::CANDIDATES {
            for mode in 0..3 {
                let mut c = g.constants();
                c.push(("MODE", mode as f64));
                sets.push(constants(&c));
            }
        }
    }
    sets
}

/// The fused step as every device profile would specialize it, for the suite's narrow nets
/// (tile, W slab and workgroup size differ by workgroup memory and compute units).
fn fused_specializations() -> Vec<PipelineConstants> {
    let mut sets = Vec::new();
    for name in PROFILE_NAMES {
        let caps = profile(name).unwrap();
        for (sizes, rows) in [(&[64, 128, 128, 10][..], 4096), (&[2, 16, 2][..], 256)] {
            let spec = ModelSpec::new(
                sizes,
                Activation::Relu,
                Activation::Softmax,
                Loss::CrossEntropy,
            )
            .unwrap();
            let shape = plan::fused_shape(&spec, rows, &caps, None)
                .unwrap_or_else(|| panic!("{name}: no fused shape for {sizes:?}"));
            let c = FusedMlp::constants(&spec, Optimizer::adam(), &shape, FusedOptions::default());
            sets.push(constants(&c));
        }
    }
    sets
}

#[test]
fn every_kernel_translates_for_vulkan_metal_dx12_and_gl() {
    let sources = Family::ALL
        .iter()
        .map(|f| (f.file(), f.source()))
        .chain([("shaders/fused.wgsl", gpumlp::gpu::fused::source())]);
    let mut failures = Vec::new();
    let mut translated = 0;
    for (file, src) in sources {
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(&src)));
        let info = Validator::new(ValidationFlags::all(), Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(&src)));
        // No kernel uses subgroup operations (which GL does not offer through wgpu): every
        // kernel runs on every API.
        assert!(!src.contains("subgroup"), "{file} uses subgroup operations");
        let gl = true;
        for overrides in specializations(file) {
            for ep in &module.entry_points {
                let result = specialize(&module, &info, &ep.name, &overrides)
                    .and_then(|(m, i)| for_every_api(&m, &i, &ep.name, gl));
                match result {
                    Ok(()) => translated += 1,
                    Err(e) => failures.push(format!("{file} {} {overrides:?}: {e}", ep.name)),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        translated > 40,
        "only {translated} translations: entry points went missing"
    );
}
