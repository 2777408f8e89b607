//! The host half: a hand-assembled harness in an RWX code area (the
//! snippet's own code area, so the instruction runs natively at the very
//! address the interpreter runs it at) saves the host's x87/SSE state with
//! FXSAVE, loads the input x87/MMX state with FXRSTOR, then every GPR (RSP
//! included), RFLAGS, XMM0-15 and MXCSR from a block in the same area
//! (RIP-relative), jumps to the instruction at `INSN`, stores everything
//! back (the x87 state with FXSAVE and, for the full tag word, FNSTENV),
//! restores the host's state and returns.
//!
//! Control transfers stay inside the harness: right after the instruction
//! sits the fall-through pad, and at the case's taken target (ahead of the
//! instruction or behind it, see `gen`) the taken pad; each pad stores its
//! number in the PATH slot (a MOV, which touches no register or flag) and
//! jumps to the common epilogue. Every other byte between the prologue and
//! the epilogue is INT3, so a stray landing is caught as SIGTRAP.
//!
//! A fault in the instruction is caught in-process: a handler installed once
//! (on an alternate stack, chaining to the previous handler for any fault
//! that is not ours) recognises a fault inside the harness of the current
//! thread, copies the register state (x87 included) out of the signal
//! context and rewrites the saved RIP to a recovery stub that restores the
//! host stack, x87/SSE state and MXCSR and returns normally. No Rust frame
//! is unwound.

use std::cell::Cell;
use std::sync::OnceLock;

use super::{End, Fpu, Outcome, State};
use crate::hostfault::GREG_OF;
use crate::state::{fl, reg, CpuState, X87};

/// Bytes of the code area the harness uses.
pub const AREA: usize = 16384;
/// Lowest offset a landing pad may use (the prologue lies below).
pub const LOW: u64 = 0x200;
/// Offset of the instruction under test.
pub const INSN: u64 = 0x800;
/// Offset of the common epilogue; landing pads end below it.
pub const EPI: u64 = 0x1400;
/// Bytes of a landing pad: `mov byte [rip+PATH], n; jmp EPI`.
pub const PAD: u64 = 12;
/// Recovery stub; the generated code lives below it.
const RECOVER: usize = 0x1800;
const DATA: usize = 0x2000;
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
const PATH: usize = DATA + 820;
const OUT_RIP: usize = DATA + 824;
const IN_FX: usize = DATA + 0x400;
const OUT_FX: usize = DATA + 0x600;
const HOST_FX: usize = DATA + 0x800;
const ENV: usize = DATA + 0xa00;
const IN_YMMH: usize = DATA + 0xc00;
const OUT_YMMH: usize = DATA + 0xe00;

/// Does the host have AVX (and its kernel the YMM state on)? Then the
/// harness seeds and reads back the upper halves of the YMM registers.
pub fn host_has_avx() -> bool {
    crate::cpuid::Model::host().has("avx")
}

/// VINSERTF128 ymmX, ymmX, [rip → target], 1 (`insert`), or VEXTRACTF128
/// [rip → target], ymmX, 1: the upper half of YMM `x` from or to memory.
fn vex_upper(code: &mut Vec<u8>, insert: bool, x: usize, target: usize) {
    let r_bar = if x >= 8 { 0 } else { 0x80 };
    code.push(0xc4);
    code.push(r_bar | 0x60 | 0x03); // R̄ X̄ B̄, map 0F3A
    let vvvv = if insert { !x & 15 } else { 15 };
    code.push(((vvvv as u8) << 3) | 0x04 | 0x01); // W0, vvvv, L = 256, pp = 66
    code.push(if insert { 0x18 } else { 0x19 });
    code.push((((x & 7) as u8) << 3) | 5);
    let end = code.len() + 4 + 1;
    code.extend_from_slice(&((target as i64 - end as i64) as i32).to_le_bytes());
    code.push(1);
}

