//! Windows PE32+ programs under urun, with the host as the oracle: each
//! program in testbins/win is built for Linux with gcc and for Windows
//! with mingw (msvcrt, and ucrt as NAME-ucrt.exe); the Linux build runs
//! natively, each .exe under urun
//! (interpreter and KVM engines), and stdout, stderr and exit status must
//! match, with CR LF read as LF (the C runtime's text mode).
//!
//! Needs `x86_64-w64-mingw32-gcc` (Debian gcc-mingw-w64-x86-64, which
//! scripts/test installs); without it every case says SKIPPED.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(60);
const ENGINES: [&str; 2] = ["interp", "kvm"];

/// testbins/out/win, or None (after saying SKIPPED) when the .exe files
/// could not be built here.
fn win_out(test: &str) -> Option<PathBuf> {
    let dir = ensure_testbins().join("win");
    if dir.join("hello.exe").is_file() {
        return Some(dir);
    }
    report_skip(test, "x86_64-w64-mingw32-gcc is not installed (Debian: gcc-mingw-w64-x86-64)");
    None
}

fn crlf_to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        if c == b'\r' && b.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(c);
    }
    out
}

fn run_urun(engine: &str, exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut cmd = Command::new(urun());
    cmd.arg("--engine").arg(engine).arg(exe).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, b"", TIMEOUT)
}

/// Run `name` natively (Linux build) and under urun (Windows build) on
/// every engine; fail with every difference.
fn same_as_linux(test: &str, name: &str, args: &[&str], env: &[(&str, &str)]) {
    same_as_linux_builds(test, name, &[format!("{name}.exe"), format!("{name}-ucrt.exe")], args, env);
}

/// `same_as_linux` for the Windows builds `exes` of `name`.
fn same_as_linux_builds(test: &str, name: &str, exes: &[String], args: &[&str], env: &[(&str, &str)]) {
    let Some(dir) = win_out(test) else { return };
    let mut native = Command::new(dir.join(format!("{name}.linux")));
    native.args(args);
    for (k, v) in env {
        native.env(k, v);
    }
    let native = run(&mut native, b"", TIMEOUT);
    assert!(native.spawn_error.is_none(), "{name}.linux: {}", native.status_text());
    let mut failures = Vec::new();
    for engine in ENGINES {
        if !engine_or_skip(engine, &format!("{test} under --engine {engine}")) {
            continue;
        }
        for exe in exes {
            let mut got = run_urun(engine, &dir.join(exe), args, env);
            got.stdout = crlf_to_lf(&got.stdout);
            got.stderr = crlf_to_lf(&got.stderr);
            for p in compare_runs(&native, &got) {
                failures.push(format!("{exe} --engine {engine}: {p}"));
            }
        }
    }
    assert!(failures.is_empty(), "{name} {args:?}:\n  {}", failures.join("\n  "));
}

#[test]
fn hello() {
    same_as_linux("pe::hello", "hello", &[], &[]);
}

#[test]
fn argv_numbers_heap_env_stderr_status() {
    let env = [("URUN_PE_TEST", "value with spaces")];
    same_as_linux("pe::argv_numbers_heap_env_stderr_status", "cbasic", &[], &env);
    same_as_linux(
        "pe::argv_numbers_heap_env_stderr_status",
        "cbasic",
        &["one", "two words", "", "quote\"d", r"back\slash\"],
        &env,
    );
}

#[test]
fn file_io_on_a_temp_file() {
    let tmp = TempDir::new("pe-fileio");
    let path = tmp.path().join("data.txt");
    same_as_linux("pe::file_io_on_a_temp_file", "fileio", &[path.to_str().unwrap_or("/tmp/urun-pe-fileio")], &[]);
}

/// Threads: a counter under a recursive critical section, exit codes,
/// producer/consumer over an SRW lock and condition variables, `_Thread_local`
/// and TlsAlloc per thread behind an event (pthreads in the Linux build).
#[test]
fn threads_locks_condition_variables_tls() {
    same_as_linux("pe::threads_locks_condition_variables_tls", "threads", &[], &[]);
}

/// The process ends with main's status while other threads still run (one
/// spinning, one sleeping); and when main ends only itself (ExitThread,
/// pthread_exit), a worker's exit() still ends the process.
#[test]
fn exit_with_threads_still_running() {
    same_as_linux("pe::exit_with_threads_still_running", "threads", &["exit", "3"], &[]);
    same_as_linux("pe::exit_with_threads_still_running", "threads", &["exitthread"], &[]);
}

/// std::thread, std::mutex, std::condition_variable, thread_local and
/// std::async: mingw's posix-threads g++ (winpthreads, static) against g++.
#[test]
fn cxx_std_threads() {
    let test = "pe::cxx_std_threads";
    let Some(dir) = win_out(test) else { return };
    if !dir.join("cxxthreads.exe").is_file() {
        report_skip(test, "x86_64-w64-mingw32-g++-posix is not installed (Debian: g++-mingw-w64-x86-64-posix)");
        return;
    }
    same_as_linux_builds(test, "cxxthreads", &["cxxthreads.exe".into()], &[], &[]);
}

/// Events, mutexes, semaphores, waits on bad handles and with timeouts,
/// suspended threads, InitOnce, WaitOnAddress, TLS and FLS callbacks, the
/// image's static TLS, SLists: results as Windows documents them
/// (testbins/win/synch.expected; no Linux twin to compare with).
#[test]
fn synchronisation_as_windows_documents() {
    let Some(dir) = win_out("pe::synchronisation_as_windows_documents") else { return };
    let want = std::fs::read_to_string(repo_root().join("testbins/win/synch.expected")).expect("synch.expected");
    for engine in ENGINES {
        if !engine_or_skip(engine, &format!("pe::synchronisation_as_windows_documents under {engine}")) {
            continue;
        }
        let o = run_urun(engine, &dir.join("synch.exe"), &[], &[]);
        let got = String::from_utf8_lossy(&crlf_to_lf(&o.stdout)).into_owned();
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines().chain(std::iter::repeat("<missing>")))
            .filter(|(w, g)| w != g)
            .map(|(w, g)| format!("want {w:?}, got {g:?}"))
            .collect();
        assert!(
            diff.is_empty() && o.code == Some(0),
            "{engine}: {} {}\n  {}",
            o.status_text(),
            o.stderr_text(),
            diff.join("\n  ")
        );
    }
}

