-- Signed revocation lists (GET /api/licenses/revocations): one counter per product, bumped in the
-- transaction that moves one of its licenses to or from `revoked`/`suspended`. A list is named by
-- (product, seq); the counter lives in the database so that every instance, before and after a
-- restart, agrees on it and it never goes backwards.
CREATE TABLE revocation_seqs (
    product_id TEXT PRIMARY KEY REFERENCES products(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    changed_at BIGINT NOT NULL
);
-- The list reads a product's revoked and suspended licenses without scanning its active ones.
CREATE INDEX licenses_product_status ON licenses(product_id, status);
