//! Data loaders, specs, split and normalization: every loader and every error it promises.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use gpumlp::data::idx::fashion_mnist_from;
use gpumlp::data::{
    digits, known_range, load_csv, load_csv_features, load_idx, load_spec, CsvTarget,
    Normalization, NormalizeMethod,
};
use gpumlp::{Dataset, Targets};
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

const LAST: CsvTarget = CsvTarget::Label { column: None };

fn label(c: &str) -> CsvTarget {
    CsvTarget::Label {
        column: Some(c.into()),
    }
}

fn csv(text: &str, target: CsvTarget) -> gpumlp::Result<Dataset> {
    let dir = tempfile::tempdir().unwrap();
    load_csv(&write(&dir, "d.csv", text.as_bytes()), target)
}

/// The error's message, which must contain every one of `parts`.
fn err_has(r: gpumlp::Result<impl std::fmt::Debug>, parts: &[&str]) -> String {
    let msg = r.expect_err("expected an error").to_string();
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
    msg
}

fn classes(d: &Dataset) -> (&[u32], usize) {
    match &d.targets {
        Targets::Classes { labels, classes } => (labels, *classes),
        t => panic!("expected classes, got {t:?}"),
    }
}

#[test]
fn csv_of_features_only_for_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write(&dir, "f.csv", b"a,b,c\n1,2,3\n4,5,6\n");
    assert_eq!(
        load_csv_features(&plain).unwrap(),
        (vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3)
    );
    let packed = write(&dir, "f.csv.gz", &gz(b"7\n8\n"));
    assert_eq!(load_csv_features(&packed).unwrap(), (vec![7.0, 8.0], 1));
    let bad = write(&dir, "nan.csv", b"1,2\n3,NaN\n");
    err_has(load_csv_features(&bad), &["NaN"]);
    // A dataset (for training or evaluation) still needs a target column.
    err_has(csv("1,2\n", CsvTarget::None), &["target"]);
}

#[test]
fn csv_without_header_last_column_is_label() {
    let d = csv("1,2,0\n3,4.5,2\r\n\n-5,6e1,1\n", LAST).unwrap();
    assert_eq!((d.rows, d.cols), (3, 2));
    assert_eq!(d.features, vec![1.0, 2.0, 3.0, 4.5, -5.0, 60.0]);
    assert_eq!(classes(&d), (&[0, 2, 1][..], 3));
}

