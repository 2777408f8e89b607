//! The Windows x64 unwinder: the CONTEXT record as Windows lays it out,
//! `.pdata` lookup (RUNTIME_FUNCTION tables), and `RtlVirtualUnwind` over
//! UNWIND_INFO — every unwind code, chained info, the exception and
//! termination handlers a frame names, and epilogs recognised by their
//! fixed instruction forms, as Windows and Wine do.
//!
//! Everything here reads guest memory through [`Mem`], so the unit tests
//! run it over plain byte arrays.

use urun_cpu::state::reg;
use urun_cpu::{AddressSpace, CpuState};

/// CONTEXT: 0x4d0 bytes, 16-byte aligned.
pub(crate) const CONTEXT_SIZE: u64 = 0x4d0;
const CTX_FLAGS: usize = 0x30;
const CTX_MXCSR: usize = 0x34;
const CTX_SEGS: usize = 0x38;
const CTX_EFLAGS: usize = 0x44;
const CTX_GPR: usize = 0x78;
const CTX_RIP: usize = 0xf8;
/// XMM_SAVE_AREA32 (the FXSAVE image): x87 and MXCSR, XMM0-15 at +0xa0.
const CTX_FLTSAVE: usize = 0x100;
const CTX_XMM: usize = CTX_FLTSAVE + 0xa0;
/// CONTEXT_AMD64 | CONTROL | INTEGER | SEGMENTS | FLOATING_POINT.
pub(crate) const CONTEXT_FULL_SEGMENTS: u32 = 0x0010_000f;
/// Windows x64's selectors: CS, DS, ES, FS, GS, SS (the CONTEXT's order).
const WINDOWS_SEGS: [u16; 6] = [0x33, 0x2b, 0x2b, 0x53, 0x2b, 0x2b];

/// RUNTIME_FUNCTION and UNWIND_INFO flags.
pub(crate) const UNW_FLAG_NHANDLER: u32 = 0;
pub(crate) const UNW_FLAG_EHANDLER: u32 = 1;
pub(crate) const UNW_FLAG_UHANDLER: u32 = 2;
const UNW_FLAG_CHAININFO: u8 = 4;

/// Guest memory as the unwinder reads it.
pub(crate) trait Mem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;

    fn u64_at(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }

    fn u32_at(&self, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b).then(|| u32::from_le_bytes(b))
    }
}

impl Mem for AddressSpace {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        crate::linux::guest::read_into(self, addr, buf)
    }
}

/// Why a frame could not be unwound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UnwindError {
    #[error("unwind data at {0:#x} is not readable")]
    Unreadable(u64),
    #[error("UNWIND_INFO version {0} at {1:#x} is not 1 or 2")]
    Version(u8, u64),
    #[error("the chain of unwind infos at {0:#x} does not end")]
    Chain(u64),
}

