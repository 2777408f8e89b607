//! SSE and SSE2 (legacy encoding, XMM forms only): data movement and MXCSR
//! here; integer lane operations in `sse_int.rs`; floating point, which runs
//! on the host's own SSE unit under the guest's MXCSR, in `sse_float.rs`.
//!
//! Operand rules shared by the family: a 128-bit memory operand of a legacy
//! SSE instruction must be 16-byte aligned (#GP otherwise) except for
//! MOVUPS/MOVUPD/MOVDQU; 32- and 64-bit memory operands have no alignment
//! requirement.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::Table;
use crate::engine::{Exit, FaultKind};
use crate::interp::ctx::xmm_index;
use crate::interp::{Ctx, Step};

#[path = "sse_float.rs"]
pub(super) mod float;
#[path = "sse_int.rs"]
pub(super) mod int;
#[cfg(test)]
#[path = "sse_tests.rs"]
pub(super) mod tests;

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    t.set_mnemonics(&[Movaps, Movapd, Movdqa, Movntps, Movntpd, Movntdq], mov_xmm::<true>);
    t.set_mnemonics(&[Movups, Movupd, Movdqu], mov_xmm::<false>);
    t.set_mnemonic(Movss, mov_scalar::<4>);
    // Not `set_mnemonic(Movsd)`: that would also take the string MOVSD.
    t.set(&[Code::Movsd_xmm_xmmm64, Code::Movsd_xmmm64_xmm], mov_scalar::<8>);
    t.set_mnemonics(&[Movd, Movq], movd_movq);
    t.set_mnemonics(&[Movlps, Movlpd], mov_low_half);
    t.set_mnemonics(&[Movhps, Movhpd], mov_high_half);
    t.set_mnemonic(Movhlps, movhlps);
    t.set_mnemonic(Movlhps, movlhps);
    t.set_mnemonic(Movnti, movnti);
    t.set_mnemonic(Movmskps, movmsk::<4>);
    t.set_mnemonic(Movmskpd, movmsk::<8>);
    t.set_mnemonic(Pmovmskb, movmsk::<1>);
    t.set_mnemonic(Ldmxcsr, ldmxcsr);
    t.set_mnemonic(Stmxcsr, stmxcsr);
    int::register(t);
    float::register(t);
}

// ----- operand helpers shared by the family -----

/// Index of the XMM register in operand `i`.
#[inline]
pub(super) fn xmm_reg(insn: &Instruction, i: u32) -> usize {
    xmm_index(insn.op_register(i))
}

/// Source operand `i` as 128 bits: an XMM register, or memory of the
/// instruction's memory size (16 bytes must be aligned; 4- and 8-byte
/// scalar and half operands come zero-extended).
#[inline]
pub(super) fn src(ctx: &mut Ctx<'_>, insn: &Instruction, i: u32) -> Result<u128, Exit> {
    match insn.op_kind(i) {
        OpKind::Register => Ok(ctx.cpu.xmm[xmm_reg(insn, i)]),
        _ => {
            let a = ctx.ea(insn);
            match Ctx::mem_size(insn) {
                16 => {
                    ctx.require_aligned(a, 16)?;
                    ctx.load128(a)
                }
                s => Ok(ctx.load(a, s)? as u128),
            }
        }
    }
}

/// The imm8 of an instruction (its last operand).
#[inline]
pub(super) fn imm8(insn: &Instruction) -> u32 {
    insn.immediate8() as u32
}

/// `dst = f(dst, src)` for the common `op xmm, xmm/m128` shape.
#[inline]
pub(super) fn binary(ctx: &mut Ctx<'_>, insn: &Instruction, f: impl FnOnce(u128, u128) -> u128) -> Step {
    let b = src(ctx, insn, 1)?;
    let d = xmm_reg(insn, 0);
    ctx.cpu.xmm[d] = f(ctx.cpu.xmm[d], b);
    Ok(())
}

// ----- moves -----

/// MOVAPS/MOVAPD/MOVDQA and the non-temporal stores (`ALIGNED`), or
/// MOVUPS/MOVUPD/MOVDQU: a 128-bit copy.
fn mov_xmm<const ALIGNED: bool>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let v = if ALIGNED { ctx.get_xmm_aligned(insn, 1)? } else { ctx.get_xmm(insn, 1)? };
    if ALIGNED && insn.op0_kind() == OpKind::Memory {
        let a = ctx.ea(insn);
        ctx.require_aligned(a, 16)?;
    }
    ctx.set_xmm(insn, 0, v)
}

