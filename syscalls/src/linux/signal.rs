//! Guest signals: dispositions, masks, host catching, and delivery to guest
//! handlers with a frame laid out exactly as Linux's x86-64 `rt_sigframe`.
//!
//! A signal the guest handles has a host handler that records it for the
//! thread the kernel chose and interrupts that thread's engine; the run
//! loop then builds the frame. Signals the guest leaves at default or
//! ignores keep the host's default or ignore, so the kernel acts on urun
//! exactly as it would on the native program. Each guest thread's mask is
//! mirrored on its host thread, so the kernel picks the same thread Linux
//! would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use urun_cpu::interp::ops::{emulate_umip, UmipValues};
use urun_cpu::state::reg;
use urun_cpu::{Fault, FaultKind, Interrupt, PageFaultKind, Prot};

use super::{guest, lock, report_fatal, Process, Stop, Task};

const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTART: u64 = 0x1000_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;
const SA_RESTORER: u64 = 0x0400_0000;

/// Signals that can never be caught or blocked.
const UNBLOCKABLE: u64 = bit(libc::SIGKILL) | bit(libc::SIGSTOP);

/// The mask bit of signal `sig` (1..=64).
pub(crate) const fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// The si_code (FPE_*) Linux gives for urun's `fp_exception` code.
fn fpe_si_code(code: i32) -> i32 {
    use urun_cpu::engine::fp_exception::*;
    const TABLE: [(i32, i32); 5] = [
        (DIVIDE_BY_ZERO, 3), // FPE_FLTDIV
        (OVERFLOW, 4),       // FPE_FLTOVF
        (UNDERFLOW, 5),      // FPE_FLTUND
        (INEXACT, 6),        // FPE_FLTRES
        (INVALID, 7),        // FPE_FLTINV
    ];
    TABLE.iter().find(|(c, _)| *c == code).map_or(0, |(_, si)| *si)
}

/// The signal Linux sends for a fault.
pub fn signal_for(fault: &Fault) -> i32 {
    match fault.kind {
        FaultKind::Page { kind: PageFaultKind::Bus, .. } => libc::SIGBUS,
        FaultKind::Page { .. } | FaultKind::GeneralProtection => libc::SIGSEGV,
        FaultKind::Divide | FaultKind::FloatingPoint { .. } => libc::SIGFPE,
        FaultKind::InvalidOpcode { .. } => libc::SIGILL,
        FaultKind::Breakpoint | FaultKind::DebugTrap => libc::SIGTRAP,
    }
}

// ----- catching on the host -----

/// Signals caught on the host for one thread: a bit per signal and the
/// kernel's siginfo for each. Written by the host signal handler on the
/// same thread, read by the run loop.
pub(crate) struct Pending {
    bits: AtomicU64,
    info: [std::cell::UnsafeCell<[u8; 128]>; 65],
    interrupt: Arc<Interrupt>,
}

// SAFETY: `info[n]` is written only by the signal handler of the owning
// thread before it sets bit n, and read only after the bit is taken; all
// access happens on the owning thread.
unsafe impl Sync for Pending {}

thread_local! {
    /// This thread's `Pending`, for the host signal handler. Const
    /// initialised, so reading it in a handler allocates nothing.
    static CURRENT: std::cell::Cell<*const Pending> = const { std::cell::Cell::new(std::ptr::null()) };
}

impl Pending {
    /// Make this thread's record (it lives as long as the process: a few
    /// KiB per guest thread ever started).
    pub(crate) fn for_this_thread(interrupt: Arc<Interrupt>) -> &'static Pending {
        let p: &'static Pending = Box::leak(Box::new(Pending {
            bits: AtomicU64::new(0),
            info: std::array::from_fn(|_| std::cell::UnsafeCell::new([0; 128])),
            interrupt,
        }));
        CURRENT.with(|c| c.set(p));
        p
    }

    /// Make `p` the record the host handler on this thread fills (after a
    /// vfork child borrowed this thread's TLS).
    pub(crate) fn make_current(p: &'static Pending) {
        CURRENT.with(|c| c.set(p));
    }

    /// Is any signal recorded, blocked or not?
    pub(crate) fn any(&self) -> bool {
        self.bits.load(Ordering::Acquire) != 0
    }

    /// Take the lowest pending signal not in `mask`, with its siginfo.
    fn take(&self, mask: u64) -> Option<(i32, [u8; 128])> {
        let ready = self.bits.load(Ordering::Acquire) & !mask;
        if ready == 0 {
            return None;
        }
        let sig = ready.trailing_zeros() as i32 + 1;
        // SAFETY: the handler wrote this slot before setting the bit.
        let info = unsafe { *self.info[sig as usize].get() };
        self.bits.fetch_and(!bit(sig), Ordering::AcqRel);
        Some((sig, info))
    }
}