#[test]
fn csv_with_header_label_by_name_and_index() {
    let text = "\"a\", y ,b\n1,1,2\n3,0.0,4\n";
    let by_name = csv(text, label("y")).unwrap();
    let by_index = csv(text, label("1")).unwrap();
    assert_eq!(by_name, by_index);
    assert_eq!((by_name.rows, by_name.cols), (2, 2));
    assert_eq!(by_name.features, vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(classes(&by_name), (&[1, 0][..], 2));
    // Index on a file without a header; the label "2.0" counts as 2.
    let d = csv("7,1,8\n9,2.0,10\n", label("1")).unwrap();
    assert_eq!(classes(&d), (&[1, 2][..], 3));
    assert_eq!(d.features, vec![7.0, 8.0, 9.0, 10.0]);
    // A header with an empty first name (as pandas writes) is still a header.
    assert_eq!(csv(",x,label\n0,1,1\n", LAST).unwrap().rows, 1);
}

#[test]
fn csv_targets_k() {
    let d = csv("x1,x2,t1,t2\n1,2,0.5,-1\n3,4,1.5,2\n", values(2)).unwrap();
    assert_eq!((d.rows, d.cols), (2, 2));
    assert_eq!(d.features, vec![1.0, 2.0, 3.0, 4.0]);
    let values = vec![0.5, -1.0, 1.5, 2.0];
    assert_eq!(d.targets, Targets::Values { values, width: 2 });
}

fn values(count: usize) -> CsvTarget {
    CsvTarget::Values { count }
}

/// Each bad CSV, how it is loaded, and what its error message must say.
#[rustfmt::skip]
fn bad_csvs() -> Vec<(&'static str, CsvTarget, Vec<&'static str>)> {
    vec![
        // Rows with the wrong number of fields name the (1-based) line, blank lines included.
        ("1,2,0\n3,4,1\n\n5,6\n", LAST, vec!["d.csv", "line 4", "expected 3", "found 2"]),
        // Non-numbers name line and column (1-based), and the header name when there is one.
        ("1,2,0\n3,abc,1\n", LAST, vec!["line 2, column 2", "\"abc\" is not a number"]),
        ("f,g,y\n1,2,0\n3,x,1\n", LAST, vec!["line 3, column 2 (\"g\")"]),
        ("1,,0\n", LAST, vec!["line 1, column 2", "empty"]),
        // NaN and infinity, in features and in targets.
        ("1,2,0\nNaN,4,1\n", LAST, vec!["line 2, column 1", "not a finite number"]),
        ("1,inf,0\n", LAST, vec!["line 1, column 2", "not a finite number"]),
        ("1,2,-inf\n", values(1), vec!["line 1, column 3", "not a finite number"]),
        ("1,1e39,0\n", LAST, vec!["line 1, column 2", "too large for a 32-bit float"]),
        // Labels must be non-negative whole numbers.
        ("1,2,0\n3,4,2.5\n", LAST, vec!["line 2, column 3", "\"2.5\"", "whole number"]),
        ("1,2,-1\n", LAST, vec!["line 1, column 3", "negative"]),
        ("1,2,0\n1,2,cat\n", LAST, vec!["line 2, column 3", "\"cat\"", "not a number"]),
        ("1,2,nan\n", LAST, vec!["line 1, column 3", "not finite"]),
        ("1,2,1e9\n", LAST, vec!["line 1, column 3", "too large"]),
        // Label columns that do not exist, and too few columns.
        ("a,b,c\n1,2,3\n", label("z"), vec!["no column named \"z\"", "\"a\", \"b\", \"c\""]),
        ("1,2,3\n", label("3"), vec!["index 3 is out of range", "3 columns"]),
        ("1,2,3\n", label("z"), vec!["no header row", "0-based index"]),
        ("1\n2\n", LAST, vec!["1 column", "feature column and one label column"]),
        ("1,2\n", values(2), vec!["no feature column"]),
        ("1,2\n", values(0), vec!["at least 1"]),
        // Files without data.
        ("", LAST, vec!["empty"]),
        ("\n  \n", LAST, vec!["empty"]),
        ("a,b,c\n", LAST, vec!["header row but no data rows"]),
    ]
}

#[test]
fn csv_errors_name_line_and_column() {
    for (text, target, parts) in bad_csvs() {
        let msg = match csv(text, target.clone()) {
            Ok(d) => panic!(
                "{text:?} {target:?} loaded {} rows instead of failing",
                d.rows
            ),
            Err(e) => e.to_string(),
        };
        assert!(
            parts.iter().all(|p| msg.contains(p)),
            "{text:?} {target:?}: {msg} lacks {parts:?}"
        );
    }
}

#[test]
fn csv_first_row_is_a_header_only_when_none_of_its_fields_is_a_number() {
    // A first row that mixes numbers and text is data with a bad field: reported with line and
    // column, never silently dropped as a header.
    for (text, target, parts) in [
        (
            "1,x,0\n2,3,1\n",
            LAST,
            vec!["line 1, column 2", "\"x\" is not a number", "header"],
        ),
        (
            "x,1,0\n2,3,1\n",
            LAST,
            vec!["line 1, column 1", "\"x\"", "rename"],
        ),
        // A label column that starts with a name holds names (string labels): a number in it
        // later is an error, with its line; a blank line before the first row counts.
        (
            "\n1,2,y\n2,3,1\n",
            LAST,
            vec![
                "line 3, column 3",
                "class label \"1\"",
                "all numbers or all names",
            ],
        ),
        // A header with a numeric column name is read as data.
        (
            "id,2019,label\n1,2,0\n",
            LAST,
            vec!["line 1, column 1", "\"id\"", "rename"],
        ),
        ("a,b,t\n1,2,0.5\n", values(1), vec![]),
    ] {
        let r = csv(text, target.clone());
        if parts.is_empty() {
            assert_eq!(r.unwrap().rows, 1, "{text:?}");
            continue;
        }
        err_has(r, &parts);
    }
    // Only the first row gets the header hint: a later bad row gets the usual message.
    let msg = err_has(csv("1,2,0\n1,x,0\n", LAST), &["line 2, column 2"]);
    assert!(!msg.contains("header only when"), "{msg}");
    // Headers: every field text (quoted, spaced or empty), and the data all numbers.
    for text in [
        "a,b,label\n1,2,0\n3,4,1\n",
        "\"a\", \"b\" ,label\n1,2,0\n3,4,1\n",
        ",b,label\n1,2,0\n3,4,1\n",
    ] {
        let d = csv(text, LAST).unwrap();
        assert_eq!((d.rows, d.cols), (2, 2), "{text:?}");
        assert_eq!(d.features, vec![1.0, 2.0, 3.0, 4.0], "{text:?}");
    }
    // Without a header, the first row is data and counted.
    let d = csv("1,2,0\n3,4,1\n", LAST).unwrap();
    assert_eq!(d.rows, 2);
}

#[test]
fn csv_missing_files() {
    err_has(
        load_csv(Path::new("/nonexistent/x.csv"), LAST),
        &["/nonexistent/x.csv", "no such file"],
    );
    let dir = tempfile::tempdir().unwrap();
    err_has(load_csv(dir.path(), LAST), &["directory"]);
}

#[test]
fn csv_gzip_and_corrupt_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let text = b"a,b,y\n1,2,1\n3,4,0\n";
    let plain = load_csv(&write(&dir, "p.csv", text), LAST).unwrap();
    assert_eq!(
        load_csv(&write(&dir, "g.csv.gz", &gz(text)), LAST).unwrap(),
        plain
    );
    // Truncated gzip, garbled gzip, and a .gz name on data that is not gzip.
    let z = gz(&text.repeat(50));
    err_has(
        load_csv(&write(&dir, "t.csv.gz", &z[..z.len() / 2]), LAST),
        &["t.csv.gz", "gzip"],
    );
    let mut bad = z.clone();
    bad[12..40].fill(0xAA);
    err_has(
        load_csv(&write(&dir, "b.csv.gz", &bad), LAST),
        &["b.csv.gz", "gzip"],
    );
    err_has(
        load_csv(&write(&dir, "n.csv.gz", b"garbage\x00"), LAST),
        &["gzip magic"],
    );
}