/// Flags the harness seeds: the status flags and DF (never TF or AC).
pub const SEEDABLE: u64 = fl::STATUS | fl::DF;

thread_local! {
    /// The harness this thread is running natively, or null.
    static ACTIVE: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
    static ALTSTACK: Cell<bool> = const { Cell::new(false) };
}

const SIGNALS: [i32; 5] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP];
static PREVIOUS: OnceLock<[libc::sigaction; 5]> = OnceLock::new();

/// `op reg, [rip+target]` with the given prefixes and opcode bytes; `r` is
/// the ModRM.reg register (0..15).
fn rip_rel(code: &mut Vec<u8>, pre: &[u8], rex_w: bool, opcode: &[u8], r: usize, target: usize) {
    rip_rel_imm(code, pre, rex_w, opcode, r, target, &[]);
}

/// `rip_rel` followed by an immediate (which the displacement accounts for).
fn rip_rel_imm(code: &mut Vec<u8>, pre: &[u8], rex_w: bool, opcode: &[u8], r: usize, target: usize, imm: &[u8]) {
    code.extend_from_slice(pre);
    let rex = (if rex_w { 0x48 } else { 0x40 }) | (((r >> 3) as u8) << 2);
    if rex != 0x40 {
        code.push(rex);
    }
    code.extend_from_slice(opcode);
    code.push((((r & 7) as u8) << 3) | 5);
    let end = code.len() + 4 + imm.len();
    code.extend_from_slice(&((target as i64 - end as i64) as i32).to_le_bytes());
    code.extend_from_slice(imm);
}

/// `jmp rel32` from the end of `c` to offset `to`.
fn jmp_to(c: &mut Vec<u8>, to: usize) {
    c.push(0xe9);
    let end = c.len() + 4;
    c.extend_from_slice(&((to as i64 - end as i64) as i32).to_le_bytes());
}

const PUSH_CALLEE_SAVED: [u8; 10] = [0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57];
const POP_CALLEE_SAVED_RET: [u8; 11] = [0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c, 0x5d, 0x5b, 0xc3];
const FXSAVE64: [u8; 3] = [0x48, 0x0f, 0xae];

/// The tail shared by the normal path and the recovery stub, for code
/// `c` whose first byte lies at area offset 0 (offsets are taken from the
/// start of `c`).
fn epilogue(c: &mut Vec<u8>) {
    rip_rel(c, &[], true, &[0x8b], reg::RSP, SAVED_RSP); // mov rsp, [saved]
    rip_rel(c, &FXSAVE64[..1], false, &FXSAVE64[1..], 1, HOST_FX); // fxrstor64 [host]
    rip_rel(c, &[], false, &[0x0f, 0xae], 2, HOST_MXCSR); // ldmxcsr [host]
                                                          // push 0x202; popfq: DF clear as the ABI wants, and never AC or TF,
                                                          // whatever the instruction (POPF) loaded.
    c.extend_from_slice(&[0x68, 0x02, 0x02, 0x00, 0x00, 0x9d]);
    c.extend_from_slice(&POP_CALLEE_SAVED_RET);
}

/// A landing pad at area offset `at`: record `n` in PATH, go to the epilogue.
fn pad(c: &mut [u8], at: usize, n: u8) {
    let mut p = vec![0xccu8; at];
    rip_rel_imm(&mut p, &[], false, &[0xc6], 0, PATH, &[n]); // mov byte [path], n
    jmp_to(&mut p, EPI as usize);
    c[at..at + PAD as usize].copy_from_slice(&p[at..]);
}

/// The x87 part of a FXSAVE image and the full tag word.
fn fpu_of(img: &[u8], ftw: u16) -> Fpu {
    let fsw = u16::from_le_bytes([img[2], img[3]]);
    let top = ((fsw >> 11) & 7) as usize;
    let mut st = [[0u8; 10]; 8];
    for j in 0..8 {
        st[(top + j) & 7].copy_from_slice(&img[32 + 16 * j..32 + 16 * j + 10]);
    }
    Fpu { st, fcw: u16::from_le_bytes([img[0], img[1]]), fsw, ftw }
}

