//! System instructions as a CPL 3 program meets them: far RET/JMP/CALL,
//! IRET, segment register loads and stores, LAR/LSL/VERR/VERW, the
//! descriptor-table stores (SGDT/SIDT/SLDT/STR/SMSW), INT n and INT1, and
//! the privileged instructions, which raise #GP.
//!
//! Descriptors are the host's: urun runs on the same kernel as the guest
//! would, in a process with the same GDT (and the same LDT, which only
//! `modify_ldt` changes), so the rights and limits of a selector are read by
//! running LAR/LSL/VERR/VERW on the host itself, exact by construction
//! (including the per-CPU segment whose limit is the CPU number).
//!
//! The interpreter runs 64-bit code only: a far transfer to a 32-bit or
//! 16-bit code segment (Linux's 0x23, compatibility mode) raises SIGILL,
//! and the log says why.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

use super::Table;
use crate::cpuid::host_cpuid;
use crate::engine::{Exit, Fault, FaultKind};
use crate::interp::{Ctx, Step, Tlb};
use crate::mem::{AddressSpace, Prot, PAGE_SIZE};
use crate::state::{fl, mask, reg, sreg, CpuState};

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    t.set_mnemonic(Retf, retf);
    t.set_mnemonics(&[Iret, Iretd, Iretq], iret);
    t.set(&[Code::Jmp_m1616, Code::Jmp_m1632, Code::Jmp_m1664], far_jmp);
    t.set(&[Code::Call_m1616, Code::Call_m1632, Code::Call_m1664], far_call);
    t.set_mnemonics(&[Lar, Lsl], lar_lsl);
    t.set_mnemonics(&[Verr, Verw], verr_verw);
    t.set_mnemonics(&[Sgdt, Sidt, Sldt, Str, Smsw], store_system_register);
    t.set(&[Code::Int_imm8], int_n);
    t.set(&[Code::Int1], int1);
    // #GP at CPL 3 (IOPL 0; no I/O permission bitmap, no CR4.PCE).
    t.set_mnemonics(
        &[
            In, Out, Insb, Insw, Insd, Outsb, Outsw, Outsd, Cli, Sti, Hlt, Lgdt, Lidt, Lldt, Ltr, Lmsw, Clts, Invlpg,
            Invpcid, Wbinvd, Wbnoinvd, Invd, Rdmsr, Wrmsr, Rdpmc, Swapgs, Sysret, Sysretq, Sysexit, Sysexitq, Xsetbv,
        ],
        general_protection,
    );
    // #UD at CPL 3.
    t.set_mnemonics(&[Stac, Clac], invalid);
}

/// Guest-visible selector of segment register `r`.
pub(super) fn selector(ctx: &Ctx<'_>, r: Register) -> u16 {
    ctx.cpu.seg[seg_index(r)]
}

fn seg_index(r: Register) -> usize {
    match r {
        Register::ES => sreg::ES,
        Register::CS => sreg::CS,
        Register::SS => sreg::SS,
        Register::DS => sreg::DS,
        Register::FS => sreg::FS,
        _ => sreg::GS,
    }
}

fn gp(ctx: &Ctx<'_>) -> Exit {
    ctx.fault(FaultKind::GeneralProtection)
}

fn general_protection(ctx: &mut Ctx<'_>, _insn: &Instruction) -> Step {
    Err(gp(ctx))
}

fn invalid(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    Err(ctx.invalid(insn))
}

/// Is the host an AMD (or Hygon) CPU? They differ from Intel's here: a far
/// JMP/CALL through memory with REX.W reads m16:32 (REX.W is ignored; Intel
/// reads m16:64), and loading a null selector into FS or GS keeps the base
/// (Intel clears it).
fn host_is_amd() -> bool {
    static AMD: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        let v = host_cpuid(0, 0);
        let mut s = [0u8; 12];
        for (i, w) in [v[1], v[3], v[2]].iter().enumerate() {
            s[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        &s == b"AuthenticAMD" || &s == b"HygonGenuine"
    });
    *AMD
}

// ----- the host's view of a selector -----

