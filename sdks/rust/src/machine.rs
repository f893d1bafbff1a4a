//! This machine's identity: a stable id read from the operating system (or generated once and
//! kept in the cache directory), never sent or stored as is — only digests of it, each bound to
//! one product and one purpose, leave this module.

use std::io::{self, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// The file, in the cache directory, holding a generated id where the OS offers none.
const GENERATED_ID_FILE: &str = "machine-id";

/// A device fingerprint for `product`: hex SHA-256 over the machine id and the product, so it is
/// the same on every start of this machine, differs between products (two vendors cannot
/// correlate their customers' machines), and does not reveal the machine id itself.
pub fn fingerprint(machine_id: &str, product: &str) -> String {
    hex::encode(derive("fingerprint", machine_id, product))
}

/// A 32-byte value for one `purpose`, bound to this machine and product. Domain separation keeps
/// the fingerprint (sent to the server) unrelated to keys used locally.
pub(crate) fn derive(purpose: &str, machine_id: &str, product: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    // Length-prefixed fields: no two different inputs concatenate to the same bytes.
    for part in ["ecosire-client/v1", purpose, machine_id, product] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// The machine id: the operating system's, else one generated and stored in `cache_dir`.
pub fn machine_id(cache_dir: &Path) -> io::Result<String> {
    match os_machine_id() {
        Some(id) => Ok(id),
        None => generated_id(cache_dir),
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// systemd's (or, on older systems, D-Bus's) id: random per installation, stable across boots.
#[cfg(target_os = "linux")]
fn os_machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .as_deref()
                .and_then(non_empty)
        })
}

/// The hardware UUID `ioreg` reports (`"IOPlatformUUID" = "…"`).
#[cfg(target_os = "macos")]
fn os_machine_id() -> Option<String> {
    let out = std::process::Command::new("/usr/sbin/ioreg")
        .args(["-rd1", "-c", "IOPlatformExpertDevice"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("\"IOPlatformUUID\""))?;
    non_empty(line.rsplit('"').nth(1)?)
}

/// `HKLM\SOFTWARE\Microsoft\Cryptography\MachineGuid`, read with `reg.exe` (no registry crate
/// for one value).
#[cfg(windows)]
fn os_machine_id() -> Option<String> {
    let out = std::process::Command::new("reg")
        .args([
            "query",
            r"HKLM\SOFTWARE\Microsoft\Cryptography",
            "/v",
            "MachineGuid",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("MachineGuid"))?;
    non_empty(line.split_whitespace().last()?)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn os_machine_id() -> Option<String> {
    None
}

/// An id generated on first use and kept in `cache_dir`. Created exclusively, so two processes
/// starting together agree on one id.
pub(crate) fn generated_id(cache_dir: &Path) -> io::Result<String> {
    let path = cache_dir.join(GENERATED_ID_FILE);
    if let Some(id) = read_id(&path)? {
        return Ok(id);
    }
    std::fs::create_dir_all(cache_dir)?;
    let id = hex::encode(rand::random::<[u8; 16]>());
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(id.as_bytes())?;
            f.sync_all()?;
            Ok(id)
        }
        // Another process won the race: use its id.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_id(&path)?.ok_or_else(|| io::Error::other(format!("{} is empty", path.display())))
        }
        Err(e) => Err(e),
    }
}

fn read_id(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(non_empty(&s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_per_machine_and_product_and_hide_the_id() {
        let a = fingerprint("machine-a", "prd_1");
        assert_eq!(a, fingerprint("machine-a", "prd_1"));
        assert_ne!(a, fingerprint("machine-a", "prd_2"));
        assert_ne!(a, fingerprint("machine-b", "prd_1"));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("machine-a"));
        // Field boundaries matter: ("ab", "c") and ("a", "bc") are different inputs.
        assert_ne!(fingerprint("ab", "c"), fingerprint("a", "bc"));
        // Another purpose derives an unrelated value from the same machine and product.
        assert_ne!(hex::encode(derive("cache-mac", "machine-a", "prd_1")), a);
    }

    #[test]
    fn a_generated_id_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("not-yet-there");
        let id = generated_id(&cache).unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(generated_id(&cache).unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(generated_id(other.path()).unwrap(), id);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_reads_the_systemd_machine_id_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let id = machine_id(dir.path()).unwrap();
        if let Ok(s) = std::fs::read_to_string("/etc/machine-id")
            && !s.trim().is_empty()
        {
            assert_eq!(id, s.trim());
            assert!(
                !dir.path().join(GENERATED_ID_FILE).exists(),
                "nothing generated when the OS has an id"
            );
        }
    }
}
