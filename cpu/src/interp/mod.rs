//! The interpreter: urun's reference engine.
//!
//! A guest basic block is decoded once with iced-x86 and cached by address;
//! each decoded instruction carries the handler for its `iced_x86::Code`,
//! found in a table built from the `ops` family files. Every memory access
//! is checked against the `AddressSpace` (through a small software TLB), so
//! a guest cannot touch urun's memory and faults are precise.

mod ctx;
pub mod ops;

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Formatter, GasFormatter, Instruction};

use ctx::Tlb;
pub use ctx::{xmm_index, Ctx, Step};

use crate::engine::{Engine, Exit, Fault, FaultKind, PageFaultKind};
use crate::mem::{AddressSpace, Prot, PAGE_SIZE};
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
}

/// The text of an instruction for logs and SIGILL reports: address, bytes
/// length and AT&T syntax.
pub fn describe(insn: &Instruction) -> String {
    let mut f = GasFormatter::new();
    let mut s = String::new();
    f.format(insn, &mut s);
    format!("{s} (at {:#x}, {:?})", insn.ip(), insn.code())
}

/// Handler for forms urun does not implement: the guest gets SIGILL and
/// the log names the instruction.
fn unimplemented(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    tracing::warn!(insn = %describe(insn), "unimplemented instruction: raising SIGILL");
    Err(ctx.invalid(insn))
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

/// The interpreter engine for one guest thread.
pub struct Interpreter {
    mem: Arc<AddressSpace>,
    cache: HashMap<u64, Rc<Block>, AddrHash>,
    code_pages: HashSet<u64>,
    tlb: Tlb,
    generation: u64,
    interrupt: Arc<AtomicBool>,
}

impl Interpreter {
    pub fn new(mem: Arc<AddressSpace>) -> Self {
        let generation = mem.generation();
        Interpreter {
            mem,
            cache: HashMap::default(),
            code_pages: HashSet::new(),
            tlb: Tlb::new(),
            generation,
            interrupt: Arc::new(AtomicBool::new(false)),
        }
    }

    fn flush(&mut self) {
        self.cache.clear();
        self.code_pages.clear();
        self.tlb.flush();
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
        // A copy of the bytes a block can span, so that a page another
        // guest thread unmaps meanwhile ends the fetch there.
        let mut buf = [0u8; MAX_BLOCK * 15];
        let mut avail = avail.min(buf.len() as u64);
        // SAFETY: [rip, rip+avail) lies in executable guest pages, which
        // urun keeps readable on the host (see `Prot::host`).
        if let Err(p) = unsafe { crate::hostfault::copy_from_guest(&mut buf[..avail as usize], rip) } {
            avail = p.done;
        }
        let bytes = &buf[..avail as usize];
        let mut decoder = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
        let table = ops::table();
        let mut insns = Vec::new();
        let mut insn = Instruction::default();
        while decoder.can_decode() && insns.len() < MAX_BLOCK {
            decoder.decode_out(&mut insn);
            if insn.is_invalid() && decoder.last_error() == iced_x86::DecoderError::NoMoreBytes {
                if insns.is_empty() {
                    // The instruction runs into an unmapped or non-executable page.
                    return Err(fetch_fault(rip + avail, PageFaultKind::NotMapped));
                }
                break;
            }
            let handler = table[insn.code() as usize].unwrap_or(unimplemented as Handler);
            let ends = insn.flow_control() != FlowControl::Next || insn.is_invalid();
            insns.push(Decoded { insn, handler });
            if ends {
                break;
            }
        }
        if insns.is_empty() {
            return Err(fetch_fault(rip + avail, PageFaultKind::NotMapped));
        }
        let last = insns.last().map(|d| d.insn.next_ip() - 1).unwrap_or(rip);
        for p in (rip / PAGE_SIZE)..=(last / PAGE_SIZE) {
            self.code_pages.insert(p);
            self.tlb.drop_write(p);
        }
        let block = Rc::new(Block { insns });
        self.cache.insert(rip, block.clone());
        Ok(block)
    }
}

impl Interpreter {
    /// Run one block at `cpu.rip` (the JIT's fallback for what it does not
    /// run natively). `None`: the block ended normally.
    pub fn run_block(&mut self, cpu: &mut CpuState) -> Option<Exit> {
        let gen = self.mem.generation();
        if gen != self.generation {
            self.generation = gen;
            self.flush();
        }
        let block = match self.cache.get(&cpu.rip) {
            Some(b) => b.clone(),
            None => match self.decode(cpu.rip) {
                Ok(b) => b,
                Err(e) => return Some(e),
            },
        };
        let mut ctx = Ctx {
            cpu: &mut *cpu,
            mem: &self.mem,
            tlb: &mut self.tlb,
            code_pages: &self.code_pages,
            next_rip: 0,
            smc: false,
        };
        for d in &block.insns {
            ctx.next_rip = d.insn.next_ip();
            if let Err(exit) = (d.handler)(&mut ctx, &d.insn) {
                if ctx.smc {
                    self.flush();
                }
                return Some(exit);
            }
            ctx.cpu.rip = ctx.next_rip;
            if ctx.smc {
                break;
            }
        }
        if ctx.smc {
            self.flush();
        }
        None
    }
}

impl Engine for Interpreter {
    fn run(&mut self, cpu: &mut CpuState) -> Exit {
        loop {
            if self.interrupt.load(Ordering::Relaxed) && self.interrupt.swap(false, Ordering::AcqRel) {
                return Exit::Interrupted;
            }
            if let Some(exit) = self.run_block(cpu) {
                return exit;
            }
        }
    }

    fn name(&self) -> &'static str {
        "interp"
    }

    fn interrupt_handle(&self) -> Arc<AtomicBool> {
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

    #[test]
    fn div_by_zero_is_de() {
        let s = Snippet::new();
        // xor ecx, ecx; div ecx
        let (_, exit) = s.run(&[0x31, 0xc9, 0xf7, 0xf1], |_| {});
        assert_eq!(exit, Exit::Fault(Fault { pc: s.code + 2, kind: FaultKind::Divide }));
    }
}
