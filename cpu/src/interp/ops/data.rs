//! Data movement: MOV and its extending forms, LEA, XCHG, CMPXCHG, XADD,
//! PUSH/POP, CBW..CQO, CMOVcc, SETcc, BSWAP, MOVBE, flag moves, XLAT, NOP.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::Table;
use crate::engine::FaultKind;
use crate::interp::{Ctx, Step};
use crate::state::{fl, mask, reg, FlagOp};

use super::arith::sext;
use super::system;

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    t.set_mnemonic(Mov, mov);
    t.set_mnemonic(Movzx, movzx);
    t.set_mnemonics(&[Movsx, Movsxd], movsx);
    t.set_mnemonic(Lea, lea);
    t.set_mnemonic(Xchg, xchg);
    t.set_mnemonic(Cmpxchg, cmpxchg);
    t.set_mnemonic(Cmpxchg8b, cmpxchg8b);
    t.set_mnemonic(Cmpxchg16b, cmpxchg16b);
    t.set_mnemonic(Xadd, xadd);
    t.set_mnemonic(Push, push);
    t.set_mnemonic(Pop, pop);
    t.set_mnemonics(&[Cbw, Cwde, Cdqe], widen_accumulator);
    t.set_mnemonics(&[Cwd, Cdq, Cqo], sign_into_rdx);
    t.set_mnemonics(
        &[
            Cmovo, Cmovno, Cmovb, Cmovae, Cmove, Cmovne, Cmovbe, Cmova, Cmovs, Cmovns, Cmovp, Cmovnp, Cmovl, Cmovge,
            Cmovle, Cmovg,
        ],
        cmovcc,
    );
    t.set_mnemonics(
        &[Seto, Setno, Setb, Setae, Sete, Setne, Setbe, Seta, Sets, Setns, Setp, Setnp, Setl, Setge, Setle, Setg],
        setcc,
    );
    t.set_mnemonic(Bswap, bswap);
    t.set_mnemonic(Movbe, movbe);
    t.set_mnemonic(Lahf, lahf);
    t.set_mnemonic(Sahf, sahf);
    t.set_mnemonics(&[Pushf, Pushfq], pushf);
    t.set_mnemonics(&[Popf, Popfq], popf);
    t.set_mnemonics(&[Clc, Stc, Cmc, Cld, Std], flag_bit);
    t.set_mnemonic(Xlatb, xlat);
    t.set_mnemonic(Nop, nop);
    t.set(&[Code::Pause], nop);
    t.set_mnemonics(&[Prefetchnta, Prefetcht0, Prefetcht1, Prefetcht2, Prefetchw, Lfence, Mfence, Sfence], fence);
    t.set(&[Code::Endbr64, Code::Endbr32], nop);
}

fn mov(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    if insn.op1_kind() == OpKind::Register && insn.op1_register().is_segment_register() {
        // MOV r/m, Sreg: 16 bits to memory, zero-extended into a register.
        let size = Ctx::osz(insn);
        return ctx.set(insn, 0, size, system::selector(ctx, insn.op1_register()) as u64);
    }
    if insn.op0_kind() == OpKind::Register && insn.op0_register().is_segment_register() {
        return system::mov_to_segment(ctx, insn);
    }
    if insn.op0_kind() == OpKind::Register && !insn.op0_register().is_gpr() {
        // Writes to control or debug registers are privileged.
        return Err(ctx.fault(FaultKind::GeneralProtection));
    }
    if insn.op1_kind() == OpKind::Register && !insn.op1_register().is_gpr() {
        return Err(ctx.fault(FaultKind::GeneralProtection));
    }
    let size = Ctx::osz(insn);
    let v = ctx.get(insn, 1, size)?;
    ctx.set(insn, 0, size, v)
}

fn movzx(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let v = ctx.get(insn, 1, Ctx::op_size(insn, 1))?;
    ctx.set(insn, 0, Ctx::osz(insn), v)
}

fn movsx(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let src = Ctx::op_size(insn, 1);
    let dst = Ctx::osz(insn);
    let v = sext(ctx.get(insn, 1, src)?, src) as u64;
    ctx.set(insn, 0, dst, v & mask(dst))
}

fn lea(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    // LEA ignores segment bases: compute without them.
    let mut a = insn.memory_displacement64();
    let base = insn.memory_base();
    if base != Register::None && base != Register::RIP && base != Register::EIP {
        a = a.wrapping_add(ctx.reg(base));
    }
    if insn.memory_index() != Register::None {
        a = a.wrapping_add(ctx.reg(insn.memory_index()).wrapping_mul(insn.memory_index_scale() as u64));
    }
    if base.size() == 4 || insn.memory_index().size() == 4 {
        a &= 0xffff_ffff;
    }
    let size = Ctx::osz(insn);
    ctx.set_reg(insn.op0_register(), a & mask(size));
    Ok(())
}

