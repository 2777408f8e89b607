//! Deferred reclamation of guest-physical memory (epochs).
//!
//! When a resynchronisation (`Vm::sync`) moves guest memory to fresh
//! memory slots, the stale slots and their guest-physical ranges become
//! unreachable from the page tables of the new epoch; but a vCPU inside
//! KVM_RUN may have walked the old tables a moment before and be about to
//! use what it found. A stale slot is deleted, and its guest-physical range
//! handed out again, only once every vCPU inside KVM_RUN has entered with
//! the tables of a newer epoch: the rule of any VMM, that a guest-physical
//! range is not reused while a CPU may still hold a translation to it
//! (here the "shootdown" is the vCPU's exit: it leaves KVM_RUN, and comes
//! back with a new CR3). A vCPU outside KVM_RUN holds nothing back (KVM
//! drops every cached translation into a slot when the slot is deleted).
//!
//! The decisions are pure functions over the published epochs (unit tests
//! below); `Running` holds the published values, one atomic per vCPU.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

/// The value a vCPU outside KVM_RUN publishes.
pub const OUTSIDE: u64 = u64::MAX;

/// What each vCPU publishes: the epoch of the tables it entered KVM_RUN
/// with, or `OUTSIDE`. Written by the vCPU's own thread without the VM
/// lock (atomics only), read by whoever holds it.
pub struct Running {
    cells: Box<[AtomicU64]>,
}

impl Running {
    pub fn new(vcpus: usize) -> Self {
        Running { cells: (0..vcpus).map(|_| AtomicU64::new(OUTSIDE)).collect() }
    }

    /// vCPU `idx` is about to enter KVM_RUN with the tables of `epoch`.
    /// SeqCst, as the loads in `oldest`: if a resynchronising thread does
    /// not see this store, this vCPU's walk sees that thread's new tables.
    pub fn enter(&self, idx: usize, epoch: u64) {
        if let Some(c) = self.cells.get(idx) {
            c.store(epoch, Ordering::SeqCst);
        }
    }

    /// vCPU `idx` left KVM_RUN.
    pub fn leave(&self, idx: usize) {
        if let Some(c) = self.cells.get(idx) {
            c.store(OUTSIDE, Ordering::SeqCst);
        }
    }

    /// The oldest epoch a vCPU inside KVM_RUN entered with (`OUTSIDE` when
    /// none is inside), over the first `made` vCPUs.
    pub fn oldest(&self, made: usize) -> u64 {
        std::sync::atomic::fence(Ordering::SeqCst);
        oldest(self.cells.iter().take(made).map(|c| c.load(Ordering::SeqCst)))
    }
}

/// The oldest of the published epochs (`OUTSIDE` for none).
pub fn oldest(published: impl IntoIterator<Item = u64>) -> u64 {
    published.into_iter().min().unwrap_or(OUTSIDE)
}

/// May something retired at epoch `retired` (the first epoch whose tables
/// no longer reach it) go, when the oldest vCPU inside KVM_RUN entered at
/// `oldest`? Only if that vCPU entered with those tables or newer ones.
pub fn releasable(retired: u64, oldest: u64) -> bool {
    oldest >= retired
}

/// Things waiting for every vCPU to move past the epoch they were retired
/// at, in retirement (and so epoch) order.
#[derive(Debug)]
pub struct Retired<T> {
    items: VecDeque<(u64, T)>,
}

impl<T> Default for Retired<T> {
    fn default() -> Self {
        Retired { items: VecDeque::new() }
    }
}

impl<T> Retired<T> {
    /// `item` is unreachable from the tables of epoch `epoch` on.
    pub fn push(&mut self, epoch: u64, item: T) {
        debug_assert!(self.items.back().is_none_or(|(e, _)| *e <= epoch), "retired out of epoch order");
        self.items.push_back((epoch, item));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The items waiting, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().map(|(_, t)| t)
    }

