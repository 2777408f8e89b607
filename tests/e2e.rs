//! End to end: every guest test program (testbins/, each build flavour) and a
//! few Debian busybox-static commands run natively and under
//! `urun --engine interp`; stdout, stderr, exit status and terminating signal
//! must be the same. The host is the oracle.
//!
//! One table of cases, one `check` that reports every difference of a case at
//! once, cases run in parallel on a few worker threads, each run killed after
//! a timeout (a hang is a failure). Prints one PASS/FAIL line per case and a
//! summary.
//!
//! Knobs (environment):
//!   URUN_E2E_FILTER=substr   only the cases whose name contains substr
//!   URUN_E2E_JOBS=n          worker threads (default: CPUs, clamped to 2..=4)
//!   URUN_E2E_TIMEOUT=secs    per-run timeout (default 60)
//!   URUN_E2E_BINARY=path     run this instead of the urun cargo built

mod common;

use common::{compare_runs, ensure_testbins, run, show, urun, Outcome, TempDir};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How the program must end natively. Checked first: if the native run does
/// not do this, the test program (not urun) is broken.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Exit(i32),
    Signal(i32),
}

#[derive(Clone, Debug)]
struct Case {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    stdin: Vec<u8>,
    /// Added to the fixed base environment.
    env: Vec<(String, String)>,
    cwd: PathBuf,
    expect: Expect,
}

/// The environment both runs get, and nothing else (env_clear first), so the
/// native program and the guest see the same variables.
const BASE_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("URUN_TEST_ALPHA", "alpha"),
    ("URUN_TEST_SPACES", "two words = one value"),
];

const FLAVOURS: &[&str] = &["glibc", "glibc-pie", "musl", "dynamic"];

/// C programs in testbins/: (program, case suffix, args, expected ending).
fn c_programs() -> Vec<(&'static str, &'static str, Vec<&'static str>, Expect)> {
    use Expect::*;
    vec![
        ("hello", "", vec![], Exit(0)),
        ("args", "", vec!["one", "two words", "", "--flag=x", "ünïcödé", "*"], Exit(0)),
        ("auxv", "", vec![], Exit(0)),
        ("exitcode", "-0", vec!["0"], Exit(0)),
        ("exitcode", "-3", vec!["3"], Exit(3)),
        ("exitcode", "-255", vec!["255"], Exit(255)),
        ("arith", "", vec![], Exit(0)),
        ("strings", "", vec![], Exit(0)),
        ("libc_strings", "", vec![], Exit(0)),
        ("floatfmt", "", vec![], Exit(0)),
        ("printf", "", vec![], Exit(0)),
        ("memory", "", vec![], Exit(0)),
        ("qsort", "", vec![], Exit(0)),
        ("munmap_huge", "", vec![], Exit(0)),
        ("reserve", "", vec!["5000"], Exit(0)),
        ("segv", "", vec![], Signal(libc::SIGSEGV)),
        ("fpe", "", vec![], Signal(libc::SIGFPE)),
        // SIGFPE caught: si_code, si_addr, saved RIP (under the JIT: the
        // host's SIGFPE in translated code, made the guest's)
        ("fpe_catch", "", vec![], Exit(0)),
        // code and the data it writes in one page (one 64-byte granule)
        ("codedata", "", vec![], Exit(0)),
        ("ill", "", vec![], Signal(libc::SIGILL)),
        ("trap", "", vec![], Signal(libc::SIGTRAP)),
        // threads, signals, processes
        ("threads", "", vec![], Exit(0)),
        ("thread_exit", "", vec![], Exit(7)),
        ("thread_pexit", "", vec![], Exit(0)),
        ("signals", "", vec![], Exit(0)),
        ("sig_resethand", "", vec![], Signal(libc::SIGUSR1)),
        ("procs", "", vec![], Exit(0)),
        ("sigstorm", "", vec![], Exit(0)),
        ("cleartid_race", "", vec![], Exit(0)),
        // code written by another thread, and /proc/self/mem (also in
        // tests/smc.rs and tests/isolation.rs under both engines)
        ("smc", "-rwx", vec!["rwx"], Exit(0)),
        ("smc", "-single", vec!["single"], Exit(0)),
        ("procmem", "", vec![], Exit(0)),
    ]
}

/// Programs built for x86-64-v3 (`.v3` static, `.v3-dynamic`): (program,
/// expected ending). Run under the default CPU model (the host's), which
/// has AVX2 wherever the host does.
const V3_PROGRAMS: &[(&str, Expect)] = &[
    ("arith", Expect::Exit(0)),
    ("strings", Expect::Exit(0)),
    ("libc_strings", Expect::Exit(0)),
    ("floatfmt", Expect::Exit(0)),
    ("printf", Expect::Exit(0)),
    ("memory", Expect::Exit(0)),
    ("qsort", Expect::Exit(0)),
    ("vec3", Expect::Exit(0)),
    ("avx_signal", Expect::Exit(0)),
    ("cpucheck", Expect::Exit(0)),
];

