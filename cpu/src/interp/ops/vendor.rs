//! What the manuals leave undefined, computed as each vendor's CPUs do.
//!
//! The interpreter reports the host's vendor through CPUID, so a guest can
//! tell it is on AMD or Intel; where the two differ — status flags the
//! manuals call undefined, the counter write of a zero-count string
//! operation, the result of a 16-bit double shift past 16 — it computes
//! what that vendor's CPUs compute. The vendor is `CpuState::vendor`, set
//! once per guest thread from `Vendor::host()`, so a handler pays one
//! well-predicted branch on a field already in cache.
//!
//! Each helper takes the operand width where it matters and returns the
//! six status flags (`fl::STATUS` bits) the instruction leaves; callers
//! store them with `Flags::set_masked(fl::STATUS, ..)`. Where a behaviour
//! was not measured on real hardware of that vendor, or varies between its
//! generations, the comparison masks it: the one table of those cases is
//! `crate::difftest::masks::TABLE`, which names each and why.

use crate::cpuid::Vendor;
use crate::state::{fl, mask, parity, sign_bit};

/// SF, ZF and PF of `res` as an operand of `size` bytes.
#[inline]
pub(crate) fn szp(size: u8, res: u64) -> u64 {
    let mut f = 0;
    if res & sign_bit(size) != 0 {
        f |= fl::SF;
    }
    if res & mask(size) == 0 {
        f |= fl::ZF;
    }
    if parity(res) {
        f |= fl::PF;
    }
    f
}

/// The flags of `flags` in `keep`, plus `set`.
#[inline]
fn keep(flags: u64, keep: u64, set: u64) -> u64 {
    (flags & keep & fl::STATUS) | set
}

/// BSF/BSR (`index` is the bit found; ignored for a zero source): ZF =
/// source is zero, CF = OF = SF = AF = 0 and PF from the index, as if the
/// flags came from the index (from 0 for a zero source). Intel, and AMD
/// from Zen 5 (family 1Ah) on; the older EPYC the interpreter was first
/// checked on left CF, OF, SF, AF and PF unchanged, so AMD hosts mask them.
#[inline]
pub(crate) fn bit_scan(src_zero: bool, index: u64) -> u64 {
    let mut f = if parity(if src_zero { 0 } else { index }) { fl::PF } else { 0 };
    if src_zero {
        f |= fl::ZF;
    }
    f
}

/// LZCNT/TZCNT: CF = source was zero, ZF = count is zero. AMD clears SF,
/// AF and PF and keeps OF; Intel clears all four.
#[inline]
pub(crate) fn count_zeros(v: Vendor, src_zero: bool, count: u64, flags: u64) -> u64 {
    let mut f = if src_zero { fl::CF } else { 0 };
    if count == 0 {
        f |= fl::ZF;
    }
    match v {
        Vendor::Amd => keep(flags, fl::OF, f),
        Vendor::Intel => f,
    }
}

/// MUL/IMUL: CF = OF = the product did not fit `low`. AMD (measured on
/// Zen 5) keeps SF, ZF, AF and PF; Intel sets SF, ZF and PF from the low
/// half and clears AF.
#[inline]
pub(crate) fn multiply(v: Vendor, size: u8, low: u64, overflow: bool, flags: u64) -> u64 {
    let of = if overflow { fl::CF | fl::OF } else { 0 };
    match v {
        Vendor::Amd => keep(flags, fl::SF | fl::ZF | fl::AF | fl::PF, of),
        Vendor::Intel => szp(size, low) | of,
    }
}

/// DIV/IDIV (every status flag undefined): AMD (measured on Zen 5) keeps
/// CF and OF, clears SF, ZF and PF and sets AF; Intel leaves them all.
#[inline]
pub(crate) fn divide(v: Vendor, flags: u64) -> u64 {
    match v {
        Vendor::Amd => keep(flags, fl::CF | fl::OF, fl::AF),
        Vendor::Intel => flags & fl::STATUS,
    }
}

/// AF after SHL/SHR/SAR/SHLD/SHRD by a nonzero count: AMD sets it, Intel
/// clears it.
#[inline]
pub(crate) fn shift_af(v: Vendor) -> u64 {
    match v {
        Vendor::Amd => fl::AF,
        Vendor::Intel => 0,
    }
}

/// Whether RCL/RCR of a byte or word by a count that is a nonzero multiple
/// of 9 or 17 (nothing rotates) still writes OF from the unchanged value
/// (AMD) or leaves every flag alone (Intel).
#[inline]
pub(crate) fn null_rotate_sets_of(v: Vendor) -> bool {
    v == Vendor::Amd
}

/// ANDN, BLSI, BLSMSK, BLSR, BZHI: SF and ZF from `res`, CF as given, OF
/// cleared; AF cleared on both; PF from the result on AMD, cleared on
/// Intel.
#[inline]
pub(crate) fn bmi(v: Vendor, size: u8, res: u64, cf: bool) -> u64 {
    let mut f = szp(size, res);
    if v == Vendor::Intel {
        f &= !fl::PF;
    }
    if cf {
        f |= fl::CF;
    }
    f
}

/// BEXTR: ZF from `res`, CF = OF = 0. AMD sets AF, clears SF and sets PF
/// from the result; Intel clears AF, SF and PF.
#[inline]
pub(crate) fn bextr(v: Vendor, size: u8, res: u64) -> u64 {
    let f = szp(size, res) & !fl::SF;
    match v {
        Vendor::Amd => f | fl::AF,
        Vendor::Intel => f & fl::ZF,
    }
}

