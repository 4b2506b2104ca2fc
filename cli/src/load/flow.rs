//! Weighted flows of steps: what the virtual users of an experiment do. A flow is picked
//! per iteration (by weight, from the user's seeded random source) and its steps run in
//! order; a step can capture values from its JSON answer (`token`, `order_id`) for the
//! later steps' templates, run only once per virtual user (login), and record a captured
//! value in the run's history when it succeeds (the acknowledged orders the checks
//! verify). A step that fails (an error, an unexpected status, a capture that finds
//! nothing) ends its iteration: the later steps depend on it.

use std::collections::HashMap;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};

use serde::{Deserialize, Serialize};

use super::client::Req;
use super::template::{Scope, Seq, Template};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Unique across the workload: statistics and SLOs are per step name.
    pub name: String,
    #[serde(with = "super::wire::method")]
    pub method: Method,
    pub path: Template,
    #[serde(with = "super::wire::header_templates")]
    pub headers: Vec<(HeaderName, Template)>,
    pub body: Option<Template>,
    /// Run once per virtual user (and again only if it failed).
    pub once: bool,
    /// Statuses that count as success; empty means any 2xx.
    pub expect: Vec<u16>,
    pub captures: Vec<Capture>,
    /// A captured variable whose value joins the run's history when the step succeeds.
    pub record: Option<String>,
}

/// `var` from the JSON answer at `path` (`order_id`, `data.items.0.id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capture {
    pub var: String,
    pub path: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    pub name: String,
    pub weight: u32,
    /// Indices into [`Flows::steps`].
    pub steps: Vec<usize>,
}

/// The users virtual users log in as: user `n` of `count` (`n` from 1) is
/// `username`/`password` rendered with `{{n}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pool {
    pub count: u64,
    pub username: Template,
    pub password: Template,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flows {
    pub steps: Vec<Step>,
    pub flows: Vec<Flow>,
    pub pool: Option<Pool>,
    pub seed: u64,
    /// Makes `{{uuid}}` unique to the run (see [`Scope::nonce`]).
    pub nonce: u64,
}

/// One virtual user's state, kept across its iterations.
pub struct Vu {
    pub rng: fastrand::Rng,
    pub vars: HashMap<String, String>,
    done_once: Vec<bool>,
}

impl Step {
    pub fn accepts(&self, status: StatusCode) -> bool {
        if self.expect.is_empty() {
            status.is_success()
        } else {
            self.expect.contains(&status.as_u16())
        }
    }
}