/// An IDX file: the magic, the dimensions (big-endian u32), then the data.
fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
    b.extend_from_slice(data);
    b
}

fn images_and_labels() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..3 * 2 * 3).map(|i| (i * 15) as u8).collect();
    (
        idx(0x803, &[3, 2, 3], &pixels),
        idx(0x801, &[3], &[7, 0, 9]),
    )
}

#[test]
fn idx_plain_and_gzip_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (im, lb) = images_and_labels();
    let d = load_idx(&write(&dir, "i", &im), &write(&dir, "l", &lb)).unwrap();
    assert_eq!((d.rows, d.cols), (3, 6));
    assert_eq!(&d.features[..4], &[0.0, 15.0, 30.0, 45.0]);
    assert_eq!(d.features[17], 255.0);
    assert_eq!(classes(&d), (&[7, 0, 9][..], 10));
    // gzip is detected by content, not by name.
    let g = load_idx(
        &write(&dir, "ig", &gz(&im)),
        &write(&dir, "lg.gz", &gz(&lb)),
    )
    .unwrap();
    assert_eq!(g, d);
    // A label of 10 or more gives max + 1 classes.
    let d = load_idx(
        &write(&dir, "i", &im),
        &write(&dir, "l2", &idx(0x801, &[3], &[1, 12, 0])),
    )
    .unwrap();
    assert_eq!(classes(&d).1, 13);
}

