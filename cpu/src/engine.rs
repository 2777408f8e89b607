//! The boundary between engines and personalities: an engine runs guest code
//! until something needs the guest OS, and says why with an `Exit`.

use crate::state::CpuState;

/// Why a page access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFaultKind {
    /// Nothing is mapped there (SEGV_MAPERR).
    NotMapped,
    /// Mapped, but the access is not allowed (SEGV_ACCERR).
    Protection,
    /// Mapped, but nothing backs the page (a file mapping past the end of
    /// its file): SIGBUS with BUS_ADRERR.
    Bus,
}

/// A synchronous guest exception, kept as data until the personality turns
/// it into a signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// #PF: `addr` is the faulting address.
    Page { addr: u64, write: bool, kind: PageFaultKind },
    /// #DE: divide by zero or quotient overflow.
    Divide,
    /// #UD: an instruction urun does not run, or an invalid one.
    /// `what` names it for the log.
    InvalidOpcode { what: String },
    /// #BP: INT3.
    Breakpoint,
    /// #DB raised by INT1 (ICEBP), a trap: `rip` points past it.
    DebugTrap,
    /// #GP: a privileged instruction, a misaligned SSE access, a
    /// non-canonical address.
    GeneralProtection,
    /// #MF (x87) or #XM (SSE) with an unmasked exception; `code` says
    /// which (one of `fp_exception`'s values: OS-neutral, each personality
    /// maps it to its own code).
    FloatingPoint { code: i32 },
}

/// The floating-point exception a `FaultKind::FloatingPoint` reports. The
/// numbering is urun's own, OS-neutral: each personality maps it (Linux to
/// an FPE_* si_code, Win32 to a STATUS_FLOAT_* code). The values happen to
/// be Linux's FPE_* numbers, which keeps the engines' tests readable.
pub mod fp_exception {
    pub const DIVIDE_BY_ZERO: i32 = 3;
    pub const OVERFLOW: i32 = 4;
    /// Underflow, or a denormal operand.
    pub const UNDERFLOW: i32 = 5;
    /// Precision (inexact result).
    pub const INEXACT: i32 = 6;
    /// Invalid operation (x87 stack faults included).
    pub const INVALID: i32 = 7;
}

/// The `fp_exception` code for unmasked floating-point exceptions `bits`
/// (x87 FSW / SSE MXCSR flag order: IE, DE, ZE, OE, UE, PE), in the
/// priority kernels use: invalid (stack faults included), divide by zero,
/// overflow, denormal or underflow, precision. 0 when none is set.
pub fn fpe_code(bits: u16) -> i32 {
    use fp_exception::*;
    if bits & 0x01 != 0 {
        INVALID
    } else if bits & 0x04 != 0 {
        DIVIDE_BY_ZERO
    } else if bits & 0x08 != 0 {
        OVERFLOW
    } else if bits & 0x12 != 0 {
        UNDERFLOW
    } else if bits & 0x20 != 0 {
        INEXACT
    } else {
        0
    }
}

/// A fault at guest instruction `pc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub pc: u64,
    pub kind: FaultKind,
}

/// Why an engine stopped running guest code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest executed SYSCALL. `rip` already points past it; RCX and
    /// R11 hold what the hardware puts there.
    Syscall,
    /// The guest raised an exception. `rip` points at the faulting
    /// instruction (trap-like faults such as INT3 point past it).
    Fault(Fault),
    /// The engine was asked to stop (for example to deliver a signal).
    Interrupted,
}

/// Why an engine could not be made or could not go on. The engine only
/// reports; the personality decides what the guest sees (`clone` fails
/// with EAGAIN for `Exhausted`) and whether the process ends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot run on this host at all (for example no usable
    /// /dev/kvm).
    #[error("{0}")]
    Unavailable(String),
    /// The engine works, but has no room for one more guest thread now
    /// (all vCPUs in use, descriptors or memory exhausted).
    #[error("{0}")]
    Exhausted(String),
    /// The engine failed while running the guest, through no fault of the
    /// guest's code (a VM that cannot map the guest's memory, an ioctl
    /// that failed).
    #[error("{0}")]
    Failed(String),
}