/// A CONTEXT record, kept in its Windows byte layout so that it goes to
/// and from guest memory unchanged.
#[derive(Clone)]
pub(crate) struct Context(pub [u8; CONTEXT_SIZE as usize]);

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Context {{ rip: {:#x}, rsp: {:#x} }}", self.rip(), self.gpr(reg::RSP))
    }
}

impl Context {
    pub fn zeroed() -> Self {
        Context([0; CONTEXT_SIZE as usize])
    }

    fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[off..off + 8]);
        u64::from_le_bytes(b)
    }

    fn put_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn u32_at(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_le_bytes(b)
    }

    /// General register `i` in the x86 encoding order (RAX, RCX, RDX, RBX,
    /// RSP, RBP, RSI, RDI, R8-R15), which is also the CONTEXT's and the
    /// unwind codes' order.
    pub fn gpr(&self, i: usize) -> u64 {
        self.u64_at(CTX_GPR + 8 * (i & 15))
    }

    pub fn set_gpr(&mut self, i: usize, v: u64) {
        self.put_u64(CTX_GPR + 8 * (i & 15), v);
    }

    pub fn rip(&self) -> u64 {
        self.u64_at(CTX_RIP)
    }

    pub fn set_rip(&mut self, v: u64) {
        self.put_u64(CTX_RIP, v);
    }

    pub fn rsp(&self) -> u64 {
        self.gpr(reg::RSP)
    }

    pub fn set_xmm(&mut self, i: usize, v: u128) {
        let off = CTX_XMM + 16 * (i & 15);
        self.0[off..off + 16].copy_from_slice(&v.to_le_bytes());
    }

    pub fn xmm(&self, i: usize) -> u128 {
        let off = CTX_XMM + 16 * (i & 15);
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.0[off..off + 16]);
        u128::from_le_bytes(b)
    }

    /// The CONTEXT of `cpu` (its x87/SSE part must be current).
    pub fn from_cpu(cpu: &CpuState) -> Self {
        let mut c = Context::zeroed();
        c.0[CTX_FLAGS..CTX_FLAGS + 4].copy_from_slice(&CONTEXT_FULL_SEGMENTS.to_le_bytes());
        c.0[CTX_MXCSR..CTX_MXCSR + 4].copy_from_slice(&cpu.mxcsr.to_le_bytes());
        for (i, s) in WINDOWS_SEGS.iter().enumerate() {
            c.0[CTX_SEGS + 2 * i..CTX_SEGS + 2 * i + 2].copy_from_slice(&s.to_le_bytes());
        }
        c.0[CTX_EFLAGS..CTX_EFLAGS + 4].copy_from_slice(&(cpu.rflags() as u32).to_le_bytes());
        for i in 0..16 {
            c.set_gpr(i, cpu.gpr[i]);
        }
        c.set_rip(cpu.rip);
        c.0[CTX_FLTSAVE..CTX_FLTSAVE + 512].copy_from_slice(&cpu.fxsave_image());
        c
    }

    /// Put this CONTEXT into `cpu`: the parts its ContextFlags name
    /// (segments and debug registers are not the guest's to change).
    pub fn apply(&self, cpu: &mut CpuState) {
        let flags = self.u32_at(CTX_FLAGS);
        // CONTEXT_CONTROL
        if flags & 1 != 0 {
            cpu.rip = self.rip();
            cpu.gpr[reg::RSP] = self.gpr(reg::RSP);
            cpu.gpr[reg::RBP] = self.gpr(reg::RBP);
            // Only the flags a user program may change.
            let eflags = u64::from(self.u32_at(CTX_EFLAGS));
            cpu.flags.set_masked(0x0000_0cd5 | 0x0004_0000 | 0x0020_0000 | 0x100, eflags);
        }
        // CONTEXT_INTEGER
        if flags & 2 != 0 {
            for i in 0..16 {
                if i != reg::RSP && i != reg::RBP {
                    cpu.gpr[i] = self.gpr(i);
                }
            }
        }
        // CONTEXT_FLOATING_POINT
        if flags & 8 != 0 {
            let mut img = [0u8; 512];
            img.copy_from_slice(&self.0[CTX_FLTSAVE..CTX_FLTSAVE + 512]);
            // MXCSR is both at 0x34 (MxCsr) and in the FXSAVE image:
            // Windows restores the thread's from MxCsr.
            img[24..28].copy_from_slice(&self.0[CTX_MXCSR..CTX_MXCSR + 4]);
            if !cpu.fxrstor_image(&img) {
                for i in 0..16 {
                    cpu.xmm[i] = self.xmm(i);
                }
            }
        }
    }

    pub fn read(mem: &dyn Mem, addr: u64) -> Option<Self> {
        let mut c = Context::zeroed();
        mem.read(addr, &mut c.0).then_some(c)
    }
}

/// One RUNTIME_FUNCTION entry (RVAs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RuntimeFunction {
    pub begin: u32,
    pub end: u32,
    pub unwind: u32,
}

impl RuntimeFunction {
    pub fn read(mem: &dyn Mem, addr: u64) -> Option<Self> {
        let mut b = [0u8; 12];
        if !mem.read(addr, &mut b) {
            return None;
        }
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(RuntimeFunction { begin: w(0), end: w(4), unwind: w(8) })
    }
}

/// The entry of a sorted RUNTIME_FUNCTION table (`count` entries at
/// `table`, RVAs from `base`) that covers `pc`: its guest address.
pub(crate) fn lookup(mem: &dyn Mem, base: u64, table: u64, count: u64, pc: u64) -> Option<u64> {
    let rva = pc.checked_sub(base)?;
    if rva > u64::from(u32::MAX) {
        return None;
    }
    let rva = rva as u32;
    let (mut lo, mut hi) = (0u64, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let at = table + 12 * mid;
        let f = RuntimeFunction::read(mem, at)?;
        if rva < f.begin {
            hi = mid;
        } else if rva >= f.end {
            lo = mid + 1;
        } else {
            return Some(at);
        }
    }
    None
}