/// The 48-bit string a 16-bit SHLD (`right == false`) or SHRD shifts, for
/// counts up to 31: destination and source, then a third word for counts
/// past 16 (an undefined result). AMD repeats the source there (`dst:src:
/// src` for SHLD, `src:src:dst` for SHRD, high to low); Intel repeats the
/// destination (`dst:src:dst`), as P6 and later did.
#[inline]
pub(crate) fn double_shift16_string(v: Vendor, right: bool, dst: u64, src: u64) -> u128 {
    let (dst, src) = ((dst & 0xffff) as u128, (src & 0xffff) as u128);
    let third = if v == Vendor::Intel { dst } else { src };
    if right {
        dst | (src << 16) | (third << 32)
    } else {
        (dst << 32) | (src << 16) | third
    }
}

/// Whether a 16-bit SHLD/SHRD by more than 16 keeps CF as the last bit
/// shifted out of that string (Intel) or clears it (AMD).
#[inline]
pub(crate) fn double_shift16_past_width_has_cf(v: Vendor) -> bool {
    v == Vendor::Intel
}

/// Whether a REP string instruction with 32-bit addressing and ECX = 0
/// still writes ECX, zeroing RCX's upper half (Intel) or leaves RCX alone
/// (AMD).
#[inline]
pub(crate) fn zero_count_rep_writes_ecx(v: Vendor) -> bool {
    v == Vendor::Intel
}

#[cfg(test)]
#[path = "vendor_intel_ci.rs"]
mod intel_ci;

#[cfg(test)]
mod tests {
    use super::*;
    use fl::*;
    use Vendor::{Amd, Intel};

    #[test]
    fn bit_scan_table() {
        // (source zero, index) -> flags; the same on both vendors.
        for (zero, index, want) in [(true, 0, ZF | PF), (false, 0, PF), (false, 1, 0), (false, 3, PF), (false, 63, PF)]
        {
            assert_eq!(bit_scan(zero, index), want, "zero {zero} index {index}");
        }
    }

    #[test]
    fn count_zeros_table() {
        let all = STATUS;
        for (v, zero, n, flags, want) in [
            (Amd, true, 32, all, CF | OF),
            (Amd, false, 0, 0, ZF),
            (Amd, false, 5, SF | AF | PF, 0),
            (Intel, true, 64, all, CF),
            (Intel, false, 0, OF, ZF),
        ] {
            assert_eq!(count_zeros(v, zero, n, flags), want, "{v:?} zero {zero} n {n} flags {flags:#x}");
        }
    }

    #[test]
    fn multiply_table() {
        for (v, size, low, ovf, flags, want) in [
            (Amd, 1, 0, false, SF | ZF | AF | PF | CF, SF | ZF | AF | PF),
            (Amd, 4, 0x8000_0000, true, 0, CF | OF),
            (Intel, 1, 0x80, false, AF, SF),
            (Intel, 2, 0x1_0000, true, 0, CF | OF | ZF | PF),
            (Intel, 8, 3, false, STATUS, PF),
        ] {
            assert_eq!(multiply(v, size, low, ovf, flags), want, "{v:?} size {size} low {low:#x}");
        }
    }

    #[test]
    fn divide_table() {
        assert_eq!(divide(Amd, STATUS), CF | OF | AF);
        assert_eq!(divide(Amd, SF | ZF | PF), AF);
        assert_eq!(divide(Intel, SF | PF | fl::DF), SF | PF);
    }

    #[test]
    fn bmi_tables() {
        // ANDN/BLS*/BZHI: (vendor, size, result, cf) -> flags.
        for (v, size, res, cf, want) in [
            (Amd, 4, 0, false, ZF | PF),
            (Intel, 4, 0, false, ZF),
            (Amd, 4, 0xffff_ffff, true, SF | PF | CF),
            (Intel, 4, 0xffff_ffff, true, SF | CF),
            (Intel, 8, 1 << 63, false, SF),
        ] {
            assert_eq!(bmi(v, size, res, cf), want, "{v:?} size {size} res {res:#x}");
        }
        // BEXTR: (vendor, size, result) -> flags.
        for (v, size, res, want) in
            [(Amd, 4, 0, ZF | PF | AF), (Intel, 4, 0, ZF), (Amd, 4, 0x8000_0001, AF), (Intel, 8, 3, 0)]
        {
            assert_eq!(bextr(v, size, res), want, "{v:?} size {size} res {res:#x}");
        }
    }

    #[test]
    fn double_shift16_strings() {
        let (d, s) = (0xdddd, 0x5555);
        assert_eq!(double_shift16_string(Amd, false, d, s), 0xdddd_5555_5555);
        assert_eq!(double_shift16_string(Intel, false, d, s), 0xdddd_5555_dddd);
        assert_eq!(double_shift16_string(Amd, true, d, s), 0x5555_5555_dddd);
        assert_eq!(double_shift16_string(Intel, true, d, s), 0xdddd_5555_dddd);
    }

    #[test]
    fn vendor_switches() {
        assert_eq!((shift_af(Amd), shift_af(Intel)), (AF, 0));
        assert!(null_rotate_sets_of(Amd) && !null_rotate_sets_of(Intel));
        assert!(zero_count_rep_writes_ecx(Intel) && !zero_count_rep_writes_ecx(Amd));
        assert!(double_shift16_past_width_has_cf(Intel) && !double_shift16_past_width_has_cf(Amd));
    }
}
