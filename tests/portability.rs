//! Portability without the hardware: every kernel entry point, specialized as the plans
//! specialize it, translated by naga into what each API wgpu targets takes (SPIR-V for
//! Vulkan, MSL for Metal, HLSL for DX12, GLSL for GL), so a kernel that Metal or DX12 would
//! refuse fails here, on a machine that has neither.

use gpumlp::gpu::kernels::Family;
use naga::back::{glsl, hlsl, msl, spv, PipelineConstants};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{Module, ShaderStage};

/// Families that need subgroup operations, which GL does not offer through wgpu: the
/// software-adapter kernels (lavapipe), never planned on GL.
fn needs_subgroups(src: &str) -> bool {
    src.contains("subgroup")
}

fn constants(pairs: &[(&str, f64)]) -> PipelineConstants {
    let mut c = PipelineConstants::default();
    for (k, v) in pairs {
        c.insert(k.to_string(), *v);
    }
    c
}

/// Translates `entry` of `module` with `overrides` for every API; the error names the API.
fn translate(
    module: &Module,
    info: &ModuleInfo,
    entry: &str,
    overrides: &PipelineConstants,
    gl: bool,
) -> Result<(), String> {
    let (m, i) = naga::back::pipeline_constants::process_overrides(
        module,
        info,
        Some((ShaderStage::Compute, entry)),
        overrides,
    )
    .map_err(|e| format!("overrides: {e}"))?;
    let spv_pipeline = spv::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: entry.to_string(),
    };
    spv::write_vec(&m, &i, &spv::Options::default(), Some(&spv_pipeline))
        .map_err(|e| format!("SPIR-V: {e}"))?;
    let msl_pipeline = msl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, entry.to_string())),
        ..Default::default()
    };
    let msl_options = msl::Options {
        lang_version: (2, 4),
        ..Default::default()
    };
    msl::write_string(&m, &i, &msl_options, &msl_pipeline).map_err(|e| format!("MSL: {e}"))?;
    let hlsl_options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_0,
        ..Default::default()
    };
    let hlsl_pipeline = hlsl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, entry.to_string())),
    };
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
        .write(&m, &i, None)
        .map_err(|e| format!("HLSL: {e}"))?;
    if gl {
        let glsl_options = glsl::Options {
            version: glsl::Version::Embedded {
                version: 310,
                is_webgl: false,
            },
            ..Default::default()
        };
        let glsl_pipeline = glsl::PipelineOptions {
            shader_stage: ShaderStage::Compute,
            entry_point: entry.to_string(),
            multiview: None,
        };
        let mut out = String::new();
        glsl::Writer::new(
            &mut out,
            &m,
            &i,
            &glsl_options,
            &glsl_pipeline,
            naga::proc::BoundsCheckPolicies::default(),
        )
        .and_then(|mut w| w.write().map(|_| ()))
        .map_err(|e| format!("GLSL ES 3.1: {e}"))?;
    }
    Ok(())
}

/// The override sets a plan gives each family's matmul entry points (the rest run with their
/// defaults): every form, every blocked width, every narrow gradient width.
fn specializations(file: &str) -> Vec<PipelineConstants> {
    let mut sets = vec![constants(&[])];
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
    if file.ends_with("matmul_subgroup.wgsl") {
        for n in [1, 2, 10, 16] {
            sets.push(constants(&[("NARROW_N", n as f64)]));
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
        let gl = !needs_subgroups(&src);
        for overrides in specializations(file) {
            for ep in &module.entry_points {
                match translate(&module, &info, &ep.name, &overrides, gl) {
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
