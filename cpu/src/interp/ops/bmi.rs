//! Bit-manipulation and other scalar extensions: BMI1 (ANDN, BEXTR, BLSI,
//! BLSMSK, BLSR; TZCNT is in `bits.rs`), BMI2 (BZHI, PDEP, PEXT, RORX,
//! SARX, SHLX, SHRX, MULX), ADX (ADCX, ADOX), CRC32 (SSE4.2) and
//! RDRAND/RDSEED; also CLFLUSH, a general-purpose gap parked here (see
//! `clflush_m8`).
//!
//! The BMI forms are VEX-encoded, which `Table::set_mnemonic` does not
//! cover, so they are registered by explicit `Code`. Flags the manuals
//! leave undefined are set as the host vendor's CPUs set them
//! (`vendor.rs`); the oracle tests in `bmi_tests.rs` compare every status
//! flag with the host.

use iced_x86::{Code, Instruction, Register};

use super::{vendor, Table};
use crate::interp::{Ctx, Step};
use crate::state::{fl, mask};

pub(super) fn register(t: &mut Table) {
    use Code::*;
    t.set(&[VEX_Andn_r32_r32_rm32, VEX_Andn_r64_r64_rm64], andn_r_r_rm);
    t.set(&[VEX_Bextr_r32_rm32_r32, VEX_Bextr_r64_rm64_r64], bextr_r_rm_r);
    t.set(&[VEX_Blsi_r32_rm32, VEX_Blsi_r64_rm64], bls_r_rm::<BLSI>);
    t.set(&[VEX_Blsmsk_r32_rm32, VEX_Blsmsk_r64_rm64], bls_r_rm::<BLSMSK>);
    t.set(&[VEX_Blsr_r32_rm32, VEX_Blsr_r64_rm64], bls_r_rm::<BLSR>);
    t.set(&[VEX_Bzhi_r32_rm32_r32, VEX_Bzhi_r64_rm64_r64], bzhi_r_rm_r);
    t.set(&[VEX_Pdep_r32_r32_rm32, VEX_Pdep_r64_r64_rm64], pdep_r_r_rm);
    t.set(&[VEX_Pext_r32_r32_rm32, VEX_Pext_r64_r64_rm64], pext_r_r_rm);
    t.set(&[VEX_Rorx_r32_rm32_imm8, VEX_Rorx_r64_rm64_imm8], rorx_r_rm_imm8);
    t.set(&[VEX_Sarx_r32_rm32_r32, VEX_Sarx_r64_rm64_r64], shiftx_r_rm_r::<SARX>);
    t.set(&[VEX_Shlx_r32_rm32_r32, VEX_Shlx_r64_rm64_r64], shiftx_r_rm_r::<SHLX>);
    t.set(&[VEX_Shrx_r32_rm32_r32, VEX_Shrx_r64_rm64_r64], shiftx_r_rm_r::<SHRX>);
    t.set(&[VEX_Mulx_r32_r32_rm32, VEX_Mulx_r64_r64_rm64], mulx_r_r_rm);
    t.set(&[Adcx_r32_rm32, Adcx_r64_rm64], adx_r_rm::<{ fl::CF }>);
    t.set(&[Adox_r32_rm32, Adox_r64_rm64], adx_r_rm::<{ fl::OF }>);
    t.set(&[Crc32_r32_rm8, Crc32_r32_rm16, Crc32_r32_rm32, Crc32_r64_rm8, Crc32_r64_rm64], crc32_r_rm);
    t.set(&[Rdrand_r16, Rdrand_r32, Rdrand_r64], rdrand_r::<false>);
    t.set(&[Rdseed_r16, Rdseed_r32, Rdseed_r64], rdrand_r::<true>);
    t.set(&[Clflush_m8], clflush_m8);
}

/// ANDN r, r(vvvv), r/m: `!op1 & op2`.
fn andn_r_r_rm(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let a = ctx.get(insn, 1, size)?;
    let b = ctx.get(insn, 2, size)?;
    let res = !a & b & mask(size);
    ctx.set(insn, 0, size, res)?;
    ctx.cpu.flags.set_masked(fl::STATUS, vendor::bmi(ctx.cpu.vendor, size, res, false));
    Ok(())
}

/// `v` with only its low `n` bits kept (`n` may exceed 63).
#[inline]
fn low_bits(v: u64, n: u32) -> u64 {
    if n >= 64 {
        v
    } else {
        v & ((1u64 << n) - 1)
    }
}