/// The host handler for signals the guest handles.
extern "C" fn host_handler(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let code = unsafe { (*info).si_code };
    if is_synchronous(sig) && code > 0 {
        // A real fault in urun itself (the interpreter raises guest faults
        // as data, never as host signals): let it kill urun as it would.
        // SAFETY: resetting a disposition is async-signal-safe.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        return;
    }
    if p.is_null() || !(1..=64).contains(&sig) {
        return;
    }
    // SAFETY: `p` is this thread's leaked `Pending`; the slot is ours until
    // the bit is set; siginfo is 128 bytes.
    unsafe {
        let p = &*p;
        std::ptr::copy_nonoverlapping(info as *const u8, p.info[sig as usize].get() as *mut u8, 128);
        p.bits.fetch_or(bit(sig), Ordering::AcqRel);
        p.interrupt.raise();
        // Keep the signal blocked on this thread when the handler returns,
        // until the run loop has delivered this instance: further
        // instances stay queued in the kernel (real-time signals queue as
        // on Linux) instead of overwriting this one.
        if !uc.is_null() {
            libc::sigaddset(&mut (*(uc as *mut libc::ucontext_t)).uc_sigmask, sig);
        }
    }
}

/// Signals the CPU raises for faults.
fn is_synchronous(sig: i32) -> bool {
    matches!(sig, libc::SIGSEGV | libc::SIGBUS | libc::SIGFPE | libc::SIGILL | libc::SIGTRAP)
}

/// Make the host's disposition of `sig` follow the guest's `act`.
pub(crate) fn apply_host_disposition(sig: i32, act: &[u64; 4]) {
    // SAFETY: a zeroed sigaction is valid; we fill in handler, flags, mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = match act[0] {
        0 => libc::SIG_DFL,
        1 => libc::SIG_IGN,
        _ => {
            // Never SA_RESTART on the host: an interrupted syscall comes back
            // with EINTR, the guest's handler runs, and then the syscall is
            // restarted (or not) by `restart_after_signal`, as Linux does,
            // so the handler runs while the call is blocked, not after it.
            // On the thread's alternate stack (every guest thread has one,
            // `hostfault::prepare_thread`): a signal that lands in guest
            // code the JIT runs must not use the guest's stack.
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            host_handler as *const () as usize
        }
    };
    if matches!(sig, libc::SIGSEGV | libc::SIGBUS | libc::SIGFPE) {
        // urun_cpu::hostfault owns these (a guest access that faults is
        // the guest's fault): it hands it what is not urun's. The guest's
        // default is the handler that was there before it (the default
        // action, or Rust's stack-overflow report).
        let h = if act[0] == 0 { None } else { Some(sa.sa_sigaction) };
        if let Err(e) = urun_cpu::hostfault::set_fallback(sig, h) {
            tracing::warn!(%e, sig, "cannot set the host's disposition");
        }
        return;
    }
    // SAFETY: installing a handler for a valid, catchable signal.
    unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Before exec: handled signals go back to default (ignored stay ignored).
pub(crate) fn reset_handled_for_exec(p: &Process) {
    let acts = lock(&p.sigactions);
    for sig in 1..=64 {
        if acts[sig as usize][0] > 1 {
            apply_host_disposition(sig, &[0; 4]);
        }
    }
}

// ----- masks -----

