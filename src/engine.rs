//! Which engine runs the guest. `--engine auto` (the default) decides in
//! [`auto_engine`], the one place that says what the JIT serves today; an
//! explicit `--engine interp|kvm|jit` is obeyed as given (and fails with
//! one line where that engine cannot run).

use clap::ValueEnum;

/// `--engine` as given (or `URUN_ENGINE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum EngineArg {
    /// The JIT where it can run this program here, otherwise the
    /// interpreter (with one line on stderr when the host is the reason).
    Auto,
    /// The interpreter: portable, precise, the reference.
    Interp,
    /// Native execution in a bare KVM virtual machine (needs /dev/kvm).
    Kvm,
    /// Guest code copied into a code cache and run natively (x86-64 hosts
    /// with FSGSBASE; Linux and Windows programs).
    Jit,
}

impl EngineArg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EngineArg::Auto => "auto",
            EngineArg::Interp => "interp",
            EngineArg::Kvm => "kvm",
            EngineArg::Jit => "jit",
        }
    }

    /// The engine itself, unless it is for [`auto_engine`] to choose.
    pub(crate) fn explicit(self) -> Option<EngineKind> {
        match self {
            EngineArg::Auto => None,
            EngineArg::Interp => Some(EngineKind::Interp),
            EngineArg::Kvm => Some(EngineKind::Kvm),
            EngineArg::Jit => Some(EngineKind::Jit),
        }
    }
}

/// The engine that runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EngineKind {
    Interp,
    Kvm,
    Jit,
}

impl EngineKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EngineKind::Interp => "interp",
            EngineKind::Kvm => "kvm",
            EngineKind::Jit => "jit",
        }
    }
}

/// What kind of program the guest is (what the engine must serve).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgramKind {
    /// An x86-64 Linux ELF program.
    Linux,
    /// A Windows PE32+ program.
    Windows,
}

/// Why the JIT cannot run on this host.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JitUnusable {
    #[error(transparent)]
    Host(#[from] urun_cpu::jit::JitError),
    /// The test hook [`PRETEND_NO_FSGSBASE`].
    #[error("no FSGSBASE (pretended: {PRETEND_NO_FSGSBASE} is set)")]
    Pretended,
}

/// Test hook: set (to anything but empty or `0`), urun behaves as on a
/// host without FSGSBASE, where the JIT cannot run: `--engine auto` falls
/// back to the interpreter and `--engine jit` fails.
pub(crate) const PRETEND_NO_FSGSBASE: &str = "URUN_NO_FSGSBASE";

/// Can the JIT run on this host? (FSGSBASE usable from user code.)
fn jit_probe() -> Result<(), JitUnusable> {
    if std::env::var_os(PRETEND_NO_FSGSBASE).is_some_and(|v| !v.is_empty() && v != "0") {
        return Err(JitUnusable::Pretended);
    }
    urun_cpu::jit::probe()?;
    Ok(())
}

/// What the host offers the engines `auto` chooses among.
pub(crate) struct Host {
    /// `Err` with the reason where the JIT cannot run here.
    pub(crate) jit: Result<(), JitUnusable>,
}

impl Host {
    pub(crate) fn probe() -> Host {
        Host { jit: jit_probe() }
    }
}

/// `--engine auto`: the engine for `program` on `host`, and the reason to
/// say on stderr (one line) when it is not the JIT because of the host.
/// `None` means say nothing: the choice is the JIT, or the interpreter for
/// a reason that is urun's, not the host's.
///
/// What the JIT serves today, to change here as it grows:
/// - Linux programs: the JIT where the host has FSGSBASE.
/// - Windows programs: as Linux ones (the JIT keeps the guest's GS, its
///   TEB, in host GS).
/// - Everything else is the same under every engine and needs no case
///   here: `-g` (the gdb stub wraps any engine), `--strace` (the personality
///   prints), `--cpu` (the JIT honours the model), fork and vfork children
///   (they keep the process's engine), execve'd programs (urun runs again
///   with `--engine auto`, or `interp` where the host was the reason, so
///   the line is said once: see [`for_children`]).
pub(crate) fn auto_engine(program: ProgramKind, host: &Host) -> (EngineKind, Option<String>) {
    match program {
        ProgramKind::Windows | ProgramKind::Linux => match &host.jit {
            Ok(()) => (EngineKind::Jit, None),
            Err(why) => (EngineKind::Interp, Some(why.to_string())),
        },
    }
}

/// The `--engine` an execve'd program's urun gets: the same choice, except
/// that `auto` on a host where the JIT cannot run becomes `interp` (the
/// host does not change, and the reason was said once already).
pub(crate) fn for_children(arg: EngineArg, host: &Host) -> &'static str {
    match (arg, &host.jit) {
        (EngineArg::Auto, Err(_)) => EngineArg::Interp.name(),
        (arg, _) => arg.name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(jit: bool) -> Host {
        Host { jit: if jit { Ok(()) } else { Err(JitUnusable::Pretended) } }
    }

    #[test]
    fn auto_picks_the_jit_for_linux_where_it_runs() {
        let cases = [
            (ProgramKind::Linux, true, EngineKind::Jit, false),
            (ProgramKind::Linux, false, EngineKind::Interp, true),
            (ProgramKind::Windows, true, EngineKind::Jit, false),
            (ProgramKind::Windows, false, EngineKind::Interp, true),
        ];
        for (program, jit, want, says) in cases {
            let (got, why) = auto_engine(program, &host(jit));
            assert_eq!((got, why.is_some()), (want, says), "{program:?}, jit usable: {jit}");
        }
    }

    #[test]
    fn children_keep_the_choice_and_the_fallback_is_said_once() {
        assert_eq!(for_children(EngineArg::Auto, &host(true)), "auto");
        assert_eq!(for_children(EngineArg::Auto, &host(false)), "interp");
        for arg in [EngineArg::Interp, EngineArg::Kvm, EngineArg::Jit] {
            assert_eq!(for_children(arg, &host(false)), arg.name());
            assert_eq!(for_children(arg, &host(true)), arg.name());
        }
    }

    #[test]
    fn the_fallback_reason_names_fsgsbase() {
        let (_, why) = auto_engine(ProgramKind::Linux, &host(false));
        assert!(why.is_some_and(|w| w.contains("no FSGSBASE")));
    }
}