/// Access rights of `sel` as LAR (64-bit destination) returns them on the
/// host, or None where LAR clears ZF (null, beyond the table limit, not
/// visible at CPL 3, or a type LAR does not report).
fn host_lar(sel: u16) -> Option<u64> {
    let (v, zf) = host_lar_lsl(Lx::Lar, 8, sel, 0);
    zf.then_some(v)
}

#[derive(Clone, Copy)]
enum Lx {
    Lar,
    Lsl,
}

/// LAR or LSL with a `size`-byte destination that held `old`, run on the
/// host: the destination afterwards, and ZF.
fn host_lar_lsl(op: Lx, size: u8, sel: u16, old: u64) -> (u64, bool) {
    let mut v = old;
    let zf: u8;
    // SAFETY: LAR and LSL are unprivileged, read only the descriptor
    // tables, cannot fault with a register operand, and change only the
    // destination register and ZF (the asm declares both).
    unsafe {
        match (op, size) {
            (Lx::Lar, 2) => {
                core::arch::asm!("lar {v:x}, {s:x}", "setz {z}", v = inout(reg) v, s = in(reg) sel, z = out(reg_byte) zf, options(nomem, nostack))
            }
            (Lx::Lar, 4) => {
                core::arch::asm!("lar {v:e}, {s:x}", "setz {z}", v = inout(reg) v, s = in(reg) sel, z = out(reg_byte) zf, options(nomem, nostack))
            }
            (Lx::Lar, _) => {
                core::arch::asm!("lar {v}, {s:x}", "setz {z}", v = inout(reg) v, s = in(reg) sel, z = out(reg_byte) zf, options(nomem, nostack))
            }
            (Lx::Lsl, 2) => {
                core::arch::asm!("lsl {v:x}, {s:x}", "setz {z}", v = inout(reg) v, s = in(reg) sel, z = out(reg_byte) zf, options(nomem, nostack))
            }
            (Lx::Lsl, 4) => {
                core::arch::asm!("lsl {v:e}, {s:x}", "setz {z}", v = inout(reg) v, s = in(reg) sel, z = out(reg_byte) zf, options(nomem, nostack))
            }
            (Lx::Lsl, _) => {
                core::arch::asm!("lsl {v}, {s:x}", "setz {z}", v = inout(reg) v, s = in(reg) sel, z = out(reg_byte) zf, options(nomem, nostack))
            }
        }
    }
    (v, zf != 0)
}

/// VERR (`write` false) or VERW on the host: ZF.
fn host_verify(sel: u16, write: bool) -> bool {
    let zf: u8;
    // SAFETY: VERR/VERW are unprivileged, read only the descriptor tables,
    // cannot fault with a register operand and change only ZF.
    unsafe {
        if write {
            core::arch::asm!("verw {s:x}", "setz {z}", s = in(reg) sel, z = out(reg_byte) zf, options(nomem, nostack));
        } else {
            core::arch::asm!("verr {s:x}", "setz {z}", s = in(reg) sel, z = out(reg_byte) zf, options(nomem, nostack));
        }
    }
    zf != 0
}

/// Access-rights bits (as LAR returns them).
mod ar {
    pub const ACCESSED_OR_RW: u64 = 1 << 9; // readable (code) / writable (data)
    pub const CONFORMING: u64 = 1 << 10;
    pub const CODE: u64 = 1 << 11;
    pub const NOT_SYSTEM: u64 = 1 << 12;
    pub const PRESENT: u64 = 1 << 15;
    pub const LONG: u64 = 1 << 21;
    pub const DB: u64 = 1 << 22;
    pub fn dpl(a: u64) -> u64 {
        (a >> 13) & 3
    }
}

