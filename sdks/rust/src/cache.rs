//! The cache file: what this machine needs to check its license later, online (the key and
//! fingerprint) or offline (the last signed token and the high-water mark of trusted time).
//!
//! Integrity: the token is signed by the server, so it cannot be forged or altered here. What
//! the server did not sign (the high-water mark, the product id learnt online) is sealed with an
//! HMAC under a key derived from this machine's id and the product: an edited, damaged or
//! copied-from-another-machine file is refused, never trusted. That key is computable by anyone
//! who reads this code on this machine, so the seal stops casual edits and file copies, not a
//! determined local attacker — nothing kept on the user's own disk can.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Bumped when the file's meaning changes; an older or newer file is refused (and rewritten by
/// the next online check).
const VERSION: u32 = 1;

/// What is kept between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub key: String,
    pub fingerprint: String,
    /// The product's id as a verified online answer named it (the builder may know only the
    /// slug, and an offline check must still refuse another product's token).
    pub product_id: Option<String>,
    /// The last token a verified online answer carried; dropped when the server says invalid.
    pub token: Option<String>,
    /// Unix seconds: the `iat` of the latest verified online answer. Server time, trusted.
    pub trusted_time: i64,
    /// Unix seconds: the latest local time at which an offline check passed. Ratcheting it
    /// forward stops the same offline days from being lived twice by winding the clock back
    /// again and again; a verified online answer resets it to server time.
    pub seen_time: i64,
    /// The newest signed revocation list accepted. Skipped when absent, so files written before
    /// lists existed serialize as they did and keep their seal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocations: Option<crate::revocations::StoredList>,
}

impl Record {
    pub fn new(key: &str, fingerprint: &str) -> Record {
        Record {
            key: key.to_string(),
            fingerprint: fingerprint.to_string(),
            product_id: None,
            token: None,
            trusted_time: i64::MIN,
            seen_time: i64::MIN,
            revocations: None,
        }
    }

    /// The latest time this machine has reason to believe has passed.
    pub fn high_water(&self) -> i64 {
        self.trusted_time.max(self.seen_time)
    }
}

#[derive(Serialize, Deserialize)]
struct SealedFile {
    v: u32,
    record: Record,
    /// Hex HMAC-SHA256 of `(v, record)` as this module serializes them.
    mac: String,
}

/// What reading the cache found.
#[derive(Debug)]
pub(crate) enum Loaded {
    Missing,
    Intact(Record),
    /// The file is damaged or its seal does not hold. `record` is what could still be read: its
    /// key and fingerprint may be used to ask the server (which decides for itself), never to
    /// trust anything offline.
    Refused {
        reason: String,
        record: Option<Record>,
    },
}

#[derive(Clone)]
pub(crate) struct Cache {
    path: PathBuf,
    mac_key: [u8; 32],
}

impl Cache {
    pub fn new(dir: &Path, product: &str, mac_key: [u8; 32]) -> Cache {
        Cache {
            path: dir.join(file_name(product)),
            mac_key,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn mac(&self, v: u32, record: &Record) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.mac_key).expect("any key length");
        mac.update(&serde_json::to_vec(&(v, record)).expect("serializable"));
        mac
    }

    pub fn load(&self) -> io::Result<Loaded> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
            Err(e) => return Err(e),
        };
        let file: SealedFile = match serde_json::from_slice(&bytes) {
            Ok(f) => f,
            Err(e) => {
                return Ok(Loaded::Refused {
                    reason: format!("unreadable ({e})"),
                    record: None,
                });
            }
        };
        let sealed = hex::decode(&file.mac)
            .is_ok_and(|tag| self.mac(file.v, &file.record).verify_slice(&tag).is_ok());
        Ok(match (file.v == VERSION, sealed) {
            (true, true) => Loaded::Intact(file.record),
            (false, _) => Loaded::Refused {
                reason: format!("format version {} (expected {VERSION})", file.v),
                record: Some(file.record),
            },
            (true, false) => Loaded::Refused {
                reason: "its seal does not match (edited, damaged, or from another machine)".into(),
                record: Some(file.record),
            },
        })
    }

    /// Replaces the file atomically (a crash leaves the old file or the new one, never half of
    /// each), readable by the owner only.
    pub fn store(&self, record: &Record) -> io::Result<()> {
        let file = SealedFile {
            v: VERSION,
            record: record.clone(),
            mac: hex::encode(self.mac(VERSION, record).finalize().into_bytes()),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("serializable");
        let dir = self.path.parent().expect("the file is in a directory");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x"),
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let written = (|| {
            let mut f = owner_only().write(true).create_new(true).open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(unix)]
pub(crate) fn owner_only() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.mode(0o600);
    o
}

#[cfg(not(unix))]
pub(crate) fn owner_only() -> std::fs::OpenOptions {
    std::fs::OpenOptions::new()
}

/// `ecosire-license-<product>.json`, with anything but `[A-Za-z0-9_-]` replaced so that a
/// product name cannot point outside the directory.
fn file_name(product: &str) -> String {
    let safe: String = product
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("ecosire-license-{safe}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            product_id: Some("prd_1".into()),
            token: Some("a.b.c".into()),
            trusted_time: 1_700_000_000,
            seen_time: 1_700_000_100,
            ..Record::new("ECOS-AAAAA", "fp")
        }
    }

    fn edit(cache: &Cache, change: impl FnOnce(&mut serde_json::Value)) {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(cache.path()).unwrap()).unwrap();
        change(&mut v);
        std::fs::write(cache.path(), serde_json::to_vec(&v).unwrap()).unwrap();
    }

    #[test]
    fn a_stored_record_loads_back_intact() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("sub"), "prd_1", [1; 32]);
        assert!(matches!(cache.load().unwrap(), Loaded::Missing));
        cache.store(&record()).unwrap();
        assert!(matches!(cache.load().unwrap(), Loaded::Intact(r) if r == record()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(cache.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["ecosire-license-prd_1.json"],
            "no temporary file left"
        );
        cache.remove().unwrap();
        cache.remove().unwrap();
        assert!(matches!(cache.load().unwrap(), Loaded::Missing));
    }

    #[test]
    fn edits_damage_and_another_machines_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), "prd_1", [1; 32]);
        let cases: [fn(&mut serde_json::Value); 4] = [
            |v| v["record"]["seen_time"] = 0.into(),
            |v| v["record"]["product_id"] = "prd_2".into(),
            |v| v["mac"] = "00".into(),
            |v| v["v"] = 2.into(),
        ];
        for change in cases {
            cache.store(&record()).unwrap();
            edit(&cache, change);
            match cache.load().unwrap() {
                Loaded::Refused {
                    record: Some(r), ..
                } => assert_eq!(r.key, "ECOS-AAAAA"),
                other => panic!("{other:?}"),
            }
        }
        cache.store(&record()).unwrap();
        let elsewhere = Cache::new(dir.path(), "prd_1", [2; 32]);
        assert!(matches!(elsewhere.load().unwrap(), Loaded::Refused { .. }));
        std::fs::write(cache.path(), b"{not json").unwrap();
        assert!(matches!(
            cache.load().unwrap(),
            Loaded::Refused { record: None, .. }
        ));
    }

    #[test]
    fn product_names_cannot_leave_the_directory() {
        assert_eq!(file_name("../../etc/x"), "ecosire-license-______etc_x.json");
        assert_eq!(file_name("desktop-pro"), "ecosire-license-desktop-pro.json");
    }
}