/// C++ programs in testbins/, built static and dynamic: (program, expected ending).
const CXX_PROGRAMS: &[(&str, Expect)] = &[("cxx_except", Expect::Exit(0))];

/// nasm programs (no libc): (binary, expected ending).
const ASM_PROGRAMS: &[(&str, Expect)] = &[
    ("asm_hello", Expect::Exit(0)),
    ("asm_exit", Expect::Exit(42)),
    ("asm_flags", Expect::Exit(0)),
    ("asm_rowrite", Expect::Signal(libc::SIGSEGV)),
];

/// Files in testbins/out that are deliberately not e2e cases.
fn not_a_case(file: &str) -> bool {
    file.ends_with(".o")
        || file.starts_with("bench_") // benchmarks: bench/run
        || file == "isolation" // urun only: tests/isolation.rs
        || file == "rust-unwind" // a cargo target directory: tests/unwind.rs
        || file.starts_with("sysinsn.") // line by line, with kvm_pvm's known differences: tests/sysinsn.rs
        || file.starts_with("munmap_race.") // run ten times each: tests/races.rs
        || file.starts_with("sigbus_file.") // tests/races.rs
        || file.starts_with("sigpoints.") // interp and jit against native: tests/sigpoints.rs
        || file == "win" // Windows programs and their Linux twins: tests/pe.rs
}

fn testbin_cases(out: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for (prog, suffix, args, expect) in c_programs() {
        for flavour in FLAVOURS {
            cases.push(Case {
                name: format!("{prog}{suffix}.{flavour}"),
                program: out.join(format!("{prog}.{flavour}")),
                args: args.iter().map(|s| s.to_string()).collect(),
                stdin: Vec::new(),
                env: if prog == "args" {
                    vec![("URUN_TEST_CASE".into(), format!("args.{flavour}"))]
                } else {
                    Vec::new()
                },
                cwd: out.to_path_buf(),
                expect,
            });
        }
    }
    for &(prog, expect) in V3_PROGRAMS {
        for flavour in ["v3", "v3-dynamic"] {
            cases.push(Case {
                name: format!("{prog}.{flavour}"),
                program: out.join(format!("{prog}.{flavour}")),
                args: Vec::new(),
                stdin: Vec::new(),
                env: Vec::new(),
                cwd: out.to_path_buf(),
                expect,
            });
        }
    }
    for &(prog, expect) in CXX_PROGRAMS {
        for flavour in ["static", "dynamic"] {
            cases.push(Case {
                name: format!("{prog}.{flavour}"),
                program: out.join(format!("{prog}.{flavour}")),
                args: Vec::new(),
                stdin: Vec::new(),
                env: Vec::new(),
                cwd: out.to_path_buf(),
                expect,
            });
        }
    }
    for &(bin, expect) in ASM_PROGRAMS {
        cases.push(Case {
            name: bin.to_string(),
            program: out.join(bin),
            args: Vec::new(),
            stdin: Vec::new(),
            env: Vec::new(),
            cwd: out.to_path_buf(),
            expect,
        });
    }
    cases
}

/// Every built program must have a case: a new test program that nobody
/// added here would otherwise never run.
fn uncovered_testbins(out: &Path, cases: &[Case]) -> Vec<String> {
    let covered: BTreeSet<PathBuf> = cases.iter().map(|c| c.program.clone()).collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(out).expect("reading testbins/out").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !not_a_case(&name) && !covered.contains(&entry.path()) {
            missing.push(name);
        }
    }
    missing.sort();
    missing
}

/// Debian's busybox-static. Must be a static binary: urun runs only static
/// programs for now.
const BUSYBOX: &str = "/bin/busybox";

fn busybox_cases(dir: &Path) -> Vec<Case> {
    let text = common::words_text().into_bytes();
    std::fs::write(dir.join("input.txt"), &text).expect("writing busybox fixture");
    let case = |name: &str, args: &[&str], stdin: &[u8], expect: Expect| Case {
        name: format!("busybox-{name}"),
        program: PathBuf::from(BUSYBOX),
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: stdin.to_vec(),
        env: Vec::new(),
        cwd: dir.to_path_buf(),
        expect,
    };
    use Expect::Exit;
    vec![
        case("echo", &["echo", "hello", "world"], b"", Exit(0)),
        case("sh-for", &["sh", "-c", "for i in 1 2 3; do echo $i; done"], b"", Exit(0)),
        case("sh-exit", &["sh", "-c", "echo out; echo err >&2; exit 3"], b"", Exit(3)),
        case("sha256sum", &["sha256sum", "input.txt"], b"", Exit(0)),
        case("wc", &["wc", "input.txt"], b"", Exit(0)),
        case("wc-stdin", &["wc"], &text, Exit(0)),
        case("sort", &["sort", "input.txt"], b"", Exit(0)),
        case("expr", &["expr", "6", "*", "7"], b"", Exit(0)),
        case("seq", &["seq", "1", "5"], b"", Exit(0)),
    ]
}

