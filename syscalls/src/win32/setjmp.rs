//! `_setjmp` / `longjmp` (msvcrt's x64 `_JUMP_BUFFER`): winpthreads ends a
//! thread with them (pthread_exit jumps back to its start wrapper).
//! `longjmp` restores the registers without unwinding the frames between
//! (no `__finally` blocks or destructors run, as for C code).

use urun_cpu::state::reg;

use super::abi::{Call, Fail, Res};

/// `_JUMP_BUFFER`: Frame, Rbx, Rsp, Rbp, Rsi, Rdi, R12-R15, Rip, MxCsr
/// (u32) and FpCsr (u16) at 0x58, Xmm6-Xmm15 from 0x60.
const GPRS: [(u64, usize); 8] = [
    (0x08, reg::RBX),
    (0x18, reg::RBP),
    (0x20, reg::RSI),
    (0x28, reg::RDI),
    (0x30, reg::R12),
    (0x38, reg::R13),
    (0x40, reg::R14),
    (0x48, reg::R15),
];
const RSP: u64 = 0x10;
const RIP: u64 = 0x50;
const MXCSR: u64 = 0x58;
const FPCSR: u64 = 0x5c;
const XMM6: u64 = 0x60;

fn fetch_fp(c: &mut Call<'_>) -> Result<(), Fail> {
    c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))
}

/// `_setjmp(buf, frame)`: the caller's state as it will be after the
/// return; 0.
pub(crate) fn setjmp(c: &mut Call<'_>) -> Res {
    let (buf, frame) = (c.arg(0)?, c.arg(1)?);
    fetch_fp(c)?;
    let sp = c.cpu.gpr[reg::RSP];
    let ret = c.u64_at(sp)?;
    let mut b = vec![0u8; 0x100];
    let mut put = |off: u64, v: &[u8]| b[off as usize..off as usize + v.len()].copy_from_slice(v);
    put(0, &frame.to_le_bytes());
    for (off, r) in GPRS {
        put(off, &c.cpu.gpr[r].to_le_bytes());
    }
    put(RSP, &(sp + 8).to_le_bytes());
    put(RIP, &ret.to_le_bytes());
    put(MXCSR, &c.cpu.mxcsr.to_le_bytes());
    put(FPCSR, &c.cpu.x87.fcw.to_le_bytes());
    for i in 0..10 {
        put(XMM6 + 16 * i as u64, &c.cpu.xmm[6 + i].to_le_bytes());
    }
    c.write(buf, &b)?;
    Ok(0)
}

/// `longjmp(buf, value)`: back to where `_setjmp` returned, with `value`
/// (1 for 0). The stub's own `ret` lands there: the saved RIP goes just
/// below the saved RSP.
pub(crate) fn longjmp(c: &mut Call<'_>) -> Res {
    let (buf, value) = (c.arg(0)?, c.arg(1)? as u32);
    let b = c.read(buf, 0x100)?;
    let u64_at = |off: u64| u64::from_le_bytes(b[off as usize..off as usize + 8].try_into().unwrap_or([0; 8]));
    fetch_fp(c)?;
    let (sp, rip) = (u64_at(RSP), u64_at(RIP));
    c.put_u64(sp - 8, rip)?;
    for (off, r) in GPRS {
        c.cpu.gpr[r] = u64_at(off);
    }
    c.cpu.gpr[reg::RSP] = sp - 8;
    c.cpu.mxcsr = u32::from_le_bytes(b[MXCSR as usize..MXCSR as usize + 4].try_into().unwrap_or([0x80, 0x1f, 0, 0]));
    c.cpu.x87.fcw = u16::from_le_bytes([b[FPCSR as usize], b[FPCSR as usize + 1]]);
    for i in 0..10 {
        let at = (XMM6 + 16 * i as u64) as usize;
        c.cpu.xmm[6 + i] = u128::from_le_bytes(b[at..at + 16].try_into().unwrap_or([0; 16]));
    }
    Ok(u64::from(if value == 0 { 1 } else { value }))
}
