//! MMX and the MMX-register forms of SSE, SSE2 and SSSE3: moves, lane
//! arithmetic, compares, logic, shifts, packs and unpacks, shuffles, the
//! conversions between MMX and XMM registers, MASKMOVQ and MOVNTQ.
//!
//! MMi is the low 64 bits (the significand) of physical x87 register i, as
//! `X87::st[i]` holds it. Every instruction here first raises #MF for an
//! x87 exception that is pending and unmasked, as a waiting x87 instruction
//! would; then, when it completes, it makes the x87 → MMX transition: TOP
//! becomes 0 and every register is tagged valid. A write to MMi also sets
//! bytes 8..9 (sign and exponent) of register i to all ones. EMMS, which
//! leaves MMX, is in `x87.rs`.
//!
//! The tag word is kept in its full 2-bit form, derived from the contents
//! as FXRSTOR does (`x87_host::full_tag`): after a transition every register
//! is non-empty, and FNSTENV on the host reports each one valid, zero or
//! special by what it holds, exactly as it does natively (the tests compare
//! against the host's own FNSTENV).
//!
//! The lane operations are those of `sse_int.rs` and `sse4.rs` on 64 bits:
//! lane-wise ones reuse their `zip`/`Lane` helpers on the zero-extended
//! operands and keep the low 64 bits; the ones that move lanes across the
//! register (unpack high, packs, horizontal ops, shuffles, PALIGNR) are
//! written here for the 64-bit shape.
//!
//! CVTPI2PS/CVTPI2PD/CVT(T)PS2PI/CVT(T)PD2PI run on the host's SSE unit under
//! the guest MXCSR (`sse_float.rs`), as the equivalent packed-dword
//! conversion of the two lanes concerned, the other lanes zero (so they
//! raise no flag). With a memory source, CVTPI2PS and CVTPI2PD make no
//! x87 → MMX transition and do not check for a pending x87 exception.
//!
//! Memory operands (m32, m64) need no alignment, except the m128 of
//! CVTPD2PI/CVTTPD2PI (#GP when misaligned).
//!
//! Limits: a MASKMOVQ whose selected bytes straddle a page that faults has
//! written the bytes before it (hardware writes all or none).

use std::arch::asm;

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::sse::float::{from_m128, on_host, raise, to_m128, FLAGS, MASKS};
use super::sse::int::{mask_of, zip, Lane};
use super::sse::{imm8, src as xmm_src, xmm_reg};
use super::sse4::sign;
use super::x87::host::{full_tag, sw};
use super::x87::si_code;
use super::Table;
use crate::engine::{Exit, FaultKind};
use crate::interp::{Ctx, Step};
use crate::state::X87;

#[cfg(test)]
#[path = "mmx_tests.rs"]
mod tests;

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    macro_rules! by_name {
        ($($m:ident => $h:expr),* $(,)?) => { $( t.set_mnemonic_mmx($m, $h); )* };
    }
    by_name! {
        // Moves
        Movd => movd_movq, Movq => movd_movq, Movq2dq => movq2dq, Movdq2q => movdq2q,
        Movntq => movntq, Maskmovq => maskmovq,
        // MMX
        Paddb => paddb, Paddw => paddw, Paddd => paddd, Paddq => paddq,
        Psubb => psubb, Psubw => psubw, Psubd => psubd, Psubq => psubq,
        Paddusb => paddusb, Paddusw => paddusw, Psubusb => psubusb, Psubusw => psubusw,
        Paddsb => paddsb, Paddsw => paddsw, Psubsb => psubsb, Psubsw => psubsw,
        Pcmpeqb => pcmpeqb, Pcmpeqw => pcmpeqw, Pcmpeqd => pcmpeqd,
        Pcmpgtb => pcmpgtb, Pcmpgtw => pcmpgtw, Pcmpgtd => pcmpgtd,
        Pand => pand, Pandn => pandn, Por => por, Pxor => pxor,
        Pmullw => pmullw, Pmulhw => pmulhw, Pmaddwd => pmaddwd,
        Psllw => psllw, Pslld => pslld, Psllq => psllq,
        Psrlw => psrlw, Psrld => psrld, Psrlq => psrlq,
        Psraw => psraw, Psrad => psrad,
        Punpcklbw => unpack_low::<u8>, Punpcklwd => unpack_low::<u16>, Punpckldq => unpack_low::<u32>,
        Punpckhbw => unpack_high::<u8>, Punpckhwd => unpack_high::<u16>, Punpckhdq => unpack_high::<u32>,
        Packsswb => packsswb, Packssdw => packssdw, Packuswb => packuswb,
        // SSE and SSE2 on MMX registers
        Pmulhuw => pmulhuw, Pmuludq => pmuludq, Psadbw => psadbw,
        Pavgb => pavgb, Pavgw => pavgw,
        Pminub => pminub, Pmaxub => pmaxub, Pminsw => pminsw, Pmaxsw => pmaxsw,
        Pmovmskb => pmovmskb, Pextrw => pextrw, Pinsrw => pinsrw, Pshufw => pshufw,
        Cvtpi2ps => cvtpi2ps, Cvtpi2pd => cvtpi2pd,
        Cvtps2pi => cvtps2pi, Cvttps2pi => cvttps2pi, Cvtpd2pi => cvtpd2pi, Cvttpd2pi => cvttpd2pi,
        // SSSE3 on MMX registers
        Pshufb => pshufb, Palignr => palignr,
        Phaddw => phaddw, Phaddd => phaddd, Phaddsw => phaddsw,
        Phsubw => phsubw, Phsubd => phsubd, Phsubsw => phsubsw,
        Pabsb => pabsb, Pabsw => pabsw, Pabsd => pabsd,
        Psignb => psignb, Psignw => psignw, Psignd => psignd,
        Pmaddubsw => pmaddubsw, Pmulhrsw => pmulhrsw,
    }
}

