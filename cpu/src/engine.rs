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
    /// #MF (x87) or #XM (SSE) with an unmasked exception; `code` is the
    /// Linux si_code (FPE_*).
    FloatingPoint { code: i32 },
}

/// The Linux si_code (FPE_*) for unmasked floating-point exceptions
/// `bits` (x87 FSW / SSE MXCSR flag order: IE, DE, ZE, OE, UE, PE), in the
/// kernel's priority: invalid (stack faults included), divide by zero,
/// overflow, denormal or underflow, precision. 0 when none is set.
pub fn fpe_code(bits: u16) -> i32 {
    const FPE_FLTDIV: i32 = 3;
    const FPE_FLTOVF: i32 = 4;
    const FPE_FLTUND: i32 = 5;
    const FPE_FLTRES: i32 = 6;
    const FPE_FLTINV: i32 = 7;
    if bits & 0x01 != 0 {
        FPE_FLTINV
    } else if bits & 0x04 != 0 {
        FPE_FLTDIV
    } else if bits & 0x08 != 0 {
        FPE_FLTOVF
    } else if bits & 0x12 != 0 {
        FPE_FLTUND
    } else if bits & 0x20 != 0 {
        FPE_FLTRES
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

/// A CPU engine: runs one guest thread's code.
pub trait Engine {
    /// Run guest code from `cpu.rip` until an exit.
    fn run(&mut self, cpu: &mut CpuState) -> Exit;

    /// A short name for logs and `--engine`.
    fn name(&self) -> &'static str;

    /// A flag that, when set (from any thread or a signal handler), makes
    /// `run` return `Exit::Interrupted` soon.
    fn interrupt_handle(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool>;
}
