//! The interpreter: urun's reference engine.
//!
//! A guest basic block is decoded once with iced-x86 and cached by address;
//! each decoded instruction carries the handler for its `iced_x86::Code`,
//! found in a table built from the `ops` family files. Every memory access
//! is checked against the `AddressSpace` (through a small software TLB), so
//! a guest cannot touch urun's memory and faults are precise.

mod ctx;
pub mod ops;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Formatter, GasFormatter, Instruction};

use ctx::Tlb;
pub use ctx::{xmm_index, Ctx, Step, Written};

use crate::engine::{Engine, EngineError, Exit, Fault, FaultKind, Interrupt, PageFaultKind};
use crate::hostfault;
use crate::mem::{AddressSpace, CodeEvent, CodeGuard, CodeSync, Prot, PAGE_SIZE};
use crate::state::CpuState;

/// An instruction handler: runs one decoded instruction.
pub type Handler = fn(&mut Ctx<'_>, &Instruction) -> Step;

/// Longest block, in instructions.
const MAX_BLOCK: usize = 64;

struct Decoded {
    insn: Instruction,
    handler: Handler,
}

struct Block {
    insns: Vec<Decoded>,
    /// The guest bytes it was decoded from, when writes to them may not be
    /// seen (`Interpreter::guard_code`, a page that cannot be
    /// write-protected): compared with memory before each run.
    src: Option<Box<[u8]>>,
}

/// The text of an instruction for logs and SIGILL reports: address, bytes
/// length and AT&T syntax.
pub fn describe(insn: &Instruction) -> String {
    let mut f = GasFormatter::new();
    let mut s = String::new();
    f.format(insn, &mut s);
    if insn.is_invalid() {
        if let Some(what) = left_out_encoding(insn.ip()) {
            return format!("{what} (at {:#x})", insn.ip());
        }
    }
    format!("{s} (at {:#x}, {:?})", insn.ip(), insn.code())
}

/// The encodings iced is built without (`no_evex`, `no_xop`, `no_d3now`:
/// no CPU model has their features, and building their decoder tables took
/// every start about 0.25 ms), named from the bytes at `pc` for the SIGILL
/// report, which otherwise says "(bad)".
fn left_out_encoding(pc: u64) -> Option<&'static str> {
    // (Faults in the copy are recovered: the handler is in place.)
    hostfault::install().ok()?;
    let mut b = [0u8; 4];
    // SAFETY: the bytes the instruction was just decoded from, guest
    // memory; the copy stops at a page that went away meanwhile.
    let n = match unsafe { hostfault::copy_from_guest(&mut b, pc) } {
        Ok(()) => b.len(),
        Err(p) => p.done as usize,
    };
    // Segment and address-size prefixes may come first.
    let i = b[..n].iter().position(|x| !matches!(x, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x67))?;
    match (b[i], b.get(i + 1).filter(|_| i + 1 < n)) {
        (0x62, _) => Some("an EVEX-encoded (AVX-512) instruction"),
        (0x8f, Some(m)) if m & 0x1f >= 8 => Some("an XOP-encoded instruction"),
        (0x0f, Some(0x0f)) => Some("a 3DNow! instruction"),
        _ => None,
    }
}

/// Handler for forms urun does not implement: the guest gets SIGILL and
/// the log names the instruction.
fn unimplemented(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    tracing::warn!(insn = %describe(insn), "unimplemented instruction: raising SIGILL");
    Err(ctx.invalid(insn))
}

/// Handler for forms outside the CPU model (`-cpu`): #UD, as on a CPU
/// without the feature.
fn not_in_model(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    tracing::debug!(insn = %describe(insn), "instruction outside the CPU model: raising SIGILL");
    Err(ctx.invalid(insn))
}

