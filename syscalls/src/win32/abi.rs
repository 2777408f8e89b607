//! The Windows x64 calling convention as a handler sees it: arguments
//! (RCX — copied to R10 by the stub — RDX, R8, R9, then the stack above
//! the 32-byte shadow space), results (RAX or XMM0), checked guest memory,
//! and upcalls into guest code.

use std::sync::Arc;

use urun_cpu::state::reg;
use urun_cpu::{CpuState, Engine};

use super::{Process, Stop};
use crate::linux::guest;

/// Why a handler did not return a value.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The process (or this thread) ends.
    Stop(Stop),
    /// The handler read or wrote guest memory it may not: an access
    /// violation at this address, as the real DLL would take.
    Fault(u64),
    /// The thread goes on in this register state (RtlUnwindEx,
    /// RtlRestoreContext, a handled exception): every host frame up to the
    /// run loop whose guest frames hold its RSP is dropped (`seh.rs`).
    Jump(Box<CpuState>),
}

impl From<Stop> for Fail {
    fn from(s: Stop) -> Self {
        Fail::Stop(s)
    }
}

pub(crate) type Res = Result<u64, Fail>;

/// One API call being serviced.
pub(crate) struct Call<'a> {
    pub p: &'a Arc<Process>,
    pub cpu: &'a mut CpuState,
    pub engine: &'a mut dyn Engine,
    /// How deep in upcalls this call is (0: the thread's own loop).
    pub depth: u32,
}

impl Call<'_> {
    /// Integer argument `i` (0-based).
    pub fn arg(&self, i: usize) -> Result<u64, Fail> {
        let g = &self.cpu.gpr;
        match i {
            0 => Ok(g[reg::R10]),
            1 => Ok(g[reg::RDX]),
            2 => Ok(g[reg::R8]),
            3 => Ok(g[reg::R9]),
            _ => self.u64_at(g[reg::RSP] + 8 + 8 * i as u64),
        }
    }

    pub fn u64_at(&self, addr: u64) -> Result<u64, Fail> {
        guest::read::<u64>(&self.p.mem, addr).ok_or(Fail::Fault(addr))
    }

    pub fn u32_at(&self, addr: u64) -> Result<u32, Fail> {
        guest::read::<u32>(&self.p.mem, addr).ok_or(Fail::Fault(addr))
    }

    pub fn put_u64(&self, addr: u64, v: u64) -> Result<(), Fail> {
        guest::write(&self.p.mem, addr, &v).then_some(()).ok_or(Fail::Fault(addr))
    }

    pub fn put_u32(&self, addr: u64, v: u32) -> Result<(), Fail> {
        guest::write(&self.p.mem, addr, &v).then_some(()).ok_or(Fail::Fault(addr))
    }

    /// `len` bytes at `addr` (checked before anything is allocated, so a
    /// huge length from the guest is a fault, not urun running out of
    /// memory).
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Fail> {
        if len > 0 && !self.p.mem.check(addr, len as u64, urun_cpu::Prot::READ) {
            return Err(Fail::Fault(addr));
        }
        let mut v = vec![0u8; len];
        guest::read_into(&self.p.mem, addr, &mut v).then_some(v).ok_or(Fail::Fault(addr))
    }

    /// Fill `len` bytes at `addr` with `v`.
    pub fn fill(&self, addr: u64, v: u8, len: u64) -> Result<(), Fail> {
        if len > 0 && !self.p.mem.check(addr, len, urun_cpu::Prot::WRITE) {
            return Err(Fail::Fault(addr));
        }
        let chunk = vec![v; len.min(1 << 16) as usize];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(chunk.len() as u64);
            self.write(addr + at, &chunk[..n as usize])?;
            at += n;
        }
        Ok(())
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), Fail> {
        guest::write_from(&self.p.mem, addr, bytes).then_some(()).ok_or(Fail::Fault(addr))
    }

    /// A NUL-terminated byte string (without the NUL).
    pub fn cstr(&self, addr: u64) -> Result<Vec<u8>, Fail> {
        cstr(&self.p.mem, addr).ok_or(Fail::Fault(addr))
    }

    /// A NUL-terminated UTF-16 string (without the NUL).
    pub fn wstr(&self, addr: u64) -> Result<Vec<u16>, Fail> {
        let mut out = Vec::new();
        let mut a = addr;
        loop {
            let mut b = [0u8; 2];
            if !guest::read_into(&self.p.mem, a, &mut b) {
                return Err(Fail::Fault(a));
            }
            let c = u16::from_le_bytes(b);
            if c == 0 {
                return Ok(out);
            }
            out.push(c);
            a += 2;
        }
    }

    /// Call guest function `f` with integer arguments `args` and return its
    /// RAX. The engine runs nested until `f` returns to the return trap;
    /// the calling thread's registers are restored afterwards.
    pub fn upcall(&mut self, f: u64, args: &[u64]) -> Res {
        self.upcall_with(f, args, None)
    }

    /// `upcall`, saying how a frame walk crosses it (`seh::Cross`; None:
    /// at this API's caller).
    pub fn upcall_with(&mut self, f: u64, args: &[u64], cross: Option<super::seh::Cross>) -> Res {
        if let Err(e) = self.engine.fetch_fp(self.cpu) {
            return Err(Fail::Stop(super::engine_failed(self.engine.name(), &e)));
        }
        let saved = self.cpu.clone();
        let slots = args.len().max(4) as u64;
        // Below the caller's frame (there is no red zone on Windows): the
        // argument area, 16-byte aligned, then the return address.
        let mut sp = (saved.gpr[reg::RSP] - 64) & !15;
        sp -= (slots * 8 + 15) & !15;
        for (i, &a) in args.iter().enumerate().skip(4) {
            self.put_u64(sp + 8 * i as u64, a)?;
        }
        sp -= 8;
        self.put_u64(sp, self.p.return_trap)?;
        let g = &mut self.cpu.gpr;
        g[reg::RSP] = sp;
        g[reg::RCX] = args.first().copied().unwrap_or(0);
        g[reg::RDX] = args.get(1).copied().unwrap_or(0);
        g[reg::R8] = args.get(2).copied().unwrap_or(0);
        g[reg::R9] = args.get(3).copied().unwrap_or(0);
        self.cpu.rip = f;
        let cross = cross.unwrap_or_else(|| super::seh::Cross::Caller(Box::new(saved.clone())));
        super::seh::push_boundary(sp, cross);
        let r = super::run_loop(self.p, self.engine, self.cpu, self.depth + 1);
        super::seh::pop_boundary();
        // The return trap moved RAX to R10 before its own mov eax.
        let rax = self.cpu.gpr[reg::R10];
        match r {
            Ok(()) => {
                *self.cpu = saved;
                Ok(rax)
            }
            Err(e) => Err(e),
        }
    }
}

/// A NUL-terminated byte string at `addr` in guest memory.
pub(crate) fn cstr(mem: &urun_cpu::AddressSpace, addr: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut a = addr;
    loop {
        // Read up to the end of the page at once.
        let chunk = (0x1000 - (a & 0xfff)) as usize;
        let mut buf = vec![0u8; chunk];
        if !guest::read_into(mem, a, &mut buf) {
            return None;
        }
        if let Some(n) = buf.iter().position(|&c| c == 0) {
            out.extend_from_slice(&buf[..n]);
            return Some(out);
        }
        out.extend_from_slice(&buf);
        a += chunk as u64;
    }
}
