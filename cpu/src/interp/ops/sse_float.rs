//! SSE/SSE2 floating point: arithmetic, min/max, square root and
//! reciprocal estimates, compares, and conversions.
//!
//! Each runs as the very same instruction on the host's SSE unit, inside
//! one `asm!` block that saves the host MXCSR, loads the guest's (rounding
//! control, DAZ, FTZ; every exception masked, flags cleared), executes,
//! reads back the flags raised, and restores the host MXCSR. So results,
//! NaN propagation, rounding modes, denormal handling and exception flags
//! are the host CPU's own, exactly. The flags are ORed into the guest
//! MXCSR; if the guest had unmasked one of them, the instruction raises
//! #XM (`FaultKind::FloatingPoint`) and leaves its destination unchanged.
//!
//! Limits: RCPPS/RCPSS/RSQRTPS/RSQRTSS give the host CPU's approximation,
//! which differs between vendors. With an exception unmasked, the flags are
//! those of a masked run (hardware may differ, e.g. UE without PE).

use core::arch::x86_64::__m128i;
use std::arch::asm;

use iced_x86::{Code, Instruction, Mnemonic};

use super::{src, xmm_reg, Table};
use crate::engine::FaultKind;
use crate::interp::{Ctx, Step};
use crate::state::fl;

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    macro_rules! by_name {
        ($($m:ident => $h:expr),* $(,)?) => { $( t.set_mnemonic($m, $h); )* };
    }
    by_name! {
        Addps => addps, Addpd => addpd, Addss => addss, Addsd => addsd,
        Subps => subps, Subpd => subpd, Subss => subss, Subsd => subsd,
        Mulps => mulps, Mulpd => mulpd, Mulss => mulss, Mulsd => mulsd,
        Divps => divps, Divpd => divpd, Divss => divss, Divsd => divsd,
        Minps => minps, Minpd => minpd, Minss => minss, Minsd => minsd,
        Maxps => maxps, Maxpd => maxpd, Maxss => maxss, Maxsd => maxsd,
        Sqrtps => sqrtps, Sqrtpd => sqrtpd, Sqrtss => sqrtss, Sqrtsd => sqrtsd,
        Rcpps => rcpps, Rcpss => rcpss, Rsqrtps => rsqrtps, Rsqrtss => rsqrtss,
        Cvtss2sd => cvtss2sd, Cvtsd2ss => cvtsd2ss,
        Cvtdq2ps => cvtdq2ps, Cvtps2dq => cvtps2dq, Cvttps2dq => cvttps2dq,
        Cvtdq2pd => cvtdq2pd, Cvtpd2dq => cvtpd2dq, Cvttpd2dq => cvttpd2dq,
        Cvtps2pd => cvtps2pd, Cvtpd2ps => cvtpd2ps,
        Cmpps => cmpps, Cmppd => cmppd, Cmpss => cmpss,
        Comiss => comiss, Comisd => comisd, Ucomiss => ucomiss, Ucomisd => ucomisd,
    }
    // Not `set_mnemonic(Cmpsd)`: that would also take the string CMPSD.
    t.set(&[Code::Cmpsd_xmm_xmmm64_imm8], cmpsd);
    t.set(&[Code::Cvtsi2ss_xmm_rm32], cvtsi2ss_32);
    t.set(&[Code::Cvtsi2ss_xmm_rm64], cvtsi2ss_64);
    t.set(&[Code::Cvtsi2sd_xmm_rm32], cvtsi2sd_32);
    t.set(&[Code::Cvtsi2sd_xmm_rm64], cvtsi2sd_64);
    t.set(&[Code::Cvtss2si_r32_xmmm32], cvtss2si_32);
    t.set(&[Code::Cvtss2si_r64_xmmm32], cvtss2si_64);
    t.set(&[Code::Cvttss2si_r32_xmmm32], cvttss2si_32);
    t.set(&[Code::Cvttss2si_r64_xmmm32], cvttss2si_64);
    t.set(&[Code::Cvtsd2si_r32_xmmm64], cvtsd2si_32);
    t.set(&[Code::Cvtsd2si_r64_xmmm64], cvtsd2si_64);
    t.set(&[Code::Cvttsd2si_r32_xmmm64], cvttsd2si_32);
    t.set(&[Code::Cvttsd2si_r64_xmmm64], cvttsd2si_64);
}

/// MXCSR exception flags (IE DE ZE OE UE PE) and their masks.
pub(in crate::interp::ops) const FLAGS: u32 = 0x3f;
pub(in crate::interp::ops) const MASKS: u32 = FLAGS << 7;