fn xchg(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    if insn.op0_kind() == OpKind::Memory {
        let v = ctx.get(insn, 1, size)?;
        let old = ctx.rmw(insn, size, true, |_| v)?;
        ctx.set(insn, 1, size, old)
    } else {
        // iced always puts XCHG's memory operand first (Xchg_rm*_r*).
        let a = ctx.get(insn, 0, size)?;
        let b = ctx.get(insn, 1, size)?;
        ctx.set(insn, 0, size, b)?;
        ctx.set(insn, 1, size, a)
    }
}

fn cmpxchg(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let acc = ctx.cpu.gpr[reg::RAX] & mask(size);
    let src = ctx.get(insn, 1, size)?;
    let old = if insn.op0_kind() == OpKind::Memory {
        let a = ctx.ea(insn);
        ctx.cmpxchg_mem(a, size, acc, src)?
    } else {
        let cur = ctx.get(insn, 0, size)?;
        if cur == acc {
            ctx.set(insn, 0, size, src)?;
        }
        cur
    };
    ctx.cpu.flags.set_lazy(FlagOp::Sub, size, acc, old, acc.wrapping_sub(old) & mask(size), false);
    if old != acc {
        ctx.set_reg(accumulator(size), old);
    }
    Ok(())
}

/// AL, AX, EAX or RAX.
fn accumulator(size: u8) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

fn cmpxchg8b(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let a = ctx.ea(insn);
    let g = &ctx.cpu.gpr;
    let expected = (g[reg::RAX] & 0xffff_ffff) | (g[reg::RDX] << 32);
    let new = (g[reg::RBX] & 0xffff_ffff) | (g[reg::RCX] << 32);
    let old = ctx.cmpxchg_mem(a, 8, expected, new)?;
    let eq = old == expected;
    ctx.cpu.flags.set_bits(fl::ZF, eq);
    if !eq {
        ctx.cpu.gpr[reg::RAX] = old & 0xffff_ffff;
        ctx.cpu.gpr[reg::RDX] = old >> 32;
    }
    Ok(())
}

fn cmpxchg16b(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let a = ctx.ea(insn);
    let g = &ctx.cpu.gpr;
    let expected = (g[reg::RAX] as u128) | ((g[reg::RDX] as u128) << 64);
    let new = (g[reg::RBX] as u128) | ((g[reg::RCX] as u128) << 64);
    let old = ctx.cmpxchg16_mem(a, expected, new)?;
    let eq = old == expected;
    ctx.cpu.flags.set_bits(fl::ZF, eq);
    if !eq {
        ctx.cpu.gpr[reg::RAX] = old as u64;
        ctx.cpu.gpr[reg::RDX] = (old >> 64) as u64;
    }
    Ok(())
}

fn xadd(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let b = ctx.get(insn, 1, size)?;
    let old = ctx.rmw(insn, size, insn.has_lock_prefix(), |a| a.wrapping_add(b))?;
    let res = old.wrapping_add(b) & mask(size);
    ctx.set(insn, 1, size, old)?;
    if insn.op0_kind() == OpKind::Register && insn.op0_register() == insn.op1_register() {
        // XADD r, r with one register: the sum is written last.
        ctx.set_reg(insn.op0_register(), res);
    }
    ctx.cpu.flags.set_lazy(FlagOp::Add, size, old, b, res, false);
    Ok(())
}

fn push(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    // PUSH imm8/imm32 pushes 8 bytes sign-extended; PUSH r/m16 pushes 2.
    let size = match insn.op0_kind() {
        OpKind::Register if insn.op0_register().is_segment_register() => {
            return system::push_segment(ctx, insn);
        }
        OpKind::Register => Ctx::reg_size(insn.op0_register()),
        OpKind::Memory => Ctx::osz(insn),
        _ => insn.stack_pointer_increment().unsigned_abs() as u8,
    };
    let v = ctx.get(insn, 0, size)?;
    ctx.push(size, v)
}

fn pop(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    if insn.op0_kind() == OpKind::Register && insn.op0_register().is_segment_register() {
        return system::pop_segment(ctx, insn);
    }
    let size = Ctx::osz(insn);
    let v = ctx.pop(size)?;
    // POP [rsp+x] computes the address after the increment, as hardware does.
    ctx.set(insn, 0, size, v)
}

fn widen_accumulator(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let (from, to) = match insn.mnemonic() {
        Mnemonic::Cbw => (1, 2),
        Mnemonic::Cwde => (2, 4),
        _ => (4, 8),
    };
    let v = sext(ctx.cpu.gpr[reg::RAX], from) as u64;
    ctx.set_reg(accumulator(to), v & mask(to));
    Ok(())
}

