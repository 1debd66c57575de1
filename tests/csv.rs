//! Real-world CSV through the `csv` crate: quoted fields with commas, quotes and newlines,
//! delimiters, the header setting, string labels, and the line-and-column errors kept.

use std::io::Read;
use std::path::Path;

use gpumlp::data::csv::read_csv;
use gpumlp::data::{load_csv_with, CsvHeader, CsvOptions, CsvTarget};
use gpumlp::{Dataset, Error, Targets};

const LAST: CsvTarget = CsvTarget::Label { column: None };

fn options(delimiter: u8, header: CsvHeader) -> CsvOptions {
    let mut o = CsvOptions::default();
    o.delimiter = delimiter;
    o.header = header;
    o
}

fn csv_with(text: &str, target: CsvTarget, o: &CsvOptions) -> gpumlp::Result<Dataset> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.csv");
    std::fs::write(&path, text).unwrap();
    load_csv_with(&path, target, o)
}

fn csv(text: &str, target: CsvTarget) -> gpumlp::Result<Dataset> {
    csv_with(text, target, &CsvOptions::default())
}

fn names(d: &Dataset) -> Vec<String> {
    d.class_names.clone().expect("string labels")
}

fn labels(d: &Dataset) -> Vec<u32> {
    match &d.targets {
        Targets::Classes { labels, .. } => labels.clone(),
        t => panic!("expected classes, got {t:?}"),
    }
}

#[test]
fn quoted_fields_hold_commas_quotes_and_newlines() {
    // A quoted label with a comma, one with a doubled quote, one spanning two lines; quoted
    // numbers are numbers.
    let text = "x1,x2,species\n\
                1,\"2\",\"setosa, wild\"\n\
                3,4,\"the \"\"big\"\" one\"\n\
                5,6,\"two\nlines\"\n\
                7,8,\"setosa, wild\"\n";
    let d = csv(text, LAST).unwrap();
    assert_eq!((d.rows, d.cols), (4, 2));
    assert_eq!(d.features, vec![1., 2., 3., 4., 5., 6., 7., 8.]);
    // Names are sorted into the vocabulary; rows 0 and 3 share one.
    let vocab = names(&d);
    let named: Vec<&str> = labels(&d)
        .iter()
        .map(|&l| vocab[l as usize].as_str())
        .collect();
    assert_eq!(
        named,
        [
            "setosa, wild",
            "the \"big\" one",
            "two\nlines",
            "setosa, wild"
        ]
    );
}

#[test]
fn errors_keep_line_and_column_across_quoted_newlines_and_blank_lines() {
    // The record on line 5 (after a record spanning lines 1-2, one on line 3 and a blank line) has a bad
    // second field.
    let text = "1,\"2\n\",x\n2,3,y\n\n4,oops,z\n";
    let e = csv(text, CsvTarget::Label { column: None }).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("line 5, column 2"), "{msg}");
    assert!(
        matches!(
            e,
            Error::Format {
                line: Some(5),
                column: Some(2),
                ..
            }
        ),
        "{e:?}"
    );
    // A row with too few fields names its line, and the whole row (no column).
    let e = csv("1,2,a\n\n\n3,4\n", LAST).unwrap_err();
    assert!(
        e.to_string()
            .contains("line 4: expected 3 comma-separated fields"),
        "{e}"
    );
    assert!(
        matches!(
            e,
            Error::Format {
                line: Some(4),
                column: None,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn delimiters_semicolon_and_tab() {
    let semi = csv_with(
        "a;b;label\n1,5;2;cat\n3;4;dog\n",
        LAST,
        &options(b';', CsvHeader::Auto),
    );
    // "1,5" is one field with a ';' delimiter, and not a number.
    let msg = semi.unwrap_err().to_string();
    assert!(
        msg.contains("line 2, column 1") && msg.contains("\"1,5\""),
        "{msg}"
    );
    let tsv = csv_with(
        "a\tb\tlabel\n1\t2\tcat\n3\t4\tdog\n",
        LAST,
        &options(b'\t', CsvHeader::Auto),
    )
    .unwrap();
    assert_eq!(tsv.features, vec![1., 2., 3., 4.]);
    assert_eq!(names(&tsv), ["cat", "dog"]);
    // A comma file read with tabs is one column per row: said in the delimiter's words.
    let e = csv_with("1\t2\t0\n3,4,1\n", LAST, &options(b'\t', CsvHeader::Auto)).unwrap_err();
    assert!(
        e.to_string()
            .contains("line 2: expected 3 tab-separated fields"),
        "{e}"
    );
    assert_eq!(CsvOptions::parse_delimiter("\\t").unwrap(), b'\t');
    assert_eq!(CsvOptions::parse_delimiter("tab").unwrap(), b'\t');
    assert_eq!(CsvOptions::parse_delimiter(";").unwrap(), b';');
    for bad in ["", ";;", "\"", "a", "é"] {
        assert!(
            CsvOptions::parse_delimiter(bad).is_err(),
            "{bad:?} was accepted"
        );
    }
}

#[test]
fn header_on_off_and_auto() {
    // auto: a data row whose label is a name is data, not a header (only features decide).
    let d = csv("1,2,cat\n3,4,dog\n", LAST).unwrap();
    assert_eq!(d.rows, 2);
    assert_eq!(names(&d), ["cat", "dog"]);
    // auto: a header row of names is a header.
    let d = csv("a,b,label\n1,2,cat\n3,4,dog\n", LAST).unwrap();
    assert_eq!(d.rows, 2);
    // on: a header with a numeric column name is a header.
    let on = options(b',', CsvHeader::On);
    let d = csv_with("id,2019,label\n1,2,0\n", LAST, &on).unwrap();
    assert_eq!((d.rows, d.features.clone()), (1, vec![1., 2.]));
    // ... and under auto it is data, whose error suggests turning the header on.
    let e = csv("id,2019,label\n1,2,0\n", LAST).unwrap_err().to_string();
    assert!(e.contains("header on"), "{e}");
    // off: a first row of text is data, with the usual error and no header hint.
    let off = options(b',', CsvHeader::Off);
    let e = csv_with("a,b,label\n1,2,0\n", LAST, &off)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 1, column 1") && !e.contains("header on"),
        "{e}"
    );
    // A label column named in a header is found by name under auto, even when the row has a
    // numeric feature name.
    let by_name = CsvTarget::Label {
        column: Some("y".into()),
    };
    let d = csv("2019,y,b\n1,1,2\n3,0,4\n", by_name).unwrap();
    assert_eq!((d.rows, d.features.clone()), (2, vec![1., 2., 3., 4.]));
    assert_eq!("on".parse::<CsvHeader>().unwrap(), CsvHeader::On);
    assert!("yes".parse::<CsvHeader>().is_err());
}

#[test]
fn a_record_that_never_ends_is_bounded() {
    // An unclosed quote, then 70 MiB of short lines: the physical lines are short, the record is
    // not. Read from memory, so nothing is written.
    let open = std::io::Cursor::new(b"1,2,0\n3,\"".to_vec());
    let lines = std::io::repeat(b'\n').take(70 << 20);
    let e = read_csv(open.chain(lines), Path::new("open.csv"), &LAST).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("open.csv") && msg.contains("line 2 is longer than 67108864 bytes"),
        "{msg}"
    );
}