// ----- the MMX register file and the x87 -> MMX transition -----

/// Index 0..7 of an MMX register.
#[inline]
fn mm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::MM0 as usize) & 7
}

/// MMi: the significand of physical x87 register i.
#[inline]
fn read_mm(x: &X87, i: usize) -> u64 {
    let r = &x.st[i];
    u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]])
}

/// Write MMi: the significand, and all ones in sign and exponent.
#[inline]
fn write_mm(x: &mut X87, i: usize, v: u64) {
    x.st[i][..8].copy_from_slice(&v.to_le_bytes());
    x.st[i][8] = 0xff;
    x.st[i][9] = 0xff;
}

/// The x87 -> MMX transition every instruction here (but the memory forms
/// of CVTPI2PS/CVTPI2PD) makes on completion: TOP = 0, every register
/// non-empty, with its full tag derived from its contents.
#[inline]
fn transition(x: &mut X87) {
    x.fsw &= !0x3800;
    x.ftw = full_tag(0xff, &x.st);
}

/// Raise #MF for an x87 exception that is pending and unmasked (what an
/// MMX instruction does before it runs, as a waiting x87 instruction does).
#[inline]
fn check_pending(ctx: &mut Ctx<'_>) -> Step {
    let x = &mut ctx.cpu.x87;
    let pending = x.fsw & !x.fcw & sw::EXCEPTIONS;
    if pending != 0 {
        x.fsw |= sw::ES | sw::B;
        return Err(ctx.fault(FaultKind::FloatingPoint { code: si_code(pending) }));
    }
    Ok(())
}

/// Write MM register `r` and make the transition.
#[inline]
fn set_mm(ctx: &mut Ctx<'_>, r: Register, v: u64) {
    write_mm(&mut ctx.cpu.x87, mm_index(r), v);
    transition(&mut ctx.cpu.x87);
}

/// The MM register in operand `i`.
#[inline]
fn mm_op(ctx: &Ctx<'_>, insn: &Instruction, i: u32) -> u64 {
    read_mm(&ctx.cpu.x87, mm_index(insn.op_register(i)))
}

/// Source operand `i`: an MM register, or memory of the instruction's
/// memory size (m64, or m32 for PUNPCKL*), zero-extended.
#[inline]
fn mm_src(ctx: &mut Ctx<'_>, insn: &Instruction, i: u32) -> Result<u64, Exit> {
    match insn.op_kind(i) {
        OpKind::Register => Ok(mm_op(ctx, insn, i)),
        _ => {
            let a = ctx.ea(insn);
            ctx.load(a, Ctx::mem_size(insn))
        }
    }
}

/// `mm = f(mm, mm/m64)`, the common shape.
#[inline]
fn binary(ctx: &mut Ctx<'_>, insn: &Instruction, f: impl FnOnce(u64, u64) -> u64) -> Step {
    check_pending(ctx)?;
    let b = mm_src(ctx, insn, 1)?;
    let a = mm_op(ctx, insn, 0);
    set_mm(ctx, insn.op0_register(), f(a, b));
    Ok(())
}

/// Lane-wise `f(a[i], b[i])` on 64 bits, through the 128-bit helper.
#[inline]
fn zip64<T: Lane>(a: u64, b: u64, f: impl Fn(T, T) -> T) -> u64 {
    zip::<T>(a as u128, b as u128, f) as u64
}