/// What a far transfer to `sel` does at CPL 3: Ok for a 64-bit code
/// segment, #GP where the hardware refuses it, SIGILL (named in the log)
/// for a 32- or 16-bit code segment, which the interpreter cannot run.
/// `ret` is true for RETF/IRET, which may not return to a more privileged
/// RPL.
fn check_code_target(ctx: &Ctx<'_>, insn: &Instruction, sel: u16, ret: bool) -> Step {
    if ret && sel & 3 != 3 {
        return Err(gp(ctx));
    }
    let Some(a) = host_lar(sel) else { return Err(gp(ctx)) };
    let code = a & (ar::NOT_SYSTEM | ar::CODE) == ar::NOT_SYSTEM | ar::CODE;
    // Nonconforming code must be DPL 3 (LAR already hides the others);
    // conforming code is reachable from any DPL.
    if !code || (a & ar::CONFORMING == 0 && ar::dpl(a) != 3) {
        return Err(gp(ctx));
    }
    // A segment that is not present raises #NP on the host (SIGBUS); no
    // descriptor Linux gives user space is absent, so #GP stands for it.
    if a & ar::PRESENT == 0 || (a & ar::LONG != 0 && a & ar::DB != 0) {
        return Err(gp(ctx));
    }
    if a & ar::LONG == 0 {
        let bits = if a & ar::DB != 0 { 32 } else { 16 };
        let what = format!(
            "{} to the {bits}-bit code selector {sel:#x} (compatibility mode): urun's interpreter runs only 64-bit code",
            super::super::describe(insn)
        );
        tracing::warn!("{what}: raising SIGILL");
        return Err(ctx.fault(FaultKind::InvalidOpcode { what }));
    }
    Ok(())
}

/// Is `v` a canonical address (48-bit virtual addresses)?
fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

// ----- far transfers -----

/// Operand size of RETF/IRET from its code.
fn stack_size(code: Code) -> u8 {
    match code {
        Code::Retfw | Code::Retfw_imm16 | Code::Iretw => 2,
        Code::Retfd | Code::Retfd_imm16 | Code::Iretd => 4,
        _ => 8,
    }
}

fn retf(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = stack_size(insn.code());
    let sp = ctx.cpu.gpr[reg::RSP];
    let target = ctx.load(sp, size)?;
    let sel = ctx.load(sp.wrapping_add(size as u64), size)? as u16;
    check_code_target(ctx, insn, sel, true)?;
    if !canonical(target) {
        return Err(gp(ctx));
    }
    let release = if insn.op_count() == 1 { insn.immediate16() as u64 } else { 0 };
    ctx.cpu.gpr[reg::RSP] = sp.wrapping_add(2 * size as u64).wrapping_add(release);
    ctx.cpu.seg[sreg::CS] = sel;
    ctx.next_rip = target;
    Ok(())
}

fn iret(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    // IRET with NT set would be a task return, which 64-bit mode refuses.
    if ctx.cpu.flags.get() & (1 << 14) != 0 {
        return Err(gp(ctx));
    }
    let size = stack_size(insn.code());
    let sp = ctx.cpu.gpr[reg::RSP];
    let mut v = [0u64; 5];
    for (i, slot) in v.iter_mut().enumerate() {
        *slot = ctx.load(sp.wrapping_add(i as u64 * size as u64), size)?;
    }
    let [target, cs, rflags, rsp, ss] = v;
    let (cs, ss) = (cs as u16, ss as u16);
    check_code_target(ctx, insn, cs, true)?;
    // SS: a writable data segment of the new CPL (3), never null at CPL 3.
    let ss_ok = ss & 3 == cs & 3
        && host_lar(ss).is_some_and(|a| {
            a & (ar::NOT_SYSTEM | ar::CODE | ar::ACCESSED_OR_RW | ar::PRESENT)
                == ar::NOT_SYSTEM | ar::ACCESSED_OR_RW | ar::PRESENT
                && ar::dpl(a) == 3
        });
    if !ss_ok || !canonical(target) {
        return Err(gp(ctx));
    }
    // At CPL 3 IF, IOPL, VIF and VIP keep their values; RF, AC and ID
    // change only with a 32- or 64-bit frame.
    let mut writable = fl::STATUS | fl::TF | fl::DF | (1 << 14);
    if size >= 4 {
        writable |= (1 << 16) | fl::AC | fl::ID;
    }
    ctx.cpu.flags.set_masked(writable, rflags);
    ctx.cpu.gpr[reg::RSP] = rsp;
    ctx.cpu.seg[sreg::CS] = cs;
    ctx.cpu.seg[sreg::SS] = ss;
    ctx.next_rip = target;
    Ok(())
}

