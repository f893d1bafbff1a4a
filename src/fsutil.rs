//! Writing secret files (keys) with owner-only permissions.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Creates `path` with mode 0600 (on Unix) and writes `bytes`; fails if it already exists so a
/// key is never overwritten by accident.
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