/// BEXTR r, r/m, r(vvvv): the field of `len = ctl[15:8]` bits starting at
/// bit `start = ctl[7:0]` of the source, zero-extended.
fn bextr_r_rm_r(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let src = ctx.get(insn, 1, size)?;
    let ctl = ctx.get(insn, 2, size)?;
    let start = (ctl & 0xff) as u32;
    let len = ((ctl >> 8) & 0xff) as u32;
    let res = if start >= size as u32 * 8 { 0 } else { low_bits(src >> start, len) };
    ctx.set(insn, 0, size, res)?;
    // ZF is the only defined status flag besides CF = OF = 0.
    ctx.cpu.flags.set_masked(fl::STATUS, vendor::bextr(ctx.cpu.vendor, size, res));
    Ok(())
}

const BLSI: u8 = 0;
const BLSMSK: u8 = 1;
const BLSR: u8 = 2;

/// BLSI (`src & -src`), BLSMSK (`src ^ (src - 1)`) and BLSR
/// (`src & (src - 1)`) into the VEX.vvvv register. BLSI sets CF when the
/// source is not zero, the other two when it is zero.
fn bls_r_rm<const OP: u8>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let src = ctx.get(insn, 1, size)?;
    let res = match OP {
        BLSI => src & src.wrapping_neg(),
        BLSMSK => src ^ src.wrapping_sub(1),
        _ => src & src.wrapping_sub(1),
    } & mask(size);
    ctx.set(insn, 0, size, res)?;
    let cf = if OP == BLSI { src != 0 } else { src == 0 };
    ctx.cpu.flags.set_masked(fl::STATUS, vendor::bmi(ctx.cpu.vendor, size, res, cf));
    Ok(())
}

/// BZHI r, r/m, r(vvvv): clear the source's bits from `index = op2[7:0]`
/// up; CF is set when the index is past the operand (source unchanged).
fn bzhi_r_rm_r(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let bits = size as u32 * 8;
    let src = ctx.get(insn, 1, size)?;
    let index = (ctx.get(insn, 2, size)? & 0xff) as u32;
    let res = low_bits(src, index);
    ctx.set(insn, 0, size, res)?;
    ctx.cpu.flags.set_masked(fl::STATUS, vendor::bmi(ctx.cpu.vendor, size, res, index > bits - 1));
    Ok(())
}

/// PDEP r, r(vvvv), r/m: deposit the low bits of op1 at the set bits of
/// the mask op2, low to high. No flags.
fn pdep_r_r_rm(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let src = ctx.get(insn, 1, size)?;
    let mut m = ctx.get(insn, 2, size)?;
    let (mut res, mut k) = (0u64, 0u32);
    while m != 0 {
        let low = m & m.wrapping_neg();
        if (src >> k) & 1 != 0 {
            res |= low;
        }
        k += 1;
        m ^= low;
    }
    ctx.set(insn, 0, size, res)
}

/// PEXT r, r(vvvv), r/m: gather the bits of op1 at the set bits of the
/// mask op2 into the low bits of the result. No flags.
fn pext_r_r_rm(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let src = ctx.get(insn, 1, size)?;
    let mut m = ctx.get(insn, 2, size)?;
    let (mut res, mut k) = (0u64, 0u32);
    while m != 0 {
        let low = m & m.wrapping_neg();
        if src & low != 0 {
            res |= 1 << k;
        }
        k += 1;
        m ^= low;
    }
    ctx.set(insn, 0, size, res)
}

/// RORX r, r/m, imm8: rotate right by `imm8 mod width`. No flags.
fn rorx_r_rm_imm8(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let src = ctx.get(insn, 1, size)?;
    let n = insn.immediate8() as u32;
    let res = if size == 8 { src.rotate_right(n & 63) } else { (src as u32).rotate_right(n & 31) as u64 };
    ctx.set(insn, 0, size, res)
}

const SARX: u8 = 0;
const SHLX: u8 = 1;
const SHRX: u8 = 2;

/// SARX/SHLX/SHRX r, r/m, r(vvvv): shift by `op2 mod width`. No flags.
fn shiftx_r_rm_r<const OP: u8>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let bits = size as u32 * 8;
    let src = ctx.get(insn, 1, size)?;
    let n = (ctx.get(insn, 2, size)? as u32) & (bits - 1);
    let res = match OP {
        SARX => (super::arith::sext(src, size) >> n) as u64,
        SHLX => src << n,
        _ => src >> n,
    } & mask(size);
    ctx.set(insn, 0, size, res)
}