/// A 64-bit vector from lane values `f(0)..f(n-1)`.
#[inline]
fn build64<T: Lane>(f: impl Fn(u32) -> T) -> u64 {
    (0..64 / T::BITS).fold(0, |r, i| r | (f(i).bits() as u64) << (i * T::BITS))
}

/// Lane `i` of a 64-bit vector.
#[inline]
fn lane<T: Lane>(v: u64, i: u32) -> T {
    T::lane(v as u128, i)
}

// ----- moves -----

/// MOVD/MOVQ: into an MM register from r/m32 (zero-extended), r/m64 or
/// mm/m64; out of one into r/m32, r/m64 or mm/m64.
fn movd_movq(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    check_pending(ctx)?;
    if insn.op0_kind() == OpKind::Register && insn.op0_register().is_mm() {
        let v = match insn.op1_kind() {
            OpKind::Register if insn.op1_register().is_mm() => mm_op(ctx, insn, 1),
            _ => {
                let size = Ctx::op_size(insn, 1);
                ctx.get(insn, 1, size)?
            }
        };
        set_mm(ctx, insn.op0_register(), v);
        return Ok(());
    }
    let v = mm_op(ctx, insn, 1);
    let size = Ctx::op_size(insn, 0);
    ctx.set(insn, 0, size, v)?;
    transition(&mut ctx.cpu.x87);
    Ok(())
}

/// MOVQ2DQ xmm, mm: zero-extended into the XMM register.
fn movq2dq(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    check_pending(ctx)?;
    ctx.cpu.xmm[xmm_reg(insn, 0)] = mm_op(ctx, insn, 1) as u128;
    transition(&mut ctx.cpu.x87);
    Ok(())
}

/// MOVDQ2Q mm, xmm: the low quadword.
fn movdq2q(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    check_pending(ctx)?;
    let v = ctx.cpu.xmm[xmm_reg(insn, 1)] as u64;
    set_mm(ctx, insn.op0_register(), v);
    Ok(())
}

/// MOVNTQ m64, mm: a plain store (the non-temporal hint is ignored).
fn movntq(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    check_pending(ctx)?;
    let v = mm_op(ctx, insn, 1);
    let a = ctx.ea(insn);
    ctx.store(a, 8, v)?;
    transition(&mut ctx.cpu.x87);
    Ok(())
}

/// MASKMOVQ mm1, mm2: byte i of mm1 to [RDI + i] (EDI with an address-size
/// prefix; DS or a segment override) when bit 7 of byte i of mm2 is set.
fn maskmovq(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    check_pending(ctx)?;
    let (v, m) = (mm_op(ctx, insn, 1), mm_op(ctx, insn, 2));
    let mut addr = ctx.cpu.gpr[crate::state::reg::RDI];
    if insn.op0_kind() == OpKind::MemorySegEDI {
        addr &= 0xffff_ffff;
    }
    addr = match insn.memory_segment() {
        Register::FS => addr.wrapping_add(ctx.cpu.fs_base),
        Register::GS => addr.wrapping_add(ctx.cpu.gs_base),
        _ => addr,
    };
    for i in 0..8 {
        if (m >> (8 * i + 7)) & 1 != 0 {
            ctx.store(addr.wrapping_add(i), 1, v >> (8 * i))?;
        }
    }
    transition(&mut ctx.cpu.x87);
    Ok(())
}

/// PMOVMSKB r32/r64, mm: the sign bit of each byte, zero-extended.
fn pmovmskb(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    check_pending(ctx)?;
    let v = mm_op(ctx, insn, 1);
    let m = (0..8).fold(0u64, |m, i| m | ((v >> (8 * i + 7)) & 1) << i);
    ctx.set_reg(insn.op0_register(), m);
    transition(&mut ctx.cpu.x87);
    Ok(())
}

/// PEXTRW r32/r64, mm, imm8: word imm8 & 3, zero-extended.
fn pextrw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    check_pending(ctx)?;
    let w = lane::<u16>(mm_op(ctx, insn, 1), imm8(insn) & 3) as u64;
    ctx.set_reg(insn.op0_register(), w);
    transition(&mut ctx.cpu.x87);
    Ok(())
}

/// PINSRW mm, r32/r64/m16, imm8: the low word into word imm8 & 3.
fn pinsrw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    check_pending(ctx)?;
    let w = ctx.get(insn, 1, 2)?;
    let sh = 16 * (imm8(insn) & 3);
    let d = mm_op(ctx, insn, 0);
    set_mm(ctx, insn.op0_register(), (d & !(0xffff << sh)) | (w << sh));
    Ok(())
}

