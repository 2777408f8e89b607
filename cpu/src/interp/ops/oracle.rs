//! A differential oracle for instruction handlers: the host CPU runs the
//! same instruction bytes as the interpreter, from the same registers,
//! RFLAGS and memory, and the two outcomes are compared.
//!
//! The native side is a hand-assembled harness in an RWX page: it loads all
//! GPRs but RSP and RFLAGS from a block in the same page (RIP-relative), runs
//! the instruction, stores them back and returns. Guest addresses are host
//! addresses in urun, so memory operands pointing into the `Snippet`'s data
//! area work natively too: the oracle seeds that area before each run and
//! compares it afterwards. The instruction must not fault, branch or touch
//! RSP on the host: a test only feeds it operands that are safe.

use crate::engine::Exit;
use crate::interp::testutil::Snippet;
use crate::state::{fl, reg, CpuState};

/// Registers and RFLAGS before or after an instruction. `gpr[RSP]` is
/// ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Regs {
    pub gpr: [u64; 16],
    pub flags: u64,
}

/// Flags a test may seed: the status flags and DF (never TF).
const SEEDABLE: u64 = fl::STATUS | fl::DF;

// Layout of the native page: code at 0, data block at `DATA`.
const PAGE: usize = 8192;
const DATA: usize = 4096;
const IN_GPR: usize = DATA;
const IN_FLAGS: usize = DATA + 128;
const OUT_GPR: usize = DATA + 136;
const OUT_FLAGS: usize = DATA + 264;
const SAVED_RSP: usize = DATA + 272;
/// Where the interpreter run saves RCX and R11 before the snippet's SYSCALL
/// clobbers them (offset in the snippet's code area).
const INTERP_SAVE: u64 = 0x2000;

/// Append a RIP-relative `op r64, [rip+target]` (op 0x8b load, 0x89 store,
/// or the given opcode with `/r` = `r`) ending at `code.len()+7`.
fn rip_rel(code: &mut Vec<u8>, rex_w: bool, opcode: u8, r: usize, target: usize) {
    let rex = (if rex_w { 0x48 } else { 0x40 }) | (((r >> 3) as u8) << 2);
    if rex != 0x40 {
        code.push(rex);
    }
    code.push(opcode);
    code.push((((r & 7) as u8) << 3) | 5);
    let end = code.len() + 4;
    code.extend_from_slice(&((target as i64 - end as i64) as i32).to_le_bytes());
}

/// The host half: an RWX page holding the harness.
pub(crate) struct Native {
    page: *mut u8,
}

impl Native {
    /// Map the harness page, or `None` when the host refuses RWX memory.
    pub(crate) fn new() -> Option<Native> {
        // SAFETY: an anonymous private mapping with no address hint touches
        // no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(Native { page: p as *mut u8 })
    }

