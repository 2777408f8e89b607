//! A guest cannot read or write urun's memory, neither directly nor
//! through a syscall buffer nor through /proc/self/mem, under every
//! engine: `testbins/isolation.c` finds memory that is urun's (mapped on
//! the host, absent from the guest's /proc/self/maps) and touches it.
//! Expected: SIGSEGV for the direct accesses, EFAULT for write(2) from it
//! and read(2) into it, EIO for /proc/self/mem and
//! /proc/self/task/<tid>/mem at its address (as for unmapped memory), and
//! EFAULT for process_vm_readv/writev of it.
//! `testbins/procmem.c`, natively vs urun: the guest's own memory through
//! its memory file works as natively, `/proc/*/task/*/maps` is the guest's
//! view, and urun's KVM descriptors answer every call with EBADF.
//! The KVM cases are skipped (a `SKIPPED:` line on stderr) where /dev/kvm
//! does not open; where it opens, urun's VM must work.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{engine_or_skip, ensure_testbins, run, show, urun};

const EXPECTED: &str = "direct read: SIGSEGV\ndirect write: SIGSEGV\nwrite from it: EFAULT\nread into it: EFAULT\n\
                        mem read of it: EIO\nmem write to it: EIO\ntask mem read of it: EIO\ntask mem write to it: EIO\n\
                        received mem read of it: EIO\nreceived mem write to it: EIO\n\
                        process_vm_readv of it: EFAULT\nprocess_vm_writev to it: EFAULT\n";

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

/// `testbins/procmem.c` in every build, natively and under `engine`.
fn procmem_matches_native(engine: &str) {
    let out = ensure_testbins();
    let mut problems = Vec::new();
    for build in ["glibc", "glibc-pie", "musl", "dynamic"] {
        let program = out.join(format!("procmem.{build}"));
        let native = run(&mut Command::new(&program), b"", Duration::from_secs(60));
        assert_eq!((native.code, native.signal), (Some(0), None), "procmem.{build} fails natively");
        let guest = run(Command::new(urun()).arg("--engine").arg(engine).arg(&program), b"", Duration::from_secs(60));
        for p in common::compare_runs(&native, &guest) {
            problems.push(format!("procmem.{build} under {engine}: {p}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn interpreter_proc_mem_and_task_maps_match_native() {
    procmem_matches_native("interp");
}

#[test]
fn kvm_proc_mem_task_maps_and_descriptors_match_native() {
    if engine_or_skip("kvm", "kvm_proc_mem_task_maps_and_descriptors_match_native") {
        procmem_matches_native("kvm");
    }
}
