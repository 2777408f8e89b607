//! SSE2 integer lane operations on XMM registers: arithmetic, compares,
//! logic, shifts, unpacks, packs, shuffles, word insert/extract. Each is a
//! function of lane values, written once in a table below.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{binary, imm8, src, xmm_reg, Table};
use crate::interp::{Ctx, Step};

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    macro_rules! by_name {
        ($($m:ident => $h:expr),* $(,)?) => { $( t.set_mnemonic($m, $h); )* };
    }
    by_name! {
        Paddb => paddb, Paddw => paddw, Paddd => paddd, Paddq => paddq,
        Psubb => psubb, Psubw => psubw, Psubd => psubd, Psubq => psubq,
        Paddusb => paddusb, Paddusw => paddusw, Psubusb => psubusb, Psubusw => psubusw,
        Paddsb => paddsb, Paddsw => paddsw, Psubsb => psubsb, Psubsw => psubsw,
        Pcmpeqb => pcmpeqb, Pcmpeqw => pcmpeqw, Pcmpeqd => pcmpeqd,
        Pcmpgtb => pcmpgtb, Pcmpgtw => pcmpgtw, Pcmpgtd => pcmpgtd,
        Pminub => pminub, Pmaxub => pmaxub, Pminsw => pminsw, Pmaxsw => pmaxsw,
        Pavgb => pavgb, Pavgw => pavgw,
        Pmullw => pmullw, Pmulhw => pmulhw, Pmulhuw => pmulhuw, Pmuludq => pmuludq,
        Pmaddwd => pmaddwd, Psadbw => psadbw,
        Psllw => psllw, Pslld => pslld, Psllq => psllq,
        Psrlw => psrlw, Psrld => psrld, Psrlq => psrlq,
        Psraw => psraw, Psrad => psrad,
        Pslldq => pslldq, Psrldq => psrldq,
        Punpcklbw => unpack_low::<u8>, Punpcklwd => unpack_low::<u16>,
        Punpckldq => unpack_low::<u32>, Punpcklqdq => unpack_low::<u64>,
        Punpckhbw => unpack_high::<u8>, Punpckhwd => unpack_high::<u16>,
        Punpckhdq => unpack_high::<u32>, Punpckhqdq => unpack_high::<u64>,
        Unpcklps => unpack_low::<u32>, Unpcklpd => unpack_low::<u64>,
        Unpckhps => unpack_high::<u32>, Unpckhpd => unpack_high::<u64>,
        Packsswb => packsswb, Packssdw => packssdw, Packuswb => packuswb,
        Pshufd => pshufd, Pshuflw => pshuflw, Pshufhw => pshufhw,
        Shufps => shufps, Shufpd => shufpd,
        Pextrw => pextrw, Pinsrw => pinsrw,
    }
    // The float logic forms are the same bit operations.
    t.set_mnemonics(&[Pand, Andps, Andpd], bitwise_and);
    t.set_mnemonics(&[Pandn, Andnps, Andnpd], bitwise_andn);
    t.set_mnemonics(&[Por, Orps, Orpd], bitwise_or);
    t.set_mnemonics(&[Pxor, Xorps, Xorpd], bitwise_xor);
}

/// A lane type: one of the unsigned or signed 8..64-bit integers.
pub(in crate::interp::ops) trait Lane: Copy {
    const BITS: u32;
    /// Lane `i` of `v`.
    fn lane(v: u128, i: u32) -> Self;
    /// The lane's bits, zero-extended.
    fn bits(self) -> u128;
}

macro_rules! lanes {
    ($($t:ty => $u:ty),*) => {$(
        impl Lane for $t {
            const BITS: u32 = <$t>::BITS;
            #[inline]
            fn lane(v: u128, i: u32) -> Self { (v >> (i * Self::BITS)) as $t }
            #[inline]
            fn bits(self) -> u128 { self as $u as u128 }
        }
    )*};
}
lanes!(u8 => u8, u16 => u16, u32 => u32, u64 => u64, i8 => u8, i16 => u16, i32 => u32, i64 => u64);

/// Build a vector from lane values `f(0)..f(n-1)`.
#[inline]
pub(in crate::interp::ops) fn build<T: Lane>(f: impl Fn(u32) -> T) -> u128 {
    (0..128 / T::BITS).fold(0, |r, i| r | f(i).bits() << (i * T::BITS))
}

/// Lane-wise `f(a[i], b[i])`.
#[inline]
pub(in crate::interp::ops) fn zip<T: Lane>(a: u128, b: u128, f: impl Fn(T, T) -> T) -> u128 {
    build(|i| f(T::lane(a, i), T::lane(b, i)))
}

