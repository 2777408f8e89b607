//! The host half: a hand-assembled harness in an RWX page loads every GPR
//! (RSP included), RFLAGS, XMM0-15 and MXCSR from a block in the same page
//! (RIP-relative), runs the instruction, stores them all back and returns.
//!
//! A fault in the instruction is caught in-process: a handler installed once
//! (on an alternate stack, chaining to the previous handler for any fault
//! that is not ours) recognises a fault inside the harness page of the
//! current thread, copies the register state out of the signal context and
//! rewrites the saved RIP to a recovery stub that restores the host stack
//! and MXCSR and returns normally. No Rust frame is unwound.

use std::cell::Cell;
use std::sync::OnceLock;

use super::{End, Outcome, State};
use crate::state::{fl, reg};

const PAGE: usize = 8192;
/// Recovery stub; the generated code lives below it.
const RECOVER: usize = 3584;
const DATA: usize = 4096;
const IN_GPR: usize = DATA;
const IN_FLAGS: usize = DATA + 128;
const IN_MXCSR: usize = DATA + 136;
const IN_XMM: usize = DATA + 144;
const OUT_GPR: usize = DATA + 400;
const OUT_FLAGS: usize = DATA + 528;
const OUT_MXCSR: usize = DATA + 536;
const OUT_XMM: usize = DATA + 544;
const SAVED_RSP: usize = DATA + 800;
const HOST_MXCSR: usize = DATA + 808;
const SIGNO: usize = DATA + 816;

/// Flags the harness seeds: the status flags and DF (never TF or AC).
pub const SEEDABLE: u64 = fl::STATUS | fl::DF;

thread_local! {
    /// The harness page this thread is running natively, or null.
    static ACTIVE: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
    static ALTSTACK: Cell<bool> = const { Cell::new(false) };
}

const SIGNALS: [i32; 4] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE];
static PREVIOUS: OnceLock<[libc::sigaction; 4]> = OnceLock::new();

/// `op reg, [rip+target]` with the given prefixes and opcode bytes; `r` is
/// the ModRM.reg register (0..15).
fn rip_rel(code: &mut Vec<u8>, pre: &[u8], rex_w: bool, opcode: &[u8], r: usize, target: usize) {
    code.extend_from_slice(pre);
    let rex = (if rex_w { 0x48 } else { 0x40 }) | (((r >> 3) as u8) << 2);
    if rex != 0x40 {
        code.push(rex);
    }
    code.extend_from_slice(opcode);
    code.push((((r & 7) as u8) << 3) | 5);
    let end = code.len() + 4;
    code.extend_from_slice(&((target as i64 - end as i64) as i32).to_le_bytes());
}

const PUSH_CALLEE_SAVED: [u8; 10] = [0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57];
const POP_CALLEE_SAVED_RET: [u8; 11] = [0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c, 0x5d, 0x5b, 0xc3];

/// The tail shared by the normal path and the recovery stub.
fn epilogue(c: &mut Vec<u8>, base: usize) {
    // `base` is the page offset `c` will be copied to.
    rip_rel_at(c, base, &[], true, &[0x8b], reg::RSP, SAVED_RSP); // mov rsp, [saved]
    rip_rel_at(c, base, &[], false, &[0x0f, 0xae], 2, HOST_MXCSR); // ldmxcsr [host]
    // push 0x202; popfq: DF clear as the ABI wants, and never AC or TF,
    // whatever the instruction (POPF) loaded.
    c.extend_from_slice(&[0x68, 0x02, 0x02, 0x00, 0x00, 0x9d]);
    c.extend_from_slice(&POP_CALLEE_SAVED_RET);
}

/// `rip_rel` for code that will be copied to page offset `base`.
fn rip_rel_at(c: &mut Vec<u8>, base: usize, pre: &[u8], rex_w: bool, opcode: &[u8], r: usize, target: usize) {
    // `rip_rel` measures from the start of `c`; shifting the target by
    // `base` keeps the displacement right.
    rip_rel(c, pre, rex_w, opcode, r, target - base);
}

/// The host half: one RWX page holding the harness. Not `Send`: the
/// signal handler finds it through a thread-local.
pub struct Native {
    page: *mut u8,
}