// ----- lane arithmetic, compares, logic -----

/// Handlers for `op mm, mm/m64` whose result lane i is a function of lane
/// i of each operand (the tables are `sse_int::lane_table` and `sse4::ssse3_lane_table`).
macro_rules! lanewise {
    ($($name:ident: $t:ty = |$x:ident, $y:ident| $body:expr;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            binary(ctx, insn, |a, b| zip64::<$t>(a, b, |$x, $y| $body))
        }
    )*};
}

super::sse::int::lane_table!(lanewise);
super::sse4::ssse3_lane_table!(lanewise);

lanewise! {
    pabsb: i8 = |_x, y| y.wrapping_abs();
    pabsw: i16 = |_x, y| y.wrapping_abs();
    pabsd: i32 = |_x, y| y.wrapping_abs();
}

fn pand(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| a & b)
}
fn pandn(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| !a & b)
}
fn por(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| a | b)
}
fn pxor(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| a ^ b)
}

/// PMADDWD: each dword is the sum of the two products of signed words
/// (0x8000 * 0x8000 twice wraps to 0x80000000, as on hardware).
fn pmaddwd(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| {
        let p = |i: u32| lane::<i16>(a, i) as i32 * lane::<i16>(b, i) as i32;
        build64(|i| p(2 * i).wrapping_add(p(2 * i + 1)))
    })
}

/// PMADDUBSW: unsigned destination bytes times signed source bytes, each
/// adjacent pair of products summed with signed saturation.
fn pmaddubsw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| {
        let p = |j: u32| lane::<u8>(a, j) as i16 * lane::<i8>(b, j) as i16;
        build64(|i| p(2 * i).saturating_add(p(2 * i + 1)))
    })
}

/// PSADBW: the sum of the absolute byte differences, in the low word.
fn psadbw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| (0..8).map(|j| lane::<u8>(a, j).abs_diff(lane::<u8>(b, j)) as u64).sum())
}

// ----- shifts -----

/// Handlers for lane shifts by the imm8 or by the whole 64-bit mm/m64.
macro_rules! shifts {
    ($($name:ident: $t:ty = |$x:ident, $n:ident| $body:expr;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            check_pending(ctx)?;
            let $n = if insn.op1_kind() == OpKind::Immediate8 { imm8(insn) as u64 } else { mm_src(ctx, insn, 1)? };
            let a = mm_op(ctx, insn, 0);
            set_mm(ctx, insn.op0_register(), build64::<$t>(|i| { let $x = lane::<$t>(a, i); $body }));
            Ok(())
        }
    )*};
}

shifts! {
    // Logical shifts by the lane width or more give zero; arithmetic
    // right shifts fill with the sign.
    psllw: u16 = |x, n| if n >= 16 { 0 } else { x << n };
    pslld: u32 = |x, n| if n >= 32 { 0 } else { x << n };
    psllq: u64 = |x, n| if n >= 64 { 0 } else { x << n };
    psrlw: u16 = |x, n| if n >= 16 { 0 } else { x >> n };
    psrld: u32 = |x, n| if n >= 32 { 0 } else { x >> n };
    psrlq: u64 = |x, n| if n >= 64 { 0 } else { x >> n };
    psraw: i16 = |x, n| x >> n.min(15);
    psrad: i32 = |x, n| x >> n.min(31);
}

// ----- unpacks, packs, shuffles, horizontal ops -----

/// PUNPCKL*: interleave the low halves, destination first (the source is
/// mm or m32).
fn unpack_low<T: Lane>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| build64::<T>(|i| lane(if i % 2 == 0 { a } else { b }, i / 2)))
}

/// PUNPCKH*: interleave the high halves, destination first.
fn unpack_high<T: Lane>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let half = 32 / T::BITS;
    binary(ctx, insn, |a, b| build64::<T>(|i| lane(if i % 2 == 0 { a } else { b }, half + i / 2)))
}

/// PACKSSWB: signed words to signed bytes with saturation; the
/// destination's words give the low four bytes.
fn packsswb(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| build64(|i| lane::<i16>(if i < 4 { a } else { b }, i % 4).clamp(-128, 127) as i8))
}

/// PACKSSDW: signed dwords to signed words with saturation.
fn packssdw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| build64(|i| lane::<i32>(if i < 2 { a } else { b }, i % 2).clamp(-32768, 32767) as i16))
}

/// PACKUSWB: signed words to unsigned bytes with saturation.
fn packuswb(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| build64(|i| lane::<i16>(if i < 4 { a } else { b }, i % 4).clamp(0, 255) as u8))
}

