//! The platform around every route: rate limits and quotas, metrics, the OpenAPI document.
mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use common::{TestApp, TestResponse};
use ecosire::config::Rule;
use serde_json::{Value, json};

async fn limited_app(tweak: impl FnOnce(&mut ecosire::config::Config)) -> TestApp {
    TestApp::with_config(|c| {
        c.rate_limits = true;
        // Generous for the harness's own admin login; tests narrow what they exercise.
        c.limits.rules.insert("login".into(), Rule::per_minute(10));
        tweak(c);
    })
    .await
}

/// A request as if from `peer`, optionally through a proxy that sent `X-Forwarded-For`.
async fn from_peer(
    app: &TestApp,
    peer: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
    xff: Option<&str>,
) -> TestResponse {
    let mut headers = vec![];
    if let Some(t) = token {
        headers.push(("authorization", format!("Bearer {t}")));
    }
    if let Some(x) = xff {
        headers.push(("x-forwarded-for", x.to_string()));
    }
    with_headers(app, peer, method, path, body, &headers).await
}

fn header_u64(r: &TestResponse, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("missing {name}: {:?}", r.headers))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn login_is_limited_per_client_ip_with_headers_on_every_answer() {
    let app = limited_app(|_| {}).await;
    let bad = json!({"email": "nobody@example.com", "password": "wrong-password"});
    for i in 0..10u64 {
        let r = from_peer(
            &app,
            "198.51.100.7",
            Method::POST,
            "/api/auth/login",
            Some(bad.clone()),
            None,
            None,
        )
        .await;
        r.expect_problem(401, "INVALID_CREDENTIALS");
        assert_eq!(header_u64(&r, "x-ratelimit-limit"), 10);
        assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 9 - i);
        assert!(header_u64(&r, "x-ratelimit-reset") >= ecosire::timestamp::now_ms() as u64 / 1000);
    }
    let r = from_peer(
        &app,
        "198.51.100.7",
        Method::POST,
        "/api/auth/login",
        Some(bad.clone()),
        None,
        None,
    )
    .await;
    r.expect_problem(429, "RATE_LIMITED");
    let retry = header_u64(&r, "retry-after");
    assert!((1..=6).contains(&retry), "Retry-After {retry}");
    assert_eq!(header_u64(&r, "x-ratelimit-remaining"), 0);
    // Another client has its own bucket.
    from_peer(
        &app,
        "198.51.100.8",
        Method::POST,
        "/api/auth/login",
        Some(bad),
        None,
        None,
    )
    .await
    .expect(401);
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let app = limited_app(|c| {
        c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        c.limits.rules.insert("support".into(), Rule::per_minute(1));
    })
    .await;
    let body = json!({"email": "a@example.com", "subject": "s", "message": "m"});
    // Through the trusted proxy, two different clients each get their own allowance.
    for client in ["203.0.113.1", "203.0.113.2"] {
        let r = from_peer(
            &app,
            "10.0.0.5",
            Method::POST,
            "/api/support",
            Some(body.clone()),
            None,
            Some(client),
        )
        .await;
        assert_ne!(r.status.as_u16(), 429, "{client}: {}", r.text);
    }
    from_peer(
        &app,
        "10.0.0.5",
        Method::POST,
        "/api/support",
        Some(body.clone()),
        None,
        Some("203.0.113.1"),
    )
    .await
    .expect_problem(429, "RATE_LIMITED");
    // From an untrusted peer the header is ignored: spoofing a new address does not help.
    let r = from_peer(
        &app,
        "198.51.100.9",
        Method::POST,
        "/api/support",
        Some(body.clone()),
        None,
        Some("203.0.113.50"),
    )
    .await;
    assert_ne!(r.status.as_u16(), 429);
    from_peer(
        &app,
        "198.51.100.9",
        Method::POST,
        "/api/support",
        Some(body),
        None,
        Some("203.0.113.51"),
    )
    .await
    .expect_problem(429, "RATE_LIMITED");
}

