//! SSE3, SSSE3, SSE4.1, SSE4.2, AES-NI and PCLMULQDQ (legacy encoding, XMM
//! forms only; the MMX forms of SSSE3 are not implemented). Integer lane
//! operations are written here over the lane helpers of `sse_int.rs`;
//! floating point (ADDSUB*, HADD*, HSUB*, ROUND*, DPPS/DPPD), the SSE4.2
//! string compares, AES and carry-less multiply run as the very same
//! instruction on the host's own unit, in `sse4_host.rs`.
//!
//! Operand rules: a 128-bit memory operand must be 16-byte aligned (#GP
//! otherwise) except for LDDQU and PCMPxSTRx; narrower memory operands
//! (PMOVSX/PMOVZX, MOVDDUP, INSERTPS, ROUNDSS/ROUNDSD, PINSR*, PEXTR*) have
//! no alignment requirement.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::sse::int::{build, mask_of, zip, Lane};
use super::sse::{binary, imm8, src, xmm_reg};
use super::Table;
use crate::interp::{Ctx, Step};
use crate::state::fl;

#[path = "sse4_host.rs"]
mod host;
#[cfg(test)]
#[path = "sse4_tests.rs"]
mod tests;

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    macro_rules! by_name {
        ($($m:ident => $h:expr),* $(,)?) => { $( t.set_mnemonic($m, $h); )* };
    }
    by_name! {
        // SSE3 (the float ones are in `host`)
        Movshdup => movshdup, Movsldup => movsldup, Movddup => movddup, Lddqu => lddqu,
        // SSSE3
        Pshufb => pshufb, Palignr => palignr,
        Phaddw => phaddw, Phaddd => phaddd, Phaddsw => phaddsw,
        Phsubw => phsubw, Phsubd => phsubd, Phsubsw => phsubsw,
        Pabsb => pabsb, Pabsw => pabsw, Pabsd => pabsd,
        Psignb => psignb, Psignw => psignw, Psignd => psignd,
        Pmaddubsw => pmaddubsw, Pmulhrsw => pmulhrsw,
        // SSE4.1
        Pblendw => pblendw, Blendps => blendps, Blendpd => blendpd,
        Pblendvb => blendv::<u8>, Blendvps => blendv::<u32>, Blendvpd => blendv::<u64>,
        Pminsb => pminsb, Pmaxsb => pmaxsb, Pminuw => pminuw, Pmaxuw => pmaxuw,
        Pminsd => pminsd, Pmaxsd => pmaxsd, Pminud => pminud, Pmaxud => pmaxud,
        Pmulld => pmulld, Pmuldq => pmuldq, Pcmpeqq => pcmpeqq, Packusdw => packusdw,
        Pmovsxbw => pmovx::<8, 16, true>, Pmovsxbd => pmovx::<8, 32, true>,
        Pmovsxbq => pmovx::<8, 64, true>, Pmovsxwd => pmovx::<16, 32, true>,
        Pmovsxwq => pmovx::<16, 64, true>, Pmovsxdq => pmovx::<32, 64, true>,
        Pmovzxbw => pmovx::<8, 16, false>, Pmovzxbd => pmovx::<8, 32, false>,
        Pmovzxbq => pmovx::<8, 64, false>, Pmovzxwd => pmovx::<16, 32, false>,
        Pmovzxwq => pmovx::<16, 64, false>, Pmovzxdq => pmovx::<32, 64, false>,
        Pextrb => pextr::<1>, Pextrd => pextr::<4>, Pextrq => pextr::<8>, Extractps => pextr::<4>,
        Pinsrb => pinsr::<1>, Pinsrd => pinsr::<4>, Pinsrq => pinsr::<8>,
        Insertps => insertps, Ptest => ptest, Mpsadbw => mpsadbw, Phminposuw => phminposuw,
        Movntdqa => movntdqa,
        // SSE4.2 (the string compares are in `host`)
        Pcmpgtq => pcmpgtq,
    }
    host::register(t);
}

