//! How gpumlp writes the files a user owns, and the promises it keeps about them:
//! - only a regular file or a new path is ever written: a device, FIFO, socket or folder is
//!   refused, and a symbolic link is written through (the link stays, its target is replaced);
//! - every write is atomic: a temporary file in the same folder, synced, then renamed over the
//!   target, so the target holds either the old contents or the new, never a mix;
//! - the target's permission bits (and, where we may, its owner) are kept: a private file
//!   stays private, and the temporary is private while it is written;
//! - a read-only target is refused unless the caller asks to replace it ([`WriteOptions`]);
//! - outputs are checked against each other and against the inputs before any work
//!   ([`check_distinct`]);
//! - a temporary is removed when its write fails, when the process is interrupted (a signal
//!   handler calls [`remove_pending_temporaries`]), and, if a killed process left one, by the
//!   next write to the same path.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a write may replace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Replace a target whose permissions say read-only (`--force` on the command line).
    pub replace_read_only: bool,
}

/// Temporaries being written now, removed by [`remove_pending_temporaries`].
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every temporary file a write in this process has open, so an interrupted process
/// leaves nothing behind; the targets keep their old contents. Meant for a SIGINT/SIGTERM
/// handler (the `gpumlp` command installs one); returns the paths removed.
pub fn remove_pending_temporaries() -> Vec<PathBuf> {
    let pending = match PENDING.lock() {
        Ok(p) => p.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    pending
        .into_iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .collect()
}

fn set_pending(tmp: &Path, pending: bool) {
    let mut list = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    if pending {
        list.push(tmp.to_path_buf());
    } else {
        list.retain(|p| p != tmp);
    }
}

/// The folder `path` will be written in: it must exist and be a folder.
fn parent_dir(path: &Path) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        let why = format!(
            "the folder {} does not exist: create it first",
            dir.display()
        );
        return Err(Error::file(path, why));
    }
    if !dir.is_dir() {
        let why = format!(
            "{} is not a folder, so nothing can be written in it",
            dir.display()
        );
        return Err(Error::file(path, why));
    }
    Ok(dir)
}

/// Checks that `path` may be written and returns the file that will be replaced: `path`
/// itself, or the target of a symbolic link. Refuses a folder, a device, a FIFO or a socket
/// (only a regular file or a new path is ever written), a path in a missing folder, and a
/// read-only file unless `options` allow it.
pub fn output_target(path: &Path, options: WriteOptions) -> Result<PathBuf> {
    if path.file_name().is_none() {
        return Err(Error::file(path, "not a file path: give a file name"));
    }
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(t) => t,
            Err(_) => {
                let why =
                    "is a symbolic link to a missing file: remove the link or give another path";
                return Err(Error::file(path, why));
            }
        },
        _ => path.to_path_buf(),
    };
    parent_dir(&target)?;
    match std::fs::metadata(&target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(target),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.is_dir() => Err(Error::file(path, "is a folder: give a file name inside it")),
        Ok(m) if !m.is_file() => Err(Error::file(
            path,
            "is not a regular file (a device, FIFO or socket): gpumlp writes only regular files or new paths",
        )),
        Ok(m) if m.permissions().readonly() && !options.replace_read_only => Err(Error::file(
            path,
            "is read-only: gpumlp does not replace it unless asked (--force); or give another path",
        )),
        Ok(_) => Ok(target),
    }
}

/// [`output_target`], and that its folder accepts a new file (probed by creating and removing
/// one): the check to run before spending time on work whose result goes to `path`.
pub fn check_writable(path: &Path, options: WriteOptions) -> Result<PathBuf> {
    let target = output_target(path, options)?;
    let dir = parent_dir(&target)?;
    let probe = dir.join(format!(".gpumlp-write-probe-{}", std::process::id()));
    let probed = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    match probed {
        Ok(f) => {
            drop(f);
            let _ = std::fs::remove_file(&probe);
            Ok(target)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(target),
        Err(e) => {
            let why = format!(
                "cannot write in the folder {} ({e}): choose another folder or fix its permissions",
                dir.display()
            );
            Err(Error::file(path, why))
        }
    }
}

/// One name for a file, whichever path reaches it: the canonical path of the file (or of its
/// folder, for a file that does not exist yet).
fn identity(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Some(p);
    }
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::canonicalize(dir).ok().map(|d| d.join(name))
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_: &Path, _: &Path) -> bool {
    false
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (identity(a), identity(b)) {
        (Some(x), Some(y)) if x == y => true,
        _ => same_inode(a, b),
    }
}