/// What unwinding one frame found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Unwound {
    /// The language handler the flags asked for (absolute), if any.
    pub handler: Option<u64>,
    /// What follows the handler's RVA in the UNWIND_INFO.
    pub handler_data: u64,
    pub establisher: u64,
}

/// Unwind codes.
const UWOP_PUSH_NONVOL: u8 = 0;
const UWOP_ALLOC_LARGE: u8 = 1;
const UWOP_ALLOC_SMALL: u8 = 2;
const UWOP_SET_FPREG: u8 = 3;
const UWOP_SAVE_NONVOL: u8 = 4;
const UWOP_SAVE_NONVOL_FAR: u8 = 5;
const UWOP_EPILOG: u8 = 6;
const UWOP_SPARE_CODE: u8 = 7;
const UWOP_SAVE_XMM128: u8 = 8;
const UWOP_SAVE_XMM128_FAR: u8 = 9;
const UWOP_PUSH_MACHFRAME: u8 = 10;

/// How many 16-bit slots an unwind code takes.
fn slots(op: u8, info: u8) -> usize {
    match op {
        UWOP_ALLOC_LARGE => 2 + usize::from(info != 0),
        UWOP_SAVE_NONVOL | UWOP_SAVE_XMM128 | UWOP_EPILOG => 2,
        UWOP_SAVE_NONVOL_FAR | UWOP_SAVE_XMM128_FAR | UWOP_SPARE_CODE => 3,
        _ => 1,
    }
}

