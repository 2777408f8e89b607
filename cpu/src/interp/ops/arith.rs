//! Integer arithmetic and logic: ADD..CMP, TEST, INC/DEC, NEG/NOT,
//! MUL/IMUL/DIV/IDIV.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::vendor;
use super::Table;
use crate::engine::FaultKind;
use crate::interp::{Ctx, Step};
use crate::state::{fl, mask, FlagOp};

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    t.set_mnemonic(Add, alu::<ADD>);
    t.set_mnemonic(Or, alu::<OR>);
    t.set_mnemonic(Adc, alu::<ADC>);
    t.set_mnemonic(Sbb, alu::<SBB>);
    t.set_mnemonic(And, alu::<AND>);
    t.set_mnemonic(Sub, alu::<SUB>);
    t.set_mnemonic(Xor, alu::<XOR>);
    t.set_mnemonic(Cmp, alu::<CMP>);
    t.set_mnemonic(Test, alu::<TEST>);
    t.set_mnemonic(Inc, inc_dec::<false>);
    t.set_mnemonic(Dec, inc_dec::<true>);
    t.set_mnemonic(Neg, neg);
    t.set_mnemonic(Not, not);
    t.set_mnemonic(Mul, mul);
    t.set_mnemonic(Imul, imul);
    t.set_mnemonic(Div, div::<false>);
    t.set_mnemonic(Idiv, div::<true>);
}

const ADD: u8 = 0;
const OR: u8 = 1;
const ADC: u8 = 2;
const SBB: u8 = 3;
const AND: u8 = 4;
const SUB: u8 = 5;
const XOR: u8 = 6;
const CMP: u8 = 7;
const TEST: u8 = 8;

/// The two-operand ALU group: `op0 = op0 OP op1`, flags from the result.
fn alu<const OP: u8>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let b = ctx.get(insn, 1, size)?;
    let m = mask(size);
    if insn.has_lock_prefix() {
        return locked_alu::<OP>(ctx, insn, size, b);
    }
    let a = ctx.get(insn, 0, size)?;
    let (res, op, cin) = match OP {
        ADD => (a.wrapping_add(b), FlagOp::Add, false),
        ADC => {
            let c = ctx.cpu.flags.cf();
            (a.wrapping_add(b).wrapping_add(c as u64), FlagOp::Add, c)
        }
        SUB | CMP => (a.wrapping_sub(b), FlagOp::Sub, false),
        SBB => {
            let c = ctx.cpu.flags.cf();
            (a.wrapping_sub(b).wrapping_sub(c as u64), FlagOp::Sub, c)
        }
        OR => (a | b, FlagOp::Logic, false),
        AND | TEST => (a & b, FlagOp::Logic, false),
        _ => (a ^ b, FlagOp::Logic, false),
    };
    let res = res & m;
    ctx.cpu.flags.set_lazy(op, size, a, b, res, cin);
    if OP != CMP && OP != TEST {
        ctx.set(insn, 0, size, res)?;
    }
    Ok(())
}

/// A LOCK-prefixed ALU operation on memory: atomic on the host.
fn locked_alu<const OP: u8>(ctx: &mut Ctx<'_>, insn: &Instruction, size: u8, b: u64) -> Step {
    let c = ctx.cpu.flags.cf() as u64;
    let f = |a: u64| match OP {
        ADD => a.wrapping_add(b),
        ADC => a.wrapping_add(b).wrapping_add(c),
        SUB => a.wrapping_sub(b),
        SBB => a.wrapping_sub(b).wrapping_sub(c),
        OR => a | b,
        AND => a & b,
        _ => a ^ b,
    };
    let a = ctx.rmw(insn, size, true, f)?;
    let res = f(a) & mask(size);
    let (op, cin) = match OP {
        ADD => (FlagOp::Add, false),
        ADC => (FlagOp::Add, c != 0),
        SUB => (FlagOp::Sub, false),
        SBB => (FlagOp::Sub, c != 0),
        _ => (FlagOp::Logic, false),
    };
    ctx.cpu.flags.set_lazy(op, size, a, b, res, cin);
    Ok(())
}

fn inc_dec<const DEC: bool>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let a = ctx.rmw(insn, size, insn.has_lock_prefix(), |a| if DEC { a.wrapping_sub(1) } else { a.wrapping_add(1) })?;
    let res = if DEC { a.wrapping_sub(1) } else { a.wrapping_add(1) } & mask(size);
    ctx.cpu.flags.set_lazy(if DEC { FlagOp::Dec } else { FlagOp::Inc }, size, a, 1, res, false);
    Ok(())
}

fn neg(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let b = ctx.rmw(insn, size, insn.has_lock_prefix(), |b| 0u64.wrapping_sub(b))?;
    let res = 0u64.wrapping_sub(b) & mask(size);
    ctx.cpu.flags.set_lazy(FlagOp::Sub, size, 0, b, res, false);
    Ok(())
}

fn not(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    ctx.rmw(insn, size, insn.has_lock_prefix(), |a| !a)?;
    Ok(())
}

/// Flags after a multiply: CF = OF = `overflow`; the others as the
/// vendor's CPUs leave them (`vendor::multiply`).
fn set_mul_flags(ctx: &mut Ctx<'_>, size: u8, low: u64, overflow: bool) {
    let f = vendor::multiply(ctx.cpu.vendor, size, low, overflow, ctx.cpu.flags.get());
    ctx.cpu.flags.set_masked(fl::STATUS, f);
}

