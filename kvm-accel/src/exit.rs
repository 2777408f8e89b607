//! Turning a raw vCPU exit into an `Exit`: pure functions over plain data
//! (the port an `out` wrote to, the words the CPU pushed on the IST stack,
//! CR2), unit-tested without `/dev/kvm` and without a guest.
//!
//! Running the vCPU lives in `lib.rs`; this module only decides what an
//! exit means (Firecracker's "separate run from handle the exit").

use urun_cpu::{FaultKind, PageFaultKind};

/// Port the SYSCALL entry stub writes to.
pub const PORT_SYSCALL: u16 = 0x10;
/// Port the start-up probe writes to when it has run.
pub const PORT_PROBE: u16 = 0x11;
/// Exception stubs write to `PORT_EXCEPTION + vector` (vectors 0..=31).
pub const PORT_EXCEPTION: u16 = 0x80;

/// How a KVM_RUN ended, as plain data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawExit {
    /// An `out` to `port`, executed at `rip` (anywhere: the guest runs at
    /// CPL0 and may execute `out` itself; `from_stub` says whether it
    /// came from urun's stub page).
    Out { port: u16, from_stub: bool },
    /// `hlt` executed by the guest.
    Hlt,
    /// KVM_RUN returned EINTR (a host signal) or KVM_EXIT_INTR.
    Interrupted,
    /// Triple fault or another state the VM cannot continue from.
    Shutdown,
    /// Anything else, described for the log.
    Other(&'static str),
}

/// The words an exception pushed on the IST stack, read from its top:
/// `top[5]` is SS (the highest word), then RSP, RFLAGS, CS, RIP and, for
/// vectors with an error code, the error code in `top[0]`.
pub type IstTop = [u64; 6];

/// What the engine does with an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A guest SYSCALL: resume point and RFLAGS come from RCX and R11,
    /// which the caller already has; `rsp` is the guest's RSP when the
    /// exit went through an exception frame (see `decode`).
    Syscall { rsp: Option<u64> },
    /// A guest exception at `pc`, with the guest's RSP and RFLAGS as the
    /// CPU saved them.
    Fault { pc: u64, rsp: u64, rflags: u64, kind: FaultKind },
    /// Stop and let the personality look at pending signals.
    Interrupted,
    /// The probe ran to its end.
    ProbeDone,
    /// The VM is in a state urun cannot explain; the message says why.
    Broken(String),
}

/// Does exception `vector` push an error code?
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Page-fault error code bits.
const PF_PRESENT: u64 = 1;
const PF_WRITE: u64 = 2;

/// The `FaultKind` of exception `vector` with `error` code and `cr2`.
/// `fpe_code` is the `fp_exception` code for #MF/#XM, worked out by the caller from
/// the x87 status word or MXCSR.
pub fn fault_kind(vector: u8, error: u64, cr2: u64, fpe_code: i32) -> FaultKind {
    match vector {
        0 => FaultKind::Divide,
        1 => FaultKind::DebugTrap,
        3 => FaultKind::Breakpoint,
        6 => FaultKind::InvalidOpcode { what: "invalid opcode (#UD in the VM)".into() },
        14 => FaultKind::Page {
            addr: cr2,
            write: error & PF_WRITE != 0,
            kind: if error & PF_PRESENT != 0 { PageFaultKind::Protection } else { PageFaultKind::NotMapped },
        },
        16 | 19 => FaultKind::FloatingPoint { code: fpe_code },
        // #GP, #SS, #NP, #AC, #DF and whatever else: the kernel gives
        // SIGSEGV (SIGBUS for #AC; not reachable at CPL0).
        _ => FaultKind::GeneralProtection,
    }
}

/// Decode one exit. `top` is the IST stack's top words (only read for
/// exception exits); `cr2` is read only for #PF (not for the #PF at
/// LSTAR); `lstar` is the SYSCALL entry address.
///
/// Under the nested `kvm_pvm` of this project's machines a SYSCALL from
/// CPL3 reaches LSTAR still at CPL3, so fetching the supervisor-only entry
/// stub raises #PF (instruction fetch) at LSTAR: that #PF is a SYSCALL.
/// A guest `jmp` to LSTAR looks the same and is treated as a SYSCALL too;
/// it gains nothing by it.
pub fn decode(raw: RawExit, top: &IstTop, cr2: u64, fpe_code: i32, lstar: u64) -> Action {
    const PF_FETCH: u64 = 0x10;
    match raw {
        RawExit::Out { port: PORT_SYSCALL, from_stub: true } => Action::Syscall { rsp: None },
        RawExit::Out { port, from_stub: true }
            if port == PORT_EXCEPTION + 14 && top[1] == lstar && top[0] & PF_FETCH != 0 =>
        {
            Action::Syscall { rsp: Some(top[4]) }
        }
        RawExit::Out { port: PORT_PROBE, from_stub: true } => Action::ProbeDone,
        RawExit::Out { port, from_stub: true } if (PORT_EXCEPTION..PORT_EXCEPTION + 32).contains(&port) => {
            let vector = (port - PORT_EXCEPTION) as u8;
            // The CPU's five words are always the highest five; an error
            // code, when the vector has one, sits just below them.
            let error = if has_error_code(vector) { top[0] } else { 0 };
            let (rip, rflags, rsp) = (top[1], top[3], top[4]);
            Action::Fault { pc: rip, rsp, rflags, kind: fault_kind(vector, error, cr2, fpe_code) }
        }
        // The guest executed `out` or `hlt` itself: privileged in user
        // mode, so natively a #GP (SIGSEGV).
        RawExit::Out { .. } | RawExit::Hlt => Action::Broken(String::new()),
        RawExit::Interrupted => Action::Interrupted,
        RawExit::Shutdown => Action::Broken("the VM shut down (triple fault)".into()),
        RawExit::Other(what) => Action::Broken(format!("unexpected vCPU exit: {what}")),
    }
}

