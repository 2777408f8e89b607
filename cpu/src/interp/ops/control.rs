//! Control flow and system instructions: JMP, Jcc, CALL, RET, LOOP, JrCXZ,
//! LEAVE, ENTER, SYSCALL, INT3, UD, CPUID, RDTSC(P), the CET shadow-stack
//! instructions. Far transfers and system instructions: `system.rs`.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::data::cc_of;
use super::Table;
use crate::cpuid::guest_cpuid;
use crate::engine::{Exit, FaultKind};
use crate::interp::{Ctx, Step};
use crate::state::{mask, reg};

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    t.set_mnemonic(Jmp, jmp);
    t.set_mnemonics(&[Jo, Jno, Jb, Jae, Je, Jne, Jbe, Ja, Js, Jns, Jp, Jnp, Jl, Jge, Jle, Jg], jcc);
    t.set_mnemonic(Call, call);
    t.set_mnemonic(Ret, ret);
    t.set_mnemonics(&[Loop, Loope, Loopne], loop_);
    t.set_mnemonics(&[Jrcxz, Jecxz], jrcxz);
    t.set_mnemonic(Leave, leave);
    t.set_mnemonic(Enter, enter);
    t.set_mnemonic(Syscall, syscall);
    t.set(&[Code::Int3], int3);
    // INT n, INT1, HLT, I/O and the other system instructions: ops/system.rs.
    t.set_mnemonics(&[Ud0, Ud1, Ud2], ud);
    t.set_mnemonic(Cpuid, cpuid);
    t.set_mnemonic(Rdtsc, rdtsc);
    t.set_mnemonic(Rdtscp, rdtscp);
    // CET shadow stacks are never enabled for a guest (CPUID leaf 7 ECX.CET_SS
    // is 0 and urun's arch_prctl refuses ARCH_SHSTK_ENABLE). With shadow
    // stacks off RDSSP is a NOP that leaves its destination alone, which is
    // how libgcc's and Rust's unwinders find that there is no shadow stack to
    // unwind; the instructions that need one raise #UD, as on the host.
    t.set_mnemonics(&[Rdsspd, Rdsspq], shadow_stack_nop);
    t.set_mnemonics(&[Incsspd, Incsspq, Saveprevssp, Rstorssp, Wrssd, Wrssq, Wrussd, Wrussq, Setssbsy, Clrssbsy], ud);
}

/// Operand 0 of a branch: an immediate target or a register/memory one.
fn target(ctx: &mut Ctx<'_>, insn: &Instruction) -> Result<u64, Exit> {
    match insn.op0_kind() {
        OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16 => Ok(insn.near_branch_target()),
        _ => {
            let size = Ctx::osz(insn);
            ctx.get(insn, 0, size)
        }
    }
}

fn jmp(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    ctx.next_rip = target(ctx, insn)?;
    Ok(())
}

fn jcc(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    if ctx.cpu.flags.cond(cc_of(insn)) {
        ctx.next_rip = insn.near_branch_target();
    }
    Ok(())
}

fn call(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let t = target(ctx, insn)?;
    ctx.push(8, insn.next_ip())?;
    ctx.next_rip = t;
    Ok(())
}

fn ret(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let t = ctx.pop(8)?;
    if insn.op_count() == 1 {
        ctx.cpu.gpr[reg::RSP] = ctx.cpu.gpr[reg::RSP].wrapping_add(insn.immediate16() as u64);
    }
    ctx.next_rip = t;
    Ok(())
}

fn loop_(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let ecx = matches!(insn.code(), Code::Loop_rel8_64_ECX | Code::Loope_rel8_64_ECX | Code::Loopne_rel8_64_ECX);
    let size = if ecx { 4 } else { 8 };
    // With a 32-bit address size the count is ECX, and writing it clears
    // the upper half of RCX.
    let c = ctx.cpu.gpr[reg::RCX].wrapping_sub(1) & mask(size);
    ctx.cpu.gpr[reg::RCX] = c;
    let zf = ctx.cpu.flags.zf();
    let go = c != 0
        && match insn.mnemonic() {
            Mnemonic::Loope => zf,
            Mnemonic::Loopne => !zf,
            _ => true,
        };
    if go {
        ctx.next_rip = insn.near_branch_target();
    }
    Ok(())
}

