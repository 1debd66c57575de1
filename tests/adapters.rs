//! Adapter listing and selection: by backend, by name substring, through the environment, and
//! the error when nothing matches.
//!
//! The environment is process-global and the harness runs tests on parallel threads, so this
//! binary holds a single test that sets (and restores) `GPUMLP_BACKEND`/`GPUMLP_ADAPTER` before
//! anything else runs, then checks selection with explicit selectors only.

mod common;

use common::report;
use gpumlp::gpu::context::best_adapter;
use gpumlp::gpu::list_adapters;
use gpumlp::{AdapterInfo, AdapterSelector, Error, GpuContext};

const BACKEND: &str = "GPUMLP_BACKEND";
const ADAPTER: &str = "GPUMLP_ADAPTER";

fn selector(backend: Option<&str>, name: Option<&str>) -> AdapterSelector {
    {
        let mut c = AdapterSelector::default();
        c.backend = backend.map(String::from);
        c.name = name.map(String::from);
        c
    }
}

/// Sets the two variables (None: removes), runs `f`, restores what was there before.
fn with_env<T>(backend: Option<&str>, adapter: Option<&str>, f: impl FnOnce() -> T) -> T {
    let saved = (std::env::var_os(BACKEND), std::env::var_os(ADAPTER));
    let set = |k: &str, v: Option<&std::ffi::OsStr>| match v {
        Some(v) => std::env::set_var(k, v),
        None => std::env::remove_var(k),
    };
    set(BACKEND, backend.map(std::ffi::OsStr::new));
    set(ADAPTER, adapter.map(std::ffi::OsStr::new));
    let out = f();
    set(BACKEND, saved.0.as_deref());
    set(ADAPTER, saved.1.as_deref());
    out
}

fn environment_variables_narrow_the_selector() {
    let none = with_env(None, None, AdapterSelector::from_env);
    assert_eq!(none, AdapterSelector::default(), "unset: no constraint");
    let blank = with_env(Some("  "), Some(""), AdapterSelector::from_env);
    assert_eq!(blank, AdapterSelector::default(), "blank: no constraint");
    let both = with_env(Some("gl"), Some("llvmpipe"), AdapterSelector::from_env);
    assert_eq!(both, selector(Some("gl"), Some("llvmpipe")));
    let only_name = with_env(None, Some("lavapipe"), AdapterSelector::from_env);
    assert_eq!(only_name, selector(None, Some("lavapipe")));
    // or_env fills only the fields the caller left unset.
    let merged = with_env(Some("gl"), Some("llvm"), || {
        selector(Some("vulkan"), None).or_env()
    });
    assert_eq!(merged, selector(Some("vulkan"), Some("llvm")));
    let kept = with_env(None, None, || selector(Some("vulkan"), Some("x")).or_env());
    assert_eq!(kept, selector(Some("vulkan"), Some("x")));
}

const DEVICE_TYPES: [&str; 5] = ["discrete", "integrated", "virtual", "cpu", "other"];
const BACKENDS: [&str; 6] = ["vulkan", "metal", "dx12", "gl", "webgpu", "other"];

fn listing_reports_every_adapter_with_type_and_limits() -> Vec<AdapterInfo> {
    let all = list_adapters();
    assert!(
        !all.is_empty(),
        "list_adapters found nothing: install a GPU driver or mesa-vulkan-drivers"
    );
    for a in &all {
        report(format!(
            "listed {a}: storage binding {} B, workgroup memory {} B, {} invocations, {} storage buffers",
            a.max_storage_buffer_binding_size,
            a.max_compute_workgroup_storage_size,
            a.max_compute_invocations_per_workgroup,
            a.max_storage_buffers_per_shader_stage
        ));
        assert!(!a.name.is_empty(), "{a:?}: no name");
        assert!(BACKENDS.contains(&a.backend.as_str()), "{a:?}: backend");
        assert!(
            DEVICE_TYPES.contains(&a.device_type.as_str()),
            "{a:?}: device type"
        );
        assert!(a.max_storage_buffer_binding_size > 0, "{a:?}");
        assert!(a.max_buffer_size > 0, "{a:?}");
        assert!(a.max_compute_workgroups_per_dimension > 0, "{a:?}");
        assert!(a.max_compute_invocations_per_workgroup > 0, "{a:?}");
    }
    // Every adapter the tests run on is in the listing.
    for ctx in GpuContext::all(&AdapterSelector::default()).unwrap() {
        assert!(
            all.iter()
                .any(|a| a.name == ctx.info.name && a.backend == ctx.info.backend),
            "{} is usable but not listed",
            ctx.info
        );
    }
    all
}

