-- Ownership by email follows only addresses the server can trust: an account registered by the
-- public owns what was granted to its address only once it has verified it.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;
ALTER TABLE users ADD COLUMN self_registered BIGINT NOT NULL DEFAULT 0;
-- Accounts with a password that are customers can only have come from public registration.
UPDATE users SET self_registered = 1 WHERE password_hash IS NOT NULL AND role = 'customer';

-- A license granted to an address whose account cannot own it yet waits here, unowned.
ALTER TABLE licenses ADD COLUMN granted_email TEXT;
CREATE INDEX licenses_granted_email ON licenses(granted_email);

-- A key is rotated once: its successor is the only one.
ALTER TABLE api_keys ADD COLUMN rotated_at BIGINT;