impl Native {
    /// Map the harness page and install the fault handlers, or `None` (with
    /// the reason) when the host refuses.
    pub fn new() -> Result<Native, String> {
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
            return Err("the host refuses an RWX mapping".into());
        }
        let page = p as *mut u8;
        install_handlers()?;
        ensure_altstack()?;
        let mut stub = Vec::new();
        epilogue(&mut stub, RECOVER);
        // SAFETY: the stub is a few dozen bytes at RECOVER < DATA.
        unsafe { std::ptr::copy_nonoverlapping(stub.as_ptr(), page.add(RECOVER), stub.len()) };
        Ok(Native { page })
    }

    /// Run `insn` natively from `input`. Memory operands must point into
    /// memory the caller owns, and the instruction must not branch; a fault
    /// is caught and reported as `End::Signal` with the state at the fault.
    pub fn run(&mut self, insn: &[u8], input: &State) -> Outcome {
        let mut c = Vec::with_capacity(1024);
        c.extend_from_slice(&PUSH_CALLEE_SAVED);
        rip_rel(&mut c, &[], true, &[0x89], reg::RSP, SAVED_RSP); // mov [saved], rsp
        rip_rel(&mut c, &[], false, &[0x0f, 0xae], 3, HOST_MXCSR); // stmxcsr [host]
        rip_rel(&mut c, &[], false, &[0xff], 6, IN_FLAGS); // push qword [in_flags]
        c.push(0x9d); // popfq
        rip_rel(&mut c, &[], false, &[0x0f, 0xae], 2, IN_MXCSR); // ldmxcsr
        for x in 0..16 {
            rip_rel(&mut c, &[], false, &[0x0f, 0x10], x, IN_XMM + 16 * x); // movups xmm, [in]
        }
        for r in (0..16).filter(|&r| r != reg::RSP) {
            rip_rel(&mut c, &[], true, &[0x8b], r, IN_GPR + 8 * r);
        }
        rip_rel(&mut c, &[], true, &[0x8b], reg::RSP, IN_GPR + 8 * reg::RSP);
        c.extend_from_slice(insn);
        rip_rel(&mut c, &[], true, &[0x89], reg::RSP, OUT_GPR + 8 * reg::RSP);
        rip_rel(&mut c, &[], true, &[0x8b], reg::RSP, SAVED_RSP);
        c.push(0x9c); // pushfq
        rip_rel(&mut c, &[], false, &[0x8f], 0, OUT_FLAGS); // pop qword [out_flags]
        for r in (0..16).filter(|&r| r != reg::RSP) {
            rip_rel(&mut c, &[], true, &[0x89], r, OUT_GPR + 8 * r);
        }
        rip_rel(&mut c, &[], false, &[0x0f, 0xae], 3, OUT_MXCSR); // stmxcsr [out]
        for x in 0..16 {
            rip_rel(&mut c, &[], false, &[0x0f, 0x11], x, OUT_XMM + 16 * x); // movups [out], xmm
        }
        epilogue(&mut c, 0);
        assert!(c.len() <= RECOVER, "instruction too long for the harness");
        let flags = (input.rflags & SEEDABLE) | 0x202;
        let page = self.page;
        // SAFETY: `page` is our own PAGE-byte RWX mapping; the code fits
        // below RECOVER and the data block fits in the page. The harness
        // saves and restores every callee-saved register, RSP and MXCSR,
        // and clears DF. The caller promises the instruction neither
        // branches nor touches memory it does not own; a fault is recovered
        // by the handler through the stub at RECOVER, which restores the
        // same state.
        unsafe {
            std::ptr::copy_nonoverlapping(c.as_ptr(), page, c.len());
            let w64 = |off: usize, v: u64| (page.add(off) as *mut u64).write_unaligned(v);
            for r in 0..16 {
                w64(IN_GPR + 8 * r, input.gpr[r]);
                (page.add(IN_XMM + 16 * r) as *mut u128).write_unaligned(input.xmm[r]);
            }
            w64(IN_FLAGS, flags);
            (page.add(IN_MXCSR) as *mut u32).write_unaligned(input.mxcsr);
            (page.add(SIGNO) as *mut i32).write_unaligned(0);
            ACTIVE.with(|a| a.set(page));
            let f: extern "C" fn() = std::mem::transmute(page);
            f();
            ACTIVE.with(|a| a.set(std::ptr::null_mut()));
            let r64 = |off: usize| (page.add(off) as *const u64).read_unaligned();
            let mut out = State::default();
            for r in 0..16 {
                out.gpr[r] = r64(OUT_GPR + 8 * r);
                out.xmm[r] = (page.add(OUT_XMM + 16 * r) as *const u128).read_unaligned();
            }
            out.rflags = r64(OUT_FLAGS);
            out.mxcsr = (page.add(OUT_MXCSR) as *const u32).read_unaligned();
            let signo = (page.add(SIGNO) as *const i32).read_unaligned();
            Outcome { end: if signo == 0 { End::Completed } else { End::Signal(signo) }, state: out }
        }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping, which nothing references now
        // (ACTIVE is cleared after every run).
        unsafe { libc::munmap(self.page as *mut libc::c_void, PAGE) };
    }
}