/// The handler of an instruction outside the CPU model: TZCNT and LZCNT
/// are REP BSF and REP BSR on a CPU without BMI1 or LZCNT (compilers emit
/// them for generic code on purpose), everything else #UD.
fn outside_model(table: &[Option<Handler>], m: iced_x86::Mnemonic) -> Handler {
    let as_code = match m {
        iced_x86::Mnemonic::Tzcnt => Code::Bsf_r64_rm64,
        iced_x86::Mnemonic::Lzcnt => Code::Bsr_r64_rm64,
        _ => return not_in_model,
    };
    table[as_code as usize].unwrap_or(not_in_model as Handler)
}

/// By `Code`: may the process's CPU model (`cpuid::model`) run it?
fn model_allows() -> &'static [bool] {
    static ALLOWS: std::sync::LazyLock<Vec<bool>> = std::sync::LazyLock::new(|| {
        let ok = crate::cpuid::model().allowed_features();
        Code::values().map(|c| c.cpuid_features().iter().all(|f| ok[*f as usize])).collect()
    });
    &ALLOWS
}

/// A fast hasher for guest addresses (multiplicative; addresses are not
/// adversarial to urun's own performance beyond what the guest controls).
#[derive(Default, Clone, Copy)]
struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ *b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type AddrHash = std::hash::BuildHasherDefault<AddrHasher>;

/// Longest byte run a block can span (`MAX_BLOCK` instructions of at most
/// 15 bytes).
const MAX_BLOCK_BYTES: usize = MAX_BLOCK * 15;

/// Decode attempts whose bytes changed under us (another thread writing
/// the code) before the pages are marked ahead of reading.
const DECODE_RETRIES: usize = 4;

/// The interpreter engine for one guest thread.
///
/// Code written by any thread reaches this one through the code log of the
/// `AddressSpace` (see `mem.rs`): blocks are indexed by page, and the run
/// loop applies new log events at every block dispatch and before it
/// returns, dropping just the blocks of pages that were written, unmapped
/// or lost execute permission.
pub struct Interpreter {
    mem: Arc<AddressSpace>,
    cache: HashMap<u64, Rc<Block>, AddrHash>,
    /// Block addresses by the pages their bytes lie in.
    by_page: HashMap<u64, Vec<u64>, AddrHash>,
    tlb: Tlb,
    generation: u64,
    /// This engine's cursor in the code log (`Invalidate` events applied).
    code_seen: u64,
    interrupt: Arc<Interrupt>,
    /// Translated code runs beside this interpreter (`guard_code`).
    guard: bool,
}

impl Interpreter {
    pub fn new(mem: Arc<AddressSpace>) -> Self {
        let generation = mem.generation();
        let code_seen = mem.code_seq();
        Interpreter {
            mem,
            cache: HashMap::default(),
            by_page: HashMap::default(),
            tlb: Tlb::new(code_seen),
            generation,
            code_seen,
            interrupt: Interrupt::new(),
            guard: false,
        }
    }

    /// Translated code runs beside this interpreter (the JIT's fallback):
    /// its plain stores to guest code take no slow path, so they are seen
    /// only where pages are write-protected. From now on every page a
    /// block is decoded from is write-protected as the JIT's are
    /// (`AddressSpace::protect_code`: a write faults and is logged), and a
    /// block from a page that cannot be (one that took too many write
    /// faults, shared memory) keeps its bytes and compares them with
    /// memory before each run, as the JIT's blocks from such pages do.
    pub fn guard_code(&mut self, on: bool) {
        self.guard = on;
    }

    /// Drop every decoded block.
    fn drop_all_blocks(&mut self) {
        self.cache.clear();
        self.by_page.clear();
    }

    /// Drop the blocks with bytes in pages `first..=last`.
    fn drop_pages(&mut self, first: u64, last: u64) {
        let pages: Vec<u64> = if last - first < self.by_page.len() as u64 {
            (first..=last).filter(|p| self.by_page.contains_key(p)).collect()
        } else {
            self.by_page.keys().copied().filter(|p| (first..=last).contains(p)).collect()
        };
        for p in pages {
            for rip in self.by_page.remove(&p).unwrap_or_default() {
                self.cache.remove(&rip);
            }
        }
    }

