//! Files that hold secrets (keys, the SQLite database): owner-only permissions, atomic
//! replacement, and I/O errors worded for a one-line start-up message.

use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O error as the short, lowercase cause of a one-line message: "permission denied", not
/// "Permission denied (os error 13)".
pub fn io_cause(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => &text,
    };
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        // Lowercase "Permission denied" but leave acronyms such as "TLS" alone.
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => first
            .to_lowercase()
            .chain(text[first.len_utf8()..].chars())
            .collect(),
        _ => text.to_string(),
    }
}

/// Reads a whole text file; the error is one line naming the file.
pub fn read_to_string(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {}", path.display(), io_cause(&e)))
}

/// Creates `dir` (and missing parents) readable by the owner only: it holds keys or the database.
/// An existing folder is left as it is.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| {
        if dir.exists() && !dir.is_dir() {
            anyhow::anyhow!("{} is a file, not a folder", dir.display())
        } else {
            anyhow::anyhow!("cannot create {}: {}", dir.display(), io_cause(&e))
        }
    })
}

fn open_options_0600() -> std::fs::OpenOptions {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

/// Creates `path` with mode 0600 (on Unix) and writes `bytes`; fails if it already exists so a
/// key is never overwritten by accident.
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        create_private_dir(dir)?;
    }
    let cause =
        |e: std::io::Error| anyhow::anyhow!("cannot create {}: {}", path.display(), io_cause(&e));
    let mut f = open_options_0600().open(path).map_err(cause)?;
    f.write_all(bytes).map_err(cause)?;
    f.sync_all().map_err(cause)?;
    Ok(())
}

/// Replaces `path` with `bytes` atomically: a reader (or a crash) sees the old file or the new
/// one, never half of either. The new file is 0600 like every secret.
pub fn replace_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash between write and rename holds nothing the original does not.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            anyhow::bail!("cannot remove {}: {}", tmp.display(), io_cause(&e))
        }
        _ => {}
    }
    write_secret(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("cannot replace {}: {}", path.display(), io_cause(&e)))?;
    // The rename is durable only once the folder's entry is on disk.
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| anyhow::anyhow!("cannot sync {}: {}", dir.display(), io_cause(&e)))?;
    }
    Ok(())
}

/// Creates an empty file with mode 0600 unless it exists; `Ok(false)` when it already did.
pub fn create_private_file(path: &Path) -> anyhow::Result<bool> {
    match open_options_0600().open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => anyhow::bail!("cannot create {}: {}", path.display(), io_cause(&e)),
    }
}

/// Removes group and other permissions from an existing regular file. Returns the old mode when
/// it had to change something, `None` when it was already private, is not a file or does not
/// exist.
pub fn make_private(path: &Path) -> anyhow::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => anyhow::bail!("cannot read {}: {}", path.display(), io_cause(&e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_file() || mode & 0o077 == 0 {
            return Ok(None);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(|e| anyhow::anyhow!("cannot restrict {}: {}", path.display(), io_cause(&e)))?;
        Ok(Some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_causes_are_short_and_lowercase() {
        let e = std::io::Error::from_raw_os_error(13);
        assert_eq!(io_cause(&e), "permission denied");
        let e = std::io::Error::other("TLS handshake failed");
        assert_eq!(io_cause(&e), "TLS handshake failed");
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_private_and_replaced_atomically() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let path = keys.join("k");
        write_secret(&path, b"one").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert!(write_secret(&path, b"two").is_err(), "never overwritten");
        replace_secret(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            std::fs::read_dir(&keys).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
