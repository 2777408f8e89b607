//! What an instruction handler sees: the guest state, checked guest memory
//! access through a small software TLB, and operand access by iced operand.

use iced_x86::{Instruction, MemorySize, OpKind, Register};

use crate::engine::{Exit, Fault, FaultKind, PageFaultKind};
use crate::hostfault::{self, HostFault};
use crate::mem::{AddressSpace, CodeEvent, CodeSync, Prot, PAGE_SIZE};
use crate::state::{mask, CpuState};

/// The result of a handler: `Err` stops the block with an exit.
pub type Step = Result<(), Exit>;

const TLB_SIZE: usize = 512;

/// A direct-mapped cache of page permissions: `tag == page number + 1`
/// means the page may be read (`read`) or written (`write`). A page that
/// holds translated code (any thread's, `AddressSpace::is_code_page`) never
/// gets a write entry, so every write to it takes the slow path and is
/// logged. `marks_seen` is this TLB's cursor in the code log: `Marked`
/// events up to it have been applied (see `sync_marks`).
pub(crate) struct Tlb {
    read: Box<[u64; TLB_SIZE]>,
    write: Box<[u64; TLB_SIZE]>,
    marks_seen: u64,
    /// While set (the JIT's `--check`), every write is recorded here with
    /// the bytes it is about to replace, and no write entry is cached.
    pub(crate) journal: Option<Vec<Written>>,
}

/// A write the interpreter made while journaling: the instruction, where,
/// and the bytes that were there before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub pc: u64,
    pub addr: u64,
    pub old: Vec<u8>,
}

impl Tlb {
    pub(crate) fn new(marks_seen: u64) -> Self {
        Tlb { read: Box::new([0; TLB_SIZE]), write: Box::new([0; TLB_SIZE]), marks_seen, journal: None }
    }
    /// Drop every entry (after applying pending `Marked` events, so that a
    /// write permission that raced with another thread's translation is
    /// reported, not forgotten).
    pub(crate) fn flush(&mut self, mem: &AddressSpace) {
        self.sync_marks(mem);
        self.read.fill(0);
        self.write.fill(0);
    }
    /// Forget write permission for one page (this thread now translates
    /// code from it).
    pub(crate) fn drop_write(&mut self, page: u64) {
        let i = (page as usize) % TLB_SIZE;
        if self.write[i] == page + 1 {
            self.write[i] = 0;
        }
    }
    /// Apply the code log's new `Marked` events: a page another engine now
    /// translates loses its write entry here, and since this thread may
    /// have written through that entry after the other engine read the
    /// page, the page is reported as written. The fence orders this
    /// thread's earlier guest stores before the read of the log: either
    /// the marking engine's re-read saw them, or this read sees its mark.
    pub(crate) fn sync_marks(&mut self, mem: &AddressSpace) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if mem.code_seq() == self.marks_seen {
            return;
        }
        let mut written = Vec::new();
        let write = &mut self.write;
        let sync = mem.code_events_since(self.marks_seen, |ev| {
            if let CodeEvent::Marked(page) = ev {
                let i = (page as usize) % TLB_SIZE;
                if write[i] == page + 1 {
                    write[i] = 0;
                    written.push(page);
                }
            }
        });
        self.marks_seen = match sync {
            CodeSync::UpTo(s) => s,
            CodeSync::Behind(s) => {
                for tag in self.write.iter_mut() {
                    if *tag != 0 && mem.is_code_page(*tag - 1) {
                        written.push(*tag - 1);
                        *tag = 0;
                    }
                }
                s
            }
        };
        for page in written {
            mem.code_written(page * PAGE_SIZE, PAGE_SIZE);
        }
    }
}

/// Per-GPR lookup: (index in `gpr`, size in bytes, bit shift for AH..BH).
#[derive(Clone, Copy)]
struct GprInfo {
    idx: u8,
    size: u8,
    shift: u8,
}