impl Capture {
    /// The value at the path, as text (strings unquoted, other values as JSON).
    pub fn find(&self, body: &serde_json::Value) -> Option<String> {
        let mut cur = body;
        for key in &self.path {
            cur = match cur {
                serde_json::Value::Object(m) => m.get(key)?,
                serde_json::Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match cur {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

impl Flows {
    pub fn new_vu(&self, index: usize) -> Vu {
        let mut rng = fastrand::Rng::with_seed(
            self.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(index as u64),
        );
        let mut vars = HashMap::from([("vu".to_owned(), (index + 1).to_string())]);
        if let Some(pool) = &self.pool {
            let n = 1 + index as u64 % pool.count;
            let local = HashMap::from([("n".to_owned(), n.to_string())]);
            let seq = Seq::default();
            let mut scope = Scope {
                vars: &local,
                rng: &mut rng,
                seq: &seq,
                nonce: self.nonce,
            };
            let user = pool.username.render(&mut scope);
            let password = pool.password.render(&mut scope);
            vars.insert("username".into(), user);
            vars.insert("password".into(), password);
        }
        Vu {
            rng,
            vars,
            done_once: vec![false; self.steps.len()],
        }
    }

    /// What the engine relies on and the experiment's checks make sure of, for flows
    /// read from the wire by a load worker: a flow to pick with weight, steps that
    /// exist, a pool of at least one user.
    pub fn check(&self) -> Result<(), String> {
        if self.flows.is_empty() || self.total_weight() == 0 {
            return Err("the load has no flow with a weight".into());
        }
        if let Some(f) = self
            .flows
            .iter()
            .find(|f| f.steps.iter().any(|s| *s >= self.steps.len()))
        {
            return Err(format!(
                "flow `{}` names a step that does not exist",
                f.name
            ));
        }
        if self.pool.as_ref().is_some_and(|p| p.count == 0) {
            return Err("the user pool is empty".into());
        }
        Ok(())
    }

    /// The weights added up (saturating, though checked weights are far from it).
    pub fn total_weight(&self) -> u64 {
        self.flows
            .iter()
            .fold(0u64, |sum, f| sum.saturating_add(u64::from(f.weight)))
    }

    /// Picks a flow by weight.
    pub fn pick(&self, vu: &mut Vu) -> &Flow {
        let mut x = vu.rng.u64(..self.total_weight().max(1));
        for f in &self.flows {
            if x < f.weight as u64 {
                return f;
            }
            x -= f.weight as u64;
        }
        &self.flows[0]
    }

    /// The steps this iteration of `flow` runs (once-steps already done are left out).
    pub fn due_steps<'a>(&'a self, flow: &'a Flow, vu: &'a Vu) -> impl Iterator<Item = usize> + 'a {
        flow.steps
            .iter()
            .copied()
            .filter(|s| !(self.steps[*s].once && vu.done_once[*s]))
    }

    /// The request step `index` sends for `vu`.
    pub fn render(&self, index: usize, vu: &mut Vu, seq: &Seq) -> Req {
        let step = &self.steps[index];
        let mut scope = Scope {
            vars: &vu.vars,
            rng: &mut vu.rng,
            seq,
            nonce: self.nonce,
        };
        let path = step.path.render(&mut scope);
        let mut headers = HeaderMap::new();
        for (name, value) in &step.headers {
            if let Ok(v) = HeaderValue::try_from(value.render(&mut scope)) {
                headers.append(name.clone(), v);
            }
        }
        let body = step
            .body
            .as_ref()
            .map_or_else(Bytes::new, |b| Bytes::from(b.render(&mut scope)));
        Req {
            method: step.method.clone(),
            path_and_query: path,
            headers,
            body,
        }
    }

    /// Judges an answer to step `index`: success, captures taken into the user's
    /// variables. Returns the value to record in the history, if the step records one.
    pub(crate) fn absorb(
        &self,
        index: usize,
        vu: &mut Vu,
        status: StatusCode,
        body: &[u8],
    ) -> Result<Option<(String, String)>, ()> {
        let step = &self.steps[index];
        if !step.accepts(status) {
            return Err(());
        }
        if !step.captures.is_empty() {
            let json: serde_json::Value = serde_json::from_slice(body).map_err(|_| ())?;
            for c in &step.captures {
                let v = c.find(&json).ok_or(())?;
                vu.vars.insert(c.var.clone(), v);
            }
        }
        if step.once {
            vu.done_once[index] = true;
        }
        Ok(step
            .record
            .as_ref()
            .and_then(|r| vu.vars.get(r).map(|v| (r.clone(), v.clone()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, once: bool) -> Step {
        Step {
            name: name.into(),
            method: Method::GET,
            path: Template::parse("/x/{{id}}").unwrap(),
            headers: vec![],
            body: None,
            once,
            expect: vec![],
            captures: vec![Capture {
                var: "id".into(),
                path: vec!["data".into(), "0".into(), "id".into()],
            }],
            record: Some("id".into()),
        }
    }

    #[test]
    fn captures_feed_later_steps_and_once_steps_run_once() {
        let flows = Flows {
            steps: vec![step("login", true), step("get", false)],
            flows: vec![Flow {
                name: "f".into(),
                weight: 1,
                steps: vec![0, 1],
            }],
            pool: Some(Pool {
                count: 3,
                username: Template::parse("user{{n}}").unwrap(),
                password: Template::parse("pass{{n}}").unwrap(),
            }),
            seed: 7,
            nonce: 0,
        };
        let mut vu = flows.new_vu(4);
        assert_eq!(vu.vars["username"], "user2");
        assert_eq!(vu.vars["password"], "pass2");
        let seq = Seq::default();
        let body = br#"{"data":[{"id":42}]}"#;
        assert_eq!(
            flows.absorb(0, &mut vu, StatusCode::OK, body),
            Ok(Some(("id".into(), "42".into())))
        );
        assert_eq!(flows.render(1, &mut vu, &seq).path_and_query, "/x/42");
        let flow = flows.pick(&mut vu).clone();
        assert_eq!(flows.due_steps(&flow, &vu).collect::<Vec<_>>(), [1]);
        assert_eq!(
            flows.absorb(1, &mut vu, StatusCode::SERVICE_UNAVAILABLE, body),
            Err(())
        );
        assert_eq!(flows.absorb(1, &mut vu, StatusCode::OK, b"{}"), Err(()));
    }
}