#[tokio::test]
async fn validate_is_limited_per_license_key_and_unknown_keys_per_ip() {
    let app = limited_app(|c| {
        c.limits
            .rules
            .insert("validate".into(), Rule::per_minute(3));
    })
    .await;
    let (_, l1) = app.product_and_license(json!({}), json!({})).await;
    let (_, l2) = app.product_and_license(json!({}), json!({})).await;
    let v = |key: &str| json!({"key": key});
    for _ in 0..3 {
        from_peer(
            &app,
            "198.51.100.1",
            Method::POST,
            "/api/licenses/validate",
            Some(v(l1["key"].as_str().unwrap())),
            None,
            None,
        )
        .await
        .expect(200);
    }
    // The key's bucket is spent, from any address…
    from_peer(
        &app,
        "198.51.100.2",
        Method::POST,
        "/api/licenses/validate",
        Some(v(l1["key"].as_str().unwrap())),
        None,
        None,
    )
    .await
    .expect_problem(429, "RATE_LIMITED");
    // …while another key is untouched.
    from_peer(
        &app,
        "198.51.100.1",
        Method::POST,
        "/api/licenses/validate",
        Some(v(l2["key"].as_str().unwrap())),
        None,
        None,
    )
    .await
    .expect(200);
    // Unknown keys share the client's address bucket, whatever key they name.
    for i in 0..3 {
        let k = format!("ECOS-00000-00000-00000-0000{i}");
        from_peer(
            &app,
            "198.51.100.3",
            Method::POST,
            "/api/licenses/validate",
            Some(v(&k)),
            None,
            None,
        )
        .await
        .expect(200);
    }
    from_peer(
        &app,
        "198.51.100.3",
        Method::POST,
        "/api/licenses/validate",
        Some(v("ECOS-00000-00000-00000-00009")),
        None,
        None,
    )
    .await
    .expect_problem(429, "RATE_LIMITED");
}

