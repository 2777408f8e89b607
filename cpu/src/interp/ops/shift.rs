//! Shifts and rotates: SHL/SAL, SHR, SAR, ROL, ROR, RCL, RCR, SHLD, SHRD.
//!
//! The arithmetic lives in `shift` and `shift_double`, pure functions over
//! operand width that return the result and the status flags; the handlers
//! only fetch operands and store results. Flags the manuals call undefined
//! (OF for counts above 1, AF, CF for counts past the operand width) and
//! the result of a 16-bit double shift past 16 are computed as the host
//! vendor's CPUs do (`vendor.rs`), which the oracle tests check.

use iced_x86::{Instruction, Mnemonic};

use super::vendor::{self, szp};
use super::Table;
use crate::cpuid::Vendor;
use crate::interp::{Ctx, Step};
use crate::state::{fl, mask, sign_bit};

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    t.set_mnemonics(&[Shl, Sal], shift_rm::<SHL>);
    t.set_mnemonic(Shr, shift_rm::<SHR>);
    t.set_mnemonic(Sar, shift_rm::<SAR>);
    t.set_mnemonic(Rol, shift_rm::<ROL>);
    t.set_mnemonic(Ror, shift_rm::<ROR>);
    t.set_mnemonic(Rcl, shift_rm::<RCL>);
    t.set_mnemonic(Rcr, shift_rm::<RCR>);
    t.set_mnemonic(Shld, shift_double_rm::<false>);
    t.set_mnemonic(Shrd, shift_double_rm::<true>);
}

pub(crate) const SHL: u8 = 0;
pub(crate) const SHR: u8 = 1;
pub(crate) const SAR: u8 = 2;
pub(crate) const ROL: u8 = 3;
pub(crate) const ROR: u8 = 4;
pub(crate) const RCL: u8 = 5;
pub(crate) const RCR: u8 = 6;

/// The count mask: 6 bits for 64-bit operands, 5 bits otherwise.
#[inline]
fn count_mask(size: u8) -> u32 {
    if size == 8 {
        63
    } else {
        31
    }
}

/// Shift or rotate `val` (`size` bytes) by the raw `count` operand with
/// carry-in `flags & CF`, as `v`'s CPUs do. Returns the result and the new RFLAGS status bits
/// (`flags` is returned unchanged when the operation leaves flags alone),
/// or `None` when the masked count is 0 and nothing changes at all.
pub(crate) fn shift(v: Vendor, op: u8, size: u8, val: u64, count: u64, flags: u64) -> Option<(u64, u64)> {
    let m = mask(size);
    let bits = size as u32 * 8;
    let val = val & m;
    let cnt = count as u32 & count_mask(size);
    if cnt == 0 {
        return None;
    }
    let msb = |v: u64| v & sign_bit(size) != 0;
    let cf_in = flags & fl::CF != 0;
    // The arithmetic shifts set SF/ZF/PF from the result; AF is undefined.
    let af = vendor::shift_af(v);
    let arith = |res: u64, cf: bool, of: bool| {
        let mut f = (flags & !fl::STATUS) | szp(size, res) | af;
        if cf {
            f |= fl::CF;
        }
        if of {
            f |= fl::OF;
        }
        (res, f)
    };
    // Rotates change only CF and OF.
    let rot = |res: u64, cf: bool, of: bool| {
        let mut f = flags & !(fl::CF | fl::OF);
        if cf {
            f |= fl::CF;
        }
        if of {
            f |= fl::OF;
        }
        (res, f)
    };
    Some(match op {
        SHL => {
            let wide = (val as u128) << cnt;
            let res = wide as u64 & m;
            let cf = (wide >> bits) & 1 != 0;
            arith(res, cf, msb(res) != cf)
        }
        SHR => {
            let res = if cnt >= 64 { 0 } else { val >> cnt };
            let cf = (val >> (cnt - 1).min(63)) & 1 != 0;
            arith(res, cf, msb(res) != (res & (sign_bit(size) >> 1) != 0))
        }
        SAR => {
            let s = super::arith::sext(val, size);
            let res = (s >> cnt.min(63)) as u64 & m;
            let cf = (s >> (cnt - 1).min(63)) & 1 != 0;
            arith(res, cf, false)
        }
        ROL => {
            let n = cnt % bits;
            let res = if n == 0 { val } else { ((val << n) | (val >> (bits - n))) & m };
            let cf = res & 1 != 0;
            rot(res, cf, msb(res) != cf)
        }
        ROR => {
            let n = cnt % bits;
            let res = if n == 0 { val } else { ((val >> n) | (val << (bits - n))) & m };
            let cf = msb(res);
            rot(res, cf, msb(res) != (res & (sign_bit(size) >> 1) != 0))
        }
        RCL | RCR => {
            let width = bits + 1;
            let n = match size {
                1 => cnt % 9,
                2 => cnt % 17,
                _ => cnt,
            };
            let wm = (1u128 << width) - 1;
            let x = val as u128 | ((cf_in as u128) << bits);
            // A count that is a multiple of 9 (or 17) rotates nothing, but
            // AMD still recomputes OF from the unchanged value; Intel
            // leaves the flags alone.
            let x = if n == 0 {
                if !vendor::null_rotate_sets_of(v) {
                    return Some((val, flags));
                }
                x
            } else if op == RCL {
                ((x << n) | (x >> (width - n))) & wm
            } else {
                ((x >> n) | (x << (width - n))) & wm
            };
            let res = x as u64 & m;
            let cf = (x >> bits) & 1 != 0;
            let of = if op == RCL { msb(res) != cf } else { msb(res) != (res & (sign_bit(size) >> 1) != 0) };
            rot(res, cf, of)
        }
        _ => return None,
    })
}