    /// Run `insn` natively from `input`, returning the registers after it.
    pub(crate) fn run(&mut self, insn: &[u8], input: &Regs) -> Regs {
        let mut c = Vec::with_capacity(512);
        c.extend_from_slice(&[0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57]);
        rip_rel(&mut c, true, 0x89, reg::RSP, SAVED_RSP); // mov [saved], rsp
        rip_rel(&mut c, false, 0xff, 6, IN_FLAGS); // push qword [in_flags]
        c.push(0x9d); // popfq
        for r in (0..16).filter(|&r| r != reg::RSP) {
            rip_rel(&mut c, true, 0x8b, r, IN_GPR + 8 * r);
        }
        c.extend_from_slice(insn);
        for r in (0..16).filter(|&r| r != reg::RSP) {
            rip_rel(&mut c, true, 0x89, r, OUT_GPR + 8 * r);
        }
        c.push(0x9c); // pushfq
        rip_rel(&mut c, false, 0x8f, 0, OUT_FLAGS); // pop qword [out_flags]
        c.push(0xfc); // cld: the ABI wants DF clear on return
        rip_rel(&mut c, true, 0x8b, reg::RSP, SAVED_RSP);
        c.extend_from_slice(&[0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c, 0x5d, 0x5b, 0xc3]);
        assert!(c.len() <= DATA, "instruction too long for the harness");
        let flags = (input.flags & SEEDABLE) | 2;
        // SAFETY: `page` is our own PAGE-byte RWX mapping; the code fits
        // below DATA and the data block fits in the page. The harness saves
        // and restores every callee-saved register and RSP, clears DF, and
        // the caller promises `insn` neither faults nor branches nor
        // touches RSP or memory other than what it was given.
        unsafe {
            std::ptr::copy_nonoverlapping(c.as_ptr(), self.page, c.len());
            for r in 0..16 {
                (self.page.add(IN_GPR + 8 * r) as *mut u64).write_unaligned(input.gpr[r]);
            }
            (self.page.add(IN_FLAGS) as *mut u64).write_unaligned(flags);
            let f: extern "C" fn() = std::mem::transmute(self.page);
            f();
            let mut out = Regs::default();
            for r in 0..16 {
                out.gpr[r] = (self.page.add(OUT_GPR + 8 * r) as *const u64).read_unaligned();
            }
            out.gpr[reg::RSP] = input.gpr[reg::RSP];
            out.flags = (self.page.add(OUT_FLAGS) as *const u64).read_unaligned();
            out
        }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping, which nothing references now.
        unsafe { libc::munmap(self.page as *mut libc::c_void, PAGE) };
    }
}

/// Both halves, sharing the snippet's data area.
pub(crate) struct Oracle {
    pub snippet: Snippet,
    native: Native,
    /// Mismatches found so far, as readable lines.
    pub failures: Vec<String>,
    pub checked: usize,
}

/// Bytes of the data area the oracle seeds and compares.
pub(crate) const WINDOW: usize = 16384;

impl Oracle {
    /// `None` (after saying why) when the host cannot run the harness.
    pub(crate) fn new() -> Option<Oracle> {
        match Native::new() {
            Some(native) => Some(Oracle { snippet: Snippet::new(), native, failures: Vec::new(), checked: 0 }),
            None => {
                eprintln!("oracle: SKIPPED, the host refuses an RWX mapping");
                None
            }
        }
    }

    /// Address of the data area that memory operands should point into.
    pub(crate) fn data(&self) -> u64 {
        self.snippet.data
    }

    fn seed(&self, mem: &[u8]) {
        let mut w = vec![0u8; WINDOW];
        w[..mem.len().min(WINDOW)].copy_from_slice(&mem[..mem.len().min(WINDOW)]);
        // SAFETY: the snippet's data area is 64 KiB of RW memory we own.
        unsafe { std::ptr::copy_nonoverlapping(w.as_ptr(), self.snippet.data as *mut u8, WINDOW) };
    }

    fn window(&self) -> Vec<u8> {
        // SAFETY: as in `seed`.
        unsafe { std::slice::from_raw_parts(self.snippet.data as *const u8, WINDOW) }.to_vec()
    }

    /// Run `insn` natively from `input` with the data area seeded with `mem`.
    pub(crate) fn native(&mut self, insn: &[u8], input: &Regs, mem: &[u8]) -> (Regs, Vec<u8>) {
        self.seed(mem);
        let out = self.native.run(insn, input);
        (out, self.window())
    }