fn command(program: &Path, under_urun: bool, case: &Case) -> Command {
    let mut cmd = if under_urun {
        let mut c = Command::new(urun());
        c.arg("--engine").arg(common::engine_under_test()).args(common::check_args()).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(&case.args).current_dir(&case.cwd).env_clear();
    cmd.envs(BASE_ENV.iter().copied());
    cmd.envs(case.env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Every difference between the native run and the urun run of one case.
fn check(case: &Case, native: &Outcome, urun: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    // The program itself first: if it misbehaves natively, comparing is moot.
    let native_ok = native.spawn_error.is_none()
        && !native.timed_out
        && match case.expect {
            Expect::Exit(c) => native.code == Some(c),
            Expect::Signal(s) => native.signal == Some(s),
        };
    if !native_ok {
        problems.push(format!(
            "native run: expected {:?}, got {} (the test program or its build is broken); stderr: {}",
            case.expect,
            native.status_text(),
            show(&native.stderr, 300)
        ));
    }
    problems.extend(compare_runs(native, urun));
    problems
}

/// Runs all cases on `jobs` threads; prints a line per case as it finishes;
/// returns the names and problems of the failed ones.
fn run_cases(cases: &[Case], jobs: usize, timeout: Duration) -> Vec<(String, Vec<String>)> {
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                let native = run(&mut command(&case.program, false, case), &case.stdin, timeout);
                let urun = run(&mut command(&case.program, true, case), &case.stdin, timeout);
                let problems = check(case, &native, &urun);
                let times =
                    format!("native {:.3} s, urun {:.3} s", native.elapsed.as_secs_f64(), urun.elapsed.as_secs_f64());
                if problems.is_empty() {
                    println!("PASS {} ({times})", case.name);
                } else {
                    let mut msg = format!("FAIL {} ({times})", case.name);
                    for p in &problems {
                        msg.push_str(&format!("\n    - {p}"));
                    }
                    println!("{msg}");
                    failed.lock().unwrap().push((case.name.clone(), problems));
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap();
    failed.sort();
    failed
}

#[test]
fn native_vs_urun() {
    let out = ensure_testbins();
    let fixtures = TempDir::new("e2e");

    let mut setup_problems = Vec::new();
    let mut cases = testbin_cases(&out);
    for missing in uncovered_testbins(&out, &cases) {
        setup_problems
            .push(format!("testbins/out/{missing} has no case in tests/e2e.rs: add one (or list it in not_a_case)"));
    }
    match common::elf_has_interp(Path::new(BUSYBOX)) {
        Ok(false) => cases.extend(busybox_cases(fixtures.path())),
        Ok(true) => setup_problems
            .push(format!("{BUSYBOX} is dynamically linked; install Debian's busybox-static (scripts/test does)")),
        Err(e) => setup_problems.push(format!("{BUSYBOX}: {e}; install Debian's busybox-static (scripts/test does)")),
    }

    if let Ok(filter) = std::env::var("URUN_E2E_FILTER") {
        cases.retain(|c| c.name.contains(&filter));
        println!("URUN_E2E_FILTER={filter}: {} cases selected", cases.len());
    }
    if !common::check_args().is_empty() {
        // Under --engine jit --check: the cases that do not pass yet, each
        // named with its reason (README, the JIT's limits).
        // (None at the moment.)
        const NOT_YET: &[(&str, &str)] = &[];
        cases.retain(|c| match NOT_YET.iter().find(|(p, _)| c.name.starts_with(p)) {
            Some((_, why)) => {
                let line = format!("SKIPPED CASE: {}: {why}\n", c.name);
                std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes()).expect("stderr");
                false
            }
            None => true,
        });
    }
    let jobs = std::env::var("URUN_E2E_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4));
    let timeout = common::env_secs("URUN_E2E_TIMEOUT", 60);
    println!("e2e: {} cases, {jobs} workers, {} s timeout per run, urun = {}", cases.len(), timeout.as_secs(), urun());

    let failed = run_cases(&cases, jobs, timeout);

    for p in &setup_problems {
        println!("SETUP FAIL {p}");
    }
    println!(
        "e2e summary: {} passed, {} failed, {} setup problems",
        cases.len() - failed.len(),
        failed.len(),
        setup_problems.len()
    );
    if !failed.is_empty() || !setup_problems.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        panic!(
            "{} of {} e2e cases failed: {}{}",
            failed.len(),
            cases.len(),
            names.join(", "),
            if setup_problems.is_empty() { String::new() } else { format!("; setup: {}", setup_problems.join("; ")) }
        );
    }
}