/// MULX r(hi), r(vvvv, lo), r/m: unsigned rDX * r/m without flags. When
/// both destinations are the same register it gets the high half.
fn mulx_r_r_rm(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let rdx = if size == 8 { Register::RDX } else { Register::EDX };
    let a = ctx.reg(rdx) as u128;
    let b = ctx.get(insn, 2, size)? as u128;
    let p = a * b;
    let bits = size as u32 * 8;
    ctx.set(insn, 1, size, p as u64 & mask(size))?;
    ctx.set(insn, 0, size, (p >> bits) as u64 & mask(size))
}

/// ADCX (`FLAG == CF`) and ADOX (`FLAG == OF`) r, r/m: add with the given
/// flag as carry in and out; no other flag changes.
fn adx_r_rm<const FLAG: u64>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let a = ctx.get(insn, 0, size)?;
    let b = ctx.get(insn, 1, size)?;
    let cin = ctx.cpu.flags.get() & FLAG != 0;
    let sum = a as u128 + b as u128 + cin as u128;
    ctx.set(insn, 0, size, sum as u64 & mask(size))?;
    ctx.cpu.flags.set_bits(FLAG, sum >> (size as u32 * 8) != 0);
    Ok(())
}

/// The bit-reflected CRC-32C (Castagnoli) polynomial.
const CRC32C_POLY: u32 = 0x82f6_3b78;

/// CRC-32C of one byte, bit-reflected, as a table.
static CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ CRC32C_POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Fold the low `size` bytes of `data` (least significant first) into
/// `crc`, with no pre- or post-inversion, as the CRC32 instruction does.
pub(crate) fn crc32c(mut crc: u32, data: u64, size: u8) -> u32 {
    for k in 0..size as u32 {
        let byte = (data >> (8 * k)) as u8;
        crc = (crc >> 8) ^ CRC32C_TABLE[((crc as u8) ^ byte) as usize];
    }
    crc
}

/// CRC32 r32/r64, r/m8/16/32/64: accumulate into the low 32 bits of the
/// destination, which is written zero-extended. No flags.
fn crc32_r_rm(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let src_size = Ctx::op_size(insn, 1);
    let data = ctx.get(insn, 1, src_size)?;
    let crc = ctx.reg(insn.op0_register()) as u32;
    ctx.set_reg(insn.op0_register(), crc32c(crc, data, src_size) as u64);
    Ok(())
}

/// Random bits from the host: its RDRAND/RDSEED when it has them (retried
/// as the vendors advise), otherwise `getrandom(2)`. `None` only if both fail.
fn host_random(seed: bool) -> Option<u64> {
    let has = if seed {
        std::arch::is_x86_feature_detected!("rdseed")
    } else {
        std::arch::is_x86_feature_detected!("rdrand")
    };
    if has {
        for _ in 0..10 {
            let (v, ok): (u64, u8);
            // SAFETY: the host reported the instruction; it only writes
            // the named registers and flags.
            unsafe {
                if seed {
                    std::arch::asm!("rdseed {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack));
                } else {
                    std::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack));
                }
            }
            if ok != 0 {
                return Some(v);
            }
        }
    }
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is 8 writable bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    (n == 8).then(|| u64::from_le_bytes(buf))
}

/// RDRAND (`SEED == false`) and RDSEED r16/r32/r64: CF = 1 with a random
/// value, OF/SF/ZF/AF/PF cleared. If the host has no randomness to give,
/// the guest sees the architectural failure: CF = 0 and a zero value.
fn rdrand_r<const SEED: bool>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let r = insn.op0_register();
    let v = host_random(SEED);
    ctx.set_reg(r, v.unwrap_or(0) & mask(Ctx::reg_size(r)));
    ctx.cpu.flags.set_masked(fl::STATUS, if v.is_some() { fl::CF } else { 0 });
    Ok(())
}

/// CLFLUSH m8: a gap in the general-purpose set filled in passing (the
/// CPUID model passes the host's CLFSH bit through). It belongs next to the
/// fences in `data.rs`; it lives here only because this change may touch
/// no other file. The line must be readable, as for a byte load; the host
/// then flushes the same line, since guest addresses are host addresses
/// (which matters for guests writing to persistent memory).
fn clflush_m8(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let addr = ctx.ea(insn);
    ctx.load(addr, 1)?;
    // SAFETY: `load` just checked that `addr` is guest memory the guest may
    // read, and guest addresses are host addresses; CLFLUSH changes no
    // data, only where it is cached (a racing unmap becomes the fault).
    unsafe { crate::hostfault::flush(addr) }.map_err(|e| ctx.fault(ctx.mem.guest_fault_kind(&e)))
}

#[cfg(test)]
#[path = "bmi_tests.rs"]
mod tests;
