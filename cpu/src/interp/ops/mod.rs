//! Instruction handlers, one file per family. Each family registers its
//! handlers in the dispatch table indexed by `iced_x86::Code`; a form with
//! no handler is a `None` and raises SIGILL in the guest.

use std::collections::HashMap;
use std::sync::LazyLock;

use iced_x86::{Code, EncodingKind, Mnemonic, OpCodeOperandKind};

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
    /// Legacy-encoded, 64-bit-mode, non-MMX codes by mnemonic.
    by_mnemonic: HashMap<Mnemonic, Vec<Code>>,
    /// Legacy-encoded, 64-bit-mode codes with an MMX operand, by mnemonic.
    by_mnemonic_mmx: HashMap<Mnemonic, Vec<Code>>,
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
        for c in self.by_mnemonic.get(&mnemonic).map(Vec::as_slice).unwrap_or(&[]) {
            self.handlers[*c as usize] = Some(h);
        }
    }

    /// Register `h` for every legacy-encoded, 64-bit-mode form of
    /// `mnemonic` that has an MMX operand (the forms `set_mnemonic` skips).
    pub(crate) fn set_mnemonic_mmx(&mut self, mnemonic: Mnemonic, h: Handler) {
        for c in self.by_mnemonic_mmx.get(&mnemonic).map(Vec::as_slice).unwrap_or(&[]) {
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

static TABLE: LazyLock<Vec<Option<Handler>>> = LazyLock::new(|| {
    let mut by_mnemonic: HashMap<Mnemonic, Vec<Code>> = HashMap::new();
    let mut by_mnemonic_mmx: HashMap<Mnemonic, Vec<Code>> = HashMap::new();
    for c in Code::values() {
        let oc = c.op_code();
        if oc.encoding() != EncodingKind::Legacy || !oc.mode64() {
            continue;
        }
        let mmx = (0..oc.op_count()).any(|i| {
            matches!(oc.op_kind(i), OpCodeOperandKind::mm_or_mem | OpCodeOperandKind::mm_reg | OpCodeOperandKind::mm_rm)
        });
        let map = if mmx { &mut by_mnemonic_mmx } else { &mut by_mnemonic };
        map.entry(c.mnemonic()).or_default().push(c);
    }
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
