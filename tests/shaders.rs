//! Every shader parses and validates with naga: no adapter needed.

use gpumlp::gpu::kernels::Family;

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
