//! Bit tests and scans: BT/BTS/BTR/BTC, BSF/BSR, POPCNT, LZCNT, TZCNT.
//! (BSWAP lives in `data.rs`.) Flags the manuals leave undefined are set
//! as the host vendor's CPUs set them (`vendor.rs`), which the oracle tests
//! check; BT* changes only CF on both vendors.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::arith::sext;
use super::{vendor, Table};
use crate::interp::{Ctx, Step};
use crate::state::{fl, mask};

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    t.set_mnemonic(Bt, bit_test::<BT>);
    t.set_mnemonic(Bts, bit_test::<BTS>);
    t.set_mnemonic(Btr, bit_test::<BTR>);
    t.set_mnemonic(Btc, bit_test::<BTC>);
    t.set_mnemonic(Bsf, bit_scan::<false>);
    t.set_mnemonic(Bsr, bit_scan::<true>);
    t.set_mnemonic(Popcnt, popcnt);
    t.set_mnemonic(Lzcnt, count_zeros::<true>);
    t.set_mnemonic(Tzcnt, count_zeros::<false>);
}

const BT: u8 = 0;
const BTS: u8 = 1;
const BTR: u8 = 2;
const BTC: u8 = 3;

/// The new value of the tested operand for BT* on bit `bit`.
#[inline]
fn apply_bit(op: u8, v: u64, bit: u32) -> u64 {
    match op {
        BTS => v | (1 << bit),
        BTR => v & !(1 << bit),
        BTC => v ^ (1 << bit),
        _ => v,
    }
}

/// Read-modify-write `size` bytes at `addr`, atomically when `locked`
/// (a compare-and-exchange loop on the host). Returns the old value.
fn rmw_at(
    ctx: &mut Ctx<'_>,
    addr: u64,
    size: u8,
    locked: bool,
    f: impl Fn(u64) -> u64,
) -> Result<u64, crate::engine::Exit> {
    let mut old = ctx.load(addr, size)?;
    if !locked {
        ctx.store(addr, size, f(old) & mask(size))?;
        return Ok(old);
    }
    loop {
        let found = ctx.cmpxchg_mem(addr, size, old, f(old) & mask(size))?;
        if found == old {
            return Ok(old);
        }
        old = found;
    }
}

/// BT/BTS/BTR/BTC r/m, r/imm8. With a register offset and a memory
/// operand the offset is a signed bit index relative to the operand's
/// address, so it can reach memory outside the operand.
fn bit_test<const OP: u8>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let bits = size as u32 * 8;
    let offset = ctx.get(insn, 1, size)?;
    let bit = offset as u32 & (bits - 1);
    let old = if insn.op0_kind() == OpKind::Memory {
        let mut addr = ctx.ea(insn);
        if insn.op1_kind() == OpKind::Register {
            // Whole operands before or after the addressed one.
            let elem = sext(offset, size) >> bits.trailing_zeros();
            addr = addr.wrapping_add((elem as u64).wrapping_mul(size as u64));
        }
        if OP == BT {
            ctx.load(addr, size)?
        } else {
            rmw_at(ctx, addr, size, insn.has_lock_prefix(), |v| apply_bit(OP, v, bit))?
        }
    } else {
        let v = ctx.get(insn, 0, size)?;
        if OP != BT {
            ctx.set(insn, 0, size, apply_bit(OP, v, bit))?;
        }
        v
    };
    // Only CF changes, on AMD and Intel alike (the Intel CI's `bt` oracle
    // agreed); the other status flags keep their values.
    ctx.cpu.flags.set_bits(fl::CF, (old >> bit) & 1 != 0);
    Ok(())
}

/// BSF (`REVERSE == false`) and BSR. A zero source sets ZF and leaves the
/// destination unchanged, as AMD documents and Intel does; the other flags
/// per `vendor::bit_scan`.
fn bit_scan<const REVERSE: bool>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let src = ctx.get(insn, 1, size)?;
    if src == 0 {
        ctx.cpu.flags.set_masked(fl::STATUS, vendor::bit_scan(true, 0));
        return Ok(());
    }
    let idx = if REVERSE { 63 - src.leading_zeros() } else { src.trailing_zeros() } as u64;
    ctx.set(insn, 0, size, idx)?;
    ctx.cpu.flags.set_masked(fl::STATUS, vendor::bit_scan(false, idx));
    Ok(())
}

fn popcnt(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let src = ctx.get(insn, 1, size)?;
    ctx.set(insn, 0, size, src.count_ones() as u64)?;
    let zf = if src == 0 { fl::ZF } else { 0 };
    ctx.cpu.flags.set_masked(fl::STATUS, zf);
    Ok(())
}