/// Handlers for `op xmm, xmm/m128` whose result lane i is a function of
/// lane i of each operand.
macro_rules! lanewise {
    ($($name:ident: $t:ty = |$x:ident, $y:ident| $body:expr;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            binary(ctx, insn, |a, b| zip::<$t>(a, b, |$x, $y| $body))
        }
    )*};
}

/// All ones when `c`, else zero, as a lane of type `T`.
pub(in crate::interp::ops) fn mask_of<T: Lane>(c: bool) -> T {
    T::lane(if c { u128::MAX } else { 0 }, 0)
}

/// The SSE2 lane-wise integer operations, written once: `lane_table!(m)`
/// invokes macro `m` with the table, which generates handlers for the XMM
/// forms here and for the MMX forms in `mmx.rs`.
macro_rules! lane_table {
    ($callback:ident) => {
        $callback! {
            paddb: u8 = |x, y| x.wrapping_add(y);
            paddw: u16 = |x, y| x.wrapping_add(y);
            paddd: u32 = |x, y| x.wrapping_add(y);
            paddq: u64 = |x, y| x.wrapping_add(y);
            psubb: u8 = |x, y| x.wrapping_sub(y);
            psubw: u16 = |x, y| x.wrapping_sub(y);
            psubd: u32 = |x, y| x.wrapping_sub(y);
            psubq: u64 = |x, y| x.wrapping_sub(y);
            paddusb: u8 = |x, y| x.saturating_add(y);
            paddusw: u16 = |x, y| x.saturating_add(y);
            psubusb: u8 = |x, y| x.saturating_sub(y);
            psubusw: u16 = |x, y| x.saturating_sub(y);
            paddsb: i8 = |x, y| x.saturating_add(y);
            paddsw: i16 = |x, y| x.saturating_add(y);
            psubsb: i8 = |x, y| x.saturating_sub(y);
            psubsw: i16 = |x, y| x.saturating_sub(y);
            pcmpeqb: u8 = |x, y| mask_of(x == y);
            pcmpeqw: u16 = |x, y| mask_of(x == y);
            pcmpeqd: u32 = |x, y| mask_of(x == y);
            pcmpgtb: i8 = |x, y| mask_of(x > y);
            pcmpgtw: i16 = |x, y| mask_of(x > y);
            pcmpgtd: i32 = |x, y| mask_of(x > y);
            pminub: u8 = |x, y| x.min(y);
            pmaxub: u8 = |x, y| x.max(y);
            pminsw: i16 = |x, y| x.min(y);
            pmaxsw: i16 = |x, y| x.max(y);
            pavgb: u8 = |x, y| ((x as u16 + y as u16 + 1) >> 1) as u8;
            pavgw: u16 = |x, y| ((x as u32 + y as u32 + 1) >> 1) as u16;
            pmullw: u16 = |x, y| x.wrapping_mul(y);
            pmulhw: i16 = |x, y| ((x as i32 * y as i32) >> 16) as i16;
            pmulhuw: u16 = |x, y| ((x as u32 * y as u32) >> 16) as u16;
            pmuludq: u64 = |x, y| (x as u32 as u64) * (y as u32 as u64);
        }
    };
}
pub(in crate::interp::ops) use lane_table;

lane_table!(lanewise);

fn bitwise_and(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| a & b)
}
fn bitwise_andn(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| !a & b)
}
fn bitwise_or(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| a | b)
}
fn bitwise_xor(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| a ^ b)
}

/// PMADDWD: each 32-bit lane is the sum of the two products of signed
/// words (0x8000 * 0x8000 twice wraps to 0x80000000, as on hardware).
fn pmaddwd(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| {
        let p = |i: u32| i16::lane(a, i) as i32 * i16::lane(b, i) as i32;
        build(|i| p(2 * i).wrapping_add(p(2 * i + 1)))
    })
}

/// PSADBW: per 64-bit half, the sum of absolute byte differences.
fn psadbw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| {
        build(|half: u32| {
            (0..8).map(|j| u8::lane(a, half * 8 + j).abs_diff(u8::lane(b, half * 8 + j)) as u64).sum::<u64>()
        })
    })
}

// ----- shifts -----

/// The shift count: the imm8, or the low 64 bits of the XMM/m128 source.
fn shift_count(ctx: &mut Ctx<'_>, insn: &Instruction) -> Result<u64, crate::engine::Exit> {
    if insn.op1_kind() == OpKind::Immediate8 {
        Ok(imm8(insn) as u64)
    } else {
        Ok(src(ctx, insn, 1)? as u64)
    }
}

