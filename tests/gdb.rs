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
