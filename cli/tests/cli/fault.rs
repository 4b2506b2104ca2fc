//! `faultline fault` arguments checked before anything reaches the agent.

use super::faultline;

/// Durations are bounded before they become the API's milliseconds or microseconds, so
/// none wraps into a short one (`--delay 18446744073709552s` was sent as 384 ms). The
/// agent named here does not exist: the arguments must be refused before it is called.
#[test]
fn fault_durations_beyond_a_day_are_refused_before_the_agent_is_called() {
    let agent = "http://127.0.0.1:1";
    for (args, message) in [
        (
            vec!["latency", "payments->bank", "--delay", "300years"],
            "invalid value '300years' for '--delay <DELAY>': must be at most 24h",
        ),
        (
            vec!["latency", "payments->bank", "--delay", "18446744073709552s"],
            "invalid value '18446744073709552s' for '--delay <DELAY>': must be at most 24h",
        ),
        (
            vec![
                "latency",
                "payments->bank",
                "--delay",
                "1s",
                "--jitter",
                "25h",
            ],
            "invalid value '25h' for '--jitter <JITTER>': must be at most 24h",
        ),
        (
            vec![
                "slicer",
                "cdn->content",
                "--average-size",
                "10",
                "--delay",
                "600000000years",
            ],
            "invalid value '600000000years' for '--delay <DELAY>': must be at most 24h",
        ),
        (
            vec![
                "blackhole",
                "orders->broker",
                "--close-after",
                "600000000years",
            ],
            "invalid value '600000000years' for '--close-after <CLOSE_AFTER>': must be at most 24h",
        ),
        (
            vec!["reset", "orders->broker", "--after", "25h"],
            "invalid value '25h' for '--after <AFTER>': must be at most 24h",
        ),
        (
            vec!["pause", "orders-2", "--ttl", "600000000years"],
            "invalid value '600000000years' for '--ttl <TTL>': must be at most 24h",
        ),
    ] {
        let mut all = vec!["fault"];
        all.extend(&args);
        all.extend(["--agent", agent]);
        let (code, _, err) = faultline(&all);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(
            !err.contains("cannot reach"),
            "{args:?}: the agent was called: {err}"
        );
    }
}