/// LZCNT (`LEADING`) and TZCNT: CF = source was 0, ZF = result is 0.
/// (The F3 0F BD/BC encodings mean BSR/BSF on CPUs without ABM/BMI1; urun
/// models a CPU that has them, as the host does.)
fn count_zeros<const LEADING: bool>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::osz(insn);
    let bits = size as u32 * 8;
    let src = ctx.get(insn, 1, size)?;
    let n = if src == 0 {
        bits
    } else if LEADING {
        src.leading_zeros() - (64 - bits)
    } else {
        src.trailing_zeros()
    };
    ctx.set(insn, 0, size, n as u64)?;
    let f = vendor::count_zeros(ctx.cpu.vendor, src == 0, n as u64, ctx.cpu.flags.get());
    ctx.cpu.flags.set_masked(fl::STATUS, f);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::interp::ops::oracle::{Oracle, Regs, Rng, EDGE_VALUES};
    use crate::state::{fl, reg};

    fn prefix(size: u8) -> &'static [u8] {
        match size {
            2 => &[0x66],
            8 => &[0x48],
            _ => &[],
        }
    }

    /// Sampled memory for the data window.
    fn random_mem(rng: &mut Rng) -> Vec<u8> {
        (0..8192).map(|_| rng.next() as u8).collect()
    }

    #[test]
    fn bit_tests_match_host() {
        let Some(mut o) = Oracle::new() else { return };
        let mut rng = Rng(0xb175);
        let mem = random_mem(&mut rng);
        let names = ["bt", "bts", "btr", "btc"];
        for op in 0..4u8 {
            for size in [2u8, 4, 8] {
                let mut offsets: Vec<u64> = EDGE_VALUES.to_vec();
                offsets.extend([
                    7,
                    8,
                    15,
                    16,
                    31,
                    32,
                    63,
                    64,
                    255,
                    (-1i64) as u64,
                    (-9i64) as u64,
                    (-33i64) as u64,
                    (-30000i64) as u64,
                    30000,
                ]);
                for _ in 0..40 {
                    offsets.push(((rng.next() as i64) % 30000) as u64);
                }
                for &off in &offsets {
                    let val = rng.next();
                    let flags = rng.next() & fl::STATUS;
                    // bt* rax, rdx / [rdi], rdx (register offset); bt* rax / [rdi], imm8.
                    let reg_op = 0xa3 + 8 * op;
                    let mut forms = vec![
                        ("reg,reg", [prefix(size), &[0x0f, reg_op, 0xd0]].concat(), false),
                        ("reg,imm", [prefix(size), &[0x0f, 0xba, 0xe0 | ((4 + op) << 3), off as u8]].concat(), false),
                    ];
                    // Large offsets reach outside the window only with a register offset into memory.
                    if (off as i64).unsigned_abs() <= 30000 {
                        forms.push(("mem,reg", [prefix(size), &[0x0f, reg_op, 0x17]].concat(), true));
                        if op != 0 {
                            forms.push(("lock mem,reg", [&[0xf0], prefix(size), &[0x0f, reg_op, 0x17]].concat(), true));
                        }
                    }
                    forms.push((
                        "mem,imm",
                        [prefix(size), &[0x0f, 0xba, 0x20 | ((4 + op) << 3) | 7, off as u8]].concat(),
                        true,
                    ));
                    for (form, bytes, uses_mem) in forms {
                        let mut r = Regs { flags, ..Default::default() };
                        r.gpr[reg::RAX] = val;
                        r.gpr[reg::RDX] = off;
                        r.gpr[reg::RDI] = o.data() + 4096;
                        let what = format!("{} size {size} {form} off {off:#x}", names[op as usize]);
                        o.check(&what, &bytes, &r, if uses_mem { &mem } else { &[] });
                    }
                }
            }
        }
        o.finish("bt");
    }

    #[test]
    fn scans_and_counts_match_host() {
        let Some(mut o) = Oracle::new() else { return };
        let mut rng = Rng(0x5ca7);
        // (name, prefix before REX/66, opcode)
        let ops: [(&str, &[u8], u8); 5] = [
            ("bsf", &[], 0xbc),
            ("bsr", &[], 0xbd),
            ("popcnt", &[0xf3], 0xb8),
            ("lzcnt", &[0xf3], 0xbd),
            ("tzcnt", &[0xf3], 0xbc),
        ];
        let mut srcs: Vec<u64> = EDGE_VALUES.to_vec();
        srcs.extend([0x10000, 0x1_0000_0000, 0x8000_0000_0000]);
        for _ in 0..40 {
            let v = rng.next();
            srcs.push(v >> (v % 64));
        }
        for (name, pre, opc) in ops {
            for size in [2u8, 4, 8] {
                for &src in &srcs {
                    let mem = src.to_le_bytes();
                    for (form, modrm) in [("reg", 0xc2u8), ("mem", 0x07)] {
                        let bytes = [pre, prefix(size), &[0x0f, opc, modrm]].concat();
                        let mut r = Regs { flags: rng.next() & fl::STATUS, ..Default::default() };
                        r.gpr[reg::RAX] = 0xdead_beef_cafe_f00d;
                        r.gpr[reg::RDX] = src;
                        r.gpr[reg::RDI] = o.data();
                        let what = format!("{name} size {size} {form} src {src:#x}");
                        o.check(&what, &bytes, &r, &mem);
                    }
                }
            }
        }
        o.finish("scan");
    }
}