/// iced's `Register` numbering: AL..BH = 1..8, SPL..R15L = 9..20,
/// AX..R15W = 21..36, EAX..R15D = 37..52, RAX..R15 = 53..68 (checked
/// against iced by a unit test).
const fn gpr_info_of(r: u8) -> Option<GprInfo> {
    match r {
        1..=4 => Some(GprInfo { idx: r - 1, size: 1, shift: 0 }),
        5..=8 => Some(GprInfo { idx: r - 5, size: 1, shift: 8 }),
        9..=20 => Some(GprInfo { idx: r - 5, size: 1, shift: 0 }),
        21..=36 => Some(GprInfo { idx: r - 21, size: 2, shift: 0 }),
        37..=52 => Some(GprInfo { idx: r - 37, size: 4, shift: 0 }),
        53..=68 => Some(GprInfo { idx: r - 53, size: 8, shift: 0 }),
        _ => None,
    }
}

static GPR_INFO: [Option<GprInfo>; 256] = {
    let mut t = [None; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = gpr_info_of(i as u8);
        i += 1;
    }
    t
};

/// The state a handler works on.
pub struct Ctx<'a> {
    pub cpu: &'a mut CpuState,
    pub(crate) mem: &'a AddressSpace,
    pub(crate) tlb: &'a mut Tlb,
    /// Where execution continues after this instruction; branches set it.
    pub next_rip: u64,
    /// The bytes `[start, end)` written in pages that hold translated code:
    /// logged by the run loop once the writing instruction is done.
    pub(crate) smc: Option<(u64, u64)>,
}

/// Build a page fault exit.
fn page_fault(pc: u64, addr: u64, write: bool, kind: PageFaultKind) -> Exit {
    Exit::Fault(Fault { pc, kind: FaultKind::Page { addr, write, kind } })
}

impl<'a> Ctx<'a> {
    // ----- faults -----

    /// An exit for fault `kind` at the current instruction.
    pub fn fault(&self, kind: FaultKind) -> Exit {
        Exit::Fault(Fault { pc: self.cpu.rip, kind })
    }

    /// #UD for the current instruction, naming it.
    pub fn invalid(&self, insn: &Instruction) -> Exit {
        self.fault(FaultKind::InvalidOpcode { what: super::describe(insn) })
    }

    // ----- general-purpose registers -----

    /// Read a general-purpose register of any width, zero-extended.
    #[inline]
    pub fn reg(&self, r: Register) -> u64 {
        match GPR_INFO[r as usize & 255] {
            Some(g) => (self.cpu.gpr[g.idx as usize] >> g.shift) & mask(g.size),
            None => match r {
                Register::RIP => self.next_rip,
                Register::EIP => self.next_rip & 0xffff_ffff,
                _ => 0,
            },
        }
    }

    /// Write a general-purpose register with x86-64 rules: 32-bit writes
    /// zero the upper half, 8- and 16-bit writes keep the other bits.
    #[inline]
    pub fn set_reg(&mut self, r: Register, v: u64) {
        let Some(g) = GPR_INFO[r as usize & 255] else { return };
        let slot = &mut self.cpu.gpr[g.idx as usize];
        match g.size {
            8 => *slot = v,
            4 => *slot = v & 0xffff_ffff,
            s => {
                let m = mask(s) << g.shift;
                *slot = (*slot & !m) | ((v << g.shift) & m);
            }
        }
    }

    /// Size in bytes of a register operand.
    #[inline]
    pub fn reg_size(r: Register) -> u8 {
        match GPR_INFO[r as usize & 255] {
            Some(g) => g.size,
            None => r.size() as u8,
        }
    }

    // ----- memory -----

