//! The SQLite journal's files: created owner-only whatever the umask, a space
//! reserve that is given up when the disk fills, free space, and whether the file
//! at the journal's path is still the one the process has open.

use std::ffi::CString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the journal and its side files: owner only (they hold Worker keys).
pub(super) const FILE_MODE: u32 = 0o600;

/// Mode of a journal directory the load balancer creates.
pub(super) const DIR_MODE: u32 = 0o700;

/// Bounds of the space kept aside on the journal's file system
/// (`<journal>-reserve`): a sixteenth of the file system, at least 256 KiB and at
/// most 16 MiB. It is deleted when a write finds the disk full, so that the next
/// checkpoint, dispatch marks and deletes of tasks already accepted still fit;
/// written again once there is room.
pub(super) const RESERVE_BYTES: (u64, u64) = (256 << 10, 16 << 20);

/// The reserve for the file system holding `dir` (see [`RESERVE_BYTES`]).
pub(super) fn reserve_bytes(dir: &Path) -> u64 {
    let c = CString::new(dir.as_os_str().as_bytes()).ok();
    // SAFETY: `c` is a valid C string and `s` a plain struct statvfs fills in.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let total = match c {
        Some(c) if unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0 => {
            s.f_blocks as u64 * s.f_frsize as u64
        }
        _ => u64::MAX,
    };
    (total / 16).clamp(RESERVE_BYTES.0, RESERVE_BYTES.1)
}

/// Free space left beyond what a batch of new tasks may take (in the WAL, then in
/// the database when checkpointed), for marks, deletes and heartbeats. 256 KiB.
pub(super) const SLACK_BYTES: u64 = 256 << 10;

/// The directory holding `path` (`.` for a bare file name).
pub(super) fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// True for an error that is about permissions (or a read-only file system),
/// which `--recover` cannot fix.
pub(super) fn is_denied(e: &io::Error) -> bool {
    e.kind() == ErrorKind::PermissionDenied
        || e.kind() == ErrorKind::ReadOnlyFilesystem
        || e.raw_os_error() == Some(libc::EROFS)
}

/// Checks that this process may create files in `dir` (its effective ids).
pub(super) fn writable_dir(dir: &Path) -> io::Result<()> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid C string.
    let r = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) };
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Creates the missing directories up to `dir`, each `0700` whatever the umask.
pub(super) fn create_dirs(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        at = d.parent();
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(DIR_MODE).create(d) {
            Ok(()) => std::fs::set_permissions(d, Permissions::from_mode(DIR_MODE))?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes sure `path` exists and this process may write it: a missing file is
/// created empty, `0600` whatever the umask. SQLite gives the `-wal` and `-shm`
/// files the database's mode, so they are `0600` too. Returns true when created.
pub(super) fn create_private(path: &Path) -> io::Result<bool> {
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path);
    match created {
        Ok(f) => {
            f.set_permissions(Permissions::from_mode(FILE_MODE))?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            OpenOptions::new().write(true).open(path).map(|_| false)
        }
        Err(e) => Err(e),
    }
}

/// Files of the journal that others than its owner may read (`name`, mode).
pub(super) fn readable_by_others(path: &Path) -> Vec<(String, u32)> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| format!("{}{s}", path.display()))
        .filter_map(|f| {
            let mode = std::fs::metadata(&f).ok()?.mode() & 0o777;
            (mode & 0o077 != 0).then_some((f, mode))
        })
        .collect()
}