/// GetProcAddress finds what urun implements and gives NULL with
/// ERROR_PROC_NOT_FOUND for the rest; calling an unimplemented import
/// names it and ends the program with status 126. (urun's own behaviour:
/// no Windows here to compare with.)
#[test]
fn get_proc_address_and_unimplemented_stubs() {
    let Some(dir) = win_out("pe::get_proc_address_and_unimplemented_stubs") else { return };
    let exe = dir.join("probe.exe");
    let want = "kernel32 handle: yes\n\
                GetCurrentProcessId: found, same pid: 1\n\
                CreateFiberEx: NULL, error 127\n\
                exe handle is the image: 1\n";
    for engine in ENGINES {
        if !engine_or_skip(engine, &format!("pe::get_proc_address_and_unimplemented_stubs under {engine}")) {
            continue;
        }
        let o = run_urun(engine, &exe, &[], &[]);
        assert_eq!(String::from_utf8_lossy(&crlf_to_lf(&o.stdout)), want, "{engine}: {}", o.stderr_text());
        assert_eq!(o.code, Some(7), "{engine}: {}", o.status_text());
        let o = run_urun(engine, &exe, &["call"], &[]);
        assert_eq!(String::from_utf8_lossy(&crlf_to_lf(&o.stdout)), want, "{engine}");
        assert_eq!(o.code, Some(126), "{engine}: {}", o.status_text());
        let err = o.stderr_text();
        assert!(err.starts_with("urun: unimplemented: KERNEL32.dll!Beep (called from probe.exe+0x"), "{engine}: {err}");
        // A length no memory has: an access violation (exit code
        // 0xc0000005, the host sees 5), not urun running out of memory.
        let o = run_urun(engine, &exe, &["badptr"], &[]);
        let err = o.stderr_text();
        assert_eq!(o.code, Some(5), "{engine}: {} {err}", o.status_text());
        assert!(err.contains("msvcrt!memset was given a bad pointer") && err.lines().count() == 1, "{engine}: {err}");
    }
}

/// `--list-imports` marks each import as implemented or missing.
#[test]
fn list_imports_marks_what_is_implemented() {
    let Some(dir) = win_out("pe::list_imports_marks_what_is_implemented") else { return };
    let mut cmd = Command::new(urun());
    cmd.arg("--list-imports").arg(dir.join("probe.exe"));
    let o = run(&mut cmd, b"", TIMEOUT);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.code, Some(0), "{}", o.stderr_text());
    for want in [
        "KERNEL32.dll!Beep missing\n",
        "KERNEL32.dll!GetProcAddress implemented\n",
        "msvcrt.dll!_initterm implemented\n",
    ] {
        assert!(out.contains(want), "lacks {want:?}:\n{out}");
    }
    assert!(out.lines().last().is_some_and(|l| l.ends_with(" imports implemented")), "{out}");
}