#[tokio::test]
async fn authenticated_calls_are_limited_per_session_and_customers_have_a_daily_quota() {
    let app = limited_app(|c| {
        c.limits
            .rules
            .insert("authenticated".into(), Rule::per_minute(1000));
        c.limits.plans.insert("free".into(), Some(3));
    })
    .await;
    let (_, token) = app.customer("quota@example.com").await;
    for left in [2u64, 1, 0] {
        let r = from_peer(
            &app,
            "198.51.100.4",
            Method::GET,
            "/api/auth/me",
            None,
            Some(&token),
            None,
        )
        .await;
        r.expect(200);
        assert_eq!(header_u64(&r, "x-quota-limit"), 3);
        assert_eq!(header_u64(&r, "x-quota-remaining"), left);
    }
    let r = from_peer(
        &app,
        "198.51.100.4",
        Method::GET,
        "/api/auth/me",
        None,
        Some(&token),
        None,
    )
    .await;
    r.expect_problem(429, "QUOTA_EXCEEDED");
    let retry = header_u64(&r, "retry-after");
    assert!((1..=86_400).contains(&retry));
    // Admins are exempt.
    for _ in 0..5 {
        let r = from_peer(
            &app,
            "198.51.100.4",
            Method::GET,
            "/api/auth/me",
            None,
            Some(&app.admin_token.clone()),
            None,
        )
        .await;
        r.expect(200);
        assert!(r.header("x-quota-limit").is_none());
    }

    let app = limited_app(|c| {
        c.limits
            .rules
            .insert("authenticated".into(), Rule::per_minute(2))
            .map(|_| ())
            .unwrap_or(())
    })
    .await;
    let (_, token) = app.customer("burst@example.com").await;
    for _ in 0..2 {
        from_peer(
            &app,
            "198.51.100.5",
            Method::GET,
            "/api/auth/me",
            None,
            Some(&token),
            None,
        )
        .await
        .expect(200);
    }
    let r = from_peer(
        &app,
        "198.51.100.5",
        Method::GET,
        "/api/auth/me",
        None,
        Some(&token),
        None,
    )
    .await;
    r.expect_problem(429, "RATE_LIMITED");
    assert_eq!(header_u64(&r, "x-ratelimit-limit"), 2);
    // The admin's session is another bucket.
    from_peer(
        &app,
        "198.51.100.5",
        Method::GET,
        "/api/auth/me",
        None,
        Some(&app.admin_token.clone()),
        None,
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn limits_can_be_switched_off() {
    let app = TestApp::with_config(|c| c.rate_limits = false).await;
    let bad = json!({"email": "nobody@example.com", "password": "wrong-password"});
    for _ in 0..15 {
        let r = from_peer(
            &app,
            "198.51.100.7",
            Method::POST,
            "/api/auth/login",
            Some(bad.clone()),
            None,
            None,
        )
        .await;
        r.expect(401);
        assert!(r.header("x-ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn metrics_are_exposed_in_prometheus_format() {
    let app = TestApp::new().await;
    let (_, l) = app.product_and_license(json!({}), json!({})).await;
    app.validate(json!({"key": l["key"]})).await;
    app.validate(json!({"key": "ECOS-00000-00000-00000-00000"}))
        .await;
    let r = app.get("/metrics", None).await;
    r.expect(200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = &r.text;
    for needle in [
        "ecosire_http_requests_total{",
        "route=\"/api/licenses/validate\"",
        "ecosire_http_request_duration_seconds_bucket{",
        "ecosire_validations_total{code=\"VALID\"}",
        "ecosire_validations_total{code=\"NOT_FOUND\"}",
        "ecosire_license_cache_misses_total",
        "ecosire_outbox_pending_deliveries",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

fn operations(api: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    for (path, item) in api["paths"].as_object().unwrap() {
        for m in ["get", "post", "put", "patch", "delete"] {
            if item.get(m).is_some() {
                out.push((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_documented_route_is_served_and_every_route_is_documented() {
    let app = TestApp::new().await;
    let spec = app.get("/api/openapi.json", None).await.expect(200).clone();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let ops = operations(&spec);
    assert!(ops.len() >= 40, "{} operations", ops.len());
    for (method, path) in &ops {
        let concrete = path.replace('{', "x_").replace('}', "");
        let r = app
            .call(
                method.parse().unwrap(),
                &concrete,
                None,
                Some(&app.admin_token.clone()),
            )
            .await;
        assert_ne!(
            r.status.as_u16(),
            405,
            "{method} {path} is documented but not served"
        );
        assert!(
            !(r.status.as_u16() == 404 && r.body["detail"] == "No such route"),
            "{method} {path} is documented but not routed"
        );
        // Error answers are documented as problem+json with their status.
        let status = r.status.as_u16().to_string();
        let op = &spec["paths"][path][method.to_lowercase()];
        assert!(
            op["responses"].get(&status).is_some(),
            "{method} {path} answered {status}, which its spec does not list"
        );
    }
    // Routes reach the router only through utoipa (`routes!`), so none can bypass the spec;
    // this guards against a plain axum `.route(` slipping in. The dashboard's pages are the one
    // exception: HTML for browsers, outside `/api` and its contract (checked here too).
    let mut offenders = vec![];
    for entry in walk("src") {
        let text = std::fs::read_to_string(&entry).unwrap();
        if entry.starts_with("src/dashboard") {
            assert!(
                !text.contains(".route(\"/api"),
                "{entry:?}: an API route belongs in the OpenAPI router"
            );
            continue;
        }
        if text.contains(".route(\"")
            || text.contains("routing::get(")
            || text.contains("routing::post(")
        {
            offenders.push(entry);
        }
    }
    assert!(
        offenders.is_empty(),
        "routes added outside the OpenAPI router: {offenders:?}"
    );
    // Swagger UI is served from the binary.
    let r = app.get("/api/docs/", None).await;
    r.expect(200);
    assert!(
        r.text.contains("swagger"),
        "{}",
        &r.text[..r.text.len().min(200)]
    );
}

fn walk(dir: &str) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(p.to_str().unwrap()));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p.to_string_lossy().to_string());
        }
    }
    out
}

#[tokio::test]
async fn the_spec_declares_both_security_schemes_and_problem_errors() {
    let api = serde_json::to_value(ecosire::openapi()).unwrap();
    let schemes = &api["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["cookie"]["in"], "cookie");
    let validate = &api["paths"]["/api/licenses/validate"]["post"]["responses"];
    assert!(validate["422"]["content"]["application/problem+json"].is_object());
    assert!(validate["429"].is_object());
}

/// What typed clients are generated from: every error answer shows an example of its own status
/// and code (never another error's), license metadata is an open object, and the JWKS answers
/// have a schema of their own.
#[tokio::test]
async fn the_spec_types_errors_metadata_and_the_jwks_precisely() {
    let api = serde_json::to_value(ecosire::openapi()).unwrap();
    let schemas = &api["components"]["schemas"];
    let mut examples = 0;
    for (path, item) in api["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                if !status.starts_with('4') && !status.starts_with('5') {
                    continue;
                }
                let content = &response["content"]["application/problem+json"];
                assert_eq!(content["schema"]["$ref"], "#/components/schemas/Problem");
                let Some(example) = content.get("example") else {
                    continue;
                };
                examples += 1;
                let at = format!("{method} {path} {status}");
                assert_eq!(example["status"].to_string(), *status, "{at}");
                assert_eq!(example["statusCode"].to_string(), *status, "{at}");
                let code = example["code"].as_str().unwrap();
                let description = response["description"].as_str().unwrap();
                assert!(
                    description.contains(code),
                    "{at}: {code} in {description:?}"
                );
                if example["details"].is_array() {
                    assert_eq!(code, "VALIDATION_FAILED", "{at}");
                }
            }
        }
    }
    assert!(examples > 300, "{examples} error examples");
    // Examples live on each answer; the schema's own would show for every error alike.
    for (name, property) in schemas["Problem"]["properties"].as_object().unwrap() {
        assert!(
            property.get("example").is_none() || name == "cause",
            "Problem.{name} has an example"
        );
    }
    let activate = &api["paths"]["/api/licenses/activate"]["post"]["responses"];
    let example =
        |status: &str| &activate[status]["content"]["application/problem+json"]["example"];
    assert_eq!(example("404")["code"], "LICENSE_NOT_FOUND");
    assert_eq!(example("409")["code"], "ACTIVATION_LIMIT_REACHED");
    assert_eq!(example("401")["message"], "Authentication required");
    assert_eq!(
        example("422")["details"],
        json!([{"field": "key", "message": "missing field `key`"}])
    );
    let list = &api["paths"]["/api/licenses"]["get"]["responses"]["422"];
    assert_eq!(
        list["content"]["application/problem+json"]["example"]["details"][0]["field"],
        "limit"
    );

    // Metadata: any members (a bare `type: object` makes generated types accept none).
    assert_eq!(schemas["Metadata"]["type"], "object");
    assert_eq!(schemas["Metadata"]["additionalProperties"], json!({}));
    for (schema, field) in [
        ("License", "metadata"),
        ("CreateLicense", "metadata"),
        ("UpdateLicense", "metadata"),
    ] {
        let property = schemas[schema]["properties"][field].to_string();
        assert!(
            property.contains("#/components/schemas/Metadata"),
            "{schema}.{field}: {property}"
        );
    }

    // The JWKS: a set of Ed25519 JWKs with every member a JOSE library needs.
    assert_eq!(
        schemas["Jwk"]["required"],
        json!(["kty", "crv", "x", "kid", "use", "alg"])
    );
    assert_eq!(schemas["Jwks"]["required"], json!(["keys"]));
    for path in ["/api/licenses/jwks", "/.well-known/jwks.json"] {
        assert_eq!(
            api["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/Jwks",
            "{path}"
        );
    }
}

/// A request from `peer` with raw headers (for credentials that are not a bearer token).
async fn with_headers(
    app: &TestApp,
    peer: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, String)],
) -> TestResponse {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    let mut req = match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    }
    .unwrap();
    let addr: SocketAddr = format!("{peer}:40000").parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(addr));
    app.send(req).await
}

#[tokio::test]
async fn credentials_that_do_not_verify_are_charged_as_anonymous() {
    let app = limited_app(|c| {
        c.limits
            .rules
            .insert("anonymous".into(), Rule::per_minute(5));
        c.limits.rules.insert("ask".into(), Rule::per_minute(3));
    })
    .await;
    // Garbage of every kind: a Basic header, a made-up bearer token, a bare cookie name.
    let junk = [
        ("authorization", "Basic eDp5".to_string()),
        ("authorization", "Bearer not-a-token".to_string()),
        ("cookie", "ecosire_auth".to_string()),
        ("cookie", "ecosire_auth=forged".to_string()),
        ("authorization", "Garbage".to_string()),
    ];
    for (i, h) in junk.iter().enumerate() {
        let r = with_headers(
            &app,
            "198.51.100.20",
            Method::GET,
            "/api/products",
            None,
            std::slice::from_ref(h),
        )
        .await;
        assert_ne!(r.status.as_u16(), 429, "call {i}: {}", r.text);
    }
    for h in &junk {
        with_headers(
            &app,
            "198.51.100.20",
            Method::GET,
            "/api/products",
            None,
            std::slice::from_ref(h),
        )
        .await
        .expect_problem(429, "RATE_LIMITED");
    }
    // The ask bucket: a different random header on every call is still one client.
    for i in 0..3 {
        let r = with_headers(
            &app,
            "198.51.100.21",
            Method::POST,
            "/api/ecosire-ai/ask",
            Some(json!({"question": "How do I rotate an API key?"})),
            &[("authorization", format!("Bearer random-{i}"))],
        )
        .await;
        assert_ne!(r.status.as_u16(), 429, "{}", r.text);
    }
    with_headers(
        &app,
        "198.51.100.21",
        Method::POST,
        "/api/ecosire-ai/ask",
        Some(json!({"question": "How do I rotate an API key?"})),
        &[("authorization", "Bearer random-4".to_string())],
    )
    .await
    .expect_problem(429, "RATE_LIMITED");
    // A verified caller has a bucket of its own, whatever the IP's anonymous allowance.
    let token = app.admin_token.clone();
    from_peer(
        &app,
        "198.51.100.20",
        Method::GET,
        "/api/products",
        None,
        Some(&token),
        None,
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn registration_has_its_own_per_ip_bucket() {
    let app = limited_app(|c| {
        c.limits
            .rules
            .insert("register".into(), Rule::per_minute(2));
    })
    .await;
    for i in 0..2 {
        from_peer(
            &app,
            "198.51.100.30",
            Method::POST,
            "/api/auth/register",
            Some(json!({"email": format!("r{i}@example.com"), "password": "password-123", "name": "R"})),
            None,
            None,
        )
        .await
        .expect(201);
    }
    from_peer(
        &app,
        "198.51.100.30",
        Method::POST,
        "/api/auth/register",
        Some(json!({"email": "r9@example.com", "password": "password-123", "name": "R"})),
        None,
        None,
    )
    .await
    .expect_problem(429, "RATE_LIMITED");
}

#[tokio::test]
async fn a_client_supplied_forwarded_for_line_does_not_beat_the_proxys() {
    let app = limited_app(|c| {
        c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        c.limits.rules.insert("login".into(), Rule::per_minute(3));
    })
    .await;
    let body = json!({"email": "nobody@example.com", "password": "wrong-password"});
    // The client sends its own X-Forwarded-For line, new each time; the proxy appends a second
    // line with the address it saw. Only the proxy's line counts.
    for i in 0..4 {
        let r = with_headers(
            &app,
            "10.0.0.5",
            Method::POST,
            "/api/auth/login",
            Some(body.clone()),
            &[
                ("x-forwarded-for", format!("203.0.113.{}", 100 + i)),
                ("x-forwarded-for", "198.51.100.77".to_string()),
            ],
        )
        .await;
        if i < 3 {
            r.expect_problem(401, "INVALID_CREDENTIALS");
        } else {
            r.expect_problem(429, "RATE_LIMITED");
        }
    }
}

/// Every handler names the bucket that pays for it (there is no table of routes to fall back
/// on): each documented operation, called anonymously and with a key, answers with rate-limit
/// headers, and so does an unknown route.
#[tokio::test]
async fn every_operation_is_rate_limited() {
    let app = limited_app(|_| {}).await;
    let spec = app.get("/api/openapi.json", None).await.expect(200).clone();
    let token = app.admin_token.clone();
    for (method, path) in operations(&spec) {
        let concrete = path.replace('{', "x_").replace('}', "");
        let body = (method != "GET" && method != "DELETE").then(|| json!({}));
        for who in [None, Some(token.as_str())] {
            let r = from_peer(
                &app,
                "198.51.100.90",
                method.parse().unwrap(),
                &concrete,
                body.clone(),
                who,
                None,
            )
            .await;
            assert!(
                r.header("x-ratelimit-limit").is_some(),
                "{method} {path} ({}) answered {} without rate-limit headers",
                if who.is_some() { "admin" } else { "anonymous" },
                r.status
            );
        }
    }
    let r = from_peer(
        &app,
        "198.51.100.90",
        Method::GET,
        "/api/nope",
        None,
        None,
        None,
    )
    .await;
    r.expect_problem(404, "NOT_FOUND");
    assert!(r.header("x-ratelimit-limit").is_some());
}