    /// Apply the code log's new events (see `mem.rs`): marks to the TLB,
    /// invalidations to the block cache.
    fn sync_code(&mut self) {
        self.tlb.sync_marks(&self.mem);
        let mut ranges = Vec::new();
        let sync = self.mem.code_events_since(self.code_seen, |ev| {
            if let CodeEvent::Invalidate { first, last } = ev {
                ranges.push((first, last));
            }
        });
        match sync {
            CodeSync::UpTo(s) => {
                self.code_seen = s;
                for (first, last) in ranges {
                    self.drop_pages(first, last);
                }
            }
            CodeSync::Behind(s) => {
                self.code_seen = s;
                self.drop_all_blocks();
            }
        }
    }

    /// Decode the block at `rip`.
    fn decode(&mut self, rip: u64) -> Result<Rc<Block>, Exit> {
        let fetch_fault =
            |addr: u64, kind| Exit::Fault(Fault { pc: rip, kind: FaultKind::Page { addr, write: false, kind } });
        // The bytes we may fetch: executable guest pages from rip onwards,
        // at most two pages.
        let mut avail = 0u64;
        let mut page = rip & !(PAGE_SIZE - 1);
        while avail < PAGE_SIZE {
            match self.mem.prot_at(page) {
                Some(p) if p.contains(Prot::EXEC) => {}
                Some(_) if avail == 0 => return Err(fetch_fault(rip, PageFaultKind::Protection)),
                None if avail == 0 => return Err(fetch_fault(rip, PageFaultKind::NotMapped)),
                _ => break,
            }
            avail = page + PAGE_SIZE - rip;
            page += PAGE_SIZE;
        }
        let avail = (avail as usize).min(MAX_BLOCK_BYTES);
        // The bytes are copied, decoded from the copy, and the pages they
        // came from are marked as code; then the copy is compared with
        // memory. A write that landed before the mark is caught by the
        // compare (decode again); one after it is logged by the writer.
        let mut buf = [0u8; MAX_BLOCK_BYTES];
        let mut attempt = 0;
        let insns = loop {
            if attempt == DECODE_RETRIES {
                // Someone keeps rewriting this code: mark every page we may
                // read before reading, which needs no compare.
                self.mark(rip, rip + avail as u64);
            }
            // A page another guest thread unmaps meanwhile ends the copy
            // there (the host fault is recovered, see `hostfault`).
            // SAFETY: [rip, rip+avail) lies in executable guest pages, which
            // urun keeps readable on the host (see `Prot::host`).
            let got = match unsafe { hostfault::copy_from_guest(&mut buf[..avail], rip) } {
                Ok(()) => avail,
                Err(p) => p.done as usize,
            };
            let insns = Self::decode_from(&buf[..got], rip);
            let Some(last) = insns.last() else {
                return Err(fetch_fault(rip + avail as u64, PageFaultKind::NotMapped));
            };
            let len = (last.insn.next_ip() - rip) as usize;
            if len == 0 {
                // The first instruction runs into an unmapped or non-executable page.
                return Err(fetch_fault(rip + avail as u64, PageFaultKind::NotMapped));
            }
            // Beside translated code: write-protect the pages first (every
            // page, even past one that cannot be), so that the compare
            // below or the log sees any write.
            let mut unguarded = false;
            if self.guard {
                for p in rip / PAGE_SIZE..=(rip + len as u64 - 1) / PAGE_SIZE {
                    unguarded |= self.mem.protect_code(p) == CodeGuard::Unguarded;
                }
            }
            self.mark(rip, rip + len as u64);
            if attempt >= DECODE_RETRIES {
                break (insns, unguarded.then(|| Box::from(&buf[..len])));
            }
            let mut now = [0u8; MAX_BLOCK_BYTES];
            // SAFETY: as above; [rip, rip+len) is within [rip, rip+avail).
            let same = unsafe { hostfault::copy_from_guest(&mut now[..len], rip) }.is_ok();
            if same && now[..len] == buf[..len] {
                break (insns, unguarded.then(|| Box::from(&buf[..len])));
            }
            attempt += 1;
        };
        let (insns, src) = insns;
        let block = Rc::new(Block { insns, src });
        let last = block.insns.last().map(|d| d.insn.next_ip() - 1).unwrap_or(rip);
        for p in (rip / PAGE_SIZE)..=(last / PAGE_SIZE) {
            let blocks = self.by_page.entry(p).or_default();
            // A block spanning two pages, dropped through one, is still
            // listed under the other.
            if !blocks.contains(&rip) {
                blocks.push(rip);
            }
        }
        self.cache.insert(rip, block.clone());
        Ok(block)
    }

