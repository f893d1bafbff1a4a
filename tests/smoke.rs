mod common;

use common::TestApp;
use serde_json::json;

#[tokio::test]
async fn create_activate_validate() {
    let app = TestApp::new().await;
    let (_p, l) = app.product_and_license(json!({}), json!({})).await;
    let key = l["key"].as_str().unwrap();
    app.activate(key, "fp-1").await.expect(201);
    let v = app
        .validate(json!({"key": key, "fingerprint": "fp-1"}))
        .await;
    assert_eq!(v["code"], "VALID");
}
