//! Owner-only files in the data directory.
//!
//! The data directory holds `secrets.toml` (keys and the API token) and `store.redb` (message
//! payloads, uploads, bindings). [`crate::secrets`] and [`crate::store::embedded`] open those
//! files through [`open_private`] or fix them with [`restrict_to_owner`], so they end up mode 0600
//! even when they already existed with a wider mode. [`data_dir_warning`] tells start-up when the
//! directory itself lets other users list or read it. On non-Unix systems these are no-ops.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// The mode of every file the broker keeps secrets or payloads in.
pub const PRIVATE_MODE: u32 = 0o600;

/// Opens `path` for reading and writing, creating it (mode 0600) if missing and never
/// truncating; an existing file with a wider mode is narrowed to 0600 before anything is
/// written to it.
pub fn open_private(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(PRIVATE_MODE);
    }
    let file = opts.open(path)?;
    restrict_file(&file)?;
    Ok(file)
}

/// Narrows an open file to mode 0600 (no-op if it is already that).
pub fn restrict_file(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode() & 0o777;
        if mode != PRIVATE_MODE {
            file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_MODE))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Narrows an existing file to mode 0600; a missing file is not an error.
pub fn restrict_to_owner(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(file) => restrict_file(&file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a directory with these permission bits lets every user on the host read it.
pub fn world_readable(mode: u32) -> bool {
    mode & 0o004 != 0
}

/// The start-up warning for data directory `dir`, if other users can read it: the files in it
/// are 0600, but their names and sizes show and any file put there by hand may not be.
pub fn data_dir_warning(dir: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).ok()?.permissions().mode() & 0o777;
        if world_readable(mode) {
            return Some(format!(
                "data directory {} is world-readable (mode {mode:o}); its secret and store files \
                 are kept 0600, but consider `chmod 700` on the directory",
                dir.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn open_private_creates_0600_and_narrows_existing_without_truncating() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        open_private(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);

        let old = dir.path().join("old");
        std::fs::write(&old, b"kept").unwrap();
        chmod(&old, 0o644);
        open_private(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read(&old).unwrap(), b"kept");
    }

    #[test]
    fn restrict_to_owner_narrows_and_ignores_missing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        chmod(&f, 0o666);
        restrict_to_owner(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        restrict_to_owner(&dir.path().join("missing")).unwrap();
    }

    #[test]
    fn warns_only_for_world_readable_data_dir() {
        assert!(world_readable(0o755));
        assert!(world_readable(0o704));
        assert!(!world_readable(0o750));
        assert!(!world_readable(0o700));
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let warning = data_dir_warning(dir.path()).expect("0755 warns");
        assert!(warning.contains("world-readable"), "{warning}");
        assert!(warning.contains("755"), "{warning}");
        chmod(dir.path(), 0o700);
        assert_eq!(data_dir_warning(dir.path()), None);
    }
}
