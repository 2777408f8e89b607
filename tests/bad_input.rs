//! Bad input gets a clear message and the right exit status, never a panic or
//! a hang: `urun FILE` for files that are not programs urun can run. The
//! inputs are generated here, in a temporary directory.
//!
//! Plus: `urun --strace` prints the guest's syscalls on stderr, one a line.

mod common;

use common::{ensure_testbins, run, show, urun, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

struct BadInput {
    name: &'static str,
    file: PathBuf,
    code: i32,
    /// stderr must contain one of these (case-insensitive); empty: any message.
    fragments: &'static [&'static str],
}

/// A 64-byte ELF64 little-endian header with the given e_machine, e_type
/// ET_EXEC and no program headers.
fn elf64_header(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // ELFDATA2LSB
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes()); // e_version
    h[24..32].copy_from_slice(&0x400000u64.to_le_bytes()); // e_entry
    h[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    h
}

/// A 52-byte ELF32 header for i386.
fn elf32_header() -> Vec<u8> {
    let mut h = vec![0u8; 52];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 1; // ELFCLASS32
    h[5] = 1;
    h[6] = 1;
    h[16..18].copy_from_slice(&2u16.to_le_bytes());
    h[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[24..28].copy_from_slice(&0x8048000u32.to_le_bytes());
    h[28..32].copy_from_slice(&52u32.to_le_bytes()); // e_phoff
    h[40..42].copy_from_slice(&52u16.to_le_bytes());
    h[42..44].copy_from_slice(&32u16.to_le_bytes());
    h
}

/// A copy of a dynamic program whose PT_INTERP names a file that does not
/// exist (natively: "No such file or directory").
fn missing_interp(dynamic: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(dynamic).unwrap_or_else(|e| panic!("reading {}: {e}", dynamic.display()));
    let name = b"ld-linux-x86-64.so.2";
    let at = bytes.windows(name.len()).position(|w| w == name).expect("PT_INTERP string in the program");
    bytes[at + name.len() - 1] = b'X';
    bytes
}

fn write_input(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Every way the outcome of one bad input differs from what it should be.
fn check(input: &BadInput, out: &common::Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    let stderr = out.stderr_text();
    if let Some(e) = &out.spawn_error {
        return vec![format!("could not start urun: {e}")];
    }
    if out.timed_out {
        problems.push(format!("hung: killed after {} s", TIMEOUT.as_secs()));
    }
    if stderr.contains("panicked") {
        problems.push(format!("panicked: {}", show(&out.stderr, 400)));
    }
    if !out.timed_out && (out.code, out.signal) != (Some(input.code), None) {
        problems.push(format!("status: want exit {}, got {}", input.code, out.status_text()));
    }
    let lower = stderr.to_lowercase();
    if stderr.trim().is_empty() {
        problems.push("no message on stderr".into());
    } else if !input.fragments.is_empty() && !input.fragments.iter().any(|f| lower.contains(&f.to_lowercase())) {
        problems.push(format!(
            "stderr should mention one of {:?}; it says: {}",
            input.fragments,
            show(&out.stderr, 300)
        ));
    }
    problems
}

#[test]
fn bad_inputs_get_clear_errors() {
    let out = ensure_testbins();
    let dir = TempDir::new("bad-input");
    let d = dir.path();
    let real = std::fs::read(out.join("hello.musl")).expect("reading testbins/out/hello.musl");

    // An x86-64 header whose program headers lie far outside the file.
    let mut hostile = elf64_header(62);
    hostile[32..40].copy_from_slice(&0xffff_ffff_0000u64.to_le_bytes()); // e_phoff
    hostile[56..58].copy_from_slice(&5u16.to_le_bytes()); // e_phnum

    let inputs = [
        BadInput { name: "empty file", file: write_input(d, "empty", b""), code: 126, fragments: &["empty"] },
        BadInput {
            name: "text file",
            file: write_input(d, "notes.txt", b"just some text\nnot a program\n"),
            code: 126,
            fragments: &["not an ELF", "not a", "format", "unsupported", "unrecognized", "unknown"],
        },
        BadInput {
            name: "truncated ELF (first 30 bytes of hello.musl)",
            file: write_input(d, "truncated", &real[..30]),
            code: 126,
            fragments: &["truncated", "too short", "short"],
        },
        BadInput {
            name: "AArch64 ELF header",
            file: write_input(d, "aarch64", &elf64_header(183)),
            code: 126,
            fragments: &["AArch64"],
        },
        BadInput {
            name: "32-bit ELF header",
            file: write_input(d, "i386", &elf32_header()),
            code: 126,
            fragments: &["32-bit"],
        },
        BadInput {
            name: "x86-64 header with program headers out of the file",
            file: write_input(d, "hostile", &hostile),
            code: 126,
            fragments: &[],
        },
        BadInput {
            name: "dynamic program whose dynamic linker is missing",
            file: write_input(d, "nointerp", &missing_interp(&out.join("hello.dynamic"))),
            code: 127,
            fragments: &["No such file", "ld-linux-x86-64.so.X"],
        },
        BadInput {
            name: "missing file",
            file: d.join("does-not-exist"),
            code: 127,
            fragments: &["not found", "No such file"],
        },
    ];

    let mut failed = Vec::new();
    for input in &inputs {
        let mut cmd = Command::new(urun());
        cmd.arg(&input.file);
        let outcome = run(&mut cmd, b"", TIMEOUT);
        let problems = check(input, &outcome);
        if problems.is_empty() {
            println!("PASS {} ({}: {})", input.name, outcome.status_text(), show(&outcome.stderr, 120));
        } else {
            println!("FAIL {}", input.name);
            for p in &problems {
                println!("    - {p}");
            }
            failed.push(input.name);
        }
    }
    println!("bad input summary: {} passed, {} failed", inputs.len() - failed.len(), failed.len());
    assert!(failed.is_empty(), "bad input cases failed: {}", failed.join(", "));
}

#[test]
fn strace_shows_write_and_exit_group() {
    let out = ensure_testbins();
    let mut cmd = Command::new(urun());
    cmd.arg("--strace").arg(out.join("hello.musl"));
    let outcome = run(&mut cmd, b"", TIMEOUT);
    let stderr = outcome.stderr_text();
    let mut problems = Vec::new();
    if outcome.timed_out || outcome.spawn_error.is_some() || outcome.code != Some(0) {
        problems.push(format!("status: want exit 0, got {}", outcome.status_text()));
    }
    if outcome.stdout != b"Hello, world!\n" {
        problems.push(format!("stdout: want \"Hello, world!\\n\", got \"{}\"", show(&outcome.stdout, 200)));
    }
    if stderr.contains("panicked") {
        problems.push("panicked".into());
    }
    // musl's puts writes with writev(2), not write(2): accept either.
    for calls in [&["write(", "writev("][..], &["exit_group("][..]] {
        if !stderr.lines().any(|l| calls.iter().any(|c| l.starts_with(c))) {
            problems.push(format!("no stderr line starts with {}", calls.join(" or ")));
        }
    }
    assert!(
        problems.is_empty(),
        "urun --strace hello.musl:\n  {}\nstderr was:\n{}",
        problems.join("\n  "),
        show(&outcome.stderr, 2000)
    );
}