#[test]
#[rustfmt::skip]
fn idx_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (im, lb) = images_and_labels();
    let (i, l) = (write(&dir, "i", &im), write(&dir, "l", &lb));
    let z = gz(&im);
    let cases = [
        (write(&dir, "m", &idx(0x804, &[3, 2, 3, 1], &[0; 18])), l.clone(),
            vec!["m:", "magic number is 0x00000804", "expected 0x00000803"]),
        (l.clone(), i.clone(), vec!["swapped"]),
        (write(&dir, "s", &im[..im.len() - 5]), l.clone(),
            vec!["s:", "truncated", "expected 34 bytes", "found 29"]),
        (write(&dir, "h", &im[..6]), l.clone(), vec!["truncated", "header"]),
        (write(&dir, "x", &[&im[..], &[0]].concat()), l.clone(), vec!["found 35", "extra data"]),
        (i.clone(), write(&dir, "two", &idx(0x801, &[2], &[1, 2])), vec!["3 images", "2 labels"]),
        (write(&dir, "c.gz", &z[..z.len() - 10]), l.clone(), vec!["c.gz", "corrupt or truncated gzip"]),
        (dir.path().join("nope"), l.clone(), vec!["nope", "no such file"]),
        (i.clone(), dir.path().join("nolabels"), vec!["nolabels", "no such file"]),
    ];
    for (images, labels, parts) in cases {
        let msg = load_idx(&images, &labels).expect_err("expected an error").to_string();
        assert!(parts.iter().all(|p| msg.contains(p)), "{msg} lacks {parts:?}");
    }
}

#[test]
fn fashion_mnist_files_by_name() {
    let dir = tempfile::tempdir().unwrap();
    err_has(
        fashion_mnist_from(dir.path(), false),
        &["apt-get install -y dataset-fashion-mnist"],
    );
    let (im, lb) = images_and_labels();
    write(&dir, "t10k-images-idx3-ubyte.gz", &gz(&im));
    write(&dir, "t10k-labels-idx1-ubyte", &lb);
    assert_eq!(fashion_mnist_from(dir.path(), true).unwrap().rows, 3);
    err_has(
        fashion_mnist_from(dir.path(), false),
        &["train-images-idx3-ubyte"],
    );
}

#[test]
fn digits_is_the_8x8_set() {
    let d = digits().unwrap();
    assert_eq!((d.rows, d.cols), (1797, 64));
    let (labels, classes) = classes(&d);
    assert_eq!(classes, 10);
    assert!((0..10).all(|c| labels.contains(&c)));
    assert!(d
        .features
        .iter()
        .all(|&x| (0.0..=16.0).contains(&x) && x.fract() == 0.0));
    assert_eq!(
        d.features.iter().cloned().fold(0.0, f32::max),
        gpumlp::data::DIGITS_RANGE
    );
}

