//! The `[checks]` section: the shop's invariants (refused, with their place, for a
//! topology without the shop's audit endpoints), the drain timeout, and the generic
//! checks any system can have: `[[checks.http]]` requests and `[[checks.command]]`
//! programs, each run before the load, after the drain, or both.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json_path::JsonPath;
use toml::Spanned;

use super::{Ctx, TargetSpec, raw};
use crate::limits::{self, MAX_CHECK_TIME};
use crate::shop;

pub use raw::When;

impl When {
    pub fn before(self) -> bool {
        matches!(self, When::Before | When::Both)
    }

    pub fn after(self) -> bool {
        matches!(self, When::After | When::Both)
    }
}

#[derive(Debug, Clone)]
pub struct Checks {
    pub invariants: bool,
    pub drain_timeout: Duration,
    pub http: Vec<HttpCheck>,
    pub command: Vec<CommandCheck>,
}

/// Where an HTTP check sends its request.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// An absolute URL, as written.
    Url(String),
    /// A path and query on the target's entrypoint.
    Path(String),
}

#[derive(Debug, Clone)]
pub struct HttpCheck {
    pub name: String,
    pub method: Method,
    pub to: Destination,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<String>,
    /// Statuses that pass; empty means any 2xx.
    pub status: Vec<u16>,
    pub body_contains: Option<String>,
    pub json: Vec<JsonExpectation>,
    pub timeout: Duration,
    pub within: Duration,
    pub when: When,
}

