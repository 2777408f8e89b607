//! Instruction handlers, one file per family. Each family registers its
//! handlers in the dispatch table indexed by `iced_x86::Code`; a form with
//! no handler is a `None` and raises SIGILL in the guest.

use std::sync::LazyLock;

use iced_x86::{Code, CpuidFeature, EncodingKind, Mnemonic};

use super::Handler;

mod arith;
mod avx;
mod bits;
mod bmi;
mod control;
mod data;
mod mmx;
#[cfg(test)]
mod oracle;
mod shift;
mod sse;
mod sse4;
mod string;
mod system;
pub use system::{emulate_umip, UmipValues};
pub(crate) mod vendor;
mod x87;
mod xsave;

/// The dispatch table under construction.
pub(crate) struct Table {
    handlers: Vec<Option<Handler>>,
    /// Legacy-encoded, non-MMX codes by mnemonic.
    by_mnemonic: ByMnemonic,
    /// Legacy-encoded codes with an MMX operand, by mnemonic.
    by_mnemonic_mmx: ByMnemonic,
}

/// Codes grouped by mnemonic: `codes[start[m]..start[m + 1]]` are those
/// of mnemonic `m` (one counting sort; no hashing, one allocation each).
struct ByMnemonic {
    start: Vec<u32>,
    codes: Vec<Code>,
}

impl ByMnemonic {
    fn new(codes: &[Code]) -> ByMnemonic {
        let n = Mnemonic::values().len();
        let mut start = vec![0u32; n + 1];
        for c in codes {
            start[c.mnemonic() as usize + 1] += 1;
        }
        for m in 0..n {
            start[m + 1] += start[m];
        }
        let mut next = start.clone();
        let mut sorted = vec![Code::INVALID; codes.len()];
        for &c in codes {
            let at = &mut next[c.mnemonic() as usize];
            sorted[*at as usize] = c;
            *at += 1;
        }
        ByMnemonic { start, codes: sorted }
    }

    fn get(&self, m: Mnemonic) -> &[Code] {
        let m = m as usize;
        &self.codes[self.start[m] as usize..self.start[m + 1] as usize]
    }
}

impl Table {
    /// Register `h` for every code in `codes`.
    pub(crate) fn set(&mut self, codes: &[Code], h: Handler) {
        for c in codes {
            self.handlers[*c as usize] = Some(h);
        }
    }

    /// Does `code` have a handler already?
    pub(crate) fn is_set(&self, code: Code) -> bool {
        self.handlers[code as usize].is_some()
    }

    /// Register `h` for every legacy-encoded, 64-bit-mode form of
    /// `mnemonic` that has no MMX operand (MMX forms belong to another
    /// handler).
    pub(crate) fn set_mnemonic(&mut self, mnemonic: Mnemonic, h: Handler) {
        for c in self.by_mnemonic.get(mnemonic) {
            self.handlers[*c as usize] = Some(h);
        }
    }

    /// Register `h` for every legacy-encoded, 64-bit-mode form of
    /// `mnemonic` that has an MMX operand (the forms `set_mnemonic` skips).
    pub(crate) fn set_mnemonic_mmx(&mut self, mnemonic: Mnemonic, h: Handler) {
        for c in self.by_mnemonic_mmx.get(mnemonic) {
            self.handlers[*c as usize] = Some(h);
        }
    }

    /// `set_mnemonic` for several mnemonics sharing one handler.
    pub(crate) fn set_mnemonics(&mut self, mnemonics: &[Mnemonic], h: Handler) {
        for m in mnemonics {
            self.set_mnemonic(*m, h);
        }
    }
}

/// Does `code` have an MMX register operand (`mm`, `mm/m64`, ...)? Read
/// from iced's name of the form (`Paddb_mm_mmm64`, `Movq2dq_xmm_mm`): the
/// operands are the `_`-separated words after the mnemonic. `Code::op_code`
/// would say it too, but its first use builds iced's whole `OpCodeInfo`
/// table with formatted strings (about 2 ms, most of a hello's start-up);
/// the unit test checks this against it for every form.
fn has_mmx_operand(code: Code, name: &mut String) -> bool {
    use std::fmt::Write as _;
    use CpuidFeature::*;
    // Only these families have MMX-register forms (a sixth of the legacy
    // forms): the others need not be named.
    if !code.cpuid_features().iter().any(|f| matches!(f, MMX | SSE | SSE2 | SSSE3 | CYRIX_EMMI)) {
        return false;
    }
    name.clear();
    // Writing into a String cannot fail.
    let _ = write!(name, "{code:?}");
    name.split('_').skip(1).any(|w| w == "mm" || w.starts_with("mmm"))
}

static TABLE: LazyLock<Vec<Option<Handler>>> = LazyLock::new(|| {
    let (mut plain, mut mmx) = (Vec::new(), Vec::new());
    let mut name = String::new();
    // Every legacy form, also those invalid in 64-bit mode: the 64-bit
    // decoder never produces those, so a handler on them is never reached.
    for c in Code::values().filter(|c| c.encoding() == EncodingKind::Legacy) {
        if has_mmx_operand(c, &mut name) { &mut mmx } else { &mut plain }.push(c);
    }
    let (by_mnemonic, by_mnemonic_mmx) = (ByMnemonic::new(&plain), ByMnemonic::new(&mmx));
    let mut t = Table { handlers: vec![None; Code::values().len()], by_mnemonic, by_mnemonic_mmx };
    arith::register(&mut t);
    bits::register(&mut t);
    bmi::register(&mut t);
    control::register(&mut t);
    data::register(&mut t);
    mmx::register(&mut t);
    shift::register(&mut t);
    sse::register(&mut t);
    sse4::register(&mut t);
    string::register(&mut t);
    system::register(&mut t);
    x87::register(&mut t);
    xsave::register(&mut t);
    // Last: it takes the VEX vector forms no other family claimed.
    avx::register(&mut t);
    t.handlers
});

/// The dispatch table: `table()[code as usize]`.
pub(crate) fn table() -> &'static [Option<Handler>] {
    &TABLE
}

#[cfg(test)]
mod tests {
    use iced_x86::{Code, EncodingKind, OpCodeOperandKind};

    /// The name-based MMX test agrees with iced's operand kinds for every
    /// legacy form valid in 64-bit mode.
    #[test]
    fn mmx_operands_by_name_match_op_code_info() {
        let mut name = String::new();
        for c in Code::values().filter(|c| c.encoding() == EncodingKind::Legacy && c.op_code().mode64()) {
            let oc = c.op_code();
            let mmx = (0..oc.op_count()).any(|i| {
                matches!(
                    oc.op_kind(i),
                    OpCodeOperandKind::mm_or_mem | OpCodeOperandKind::mm_reg | OpCodeOperandKind::mm_rm
                )
            });
            assert_eq!(super::has_mmx_operand(c, &mut name), mmx, "{c:?}");
        }
    }

    /// No VEX form is invalid in 64-bit mode (the AVX registration relies
    /// on it, to skip `Code::op_code`).
    #[test]
    fn every_vex_form_is_valid_in_64_bit_mode() {
        for c in Code::values().filter(|c| c.encoding() == EncodingKind::VEX) {
            assert!(c.op_code().mode64(), "{c:?}");
        }
    }
}