/// Sign-extend the low `size` bytes of `v`.
#[inline]
pub(crate) fn sext(v: u64, size: u8) -> i64 {
    let shift = 64 - size as u32 * 8;
    ((v << shift) as i64) >> shift
}

/// Write the (rDX:rAX or AH:AL) register pair for a one-operand MUL/DIV.
fn set_pair(ctx: &mut Ctx<'_>, size: u8, lo: u64, hi: u64) {
    use crate::state::reg::{RAX, RDX};
    let m = mask(size);
    match size {
        1 => {
            let ax = (lo & 0xff) | ((hi & 0xff) << 8);
            ctx.cpu.gpr[RAX] = (ctx.cpu.gpr[RAX] & !0xffff) | ax;
        }
        2 => {
            ctx.cpu.gpr[RAX] = (ctx.cpu.gpr[RAX] & !m) | (lo & m);
            ctx.cpu.gpr[RDX] = (ctx.cpu.gpr[RDX] & !m) | (hi & m);
        }
        _ => {
            ctx.cpu.gpr[RAX] = lo & m;
            ctx.cpu.gpr[RDX] = hi & m;
        }
    }
}

/// The dividend (or multiplicand) pair for one-operand forms, as u128.
fn get_pair(ctx: &Ctx<'_>, size: u8) -> (u64, u64) {
    use crate::state::reg::{RAX, RDX};
    let m = mask(size);
    match size {
        1 => (ctx.cpu.gpr[RAX] & 0xff, (ctx.cpu.gpr[RAX] >> 8) & 0xff),
        _ => (ctx.cpu.gpr[RAX] & m, ctx.cpu.gpr[RDX] & m),
    }
}

fn mul(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let b = ctx.get(insn, 0, size)? as u128;
    let a = get_pair(ctx, size).0 as u128;
    let p = a * b;
    let bits = size as u32 * 8;
    let lo = p as u64 & mask(size);
    let hi = (p >> bits) as u64 & mask(size);
    set_pair(ctx, size, lo, hi);
    set_mul_flags(ctx, size, lo, hi != 0);
    Ok(())
}

fn imul(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let bits = size as u32 * 8;
    match insn.op_count() {
        1 => {
            let b = sext(ctx.get(insn, 0, size)?, size) as i128;
            let a = sext(get_pair(ctx, size).0, size) as i128;
            let p = a * b;
            let lo = p as u64 & mask(size);
            let hi = (p >> bits) as u64 & mask(size);
            set_pair(ctx, size, lo, hi);
            set_mul_flags(ctx, size, lo, p != sext(lo, size) as i128);
        }
        n => {
            // IMUL r, r/m (a = r) or IMUL r, r/m, imm (a = r/m, b = imm).
            let (a, b) = if n == 2 {
                (ctx.get(insn, 0, size)?, ctx.get(insn, 1, size)?)
            } else {
                debug_assert!(matches!(
                    insn.op2_kind(),
                    OpKind::Immediate8to16
                        | OpKind::Immediate8to32
                        | OpKind::Immediate8to64
                        | OpKind::Immediate16
                        | OpKind::Immediate32
                        | OpKind::Immediate32to64
                ));
                (ctx.get(insn, 1, size)?, ctx.get(insn, 2, size)?)
            };
            let p = sext(a, size) as i128 * sext(b, size) as i128;
            let lo = p as u64 & mask(size);
            ctx.set(insn, 0, size, lo)?;
            set_mul_flags(ctx, size, lo, p != sext(lo, size) as i128);
        }
    }
    Ok(())
}

fn div<const SIGNED: bool>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let bits = size as u32 * 8;
    let d = ctx.get(insn, 0, size)?;
    if d == 0 {
        return Err(ctx.fault(FaultKind::Divide));
    }
    let (lo, hi) = get_pair(ctx, size);
    let (q, r) = if SIGNED {
        let n = ((((hi as u128) << bits) | lo as u128) as i128) << (128 - 2 * bits) >> (128 - 2 * bits);
        let d = sext(d, size) as i128;
        let q = n.wrapping_div(d);
        let r = n.wrapping_rem(d);
        let min = -(1i128 << (bits - 1));
        let max = (1i128 << (bits - 1)) - 1;
        if q < min || q > max || (n == i128::MIN && d == -1) {
            return Err(ctx.fault(FaultKind::Divide));
        }
        (q as u64, r as u64)
    } else {
        let n = ((hi as u128) << bits) | lo as u128;
        let q = n / d as u128;
        if q >> bits != 0 {
            return Err(ctx.fault(FaultKind::Divide));
        }
        (q as u64, (n % d as u128) as u64)
    };
    set_pair(ctx, size, q & mask(size), r & mask(size));
    let f = vendor::divide(ctx.cpu.vendor, ctx.cpu.flags.get());
    ctx.cpu.flags.set_masked(fl::STATUS, f);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sext;

    #[test]
    fn sign_extension() {
        assert_eq!(sext(0x80, 1), -128);
        assert_eq!(sext(0x7fff, 2), 0x7fff);
        assert_eq!(sext(0xffff_ffff, 4), -1);
        assert_eq!(sext(u64::MAX, 8), -1);
    }
}
