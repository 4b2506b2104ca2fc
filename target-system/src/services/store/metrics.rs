//! `shop_store_*`: the store's metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::wal::WalMetrics;

#[derive(Clone)]
pub struct StoreMetrics {
    pub lsn: Gauge,
    pub keys: Gauge,
    pub conflicts: Counter,
    pub batches: Counter,
    pub lag_entries: Gauge,
    pub lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub snapshots: Counter,
    pub term: Gauge,
    pub leader: Gauge,
    pub elections: Counter,
    pub unreplicated: Counter,
    /// `shop_store_wal_*`: the log's fsyncs and checkpoints.
    pub wal: WalMetrics,
}

impl StoreMetrics {
    /// `shop_store_*`, registered in `r`.
    pub fn register(r: &mut Registry) -> Self {
        let m = StoreMetrics {
            lsn: Gauge::default(),
            keys: Gauge::default(),
            conflicts: Counter::default(),
            batches: Counter::default(),
            lag_entries: Gauge::default(),
            lag_seconds: Gauge::default(),
            snapshots: Counter::default(),
            term: Gauge::default(),
            leader: Gauge::default(),
            elections: Counter::default(),
            unreplicated: Counter::default(),
            wal: WalMetrics::register(r),
        };
        r.register("lsn", "Last log sequence number held", m.lsn.clone());
        r.register("keys", "Keys held", m.keys.clone());
        r.register("batches", "Write batches acknowledged", m.batches.clone());
        r.register(
            "conflicts",
            "Write batches refused because a condition failed",
            m.conflicts.clone(),
        );
        r.register(
            "replication_lag_entries",
            "Log entries this follower is behind (on a leader: its furthest follower)",
            m.lag_entries.clone(),
        );
        r.register(
            "replication_lag_seconds",
            "Time since caught up, 0 when it is",
            m.lag_seconds.clone(),
        );
        r.register(
            "snapshots",
            "Full snapshots sent or installed",
            m.snapshots.clone(),
        );
        r.register("term", "The member's current term", m.term.clone());
        r.register(
            "leader",
            "1 while this member leads its shard",
            m.leader.clone(),
        );
        r.register(
            "elections",
            "Elections this member won",
            m.elections.clone(),
        );
        r.register(
            "unreplicated",
            "Writes answered 503 because no follower had them in time",
            m.unreplicated.clone(),
        );
        m
    }
}
