//! Rust panics in a program built for x86_64-pc-windows-msvc, under urun,
//! against the same source built for Linux by the same rustc
//! (testbins/rust-win/panics.rs; testbins/Makefile builds both, linking
//! the .exe with lld-link against import libraries and the small start-up
//! object of testbins/rust-win/crt.c). On Windows a panic is a C++
//! exception: _CxxThrowException, then __CxxFrameHandler3 runs every
//! frame's landing pads and catch_unwind's catch funclet. The Linux build
//! runs natively, the .exe under urun on every engine (interpreter, KVM,
//! JIT, JIT under --check); stdout, stderr and exit status must be equal.
//!
//! One difference is removed from stderr before comparing: the default
//! panic hook prints the OS thread id (`thread 'main' (12345) panicked
//! at`), gettid on Linux and GetCurrentThreadId on Windows, which differ
//! from run to run anyway. Both sides run with RUST_BACKTRACE=0: a
//! backtrace names different runtime frames on each system.
//!
//! Aborts (`std::process::abort`, a panic reaching an `extern "C"`
//! function) are SIGABRT on Linux and __fastfail on Windows: their case
//! compares stdout, and stderr without the backtrace the runtime forces.
//!
//! Needs the Rust target (`rustup target add x86_64-pc-windows-msvc`,
//! which scripts/test runs), clang, lld-link, llvm-dlltool and llvm-lib;
//! without them every case says SKIPPED with the reason.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(120);
const ENGINES: [&str; 4] = PE_ENGINES;
const TARGET: &str = "x86_64-pc-windows-msvc";

/// testbins/out/win when both builds are there, else None after saying
/// SKIPPED with what is missing. Every tool there but no programs is a
/// failure (the Makefile should have built them).
fn built(test: &str) -> Option<PathBuf> {
    let dir = ensure_testbins().join("win");
    if dir.join("rust_panics.exe").is_file() && dir.join("rust_panics.linux").is_file() {
        return Some(dir);
    }
    let libdir = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let has_std = libdir
        .and_then(|d| std::fs::read_dir(d).ok())
        .is_some_and(|mut es| es.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-"))));
    if !has_std {
        report_skip(
            test,
            &format!("the Rust target {TARGET} is not installed (`rustup target add {TARGET}`, which scripts/test runs, failed or was not run)"),
        );
        return None;
    }
    let on_path =
        |t: &str| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()));
    let missing: Vec<&str> =
        ["clang", "lld-link", "llvm-dlltool", "llvm-lib"].into_iter().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        report_skip(test, &format!("{} not installed (Debian: clang lld llvm)", missing.join(", ")));
        return None;
    }
    panic!("{TARGET} and the LLVM tools are installed but testbins/out/win/rust_panics.{{exe,linux}} were not built");
}

/// `thread 'NAME' (ID) panicked at` with the id taken out.
fn without_thread_ids(stderr: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(stderr);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let id = line
            .strip_prefix("thread '")
            .and_then(|rest| rest.find("' (").map(|q| q + "thread '".len() + 3))
            .and_then(|start| line[start..].find(") panicked at ").map(|len| (start, start + len)))
            .filter(|&(s, e)| e > s && line[s..e].bytes().all(|b| b.is_ascii_digit()));
        match id {
            Some((s, e)) => {
                out.push_str(&line[..s]);
                out.push_str("ID");
                out.push_str(&line[e..]);
            }
            None => out.push_str(line),
        }
    }
    out.into_bytes()
}

fn run_one(cmd: &mut Command, args: &[&str], timeout: Duration) -> Outcome {
    cmd.args(args).env("RUST_BACKTRACE", "0");
    let mut o = run(cmd, b"", timeout);
    o.stderr = without_thread_ids(&o.stderr);
    o
}

/// rust_panics.exe under urun on `engine` (an entry of `ENGINES`).
fn under(engine: &str, dir: &std::path::Path, args: &[&str], timeout: Duration) -> Outcome {
    let mut cmd = Command::new(urun());
    cmd.args(engine_args(engine)).arg(dir.join("rust_panics.exe"));
    run_one(&mut cmd, args, timeout)
}

/// The Linux build natively, the .exe under urun on every engine, with
/// `args`; native must end with `status`. Fails with every difference.
fn same_as_linux(test: &str, args: &[&str], status: i32) {
    let Some(dir) = built(test) else { return };
    let native = run_one(&mut Command::new(dir.join("rust_panics.linux")), args, TIMEOUT);
    assert_eq!(native.code, Some(status), "rust_panics.linux {args:?}: {}", native.status_text());
    let mut failures = Vec::new();
    for engine in ENGINES {
        if !usable(engine, &format!("{test} under {engine}")) {
            continue;
        }
        let t = if engine == "jit-check" { 3 * TIMEOUT } else { TIMEOUT };
        let got = under(engine, &dir, args, t);
        if let Some(e) = &got.spawn_error {
            failures.push(format!("{engine}: could not start urun: {e}"));
            continue;
        }
        if got.timed_out {
            failures.push(format!("{engine}: hung, killed after {:.0} s", got.elapsed.as_secs_f64()));
        }
        if (native.code, native.signal) != (got.code, got.signal) {
            failures.push(format!("{engine}: status: native {}, urun {}", native.status_text(), got.status_text()));
        }
        // Not compare_runs: "panicked" on stderr is this program's output.
        for d in
            [describe_diff("stdout", &native.stdout, &got.stdout), describe_diff("stderr", &native.stderr, &got.stderr)]
                .into_iter()
                .flatten()
        {
            failures.push(format!("{engine}: {d}"));
        }
    }
    assert!(failures.is_empty(), "rust_panics.exe {args:?}:\n  {}", failures.join("\n  "));
}

