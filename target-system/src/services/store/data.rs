//! The store's data: the logged batch, the in-memory map it builds, the tail of recent
//! batches kept for followers, and the records of a member's write-ahead log.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Put,
    Delete,
}

/// One write of a batch, as logged. (A struct rather than a tagged enum: serde cannot
/// read raw JSON values through an internally tagged enum.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogOp {
    pub op: OpKind,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Box<RawValue>>,
}

/// One batch: the unit of the log and of replication, stamped with the term of the
/// leader that wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogBatch {
    pub lsn: u64,
    #[serde(default)]
    pub term: u64,
    pub ts_ms: u64,
    pub ops: Vec<LogOp>,
}

/// The whole data at `lsn`, whose batch had term `term`: what a follower whose log
/// diverges from the leader's, or is older than its tail, is sent instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub lsn: u64,
    pub term: u64,
    pub items: Vec<(String, Box<RawValue>, u64)>,
}

/// A member's checkpoint, as read back: what every record of its log before made.
#[derive(Debug, Deserialize)]
pub struct Checkpoint {
    pub term: u64,
    pub voted_for: Option<usize>,
    /// The data as readers saw it.
    pub data: Snapshot,
    /// Batches logged after `data.lsn` that readers did not see yet (a leader's, not
    /// yet on a follower).
    pub pending: Vec<Arc<LogBatch>>,
}

/// A checkpoint as written: the same fields, the map shared with the live data rather
/// than copied, so that taking one under the member's lock stays cheap.
#[derive(Serialize)]
pub struct CheckpointView {
    pub term: u64,
    pub voted_for: Option<usize>,
    pub data: SnapshotView,
    pub pending: Vec<Arc<LogBatch>>,
}

/// A [`Snapshot`] as written.
#[derive(Serialize)]
pub struct SnapshotView {
    pub lsn: u64,
    pub term: u64,
    #[serde(serialize_with = "items")]
    pub items: BTreeMap<String, Arc<Entry>>,
}

fn items<S: serde::Serializer>(
    map: &BTreeMap<String, Arc<Entry>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(map.iter().map(|(k, e)| (k, &e.value, e.version)))
}

/// One record of a member's log. (Externally tagged: the raw values inside survive.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Record {
    Batch(Arc<LogBatch>),
    /// The member's term and vote, durable before it acts on them.
    Term {
        term: u64,
        voted_for: Option<usize>,
    },
}

/// One write of a batch request, with its condition: `if_absent` (the key must not
/// exist) or `if_version` (the key must be at that version).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRequest {
    pub op: OpKind,
    pub key: String,
    pub value: Option<Box<RawValue>>,
    #[serde(default)]
    pub if_absent: bool,
    pub if_version: Option<u64>,
}

#[derive(Debug)]
pub struct Entry {
    pub value: Box<RawValue>,
    pub version: u64,
}

#[derive(Default)]
pub struct Data {
    pub map: BTreeMap<String, Arc<Entry>>,
    pub lsn: u64,
}

impl Data {
    pub fn apply(&mut self, batch: &LogBatch) {
        for op in &batch.ops {
            match (&op.op, &op.value) {
                (OpKind::Put, Some(value)) => {
                    self.map.insert(
                        op.key.clone(),
                        Arc::new(Entry {
                            value: value.clone(),
                            version: batch.lsn,
                        }),
                    );
                }
                _ => {
                    self.map.remove(&op.key);
                }
            }
        }
        self.lsn = batch.lsn;
    }

    pub fn install(&mut self, s: &Snapshot) {
        self.map = s
            .items
            .iter()
            .map(|(k, value, version)| {
                (
                    k.clone(),
                    Arc::new(Entry {
                        value: value.clone(),
                        version: *version,
                    }),
                )
            })
            .collect();
        self.lsn = s.lsn;
    }

    /// The data at its LSN, whose batch had term `term`, for a checkpoint.
    pub fn view(&self, term: u64) -> SnapshotView {
        SnapshotView {
            lsn: self.lsn,
            term,
            items: self.map.clone(),
        }
    }

    pub fn snapshot(&self, term: u64) -> Snapshot {
        Snapshot {
            lsn: self.lsn,
            term,
            items: self
                .map
                .iter()
                .map(|(k, e)| (k.clone(), e.value.clone(), e.version))
                .collect(),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The batches a member keeps in memory for followers, after `base` (the LSN and term
/// of the batch just before the first one kept).
pub struct Tail {
    pub batches: VecDeque<Arc<LogBatch>>,
    pub base: (u64, u64),
    pub max: usize,
}

impl Tail {
    pub fn new(max: usize) -> Self {
        Self {
            batches: VecDeque::new(),
            base: (0, 0),
            max: max.max(1),
        }
    }

    pub fn push(&mut self, b: Arc<LogBatch>) {
        if self.batches.len() >= self.max
            && let Some(old) = self.batches.pop_front()
        {
            self.base = (old.lsn, old.term);
        }
        self.batches.push_back(b);
    }

    /// Everything replaced by a snapshot at (`lsn`, `term`).
    pub fn reset(&mut self, lsn: u64, term: u64) {
        self.batches.clear();
        self.base = (lsn, term);
    }

    /// The LSN and term of the last batch.
    pub fn last(&self) -> (u64, u64) {
        self.batches.back().map_or(self.base, |b| (b.lsn, b.term))
    }

    /// The term of the batch at `lsn`, when it is known here.
    pub fn term_at(&self, lsn: u64) -> Option<u64> {
        if lsn == self.base.0 {
            return Some(self.base.1);
        }
        let i = lsn.checked_sub(self.base.0 + 1)? as usize;
        self.batches.get(i).map(|b| b.term)
    }

    /// Up to `max` batches after `after`, none past `until`.
    pub fn after(&self, after: u64, until: u64, max: usize) -> Vec<Arc<LogBatch>> {
        let skip = after.saturating_sub(self.base.0) as usize;
        self.batches
            .iter()
            .skip(skip)
            .take_while(|b| b.lsn <= until)
            .take(max)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(lsn: u64, term: u64) -> Arc<LogBatch> {
        Arc::new(LogBatch {
            lsn,
            term,
            ts_ms: 0,
            ops: Vec::new(),
        })
    }

    #[test]
    fn the_tail_knows_the_terms_it_keeps_and_the_one_before() {
        let mut t = Tail::new(3);
        for (lsn, term) in [(1, 1), (2, 1), (3, 2), (4, 2)] {
            t.push(batch(lsn, term));
        }
        assert_eq!(t.base, (1, 1));
        assert_eq!(t.term_at(1), Some(1));
        assert_eq!(t.term_at(3), Some(2));
        assert_eq!(t.term_at(5), None);
        assert_eq!(t.term_at(0), None);
        assert_eq!(t.last(), (4, 2));
        let lsns: Vec<u64> = t.after(2, 4, 10).iter().map(|b| b.lsn).collect();
        assert_eq!(lsns, [3, 4]);
        let lsns: Vec<u64> = t.after(1, 3, 10).iter().map(|b| b.lsn).collect();
        assert_eq!(lsns, [2, 3]);
        t.reset(9, 3);
        assert_eq!(t.last(), (9, 3));
        assert_eq!(t.term_at(9), Some(3));
    }
}
