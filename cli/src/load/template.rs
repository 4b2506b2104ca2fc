//! Templated strings of flow steps: `/api/v1/orders/{{order_id}}`, `{{random_int 1 1000}}`.
//!
//! A template is parsed once, when the experiment is loaded (so a typo is an error with
//! its place in the file, not a failed request at minute five), and rendered per request
//! from the virtual user's variables and random source.
//!
//! | expression            | renders as                                            |
//! |-----------------------|-------------------------------------------------------|
//! | `{{NAME}}`            | a variable: captured by an earlier step, or `username`, `password`, `vu` |
//! | `{{uuid}}`            | a random UUID (v4 layout), unique to the run          |
//! | `{{seq}}`             | a number counting up across the whole run, from 1     |
//! | `{{random_int A B}}`  | a whole number from A to B inclusive                  |
//! | `{{pick A B C}}`      | one of the words, at random                           |

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::segment::Segment;

/// The numbers `{{seq}}` renders: 1, 2, 3... across the run; a load worker's are its
/// segment's share of them (worker 1 of 2 renders 2, 4, 6...), so they stay unique
/// across workers.
#[derive(Debug, Default)]
pub struct Seq {
    taken: AtomicU64,
    segment: Segment,
}

impl Seq {
    pub fn new(segment: Segment) -> Self {
        Seq {
            taken: AtomicU64::new(0),
            segment,
        }
    }

    /// The next number.
    pub fn take(&self) -> u64 {
        self.segment
            .global(self.taken.fetch_add(1, Ordering::Relaxed))
            + 1
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Var(String),
    Uuid,
    Seq,
    RandomInt(i64, i64),
    Pick(Vec<String>),
}

/// On the wire (to load workers) a template is its text, parsed again on arrival, so a
/// worker renders only what the parser accepts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Template {
    pieces: Vec<Piece>,
}

/// A problem in a template, at a byte offset of its text.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

/// What a render draws on.
pub struct Scope<'a> {
    pub vars: &'a HashMap<String, String>,
    pub rng: &'a mut fastrand::Rng,
    pub seq: &'a Seq,
    /// Mixed into `{{uuid}}` only: UUIDs (idempotency keys) must differ between runs
    /// against the same system, while every other draw repeats with the seed.
    pub nonce: u64,
}

impl From<Template> for String {
    fn from(t: Template) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for Template {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Template::parse(&text).map_err(|e| format!("template `{text}`: {}", e.message))
    }
}

