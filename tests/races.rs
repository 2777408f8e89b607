//! Races between guest threads that used to crash urun: one thread touches
//! a page (loads, stores, locked read-modify-writes, bulk copies) while
//! another unmaps it (`testbins/munmap_race.c`, 100 rounds a run). Natively
//! the toucher's SIGSEGV handler runs every round; under urun it must too,
//! whether the page vanished before urun's check (a guest fault found by the
//! check) or between the check and the host access (a host fault that
//! `urun_cpu::hostfault` turns into the guest's). Ten runs of each build
//! flavour, each compared with a native run: all ten must match.
//!
//! `sigbus_file` touches a file mapping past the end of its file: a page
//! urun's check finds mapped but the host cannot back, so the guest's
//! SIGBUS (BUS_ADRERR) must come from a host fault too.
//!
//! `cleartid_race` clones threads whose CLONE_*_SETTID and CLEARTID stores
//! (urun's host code acting for the guest) hit a word another thread reads
//! and compare-exchanges: under `--engine jit --check` with every block
//! checked (`URUN_CHECK_RUNS=0`), a store landing between a checked block's
//! two runs was a false difference: the stores take an exclusive turn.
//! Three runs a flavour unless URUN_RACE_RUNS says (each ~2.5 s; every run
//! failed before the fix).
//!
//! Knobs (environment):
//!   URUN_RACE_RUNS=n         runs per flavour (default 10)
//!   URUN_TEST_ENGINE=name    the engine under test (default interp)
//!   URUN_E2E_TIMEOUT=secs    per-run timeout (default 60)
//!   URUN_E2E_BINARY=path     run this instead of the urun cargo built

mod common;

use common::{compare_runs, ensure_testbins, run, urun, Outcome};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const FLAVOURS: &[&str] = &["glibc", "glibc-pie", "musl", "dynamic"];

fn env_num(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn once(program: &Path, under_urun: bool, timeout: Duration) -> Outcome {
    let mut cmd = if under_urun {
        let mut c = Command::new(urun());
        c.arg("--engine").arg(common::engine_under_test()).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.current_dir(program.parent().expect("testbins/out")).env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
    run(&mut cmd, b"", timeout)
}

#[test]
fn munmap_under_a_reader_is_the_guests_sigsegv() {
    let out = ensure_testbins();
    let runs = env_num("URUN_RACE_RUNS", 10);
    let timeout = Duration::from_secs(env_num("URUN_E2E_TIMEOUT", 60));
    let mut failures = Vec::new();
    for flavour in FLAVOURS {
        let program = out.join(format!("munmap_race.{flavour}"));
        let mut matched = 0;
        for i in 1..=runs {
            let native = once(&program, false, timeout);
            assert!(
                native.code == Some(0) && !native.timed_out,
                "munmap_race.{flavour} natively: {} {}",
                native.status_text(),
                native.stderr_text()
            );
            let under = once(&program, true, timeout);
            let problems = compare_runs(&native, &under);
            if problems.is_empty() {
                matched += 1;
            } else {
                failures.push(format!("munmap_race.{flavour} run {i}: {}", problems.join("; ")));
            }
        }
        println!("munmap_race.{flavour}: {matched} of {runs} runs match the native run");
    }
    assert!(failures.is_empty(), "{} failing run(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_page_past_the_end_of_its_file_is_the_guests_sigbus() {
    let out = ensure_testbins();
    let timeout = Duration::from_secs(env_num("URUN_E2E_TIMEOUT", 60));
    let mut failures = Vec::new();
    for flavour in FLAVOURS {
        let program = out.join(format!("sigbus_file.{flavour}"));
        let native = once(&program, false, timeout);
        assert!(native.code == Some(0), "sigbus_file.{flavour} natively: {}", native.status_text());
        let under = once(&program, true, timeout);
        let problems = compare_runs(&native, &under);
        if !problems.is_empty() {
            failures.push(format!("sigbus_file.{flavour}: {}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn thread_id_stores_do_not_land_inside_a_checked_block() {
    if !common::engine_or_skip("jit", "thread_id_stores_do_not_land_inside_a_checked_block") {
        return;
    }
    let out = ensure_testbins();
    let runs = env_num("URUN_RACE_RUNS", 3);
    let timeout = Duration::from_secs(env_num("URUN_E2E_TIMEOUT", 60));
    let mut failures = Vec::new();
    for flavour in FLAVOURS {
        let program = out.join(format!("cleartid_race.{flavour}"));
        let native = once(&program, false, timeout);
        assert!(native.code == Some(0), "cleartid_race.{flavour} natively: {}", native.status_text());
        let mut matched = 0;
        for i in 1..=runs {
            let mut cmd = Command::new(urun());
            cmd.args(["--engine", "jit", "--check"]).arg(&program);
            cmd.current_dir(out.clone()).env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
            cmd.env("URUN_CHECK_RUNS", "0");
            let under = run(&mut cmd, b"", timeout);
            let problems = compare_runs(&native, &under);
            if problems.is_empty() {
                matched += 1;
            } else {
                failures.push(format!("cleartid_race.{flavour} run {i}: {}", problems.join("; ")));
            }
        }
        println!("cleartid_race.{flavour} under --check: {matched} of {runs} runs match the native run");
    }
    assert!(failures.is_empty(), "{} failing run(s):\n{}", failures.len(), failures.join("\n"));
}
