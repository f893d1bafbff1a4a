-- Accounts people can use: a disabled flag, single-use tokens for links in mail, and the mail
-- outbox.
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;

-- Tokens in links (verification, invitation, password reset): only their SHA-256 is kept. A
-- token vouches for the address it was sent to, so a changed address voids it.
CREATE TABLE account_tokens (
    digest TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    email TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX account_tokens_user ON account_tokens(user_id);

-- Outgoing mail, written in the transaction that causes it; the message (it may carry a token
-- or a license key) is sealed under the data key and dropped once sent.
CREATE TABLE mail_outbox (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id TEXT REFERENCES users(id) ON DELETE SET NULL,
    message_sealed TEXT,
    status TEXT NOT NULL,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    locked_until INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX mail_outbox_due ON mail_outbox(status, next_attempt_at);
CREATE INDEX mail_outbox_user ON mail_outbox(user_id);