fn sign_into_rdx(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = match insn.mnemonic() {
        Mnemonic::Cwd => 2,
        Mnemonic::Cdq => 4,
        _ => 8,
    };
    let neg = sext(ctx.cpu.gpr[reg::RAX], size) < 0;
    let r = match size {
        2 => Register::DX,
        4 => Register::EDX,
        _ => Register::RDX,
    };
    ctx.set_reg(r, if neg { mask(size) } else { 0 });
    Ok(())
}

/// The condition code (0..15) of a Jcc/SETcc/CMOVcc instruction.
pub(crate) fn cc_of(insn: &Instruction) -> u8 {
    use iced_x86::ConditionCode as C;
    match insn.condition_code() {
        C::o => 0,
        C::no => 1,
        C::b => 2,
        C::ae => 3,
        C::e => 4,
        C::ne => 5,
        C::be => 6,
        C::a => 7,
        C::s => 8,
        C::ns => 9,
        C::p => 10,
        C::np => 11,
        C::l => 12,
        C::ge => 13,
        C::le => 14,
        _ => 15,
    }
}

fn cmovcc(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    // The source is read (and may fault) whether or not the move happens.
    let v = ctx.get(insn, 1, size)?;
    if ctx.cpu.flags.cond(cc_of(insn)) {
        ctx.set(insn, 0, size, v)
    } else if size == 4 {
        // A 32-bit CMOV zero-extends its destination even when false.
        let d = ctx.get(insn, 0, 4)?;
        ctx.set(insn, 0, 4, d)
    } else {
        Ok(())
    }
}

fn setcc(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let v = ctx.cpu.flags.cond(cc_of(insn)) as u64;
    ctx.set(insn, 0, 1, v)
}

fn bswap(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let r = insn.op0_register();
    let v = ctx.reg(r);
    let out = match Ctx::reg_size(r) {
        4 => (v as u32).swap_bytes() as u64,
        8 => v.swap_bytes(),
        _ => 0, // BSWAP r16 is undefined; hardware gives zero.
    };
    ctx.set_reg(r, out);
    Ok(())
}

fn movbe(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let v = ctx.get(insn, 1, size)?;
    let out = match size {
        2 => (v as u16).swap_bytes() as u64,
        4 => (v as u32).swap_bytes() as u64,
        _ => v.swap_bytes(),
    };
    ctx.set(insn, 0, size, out)
}

fn lahf(ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    let f = ctx.cpu.flags.get() & 0xd5 | 2;
    ctx.set_reg(Register::AH, f);
    Ok(())
}

fn sahf(ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    let ah = ctx.reg(Register::AH);
    ctx.cpu.flags.set_masked(fl::CF | fl::PF | fl::AF | fl::ZF | fl::SF, ah);
    Ok(())
}

fn pushf(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    // VM and RF read as zero in the pushed image.
    let f = ctx.cpu.flags.get() & !(0x3_0000);
    let size = if insn.mnemonic() == Mnemonic::Pushf { 2 } else { 8 };
    ctx.push(size, f)
}

fn popf(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = if insn.mnemonic() == Mnemonic::Popf { 2 } else { 8 };
    let v = ctx.pop(size)?;
    let writable = fl::USER_WRITABLE & mask(size);
    ctx.cpu.flags.set_masked(writable, v);
    Ok(())
}

fn flag_bit(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let f = &mut ctx.cpu.flags;
    match insn.mnemonic() {
        Mnemonic::Clc => f.set_bits(fl::CF, false),
        Mnemonic::Stc => f.set_bits(fl::CF, true),
        Mnemonic::Cmc => {
            let c = f.cf();
            f.set_bits(fl::CF, !c)
        }
        Mnemonic::Cld => f.set_bits(fl::DF, false),
        _ => f.set_bits(fl::DF, true),
    }
    Ok(())
}

fn xlat(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    // iced gives XLAT a memory operand [rbx+al].
    let al = ctx.cpu.gpr[reg::RAX] & 0xff;
    let mut addr = ctx.cpu.gpr[reg::RBX].wrapping_add(al);
    if insn.memory_base().size() == 4 {
        // 32-bit address size: the sum wraps at 4 GiB.
        addr &= 0xffff_ffff;
    }
    match insn.memory_segment() {
        Register::FS => addr = addr.wrapping_add(ctx.cpu.fs_base),
        Register::GS => addr = addr.wrapping_add(ctx.cpu.gs_base),
        _ => {}
    }
    let v = ctx.load(addr, 1)?;
    ctx.set_reg(Register::AL, v);
    Ok(())
}

fn nop(_ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    Ok(())
}

/// Fences and prefetches: the interpreter executes in order; a real fence
/// keeps ordering with other guest threads.
fn fence(_ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    if matches!(insn.mnemonic(), Mnemonic::Mfence | Mnemonic::Lfence | Mnemonic::Sfence) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
    Ok(())
}