fn selection_by_backend_and_name_picks_only_matches(listed: &[AdapterInfo]) {
    let mut backends: Vec<&str> = listed.iter().map(|a| a.backend.as_str()).collect();
    backends.sort();
    backends.dedup();
    for b in backends {
        let sel = selector(Some(b), None);
        let opened = GpuContext::all(&sel).unwrap();
        for ctx in &opened {
            assert_eq!(ctx.info.backend, b, "{sel:?} opened {}", ctx.info);
        }
        if let Some(best) = best_adapter(&sel).unwrap() {
            assert_eq!(best.backend, b, "{sel:?}: best is {best}");
            // The upper-case spelling selects the same.
            let upper = selector(Some(&b.to_ascii_uppercase()), None);
            assert_eq!(best_adapter(&upper).unwrap(), Some(best.clone()));
            let ctx = GpuContext::new(&sel).unwrap();
            assert_eq!(ctx.info.backend, b);
            report(format!("backend \"{b}\" selects {}", ctx.info));
        }
    }
    // By name: a case-insensitive substring of one adapter's name selects only adapters whose
    // name contains it.
    let first = &listed[0];
    let part: String = first
        .name
        .chars()
        .take(6)
        .collect::<String>()
        .to_uppercase();
    for ctx in GpuContext::all(&selector(None, Some(&part))).unwrap() {
        assert!(
            ctx.info.name.to_lowercase().contains(&part.to_lowercase()),
            "name \"{part}\" opened {}",
            ctx.info
        );
    }
    // Backend and name together.
    let both = selector(Some(&first.backend), Some(&part));
    for ctx in GpuContext::all(&both).unwrap() {
        assert_eq!(ctx.info.backend, first.backend);
        assert!(ctx.info.name.to_lowercase().contains(&part.to_lowercase()));
    }
}

fn a_selector_that_matches_nothing_says_how_to_get_an_adapter() {
    let none = selector(None, Some("no-such-adapter-3f9c"));
    assert!(GpuContext::all(&none).unwrap().is_empty());
    assert_eq!(best_adapter(&none).unwrap(), None);
    match GpuContext::new(&none) {
        Err(e @ Error::NoAdapter { .. }) => {
            // Typed: the selector's narrowing, matchable without parsing the message.
            let Error::NoAdapter { backend, name } = &e else {
                unreachable!()
            };
            assert_eq!(
                (backend.as_deref(), name.as_deref()),
                (None, Some("no-such-adapter-3f9c"))
            );
            let m = e.to_string();
            for part in [
                "no GPU adapter found",
                "no-such-adapter-3f9c",
                "mesa-vulkan-drivers",
            ] {
                assert!(m.contains(part), "message lacks \"{part}\": {m}");
            }
        }
        Err(e) => panic!("expected Error::NoAdapter, got {e}"),
        Ok(ctx) => panic!("expected Error::NoAdapter, opened {}", ctx.info),
    }
    // An unknown backend name is a typed error naming the valid ones.
    match GpuContext::new(&selector(Some("glide"), None)) {
        Err(e @ Error::UnknownBackend { .. }) => {
            let m = e.to_string();
            assert!(m.contains("glide") && m.contains("vulkan"), "{m}");
            assert!(
                matches!(&e, Error::UnknownBackend { name, from_env: false } if name == "glide"),
                "{e:?}"
            );
        }
        Err(e) => panic!("expected Error::UnknownBackend, got {e}"),
        Ok(ctx) => panic!("backend \"glide\" opened {}", ctx.info),
    }
}

#[test]
fn adapter_listing_selection_and_environment() {
    // First, before any wgpu thread exists: the only test that touches the environment.
    environment_variables_narrow_the_selector();
    let listed = listing_reports_every_adapter_with_type_and_limits();
    selection_by_backend_and_name_picks_only_matches(&listed);
    a_selector_that_matches_nothing_says_how_to_get_an_adapter();
}
