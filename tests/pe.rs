//! Windows PE32+ programs under urun, with the host as the oracle: each
//! program in testbins/win is built for Linux with gcc and for Windows
//! with mingw (msvcrt, and ucrt as NAME-ucrt.exe); the Linux build runs
//! natively, each .exe under urun
//! (interpreter, KVM and JIT engines, and the JIT under --check), and stdout, stderr and exit status must
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
const ENGINES: [&str; 4] = PE_ENGINES;

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
    cmd.args(engine_args(engine)).arg(exe).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Under --check, a block being checked runs alone (an exclusive turn):
    // slower with threads, on a loaded machine.
    run(&mut cmd, b"", if engine == "jit-check" { 5 * TIMEOUT } else { TIMEOUT })
}

/// Run `name` natively (Linux build) and under urun (Windows build) on
/// every engine; fail with every difference.
fn same_as_linux(test: &str, name: &str, args: &[&str], env: &[(&str, &str)]) {
    same_as_linux_builds(test, name, &[format!("{name}.exe"), format!("{name}-ucrt.exe")], args, env);
}

/// `same_as_linux` over the Windows builds `exes` of `name`.
fn same_as_linux_builds(test: &str, name: &str, exes: &[String], args: &[&str], env: &[(&str, &str)]) {
    let Some(dir) = win_out(test) else { return };
    same_as_linux_in(&dir, test, name, exes, args, env);
}

