//! The gdb stub: `gdb -batch` against `urun -g PORT` on `testbins/gdb_target.c`
//! (built here with `-g -O0 -static`), and the same gdb script run natively
//! (`gdb --args`), under each engine. The script breaks at `main`, prints
//! arguments, steps with `next`, prints locals, x87 and SSE registers,
//! `fs_base` (glibc's thread pointer points at itself) and `gs_base`,
//! writes memory (`set var`) and registers (`return 3` writes RAX, RSP and
//! RIP), lists threads and continues to a normal exit. What gdb prints
//! (addresses of the stack aside) and the program's output must match.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{engine_or_skip, repo_root, report_skip, run, show, urun, TempDir};

const TIMEOUT: Duration = Duration::from_secs(120);

/// The commands after the program is stopped at `main` (natively after
/// `run`, under urun after `target remote` and `continue`).
const SCRIPT: &[&str] = &[
    "print argc",
    "printf \"%s\\n\", argv[1]",
    "next",
    "next",
    "print n",
    "print d",
    "info registers rip",
    "info registers",
    "p $xmm0.v2_double[0]",
    "p $st0",
    "p $mxcsr",
    "p $fs_base == *(long *)$fs_base",
    "p $gs_base",
    "set var n = 7",
    "break square",
    "continue",
    "print x",
    "return 3",
    "info threads",
    "continue",
];