/// The calling host thread's signal mask.
pub(crate) fn host_mask() -> u64 {
    let mut old = 0u64;
    // SAFETY: rt_sigprocmask with a NULL new set only reads the mask into
    // our 8-byte buffer.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, 0usize, &mut old as *mut u64, 8usize) };
    old
}

/// Set this thread's guest mask, and the host's to match (plus the
/// signals caught but not yet delivered, which stay blocked on the host).
pub(crate) fn set_mask(task: &mut Task<'_>, mask: u64) {
    let mask = mask & !UNBLOCKABLE;
    task.t.sigmask = mask;
    let host = mask | task.t.signals.bits.load(Ordering::Acquire);
    // SAFETY: rt_sigprocmask with our own 8-byte set.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &host as *const u64, 0usize, 8usize) };
}

// ----- delivery -----

/// Syscalls Linux does not restart after a handler even with SA_RESTART
/// (they return EINTR: -ERESTARTNOHAND or a restart block with a timeout).
const NEVER_RESTARTED: &[u64] = &[
    7,   // poll
    23,  // select
    34,  // pause
    35,  // nanosleep
    128, // rt_sigtimedwait
    130, // rt_sigsuspend
    230, // clock_nanosleep
    232, // epoll_wait
    270, // pselect6
    271, // ppoll
    281, // epoll_pwait
];

/// A syscall that a host signal interrupted (-EINTR): if the signal has a
/// guest handler with SA_RESTART and the call is one Linux restarts, back
/// RIP up onto the SYSCALL and put the number back in RAX, so the call runs
/// again when the handler returns (the frame saves this state). Returns
/// the value RAX should get now.
pub(crate) fn restart_after_signal(task: &mut Task<'_>, nr: u64, ret: i64) -> i64 {
    if ret != -(libc::EINTR as i64) || NEVER_RESTARTED.contains(&nr) {
        return ret;
    }
    let ready = task.t.signals.bits.load(Ordering::Acquire) & !task.t.sigmask;
    if ready == 0 {
        return ret;
    }
    let sig = ready.trailing_zeros() as i32 + 1;
    let act = lock(&task.p.sigactions)[sig as usize];
    if act[0] > 1 && act[1] & SA_RESTART != 0 {
        task.cpu.rip = task.cpu.rip.wrapping_sub(2);
        return nr as i64;
    }
    ret
}

/// Deliver every pending, unblocked signal of this thread.
pub(crate) fn deliver_pending(task: &mut Task<'_>) -> Result<(), Stop> {
    let taken = task.t.signals.bits.load(Ordering::Acquire);
    let r = deliver_unblocked(task);
    // After rt_sigsuspend: the old mask comes back here unless a frame
    // saved it for its rt_sigreturn. Signals taken from the record are
    // unblocked on the host again (unless the guest blocks them).
    if let Some(old) = task.t.saved_mask.take() {
        set_mask(task, old);
    } else if taken != 0 && task.t.signals.bits.load(Ordering::Acquire) != taken {
        let m = task.t.sigmask;
        set_mask(task, m);
    }
    r
}

fn deliver_unblocked(task: &mut Task<'_>) -> Result<(), Stop> {
    while let Some((sig, info)) = task.t.signals.take(task.t.sigmask) {
        let act = lock(&task.p.sigactions)[sig as usize];
        match act[0] {
            0 => {
                // Set back to default after the host caught it: act as the
                // default would, through the kernel.
                // SAFETY: re-raising a signal at ourselves.
                unsafe { libc::raise(sig) };
            }
            1 => {}
            _ => setup_frame(task, sig, &info, &act, None)?,
        }
    }
    Ok(())
}

/// The fault details Linux puts in the frame: trap number, error code, CR2.
struct FaultFrame {
    trapno: u64,
    err: u64,
    cr2: u64,
}

/// What Linux's UMIP emulation (arch/x86/kernel/umip.c) gives a 64-bit
/// process for SGDT, SIDT, SMSW, STR and SLDT (an LDT would make SLDT 0x50;
/// urun does not track one).
const LINUX_UMIP: UmipValues = UmipValues {
    gdt_base: 0xffff_ffff_fffe_0000,
    gdt_limit: 0,
    idt_base: 0xffff_ffff_ffff_0000,
    idt_limit: 0,
    msw: 0x8005_0033,
    tr: 0x40,
    ldtr: 0,
};

