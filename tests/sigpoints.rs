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

use std::time::Duration;

const MODES: &[&str] = &["spin", "storm"];
const TIMEOUT: Duration = Duration::from_secs(120);

fn check_engine(engine: &str) {
    common::modes_match_native("sigpoints", MODES, engine, TIMEOUT);
}

#[test]
fn interpreter_delivers_signals_in_loops_and_anywhere() {
    check_engine("interp");
}

/// The JIT: linked loops check the interrupt byte on backward links and
/// inline lookups (see ARCHITECTURE.md, the JIT engine).
#[test]
fn jit_delivers_signals_in_linked_loops_and_anywhere() {
    if common::engine_or_skip("jit", "jit_delivers_signals_in_linked_loops_and_anywhere") {
        check_engine("jit");
    }
}
