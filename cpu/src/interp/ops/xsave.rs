//! XGETBV, XSAVE and XRSTOR for the CPU model's XCR0 (x87, SSE and, with
//! AVX, the YMM upper halves), in the standard (non-compacted) format:
//! the FXSAVE legacy region, the 64-byte header at 512, the AVX component
//! at 576. The model advertises neither XSAVEOPT, XSAVEC nor XSAVES
//! (CPUID 0xD.1 EAX = 0), and a compacted image given to XRSTOR is #GP.
//!
//! XSTATE_BV written by XSAVE: x87 and SSE are always reported in use;
//! AVX when some upper half is not zero (hardware's init tracking is its
//! own; any value is architecturally allowed for a component in its
//! initial state, and XRSTOR gives the same state back either way).

use iced_x86::{Code, Instruction};

use super::Table;
use crate::engine::FaultKind;
use crate::interp::{Ctx, Step};
use crate::state::reg;

pub(super) fn register(t: &mut Table) {
    t.set(&[Code::Xgetbv], xgetbv);
    t.set(&[Code::Xsave_mem, Code::Xsave64_mem], xsave);
    t.set(&[Code::Xrstor_mem, Code::Xrstor64_mem], xrstor);
}

/// Byte ranges of the legacy region: the x87 state (around MXCSR and its
/// mask at 24..32), and the XMM registers.
const X87: [std::ops::Range<usize>; 2] = [0..24, 32..160];
const MXCSR: std::ops::Range<usize> = 24..32;
const XMM: std::ops::Range<usize> = 160..416;
const HEADER: u64 = 512;
const YMM: u64 = crate::cpuid::XSAVE_YMM_OFFSET as u64;

/// XGETBV: XCR0 (ECX = 0) into EDX:EAX; any other register is #GP (the
/// model has no XGETBV with ECX = 1).
fn xgetbv(ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    if ctx.cpu.gpr[reg::RCX] as u32 != 0 {
        return Err(ctx.fault(FaultKind::GeneralProtection));
    }
    let xcr0 = crate::cpuid::model().xcr0();
    ctx.cpu.gpr[reg::RAX] = xcr0 & 0xffff_ffff;
    ctx.cpu.gpr[reg::RDX] = xcr0 >> 32;
    Ok(())
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

fn xsave(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let addr = ctx.ea(insn);
    ctx.require_aligned(addr, 64)?;
    let rfbm = rfbm(ctx);
    let img = ctx.cpu.fxsave_image();
    if rfbm & 1 != 0 {
        for r in X87 {
            ctx.write_bytes(addr + r.start as u64, &img[r])?;
        }
    }
    if rfbm & 0b110 != 0 {
        ctx.write_bytes(addr + MXCSR.start as u64, &img[MXCSR])?;
    }
    if rfbm & 0b10 != 0 {
        ctx.write_bytes(addr + XMM.start as u64, &img[XMM])?;
    }
    if rfbm & 0b100 != 0 {
        let b = ymm_image(&ctx.cpu.ymm_hi);
        ctx.write_bytes(addr + YMM, &b)?;
    }
    let in_use = 0b11 | if ctx.cpu.ymm_hi.iter().any(|v| *v != 0) { 0b100 } else { 0 };
    let old = ctx.load(addr + HEADER, 8)?;
    ctx.store(addr + HEADER, 8, (old & !rfbm) | (in_use & rfbm))
}

fn xrstor(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let addr = ctx.ea(insn);
    ctx.require_aligned(addr, 64)?;
    let mut header = [0u8; 64];
    ctx.read_bytes(addr + HEADER, &mut header)?;
    let bv = u64::from_le_bytes(header[..8].try_into().unwrap_or([0; 8]));
    let xcr0 = crate::cpuid::model().xcr0();
    // A compacted image (XCOMP_BV), reserved header bytes, or a component
    // outside XCR0: #GP.
    if bv & !xcr0 != 0 || header[8..].iter().any(|b| *b != 0) {
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
    if rfbm & 0b110 != 0 {
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