    /// Mark `[start, end)` as code this thread translated: this thread's
    /// write entries for its pages go, and other threads drop theirs at
    /// their next block boundary.
    fn mark(&mut self, start: u64, end: u64) {
        self.mem.mark_code(start, end);
        for p in start / PAGE_SIZE..=(end - 1) / PAGE_SIZE {
            self.tlb.drop_write(p);
        }
        // Order the mark before the compare's reads of guest memory.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    /// Decode up to `MAX_BLOCK` instructions from `bytes` (at `rip`),
    /// ending after a control transfer. An instruction cut short by the end
    /// of `bytes` ends the block before it; an empty result means the first
    /// one was cut short (or `bytes` is empty).
    fn decode_from(bytes: &[u8], rip: u64) -> Vec<Decoded> {
        let mut decoder = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
        let table = ops::table();
        let mut insns = Vec::new();
        let mut insn = Instruction::default();
        while decoder.can_decode() && insns.len() < MAX_BLOCK {
            decoder.decode_out(&mut insn);
            if insn.is_invalid() && decoder.last_error() == iced_x86::DecoderError::NoMoreBytes {
                break;
            }
            let handler = if model_allows()[insn.code() as usize] {
                table[insn.code() as usize].unwrap_or(unimplemented as Handler)
            } else {
                outside_model(table, insn.mnemonic())
            };
            let ends = insn.flow_control() != FlowControl::Next || insn.is_invalid();
            insns.push(Decoded { insn, handler });
            if ends {
                break;
            }
        }
        insns
    }

    /// Run blocks until an exit.
    fn run_blocks(&mut self, cpu: &mut CpuState) -> Exit {
        loop {
            if self.interrupt.take() {
                return Exit::Interrupted;
            }
            if let Some(exit) = self.run_block(cpu) {
                return exit;
            }
        }
    }

    /// Run one block at `cpu.rip`; `None` when it ended without an exit.
    /// (The JIT engine's fallback for what it does not run natively.)
    pub fn run_block(&mut self, cpu: &mut CpuState) -> Option<Exit> {
        self.run_insns(cpu, MAX_BLOCK)
    }

    /// Run the one instruction at `cpu.rip`; `None` when it ended without
    /// an exit. (The gdb stub's single step and breakpoints.)
    pub fn step(&mut self, cpu: &mut CpuState) -> Option<Exit> {
        let exit = self.run_insns(cpu, 1);
        self.tlb.sync_marks(&self.mem);
        exit
    }

    /// Run at most `max` instructions of the block at `cpu.rip`.
    fn run_insns(&mut self, cpu: &mut CpuState, max: usize) -> Option<Exit> {
        let gen = self.mem.generation();
        if gen != self.generation {
            // Access was reduced somewhere: cached permissions go (code
            // that went with it is invalidated through the code log).
            self.generation = gen;
            self.tlb.flush(&self.mem);
        }
        if self.mem.code_seq() != self.code_seen {
            self.sync_code();
        }
        let block = match self.cache.get(&cpu.rip) {
            Some(b) if b.src.as_ref().is_none_or(|src| unchanged(src, cpu.rip)) => b.clone(),
            cached => {
                if let Some(b) = cached {
                    // Rewritten where writes are not seen: decode again, and
                    // tell the other engines (as the JIT does for its blocks).
                    let len = b.src.as_ref().map_or(1, |s| s.len() as u64);
                    self.cache.remove(&cpu.rip);
                    self.mem.code_written(cpu.rip, len);
                }
                match self.decode(cpu.rip) {
                    Ok(b) => b,
                    Err(e) => return Some(e),
                }
            }
        };
        let mut ctx = Ctx { cpu: &mut *cpu, mem: &self.mem, tlb: &mut self.tlb, next_rip: 0, smc: None };
        for d in block.insns.iter().take(max) {
            ctx.next_rip = d.insn.next_ip();
            let r = (d.handler)(&mut ctx, &d.insn);
            // A write to a page holding translated code: log it now that
            // the write is done; if it hit code, the rest of this block
            // may be stale.
            let hit = ctx.smc.is_some() && log_smc(&mut ctx);
            if let Err(exit) = r {
                return Some(exit);
            }
            ctx.cpu.rip = ctx.next_rip;
            if hit {
                break;
            }
        }
        None
    }

    /// Record every write from now on with the bytes it replaces (`true`),
    /// or stop (`false`). For the JIT's `--check`.
    pub fn journal_writes(&mut self, on: bool) {
        if on {
            self.tlb.flush(&self.mem);
            self.tlb.journal = Some(Vec::new());
        } else {
            self.tlb.journal = None;
        }
    }

    /// The writes recorded since the last call, oldest first.
    pub fn take_journal(&mut self) -> Vec<Written> {
        self.tlb.journal.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Report writes that raced with other threads' translation (before a
    /// thread leaves guest code).
    pub fn sync_marks(&mut self) {
        self.tlb.sync_marks(&self.mem);
    }
}

/// Are the guest bytes at `pc` still `src`?
fn unchanged(src: &[u8], pc: u64) -> bool {
    let mut now = [0u8; MAX_BLOCK_BYTES];
    let now = &mut now[..src.len().min(MAX_BLOCK_BYTES)];
    // SAFETY: a range this engine decoded from (executable guest pages,
    // readable on the host); the copy stops at a page that went away.
    unsafe { hostfault::copy_from_guest(now, pc) }.is_ok() && now[..] == src[..]
}

/// Log the writes of the last instruction to pages holding translated code
/// (`Ctx::smc`); true if they hit translated bytes.
#[cold]
fn log_smc(ctx: &mut Ctx<'_>) -> bool {
    ctx.smc.take().is_some_and(|(start, end)| ctx.mem.code_written(start, end - start))
}

impl Interpreter {
    /// Run guest code from `cpu.rip` until an exit (the interpreter itself
    /// cannot fail: `Engine::run` is this, always `Ok`).
    pub fn run(&mut self, cpu: &mut CpuState) -> Exit {
        let exit = self.run_blocks(cpu);
        // Before this thread leaves guest code (a syscall may block it for
        // long): report writes that raced with other threads' translation.
        self.tlb.sync_marks(&self.mem);
        exit
    }
}

impl Engine for Interpreter {
    fn run(&mut self, cpu: &mut CpuState) -> Result<Exit, EngineError> {
        Ok(Interpreter::run(self, cpu))
    }

    fn name(&self) -> &'static str {
        "interp"
    }

    fn interrupt_handle(&self) -> Arc<Interrupt> {
        self.interrupt.clone()
    }
}

/// Every `Code` the interpreter implements, generated from the dispatch
/// table (for the differential tester and documentation).
pub fn implemented_codes() -> Vec<Code> {
    let t = ops::table();
    Code::values().filter(|c| t[*c as usize].is_some()).collect()
}

/// Helpers for unit tests of instruction handlers.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    pub(crate) use crate::difftest::Snippet;