/// The host half: the harness in a code area that is not ours (the
/// snippet's). Not `Send`: the signal handler finds it through a
/// thread-local.
pub struct Native {
    page: *mut u8,
}

impl Native {
    /// Use `AREA` bytes at `area` (page-aligned, mapped readable and
    /// writable, owned by the caller for the life of this `Native`) for the
    /// harness: make them executable and install the fault handlers, or
    /// `Err` (with the reason) when the host refuses.
    pub fn new(area: u64) -> Result<Native, String> {
        let page = area as *mut u8;
        // SAFETY: the caller owns the range; only its protection changes.
        let r = unsafe {
            libc::mprotect(page as *mut libc::c_void, AREA, libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC)
        };
        if r != 0 {
            return Err("the host refuses an RWX mapping".into());
        }
        install_handlers()?;
        ensure_altstack()?;
        Ok(Native { page })
    }

    /// Run `insn` natively at area offset `INSN` from `input`. `target` is
    /// the taken pad's address for a control transfer. Memory operands must
    /// point into memory the caller owns, and every destination of the
    /// instruction must be the fall-through or the taken pad; a fault is
    /// caught and reported as `End::Signal` with the state at the fault.
    pub fn run(&mut self, insn: &[u8], target: Option<u64>, input: &State) -> Outcome {
        let base = self.page as u64;
        let mut c = Vec::with_capacity(EPI as usize + 1024);
        c.extend_from_slice(&PUSH_CALLEE_SAVED);
        rip_rel(&mut c, &[], true, &[0x89], reg::RSP, SAVED_RSP); // mov [saved], rsp
        rip_rel(&mut c, &[], false, &[0x0f, 0xae], 3, HOST_MXCSR); // stmxcsr [host]
        rip_rel(&mut c, &FXSAVE64[..1], false, &FXSAVE64[1..], 0, HOST_FX); // fxsave64 [host]
        rip_rel(&mut c, &FXSAVE64[..1], false, &FXSAVE64[1..], 1, IN_FX); // fxrstor64 [in]
        rip_rel(&mut c, &[], false, &[0xff], 6, IN_FLAGS); // push qword [in_flags]
        c.push(0x9d); // popfq
        rip_rel(&mut c, &[], false, &[0x0f, 0xae], 2, IN_MXCSR); // ldmxcsr
        for x in 0..16 {
            rip_rel(&mut c, &[], false, &[0x0f, 0x10], x, IN_XMM + 16 * x); // movups xmm, [in]
        }
        let avx = host_has_avx();
        for x in (0..16).filter(|_| avx) {
            vex_upper(&mut c, true, x, IN_YMMH + 16 * x);
        }
        for r in (0..16).filter(|&r| r != reg::RSP) {
            rip_rel(&mut c, &[], true, &[0x8b], r, IN_GPR + 8 * r);
        }
        rip_rel(&mut c, &[], true, &[0x8b], reg::RSP, IN_GPR + 8 * reg::RSP);
        jmp_to(&mut c, INSN as usize);
        assert!(c.len() <= LOW as usize, "harness prologue too long");
        c.resize(EPI as usize, 0xcc);
        let at = INSN as usize;
        assert!(at + insn.len() + PAD as usize <= EPI as usize, "instruction too long for the harness");
        c[at..at + insn.len()].copy_from_slice(insn);
        pad(&mut c, at + insn.len(), 1);
        if let Some(t) = target {
            let off = t.wrapping_sub(base) as usize;
            assert!(off >= LOW as usize && off + PAD as usize <= EPI as usize, "taken pad outside the harness");
            pad(&mut c, off, 2);
        }
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
        for x in (0..16).filter(|_| avx) {
            vex_upper(&mut c, false, x, OUT_YMMH + 16 * x);
        }
        rip_rel(&mut c, &FXSAVE64[..1], false, &FXSAVE64[1..], 0, OUT_FX); // fxsave64 [out]
        rip_rel(&mut c, &[], false, &[0xd9], 6, ENV); // fnstenv [env] (masks all; the host's state comes back next)
        epilogue(&mut c);
        assert!(c.len() <= RECOVER, "harness too long");
        c.resize(RECOVER, 0xcc);
        epilogue(&mut c);
        assert!(c.len() <= DATA);
        let flags = (input.rflags & SEEDABLE) | 0x202;
        let mut cpu = CpuState { xmm: input.xmm, mxcsr: input.mxcsr, ..CpuState::default() };
        cpu.x87 = input.fpu.x87();
        let fx_in = cpu.fxsave_image();
        let page = self.page;
        // SAFETY: `page` is the caller's AREA-byte RWX range; the code fits
        // below DATA and the data block inside the area. The harness saves
        // and restores every callee-saved register, RSP, the x87/SSE state
        // and MXCSR, and clears DF. The caller promises the instruction
        // touches no memory it does not own and lands only on the pads; a
        // fault is recovered by the handler through the stub at RECOVER,
        // which restores the same state. The input x87 state has every
        // exception masked, so nothing is left pending for a waiting
        // instruction of the host's.
        unsafe {
            std::ptr::copy_nonoverlapping(c.as_ptr(), page, c.len());
            let w64 = |off: usize, v: u64| (page.add(off) as *mut u64).write_unaligned(v);
            for r in 0..16 {
                w64(IN_GPR + 8 * r, input.gpr[r]);
                (page.add(IN_XMM + 16 * r) as *mut u128).write_unaligned(input.xmm[r]);
                (page.add(IN_YMMH + 16 * r) as *mut u128).write_unaligned(input.ymm_hi[r]);
                (page.add(OUT_YMMH + 16 * r) as *mut u128).write_unaligned(0);
            }
            w64(IN_FLAGS, flags);
            (page.add(IN_MXCSR) as *mut u32).write_unaligned(input.mxcsr);
            std::ptr::copy_nonoverlapping(fx_in.as_ptr(), page.add(IN_FX), 512);
            (page.add(SIGNO) as *mut i32).write_unaligned(0);
            page.add(PATH).write(0);
            ACTIVE.with(|a| a.set(page));
            let f: extern "C" fn() = std::mem::transmute(page);
            f();
            ACTIVE.with(|a| a.set(std::ptr::null_mut()));
            let r64 = |off: usize| (page.add(off) as *const u64).read_unaligned();
            let mut out = State::default();
            for r in 0..16 {
                out.gpr[r] = r64(OUT_GPR + 8 * r);
                out.xmm[r] = (page.add(OUT_XMM + 16 * r) as *const u128).read_unaligned();
                out.ymm_hi[r] = (page.add(OUT_YMMH + 16 * r) as *const u128).read_unaligned();
            }
            out.rflags = r64(OUT_FLAGS);
            out.mxcsr = (page.add(OUT_MXCSR) as *const u32).read_unaligned();
            let img = std::slice::from_raw_parts(page.add(OUT_FX), 512);
            let signo = (page.add(SIGNO) as *const i32).read_unaligned();
            let (end, rip) = if signo == 0 {
                let ftw = u16::from_le_bytes([*page.add(ENV + 8), *page.add(ENV + 9)]);
                out.fpu = fpu_of(img, ftw);
                let rip = match page.add(PATH).read() {
                    1 => base + INSN + insn.len() as u64,
                    2 => target.unwrap_or(0),
                    _ => 0,
                };
                (End::Completed, rip)
            } else {
                // The signal frame holds the abridged tags only; widen them
                // as FXRSTOR and the hardware do.
                let mut fpu = fpu_of(img, 0);
                fpu.ftw = full_tag(img[4], &fpu.st);
                out.fpu = fpu;
                (End::Signal(signo), r64(OUT_RIP))
            };
            Outcome { end, state: out, rip }
        }
    }
}

