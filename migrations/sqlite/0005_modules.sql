-- The secondary modules: contacts, CRM leads, support tickets and their replies, newsletter
-- subscribers. Emails are stored normalised (trimmed, lower-case), so equality and the unique
-- indexes need no LOWER(). Free text is stored exactly as received and only ever returned as JSON.
CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT,
    company TEXT,
    phone TEXT,
    notes TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- A lead keeps its own copy of what was submitted; deleting the contact does not erase it.
CREATE TABLE leads (
    id TEXT PRIMARY KEY,
    contact_id TEXT REFERENCES contacts(id) ON DELETE SET NULL,
    email TEXT NOT NULL,
    name TEXT,
    company TEXT,
    message TEXT,
    source TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX leads_email ON leads(email);
CREATE INDEX leads_source ON leads(source);
CREATE INDEX leads_contact ON leads(contact_id);

CREATE TABLE support_tickets (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users(id) ON DELETE SET NULL,
    email TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX support_tickets_user ON support_tickets(user_id);
CREATE INDEX support_tickets_email ON support_tickets(email);
CREATE INDEX support_tickets_status ON support_tickets(status);

-- `author` is 'staff' (an admin answered) or 'customer'.
CREATE TABLE support_replies (
    id TEXT PRIMARY KEY,
    ticket_id TEXT NOT NULL REFERENCES support_tickets(id) ON DELETE CASCADE,
    user_id TEXT REFERENCES users(id) ON DELETE SET NULL,
    author TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX support_replies_ticket ON support_replies(ticket_id);

-- The unsubscribe token is shown once; only its SHA-256 digest is kept (and replaced when the
-- address subscribes again, so an old link stops working).
CREATE TABLE newsletter_subscribers (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    token_digest TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    subscribed_at INTEGER NOT NULL,
    unsubscribed_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX newsletter_subscribers_status ON newsletter_subscribers(status);
