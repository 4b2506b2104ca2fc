//! How an SLO is written: `availability>=99.9` (the share of requests answered below 500)
//! or `latency<200ms>=99` (the share answered within 200 ms from their intended send).

use std::time::Duration;

use serde::Serialize;

use crate::limits::{self, MAX_DURATION};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "sli", rename_all = "snake_case")]
pub enum SliKind {
    Availability,
    Latency {
        #[serde(serialize_with = "ms")]
        threshold: Duration,
    },
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Objective {
    /// As written, for reports.
    pub name: String,
    pub kind: SliKind,
    /// A share, from 0 to 1 (99.9% is 0.999).
    pub objective: f64,
}

impl std::str::FromStr for Objective {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let (sli, target) = compact
            .split_once(">=")
            .ok_or_else(|| format!("`{s}`: write `availability>=99.9` or `latency<200ms>=99`"))?;
        let percent: f64 = target
            .trim_end_matches('%')
            .parse()
            .map_err(|_| format!("`{s}`: `{target}` is not a percentage"))?;
        if !(0.0..=100.0).contains(&percent) || percent == 0.0 {
            return Err(format!(
                "`{s}`: the objective must be above 0 and at most 100 percent"
            ));
        }
        // Exact decimals: 99.9 becomes 0.999, not 0.9990000000000001.
        let objective = (percent * 1e6).round() / 1e8;
        let kind = if sli == "availability" {
            SliKind::Availability
        } else if let Some(threshold) = sli.strip_prefix("latency<") {
            let written = threshold;
            let threshold = humantime::parse_duration(written).map_err(|e| {
                format!("`{s}`: latency threshold `{written}`: {e} (write 200ms, 1s)")
            })?;
            if threshold > MAX_DURATION {
                return Err(format!(
                    "`{s}`: latency threshold `{written}` must be at most {}",
                    limits::human(MAX_DURATION)
                ));
            }
            SliKind::Latency { threshold }
        } else {
            return Err(format!(
                "`{s}`: unknown SLI `{sli}`; use availability or latency<DURATION"
            ));
        };
        Ok(Objective {
            name: compact,
            kind,
            objective,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objectives_parse() {
        let o: Objective = "availability >= 99.9%".parse().unwrap();
        assert_eq!(o.kind, SliKind::Availability);
        assert_eq!(o.objective, 0.999);
        let o: Objective = "latency<200ms>=99".parse().unwrap();
        assert_eq!(
            o.kind,
            SliKind::Latency {
                threshold: Duration::from_millis(200)
            }
        );
        assert_eq!(o.objective, 0.99);
        assert!(
            "availability>99"
                .parse::<Objective>()
                .unwrap_err()
                .contains("write `availability>=99.9`")
        );
        assert!(
            "latency<soon>=99"
                .parse::<Objective>()
                .unwrap_err()
                .contains("latency threshold `soon`")
        );
        assert!(
            "latency<25h>=99"
                .parse::<Objective>()
                .unwrap_err()
                .contains("latency threshold `25h` must be at most 24h")
        );
        assert!("latency<24h>=99".parse::<Objective>().is_ok());
        assert!(
            "uptime>=99"
                .parse::<Objective>()
                .unwrap_err()
                .contains("unknown SLI `uptime`")
        );
        assert!(
            "availability>=101"
                .parse::<Objective>()
                .unwrap_err()
                .contains("at most 100")
        );
    }
}