/// Asks an engine to stop soon: set from any thread or from a signal
/// handler, where only atomics may be used.
///
/// Besides its flag, an engine may register one byte that `raise` also
/// sets to 1, for hardware that checks a byte of its own on entry (KVM's
/// `immediate_exit`): a request raised between the engine's last look at
/// the flag and its entry into guest code is then not missed.
#[derive(Debug, Default)]
pub struct Interrupt {
    flag: std::sync::atomic::AtomicBool,
    kick: std::sync::atomic::AtomicPtr<std::sync::atomic::AtomicU8>,
}

impl Interrupt {
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Interrupt::default())
    }

    /// Ask the engine to stop (async-signal-safe: two atomic stores).
    pub fn raise(&self) {
        use std::sync::atomic::Ordering;
        self.flag.store(true, Ordering::Release);
        let kick = self.kick.load(Ordering::Acquire);
        if !kick.is_null() {
            // SAFETY: a registered byte stays valid until it is
            // unregistered (see `set_kick`).
            unsafe { (*kick).store(1, Ordering::Release) };
        }
    }

    /// Is a request pending? (Leaves it pending.)
    pub fn is_raised(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Take a pending request: true once per `raise`.
    pub fn take(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.flag.load(Ordering::Relaxed) && self.flag.swap(false, Ordering::AcqRel)
    }

    /// Register the byte `raise` sets (null: none).
    ///
    /// # Safety
    /// `kick` must stay valid for atomic byte writes until it is replaced
    /// by another call (the engine unregisters it before the memory goes).
    pub unsafe fn set_kick(&self, kick: *const std::sync::atomic::AtomicU8) {
        self.kick.store(kick as *mut _, std::sync::atomic::Ordering::Release);
    }
}

/// A CPU engine: runs one guest thread's code.
pub trait Engine {
    /// Run guest code from `cpu.rip` until an exit. An error is the
    /// engine's own failure, never the guest's (a guest fault is an
    /// `Exit::Fault`).
    fn run(&mut self, cpu: &mut CpuState) -> Result<Exit, EngineError>;

    /// Make `cpu`'s x87/MXCSR/XMM part current. After `Exit::Syscall` an
    /// engine may leave it in hardware, where reading it costs (KVM: an
    /// ioctl), and `cpu`'s copy is then stale; after every other exit
    /// `cpu` is complete. The personality calls this before anything that
    /// reads or writes that part (a signal frame, `rt_sigreturn`, a clone
    /// or fork that copies the state): in practice before every syscall it
    /// does not pass straight to the host, and before delivering signals.
    /// Engines that keep `cpu` complete need not implement it.
    fn fetch_fp(&mut self, _cpu: &mut CpuState) -> Result<(), EngineError> {
        Ok(())
    }

    /// A short name for logs and `--engine`.
    fn name(&self) -> &'static str;

    /// The request that, when raised (from any thread or a signal
    /// handler), makes `run` return `Exit::Interrupted` soon.
    fn interrupt_handle(&self) -> std::sync::Arc<Interrupt>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    #[test]
    fn interrupt_sets_flag_and_registered_byte() {
        let i = Interrupt::new();
        assert!(!i.take());
        i.raise();
        assert!(i.is_raised());
        assert!(i.take());
        assert!(!i.take(), "taken once");
        let byte = AtomicU8::new(0);
        // SAFETY: `byte` outlives its registration (unregistered below).
        unsafe { i.set_kick(&byte) };
        i.raise();
        assert_eq!(byte.load(Ordering::Acquire), 1);
        assert!(i.take());
        // SAFETY: unregistering.
        unsafe { i.set_kick(std::ptr::null()) };
        byte.store(0, Ordering::Relaxed);
        i.raise();
        assert_eq!(byte.load(Ordering::Relaxed), 0);
    }
}
