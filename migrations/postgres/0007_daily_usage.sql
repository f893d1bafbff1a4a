-- The daily quota of customers, one budget across instances: each instance adds the calls it
-- accepted to its customer's row of the day in batches (see src/http/quota.rs). Rows of past days
-- are deleted.
CREATE TABLE daily_usage (
    user_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    calls BIGINT NOT NULL,
    PRIMARY KEY (user_id, day)
);
