//! 4-level x86-64 page tables built by urun in private host memory.
//!
//! A leaf maps a guest (== host) virtual page to the guest-physical page
//! that urun handed out for it (`gpa.rs`): the guest's own memory or
//! urun's private system pages (see `vm.rs`). Tables are allocated from
//! one private pool that is also a KVM memory slot, at guest-physical
//! `phys`, but that no page table maps: the guest cannot read or write
//! them. Tables are never freed; a cleared entry is left as an empty
//! table. Only the pool's first `usable` bytes are handed out: the VM
//! covers the pool with memory slots a chunk at a time (a slot costs KVM
//! memory and time in proportion to its size), and grows `usable` before
//! a change that may need more tables ([`PageTables::tables_for`]).

use crate::mmap::Mapping;

pub const P: u64 = 1 << 0;
pub const RW: u64 = 1 << 1;
pub const US: u64 = 1 << 2;
pub const NX: u64 = 1 << 63;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Why the page tables could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum PagingError {
    #[error("page-table pool of {0} bytes is full")]
    PoolFull(usize),
}

/// Tables a mapping of `[start, end)` may add at most: a page table per
/// 2 MiB, a directory per GiB, a pointer table per 512 GiB it touches.
pub fn tables_for(start: u64, end: u64) -> usize {
    if end <= start {
        return 0;
    }
    [21, 30, 39].iter().map(|&shift| (((end - 1) >> shift) - (start >> shift) + 1) as usize).sum()
}

/// The page tables of one VM: a pool of table pages and two PML4s kept
/// identical (switching CR3 between them makes KVM drop its cached
/// translations of the old tree).
pub struct PageTables {
    pool: Mapping,
    /// The pool's guest-physical address.
    phys: u64,
    used: usize,
    /// Bytes of the pool that may be handed out (those a slot covers).
    usable: usize,
    roots: [u64; 2],
}

impl PageTables {
    /// Tables in `pool` (reserved, not committed), of which the first
    /// `usable` bytes may be handed out, with two empty roots, to be seen
    /// by the VM at guest-physical `phys`.
    pub fn new(pool: Mapping, usable: usize, phys: u64) -> Result<Self, PagingError> {
        let usable = usable.min(pool.len());
        let mut pt = PageTables { pool, phys, used: 0, usable, roots: [0; 2] };
        let a = pt.alloc()?;
        let b = pt.alloc()?;
        pt.roots = [a, b];
        Ok(pt)
    }

    /// The pool: its host address, guest-physical address and size.
    pub fn pool(&self) -> (u64, u64, usize) {
        (self.pool.addr(), self.phys, self.pool.len())
    }

    /// Bytes handed out, and bytes that may be.
    pub fn usage(&self) -> (usize, usize) {
        (self.used, self.usable)
    }

    /// Let the first `usable` bytes of the pool be handed out (never
    /// fewer than before, never more than the pool).
    pub fn set_usable(&mut self, usable: usize) {
        self.usable = usable.clamp(self.usable, self.pool.len());
    }

    /// The physical address of PML4 `which` (0 or 1).
    pub fn root(&self, which: usize) -> u64 {
        self.roots[which & 1]
    }

    fn alloc(&mut self) -> Result<u64, PagingError> {
        if self.used + 4096 > self.usable {
            return Err(PagingError::PoolFull(self.usable));
        }
        let pa = self.phys + self.used as u64;
        self.used += 4096;
        // Fresh anonymous pages read as zero: an empty table.
        Ok(pa)
    }

    /// The host address of entry `idx` of the table at guest-physical
    /// `table` (a page `alloc` handed out).
    fn entry(&self, table: u64, idx: usize) -> *mut u64 {
        assert!(
            table >= self.phys && table + 4096 <= self.phys + self.used as u64 && idx < 512,
            "page table {table:#x} is not in the pool"
        );
        (self.pool.addr() + (table - self.phys) + 8 * idx as u64) as *mut u64
    }

    fn read(&self, table: u64, idx: usize) -> u64 {
        // SAFETY: `entry` checked that `table` is a page of the pool, so
        // the entry is inside our own mapping and 8-byte aligned.
        unsafe { std::ptr::read_volatile(self.entry(table, idx)) }
    }

    fn write(&self, table: u64, idx: usize, v: u64) {
        // SAFETY: as in `read`.
        unsafe { std::ptr::write_volatile(self.entry(table, idx), v) }
    }

    fn index(va: u64, level: u32) -> usize {
        ((va >> (12 + 9 * level)) & 0x1ff) as usize
    }

    /// The table at `level` (3 = PDPT .. 0 = PT) for `va`, created if
    /// `create`.
    fn table_for(&mut self, va: u64, create: bool) -> Result<Option<u64>, PagingError> {
        let i4 = Self::index(va, 3);
        let mut e = self.read(self.roots[0], i4);
        if e & P == 0 {
            if !create {
                return Ok(None);
            }
            let t = self.alloc()?;
            e = t | P | RW | US;
            self.write(self.roots[0], i4, e);
            self.write(self.roots[1], i4, e);
        }
        let mut table = e & ADDR;
        for level in (1..3).rev() {
            let i = Self::index(va, level);
            let mut e = self.read(table, i);
            if e & P == 0 {
                if !create {
                    return Ok(None);
                }
                let t = self.alloc()?;
                e = t | P | RW | US;
                self.write(table, i, e);
            }
            table = e & ADDR;
        }
        Ok(Some(table))
    }

