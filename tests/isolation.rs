//! A guest cannot read or write urun's memory, neither directly nor
//! through a syscall buffer, under every engine: `testbins/isolation.c`
//! finds memory that is urun's (mapped on the host, absent from the
//! guest's /proc/self/maps) and touches it. Expected: SIGSEGV for the
//! direct accesses, EFAULT for write(2) from it and read(2) into it.
//! The KVM case is reported skipped where /dev/kvm does not open; where it
//! opens, urun's VM must work.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{engine_or_skip, ensure_testbins, run, show, urun};

const EXPECTED: &str = "direct read: SIGSEGV\ndirect write: SIGSEGV\nwrite from it: EFAULT\nread into it: EFAULT\n";

fn check_engine(engine: &str) {
    if !engine_or_skip(engine, &format!("isolation under {engine}")) {
        return;
    }
    let out = ensure_testbins();
    let o =
        run(Command::new(urun()).arg("--engine").arg(engine).arg(out.join("isolation")), b"", Duration::from_secs(60));
    assert_eq!(
        (String::from_utf8_lossy(&o.stdout).as_ref(), o.code),
        (EXPECTED, Some(0)),
        "engine {engine}: stderr {}",
        show(&o.stderr, 400)
    );
}

#[test]
fn interpreter_keeps_urun_memory_out_of_reach() {
    check_engine("interp");
}

#[test]
fn kvm_keeps_urun_memory_out_of_reach() {
    check_engine("kvm");
}
