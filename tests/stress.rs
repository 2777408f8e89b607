//! Stress: the thread and signal test programs under heavier or repeated
//! load, compared with native runs. Slow (about a minute), so ignored by
//! default; run it with
//!
//!     cargo test --release --test stress -- --ignored
//!
//! Two tests, each over the four build flavours of testbins/:
//! - `threads_contention`: `threads contend 32 ITERS`, 32 threads hammering
//!   one mutex and `__atomic` counters (lock add, xadd, cmpxchg loops) for
//!   several seconds under urun; the totals must equal the native run's.
//! - `sigstorm_repeated`: `sigstorm` (2000 SIGUSR1s via kill and pthread_kill
//!   while 8 workers compute checksums) ten times in a row; every run must
//!   match the native output and status.
//!
//! Knobs (environment):
//!   URUN_STRESS_ITERS=n      iterations per thread for threads_contention (default 200000)
//!   URUN_STRESS_REPEAT=n     sigstorm runs per flavour (default 10)
//!   URUN_E2E_TIMEOUT=secs    per-run timeout (default 120)
//!   URUN_E2E_BINARY=path     run this instead of the urun cargo built

mod common;

use common::{ensure_testbins, run, show, urun, Outcome};
use std::path::Path;
use std::process::Command;

const FLAVOURS: &[&str] = &["glibc", "glibc-pie", "musl", "dynamic"];

fn env_num(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn command(program: &Path, args: &[String], under_urun: bool) -> Command {
    let mut cmd = if under_urun {
        let mut c = Command::new(urun());
        c.arg("--engine").arg(common::engine_under_test()).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .current_dir(program.parent().expect("testbins/out"))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    cmd
}

/// Differences between a native and a urun outcome (empty if none).
fn differences(native: &Outcome, urun: &Outcome) -> Vec<String> {
    let mut p = Vec::new();
    if native.timed_out || native.spawn_error.is_some() || native.code != Some(0) {
        p.push(format!("native run did not exit 0: {}", native.status_text()));
    }
    if urun.timed_out {
        p.push(format!("urun hung: killed after {:.0} s", urun.elapsed.as_secs_f64()));
    } else if (native.code, native.signal) != (urun.code, urun.signal) {
        p.push(format!("status: native {}, urun {}", native.status_text(), urun.status_text()));
    }
    if native.stdout != urun.stdout {
        p.push(format!(
            "stdout differs:\n        native: {}\n        urun:   {}",
            show(&native.stdout, 600),
            show(&urun.stdout, 600)
        ));
    }
    if native.stderr != urun.stderr {
        p.push(format!(
            "stderr differs:\n        native: {}\n        urun:   {}",
            show(&native.stderr, 300),
            show(&urun.stderr, 300)
        ));
    }
    p
}

fn report(failures: &[String]) {
    if !failures.is_empty() {
        panic!("{} failure(s):\n{}", failures.len(), failures.join("\n"));
    }
}

#[test]
#[ignore = "slow: cargo test --release --test stress -- --ignored"]
fn threads_contention() {
    let out = ensure_testbins();
    let timeout = common::env_secs("URUN_E2E_TIMEOUT", 120);
    let iters = env_num("URUN_STRESS_ITERS", 200000);
    let args: Vec<String> = vec!["contend".into(), "32".into(), iters.to_string()];
    let mut failures = Vec::new();
    for flavour in FLAVOURS {
        let program = out.join(format!("threads.{flavour}"));
        let native = run(&mut command(&program, &args, false), b"", timeout);
        let urun = run(&mut command(&program, &args, true), b"", timeout);
        let problems = differences(&native, &urun);
        println!(
            "{} threads.{flavour} contend 32 {iters} (native {:.3} s, urun {:.3} s)",
            if problems.is_empty() { "PASS" } else { "FAIL" },
            native.elapsed.as_secs_f64(),
            urun.elapsed.as_secs_f64()
        );
        for p in problems {
            failures.push(format!("threads.{flavour}: {p}"));
        }
    }
    report(&failures);
}

#[test]
#[ignore = "slow: cargo test --release --test stress -- --ignored"]
fn sigstorm_repeated() {
    let out = ensure_testbins();
    let timeout = common::env_secs("URUN_E2E_TIMEOUT", 120);
    let repeat = env_num("URUN_STRESS_REPEAT", 10);
    let mut failures = Vec::new();
    for flavour in FLAVOURS {
        let program = out.join(format!("sigstorm.{flavour}"));
        let native = run(&mut command(&program, &[], false), b"", timeout);
        let mut passed = 0;
        for i in 1..=repeat {
            let urun = run(&mut command(&program, &[], true), b"", timeout);
            let problems = differences(&native, &urun);
            if problems.is_empty() {
                passed += 1;
            } else {
                println!("FAIL sigstorm.{flavour} run {i}/{repeat} (urun {:.3} s)", urun.elapsed.as_secs_f64());
                for p in problems {
                    failures.push(format!("sigstorm.{flavour} run {i}: {p}"));
                }
            }
        }
        println!("sigstorm.{flavour}: {passed}/{repeat} runs match native");
    }
    report(&failures);
}