/// The full 2-bit tag of a non-empty register from its contents:
/// 0 valid, 1 zero, 2 special (NaN, infinity, denormal, unnormal, pseudo-*).
pub fn tag_of(r: &[u8; 10]) -> u16 {
    let exp = u16::from_le_bytes([r[8], r[9]]) & 0x7fff;
    let sig = u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]);
    match exp {
        0x7fff => 2,
        0 if sig == 0 => 1,
        0 => 2,
        _ if sig >> 63 == 0 => 2,
        _ => 0,
    }
}

/// The full tag word from the abridged one (bit per physical register,
/// set when it is not empty) and the registers' contents.
pub fn full_tag(abridged: u8, st: &[[u8; 10]; 8]) -> u16 {
    (0..8).fold(0, |w, p| {
        let t = if abridged >> p & 1 == 0 { 3 } else { tag_of(&st[p]) };
        w | t << (2 * p)
    })
}

impl Fpu {
    /// The interpreter's x87 state for this one (FOP, FIP and FDP zero).
    pub fn x87(&self) -> X87 {
        X87 { st: self.st, fcw: self.fcw, fsw: self.fsw, ftw: self.ftw, ..X87::default() }
    }
    /// The compared part of the interpreter's x87 state.
    pub fn of(x: &X87) -> Fpu {
        Fpu { st: x.st, fcw: x.fcw, fsw: x.fsw, ftw: x.ftw }
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
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
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
            let mut prev: [libc::sigaction; 5] = unsafe { std::mem::zeroed() };
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
                std::ptr::copy_nonoverlapping(fp as *const u8, page.add(OUT_FX), 512);
                (page.add(OUT_MXCSR) as *mut u32).write_unaligned((*fp).mxcsr);
                for x in 0..16 {
                    let e = (*fp)._xmm[x].element;
                    let v = e[0] as u128 | (e[1] as u128) << 32 | (e[2] as u128) << 64 | (e[3] as u128) << 96;
                    (page.add(OUT_XMM + 16 * x) as *mut u128).write_unaligned(v);
                }
                // The YMM upper halves, from the XSAVE image Linux puts
                // after the FXSAVE region (FP_XSTATE_MAGIC1 says it is
                // there; XSTATE_BV bit 2 clear means all zero).
                let b = fp as *const u8;
                let magic = (b.add(464) as *const u32).read_unaligned();
                let bv = (b.add(512) as *const u64).read_unaligned();
                for x in 0..16 {
                    let v = if magic == 0x4650_5853 && bv & 4 != 0 {
                        (b.add(576 + 16 * x) as *const u128).read_unaligned()
                    } else {
                        0
                    };
                    (page.add(OUT_YMMH + 16 * x) as *mut u128).write_unaligned(v);
                }
            }
            (page.add(OUT_RIP) as *mut u64).write_unaligned(rip as u64);
            (page.add(SIGNO) as *mut i32).write_unaligned(sig);
        }
        ctx.uc_mcontext.gregs[libc::REG_RIP as usize] = (page as usize + RECOVER) as i64;
        return;
    }
    // Not ours: hand it to whoever was there before.
    let Some(prev) = PREVIOUS.get() else { return };
    let Some(i) = SIGNALS.iter().position(|&s| s == sig) else {
        return;
    };
    let p = prev[i];
    if p.sa_sigaction == libc::SIG_DFL || p.sa_sigaction == libc::SIG_IGN {
        // SAFETY: restoring the previous disposition; returning re-runs the
        // faulting instruction, which then gets the default action.
        unsafe { libc::sigaction(sig, &p, std::ptr::null_mut()) };
    } else if p.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it
        // has this signature.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(p.sa_sigaction) };
        f(sig, info, uc);
    } else {
        // SAFETY: a plain handler has this signature.
        let f: extern "C" fn(i32) = unsafe { std::mem::transmute(p.sa_sigaction) };
        f(sig);
    }
}
