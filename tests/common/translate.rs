//! naga's translation of one specialized kernel into what each API wgpu targets takes: SPIR-V
//! (Vulkan), MSL (Metal), HLSL (DX12) and GLSL (GL, desktop 4.3 and ES 3.1).

use naga::back::{glsl, hlsl, msl, spv, PipelineConstants};
use naga::valid::ModuleInfo;
use naga::{Module, ShaderStage};

/// Override constants from `(name, value)` pairs.
pub fn constants(pairs: &[(&str, f64)]) -> PipelineConstants {
    let mut c = PipelineConstants::default();
    for (k, v) in pairs {
        c.insert(k.to_string(), *v);
    }
    c
}

/// `module` with `overrides` applied for `entry`, as a pipeline would be created.
pub fn specialize(
    module: &Module,
    info: &ModuleInfo,
    entry: &str,
    overrides: &PipelineConstants,
) -> Result<(Module, ModuleInfo), String> {
    naga::back::pipeline_constants::process_overrides(
        module,
        info,
        Some((ShaderStage::Compute, entry)),
        overrides,
    )
    .map(|(m, i)| (m.into_owned(), i.into_owned()))
    .map_err(|e| format!("overrides: {e}"))
}

/// Translates the specialized `entry` for every API (GL only where `gl`: it offers no
/// subgroup operations through wgpu); the error names the API.
pub fn for_every_api(m: &Module, i: &ModuleInfo, entry: &str, gl: bool) -> Result<(), String> {
    let stage = ShaderStage::Compute;
    let spv_pipeline = spv::PipelineOptions {
        shader_stage: stage,
        entry_point: entry.to_string(),
    };
    spv::write_vec(m, i, &spv::Options::default(), Some(&spv_pipeline))
        .map_err(|e| format!("SPIR-V: {e}"))?;
    let msl_options = msl::Options {
        lang_version: (2, 4),
        ..Default::default()
    };
    let msl_pipeline = msl::PipelineOptions {
        entry_point: Some((stage, entry.to_string())),
        ..Default::default()
    };
    msl::write_string(m, i, &msl_options, &msl_pipeline).map_err(|e| format!("MSL: {e}"))?;
    let hlsl_options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_0,
        ..Default::default()
    };
    let hlsl_pipeline = hlsl::PipelineOptions {
        entry_point: Some((stage, entry.to_string())),
    };
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
        .write(m, i, None)
        .map_err(|e| format!("HLSL: {e}"))?;
    if !gl {
        return Ok(());
    }
    for version in [glsl::Version::Desktop(430), glsl::Version::new_gles(310)] {
        let options = glsl::Options {
            version,
            ..Default::default()
        };
        let pipeline = glsl::PipelineOptions {
            shader_stage: stage,
            entry_point: entry.to_string(),
            multiview: None,
        };
        let mut out = String::new();
        glsl::Writer::new(
            &mut out,
            m,
            i,
            &options,
            &pipeline,
            naga::proc::BoundsCheckPolicies::default(),
        )
        .and_then(|mut w| w.write().map(|_| ()))
        .map_err(|e| format!("GLSL {version:?}: {e}"))?;
    }
    Ok(())
}