/// A fault in guest code: run the guest's handler, or die by the signal.
pub(crate) fn deliver_fault(task: &mut Task<'_>, f: &Fault) -> Result<(), Stop> {
    // Linux's #GP handler first emulates the UMIP instructions.
    let store_fault;
    let f = match f.kind {
        FaultKind::GeneralProtection => match emulate_umip(&task.p.mem, task.cpu, &LINUX_UMIP) {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) => {
                store_fault = e;
                &store_fault
            }
            None => f,
        },
        _ => f,
    };
    let sig = signal_for(f);
    let act = lock(&task.p.sigactions)[sig as usize];
    if act[0] <= 1 || task.t.sigmask & bit(sig) != 0 {
        // Default, ignored or blocked: Linux forces the default action.
        report_fatal(task.p, f, sig);
        return Err(Stop::Signaled(sig));
    }
    let (code, addr, frame) = match &f.kind {
        FaultKind::Page { addr, write, kind } => {
            // SEGV_MAPERR, SEGV_ACCERR, BUS_ADRERR (a page with nothing
            // behind it is present as far as the CPU knows).
            let present = *kind != PageFaultKind::NotMapped;
            let err = 4 | ((*write as u64) << 1) | present as u64;
            let code = if *kind == PageFaultKind::NotMapped { 1 } else { 2 };
            (code, *addr, FaultFrame { trapno: 14, err, cr2: *addr })
        }
        FaultKind::GeneralProtection => (0x80, 0, FaultFrame { trapno: 13, err: 0, cr2: 0 }),
        FaultKind::Divide => (1, f.pc, FaultFrame { trapno: 0, err: 0, cr2: 0 }),
        FaultKind::FloatingPoint { code } => (fpe_si_code(*code), f.pc, FaultFrame { trapno: 19, err: 0, cr2: 0 }),
        FaultKind::InvalidOpcode { .. } => (2, f.pc, FaultFrame { trapno: 6, err: 0, cr2: 0 }),
        FaultKind::Breakpoint => (0x80, 0, FaultFrame { trapno: 3, err: 0, cr2: 0 }),
        // TRAP_BRKPT at the saved RIP, as Linux reports an ICEBP.
        FaultKind::DebugTrap => (1, f.pc, FaultFrame { trapno: 1, err: 0, cr2: 0 }),
    };
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&sig.to_ne_bytes());
    info[8..12].copy_from_slice(&code.to_ne_bytes());
    info[16..24].copy_from_slice(&addr.to_ne_bytes());
    setup_frame(task, sig, &info, &act, Some(&frame))
}

/// Size of `struct ucontext` as the kernel writes it (with an 8-byte
/// sigset) and offsets inside it.
const UC_SIZE: u64 = 304;
const UC_STACK: u64 = 16;
const UC_MCONTEXT: u64 = 40;
const UC_SIGMASK: u64 = 296;
/// `rt_sigframe`: return address, ucontext, siginfo.
const FRAME_SIZE: u64 = 8 + UC_SIZE + 128;
/// The FXSAVE-format FPU state Linux saves below the frame (without XSAVE).
const FPSTATE_SIZE: u64 = 512;
/// With XSAVE (the CPU model has it), Linux saves an XSAVE image instead:
/// the FXSAVE region with `_fpx_sw_bytes` in its software-reserved bytes
/// (FP_XSTATE_MAGIC1, sizes, XCR0), the XSAVE header, the AVX component,
/// then FP_XSTATE_MAGIC2; the ucontext's flags say UC_FP_XSTATE.
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
const SW_BYTES: usize = 464;
const UC_FP_XSTATE: u64 = 1;

