use super::*;

/// Every test here writes through the process-wide registry of pending temporaries, which one
/// test empties: they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_write_that_fails_half_way_keeps_the_old_file_and_leaves_no_temporary() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, b"the good checkpoint").unwrap();
    let err = atomic_write_with(&path, WriteOptions::default(), |f| {
        f.write_all(b"half of a new ")?;
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"the good checkpoint");
    assert_eq!(entries(dir.path()), ["model.safetensors"]);
    atomic_write(&path, b"new").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!(entries(dir.path()), ["model.safetensors"]);
}

#[test]
fn check_writable_refuses_what_cannot_be_written() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let opts = WriteOptions::default();
    let e = check_writable(&file.join("m.safetensors"), opts).unwrap_err();
    assert!(e.to_string().contains("not a folder"), "{e}");
    let e = check_writable(dir.path(), opts).unwrap_err();
    assert!(e.to_string().contains("is a folder"), "{e}");
    let e = check_writable(&dir.path().join("absent/m.safetensors"), opts).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(check_writable(&dir.path().join("m.safetensors"), opts).is_ok());
    assert_eq!(entries(dir.path()), ["a-file"], "the probe was not removed");
}

#[cfg(unix)]
#[test]
fn special_files_are_never_replaced() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for special in [Path::new("/dev/null"), fifo.as_path()] {
        let e = atomic_write(special, b"x").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = check_writable(special, WriteOptions::default()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

#[cfg(unix)]
#[test]
fn a_link_is_written_through_and_stays_a_link() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.csv");
    let link = dir.path().join("link.csv");
    std::fs::write(&real, b"old").unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    atomic_write(&link, b"new").unwrap();
    assert_eq!(std::fs::read(&real).unwrap(), b"new");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[cfg(unix)]
#[test]
fn the_target_keeps_its_mode() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private.safetensors");
    std::fs::write(&private, b"secret").unwrap();
    set_mode(&private, 0o600);
    atomic_write(&private, b"new secret").unwrap();
    assert_eq!(mode(&private), 0o600);
    let shared = dir.path().join("shared.csv");
    std::fs::write(&shared, b"x").unwrap();
    set_mode(&shared, 0o664);
    atomic_write(&shared, b"y").unwrap();
    assert_eq!(mode(&shared), 0o664);
}

#[cfg(unix)]
#[test]
fn a_read_only_target_is_replaced_only_when_asked() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frozen.csv");
    std::fs::write(&path, b"keep me").unwrap();
    set_mode(&path, 0o444);
    let e = atomic_write(&path, b"x").unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    let force = WriteOptions {
        replace_read_only: true,
    };
    atomic_write_with(&path, force, |f| f.write_all(b"replaced")).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"replaced");
    assert_eq!(mode(&path), 0o444, "still read-only after a forced write");
}

#[test]
fn stale_temporaries_of_dead_processes_are_removed_by_the_next_write() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    // No process has these ids (Linux caps pids at 2^22).
    let stale = [
        ".m.safetensors.tmp-999999991",
        ".m.safetensors.tmp-999999992.safetensors",
    ];
    for s in stale {
        std::fs::write(dir.path().join(s), b"half a checkpoint").unwrap();
    }
    let unrelated = ".m.safetensors.tmp-notapid";
    std::fs::write(dir.path().join(unrelated), b"someone else's").unwrap();
    atomic_write(&path, b"new").unwrap();
    assert_eq!(entries(dir.path()), [unrelated, "m.safetensors"]);
}

#[test]
fn pending_temporaries_are_removed_on_request() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.csv");
    std::fs::write(&path, b"old").unwrap();
    let mut removed = Vec::new();
    // An interruption in the middle of a write: the handler removes the temporary.
    let e = atomic_write_with(&path, WriteOptions::default(), |f| {
        f.write_all(b"half")?;
        removed = remove_pending_temporaries();
        Err(std::io::Error::other("interrupted"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("interrupted"));
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(entries(dir.path()), ["m.csv"]);
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
}

#[test]
fn outputs_may_not_name_each_other_or_an_input() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("data.csv"), b"1,2\n").unwrap();
    let e = check_distinct(&[("--out", &p("x")), ("--metrics", &p("x"))], &[]).unwrap_err();
    assert!(e.to_string().contains("--out and --metrics"), "{e}");
    // The same file by another spelling of its path.
    let other = dir.path().join(".").join("data.csv");
    let e = check_distinct(&[("--out", &other)], &[("--data", &p("data.csv"))]).unwrap_err();
    assert!(e.to_string().contains("input given as --data"), "{e}");
    #[cfg(unix)]
    {
        std::fs::hard_link(p("data.csv"), p("alias.csv")).unwrap();
        let e = check_distinct(&[("--out", &p("alias.csv"))], &[("--data", &p("data.csv"))]);
        assert!(e.is_err(), "a hard link is the same file");
    }
    check_distinct(
        &[("--out", &p("m.safetensors")), ("--metrics", &p("m.jsonl"))],
        &[("--data", &p("data.csv"))],
    )
    .unwrap();
}
