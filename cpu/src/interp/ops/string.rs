//! String instructions: MOVS, STOS, LODS, CMPS, SCAS in all element sizes,
//! with REP/REPE/REPNE, the direction flag and 64- or 32-bit addressing.
//!
//! `element` runs one iteration and is the reference; a REP loop calls it
//! and updates RCX/RSI/RDI after every completed iteration, so a fault part
//! way leaves the registers describing the work done and the instruction
//! restartable. REP MOVS and REP STOS with DF = 0 copy in bulk when the
//! whole ranges are accessible, do not overlap harmfully and hold no
//! decoded code; anything else takes the element loop. A zero count under
//! 32-bit addressing writes ECX or not as the host vendor's CPUs do
//! (`vendor.rs`).

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::{vendor, Table};
use crate::engine::Exit;
use crate::interp::{Ctx, Step};
use crate::mem::Prot;
use crate::state::{mask, reg, FlagOp};

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    t.set_mnemonic(Movsb, string::<MOVS>);
    t.set_mnemonic(Movsw, string::<MOVS>);
    // MOVSD and CMPSD also name SSE2 scalar instructions: register only
    // the string forms.
    t.set(&[iced_x86::Code::Movsd_m32_m32], string::<MOVS>);
    t.set_mnemonic(Movsq, string::<MOVS>);
    t.set_mnemonics(&[Stosb, Stosw, Stosd, Stosq], string::<STOS>);
    t.set_mnemonics(&[Lodsb, Lodsw, Lodsd, Lodsq], string::<LODS>);
    t.set_mnemonics(&[Cmpsb, Cmpsw, Cmpsq], string::<CMPS>);
    t.set(&[iced_x86::Code::Cmpsd_m32_m32], string::<CMPS>);
    t.set_mnemonics(&[Scasb, Scasw, Scasd, Scasq], string::<SCAS>);
}

const MOVS: u8 = 0;
const STOS: u8 = 1;
const LODS: u8 = 2;
const CMPS: u8 = 3;
const SCAS: u8 = 4;

/// What one string instruction works with, decoded once.
#[derive(Clone, Copy)]
struct Form {
    size: u8,
    /// 32-bit addressing (0x67): ECX/ESI/EDI, zero-extended on write.
    a32: bool,
    /// Base of the source segment (FS/GS override), 0 otherwise.
    src_base: u64,
    /// Signed step per element: +size, or -size with DF set.
    step: u64,
}

impl Form {
    fn get(&self, ctx: &Ctx<'_>, r: usize) -> u64 {
        let v = ctx.cpu.gpr[r];
        if self.a32 {
            v & 0xffff_ffff
        } else {
            v
        }
    }
    fn put(&self, ctx: &mut Ctx<'_>, r: usize, v: u64) {
        ctx.cpu.gpr[r] = if self.a32 { v & 0xffff_ffff } else { v };
    }
    fn advance(&self, ctx: &mut Ctx<'_>, r: usize) {
        let v = self.get(ctx, r).wrapping_add(self.step);
        self.put(ctx, r, v);
    }
}

/// The accumulator register of `size` bytes.
fn accumulator(size: u8) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

/// One iteration of `OP`, registers advanced only once every access has
/// succeeded.
#[inline]
fn element<const OP: u8>(ctx: &mut Ctx<'_>, f: &Form) -> Step {
    let size = f.size;
    let src = f.src_base.wrapping_add(f.get(ctx, reg::RSI));
    let dst = f.get(ctx, reg::RDI);
    match OP {
        MOVS => {
            let v = ctx.load(src, size)?;
            ctx.store(dst, size, v)?;
            f.advance(ctx, reg::RSI);
            f.advance(ctx, reg::RDI);
        }
        STOS => {
            let v = ctx.cpu.gpr[reg::RAX] & mask(size);
            ctx.store(dst, size, v)?;
            f.advance(ctx, reg::RDI);
        }
        LODS => {
            let v = ctx.load(src, size)?;
            ctx.set_reg(accumulator(size), v);
            f.advance(ctx, reg::RSI);
        }
        CMPS => {
            let a = ctx.load(src, size)?;
            let b = ctx.load(dst, size)?;
            ctx.cpu.flags.set_lazy(FlagOp::Sub, size, a, b, a.wrapping_sub(b) & mask(size), false);
            f.advance(ctx, reg::RSI);
            f.advance(ctx, reg::RDI);
        }
        _ => {
            let a = ctx.cpu.gpr[reg::RAX] & mask(size);
            let b = ctx.load(dst, size)?;
            ctx.cpu.flags.set_lazy(FlagOp::Sub, size, a, b, a.wrapping_sub(b) & mask(size), false);
            f.advance(ctx, reg::RDI);
        }
    }
    Ok(())
}

