mod common;

// The secondary modules through the HTTP API: contacts, CRM capture and leads, support tickets,
// the newsletter and the documentation assistant.

use common::TestApp;
use common::{fields, ids};
use serde_json::{Value, json};

const NO_ANSWER: &str = "I don't know: nothing in the ECOSIRE documentation answers that.";
const UNKNOWN_CONTACT: &str = "/api/contacts/con_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4";
const UNKNOWN_TICKET: &str = "/api/support/tickets/tkt_01JDZ8Q6W3M5X7Y9Z0A1B2C3D4";
const XSS: &str = "<script>alert('x')</script><img src=x onerror=alert(1)> & \"quotes\"";

/// The `field` names of a 422's `details`.
#[track_caller]
fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_string()
}

#[track_caller]
fn assert_id(v: &Value, prefix: &str) {
    let id = id(v);
    assert!(id.starts_with(&format!("{prefix}_")), "{id}");
    assert_eq!(id.len(), prefix.len() + 27, "{id}");
}

/// An API key of the admin with `scope`.
async fn admin_key(app: &TestApp, scope: &str) -> String {
    let r = app
        .admin_post("/api/api-keys", json!({"name": scope, "scope": scope}))
        .await;
    r.expect(201)["key"].as_str().unwrap().to_string()
}

/// Follows `next_cursor` from `first` (a path with a query string) and returns every id.
async fn all_pages(app: &TestApp, first: &str, token: &str) -> (Vec<String>, usize) {
    let mut seen = vec![];
    let mut pages = 0;
    let mut path = first.to_string();
    loop {
        let r = app.get(&path, Some(token)).await;
        let page = r.expect(200).clone();
        pages += 1;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("{first}&cursor={c}"),
            None => break,
        }
        assert!(pages < 50, "pagination does not end");
    }
    (seen, pages)
}

// ---------------------------------------------------------------- contacts

#[tokio::test]
async fn contact_crud_round_trip() {
    let app = TestApp::new().await;
    let r = app
        .admin_post(
            "/api/contacts",
            json!({"email": "  Ann@Example.COM ", "name": " Ann Lee ", "company": "Example Ltd",
                   "phone": "+44 20 7946 0000", "notes": "Met at the fair.\nCall back in May."}),
        )
        .await;
    let c = r.expect(201).clone();
    assert_id(&c, "con");
    assert_eq!(c["email"], "ann@example.com");
    assert_eq!(c["name"], "Ann Lee");
    assert_eq!(c["company"], "Example Ltd");
    assert_eq!(c["phone"], "+44 20 7946 0000");
    assert_eq!(c["notes"], "Met at the fair.\nCall back in May.");
    assert!(c["created_at"].as_str().unwrap().ends_with('Z'));
    let path = format!("/api/contacts/{}", id(&c));

    assert_eq!(app.admin_get(&path).await.expect(200), &c);

    // PATCH: absent fields stay, null and blank clear, email is normalised.
    let r = app
        .admin_patch(
            &path,
            json!({"email": "ANN.LEE@example.com", "company": null, "phone": "  ", "notes": "Signed."}),
        )
        .await;
    let p = r.expect(200).clone();
    assert_eq!(p["email"], "ann.lee@example.com");
    assert_eq!(p["name"], "Ann Lee");
    assert_eq!(p["company"], Value::Null);
    assert_eq!(p["phone"], Value::Null);
    assert_eq!(p["notes"], "Signed.");
    assert_eq!(p["created_at"], c["created_at"]);

    // Only the email is required.
    let bare = app
        .admin_post("/api/contacts", json!({"email": "bob@example.com"}))
        .await;
    let bare = bare.expect(201);
    assert_eq!(bare["name"], Value::Null);
    assert_eq!(bare["notes"], Value::Null);

    let list = app.admin_get("/api/contacts").await;
    assert_eq!(ids(list.expect(200)), vec![id(bare), id(&c)]);

    app.admin_delete(&path).await.expect(204);
    app.admin_get(&path).await.expect_problem(404, "NOT_FOUND");
    app.admin_delete(&path)
        .await
        .expect_problem(404, "NOT_FOUND");
    let list = app.admin_get("/api/contacts").await;
    assert_eq!(ids(list.expect(200)), vec![id(bare)]);
}

