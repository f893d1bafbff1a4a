-- Each API key's requests and errors per UTC day (days since the epoch), for the 30-day chart of
-- GET /api/api-keys/{id}/usage. Written in the same flush as the key's totals (src/ops/audit.rs);
-- days older than 90 are deleted.
CREATE TABLE api_key_daily_usage (
    api_key_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, day)
);
CREATE INDEX api_key_daily_usage_day ON api_key_daily_usage (day);
