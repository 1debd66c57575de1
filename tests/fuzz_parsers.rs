//! Property tests of every parser a user's input reaches (CSV, IDX, npy, safetensors
//! checkpoints, data specs, schedules, activations, layer lists), a bounded number of cases
//! each so CI stays fast: whatever the bytes, no panic, no abort, bounded memory (every header
//! that promises more than the file holds is refused before allocating), and an error that
//! names the input.

use gpumlp::checkpoint::Checkpoint;
use gpumlp::data::{load_csv, load_idx, load_npy, load_spec, CsvTarget};
use gpumlp::{Activation, Schedule};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Text that looks like CSV: numbers, names, quotes, separators, line breaks.
fn csv_text() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        any::<f32>().prop_map(|v| v.to_string()),
        (0u32..5).prop_map(|v| v.to_string()),
        "[a-z]{0,6}",
        Just("\"q,uoted\"".to_string()),
        Just("".to_string()),
        Just("NaN".to_string()),
        Just("1e400".to_string()),
    ];
    prop::collection::vec(prop::collection::vec(field, 0..6), 0..12).prop_map(|rows| {
        rows.iter()
            .map(|r| r.join(","))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// An IDX header (magic, dimensions) that may lie about the data after it.
fn idx_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![0x08u8, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0xFF]),
        prop::collection::vec(any::<u32>(), 0..4),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(kind, dims, data)| {
            let mut out = vec![0, 0, kind, dims.len() as u8];
            for d in dims {
                out.extend(d.to_be_bytes());
            }
            out.extend(data);
            out
        })
}

/// A safetensors file: a length prefix (maybe lying), a header (maybe JSON), some data.
fn safetensors_bytes() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        "\\{[ -~]{0,80}\\}",
        Just(r#"{"__metadata__":{"format":"gpumlp","format_version":"1","sizes":"2,3","activations":"relu,softmax","loss":"cross-entropy"},"layers.0.weight":{"dtype":"F32","shape":[3,2],"data_offsets":[0,24]},"layers.0.bias":{"dtype":"F32","shape":[3],"data_offsets":[24,36]}}"#.to_string()),
        Just(r#"{"__metadata__":{"format":"gpumlp","format_version":"1","sizes":"2,4611686018427387904","activations":"softmax","loss":"cross-entropy"}}"#.to_string()),
    ];
    (
        header,
        any::<bool>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..48),
    )
        .prop_map(|(h, honest, lie, data)| {
            let len = if honest { h.len() as u64 } else { lie };
            let mut out = len.to_le_bytes().to_vec();
            out.extend(h.as_bytes());
            out.extend(data);
            out
        })
}

/// An npy header whose shape and dtype may lie about the data after it.
fn npy_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["<f4", "<f8", "<i8", "|u1", "<U3", ">f4", "<c8", "zz"]),
        prop::collection::vec(0usize..1 << 40, 0..3),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(descr, shape, fortran, data)| {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            let header = format!(
                "{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({},), }}\n",
                if fortran { "True" } else { "False" },
                dims.join(", ")
            );
            let mut out = b"\x93NUMPY\x01\x00".to_vec();
            out.extend((header.len() as u16).to_le_bytes());
            out.extend(header.as_bytes());
            out.extend(data);
            out
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn csv_never_panics_and_errors_name_the_file(text in csv_text(), last in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "fuzz.csv", text.as_bytes());
        let target = if last { CsvTarget::Label { column: None } } else { CsvTarget::Values { count: 1 } };
        if let Err(e) = load_csv(&p, target) {
            prop_assert!(e.to_string().contains("fuzz.csv"), "{e}");
        }
    }

    #[test]
    fn idx_never_panics_or_allocates_what_the_header_promises(
        images in idx_bytes(), labels in idx_bytes()
    ) {
        let dir = tempfile::tempdir().unwrap();
        let i = write(dir.path(), "images.idx", &images);
        let l = write(dir.path(), "labels.idx", &labels);
        if let Err(e) = load_idx(&i, &l) {
            let m = e.to_string();
            prop_assert!(m.contains("images.idx") || m.contains("labels.idx"), "{m}");
        }
    }

    #[test]
    fn checkpoints_never_panic_and_errors_name_the_file(bytes in safetensors_bytes()) {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "fuzz.safetensors", &bytes);
        if let Err(e) = Checkpoint::load(&p) {
            prop_assert!(e.to_string().contains("fuzz.safetensors"), "{e}");
        }
    }

    #[test]
    fn npy_never_panics_or_allocates_what_the_header_promises(x in npy_bytes(), y in npy_bytes()) {
        let dir = tempfile::tempdir().unwrap();
        let xp = write(dir.path(), "x.npy", &x);
        let yp = write(dir.path(), "y.npy", &y);
        if let Err(e) = load_npy(&xp, &yp) {
            let m = e.to_string();
            prop_assert!(m.contains("x.npy") || m.contains("y.npy"), "{m}");
        }
    }

    #[test]
    fn data_specs_schedules_activations_and_layer_lists_never_panic(s in "[ -~]{0,40}") {
        // A spec names files that do not exist here: only the parse is exercised.
        let _ = load_spec(&format!("csv:/nonexistent/{s}"));
        let _ = load_spec(&s.replace('/', "_"));
        if let Err(e) = s.parse::<Schedule>() {
            prop_assert!(!e.to_string().is_empty());
        }
        let _ = s.parse::<Activation>();
        if let Err(e) = gpumlp::model::parse_layer_sizes(&s) {
            prop_assert!(e.to_string().contains("layer size") || e.to_string().contains("empty"), "{e}");
        }
    }

    #[test]
    fn schedule_and_activation_forms_parse_or_say_why(
        kind in prop::sample::select(vec!["exp", "step", "invscaling", "leaky_relu", "constant"]),
        a in any::<f64>(), b in any::<f64>()
    ) {
        let text = format!("{kind}:{a}:{b}");
        let one = format!("{kind}:{a}");
        for t in [text, one] {
            let _ = t.parse::<Schedule>();
            let _ = t.parse::<Activation>();
        }
    }
}