/// The far pointer operand of JMP/CALL m16:xx: (offset, selector, offset
/// size).
fn far_pointer(ctx: &mut Ctx<'_>, insn: &Instruction) -> Result<(u64, u16, u8), Exit> {
    let size = match insn.code() {
        Code::Jmp_m1616 | Code::Call_m1616 => 2,
        Code::Jmp_m1664 | Code::Call_m1664 if !host_is_amd() => 8,
        _ => 4,
    };
    let a = ctx.ea(insn);
    let off = ctx.load(a, size)?;
    let sel = ctx.load(a.wrapping_add(size as u64), 2)? as u16;
    Ok((off, sel, size))
}

fn far_jmp(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let (target, sel, _) = far_pointer(ctx, insn)?;
    check_code_target(ctx, insn, sel, false)?;
    if !canonical(target) {
        return Err(gp(ctx));
    }
    ctx.cpu.seg[sreg::CS] = (sel & !3) | 3;
    ctx.next_rip = target;
    Ok(())
}

fn far_call(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let (target, sel, size) = far_pointer(ctx, insn)?;
    check_code_target(ctx, insn, sel, false)?;
    if !canonical(target) {
        return Err(gp(ctx));
    }
    // Both pushes must succeed before anything changes.
    let sp = ctx.cpu.gpr[reg::RSP];
    let cs = ctx.cpu.seg[sreg::CS] as u64;
    ctx.store(sp.wrapping_sub(size as u64), size, cs)?;
    ctx.store(sp.wrapping_sub(2 * size as u64), size, insn.next_ip() & mask(size))?;
    ctx.cpu.gpr[reg::RSP] = sp.wrapping_sub(2 * size as u64);
    ctx.cpu.seg[sreg::CS] = (sel & !3) | 3;
    ctx.next_rip = target;
    Ok(())
}

// ----- selectors -----

fn set_zf(ctx: &mut Ctx<'_>, on: bool) {
    ctx.cpu.flags.set_bits(fl::ZF, on);
}

fn lar_lsl(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let sel = ctx.get(insn, 1, 2)? as u16;
    let size = Ctx::reg_size(insn.op0_register());
    let old = ctx.reg(insn.op0_register());
    let op = if insn.mnemonic() == Mnemonic::Lar { Lx::Lar } else { Lx::Lsl };
    let (v, zf) = host_lar_lsl(op, size, sel, old);
    if zf {
        ctx.set_reg(insn.op0_register(), v & mask(size));
    }
    set_zf(ctx, zf);
    Ok(())
}

fn verr_verw(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let sel = ctx.get(insn, 0, 2)? as u16;
    let zf = host_verify(sel, insn.mnemonic() == Mnemonic::Verw);
    set_zf(ctx, zf);
    Ok(())
}