/// `dst = f(src)` for `op xmm, xmm/m128` whose result ignores the
/// destination's old value.
#[inline]
fn unary(ctx: &mut Ctx<'_>, insn: &Instruction, f: impl FnOnce(u128) -> u128) -> Step {
    binary(ctx, insn, |_, b| f(b))
}

/// The sign bit of a lane.
#[inline]
fn negative<T: Lane>(x: T) -> bool {
    (x.bits() >> (T::BITS - 1)) & 1 != 0
}

// ----- SSE3 moves -----

/// MOVSHDUP: the odd dwords of the source, each duplicated.
fn movshdup(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    unary(ctx, insn, |b| build(|i| u32::lane(b, i | 1)))
}

/// MOVSLDUP: the even dwords of the source, each duplicated.
fn movsldup(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    unary(ctx, insn, |b| build(|i| u32::lane(b, i & !1)))
}

/// MOVDDUP: the low qword of the source (or m64) in both halves.
fn movddup(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    unary(ctx, insn, |b| build(|_| u64::lane(b, 0)))
}

/// LDDQU: an unaligned 128-bit load.
fn lddqu(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let v = ctx.get_xmm(insn, 1)?;
    ctx.cpu.xmm[xmm_reg(insn, 0)] = v;
    Ok(())
}

/// MOVNTDQA: an aligned 128-bit load (the non-temporal hint is ignored).
fn movntdqa(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    unary(ctx, insn, |b| b)
}

// ----- SSSE3 -----

/// PSHUFB: byte i is destination byte `src[i] & 15`, or zero when bit 7
/// of `src[i]` is set.
fn pshufb(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| {
        build(|i| {
            let s = u8::lane(b, i);
            if s & 0x80 != 0 {
                0
            } else {
                u8::lane(a, (s & 15) as u32)
            }
        })
    })
}

/// PALIGNR: the 32-byte concatenation destination:source shifted right by
/// imm8 bytes; its low 16 bytes (zero from a shift of 32 on).
fn palignr(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let n = imm8(insn);
    binary(ctx, insn, |a, b| match n {
        0 => b,
        1..=15 => (b >> (8 * n)) | (a << (128 - 8 * n)),
        16..=31 => a >> (8 * (n - 16)),
        _ => 0,
    })
}