/// `same_as_linux_builds` with the programs in `dir`.
fn same_as_linux_in(dir: &Path, test: &str, name: &str, exes: &[String], args: &[&str], env: &[(&str, &str)]) {
    let mut native = Command::new(dir.join(format!("{name}.linux")));
    native.args(args);
    for (k, v) in env {
        native.env(k, v);
    }
    let native = run(&mut native, b"", TIMEOUT);
    assert!(native.spawn_error.is_none(), "{name}.linux: {}", native.status_text());
    let mut failures = Vec::new();
    for engine in ENGINES {
        if !usable(engine, &format!("{test} under --engine {engine}")) {
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

/// The C++ build (mingw g++ -static): libgcc unwinds with SEH, through
/// RaiseException, RtlUnwindEx, RtlVirtualUnwind, RtlLookupFunctionEntry
/// and RtlCaptureContext. Needs x86_64-w64-mingw32-g++.
fn cxx_out(test: &str) -> Option<PathBuf> {
    let dir = win_out(test)?;
    if dir.join("cxx_eh.exe").is_file() {
        return Some(dir);
    }
    report_skip(test, "x86_64-w64-mingw32-g++ is not installed (Debian: g++-mingw-w64-x86-64)");
    None
}

/// C++ exceptions of several types thrown and caught, rethrown, nested,
/// across frames and a function pointer, with destructors printing as
/// the stack unwinds: the same output as the g++ Linux build.
#[test]
fn cxx_exceptions_and_raii() {
    if cxx_out("pe::cxx_exceptions_and_raii").is_none() {
        return;
    }
    same_as_linux_builds("pe::cxx_exceptions_and_raii", "cxx_eh", &["cxx_eh.exe".into()], &[], &[]);
}

/// An exception nobody catches: std::terminate prints the same line on
/// both systems and aborts. Linux's abort is SIGABRT; msvcrt's abort
/// exits with status 3 (Windows' documented abort status), and prints
/// its own line after the terminate message. Compared: stdout, the
/// terminate line, and each system's abort status.
#[test]
fn cxx_uncaught_exception_terminates() {
    let Some(dir) = cxx_out("pe::cxx_uncaught_exception_terminates") else { return };
    let native = run(Command::new(dir.join("cxx_eh.linux")).arg("uncaught"), b"", TIMEOUT);
    assert_eq!(native.signal, Some(libc::SIGABRT), "{}", native.status_text());
    let want_err = native.stderr_text();
    let want_line = want_err.lines().next().unwrap_or("");
    assert!(want_line.starts_with("terminate called after throwing"), "{want_err}");
    for engine in ENGINES {
        if !usable(engine, &format!("pe::cxx_uncaught_exception_terminates under {engine}")) {
            continue;
        }
        let o = run_urun(engine, &dir.join("cxx_eh.exe"), &["uncaught"], &[]);
        assert_eq!(crlf_to_lf(&o.stdout), native.stdout, "{engine}: {}", o.stderr_text());
        let err = String::from_utf8_lossy(&crlf_to_lf(&o.stderr)).into_owned();
        assert_eq!(err.lines().next(), Some(want_line), "{engine}: {err}");
        assert_eq!(o.code, Some(3), "{engine}: {} {err}", o.status_text());
    }
}

/// testbins/out/win when the MSVC-runtime C++ program was built (clang,
/// lld-link and llvm-dlltool, which scripts/test installs), else None
/// after saying SKIPPED.
fn msvc_out(test: &str) -> Option<PathBuf> {
    let dir = ensure_testbins().join("win");
    let built = [
        "cxx_msvc_eh.exe",
        "cxx_msvc_eh.linux",
        "seh_msvc.exe",
        "seh_msvc.linux",
        "cxx_msvc_dll.exe",
        "cxx_msvc_lib.dll",
        "cxx_msvc_dll.linux",
    ];
    if built.iter().all(|f| dir.join(f).is_file()) {
        return Some(dir);
    }
    report_skip(test, "clang, lld-link or llvm-dlltool is not installed (Debian: clang lld llvm)");
    None
}

/// C++ exceptions with the MSVC runtime's tables (clang for
/// x86_64-pc-windows-msvc: __CxxFrameHandler3, _CxxThrowException, catch
/// funclets, ThrowInfo/CatchableType): int, struct, a class caught by its
/// base, a second base and a virtual base, pointers, catch(...), rethrow,
/// nested try in a catch, RAII through frames, a partially built object,
/// catch by value (copy constructor), a throw from a catch block and
/// 20000 throws in a loop (the stack must not move); against the same
/// source built with clang++ for Linux.
#[test]
fn msvc_cxx_exceptions_match_clang_on_linux() {
    let test = "pe::msvc_cxx_exceptions_match_clang_on_linux";
    let Some(dir) = msvc_out(test) else { return };
    same_as_linux_in(&dir, test, "cxx_msvc_eh", &["cxx_msvc_eh.exe".into()], &[], &[]);
}

/// MSVC-target C++ exceptions between a program and its DLL (thrown in
/// one image, caught in the other by type name, through the other's
/// frames and destructors, rethrown from the DLL's catch(...)), and on
/// four threads at once; against the same source as one Linux program.
#[test]
fn msvc_cxx_exceptions_across_a_dll_and_threads() {
    let test = "pe::msvc_cxx_exceptions_across_a_dll_and_threads";
    let Some(dir) = msvc_out(test) else { return };
    same_as_linux_in(&dir, test, "cxx_msvc_dll", &["cxx_msvc_dll.exe".into()], &[], &[]);
}

/// C with __try/__except/__finally as clang compiles it for the MSVC
/// target (scope tables for __C_specific_handler): an access violation, a
/// RaiseException whose filter reads its parameters, an inner filter that
/// declines, __finally on the unwind of a RaiseException and of a fault and
/// without one, a filter that continues execution, a divide by zero;
/// against the same source on Linux (signals and a small dispatcher).
#[test]
fn msvc_seh_matches_its_linux_twin() {
    let test = "pe::msvc_seh_matches_its_linux_twin";
    let Some(dir) = msvc_out(test) else { return };
    same_as_linux_in(&dir, test, "seh_msvc", &["seh_msvc.exe".into()], &[], &[]);
}

/// std::terminate on both systems: an exception leaving a noexcept
/// function (the Windows build's unhandled-exception filter, as the CRT's,
/// calls __std_terminate), a destructor throwing while another exception
/// unwinds its frame, and `throw;` with no exception being handled. Compared: stdout, and each system's abort
/// status (Linux SIGABRT; Windows exit status 3); stderr differs (each
/// runtime's own message).
#[test]
fn msvc_cxx_terminate_cases() {
    let test = "pe::msvc_cxx_terminate_cases";
    let Some(dir) = msvc_out(test) else { return };
    for mode in ["noexcept", "dtor", "rethrow"] {
        let native = run(Command::new(dir.join("cxx_msvc_eh.linux")).arg(mode), b"", TIMEOUT);
        assert_eq!(native.signal, Some(libc::SIGABRT), "{mode}: {}", native.status_text());
        for engine in ENGINES {
            if !usable(engine, &format!("{test} under {engine}")) {
                continue;
            }
            let o = run_urun(engine, &dir.join("cxx_msvc_eh.exe"), &[mode], &[]);
            assert_eq!(crlf_to_lf(&o.stdout), native.stdout, "{mode} {engine}: {}", o.stderr_text());
            assert_eq!(o.code, Some(3), "{mode} {engine}: {} {}", o.status_text(), o.stderr_text());
        }
    }
}

/// A null write fixed by a vectored exception handler (it sets RAX and
/// continues); a divide by zero, INT_MIN / -1, ud2, int3 and an unmasked
/// SSE divide by zero skipped by it (the last with MXCSR changed in the
/// context); and a bad read passed on
/// to the unhandled-exception filter, which fixes it: the same lines as
/// the Linux build's SIGSEGV/SIGFPE handler prints.
#[test]
fn faults_caught_by_vectored_handler_and_filter() {
    same_as_linux_builds(
        "pe::faults_caught_by_vectored_handler_and_filter",
        "faults",
        &["faults.exe".into()],
        &[],
        &[],
    );
}

/// An unhandled fault ends the program with the exception code as its
/// exit code, as on Windows (0xC0000005, 0xC0000094, 0xC00002B5,
/// 0xC00000FD); a Linux parent sees its low 8 bits (5, 0x94, 0xb5, 0xfd),
/// as under Wine. The Linux twin dies of
/// SIGSEGV / SIGFPE at the same point: stdout must match, and urun says
/// on one stderr line what happened and where.
#[test]
fn unhandled_faults_exit_with_the_exception_code() {
    let Some(dir) = win_out("pe::unhandled_faults_exit_with_the_exception_code") else { return };
    let cases = [
        (
            "crash",
            libc::SIGSEGV,
            0x05,
            "unhandled exception 0xc0000005 (access violation writing 0x10) at faults.exe+0x",
        ),
        ("divide", libc::SIGFPE, 0x94, "unhandled exception 0xc0000094 (integer divide by zero) at faults.exe+0x"),
        // An SSE exception: STATUS_FLOAT_MULTIPLE_TRAPS, as Windows says.
        (
            "float",
            libc::SIGFPE,
            0xb5,
            "unhandled exception 0xc00002b5 (floating-point exception (SSE)) at faults.exe+0x",
        ),
    ];
    for (arg, sig, code, msg) in cases {
        let native = run(Command::new(dir.join("faults.linux")).arg(arg), b"", TIMEOUT);
        assert_eq!(native.signal, Some(sig), "{arg}: {}", native.status_text());
        for engine in ENGINES {
            if !usable(engine, &format!("pe::unhandled_faults_exit_with_the_exception_code under {engine}")) {
                continue;
            }
            let o = run_urun(engine, &dir.join("faults.exe"), &[arg], &[]);
            let err = o.stderr_text();
            assert_eq!(crlf_to_lf(&o.stdout), native.stdout, "{engine} {arg}: {err}");
            assert_eq!(o.code, Some(code), "{engine} {arg}: {} {err}", o.status_text());
            assert!(
                err.starts_with(&format!("urun: {msg}").replace("urun: ", "urun: faults.exe: ")),
                "{engine} {arg}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "{engine} {arg}: {err}");
        }
    }
}

/// `__try`/`__except`/`__finally` scope tables (in assembly: gcc has no
/// `__try`) through urun's `__C_specific_handler`: an `__except(1)` gets
/// the exception code in RAX; a filter function sees the record and the
/// frame; the `__finally` of an inner frame runs once while the unwind to
/// the outer `__except` passes it, and the unwind restores the outer
/// frame's RBX. Then RtlPcToFileHeader, RtlLookupFunctionEntry over the
/// image and over a table added with RtlAddFunctionTable (and deleted),
/// and one frame unwound with RtlCaptureContext + RtlVirtualUnwind.
/// Windows' documented behaviour is the expected output (no Linux twin
/// can run a scope table).
#[test]
fn c_specific_handler_runs_scope_tables() {
    let Some(dir) = win_out("pe::c_specific_handler_runs_scope_tables") else { return };
    let want = "guarded_read(&ok) = 42\n\
                guarded_read(NULL) = 0xc0000005\n\
                outer(&ok) = 0x0, finally ran 1 time(s), filter 0\n\
                filter: code 0xc0000005, frame is set: 1\n\
                outer(NULL) = 0xc0000005, finally ran 2 time(s), filter 1\n\
                filter: code 0xc0000005, frame is set: 1\n\
                outer((int *)8) = 0xc0000005, finally ran 3 time(s), filter 2\n\
                RtlPcToFileHeader(main) is the exe: 1\n\
                guarded_read's entry: 1\n\
                one frame up is tables(): 1\n\
                RtlAddFunctionTable: 1\n\
                found in it: 1\n\
                outside it: 1\n\
                RtlDeleteFunctionTable: 1, then found: 0\n";
    for engine in ENGINES {
        if !usable(engine, &format!("pe::c_specific_handler_runs_scope_tables under {engine}")) {
            continue;
        }
        let o = run_urun(engine, &dir.join("scopes.exe"), &[], &[]);
        assert_eq!(String::from_utf8_lossy(&crlf_to_lf(&o.stdout)), want, "{engine}: {}", o.stderr_text());
        assert_eq!(o.code, Some(0), "{engine}: {} {}", o.status_text(), o.stderr_text());
    }
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
        if !usable(engine, &format!("pe::synchronisation_as_windows_documents under {engine}")) {
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
                Beep: NULL, error 127\n\
                exe handle is the image: 1\n";
    for engine in ENGINES {
        if !usable(engine, &format!("pe::get_proc_address_and_unimplemented_stubs under {engine}")) {
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
        "cannot load mylib032.dll (imported by usesdll.exe): truncated PE",
    ));
    // A program whose own DLL is missing: named, with who imports it.
    let alone = tmp.path().join("alone");
    std::fs::create_dir_all(&alone).expect("mkdir");
    let modmain = dir.join("mod-pe/modmain.exe");
    if modmain.is_file() {
        cases.push((
            variant(&alone, &modmain, "modmain.exe", |_| {}),
            "needs modlib.dll, which urun does not provide and which is not beside the program",
        ));
    }
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

/// A program with its own DLLs: imports by name, by ordinal (NONAME) and a
/// forwarder into urun's msvcrt; the DLL built at the program's preferred
/// base, so it is relocated; DllMain attach and detach (static, then
/// LoadLibrary/FreeLibrary of a second DLL), GetProcAddress by name and by
/// ordinal, GetModuleFileName, LoadLibrary of a missing DLL. The twin is
/// the same source on Linux with shared libraries of the same names
/// (constructors/destructors, dlopen/dlsym/dladdr).
#[test]
fn real_dlls_match_their_linux_twin() {
    let test = "pe::real_dlls_match_their_linux_twin";
    let Some(dir) = win_out(test) else { return };
    let native = run(&mut Command::new(dir.join("mod-linux/modmain")), b"", TIMEOUT);
    assert_eq!(native.code, Some(0), "the Linux twin: {} {}", native.status_text(), native.stderr_text());
    let mut failures = Vec::new();
    for engine in ENGINES {
        if !usable(engine, &format!("{test} under --engine {engine}")) {
            continue;
        }
        let mut got = run_urun(engine, &dir.join("mod-pe/modmain.exe"), &[], &[]);
        got.stdout = crlf_to_lf(&got.stdout);
        for p in compare_runs(&native, &got) {
            failures.push(format!("--engine {engine}: {p}"));
        }
    }
    assert!(failures.is_empty(), "\n  {}", failures.join("\n  "));
}

/// A mingw C++ program linked against libstdc++-6.dll and
/// libgcc_s_seh-1.dll (found through URUN_DLL_PATH, pointed at the mingw
/// runtime directory), against its g++ twin.
#[test]
fn cxx_with_the_runtime_dlls_matches_gxx() {
    let test = "pe::cxx_with_the_runtime_dlls_matches_gxx";
    let Some(dir) = win_out(test) else { return };
    let exe = dir.join("cxxdyn.exe");
    if !exe.is_file() {
        report_skip(test, "x86_64-w64-mingw32-g++ is not installed (Debian: g++-mingw-w64-x86-64)");
        return;
    }
    let o = run(Command::new("x86_64-w64-mingw32-g++").arg("-print-file-name=libstdc++-6.dll"), b"", TIMEOUT);
    let dll = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let Some(rt) = dll.parent().filter(|_| dll.is_file()) else {
        report_skip(test, "the mingw g++ has no libstdc++-6.dll");
        return;
    };
    let rt = rt.to_string_lossy().into_owned();
    let native = run(&mut Command::new(dir.join("cxxdyn.linux")).args(["a", "b"]), b"", TIMEOUT);
    let mut failures = Vec::new();
    for engine in ENGINES {
        if !usable(engine, &format!("{test} under --engine {engine}")) {
            continue;
        }
        let mut got = run_urun(engine, &exe, &["a", "b"], &[("URUN_DLL_PATH", &rt)]);
        got.stdout = crlf_to_lf(&got.stdout);
        got.stderr = crlf_to_lf(&got.stderr);
        for p in compare_runs(&native, &got) {
            failures.push(format!("--engine {engine}: {p}"));
        }
    }
    assert!(failures.is_empty(), "\n  {}", failures.join("\n  "));
}

/// Debian's mingw tools against their Linux builds of the same version
/// (libgcrypt 1.10.1): `hmac256.exe` (the issue's Done-when) on a key and a
/// file, text and `--binary`; `mpicalc.exe`, which loads the real
/// libgcrypt-20.dll and libgpg-error-0.dll, on a script; `gpg-error.exe`
/// (libgpg-error 1.46) on error codes and `--version`.
#[test]
fn debian_libgcrypt_tools_match_linux() {
    let test = "pe::debian_libgcrypt_tools_match_linux";
    let bin = Path::new("/usr/x86_64-w64-mingw32/bin");
    if !bin.join("hmac256.exe").is_file() || !Path::new("/usr/bin/hmac256").is_file() {
        report_skip(test, "needs libgcrypt-mingw-w64-dev and libgcrypt20-dev (hmac256.exe, /usr/bin/hmac256)");
        return;
    }
    let tmp = TempDir::new("pe-hmac");
    let data = tmp.path().join("data.bin");
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).chain(*b"line\r\nend\n").collect();
    std::fs::write(&data, bytes).expect("write the data file");
    let data = data.to_string_lossy().into_owned();
    let script = b"1 2 + p\n7 6 * p\n123456789012345678901234567890 987654321 * p\n2 100 ^ p\n";
    let mut failures = Vec::new();
    for engine in ENGINES {
        if !usable(engine, &format!("{test} under --engine {engine}")) {
            continue;
        }
        for args in [vec!["my key", data.as_str()], vec!["--binary", "k2", data.as_str()]] {
            let native = run(Command::new("/usr/bin/hmac256").args(&args), b"", TIMEOUT);
            assert_eq!(native.code, Some(0), "hmac256 {args:?}: {}", native.stderr_text());
            let mut got = run_urun(engine, &bin.join("hmac256.exe"), &args, &[]);
            // The text mode's CR LF; --binary sets stdout to binary itself.
            if args[0] != "--binary" {
                got.stdout = crlf_to_lf(&got.stdout);
            }
            for p in compare_runs(&native, &got) {
                failures.push(format!("hmac256 {args:?} --engine {engine}: {p}"));
            }
        }
        // gpg-error.exe with libgpg-error-0.dll (package gpgrt-tools for
        // the Linux twin).
        if bin.join("gpg-error.exe").is_file() && Path::new("/usr/bin/gpg-error").is_file() {
            for args in [vec!["1", "2", "3", "GPG_ERR_EOF", "GPG_ERR_ENOENT"], vec!["--version"]] {
                let native = run(Command::new("/usr/bin/gpg-error").args(&args), b"", TIMEOUT);
                let mut got = run_urun(engine, &bin.join("gpg-error.exe"), &args, &[]);
                got.stdout = crlf_to_lf(&got.stdout);
                for p in compare_runs(&native, &got) {
                    failures.push(format!("gpg-error {args:?} --engine {engine}: {p}"));
                }
            }
        }
        if bin.join("mpicalc.exe").is_file() && Path::new("/usr/bin/mpicalc").is_file() {
            let native = run(&mut Command::new("/usr/bin/mpicalc"), script, TIMEOUT);
            let mut cmd = Command::new(urun());
            cmd.args(engine_args(engine)).arg(bin.join("mpicalc.exe"));
            let mut got = run(&mut cmd, script, TIMEOUT);
            got.stdout = crlf_to_lf(&got.stdout);
            for p in compare_runs(&native, &got) {
                failures.push(format!("mpicalc --engine {engine}: {p}"));
            }
        }
    }
    assert!(failures.is_empty(), "\n  {}", failures.join("\n  "));
}

/// PEB->Ldr's lists, a system DLL's export directory walked by hand, the
/// process parameters and KUSER_SHARED_DATA, each checked inside the
/// program against the API's answer. Fixed text: no Linux program has a
/// PEB to be the twin.
#[test]
fn peb_loader_lists_parameters_and_kuser_shared_data() {
    let test = "pe::peb_loader_lists_parameters_and_kuser_shared_data";
    let Some(dir) = win_out(test) else { return };
    let want = "load order: program first yes, ntdll yes, kernel32 yes, msvcrt yes\n\
                entries match GetModuleHandleW and start with MZ: yes yes\n\
                memory order has them all: yes, init order without the program: yes\n\
                export walk finds GetProcAddress's GetCurrentProcessId: yes, calls it: yes\n\
                image path ends in pebwalk.exe: yes, command line is GetCommandLineA's: yes, environment: yes\n\
                std handles: yes\n\
                kuser version 10.0 build 19045\n\
                interrupt time advances by the sleep: yes\n\
                system time within 1 s of GetSystemTimeAsFileTime: yes\n\
                tick count within 1 s of GetTickCount: yes\n";
    for engine in ENGINES {
        if !usable(engine, &format!("{test} under --engine {engine}")) {
            continue;
        }
        let o = run_urun(engine, &dir.join("pebwalk.exe"), &["one", "two words"], &[("PEBWALK", "here")]);
        assert_eq!(String::from_utf8_lossy(&crlf_to_lf(&o.stdout)), want, "{engine}: {}", o.stderr_text());
        assert_eq!(o.code, Some(0), "{engine}: {}", o.status_text());
    }
}

/// Files, directories, the console and the wide environment
/// (`win/winfiles.c`: CreateFileW, ReadFile/WriteFile, GetFileSizeEx,
/// SetFilePointerEx, FindFirstFileW/FindNextFileW, GetFullPathNameW,
/// Get/SetCurrentDirectoryW, GetFileAttributesW, DeleteFileW,
/// Create/RemoveDirectoryW, GetEnvironmentVariableW, _wfopen, wmain)
/// against the same steps in POSIX in its Linux twin: with stdout a pipe
/// (GetConsoleMode fails, the program uses WriteFile), then on a terminal
/// through `script` (GetConsoleMode succeeds, WriteConsoleW prints UTF-8).
#[test]
fn files_console_and_wide_environment_match_posix() {
    let test = "pe::files_console_and_wide_environment_match_posix";
    let Some(dir) = win_out(test) else { return };
    let exe = dir.join("winfiles.exe");
    let mut failures = Vec::new();
    let tmp = TempDir::new("pe-winfiles");
    let canon = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let (nd, ud) = (tmp.path().join("native"), tmp.path().join("urun"));
    for engine in ENGINES {
        if !usable(engine, &format!("{test} under --engine {engine}")) {
            continue;
        }
        for d in [&nd, &ud] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let (nd, ud) = (canon(nd.clone()), canon(ud.clone()));
        let (ns, us) = (nd.to_string_lossy().into_owned(), ud.to_string_lossy().into_owned());
        let env = [("WINFILES_VAR", "value 1")];
        let mut native = Command::new(dir.join("winfiles.linux"));
        native.args([ns.as_str(), "two words"]).envs(env);
        let mut native = run(&mut native, b"", TIMEOUT);
        native.stdout = String::from_utf8_lossy(&native.stdout).replace(&ns, "DIR").into_bytes();
        let mut got = run_urun(engine, &exe, &[us.as_str(), "two words"], &env);
        got.stdout = String::from_utf8_lossy(&crlf_to_lf(&got.stdout)).replace(&us, "DIR").into_bytes();
        for p in compare_runs(&native, &got) {
            failures.push(format!("--engine {engine}, stdout a pipe: {p}"));
        }
        // On a terminal: `script` gives both a pty (its output has the
        // terminal's CR LF, and the text mode's CR before that).
        if !Path::new("/usr/bin/script").is_file() {
            report_skip(test, "no /usr/bin/script (util-linux) for the terminal case");
            continue;
        }
        let in_script = |cmd: String| {
            let mut c = Command::new("/usr/bin/script");
            c.args(["-qec", &cmd, "/dev/null"]).envs(env);
            let mut o = run(&mut c, b"", TIMEOUT);
            o.stdout.retain(|&b| b != b'\r');
            o
        };
        let w = dir.join("winfiles.linux").to_string_lossy().into_owned();
        let mut native = in_script(format!("{w} {ns}"));
        native.stdout = String::from_utf8_lossy(&native.stdout).replace(&ns, "DIR").into_bytes();
        let mut got = in_script(format!("{} {} {} {us}", urun(), engine_args(engine).join(" "), exe.display()));
        got.stdout = String::from_utf8_lossy(&got.stdout).replace(&us, "DIR").into_bytes();
        let text = String::from_utf8_lossy(&got.stdout).into_owned();
        if !text.contains("stdout is a console: yes\nh\u{e9}llo") {
            failures.push(format!("--engine {engine}: no console under script: {text}"));
        }
        for p in compare_runs(&native, &got) {
            failures.push(format!("--engine {engine}, stdout a terminal: {p}"));
        }
    }
    assert!(failures.is_empty(), "\n  {}", failures.join("\n  "));
}

/// The CONTEXT a vectored handler sees at a fault (win/ctxdump.c: every
/// general register, the flags, MXCSR, the x87 words and XMM0-5 set to
/// known values after a linked loop, then a read and a write fault, a
/// divide error, UD2 and INT3) is the interpreter's under every engine.
/// The KVM engine's EFLAGS also has RF (bit 16), which the CPU sets in
/// the state it saves at a fault and the other engines do not model: it
/// is masked for KVM only.
#[test]
fn fault_context_is_the_interpreters_under_every_engine() {
    let test = "pe::fault_context_is_the_interpreters_under_every_engine";
    let Some(dir) = win_out(test) else { return };
    let exe = dir.join("ctxdump.exe");
    let want = run_urun("interp", &exe, &[], &[]);
    let text = String::from_utf8_lossy(&want.stdout).into_owned();
    assert_eq!(want.code, Some(0), "interp: {} {}", want.status_text(), want.stderr_text());
    for code in ["c0000005 flags 0 params 2 0 10", "c0000005 flags 0 params 2 1 10", "c0000094", "c000001d", "80000003"]
    {
        assert!(text.contains(&format!("code {code}")), "interp: no exception {code}:\n{text}");
    }
    assert_eq!(text.matches("resumed").count(), 5, "interp:\n{text}");
    assert_eq!(
        text.matches("rax 1111111111111105 rbx 2222222222222222 rcx 3333333333333333 rdx 4444444444444444").count(),
        5,
        "interp: the registers the cases set:\n{text}"
    );
    assert_eq!(text.matches("xmm5 cccccccccccccccc8888888888888888").count(), 5, "interp:\n{text}");
    let mut failures = Vec::new();
    for engine in ENGINES.into_iter().filter(|e| *e != "interp") {
        if !usable(engine, &format!("{test} under --engine {engine}")) {
            continue;
        }
        let got = run_urun(engine, &exe, &[], &[]);
        let mut out = String::from_utf8_lossy(&got.stdout).into_owned();
        if engine == "kvm" {
            out = out.replace("eflags 0001", "eflags 0000");
        }
        if got.code != Some(0) || out != text {
            failures.push(format!("--engine {engine}: {} {}\n{out}", got.status_text(), got.stderr_text()));
        }
    }
    assert!(failures.is_empty(), "interpreter:\n{text}\n  {}", failures.join("\n  "));
}