    /// Map the page at `va` to `pa` with leaf `flags` (P is added).
    pub fn map(&mut self, va: u64, pa: u64, flags: u64) -> Result<(), PagingError> {
        let Some(pt) = self.table_for(va, true)? else { return Ok(()) };
        self.write(pt, Self::index(va, 0), (pa & ADDR) | flags | P);
        Ok(())
    }

    /// Map `[start, end)` to the guest-physical range at `pa` with
    /// `flags`, page by page.
    pub fn map_range(&mut self, start: u64, end: u64, pa: u64, flags: u64) -> Result<(), PagingError> {
        let mut va = start;
        while va < end {
            // One table lookup per 2 MiB run.
            let Some(pt) = self.table_for(va, true)? else { return Ok(()) };
            let run_end = ((va | 0x1f_ffff) + 1).min(end);
            while va < run_end {
                self.write(pt, Self::index(va, 0), ((pa + (va - start)) & ADDR) | flags | P);
                va += 4096;
            }
        }
        Ok(())
    }

    /// Remove the mappings of `[start, end)`.
    pub fn unmap(&mut self, start: u64, end: u64) {
        let mut va = start;
        while va < end {
            let run_end = ((va | 0x1f_ffff) + 1).min(end);
            if let Ok(Some(pt)) = self.table_for(va, false) {
                for a in (va..run_end).step_by(4096) {
                    self.write(pt, Self::index(a, 0), 0);
                }
            }
            va = run_end;
        }
    }

    /// Walk the tables: the physical address and leaf flags of `va`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn translate(&mut self, va: u64) -> Option<(u64, u64)> {
        let pt = self.table_for(va, false).ok()??;
        let e = self.read(pt, Self::index(va, 0));
        (e & P != 0).then_some(((e & ADDR) | (va & 0xfff), e & !ADDR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_translate_unmap() {
        let mut pt = PageTables::new(Mapping::new(64 << 12).unwrap(), 64 << 12, 0x10_0000).unwrap();
        assert_eq!(pt.root(0), 0x10_0000, "roots are guest-physical");
        pt.map_range(0x7f12_3440_0000, 0x7f12_3440_3000, 0x20_0000, RW | NX).unwrap();
        pt.map(0xffff_ffff_8000_0000, 0x1234_5000, 0).unwrap();
        assert_eq!(pt.translate(0x7f12_3440_1008), Some((0x20_1008, P | RW | NX)));
        assert_eq!(pt.translate(0x40_3000), None);
        assert_eq!(pt.translate(0xffff_ffff_8000_0010), Some((0x1234_5010, P)));
        // Both roots see the same tree.
        let (a, b) = (pt.root(0), pt.root(1));
        assert_ne!(a, b);
        assert_eq!(pt.read(a, 511), pt.read(b, 511));
        assert_eq!(pt.read(a, 0xfe), pt.read(b, 0xfe));
        pt.unmap(0x7f12_3440_1000, 0x7f12_3440_2000);
        assert_eq!(pt.translate(0x7f12_3440_1000), None);
        assert!(pt.translate(0x7f12_3440_2000).is_some());
        // A range across a 2 MiB boundary.
        pt.map_range(0x1f_f000, 0x20_2000, 0x5000, RW).unwrap();
        assert_eq!(pt.translate(0x1f_f000), Some((0x5000, P | RW)));
        assert_eq!(pt.translate(0x20_1000), Some((0x7000, P | RW)));
    }

    #[test]
    fn pool_exhaustion_is_an_error() {
        let mut pt = PageTables::new(Mapping::new(4 << 12).unwrap(), 4 << 12, 0).unwrap();
        assert!(pt.map_range(0, 1 << 40, 0, RW).is_err());
    }

    /// Only the usable part of the pool is handed out; growing it lets the
    /// same mapping through, and `tables_for` bounds what a mapping adds.
    #[test]
    fn usable_part_bounds_the_tables() {
        let mut pt = PageTables::new(Mapping::new(64 << 12).unwrap(), 4 << 12, 0).unwrap();
        assert_eq!(pt.usage(), (2 << 12, 4 << 12));
        // PDPT + PD + 2 PTs: one more than the two usable pages left.
        let (start, end) = (0x7f00_001f_f000, 0x7f00_0020_1000);
        assert_eq!(tables_for(start, end), 2 + 1 + 1);
        assert!(pt.map_range(start, end, 0x1000, RW).is_err());
        pt.set_usable(8 << 12);
        let before = pt.usage().0;
        pt.map_range(start, end, 0x1000, RW).unwrap();
        assert!(pt.usage().0 - before <= tables_for(start, end) << 12);
        assert_eq!(pt.translate(0x7f00_0020_0000), Some((0x2000, P | RW)));
        pt.set_usable(1);
        assert_eq!(pt.usage().1, 8 << 12, "usable never shrinks");
        assert_eq!(tables_for(5, 5), 0);
        assert_eq!(tables_for(0, 1 << 40), 512 * 1024 + 1024 + 2);
    }
}
