-- An order remembers its checkout's Stripe customer: a subscription's renewals and refunds pay
-- through payment intents the checkout never saw, and may name only the customer (or the
-- subscription, now looked up too).
ALTER TABLE orders ADD COLUMN stripe_customer_id TEXT;
CREATE INDEX orders_customer ON orders(stripe_customer_id);
CREATE INDEX orders_stripe_subscription ON orders(stripe_subscription_id);