/// `RtlVirtualUnwind`: unwind the frame of the function `func` (the
/// guest address of its RUNTIME_FUNCTION, RVAs from `base`) in which
/// `ctx` stands at `pc`, leaving `ctx` as its caller's. `kind` is
/// UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER or UNW_FLAG_NHANDLER: which
/// handler the caller wants reported.
pub(crate) fn virtual_unwind(
    mem: &dyn Mem,
    kind: u32,
    base: u64,
    pc: u64,
    func: u64,
    ctx: &mut Context,
) -> Result<Unwound, UnwindError> {
    let mut f = RuntimeFunction::read(mem, func).ok_or(UnwindError::Unreadable(func))?;
    let mut frame = ctx.rsp();
    let mut first = true;
    let mut mach_frame = false;
    let mut prolog_offset;
    let mut flags;
    let mut handler_at;
    let mut depth = 0;
    loop {
        let info = base + u64::from(f.unwind);
        let mut head = [0u8; 4];
        if !mem.read(info, &mut head) {
            return Err(UnwindError::Unreadable(info));
        }
        let version = head[0] & 7;
        if version != 1 && version != 2 {
            return Err(UnwindError::Version(version, info));
        }
        flags = head[0] >> 3;
        let prolog = u64::from(head[1]);
        let count = usize::from(head[2]);
        let (frame_reg, frame_off) = (usize::from(head[3] & 15), u64::from(head[3] >> 4));
        let mut codes = vec![0u8; 2 * count];
        if !mem.read(info + 4, &mut codes) {
            return Err(UnwindError::Unreadable(info + 4));
        }
        handler_at = info + 4 + 2 * ((count as u64 + 1) & !1);
        if frame_reg != 0 {
            frame = ctx.gpr(frame_reg).wrapping_sub(frame_off * 16);
        }
        let start = base + u64::from(f.begin);
        if pc >= start && pc < start + prolog {
            prolog_offset = pc - start;
        } else {
            prolog_offset = u64::MAX;
            if first && in_epilog(mem, base, &f, pc) {
                run_epilog(mem, pc, ctx);
                return Ok(Unwound { handler: None, handler_data: 0, establisher: frame });
            }
        }
        let slot = |i: usize| u16::from_le_bytes([codes[2 * i], codes[2 * i + 1]]);
        let far = |i: usize| u64::from(slot(i)) | u64::from(slot(i + 1)) << 16;
        let mut i = 0;
        while i < count {
            let (offset, op, opinfo) = (u64::from(codes[2 * i]), codes[2 * i + 1] & 15, codes[2 * i + 1] >> 4);
            let n = slots(op, opinfo);
            if i + n > count {
                break;
            }
            if prolog_offset < offset {
                i += n;
                continue;
            }
            let r = usize::from(opinfo);
            let read = |a: u64| mem.u64_at(a).ok_or(UnwindError::Unreadable(a));
            match op {
                UWOP_PUSH_NONVOL => {
                    let v = read(ctx.rsp())?;
                    ctx.set_gpr(r, v);
                    ctx.set_gpr(reg::RSP, ctx.rsp().wrapping_add(8));
                }
                UWOP_ALLOC_LARGE => {
                    let size = if opinfo == 0 { u64::from(slot(i + 1)) * 8 } else { far(i + 1) };
                    ctx.set_gpr(reg::RSP, ctx.rsp().wrapping_add(size));
                }
                UWOP_ALLOC_SMALL => ctx.set_gpr(reg::RSP, ctx.rsp().wrapping_add(u64::from(opinfo) * 8 + 8)),
                UWOP_SET_FPREG => ctx.set_gpr(reg::RSP, ctx.gpr(frame_reg).wrapping_sub(frame_off * 16)),
                UWOP_SAVE_NONVOL => {
                    let v = read(frame.wrapping_add(u64::from(slot(i + 1)) * 8))?;
                    ctx.set_gpr(r, v);
                }
                UWOP_SAVE_NONVOL_FAR => {
                    let v = read(frame.wrapping_add(far(i + 1)))?;
                    ctx.set_gpr(r, v);
                }
                UWOP_SAVE_XMM128 | UWOP_SAVE_XMM128_FAR => {
                    let off = if op == UWOP_SAVE_XMM128 { u64::from(slot(i + 1)) * 16 } else { far(i + 1) };
                    let a = frame.wrapping_add(off);
                    let mut b = [0u8; 16];
                    if !mem.read(a, &mut b) {
                        return Err(UnwindError::Unreadable(a));
                    }
                    ctx.set_xmm(r, u128::from_le_bytes(b));
                }
                UWOP_PUSH_MACHFRAME => {
                    // An interrupt frame: [error code,] RIP, CS, EFLAGS, RSP, SS.
                    if opinfo != 0 {
                        ctx.set_gpr(reg::RSP, ctx.rsp().wrapping_add(8));
                    }
                    let sp = ctx.rsp();
                    ctx.set_rip(read(sp)?);
                    ctx.set_gpr(reg::RSP, read(sp.wrapping_add(24))?);
                    mach_frame = true;
                }
                // UWOP_EPILOG (version 2) describes epilogs only;
                // UWOP_SPARE_CODE has no effect.
                _ => {}
            }
            i += n;
        }
        if flags & UNW_FLAG_CHAININFO == 0 {
            break;
        }
        f = RuntimeFunction::read(mem, handler_at).ok_or(UnwindError::Unreadable(handler_at))?;
        first = false;
        depth += 1;
        if depth > 32 {
            return Err(UnwindError::Chain(info));
        }
    }
    if !mach_frame {
        let sp = ctx.rsp();
        ctx.set_rip(mem.u64_at(sp).ok_or(UnwindError::Unreadable(sp))?);
        ctx.set_gpr(reg::RSP, sp.wrapping_add(8));
    }
    let mut out = Unwound { handler: None, handler_data: 0, establisher: frame };
    if u32::from(flags) & kind & 3 != 0 && prolog_offset == u64::MAX {
        let rva = mem.u32_at(handler_at).ok_or(UnwindError::Unreadable(handler_at))?;
        out.handler = Some(base + u64::from(rva));
        out.handler_data = handler_at + 4;
    }
    Ok(out)
}

/// Unwind a leaf function (no RUNTIME_FUNCTION): the return address is at
/// RSP. The establisher frame is RSP.
pub(crate) fn unwind_leaf(mem: &dyn Mem, ctx: &mut Context) -> Result<u64, UnwindError> {
    let sp = ctx.rsp();
    ctx.set_rip(mem.u64_at(sp).ok_or(UnwindError::Unreadable(sp))?);
    ctx.set_gpr(reg::RSP, sp.wrapping_add(8));
    Ok(sp)
}

fn code_at(mem: &dyn Mem, pc: u64) -> Option<[u8; 16]> {
    let mut b = [0u8; 16];
    if mem.read(pc, &mut b) {
        return Some(b);
    }
    // Near the end of a mapping: read what there is, byte by byte.
    for (i, byte) in b.iter_mut().enumerate() {
        let mut one = [0u8; 1];
        if !mem.read(pc + i as u64, &mut one) {
            return if i == 0 { None } else { Some(b) };
        }
        *byte = one[0];
    }
    Some(b)
}

