//! Go programs built for Windows under urun, with the host as the oracle:
//! testbins/go-win is built with `GOOS=linux` and `GOOS=windows` from the
//! same source; the Linux build runs natively, the .exe under urun on every
//! engine, and stdout, stderr and exit status must match. The program runs
//! goroutines over channels with a WaitGroup and a mutex, recovers a panic,
//! a nil-pointer dereference, an index out of range and an integer divide
//! by zero (runtime errors, i.e. faults through Go's vectored handler),
//! sleeps, ticks, writes, reads and removes a file, and exits with a status.
//!
//! Needs `go` (Debian golang-go, which scripts/test installs); without it
//! every case says SKIPPED.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(120);
const ENGINES: [&str; 3] = ["interp", "kvm", "jit"];

/// The two builds (Linux, Windows) of testbins/go-win, built once per test
/// process; Err says why they could not be.
fn builds() -> &'static Result<(PathBuf, PathBuf), String> {
    static B: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    B.get_or_init(|| {
        let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("go").is_file()));
        if !found {
            return Err("go is not installed (Debian golang-go; scripts/test installs it)".into());
        }
        // Go's caches and the builds live beside cargo's output (testbins/out
        // holds only what e2e.rs runs).
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
        let out = target.join("go-win");
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let mut paths = Vec::new();
        for (goos, name) in [("linux", "gowin"), ("windows", "gowin.exe")] {
            let dst = out.join(name);
            let o = Command::new("go")
                .args(["build", "-o"])
                .arg(&dst)
                .arg(".")
                .current_dir(repo_root().join("testbins/go-win"))
                .env("GOOS", goos)
                .env("GOARCH", "amd64")
                .env("CGO_ENABLED", "0")
                .env("GOCACHE", target.join("go-cache"))
                .env("GOPATH", target.join("go-path"))
                .env("GOFLAGS", "-mod=mod")
                .env("GOPROXY", "off")
                .env("GOTOOLCHAIN", "local")
                .output()
                .map_err(|e| format!("go build: {e}"))?;
            // go is there: a failed build is the test's failure, not a skip.
            assert!(o.status.success(), "GOOS={goos} go build: {}", String::from_utf8_lossy(&o.stderr));
            paths.push(dst);
        }
        Ok((paths[0].clone(), paths[1].clone()))
    })
}

fn run_with(cmd: &mut Command, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, b"", TIMEOUT)
}

/// Run the Linux build natively and the Windows build under urun on every
/// engine with `args` and `env`; fail with every difference.
fn same_as_linux(test: &str, args: &[&str], env: &[(&str, &str)]) {
    let (linux, exe) = match builds() {
        Ok(b) => b,
        Err(why) => {
            report_skip(test, why);
            return;
        }
    };
    let native = run_with(&mut Command::new(linux), args, env);
    assert!(native.spawn_error.is_none(), "gowin: {}", native.status_text());
    let mut failures = Vec::new();
    for engine in ENGINES {
        if !engine_or_skip(engine, &format!("{test} under --engine {engine}")) {
            continue;
        }
        let mut cmd = Command::new(urun());
        cmd.arg("--engine").arg(engine).arg(exe as &Path);
        let got = run_with(&mut cmd, args, env);
        for p in compare_runs(&native, &got) {
            failures.push(format!("gowin.exe --engine {engine}: {p}"));
        }
    }
    assert!(failures.is_empty(), "gowin {args:?}:\n  {}", failures.join("\n  "));
}

#[test]
fn goroutines_panics_nil_dereference_sleep_and_exit_status() {
    same_as_linux("pe_go::goroutines_panics_nil_dereference_sleep_and_exit_status", &["7", "a,b"], &[]);
}

#[test]
fn no_arguments_exit_zero() {
    same_as_linux("pe_go::no_arguments_exit_zero", &[], &[]);
}

#[test]
fn file_write_read_stat_remove() {
    let dir = std::env::temp_dir().join(format!("urun-pe-go-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    same_as_linux("pe_go::file_write_read_stat_remove", &["3"], &[("GOWIN_DIR", &d)]);
    let _ = std::fs::remove_dir_all(&dir);
}