/// A value the JSON answer must hold at a path.
#[derive(Debug, Clone)]
pub struct JsonExpectation {
    /// The path as written.
    pub written: String,
    pub path: JsonPath,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct CommandCheck {
    pub name: String,
    pub argv: Vec<String>,
    pub exit: i32,
    pub timeout: Duration,
    pub cwd: PathBuf,
    pub within: Duration,
    pub when: When,
}

/// How long a check after the run may keep trying by default: faults have just
/// healed, and a restarted replica or a breaker closing again takes a few seconds.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(10);

/// The `[checks]` section, checked against the target.
pub(super) fn section(
    cx: &mut Ctx<'_>,
    raw: &raw::Checks,
    target: Option<&TargetSpec>,
    base: &Path,
) -> Option<Checks> {
    let invariants = invariants(cx, raw, target);
    let drain_timeout = match &raw.drain_timeout {
        None => Some(Duration::from_secs(30)),
        Some(d) => cx.duration(d, "`drain_timeout`"),
    };
    let mut names = HashSet::new();
    let mut http = Vec::new();
    for c in &raw.http {
        if let Some(check) = http_check(cx, c) {
            unique(
                cx,
                &mut names,
                &check.name,
                name_at(c, c.get_ref().name.as_ref()),
            );
            http.push(check);
        }
    }
    let mut command = Vec::new();
    for c in &raw.command {
        if let Some(check) = command_check(cx, c, base) {
            unique(
                cx,
                &mut names,
                &check.name,
                name_at(c, c.get_ref().name.as_ref()),
            );
            command.push(check);
        }
    }
    Some(Checks {
        invariants,
        drain_timeout: drain_timeout?,
        http,
        command,
    })
}

/// Where a check's name is written, or where the check starts.
fn name_at<T>(entry: &Spanned<T>, name: Option<&Spanned<String>>) -> Range<usize> {
    name.map_or(entry.span().start..entry.span().start + 1, Spanned::span)
}

fn unique(cx: &mut Ctx<'_>, names: &mut HashSet<String>, name: &str, span: Range<usize>) {
    if !names.insert(name.to_owned()) {
        cx.err(
            span,
            format!("two checks are named `{name}`: give one a `name` of its own"),
        );
    }
}

/// Whether to check the shop's invariants: by default only on the bundled shop; asked
/// for on a topology without the shop's audit endpoints it is an error here, where the
/// file says it, not after the whole run.
fn invariants(cx: &mut Ctx<'_>, raw: &raw::Checks, target: Option<&TargetSpec>) -> bool {
    let is_shop = matches!(target, Some(TargetSpec::Start { bundled: true, .. }));
    let Some(asked) = &raw.invariants else {
        return is_shop;
    };
    if !*asked.get_ref() {
        return false;
    }
    match target {
        Some(TargetSpec::Running { agents, .. }) if agents.is_empty() => cx.err(
            asked.span(),
            "[checks] invariants need an agent (to find the shop's audit endpoints): set `agent` under [target]",
        ),
        Some(TargetSpec::Start { topology, .. }) => {
            if let Err(m) = shop::invariants::supported_by(topology) {
                cx.err(asked.span(), m);
            }
        }
        _ => {}
    }
    true
}

/// A duration of a check, at most [`MAX_CHECK_TIME`].
fn check_time(cx: &mut Ctx<'_>, s: &Spanned<String>, what: &str) -> Option<Duration> {
    let d = cx.duration(s, what)?;
    match limits::duration_within(d, MAX_CHECK_TIME, what, s.get_ref()) {
        Ok(()) => Some(d),
        Err(m) => {
            cx.err(s.span(), m);
            None
        }
    }
}

fn time_or(
    cx: &mut Ctx<'_>,
    s: Option<&Spanned<String>>,
    what: &str,
    default: Duration,
) -> Option<Duration> {
    match s {
        None => Some(default),
        Some(s) => check_time(cx, s, what),
    }
}

fn http_check(cx: &mut Ctx<'_>, entry: &Spanned<raw::HttpCheck>) -> Option<HttpCheck> {
    let c = entry.get_ref();
    let method = match &c.method {
        None => Some(Method::GET),
        Some(m) => match Method::from_bytes(m.get_ref().as_bytes()) {
            Ok(method) if m.get_ref().bytes().all(|b| b.is_ascii_uppercase()) => Some(method),
            _ => {
                cx.err(
                    m.span(),
                    format!(
                        "`method` must be an HTTP method in capitals (GET, POST, PUT, DELETE, ...), not `{}`",
                        m.get_ref()
                    ),
                );
                None
            }
        },
    };
    let to = destination(cx, entry);
    let headers = headers(cx, c);
    let status = statuses(cx, c.status.as_ref());
    let json = json_expectations(cx, c);
    let timeout = time_or(cx, c.timeout.as_ref(), "`timeout`", Duration::from_secs(5));
    let within = time_or(cx, c.within.as_ref(), "`within`", DEFAULT_WITHIN);
    if let Some(b) = &c.body_contains
        && b.get_ref().is_empty()
    {
        cx.err(b.span(), "`body_contains` must not be empty");
    }
    let (method, to) = (method?, to?);
    let name = match &c.name {
        Some(n) => named(cx, n)?,
        None => match &to {
            Destination::Url(u) | Destination::Path(u) => format!("{method} {u}"),
        },
    };
    Some(HttpCheck {
        name,
        method,
        to,
        headers: headers?,
        body: c.body.as_ref().map(|b| b.get_ref().clone()),
        status: status?,
        body_contains: c.body_contains.as_ref().map(|b| b.get_ref().clone()),
        json: json?,
        timeout: timeout?,
        within: within?,
        when: c.when,
    })
}

fn named(cx: &mut Ctx<'_>, n: &Spanned<String>) -> Option<String> {
    if n.get_ref().trim().is_empty() {
        cx.err(n.span(), "a check's `name` must not be empty");
        return None;
    }
    Some(n.get_ref().clone())
}

/// `url` or `path`, exactly one.
fn destination(cx: &mut Ctx<'_>, entry: &Spanned<raw::HttpCheck>) -> Option<Destination> {
    let c = entry.get_ref();
    match (&c.url, &c.path) {
        (Some(_), Some(p)) => {
            cx.err(
                p.span(),
                "an HTTP check has a `url` or a `path` (on the target's entrypoint), not both",
            );
            None
        }
        (None, None) => {
            cx.err(
                entry.span().start..entry.span().start + 1,
                "an HTTP check needs a `url` (http://host:port/path) or a `path` on the target's entrypoint (\"/health\")",
            );
            None
        }
        (Some(u), None) => {
            let ok = reqwest::Url::parse(u.get_ref())
                .ok()
                .is_some_and(|p| p.scheme() == "http" && p.host().is_some());
            if !ok {
                cx.err(
                    u.span(),
                    format!(
                        "`url` must be an absolute http:// URL, like http://127.0.0.1:8080/health, not `{}`",
                        u.get_ref()
                    ),
                );
                return None;
            }
            Some(Destination::Url(u.get_ref().clone()))
        }
        (None, Some(p)) => {
            let ok = p.get_ref().starts_with('/')
                && p.get_ref().parse::<hyper::Uri>().is_ok()
                && !p.get_ref().contains(char::is_whitespace);
            if !ok {
                cx.err(
                    p.span(),
                    format!(
                        "`path` is a path and query starting with /, like \"/health\", not `{}`",
                        p.get_ref()
                    ),
                );
                return None;
            }
            Some(Destination::Path(p.get_ref().clone()))
        }
    }
}

fn headers(cx: &mut Ctx<'_>, c: &raw::HttpCheck) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (k, v) in &c.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v.get_ref()),
        ) {
            (Ok(name), Ok(value)) => out.push((name, value)),
            (Err(_), _) => {
                ok = false;
                cx.err(
                    v.span(),
                    format!("`{k}` is not a header name (letters, digits and -)"),
                );
            }
            (_, Err(_)) => {
                ok = false;
                cx.err(
                    v.span(),
                    format!("the value of header `{k}` has a character headers cannot hold"),
                );
            }
        }
    }
    ok.then_some(out)
}

