//! The SSE3/SSE4 forms run as the very same instruction on the host's own
//! unit: the floating-point ones (ADDSUB*, HADD*, HSUB*, ROUND*, DPPS,
//! DPPD) under the guest MXCSR through `on_host!` exactly as in
//! `sse_float.rs` (so rounding, NaN propagation, DAZ/FTZ and exception
//! flags are the host's own, and an unmasked exception is #XM), the SSE4.2
//! string compares with their operands in registers, and AES-NI and
//! PCLMULQDQ. Results and flags are therefore exact by construction; the
//! tests compare them with the host all the same, since the plumbing
//! (lengths, implicit registers, flags kept and cleared) is urun's.
//!
//! An imm8 must be a literal in the host code, so each imm8 form is one
//! const-generic instantiation, picked from a table of 256 indexed by the
//! guest's imm8 (so bits the architecture ignores are ignored by the host
//! too). A host without the feature gives the guest #UD, as a CPU without
//! it would (`is_x86_feature_detected!` caches its answer).

use std::arch::asm;

use iced_x86::{Code, Instruction, Mnemonic};

use super::super::sse::float::{from_m128, on_host, to_m128, xmm_op, FLAGS, MASKS};
use super::super::sse::{imm8, xmm_reg};
use super::Table;
use crate::interp::{Ctx, Step};
use crate::state::{fl, reg};

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    macro_rules! by_name {
        ($($m:ident => $h:expr),* $(,)?) => { $( t.set_mnemonic($m, $h); )* };
    }
    by_name! {
        Addsubps => addsubps, Addsubpd => addsubpd, Haddps => haddps, Haddpd => haddpd,
        Hsubps => hsubps, Hsubpd => hsubpd,
        Roundps => roundps, Roundpd => roundpd, Roundss => roundss, Roundsd => roundsd,
        Dpps => dpps, Dppd => dppd,
        Aesenc => aesenc, Aesenclast => aesenclast, Aesdec => aesdec, Aesdeclast => aesdeclast,
        Aesimc => aesimc, Aeskeygenassist => aeskeygenassist, Pclmulqdq => pclmulqdq,
    }
    t.set(&[Code::Pcmpestri_xmm_xmmm128_imm8], pcmpstr::<ESTRI, false>);
    t.set(&[Code::Pcmpestri64_xmm_xmmm128_imm8], pcmpstr::<ESTRI, true>);
    t.set(&[Code::Pcmpestrm_xmm_xmmm128_imm8], pcmpstr::<ESTRM, false>);
    t.set(&[Code::Pcmpestrm64_xmm_xmmm128_imm8], pcmpstr::<ESTRM, true>);
    t.set(&[Code::Pcmpistri_xmm_xmmm128_imm8], pcmpstr::<ISTRI, false>);
    t.set(&[Code::Pcmpistrm_xmm_xmmm128_imm8], pcmpstr::<ISTRM, false>);
}

/// `[f::<0>, f::<1>, .., f::<255>]` as an array of `$ty`.
macro_rules! imm8_table {
    ($f:ident: $ty:ty) => {
        imm8_table!(@ $f: $ty;
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32
            33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61
            62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90
            91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114
            115 116 117 118 119 120 121 122 123 124 125 126 127 128 129 130 131 132 133 134 135 136
            137 138 139 140 141 142 143 144 145 146 147 148 149 150 151 152 153 154 155 156 157 158
            159 160 161 162 163 164 165 166 167 168 169 170 171 172 173 174 175 176 177 178 179 180
            181 182 183 184 185 186 187 188 189 190 191 192 193 194 195 196 197 198 199 200 201 202
            203 204 205 206 207 208 209 210 211 212 213 214 215 216 217 218 219 220 221 222 223 224
            225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246
            247 248 249 250 251 252 253 254 255
        )
    };
    (@ $f:ident: $ty:ty; $($i:literal)*) => { [$($f::<$i> as $ty),*] };
}

/// #UD unless the host has `$feature`.
macro_rules! require {
    ($ctx:expr, $insn:expr, $feature:tt) => {
        if !std::arch::is_x86_feature_detected!($feature) {
            return Err($ctx.invalid($insn));
        }
    };
}

/// A host form: `(dst, src, guest MXCSR) -> (result, exception flags)`.
type HostOp = fn(u128, u128, u32) -> (u128, u32);

/// Handlers for `op xmm, xmm/mem` run on the host as the same instruction
/// (AES and carry-less multiply leave MXCSR alone, so the fence is moot
/// for them but harmless).
macro_rules! host_ops {
    ($($name:ident: $feature:tt;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            require!(ctx, insn, $feature);
            xmm_op(ctx, insn, |a, b, csr| {
                let mut x = to_m128(a);
                let flags = on_host!(csr, [concat!(stringify!($name), " {x}, {y}")],
                    x = inout(xmm_reg) x, y = in(xmm_reg) to_m128(b),);
                (from_m128(x), flags)
            })
        }
    )*};
}

host_ops! {
    addsubps: "sse3"; addsubpd: "sse3"; haddps: "sse3"; haddpd: "sse3"; hsubps: "sse3"; hsubpd: "sse3";
    aesenc: "aes"; aesenclast: "aes"; aesdec: "aes"; aesdeclast: "aes"; aesimc: "aes";
}

