//! Shared by the integration tests: where things are, building the guest
//! test programs, and running a process with a timeout while capturing
//! everything a user can observe (stdout, stderr, exit status, signal).

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The urun binary under test: the one cargo built, unless URUN_E2E_BINARY
/// names another (another build, or a stand-in to check the harness itself).
pub fn urun() -> String {
    std::env::var("URUN_E2E_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_urun").to_string())
}

/// The repository root (the root package's manifest directory).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `testbins/out`, where the Makefile puts the guest programs.
pub fn testbins_out() -> PathBuf {
    repo_root().join("testbins").join("out")
}

/// Builds the guest programs with `make -C testbins` once per test binary.
/// Make is incremental, so this is cheap when they are up to date. If
/// `testbins/out` is missing and cannot be built, this panics: a suite that
/// silently ran nothing would prove nothing.
pub fn ensure_testbins() -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let out = testbins_out();
        let existed = out.is_dir();
        match Command::new("make").arg("-C").arg(repo_root().join("testbins")).arg("-j2").output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "`make -C testbins` failed ({}):\n{}\n{}\n\
                 (scripts/test installs what it needs: gcc, make, musl-tools, nasm)",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) if existed => {
                eprintln!("warning: cannot run make ({e}); using the existing testbins/out as is");
                Ok(())
            }
            Err(e) => Err(format!("testbins/out is missing and `make -C testbins` could not run: {e}")),
        }
    });
    if let Err(msg) = result {
        panic!("{msg}");
    }
    testbins_out()
}

/// Everything observable about one finished (or killed) process.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Exit code if the process exited.
    pub code: Option<i32>,
    /// Terminating signal if a signal killed it.
    pub signal: Option<i32>,
    /// It ran past the timeout and was killed (then code/signal describe
    /// the kill, not the program).
    pub timed_out: bool,
    /// It could not be started at all.
    pub spawn_error: Option<String>,
    pub elapsed: Duration,
}

impl Outcome {
    /// "exit 0", "signal 11 (SIGSEGV)", "hung", ...
    pub fn status_text(&self) -> String {
        if let Some(e) = &self.spawn_error {
            return format!("failed to start: {e}");
        }
        if self.timed_out {
            return "hung (killed at the timeout)".into();
        }
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("signal {s} ({})", signal_name(s)),
            _ => "unknown status".into(),
        }
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        _ => "?",
    }
}