/// The FPU state image of the signal frame for `cpu`: FXSAVE format, or
/// the XSAVE format Linux uses when the model has XSAVE.
fn fpstate_image(cpu: &urun_cpu::CpuState) -> Vec<u8> {
    let model = urun_cpu::cpuid::model();
    let fx = cpu.fxsave_image();
    if !model.has("xsave") {
        return fx.to_vec();
    }
    let size = model.xsave_size() as usize;
    let mut img = vec![0u8; size + 4];
    img[..512].copy_from_slice(&fx);
    let put32 = |img: &mut Vec<u8>, at: usize, v: u32| img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(&mut img, SW_BYTES, FP_XSTATE_MAGIC1);
    put32(&mut img, SW_BYTES + 4, size as u32 + 4);
    img[SW_BYTES + 8..SW_BYTES + 16].copy_from_slice(&model.xcr0().to_le_bytes());
    put32(&mut img, SW_BYTES + 16, size as u32);
    let mut in_use = 0b11u64;
    if model.has("avx") {
        let at = urun_cpu::cpuid::XSAVE_YMM_OFFSET as usize;
        for (i, v) in cpu.ymm_hi.iter().enumerate() {
            img[at + 16 * i..at + 16 * (i + 1)].copy_from_slice(&v.to_le_bytes());
        }
        if cpu.ymm_hi.iter().any(|v| *v != 0) {
            in_use |= 0b100;
        }
    }
    img[512..520].copy_from_slice(&in_use.to_le_bytes());
    put32(&mut img, size, FP_XSTATE_MAGIC2);
    img
}

/// The YMM upper halves from a signal frame's FPU state at `fpstate`
/// (whose FXSAVE region is `fx`), as Linux's sigreturn finds them: only
/// from a well-formed XSAVE image (both magics, the sizes), else zero.
fn ymm_from_frame(mem: &urun_cpu::AddressSpace, fpstate: u64, fx: &[u8]) -> [u128; 16] {
    let mut hi = [0u128; 16];
    let model = urun_cpu::cpuid::model();
    let u32_at = |at: usize| u32::from_le_bytes(fx[at..at + 4].try_into().unwrap_or([0; 4]));
    let size = model.xsave_size();
    if !model.has("avx") || u32_at(SW_BYTES) != FP_XSTATE_MAGIC1 || u32_at(SW_BYTES + 16) != size {
        return hi;
    }
    let Some(rest) = guest::read::<[u8; 836 - 512]>(mem, fpstate + 512) else { return hi };
    let magic2 = u32::from_le_bytes(rest[size as usize - 512..size as usize - 508].try_into().unwrap_or([0; 4]));
    let bv = u64::from_le_bytes(rest[..8].try_into().unwrap_or([0; 8]));
    if magic2 != FP_XSTATE_MAGIC2 || bv & 0b100 == 0 {
        return hi;
    }
    let at = urun_cpu::cpuid::XSAVE_YMM_OFFSET as usize - 512;
    for (i, v) in hi.iter_mut().enumerate() {
        *v = u128::from_le_bytes(rest[at + 16 * i..at + 16 * (i + 1)].try_into().unwrap_or([0; 16]));
    }
    hi
}

/// The order of registers in `struct sigcontext` (r8..r15, rdi, rsi, rbp,
/// rbx, rdx, rax, rcx, rsp), as indices into `CpuState::gpr`.
const SIGCONTEXT_GPRS: [usize; 16] = [
    reg::R8,
    reg::R9,
    reg::R10,
    reg::R11,
    reg::R12,
    reg::R13,
    reg::R14,
    reg::R15,
    reg::RDI,
    reg::RSI,
    reg::RBP,
    reg::RBX,
    reg::RDX,
    reg::RAX,
    reg::RCX,
    reg::RSP,
];

fn put(buf: &mut [u8], at: u64, v: u64) {
    buf[at as usize..at as usize + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get(buf: &[u8], at: u64) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at as usize..at as usize + 8]);
    u64::from_ne_bytes(b)
}

/// Is `sp` on this thread's alternate signal stack?
fn on_altstack(task: &Task<'_>, sp: u64) -> bool {
    let [ss_sp, flags, size] = task.t.altstack;
    flags as i32 & libc::SS_DISABLE == 0 && sp > ss_sp && sp - ss_sp <= size
}