    /// The effective address of the memory operand, segment base included.
    #[inline]
    pub fn ea(&self, insn: &Instruction) -> u64 {
        let mut a = insn.memory_displacement64();
        let base = insn.memory_base();
        if base != Register::None && base != Register::RIP && base != Register::EIP {
            a = a.wrapping_add(self.reg(base));
        }
        let index = insn.memory_index();
        if index != Register::None {
            a = a.wrapping_add(self.reg(index).wrapping_mul(insn.memory_index_scale() as u64));
        }
        if insn.memory_base().size() == 4 || (base == Register::None && index.size() == 4) {
            a &= 0xffff_ffff;
        }
        match insn.memory_segment() {
            Register::FS => a.wrapping_add(self.cpu.fs_base),
            Register::GS => a.wrapping_add(self.cpu.gs_base),
            _ => a,
        }
    }

    /// Check that `[addr, addr+len)` may be accessed; fill the TLB.
    #[inline]
    fn access(&mut self, addr: u64, len: u64, write: bool) -> Step {
        let page = addr / PAGE_SIZE;
        let last = (addr.wrapping_add(len - 1)) / PAGE_SIZE;
        let tags = if write { &self.tlb.write } else { &self.tlb.read };
        if page == last && tags[(page as usize) % TLB_SIZE] == page + 1 {
            return Ok(());
        }
        self.access_slow(addr, len, write)
    }

    #[cold]
    fn access_slow(&mut self, addr: u64, len: u64, write: bool) -> Step {
        let first = addr / PAGE_SIZE;
        let Some(end) = addr.checked_add(len) else {
            return Err(self.fault(FaultKind::GeneralProtection));
        };
        let last = (end - 1) / PAGE_SIZE;
        if write && self.tlb.journal.is_some() {
            self.journal_write(addr, len);
        }
        let need = if write { Prot::WRITE } else { Prot::READ };
        for page in first..=last {
            let at = (page * PAGE_SIZE).max(addr);
            let prot = match self.mem.prot_at(at) {
                Some(p) => p,
                None => return Err(page_fault(self.cpu.rip, at, write, PageFaultKind::NotMapped)),
            };
            // Executable pages are readable on x86.
            let ok = prot.contains(need) || (!write && prot.contains(Prot::EXEC));
            if !ok {
                return Err(page_fault(self.cpu.rip, at, write, PageFaultKind::Protection));
            }
            let i = (page as usize) % TLB_SIZE;
            if write {
                if self.mem.is_code_page(page) {
                    // Translated code (this thread's or another's): allow,
                    // but never cache, so every write here is logged.
                    self.smc = Some(match self.smc {
                        Some((lo, hi)) => (lo.min(addr), hi.max(end)),
                        None => (addr, end),
                    });
                    continue;
                }
                if self.tlb.journal.is_some() {
                    // Journaling: every write comes through here.
                    continue;
                }
                if self.tlb.write[i] != 0 && self.tlb.write[i] != page + 1 {
                    // Evicting another page's write entry: apply pending
                    // marks first, so a raced write through it is reported.
                    self.tlb.sync_marks(self.mem);
                }
                self.tlb.write[i] = page + 1;
            } else {
                self.tlb.read[i] = page + 1;
            }
        }
        Ok(())
    }

    /// Record the bytes a write to `[addr, addr+len)` replaces (those
    /// that can be read: the write faults at the others).
    #[cold]
    fn journal_write(&mut self, addr: u64, len: u64) {
        let n = self.mem.accessible_len(addr, len, Prot::READ) as usize;
        let mut old = vec![0u8; n];
        // SAFETY: readable guest memory (just checked); a racing unmap ends
        // the copy early.
        let got = match unsafe { hostfault::copy_from_guest(&mut old, addr) } {
            Ok(()) => n,
            Err(p) => p.done as usize,
        };
        old.truncate(got);
        let pc = self.cpu.rip;
        if let Some(j) = self.tlb.journal.as_mut() {
            j.push(Written { pc, addr, old });
        }
    }

    /// The guest's fault for a host fault at a guest-access site (another
    /// guest thread unmapped or protected the page after the check).
    #[cold]
    fn host_fault(&self, f: HostFault) -> Exit {
        tracing::debug!(?f, pc = self.cpu.rip, "guest access faulted on the host after its check");
        self.fault(self.mem.guest_fault_kind(&f))
    }