/// Runs `cmd` with `stdin` fed to it, capturing stdout and stderr, and kills
/// its whole process group if it runs longer than `timeout`. Core dumps are
/// disabled in the child: programs that die by signals are part of the suite.
pub fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Outcome {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setrlimit, which is async-signal-safe; it touches no Rust-managed state.
    unsafe {
        cmd.pre_exec(|| {
            let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome { spawn_error: Some(e.to_string()), ..Default::default() };
        }
    };
    let pgid = child.id() as libc::pid_t;

    let mut child_stdin = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // A program that exits without reading its input gives EPIPE: fine.
        let _ = child_stdin.write_all(&input);
    });
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out_reader = reader(Box::new(child.stdout.take().expect("stdout is piped")));
    let err_reader = reader(Box::new(child.stderr.take().expect("stderr is piped")));

    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        if start.elapsed() > timeout {
            timed_out = true;
            // SAFETY: kill(2) with a negative pid signals the process group we
            // created for this child (process_group(0) above); no memory is
            // involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Outcome {
        stdout,
        stderr,
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        timed_out,
        spawn_error: None,
        elapsed,
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("urun-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether an ELF file asks for a program interpreter (is dynamically
/// linked). Reads the program headers by hand: no dependency needed.
pub fn elf_has_interp(path: &Path) -> std::io::Result<bool> {
    let data = std::fs::read(path)?;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| data.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |o: usize| data.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 64-bit ELF file");
    if data.get(..5) != Some(b"\x7fELF\x02") {
        return Err(bad());
    }
    let phoff = u64_at(0x20).ok_or_else(bad)?;
    let phentsize = u16_at(0x36).ok_or_else(bad)?;
    let phnum = u16_at(0x38).ok_or_else(bad)?;
    for i in 0..phnum {
        const PT_INTERP: u32 = 3;
        if u32_at(phoff + i * phentsize).ok_or_else(bad)? == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Shows bytes as text for a failure message, shortened to `max` chars.
pub fn show(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.escape_debug().to_string();
    if s.chars().count() > max {
        format!("{}... ({} bytes)", s.chars().take(max).collect::<String>(), bytes.len())
    } else {
        s
    }
}

/// Reads a duration in seconds from an environment variable.
pub fn env_secs(var: &str, default: u64) -> Duration {
    Duration::from_secs(std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

/// The engine the native-vs-urun tests run urun with: `URUN_TEST_ENGINE`
/// (`interp` unless set; `scripts/test` runs the suites again with `kvm`
/// where /dev/kvm is usable).
pub fn engine_under_test() -> String {
    std::env::var("URUN_TEST_ENGINE").unwrap_or_else(|_| "interp".into())
}

/// `--check` (every JIT block in lockstep with the interpreter) when
/// `URUN_CHECK` is set for the test run: the cases clear the environment,
/// so the flag goes on the command line.
pub fn check_args() -> Vec<&'static str> {
    if std::env::var_os("URUN_CHECK").is_some_and(|v| !v.is_empty() && v != "0") {
        vec!["--check"]
    } else {
        Vec::new()
    }
}

/// Where two outputs first differ, for a readable failure.
pub fn describe_diff(what: &str, native: &[u8], urun: &[u8]) -> Option<String> {
    if native == urun {
        return None;
    }
    let n_lines: Vec<&[u8]> = native.split(|&b| b == b'\n').collect();
    let u_lines: Vec<&[u8]> = urun.split(|&b| b == b'\n').collect();
    let i = n_lines.iter().zip(&u_lines).position(|(a, b)| a != b).unwrap_or(n_lines.len().min(u_lines.len()));
    Some(format!(
        "{what} differs ({} bytes native, {} under urun); first difference at line {}:\n        native: {}\n        urun:   {}",
        native.len(),
        urun.len(),
        i + 1,
        n_lines.get(i).map_or("<end>".into(), |l| show(l, 200)),
        u_lines.get(i).map_or("<end>".into(), |l| show(l, 200)),
    ))
}

/// Every way the urun run differs from the native one: it could not start,
/// hung, panicked, ended differently, or printed something else.
pub fn compare_runs(native: &Outcome, urun: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(e) = &urun.spawn_error {
        problems.push(format!("could not start urun: {e}"));
        return problems;
    }
    if urun.timed_out {
        problems.push(format!("urun hung: killed after {:.0} s", urun.elapsed.as_secs_f64()));
    }
    if String::from_utf8_lossy(&urun.stderr).contains("panicked") {
        problems.push(format!("urun panicked: {}", show(&urun.stderr, 400)));
    }
    if !urun.timed_out && (native.code, native.signal) != (urun.code, urun.signal) {
        problems.push(format!("status: native {}, urun {}", native.status_text(), urun.status_text()));
    }
    problems.extend(describe_diff("stdout", &native.stdout, &urun.stdout));
    problems.extend(describe_diff("stderr", &native.stderr, &urun.stderr));
    problems
}

/// A deterministic 3000-line text (xorshift words and numbers), the input
/// of the sort/wc/sha256sum/grep cases.
pub fn words_text() -> String {
    let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
    let mut s = String::new();
    let mut x: u32 = 2463534242;
    for i in 0..3000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let w = words[(x % 8) as usize];
        s.push_str(&format!("{w} {:08x} line{i}\n", x));
    }
    s
}

#[allow(unused_imports)] // each test binary uses a different subset
pub use urun_cpu::testing::{report_skip, report_skipped_case};

/// Whether the KVM engine's tests should run: true where /dev/kvm opens
/// (urun's VM must then work: its failures are test failures), false after
/// reporting `test` as skipped where it does not open.
pub fn kvm_or_skip(test: &str) -> bool {
    match urun_cpu::testing::kvm_device_opens() {
        Ok(()) => true,
        Err(why) => {
            report_skip(test, &why);
            false
        }
    }
}

/// Run tests of `engine` here? The interpreter always; KVM as
/// [`kvm_or_skip`] says; the JIT unless the host lacks FSGSBASE (said on
/// stderr as a skip).
pub fn engine_or_skip(engine: &str, test: &str) -> bool {
    match engine {
        "kvm" => kvm_or_skip(test),
        "jit" => {
            // The JIT needs FSGSBASE; a host without it is a skip, said so.
            let probe = run(Command::new(urun()).args(["--engine", "jit", "/bin/true"]), b"", Duration::from_secs(60));
            if probe.stderr_text().contains("no FSGSBASE") {
                let line = format!("SKIPPED: {test}: the host has no FSGSBASE\n");
                let _ = std::io::stderr().write_all(line.as_bytes());
                return false;
            }
            true
        }
        _ => true,
    }
}

/// The four builds of every C test program (`testbins/Makefile`).
pub const C_BUILDS: &[&str] = &["glibc", "glibc-pie", "musl", "dynamic"];

/// Run `testbins/out/NAME.BUILD MODE` for every C build and mode, natively
/// (which must exit 0) and under `urun --engine ENGINE`; panic listing every
/// difference in stdout, stderr, exit status or signal.
pub fn modes_match_native(name: &str, modes: &[&str], engine: &str, timeout: Duration) {
    let out = ensure_testbins();
    let mut problems = Vec::new();
    for build in C_BUILDS {
        let program = out.join(format!("{name}.{build}"));
        for mode in modes {
            let native = run(Command::new(&program).arg(mode), b"", timeout);
            assert_eq!(
                (native.code, native.signal),
                (Some(0), None),
                "{name}.{build} {mode} fails natively: {}",
                native.stderr_text()
            );
            let guest = run(Command::new(urun()).arg("--engine").arg(engine).arg(&program).arg(mode), b"", timeout);
            for p in compare_runs(&native, &guest) {
                problems.push(format!("{name}.{build} {mode} under {engine}: {p}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The engines the Windows same-source cases run under; "jit-check" is
/// `--engine jit --check` (each block run in lockstep with the
/// interpreter, its first runs compared).
#[allow(dead_code)]
pub const PE_ENGINES: [&str; 4] = ["interp", "kvm", "jit", "jit-check"];

/// urun's options for an entry of `PE_ENGINES`.
#[allow(dead_code)]
pub fn engine_args(engine: &str) -> Vec<&str> {
    match engine {
        "jit-check" => vec!["--engine", "jit", "--check"],
        e => vec!["--engine", e],
    }
}

/// `engine_or_skip` for an entry of `PE_ENGINES`.
#[allow(dead_code)]
pub fn usable(engine: &str, test: &str) -> bool {
    engine_or_skip(if engine == "jit-check" { "jit" } else { engine }, test)
}
