//! AVX, AVX2, FMA and F16C (VEX-encoded vector forms): run on the host's
//! own unit, generically.
//!
//! Every VEX vector form is executed as the very same instruction on the
//! host, in a small frame: the guest's sixteen YMM registers (XMM plus
//! `CpuState::ymm_hi`), RAX, RCX and RDX (for the implicit operands of
//! VPCMPESTRI and kin), the guest MXCSR with every exception masked and
//! its flags cleared (as `sse_float::on_host!` does), and a 64-byte
//! scratch buffer standing in for the memory operand. The instruction is
//! re-encoded with iced-x86 with its memory operand rewritten to `[r9]`
//! (the scratch buffer) and its explicit general-purpose operands mapped to
//! RSI, R10 and R11 (loaded from the guest's registers), followed by a
//! `ret`, and kept in an executable snippet cache keyed by the rewritten
//! instruction. The guest memory operand goes through the interpreter's
//! checked accesses: a source is read into the scratch buffer before the
//! run, a destination (a memory operand 0) written from it after, so the
//! host instruction never touches guest memory. Results, rounding, NaNs,
//! DAZ/FTZ and exception flags are therefore the host's own, exactly; an
//! unmasked exception raised is #XM with nothing written.
//!
//! What the frame cannot express is handled in Rust: gathers (each element
//! loaded through the checked path, with the architectural partial
//! progress on a fault), the masked moves (only the selected elements are
//! accessed, so a fault comes only from them), VMASKMOVDQU (implicit
//! `[rdi]`), VLDMXCSR/VSTMXCSR (the SSE handlers).
//!
//! A host without AVX cannot run these, and the CPU model never advertises
//! what the host lacks (`cpuid::Model::host`), so the interpreter raises
//! #UD for them before they reach this file (`interp::model_allows`).

use std::arch::asm;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, RwLock};

use iced_x86::{Code, CpuidFeature, Encoder, EncodingKind, Instruction, Mnemonic, OpKind, Register};

use super::sse::float::{raise, FLAGS, MASKS};
use super::Table;
use crate::interp::{xmm_index, Ctx, Step};
use crate::state::{fl, reg};

pub(super) fn register(t: &mut Table) {
    use Mnemonic::*;
    for c in Code::values() {
        // Every VEX form is valid in 64-bit mode (a unit test in ops/mod.rs
        // checks it); `Code::encoding` avoids building iced's OpCodeInfo table.
        if c.encoding() != EncodingKind::VEX || t.is_set(c) {
            continue;
        }
        let f = c.cpuid_features();
        let vector = f
            .iter()
            .any(|f| matches!(f, CpuidFeature::AVX | CpuidFeature::AVX2 | CpuidFeature::FMA | CpuidFeature::F16C));
        let known = f.iter().all(|f| {
            matches!(
                f,
                CpuidFeature::AVX
                    | CpuidFeature::AVX2
                    | CpuidFeature::FMA
                    | CpuidFeature::F16C
                    | CpuidFeature::AES
                    | CpuidFeature::PCLMULQDQ
            )
        });
        if !vector || !known {
            continue;
        }
        let h: super::super::Handler = match c.mnemonic() {
            Vgatherdps | Vgatherdpd | Vgatherqps | Vgatherqpd | Vpgatherdd | Vpgatherdq | Vpgatherqd | Vpgatherqq => {
                gather
            }
            Vmaskmovps | Vmaskmovpd | Vpmaskmovd | Vpmaskmovq => maskmov,
            Vmaskmovdqu => vmaskmovdqu,
            Vldmxcsr => super::sse::ldmxcsr,
            Vstmxcsr => super::sse::stmxcsr,
            _ => on_host,
        };
        t.set(&[c], h);
    }
}

// ----- the host frame -----

/// What the host instruction runs on. Offsets are used by `run_snippet`.
#[repr(C, align(64))]
struct Frame {
    /// YMM0..15, little-endian lanes (offset 0).
    ymm: [[u128; 2]; 16],
    /// RAX, RCX, RDX, then the explicit GPR operands as RSI, R10, R11
    /// (offset 512).
    gpr: [u64; 6],
    /// RFLAGS after the instruction (offset 560).
    rflags: u64,
    /// The guest MXCSR in, the flags raised out (offset 568), and the
    /// host's own while the snippet runs (572).
    mxcsr: u32,
    host_mxcsr: u32,
    /// The memory operand (offset 576).
    mem: [u8; 64],
}

/// The host registers the explicit GPR operands are mapped to, in order.
const GPR_SLOTS: [Register; 3] = [Register::RSI, Register::R10, Register::R11];