/// Load a data segment register (DS, ES, FS, GS) or SS with `sel`, with
/// the checks the hardware makes at CPL 3.
fn load_segment(ctx: &mut Ctx<'_>, r: Register, sel: u16) -> Step {
    let i = seg_index(r);
    if i == sreg::CS {
        return Err(gp(ctx));
    }
    if sel & !3 == 0 {
        // A null selector: allowed except in SS at CPL 3.
        if i == sreg::SS {
            return Err(gp(ctx));
        }
        // In 64-bit mode Intel CPUs clear the FS/GS base on a null load;
        // AMD's keep it.
        if !host_is_amd() {
            match i {
                sreg::FS => ctx.cpu.fs_base = 0,
                sreg::GS => ctx.cpu.gs_base = 0,
                _ => {}
            }
        }
        ctx.cpu.seg[i] = sel;
        return Ok(());
    }
    let Some(a) = host_lar(sel) else { return Err(gp(ctx)) };
    let kind = a & (ar::NOT_SYSTEM | ar::CODE | ar::ACCESSED_OR_RW);
    let ok = if i == sreg::SS {
        kind == ar::NOT_SYSTEM | ar::ACCESSED_OR_RW && sel & 3 == 3 && ar::dpl(a) == 3
    } else {
        // Data, or readable code (LAR already checked the privilege).
        kind & (ar::NOT_SYSTEM | ar::CODE) == ar::NOT_SYSTEM || kind == ar::NOT_SYSTEM | ar::CODE | ar::ACCESSED_OR_RW
    };
    // Not present: #NP (#SS for SS) on the host; see check_code_target.
    if !ok || a & ar::PRESENT == 0 {
        return Err(gp(ctx));
    }
    // Every descriptor Linux gives user space has base 0; FS and GS take
    // their base from it (LDT or set_thread_area bases are not modelled).
    match i {
        sreg::FS => ctx.cpu.fs_base = 0,
        sreg::GS => ctx.cpu.gs_base = 0,
        _ => {}
    }
    ctx.cpu.seg[i] = sel;
    Ok(())
}

/// MOV Sreg, r/m16.
pub(super) fn mov_to_segment(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let r = insn.op0_register();
    if r == Register::CS {
        return Err(ctx.invalid(insn));
    }
    let sel = ctx.get(insn, 1, 2)? as u16;
    load_segment(ctx, r, sel)
}

/// POP FS/GS (the only segment pops 64-bit mode has).
pub(super) fn pop_segment(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = if matches!(insn.code(), Code::Popw_FS | Code::Popw_GS) { 2 } else { 8 };
    let sp = ctx.cpu.gpr[reg::RSP];
    let sel = ctx.load(sp, size)? as u16;
    load_segment(ctx, insn.op0_register(), sel)?;
    ctx.cpu.gpr[reg::RSP] = sp.wrapping_add(size as u64);
    Ok(())
}

/// PUSH FS/GS: the selector, zero-extended.
pub(super) fn push_segment(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let size = if matches!(insn.code(), Code::Pushw_FS | Code::Pushw_GS) { 2 } else { 8 };
    let sel = selector(ctx, insn.op0_register()) as u64;
    ctx.push(size, sel)
}

// ----- descriptor-table stores -----

/// Does the host CPU have UMIP? Linux then turns it on, and these
/// instructions raise #GP at CPL 3, which the kernel emulates (the
/// personality does the same, with the kernel's values).
fn host_umip() -> bool {
    static UMIP: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| host_cpuid(0, 0)[0] >= 7 && host_cpuid(7, 0)[2] & (1 << 2) != 0);
    *UMIP
}

fn store_system_register(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    if host_umip() {
        return Err(gp(ctx));
    }
    // Without UMIP they run at CPL 3 and the host's values are the guest's
    // (the same kernel's tables).
    let (mut table, mut word) = ([0u8; 10], 0u64);
    // SAFETY: without UMIP these are unprivileged; they only store to the
    // local buffer or register given.
    unsafe {
        match insn.mnemonic() {
            Mnemonic::Sgdt => core::arch::asm!("sgdt [{}]", in(reg) table.as_mut_ptr(), options(nostack)),
            Mnemonic::Sidt => core::arch::asm!("sidt [{}]", in(reg) table.as_mut_ptr(), options(nostack)),
            Mnemonic::Sldt => core::arch::asm!("sldt {:r}", out(reg) word, options(nomem, nostack)),
            Mnemonic::Str => core::arch::asm!("str {:r}", out(reg) word, options(nomem, nostack)),
            _ => core::arch::asm!("smsw {:r}", out(reg) word, options(nomem, nostack)),
        }
    }
    match insn.mnemonic() {
        Mnemonic::Sgdt | Mnemonic::Sidt => {
            let a = ctx.ea(insn);
            ctx.write_bytes(a, &table)
        }
        _ => {
            let size = if insn.op0_kind() == OpKind::Memory { 2 } else { Ctx::reg_size(insn.op0_register()) };
            ctx.set(insn, 0, size, word & mask(size))
        }
    }
}