#[test]
fn specs() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "s.csv", b"a,b,c,d\n1,2,1,0\n3,4,0,1\n");
    let p = p.to_str().unwrap();
    assert_eq!(load_spec("digits").unwrap().rows, 1797);
    assert_eq!(classes(&load_spec(&format!("csv:{p}")).unwrap()).1, 2);
    let d = load_spec(&format!("csv:{p}:label=c")).unwrap();
    assert_eq!((d.cols, classes(&d).1), (3, 2));
    assert_eq!(load_spec(&format!("csv:{p}:label=2")).unwrap(), d);
    let d = load_spec(&format!("csv:{p}:targets=2")).unwrap();
    assert_eq!((d.cols, d.classes()), (2, None));
    let (im, lb) = images_and_labels();
    let (i, l) = (write(&dir, "i", &im), write(&dir, "l", &lb));
    let d = load_spec(&format!("idx:{},{}", i.display(), l.display())).unwrap();
    assert_eq!(d.rows, 3);
    for s in ["fashion-mnist", "fashion-mnist-test"] {
        match load_spec(s) {
            Ok(d) => assert_eq!(
                (d.rows, d.cols),
                (if s.ends_with("test") { 10000 } else { 60000 }, 784)
            ),
            Err(e) => assert!(
                e.to_string()
                    .contains("apt-get install -y dataset-fashion-mnist"),
                "{e}"
            ),
        }
    }
    let forms = [
        "digits",
        "csv:PATH:label=COL",
        "idx:IMAGES_FILE,LABELS_FILE",
        "fashion-mnist-test",
    ];
    err_has(
        load_spec("mnist"),
        &[&["unknown data spec"][..], &forms].concat(),
    );
    err_has(load_spec("x.csv"), &["csv:x.csv"]);
    err_has(load_spec(&format!("csv:{p}:targets=0")), &["at least 1"]);
    err_has(load_spec(&format!("csv:{p}:label=")), &["label= needs"]);
    err_has(load_spec("csv:"), &["path is missing"]);
    err_has(load_spec("idx:onlyone"), &["IMAGES_FILE,LABELS_FILE"]);
    assert_eq!(known_range("digits"), Some(16.0));
    assert_eq!(known_range("idx:a,b"), Some(255.0));
    assert_eq!(known_range("fashion-mnist"), Some(255.0));
    assert_eq!(known_range("fashion-mnist-test"), Some(255.0));
    assert_eq!(known_range("csv:x.csv"), None);
}

fn numbered(rows: usize) -> Dataset {
    let features = (0..rows * 2).map(|i| i as f32).collect();
    Dataset::from_classes(features, 2, (0..rows as u32).map(|r| r % 3).collect(), 3).unwrap()
}

#[test]
fn split_sizes_and_determinism() {
    let d = numbered(10);
    let (train, val) = d.split(0.3, 7).unwrap();
    let val = val.unwrap();
    assert_eq!((train.rows, val.rows), (7, 3));
    assert_eq!(d.split(0.3, 7).unwrap(), (train.clone(), Some(val.clone())));
    assert_ne!(d.split(0.3, 8).unwrap().1.unwrap(), val);
    // Together the parts hold every row once, with its label.
    let mut firsts: Vec<f32> = train
        .features
        .iter()
        .chain(&val.features)
        .step_by(2)
        .cloned()
        .collect();
    firsts.sort_by(f32::total_cmp);
    assert_eq!(firsts, (0..10).map(|r| (2 * r) as f32).collect::<Vec<_>>());
    let (l, _) = classes(&val);
    assert!(val
        .features
        .chunks(2)
        .zip(l)
        .all(|(f, &y)| y == (f[0] as u32 / 2) % 3));
    assert_eq!(d.split(0.0, 1).unwrap(), (d.clone(), None));
    assert_eq!(numbered(3).split(0.1, 1).unwrap().1, None);
    assert_eq!(d.split(0.25, 1).unwrap().1.unwrap().rows, 3); // round(2.5) = 3
    for f in [1.0, -0.1, f32::NAN, 0.97] {
        assert!(d.split(f, 1).is_err(), "fraction {f}");
    }
}