    #[test]
    fn add_sets_flags_and_syscall_exits() {
        let s = Snippet::new();
        // mov eax, 0xffffffff; add eax, 1
        let (cpu, exit) = s.run(&[0xb8, 0xff, 0xff, 0xff, 0xff, 0x83, 0xc0, 0x01], |_| {});
        assert_eq!(exit, Exit::Syscall);
        assert_eq!(cpu.gpr[0], 0);
        assert!(cpu.flags.cf() && cpu.flags.zf());
    }

    #[test]
    fn null_load_faults_precisely() {
        let s = Snippet::new();
        // xor eax, eax; mov rax, [rax]
        let (cpu, exit) = s.run(&[0x31, 0xc0, 0x48, 0x8b, 0x00], |_| {});
        assert_eq!(
            exit,
            Exit::Fault(Fault {
                pc: s.code + 2,
                kind: FaultKind::Page { addr: 0, write: false, kind: PageFaultKind::NotMapped }
            })
        );
        assert_eq!(cpu.rip, s.code + 2);
    }

    /// Thread B's write to code thread A decoded reaches A's next run,
    /// and a write B made through a write permission it cached before A
    /// decoded the page is reported when B applies A's mark.
    #[test]
    fn code_written_by_another_engine_is_seen() {
        let s = Snippet::new();
        let f = s.code + PAGE_SIZE; // mov eax, 1; syscall
        let run_a = |a: &mut Interpreter| {
            let mut cpu = CpuState { rip: f, ..CpuState::default() };
            assert_eq!(a.run(&mut cpu), Exit::Syscall);
            cpu.gpr[0]
        };
        let mut a = Interpreter::new(s.mem.clone());
        let mut b = Interpreter::new(s.mem.clone());
        // SAFETY: the code area is RW guest memory of this test.
        unsafe { std::ptr::copy_nonoverlapping([0xb8, 1, 0, 0, 0, 0x0f, 0x05].as_ptr(), f as *mut u8, 7) };
        // B caches write permission for the page (data beside the code).
        let mut cpu = CpuState::default();
        let mut ctx = Ctx { cpu: &mut cpu, mem: &s.mem, tlb: &mut b.tlb, next_rip: 0, smc: None };
        ctx.store(f + 0x800, 4, 7).unwrap();
        assert_eq!(run_a(&mut a), 1);
        // B writes the immediate through its cached permission (no log)...
        let mut ctx = Ctx { cpu: &mut cpu, mem: &s.mem, tlb: &mut b.tlb, next_rip: 0, smc: None };
        ctx.store(f + 1, 4, 2).unwrap();
        assert!(ctx.smc.is_none(), "the cached write permission was used");
        // ...and reports it when it applies A's mark (at its next block
        // boundary, exit or eviction).
        b.tlb.sync_marks(&s.mem);
        assert_eq!(run_a(&mut a), 2);
        // Now the page is code for everyone: B's next write takes the slow
        // path and is logged by B's run loop. mov dword [rdi], esi; syscall
        let w = s.code + 2 * PAGE_SIZE;
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping([0x89, 0x37, 0x0f, 0x05].as_ptr(), w as *mut u8, 4) };
        let mut cpu = CpuState { rip: w, ..CpuState::default() };
        cpu.gpr[7] = f + 1;
        cpu.gpr[6] = 3;
        assert_eq!(b.run(&mut cpu), Exit::Syscall);
        assert_eq!(run_a(&mut a), 3);
        // Unmapping the code drops A's block too: the fetch faults.
        s.mem.protect(s.code + PAGE_SIZE, PAGE_SIZE, Prot::RW).unwrap();
        let mut cpu = CpuState { rip: f, ..CpuState::default() };
        assert!(matches!(a.run(&mut cpu), Exit::Fault(_)));
    }

    #[test]
    fn div_by_zero_is_de() {
        let s = Snippet::new();
        // xor ecx, ecx; div ecx
        let (_, exit) = s.run(&[0x31, 0xc9, 0xf7, 0xf1], |_| {});
        assert_eq!(exit, Exit::Fault(Fault { pc: s.code + 2, kind: FaultKind::Divide }));
    }
}