/// The template's text: what [`Template::parse`] reads back into the same pieces.
impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.pieces {
            match p {
                Piece::Text(t) => f.write_str(t)?,
                Piece::Var(v) => write!(f, "{{{{{v}}}}}")?,
                Piece::Uuid => f.write_str("{{uuid}}")?,
                Piece::Seq => f.write_str("{{seq}}")?,
                Piece::RandomInt(a, b) => write!(f, "{{{{random_int {a} {b}}}}}")?,
                Piece::Pick(words) => write!(f, "{{{{pick {}}}}}", words.join(" "))?,
            }
        }
        Ok(())
    }
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut at = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let inner_start = open + 2;
            let Some(close) = rest[inner_start..].find("}}") else {
                return Err(TemplateError {
                    offset: at + open,
                    message: "`{{` is not closed by `}}`".into(),
                });
            };
            let inner = &rest[inner_start..inner_start + close];
            pieces.push(expression(inner).map_err(|message| TemplateError {
                offset: at + open,
                message,
            })?);
            let consumed = inner_start + close + 2;
            at += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template { pieces })
    }

    /// The variables it reads.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v.as_str()),
            _ => None,
        })
    }

    /// Renders; a variable the scope lacks renders as nothing (loading rejects templates
    /// that read a variable no earlier step captures, so this only happens when a capture
    /// found nothing, and that step has already failed).
    pub fn render(&self, scope: &mut Scope<'_>) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => {
                    if let Some(value) = scope.vars.get(v) {
                        out.push_str(value);
                    }
                }
                Piece::Uuid => {
                    let (a, b) = (scope.rng.u64(..) ^ scope.nonce, scope.rng.u64(..));
                    let bytes = ((a as u128) << 64 | b as u128).to_be_bytes();
                    let mut b = bytes;
                    b[6] = (b[6] & 0x0f) | 0x40;
                    b[8] = (b[8] & 0x3f) | 0x80;
                    for (i, byte) in b.iter().enumerate() {
                        if matches!(i, 4 | 6 | 8 | 10) {
                            out.push('-');
                        }
                        let _ = write!(out, "{byte:02x}");
                    }
                }
                Piece::Seq => {
                    let n = scope.seq.take();
                    let _ = write!(out, "{n}");
                }
                Piece::RandomInt(a, b) => {
                    let _ = write!(out, "{}", scope.rng.i64(*a..=*b));
                }
                Piece::Pick(words) => out.push_str(&words[scope.rng.usize(..words.len())]),
            }
        }
        out
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn expression(inner: &str) -> Result<Piece, String> {
    let words: Vec<&str> = inner.split_whitespace().collect();
    let usage = "write {{NAME}}, {{uuid}}, {{seq}}, {{random_int A B}} or {{pick A B ...}}";
    match words.as_slice() {
        [] => Err(format!("empty `{{{{}}}}`: {usage}")),
        ["uuid"] => Ok(Piece::Uuid),
        ["seq"] => Ok(Piece::Seq),
        ["random_int", a, b] => {
            let parse = |s: &str| {
                s.parse::<i64>()
                    .map_err(|_| format!("`{s}` is not a whole number in `{{{{{inner}}}}}`"))
            };
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!(
                    "`{{{{{inner}}}}}`: the lower bound {a} is above the upper bound {b}"
                ));
            }
            Ok(Piece::RandomInt(a, b))
        }
        ["random_int", ..] => Err(format!(
            "`{{{{{inner}}}}}`: random_int takes two numbers, like {{{{random_int 1 100}}}}"
        )),
        ["pick", rest @ ..] if !rest.is_empty() => {
            Ok(Piece::Pick(rest.iter().map(|s| (*s).to_owned()).collect()))
        }
        ["pick"] => Err("`{{pick}}` needs at least one word to pick from".into()),
        [name] if is_name(name) => Ok(Piece::Var((*name).to_owned())),
        _ => Err(format!("`{{{{{inner}}}}}` is not an expression: {usage}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_reads_back_from_its_text() {
        for text in [
            "/orders/{{ order_id }}?p={{random_int -1 3}}&s={{seq}}",
            "{{uuid}}-{{pick a b c}}",
            "plain",
            "",
            "} {{vu}}}",
        ] {
            let t = Template::parse(text).unwrap();
            let back = Template::parse(&t.to_string()).unwrap();
            assert_eq!(back, t, "{text}");
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Template>(&json).unwrap(), t);
        }
        assert!(serde_json::from_str::<Template>(r#""{{random_int 3 1}}""#).is_err());
    }

    fn render(t: &Template, vars: &HashMap<String, String>, seed: u64) -> String {
        let mut rng = fastrand::Rng::with_seed(seed);
        let seq = Seq::default();
        t.render(&mut Scope {
            vars,
            rng: &mut rng,
            seq: &seq,
            nonce: 0,
        })
    }

    #[test]
    fn templates_render_variables_and_functions() {
        let t = Template::parse("/orders/{{ order_id }}?p={{random_int 1 3}}&s={{seq}}").unwrap();
        assert_eq!(t.vars().collect::<Vec<_>>(), ["order_id"]);
        let vars = HashMap::from([("order_id".to_owned(), "o-7".to_owned())]);
        let out = render(&t, &vars, 1);
        assert!(out.starts_with("/orders/o-7?p="), "{out}");
        assert!(out.ends_with("&s=1"), "{out}");
        assert_eq!(out, render(&t, &vars, 1), "the same seed renders the same");
        let u = render(&Template::parse("{{uuid}}").unwrap(), &vars, 9);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4", "version 4 layout: {u}");
    }

    #[test]
    fn bad_templates_say_where() {
        let e = Template::parse("/a/{{random_int 5 1}}").unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("lower bound 5"), "{}", e.message);
        let e = Template::parse("x{{token").unwrap_err();
        assert_eq!(e.offset, 1);
        assert!(e.message.contains("not closed"));
        assert!(
            Template::parse("{{random_int 1}}")
                .unwrap_err()
                .message
                .contains("two numbers")
        );
        assert!(
            Template::parse("{{a b}}")
                .unwrap_err()
                .message
                .contains("not an expression")
        );
        assert!(
            Template::parse("{{}}")
                .unwrap_err()
                .message
                .contains("empty")
        );
    }
}
