//! What the plan may know about an adapter: its class, API, limits, features and subgroup
//! sizes, as plain data. A live adapter is read here once ([`GpuContext::capabilities`]); the
//! profiles of real devices (`profiles.rs`) are the same struct written by hand, so tests feed
//! the plan devices we do not have.

use super::{AdapterInfo, GpuContext};
use serde::Serialize;

/// What kind of device an adapter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DeviceClass {
    /// A discrete GPU.
    Discrete,
    /// A GPU integrated with the CPU.
    Integrated,
    /// A virtual GPU (e.g. in a VM).
    Virtual,
    /// A rasterizer in software on the CPU (lavapipe, llvmpipe, WARP, SwiftShader).
    Software,
    /// Any other or unknown kind.
    Other,
}

/// The graphics API wgpu reaches the adapter through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Api {
    /// Vulkan.
    Vulkan,
    /// Metal.
    Metal,
    /// Direct3D 12.
    Dx12,
    /// OpenGL / GLES.
    Gl,
    /// Any other API.
    Other,
}

/// An adapter's capabilities, everything a [`crate::gpu::plan`] decision may depend on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Capabilities {
    /// A name for messages (`nvidia-h100`, or the adapter's name).
    pub name: String,
    /// What kind of device it is.
    pub class: DeviceClass,
    /// The API wgpu reaches it through.
    pub api: Api,
    /// Streaming multiprocessors / compute units, where known (profiles); 0 when wgpu cannot
    /// tell (a live adapter).
    pub compute_units: u32,
    /// Workgroup memory per workgroup, in bytes.
    pub max_workgroup_storage: u32,
    /// Invocations per workgroup (the smaller of the total and the x-dimension limit).
    pub max_invocations: u32,
    /// Workgroups per dispatch dimension, at most.
    pub max_workgroups_per_dimension: u32,
    /// Largest storage-buffer binding, in bytes.
    pub max_storage_binding: u64,
    /// Largest buffer, in bytes.
    pub max_buffer: u64,
    /// Storage buffers per shader stage, at most.
    pub max_storage_buffers_per_stage: u32,
    /// Largest 2-D texture dimension, in texels.
    pub max_texture_2d: u32,
    /// Whether the device was created with subgroup operations.
    pub subgroups: bool,
    /// Smallest subgroup size.
    pub subgroup_min: u32,
    /// Largest subgroup size.
    pub subgroup_max: u32,
    /// Whether timestamp queries are available.
    pub timestamps: bool,
}

impl Capabilities {
    /// Reads a live adapter's capabilities: `limits` and `features` as the device was created.
    pub fn of(info: &wgpu::AdapterInfo, limits: &wgpu::Limits, features: wgpu::Features) -> Self {
        Capabilities {
            name: info.name.clone(),
            class: match info.device_type {
                wgpu::DeviceType::DiscreteGpu => DeviceClass::Discrete,
                wgpu::DeviceType::IntegratedGpu => DeviceClass::Integrated,
                wgpu::DeviceType::VirtualGpu => DeviceClass::Virtual,
                wgpu::DeviceType::Cpu => DeviceClass::Software,
                wgpu::DeviceType::Other => DeviceClass::Other,
            },
            api: match info.backend {
                wgpu::Backend::Vulkan => Api::Vulkan,
                wgpu::Backend::Metal => Api::Metal,
                wgpu::Backend::Dx12 => Api::Dx12,
                wgpu::Backend::Gl => Api::Gl,
                _ => Api::Other,
            },
            compute_units: 0,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_invocations: limits
                .max_compute_invocations_per_workgroup
                .min(limits.max_compute_workgroup_size_x),
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer: limits.max_buffer_size,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            max_texture_2d: limits.max_texture_dimension_2d,
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min: info.subgroup_min_size,
            subgroup_max: info.subgroup_max_size,
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        }
    }
}

impl GpuContext {
    /// This context's adapter and device as the plan sees them.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities::of(
            &self.device.adapter_info(),
            &self.limits,
            self.device.features(),
        )
    }
}

impl AdapterInfo {
    /// The class of the adapter `list_adapters` described (its `device_type` name).
    pub fn class(&self) -> DeviceClass {
        match self.device_type.as_str() {
            "discrete" => DeviceClass::Discrete,
            "integrated" => DeviceClass::Integrated,
            "virtual" => DeviceClass::Virtual,
            "cpu" => DeviceClass::Software,
            _ => DeviceClass::Other,
        }
    }

    /// The API of the adapter `list_adapters` described (its `backend` name).
    pub fn api(&self) -> Api {
        match self.backend.as_str() {
            "vulkan" => Api::Vulkan,
            "metal" => Api::Metal,
            "dx12" => Api::Dx12,
            "gl" => Api::Gl,
            _ => Api::Other,
        }
    }
}