/// Handlers for lane shifts by a count that applies to every lane.
macro_rules! shifts {
    ($($name:ident: $t:ty = |$x:ident, $n:ident| $body:expr;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            let $n = shift_count(ctx, insn)?;
            let d = xmm_reg(insn, 0);
            let a = ctx.cpu.xmm[d];
            ctx.cpu.xmm[d] = build::<$t>(|i| { let $x = <$t>::lane(a, i); $body });
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

/// PSLLDQ: shift the whole register left by imm8 bytes (16 or more: zero).
fn pslldq(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let n = imm8(insn);
    let d = &mut ctx.cpu.xmm[xmm_reg(insn, 0)];
    *d = if n >= 16 { 0 } else { *d << (8 * n) };
    Ok(())
}

/// PSRLDQ: shift the whole register right by imm8 bytes.
fn psrldq(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let n = imm8(insn);
    let d = &mut ctx.cpu.xmm[xmm_reg(insn, 0)];
    *d = if n >= 16 { 0 } else { *d >> (8 * n) };
    Ok(())
}

// ----- unpacks, packs, shuffles -----

/// PUNPCKL* / UNPCKLP*: interleave the low halves, destination first.
fn unpack_low<T: Lane>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| build::<T>(|i| T::lane(if i % 2 == 0 { a } else { b }, i / 2)))
}

/// PUNPCKH* / UNPCKHP*: interleave the high halves, destination first.
fn unpack_high<T: Lane>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let half = 64 / T::BITS;
    binary(ctx, insn, |a, b| build::<T>(|i| T::lane(if i % 2 == 0 { a } else { b }, half + i / 2)))
}

/// PACKSSWB: signed words to signed bytes with saturation; destination's
/// words give the low eight bytes.
fn packsswb(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| build(|i| i16::lane(if i < 8 { a } else { b }, i % 8).clamp(-128, 127) as i8))
}

/// PACKSSDW: signed dwords to signed words with saturation.
fn packssdw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| build(|i| i32::lane(if i < 4 { a } else { b }, i % 4).clamp(-32768, 32767) as i16))
}

/// PACKUSWB: signed words to unsigned bytes with saturation.
fn packuswb(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| build(|i| i16::lane(if i < 8 { a } else { b }, i % 8).clamp(0, 255) as u8))
}

/// Lane `i` of a 4-lane selector imm8.
fn select(imm: u32, i: u32) -> u32 {
    (imm >> (2 * i)) & 3
}

/// PSHUFD: dwords of the source picked by the imm8.
fn pshufd(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let imm = imm8(insn);
    binary(ctx, insn, |_, b| build(|i| u32::lane(b, select(imm, i))))
}

/// PSHUFLW: low four words picked by the imm8; high quadword copied.
fn pshuflw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let imm = imm8(insn);
    binary(ctx, insn, |_, b| build(|i| if i < 4 { u16::lane(b, select(imm, i)) } else { u16::lane(b, i) }))
}

/// PSHUFHW: high four words picked by the imm8; low quadword copied.
fn pshufhw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let imm = imm8(insn);
    binary(ctx, insn, |_, b| build(|i| if i < 4 { u16::lane(b, i) } else { u16::lane(b, 4 + select(imm, i - 4)) }))
}

/// SHUFPS: two dwords of the destination, then two of the source.
fn shufps(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let imm = imm8(insn);
    binary(ctx, insn, |a, b| build(|i| u32::lane(if i < 2 { a } else { b }, select(imm, i))))
}

/// SHUFPD: one qword of the destination, then one of the source.
fn shufpd(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let imm = imm8(insn);
    binary(ctx, insn, |a, b| build(|i| u64::lane(if i == 0 { a } else { b }, (imm >> i) & 1)))
}

/// PEXTRW: word imm8 & 7, zero-extended into a register or stored to m16.
fn pextrw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let w = u16::lane(ctx.cpu.xmm[xmm_reg(insn, 1)], imm8(insn) & 7) as u64;
    let size = Ctx::op_size(insn, 0);
    ctx.set(insn, 0, size, w)
}

/// PINSRW: the low word of a register or m16 into word imm8 & 7.
fn pinsrw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let w = ctx.get(insn, 1, 2)? as u128;
    let sh = 16 * (imm8(insn) & 7);
    let d = &mut ctx.cpu.xmm[xmm_reg(insn, 0)];
    *d = (*d & !(0xffff << sh)) | (w << sh);
    Ok(())
}