/// Run `code` (one instruction and a `ret`) on `frame`.
///
/// # Safety
/// `code` must point to an executable snippet made by `snippet_for`: one
/// instruction that touches only the vector registers, MXCSR, RFLAGS, RAX,
/// RCX, RDX, RSI, R10, R11 and 64 bytes at R9, then `ret`.
unsafe fn run_snippet(frame: &mut Frame, code: *const u8) {
    // SAFETY: the caller guarantees what the snippet touches, all of it
    // declared here (the C clobbers cover every vector register, whose
    // upper halves `vzeroupper` clears again for the non-AVX Rust code).
    // The frame is live and 64-byte aligned; the stack is used only by
    // the call.
    unsafe {
        asm!(
            "stmxcsr [rdi + 572]",
            "ldmxcsr [rdi + 568]",
            "vmovdqu ymm0, [rdi + 0]",
            "vmovdqu ymm1, [rdi + 32]",
            "vmovdqu ymm2, [rdi + 64]",
            "vmovdqu ymm3, [rdi + 96]",
            "vmovdqu ymm4, [rdi + 128]",
            "vmovdqu ymm5, [rdi + 160]",
            "vmovdqu ymm6, [rdi + 192]",
            "vmovdqu ymm7, [rdi + 224]",
            "vmovdqu ymm8, [rdi + 256]",
            "vmovdqu ymm9, [rdi + 288]",
            "vmovdqu ymm10, [rdi + 320]",
            "vmovdqu ymm11, [rdi + 352]",
            "vmovdqu ymm12, [rdi + 384]",
            "vmovdqu ymm13, [rdi + 416]",
            "vmovdqu ymm14, [rdi + 448]",
            "vmovdqu ymm15, [rdi + 480]",
            "mov rax, [rdi + 512]",
            "mov rcx, [rdi + 520]",
            "mov rdx, [rdi + 528]",
            "mov rsi, [rdi + 536]",
            "mov r10, [rdi + 544]",
            "mov r11, [rdi + 552]",
            "lea r9, [rdi + 576]",
            "call r8",
            "pushfq",
            "pop qword ptr [rdi + 560]",
            "mov [rdi + 512], rax",
            "mov [rdi + 520], rcx",
            "mov [rdi + 528], rdx",
            "mov [rdi + 536], rsi",
            "mov [rdi + 544], r10",
            "mov [rdi + 552], r11",
            "vmovdqu [rdi + 0], ymm0",
            "vmovdqu [rdi + 32], ymm1",
            "vmovdqu [rdi + 64], ymm2",
            "vmovdqu [rdi + 96], ymm3",
            "vmovdqu [rdi + 128], ymm4",
            "vmovdqu [rdi + 160], ymm5",
            "vmovdqu [rdi + 192], ymm6",
            "vmovdqu [rdi + 224], ymm7",
            "vmovdqu [rdi + 256], ymm8",
            "vmovdqu [rdi + 288], ymm9",
            "vmovdqu [rdi + 320], ymm10",
            "vmovdqu [rdi + 352], ymm11",
            "vmovdqu [rdi + 384], ymm12",
            "vmovdqu [rdi + 416], ymm13",
            "vmovdqu [rdi + 448], ymm14",
            "vmovdqu [rdi + 480], ymm15",
            "stmxcsr [rdi + 568]",
            "ldmxcsr [rdi + 572]",
            "vzeroupper",
            in("rdi") frame as *mut Frame,
            in("r8") code,
            clobber_abi("C"),
        );
    }
}

// ----- the snippet cache -----

/// Executable memory for snippets: 16-byte slots in 1 MiB RWX regions
/// (urun's memory, outside the guest's map), never freed.
struct Arena {
    next: usize,
    end: usize,
}

const SLOT: usize = 16;
const REGION: usize = 1 << 20;

impl Arena {
    /// Copy `bytes` into a new slot; `None` if the host refuses memory.
    fn put(&mut self, bytes: &[u8]) -> Option<usize> {
        if self.next + SLOT > self.end {
            // SAFETY: a fresh anonymous mapping; the kernel picks the
            // address, so it replaces nothing.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    REGION,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            self.next = p as usize;
            self.end = p as usize + REGION;
        }
        let at = self.next;
        // SAFETY: [at, at + SLOT) lies in a region mapped writable above,
        // not yet handed out; bytes.len() <= SLOT (checked by the caller).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) };
        self.next += SLOT;
        Some(at)
    }
}