/// `--strace` shows API calls with their arguments and results.
#[test]
fn strace_shows_api_calls() {
    let Some(dir) = win_out("pe::strace_shows_api_calls") else { return };
    let o = run_urun("interp", &dir.join("hello.exe"), &[], &[("URUN_STRACE", "true")]);
    let err = o.stderr_text();
    assert_eq!(o.code, Some(0), "{err}");
    for want in ["msvcrt!__getmainargs(0x", "msvcrt!exit(0) = ?", "+++ exited with 0 +++"] {
        assert!(err.contains(want), "--strace output lacks {want:?}:\n{err}");
    }
}

/// Read `exe`, let `patch` change it, write it into `dir` as `name`.
fn variant(dir: &Path, exe: &Path, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(exe).expect("read the .exe");
    patch(&mut b);
    let p = dir.join(name);
    std::fs::write(&p, b).expect("write a variant");
    p
}

fn pe_offset(b: &[u8]) -> usize {
    u32::from_le_bytes([b[0x3c], b[0x3d], b[0x3e], b[0x3f]]) as usize
}

/// Truncated, foreign, .NET and DLL-less variants of a real .exe: one
/// clear line, status 126, no panic, no hang.
#[test]
fn bad_pe_files_get_one_clear_line() {
    let Some(dir) = win_out("pe::bad_pe_files_get_one_clear_line") else { return };
    let hello = dir.join("hello.exe");
    let tmp = TempDir::new("pe-bad");
    let t = tmp.path();
    let len = std::fs::metadata(&hello).map(|m| m.len() as usize).unwrap_or(0);
    let mut cases: Vec<(PathBuf, &str)> = vec![
        (variant(t, &hello, "short.exe", |b| b.truncate(0x50)), "truncated PE"),
        (variant(t, &hello, "headers.exe", |b| b.truncate(0x200)), "truncated PE"),
        (variant(t, &hello, "half.exe", |b| b.truncate(len / 2)), "truncated PE"),
        (
            variant(t, &hello, "i386.exe", |b| {
                let pe = pe_offset(b);
                b[pe + 4..pe + 6].copy_from_slice(&0x14cu16.to_le_bytes());
            }),
            "32-bit Windows program (i386 PE32)",
        ),
        (
            variant(t, &hello, "arm64.exe", |b| {
                let pe = pe_offset(b);
                b[pe + 4..pe + 6].copy_from_slice(&0xaa64u16.to_le_bytes());
            }),
            "Windows program for ARM64",
        ),
        (
            variant(t, &hello, "dotnet.exe", |b| {
                let dir14 = pe_offset(b) + 24 + 112 + 14 * 8;
                b[dir14..dir14 + 8].copy_from_slice(&[0, 0x20, 0, 0, 0x48, 0, 0, 0]);
            }),
            ".NET assembly",
        ),
    ];
    let rename = |b: &mut Vec<u8>, to: &[u8; 12]| {
        let at = b.windows(12).position(|w| w == b"KERNEL32.dll").expect("hello.exe imports KERNEL32.dll");
        b[at..at + 12].copy_from_slice(to);
    };
    cases.push((variant(t, &hello, "nodll.exe", |b| rename(b, b"NOSUCH32.dll")), "needs NOSUCH32.dll, which urun"));
    let beside = tmp.path().join("beside");
    std::fs::create_dir_all(&beside).expect("mkdir");
    std::fs::write(beside.join("mylib032.dll"), b"MZ").expect("write a DLL");
    cases.push((
        variant(&beside, &hello, "usesdll.exe", |b| rename(b, b"mylib032.dll")),
        "needs mylib032.dll, a DLL next to the program",
    ));
    let mut failures = Vec::new();
    for (path, want) in &cases {
        let o = run_urun("interp", path, &[], &[]);
        let err = o.stderr_text();
        let lines: Vec<&str> = err.lines().collect();
        if o.code != Some(126) || lines.len() != 1 || !err.starts_with("urun: ") || !err.contains(want) {
            failures.push(format!(
                "{}: {} {:?} (want one line containing {want:?})",
                path.display(),
                o.status_text(),
                err
            ));
        }
    }
    assert!(failures.is_empty(), "\n  {}", failures.join("\n  "));
}

/// The JIT engine keeps GS for itself: a PE program is refused there with
/// one line, before it runs.
#[test]
fn the_jit_refuses_pe_programs_clearly() {
    let Some(dir) = win_out("pe::the_jit_refuses_pe_programs_clearly") else { return };
    let o = run_urun("jit", &dir.join("hello.exe"), &[], &[]);
    let err = o.stderr_text();
    assert!(o.stdout.is_empty(), "ran under the JIT: {}", String::from_utf8_lossy(&o.stdout));
    assert!(matches!(o.code, Some(125) | Some(126)), "{}: {err}", o.status_text());
    assert_eq!(err.lines().count(), 1, "{err}");
}