fn string<const OP: u8>(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = Ctx::mem_size(insn);
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(ctx.invalid(insn));
    }
    let a32 = (0..insn.op_count()).any(|i| matches!(insn.op_kind(i), OpKind::MemorySegESI | OpKind::MemoryESEDI));
    let src_base = match insn.memory_segment() {
        Register::FS => ctx.cpu.fs_base,
        Register::GS => ctx.cpu.gs_base,
        _ => 0,
    };
    let step = if ctx.cpu.flags.df() { (size as u64).wrapping_neg() } else { size as u64 };
    let f = Form { size, a32, src_base, step };
    let compare = OP == CMPS || OP == SCAS;
    // F2 and F3 both repeat MOVS/STOS/LODS; for CMPS/SCAS they pick the
    // stop condition.
    let repne = insn.has_repne_prefix();
    if !insn.has_rep_prefix() && !repne {
        return element::<OP>(ctx, &f);
    }
    if !compare && (OP == MOVS || OP == STOS) && bulk::<OP>(ctx, &f)? {
        return Ok(());
    }
    // Nothing to do: Intel still writes ECX, zeroing RCX's upper half
    // under 32-bit addressing; AMD leaves RCX alone.
    if f.get(ctx, reg::RCX) == 0 {
        if a32 && vendor::zero_count_rep_writes_ecx(ctx.cpu.vendor) {
            f.put(ctx, reg::RCX, 0);
        }
        return Ok(());
    }
    loop {
        let count = f.get(ctx, reg::RCX);
        if count == 0 {
            return Ok(());
        }
        element::<OP>(ctx, &f)?;
        f.put(ctx, reg::RCX, count - 1);
        if compare && ctx.cpu.flags.zf() == repne {
            return Ok(());
        }
    }
}

