//! Strict JSON for request bodies. `serde_json::Value` keeps the last of two equal keys
//! without a word, so `{"target":"a","target":"b"}` would act on `b` while a reviewer
//! of the request reads `a`; every body the control API reads goes through [`parse`],
//! which refuses duplicate keys at any depth, naming the key and where it is.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `body` as JSON, refusing duplicate keys; the message says where the problem is.
pub fn parse(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Strict>(body)
        .map(|s| s.0)
        .map_err(|e| format!("the body is not valid JSON: {e}"))
}

/// Parses `body` as a JSON object, refusing duplicate keys.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match parse(body)? {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "the body must be a JSON object, not {}",
            type_name(&other)
        )),
    }
}

/// `a string`, `a number`, ... for messages about a value of the wrong type.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let e = parse(br#"{"target":"a","target":"b"}"#).unwrap_err();
        assert!(e.contains("duplicate key `target`"), "{e}");
        assert!(e.contains("line 1 column"), "{e}");
        let e = parse(br#"{"a":[{"x":1,"x":2}]}"#).unwrap_err();
        assert!(e.contains("duplicate key `x`"), "{e}");
        assert_eq!(
            parse(br#"{"a":{"x":1},"b":{"x":2}}"#).unwrap(),
            serde_json::json!({"a":{"x":1},"b":{"x":2}})
        );
    }

    #[test]
    fn values_keep_their_types() {
        let v = parse(br#"{"n":-1,"u":18446744073709551615,"f":1.5,"s":"x","b":true,"z":null}"#)
            .unwrap();
        assert_eq!(v["u"].as_u64(), Some(u64::MAX));
        assert_eq!(v["n"].as_i64(), Some(-1));
        assert_eq!(v["f"].as_f64(), Some(1.5));
        assert!(v["z"].is_null());
        assert!(parse_object(b"[1]").unwrap_err().contains("an array"));
    }
}
