//! Rust panics that unwind, natively and under urun: the test crate
//! `testbins/rust-unwind` (`#[should_panic]`, `catch_unwind`, a panic in a
//! spawned thread seen by `join`, scoped threads) is built with the host's
//! cargo (`cargo test --no-run`, offline, into `testbins/out/rust-unwind`),
//! then its test binary runs natively and under urun, and `cargo test` runs
//! once natively and once with urun as cargo's runner
//! (`CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER`), as a user would, with
//! its tests passing and, with the failing one included, failing.
//! The harness output (timing and thread ids filtered out), stderr and the
//! exit status must be the same. The engine is `URUN_TEST_ENGINE` (interp
//! unless set). (C++ exceptions are e2e cases: testbins/cxx_except.cc.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{compare_runs, engine_under_test, env_secs, repo_root, run, show, urun, Outcome};

const RUNNER_VAR: &str = "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER";

fn timeout() -> Duration {
    env_secs("URUN_E2E_TIMEOUT", 120)
}

fn crate_dir() -> PathBuf {
    repo_root().join("testbins").join("rust-unwind")
}

fn target_dir() -> PathBuf {
    repo_root().join("testbins").join("out").join("rust-unwind")
}

/// The cargo running this test (cargo sets CARGO for the tests it runs), or
/// the one on PATH.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// A cargo command for the test crate (`args` go to cargo, `harness` to the
/// test binary), with an environment free of what the outer cargo set for
/// this test (a runner, a target directory, flags).
fn cargo_cmd(args: &[&str], harness: &[&str]) -> Command {
    let mut c = Command::new(cargo());
    c.args(args)
        .arg("--offline")
        .arg("--manifest-path")
        .arg(crate_dir().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir())
        .env_remove(RUNNER_VAR)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUST_BACKTRACE", "0")
        .current_dir(crate_dir());
    if !harness.is_empty() {
        c.arg("--").args(harness);
    }
    c
}

/// Builds the test binary once and returns its path.
fn test_binary() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BIN.get_or_init(|| {
        let o = run(&mut cargo_cmd(&["test", "--no-run", "--message-format=json"], &[]), b"", Duration::from_secs(600));
        if o.code != Some(0) {
            return Err(format!(
                "`cargo test --no-run` for testbins/rust-unwind failed ({}):\n{}",
                o.status_text(),
                show(&o.stderr, 2000)
            ));
        }
        // One JSON object a line; the test executable is the artifact with
        // "test":true and an "executable" path (no JSON parser needed).
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines()
            .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"test\":true"))
            .find_map(|l| {
                let start = l.find("\"executable\":\"")? + "\"executable\":\"".len();
                let end = start + l[start..].find('"')?;
                Some(PathBuf::from(&l[start..end]))
            })
            .ok_or_else(|| format!("no test executable in cargo's output:\n{}", show(&o.stdout, 2000)))
    });
    match r {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Drops what legitimately differs between two runs: test timings and the
/// thread ids in panic messages (`thread 'name' (1234) panicked`).
fn normalize(bytes: &[u8], sort: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("Finished ") && !l.trim_start().starts_with("Running "))
        .map(|l| {
            let l = match l.find("; finished in ") {
                Some(i) => format!("{}; finished in (time)", &l[..i]),
                None => l.to_string(),
            };
            match (l.find("' ("), l.find(") panicked")) {
                (Some(a), Some(b)) if a < b => format!("{}' (tid{}", &l[..a], &l[b..]),
                _ => l,
            }
        })
        .collect();
    if sort {
        lines.sort();
    }
    lines.join("\n").into_bytes()
}

fn normalized(o: &Outcome, sort: bool) -> Outcome {
    Outcome {
        stdout: normalize(&o.stdout, sort),
        stderr: normalize(&o.stderr, sort),
        code: o.code,
        signal: o.signal,
        timed_out: o.timed_out,
        spawn_error: o.spawn_error.clone(),
        elapsed: o.elapsed,
    }
}