/// Is `pc` in an epilog? Epilogs have fixed forms: optionally `add rsp,
/// imm` or `lea rsp, [reg+disp]`, then pops, then `ret` (or a `jmp`
/// elsewhere in the function, or out of it as a tail call).
fn in_epilog(mem: &dyn Mem, base: u64, f: &RuntimeFunction, pc: u64) -> bool {
    let Some(b) = code_at(mem, pc) else { return false };
    let mut at = 0usize;
    if b[0] & 0xf8 == 0x48 {
        match b[1] {
            0x81 if b[0] == 0x48 && b[2] == 0xc4 => at = 7,
            0x83 if b[0] == 0x48 && b[2] == 0xc4 => at = 4,
            0x8d => {
                let modrm = b[2];
                if b[0] & 0x06 != 0 || (modrm >> 3) & 7 != 4 || modrm & 7 == 4 {
                    return false;
                }
                at = match modrm >> 6 {
                    1 => 4,
                    2 => 7,
                    _ => return false,
                };
            }
            0x81 | 0x83 => return false,
            _ => {}
        }
    }
    let mut pc = pc + at as u64;
    for _ in 0..64 {
        let Some(b) = code_at(mem, pc) else { return false };
        let mut i = 0;
        if b[0] & 0xf0 == 0x40 {
            i = 1;
        }
        match b[i] {
            0x58..=0x5f => pc += i as u64 + 1,
            0xc2 | 0xc3 => return true,
            0xf3 => return b[i + 1] == 0xc3,
            0xe9 | 0xeb => {
                let target = if b[i] == 0xe9 {
                    let d = i32::from_le_bytes([b[i + 1], b[i + 2], b[i + 3], b[i + 4]]);
                    (pc + i as u64 + 5).wrapping_add(d as i64 as u64)
                } else {
                    (pc + i as u64 + 2).wrapping_add(b[i + 1] as i8 as i64 as u64)
                };
                let rva = target.wrapping_sub(base);
                if rva >= u64::from(f.begin) && rva < u64::from(f.end) {
                    pc = target;
                    continue;
                }
                // A tail call out of the function ends an epilog too, but
                // only after at least the stack adjustment or a pop.
                return false;
            }
            _ => return false,
        }
    }
    false
}