/// The `fp_exception` code for an unmasked x87 exception in status word `fsw`
/// under control word `fcw`, as Linux's `fpu__exception_code` picks it.
pub fn x87_fpe_code(fcw: u16, fsw: u16) -> i32 {
    fpe_from(fsw & !fcw & 0x3f, fsw & 0x40 != 0)
}

/// The `fp_exception` code for an SIMD exception with `mxcsr`.
pub fn simd_fpe_code(mxcsr: u32) -> i32 {
    let unmasked = (mxcsr & 0x3f) & !((mxcsr >> 7) & 0x3f);
    fpe_from(unmasked as u16, false)
}

fn fpe_from(err: u16, stack_fault: bool) -> i32 {
    // A stack fault is reported as invalid, as Linux does.
    urun_cpu::engine::fpe_code(if stack_fault { err | 1 } else { err })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(port: u16) -> RawExit {
        RawExit::Out { port, from_stub: true }
    }

    /// Frame words as the CPU pushes them, lowest first.
    fn top(err: Option<u64>, rip: u64, rflags: u64, rsp: u64) -> IstTop {
        match err {
            Some(e) => [e, rip, 0x08, rflags, rsp, 0x10],
            None => [0xdead, rip, 0x08, rflags, rsp, 0x10],
        }
    }

    const LSTAR: u64 = 0x7f00_0000_0000;

    fn check(raw: RawExit, t: IstTop, cr2: u64, expect: Action) {
        assert_eq!(decode(raw, &t, cr2, 0, LSTAR), expect, "{raw:?}");
    }

    #[test]
    fn exits_table() {
        let none = [0; 6];
        check(out(PORT_SYSCALL), none, 0, Action::Syscall { rsp: None });
        // kvm_pvm: SYSCALL reaches LSTAR at CPL3 and faults there.
        check(
            out(PORT_EXCEPTION + 14),
            top(Some(0x15), LSTAR, 0x10002, 0x7ffc_0000),
            LSTAR,
            Action::Syscall { rsp: Some(0x7ffc_0000) },
        );
        check(out(PORT_PROBE), none, 0, Action::ProbeDone);
        check(RawExit::Interrupted, none, 0, Action::Interrupted);
        check(
            out(PORT_EXCEPTION + 14),
            top(Some(PF_WRITE | PF_PRESENT), 0x401000, 0x246, 0x7ff0),
            0x1234,
            Action::Fault {
                pc: 0x401000,
                rsp: 0x7ff0,
                rflags: 0x246,
                kind: FaultKind::Page { addr: 0x1234, write: true, kind: PageFaultKind::Protection },
            },
        );
        check(
            out(PORT_EXCEPTION + 14),
            top(Some(0), 0x401000, 0x202, 0x7ff0),
            0,
            Action::Fault {
                pc: 0x401000,
                rsp: 0x7ff0,
                rflags: 0x202,
                kind: FaultKind::Page { addr: 0, write: false, kind: PageFaultKind::NotMapped },
            },
        );
        check(
            out(PORT_EXCEPTION),
            top(None, 0x401005, 0x202, 0x7ff0),
            0,
            Action::Fault { pc: 0x401005, rsp: 0x7ff0, rflags: 0x202, kind: FaultKind::Divide },
        );
        check(
            out(PORT_EXCEPTION + 3),
            top(None, 0x401001, 0x202, 0x7ff0),
            0,
            Action::Fault { pc: 0x401001, rsp: 0x7ff0, rflags: 0x202, kind: FaultKind::Breakpoint },
        );
        check(
            out(PORT_EXCEPTION + 13),
            top(Some(0), 0x401002, 0x202, 0x7ff0),
            0,
            Action::Fault { pc: 0x401002, rsp: 0x7ff0, rflags: 0x202, kind: FaultKind::GeneralProtection },
        );
        assert!(matches!(
            decode(out(PORT_EXCEPTION + 6), &top(None, 1, 2, 3), 0, 0, LSTAR),
            Action::Fault { pc: 1, kind: FaultKind::InvalidOpcode { .. }, .. }
        ));
        // An `out` the guest ran itself, or a `hlt`, is not one of ours.
        assert_eq!(
            decode(RawExit::Out { port: 0x10, from_stub: false }, &none, 0, 0, LSTAR),
            Action::Broken(String::new())
        );
        assert_eq!(decode(RawExit::Hlt, &none, 0, 0, LSTAR), Action::Broken(String::new()));
        assert!(matches!(decode(RawExit::Shutdown, &none, 0, 0, LSTAR), Action::Broken(m) if !m.is_empty()));
    }

    #[test]
    fn fpe_codes() {
        // Divide by zero unmasked in MXCSR (ZM clear).
        assert_eq!(simd_fpe_code(0x1f80 & !(1 << 9) | 4), 3);
        // Invalid masked: no code.
        assert_eq!(simd_fpe_code(0x1f80 | 1), 0);
        // x87 divide by zero with ZM clear.
        assert_eq!(x87_fpe_code(0x037f & !4, 4), 3);
        assert_eq!(x87_fpe_code(0x037f & !1, 0x41), 7);
    }
}