#[test]
fn validation_split_keeps_class_proportions() {
    // 90 rows of class 0, 10 of class 1: 20% held out is 18 and 2, whatever the seed.
    let labels: Vec<u32> = (0..100).map(|r| u32::from(r >= 90)).collect();
    let d = Dataset::from_classes((0..100).map(|i| i as f32).collect(), 1, labels, 2).unwrap();
    for seed in 0..20 {
        let (train, val) = d.split(0.2, seed).unwrap();
        let count = |ds: &Dataset, c: u32| classes(ds).0.iter().filter(|&&l| l == c).count();
        let val = val.unwrap();
        assert_eq!((count(&val, 0), count(&val, 1)), (18, 2), "seed {seed}");
        assert_eq!((count(&train, 0), count(&train, 1)), (72, 8), "seed {seed}");
    }
    // Rounding: 3 classes of 7 rows, 10% of 21 rows = 2 held out, from two classes.
    let labels: Vec<u32> = (0..21).map(|r| r % 3).collect();
    let d = Dataset::from_classes(vec![0.0; 21], 1, labels, 3).unwrap();
    let val = d.split(0.1, 1).unwrap().1.unwrap();
    assert_eq!(val.rows, 2);
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 + 1e-5 * y.abs(),
            "[{i}]: {x} vs {y}; {a:?} vs {b:?}"
        );
    }
}

#[test]
fn normalization_methods() {
    // Columns: [1, 3, 5, 7] (mean 4, std √5), [-4, 2, 0, 0] (max |x| 4), [2, 2, 2, 2] (constant).
    let f = vec![1., -4., 2., 3., 2., 2., 5., 0., 2., 7., 0., 2.];
    let data = Dataset::from_classes(f.clone(), 3, vec![0, 1, 0, 1], 2).unwrap();

    let none = Normalization::fit(NormalizeMethod::None, &data, Some(9.0));
    assert_eq!(none, Normalization::identity(3));
    let mut d = data.clone();
    none.apply(&mut d).unwrap();
    assert_eq!(d.features, f);

    let unit = Normalization::fit(NormalizeMethod::Unit, &data, None);
    assert_eq!(
        (unit.shift, unit.scale.clone()),
        (vec![0.0; 3], vec![7.0, 4.0, 2.0])
    );
    let zeros = Dataset::from_classes(vec![0.0, 1.0], 2, vec![0], 1).unwrap();
    assert_eq!(
        Normalization::fit(NormalizeMethod::Unit, &zeros, None).scale,
        vec![1.0, 1.0]
    );
    let unit16 = Normalization::fit(NormalizeMethod::Unit, &data, Some(16.0));
    assert_eq!(unit16.scale, vec![16.0; 3]);
    let mut d = data.clone();
    unit16.apply(&mut d).unwrap();
    close(&d.features, &f.iter().map(|x| x / 16.0).collect::<Vec<_>>());

    let std = Normalization::fit(NormalizeMethod::Standard, &data, Some(16.0));
    let s1 = 5f32.sqrt();
    // Column 2: mean -0.5, deviations [-3.5, 2.5, 0.5, 0.5], variance 19/4.
    close(&std.shift, &[4.0, -0.5, 2.0]);
    close(&std.scale, &[s1, 4.75f32.sqrt(), 1.0]);
    let mut d = data.clone();
    std.apply(&mut d).unwrap();
    let z: Vec<f32> = d.features.chunks(3).map(|r| r[0]).collect();
    close(&z, &[-3.0 / s1, -1.0 / s1, 1.0 / s1, 3.0 / s1]);
    assert!(d.features.chunks(3).all(|r| r[2] == 0.0));

    // A column-count mismatch is an error; names round-trip.
    let mut narrow = zeros.clone();
    assert!(std
        .apply(&mut narrow)
        .unwrap_err()
        .to_string()
        .contains("3 feature columns"));
    for m in [
        NormalizeMethod::None,
        NormalizeMethod::Unit,
        NormalizeMethod::Standard,
    ] {
        assert_eq!(m.name().parse::<NormalizeMethod>().unwrap(), m);
    }
    err_has(
        "minmax".parse::<NormalizeMethod>(),
        &["none, unit or standard"],
    );
}