fn gdb_args(head: &[String], script: &[&str], binary: &Path, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["-batch".into(), "-nx".into(), "-ex".into(), "set confirm off".into()];
    v.extend(["-ex".into(), "set pagination off".into(), "-ex".into(), "break main".into()]);
    for c in head.iter().map(String::as_str).chain(script.iter().copied()) {
        v.push("-ex".into());
        v.push(c.into());
    }
    if !args.is_empty() {
        v.push("--args".into());
    }
    v.push(binary.display().to_string());
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

/// The lines that must agree: values, source lines, breakpoint stops with
/// hex addresses blanked (the stack is elsewhere under urun), `rip`, the
/// register names `info registers` lists, the program's output and the end.
fn significant(text: &str) -> Vec<String> {
    let blank_hex = |l: &str| {
        let mut out = String::new();
        let mut rest = l;
        while let Some(i) = rest.find("0x") {
            out.push_str(&rest[..i]);
            out.push_str("0x?");
            rest = rest[i + 2..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
        }
        out + rest
    };
    text.lines()
        .filter_map(|l| {
            let first = l.split_whitespace().next().unwrap_or("");
            if l.starts_with('$') || l.starts_with("n=") || l.starts_with("hello") || l.starts_with("rip") {
                Some(l.to_string())
            } else if l.starts_with("Breakpoint ") || l.starts_with("Run till exit") {
                Some(blank_hex(l))
            } else if l.starts_with("[Inferior 1 (process ") {
                Some(l.split_once(") ").map_or(l.to_string(), |(_, r)| r.to_string()))
            } else if first.parse::<u32>().is_ok() && l.contains('\t') {
                Some(l.to_string()) // a source line
            } else if ["rax", "rbx", "rsp", "eflags", "cs", "ss", "fs", "gs"].contains(&first) {
                Some(format!("register {first}"))
            } else if l.starts_with("* 1 ") {
                Some("one thread, current".into())
            } else {
                None
            }
        })
        .collect()
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Run `script` against `urun --engine ENGINE -g PORT binary hello`.
/// Returns gdb's output plus the program's.
fn under_urun(engine: &str, script: &[&str], binary: &Path) -> String {
    let port = free_port();
    let mut child = Command::new(urun())
        .args(["--engine", engine, "-g", &port.to_string()])
        .arg(binary)
        .arg("hello")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting urun");
    let mut err = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    let waiting = err.read_line(&mut line).is_ok() && line.contains("waiting for gdb");
    if !waiting {
        let _ = child.kill();
        let _ = child.wait();
        panic!("urun -g did not wait for gdb: {line}");
    }
    let head = vec![format!("target remote 127.0.0.1:{port}"), "continue".into()];
    let g = run(Command::new("gdb").args(gdb_args(&head, script, binary, &[])), b"", TIMEOUT);
    // urun ends once gdb let the guest finish.
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    assert!(
        status.is_some_and(|s| s.success()),
        "urun under gdb ended {status:?}\ngdb: {}\n{}\nurun stderr: {rest}",
        g.status_text(),
        show(&g.stdout, 4000)
    );
    format!("{}{}", String::from_utf8_lossy(&g.stdout), out)
}

#[test]
fn gdb_batch_against_urun_under_each_engine() {
    const TEST: &str = "gdb_batch_against_urun_under_each_engine";
    if Command::new("gdb").arg("--version").output().is_err() {
        report_skip(TEST, "gdb is not installed (scripts/test installs it)");
        return;
    }
    let t = TempDir::new("gdb");
    let binary = t.path().join("gdb_target");
    let src = repo_root().join("testbins/gdb_target.c");
    let o = run(Command::new("gcc").args(["-g", "-O0", "-static", "-o"]).arg(&binary).arg(&src), b"", TIMEOUT);
    assert_eq!(o.code, Some(0), "building gdb_target: {}", o.stderr_text());

    let head = vec!["run".to_string()];
    let native = run(Command::new("gdb").args(gdb_args(&head, SCRIPT, &binary, &["hello"])), b"", TIMEOUT);
    let native_text = String::from_utf8_lossy(&native.stdout).into_owned();
    let want = significant(&native_text);
    assert!(
        want.iter().any(|l| l == "n=7 d=5 sq=3 first=hello") && want.iter().any(|l| l.contains("exited normally")),
        "the native gdb run did not go as the script means:\n{native_text}\n{}",
        native.stderr_text()
    );
    for engine in ["interp", "kvm", "jit"] {
        if !engine_or_skip(engine, &format!("{TEST} (kvm)")) {
            continue;
        }
        if engine == "jit" {
            let why = run(Command::new(urun()).args(["--engine", "jit", "/bin/true"]), b"", TIMEOUT);
            if why.stderr_text().contains("no FSGSBASE") {
                report_skip(&format!("{TEST} (jit)"), why.stderr_text().trim());
                continue;
            }
        }
        let got = significant(&under_urun(engine, SCRIPT, &binary));
        // The program's line comes at a different place in the two outputs.
        let (mut w, mut g) = (want.clone(), got.clone());
        w.sort();
        g.sort();
        assert!(
            w == g,
            "gdb through urun --engine {engine} differs:\nnative:\n{}\nurun:\n{}",
            want.join("\n"),
            got.join("\n")
        );
    }
}

/// A dynamically linked (PIE) build: gdb learns the load addresses from
/// the auxiliary vector (qXfer:auxv:read), puts its breakpoint at `main`
/// where the program really is, and lists the shared libraries from the
/// dynamic linker's `r_debug`, as natively.
#[test]
fn gdb_sees_the_shared_libraries_of_a_dynamic_program() {
    const TEST: &str = "gdb_sees_the_shared_libraries_of_a_dynamic_program";
    if Command::new("gdb").arg("--version").output().is_err() {
        report_skip(TEST, "gdb is not installed (scripts/test installs it)");
        return;
    }
    let t = TempDir::new("gdbdyn");
    let binary = t.path().join("gdb_target_dyn");
    let src = repo_root().join("testbins/gdb_target.c");
    let o = run(Command::new("gcc").args(["-g", "-O0", "-o"]).arg(&binary).arg(&src), b"", TIMEOUT);
    assert_eq!(o.code, Some(0), "building gdb_target dynamically: {}", o.stderr_text());
    const DYN_SCRIPT: &[&str] =
        &["info sharedlibrary", "print argc", "break square", "continue", "bt 1", "print x", "continue"];
    // Library lines: the name and whether symbols were read (addresses differ).
    let libs = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = significant(text);
        let library = |l: &&str| l.starts_with("0x") && matches!(l.split_whitespace().nth(2), Some("Yes" | "No"));
        v.extend(text.lines().filter(library).map(|l| {
            let mut w = l.split_whitespace().skip(2);
            format!("library {}", w.by_ref().collect::<Vec<_>>().join(" "))
        }));
        v.extend(
            text.lines().filter(|l| l.starts_with("#0 ")).map(|l| l.split(" at ").last().unwrap_or("").to_string()),
        );
        v.sort();
        v
    };
    let head = vec!["run".to_string()];
    let native = run(Command::new("gdb").args(gdb_args(&head, DYN_SCRIPT, &binary, &["hello"])), b"", TIMEOUT);
    let native_text = String::from_utf8_lossy(&native.stdout).into_owned();
    let want = libs(&native_text);
    assert!(
        want.iter().any(|l| l.starts_with("library") && l.contains("libc.so"))
            && want.iter().any(|l| l.contains("exited normally")),
        "the native gdb run did not go as the script means:\n{native_text}\n{}",
        native.stderr_text()
    );
    for engine in ["interp", "kvm", "jit"] {
        if !engine_or_skip(engine, &format!("{TEST} (kvm)")) {
            continue;
        }
        let text = under_urun(engine, DYN_SCRIPT, &binary);
        let got = libs(&text);
        assert!(want == got, "gdb through urun --engine {engine} differs:\nnative:\n{native_text}\nurun:\n{text}");
    }
}

/// Two threads spinning; `main` says so once both run.
const SPIN_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
volatile unsigned long counter, counter2;
static void *spin(void *arg) { (void)arg; for (;;) counter2++; return 0; }
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, spin, 0);
    while (counter2 == 0) {}
    printf("spinning\n");
    fflush(stdout);
    for (;;) counter++;
}
"#;