/// Run the epilog at `pc` on `ctx` (it was recognised by `in_epilog`).
fn run_epilog(mem: &dyn Mem, mut pc: u64, ctx: &mut Context) {
    for _ in 0..64 {
        let Some(b) = code_at(mem, pc) else { return };
        let rex = if b[0] & 0xf0 == 0x40 { b[0] } else { 0 };
        let i = usize::from(rex != 0);
        match b[i] {
            0x81 if rex == 0x48 => {
                let imm = i32::from_le_bytes([b[3], b[4], b[5], b[6]]);
                ctx.set_gpr(reg::RSP, ctx.rsp().wrapping_add(imm as i64 as u64));
                pc += 7;
            }
            0x83 if rex == 0x48 => {
                ctx.set_gpr(reg::RSP, ctx.rsp().wrapping_add(b[3] as i8 as i64 as u64));
                pc += 4;
            }
            0x8d => {
                let modrm = b[2];
                let base_reg = usize::from(modrm & 7) + if rex & 1 != 0 { 8 } else { 0 };
                let (disp, len) = if modrm >> 6 == 1 {
                    (b[3] as i8 as i64, 4)
                } else {
                    (i32::from_le_bytes([b[3], b[4], b[5], b[6]]) as i64, 7)
                };
                ctx.set_gpr(reg::RSP, ctx.gpr(base_reg).wrapping_add(disp as u64));
                pc += len;
            }
            0x58..=0x5f => {
                let r = usize::from(b[i] - 0x58) + if rex & 1 != 0 { 8 } else { 0 };
                let sp = ctx.rsp();
                let Some(v) = mem.u64_at(sp) else { return };
                ctx.set_gpr(r, v);
                ctx.set_gpr(reg::RSP, sp.wrapping_add(8));
                pc += i as u64 + 1;
            }
            0xc2 | 0xc3 | 0xf3 => {
                let sp = ctx.rsp();
                let Some(v) = mem.u64_at(sp) else { return };
                ctx.set_rip(v);
                let extra = if b[i] == 0xc2 { u64::from(u16::from_le_bytes([b[i + 1], b[i + 2]])) } else { 0 };
                ctx.set_gpr(reg::RSP, sp.wrapping_add(8 + extra));
                return;
            }
            0xe9 => {
                let d = i32::from_le_bytes([b[i + 1], b[i + 2], b[i + 3], b[i + 4]]);
                pc = (pc + i as u64 + 5).wrapping_add(d as i64 as u64);
            }
            0xeb => pc = (pc + i as u64 + 2).wrapping_add(b[i + 1] as i8 as i64 as u64),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory for tests: one block at `base`.
    struct Block {
        base: u64,
        bytes: Vec<u8>,
    }

    impl Mem for Block {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let Some(off) = addr.checked_sub(self.base) else { return false };
            let off = off as usize;
            if off + buf.len() > self.bytes.len() {
                return false;
            }
            buf.copy_from_slice(&self.bytes[off..off + buf.len()]);
            true
        }
    }

    impl Block {
        fn put(&mut self, addr: u64, b: &[u8]) {
            let off = (addr - self.base) as usize;
            self.bytes[off..off + b.len()].copy_from_slice(b);
        }
        fn put_u64(&mut self, addr: u64, v: u64) {
            self.put(addr, &v.to_le_bytes());
        }
    }

    const BASE: u64 = 0x1_4000_0000;

    fn image() -> Block {
        Block { base: BASE, bytes: vec![0xcc; 0x10000] }
    }

    fn rf(b: &mut Block, at: u64, begin: u32, end: u32, unwind: u32) {
        let mut v = Vec::new();
        for w in [begin, end, unwind] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        b.put(at, &v);
    }

    /// A prolog `push rbp; push rbx; sub rsp, 0x28; lea rbp, [rsp+0x20]`
    /// (frame register RBP at offset 0x20), unwound from its body and
    /// from inside the prolog.
    #[test]
    fn push_alloc_and_frame_register() {
        let mut m = image();
        // UNWIND_INFO at 0x3000: version 1, EHANDLER, prolog 10, 4 codes,
        // frame RBP offset 2 (0x20).
        m.put(0x3000 + BASE, &[1 | (1 << 3), 10, 4, 5 | (2 << 4)]);
        // Codes, latest first: set_fpreg @10, alloc_small 0x28 @6, push rbx @2, push rbp @1.
        m.put(0x3004 + BASE, &[10, 3, 6, 2 | (4 << 4), 2, 3 << 4, 1, 5 << 4]);
        m.put(0x300c + BASE, &0x2500u32.to_le_bytes()); // handler RVA
        m.put(0x3010 + BASE, &[0xaa; 4]); // handler data
        rf(&mut m, BASE + 0x5000, 0x1000, 0x1100, 0x3000);
        // The stack: after the prolog RSP = S, saved RBX at S+0x28, RBP at
        // S+0x30, return address at S+0x38.
        let s = BASE + 0x8000;
        m.put_u64(s + 0x28, 0xbbbb);
        m.put_u64(s + 0x30, 0x9999);
        m.put_u64(s + 0x38, 0x1_4000_1234);
        let mut c = Context::zeroed();
        c.set_gpr(reg::RSP, s);
        c.set_gpr(reg::RBP, s + 0x20);
        let u = virtual_unwind(&m, UNW_FLAG_EHANDLER, BASE, BASE + 0x1050, BASE + 0x5000, &mut c).unwrap();
        assert_eq!((c.rip(), c.rsp(), c.gpr(reg::RBX), c.gpr(reg::RBP)), (0x1_4000_1234, s + 0x40, 0xbbbb, 0x9999));
        assert_eq!(u, Unwound { handler: Some(BASE + 0x2500), handler_data: BASE + 0x3010, establisher: s });
        // UHANDLER is not set: no handler for an unwind.
        let mut c2 = Context::zeroed();
        c2.set_gpr(reg::RSP, s);
        c2.set_gpr(reg::RBP, s + 0x20);
        let u = virtual_unwind(&m, UNW_FLAG_UHANDLER, BASE, BASE + 0x1050, BASE + 0x5000, &mut c2).unwrap();
        assert_eq!(u.handler, None);
        // At offset 2 (after push rbp only): one pop, no handler.
        let mut c3 = Context::zeroed();
        c3.set_gpr(reg::RSP, s + 0x30);
        let u = virtual_unwind(&m, UNW_FLAG_EHANDLER, BASE, BASE + 0x1001, BASE + 0x5000, &mut c3).unwrap();
        assert_eq!((c3.rip(), c3.rsp(), c3.gpr(reg::RBP), u.handler), (0x1_4000_1234, s + 0x40, 0x9999, None));
    }

    /// Large allocations, saves to the frame, XMM saves, then a chained
    /// entry that pushes one more register.
    #[test]
    fn alloc_large_save_nonvol_xmm_and_chain() {
        let mut m = image();
        // Primary: alloc_large 0x1000 (info 0, size/8 in the next slot),
        // save_nonvol rsi at 0x800, save_xmm128 xmm6 at 0x10*0x20, chained.
        m.put(0x3000 + BASE, &[1 | (4 << 3), 20, 6, 0]);
        let codes: [u16; 6] = [
            u16::from_le_bytes([20, 8 | (6 << 4)]), // save_xmm128 xmm6
            0x20,                                   // at 0x20*16 = 0x200
            u16::from_le_bytes([16, 4 | (6 << 4)]), // save_nonvol rsi
            0x100,                                  // at 0x100*8 = 0x800
            u16::from_le_bytes([12, 1]),            // alloc_large, info 0
            0x200,                                  // 0x200*8 = 0x1000
        ];
        let bytes: Vec<u8> = codes.iter().flat_map(|c| c.to_le_bytes()).collect();
        m.put(0x3004 + BASE, &bytes);
        // Chained RUNTIME_FUNCTION after the 6 codes.
        rf(&mut m, BASE + 0x3010, 0x1000, 0x1010, 0x3100);
        // The parent: push rdi @1.
        m.put(0x3100 + BASE, &[1, 1, 1, 0]);
        m.put(0x3104 + BASE, &[1, 7 << 4, 0, 0]);
        rf(&mut m, BASE + 0x5000, 0x1020, 0x1100, 0x3000);
        let s = BASE + 0x6000;
        m.put_u64(s + 0x800, 0x5151);
        m.put(s + 0x200, &0x0123_4567_89ab_cdef_0011_2233_4455_6677u128.to_le_bytes());
        m.put_u64(s + 0x1000, 0xd1d1); // pushed rdi
        m.put_u64(s + 0x1008, BASE + 0x4242); // return address
        let mut c = Context::zeroed();
        c.set_gpr(reg::RSP, s);
        let u = virtual_unwind(&m, UNW_FLAG_EHANDLER, BASE, BASE + 0x1080, BASE + 0x5000, &mut c).unwrap();
        assert_eq!(c.gpr(reg::RSI), 0x5151);
        assert_eq!(c.xmm(6), 0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!((c.gpr(reg::RDI), c.rip(), c.rsp()), (0xd1d1, BASE + 0x4242, s + 0x1010));
        assert_eq!(u.handler, None);
    }

    /// UWOP_PUSH_MACHFRAME with an error code: RIP and RSP come from the
    /// machine frame, no return address is popped.
    #[test]
    fn machine_frame() {
        let mut m = image();
        m.put(0x3000 + BASE, &[1, 0, 1, 0]);
        m.put(0x3004 + BASE, &[0, 10 | (1 << 4), 0, 0]);
        rf(&mut m, BASE + 0x5000, 0x1000, 0x1100, 0x3000);
        let s = BASE + 0x6000;
        m.put_u64(s + 8, BASE + 0x7777); // RIP after the error code
        m.put_u64(s + 8 + 24, BASE + 0x9000); // RSP
        let mut c = Context::zeroed();
        c.set_gpr(reg::RSP, s);
        virtual_unwind(&m, UNW_FLAG_NHANDLER, BASE, BASE + 0x1010, BASE + 0x5000, &mut c).unwrap();
        assert_eq!((c.rip(), c.rsp()), (BASE + 0x7777, BASE + 0x9000));
    }

    /// A pc in an epilog (`add rsp, 0x28; pop rbx; ret`) is unwound by
    /// running the epilog, not the prolog's codes.
    #[test]
    fn epilog_is_run() {
        let mut m = image();
        m.put(0x3000 + BASE, &[1 | (1 << 3), 5, 2, 0]);
        m.put(0x3004 + BASE, &[5, 2 | (4 << 4), 1, 3 << 4]);
        m.put(0x3008 + BASE, &0x2500u32.to_le_bytes());
        rf(&mut m, BASE + 0x5000, 0x1000, 0x1100, 0x3000);
        m.put(BASE + 0x1040, &[0x48, 0x83, 0xc4, 0x28, 0x5b, 0xc3]);
        let s = BASE + 0x6000;
        m.put_u64(s + 0x28, 0xb0b0);
        m.put_u64(s + 0x30, BASE + 0x4444);
        let mut c = Context::zeroed();
        c.set_gpr(reg::RSP, s);
        let u = virtual_unwind(&m, UNW_FLAG_EHANDLER, BASE, BASE + 0x1040, BASE + 0x5000, &mut c).unwrap();
        assert_eq!((c.gpr(reg::RBX), c.rip(), c.rsp(), u.handler), (0xb0b0, BASE + 0x4444, s + 0x38, None));
        // After the add: only the pop and the ret remain.
        let mut c = Context::zeroed();
        c.set_gpr(reg::RSP, s + 0x28);
        virtual_unwind(&m, UNW_FLAG_EHANDLER, BASE, BASE + 0x1044, BASE + 0x5000, &mut c).unwrap();
        assert_eq!((c.gpr(reg::RBX), c.rip()), (0xb0b0, BASE + 0x4444));
    }

    #[test]
    fn lookup_finds_the_covering_entry() {
        let mut m = image();
        for (i, (b, e)) in [(0x1000, 0x1010), (0x1010, 0x1080), (0x2000, 0x2004)].iter().enumerate() {
            rf(&mut m, BASE + 0x5000 + 12 * i as u64, *b, *e, 0x3000);
        }
        assert_eq!(lookup(&m, BASE, BASE + 0x5000, 3, BASE + 0x1010), Some(BASE + 0x500c));
        assert_eq!(lookup(&m, BASE, BASE + 0x5000, 3, BASE + 0x2003), Some(BASE + 0x5018));
        assert_eq!(lookup(&m, BASE, BASE + 0x5000, 3, BASE + 0x1080), None);
        assert_eq!(lookup(&m, BASE, BASE + 0x5000, 3, BASE - 1), None);
    }

    #[test]
    fn bad_version_and_unreadable_data_are_errors() {
        let mut m = image();
        m.put(0x3000 + BASE, &[3, 0, 0, 0]);
        rf(&mut m, BASE + 0x5000, 0x1000, 0x1100, 0x3000);
        rf(&mut m, BASE + 0x500c, 0x1000, 0x1100, 0xfff_0000);
        let mut c = Context::zeroed();
        c.set_gpr(reg::RSP, BASE + 0x8000);
        assert!(matches!(
            virtual_unwind(&m, 0, BASE, BASE + 0x1050, BASE + 0x5000, &mut c),
            Err(UnwindError::Version(3, _))
        ));
        assert!(matches!(
            virtual_unwind(&m, 0, BASE, BASE + 0x1050, BASE + 0x500c, &mut c),
            Err(UnwindError::Unreadable(_))
        ));
    }

    /// CONTEXT offsets as Windows has them, and a round trip through
    /// CpuState.
    #[test]
    fn context_layout_and_round_trip() {
        let mut cpu = CpuState::default();
        for i in 0..16 {
            cpu.gpr[i] = 0x1000 + i as u64;
            cpu.xmm[i] = 0xabc0 + i as u128;
        }
        cpu.rip = 0x1_4000_1000;
        let c = Context::from_cpu(&cpu);
        assert_eq!(c.u64_at(0x78), 0x1000); // Rax
        assert_eq!(c.u64_at(0x98), 0x1004); // Rsp
        assert_eq!(c.u64_at(0xf0), 0x100f); // R15
        assert_eq!(c.u64_at(0xf8), 0x1_4000_1000); // Rip
        assert_eq!(c.u32_at(0x30), CONTEXT_FULL_SEGMENTS);
        assert_eq!(c.xmm(3), 0xabc3);
        assert_eq!(c.u64_at(0x1a0 + 16 * 3), 0xabc3); // Xmm3 in FltSave
        let mut back = CpuState::default();
        c.apply(&mut back);
        assert_eq!((back.gpr, back.rip, back.xmm), (cpu.gpr, cpu.rip, cpu.xmm));
    }
}
