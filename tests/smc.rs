//! Code written by one thread is seen by the others (and by the writer):
//! `testbins/smc.c` in every build, natively and under urun with the
//! interpreter, the KVM engine and the JIT; stdout, stderr, exit status and
//! signal must match. Modes: a racing 4-byte store into an RWX page, a W^X
//! mprotect round trip, a rewrite by read(2) (the kernel writes the code),
//! and one thread with code and data in one page.
//!
//! Under the KVM engine the guest's code runs on the CPU, which keeps
//! itself coherent; the interpreter relies on the code log in
//! `AddressSpace` (see ARCHITECTURE.md). The KVM cases are skipped, with a
//! `SKIPPED:` line on stderr, where /dev/kvm does not open.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{compare_runs, ensure_testbins, run, Outcome};

const MODES: &[&str] = &["rwx", "mprotect", "syscall", "single"];
const BUILDS: &[&str] = &["glibc", "glibc-pie", "musl", "dynamic"];
const TIMEOUT: Duration = Duration::from_secs(120);

fn under(engine: &str, program: &std::path::Path, mode: &str) -> Outcome {
    run(Command::new(common::urun()).arg("--engine").arg(engine).arg(program).arg(mode), b"", TIMEOUT)
}

fn check_engine(engine: &str) {
    let out = ensure_testbins();
    let mut problems = Vec::new();
    for build in BUILDS {
        let program = out.join(format!("smc.{build}"));
        for mode in MODES {
            let native = run(Command::new(&program).arg(mode), b"", TIMEOUT);
            assert_eq!(
                (native.code, native.signal),
                (Some(0), None),
                "smc.{build} {mode} fails natively: {}",
                native.stderr_text()
            );
            let guest = under(engine, &program, mode);
            for p in compare_runs(&native, &guest) {
                problems.push(format!("smc.{build} {mode} under {engine}: {p}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn interpreter_sees_code_written_by_any_thread() {
    check_engine("interp");
}

#[test]
fn kvm_sees_code_written_by_any_thread() {
    if common::kvm_or_skip("kvm_sees_code_written_by_any_thread") {
        check_engine("kvm");
    }
}

/// The JIT engine: blocks from pages the guest may write check their guest
/// bytes before each run; kernel writes, munmap and mprotect reach it
/// through the code log (see ARCHITECTURE.md, the JIT engine).
#[test]
fn jit_sees_code_written_by_any_thread() {
    let probe = run(Command::new(common::urun()).args(["--engine", "jit", "/bin/true"]), b"", TIMEOUT);
    if probe.stderr_text().contains("no FSGSBASE") {
        use std::io::Write;
        let line = "SKIPPED: jit_sees_code_written_by_any_thread: the host has no FSGSBASE\n";
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    }
    check_engine("jit");
}
