//! The replicas a run has had: an append-only list whose indices never move, so a
//! replica task's index stays valid while replicas are added and retired beside it.

use std::ops::Index;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Replica;

/// Replicas by index. A slot is filled once and never emptied: a replica scaled away
/// is marked retired ([`Replica::retired`]) and its slot kept, because its task may
/// still be reading it while it drains. Capacity is fixed at creation.
pub(crate) struct Slots {
    slots: Box<[OnceLock<Replica>]>,
    len: AtomicUsize,
}

/// How many replicas a run may start in all, scaled ones included: a bound on the
/// memory a long run with an autoscaler going up and down may take.
pub(crate) const CAPACITY: usize = 4096;

impl Slots {
    pub(crate) fn new(initial: Vec<Replica>) -> Self {
        let slots: Box<[OnceLock<Replica>]> = (0..CAPACITY.max(initial.len()))
            .map(|_| OnceLock::new())
            .collect();
        let len = initial.len();
        for (slot, r) in slots.iter().zip(initial) {
            let _ = slot.set(r);
        }
        Self {
            slots,
            len: AtomicUsize::new(len),
        }
    }

    /// Appends `r`, returning its index, or gives it back when the run has used every
    /// slot. Callers serialise pushes (the supervisor's scaling lock).
    pub(crate) fn push(&self, r: Replica) -> Result<usize, Replica> {
        let i = self.len.load(Ordering::Acquire);
        let Some(slot) = self.slots.get(i) else {
            return Err(r);
        };
        slot.set(r)?;
        self.len.store(i + 1, Ordering::Release);
        Ok(i)
    }

    /// Every slot filled so far, retired replicas included.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Every replica that is not retired, with its index, in start order.
    pub(crate) fn indexed(&self) -> impl Iterator<Item = (usize, &Replica)> {
        self.slots[..self.len()]
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.get().map(|r| (i, r)))
            .filter(|(_, r)| !r.is_retired())
    }

    /// Every replica that is not retired, in start order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Replica> {
        self.indexed().map(|(_, r)| r)
    }
}

impl Index<usize> for Slots {
    type Output = Replica;

    fn index(&self, i: usize) -> &Replica {
        self.slots[i]
            .get()
            .expect("a replica index names a filled slot")
    }
}
