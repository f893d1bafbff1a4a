//! The two migration folders describe one schema: same files, same statements, differing only
//! where the dialects must (`BIGINT` on PostgreSQL for what SQLite calls `INTEGER`).

use std::collections::BTreeSet;
use std::path::Path;

fn files(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect()
}

fn normalised(dir: &str, name: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(name))
        .unwrap();
    text.replace("BIGINT", "INTEGER")
}

#[test]
fn sqlite_and_postgres_migrations_are_the_same_schema() {
    let sqlite = files("migrations/sqlite");
    let postgres = files("migrations/postgres");
    assert_eq!(sqlite, postgres, "each migration exists for both backends");
    assert!(!sqlite.is_empty());
    for name in &sqlite {
        let (s, p) = (
            normalised("migrations/sqlite", name),
            normalised("migrations/postgres", name),
        );
        for (n, (ls, lp)) in s.lines().zip(p.lines()).enumerate() {
            assert_eq!(ls, lp, "{name}:{}: the backends differ", n + 1);
        }
        assert_eq!(
            s.lines().count(),
            p.lines().count(),
            "{name}: the backends differ in length"
        );
    }
}