    /// Check that the guest may write `size` bytes at `addr`, writing
    /// nothing (ENTER's check of its final stack pointer).
    pub fn probe_write(&mut self, addr: u64, size: u8) -> Step {
        self.access(addr, size as u64, true)
    }

    /// Read `size` (1, 2, 4 or 8) bytes, zero-extended.
    #[inline]
    pub fn load(&mut self, addr: u64, size: u8) -> Result<u64, Exit> {
        self.access(addr, size as u64, false)?;
        // SAFETY: `access` checked that every byte is guest memory that the
        // guest may read (guest addresses are host addresses); if it is
        // unmapped since, the routine returns the fault.
        unsafe { hostfault::load(addr, size) }.map_err(|f| self.host_fault(f))
    }

    /// Write the low `size` bytes of `v`.
    #[inline]
    pub fn store(&mut self, addr: u64, size: u8, v: u64) -> Step {
        self.access(addr, size as u64, true)?;
        // SAFETY: `access` checked that every byte is guest memory that the
        // guest may write; a racing unmap becomes the returned fault.
        unsafe { hostfault::store(addr, size, v) }.map_err(|f| self.host_fault(f))
    }

    /// Read 16 bytes.
    #[inline]
    pub fn load128(&mut self, addr: u64) -> Result<u128, Exit> {
        self.access(addr, 16, false)?;
        // SAFETY: checked by `access`; a racing unmap becomes the fault.
        unsafe { hostfault::load128(addr) }.map_err(|f| self.host_fault(f))
    }

    /// Write 16 bytes.
    #[inline]
    pub fn store128(&mut self, addr: u64, v: u128) -> Step {
        self.access(addr, 16, true)?;
        // SAFETY: checked by `access`; a racing unmap becomes the fault.
        unsafe { hostfault::store128(addr, v) }.map_err(|f| self.host_fault(f))
    }

    /// Read `buf.len()` bytes.
    pub fn read_bytes(&mut self, addr: u64, buf: &mut [u8]) -> Step {
        if buf.is_empty() {
            return Ok(());
        }
        self.access(addr, buf.len() as u64, false)?;
        // SAFETY: checked by `access`; the guest range cannot overlap `buf`,
        // which is urun's memory.
        unsafe { hostfault::copy_from_guest(buf, addr) }.map_err(|p| self.host_fault(p.fault))
    }

    /// Write `buf`.
    pub fn write_bytes(&mut self, addr: u64, buf: &[u8]) -> Step {
        if buf.is_empty() {
            return Ok(());
        }
        self.access(addr, buf.len() as u64, true)?;
        // SAFETY: checked by `access`.
        unsafe { hostfault::copy_to_guest(addr, buf) }.map_err(|p| self.host_fault(p.fault))
    }

    /// Raise #GP unless `addr` is aligned to `align` bytes (MOVAPS and kin).
    #[inline]
    pub fn require_aligned(&self, addr: u64, align: u64) -> Step {
        if !addr.is_multiple_of(align) {
            return Err(self.fault(FaultKind::GeneralProtection));
        }
        Ok(())
    }

    // ----- stack -----

    #[inline]
    pub fn push(&mut self, size: u8, v: u64) -> Step {
        let sp = self.cpu.gpr[4].wrapping_sub(size as u64);
        self.store(sp, size, v)?;
        self.cpu.gpr[4] = sp;
        Ok(())
    }

    #[inline]
    pub fn pop(&mut self, size: u8) -> Result<u64, Exit> {
        let sp = self.cpu.gpr[4];
        let v = self.load(sp, size)?;
        self.cpu.gpr[4] = sp.wrapping_add(size as u64);
        Ok(v)
    }

    // ----- operands -----