/// Runs the test binary natively and under urun with `args` and `env`;
/// `expect` is the native exit code.
fn compare_binary(args: &[&str], env: &[(&str, &str)], sort: bool, expect: i32) {
    let bin = test_binary();
    let native = run(Command::new(bin).args(args).envs(env.iter().copied()), b"", timeout());
    assert_eq!(
        native.code,
        Some(expect),
        "native run of the test binary: {}\n{}",
        native.status_text(),
        native.stderr_text()
    );
    let under = run(
        Command::new(urun()).arg("--engine").arg(engine_under_test()).arg(bin).args(args).envs(env.iter().copied()),
        b"",
        timeout(),
    );
    let problems = compare_runs(&normalized(&native, sort), &normalized(&under, sort));
    assert!(
        problems.is_empty(),
        "{} {args:?} under urun --engine {} differs from the native run:\n  {}\nnative stdout:\n{}",
        bin.display(),
        engine_under_test(),
        problems.join("\n  "),
        show(&native.stdout, 3000)
    );
}

#[test]
fn passing_tests_one_thread() {
    compare_binary(&["--test-threads=1"], &[], false, 0);
}

/// The harness's own threads, several panicking at once: the order of the
/// result lines varies, so lines are compared sorted.
#[test]
fn passing_tests_parallel() {
    compare_binary(&["--test-threads=4"], &[], true, 0);
}

/// A failing test: exit status 101 and a symbolized backtrace, which walks
/// the stack with the same unwinder and reads the binary's debug info.
#[test]
fn failing_test_with_backtrace() {
    compare_binary(&["--ignored", "--test-threads=1"], &[("RUST_BACKTRACE", "1")], false, 101);
}

/// `cargo test` with urun as the runner, as a user would set it up.
#[test]
fn cargo_test_with_urun_as_runner() {
    test_binary(); // built (and any build failure reported) first
    let (args, harness) = (["test"], ["--test-threads=1"]);
    let native = run(&mut cargo_cmd(&args, &harness), b"", timeout());
    assert_eq!(native.code, Some(0), "native cargo test: {}\n{}", native.status_text(), native.stderr_text());
    let runner = format!("{} --engine {}", urun(), engine_under_test());
    let under = run(cargo_cmd(&args, &harness).env(RUNNER_VAR, &runner), b"", timeout());
    // cargo's own stderr (progress lines) is not the program's: compare the
    // harness's stdout and the status.
    let (n, u) = (normalize(&native.stdout, false), normalize(&under.stdout, false));
    assert!(
        n == u && native.code == under.code && native.signal == under.signal,
        "cargo test with runner `{runner}`: {} natively, {} under urun\nnative stdout:\n{}\nurun stdout:\n{}\nurun stderr:\n{}",
        native.status_text(),
        under.status_text(),
        show(&n, 3000),
        show(&u, 3000),
        show(&under.stderr, 3000)
    );
    assert!(
        String::from_utf8_lossy(&n).contains("should panic ... ok"),
        "no should_panic test ran:\n{}",
        show(&n, 3000)
    );
}

/// A failing test fails `cargo test` with urun as the runner exactly as
/// natively: cargo's status (101), the same harness output.
#[test]
fn cargo_test_failing_run_fails_as_natively() {
    test_binary();
    let (args, harness) = (["test"], ["--include-ignored", "--test-threads=1"]);
    let native = run(&mut cargo_cmd(&args, &harness), b"", timeout());
    assert_eq!(native.code, Some(101), "native cargo test: {}\n{}", native.status_text(), native.stderr_text());
    let runner = format!("{} --engine {}", urun(), engine_under_test());
    let under = run(cargo_cmd(&args, &harness).env(RUNNER_VAR, &runner), b"", timeout());
    let (n, u) = (normalize(&native.stdout, false), normalize(&under.stdout, false));
    assert!(
        n == u && native.code == under.code && native.signal == under.signal,
        "failing cargo test with runner `{runner}`: {} natively, {} under urun\nnative stdout:\n{}\nurun stdout:\n{}",
        native.status_text(),
        under.status_text(),
        show(&n, 3000),
        show(&u, 3000)
    );
    assert!(
        String::from_utf8_lossy(&n).contains("fails_on_purpose ... FAILED"),
        "the failing test did not run:\n{}",
        show(&n, 3000)
    );
}
