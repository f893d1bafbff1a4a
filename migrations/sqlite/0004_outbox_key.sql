-- The sealed license key of license.created / license.reissued events (sealed under keys/data.key
-- with the event id as associated data), so a late delivery carries the key of its own event.
ALTER TABLE outbox ADD COLUMN key_sealed TEXT;
