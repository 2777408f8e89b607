//! The x87 FPU: loads and stores, arithmetic, transcendentals, compares,
//! FCMOVcc, stack and control instructions, FSTENV/FSAVE and their loads,
//! FXSAVE/FXRSTOR and EMMS.
//!
//! Every computing form runs on the host's own x87 unit through the fence in
//! `x87_host.rs`, so results are exact 80-bit values, bit for bit, with the
//! host's status flags and condition codes. The interpreter itself moves the
//! memory operand between guest memory (checked, through `Ctx`) and a local
//! buffer that the host instruction addresses as `[rdi]`.
//!
//! Exceptions: the host always runs with every exception masked. When the
//! result raises a flag the guest's FCW leaves unmasked, the instruction is
//! not committed: the state stays as before, the flags are recorded in FSW
//! with ES and B set, and the fault is `FloatingPoint` with its
//! `fp_exception` code. Hardware would store the unmasked response and raise #MF at the
//! *next* waiting x87 instruction; urun raises it on the faulting one, and
//! for unmasked overflow/underflow it does not store the scaled result.
//! A waiting instruction that finds an unmasked flag already set in FSW (left
//! by FLDCW, FLDENV, FRSTOR or FXRSTOR) raises the fault before running.
//!
//! Limits: FOP, FIP and FDP (and the selectors of FSTENV/FSAVE images) are
//! always zero. The 16-bit-operand-size FSTENV/FLDENV/FSAVE/FRSTOR forms
//! (14- and 94-byte images) and the 8087/287 no-ops FENI/FDISI/FSETPM are
//! not implemented (SIGILL).

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::Table;
use crate::engine::FaultKind;
use crate::interp::{Ctx, Step};
use crate::state::fl;

#[path = "x87_host.rs"]
pub(crate) mod host;
#[cfg(test)]
#[path = "x87_tests.rs"]
mod tests;

use host::{fx, sw, Fx};

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    t.set_mnemonics(
        &[
            Fld, Fst, Fstp, Fstpnce, Fild, Fist, Fistp, Fisttp, Fbld, Fbstp, Fld1, Fldz, Fldpi, Fldl2e, Fldl2t, Fldlg2,
            Fldln2, Fxch, Fadd, Faddp, Fiadd, Fsub, Fsubp, Fsubr, Fsubrp, Fisub, Fisubr, Fmul, Fmulp, Fimul, Fdiv,
            Fdivp, Fdivr, Fdivrp, Fidiv, Fidivr, Fchs, Fabs, Fsqrt, Fscale, Fxtract, Fprem, Fprem1, Frndint, Fsin,
            Fcos, Fsincos, Fptan, Fpatan, F2xm1, Fyl2x, Fyl2xp1, Fcom, Fcomp, Fcompp, Ficom, Ficomp, Fucom, Fucomp,
            Fucompp, Ftst, Fxam, Fcmovb, Fcmove, Fcmovbe, Fcmovu, Fcmovnb, Fcmovne, Fcmovnbe, Fcmovnu, Fincstp,
            Fdecstp, Ffree, Ffreep, Fnop,
        ],
        on_host::<PLAIN>,
    );
    t.set_mnemonics(&[Fcomi, Fcomip, Fucomi, Fucomip], on_host::<COMI>);
    t.set(&[Code::Fldcw_m2byte], on_host::<LDCW>);
    t.set(&[Code::Fnstenv_m28byte, Code::Fstenv_m28byte, Code::Fnsave_m108byte, Code::Fsave_m108byte], store_env);
    t.set(&[Code::Fldenv_m28byte, Code::Frstor_m108byte], load_env);
    t.set_mnemonics(&[Fninit, Finit], init);
    t.set_mnemonics(&[Fnclex, Fclex], clear_exceptions);
    t.set_mnemonics(&[Fnstcw, Fstcw], store_control_word);
    t.set_mnemonics(&[Fnstsw, Fstsw], store_status_word);
    t.set(&[Code::Wait], wait);
    t.set(&[Code::Emms], emms);
    t.set_mnemonics(&[Fxsave, Fxsave64], fxsave);
    t.set_mnemonics(&[Fxrstor, Fxrstor64], fxrstor);
}