/// `status = 200` or `status = [200, 204]`.
fn statuses(cx: &mut Ctx<'_>, v: Option<&Spanned<toml::Value>>) -> Option<Vec<u16>> {
    let Some(v) = v else {
        return Some(Vec::new());
    };
    let items: Vec<&toml::Value> = match v.get_ref() {
        toml::Value::Array(a) if !a.is_empty() => a.iter().collect(),
        toml::Value::Array(_) => {
            cx.err(
                v.span(),
                "`status` lists at least one status (leave it out for any 2xx)",
            );
            return None;
        }
        one => vec![one],
    };
    let mut out = Vec::new();
    for i in items {
        match i.as_integer() {
            Some(n) if (100..=599).contains(&n) => out.push(n as u16),
            _ => {
                cx.err(
                    v.span(),
                    format!(
                        "`status` is an HTTP status (100 to 599) or a list of them, like 200 or [200, 204]; `{i}` is not one"
                    ),
                );
                return None;
            }
        }
    }
    Some(out)
}

fn json_expectations(cx: &mut Ctx<'_>, c: &raw::HttpCheck) -> Option<Vec<JsonExpectation>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (k, v) in &c.json {
        let path = json_path(k.get_ref()).and_then(|p| {
            JsonPath::parse(&p).map_err(|e| {
                format!(
                    "`{}` is not a JSONPath ({e}); write \"$.items[0].id\" or the dotted \"items.0.id\"",
                    k.get_ref()
                )
            })
        });
        let value = to_json(v.get_ref());
        match (path, value) {
            (Ok(path), Ok(value)) => out.push(JsonExpectation {
                written: k.get_ref().clone(),
                path,
                value,
            }),
            (Err(m), _) => {
                ok = false;
                cx.err(k.span(), m);
            }
            (_, Err(m)) => {
                ok = false;
                cx.err(v.span(), m);
            }
        }
    }
    ok.then_some(out)
}