/// SHLD (`right == false`) or SHRD: shift `dst` by the raw `count`, filling
/// from `src`, as `v`'s CPUs do. Returns the result and status flags, or
/// `None` when the masked count is 0.
pub(crate) fn shift_double(
    v: Vendor,
    right: bool,
    size: u8,
    dst: u64,
    src: u64,
    count: u64,
    flags: u64,
) -> Option<(u64, u64)> {
    let m = mask(size);
    let bits = size as u32 * 8;
    let (dst, src) = (dst & m, src & m);
    let cnt = count as u32 & count_mask(size);
    if cnt == 0 {
        return None;
    }
    // Build the bit string the hardware shifts. Only 16-bit operands can
    // see counts past the width; for them it is three words, whose third
    // is the vendor's (`vendor::double_shift16_string`).
    let (x, width) = if size == 2 {
        (vendor::double_shift16_string(v, right, dst, src), 48)
    } else if right {
        ((dst as u128) | ((src as u128) << bits), 2 * bits)
    } else {
        (((dst as u128) << bits) | src as u128, 2 * bits)
    };
    let (res, cf, of) = if right {
        let res = ((x >> cnt) as u64) & m;
        // CF is the last bit shifted out (0 for 16-bit counts past 16 on
        // AMD); OF compares the top two bits of the result.
        let cf = (cnt <= bits || vendor::double_shift16_past_width_has_cf(v)) && (x >> (cnt - 1)) & 1 != 0;
        (res, cf, (res ^ (res << 1)) & sign_bit(size) != 0)
    } else {
        let res = ((x >> (width - bits - cnt)) as u64) & m;
        // CF is the last bit shifted out of the destination, and OF
        // compares it with the top of the shifted destination: for 16-bit
        // counts past 16 AMD gives CF = 0 and, at exactly 16, OF = CF.
        // Intel takes CF from the string and OF = CF ^ the result's top.
        if cnt > bits && vendor::double_shift16_past_width_has_cf(v) {
            let cf = (x >> (width - cnt)) & 1 != 0;
            (res, cf, (res & sign_bit(size) != 0) != cf)
        } else {
            let cf = cnt <= bits && (dst >> (bits - cnt)) & 1 != 0;
            let shifted = if cnt >= bits { 0 } else { (dst << cnt) & m };
            (res, cf, (shifted & sign_bit(size) != 0) != cf)
        }
    };
    let mut f = (flags & !fl::STATUS) | szp(size, res) | vendor::shift_af(v);
    if cf {
        f |= fl::CF;
    }
    if of {
        f |= fl::OF;
    }
    Some((res, f))
}

/// SHL..RCR r/m, 1 / CL / imm8.
fn shift_rm<const OP: u8>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let count = ctx.get(insn, 1, 1)?;
    let val = ctx.get(insn, 0, size)?;
    let flags = ctx.cpu.flags.get();
    match shift(ctx.cpu.vendor, OP, size, val, count, flags) {
        Some((res, f)) => {
            ctx.set(insn, 0, size, res)?;
            ctx.cpu.flags.set(f);
        }
        // A zero count still writes a 32-bit register (zeroing bits 63:32).
        None => ctx.set(insn, 0, size, val)?,
    }
    Ok(())
}

