//! Capability profiles of real devices, as data: what each reports through wgpu (Vulkan,
//! Metal, DX12 or GL limits and features) and its compute-unit count. Tests feed them to the
//! plan, and `gpumlp plan --profile NAME` shows what such a device would run.
//!
//! Sources: the drivers' published limits (vulkan.gpuinfo.org reports for the NVIDIA 5xx,
//! RADV and ANV drivers; Apple's Metal feature set tables; the D3D12 resource limits) as wgpu
//! exposes them, and the vendors' specification sheets for compute units. The software
//! adapters' values are read off this project's CI machines (`gpumlp info`).

use super::device::{Api, Capabilities, DeviceClass};

/// Every profile name, for help texts and errors.
pub const PROFILE_NAMES: &[&str] = &[
    "nvidia-h100",
    "nvidia-h200",
    "nvidia-rtx4090",
    "amd-rdna3",
    "apple-m2",
    "intel-arc",
    "dx12-gpu",
    "lavapipe",
    "llvmpipe",
];

const GIB: u64 = 1 << 30;

/// The profile called `name` (see [`PROFILE_NAMES`]), or `None`.
pub fn profile(name: &str) -> Option<Capabilities> {
    let gpu = |class, api, units, smem, sg_min, sg_max, binding, buffer| Capabilities {
        name: name.to_string(),
        class,
        api,
        compute_units: units,
        max_workgroup_storage: smem,
        max_invocations: 1024,
        max_workgroups_per_dimension: 65535,
        max_storage_binding: binding,
        max_buffer: buffer,
        max_storage_buffers_per_stage: 64,
        max_texture_2d: 16384,
        subgroups: true,
        subgroup_min: sg_min,
        subgroup_max: sg_max,
        timestamps: true,
    };
    use Api::*;
    use DeviceClass::*;
    let mut caps = match name {
        // H100 SXM: 132 SMs, 80 GB; Vulkan reports 48 KiB of shared memory per workgroup.
        "nvidia-h100" => gpu(Discrete, Vulkan, 132, 49152, 32, 32, 4 * GIB - 4, 80 * GIB),
        // H200: the H100's 132 SMs with 141 GB of HBM3e.
        "nvidia-h200" => gpu(Discrete, Vulkan, 132, 49152, 32, 32, 4 * GIB - 4, 141 * GIB),
        // RTX 4090: 128 SMs, 24 GB.
        "nvidia-rtx4090" => gpu(Discrete, Vulkan, 128, 49152, 32, 32, 4 * GIB - 4, 24 * GIB),
        // RX 7900 XTX (RADV): 96 CUs, wave32 or wave64, 64 KiB LDS per workgroup.
        "amd-rdna3" => gpu(Discrete, Vulkan, 96, 65536, 32, 64, 4 * GIB - 4, 24 * GIB),
        // M2 (10-core GPU) through Metal: 32 KiB threadgroup memory, 32-wide SIMD groups,
        // buffers up to half of unified memory, 31 buffer slots per stage.
        "apple-m2" => {
            let mut c = gpu(Integrated, Metal, 10, 32768, 32, 32, GIB, 8 * GIB);
            c.max_storage_buffers_per_stage = 31;
            c
        }
        // Arc A770 (ANV): 32 Xe-cores, SIMD8..SIMD32, storage ranges capped at 1 GiB.
        "intel-arc" => gpu(Discrete, Vulkan, 32, 65536, 8, 32, GIB, 16 * GIB),
        // Any D3D12 GPU: 32 KiB of groupshared memory (the D3D12 cap), waves of 32 or 64, an
        // unknown unit count, a 2 GiB UAV range.
        "dx12-gpu" => gpu(Discrete, Dx12, 0, 32768, 32, 64, 2 * GIB - 4, 16 * GIB),
        "lavapipe" => {
            let mut c = gpu(Software, Vulkan, 0, 32768, 8, 8, 128 << 20, 2047 << 20);
            c.max_storage_buffers_per_stage = 32;
            c
        }
        "llvmpipe" => {
            let mut c = gpu(Software, Gl, 0, 32768, 4, 128, 128 << 20, 2047 << 20);
            c.max_storage_buffers_per_stage = 16;
            c.subgroups = false;
            c
        }
        _ => return None,
    };
    if name.starts_with("nvidia") {
        caps.max_texture_2d = 32768;
    }
    Some(caps)
}