    /// Run `insn` in the interpreter likewise; `Err` carries an unexpected exit.
    pub(crate) fn interp(&mut self, insn: &[u8], input: &Regs, mem: &[u8]) -> Result<(Regs, Vec<u8>), Exit> {
        self.seed(mem);
        let save = self.snippet.code + INTERP_SAVE;
        let mut code = insn.to_vec();
        for (r, at) in [(reg::RCX, save as usize), (reg::R11, save as usize + 8)] {
            // mov [rip+X], r with X absolute: compute relative to the
            // snippet's code address.
            let rel_target = at - self.snippet.code as usize;
            rip_rel(&mut code, true, 0x89, r, rel_target);
        }
        let flags = (input.flags & SEEDABLE) | 2;
        let (cpu, exit): (CpuState, Exit) = self.snippet.run(&code, |c| {
            for r in (0..16).filter(|&r| r != reg::RSP) {
                c.gpr[r] = input.gpr[r];
            }
            c.flags.set(flags);
        });
        if exit != Exit::Syscall {
            return Err(exit);
        }
        let mut out = Regs { gpr: cpu.gpr, flags: cpu.flags.get() };
        // SAFETY: the save slots lie in the snippet's 16 KiB code area.
        unsafe {
            out.gpr[reg::RCX] = (save as *const u64).read_unaligned();
            out.gpr[reg::R11] = ((save + 8) as *const u64).read_unaligned();
        }
        out.gpr[reg::RSP] = input.gpr[reg::RSP];
        Ok((out, self.window()))
    }

    /// Compare both runs; `undefined` masks the RFLAGS bits the manuals
    /// leave undefined for this instruction. Mismatches are collected in
    /// `failures` (with `what` naming the case).
    pub(crate) fn check(&mut self, what: &str, insn: &[u8], input: &Regs, mem: &[u8], undefined: u64) {
        self.checked += 1;
        let (n, nmem) = self.native(insn, input, mem);
        let (i, imem) = match self.interp(insn, input, mem) {
            Ok(v) => v,
            Err(e) => {
                self.failures.push(format!("{what}: interpreter exited with {e:?}, host did not"));
                return;
            }
        };
        let mut diffs = Vec::new();
        for r in 0..16 {
            if n.gpr[r] != i.gpr[r] {
                diffs.push(format!("r{r} host {:#x} interp {:#x}", n.gpr[r], i.gpr[r]));
            }
        }
        let fm = (fl::STATUS | fl::DF) & !undefined;
        if n.flags & fm != i.flags & fm {
            diffs.push(format!("flags host {:#x} interp {:#x} (compared {fm:#x})", n.flags & fm, i.flags & fm));
        }
        if let Some(at) = (0..WINDOW).find(|&k| nmem[k] != imem[k]) {
            diffs.push(format!("mem[{at:#x}] host {:#x} interp {:#x}", nmem[at], imem[at]));
        }
        if !diffs.is_empty() {
            self.failures.push(format!("{what} in {:x?} gpr {:x?} flags {:#x}: {}", insn, input.gpr, input.flags, diffs.join(", ")));
        }
    }

    /// Panic with the first mismatches, if any (all of them go to the file
    /// `$ORACLE_DUMP.<family>` when that variable is set).
    pub(crate) fn finish(&self, family: &str) {
        eprintln!("oracle {family}: {} cases, {} mismatches", self.checked, self.failures.len());
        if let Ok(path) = std::env::var("ORACLE_DUMP") {
            let _ = std::fs::write(format!("{path}.{family}"), self.failures.join("\n"));
        }
        if !self.failures.is_empty() {
            let shown: Vec<&str> = self.failures.iter().take(30).map(String::as_str).collect();
            panic!("{family}: {} of {} cases differ from the host:\n{}", self.failures.len(), self.checked, shown.join("\n"));
        }
    }
}

/// A small deterministic generator (xorshift64*) for sampled operands.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Interesting operand values: 0, 1, -1, sign boundaries of each width.
pub(crate) const EDGE_VALUES: &[u64] = &[
    0,
    1,
    2,
    u64::MAX,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0x8000_0000_0000_0001,
    0x0123_4567_89ab_cdef,
    0xfedc_ba98_7654_3210,
    0x5555_5555_5555_5555,
];

/// Shift and rotate counts worth testing.
pub(crate) const EDGE_COUNTS: &[u64] = &[0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 255];
