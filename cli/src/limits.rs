//! The upper bound of every value a user hands faultline in an experiment file or a
//! `load` or `fault` flag, each defined once and named in the message that refuses a
//! value beyond it. Fault parameters are bounded by the agent's own limits
//! (`faultline_agent::faults::spec`), which its API checks too. With every value
//! bounded, no sum or product of them comes near overflowing; the code that adds them
//! up still does so with checked or saturating arithmetic.

use std::time::Duration;

/// The longest run, and the longest any other duration in an experiment file or a
/// `load` flag may be (a stage, a timeout, a think time, a latency threshold): a day,
/// which is also the longest lease the agent grants a fault.
pub const MAX_DURATION: Duration = faultline_agent::faults::spec::MAX_TTL;

/// The highest open-model rate, in iterations (or requests) a second. One dispatcher
/// thread computes every send's instant, and it needs most of a core for 10,000 a second
/// already (BENCHMARKS.md), so a million is beyond what one machine can send; it also
/// keeps the sends of a whole day (8.64e10) exact in the `f64` the schedule counts in.
pub const MAX_RATE: f64 = 1_000_000.0;

/// The most requests `faultline load -n` asks for: a day at [`MAX_RATE`].
pub const MAX_COUNT: u64 = 86_400_000_000;

/// The most virtual users (open-model connections, closed-model users). Each holds one
/// connection to the target, and one source address runs out of ephemeral ports below
/// 64k connections to one address.
pub const MAX_USERS: usize = 50_000;

/// The most open-model iterations waiting or running at once: a run that far behind its
/// schedule has long stopped measuring the target.
pub const MAX_IN_FLIGHT: usize = 1_000_000;

/// The largest weight of a flow: weights are relative shares, and one in a million is
/// finer than any mix needs.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// The most users of a login pool.
pub const MAX_POOL: u64 = 1_000_000;

/// The highest burn rate an abort guard may watch for: a 99.9999% objective's budget
/// burns at most a million times as fast, so a higher one could never trip.
pub const MAX_BURN_RATE: f64 = 1_000_000.0;

/// The longest a check may take (an HTTP check's `timeout`, a command check's), and
/// the longest it may keep retrying (`within`): an hour. A check is a look at the system
/// after the run, not a second workload.
pub const MAX_CHECK_TIME: Duration = Duration::from_secs(3600);

/// The largest experiment, workload or topology file, in bytes (4 MiB). The largest
/// real gameday is a few kilobytes; the bound keeps memory and checking time small and
/// bounds the length of every list a file can hold.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// A limit as messages write it: "24h", "90s", "250ms" (the agent's spelling, so a
/// bound reads the same in every message).
pub use faultline_agent::faults::kind::human;

/// A number as messages write it: a whole number without a fraction, others in Rust's
/// shortest form (`0.5`, `1e300`).
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}

/// "{what} must be at most {max}, not {value}".
pub fn too_high(what: &str, max: impl std::fmt::Display, value: impl std::fmt::Display) -> String {
    format!("{what} must be at most {max}, not {value}")
}

/// `"{what} must be at most LIMIT, not `VALUE`"` unless `d` is within [`MAX_DURATION`]
/// (or `max`).
pub fn duration_within(
    d: Duration,
    max: Duration,
    what: &str,
    written: &str,
) -> Result<(), String> {
    if d <= max {
        Ok(())
    } else {
        Err(format!(
            "{what} must be at most {}, not `{written}`",
            human(max)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_written_the_way_users_write_durations() {
        assert_eq!(human(MAX_DURATION), "24h");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_secs(120)), "2m");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(
            duration_within(
                Duration::from_secs(90_000),
                MAX_DURATION,
                "`timeout`",
                "25h"
            ),
            Err("`timeout` must be at most 24h, not `25h`".to_owned())
        );
        assert_eq!(number(1e300), "1e300");
        assert_eq!(number(MAX_RATE), "1000000");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(
            duration_within(MAX_DURATION, MAX_DURATION, "`timeout`", "24h"),
            Ok(())
        );
    }
}