/// PSHUFW: words of the source picked by the imm8, two bits each.
fn pshufw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let imm = imm8(insn);
    binary(ctx, insn, |_, b| build64(|i| lane::<u16>(b, (imm >> (2 * i)) & 3)))
}

/// PSHUFB: byte i is destination byte `src[i] & 7`, or zero when bit 7 of
/// `src[i]` is set.
fn pshufb(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| {
        build64(|i| {
            let s = lane::<u8>(b, i);
            if s & 0x80 != 0 {
                0
            } else {
                lane::<u8>(a, (s & 7) as u32)
            }
        })
    })
}

/// PALIGNR: the 16-byte concatenation destination:source shifted right by
/// imm8 bytes; its low 8 bytes (zero from a shift of 16 on).
fn palignr(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let n = imm8(insn);
    binary(ctx, insn, |a, b| if n >= 16 { 0 } else { ((a as u128) << 64 | b as u128).wrapping_shr(8 * n) as u64 })
}

/// Horizontal pairs: the low half of the result is `f` of adjacent lanes
/// of the destination, the high half of adjacent lanes of the source.
#[inline]
fn horizontal<T: Lane>(a: u64, b: u64, f: impl Fn(T, T) -> T) -> u64 {
    let half = 32 / T::BITS;
    build64(|i| {
        let (v, j) = if i < half { (a, 2 * i) } else { (b, 2 * (i - half)) };
        f(lane(v, j), lane(v, j + 1))
    })
}

/// Handlers for the horizontal adds and subtracts.
macro_rules! horizontals {
    ($($name:ident: $t:ty = |$x:ident, $y:ident| $body:expr;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            binary(ctx, insn, |a, b| horizontal::<$t>(a, b, |$x, $y| $body))
        }
    )*};
}

super::sse4::horizontal_table!(horizontals);

// ----- conversions, on the host's SSE unit -----

/// Run one packed conversion `$mn xmm, xmm` on the host under the guest
/// MXCSR: `(result, flags)`.
macro_rules! convert {
    ($mn:literal, $csr:expr, $v:expr) => {{
        let mut x = to_m128(0);
        let flags = on_host!($csr, [concat!($mn, " {x}, {y}")], x = inout(xmm_reg) x, y = in(xmm_reg) to_m128($v),);
        (from_m128(x), flags)
    }};
}

/// CVTPI2PS xmm, mm/m64: two dwords to singles in the low half; the high
/// half of the destination is kept.
fn cvtpi2ps(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let from_mm = insn.op1_kind() == OpKind::Register;
    if from_mm {
        check_pending(ctx)?;
    }
    let b = mm_src(ctx, insn, 1)?;
    let (r, flags) = convert!("cvtdq2ps", ctx.cpu.mxcsr, b as u128);
    raise(ctx, flags)?;
    let d = &mut ctx.cpu.xmm[xmm_reg(insn, 0)];
    *d = (*d & !(u64::MAX as u128)) | (r & u64::MAX as u128);
    if from_mm {
        transition(&mut ctx.cpu.x87);
    }
    Ok(())
}

/// CVTPI2PD xmm, mm/m64: two dwords to doubles (exact).
fn cvtpi2pd(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let from_mm = insn.op1_kind() == OpKind::Register;
    if from_mm {
        check_pending(ctx)?;
    }
    let b = mm_src(ctx, insn, 1)?;
    let (r, flags) = convert!("cvtdq2pd", ctx.cpu.mxcsr, b as u128);
    raise(ctx, flags)?;
    ctx.cpu.xmm[xmm_reg(insn, 0)] = r;
    if from_mm {
        transition(&mut ctx.cpu.x87);
    }
    Ok(())
}

/// Handlers for CVT(T)PS2PI mm, xmm/m64 and CVT(T)PD2PI mm, xmm/m128: the
/// two dwords of the packed-dword conversion of the source's low `$keep`
/// bits (the rest zero, which raises nothing).
macro_rules! to_mm_ops {
    ($($name:ident = $mn:literal, $keep:expr;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            check_pending(ctx)?;
            let b = xmm_src(ctx, insn, 1)? & $keep;
            let (r, flags) = convert!($mn, ctx.cpu.mxcsr, b);
            raise(ctx, flags)?;
            set_mm(ctx, insn.op0_register(), r as u64);
            Ok(())
        }
    )*};
}

to_mm_ops! {
    cvtps2pi = "cvtps2dq", u64::MAX as u128;
    cvttps2pi = "cvttps2dq", u64::MAX as u128;
    cvtpd2pi = "cvtpd2dq", u128::MAX;
    cvttpd2pi = "cvttpd2dq", u128::MAX;
}