// ----- software interrupts -----

fn int_n(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    match insn.immediate8() {
        // The IDT gates Linux opens to CPL 3 raise their exception as a
        // trap: RIP past the instruction.
        3 => {
            ctx.cpu.rip = insn.next_ip();
            Err(ctx.fault(FaultKind::Breakpoint))
        }
        4 => {
            // #OF: SIGSEGV (si_code SI_KERNEL), as #GP is reported.
            ctx.cpu.rip = insn.next_ip();
            Err(gp(ctx))
        }
        0x80 => {
            tracing::warn!(insn = %super::super::describe(insn), "int 0x80 (the 32-bit syscall ABI) is not supported: raising SIGSEGV");
            Err(gp(ctx))
        }
        // Other vectors' gates are DPL 0: #GP.
        _ => Err(gp(ctx)),
    }
}

/// INT1 (ICEBP): a #DB trap, which Linux reports as SIGTRAP (TRAP_BRKPT).
fn int1(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    ctx.cpu.rip = insn.next_ip();
    Err(ctx.fault(FaultKind::DebugTrap))
}

// ----- the kernel's UMIP emulation -----

/// What an OS kernel that emulates the UMIP instructions for user space
/// returns from them (Linux: fixed values, see the personality).
#[derive(Clone, Copy, Debug)]
pub struct UmipValues {
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub idt_base: u64,
    pub idt_limit: u16,
    /// SMSW: the low bits of CR0.
    pub msw: u64,
    /// STR: the task register's selector.
    pub tr: u16,
    /// SLDT: the LDT selector.
    pub ldtr: u16,
}