/// Handlers for `op xmm, xmm/mem, imm8` run on the host, one instantiation
/// per imm8.
macro_rules! host_imm_ops {
    ($($name:ident: $feature:tt;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            fn form<const I: u8>(a: u128, b: u128, csr: u32) -> (u128, u32) {
                let mut x = to_m128(a);
                let flags = on_host!(csr, [concat!(stringify!($name), " {x}, {y}, {i}")],
                    x = inout(xmm_reg) x, y = in(xmm_reg) to_m128(b), i = const I,);
                (from_m128(x), flags)
            }
            static FORMS: [HostOp; 256] = imm8_table!(form: HostOp);
            require!(ctx, insn, $feature);
            xmm_op(ctx, insn, FORMS[imm8(insn) as usize])
        }
    )*};
}

host_imm_ops! {
    roundps: "sse4.1"; roundpd: "sse4.1"; roundss: "sse4.1"; roundsd: "sse4.1";
    dpps: "sse4.1"; dppd: "sse4.1";
    aeskeygenassist: "aes"; pclmulqdq: "pclmulqdq";
}

// ----- SSE4.2 string compares -----

/// Which string compare: explicit (lengths in RAX/EAX and RDX/EDX) or
/// implicit (NUL-terminated) lengths; index (in ECX) or mask (in XMM0).
const ESTRI: u8 = 0;
const ESTRM: u8 = 1;
const ISTRI: u8 = 2;
const ISTRM: u8 = 3;

/// A host string compare: `(xmm1, xmm2/m128, len1, len2) -> (ECX or
/// XMM0, RFLAGS)`. The lengths are already made absolute and saturated.
type StrOp = fn(u128, u128, u32, u32) -> (u128, u64);

fn estri<const I: u8>(a: u128, b: u128, la: u32, lb: u32) -> (u128, u64) {
    let (idx, f): (u32, u64);
    // SAFETY: one PCMPESTRI on registers, then RFLAGS read through the
    // stack (asm! leaves it usable); nothing else is touched.
    unsafe {
        asm!("pcmpestri {a}, {b}, {i}", "pushfq", "pop {f}",
            a = in(xmm_reg) to_m128(a), b = in(xmm_reg) to_m128(b), i = const I, f = out(reg) f,
            in("eax") la, in("edx") lb, out("ecx") idx);
    }
    (idx as u128, f)
}

fn estrm<const I: u8>(a: u128, b: u128, la: u32, lb: u32) -> (u128, u64) {
    let (m, f);
    // SAFETY: as `estri`; the mask goes to XMM0, which is an output
    // declared early so that neither input is given it.
    unsafe {
        asm!("pcmpestrm {a}, {b}, {i}", "pushfq", "pop {f}",
            a = in(xmm_reg) to_m128(a), b = in(xmm_reg) to_m128(b), i = const I, f = out(reg) f,
            in("eax") la, in("edx") lb, out("xmm0") m);
    }
    (from_m128(m), f)
}

fn istri<const I: u8>(a: u128, b: u128, _: u32, _: u32) -> (u128, u64) {
    let (idx, f): (u32, u64);
    // SAFETY: as `estri`.
    unsafe {
        asm!("pcmpistri {a}, {b}, {i}", "pushfq", "pop {f}",
            a = in(xmm_reg) to_m128(a), b = in(xmm_reg) to_m128(b), i = const I, f = out(reg) f,
            out("ecx") idx);
    }
    (idx as u128, f)
}

fn istrm<const I: u8>(a: u128, b: u128, _: u32, _: u32) -> (u128, u64) {
    let (m, f);
    // SAFETY: as `estrm`.
    unsafe {
        asm!("pcmpistrm {a}, {b}, {i}", "pushfq", "pop {f}",
            a = in(xmm_reg) to_m128(a), b = in(xmm_reg) to_m128(b), i = const I, f = out(reg) f,
            out("xmm0") m);
    }
    (from_m128(m), f)
}

static STR_FORMS: [[StrOp; 256]; 4] =
    [imm8_table!(estri: StrOp), imm8_table!(estrm: StrOp), imm8_table!(istri: StrOp), imm8_table!(istrm: StrOp)];

/// An explicit length: the absolute value of EAX/EDX (RAX/RDX with
/// REX.W, `wide`), saturated to the element count `max`.
fn explicit_len(v: u64, wide: bool, max: u32) -> u32 {
    let signed = if wide { v as i64 } else { v as i32 as i64 };
    signed.unsigned_abs().min(max as u64) as u32
}

/// PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM (`KIND`), with REX.W (`WIDE`)
/// for the explicit-length forms. The memory operand need not be aligned.
/// Writes ECX (zero-extended into RCX) or XMM0, and CF ZF SF OF from the
/// compare with AF and PF cleared.
fn pcmpstr<const KIND: u8, const WIDE: bool>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    require!(ctx, insn, "sse4.2");
    let b = ctx.get_xmm(insn, 1)?;
    let a = ctx.cpu.xmm[xmm_reg(insn, 0)];
    let imm = imm8(insn);
    let max = if imm & 1 != 0 { 8 } else { 16 };
    let la = explicit_len(ctx.cpu.gpr[reg::RAX], WIDE, max);
    let lb = explicit_len(ctx.cpu.gpr[reg::RDX], WIDE, max);
    let (r, f) = STR_FORMS[KIND as usize][imm as usize](a, b, la, lb);
    if KIND == ESTRM || KIND == ISTRM {
        ctx.cpu.xmm[0] = r;
    } else {
        ctx.cpu.gpr[reg::RCX] = r as u64;
    }
    ctx.cpu.flags.set_masked(fl::STATUS, f & (fl::CF | fl::ZF | fl::SF | fl::OF));
    Ok(())
}