/// Kinds of host-run forms.
const PLAIN: u8 = 0;
/// FCOMI and kin: also set ZF/PF/CF, clear OF/SF/AF.
const COMI: u8 = 1;
/// FLDCW: the new FCW comes from memory.
const LDCW: u8 = 2;

/// The `fp_exception` code for the unmasked exceptions in `bits` (FSW/FCW
/// order), in Linux's priority: invalid (stack faults included), divide by zero,
/// overflow, denormal or underflow, precision.
pub(crate) fn si_code(bits: u16) -> i32 {
    crate::engine::fpe_code(bits)
}

/// The exception flags of `fsw` that the guest's FCW leaves unmasked.
#[inline]
fn unmasked(ctx: &Ctx<'_>, fsw: u16) -> u16 {
    fsw & !ctx.cpu.x87.fcw & sw::EXCEPTIONS
}

/// What a waiting x87 instruction does first: raise #MF for an unmasked
/// exception already pending in FSW.
#[inline]
fn check_pending(ctx: &mut Ctx<'_>) -> Step {
    let pending = unmasked(ctx, ctx.cpu.x87.fsw);
    if pending != 0 {
        ctx.cpu.x87.fsw |= sw::ES | sw::B;
        return Err(ctx.fault(FaultKind::FloatingPoint { code: si_code(pending) }));
    }
    Ok(())
}

/// After a host run that produced `fsw`: if it raised an exception the
/// guest has unmasked, leave the state as it was, record the flags and
/// fault.
///
/// The host ran with every exception masked, so `fsw` holds the flags of
/// the masked response. Hardware stops at an unmasked pre-computation
/// exception (invalid, denormal, divide by zero) before the later flags
/// can arise, so only those are reported then. After an unmasked overflow
/// or underflow hardware scales the result, which urun does not, and the
/// precision flag recorded here may differ from hardware's.
fn raise_unmasked(ctx: &mut Ctx<'_>, fsw: u16) -> Step {
    const PRE: u16 = 0x01 | 0x02 | 0x04;
    let raised = if unmasked(ctx, fsw & PRE) != 0 { fsw & (PRE | sw::SF) } else { fsw & (sw::EXCEPTIONS | sw::SF) };
    let bits = unmasked(ctx, raised);
    if bits == 0 {
        return Ok(());
    }
    let x = &mut ctx.cpu.x87;
    x.fsw |= raised | sw::ES | sw::B;
    if fsw & sw::SF != 0 {
        // C1 tells a stack overflow (1) from an underflow (0).
        x.fsw = (x.fsw & !0x0200) | (fsw & 0x0200);
    }
    Err(ctx.fault(FaultKind::FloatingPoint { code: si_code(bits) }))
}

/// Set ES and B exactly when FSW holds an exception FCW leaves unmasked,
/// as hardware does after FLDCW.
fn update_summary(x: &mut crate::state::X87) {
    if x.fsw & !x.fcw & sw::EXCEPTIONS != 0 {
        x.fsw |= sw::ES | sw::B;
    } else {
        x.fsw &= !(sw::ES | sw::B);
    }
}

/// The escape opcode and ModRM byte the host runs for `insn`: the register
/// forms' own two bytes (ST(i) folded in), or the memory form's `reg`
/// field with the operand at `[rdi]`.
fn host_bytes(insn: &Instruction) -> (u8, u8) {
    let oc = insn.code().op_code();
    let opc = oc.op_code();
    if oc.op_code_len() == 2 {
        let sti = (0..insn.op_count())
            .filter(|&i| insn.op_kind(i) == OpKind::Register)
            .map(|i| insn.op_register(i))
            .filter(|&r| (Register::ST0 as u32..=Register::ST7 as u32).contains(&(r as u32)))
            .map(|r| r as u8 - Register::ST0 as u8)
            .max()
            .unwrap_or(0);
        ((opc >> 8) as u8, (opc as u8) + sti)
    } else {
        (opc as u8, ((oc.group_index().max(0) as u8) << 3) | 7)
    }
}

/// Whether the memory operand is written (true) or read.
fn stores(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(m, Fst | Fstp | Fist | Fistp | Fisttp | Fbstp | Fnstenv | Fstenv | Fnsave | Fsave)
}

/// The memory operand: (address, size), or `None`.
fn mem_operand(ctx: &Ctx<'_>, insn: &Instruction) -> Option<(u64, usize)> {
    let has = (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory);
    has.then(|| (ctx.ea(insn), insn.memory_size().size()))
}

