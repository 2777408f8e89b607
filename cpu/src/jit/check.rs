//! `--check`: every translated block runs twice from the same state, first
//! in the interpreter (its writes journaled, then undone), then translated;
//! the registers, the exit and the bytes the interpreter wrote must agree.
//! This module compares the two results and names the first difference in
//! one line: the block, the guest instruction (disassembled) that last
//! wrote what differs, and the register or memory byte.

use iced_x86::{
    CpuidFeature, Decoder, DecoderOptions, Formatter, GasFormatter, Instruction, InstructionInfoFactory, OpAccess,
};

use crate::engine::Exit;
use crate::interp::Written;
use crate::state::{fl, CpuState};

/// One engine's result for a block: the state after it, and the exit it
/// ended with (`None`: it went on to the next block).
pub(crate) struct Outcome {
    pub cpu: CpuState,
    pub exit: Option<Exit>,
}

/// What differs, if anything.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// The guest instruction blamed.
    pub pc: u64,
    /// The register or byte, with both values.
    pub what: String,
}

const GPR_NAMES: [&str; 16] =
    ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

/// iced's status-flag bits as RFLAGS bits.
fn status_bits(iced: u32) -> u64 {
    use iced_x86::RflagsBits as R;
    [(R::OF, fl::OF), (R::SF, fl::SF), (R::ZF, fl::ZF), (R::AF, fl::AF), (R::CF, fl::CF), (R::PF, fl::PF)]
        .iter()
        .filter(|(i, _)| iced & i != 0)
        .fold(0, |a, (_, f)| a | f)
}