fn jrcxz(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = if insn.mnemonic() == Mnemonic::Jecxz { 4 } else { 8 };
    if ctx.cpu.gpr[reg::RCX] & mask(size) == 0 {
        ctx.next_rip = insn.near_branch_target();
    }
    Ok(())
}

/// Operand size of ENTER/LEAVE: 2 with a 0x66 prefix (ENTERW/LEAVEW, which
/// push and pop 16-bit values and write only BP), else 8.
fn frame_size(insn: &Instruction) -> u8 {
    if matches!(insn.code(), Code::Enterw_imm16_imm8 | Code::Leavew) {
        2
    } else {
        8
    }
}

/// Write the frame pointer: all of RBP, or only BP for the 16-bit forms.
fn set_frame_pointer(ctx: &mut Ctx<'_>, size: u8, v: u64) {
    ctx.set_reg(if size == 2 { Register::BP } else { Register::RBP }, v);
}

fn leave(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = frame_size(insn);
    let bp = ctx.cpu.gpr[reg::RBP];
    let v = ctx.load(bp, size)?;
    ctx.cpu.gpr[reg::RSP] = bp.wrapping_add(size as u64);
    set_frame_pointer(ctx, size, v);
    Ok(())
}

fn enter(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = frame_size(insn);
    let alloc = insn.immediate16() as u64;
    let level = insn.immediate8_2nd() as u64 & 31;
    let bp = ctx.cpu.gpr[reg::RBP];
    ctx.push(size, bp & mask(size))?;
    let frame = ctx.cpu.gpr[reg::RSP];
    if level > 0 {
        let mut p = bp;
        for _ in 1..level {
            p = p.wrapping_sub(size as u64);
            let v = ctx.load(p, size)?;
            ctx.push(size, v)?;
        }
        ctx.push(size, frame & mask(size))?;
    }
    set_frame_pointer(ctx, size, frame);
    ctx.cpu.gpr[reg::RSP] = ctx.cpu.gpr[reg::RSP].wrapping_sub(alloc);
    Ok(())
}

fn syscall(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    // As the hardware does: RCX = return address, R11 = RFLAGS.
    ctx.cpu.gpr[reg::RCX] = insn.next_ip();
    ctx.cpu.gpr[reg::R11] = ctx.cpu.flags.get() & !0x1_0000;
    ctx.cpu.rip = insn.next_ip();
    Err(Exit::Syscall)
}

fn int3(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    // A trap: the saved RIP is past the instruction, as Linux reports it.
    ctx.cpu.rip = insn.next_ip();
    Err(ctx.fault(FaultKind::Breakpoint))
}

fn ud(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    Err(ctx.invalid(insn))
}

fn shadow_stack_nop(_ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    Ok(())
}

fn cpuid(ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    let g = &mut ctx.cpu.gpr;
    let r = guest_cpuid(g[reg::RAX] as u32, g[reg::RCX] as u32);
    g[reg::RAX] = r[0] as u64;
    g[reg::RBX] = r[1] as u64;
    g[reg::RCX] = r[2] as u64;
    g[reg::RDX] = r[3] as u64;
    Ok(())
}

fn host_tsc() -> u64 {
    // SAFETY: RDTSC is unprivileged on Linux hosts and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn rdtsc(ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    let t = host_tsc();
    ctx.cpu.gpr[reg::RAX] = t & 0xffff_ffff;
    ctx.cpu.gpr[reg::RDX] = t >> 32;
    Ok(())
}

fn rdtscp(ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    let mut aux = 0u32;
    // SAFETY: RDTSCP is advertised by the host CPU (checked by the model,
    // which reports it only from the host's leaf 0x8000_0001).
    let t = unsafe { core::arch::x86_64::__rdtscp(&mut aux) };
    ctx.cpu.gpr[reg::RAX] = t & 0xffff_ffff;
    ctx.cpu.gpr[reg::RDX] = t >> 32;
    ctx.cpu.gpr[reg::RCX] = aux as u64;
    Ok(())
}