    /// Take what may go now that the oldest vCPU inside KVM_RUN entered at
    /// `oldest`.
    pub fn take_releasable(&mut self, oldest: u64) -> Vec<T> {
        let mut out = Vec::new();
        while self.items.front().is_some_and(|(e, _)| releasable(*e, oldest)) {
            if let Some((_, item)) = self.items.pop_front() {
                out.push(item);
            }
        }
        out
    }

    /// Take the oldest items beyond the first `keep` (a vCPU that stays in
    /// guest code without exiting would otherwise hold them back forever).
    pub fn take_excess(&mut self, keep: usize) -> Vec<T> {
        let n = self.items.len().saturating_sub(keep);
        self.items.drain(..n).map(|(_, t)| t).collect()
    }

    /// Take everything (the caller has made sure no vCPU still runs on
    /// older tables, or gives up waiting for one that does not exit).
    pub fn take_all(&mut self) -> Vec<T> {
        self.items.drain(..).map(|(_, t)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_ignores_vcpus_outside_kvm_run() {
        assert_eq!(oldest([]), OUTSIDE);
        assert_eq!(oldest([OUTSIDE, 7, OUTSIDE, 5, 9]), 5);
        let r = Running::new(4);
        assert_eq!(r.oldest(4), OUTSIDE);
        r.enter(1, 3);
        r.enter(2, 8);
        assert_eq!(r.oldest(4), 3);
        assert_eq!(r.oldest(1), OUTSIDE, "only the vCPUs made count");
        r.leave(1);
        assert_eq!(r.oldest(4), 8);
        r.enter(99, 1); // no such vCPU: ignored
        assert_eq!(r.oldest(4), 8);
    }

    #[test]
    fn released_only_after_every_running_vcpu_moved_on() {
        let mut q = Retired::default();
        // Tables of epoch 4 no longer reach slot "a"; epoch 6 not "b".
        q.push(4, "a");
        q.push(6, "b");
        // A vCPU still runs on epoch 3's tables: nothing goes.
        assert!(q.take_releasable(3).is_empty());
        assert_eq!(q.len(), 2);
        // The oldest one entered with epoch 4's tables: "a" goes, "b" stays.
        assert_eq!(q.take_releasable(4), vec!["a"]);
        assert_eq!(q.take_releasable(5), Vec::<&str>::new());
        // No vCPU inside KVM_RUN: everything goes.
        assert_eq!(q.take_releasable(OUTSIDE), vec!["b"]);
        assert!(q.is_empty());
    }

    #[test]
    fn take_all_empties_and_excess_takes_the_oldest() {
        let mut q = Retired::default();
        q.push(1, 10);
        q.push(1, 11);
        q.push(2, 12);
        assert_eq!(q.take_excess(5), Vec::<i32>::new());
        assert_eq!(q.take_excess(1), vec![10, 11]);
        assert_eq!(q.take_all(), vec![12]);
        assert!(q.is_empty());
    }

    /// A simulation of vCPUs entering and leaving while memory moves: at no
    /// point is a range released while a vCPU that entered before it was
    /// retired is still inside KVM_RUN.
    #[test]
    fn never_released_under_a_running_older_vcpu() {
        let mut seed = 99u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        let running = Running::new(4);
        let mut state = [OUTSIDE; 4];
        let mut q = Retired::default();
        let mut epoch = 0u64;
        let mut serial = 0u64;
        for _ in 0..20_000 {
            match next() % 4 {
                0 => {
                    let i = (next() % 4) as usize;
                    state[i] = epoch;
                    running.enter(i, epoch);
                }
                1 => {
                    let i = (next() % 4) as usize;
                    state[i] = OUTSIDE;
                    running.leave(i);
                }
                2 => {
                    epoch += 1;
                    q.push(epoch, (epoch, serial));
                    serial += 1;
                }
                _ => {
                    for (retired_at, _) in q.take_releasable(running.oldest(4)) {
                        assert!(state.iter().all(|&s| s == OUTSIDE || s >= retired_at));
                    }
                }
            }
        }
    }
}