/// Build the signal frame on the guest stack and enter the handler.
fn setup_frame(
    task: &mut Task<'_>,
    sig: i32,
    info: &[u8; 128],
    act: &[u64; 4],
    fault: Option<&FaultFrame>,
) -> Result<(), Stop> {
    let (handler, flags, restorer, mask) = (act[0], act[1], act[2], act[3]);
    let old_sp = task.cpu.gpr[reg::RSP];
    let [ss_sp, ss_flags, ss_size] = task.t.altstack;
    let onstack = on_altstack(task, old_sp);
    let cpu = &mut *task.cpu;
    let mut sp = if flags & SA_ONSTACK != 0 && ss_flags as i32 & libc::SS_DISABLE == 0 && !onstack {
        ss_sp.wrapping_add(ss_size)
    } else {
        // Skip the red zone.
        old_sp.wrapping_sub(128)
    };
    let fx = fpstate_image(cpu);
    let fx_size = fx.len() as u64;
    sp = sp.wrapping_sub(fx_size) & !63;
    let fpstate = sp;
    let frame = (sp.wrapping_sub(FRAME_SIZE) & !15).wrapping_sub(8);
    let usable = flags & SA_RESTORER != 0 && task.p.mem.check(frame, fpstate + fx_size - frame, Prot::WRITE);
    if !usable {
        // Linux: a frame that cannot be written kills with SIGSEGV.
        tracing::debug!(sig, frame = format_args!("{frame:#x}"), "cannot build a signal frame");
        return Err(Stop::Signaled(libc::SIGSEGV));
    }

    let mut f = vec![0u8; FRAME_SIZE as usize];
    put(&mut f, 0, restorer);
    let uc = 8;
    // UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS, and UC_FP_XSTATE.
    put(&mut f, uc, 6 | if fx_size > FPSTATE_SIZE { UC_FP_XSTATE } else { 0 });
    put(&mut f, uc + UC_STACK, ss_sp);
    let ss_state = if ss_flags as i32 & libc::SS_DISABLE != 0 {
        libc::SS_DISABLE as u64
    } else if onstack {
        libc::SS_ONSTACK as u64
    } else {
        0
    };
    put(&mut f, uc + UC_STACK + 8, ss_state);
    put(&mut f, uc + UC_STACK + 16, ss_size);
    let mc = uc + UC_MCONTEXT;
    for (i, r) in SIGCONTEXT_GPRS.iter().enumerate() {
        put(&mut f, mc + 8 * i as u64, cpu.gpr[*r]);
    }
    put(&mut f, mc + 8 * 16, cpu.rip);
    put(&mut f, mc + 8 * 17, cpu.flags.get());
    put(&mut f, mc + 8 * 18, 0x33 | (0x2b << 48)); // cs, gs, fs, ss
    let ff = fault.unwrap_or(&FaultFrame { trapno: 0, err: 0, cr2: 0 });
    put(&mut f, mc + 8 * 19, ff.err);
    put(&mut f, mc + 8 * 20, ff.trapno);
    // The mask the handler's return restores: the one before
    // rt_sigsuspend if the signal ended one.
    let saved = task.t.saved_mask.take().unwrap_or(task.t.sigmask);
    put(&mut f, mc + 8 * 21, saved);
    put(&mut f, mc + 8 * 22, ff.cr2);
    put(&mut f, mc + 8 * 23, fpstate);
    put(&mut f, uc + UC_SIGMASK, saved);
    f[(8 + UC_SIZE) as usize..].copy_from_slice(info);

    if !guest::write_from(&task.p.mem, frame, &f) || !guest::write_from(&task.p.mem, fpstate, &fx) {
        // Unmapped by another thread since the check: as above.
        return Err(Stop::Signaled(libc::SIGSEGV));
    }

    cpu.gpr[reg::RDI] = sig as u64;
    cpu.gpr[reg::RSI] = frame + 8 + UC_SIZE;
    cpu.gpr[reg::RDX] = frame + 8;
    cpu.gpr[reg::RAX] = 0;
    cpu.gpr[reg::RSP] = frame;
    cpu.rip = handler;
    // Handlers start with DF clear (and TF clear); the x87/SSE state is
    // reset as Linux does (fpu__clear_user_states).
    let fl = cpu.flags.get() & !(urun_cpu::state::fl::DF | urun_cpu::state::fl::TF);
    cpu.flags.set(fl);
    cpu.x87 = Default::default();
    cpu.mxcsr = 0x1f80;
    cpu.ymm_hi = [0; 16];

    let mut new_mask = task.t.sigmask | mask;
    if flags & SA_NODEFER == 0 {
        new_mask |= bit(sig);
    }
    set_mask(task, new_mask);
    if flags & SA_RESETHAND != 0 {
        let dfl = [0u64; 4];
        lock(&task.p.sigactions)[sig as usize] = dfl;
        apply_host_disposition(sig, &dfl);
    }
    if task.p.strace {
        super::strace::line(&format!("--- {} (delivered to the guest's handler) ---", super::strace::signal_name(sig)));
    }
    Ok(())
}