/// The guest instructions of a block.
pub(crate) fn decode(bytes: &[u8], pc: u64) -> Vec<Instruction> {
    let mut d = Decoder::with_ip(64, bytes, pc, DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.can_decode() {
        let insn = d.decode();
        if insn.is_invalid() {
            break;
        }
        out.push(insn);
    }
    out
}

/// `insn` in AT&T syntax.
pub(crate) fn disassemble(insn: &Instruction) -> String {
    let mut s = String::new();
    GasFormatter::new().format(insn, &mut s);
    s
}

/// Compare the interpreter's and the JIT's results for the block whose
/// instructions are `insns`. `written`: each interpreter write with the
/// bytes it left (after the whole block); `read` reads guest memory now
/// (after the JIT ran).
pub(crate) fn compare(
    insns: &[Instruction],
    interp: &Outcome,
    jit: &Outcome,
    written: &[(Written, Vec<u8>)],
    read: impl Fn(u64, usize) -> Option<Vec<u8>>,
) -> Option<Mismatch> {
    // The instructions that completed: all, or those before a fault.
    let stop = match &interp.exit {
        Some(Exit::Fault(f)) => f.pc,
        _ => u64::MAX,
    };
    let done: Vec<&Instruction> = insns.iter().filter(|i| i.ip() < stop).collect();
    let last_pc = done.last().copied().or(insns.last()).map_or(0, |i| i.ip());
    let mut info = InstructionInfoFactory::new();
    // The last completed instruction that writes what `writes` says.
    let mut blame = |writes: &dyn Fn(&Instruction, &mut InstructionInfoFactory) -> bool| {
        done.iter().rev().find(|i| writes(i, &mut info)).map_or(last_pc, |i| i.ip())
    };
    let (a, b) = (&interp.cpu, &jit.cpu);
    if interp.exit != jit.exit {
        let pc = if stop != u64::MAX { stop } else { last_pc };
        return Some(Mismatch { pc, what: format!("exit: interpreter {:?}, jit {:?}", interp.exit, jit.exit) });
    }
    #[allow(clippy::needless_range_loop)] // `r` also names the register
    for r in 0..16 {
        if a.gpr[r] != b.gpr[r] {
            let pc = blame(&|i, f| {
                f.info(i).used_registers().iter().any(|u| {
                    u.register().full_register() == iced_gpr(r)
                        && !matches!(u.access(), OpAccess::Read | OpAccess::CondRead | OpAccess::NoMemAccess)
                }) || (r == 4 && i.stack_pointer_increment() != 0)
            });
            let what = format!("{}: interpreter {:#x}, jit {:#x}", GPR_NAMES[r], a.gpr[r], b.gpr[r]);
            return Some(Mismatch { pc, what });
        }
    }
    if a.rip != b.rip {
        return Some(Mismatch { pc: last_pc, what: format!("rip: interpreter {:#x}, jit {:#x}", a.rip, b.rip) });
    }
    // Flags an instruction leaves undefined, unless a later one defines
    // them, are not compared (the interpreter imitates one vendor).
    let undefined = done.iter().fold(0u64, |u, i| {
        let defined = status_bits(i.rflags_written() | i.rflags_cleared() | i.rflags_set());
        (u & !defined) | status_bits(i.rflags_undefined())
    });
    let (fa, fb) = (a.flags.get() & fl::USER_WRITABLE & !undefined, b.flags.get() & fl::USER_WRITABLE & !undefined);
    if fa != fb {
        let pc = blame(&|i, _| i.rflags_modified() != 0);
        return Some(Mismatch { pc, what: format!("rflags: interpreter {fa:#x}, jit {fb:#x}") });
    }
    for r in 0..16 {
        if a.xmm[r] != b.xmm[r] || a.ymm_hi[r] != b.ymm_hi[r] {
            let pc = blame(&|i, f| {
                f.info(i).used_registers().iter().any(|u| {
                    let reg = u.register();
                    (reg.is_xmm() || reg.is_ymm() || reg.is_zmm())
                        && reg.number() == r
                        && !matches!(u.access(), OpAccess::Read | OpAccess::CondRead)
                })
            });
            let what = format!(
                "ymm{r}: interpreter {:#034x}_{:032x}, jit {:#034x}_{:032x}",
                a.ymm_hi[r], a.xmm[r], b.ymm_hi[r], b.xmm[r]
            );
            return Some(Mismatch { pc, what });
        }
    }
    if a.mxcsr != b.mxcsr {
        return Some(Mismatch { pc: last_pc, what: format!("mxcsr: interpreter {:#x}, jit {:#x}", a.mxcsr, b.mxcsr) });
    }
    // x87: control, status and tag words, the stack (FOP, FIP and FDP are
    // not modelled).
    let x87 = |i: &&Instruction| {
        i.cpuid_features().iter().any(|f| matches!(f, CpuidFeature::FPU | CpuidFeature::FPU387 | CpuidFeature::MMX))
    };
    let x87_same = !done.iter().any(x87) || {
        let (xa, xb) = (a.fxsave_image(), b.fxsave_image());
        xa[..6] == xb[..6] && (0..8).all(|k| xa[32 + 16 * k..42 + 16 * k] == xb[32 + 16 * k..42 + 16 * k])
    };
    if !x87_same {
        let pc = blame(&|i, _| i.is_stack_instruction() || format!("{:?}", i.mnemonic()).starts_with('F'));
        return Some(Mismatch { pc, what: "x87 state differs".into() });
    }
    for (w, want) in written {
        let Some(now) = read(w.addr, want.len()) else {
            return Some(Mismatch { pc: w.pc, what: format!("memory at {:#x}: no longer readable", w.addr) });
        };
        if let Some(k) = (0..want.len()).find(|&k| now.get(k) != want.get(k)) {
            let what = format!(
                "memory byte at {:#x}: interpreter {:#04x}, jit {:#04x}",
                w.addr + k as u64,
                want[k],
                now.get(k).copied().unwrap_or(0)
            );
            return Some(Mismatch { pc: w.pc, what });
        }
    }
    None
}

/// iced's 64-bit register for `CpuState::gpr` index `r`.
fn iced_gpr(r: usize) -> iced_x86::Register {
    use iced_x86::Register as R;
    [
        R::RAX,
        R::RCX,
        R::RDX,
        R::RBX,
        R::RSP,
        R::RBP,
        R::RSI,
        R::RDI,
        R::R8,
        R::R9,
        R::R10,
        R::R11,
        R::R12,
        R::R13,
        R::R14,
        R::R15,
    ][r & 15]
}

/// The one line `--check` stops with.
pub(crate) fn report(block: u64, insns: &[Instruction], m: &Mismatch) -> String {
    let text = insns.iter().find(|i| i.ip() == m.pc).map(disassemble).unwrap_or_else(|| "?".into());
    format!("--check: block {block:#x}: after `{text}` at {:#x}, {}", m.pc, m.what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(init: impl Fn(&mut CpuState)) -> Outcome {
        let mut cpu = CpuState::default();
        init(&mut cpu);
        Outcome { cpu, exit: None }
    }

    // mov ebx, 5; add rax, rbx; add rcx, 1; syscall
    const BLOCK: [u8; 15] = [0xbb, 5, 0, 0, 0, 0x48, 0x01, 0xd8, 0x48, 0x83, 0xc1, 1, 0x90, 0x0f, 0x05];
    const PC: u64 = 0x40_1000;

    #[test]
    fn the_same_results_agree() {
        let insns = decode(&BLOCK, PC);
        let a = outcome(|c| c.gpr[0] = 5);
        let b = outcome(|c| c.gpr[0] = 5);
        assert_eq!(compare(&insns, &a, &b, &[], |_, _| None), None);
    }

    #[test]
    fn a_register_difference_names_its_last_writer() {
        let insns = decode(&BLOCK, PC);
        let a = outcome(|c| c.gpr[0] = 5);
        let b = outcome(|c| c.gpr[0] = 6);
        let m = compare(&insns, &a, &b, &[], |_, _| None).expect("a difference");
        assert_eq!(m, Mismatch { pc: PC + 5, what: "rax: interpreter 0x5, jit 0x6".into() });
        assert_eq!(
            report(PC, &insns, &m),
            "--check: block 0x401000: after `add %rbx,%rax` at 0x401005, rax: interpreter 0x5, jit 0x6"
        );
    }

    #[test]
    fn undefined_flags_are_not_compared_but_defined_ones_are() {
        // imul leaves SF, ZF, AF and PF undefined.
        let insns = decode(&[0x48, 0x0f, 0xaf, 0xc3], PC);
        let a = outcome(|c| c.flags.set(fl::ZF | 2));
        let b = outcome(|c| c.flags.set(2));
        assert_eq!(compare(&insns, &a, &b, &[], |_, _| None), None);
        let b = outcome(|c| c.flags.set(fl::ZF | fl::CF | 2));
        let m = compare(&insns, &a, &b, &[], |_, _| None).expect("CF is defined");
        assert!(m.what.starts_with("rflags"), "{m:?}");
    }

    #[test]
    fn a_memory_difference_names_the_byte_and_the_writer() {
        let insns = decode(&BLOCK, PC);
        let a = outcome(|_| {});
        let w = Written { pc: PC + 8, addr: 0x5000, old: vec![0; 4] };
        let m = compare(&insns, &a, &outcome(|_| {}), &[(w, vec![1, 2, 3, 4])], |_, n| {
            Some(vec![1, 2, 9, 4][..n].to_vec())
        })
        .expect("a difference");
        assert_eq!(m, Mismatch { pc: PC + 8, what: "memory byte at 0x5002: interpreter 0x03, jit 0x09".into() });
    }
}
