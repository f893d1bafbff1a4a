-- Times are unix milliseconds; JSON is text; ids are prefixed UUIDv7 text (see src/crypto.rs).
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT,
    role TEXT NOT NULL,
    plan TEXT NOT NULL DEFAULT 'free',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Login sessions: only the SHA-256 of the session id is kept.
CREATE TABLE sessions (
    id_digest TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE products (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    max_activations INTEGER NOT NULL,
    duration_days INTEGER,
    offline_lease_days INTEGER NOT NULL,
    heartbeat_timeout_s INTEGER,
    entitlements TEXT NOT NULL,
    stripe_price_ids TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- License keys: SHA-256 digest for lookup, XChaCha20-Poly1305 ciphertext to show them again.
CREATE TABLE licenses (
    id TEXT PRIMARY KEY,
    key_digest TEXT NOT NULL UNIQUE,
    key_sealed TEXT NOT NULL,
    key_last4 TEXT NOT NULL,
    product_id TEXT NOT NULL REFERENCES products(id),
    user_id TEXT REFERENCES users(id),
    status TEXT NOT NULL,
    expires_at INTEGER,
    max_activations INTEGER NOT NULL,
    entitlements TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX licenses_user ON licenses(user_id);
CREATE INDEX licenses_product ON licenses(product_id);

-- Live activations only: a deactivated seat is deleted, so the unique index is the seat guard.
CREATE TABLE activations (
    id TEXT PRIMARY KEY,
    license_id TEXT NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    name TEXT,
    platform TEXT,
    hostname TEXT,
    created_at INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX activations_live ON activations(license_id, fingerprint);
CREATE INDEX activations_heartbeat ON activations(last_heartbeat_at);

-- Events written in the same transaction as the change they announce.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