/// Run `insn` on the host from the guest state, with `buf` as its memory
/// operand. Returns the new image and the host's AH after it.
fn run_on_host(ctx: &Ctx<'_>, insn: &Instruction, buf: &mut [u8; 128]) -> (Fx, u8) {
    let (op, modrm) = host_bytes(insn);
    let mut img = host::fenced_image(&ctx.cpu.x87);
    let ah = (ctx.cpu.flags.get() & 0xff) << 8;
    let f = host::host_fn(op, modrm);
    // SAFETY: the image comes from `fenced_image` (masks set, nothing
    // pending, valid MXCSR); `op modrm` is the registered x87 form of a
    // decoded guest instruction, whose memory operand (at most 108 bytes)
    // is `buf`.
    let ax = unsafe { f(&mut img, buf.as_mut_ptr(), ah) };
    (img, (ax >> 8) as u8)
}

/// Every computing x87 form: run it on the host and commit the result.
fn on_host<const KIND: u8>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    check_pending(ctx)?;
    let mem = mem_operand(ctx, insn);
    let store = stores(insn.mnemonic());
    let mut buf = [0u8; 128];
    if let Some((addr, n)) = mem {
        if !store {
            ctx.read_bytes(addr, &mut buf[..n])?;
        }
    }
    let new_fcw = u16::from_le_bytes([buf[0], buf[1]]);
    if KIND == LDCW {
        // The host loads the new FCW with every exception masked.
        buf[0] |= sw::EXCEPTIONS as u8;
    }
    let (img, ah) = run_on_host(ctx, insn, &mut buf);
    let mut fsw = img.u16_at(fx::FSW);
    if ctx.cpu.x87.fcw & UE == 0 && fsw & UE == 0 && exact_tiny(insn, &img, &buf) {
        fsw |= UE;
    }
    raise_unmasked(ctx, fsw)?;
    if let (Some((addr, n)), true) = (mem, store) {
        ctx.write_bytes(addr, &buf[..n])?;
    }
    let fcw = match KIND {
        // Reserved bits as the host reads them back, masks as written.
        LDCW => (img.u16_at(fx::FCW) & !sw::EXCEPTIONS) | (new_fcw & sw::EXCEPTIONS),
        _ => ctx.cpu.x87.fcw,
    };
    host::get_x87(&img, &mut ctx.cpu.x87);
    ctx.cpu.x87.fcw = fcw;
    if KIND == LDCW {
        update_summary(&mut ctx.cpu.x87);
    }
    if KIND == COMI {
        ctx.cpu.flags.set_masked(fl::STATUS, ah as u64 & (fl::ZF | fl::PF | fl::CF));
    }
    Ok(())
}

/// The underflow flag.
const UE: u16 = 0x10;

/// Whether `insn` produced an exactly representable denormal result. With
/// underflow masked (as on the host) that raises no flag, but with it
/// unmasked hardware signals underflow on tininess alone, so the caller
/// adds the flag when the guest unmasks it.
fn exact_tiny(insn: &Instruction, img: &Fx, buf: &[u8; 128]) -> bool {
    use Mnemonic::*;
    let m = insn.mnemonic();
    if matches!(m, Fst | Fstp) && insn.op0_kind() == OpKind::Memory {
        return match insn.memory_size().size() {
            4 => {
                let v = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                v & 0x7f80_0000 == 0 && v & 0x007f_ffff != 0
            }
            8 => {
                let v = u64::from_le_bytes(buf[..8].try_into().unwrap_or([0; 8]));
                v & 0x7ff0_0000_0000_0000 == 0 && v & 0x000f_ffff_ffff_ffff != 0
            }
            _ => false,
        };
    }
    let pops = matches!(m, Faddp | Fsubp | Fsubrp | Fmulp | Fdivp | Fdivrp);
    let computes = pops
        || matches!(m, Fadd | Fiadd | Fsub | Fsubr | Fisub | Fisubr | Fmul | Fimul | Fdiv | Fdivr | Fidiv | Fidivr)
        || matches!(m, Fscale | Fprem | Fprem1);
    if !computes {
        return false;
    }
    let mut d = match insn.op0_kind() {
        OpKind::Register => (insn.op0_register() as usize).wrapping_sub(Register::ST0 as usize) & 7,
        _ => 0,
    };
    if pops {
        d = d.wrapping_sub(1) & 7;
    }
    let at = fx::ST + 16 * d;
    let r = &img.0[at..at + 10];
    let exp = u16::from_le_bytes([r[8], r[9]]) & 0x7fff;
    exp == 0 && r[..8].iter().any(|&b| b != 0)
}