/// rt_sigreturn: restore what `setup_frame` saved. Returns the restored
/// RAX (the run loop writes the syscall's result there).
pub(crate) fn sigreturn(task: &mut Task<'_>) -> Result<i64, Stop> {
    let uc = task.cpu.gpr[reg::RSP];
    let mut f = vec![0u8; UC_SIZE as usize];
    if !guest::read_into(&task.p.mem, uc, &mut f) {
        return Err(Stop::Signaled(libc::SIGSEGV));
    }
    let cpu = &mut *task.cpu;
    for (i, r) in SIGCONTEXT_GPRS.iter().enumerate() {
        cpu.gpr[*r] = get(&f, UC_MCONTEXT + 8 * i as u64);
    }
    cpu.rip = get(&f, UC_MCONTEXT + 8 * 16);
    let fl = get(&f, UC_MCONTEXT + 8 * 17);
    let writable = urun_cpu::state::fl::USER_WRITABLE;
    cpu.flags.set((cpu.flags.get() & !writable) | (fl & writable));
    let fpstate = get(&f, UC_MCONTEXT + 8 * 23);
    if fpstate != 0 {
        let Some(fx) = guest::read::<[u8; FPSTATE_SIZE as usize]>(&task.p.mem, fpstate) else {
            return Err(Stop::Signaled(libc::SIGSEGV));
        };
        if !cpu.fxrstor_image(&fx) {
            return Err(Stop::Signaled(libc::SIGSEGV));
        }
        cpu.ymm_hi = ymm_from_frame(&task.p.mem, fpstate, &fx);
    } else {
        cpu.x87 = Default::default();
        cpu.mxcsr = 0x1f80;
        cpu.ymm_hi = [0; 16];
    }
    let rax = cpu.gpr[reg::RAX] as i64;
    let mask = get(&f, UC_SIGMASK);
    set_mask(task, mask);
    Ok(rax)
}

// ----- the syscalls -----

pub(crate) fn rt_sigaction(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let (sig, act, old, size) = (a[0] as usize, a[1], a[2], a[3]);
    let mem = &task.p.mem;
    if size != 8 || sig == 0 || sig > 64 {
        return Ok(-(libc::EINVAL as i64));
    }
    if act != 0 && (sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize) {
        return Ok(-(libc::EINVAL as i64));
    }
    if (act != 0 && !mem.check(act, 32, Prot::READ)) || (old != 0 && !mem.check(old, 32, Prot::WRITE)) {
        return Ok(-(libc::EFAULT as i64));
    }
    // The kernel's struct sigaction {handler, flags, restorer, mask}.
    let new: Option<[u64; 4]> = if act != 0 {
        let Some(new) = guest::read(mem, act) else { return Ok(-(libc::EFAULT as i64)) };
        Some(new)
    } else {
        None
    };
    let mut acts = lock(&task.p.sigactions);
    let prev = acts[sig];
    if let Some(new) = new {
        acts[sig] = [new[0], new[1], new[2], new[3] & !UNBLOCKABLE];
        apply_host_disposition(sig as i32, &new);
    }
    if old != 0 && !guest::write(mem, old, &prev) {
        return Ok(-(libc::EFAULT as i64));
    }
    Ok(0)
}

