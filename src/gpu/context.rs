//! Adapter discovery and selection, and the device a model is placed on.

use crate::error::{Error, Result};
use std::fmt;

/// Which adapter to use: any (the best), or one narrowed by backend and/or name substring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdapterSelector {
    /// `vulkan`, `metal`, `dx12` or `gl`.
    pub backend: Option<String>,
    /// A case-insensitive substring of the adapter's name.
    pub name: Option<String>,
}

impl AdapterSelector {
    /// From `GPUMLP_BACKEND` and `GPUMLP_ADAPTER` (unset or empty: no constraint).
    pub fn from_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        AdapterSelector {
            backend: get("GPUMLP_BACKEND"),
            name: get("GPUMLP_ADAPTER"),
        }
    }

    /// `self`, with unset fields filled from the environment.
    pub fn or_env(mut self) -> Self {
        let env = Self::from_env();
        self.backend = self.backend.or(env.backend);
        self.name = self.name.or(env.name);
        self
    }

    fn backends(&self) -> Result<wgpu::Backends> {
        Ok(
            match self.backend.as_deref().map(|b| b.to_ascii_lowercase()) {
                None => wgpu::Backends::all(),
                Some(b) => {
                    match b.as_str() {
                        "vulkan" | "vk" => wgpu::Backends::VULKAN,
                        "metal" => wgpu::Backends::METAL,
                        "dx12" | "d3d12" => wgpu::Backends::DX12,
                        "gl" | "gles" | "opengl" => wgpu::Backends::GL,
                        other => {
                            // Say where the name came from when it is the environment's.
                            let from_env = std::env::var("GPUMLP_BACKEND")
                                .is_ok_and(|v| v.trim().eq_ignore_ascii_case(other.trim()));
                            return Err(Error::UnknownBackend {
                                name: other.to_string(),
                                from_env,
                            });
                        }
                    }
                }
            },
        )
    }
}

/// `backend vulkan, name containing 'llvm'`: what the selector asks for.
impl fmt::Display for AdapterSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(b) = &self.backend {
            parts.push(format!("backend {b}"));
        }
        if let Some(n) = &self.name {
            parts.push(format!("name containing '{n}'"));
        }
        if parts.is_empty() {
            parts.push("any adapter".into());
        }
        f.write_str(&parts.join(", "))
    }
}

/// One adapter as `list_adapters` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterInfo {
    /// The adapter's name as the driver reports it.
    pub name: String,
    /// `vulkan`, `metal`, `dx12`, `gl`.
    pub backend: String,
    /// `discrete`, `integrated`, `virtual`, `cpu`, `other`.
    pub device_type: String,
    /// The driver's name.
    pub driver: String,
    /// The driver's version or other details.
    pub driver_info: String,
    /// Largest storage-buffer binding, in bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, in bytes.
    pub max_buffer_size: u64,
    /// Workgroup memory per workgroup, in bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Invocations per workgroup, at most.
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroups per dispatch dimension, at most.
    pub max_compute_workgroups_per_dimension: u32,
    /// Storage buffers per shader stage, at most.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Smallest subgroup size.
    pub subgroup_min_size: u32,
    /// Largest subgroup size.
    pub subgroup_max_size: u32,
    /// Whether the adapter supports timestamp queries.
    pub timestamps: bool,
}

impl AdapterInfo {
    /// A discrete or integrated GPU: what `--device auto` may pick without being asked. Software
    /// adapters (lavapipe, llvmpipe, WARP, SwiftShader report `cpu`), virtual and unknown ones
    /// run only when asked for: `--device gpu`, `--backend`, `GPUMLP_BACKEND`/`GPUMLP_ADAPTER`.
    pub fn is_hardware_gpu(&self) -> bool {
        super::plan::auto_selectable(self.class())
    }
}

impl fmt::Display for AdapterInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.backend, self.name, self.device_type)
    }
}

