//! Code written by one thread is seen by the others (and by the writer):
//! `testbins/smc.c` in every build, natively and under urun with the
//! interpreter, the KVM engine and the JIT; stdout, stderr, exit status and
//! signal must match. Modes: a racing 4-byte store into an RWX page, a W^X
//! mprotect round trip, a rewrite by read(2) (the kernel writes the code),
//! one thread with code and data in one page, and code run read-only then
//! rewritten once its page is writable again (still executable).
//!
//! Under the KVM engine the guest's code runs on the CPU, which keeps
//! itself coherent; the interpreter relies on the code log in
//! `AddressSpace` (see ARCHITECTURE.md). The KVM cases are skipped, with a
//! `SKIPPED:` line on stderr, where /dev/kvm does not open.

mod common;

use std::time::Duration;

const MODES: &[&str] = &["rwx", "mprotect", "syscall", "single", "regain"];
const TIMEOUT: Duration = Duration::from_secs(120);

fn check_engine(engine: &str) {
    common::modes_match_native("smc", MODES, engine, TIMEOUT);
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
    if common::engine_or_skip("jit", "jit_sees_code_written_by_any_thread") {
        check_engine("jit");
    }
}