/// Snippets by rewritten instruction (iced's `Instruction` equality
/// ignores its address).
static SNIPPETS: LazyLock<RwLock<HashMap<Instruction, usize>>> = LazyLock::new(|| RwLock::new(HashMap::new()));
static ARENA: Mutex<Arena> = Mutex::new(Arena { next: 0, end: 0 });

/// The snippet for `r` (an instruction already rewritten to the frame's
/// registers); `None` when it cannot be encoded or placed.
fn snippet_for(r: &Instruction) -> Option<usize> {
    if let Some(at) = SNIPPETS.read().ok()?.get(r) {
        return Some(*at);
    }
    let mut enc = Encoder::new(64);
    let len = enc.encode(r, 0).ok()?;
    let mut bytes = enc.take_buffer();
    bytes.truncate(len);
    bytes.push(0xc3); // ret
    if bytes.len() > SLOT {
        return None;
    }
    let mut map = SNIPPETS.write().ok()?;
    if let Some(at) = map.get(r) {
        return Some(*at);
    }
    let at = ARENA.lock().ok()?.put(&bytes)?;
    map.insert(*r, at);
    Some(at)
}

/// Alignment a form demands of its memory operand (the VEX forms that keep
/// SSE's #GP on misalignment), else 1.
fn required_alignment(insn: &Instruction) -> u64 {
    use Mnemonic::*;
    match insn.mnemonic() {
        Vmovaps | Vmovapd | Vmovdqa | Vmovntps | Vmovntpd | Vmovntdq | Vmovntdqa => insn.memory_size().size() as u64,
        _ => 1,
    }
}

/// A VEX form run on the host (see the module comment).
fn on_host(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    let mut f = Frame {
        ymm: [[0; 2]; 16],
        gpr: [0; 6],
        rflags: 0,
        mxcsr: (ctx.cpu.mxcsr | MASKS) & !FLAGS,
        host_mxcsr: 0,
        mem: [0; 64],
    };
    for i in 0..16 {
        f.ymm[i] = [ctx.cpu.xmm[i], ctx.cpu.ymm_hi[i]];
    }
    f.gpr[0] = ctx.cpu.gpr[reg::RAX];
    f.gpr[1] = ctx.cpu.gpr[reg::RCX];
    f.gpr[2] = ctx.cpu.gpr[reg::RDX];
    let mut r = *insn;
    let mut mem = None;
    let mut dest_gpr = None;
    let mut slot = 0;
    for i in 0..insn.op_count() {
        match insn.op_kind(i) {
            OpKind::Memory => {
                let addr = ctx.ea(insn);
                let size = insn.memory_size().size();
                if size > f.mem.len() {
                    return Err(ctx.invalid(insn));
                }
                ctx.require_aligned(addr, required_alignment(insn))?;
                let store = i == 0;
                if !store {
                    ctx.read_bytes(addr, &mut f.mem[..size])?;
                }
                mem = Some((addr, size, store));
                r.set_memory_base(Register::R9);
                r.set_memory_index(Register::None);
                r.set_memory_index_scale(1);
                r.set_memory_displacement64(0);
                r.set_memory_displ_size(0);
                r.set_segment_prefix(Register::None);
            }
            OpKind::Register if insn.op_register(i).is_gpr() => {
                let g = insn.op_register(i);
                let Some(host) = GPR_SLOTS.get(slot) else { return Err(ctx.invalid(insn)) };
                f.gpr[3 + slot] = ctx.reg(g.full_register());
                let mapped = match g.size() {
                    4 => host_low32(*host),
                    _ => *host,
                };
                r.set_op_register(i, mapped);
                if i == 0 {
                    dest_gpr = Some((g, slot));
                }
                slot += 1;
            }
            _ => {}
        }
    }
    let Some(code) = snippet_for(&r) else {
        tracing::warn!(insn = %crate::interp::describe(insn), "cannot run this VEX form on the host: raising SIGILL");
        return Err(ctx.invalid(insn));
    };
    // SAFETY: the snippet is `r` and a `ret`: `r` is a VEX vector form
    // (no control flow, no stack), whose explicit GPR operands are RSI,
    // R10, R11, whose memory operand is the 64 bytes at R9 (the frame's
    // scratch buffer, larger than any operand: checked above) and whose
    // implicit operands are at most RAX, RCX, RDX, the vector registers,
    // MXCSR and RFLAGS (gathers, masked moves and VMASKMOVDQU never come
    // here: `register`).
    unsafe { run_snippet(&mut f, code as *const u8) };
    raise(ctx, f.mxcsr & FLAGS)?;
    if let Some((addr, size, true)) = mem {
        ctx.write_bytes(addr, &f.mem[..size])?;
    }
    for i in 0..16 {
        ctx.cpu.xmm[i] = f.ymm[i][0];
        ctx.cpu.ymm_hi[i] = f.ymm[i][1];
    }
    ctx.cpu.gpr[reg::RAX] = f.gpr[0];
    ctx.cpu.gpr[reg::RCX] = f.gpr[1];
    ctx.cpu.gpr[reg::RDX] = f.gpr[2];
    if let Some((g, slot)) = dest_gpr {
        ctx.set_reg(g, f.gpr[3 + slot]);
    }
    let modified = status_bits(insn.rflags_modified());
    if modified != 0 {
        ctx.cpu.flags.set_masked(modified, f.rflags);
    }
    Ok(())
}