#[tokio::test]
async fn unknown_contacts_are_404() {
    let app = TestApp::new().await;
    app.admin_get(UNKNOWN_CONTACT)
        .await
        .expect_problem(404, "NOT_FOUND");
    app.admin_patch(UNKNOWN_CONTACT, json!({"name": "X"}))
        .await
        .expect_problem(404, "NOT_FOUND");
    app.admin_delete(UNKNOWN_CONTACT)
        .await
        .expect_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn duplicate_contact_emails_are_409() {
    let app = TestApp::new().await;
    app.admin_post("/api/contacts", json!({"email": "ann@example.com"}))
        .await
        .expect(201);
    // The same address in another case and with spaces is the same contact.
    app.admin_post("/api/contacts", json!({"email": "  ANN@example.com"}))
        .await
        .expect_problem(409, "CONTACT_EXISTS");
    let other = app
        .admin_post("/api/contacts", json!({"email": "bob@example.com"}))
        .await;
    let other = other.expect(201).clone();
    let path = format!("/api/contacts/{}", id(&other));
    app.admin_patch(&path, json!({"email": "Ann@Example.com"}))
        .await
        .expect_problem(409, "CONTACT_EXISTS");
    // Nothing changed; keeping one's own email is no conflict.
    assert_eq!(
        app.admin_get(&path).await.expect(200)["email"],
        "bob@example.com"
    );
    app.admin_patch(&path, json!({"email": "bob@example.com", "name": "Bob"}))
        .await
        .expect(200);
    let list = app.admin_get("/api/contacts").await;
    assert_eq!(ids(list.expect(200)).len(), 2);
}

#[tokio::test]
async fn contact_validation_names_every_field() {
    let app = TestApp::new().await;
    let r = app
        .admin_post(
            "/api/contacts",
            json!({"email": "not-an-email", "name": "n".repeat(201), "company": "c".repeat(201),
                   "phone": "1".repeat(51), "notes": "x".repeat(5001)}),
        )
        .await;
    let mut f = fields(r.expect_problem(422, "VALIDATION_FAILED"));
    f.sort();
    assert_eq!(f, vec!["company", "email", "name", "notes", "phone"]);

    // At the limits it is accepted.
    let r = app
        .admin_post(
            "/api/contacts",
            json!({"email": "max@example.com", "name": "n".repeat(200), "company": "c".repeat(200),
                   "phone": "1".repeat(50), "notes": "é".repeat(5000)}),
        )
        .await;
    let c = r.expect(201).clone();
    assert_eq!(c["notes"].as_str().unwrap().chars().count(), 5000);

    let r = app
        .admin_post("/api/contacts", json!({"name": "Ann"}))
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["email"]
    );
    let r = app.admin_post("/api/contacts", json!({"email": 42})).await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["email"]
    );

    let path = format!("/api/contacts/{}", id(&c));
    let r = app
        .admin_patch(&path, json!({"email": null, "notes": "x".repeat(5001)}))
        .await;
    let mut f = fields(r.expect_problem(422, "VALIDATION_FAILED"));
    f.sort();
    assert_eq!(f, vec!["email", "notes"]);
    let r = app
        .admin_patch(&path, json!({"email": "still not an email"}))
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["email"]
    );
    // Nothing was written.
    assert_eq!(app.admin_get(&path).await.expect(200), &c);
}

#[tokio::test]
async fn contact_search_is_case_insensitive_and_takes_wildcards_literally() {
    let app = TestApp::new().await;
    let mut made = std::collections::HashMap::new();
    for (email, name, company) in [
        ("ann@example.com", "Ann Lee", "Acme Corp"),
        ("bob@acme.io", "Bob Stone", "Other Inc"),
        ("cy@example.org", "Cy 100% Real", "Percent_Co"),
        ("dee@example.net", "Dee", "ACME Widgets"),
        ("eve@example.com", "Eve", "Nothing"),
    ] {
        let r = app
            .admin_post(
                "/api/contacts",
                json!({"email": email, "name": name, "company": company}),
            )
            .await;
        made.insert(name, id(r.expect(201)));
    }
    let search = |q: &str| {
        let q = q.to_string();
        let app = &app;
        async move {
            let path = format!("/api/contacts?q={}", urlencode(&q));
            let r = app.admin_get(&path).await;
            let mut v = ids(r.expect(200));
            v.sort();
            v
        }
    };
    let want = |names: &[&str]| {
        let mut v: Vec<String> = names.iter().map(|n| made[n].clone()).collect();
        v.sort();
        v
    };
    // Company, email and name, whatever the case.
    assert_eq!(search("acme").await, want(&["Ann Lee", "Bob Stone", "Dee"]));
    assert_eq!(search("ANN").await, want(&["Ann Lee"]));
    assert_eq!(search("example.com").await, want(&["Ann Lee", "Eve"]));
    assert_eq!(search(" stone ").await, want(&["Bob Stone"]));
    // `%` and `_` are not wildcards.
    assert_eq!(search("%").await, want(&["Cy 100% Real"]));
    assert_eq!(search("_").await, want(&["Cy 100% Real"]));
    assert_eq!(search("t_co").await, want(&["Cy 100% Real"]));
    assert!(search("zzz").await.is_empty());
    // An empty q lists everything.
    assert_eq!(search("").await.len(), 5);
    let r = app
        .admin_get(&format!("/api/contacts?q={}", "a".repeat(201)))
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["q"]
    );

    // Search and pagination together.
    let token = app.admin_token.clone();
    let (seen, pages) = all_pages(&app, "/api/contacts?q=acme&limit=2", &token).await;
    assert_eq!(pages, 2);
    let mut seen_sorted = seen.clone();
    seen_sorted.sort();
    assert_eq!(seen_sorted, want(&["Ann Lee", "Bob Stone", "Dee"]));
    // Newest first.
    assert_eq!(seen[0], made["Dee"]);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn contact_lists_paginate() {
    let app = TestApp::new().await;
    let mut made = vec![];
    for i in 0..7 {
        let r = app
            .admin_post(
                "/api/contacts",
                json!({"email": format!("p{i}@example.com")}),
            )
            .await;
        made.push(id(r.expect(201)));
    }
    made.reverse();
    let token = app.admin_token.clone();
    let (seen, pages) = all_pages(&app, "/api/contacts?limit=3", &token).await;
    assert_eq!(pages, 3);
    assert_eq!(seen, made);
    for bad in ["limit=0", "limit=101", "cursor=%21%21", "limit=x"] {
        let r = app.admin_get(&format!("/api/contacts?{bad}")).await;
        r.expect_problem(422, "VALIDATION_FAILED");
    }
}