/// After a #GP at `cpu.rip`: if the instruction there is SGDT, SIDT, SLDT,
/// STR or SMSW, complete it as Linux's UMIP emulation does (the result is
/// `values`; SGDT/SIDT store 10 bytes; SLDT/STR/SMSW store 2 bytes to
/// memory, and to a register as many bytes as the operand size, leaving the
/// rest of the register as it was) and step past it. `None` when it is none
/// of these (the #GP stands); `Some(Err)` with the fault of the store.
pub fn emulate_umip(mem: &AddressSpace, cpu: &mut CpuState, values: &UmipValues) -> Option<Result<(), Fault>> {
    let rip = cpu.rip;
    // Up to 15 bytes of executable guest memory at rip.
    let mut len = 0u64;
    while len < 15 {
        let at = rip.wrapping_add(len);
        if !mem.prot_at(at).is_some_and(|p| p.contains(Prot::EXEC)) {
            break;
        }
        len = (at | (PAGE_SIZE - 1)).wrapping_add(1).wrapping_sub(rip).min(15);
    }
    if len == 0 {
        return None;
    }
    // SAFETY: [rip, rip+len) lies in executable guest pages, which urun
    // keeps readable on the host.
    let bytes = unsafe { std::slice::from_raw_parts(rip as *const u8, len as usize) };
    let insn = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE).decode();
    let value = match insn.mnemonic() {
        Mnemonic::Sgdt | Mnemonic::Sidt => None,
        Mnemonic::Sldt => Some(values.ldtr as u64),
        Mnemonic::Str => Some(values.tr as u64),
        Mnemonic::Smsw => Some(values.msw),
        _ => return None,
    };
    let mut tlb = Tlb::new(mem.code_seq());
    let mut ctx = Ctx { cpu, mem, tlb: &mut tlb, next_rip: insn.next_ip(), smc: None };
    let r = match value {
        None => {
            let (base, limit) = if insn.mnemonic() == Mnemonic::Sgdt {
                (values.gdt_base, values.gdt_limit)
            } else {
                (values.idt_base, values.idt_limit)
            };
            let mut table = [0u8; 10];
            table[..2].copy_from_slice(&limit.to_le_bytes());
            table[2..].copy_from_slice(&base.to_le_bytes());
            let a = ctx.ea(&insn);
            ctx.write_bytes(a, &table)
        }
        Some(v) if insn.op0_kind() == OpKind::Register => {
            let r = insn.op0_register();
            let size = Ctx::reg_size(r);
            let full = r.full_register();
            let old = ctx.reg(full);
            ctx.set_reg(full, (old & !mask(size)) | (v & mask(size)));
            Ok(())
        }
        Some(v) => {
            let a = ctx.ea(&insn);
            ctx.store(a, 2, v & 0xffff)
        }
    };
    // A store into a page holding translated code reaches every engine
    // through the code log, as the interpreter's own stores do.
    if let Some((start, end)) = ctx.smc.take() {
        ctx.mem.code_written(start, end - start);
    }
    Some(match r {
        Ok(()) => {
            ctx.cpu.rip = insn.next_ip();
            Ok(())
        }
        Err(Exit::Fault(f)) => Err(f),
        Err(_) => Err(Fault { pc: rip, kind: FaultKind::GeneralProtection }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::Snippet;
    use crate::engine::{Exit, Fault, FaultKind};

    /// Run `code` (then SYSCALL); the exit and the final state.
    fn run(s: &Snippet, code: &[u8], init: impl FnOnce(&mut CpuState)) -> (CpuState, Exit) {
        s.run(code, init)
    }

    fn gp_at(s: &Snippet, off: u64) -> Exit {
        Exit::Fault(Fault { pc: s.code + off, kind: FaultKind::GeneralProtection })
    }

    #[test]
    fn far_return_to_user_cs_runs_and_bad_selectors_fault() {
        let s = Snippet::new();
        // push sel; lea rax, [rip+1]; push rax; retfq; (target: the SYSCALL)
        // 6a SEL / 48 8d 05 02 00 00 00 / 50 / 48 cb
        for (sel, ok) in [(0x33u8, true), (0x2b, false), (0x30, false), (0x08, false), (0x00, false)] {
            let code = [0x6a, sel, 0x48, 0x8d, 0x05, 0x03, 0x00, 0x00, 0x00, 0x50, 0x48, 0xcb];
            let (cpu, exit) = run(&s, &code, |_| {});
            if ok {
                assert_eq!(exit, Exit::Syscall, "retfq to {sel:#x}");
                assert_eq!(cpu.gpr[reg::RSP], s.stack_top);
            } else {
                assert_eq!(exit, gp_at(&s, 10), "retfq to {sel:#x}");
                // Precise: nothing popped.
                assert_eq!(cpu.gpr[reg::RSP], s.stack_top - 16);
            }
        }
    }

    #[test]
    fn far_return_to_32_bit_code_names_compatibility_mode() {
        let s = Snippet::new();
        let code = [0x6a, 0x23, 0x48, 0x8d, 0x05, 0x03, 0x00, 0x00, 0x00, 0x50, 0x48, 0xcb];
        let (_, exit) = run(&s, &code, |_| {});
        match exit {
            Exit::Fault(Fault { kind: FaultKind::InvalidOpcode { what }, .. }) => {
                assert!(what.contains("compatibility mode"), "{what}")
            }
            e => panic!("expected SIGILL, got {e:?}"),
        }
    }

    #[test]
    fn iretq_same_privilege_restores_flags_and_stack() {
        let s = Snippet::new();
        // mov rcx, rsp; push 0x2b; push rcx; push 0x40cd5 (flags); push 0x33;
        // lea rax, [rip+2]; push rax; iretq
        let code = [
            0x48, 0x89, 0xe1, 0x6a, 0x2b, 0x51, 0x68, 0xd5, 0x0c, 0x04, 0x00, 0x6a, 0x33, 0x48, 0x8d, 0x05, 0x03, 0x00,
            0x00, 0x00, 0x50, 0x48, 0xcf,
        ];
        let (cpu, exit) = run(&s, &code, |_| {});
        assert_eq!(exit, Exit::Syscall);
        assert_eq!(cpu.gpr[reg::RSP], s.stack_top);
        // Status flags, DF and AC from the frame; IF stays (CPL 3).
        let f = cpu.flags.get();
        assert_eq!(f & 0x40cd5, 0x40cd5, "{f:#x}");
        // SS = 0 is refused at CPL 3.
        let mut bad = code;
        bad[4] = 0x00;
        let (_, exit) = run(&s, &bad, |_| {});
        assert_eq!(exit, gp_at(&s, 21));
    }

    #[test]
    fn segment_loads_follow_the_host_descriptors() {
        let s = Snippet::new();
        // mov eax, SEL; mov ds, eax; mov edx, ds
        for (sel, ok) in [(0x2bu32, true), (0x0, true), (0x33, true), (0x08, false), (0xfff3, false)] {
            let mut code = vec![0xb8];
            code.extend_from_slice(&sel.to_le_bytes());
            code.extend_from_slice(&[0x8e, 0xd8, 0x8c, 0xda]);
            let (cpu, exit) = run(&s, &code, |c| c.gpr[reg::RDX] = 0x5a);
            if ok {
                assert_eq!(exit, Exit::Syscall, "mov ds, {sel:#x}");
                assert_eq!(cpu.gpr[reg::RDX], sel as u64);
            } else {
                assert_eq!(exit, gp_at(&s, 5), "mov ds, {sel:#x}");
            }
        }
    }

    #[test]
    fn lar_matches_the_host() {
        let s = Snippet::new();
        for sel in [0x33u16, 0x2b, 0x23, 0x08, 0, 0x7b, 0xfff3] {
            // mov ecx, sel; mov rax, -1; lar rax, ecx
            let mut code = vec![0xb9];
            code.extend_from_slice(&(sel as u32).to_le_bytes());
            code.extend_from_slice(&[0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff, 0x48, 0x0f, 0x02, 0xc1]);
            let (cpu, exit) = run(&s, &code, |_| {});
            assert_eq!(exit, Exit::Syscall);
            let (v, zf) = host_lar_lsl(Lx::Lar, 8, sel, u64::MAX);
            assert_eq!((cpu.gpr[reg::RAX], cpu.flags.zf()), (v, zf), "lar {sel:#x}");
        }
    }

    #[test]
    fn umip_emulation_writes_the_given_values() {
        let s = Snippet::new();
        let values = UmipValues {
            gdt_base: 0xffff_ffff_fffe_0000,
            gdt_limit: 0,
            idt_base: 0xffff_ffff_ffff_0000,
            idt_limit: 0,
            msw: 0x8005_0033,
            tr: 0x40,
            ldtr: 0,
        };
        let cases: &[(&[u8], &str)] = &[
            (&[0x0f, 0x01, 0x03], "sgdt [rbx]"),
            (&[0x0f, 0x01, 0xe0], "smsw eax"),
            (&[0x66, 0x0f, 0x00, 0xc8], "str ax"),
            (&[0x0f, 0x01, 0xc8], "not one of them (monitor)"),
        ];
        for (bytes, what) in cases {
            // SAFETY: the code area is ours and mapped RW.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), s.code as *mut u8, bytes.len()) };
            let mut cpu = CpuState { rip: s.code, ..CpuState::default() };
            cpu.gpr[reg::RAX] = 0x5a5a_5a5a_5a5a_5a5a;
            cpu.gpr[reg::RBX] = s.data;
            let r = emulate_umip(&s.mem, &mut cpu, &values);
            match *what {
                "sgdt [rbx]" => {
                    assert_eq!(r, Some(Ok(())));
                    // SAFETY: the data area is ours, 10 bytes were written.
                    let t = unsafe { std::slice::from_raw_parts(s.data as *const u8, 10) };
                    assert_eq!(t, [0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
                }
                "smsw eax" => assert_eq!(cpu.gpr[reg::RAX], 0x5a5a_5a5a_8005_0033, "Linux writes 4 bytes"),
                "str ax" => assert_eq!(cpu.gpr[reg::RAX], 0x5a5a_5a5a_5a5a_0040),
                _ => {
                    assert_eq!(r, None);
                    assert_eq!(cpu.rip, s.code);
                    continue;
                }
            }
            assert_eq!(cpu.rip, s.code + bytes.len() as u64, "{what}");
        }
    }
}
