//! File modes of a node's data directory: it holds the Raft log, the
//! ledger (sealed CA keys included), snapshots and the archive, so nothing
//! in it is readable by anyone but the node's own user.
//!
//! New files and directories are created private (the vendored sled does
//! the same for its own files: `vendor/sled/PATCHES.md`, patch 6), and
//! [`tighten`] fixes what an earlier version or a loose umask left behind
//! each time a node opens its stores.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Directory mode.
pub const DIR_MODE: u32 = 0o700;
/// File mode.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents as 0700.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Creates (or truncates) a file, 0600 from its first byte.
pub fn create_file(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Sets `path` to 0700 and everything under it to 0700 (directories) or
/// 0600 (files). Symbolic links are left alone and not followed.
pub fn tighten(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let want = if meta.is_dir() { DIR_MODE } else { FILE_MODE };
    if meta.permissions().mode() & 0o777 != want {
        fs::set_permissions(path, fs::Permissions::from_mode(want))?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            tighten(&entry?.path())?;
        }
    }
    Ok(())
}