/// Image offsets in the 32-bit protected-mode FSTENV/FSAVE format.
const ENV_FCW: usize = 0;
const ENV_FSW: usize = 4;
/// FIP, FCS/FOP, FDP, FDS: written as zero.
const ENV_POINTERS: std::ops::Range<usize> = 12..28;

/// FNSTENV/FSTENV (28 bytes) and FNSAVE/FSAVE (108 bytes, then FNINIT).
/// The host writes the image, so tags and reserved bits are the host's.
fn store_env(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    if insn.code().op_code().fwait() {
        check_pending(ctx)?;
    }
    let Some((addr, n)) = mem_operand(ctx, insn) else { return Err(ctx.invalid(insn)) };
    let mut buf = [0u8; 128];
    let (img, _) = run_on_host(ctx, insn, &mut buf);
    let guest = ctx.cpu.x87;
    buf[ENV_FCW..ENV_FCW + 2].copy_from_slice(&guest.fcw.to_le_bytes());
    buf[ENV_FSW..ENV_FSW + 2].copy_from_slice(&guest.fsw.to_le_bytes());
    buf[ENV_POINTERS].fill(0);
    // The reserved upper half of the operand-selector dword reads as ones.
    buf[26..28].fill(0xff);
    ctx.write_bytes(addr, &buf[..n])?;
    host::get_x87(&img, &mut ctx.cpu.x87);
    if insn.mnemonic() == Mnemonic::Fnstenv || insn.mnemonic() == Mnemonic::Fstenv {
        // FSTENV masks every exception and leaves FSW alone.
        ctx.cpu.x87.fcw = guest.fcw | sw::EXCEPTIONS;
        ctx.cpu.x87.fsw = guest.fsw;
    } else {
        ctx.cpu.x87.fcw = img.u16_at(fx::FCW);
    }
    Ok(())
}

/// FLDENV (28 bytes) and FRSTOR (108 bytes). The host loads the image with
/// exceptions masked; FCW and FSW are then taken from memory as written.
fn load_env(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    check_pending(ctx)?;
    let Some((addr, n)) = mem_operand(ctx, insn) else { return Err(ctx.invalid(insn)) };
    let mut buf = [0u8; 128];
    ctx.read_bytes(addr, &mut buf[..n])?;
    let fcw = u16::from_le_bytes([buf[ENV_FCW], buf[ENV_FCW + 1]]);
    let fsw = u16::from_le_bytes([buf[ENV_FSW], buf[ENV_FSW + 1]]);
    buf[ENV_FCW..ENV_FCW + 2].copy_from_slice(&(fcw | sw::EXCEPTIONS).to_le_bytes());
    buf[ENV_FSW..ENV_FSW + 2].copy_from_slice(&(fsw & !(sw::ES | sw::B)).to_le_bytes());
    let (img, _) = run_on_host(ctx, insn, &mut buf);
    host::get_x87(&img, &mut ctx.cpu.x87);
    ctx.cpu.x87.fcw = (img.u16_at(fx::FCW) & !sw::EXCEPTIONS) | (fcw & sw::EXCEPTIONS);
    ctx.cpu.x87.fsw = fsw;
    Ok(())
}

/// FNINIT/FINIT: default control word, empty stack, no flags. Register
/// contents are kept, as on hardware.
fn init(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    if insn.mnemonic() == Mnemonic::Finit {
        check_pending(ctx)?;
    }
    let x = &mut ctx.cpu.x87;
    x.fcw = 0x037f;
    x.fsw = 0;
    x.ftw = 0xffff;
    x.fop = 0;
    x.fip = 0;
    x.fdp = 0;
    Ok(())
}

/// FNCLEX/FCLEX: clear the exception flags, SF, ES and B.
fn clear_exceptions(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    if insn.mnemonic() == Mnemonic::Fclex {
        check_pending(ctx)?;
    }
    ctx.cpu.x87.fsw &= !(sw::EXCEPTIONS | sw::SF | sw::ES | sw::B);
    Ok(())
}

