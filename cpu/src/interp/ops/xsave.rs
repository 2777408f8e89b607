//! XGETBV (ECX = 0, and 1 with the model's `xgetbv1`), XSAVE, XSAVEOPT,
//! XSAVEC and XRSTOR (both forms) for the CPU model's XCR0 (x87, SSE and,
//! with AVX, the YMM upper halves): the FXSAVE legacy region, the 64-byte
//! header at 512, the AVX component at 576 — in the standard format and,
//! as AVX is the only extended component, in the compacted one too. No
//! XSAVES/XRSTORS (supervisor state; CPUID 0xD.1 EAX bit 3 is clear).
//!
//! XINUSE, the init tracking: x87 and SSE are always reported in use; AVX
//! when some upper half is not zero (hardware's tracking is its own; any
//! value is architecturally allowed for a component in its initial state,
//! and XRSTOR gives the same state back either way). XSAVEOPT and XSAVEC
//! skip what is not in use (the AVX component of zero upper halves), as
//! their init optimization allows; XSAVEOPT never uses the modified
//! optimization (allowed: it may always save).

use iced_x86::{Code, Instruction};

use super::Table;
use crate::engine::FaultKind;
use crate::interp::{Ctx, Step};
use crate::state::reg;

pub(super) fn register(t: &mut Table) {
    t.set(&[Code::Xgetbv], xgetbv);
    t.set(&[Code::Xsave_mem, Code::Xsave64_mem], xsave);
    t.set(&[Code::Xsaveopt_mem, Code::Xsaveopt64_mem], xsaveopt);
    t.set(&[Code::Xsavec_mem, Code::Xsavec64_mem], xsavec);
    t.set(&[Code::Xrstor_mem, Code::Xrstor64_mem], xrstor);
}

/// Byte ranges of the legacy region: the x87 state (around MXCSR and its
/// mask at 24..32), and the XMM registers.
const X87: [std::ops::Range<usize>; 2] = [0..24, 32..160];
const MXCSR: std::ops::Range<usize> = 24..32;
const XMM: std::ops::Range<usize> = 160..416;
const HEADER: u64 = 512;
const YMM: u64 = crate::cpuid::XSAVE_YMM_OFFSET as u64;

/// XGETBV: XCR0 (ECX = 0) or, when the model has `xgetbv1`, XCR0 AND
/// XINUSE (ECX = 1) into EDX:EAX; any other register is #GP.
fn xgetbv(ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    let model = crate::cpuid::model();
    let v = match ctx.cpu.gpr[reg::RCX] as u32 {
        0 => model.xcr0(),
        1 if model.has("xgetbv1") => model.xcr0() & xinuse(ctx),
        _ => return Err(ctx.fault(FaultKind::GeneralProtection)),
    };
    ctx.cpu.gpr[reg::RAX] = v & 0xffff_ffff;
    ctx.cpu.gpr[reg::RDX] = v >> 32;
    Ok(())
}

/// The components not in their initial state, as urun tracks them.
fn xinuse(ctx: &Ctx<'_>) -> u64 {
    0b11 | if ctx.cpu.ymm_hi.iter().any(|v| *v != 0) { 0b100 } else { 0 }
}

/// The requested-feature bitmap: EDX:EAX and XCR0.
fn rfbm(ctx: &Ctx<'_>) -> u64 {
    let edx_eax = (ctx.cpu.gpr[reg::RDX] << 32) | (ctx.cpu.gpr[reg::RAX] & 0xffff_ffff);
    edx_eax & crate::cpuid::model().xcr0()
}