/// Refuses two outputs that name the same file, or an output that names an input, before any
/// work is done. Each entry is `(flag, path)`, e.g. `("--out", "m.safetensors")`; paths are
/// compared canonically (and by inode on Unix: hard links are the same file).
pub fn check_distinct(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<()> {
    for (i, (flag, path)) in outputs.iter().enumerate() {
        for (other, other_path) in &outputs[i + 1..] {
            if same_file(path, other_path) {
                let why =
                    format!("{flag} and {other} name the same file: give each output its own path");
                return Err(Error::file(path, why));
            }
        }
        for (input, input_path) in inputs {
            if same_file(path, input_path) {
                let why = format!(
                    "{flag} names the input given as {input}: writing it would destroy that input; choose another path"
                );
                return Err(Error::file(path, why));
            }
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically with the default [`WriteOptions`].
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, WriteOptions::default(), |f| f.write_all(bytes))
}

/// Writes `path` atomically with the contents `fill` writes (see the module's promises). On
/// any error the temporary is removed and the target is left as it was.
pub fn atomic_write_with(
    path: &Path,
    options: WriteOptions,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    atomic_write_file(path, options, |tmp| {
        let mut f = std::fs::OpenOptions::new().write(true).open(tmp)?;
        fill(&mut f)
    })
}

/// Like [`atomic_write_with`], for writers that open a path themselves (a plotting library):
/// `produce` writes the file at the path it is given, a private temporary beside `path`.
pub fn atomic_write_file(
    path: &Path,
    options: WriteOptions,
    produce: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    let target = output_target(path, options)?;
    let dir = parent_dir(&target)?;
    let name = target
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path"))?
        .to_string_lossy()
        .to_string();
    remove_stale_temporaries(&dir, &name);
    let tmp = dir.join(temporary_name(&name, std::process::id()));
    let previous = std::fs::metadata(&target).ok();
    set_pending(&tmp, true);
    let result = (|| {
        let _ = std::fs::remove_file(&tmp); // one of ours from an earlier failed attempt
        drop(create_private(&tmp)?);
        produce(&tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        keep_protections(&tmp, previous.as_ref())?;
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    set_pending(&tmp, false);
    result.map_err(|e| Error::io(path, e))
}

/// `.NAME.tmp-PID[.EXT]`: hidden, beside the target, ours by its shape, and ending in the
/// target's extension (image encoders choose their format by it).
fn temporary_name(name: &str, pid: u32) -> String {
    match Path::new(name).extension() {
        Some(ext) => format!(".{name}.tmp-{pid}.{}", ext.to_string_lossy()),
        None => format!(".{name}.tmp-{pid}"),
    }
}

/// A new file only its owner can read while it is written (never follows a planted link).
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    open.open(path)
}

/// Gives the finished temporary the replaced file's permissions and (where allowed) owner; a
/// new file gets the usual permissions of a created file.
fn keep_protections(tmp: &Path, previous: Option<&std::fs::Metadata>) -> std::io::Result<()> {
    match previous {
        Some(m) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                // Only root may give a file away; for anyone else this fails and is not needed.
                let _ = std::os::unix::fs::chown(tmp, Some(m.uid()), Some(m.gid()));
            }
            std::fs::set_permissions(tmp, m.permissions())
        }
        None => std::fs::set_permissions(tmp, default_permissions()?),
    }
}

/// What a plain `File::create` would give here (0666 less the umask on Unix).
fn default_permissions() -> std::io::Result<std::fs::Permissions> {
    let probe = std::env::temp_dir().join(format!(".gpumlp-mode-{}", std::process::id()));
    let _ = std::fs::remove_file(&probe);
    let f = std::fs::File::create(&probe)?;
    let permissions = f.metadata()?.permissions();
    drop(f);
    let _ = std::fs::remove_file(&probe);
    Ok(permissions)
}

/// Removes temporaries of `name` that a process that no longer runs left in `dir` (a write
/// killed by SIGKILL or a power cut). A process's liveness is read from `/proc`; where there
/// is none, a temporary counts as stale after a day.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = file_name
            .strip_prefix(&prefix)
            .and_then(|p| p.split('.').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid, &entry.path()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn process_alive(pid: u32, tmp: &Path) -> bool {
    let proc = Path::new("/proc");
    if proc.join("self").exists() {
        return proc.join(pid.to_string()).exists();
    }
    let age = std::fs::metadata(tmp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    !matches!(age, Some(a) if a.as_secs() > 24 * 3600)
}

#[cfg(test)]
mod tests;