/// MOVSS/MOVSD: register to register replaces the low lane only; a load
/// zeroes the rest of the register; a store writes the low lane.
fn mov_scalar<const BYTES: u8>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let lane: u128 = if BYTES == 4 { 0xffff_ffff } else { u64::MAX as u128 };
    match (insn.op0_kind(), insn.op1_kind()) {
        (OpKind::Register, OpKind::Register) => {
            let s = ctx.cpu.xmm[xmm_reg(insn, 1)];
            let d = &mut ctx.cpu.xmm[xmm_reg(insn, 0)];
            *d = (*d & !lane) | (s & lane);
            Ok(())
        }
        (OpKind::Register, _) => {
            let a = ctx.ea(insn);
            ctx.cpu.xmm[xmm_reg(insn, 0)] = ctx.load(a, BYTES)? as u128;
            Ok(())
        }
        _ => {
            let a = ctx.ea(insn);
            let v = ctx.cpu.xmm[xmm_reg(insn, 1)] as u64;
            ctx.store(a, BYTES, v)
        }
    }
}

/// MOVD/MOVQ in all their XMM forms: into an XMM register the value is
/// zero-extended to 128 bits; out of one the low 32 or 64 bits are written.
fn movd_movq(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    if insn.op0_kind() == OpKind::Register && insn.op0_register().is_xmm() {
        let size = if insn.code() == Code::Movd_xmm_rm32 { 4 } else { 8 };
        let v = ctx.get_xmm_low(insn, 1, size)?;
        ctx.cpu.xmm[xmm_reg(insn, 0)] = v as u128;
        Ok(())
    } else {
        let size = Ctx::op_size(insn, 0);
        let v = ctx.cpu.xmm[xmm_reg(insn, 1)] as u64;
        ctx.set(insn, 0, size, v)
    }
}

const LOW: u128 = u64::MAX as u128;

/// MOVLPS/MOVLPD: load into, or store from, the low 64 bits.
fn mov_low_half(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let a = ctx.ea(insn);
    if insn.op0_kind() == OpKind::Memory {
        let v = ctx.cpu.xmm[xmm_reg(insn, 1)] as u64;
        return ctx.store(a, 8, v);
    }
    let v = ctx.load(a, 8)? as u128;
    let d = &mut ctx.cpu.xmm[xmm_reg(insn, 0)];
    *d = (*d & !LOW) | v;
    Ok(())
}

/// MOVHPS/MOVHPD: load into, or store from, the high 64 bits.
fn mov_high_half(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let a = ctx.ea(insn);
    if insn.op0_kind() == OpKind::Memory {
        let v = (ctx.cpu.xmm[xmm_reg(insn, 1)] >> 64) as u64;
        return ctx.store(a, 8, v);
    }
    let v = ctx.load(a, 8)? as u128;
    let d = &mut ctx.cpu.xmm[xmm_reg(insn, 0)];
    *d = (*d & LOW) | (v << 64);
    Ok(())
}

/// MOVHLPS: the source's high half into the destination's low half.
fn movhlps(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let s = ctx.cpu.xmm[xmm_reg(insn, 1)];
    let d = &mut ctx.cpu.xmm[xmm_reg(insn, 0)];
    *d = (*d & !LOW) | (s >> 64);
    Ok(())
}

/// MOVLHPS: the source's low half into the destination's high half.
fn movlhps(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let s = ctx.cpu.xmm[xmm_reg(insn, 1)];
    let d = &mut ctx.cpu.xmm[xmm_reg(insn, 0)];
    *d = (*d & LOW) | (s << 64);
    Ok(())
}

/// MOVNTI: a plain store of a general-purpose register.
fn movnti(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::op_size(insn, 1);
    let v = ctx.get(insn, 1, size)?;
    ctx.set(insn, 0, size, v)
}

/// MOVMSKPS (`LANE` 4), MOVMSKPD (8), PMOVMSKB (1): the sign bit of each
/// lane, zero-extended into a general-purpose register.
fn movmsk<const LANE: u32>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let v = ctx.cpu.xmm[xmm_reg(insn, 1)];
    let bits = LANE * 8;
    let m = (0..16 / LANE).fold(0u64, |m, i| m | (((v >> (i * bits + bits - 1)) & 1) as u64) << i);
    ctx.set_reg(insn.op0_register(), m);
    Ok(())
}

// ----- MXCSR -----

pub(super) fn ldmxcsr(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let a = ctx.ea(insn);
    let v = ctx.load(a, 4)? as u32;
    // The bits the host's MXCSR_MASK allows (the one FXSAVE reports; on
    // AMD it includes bit 17, the misaligned-SSE mask).
    if v & !super::x87::host::mxcsr_mask() != 0 {
        return Err(ctx.fault(FaultKind::GeneralProtection));
    }
    ctx.cpu.mxcsr = v;
    Ok(())
}

pub(super) fn stmxcsr(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let a = ctx.ea(insn);
    let v = ctx.cpu.mxcsr as u64;
    ctx.store(a, 4, v)
}