#[tokio::test]
async fn contacts_are_admin_only() {
    let app = TestApp::new().await;
    let (_, customer) = app.customer("cust@example.com").await;
    app.get("/api/contacts", None)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    app.get("/api/contacts", Some(&customer))
        .await
        .expect_problem(403, "FORBIDDEN");
    app.post(
        "/api/contacts",
        json!({"email": "x@example.com"}),
        Some(&customer),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
    // An admin's read-only key reads but does not write.
    let ro = admin_key(&app, "read-only").await;
    app.get("/api/contacts", Some(&ro)).await.expect(200);
    app.post(
        "/api/contacts",
        json!({"email": "x@example.com"}),
        Some(&ro),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
    let admin_scoped = admin_key(&app, "admin").await;
    app.post(
        "/api/contacts",
        json!({"email": "x@example.com"}),
        Some(&admin_scoped),
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn contact_html_is_stored_and_returned_verbatim() {
    let app = TestApp::new().await;
    let r = app
        .admin_post(
            "/api/contacts",
            json!({"email": "x@example.com", "name": XSS, "company": XSS, "notes": XSS}),
        )
        .await;
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let c = r.expect(201).clone();
    for f in ["name", "company", "notes"] {
        assert_eq!(c[f], XSS, "{f}");
    }
    let got = app.admin_get(&format!("/api/contacts/{}", id(&c))).await;
    assert_eq!(got.expect(200)["notes"], XSS);
    // The raw JSON escapes nothing beyond JSON's own rules: it is data, not markup.
    assert!(
        got.text.contains("<script>alert('x')</script>"),
        "{}",
        got.text
    );
}

// ---------------------------------------------------------------- CRM

#[tokio::test]
async fn capture_records_a_lead_and_creates_the_contact() {
    let app = TestApp::new().await;
    let r = app
        .post(
            "/api/crm/capture",
            json!({"email": " Lead@Example.COM", "name": "Lea", "company": "Leads Ltd",
                   "message": "Call me", "source": "pricing-page"}),
            None,
        )
        .await;
    let lead = r.expect(201).clone();
    assert_id(&lead, "led");
    assert_eq!(lead["email"], "lead@example.com");
    assert_eq!(lead["name"], "Lea");
    assert_eq!(lead["company"], "Leads Ltd");
    assert_eq!(lead["message"], "Call me");
    assert_eq!(lead["source"], "pricing-page");
    let contact_id = lead["contact_id"].as_str().unwrap().to_string();
    assert!(contact_id.starts_with("con_"));

    let c = app.admin_get(&format!("/api/contacts/{contact_id}")).await;
    let c = c.expect(200);
    assert_eq!(c["email"], "lead@example.com");
    assert_eq!(c["name"], "Lea");
    assert_eq!(c["company"], "Leads Ltd");

    let leads = app.admin_get("/api/crm/leads").await;
    assert_eq!(leads.expect(200)["data"][0], lead);

    // Only the email is required; a second capture reuses the contact.
    let r = app
        .post(
            "/api/crm/capture",
            json!({"email": "lead@example.com"}),
            None,
        )
        .await;
    let again = r.expect(201);
    assert_eq!(again["contact_id"], contact_id.as_str());
    assert_eq!(again["name"], Value::Null);
    let contacts = app.admin_get("/api/contacts").await;
    assert_eq!(ids(contacts.expect(200)), vec![contact_id]);
}

#[tokio::test]
async fn capture_fills_blanks_and_never_overwrites_the_contact() {
    let app = TestApp::new().await;
    let curated = app
        .admin_post(
            "/api/contacts",
            json!({"email": "ann@example.com", "name": "Ann Lee (VIP)", "notes": "Key account"}),
        )
        .await;
    let curated = curated.expect(201).clone();
    let path = format!("/api/contacts/{}", id(&curated));

    // A public form does not rename a known contact, but fills what is blank.
    let r = app
        .post(
            "/api/crm/capture",
            json!({"email": "ANN@example.com", "name": "Someone Else", "company": "NewCo"}),
            None,
        )
        .await;
    assert_eq!(r.expect(201)["contact_id"], curated["id"]);
    let c = app.admin_get(&path).await.expect(200).clone();
    assert_eq!(c["name"], "Ann Lee (VIP)");
    assert_eq!(c["company"], "NewCo");
    assert_eq!(c["notes"], "Key account");

    // Nothing given clears nothing.
    app.post(
        "/api/crm/capture",
        json!({"email": "ann@example.com", "name": null, "company": "  "}),
        None,
    )
    .await
    .expect(201);
    let c2 = app.admin_get(&path).await.expect(200).clone();
    assert_eq!(c2["name"], "Ann Lee (VIP)");
    assert_eq!(c2["company"], "NewCo");
    // The leads keep what each submission said.
    let leads = app.admin_get("/api/crm/leads").await;
    let leads = leads.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(leads.len(), 2);
    assert_eq!(leads[1]["name"], "Someone Else");
    assert_eq!(leads[0]["company"], Value::Null);

    // A deleted contact leaves its leads, unlinked; the next capture makes a new contact.
    app.admin_delete(&path).await.expect(204);
    let leads = app.admin_get("/api/crm/leads").await;
    assert_eq!(leads.expect(200)["data"][0]["contact_id"], Value::Null);
    let r = app
        .post(
            "/api/crm/capture",
            json!({"email": "ann@example.com"}),
            None,
        )
        .await;
    assert_ne!(r.expect(201)["contact_id"], curated["id"]);
}

#[tokio::test]
async fn capture_validation_and_limits() {
    let app = TestApp::new().await;
    let r = app
        .post(
            "/api/crm/capture",
            json!({"email": "nope", "name": "n".repeat(201), "company": "c".repeat(201),
                   "message": "m".repeat(5001), "source": "s".repeat(101)}),
            None,
        )
        .await;
    let mut f = fields(r.expect_problem(422, "VALIDATION_FAILED"));
    f.sort();
    assert_eq!(f, vec!["company", "email", "message", "name", "source"]);
    let r = app
        .post("/api/crm/capture", json!({"name": "No email"}), None)
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["email"]
    );
    app.post(
        "/api/crm/capture",
        json!({"email": "ok@example.com", "name": "n".repeat(200), "company": "c".repeat(200),
               "message": "m".repeat(5000), "source": "s".repeat(100)}),
        None,
    )
    .await
    .expect(201);
    // Nothing was stored by the refused ones.
    let leads = app.admin_get("/api/crm/leads").await;
    assert_eq!(ids(leads.expect(200)).len(), 1);
    let contacts = app.admin_get("/api/contacts").await;
    assert_eq!(ids(contacts.expect(200)).len(), 1);
}

#[tokio::test]
async fn leads_filter_paginate_and_are_admin_only() {
    let app = TestApp::new().await;
    let mut web = vec![];
    for i in 0..5 {
        let r = app
            .post(
                "/api/crm/capture",
                json!({"email": format!("w{i}@example.com"), "source": "web"}),
                None,
            )
            .await;
        web.push(id(r.expect(201)));
    }
    let fair = app
        .post(
            "/api/crm/capture",
            json!({"email": "w0@example.com", "source": "fair", "message": XSS}),
            None,
        )
        .await;
    let fair = fair.expect(201).clone();
    assert_eq!(fair["message"], XSS);

    web.reverse();
    let token = app.admin_token.clone();
    let (seen, pages) = all_pages(&app, "/api/crm/leads?source=web&limit=2", &token).await;
    assert_eq!(pages, 3);
    assert_eq!(seen, web);

    let r = app.admin_get("/api/crm/leads?source=fair").await;
    let page = r.expect(200);
    assert_eq!(ids(page), vec![id(&fair)]);
    assert_eq!(page["data"][0]["message"], XSS);

    let r = app.admin_get("/api/crm/leads?email=W0%40Example.com").await;
    assert_eq!(ids(r.expect(200)), vec![id(&fair), web[4].clone()]);
    let r = app
        .admin_get("/api/crm/leads?email=w0%40example.com&source=web")
        .await;
    assert_eq!(ids(r.expect(200)), vec![web[4].clone()]);
    app.admin_get("/api/crm/leads?limit=0")
        .await
        .expect_problem(422, "VALIDATION_FAILED");

    let (_, customer) = app.customer("cust@example.com").await;
    app.get("/api/crm/leads", None)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    app.get("/api/crm/leads", Some(&customer))
        .await
        .expect_problem(403, "FORBIDDEN");
}

// ---------------------------------------------------------------- support

async fn open_ticket(app: &TestApp, email: &str, token: Option<&str>) -> String {
    let r = app
        .post(
            "/api/support",
            json!({"email": email, "subject": "Activation fails", "message": "It says ACTIVATION_LIMIT_REACHED."}),
            token,
        )
        .await;
    id(r.expect(201))
}

#[tokio::test]
async fn anyone_can_open_a_ticket() {
    let app = TestApp::new().await;
    let r = app
        .post(
            "/api/support",
            json!({"email": " Ann@Example.com ", "subject": "  Help  ", "message": "Please help."}),
            None,
        )
        .await;
    let body = r.expect(201).clone();
    assert_id(&body, "tkt");
    assert_eq!(body["status"], "open");
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");

    let t = app
        .admin_get(&format!("/api/support/tickets/{}", id(&body)))
        .await;
    let t = t.expect(200);
    assert_eq!(t["email"], "ann@example.com");
    assert_eq!(t["subject"], "Help");
    assert_eq!(t["message"], "Please help.");
    assert_eq!(t["status"], "open");
    assert_eq!(t["user_id"], Value::Null);
    assert_eq!(t["replies"], json!([]));
}

#[tokio::test]
async fn ticket_validation_and_limits() {
    let app = TestApp::new().await;
    let r = app
        .post(
            "/api/support",
            json!({"email": "bad", "subject": "s".repeat(201), "message": "m".repeat(5001)}),
            None,
        )
        .await;
    let mut f = fields(r.expect_problem(422, "VALIDATION_FAILED"));
    f.sort();
    assert_eq!(f, vec!["email", "message", "subject"]);
    let r = app
        .post(
            "/api/support",
            json!({"email": "a@example.com", "subject": "   ", "message": " \n "}),
            None,
        )
        .await;
    let mut f = fields(r.expect_problem(422, "VALIDATION_FAILED"));
    f.sort();
    assert_eq!(f, vec!["message", "subject"]);
    let r = app
        .post("/api/support", json!({"email": "a@example.com"}), None)
        .await;
    r.expect_problem(422, "VALIDATION_FAILED");
    app.post(
        "/api/support",
        json!({"email": "a@example.com", "subject": "s".repeat(200), "message": "m".repeat(5000)}),
        None,
    )
    .await
    .expect(201);
    let list = app.admin_get("/api/support/tickets").await;
    assert_eq!(ids(list.expect(200)).len(), 1);
}

#[tokio::test]
async fn customers_see_only_their_own_tickets() {
    let app = TestApp::new().await;
    let (ann_id, ann) = app.customer("ann@example.com").await;
    let (_, bob) = app.customer("bob@example.com").await;

    // Opened while signed in: linked to the user, whatever email was typed.
    let signed_in = open_ticket(&app, "ann.work@example.org", Some(&ann)).await;
    // Opened anonymously with Ann's account email (in another case): hers too.
    let by_email = open_ticket(&app, "ANN@example.com", None).await;
    // Someone else's.
    let strangers = open_ticket(&app, "carol@example.com", None).await;

    let t = app
        .admin_get(&format!("/api/support/tickets/{signed_in}"))
        .await;
    assert_eq!(t.expect(200)["user_id"], ann_id.as_str());

    let mine = app.get("/api/support/tickets", Some(&ann)).await;
    assert_eq!(
        ids(mine.expect(200)),
        vec![by_email.clone(), signed_in.clone()]
    );
    for t in [&signed_in, &by_email] {
        let r = app
            .get(&format!("/api/support/tickets/{t}"), Some(&ann))
            .await;
        assert_eq!(id(r.expect(200)), *t);
    }
    let r = app
        .get(&format!("/api/support/tickets/{strangers}"), Some(&ann))
        .await;
    r.expect_problem(404, "NOT_FOUND");

    // Bob sees none of them, and cannot tell they exist.
    let r = app.get("/api/support/tickets", Some(&bob)).await;
    assert!(ids(r.expect(200)).is_empty());
    for t in [&signed_in, &by_email, &strangers] {
        app.get(&format!("/api/support/tickets/{t}"), Some(&bob))
            .await
            .expect_problem(404, "NOT_FOUND");
        app.post(
            &format!("/api/support/tickets/{t}/replies"),
            json!({"message": "me too"}),
            Some(&bob),
        )
        .await
        .expect_problem(404, "NOT_FOUND");
    }

    // Admins see all; the list needs credentials.
    let all = app.admin_get("/api/support/tickets").await;
    assert_eq!(ids(all.expect(200)), vec![strangers, by_email, signed_in]);
    app.get("/api/support/tickets", None)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    app.get(UNKNOWN_TICKET, Some(&ann))
        .await
        .expect_problem(404, "NOT_FOUND");
    app.admin_get(UNKNOWN_TICKET)
        .await
        .expect_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn a_read_only_key_opens_tickets_as_anyone() {
    let app = TestApp::new().await;
    let (_, ann) = app.customer("ann@example.com").await;
    let r = app
        .post(
            "/api/api-keys",
            json!({"name": "ro", "scope": "read-only"}),
            Some(&ann),
        )
        .await;
    let ro = r.expect(201)["key"].as_str().unwrap().to_string();
    // The public form does not refuse it, but a read-only key cannot act for its owner.
    let t = open_ticket(&app, "someone@example.com", Some(&ro)).await;
    let got = app.admin_get(&format!("/api/support/tickets/{t}")).await;
    assert_eq!(got.expect(200)["user_id"], Value::Null);
    // Bad credentials are still refused.
    let r = app
        .post(
            "/api/support",
            json!({"email": "a@example.com", "subject": "s", "message": "m"}),
            Some("not-a-token"),
        )
        .await;
    r.expect_problem(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn replies_status_and_reopening() {
    let app = TestApp::new().await;
    let (ann_id, ann) = app.customer("ann@example.com").await;
    let t = open_ticket(&app, "ann@example.com", Some(&ann)).await;
    let path = format!("/api/support/tickets/{t}");
    let replies = format!("{path}/replies");

    let staff = app
        .admin_post(&replies, json!({"message": "Which device?"}))
        .await;
    let staff = staff.expect(201).clone();
    assert!(id(&staff).starts_with("rpl_"));
    assert_eq!(staff["ticket_id"], t.as_str());
    assert_eq!(staff["author"], "staff");
    assert_eq!(staff["message"], "Which device?");

    let r = app.admin_patch(&path, json!({"status": "pending"})).await;
    assert_eq!(r.expect(200)["status"], "pending");

    // The customer answers: the ticket is open again.
    let mine = app
        .post(&replies, json!({"message": XSS}), Some(&ann))
        .await;
    let mine = mine.expect(201).clone();
    assert_eq!(mine["author"], "customer");
    assert_eq!(mine["user_id"], ann_id.as_str());
    assert_eq!(mine["message"], XSS);

    let got = app.get(&path, Some(&ann)).await;
    let got = got.expect(200);
    assert_eq!(got["status"], "open");
    assert_eq!(got["replies"], json!([staff, mine]));

    // Validation after access: a missing or oversized message is a 422.
    let r = app.post(&replies, json!({}), Some(&ann)).await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["message"]
    );
    let r = app
        .admin_post(&replies, json!({"message": "m".repeat(5001)}))
        .await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["message"]
    );
    app.admin_post(
        &format!("{UNKNOWN_TICKET}/replies"),
        json!({"message": "hello"}),
    )
    .await
    .expect_problem(404, "NOT_FOUND");

    // Closed tickets take no replies until reopened.
    app.admin_patch(&path, json!({"status": "closed"}))
        .await
        .expect(200);
    app.post(&replies, json!({"message": "one more thing"}), Some(&ann))
        .await
        .expect_problem(409, "TICKET_CLOSED");
    app.admin_post(&replies, json!({"message": "closing remark"}))
        .await
        .expect_problem(409, "TICKET_CLOSED");
    app.admin_patch(&path, json!({"status": "open"}))
        .await
        .expect(200);
    app.post(&replies, json!({"message": "one more thing"}), Some(&ann))
        .await
        .expect(201);
    let got = app.admin_get(&path).await;
    assert_eq!(got.expect(200)["replies"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn ticket_status_is_admin_only_and_checked() {
    let app = TestApp::new().await;
    let (_, ann) = app.customer("ann@example.com").await;
    let t = open_ticket(&app, "ann@example.com", Some(&ann)).await;
    let path = format!("/api/support/tickets/{t}");
    for status in ["pending", "resolved", "closed", "open"] {
        let r = app.admin_patch(&path, json!({"status": status})).await;
        assert_eq!(r.expect(200)["status"], status);
    }
    for bad in [
        json!({"status": "done"}),
        json!({"status": "OPEN"}),
        json!({}),
    ] {
        let r = app.admin_patch(&path, bad).await;
        assert_eq!(
            fields(r.expect_problem(422, "VALIDATION_FAILED")),
            vec!["status"]
        );
    }
    app.call(
        axum::http::Method::PATCH,
        &path,
        Some(json!({"status": "closed"})),
        Some(&ann),
    )
    .await
    .expect_problem(403, "FORBIDDEN");
    app.admin_patch(UNKNOWN_TICKET, json!({"status": "closed"}))
        .await
        .expect_problem(404, "NOT_FOUND");

    // The status filter, for admins and for the customer's own list.
    let other = open_ticket(&app, "ann@example.com", None).await;
    app.admin_patch(&path, json!({"status": "resolved"}))
        .await
        .expect(200);
    let r = app.admin_get("/api/support/tickets?status=resolved").await;
    assert_eq!(ids(r.expect(200)), vec![t.clone()]);
    let r = app
        .get("/api/support/tickets?status=open", Some(&ann))
        .await;
    assert_eq!(ids(r.expect(200)), vec![other]);
    let r = app.admin_get("/api/support/tickets?status=bogus").await;
    assert_eq!(
        fields(r.expect_problem(422, "VALIDATION_FAILED")),
        vec!["status"]
    );
}

#[tokio::test]
async fn ticket_lists_paginate_and_keep_html_verbatim() {
    let app = TestApp::new().await;
    let (_, ann) = app.customer("ann@example.com").await;
    let mut made = vec![];
    for i in 0..5 {
        let r = app
            .post(
                "/api/support",
                json!({"email": "ann@example.com", "subject": format!("{i} {XSS}"), "message": XSS}),
                None,
            )
            .await;
        made.push(id(r.expect(201)));
    }
    made.reverse();
    let (seen, pages) = all_pages(&app, "/api/support/tickets?limit=2", &ann).await;
    assert_eq!(pages, 3);
    assert_eq!(seen, made);
    let t = app
        .get(&format!("/api/support/tickets/{}", made[0]), Some(&ann))
        .await;
    let t = t.expect(200);
    assert_eq!(t["subject"], format!("4 {XSS}"));
    assert_eq!(t["message"], XSS);
}

// ---------------------------------------------------------------- newsletter

#[tokio::test]
async fn subscribe_again_unsubscribe_and_resubscribe() {
    let app = TestApp::new().await;
    let r = app
        .post(
            "/api/newsletter/subscribe",
            json!({"email": "  Ann@Example.COM "}),
            None,
        )
        .await;
    let first = r.expect(201).clone();
    assert_id(&first, "nws");
    assert_eq!(first["email"], "ann@example.com");
    let token = first["unsubscribe_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()), "{token}");

    // Only the digest is stored; no column holds the token.
    let row: (String, String, String) = sqlx::query_as(
        "SELECT token_digest, status, email FROM newsletter_subscribers WHERE id = $1",
    )
    .bind(id(&first))
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(row.0, ecosire::crypto::sha256_hex(token.as_bytes()));
    assert_ne!(row.0, token);
    assert_eq!(row.1, "subscribed");

    // Already subscribed: 200, the same subscriber, no token.
    let r = app
        .post(
            "/api/newsletter/subscribe",
            json!({"email": "ann@example.com"}),
            None,
        )
        .await;
    let again = r.expect(200).clone();
    assert_eq!(
        again,
        json!({"id": first["id"], "email": "ann@example.com"})
    );

    app.post("/api/newsletter/unsubscribe", json!({"token": token}), None)
        .await
        .expect(204);
    // Clicking the link twice is harmless.
    app.post("/api/newsletter/unsubscribe", json!({"token": token}), None)
        .await
        .expect(204);
    let subs = app.admin_get("/api/newsletter/subscribers").await;
    let s = subs.expect(200)["data"][0].clone();
    assert_eq!(s["status"], "unsubscribed");
    assert!(s["unsubscribed_at"].is_string());
    assert!(s.get("token_digest").is_none() && s.get("unsubscribe_token").is_none());

    // Subscribing again is new: 201 and a new token; the old one stops working.
    let r = app
        .post(
            "/api/newsletter/subscribe",
            json!({"email": "ann@example.com"}),
            None,
        )
        .await;
    let renewed = r.expect(201).clone();
    assert_eq!(renewed["id"], first["id"]);
    let new_token = renewed["unsubscribe_token"].as_str().unwrap().to_string();
    assert_ne!(new_token, token);
    app.post("/api/newsletter/unsubscribe", json!({"token": token}), None)
        .await
        .expect_problem(404, "SUBSCRIPTION_NOT_FOUND");
    let subs = app.admin_get("/api/newsletter/subscribers").await;
    let s = subs.expect(200)["data"][0].clone();
    assert_eq!(s["status"], "subscribed");
    assert_eq!(s["unsubscribed_at"], Value::Null);
    app.post(
        "/api/newsletter/unsubscribe",
        json!({"token": format!("  {new_token} ")}),
        None,
    )
    .await
    .expect(204);
}

#[tokio::test]
async fn newsletter_validation_and_unknown_tokens() {
    let app = TestApp::new().await;
    for bad in [
        json!({"email": "not-an-email"}),
        json!({"email": "<a@b.io>"}),
        json!({"email": ""}),
        json!({}),
        json!({"email": 7}),
    ] {
        let r = app.post("/api/newsletter/subscribe", bad, None).await;
        assert_eq!(
            fields(r.expect_problem(422, "VALIDATION_FAILED")),
            vec!["email"]
        );
    }
    app.post(
        "/api/newsletter/unsubscribe",
        json!({"token": "A".repeat(32)}),
        None,
    )
    .await
    .expect_problem(404, "SUBSCRIPTION_NOT_FOUND");
    for bad in [
        json!({"token": ""}),
        json!({}),
        json!({"token": "x".repeat(129)}),
    ] {
        let r = app.post("/api/newsletter/unsubscribe", bad, None).await;
        assert_eq!(
            fields(r.expect_problem(422, "VALIDATION_FAILED")),
            vec!["token"]
        );
    }
    let subs = app.admin_get("/api/newsletter/subscribers").await;
    assert!(ids(subs.expect(200)).is_empty());
}

#[tokio::test]
async fn subscribers_are_admin_only_filtered_and_paginated() {
    let app = TestApp::new().await;
    let mut tokens = vec![];
    let mut made = vec![];
    for i in 0..5 {
        let r = app
            .post(
                "/api/newsletter/subscribe",
                json!({"email": format!("s{i}@example.com")}),
                None,
            )
            .await;
        let b = r.expect(201);
        made.push(id(b));
        tokens.push(b["unsubscribe_token"].as_str().unwrap().to_string());
    }
    app.post(
        "/api/newsletter/unsubscribe",
        json!({"token": tokens[1]}),
        None,
    )
    .await
    .expect(204);
    made.reverse();
    let token = app.admin_token.clone();
    let (seen, pages) = all_pages(&app, "/api/newsletter/subscribers?limit=2", &token).await;
    assert_eq!(pages, 3);
    assert_eq!(seen, made);
    let r = app
        .admin_get("/api/newsletter/subscribers?status=unsubscribed")
        .await;
    assert_eq!(ids(r.expect(200)), vec![made[3].clone()]);
    let r = app
        .admin_get("/api/newsletter/subscribers?status=subscribed")
        .await;
    assert_eq!(ids(r.expect(200)).len(), 4);
    app.admin_get("/api/newsletter/subscribers?status=maybe")
        .await
        .expect_problem(422, "VALIDATION_FAILED");

    let (_, customer) = app.customer("cust@example.com").await;
    app.get("/api/newsletter/subscribers", None)
        .await
        .expect_problem(401, "UNAUTHENTICATED");
    app.get("/api/newsletter/subscribers", Some(&customer))
        .await
        .expect_problem(403, "FORBIDDEN");
}

// ---------------------------------------------------------------- ask

async fn ask(app: &TestApp, question: &str) -> Value {
    let r = app
        .post("/api/ecosire-ai/ask", json!({"question": question}), None)
        .await;
    r.expect(200).clone()
}

#[track_caller]
fn source_urls(answer: &Value) -> Vec<String> {
    let sources = answer["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("no sources: {answer}"));
    for s in sources {
        assert!(!s["title"].as_str().unwrap().is_empty(), "{s}");
        assert!(
            s["url"]
                .as_str()
                .unwrap()
                .starts_with("https://docs.ecosire.com/"),
            "{s}"
        );
    }
    sources
        .iter()
        .map(|s| s["url"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn ask_answers_about_the_free_tier() {
    let app = TestApp::new().await;
    let a = ask(&app, "Is there a free tier?").await;
    let answer = a["answer"].as_str().unwrap();
    assert!(answer.contains("1,000"), "{answer}");
    assert!(answer.to_lowercase().contains("free"), "{answer}");
    let urls = source_urls(&a);
    assert_eq!(urls[0], "https://docs.ecosire.com/faq#is-there-a-free-tier");
    assert_eq!(a["sources"][0]["title"], "Is there a free tier?");
}

#[tokio::test]
async fn ask_answers_how_many_calls_per_day() {
    let app = TestApp::new().await;
    let a = ask(&app, "How many calls per day can I make?").await;
    let answer = a["answer"].as_str().unwrap();
    assert!(answer.contains("1,000"), "{answer}");
    assert!(answer.contains("per day"), "{answer}");
    let urls = source_urls(&a);
    assert_eq!(
        urls[0],
        "https://docs.ecosire.com/faq#how-many-api-calls-per-day-can-i-make"
    );
    assert!(urls.len() <= 3, "{urls:?}");
}

#[tokio::test]
async fn ask_answers_how_to_verify_a_token_offline() {
    let app = TestApp::new().await;
    let a = ask(&app, "how do I verify a token offline").await;
    let answer = a["answer"].as_str().unwrap();
    assert!(answer.contains("jwks"), "{answer}");
    assert!(answer.contains("Ed25519"), "{answer}");
    let urls = source_urls(&a);
    assert_eq!(
        urls[0],
        "https://docs.ecosire.com/api-guide#verifying-license-tokens-offline"
    );
    assert!(urls.iter().any(|u| u.contains("offline")), "{urls:?}");
}

#[tokio::test]
async fn ask_explains_error_codes() {
    let app = TestApp::new().await;
    let a = ask(&app, "What does ACTIVATION_LIMIT_REACHED mean?").await;
    assert_eq!(
        source_urls(&a)[0],
        "https://docs.ecosire.com/errors#activation_limit_reached-409"
    );
    assert!(a["answer"].as_str().unwrap().contains("seat"), "{a}");
}

#[tokio::test]
async fn ask_admits_when_the_docs_do_not_answer() {
    let app = TestApp::new().await;
    for q in [
        "what is the airspeed of a swallow",
        "What is the airspeed velocity of an unladen swallow?",
        "how do I bake a cake",
    ] {
        let a = ask(&app, q).await;
        assert_eq!(a, json!({"answer": NO_ANSWER, "sources": []}), "{q}");
    }
}

#[tokio::test]
async fn ask_checks_the_question() {
    let app = TestApp::new().await;
    for bad in [
        json!({"question": ""}),
        json!({"question": "   "}),
        json!({"question": "q".repeat(1001)}),
        json!({"question": 5}),
        json!({}),
    ] {
        let r = app.post("/api/ecosire-ai/ask", bad, None).await;
        assert_eq!(
            fields(r.expect_problem(422, "VALIDATION_FAILED")),
            vec!["question"]
        );
    }
    // 1,000 characters is fine (and about nothing).
    let a = ask(&app, &"q".repeat(1000)).await;
    assert_eq!(a["answer"], NO_ANSWER);
    // Signed-in callers may ask too.
    let r = app
        .post(
            "/api/ecosire-ai/ask",
            json!({"question": "free tier"}),
            Some(&app.admin_token.clone()),
        )
        .await;
    assert_ne!(r.expect(200)["answer"], NO_ANSWER);
}