/// gdb's interrupt (SIGINT to gdb, which sends Ctrl-C to the target) stops
/// a guest spinning in two threads; `counter2` does not move while gdb
/// sleeps (all-stop: the other thread is stopped too), and `info threads`
/// lists both, as natively, under every engine. Two builds: glibc, where
/// gdb puts a breakpoint of its own at `_dl_debug_state`, which keeps the
/// stub armed (every thread steps in the interpreter and meets the stub at
/// each instruction); and, where musl-gcc is installed, musl, where gdb
/// sets none, so the threads run their engine unarmed and the stub must
/// interrupt them (not under KVM, see the skip).
#[test]
fn gdb_ctrl_c_stops_every_thread() {
    const TEST: &str = "gdb_ctrl_c_stops_every_thread";
    if Command::new("gdb").arg("--version").output().is_err() {
        report_skip(TEST, "gdb is not installed (scripts/test installs it)");
        return;
    }
    let t = TempDir::new("gdbspin");
    let src = t.path().join("spin.c");
    std::fs::write(&src, SPIN_C).expect("writing spin.c");
    let mut builds = vec![("glibc", "gcc")];
    if Command::new("musl-gcc").arg("--version").output().is_ok() {
        builds.push(("musl", "musl-gcc"));
    } else {
        report_skip(&format!("{TEST} (musl)"), "musl-gcc is not installed: the unarmed case is not run");
    }
    const SCRIPT: &[&str] =
        &["p counter > 0", "set $c2 = counter2", "shell sleep 0.5", "p counter2 == $c2", "info threads", "kill"];
    // What must agree: the stop, the two values, the number of threads.
    let significant = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter_map(|l| {
                if l.contains("received signal SIGINT") {
                    Some("stopped by SIGINT".to_string())
                } else {
                    l.starts_with('$').then(|| l.to_string())
                }
            })
            .collect();
        let row = |l: &&str| {
            l.trim_start_matches(['*', ' ']).starts_with(|c: char| c.is_ascii_digit())
                && (l.contains("Thread ") || l.contains("LWP "))
        };
        v.push(format!("{} threads", text.lines().filter(row).count()));
        v
    };
    for (libc_name, cc) in builds {
        let binary = t.path().join(format!("spin.{libc_name}"));
        let o =
            run(Command::new(cc).args(["-g", "-O0", "-static", "-pthread", "-o"]).arg(&binary).arg(&src), b"", TIMEOUT);
        assert_eq!(o.code, Some(0), "building spin with {cc}: {}", o.stderr_text());
        let cmdline = |head: &str| -> Vec<String> {
            let mut v: Vec<String> = ["-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            for c in std::iter::once(head).chain(SCRIPT.iter().copied()) {
                v.push("-ex".into());
                v.push(c.into());
            }
            v.push(binary.display().to_string());
            v
        };
        let native_text = interrupt_gdb(&cmdline("run"), None);
        let want = significant(&native_text);
        assert_eq!(
            want,
            ["stopped by SIGINT", "$1 = 1", "$2 = 1", "2 threads"],
            "the native gdb run ({libc_name}) did not go as the script means:\n{native_text}"
        );
        for engine in ["interp", "kvm", "jit"] {
            if !engine_or_skip(engine, &format!("{TEST} (kvm)")) {
                continue;
            }
            if engine == "kvm" && libc_name == "musl" {
                report_skip(
                    &format!("{TEST} (kvm, musl)"),
                    "a vCPU running guest code leaves KVM_RUN only for a host signal, which the stub does not send: \
                     Ctrl-C stops an unarmed KVM guest at its next syscall or fault",
                );
                continue;
            }
            let port = free_port();
            let urun_child = Command::new(urun())
                .args(["--engine", engine, "-g", &port.to_string()])
                .arg(&binary)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting urun");
            let text = interrupt_gdb(&cmdline(&format!("target remote 127.0.0.1:{port}")), Some(urun_child));
            assert_eq!(significant(&text), want, "gdb through urun --engine {engine} ({libc_name}):\n{text}");
        }
    }
}

