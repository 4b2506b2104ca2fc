//! How a load spec and its results travel between the controller and its load workers:
//! serde forms of the engine's HTTP types, and statistics with their HDR histograms in
//! the HdrHistogram V2 format (base64), which decodes to the very buckets it encoded, so
//! merging workers' results is as exact as merging a process's own.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use super::stats::{ErrorKind, Stats};

/// `Method` as its name.
pub mod method {
    use super::*;
    pub fn serialize<S: serde::Serializer>(m: &hyper::Method, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.as_str())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<hyper::Method, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `HeaderName` as its name.
pub mod header_name {
    use super::*;
    pub fn serialize<S: serde::Serializer>(
        n: &hyper::header::HeaderName,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(n.as_str())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<hyper::header::HeaderName, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A `HeaderMap` as `[[name, value], ...]`, in order, repeats kept.
pub mod header_map {
    use super::*;
    use hyper::header::{HeaderMap, HeaderName, HeaderValue};
    pub fn serialize<S: serde::Serializer>(h: &HeaderMap, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(&str, &[u8])> = h.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        pairs.serialize(s)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HeaderMap, D::Error> {
        let pairs = Vec::<(String, Vec<u8>)>::deserialize(d)?;
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            let name: HeaderName = n.parse().map_err(serde::de::Error::custom)?;
            let value = HeaderValue::from_bytes(&v).map_err(serde::de::Error::custom)?;
            map.append(name, value);
        }
        Ok(map)
    }
}

/// A step's headers, `[[name, template], ...]`.
pub mod header_templates {
    use super::*;
    use crate::load::template::Template;
    use hyper::header::HeaderName;
    pub fn serialize<S: serde::Serializer>(
        h: &[(HeaderName, Template)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(&str, &Template)> = h.iter().map(|(n, t)| (n.as_str(), t)).collect();
        pairs.serialize(s)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(HeaderName, Template)>, D::Error> {
        let pairs = Vec::<(String, Template)>::deserialize(d)?;
        pairs
            .into_iter()
            .map(|(n, t)| Ok((n.parse().map_err(serde::de::Error::custom)?, t)))
            .collect()
    }
}

/// `Bytes` as base64.
pub mod bytes_b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(b: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text)
            .map(bytes::Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// A histogram in the V2 format, base64.
fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::with_capacity(256);
    V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("a histogram serialises into memory");
    B64.encode(buf)
}

fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let raw = B64.decode(text).map_err(|e| format!("histogram: {e}"))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut raw.as_slice())
        .map_err(|e| format!("histogram: {e:?}"))?;
    // Into the engine's own bounds, so it merges with every other.
    let mut out = super::stats::histogram();
    out.add(&h)
        .map_err(|e| format!("histogram out of bounds: {e:?}"))?;
    Ok(out)
}

/// [`Stats`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireStats {
    latency: String,
    service: String,
    lag: String,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<ErrorKind, u64>,
    bytes: u64,
}

impl Serialize for Stats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireStats {
            latency: encode(&self.latency),
            service: encode(&self.service),
            lag: encode(&self.lag),
            statuses: self.statuses.clone(),
            errors: self.errors.clone(),
            bytes: self.bytes,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Stats {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireStats::deserialize(d)?;
        let h = |t: &str| decode(t).map_err(serde::de::Error::custom);
        Ok(Stats {
            latency: h(&w.latency)?,
            service: h(&w.service)?,
            lag: h(&w.lag)?,
            statuses: w.statuses,
            errors: w.errors,
            bytes: w.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_cross_the_wire_bucket_for_bucket() {
        let mut s = Stats::default();
        for i in 1..=5000u64 {
            s.latency.record(i * 37 % 900_001 + 1).unwrap();
            s.service.record(i).unwrap();
        }
        s.lag.record(3_599_999_999).unwrap();
        s.statuses.insert(200, 4990);
        s.errors.insert(ErrorKind::Timeout, 10);
        s.bytes = 12345;
        let text = serde_json::to_string(&s).unwrap();
        let back: Stats = serde_json::from_str(&text).unwrap();
        assert_eq!(back.latency, s.latency);
        assert_eq!(back.service, s.service);
        assert_eq!(back.lag, s.lag);
        assert_eq!(back.statuses, s.statuses);
        assert_eq!(back.errors, s.errors);
        assert_eq!(back.bytes, 12345);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                back.latency.value_at_quantile(q),
                s.latency.value_at_quantile(q)
            );
        }
    }
}