/// SHLD/SHRD r/m, r, CL / imm8.
fn shift_double_rm<const RIGHT: bool>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let count = ctx.get(insn, 2, 1)?;
    let src = ctx.get(insn, 1, size)?;
    let dst = ctx.get(insn, 0, size)?;
    let flags = ctx.cpu.flags.get();
    match shift_double(ctx.cpu.vendor, RIGHT, size, dst, src, count, flags) {
        Some((res, f)) => {
            ctx.set(insn, 0, size, res)?;
            ctx.cpu.flags.set(f);
        }
        None => ctx.set(insn, 0, size, dst)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::ops::oracle::{Oracle, Regs, Rng, EDGE_COUNTS, EDGE_VALUES};
    use crate::state::reg;

    /// Operand-size prefix bytes for 1, 2, 4, 8-byte operands.
    fn prefix(size: u8) -> &'static [u8] {
        match size {
            2 => &[0x66],
            8 => &[0x48],
            _ => &[],
        }
    }

    /// Encodings of `op` on RAX (or [RDI] with `mem`) by 1, CL and imm8.
    fn encodings(op: u8, size: u8, count: u64, mem: bool) -> Vec<(String, Vec<u8>)> {
        let digit = [4u8, 5, 7, 0, 1, 2, 3][op as usize];
        let modrm = if mem { (digit << 3) | 7 } else { 0xc0 | (digit << 3) };
        let w = (size != 1) as u8;
        let mut v = Vec::new();
        let mk = |tail: &[u8]| [prefix(size), tail].concat();
        if count == 1 {
            v.push(("by1".to_string(), mk(&[0xd0 | w, modrm])));
        }
        v.push(("cl".to_string(), mk(&[0xd2 | w, modrm])));
        v.push(("imm".to_string(), mk(&[0xc0 | w, modrm, count as u8])));
        v
    }

    const NAMES: [&str; 7] = ["shl", "shr", "sar", "rol", "ror", "rcl", "rcr"];

    fn one(o: &mut Oracle, op: u8, size: u8, val: u64, count: u64, flags: u64, mem: bool) {
        for (form, bytes) in encodings(op, size, count, mem) {
            let mut r = Regs { flags, ..Default::default() };
            r.gpr[reg::RCX] = count | 0xabcd_0000;
            let mut bytes_mem = Vec::new();
            if mem {
                r.gpr[reg::RDI] = o.data() + 8;
                r.gpr[reg::RAX] = 0x1111;
                bytes_mem = [[0u8; 8], val.to_le_bytes()].concat();
            } else {
                r.gpr[reg::RAX] = val;
            }
            let what = format!("{} size {size} {form} val {val:#x} count {count} mem {mem}", NAMES[op as usize]);
            o.check(&what, &bytes, &r, &bytes_mem);
        }
    }

    #[test]
    fn shifts_match_host() {
        let Some(mut o) = Oracle::new() else { return };
        let mut rng = Rng(0x5eed_1234);
        for op in SHL..=RCR {
            for size in [1u8, 2, 4, 8] {
                for &val in EDGE_VALUES {
                    for &count in EDGE_COUNTS {
                        let flags = rng.next() & fl::STATUS;
                        one(&mut o, op, size, val, count, flags, false);
                    }
                }
                for _ in 0..60 {
                    let (val, count, flags) = (rng.next(), rng.next() & 0xff, rng.next() & fl::STATUS);
                    one(&mut o, op, size, val, count, flags, rng.next() & 1 != 0);
                }
            }
        }
        o.finish("shift");
    }

    #[test]
    fn double_shifts_match_host() {
        let Some(mut o) = Oracle::new() else { return };
        let mut rng = Rng(0x0dd_5eed);
        for right in [false, true] {
            for size in [2u8, 4, 8] {
                let mut cases: Vec<(u64, u64, u64)> = Vec::new();
                for &a in EDGE_VALUES.iter().step_by(2) {
                    for &count in EDGE_COUNTS.iter().chain(&[18, 20, 24, 30]) {
                        cases.push((a, rng.next(), count));
                    }
                }
                for _ in 0..200 {
                    cases.push((rng.next(), rng.next(), rng.next() & 0xff));
                }
                for (dst, src, count) in cases {
                    let op = if right { 0xac } else { 0xa4 };
                    let name = if right { "shrd" } else { "shld" };
                    // shXd rax, rdx, imm8 / cl (modrm 0xd0: reg = rdx, rm = rax)
                    for (form, tail) in [("imm", vec![0x0f, op, 0xd0, count as u8]), ("cl", vec![0x0f, op + 1, 0xd0])] {
                        let bytes = [prefix(size), &tail].concat();
                        let mut r = Regs { flags: rng.next() & fl::STATUS, ..Default::default() };
                        r.gpr[reg::RAX] = dst;
                        r.gpr[reg::RDX] = src;
                        r.gpr[reg::RCX] = count;
                        let what = format!("{name} size {size} {form} dst {dst:#x} src {src:#x} count {count}");
                        o.check(&what, &bytes, &r, &[]);
                    }
                }
            }
        }
        o.finish("shxd");
    }

    /// Hand-checked values for the pure helper, independent of the host.
    #[test]
    fn shift_table() {
        let check = |op, size, val, count, cf_in: bool, res: u64, flags: u64| {
            for v in [Vendor::Amd, Vendor::Intel] {
                let (r, f) = shift(v, op, size, val, count, cf_in as u64).expect("count is not 0");
                assert_eq!(
                    (r, f & (fl::CF | fl::OF)),
                    (res, flags),
                    "{v:?} op {op} size {size} val {val:#x} count {count}"
                );
            }
        };
        check(SHL, 1, 0x81, 1, false, 0x02, fl::CF | fl::OF);
        check(SHR, 2, 0x8001, 1, false, 0x4000, fl::CF | fl::OF);
        check(SAR, 4, 0x8000_0000, 31, false, 0xffff_ffff, 0);
        check(ROL, 8, 0x8000_0000_0000_0000, 1, false, 1, fl::CF | fl::OF);
        check(RCL, 1, 0x80, 1, true, 0x01, fl::CF | fl::OF);
        assert_eq!(shift(Vendor::Amd, SHL, 4, 5, 32, 0), None);
        assert_eq!(shift_double(Vendor::Amd, false, 4, 0x8000_0000, 0xf000_0000, 4, 0).map(|x| x.0), Some(0xf));
    }

    /// Where the vendors differ: (vendor, case) -> result and status flags.
    #[test]
    fn vendor_shift_table() {
        use Vendor::{Amd, Intel};
        // SHL AL by 1 from 0x41: SF and OF (0x82), PF (two bits); AF set
        // only on AMD.
        assert_eq!(shift(Amd, SHL, 1, 0x41, 1, 0), Some((0x82, fl::SF | fl::OF | fl::PF | fl::AF)));
        assert_eq!(shift(Intel, SHL, 1, 0x41, 1, 0), Some((0x82, fl::SF | fl::OF | fl::PF)));
        // RCR AL by 9 with CF = 0 on 0x40: nothing rotates; AMD writes OF
        // (bit 7 ^ bit 6 = 1), Intel leaves the flags as they were.
        assert_eq!(shift(Amd, RCR, 1, 0x40, 9, fl::ZF), Some((0x40, fl::ZF | fl::OF)));
        assert_eq!(shift(Intel, RCR, 1, 0x40, 9, fl::ZF), Some((0x40, fl::ZF)));
        // SHLD AX, DX, 20 with AX = 0xdddd, DX = 0x5555: AMD shifts
        // dst:src:src, Intel dst:src:dst; Intel's CF is DX bit 12.
        let amd = shift_double(Amd, false, 2, 0xdddd, 0x5555, 20, 0).expect("count");
        let intel = shift_double(Intel, false, 2, 0xdddd, 0x5555, 20, 0).expect("count");
        assert_eq!((amd.0, amd.1 & (fl::CF | fl::OF | fl::AF)), (0x5555, fl::AF));
        assert_eq!((intel.0, intel.1 & (fl::CF | fl::OF | fl::AF)), (0x555d, fl::CF | fl::OF));
        // SHRD AX, DX, 18: AMD src:src:dst, Intel dst:src:dst; CF is DX bit 1.
        let amd = shift_double(Amd, true, 2, 0xdddd, 0x5556, 18, 0).expect("count");
        let intel = shift_double(Intel, true, 2, 0xdddd, 0x5556, 18, 0).expect("count");
        assert_eq!((amd.0, amd.1 & fl::CF), (0x9555, 0));
        assert_eq!((intel.0, intel.1 & fl::CF), (0x5555, fl::CF));
    }
}