/// Give this thread an alternate signal stack if it has none: the faulting
/// instruction may have moved RSP into the data window.
fn ensure_altstack() -> Result<(), String> {
    if ALTSTACK.with(|a| a.get()) {
        return Ok(());
    }
    // SAFETY: sigaltstack with a null new stack only reads the current one.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `old` is a valid out pointer.
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut old) } != 0 {
        return Err("sigaltstack query failed".into());
    }
    if old.ss_flags & libc::SS_DISABLE != 0 || old.ss_size < 32768 {
        const SIZE: usize = 256 * 1024;
        // SAFETY: a fresh anonymous mapping; it is deliberately leaked and
        // stays the thread's alternate stack for the thread's lifetime.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), SIZE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return Err("no memory for an alternate signal stack".into());
        }
        let st = libc::stack_t { ss_sp: p, ss_flags: 0, ss_size: SIZE };
        // SAFETY: `st` describes the mapping above.
        if unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) } != 0 {
            return Err("sigaltstack failed".into());
        }
    }
    ALTSTACK.with(|a| a.set(true));
    Ok(())
}

fn install_handlers() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            // SAFETY: all-zero is a valid `sigaction` to be filled in.
            let mut prev: [libc::sigaction; 4] = unsafe { std::mem::zeroed() };
            for (i, &sig) in SIGNALS.iter().enumerate() {
                // SAFETY: querying the current action into a valid struct.
                if unsafe { libc::sigaction(sig, std::ptr::null(), &mut prev[i]) } != 0 {
                    return Err(format!("sigaction query of signal {sig} failed"));
                }
            }
            let _ = PREVIOUS.set(prev);
            for &sig in &SIGNALS {
                // SAFETY: a zeroed sigaction with our handler, SA_SIGINFO
                // and SA_ONSTACK; the handler is async-signal-safe (it
                // touches only the thread-local and the harness page).
                unsafe {
                    let mut sa: libc::sigaction = std::mem::zeroed();
                    sa.sa_sigaction = handler as *const () as usize;
                    sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                    libc::sigemptyset(&mut sa.sa_mask);
                    if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                        return Err(format!("sigaction of signal {sig} failed"));
                    }
                }
            }
            Ok(())
        })
        .clone()
}

const GREG_OF: [i32; 16] = [
    libc::REG_RAX,
    libc::REG_RCX,
    libc::REG_RDX,
    libc::REG_RBX,
    libc::REG_RSP,
    libc::REG_RBP,
    libc::REG_RSI,
    libc::REG_RDI,
    libc::REG_R8,
    libc::REG_R9,
    libc::REG_R10,
    libc::REG_R11,
    libc::REG_R12,
    libc::REG_R13,
    libc::REG_R14,
    libc::REG_R15,
];

extern "C" fn handler(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let page = ACTIVE.with(|a| a.get());
    // SAFETY: the kernel passes a valid ucontext_t for SA_SIGINFO handlers.
    let ctx = unsafe { &mut *(uc as *mut libc::ucontext_t) };
    let rip = ctx.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    if !page.is_null() && rip >= page as usize && rip < page as usize + RECOVER {
        // SAFETY: `page` is this thread's live harness page (ACTIVE is set
        // only around a run); the slots written lie in its data block. The
        // fpregs pointer of a user-mode fault context points at the saved
        // FXSAVE-format state.
        unsafe {
            for (r, &g) in GREG_OF.iter().enumerate() {
                (page.add(OUT_GPR + 8 * r) as *mut u64).write_unaligned(ctx.uc_mcontext.gregs[g as usize] as u64);
            }
            (page.add(OUT_FLAGS) as *mut u64).write_unaligned(ctx.uc_mcontext.gregs[libc::REG_EFL as usize] as u64);
            let fp = ctx.uc_mcontext.fpregs;
            if !fp.is_null() {
                (page.add(OUT_MXCSR) as *mut u32).write_unaligned((*fp).mxcsr);
                for x in 0..16 {
                    let e = (*fp)._xmm[x].element;
                    let v = e[0] as u128 | (e[1] as u128) << 32 | (e[2] as u128) << 64 | (e[3] as u128) << 96;
                    (page.add(OUT_XMM + 16 * x) as *mut u128).write_unaligned(v);
                }
            }
            (page.add(SIGNO) as *mut i32).write_unaligned(sig);
        }
        ctx.uc_mcontext.gregs[libc::REG_RIP as usize] = (page as usize + RECOVER) as i64;
        return;
    }
    // Not ours: hand it to whoever was there before.
    let Some(prev) = PREVIOUS.get() else { return };
    let Some(i) = SIGNALS.iter().position(|&s| s == sig) else { return };
    let p = prev[i];
    if p.sa_sigaction == libc::SIG_DFL || p.sa_sigaction == libc::SIG_IGN {
        // SAFETY: restoring the previous disposition; returning re-runs the
        // faulting instruction, which then gets the default action.
        unsafe { libc::sigaction(sig, &p, std::ptr::null_mut()) };
    } else if p.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it
        // has this signature.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) = unsafe { std::mem::transmute(p.sa_sigaction) };
        f(sig, info, uc);
    } else {
        // SAFETY: a plain handler has this signature.
        let f: extern "C" fn(i32) = unsafe { std::mem::transmute(p.sa_sigaction) };
        f(sig);
    }
}
