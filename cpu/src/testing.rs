//! What the test suites share about skipping, so that a skip is never
//! mistaken for a pass.
//!
//! libtest captures what a test prints with `print!`/`eprint!` and shows it
//! only for failures, and it counts a test that returns early as passed. A
//! test that cannot run here calls [`report_skip`], which writes one line
//! straight to the process's stderr (past libtest's capture):
//!
//! ```text
//! SKIPPED: <test>: <reason>
//! ```
//!
//! `scripts/test` counts those lines and reports them as skipped, not
//! passed, in its closing `tests: N passed, N failed, N skipped` line.
//!
//! A test that runs but leaves out some of its cases (a difference that is
//! known and not urun's, such as a hypervisor's) names each case left out
//! with [`report_skipped_case`], a line `SKIPPED CASE: <case>: <reason>`;
//! the closing line counts those cases apart from the tests.

use std::io::Write;

/// The prefix `scripts/test` looks for.
pub const SKIP_PREFIX: &str = "SKIPPED: ";

/// Say on the real stderr that `test` is skipped, and why.
pub fn report_skip(test: &str, why: &str) {
    let line = format!("{SKIP_PREFIX}{test}: {}\n", why.replace('\n', " "));
    // A write error leaves nothing better to do: the test still returns.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The prefix of a case left out of a test that otherwise ran.
pub const SKIP_CASE_PREFIX: &str = "SKIPPED CASE: ";

/// Say on the real stderr that `case` was left out of a test that ran, and
/// why.
pub fn report_skipped_case(case: &str, why: &str) {
    let line = format!("{SKIP_CASE_PREFIX}{case}: {}\n", why.replace('\n', " "));
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Whether `/dev/kvm` can be opened for reading and writing here. Where it
/// opens, the KVM engine is expected to work and a failure of urun's VM is a
/// test failure; only where it does not open are KVM tests skipped.
pub fn kvm_device_opens() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm does not open: {e}"))
}
