//! Which part of a run one of several load workers makes.
//!
//! Worker `index` of `of` takes every `of`-th item of each sequence the run has: the
//! open model's iterations (number `n` is its when `n % of == index`), the closed model's
//! users and the open model's connections (by their number), and the `{{seq}}` numbers
//! it renders. Items keep their global numbers, so a user's seeded random source and an
//! iteration's due instant are what they would be in one process: the union of the
//! workers' iterations is a single-process run's. This is k6's execution segments
//! (`--execution-segment`) reduced to equal striped parts, which is what an exact split
//! over identical workers needs.

use serde::{Deserialize, Serialize};

/// Read from the wire only through [`Segment::new`]: `of` at least 1, `index` below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSegment")]
pub struct Segment {
    pub index: u64,
    pub of: u64,
}

#[derive(Deserialize)]
struct RawSegment {
    index: u64,
    of: u64,
}

impl TryFrom<RawSegment> for Segment {
    type Error = String;
    fn try_from(r: RawSegment) -> Result<Self, String> {
        Segment::new(r.index, r.of).ok_or_else(|| {
            format!(
                "segment {}/{} is not a part of a run (index below of, of at least 1)",
                r.index, r.of
            )
        })
    }
}

impl Default for Segment {
    fn default() -> Self {
        Self::WHOLE
    }
}

impl std::fmt::Display for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

impl Segment {
    /// The whole run: one process.
    pub const WHOLE: Segment = Segment { index: 0, of: 1 };

    /// Part `index` of `of` (`index < of`, `of >= 1`).
    pub fn new(index: u64, of: u64) -> Option<Self> {
        (of >= 1 && index < of).then_some(Segment { index, of })
    }

    /// Whether item `n` of a sequence is this segment's.
    pub fn owns(&self, n: u64) -> bool {
        n % self.of == self.index
    }

    /// How many of the items `0..total` are this segment's.
    pub fn share(&self, total: u64) -> u64 {
        total / self.of + u64::from(self.index < total % self.of)
    }

    /// The global number of this segment's `k`-th item.
    pub fn global(&self, k: u64) -> u64 {
        self.index + k * self.of
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segments_of_a_sequence_partition_it() {
        for of in 1..=7u64 {
            for total in 0..40u64 {
                let mut seen = vec![0u32; total as usize];
                let mut shares = 0;
                for index in 0..of {
                    let s = Segment::new(index, of).unwrap();
                    shares += s.share(total);
                    for k in 0..s.share(total) {
                        let n = s.global(k);
                        assert!(s.owns(n));
                        seen[n as usize] += 1;
                    }
                }
                assert_eq!(shares, total);
                assert!(seen.iter().all(|c| *c == 1), "{of} {total}: {seen:?}");
            }
        }
        assert_eq!(Segment::new(2, 2), None);
        assert_eq!(Segment::new(0, 0), None);
        assert!(serde_json::from_str::<Segment>(r#"{"index":0,"of":0}"#).is_err());
        assert!(serde_json::from_str::<Segment>(r#"{"index":3,"of":2}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Segment>(r#"{"index":1,"of":2}"#).unwrap(),
            Segment::new(1, 2).unwrap()
        );
    }
}
