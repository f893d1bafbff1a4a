-- Stripe-fed orders and subscriptions, and the licenses they granted.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users(id),
    stripe_subscription_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    current_period_end BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subscriptions_user ON subscriptions(user_id);

CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users(id),
    status TEXT NOT NULL,
    email TEXT,
    stripe_checkout_session_id TEXT UNIQUE,
    stripe_payment_intent_id TEXT,
    stripe_subscription_id TEXT,
    subscription_id TEXT REFERENCES subscriptions(id),
    amount_total BIGINT,
    amount_refunded BIGINT NOT NULL DEFAULT 0,
    currency TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX orders_user ON orders(user_id);
CREATE INDEX orders_payment_intent ON orders(stripe_payment_intent_id);

ALTER TABLE licenses ADD COLUMN order_id TEXT REFERENCES orders(id);
ALTER TABLE licenses ADD COLUMN subscription_id TEXT REFERENCES subscriptions(id);
CREATE INDEX licenses_order ON licenses(order_id);
CREATE INDEX licenses_subscription ON licenses(subscription_id);

-- Each Stripe event id once; recorded in the same transaction as its effects.
CREATE TABLE stripe_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT,
    received_at BIGINT NOT NULL
);

-- Outbound webhook endpoints; the signing secret is sealed under keys/data.key.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT,
    secret_sealed TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    disabled_reason TEXT,
    failing_since BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One row per (event, endpoint); claimed with a lease so no two dispatchers send it at once.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES outbox(id),
    event_type TEXT NOT NULL,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    attempt_count BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    locked_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
CREATE INDEX deliveries_endpoint ON deliveries(endpoint_id);

CREATE TABLE delivery_attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    status_code BIGINT,
    duration_ms BIGINT NOT NULL,
    error TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts(delivery_id);

-- Things an admin should see (an endpoint disabled after failing for long).
CREATE TABLE notices (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject_id TEXT,
    message TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