/// iced's `RflagsBits` as RFLAGS bits (status flags only).
fn status_bits(iced: u32) -> u64 {
    use iced_x86::RflagsBits as R;
    [(R::OF, fl::OF), (R::SF, fl::SF), (R::ZF, fl::ZF), (R::AF, fl::AF), (R::CF, fl::CF), (R::PF, fl::PF)]
        .iter()
        .filter(|(i, _)| iced & i != 0)
        .fold(0, |a, (_, f)| a | f)
}

/// The 32-bit name of a 64-bit register.
fn host_low32(r: Register) -> Register {
    match r {
        Register::RSI => Register::ESI,
        Register::R10 => Register::R10D,
        _ => Register::R11D,
    }
}

// ----- what the frame cannot express -----

/// A YMM register as 32 bytes.
fn ymm_bytes(ctx: &Ctx<'_>, r: Register) -> [u8; 32] {
    let i = xmm_index_any(r);
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&ctx.cpu.xmm[i].to_le_bytes());
    b[16..].copy_from_slice(&ctx.cpu.ymm_hi[i].to_le_bytes());
    b
}

/// Write a register from 32 bytes (an XMM destination zeroes the upper
/// half, as every VEX.128 form does).
fn set_ymm_bytes(ctx: &mut Ctx<'_>, r: Register, b: &[u8; 32]) {
    let i = xmm_index_any(r);
    let lo: [u8; 16] = b[..16].try_into().unwrap_or([0; 16]);
    let hi: [u8; 16] = b[16..].try_into().unwrap_or([0; 16]);
    ctx.cpu.xmm[i] = u128::from_le_bytes(lo);
    ctx.cpu.ymm_hi[i] = if r.is_ymm() { u128::from_le_bytes(hi) } else { 0 };
}

/// Index 0..15 of an XMM or YMM register.
fn xmm_index_any(r: Register) -> usize {
    if r.is_ymm() {
        (r as usize).wrapping_sub(Register::YMM0 as usize) & 15
    } else {
        xmm_index(r)
    }
}

fn elem(b: &[u8; 32], j: usize, size: usize) -> u64 {
    let mut v = [0u8; 8];
    v[..size].copy_from_slice(&b[j * size..(j + 1) * size]);
    u64::from_le_bytes(v)
}

fn set_elem(b: &mut [u8; 32], j: usize, size: usize, v: u64) {
    b[j * size..(j + 1) * size].copy_from_slice(&v.to_le_bytes()[..size]);
}

