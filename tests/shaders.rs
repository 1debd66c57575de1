//! Every shader parses and validates with naga: no adapter needed.

use gpumlp::gpu::kernels::{family_slots, Family, Slot};

#[test]
fn every_wgsl_file_parses_and_validates() {
    let sources = Family::ALL
        .iter()
        .map(|f| (f.file(), f.source()))
        .chain([("shaders/fused.wgsl", gpumlp::gpu::fused::source())]);
    for (file, src) in sources {
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(&src)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(&src)));
    }
}

#[test]
fn every_file_in_shaders_is_loaded() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "wgsl") {
            continue; // shaders/gen: the generators of written-out kernels
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            Family::ALL.iter().any(|f| f.source().contains(&text))
                || gpumlp::gpu::fused::source().contains(&text),
            "{} is not part of any kernel family",
            path.display()
        );
    }
}

/// The layout each family's bindings struct derives (`family_slots`) is the shader's: one slot
/// per `@group(0) @binding(i)`, of the kind its declaration says.
#[test]
fn every_family_layout_matches_its_shader_bindings() {
    use naga::{AddressSpace, StorageAccess};
    for f in Family::ALL {
        let src = f.source();
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{}: {}", f.file(), e.emit_to_string(&src)));
        let mut declared: Vec<(u32, Slot)> = module
            .global_variables
            .iter()
            .filter_map(|(_, g)| {
                let b = g.binding.as_ref()?;
                assert_eq!(b.group, 0, "{}: {:?} outside group 0", f.file(), g.name);
                let slot = match g.space {
                    AddressSpace::Uniform if b.binding == 1 => Slot::Step,
                    AddressSpace::Uniform => Slot::Uniform,
                    AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
                        Slot::ReadWrite
                    }
                    AddressSpace::Storage { .. } => Slot::Read,
                    other => panic!("{}: {:?} in {other:?}", f.file(), g.name),
                };
                Some((b.binding, slot))
            })
            .collect();
        declared.sort_by_key(|&(b, _)| b);
        let layout: Vec<(u32, Slot)> = family_slots(f)
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i as u32, s))
            .collect();
        assert_eq!(
            declared,
            layout,
            "{}: bindings against the layout",
            f.file()
        );
    }
}