    /// Size in bytes of operand 0 (register or memory).
    #[inline]
    pub fn osz(insn: &Instruction) -> u8 {
        match insn.op0_kind() {
            OpKind::Register => Self::reg_size(insn.op0_register()),
            _ => insn.memory_size().size() as u8,
        }
    }

    /// Read operand `i` as an integer of `size` bytes (immediates come
    /// sign-extended as iced gives them, then masked).
    #[inline]
    pub fn get(&mut self, insn: &Instruction, i: u32, size: u8) -> Result<u64, Exit> {
        let v = match insn.op_kind(i) {
            OpKind::Register => self.reg(insn.op_register(i)),
            OpKind::Memory => {
                let a = self.ea(insn);
                return self.load(a, size);
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
            | OpKind::Immediate8_2nd => insn.immediate(i),
            _ => 0,
        };
        Ok(v & mask(size))
    }

    /// Write operand `i` (register or memory) with `size` bytes of `v`.
    #[inline]
    pub fn set(&mut self, insn: &Instruction, i: u32, size: u8, v: u64) -> Step {
        match insn.op_kind(i) {
            OpKind::Register => {
                self.set_reg(insn.op_register(i), v);
                Ok(())
            }
            _ => {
                let a = self.ea(insn);
                self.store(a, size, v)
            }
        }
    }

    /// Size in bytes of operand `i` (register or memory).
    #[inline]
    pub fn op_size(insn: &Instruction, i: u32) -> u8 {
        match insn.op_kind(i) {
            OpKind::Register => Self::reg_size(insn.op_register(i)),
            _ => insn.memory_size().size() as u8,
        }
    }

    /// Read-modify-write of operand 0: `f(old)` gives the new value, which
    /// is written back; returns the old value. A locked memory operand
    /// (LOCK prefix, or XCHG) is updated atomically on the host with a
    /// compare-and-swap loop, so guest threads see real atomics.
    #[inline]
    pub fn rmw(
        &mut self,
        insn: &Instruction,
        size: u8,
        locked: bool,
        mut f: impl FnMut(u64) -> u64,
    ) -> Result<u64, Exit> {
        if insn.op0_kind() != OpKind::Memory || !locked {
            let old = self.get(insn, 0, size)?;
            self.set(insn, 0, size, f(old) & mask(size))?;
            return Ok(old);
        }
        let addr = self.ea(insn);
        self.access(addr, size as u64, false)?;
        self.access(addr, size as u64, true)?;
        if !addr.is_multiple_of(size as u64) {
            // A split lock: hardware makes it atomic with a bus lock; urun
            // does a plain read-modify-write (documented limit).
            let old = self.load(addr, size)?;
            self.store(addr, size, f(old) & mask(size))?;
            return Ok(old);
        }
        // SAFETY: `access` checked the guest may read and write these bytes,
        // and `addr` is aligned to the access size; a racing unmap becomes
        // the returned fault.
        let mut cur = unsafe { hostfault::load(addr, size) }.map_err(|e| self.host_fault(e))?;
        loop {
            let new = f(cur) & mask(size);
            // SAFETY: as above.
            match unsafe { hostfault::cas(addr, size, cur, new) } {
                Ok(found) if found == cur => return Ok(cur),
                Ok(found) => cur = found,
                Err(e) => return Err(self.host_fault(e)),
            }
        }
    }

    /// Atomic compare-and-exchange of `size` bytes at `addr`: if the memory
    /// holds `expected`, write `new`. Returns the value found.
    pub fn cmpxchg_mem(&mut self, addr: u64, size: u8, expected: u64, new: u64) -> Result<u64, Exit> {
        self.access(addr, size as u64, false)?;
        self.access(addr, size as u64, true)?;
        if !addr.is_multiple_of(size as u64) {
            let cur = self.load(addr, size)?;
            // Hardware writes the old value back when the compare fails.
            self.store(addr, size, if cur == expected { new } else { cur })?;
            return Ok(cur);
        }
        // SAFETY: checked by `access`; aligned to the access size; a racing
        // unmap becomes the returned fault.
        unsafe { hostfault::cas(addr, size, expected, new) }.map_err(|e| self.host_fault(e))
    }

    /// Atomic 16-byte compare-and-exchange (CMPXCHG16B); `addr` must be
    /// 16-byte aligned. Returns the value found.
    pub fn cmpxchg16_mem(&mut self, addr: u64, expected: u128, new: u128) -> Result<u128, Exit> {
        self.require_aligned(addr, 16)?;
        self.access(addr, 16, false)?;
        self.access(addr, 16, true)?;
        // SAFETY: `access` checked the 16 guest bytes are readable and
        // writable; `addr` is 16-byte aligned as CMPXCHG16B requires; a
        // racing unmap becomes the returned fault.
        unsafe { hostfault::cas128(addr, expected, new) }.map_err(|e| self.host_fault(e))
    }

    // ----- XMM operands -----

    /// Read a 128-bit operand: an XMM register or 16 bytes of memory.
    #[inline]
    pub fn get_xmm(&mut self, insn: &Instruction, i: u32) -> Result<u128, Exit> {
        match insn.op_kind(i) {
            OpKind::Register => Ok(self.cpu.xmm[xmm_index(insn.op_register(i))]),
            _ => {
                let a = self.ea(insn);
                self.load128(a)
            }
        }
    }

    /// Read a 128-bit operand from memory that must be 16-byte aligned.
    #[inline]
    pub fn get_xmm_aligned(&mut self, insn: &Instruction, i: u32) -> Result<u128, Exit> {
        if insn.op_kind(i) == OpKind::Memory {
            let a = self.ea(insn);
            self.require_aligned(a, 16)?;
            return self.load128(a);
        }
        self.get_xmm(insn, i)
    }

    /// Read the low `size` bytes of an XMM register or memory operand
    /// (MOVSS/MOVSD-style scalar operands), zero-extended.
    #[inline]
    pub fn get_xmm_low(&mut self, insn: &Instruction, i: u32, size: u8) -> Result<u64, Exit> {
        match insn.op_kind(i) {
            OpKind::Register => {
                let r = insn.op_register(i);
                if r.is_xmm() {
                    Ok(self.cpu.xmm[xmm_index(r)] as u64 & mask(size))
                } else {
                    Ok(self.reg(r) & mask(size))
                }
            }
            _ => {
                let a = self.ea(insn);
                self.load(a, size)
            }
        }
    }

    /// Write a 128-bit operand.
    #[inline]
    pub fn set_xmm(&mut self, insn: &Instruction, i: u32, v: u128) -> Step {
        match insn.op_kind(i) {
            OpKind::Register => {
                self.cpu.xmm[xmm_index(insn.op_register(i))] = v;
                Ok(())
            }
            _ => {
                let a = self.ea(insn);
                self.store128(a, v)
            }
        }
    }

    /// Size in bytes of the memory operand, or of register `i`.
    #[inline]
    pub fn mem_size(insn: &Instruction) -> u8 {
        if insn.memory_size() == MemorySize::Unknown {
            0
        } else {
            insn.memory_size().size() as u8
        }
    }
}

/// Index 0..15 of an XMM register.
#[inline]
pub fn xmm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::XMM0 as usize) & 15
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpr_table_matches_iced() {
        for r in Register::values() {
            let got = GPR_INFO[r as usize & 255];
            if !r.is_gpr() {
                assert!(got.is_none(), "{r:?}");
                continue;
            }
            let g = got.unwrap_or_else(|| panic!("{r:?} missing"));
            let high = matches!(r, Register::AH | Register::CH | Register::DH | Register::BH);
            assert_eq!(g.idx as u32, r.full_register() as u32 - Register::RAX as u32, "{r:?}");
            assert_eq!(g.size as usize, r.size(), "{r:?}");
            assert_eq!(g.shift, if high { 8 } else { 0 }, "{r:?}");
        }
    }
}