/// Linux si_code values for SIGFPE (asm-generic/siginfo.h; not in `libc`).
const FPE_FLTDIV: i32 = 3;
const FPE_FLTOVF: i32 = 4;
const FPE_FLTUND: i32 = 5;
const FPE_FLTRES: i32 = 6;
const FPE_FLTINV: i32 = 7;

/// Run an SSE instruction template on the host under the guest MXCSR
/// `$csr` (see the module comment); evaluates to the exception flags it
/// raised. `$operands` are the template's own asm operands.
macro_rules! on_host {
    ($csr:expr, [$($tmpl:expr),+], $($operands:tt)*) => {{
        let mut csr: u32 = ($csr | MASKS) & !FLAGS;
        let mut host: u32 = 0;
        // SAFETY: the template is one SSE instruction on registers (plus,
        // for COMIS*, a push/pop of RFLAGS); MXCSR is saved to and restored
        // from `host` around it, and the guest value loaded has every
        // exception masked, so nothing can trap. Both pointers are to live
        // locals.
        unsafe {
            asm!(
                "stmxcsr [{host}]",
                "ldmxcsr [{csr}]",
                $($tmpl,)+
                "stmxcsr [{csr}]",
                "ldmxcsr [{host}]",
                $($operands)*
                host = in(reg) &raw mut host,
                csr = in(reg) &raw mut csr,
            );
        }
        csr & FLAGS
    }};
}
pub(in crate::interp::ops) use on_host;

#[inline]
pub(in crate::interp::ops) fn to_m128(v: u128) -> __m128i {
    // SAFETY: both are 16 plain bytes.
    unsafe { core::mem::transmute::<u128, __m128i>(v) }
}

#[inline]
pub(in crate::interp::ops) fn from_m128(v: __m128i) -> u128 {
    // SAFETY: both are 16 plain bytes.
    unsafe { core::mem::transmute::<__m128i, u128>(v) }
}

/// Record flags an instruction raised; #XM if the guest unmasked one of
/// them (`code` as Linux reports it in si_code).
pub(in crate::interp::ops) fn raise(ctx: &mut Ctx<'_>, flags: u32) -> Step {
    ctx.cpu.mxcsr |= flags;
    let unmasked = flags & !(ctx.cpu.mxcsr >> 7) & FLAGS;
    if unmasked == 0 {
        return Ok(());
    }
    let code = if unmasked & 0x01 != 0 {
        FPE_FLTINV
    } else if unmasked & 0x04 != 0 {
        FPE_FLTDIV
    } else if unmasked & 0x08 != 0 {
        FPE_FLTOVF
    } else if unmasked & 0x12 != 0 {
        FPE_FLTUND
    } else {
        FPE_FLTRES
    };
    Err(ctx.fault(FaultKind::FloatingPoint { code }))
}

/// `dst = op(dst, src)` on the host, `op` given as `(dst, src, mxcsr) ->
/// (result, flags)`.
#[inline]
pub(in crate::interp::ops) fn xmm_op(
    ctx: &mut Ctx<'_>,
    insn: &Instruction,
    op: impl FnOnce(u128, u128, u32) -> (u128, u32),
) -> Step {
    let b = src(ctx, insn, 1)?;
    let d = xmm_reg(insn, 0);
    let (r, flags) = op(ctx.cpu.xmm[d], b, ctx.cpu.mxcsr);
    raise(ctx, flags)?;
    ctx.cpu.xmm[d] = r;
    Ok(())
}

/// Handlers for `op xmm, xmm/mem` run on the host as the same instruction.
/// Scalar and half-width memory sources arrive zero-extended; the host
/// instruction reads only the lanes it uses and keeps the destination's
/// other lanes as the architecture says.
macro_rules! host_xmm_ops {
    ($($name:ident)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            xmm_op(ctx, insn, |a, b, csr| {
                let mut x = to_m128(a);
                let flags = on_host!(csr, [concat!(stringify!($name), " {x}, {y}")],
                    x = inout(xmm_reg) x, y = in(xmm_reg) to_m128(b),);
                (from_m128(x), flags)
            })
        }
    )*};
}

host_xmm_ops! {
    addps addpd addss addsd subps subpd subss subsd
    mulps mulpd mulss mulsd divps divpd divss divsd
    minps minpd minss minsd maxps maxpd maxss maxsd
    sqrtps sqrtpd sqrtss sqrtsd rcpps rcpss rsqrtps rsqrtss
    cvtss2sd cvtsd2ss cvtdq2ps cvtps2dq cvttps2dq
    cvtdq2pd cvtpd2dq cvttpd2dq cvtps2pd cvtpd2ps
}

