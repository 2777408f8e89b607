//! `urun --engine kvm`: test programs run natively and in the KVM engine,
//! comparing stdout, stderr, exit status and terminating signal.
//!
//! Reported skipped, with the reason, where /dev/kvm does not open; where it
//! opens, urun's VM must work and any failure is a test failure.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{ensure_testbins, kvm_or_skip, report_skip, run, urun, Outcome, TempDir};

/// Programs (with arguments) that must behave exactly as natively: the
/// assembly programs, each C program in every build (static glibc, static
/// PIE, musl, dynamic), and the fault programs.
fn cases() -> Vec<(String, Vec<&'static str>)> {
    let mut v: Vec<(String, Vec<&'static str>)> =
        ["asm_exit", "asm_hello", "asm_flags", "asm_rowrite"].iter().map(|n| (n.to_string(), vec![])).collect();
    let c: &[(&str, &[&str])] = &[
        ("hello", &[]),
        ("args", &["one", "two words", ""]),
        ("arith", &[]),
        ("exitcode", &["7"]),
        ("printf", &[]),
        ("strings", &[]),
        ("qsort", &[]),
        ("memory", &[]),
        ("munmap_huge", &[]),
        ("auxv", &[]),
        ("segv", &[]),
        ("fpe", &[]),
        ("ill", &[]),
        ("trap", &[]),
    ];
    for (name, args) in c {
        for build in ["glibc", "glibc-pie", "musl", "dynamic"] {
            v.push((format!("{name}.{build}"), args.to_vec()));
        }
    }
    v
}

const TIMEOUT: Duration = Duration::from_secs(60);

fn native(program: &Path, args: &[&str]) -> Outcome {
    run(Command::new(program).args(args), b"", TIMEOUT)
}

fn under_kvm(program: &Path, args: &[&str]) -> Outcome {
    run(Command::new(urun()).arg("--engine").arg("kvm").arg(program).args(args), b"", TIMEOUT)
}

/// Differences between the native and the KVM run, if any.
fn differences(native: &Outcome, kvm: &Outcome) -> Vec<String> {
    let mut d = Vec::new();
    if native.status_text() != kvm.status_text() {
        d.push(format!("status: native {}, kvm {}", native.status_text(), kvm.status_text()));
    }
    if native.stdout != kvm.stdout {
        d.push(format!(
            "stdout: native {:?}, kvm {:?}",
            String::from_utf8_lossy(&native.stdout),
            String::from_utf8_lossy(&kvm.stdout)
        ));
    }
    if native.stderr != kvm.stderr {
        d.push(format!("stderr: native {:?}, kvm {:?}", native.stderr_text(), kvm.stderr_text()));
    }
    d
}

#[test]
fn native_vs_kvm() {
    if !kvm_or_skip("native_vs_kvm") {
        return;
    }
    let out = ensure_testbins();
    let mut failures = Vec::new();
    for (name, args) in cases() {
        let program = out.join(&name);
        if !program.exists() {
            failures.push(format!("{name}: missing from testbins/out"));
            continue;
        }
        let d = differences(&native(&program, &args), &under_kvm(&program, &args));
        if d.is_empty() {
            println!("ok: {name}");
        } else {
            failures.push(format!("{name}:\n  {}", d.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "under --engine kvm:\n{}", failures.join("\n"));
}

/// Without KVM, `--engine kvm` says so in one line and exits 125. The
/// test hides /dev/kvm behind /dev/null in a private mount namespace (so it
/// runs on machines that have KVM too); where it cannot make one (not
/// root), it is reported skipped.
#[test]
fn unusable_kvm_is_one_clear_line() {
    let out = ensure_testbins();
    const HIDE: &str = "mount --bind /dev/null /dev/kvm";
    let script = format!("{HIDE} && exec {} --engine kvm {}", urun(), out.join("asm_exit").display());
    // Where /dev/kvm does not exist there is nothing to hide.
    let hide = Path::new("/dev/kvm").exists();
    let o = if hide {
        let probe = run(Command::new("unshare").args(["--mount", "sh", "-c", HIDE]), b"", TIMEOUT);
        if probe.code != Some(0) {
            report_skip(
                "unusable_kvm_is_one_clear_line",
                &format!("cannot make a mount namespace to hide /dev/kvm: {}", probe.stderr_text().trim()),
            );
            return;
        }
        run(Command::new("unshare").args(["--mount", "sh", "-c", &script]), b"", TIMEOUT)
    } else {
        under_kvm(&out.join("asm_exit"), &[])
    };
    assert_eq!(o.code, Some(125), "stderr: {}", o.stderr_text());
    let err = o.stderr_text();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("urun: --engine kvm: no usable /dev/kvm ("), "{err}");
}

/// Programs that exercise what the testbins do not: several guest threads
/// (one vCPU each), fork (the child makes its own VM), and a signal that
/// must interrupt a guest spinning in user code.
const EXTRA: &[(&str, &str)] = &[
    (
        "threads",
        r#"#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
static long sum[4];
static void *work(void *p) {
    long i = (long)p; double x = 0;
    for (long k = 0; k < 200000; k++) x += k * 0.5;
    char *m = malloc(1 << 20); m[5] = 1; free(m);
    sum[i] = (long)x + i; return 0;
}
int main(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], 0, work, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], 0);
    for (int i = 0; i < 4; i++) printf("%ld\n", sum[i]);
    return 0;
}
"#,
    ),
    (
        "fork",
        r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
int main(void) {
    char *buf = malloc(100000); strcpy(buf, "parent data");
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) { char *b = malloc(200000); memset(b, 1, 200000); printf("child sees: %s %d\n", buf, b[100]); return 3; }
    int st; waitpid(p, &st, 0);
    printf("child exit %d\n", WEXITSTATUS(st));
    return 0;
}
"#,
    ),
    (
        "alarm_spin",
        r#"#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static volatile int hits;
static void h(int s) { (void)s; hits++; }
int main(void) {
    signal(SIGALRM, h);
    alarm(1);
    while (!hits) { }
    printf("alarm handled %d\n", hits);
    return 0;
}
"#,
    ),
];

#[test]
fn threads_fork_signals_vs_native() {
    if !kvm_or_skip("threads_fork_signals_vs_native") {
        return;
    }
    let dir = TempDir::new("kvm-extra");
    let mut failures = Vec::new();
    for (name, source) in EXTRA {
        let c = dir.path().join(format!("{name}.c"));
        let exe = dir.path().join(name);
        std::fs::write(&c, source).expect("writing a C source");
        match Command::new("gcc").arg("-O1").arg("-o").arg(&exe).arg(&c).arg("-lpthread").status() {
            Ok(s) if s.success() => {}
            // scripts/test installs gcc: not building is a failure.
            other => {
                failures.push(format!("{name}: cannot build it with gcc ({other:?})"));
                continue;
            }
        }
        let d = differences(&native(&exe, &[]), &under_kvm(&exe, &[]));
        if d.is_empty() {
            println!("ok: {name}");
        } else {
            failures.push(format!("{name}:\n  {}", d.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "under --engine kvm:\n{}", failures.join("\n"));
}