pub(crate) fn rt_sigprocmask(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let (how, set, old, size) = (a[0] as i32, a[1], a[2], a[3]);
    if size != 8 {
        return Ok(-(libc::EINVAL as i64));
    }
    let mem = &task.p.mem;
    if (set != 0 && !mem.check(set, 8, Prot::READ)) || (old != 0 && !mem.check(old, 8, Prot::WRITE)) {
        return Ok(-(libc::EFAULT as i64));
    }
    let cur = task.t.sigmask;
    if set != 0 {
        let Some(s) = guest::read::<u64>(mem, set) else { return Ok(-(libc::EFAULT as i64)) };
        let new = match how {
            libc::SIG_BLOCK => cur | s,
            libc::SIG_UNBLOCK => cur & !s,
            libc::SIG_SETMASK => s,
            _ => return Ok(-(libc::EINVAL as i64)),
        };
        set_mask(task, new);
    }
    if old != 0 && !guest::write(&task.p.mem, old, &cur) {
        return Ok(-(libc::EFAULT as i64));
    }
    Ok(0)
}

pub(crate) fn sigaltstack(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let (ss, old) = (a[0], a[1]);
    let mem = &task.p.mem;
    if (ss != 0 && !mem.check(ss, 24, Prot::READ)) || (old != 0 && !mem.check(old, 24, Prot::WRITE)) {
        return Ok(-(libc::EFAULT as i64));
    }
    let sp = task.cpu.gpr[reg::RSP];
    let onstack = on_altstack(task, sp);
    if old != 0 {
        let [s, flags, size] = task.t.altstack;
        let state = if flags as i32 & libc::SS_DISABLE != 0 {
            libc::SS_DISABLE as u64
        } else if onstack {
            libc::SS_ONSTACK as u64
        } else {
            0
        };
        // stack_t.
        if !guest::write(mem, old, &[s, state, size]) {
            return Ok(-(libc::EFAULT as i64));
        }
    }
    if ss != 0 {
        if onstack {
            return Ok(-(libc::EPERM as i64));
        }
        let Some(v) = guest::read::<[u64; 3]>(mem, ss) else { return Ok(-(libc::EFAULT as i64)) };
        let flags = v[1] as i32;
        if flags & !(libc::SS_DISABLE | libc::SS_ONSTACK | (1 << 31)) != 0 {
            return Ok(-(libc::EINVAL as i64));
        }
        if flags & libc::SS_DISABLE != 0 {
            task.t.altstack = [0, libc::SS_DISABLE as u64, 0];
        } else if v[2] < 2048 {
            return Ok(-(libc::ENOMEM as i64));
        } else {
            task.t.altstack = [v[0], 0, v[2]];
        }
    }
    Ok(0)
}

/// rt_sigsuspend: wait with `mask` in place until a signal is caught; the
/// handler runs with that mask, and the old one comes back when it returns
/// (the frame saves it).
pub(crate) fn rt_sigsuspend(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    if a[1] != 8 {
        return Ok(-(libc::EINVAL as i64));
    }
    let Some(mask) = guest::read::<u64>(&task.p.mem, a[0]) else { return Ok(-(libc::EFAULT as i64)) };
    let mask = mask & !UNBLOCKABLE;
    let old = task.t.sigmask;
    task.t.saved_mask = Some(old);
    task.t.sigmask = mask;
    loop {
        if task.t.signals.bits.load(Ordering::Acquire) & !mask != 0 {
            return Ok(-(libc::EINTR as i64));
        }
        // SAFETY: rt_sigsuspend with our own 8-byte mask; it returns when a
        // host handler has run.
        unsafe { libc::syscall(libc::SYS_rt_sigsuspend, &mask as *const u64, 8usize) };
    }
}

pub(crate) fn rt_sigreturn(task: &mut Task<'_>, _a: &[u64; 6]) -> Result<i64, Stop> {
    sigreturn(task)
}