/// A JSONPath as written (`$...`), or one made from a dotted path: `items.0.id` is
/// `$['items'][0]['id']` (a segment of digits indexes an array).
pub fn json_path(written: &str) -> Result<String, String> {
    if written.starts_with('$') {
        return Ok(written.to_owned());
    }
    let mut p = String::from("$");
    for seg in written.split('.') {
        if seg.is_empty() {
            return Err(format!(
                "`{written}` has an empty segment; write a dotted path like \"items.0.id\" or a JSONPath like \"$.items[0].id\""
            ));
        }
        if seg.bytes().all(|b| b.is_ascii_digit()) && seg.len() < 10 {
            p.push_str(&format!("[{seg}]"));
        } else {
            p.push_str(&format!(
                "['{}']",
                seg.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok(p)
}

/// A TOML value as the JSON value it stands for.
fn to_json(v: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or("JSON has no infinite numbers or NaN: expect a finite number")?,
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(_) => {
            return Err("JSON has no dates: expect the date as a string, in quotes".into());
        }
        toml::Value::Array(a) => J::Array(a.iter().map(to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

fn command_check(
    cx: &mut Ctx<'_>,
    entry: &Spanned<raw::CommandCheck>,
    base: &Path,
) -> Option<CommandCheck> {
    let c = entry.get_ref();
    let argv = c.argv.get_ref();
    let argv_ok = match argv.first() {
        None => {
            cx.err(
                c.argv.span(),
                "`argv` names a program and its arguments, like [\"./check.sh\", \"--all\"]; it is empty",
            );
            false
        }
        Some(p) if p.is_empty() => {
            cx.err(c.argv.span(), "`argv` starts with an empty program name");
            false
        }
        Some(_) if argv.iter().any(|a| a.contains('\0')) => {
            cx.err(c.argv.span(), "`argv` holds a NUL character");
            false
        }
        Some(_) => true,
    };
    let exit = match &c.exit {
        None => Some(0),
        Some(e) if (0..=255).contains(e.get_ref()) => Some(*e.get_ref() as i32),
        Some(e) => {
            cx.err(
                e.span(),
                format!(
                    "`exit` is an exit status from 0 to 255, not {}",
                    e.get_ref()
                ),
            );
            None
        }
    };
    let cwd = match &c.cwd {
        None => Some(base.to_path_buf()),
        Some(d) => {
            let dir = base.join(d.get_ref());
            if dir.is_dir() {
                Some(dir)
            } else {
                cx.err(
                    d.span(),
                    format!(
                        "`cwd` is a directory relative to this file's: {} is not a directory",
                        dir.display()
                    ),
                );
                None
            }
        }
    };
    let timeout = time_or(cx, c.timeout.as_ref(), "`timeout`", Duration::from_secs(30));
    let within = time_or(cx, c.within.as_ref(), "`within`", DEFAULT_WITHIN);
    if !argv_ok {
        return None;
    }
    let name = match &c.name {
        Some(n) => named(cx, n)?,
        None => command_line(argv),
    };
    Some(CommandCheck {
        name,
        argv: argv.clone(),
        exit: exit?,
        timeout: timeout?,
        cwd: cwd?,
        within: within?,
        when: c.when,
    })
}

/// `argv` as a shell would read it: arguments with blanks or quotes single-quoted.
pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::experiment::{Experiment, Overrides, parse};

    /// An experiment against a running system with `checks` appended.
    fn with(checks: &str) -> Result<Experiment, String> {
        let text = format!(
            "name = \"t\"\nduration = \"10s\"\n[target]\nurl = \"http://127.0.0.1:1\"\n[load]\nrate = 1\n[[load.flows]]\nname = \"f\"\nsteps = [{{ name = \"s\", path = \"/\" }}]\n{checks}"
        );
        parse("x.toml", &text, Path::new("."), &Overrides::default()).map_err(|p| p.to_string())
    }

    fn check(checks: &str, expected: &str) {
        let err = with(checks).expect_err("a problem");
        assert!(err.contains(expected), "expected `{expected}` in:\n{err}");
    }

    #[test]
    fn http_and_command_checks_are_read_with_their_defaults() {
        let e = with(
            "[[checks.http]]\npath = \"/items\"\nstatus = [200, 204]\njson = { \"$.items[0].id\" = 3, \"count\" = 2, \"items.1.name\" = \"b\" }\nbody_contains = \"items\"\n\
             [[checks.http]]\nname = \"up\"\nmethod = \"POST\"\nurl = \"http://127.0.0.1:9/x?y=1\"\nheaders = { x-a = \"1\" }\nbody = \"{}\"\nwhen = \"after\"\ntimeout = \"2s\"\nwithin = \"0s\"\n\
             [[checks.command]]\nargv = [\"sh\", \"-c\", \"exit 3\"]\nexit = 3\nwhen = \"before\"\n",
        )
        .unwrap();
        let c = &e.checks;
        assert!(!c.invariants);
        let h = &c.http[0];
        assert_eq!(h.name, "GET /items");
        assert_eq!(h.to, Destination::Path("/items".into()));
        assert_eq!(h.status, [200, 204]);
        assert_eq!(
            (h.timeout, h.within),
            (Duration::from_secs(5), DEFAULT_WITHIN)
        );
        assert_eq!(h.when, When::Both);
        let paths: Vec<&str> = h.json.iter().map(|j| j.written.as_str()).collect();
        assert_eq!(paths, ["$.items[0].id", "count", "items.1.name"]);
        let h = &c.http[1];
        assert_eq!(h.name, "up");
        assert_eq!(h.method, Method::POST);
        assert_eq!((h.when.before(), h.when.after()), (false, true));
        assert_eq!(h.within, Duration::ZERO);
        let cmd = &c.command[0];
        assert_eq!(cmd.name, "sh -c 'exit 3'");
        assert_eq!((cmd.exit, cmd.timeout), (3, Duration::from_secs(30)));
        assert_eq!(cmd.cwd, Path::new("."));
        assert!(cmd.when.before() && !cmd.when.after());
    }

    #[test]
    fn bad_checks_are_refused_with_their_place() {
        check(
            "[[checks.http]]\npath = \"/\"\nstauts = 200\n",
            "x.toml:12:1: unknown field `stauts`",
        );
        check(
            "[[checks.http]]\npath = \"/\"\nstatus = 700\n",
            "x.toml:12:10: `status` is an HTTP status (100 to 599) or a list of them",
        );
        check(
            "[[checks.http]]\npath = \"/\"\nstatus = []\n",
            "x.toml:12:10: `status` lists at least one status",
        );
        check(
            "[[checks.http]]\npath = \"/\"\nstatus = \"ok\"\n",
            "`\"ok\"` is not one",
        );
        check(
            "[[checks.http]]\nurl = \"http://a/\"\npath = \"/\"\n",
            "x.toml:12:8: an HTTP check has a `url` or a `path`",
        );
        check(
            "[[checks.http]]\nname = \"n\"\n",
            "x.toml:10:1: an HTTP check needs a `url`",
        );
        check(
            "[[checks.http]]\nurl = \"/health\"\n",
            "x.toml:11:7: `url` must be an absolute http:// URL",
        );
        check(
            "[[checks.http]]\npath = \"health\"\n",
            "x.toml:11:8: `path` is a path and query starting with /",
        );
        check(
            "[[checks.http]]\npath = \"/\"\nmethod = \"get\"\n",
            "x.toml:12:10: `method` must be an HTTP method in capitals",
        );
        check(
            "[[checks.http]]\npath = \"/\"\njson = { \"$.a[\" = 1 }\n",
            "x.toml:12:10: `$.a[` is not a JSONPath",
        );
        check(
            "[[checks.http]]\npath = \"/\"\njson = { \"a..b\" = 1 }\n",
            "`a..b` has an empty segment",
        );
        check(
            "[[checks.http]]\npath = \"/\"\njson = { \"a\" = 1979-05-27 }\n",
            "x.toml:12:16: JSON has no dates",
        );
        check(
            "[[checks.http]]\npath = \"/\"\ntimeout = \"2h\"\n",
            "x.toml:12:11: `timeout` must be at most 1h, not `2h`",
        );
        check(
            "[[checks.http]]\npath = \"/\"\nwhen = \"later\"\n",
            "x.toml:12:8: unknown variant `later`",
        );
        check(
            "[[checks.http]]\npath = \"/\"\nheaders = { \"a b\" = \"1\" }\n",
            "`a b` is not a header name",
        );
        check(
            "[[checks.command]]\nargv = []\n",
            "x.toml:11:8: `argv` names a program and its arguments",
        );
        check(
            "[[checks.command]]\nargv = [\"\"]\n",
            "`argv` starts with an empty program name",
        );
        check(
            "[[checks.command]]\nargv = [\"true\"]\nexit = 256\n",
            "x.toml:12:8: `exit` is an exit status from 0 to 255, not 256",
        );
        check(
            "[[checks.command]]\nargv = [\"true\"]\ncwd = \"no/such/dir\"\n",
            "x.toml:12:7: `cwd` is a directory relative to this file's",
        );
        check(
            "[[checks.command]]\nargv = [\"true\"]\nwithin = \"61m\"\n",
            "`within` must be at most 1h",
        );
        check(
            "[[checks.command]]\nargv = [\"true\"]\n[[checks.command]]\nargv = [\"true\"]\n",
            "x.toml:12:1: two checks are named `true`: give one a `name` of its own",
        );
    }

    #[test]
    fn dotted_paths_become_json_paths() {
        assert_eq!(json_path("items.0.id").unwrap(), "$['items'][0]['id']");
        assert_eq!(json_path("it's").unwrap(), r"$['it\'s']");
        assert_eq!(json_path("$.a").unwrap(), "$.a");
        let doc = serde_json::json!({"items": [{"id": 3}], "it's": true});
        for p in ["items.0.id", "$.items[0].id", "it's"] {
            let path = JsonPath::parse(&json_path(p).unwrap()).unwrap();
            assert_eq!(path.query(&doc).all().len(), 1, "{p}");
        }
    }

    #[test]
    fn invariants_on_a_topology_without_the_shops_audit_endpoints_are_refused_at_their_place() {
        let dir = std::env::temp_dir().join(format!("faultline-checks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("topology.toml"),
            "name = \"mine\"\nentrypoint = \"web\"\n[services.web]\ncommand = [\"python3\", \"app.py\", \"{port}\"]\n",
        )
        .unwrap();
        let text = "name = \"t\"\nduration = \"10s\"\n[target]\ntopology = \"topology.toml\"\n[load]\nrate = 1\n[[load.flows]]\nname = \"f\"\nsteps = [{ name = \"s\", path = \"/\" }]\n[checks]\ninvariants = true\n";
        let err = parse("x.toml", text, &dir, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.toml:11:14: [checks] invariants are the bundled shop's")
                && err.contains("topology `mine` has no `orders` service, no `bank` service, no [messaging] broker"),
            "{err}"
        );
        // Left out, they are off for a topology of one's own.
        let e = parse(
            "x.toml",
            &text.replace("invariants = true\n", ""),
            &dir,
            &Overrides::default(),
        )
        .unwrap();
        assert!(!e.checks.invariants);
        std::fs::remove_dir_all(&dir).ok();
    }
}