/// The YMM upper halves as the AVX component's 256 bytes.
fn ymm_image(hi: &[u128; 16]) -> [u8; 256] {
    let mut b = [0u8; 256];
    for (i, v) in hi.iter().enumerate() {
        b[16 * i..16 * (i + 1)].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// XSAVE: every requested component; XSTATE_BV's requested bits say
/// which are in use, the others are kept.
fn xsave(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    save(ctx, insn, Form::Xsave)
}

/// XSAVEOPT: as XSAVE, but only the components in use are written.
fn xsaveopt(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    save(ctx, insn, Form::Xsaveopt)
}

/// XSAVEC: the components requested and in use, compacted (AVX, the one
/// extended component, at 576 all the same); XSTATE_BV = RFBM AND XINUSE,
/// XCOMP_BV = RFBM with bit 63; the rest of the header is not written.
fn xsavec(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    save(ctx, insn, Form::Xsavec)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Xsave,
    Xsaveopt,
    Xsavec,
}

fn save(ctx: &mut Ctx<'_>, insn: &Instruction, form: Form) -> Step {
    let addr = ctx.ea(insn);
    ctx.require_aligned(addr, 64)?;
    let rfbm = rfbm(ctx);
    let in_use = xinuse(ctx);
    let write = if form == Form::Xsave { rfbm } else { rfbm & in_use };
    let img = ctx.cpu.fxsave_image();
    if write & 1 != 0 {
        for r in X87 {
            ctx.write_bytes(addr + r.start as u64, &img[r])?;
        }
    }
    // MXCSR goes with SSE or AVX, whether in use or not; for XSAVEC with
    // SSE alone (as the host does).
    let mxcsr = if form == Form::Xsavec { 0b10 } else { 0b110 };
    if rfbm & mxcsr != 0 {
        ctx.write_bytes(addr + MXCSR.start as u64, &img[MXCSR])?;
    }
    if write & 0b10 != 0 {
        ctx.write_bytes(addr + XMM.start as u64, &img[XMM])?;
    }
    if write & 0b100 != 0 {
        let b = ymm_image(&ctx.cpu.ymm_hi);
        ctx.write_bytes(addr + YMM, &b)?;
    }
    if form == Form::Xsavec {
        ctx.store(addr + HEADER, 8, in_use & rfbm)?;
        return ctx.store(addr + HEADER + 8, 8, rfbm | 1 << 63);
    }
    let old = ctx.load(addr + HEADER, 8)?;
    ctx.store(addr + HEADER, 8, (old & !rfbm) | (in_use & rfbm))
}

fn xrstor(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let addr = ctx.ea(insn);
    ctx.require_aligned(addr, 64)?;
    let mut header = [0u8; 64];
    ctx.read_bytes(addr + HEADER, &mut header)?;
    let bv = u64::from_le_bytes(header[..8].try_into().unwrap_or([0; 8]));
    let comp = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
    let xcr0 = crate::cpuid::model().xcr0();
    // The compacted form (XCOMP_BV bit 63) needs XSAVEC in the model, its
    // components in XCR0, XSTATE_BV's among them and header bytes 16..64
    // zero; the standard form header bytes 8..24 zero (XCOMP_BV and the
    // next 8; the rest is not checked); both XSTATE_BV in XCR0.
    let compacted = comp >> 63 != 0;
    let comp = comp & !(1 << 63);
    let bad = if compacted {
        !crate::cpuid::model().has("xsavec")
            || comp & !xcr0 != 0
            || bv & !comp != 0
            || header[16..].iter().any(|b| *b != 0)
    } else {
        header[8..24].iter().any(|b| *b != 0)
    };
    if bad || bv & !xcr0 != 0 {
        return Err(ctx.fault(FaultKind::GeneralProtection));
    }
    let rfbm = rfbm(ctx);
    let mut img = ctx.cpu.fxsave_image();
    let mut mem = [0u8; 512];
    ctx.read_bytes(addr, &mut mem[..416])?;
    if rfbm & 1 != 0 {
        for r in X87 {
            if bv & 1 != 0 {
                img[r.clone()].copy_from_slice(&mem[r]);
            } else {
                img[r].fill(0);
            }
        }
        if bv & 1 == 0 {
            // The initial x87 state: FCW 0x37F, all registers empty.
            img[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        }
    }
    if compacted {
        // MXCSR goes with SSE alone here: loaded when SSE is, else its
        // initial value.
        if rfbm & 0b10 != 0 {
            let v = if bv & 0b10 != 0 { [mem[24], mem[25], mem[26], mem[27]] } else { 0x1f80u32.to_le_bytes() };
            img[24..28].copy_from_slice(&v);
        }
    } else if rfbm & 0b110 != 0 {
        img[24..28].copy_from_slice(&mem[24..28]);
    }
    if rfbm & 0b10 != 0 {
        if bv & 0b10 != 0 {
            img[XMM].copy_from_slice(&mem[XMM]);
        } else {
            img[XMM].fill(0);
        }
    }
    let mut ymm = ctx.cpu.ymm_hi;
    if rfbm & 0b100 != 0 {
        ymm = [0; 16];
        if bv & 0b100 != 0 {
            let mut b = [0u8; 256];
            ctx.read_bytes(addr + YMM, &mut b)?;
            for (i, v) in ymm.iter_mut().enumerate() {
                *v = u128::from_le_bytes(b[16 * i..16 * (i + 1)].try_into().unwrap_or([0; 16]));
            }
        }
    }
    let mut next = ctx.cpu.clone();
    if !next.fxrstor_image(&img) {
        return Err(ctx.fault(FaultKind::GeneralProtection));
    }
    ctx.cpu.x87 = next.x87;
    ctx.cpu.mxcsr = next.mxcsr;
    ctx.cpu.xmm = next.xmm;
    ctx.cpu.ymm_hi = ymm;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::difftest::Snippet;
    use crate::engine::Exit;
    use crate::state::reg;

    /// XGETBV with ECX = 1 (where the model has it): XCR0 AND XINUSE, AVX
    /// in use only while an upper half is not zero; ECX = 2 is #GP.
    #[test]
    fn xgetbv1_reports_the_components_in_use() {
        let m = crate::cpuid::model();
        let s = Snippet::new();
        let xgetbv = [0x0f, 0x01, 0xd0];
        let run = |ecx: u64, hi: u128| {
            s.run(&xgetbv, |c| {
                c.gpr[reg::RCX] = ecx;
                c.ymm_hi[3] = hi;
            })
        };
        let (c, exit) = run(0, 0);
        assert!(matches!(exit, Exit::Syscall), "{exit:?}");
        assert_eq!(c.gpr[reg::RAX] | c.gpr[reg::RDX] << 32, m.xcr0());
        let (c, exit) = run(1, 0);
        if !m.has("xgetbv1") {
            assert!(matches!(exit, Exit::Fault(_)), "{exit:?}");
            return;
        }
        assert!(matches!(exit, Exit::Syscall), "{exit:?}");
        assert_eq!(c.gpr[reg::RAX], 0b11);
        let (c, _) = run(1, 5);
        assert_eq!(c.gpr[reg::RAX], m.xcr0() & 0b111);
        let (_, exit) = run(2, 0);
        assert!(matches!(exit, Exit::Fault(_)), "{exit:?}");
    }
}
