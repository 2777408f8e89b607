//! The guest heap behind malloc/free and HeapAlloc/HeapFree: chunks of
//! guest memory carved into 16-byte-aligned blocks. The bookkeeping (block
//! sizes, free lists) lives in urun's memory, so a guest that writes past
//! its blocks corrupts only its own data, never the allocator.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use urun_cpu::{AddressSpace, Placement, Prot};

const CHUNK: u64 = 1 << 20;
/// Blocks larger than this get their own mapping.
const LARGE: u64 = 256 << 10;

pub(crate) struct Heap {
    mem: Arc<AddressSpace>,
    /// The current chunk: next free byte and end.
    next: u64,
    end: u64,
    /// Live blocks: address -> size (rounded).
    live: HashMap<u64, u64>,
    /// Freed blocks by size.
    free: BTreeMap<u64, Vec<u64>>,
}

fn round(n: u64) -> u64 {
    n.max(16).checked_add(15).map_or(u64::MAX, |v| v & !15)
}

impl Heap {
    pub fn new(mem: Arc<AddressSpace>) -> Self {
        Heap { mem, next: 0, end: 0, live: HashMap::new(), free: BTreeMap::new() }
    }

    /// `n` bytes (contents unspecified), or None when out of memory.
    pub fn alloc(&mut self, n: u64) -> Option<u64> {
        let size = round(n);
        if size == u64::MAX || size > (1 << 40) {
            return None;
        }
        if size > LARGE {
            let a = self.mem.map(Placement::Hint(0), size, Prot::RW, false, None).ok()?;
            self.live.insert(a, urun_cpu::mem::page_ceil(size));
            return Some(a);
        }
        // Reuse a freed block of the same size, or of up to twice it.
        let found = self.free.range_mut(size..=size * 2).find(|(_, v)| !v.is_empty()).map(|(s, v)| (*s, v.pop()));
        if let Some((s, Some(a))) = found {
            self.live.insert(a, s);
            return Some(a);
        }
        if self.next + size > self.end {
            let a = self.mem.map(Placement::Hint(0), CHUNK, Prot::RW, false, None).ok()?;
            self.mem.set_backing(a, urun_cpu::Backing::Named("[heap]".into()));
            self.next = a;
            self.end = a + CHUNK;
        }
        let a = self.next;
        self.next += size;
        self.live.insert(a, size);
        Some(a)
    }

    /// `n` zeroed bytes.
    pub fn alloc_zeroed(&mut self, n: u64) -> Option<u64> {
        let a = self.alloc(n)?;
        let size = self.live.get(&a).copied().unwrap_or(n);
        if size > LARGE {
            // A fresh anonymous mapping: already zero.
            return Some(a);
        }
        let zeros = vec![0u8; size as usize];
        crate::linux::guest::write_from(&self.mem, a, &zeros).then_some(a)
    }

    /// The usable size of live block `a`.
    pub fn size_of(&self, a: u64) -> Option<u64> {
        self.live.get(&a).copied()
    }

    /// Free block `a`; false when it is not a live block.
    pub fn free(&mut self, a: u64) -> bool {
        let Some(size) = self.live.remove(&a) else { return false };
        if size > LARGE {
            if let Err(e) = self.mem.unmap(a, size) {
                tracing::warn!(%e, "freeing a large block");
            }
        } else {
            self.free.entry(size).or_default().push(a);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_distinct_and_reused() {
        let mem = Arc::new(AddressSpace::new());
        let mut h = Heap::new(mem.clone());
        let a = h.alloc(10).expect("a");
        let b = h.alloc(100).expect("b");
        assert_eq!((a % 16, b % 16), (0, 0));
        assert!(b >= a + 16);
        assert!(h.free(a));
        assert!(!h.free(a), "double free is refused");
        assert_eq!(h.alloc(16), Some(a));
        let big = h.alloc(1 << 20).expect("big");
        assert!(mem.check(big, 1 << 20, Prot::RW));
        assert!(h.free(big));
        assert!(!mem.check(big, 1 << 20, Prot::READ));
        let z = h.alloc_zeroed(64).expect("z");
        assert_eq!(crate::linux::guest::read::<[u64; 8]>(&mem, z), Some([0; 8]));
    }
}