/// Handlers for CMPPS/CMPPD/CMPSS/CMPSD xmm, xmm/mem, imm8 (predicates
/// 0..7; the imm8's upper bits are ignored, as without AVX).
macro_rules! host_cmp_ops {
    ($($name:ident)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            let pred = insn.immediate8() & 7;
            xmm_op(ctx, insn, |a, b, csr| {
                let mut x = to_m128(a);
                let y = to_m128(b);
                macro_rules! cmp {
                    ($p:literal) => {
                        on_host!(csr, [concat!(stringify!($name), " {x}, {y}, ", $p)],
                            x = inout(xmm_reg) x, y = in(xmm_reg) y,)
                    };
                }
                let flags = match pred {
                    0 => cmp!(0), 1 => cmp!(1), 2 => cmp!(2), 3 => cmp!(3),
                    4 => cmp!(4), 5 => cmp!(5), 6 => cmp!(6), _ => cmp!(7),
                };
                (from_m128(x), flags)
            })
        }
    )*};
}

host_cmp_ops! { cmpps cmppd cmpss cmpsd }

/// Handlers for COMISS/COMISD/UCOMISS/UCOMISD: ZF, PF, CF from the
/// compare (all three set when unordered); OF, SF, AF cleared.
macro_rules! host_comi_ops {
    ($($name:ident)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            let a = ctx.cpu.xmm[xmm_reg(insn, 0)];
            let b = src(ctx, insn, 1)?;
            let mut rflags: u64 = 0;
            let flags = on_host!(ctx.cpu.mxcsr,
                [concat!(stringify!($name), " {x}, {y}"), "pushfq", "pop {f}"],
                x = in(xmm_reg) to_m128(a), y = in(xmm_reg) to_m128(b), f = out(reg) rflags,);
            raise(ctx, flags)?;
            ctx.cpu.flags.set_masked(fl::STATUS, rflags & (fl::ZF | fl::PF | fl::CF));
            Ok(())
        }
    )*};
}

host_comi_ops! { comiss comisd ucomiss ucomisd }

/// Handlers for CVTSI2SS/CVTSI2SD from r/m32 (`e`) or r/m64 (``): the
/// low lane is replaced, the rest of the destination kept.
macro_rules! host_from_int_ops {
    ($($name:ident = $mn:literal, $size:literal, $modifier:literal;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            let v = ctx.get(insn, 1, $size)?;
            let d = xmm_reg(insn, 0);
            let mut x = to_m128(ctx.cpu.xmm[d]);
            let flags = on_host!(ctx.cpu.mxcsr, [concat!($mn, " {x}, {r", $modifier, "}")],
                x = inout(xmm_reg) x, r = in(reg) v,);
            raise(ctx, flags)?;
            ctx.cpu.xmm[d] = from_m128(x);
            Ok(())
        }
    )*};
}

host_from_int_ops! {
    cvtsi2ss_32 = "cvtsi2ss", 4, ":e";
    cvtsi2ss_64 = "cvtsi2ss", 8, "";
    cvtsi2sd_32 = "cvtsi2sd", 4, ":e";
    cvtsi2sd_64 = "cvtsi2sd", 8, "";
}

/// Handlers for CVT(T)SS2SI/CVT(T)SD2SI into r32 or r64; out of range and
/// NaN give the integer indefinite (0x80000000 / 0x8000000000000000).
macro_rules! host_to_int_ops {
    ($($name:ident = $mn:literal, $modifier:literal;)*) => {$(
        fn $name(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
            let b = src(ctx, insn, 1)?;
            let mut r: u64 = 0;
            let flags = on_host!(ctx.cpu.mxcsr, [concat!($mn, " {r", $modifier, "}, {y}")],
                r = inout(reg) r, y = in(xmm_reg) to_m128(b),);
            raise(ctx, flags)?;
            ctx.set_reg(insn.op0_register(), r);
            Ok(())
        }
    )*};
}

host_to_int_ops! {
    cvtss2si_32 = "cvtss2si", ":e";
    cvtss2si_64 = "cvtss2si", "";
    cvttss2si_32 = "cvttss2si", ":e";
    cvttss2si_64 = "cvttss2si", "";
    cvtsd2si_32 = "cvtsd2si", ":e";
    cvtsd2si_64 = "cvtsd2si", "";
    cvttsd2si_32 = "cvttsd2si", ":e";
    cvttsd2si_64 = "cvttsd2si", "";
}