/// VGATHER*/VPGATHER* (VEX): element by element, lowest first, load the
/// element from base + index*scale + disp when its mask element has its
/// sign bit set, then clear the mask element (selected or not). A fault
/// stops there: the elements below it are loaded and their mask elements
/// zero, the faulting one and those above keep their mask elements, and
/// nothing else changes (not even the upper half of an XMM destination or
/// mask), as the differential tester measured on Zen 5. On completion the
/// whole mask is zero, and the destination beyond the elements gathered is
/// zero.
fn gather(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    use Mnemonic::*;
    let (isz, dsz) = match insn.mnemonic() {
        Vgatherdps | Vpgatherdd => (4, 4),
        Vgatherdpd | Vpgatherdq => (4, 8),
        Vgatherqps | Vpgatherqd => (8, 4),
        _ => (8, 8),
    };
    let dst = insn.op0_register();
    let mask_reg = insn.op2_register();
    let index_reg = insn.memory_index();
    let count = (index_reg.size() / isz).min(dst.size() / dsz);
    let index = ymm_bytes(ctx, index_reg);
    let mut data = ymm_bytes(ctx, dst);
    let mut mask = ymm_bytes(ctx, mask_reg);
    let base = match insn.memory_base() {
        Register::None => 0,
        Register::RIP => ctx.next_rip,
        b => ctx.reg(b),
    };
    let base = base.wrapping_add(insn.memory_displacement64());
    let seg = match insn.memory_segment() {
        Register::FS => ctx.cpu.fs_base,
        Register::GS => ctx.cpu.gs_base,
        _ => 0,
    };
    let scale = insn.memory_index_scale() as u64;
    // An address-size prefix: a 32-bit base, or no base and a 32-bit
    // displacement (iced's displacement size 4; 8 is 64-bit addressing).
    let a32 = match insn.memory_base() {
        Register::None => insn.memory_displ_size() == 4,
        b => b.size() == 4,
    };
    for j in 0..count {
        if elem(&mask, j, dsz) >> (dsz * 8 - 1) & 1 != 0 {
            let raw = elem(&index, j, isz);
            let idx = if isz == 4 { raw as u32 as i32 as i64 as u64 } else { raw };
            let mut addr = base.wrapping_add(idx.wrapping_mul(scale));
            if a32 {
                addr &= 0xffff_ffff;
            }
            let addr = addr.wrapping_add(seg);
            match ctx.load(addr, dsz as u8) {
                Ok(v) => set_elem(&mut data, j, dsz, v),
                Err(e) => {
                    // Partial progress, the registers' full width kept.
                    let (d, m) = (xmm_index_any(dst), xmm_index_any(mask_reg));
                    let (dhi, mhi) = (ctx.cpu.ymm_hi[d], ctx.cpu.ymm_hi[m]);
                    set_ymm_bytes(ctx, dst, &data);
                    set_ymm_bytes(ctx, mask_reg, &mask);
                    if !dst.is_ymm() {
                        ctx.cpu.ymm_hi[d] = dhi;
                    }
                    if !mask_reg.is_ymm() {
                        ctx.cpu.ymm_hi[m] = mhi;
                    }
                    return Err(e);
                }
            }
        }
        set_elem(&mut mask, j, dsz, 0);
    }
    data[count * dsz..].fill(0);
    set_ymm_bytes(ctx, dst, &data);
    set_ymm_bytes(ctx, mask_reg, &[0; 32]);
    Ok(())
}

/// VMASKMOVPS/PD, VPMASKMOVD/Q: load (zeroing unselected elements) or
/// store the elements whose mask element has its sign bit set; only those
/// are accessed, so only they can fault, and a store that faults writes
/// nothing (every selected element is checked first), as on the host.
fn maskmov(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    use Mnemonic::*;
    let size = match insn.mnemonic() {
        Vmaskmovps | Vpmaskmovd => 4,
        _ => 8,
    };
    let addr = ctx.ea(insn);
    if insn.op0_kind() == OpKind::Memory {
        let mask = ymm_bytes(ctx, insn.op1_register());
        let src = ymm_bytes(ctx, insn.op2_register());
        let n = insn.op1_register().size() / size;
        let selected = (0..n).filter(|&j| elem(&mask, j, size) >> (size * 8 - 1) & 1 != 0);
        for j in selected.clone() {
            ctx.probe_write(addr.wrapping_add((j * size) as u64), size as u8)?;
        }
        for j in selected {
            ctx.store(addr.wrapping_add((j * size) as u64), size as u8, elem(&src, j, size))?;
        }
        return Ok(());
    }
    let mask = ymm_bytes(ctx, insn.op1_register());
    let n = insn.op0_register().size() / size;
    let mut out = [0u8; 32];
    for j in 0..n {
        if elem(&mask, j, size) >> (size * 8 - 1) & 1 != 0 {
            let v = ctx.load(addr.wrapping_add((j * size) as u64), size as u8)?;
            set_elem(&mut out, j, size, v);
        }
    }
    set_ymm_bytes(ctx, insn.op0_register(), &out);
    Ok(())
}

/// VMASKMOVDQU: the bytes of xmm1 whose byte in xmm2 has its sign bit set
/// go to [RDI].
fn vmaskmovdqu(ctx: &mut Ctx<'_>, insn: &Instruction) -> Step {
    // Operand 0 is the implicit [RDI].
    let src = ctx.cpu.xmm[xmm_index(insn.op1_register())].to_le_bytes();
    let mask = ctx.cpu.xmm[xmm_index(insn.op2_register())].to_le_bytes();
    let base = ctx.cpu.gpr[reg::RDI];
    for j in 0..16 {
        if mask[j] & 0x80 != 0 {
            ctx.store(base.wrapping_add(j as u64), 1, src[j] as u64)?;
        }
    }
    Ok(())
}
