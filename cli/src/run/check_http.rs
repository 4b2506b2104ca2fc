//! One attempt of an `[[checks.http]]` check: the request as written, the answer judged
//! by its status, its body and the values its JSON holds at the paths given.

use super::checks::{Attempt, Miss};
use crate::experiment::{Destination, HttpCheck};

/// The most of an answer's body read: enough for any check, and a bound on memory.
const MAX_BODY: usize = 1 << 20;
/// How much of a body a message quotes.
const QUOTED: usize = 200;

/// Sends the check's request once and judges the answer. `base` is the target's
/// entrypoint (`http://host:port`), for checks written with a `path`.
pub async fn attempt(http: &reqwest::Client, base: &str, c: &HttpCheck) -> Attempt {
    let url = match &c.to {
        Destination::Url(u) => u.clone(),
        Destination::Path(p) => format!("{base}{p}"),
    };
    let mut req = http.request(c.method.clone(), &url).timeout(c.timeout);
    for (k, v) in &c.headers {
        req = req.header(k, v);
    }
    if let Some(b) = &c.body {
        req = req.body(b.clone());
    }
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Err(miss(
                expected_status(&c.status),
                format!("no answer: {}", reason(&e)),
            ));
        }
    };
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Err(miss(
                    "a whole answer".into(),
                    format!("status {status}, then the body failed: {}", reason(&e)),
                ));
            }
        }
    }
    judge(c, status, &body)
}

/// The error and its causes in one line (reqwest's own message leaves out the cause).
fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

fn miss(expected: String, found: String) -> Miss {
    Miss { expected, found }
}

fn expected_status(status: &[u16]) -> String {
    match status {
        [] => "a 2xx status".into(),
        [one] => format!("status {one}"),
        many => format!(
            "status {}",
            many.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

/// The start of a body, for messages.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t.is_empty() {
        return "an empty body".into();
    }
    let cut: String = t.chars().take(QUOTED).collect();
    if cut.len() < t.len() {
        format!("`{cut}...`")
    } else {
        format!("`{cut}`")
    }
}

/// Judges an answer: the status first, then `body_contains`, then each JSON value.
pub fn judge(c: &HttpCheck, status: u16, body: &[u8]) -> Attempt {
    let status_ok = if c.status.is_empty() {
        (200..300).contains(&status)
    } else {
        c.status.contains(&status)
    };
    if !status_ok {
        return Err(miss(
            expected_status(&c.status),
            format!("status {status} with {}", quote(body)),
        ));
    }
    if let Some(needle) = &c.body_contains {
        let text = String::from_utf8_lossy(body);
        if !text.contains(needle.as_str()) {
            return Err(miss(format!("a body containing `{needle}`"), quote(body)));
        }
    }
    if !c.json.is_empty() {
        let json: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Err(miss("a JSON body".into(), format!("{} ({e})", quote(body))));
            }
        };
        for x in &c.json {
            let expected = format!("`{}` = {}", x.written, x.value);
            let nodes = x.path.query(&json).all();
            match nodes.as_slice() {
                [one] if same(one, &x.value) => {}
                [one] => return Err(miss(expected, format!("`{}` = {one}", x.written))),
                [] => return Err(miss(expected, format!("no value at `{}`", x.written))),
                many => {
                    return Err(miss(
                        expected,
                        format!("`{}` selects {} values, not one", x.written, many.len()),
                    ));
                }
            }
        }
    }
    let mut found = format!("status {status}");
    if c.body_contains.is_some() {
        found.push_str(", the text in the body");
    }
    if !c.json.is_empty() {
        found.push_str(&format!(", {} JSON values as expected", c.json.len()));
    }
    Ok(found)
}

/// JSON equality, numbers by value: 3 equals 3.0.
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::experiment::{Overrides, parse};

    fn check(table: &str) -> HttpCheck {
        let text = format!(
            "name = \"t\"\nduration = \"10s\"\n[target]\nurl = \"http://127.0.0.1:1\"\n[load]\nrate = 1\n[[load.flows]]\nname = \"f\"\nsteps = [{{ name = \"s\", path = \"/\" }}]\n[[checks.http]]\npath = \"/\"\n{table}"
        );
        let e = parse("x.toml", &text, Path::new("."), &Overrides::default()).unwrap();
        e.checks.http.into_iter().next().unwrap()
    }

    #[test]
    fn answers_are_judged_by_status_body_and_json_values() {
        let body = br#"{"items": [{"id": 3.0, "tags": ["a"]}, {"id": 4}], "ok": true}"#;
        let c = check(
            "json = { \"$.items[0].id\" = 3, \"items.0.tags\" = [\"a\"], \"ok\" = true }\nbody_contains = \"tags\"\n",
        );
        assert_eq!(
            judge(&c, 200, body),
            Ok("status 200, the text in the body, 3 JSON values as expected".into())
        );
        let miss = judge(&c, 503, b"down").unwrap_err();
        assert_eq!(
            (miss.expected.as_str(), miss.found.as_str()),
            ("a 2xx status", "status 503 with `down`")
        );
        let c = check("status = [200, 404]\njson = { \"$.items[*].id\" = 3 }\n");
        assert_eq!(
            judge(&c, 404, body).unwrap_err().found,
            "`$.items[*].id` selects 2 values, not one"
        );
        let c = check("status = 201\n");
        assert_eq!(judge(&c, 200, b"").unwrap_err().expected, "status 201");
        assert_eq!(
            judge(&c, 200, b"").unwrap_err().found,
            "status 200 with an empty body"
        );
        let c = check("json = { \"missing\" = 1 }\n");
        assert_eq!(
            judge(&c, 200, body).unwrap_err().found,
            "no value at `missing`"
        );
        let c = check("json = { \"items.1.id\" = 5 }\n");
        let miss = judge(&c, 200, body).unwrap_err();
        assert_eq!(
            (miss.expected.as_str(), miss.found.as_str()),
            ("`items.1.id` = 5", "`items.1.id` = 4")
        );
        let miss = judge(&c, 200, b"<html>").unwrap_err();
        assert_eq!(miss.expected, "a JSON body");
        let c = check("body_contains = \"needle\"\n");
        let long = "x".repeat(500);
        let found = judge(&c, 200, long.as_bytes()).unwrap_err().found;
        assert_eq!(found, format!("`{}...`", "x".repeat(QUOTED)));
    }
}