/// Run gdb with `args` and, once the guest says "spinning" (in gdb's output
/// natively, in urun's under urun), send gdb SIGINT; return gdb's output.
/// Under urun (`guest`), gdb continues first, and urun is killed at the
/// end if gdb's `kill` did not end it.
fn interrupt_gdb(args: &[String], guest: Option<std::process::Child>) -> String {
    use std::sync::{Arc, Mutex};
    let mut args = args.to_vec();
    if guest.is_some() {
        // After `target remote`: continue, then the script.
        args.insert(8, "-ex".into());
        args.insert(9, "continue".into());
    }
    let mut gdb = Command::new("gdb")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gdb");
    let collect = |r: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(String::new()));
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                b.lock().unwrap_or_else(|e| e.into_inner()).push_str(&line);
                line.clear();
            }
        });
        buf
    };
    let gdb_out = collect(Box::new(gdb.stdout.take().expect("piped")));
    let gdb_err = collect(Box::new(gdb.stderr.take().expect("piped")));
    let mut guest = guest;
    let guest_out = guest.as_mut().map(|g| collect(Box::new(g.stdout.take().expect("piped"))));
    let marker = guest_out.clone().unwrap_or_else(|| gdb_out.clone());
    let start = Instant::now();
    while !marker.lock().unwrap_or_else(|e| e.into_inner()).contains("spinning") {
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on the gdb child we started (its pid, still ours to wait for).
    unsafe { libc::kill(gdb.id() as libc::pid_t, libc::SIGINT) };
    let start = Instant::now();
    while gdb.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = gdb.kill();
    let _ = gdb.wait();
    if let Some(mut g) = guest {
        let start = Instant::now();
        while g.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = g.kill();
        let _ = g.wait();
    }
    std::thread::sleep(Duration::from_millis(100));
    let out = gdb_out.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let err = gdb_err.lock().unwrap_or_else(|e| e.into_inner()).clone();
    out + &err
}