fn store_control_word(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    if insn.mnemonic() == Mnemonic::Fstcw {
        check_pending(ctx)?;
    }
    let addr = ctx.ea(insn);
    ctx.store(addr, 2, ctx.cpu.x87.fcw as u64)
}

/// FNSTSW/FSTSW to m16 or AX.
fn store_status_word(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    if insn.mnemonic() == Mnemonic::Fstsw {
        check_pending(ctx)?;
    }
    let fsw = ctx.cpu.x87.fsw as u64;
    if insn.op0_kind() == OpKind::Register {
        ctx.set_reg(Register::AX, fsw);
        return Ok(());
    }
    let addr = ctx.ea(insn);
    ctx.store(addr, 2, fsw)
}

/// WAIT/FWAIT: only the pending-exception check.
fn wait(ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    check_pending(ctx)
}

/// EMMS: every register empty. It runs on the host too, because vendors
/// differ on the rest (AMD also resets TOP).
fn emms(ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    check_pending(ctx)?;
    let mut img = host::fenced_image(&ctx.cpu.x87);
    host::emms(&mut img);
    let fcw = ctx.cpu.x87.fcw;
    host::get_x87(&img, &mut ctx.cpu.x87);
    ctx.cpu.x87.fcw = fcw;
    Ok(())
}

/// Bytes of the FXSAVE area the processor writes (the rest is left alone).
const FX_WRITTEN: usize = 416;

/// FXSAVE/FXSAVE64: the 512-byte image, 16-byte aligned, with x87 state,
/// MXCSR and all sixteen XMM registers. Bytes 416..512 are not written.
fn fxsave(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let addr = ctx.ea(insn);
    ctx.require_aligned(addr, 16)?;
    let img = ctx.cpu.fxsave_image();
    ctx.write_bytes(addr, &img[..FX_WRITTEN])
}

impl crate::state::CpuState {
    /// The FXSAVE image of the x87, MXCSR and XMM state (as Linux puts in
    /// a signal frame). Bytes 416..512 are zero.
    pub fn fxsave_image(&self) -> [u8; 512] {
        let x = self.x87;
        let mut img = Fx::zeroed();
        host::put_x87(&mut img, &x, x.fcw, x.fsw);
        img.put_u32(fx::MXCSR, self.mxcsr);
        img.put_u32(fx::MXCSR_MASK, host::mxcsr_mask());
        for (i, v) in self.xmm.iter().enumerate() {
            img.0[fx::XMM + 16 * i..fx::XMM + 16 * (i + 1)].copy_from_slice(&v.to_le_bytes());
        }
        img.0
    }

    /// Load an FXSAVE image; false (and nothing changed) when its MXCSR
    /// sets a reserved bit.
    pub fn fxrstor_image(&mut self, bytes: &[u8; 512]) -> bool {
        let img = Fx(*bytes);
        let mxcsr = img.u32_at(fx::MXCSR);
        if mxcsr & !host::mxcsr_mask() != 0 {
            return false;
        }
        let x = &mut self.x87;
        host::get_x87(&img, x);
        // Reserved FCW bits: bit 6 reads as one, bits 7 and 13-15 as zero.
        x.fcw = (img.u16_at(fx::FCW) & 0x1f3f) | 0x0040;
        self.mxcsr = mxcsr;
        for (i, v) in self.xmm.iter_mut().enumerate() {
            let at = fx::XMM + 16 * i;
            *v = u128::from_le_bytes(img.0[at..at + 16].try_into().unwrap_or([0; 16]));
        }
        true
    }
}

/// FXRSTOR/FXRSTOR64: load the image; #GP when misaligned or when MXCSR
/// sets a reserved bit. The full tag word is rebuilt from the abridged one
/// and the registers' contents, as hardware does.
fn fxrstor(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let addr = ctx.ea(insn);
    ctx.require_aligned(addr, 16)?;
    let mut img = [0u8; 512];
    ctx.read_bytes(addr, &mut img[..FX_WRITTEN])?;
    if !ctx.cpu.fxrstor_image(&img) {
        return Err(ctx.fault(FaultKind::GeneralProtection));
    }
    Ok(())
}
