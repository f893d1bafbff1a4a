-- Air-gapped activation: a product may let a machine that never reaches the server activate
-- through a signed request file, answered with a signed license file leased for
-- `offline_activation_lease_days`. Such an activation remembers the device's Ed25519 public key
-- (base64url), which signs the proof that releases it, and when its lease ends (unix ms).
ALTER TABLE products ADD COLUMN offline_activation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE products ADD COLUMN offline_activation_lease_days INTEGER NOT NULL DEFAULT 90;
ALTER TABLE activations ADD COLUMN device_key TEXT;
ALTER TABLE activations ADD COLUMN offline_until INTEGER;

-- The churn budget: seats freed by the key holder or the owner, counted over a rolling 30 days
-- against the product's `max_deactivations_per_30d` (NULL: unlimited). The reaper's releases
-- are not written here. Rows older than the window are pruned as new ones arrive.
ALTER TABLE products ADD COLUMN max_deactivations_per_30d INTEGER;
CREATE TABLE seat_releases (
    id TEXT PRIMARY KEY,
    license_id TEXT NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    at INTEGER NOT NULL
);
CREATE INDEX seat_releases_license ON seat_releases(license_id, at);
