-- Sign-in through an OpenID provider. A person at the provider is (issuer, subject); the link to
-- the local account is made once, at the first sign-in, and followed from then on.
CREATE TABLE oidc_identities (
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX oidc_identities_user ON oidc_identities(user_id);

-- Browser sign-ins under way (between the redirect to the provider and its answer): single-use,
-- found by the SHA-256 of the `state` parameter, bound to the browser that started them (the
-- digest of a cookie), expiring after 10 minutes. The PKCE verifier, nonce and return path are
-- sealed under the data key.
CREATE TABLE oidc_logins (
    state_digest TEXT PRIMARY KEY,
    browser_digest TEXT NOT NULL,
    sealed TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX oidc_logins_expiry ON oidc_logins(expires_at);
