-- API keys: only the SHA-256 digest of the key is stored; `prefix` is a non-secret hint.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    environment TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_digest TEXT NOT NULL UNIQUE,
    expires_at INTEGER,
    revoked_at INTEGER,
    rotated_from TEXT,
    request_count INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    last_used_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    user_id TEXT,
    api_key_id TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    client_ip TEXT,
    request_id TEXT
);
CREATE INDEX audit_log_user ON audit_log(user_id);
CREATE INDEX audit_log_key ON audit_log(api_key_id);
