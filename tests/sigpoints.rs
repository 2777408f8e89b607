//! Asynchronous signals reach guest code wherever it runs
//! (`testbins/sigpoints.c`, every build): a loop spinning on a flag that a
//! SIGALRM handler sets (an empty loop, calls, an indirect call, several
//! blocks: under the JIT these are linked blocks that never leave the code
//! cache), and a thousand SIGUSR1 sent by another thread while the main
//! thread computes (the computation must give the same checksum each pass,
//! and the handler must see a pc in the program's code). Natively, under
//! the interpreter and under the JIT: stdout, stderr, exit status and
//! signal must match.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{compare_runs, ensure_testbins, run, Outcome};

const MODES: &[&str] = &["spin", "storm"];
const BUILDS: &[&str] = &["glibc", "glibc-pie", "musl", "dynamic"];
const TIMEOUT: Duration = Duration::from_secs(120);

fn under(engine: &str, program: &std::path::Path, mode: &str) -> Outcome {
    run(Command::new(common::urun()).arg("--engine").arg(engine).arg(program).arg(mode), b"", TIMEOUT)
}

fn check_engine(engine: &str) {
    let out = ensure_testbins();
    let mut problems = Vec::new();
    for build in BUILDS {
        let program = out.join(format!("sigpoints.{build}"));
        for mode in MODES {
            let native = run(Command::new(&program).arg(mode), b"", TIMEOUT);
            assert_eq!(
                (native.code, native.signal),
                (Some(0), None),
                "sigpoints.{build} {mode} fails natively: {}",
                native.stderr_text()
            );
            let guest = under(engine, &program, mode);
            for p in compare_runs(&native, &guest) {
                problems.push(format!("sigpoints.{build} {mode} under {engine}: {p}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn interpreter_delivers_signals_in_loops_and_anywhere() {
    check_engine("interp");
}

/// The JIT: linked loops check the interrupt byte on backward links and
/// inline lookups (see ARCHITECTURE.md, the JIT engine).
#[test]
fn jit_delivers_signals_in_linked_loops_and_anywhere() {
    let probe = run(Command::new(common::urun()).args(["--engine", "jit", "/bin/true"]), b"", TIMEOUT);
    if probe.stderr_text().contains("no FSGSBASE") {
        use std::io::Write;
        let line = "SKIPPED: jit_delivers_signals_in_linked_loops_and_anywhere: the host has no FSGSBASE\n";
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    }
    check_engine("jit");
}