/// Space this process may still use on the file system holding `dir`, bytes.
pub(super) fn free_bytes(dir: &Path) -> io::Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid C string and `s` a plain struct statvfs fills in.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// Bytes of `path`, 0 when missing.
pub(super) fn len_of(path: &str) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The reserve file, `<journal>-reserve` (see [`RESERVE_BYTES`]).
pub(super) struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    /// The reserve of the journal at `journal`.
    pub(super) fn new(journal: &Path, bytes: u64) -> Reserve {
        Reserve {
            path: PathBuf::from(format!("{}-reserve", journal.display())),
            bytes,
        }
    }

    /// True when the reserve is on disk, whole.
    pub(super) fn is_held(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() == self.bytes)
    }

    /// Writes the reserve (real bytes, fsynced: a sparse or zero-filled file may
    /// take no space), unless it is already whole. A failure leaves no part behind.
    pub(super) fn fill(&self) -> io::Result<()> {
        if self.is_held() {
            return Ok(());
        }
        let tmp = PathBuf::from(format!("{}.tmp", self.path.display()));
        let written =
            write_filler(&tmp, self.bytes).and_then(|()| std::fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Its size, bytes.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Deletes the reserve to give its space to the journal. True if it was there.
    pub(super) fn release(&self) -> bool {
        std::fs::remove_file(&self.path).is_ok()
    }
}

/// Writes `bytes` of incompressible filler to a new `0600` file at `path`.
fn write_filler(path: &Path, bytes: u64) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    let mut block = vec![0u8; 64 << 10];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut left = bytes;
    while left > 0 {
        for b in block.chunks_mut(8) {
            // xorshift64: a file system that compresses cannot shrink it.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// What [`Watch::check`] found at the journal's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Found {
    /// The file open is the file at the path.
    Same,
    /// Nothing is at the path any more (deleted, or its directory moved away).
    Gone(String),
    /// Another file (or directory) is at the path, or it cannot be looked at.
    Replaced(String),
}

/// Keeps a handle on the journal file as opened, to tell whether the file at its
/// path is still that one (same device and inode, not unlinked).
///
/// The handle must outlive the SQLite connection on that file (closing any
/// descriptor of a file drops the process's POSIX locks on it, SQLite's included):
/// drop the connection first, or leak both.
pub(super) struct Watch {
    path: PathBuf,
    dir: PathBuf,
    held: File,
    file: Identity,
    dir_id: Identity,
}

impl Watch {
    /// Watches the file now at `path`.
    pub(super) fn new(path: &Path) -> io::Result<Watch> {
        let held = File::open(path)?;
        let file = Identity::of(&held.metadata()?);
        let dir = dir_of(path);
        let dir_id = Identity::of(&std::fs::metadata(&dir)?);
        Ok(Watch {
            path: path.to_path_buf(),
            dir,
            held,
            file,
            dir_id,
        })
    }

    /// Compares the file open with what is at the path now.
    pub(super) fn check(&self) -> Found {
        let unlinked = self.held.metadata().is_ok_and(|m| m.nlink() == 0);
        let dir_moved = match std::fs::metadata(&self.dir) {
            Ok(m) => Identity::of(&m) != self.dir_id,
            Err(_) => true,
        };
        match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Found::Gone(if dir_moved {
                format!("its directory {} was moved or replaced", self.dir.display())
            } else {
                "the file was deleted".to_string()
            }),
            Err(e) => Found::Replaced(format!("cannot look at the file: {e}")),
            Ok(m) if Identity::of(&m) != self.file || unlinked => {
                Found::Replaced("another file is at its path now".to_string())
            }
            Ok(_) => Found::Same,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_or_replaced_file_is_told_apart_from_the_same_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        std::fs::write(&path, b"x").unwrap();
        let watch = Watch::new(&path).unwrap();
        assert_eq!(watch.check(), Found::Same);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(watch.check(), Found::Gone(_)));
        std::fs::write(&path, b"y").unwrap();
        assert!(matches!(watch.check(), Found::Replaced(_)));
    }

    #[test]
    fn the_reserve_is_written_whole_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Reserve::new(&dir.path().join("j.db"), 100_000);
        assert!(!reserve.is_held());
        reserve.fill().unwrap();
        assert!(reserve.is_held());
        assert!(reserve.release());
        assert!(!reserve.is_held() && !reserve.release());
    }

    #[test]
    fn created_files_and_directories_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_dirs(&sub).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!((mode(&dir.path().join("a")), mode(&sub)), (0o700, 0o700));
        let file = sub.join("j.db");
        assert!(create_private(&file).unwrap());
        assert!(!create_private(&file).unwrap());
        assert_eq!(mode(&file), 0o600);
    }
}
