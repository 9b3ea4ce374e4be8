//! Files that hold secrets or codes (the SQLite database with the MAC key and code MACs, its
//! `-wal` and `-shm`, the mock provider's outbox) are readable by their owner only, whatever the
//! umask: outside systemd a umask of 022 would otherwise leave them world-readable.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Owner read and write, nothing for group or others.
pub const MODE: u32 = 0o600;

/// Opens `path` for appending, creating it `0600` if missing; an existing file with looser
/// permissions is tightened (and the change logged).
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(MODE)
        .open(path)?;
    tighten(path, &file)?;
    Ok(file)
}

/// Creates `path` empty with `0600` if it does not exist, and tightens it if it does.
pub fn ensure(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(MODE)
        .open(path)?;
    tighten(path, &file)
}

/// Tightens `path` if it exists; a missing file is fine.
pub fn tighten_if_present(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(file) => tighten(path, &file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes group and other permissions from an open file. Through the open handle, so the file
/// checked is the file changed.
fn tighten(path: &Path, file: &File) -> io::Result<()> {
    let mode = file.metadata()?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(mode & 0o700))?;
        tracing::warn!(
            path = %path.display(),
            was = format_args!("{mode:o}"),
            now = format_args!("{:o}", mode & 0o700),
            "a file holding secrets was readable by other users; its permissions were tightened"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_files_are_owner_only_and_old_ones_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        ensure(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);

        let loose = dir.path().join("loose");
        std::fs::write(&loose, "keep me").unwrap();
        std::fs::set_permissions(&loose, Permissions::from_mode(0o664)).unwrap();
        open_append(&loose).unwrap();
        assert_eq!(mode(&loose), 0o600);
        assert_eq!(std::fs::read_to_string(&loose).unwrap(), "keep me");

        std::fs::set_permissions(&loose, Permissions::from_mode(0o644)).unwrap();
        tighten_if_present(&loose).unwrap();
        assert_eq!(mode(&loose), 0o600);
        tighten_if_present(&dir.path().join("absent")).unwrap();
    }
}