/// Every section (payloads, drop order through nested frames and 2000
/// frames, catch_unwind inside a drop while unwinding, threads joined with
/// Err, a poisoned mutex, scoped threads, eight threads panicking at once,
/// resume_unwind, Result and ?, a set_hook hook printing file:line:column)
/// and then an uncaught panic in main: the default hook's message, main's
/// guard dropped while unwinding, exit status 101.
#[test]
fn panics_caught_then_uncaught_in_main() {
    same_as_linux("pe_rust::panics_caught_then_uncaught_in_main", &[], 101);
}

/// The same sections, ending normally (exit status 0).
#[test]
fn panics_all_caught() {
    same_as_linux("pe_rust::panics_all_caught", &["caught"], 0);
}

/// A named and an unnamed thread panicking under the default hook (its
/// message and the one-time backtrace note), joined; exit status 3.
#[test]
fn thread_panics_under_the_default_hook() {
    same_as_linux("pe_rust::thread_panics_under_the_default_hook", &["thread-default"], 3);
}

/// stderr of an aborting run with what legitimately differs taken out:
/// thread ids, the backtrace a second panic forces (Linux resolves its
/// frames from DWARF; Windows std would need dbghelp.dll, which urun does
/// not provide, so it prints addresses only), and the backslashes of
/// std's own source paths (the Windows std was built on Windows).
fn abridged(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(&without_thread_ids(stderr)).into_owned();
    let mut out = String::new();
    let mut in_backtrace = false;
    for line in text.split_inclusive('\n') {
        if line == "stack backtrace:\n" {
            in_backtrace = true;
            continue;
        }
        if in_backtrace && line.starts_with(' ') {
            continue;
        }
        in_backtrace = false;
        if line.starts_with("thread '") && line.contains(" panicked at /rustc/") {
            out.push_str(&line.replace('\\', "/"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Aborts: std::process::abort, and a panic reaching an `extern "C"`
/// function (the runtime reports it, then aborts; catch_unwind does not
/// see it). Natively SIGABRT; on Windows std aborts with __fastfail, which
/// ends the process with STATUS_STACK_BUFFER_OVERRUN (a Linux parent sees
/// 0xc0000409 & 0xff = 9) after urun's one line naming it. stdout equal,
/// stderr equal but for `abridged` and urun's last line.
#[test]
fn aborts_end_in_fast_fail() {
    let test = "pe_rust::aborts_end_in_fast_fail";
    let Some(dir) = built(test) else { return };
    let mut failures = Vec::new();
    for mode in ["abort", "extern-c"] {
        let native = run_one(&mut Command::new(dir.join("rust_panics.linux")), &[mode], TIMEOUT);
        assert_eq!(native.signal, Some(libc::SIGABRT), "{mode}: {}", native.status_text());
        let want_err = abridged(&native.stderr);
        for engine in ENGINES {
            if !usable(engine, &format!("{test} under {engine}")) {
                continue;
            }
            let got = under(engine, &dir, &[mode], 3 * TIMEOUT);
            if got.code != Some(9) {
                failures.push(format!("{mode} {engine}: {}, want exit 9: {}", got.status_text(), got.stderr_text()));
                continue;
            }
            if let Some(d) = describe_diff("stdout", &native.stdout, &got.stdout) {
                failures.push(format!("{mode} {engine}: {d}"));
            }
            let err = abridged(&got.stderr);
            let (rest, last) = err.trim_end_matches('\n').rsplit_once('\n').unwrap_or(("", err.trim_end_matches('\n')));
            let rest = if rest.is_empty() { String::new() } else { format!("{rest}\n") };
            if !(last.starts_with("urun: rust_panics.exe: __fastfail(FAST_FAIL_FATAL_APP_EXIT) at rust_panics.exe+0x")
                && last.ends_with(": status 0xc0000409"))
            {
                failures.push(format!("{mode} {engine}: last line of stderr {last:?}"));
            }
            if let Some(d) = describe_diff("stderr", want_err.as_bytes(), rest.as_bytes()) {
                failures.push(format!("{mode} {engine}: {d}"));
            }
        }
    }
    assert!(failures.is_empty(), "rust_panics.exe aborts:\n  {}", failures.join("\n  "));
}

#[test]
fn thread_ids_are_taken_out_of_panic_messages_only() {
    let got = without_thread_ids(
        b"thread 'main' (123) panicked at a.rs:1:2:\nthread 'x' (1a) panicked at b\n(7) panicked at \n",
    );
    assert_eq!(
        String::from_utf8_lossy(&got),
        "thread 'main' (ID) panicked at a.rs:1:2:\nthread 'x' (1a) panicked at b\n(7) panicked at \n"
    );
}

#[test]
fn abridged_drops_backtraces_and_std_backslashes_only() {
    let got = abridged(
        b"thread 'main' (5) panicked at /rustc/x/library\\core\\src\\p.rs:1:2:\nm\nstack backtrace:\n   0: f\n  at g\nafter\\x\n",
    );
    assert_eq!(got, "thread 'main' (ID) panicked at /rustc/x/library/core/src/p.rs:1:2:\nm\nafter\\x\n");
}