/// Horizontal pairs: the low half of the result is `f` of adjacent lanes
/// of the destination, the high half of adjacent lanes of the source.
#[inline]
fn horizontal<T: Lane>(a: u128, b: u128, f: impl Fn(T, T) -> T) -> u128 {
    let half = 64 / T::BITS;
    build(|i| {
        let (v, j) = if i < half { (a, 2 * i) } else { (b, 2 * (i - half)) };
        f(T::lane(v, j), T::lane(v, j + 1))
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

/// The SSSE3 horizontal adds and subtracts, written once for the XMM forms
/// here and the MMX forms in `mmx.rs` (see `sse_int::lane_table`).
macro_rules! horizontal_table {
    ($callback:ident) => {
        $callback! {
            phaddw: u16 = |x, y| x.wrapping_add(y);
            phaddd: u32 = |x, y| x.wrapping_add(y);
            phaddsw: i16 = |x, y| x.saturating_add(y);
            phsubw: u16 = |x, y| x.wrapping_sub(y);
            phsubd: u32 = |x, y| x.wrapping_sub(y);
            phsubsw: i16 = |x, y| x.saturating_sub(y);
        }
    };
}
pub(super) use horizontal_table;

horizontal_table!(horizontals);

/// Handlers for PABS*: the absolute value of each source lane, the most
/// negative value staying as it is (read unsigned).
macro_rules! absolutes {
    ($($name:ident: $t:ty;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            unary(ctx, insn, |b| build(|i| <$t>::lane(b, i).wrapping_abs()))
        }
    )*};
}

absolutes! {
    pabsb: i8;
    pabsw: i16;
    pabsd: i32;
}

/// PSIGN*: the destination lane negated, zeroed or kept as the source
/// lane is negative, zero or positive.
pub(super) fn sign<T: Copy + Default + PartialOrd>(x: T, y: T, neg: impl Fn(T) -> T) -> T {
    let zero = T::default();
    if y < zero {
        neg(x)
    } else if y == zero {
        zero
    } else {
        x
    }
}

/// Handlers for `op xmm, xmm/m128` whose result lane i is a function of
/// lane i of each operand (as `lanewise!` in `sse_int.rs`).
macro_rules! lanewise {
    ($($name:ident: $t:ty = |$x:ident, $y:ident| $body:expr;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            binary(ctx, insn, |a, b| zip::<$t>(a, b, |$x, $y| $body))
        }
    )*};
}

/// The SSSE3 lane-wise operations, which have MMX forms too (`mmx.rs`).
macro_rules! ssse3_lane_table {
    ($callback:ident) => {
        $callback! {
            psignb: i8 = |x, y| sign(x, y, i8::wrapping_neg);
            psignw: i16 = |x, y| sign(x, y, i16::wrapping_neg);
            psignd: i32 = |x, y| sign(x, y, i32::wrapping_neg);
            pmulhrsw: i16 = |x, y| ((((x as i32 * y as i32) >> 14) + 1) >> 1) as i16;
        }
    };
}
pub(super) use ssse3_lane_table;

ssse3_lane_table!(lanewise);

lanewise! {
    pminsb: i8 = |x, y| x.min(y);
    pmaxsb: i8 = |x, y| x.max(y);
    pminuw: u16 = |x, y| x.min(y);
    pmaxuw: u16 = |x, y| x.max(y);
    pminsd: i32 = |x, y| x.min(y);
    pmaxsd: i32 = |x, y| x.max(y);
    pminud: u32 = |x, y| x.min(y);
    pmaxud: u32 = |x, y| x.max(y);
    pmulld: u32 = |x, y| x.wrapping_mul(y);
    pcmpeqq: u64 = |x, y| mask_of(x == y);
    pcmpgtq: i64 = |x, y| mask_of(x > y);
}

/// PMADDUBSW: unsigned destination bytes times signed source bytes, each
/// adjacent pair of products summed with signed saturation to a word.
fn pmaddubsw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| {
        let p = |j: u32| u8::lane(a, j) as i16 * i8::lane(b, j) as i16;
        build(|i| p(2 * i).saturating_add(p(2 * i + 1)))
    })
}

// ----- SSE4.1 blends, packs, multiplies -----

/// Lanes picked by the bits of an imm8: lane i from the source when bit i
/// is set.
#[inline]
fn blend_imm<T: Lane>(a: u128, b: u128, imm: u32) -> u128 {
    build(|i| T::lane(if (imm >> i) & 1 != 0 { b } else { a }, i))
}

fn pblendw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let imm = imm8(insn);
    binary(ctx, insn, |a, b| blend_imm::<u16>(a, b, imm))
}

fn blendps(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let imm = imm8(insn);
    binary(ctx, insn, |a, b| blend_imm::<u32>(a, b, imm))
}

fn blendpd(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let imm = imm8(insn);
    binary(ctx, insn, |a, b| blend_imm::<u64>(a, b, imm))
}

/// PBLENDVB / BLENDVPS / BLENDVPD: lane i from the source when the sign
/// bit of lane i of the implicit XMM0 is set.
fn blendv<T: Lane>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let m = ctx.cpu.xmm[0];
    binary(ctx, insn, |a, b| build(|i| T::lane(if negative(T::lane(m, i)) { b } else { a }, i)))
}

/// PACKUSDW: signed dwords to unsigned words with saturation; the
/// destination's dwords give the low four words.
fn packusdw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| build(|i| i32::lane(if i < 4 { a } else { b }, i % 4).clamp(0, 0xffff) as u16))
}

/// PMULDQ: the signed products of the even dwords, as qwords.
fn pmuldq(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    binary(ctx, insn, |a, b| build(|i| i32::lane(a, 2 * i) as i64 * i32::lane(b, 2 * i) as i64))
}

