//! The RFLAGS bits the manuals leave undefined, by mnemonic and, where it
//! matters, by count. Only these are masked when comparing; everything else
//! must match the host bit for bit.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::State;
use crate::state::{fl, reg};

/// Status flags left undefined by `insn` run from `input`.
pub fn undefined(insn: &Instruction, input: &State) -> u64 {
    use fl::*;
    use Mnemonic::*;
    let m = insn.mnemonic();
    match m {
        Mul | Imul => SF | ZF | AF | PF,
        Div | Idiv => STATUS,
        Bsf | Bsr => CF | OF | SF | AF | PF,
        Bt | Bts | Btr | Btc => OF | SF | AF | PF,
        Lzcnt | Tzcnt => OF | SF | AF | PF,
        And | Or | Xor | Test => AF,
        Shl | Sal | Shr | Sar | Rol | Ror | Rcl | Rcr | Shld | Shrd => {
            let width = operand_bits(insn);
            let count_op = if matches!(m, Shld | Shrd) { 2 } else { 1 };
            let raw = match insn.op_kind(count_op) {
                OpKind::Register if insn.op_register(count_op) == Register::CL => input.gpr[reg::RCX] & 0xff,
                OpKind::Register => 1,
                _ => insn.immediate(count_op),
            };
            let count = raw & if width == 64 { 0x3f } else { 0x1f };
            if count == 0 {
                return 0;
            }
            let mut u = if count > 1 { OF } else { 0 };
            match m {
                Shl | Sal | Shr | Sar => {
                    u |= AF;
                    if matches!(m, Shl | Sal | Shr) && count >= width {
                        u |= CF;
                    }
                }
                Shld | Shrd => {
                    u |= AF;
                    if count > width {
                        u |= STATUS;
                    }
                }
                _ => {}
            }
            u
        }
        _ => 0,
    }
}

/// Width in bits of operand 0.
fn operand_bits(insn: &Instruction) -> u64 {
    let bytes = match insn.op0_kind() {
        OpKind::Register => insn.op0_register().size(),
        _ => insn.memory_size().size(),
    };
    8 * bytes as u64
}