fn backend_name(b: wgpu::Backend) -> &'static str {
    match b {
        wgpu::Backend::Vulkan => "vulkan",
        wgpu::Backend::Metal => "metal",
        wgpu::Backend::Dx12 => "dx12",
        wgpu::Backend::Gl => "gl",
        wgpu::Backend::BrowserWebGpu => "webgpu",
        _ => "other",
    }
}

fn describe(adapter: &wgpu::Adapter) -> AdapterInfo {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterInfo {
        name: info.name,
        backend: backend_name(info.backend).into(),
        device_type: match info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete",
            wgpu::DeviceType::IntegratedGpu => "integrated",
            wgpu::DeviceType::VirtualGpu => "virtual",
            wgpu::DeviceType::Cpu => "cpu",
            wgpu::DeviceType::Other => "other",
        }
        .into(),
        driver: info.driver,
        driver_info: info.driver_info,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_buffer_size: limits.max_buffer_size,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
        subgroup_min_size: info.subgroup_min_size,
        subgroup_max_size: info.subgroup_max_size,
        timestamps: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
    }
}

/// Preference order ([`super::plan::adapter_preference`]).
fn rank(info: &AdapterInfo) -> (u32, u32) {
    super::plan::adapter_preference(info.class(), info.api())
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Adapters that can run our kernels (compute shaders with enough storage buffers), best first.
fn usable_adapters(sel: &AdapterSelector) -> Result<Vec<(wgpu::Adapter, AdapterInfo)>> {
    let inst = instance(sel.backends()?);
    let mut found: Vec<(wgpu::Adapter, AdapterInfo)> =
        pollster::block_on(inst.enumerate_adapters(sel.backends()?))
            .into_iter()
            .map(|a| {
                let info = describe(&a);
                (a, info)
            })
            .filter(|(a, info)| {
                a.get_downlevel_capabilities()
                    .flags
                    .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
                    && info.max_storage_buffers_per_shader_stage >= 6
            })
            .filter(|(_, info)| match &sel.name {
                Some(n) => info.name.to_lowercase().contains(&n.to_lowercase()),
                None => true,
            })
            .collect();
    found.sort_by_key(|(_, info)| rank(info));
    Ok(found)
}

/// Every adapter wgpu finds on this machine (usable for compute or not), best first.
pub fn list_adapters() -> Vec<AdapterInfo> {
    let inst = instance(wgpu::Backends::all());
    let mut all: Vec<AdapterInfo> =
        pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
            .iter()
            .map(describe)
            .collect();
    all.sort_by_key(rank);
    all
}

/// A device and its queue, with the limits it was created with.
pub struct GpuContext {
    /// The wgpu device.
    pub device: wgpu::Device,
    /// The device's queue.
    pub queue: wgpu::Queue,
    /// The adapter the device was created on.
    pub info: AdapterInfo,
    /// The limits the device was created with.
    pub limits: wgpu::Limits,
    /// Whether timestamp queries were enabled (for `bench --profile`).
    pub timestamps: bool,
}

impl GpuContext {
    /// The best adapter that matches `sel` (see [`AdapterSelector::from_env`]).
    pub fn new(sel: &AdapterSelector) -> Result<Self> {
        let mut found = usable_adapters(sel)?;
        if found.is_empty() {
            return Err(Error::NoAdapter {
                backend: sel.backend.clone(),
                name: sel.name.clone(),
            });
        }
        let (adapter, info) = found.remove(0);
        Self::from_adapter(adapter, info)
    }

    /// The `index`-th (0-based, best first) usable adapter that matches `sel`: `vulkan:1` in
    /// `--devices`.
    pub fn nth(sel: &AdapterSelector, index: usize) -> Result<Self> {
        let mut found = usable_adapters(sel)?;
        if index >= found.len() {
            return Err(Error::AdapterIndex {
                backend: sel.backend.clone(),
                index,
                found: found.len(),
            });
        }
        let (adapter, info) = found.swap_remove(index);
        Self::from_adapter(adapter, info)
    }

    /// The best discrete or integrated GPU that matches `sel`, or None (see
    /// [`AdapterInfo::is_hardware_gpu`]).
    pub fn best_hardware(sel: &AdapterSelector) -> Result<Option<Self>> {
        match usable_adapters(sel)?
            .into_iter()
            .find(|(_, info)| info.is_hardware_gpu())
        {
            Some((adapter, info)) => Self::from_adapter(adapter, info).map(Some),
            None => Ok(None),
        }
    }

    /// The adapter the `local_rank`-th process on a machine takes: the usable adapters matching
    /// `sel` (hardware GPUs only when `hardware_only`), best first, taken in turn and shared
    /// round-robin when there are fewer than processes; None when there is none.
    pub fn for_local_rank(
        sel: &AdapterSelector,
        hardware_only: bool,
        local_rank: usize,
    ) -> Result<Option<Self>> {
        let mut found: Vec<_> = usable_adapters(sel)?
            .into_iter()
            .filter(|(_, info)| !hardware_only || info.is_hardware_gpu())
            .collect();
        if found.is_empty() {
            return Ok(None);
        }
        let (adapter, info) = found.swap_remove(local_rank % found.len());
        Self::from_adapter(adapter, info).map(Some)
    }

    /// One context per usable adapter that matches `sel` (for tests that run on all of them).
    pub fn all(sel: &AdapterSelector) -> Result<Vec<GpuContext>> {
        usable_adapters(sel)?
            .into_iter()
            .map(|(a, i)| Self::from_adapter(a, i))
            .collect()
    }

    /// [`GpuContext::all`], with each device opened at the adapter's limits changed by `adjust`
    /// (which may only lower them): a device with small limits, so that tests can reach them
    /// without gigabytes of data.
    pub fn all_with_limits(
        sel: &AdapterSelector,
        adjust: impl Fn(&mut wgpu::Limits),
    ) -> Result<Vec<GpuContext>> {
        usable_adapters(sel)?
            .into_iter()
            .map(|(a, mut i)| {
                let mut limits = a.limits();
                adjust(&mut limits);
                i.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size;
                i.max_buffer_size = limits.max_buffer_size;
                Self::open(a, i, limits)
            })
            .collect()
    }

    fn from_adapter(adapter: wgpu::Adapter, info: AdapterInfo) -> Result<Self> {
        // Ask for everything the adapter offers: large storage bindings in particular.
        let limits = adapter.limits();
        Self::open(adapter, info, limits)
    }

    fn open(adapter: wgpu::Adapter, info: AdapterInfo, limits: wgpu::Limits) -> Result<Self> {
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let mut features = wgpu::Features::empty();
        if timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("gpumlp"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Gpu(format!("could not open {info}: {e}")))?;
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            timestamps,
        })
    }

    /// Runs `f` (which creates device objects) inside out-of-memory and validation error
    /// scopes, so that a failed creation becomes an error naming `what`, never wgpu's panic.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(e) = oom {
            return Err(Error::DeviceLimit(format!(
                "out of device memory {what} on {}: {e}; use a smaller --batch or a smaller model",
                self.info
            )));
        }
        if let Some(e) = validation {
            return Err(Error::Gpu(format!("{what} failed on {}: {e}", self.info)));
        }
        Ok(out)
    }

    /// The largest buffer that can be bound as one storage binding (the smaller of the
    /// binding and buffer limits), in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Waits for all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("waiting for the device failed: {e}")))
    }
}

/// Every usable adapter that matches `sel`, best first, without opening any.
pub fn usable(sel: &AdapterSelector) -> Result<Vec<AdapterInfo>> {
    Ok(usable_adapters(sel)?.into_iter().map(|(_, i)| i).collect())
}

/// The adapter `GpuContext::new(sel)` would open, without opening it.
pub fn best_adapter(sel: &AdapterSelector) -> Result<Option<AdapterInfo>> {
    Ok(usable_adapters(sel)?
        .into_iter()
        .next()
        .map(|(_, info)| info))
}