/// PMOVSX* (`SIGNED`) and PMOVZX*: the low `128 / TO` lanes of `FROM`
/// bits of the source (an XMM register or m16/m32/m64), widened to `TO`
/// bits.
fn pmovx<const FROM: u32, const TO: u32, const SIGNED: bool>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    unary(ctx, insn, |b| {
        (0..128 / TO).fold(0u128, |r, i| {
            let x = (b >> (i * FROM)) as u64 & (u64::MAX >> (64 - FROM));
            let x = if SIGNED { ((x << (64 - FROM)) as i64 >> (64 - FROM)) as u64 } else { x };
            r | ((x & (u64::MAX >> (64 - TO))) as u128) << (i * TO)
        })
    })
}

// ----- SSE4.1 inserts, extracts, tests, searches -----

/// PEXTRB/PEXTRD/PEXTRQ/EXTRACTPS: lane imm8 (modulo the lane count) of
/// `BYTES` bytes into a general-purpose register (zero-extended) or
/// memory.
fn pextr<const BYTES: u8>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let bits = 8 * BYTES as u32;
    let i = imm8(insn) & (128 / bits - 1);
    let v = ctx.cpu.xmm[xmm_reg(insn, 1)] >> (i * bits);
    let v = v as u64 & (u64::MAX >> (64 - bits));
    ctx.set(insn, 0, BYTES, v)
}

/// PINSRB/PINSRD/PINSRQ: the low `BYTES` bytes of a register or memory
/// into lane imm8 (modulo the lane count).
fn pinsr<const BYTES: u8>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let bits = 8 * BYTES as u32;
    let v = ctx.get(insn, 1, BYTES)? as u128;
    let sh = bits * (imm8(insn) & (128 / bits - 1));
    let lane = (u128::MAX >> (128 - bits)) << sh;
    let d = &mut ctx.cpu.xmm[xmm_reg(insn, 0)];
    *d = (*d & !lane) | (v << sh);
    Ok(())
}

/// INSERTPS: a dword (source dword imm8[7:6], or the m32) into destination
/// dword imm8[5:4], then the dwords set in imm8[3:0] zeroed.
fn insertps(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let imm = imm8(insn);
    let e = match insn.op1_kind() {
        OpKind::Register => u32::lane(ctx.cpu.xmm[xmm_reg(insn, 1)], imm >> 6),
        _ => {
            let a = ctx.ea(insn);
            ctx.load(a, 4)? as u32
        }
    };
    let d = xmm_reg(insn, 0);
    let old = ctx.cpu.xmm[d];
    ctx.cpu.xmm[d] = build(|i| {
        if (imm >> i) & 1 != 0 {
            0
        } else if i == (imm >> 4) & 3 {
            e
        } else {
            u32::lane(old, i)
        }
    });
    Ok(())
}

/// PTEST: ZF when destination AND source is zero, CF when NOT destination
/// AND source is zero; AF, OF, PF, SF cleared.
fn ptest(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let b = src(ctx, insn, 1)?;
    let a = ctx.cpu.xmm[xmm_reg(insn, 0)];
    let zf = if a & b == 0 { fl::ZF } else { 0 };
    let cf = if !a & b == 0 { fl::CF } else { 0 };
    ctx.cpu.flags.set_masked(fl::STATUS, zf | cf);
    Ok(())
}

/// MPSADBW: eight sums of absolute differences between the source's four
/// bytes at dword imm8[1:0] and four consecutive destination bytes
/// starting at byte 4 * imm8[2] + i.
fn mpsadbw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let imm = imm8(insn);
    let (da, sb) = (4 * ((imm >> 2) & 1), 4 * (imm & 3));
    binary(ctx, insn, |a, b| {
        build(|i| (0..4).map(|j| u8::lane(a, da + i + j).abs_diff(u8::lane(b, sb + j)) as u16).sum::<u16>())
    })
}

/// PHMINPOSUW: the smallest unsigned source word in word 0 and its index
/// (the lowest, for ties) in bits 16..18; the rest zeroed.
fn phminposuw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    unary(ctx, insn, |b| {
        let (idx, min) = (1..8).fold((0, u16::lane(b, 0)), |(bi, bv), i| {
            let v = u16::lane(b, i);
            if v < bv {
                (i, v)
            } else {
                (bi, bv)
            }
        });
        min as u128 | (idx as u128) << 16
    })
}
