//! The shop's public API against its contract, `target-system/openapi.json`, on a live
//! shop: every documented operation answers with a documented status, and schemathesis
//! (from PyPI, in the test venv) fuzzes every operation, and the links between them,
//! without finding a server error or an answer the document does not allow.
//!
//! Checks: all of schemathesis's (`--checks all`). Those that need what the shop does not
//! have pass vacuously: `use_after_free` (no DELETE), `object_level_authorization` (it
//! needs a second user configured; another user's order is 404, which the
//! operations test below does not cover either).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use faultline_tests::{Shop, python};
use serde_json::{Value, json};

fn openapi_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target-system/openapi.json")
}

fn openapi() -> Value {
    serde_json::from_str(&std::fs::read_to_string(openapi_path()).unwrap())
        .expect("openapi.json parses")
}

/// Whether `status` is one of the responses `op` documents (ranges like `5XX` too).
fn documented_status(op: &Value, status: u16) -> bool {
    let responses = op["responses"].as_object().expect("responses");
    responses.contains_key(&status.to_string())
        || responses.contains_key(&format!("{}XX", status / 100))
        || responses.contains_key("default")
}

/// Every operation of the document, requested as a well-behaved client would (the
/// document's example body, a token where it asks for one, an id that exists), answers
/// with a documented success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_a_documented_success() {
    let shop = Shop::start(&[]).await;
    let token = shop.login("user1", "pass1").await;
    // An order to read back by id.
    let (status, created, _) = shop
        .order(
            &token,
            "contract-1",
            json!([{ "product_id": 7, "quantity": 1 }]),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let order_id = created["order_id"].as_str().unwrap().to_owned();

    let doc = openapi();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path
                .replace("/products/{id}", "/products/1")
                .replace("/orders/{id}", &format!("/orders/{order_id}"));
            assert!(!concrete.contains('{'), "a path parameter left in {path}");
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = shop.http.request(method.clone(), shop.url(&concrete));
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                req = req.bearer_auth(&token);
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if params.iter().any(|p| {
                p["$ref"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/IdempotencyKey"))
            }) {
                req = req.header("idempotency-key", format!("contract-{method}-{path}"));
            }
            if let Some(example) = op["requestBody"]["content"]["application/json"]
                .get("example")
                .cloned()
            {
                req = req.json(&example);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            assert!(
                status.is_success() && documented_status(op, status.as_u16()),
                "{method} {concrete}: {status} {body}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 9, "operations requested");
}

/// Runs schemathesis on `doc` against the shop; its exit status and its output.
async fn schemathesis(shop: &Shop, doc: &Path, token: &str, extra: &[&str]) -> (bool, String) {
    let cwd = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target-system/schemathesis.toml");
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg("-c")
        .arg("import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; schemathesis()")
        .arg("--no-color")
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(doc)
        .args(["--url", &shop.gateway])
        .args([
            // A fixed seed and bounded examples: the same cases every run.
            "--seed",
            "18",
            "--generation-database",
            "none",
            "--max-examples",
            "60",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--suppress-health-check",
            "too_slow",
        ])
        .args(extra)
        .env("SHOP_TOKEN", token)
        // Reports and hypothesis's files go to a directory of the test's own.
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("schemathesis finished within 5 minutes")
        .expect("schemathesis starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// schemathesis, every phase (examples, coverage, fuzzing, stateful through the
/// document's links) and every check, finds nothing; and the same run does fail when
/// the document is wrong (a product's price planted as a string), so a pass means
/// something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_violation_of_the_contract() {
    let shop = Shop::start(&[]).await;
    let token = shop.login("user1", "pass1").await;

    let dir = tempfile::tempdir().unwrap();
    let planted = dir.path().join("openapi.json");
    let mut doc = openapi();
    // Two lies: a product's price is a string, and an unknown product is not 404.
    doc["components"]["schemas"]["Product"]["properties"]["price_cents"] =
        json!({ "type": "string" });
    doc["paths"]["/api/v1/products/{id}"]["get"]["responses"]
        .as_object_mut()
        .unwrap()
        .remove("404");
    std::fs::write(&planted, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let (ok, out) = schemathesis(
        &shop,
        &planted,
        &token,
        &[
            "--phases",
            "examples,fuzzing",
            "--include-operation-id",
            "getProduct",
            "--checks",
            "response_schema_conformance,status_code_conformance",
            // Both lies reported, not only the first case that fails.
            "--continue-on-failure",
        ],
    )
    .await;
    assert!(!ok, "schemathesis passed a wrong document:\n{out}");
    assert!(
        out.contains("Response violates schema") && out.contains("price_cents"),
        "the failure names the planted schema:\n{out}"
    );
    assert!(
        out.contains("Undocumented status code"),
        "the failure names the planted status:\n{out}"
    );

    let (ok, out) = schemathesis(
        &shop,
        &openapi_path(),
        &token,
        &[
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--checks",
            "all",
        ],
    )
    .await;
    assert!(ok, "schemathesis found failures:\n{out}");
    // The stateful phase ran on the document's links (create an order, then read it).
    assert!(out.contains("Stateful"), "{out}");
}