/// REP MOVS / REP STOS in one go when that is exactly what the element loop
/// would do and cannot fault: no write journal, DF = 0, 64-bit addressing, both ranges
/// accessible, no decoded code in the destination, and for MOVS no overlap
/// where the destination starts inside the source. Returns whether it ran.
fn bulk<const OP: u8>(ctx: &mut Ctx<'_>, f: &Form) -> Result<bool, Exit> {
    // Journaling (the JIT's --check) needs every write through the checked
    // path, which records the bytes it replaces: the element loop.
    if f.a32 || ctx.cpu.flags.df() || ctx.tlb.journal.is_some() {
        return Ok(false);
    }
    let count = ctx.cpu.gpr[reg::RCX];
    let Some(len) = count.checked_mul(f.size as u64) else { return Ok(false) };
    if len < 64 {
        return Ok(false);
    }
    let dst = ctx.cpu.gpr[reg::RDI];
    let src = f.src_base.wrapping_add(ctx.cpu.gpr[reg::RSI]);
    if dst.checked_add(len).is_none() || (OP == MOVS && src.checked_add(len).is_none()) {
        return Ok(false);
    }
    if !ctx.mem.check(dst, len, Prot::WRITE) || (OP == MOVS && !ctx.mem.check(src, len, Prot::READ)) {
        return Ok(false);
    }
    if ctx.mem.overlaps_code(dst, len) {
        return Ok(false);
    }
    if OP == MOVS && dst > src && dst < src + len {
        return Ok(false);
    }
    // SAFETY: `AddressSpace::check` found every byte of the destination
    // writable (and of the source readable) guest memory; guest addresses
    // are host addresses. The host's forward `rep movs`/`rep stos` is the
    // element loop, since the destination does not start inside the
    // source. If another guest thread unmaps a page meanwhile, the copy
    // stops there: the registers account for the elements done, and the
    // element loop takes over to fault precisely (or go on, if the page is
    // back).
    let r = unsafe {
        if OP == MOVS {
            crate::hostfault::copy(dst, src, len).map_err(|p| p.done / f.size as u64)
        } else {
            crate::hostfault::fill(dst, ctx.cpu.gpr[reg::RAX], count, f.size).map_err(|p| p.done)
        }
    };
    if let Err(done) = r {
        let bytes = done * f.size as u64;
        ctx.cpu.gpr[reg::RDI] = dst + bytes;
        if OP == MOVS {
            ctx.cpu.gpr[reg::RSI] = ctx.cpu.gpr[reg::RSI].wrapping_add(bytes);
        }
        ctx.cpu.gpr[reg::RCX] = count - done;
        return Ok(false);
    }
    // Another thread may have translated code here since the check above.
    ctx.mem.code_written(dst, len);
    ctx.cpu.gpr[reg::RDI] = dst + len;
    if OP == MOVS {
        ctx.cpu.gpr[reg::RSI] = ctx.cpu.gpr[reg::RSI].wrapping_add(len);
    }
    ctx.cpu.gpr[reg::RCX] = 0;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use crate::engine::{Exit, Fault, FaultKind, PageFaultKind};
    use crate::interp::ops::oracle::{Oracle, Regs, Rng, WINDOW};
    use crate::interp::testutil::Snippet;
    use crate::mem::{Prot, PAGE_SIZE};
    use crate::state::{fl, reg};

    /// (name, opcode for bytes; +1 for the wider forms).
    const OPS: [(&str, u8); 5] = [("movs", 0xa4), ("stos", 0xaa), ("lods", 0xac), ("cmps", 0xa6), ("scas", 0xae)];
    const ACC: u64 = 0x1122_3344_5566_7788;

    fn encode(opc: u8, size: u8, rep: Option<u8>) -> Vec<u8> {
        let mut v = Vec::new();
        if size == 2 {
            v.push(0x66);
        }
        v.extend(rep);
        if size == 8 {
            v.push(0x48);
        }
        v.push(if size == 1 { opc } else { opc + 1 });
        v
    }

    #[test]
    fn strings_match_host() {
        let Some(mut o) = Oracle::new() else { return };
        let mut rng = Rng(0x57f1);
        let base_mem: Vec<u8> = (0..WINDOW).map(|_| rng.next() as u8).collect();
        for (name, opc) in OPS {
            for size in [1u8, 2, 4, 8] {
                for rep in [None, Some(0xf3), Some(0xf2)] {
                    for df in [false, true] {
                        for count in [0u64, 1, 3, 17, 100, 300] {
                            // (src, dst) offsets in the window; overlapping pairs for MOVS.
                            let (s0, d0) = if df { (0x1800u64, 0x3800u64) } else { (0x800, 0x2000) };
                            let mut placements = vec![(s0, d0)];
                            if opc == 0xa4 && !df {
                                placements.extend([(0x800, 0x801), (0x800, 0x7fb), (0x800, 0x800 + 3 * size as u64)]);
                            }
                            for (src, dst) in placements {
                                let mut mem = base_mem.clone();
                                let n = (count.max(1) * size as u64) as usize;
                                let (s, d) = (src as usize, dst as usize);
                                let lo = |a: usize| if df { a + size as usize - n } else { a };
                                // Equal runs so REPE/REPNE stop somewhere inside.
                                if opc == 0xa6 {
                                    let (ls, ld) = (lo(s), lo(d));
                                    let run: Vec<u8> = mem[ls..ls + n].to_vec();
                                    mem[ld..ld + n].copy_from_slice(&run);
                                    let at = (rng.next() as usize) % n;
                                    if !rng.next().is_multiple_of(3) {
                                        mem[ld + at] ^= 0x40;
                                    }
                                }
                                if opc == 0xae {
                                    let ld = lo(d);
                                    for k in 0..n {
                                        mem[ld + k] = ACC.to_le_bytes()[k % size as usize];
                                    }
                                    if !rng.next().is_multiple_of(3) {
                                        let at = (rng.next() as usize) % n;
                                        mem[ld + at] ^= 0x40;
                                    }
                                }
                                let mut r = Regs {
                                    flags: (rng.next() & fl::STATUS) | if df { fl::DF } else { 0 },
                                    ..Default::default()
                                };
                                r.gpr[reg::RAX] = ACC;
                                r.gpr[reg::RCX] = count;
                                r.gpr[reg::RSI] = o.data() + src;
                                r.gpr[reg::RDI] = o.data() + dst;
                                let bytes = encode(opc, size, rep);
                                let what = format!(
                                    "{name} size {size} rep {rep:?} df {df} count {count} src {src:#x} dst {dst:#x}"
                                );
                                o.check(&what, &bytes, &r, &mem);
                            }
                        }
                    }
                }
            }
        }
        // 32-bit addressing with ECX = 0 but RCX's upper half set: nothing runs.
        let mut r = Regs::default();
        r.gpr[reg::RCX] = 0xffff_ffff_0000_0000;
        o.check("addr32 rep movsb ecx 0", &[0x67, 0xf3, 0xa4], &r, &[]);
        o.finish("string");
    }

    /// A REP MOVSB whose destination runs into an unwritable page stops
    /// with the registers describing the bytes already copied.
    #[test]
    fn rep_fault_is_restartable() {
        let s = Snippet::new();
        let wall = s.data + 4 * PAGE_SIZE;
        s.mem.protect(wall, PAGE_SIZE, Prot::READ).expect("protect");
        for (code, size) in [(&[0xf3u8, 0xa4][..], 1u64), (&[0xf3, 0x48, 0xab][..], 8)] {
            let (cpu, exit) = s.run(code, |c| {
                c.gpr[reg::RSI] = s.data;
                c.gpr[reg::RDI] = wall - 10 * size;
                c.gpr[reg::RCX] = 100;
            });
            assert_eq!(
                exit,
                Exit::Fault(Fault {
                    pc: s.code,
                    kind: FaultKind::Page { addr: wall, write: true, kind: PageFaultKind::Protection }
                })
            );
            assert_eq!(cpu.rip, s.code);
            assert_eq!(cpu.gpr[reg::RCX], 90);
            assert_eq!(cpu.gpr[reg::RDI], wall);
            if size == 1 {
                assert_eq!(cpu.gpr[reg::RSI], s.data + 10);
            }
        }
    }

    /// LODS reads through an FS override; STOS ignores it (always ES).
    #[test]
    fn fs_override_applies_to_source() {
        let s = Snippet::new();
        // SAFETY: the snippet's data area is ours and writable.
        unsafe { *((s.data + 0x110) as *mut u8) = 0x5a };
        // lodsb al, fs:[rsi]
        let (cpu, exit) = s.run(&[0x64, 0xac], |c| {
            c.fs_base = s.data + 0x100;
            c.gpr[reg::RSI] = 0x10;
        });
        assert_eq!(exit, Exit::Syscall);
        assert_eq!(cpu.gpr[reg::RAX] & 0xff, 0x5a);
        assert_eq!(cpu.gpr[reg::RSI], 0x11);
    }

    /// Bulk and element paths agree on a large REP MOVSQ / STOSB.
    #[test]
    fn bulk_copy_matches_element_loop() {
        let s = Snippet::new();
        // SAFETY: the data area is 64 KiB of writable memory we own.
        let buf = unsafe { std::slice::from_raw_parts_mut(s.data as *mut u8, 0x10000) };
        for (i, b) in buf[..0x4000].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let (cpu, exit) = s.run(&[0xf3, 0x48, 0xa5], |c| {
            c.gpr[reg::RSI] = s.data;
            c.gpr[reg::RDI] = s.data + 0x8000;
            c.gpr[reg::RCX] = 0x800;
        });
        assert_eq!(exit, Exit::Syscall);
        // (RCX is the SYSCALL's return address by now.)
        assert_eq!((cpu.gpr[reg::RSI], cpu.gpr[reg::RDI]), (s.data + 0x4000, s.data + 0xc000));
        assert_eq!(buf[..0x4000], buf[0x8000..0xc000]);
        let (cpu, _) = s.run(&[0xf3, 0xaa], |c| {
            c.gpr[reg::RAX] = 0x99;
            c.gpr[reg::RDI] = s.data + 0x100;
            c.gpr[reg::RCX] = 0x1000;
        });
        assert_eq!(cpu.gpr[reg::RDI], s.data + 0x1100);
        assert!(buf[0x100..0x1100].iter().all(|&b| b == 0x99));
    }
}
