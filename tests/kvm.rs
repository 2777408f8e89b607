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
    under_kvm_with(program, args, &[])
}

/// Under the KVM engine with extra environment variables for urun (test
/// hooks such as URUN_KVM_PHYS_BITS).
fn under_kvm_with(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut cmd = Command::new(urun());
    cmd.arg("--engine").arg("kvm").arg(program).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, b"", TIMEOUT)
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
        // Many signals into a guest that spins in user code and makes raw
        // syscalls, with a value held in an XMM register across each
        // syscall and FP work in the handler: every frame must carry the
        // x87/SSE state of the moment (the KVM engine leaves it in the
        // vCPU after a syscall exit until a signal needs it).
        "itimer_spin",
        r#"#include <signal.h>
#include <stdio.h>
#include <sys/time.h>
static volatile int hits;
static volatile double hsum;
static void h(int s) { (void)s; double x = hits * 0.25; hsum += x * 3.0 + 1.5; hits++; }
static double keep_across_syscall(double v) {
    long r;
    __asm__ volatile("syscall" : "=a"(r), "+x"(v) : "a"(110L) : "rcx", "r11", "memory");
    return r > 0 ? v : -1;
}
int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = h;
    sigaction(SIGALRM, &sa, 0);
    struct itimerval it = {{0, 300}, {0, 300}};
    setitimer(ITIMER_REAL, &it, 0);
    long bad = 0, calls = 0;
    for (long i = 0; hits < 400; i++) {
        double y = (double)(i & 1023) * 0.5;
        if (y * 2.0 != (double)(i & 1023)) bad++;
        if ((i & 63) == 0) {
            double v = (double)i + 0.25;
            if (keep_across_syscall(v) != v) bad++;
            calls++;
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, 0);
    printf("400 signals handled: %d, FP mismatches: %ld, syscalls made: %d\n", hits >= 400, bad, calls > 0);
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

/// Build one of the C programs here (scripts/test installs gcc: not
/// building is a failure).
fn build(dir: &TempDir, name: &str, source: &str) -> Result<std::path::PathBuf, String> {
    let c = dir.path().join(format!("{name}.c"));
    let exe = dir.path().join(name);
    std::fs::write(&c, source).expect("writing a C source");
    match Command::new("gcc").arg("-O1").arg("-o").arg(&exe).arg(&c).arg("-lpthread").status() {
        Ok(s) if s.success() => Ok(exe),
        other => Err(format!("{name}: cannot build it with gcc ({other:?})")),
    }
}

#[test]
fn threads_fork_signals_vs_native() {
    if !kvm_or_skip("threads_fork_signals_vs_native") {
        return;
    }
    let dir = TempDir::new("kvm-extra");
    let mut failures = Vec::new();
    for (name, source) in EXTRA {
        let exe = match build(&dir, name, source) {
            Ok(exe) => exe,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let d = differences(&native(&exe, &[]), &under_kvm(&exe, &[]));
        if d.is_empty() {
            println!("ok: {name}");
        } else {
            failures.push(format!("{name}:\n  {}", d.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "under --engine kvm:\n{}", failures.join("\n"));
}

/// A guest that maps 6 GiB (untouched but two pages): it needs that much
/// guest-physical space in the VM.
const BIG_MAP: &str = r#"#include <stdio.h>
#include <sys/mman.h>
int main(void) {
    size_t len = 6UL << 30;
    char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    p[0] = 1; p[len - 1] = 2;
    printf("%d\n", p[0] + p[len - 1]);
    munmap(p, len);
    return 0;
}
"#;

/// The physical-address width of the host this suite runs on stands in
/// for a smaller one: Intel Xeons with 46 bits (where KVM refuses
/// guest-physical addresses at or above 2^46, and host addresses reach
/// 2^47) and older parts with 36. With URUN_KVM_PHYS_BITS=36 every
/// program must still behave as natively, a 6 GiB mapping included.
#[test]
fn small_physical_width_vs_native() {
    if !kvm_or_skip("small_physical_width_vs_native") {
        return;
    }
    let out = ensure_testbins();
    let narrow = [("URUN_KVM_PHYS_BITS", "36")];
    // The override took effect (urun says so in its debug log).
    let o = under_kvm_with(&out.join("asm_exit"), &[], &[narrow[0], ("URUN_LOG", "debug")]);
    assert!(o.stderr_text().contains("guest-physical width bits=36"), "{}", o.stderr_text());
    let dir = TempDir::new("kvm-narrow");
    let mut programs: Vec<(std::path::PathBuf, Vec<&str>)> =
        cases().into_iter().map(|(name, args)| (out.join(name), args)).collect();
    let mut failures = Vec::new();
    for (name, source) in EXTRA.iter().chain(&[("big_map", BIG_MAP)]) {
        match build(&dir, name, source) {
            Ok(exe) => programs.push((exe, vec![])),
            Err(e) => failures.push(e),
        }
    }
    for (program, args) in &programs {
        let d = differences(&native(program, args), &under_kvm_with(program, args, &narrow));
        if !d.is_empty() {
            failures.push(format!("{}:\n  {}", program.display(), d.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "under --engine kvm with 36 physical bits:\n{}", failures.join("\n"));
}

/// Guest memory that does not fit below the physical width is urun's
/// limit, not the guest's fault: one clear line and status 125, never a
/// crash. (Natively the program runs; that is the point of the limit.)
#[test]
fn memory_beyond_the_physical_width_is_one_clear_line() {
    if !kvm_or_skip("memory_beyond_the_physical_width_is_one_clear_line") {
        return;
    }
    let dir = TempDir::new("kvm-wide");
    let exe = build(&dir, "big_map", BIG_MAP).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(native(&exe, &[]).stdout, b"3\n");
    let o = under_kvm_with(&exe, &[], &[("URUN_KVM_PHYS_BITS", "32")]);
    let err = o.stderr_text();
    assert_eq!(o.code, Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("urun: --engine kvm: guest-physical space exhausted"), "{err}");
}

/// Threads until pthread_create fails, then all released and joined, then
/// one more.
const THREAD_LIMIT: &str = r#"#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static int fds[2];
static void *wait_(void *p) { char c; if (read(fds[0], &c, 1) != 1) return 0; return p; }
int main(void) {
    pthread_t t[8];
    int n = 0, err = 0;
    if (pipe(fds)) return 1;
    for (; n < 8; n++) if ((err = pthread_create(&t[n], 0, wait_, 0))) break;
    printf("created %d of 8%s%s\n", n, err ? ": " : "", err ? strerror(err) : "");
    for (int i = 0; i < n; i++) if (write(fds[1], "x", 1) != 1) return 1;
    for (int i = 0; i < n; i++) pthread_join(t[i], 0);
    err = pthread_create(&t[0], 0, wait_, 0);
    if (!err) { if (write(fds[1], "x", 1) != 1) return 1; pthread_join(t[0], 0); }
    printf("after joining: %s\n", err ? strerror(err) : "created");
    return 0;
}
"#;

/// No vCPU left for a new guest thread (lowered to 3 by a test hook, as
/// KVM's own limit or urun's 254 would be reached) is EAGAIN for the
/// guest's clone: the program goes on, and the vCPUs of joined threads
/// serve new ones. Natively all 8 start, so this is checked against the
/// expected text, not against the native run.
#[test]
fn no_vcpu_left_is_eagain_for_clone() {
    if !kvm_or_skip("no_vcpu_left_is_eagain_for_clone") {
        return;
    }
    let dir = TempDir::new("kvm-vcpus");
    let exe = build(&dir, "thread_limit", THREAD_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let n = native(&exe, &[]);
    assert_eq!(String::from_utf8_lossy(&n.stdout), "created 8 of 8\nafter joining: created\n");
    let o = under_kvm_with(&exe, &[], &[("URUN_KVM_MAX_VCPUS", "3")]);
    assert_eq!(
        (String::from_utf8_lossy(&o.stdout).as_ref(), o.stderr_text().as_str(), o.code),
        ("created 2 of 8: Resource temporarily unavailable\nafter joining: created\n", "", Some(0))
    );
}

/// Maps, grows, protects and unmaps about 7 GiB in all, a few MiB at a
/// time.
const CHURN: &str = r#"#define _GNU_SOURCE
#include <stdio.h>
#include <sys/mman.h>
int main(void) {
    unsigned long sum = 0, total = 0;
    for (int i = 0; i < 1500; i++) {
        size_t len = (size_t)(1 + i % 7) << 20;
        char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { perror("mmap"); return 1; }
        p[0] = (char)i; p[len - 1] = 1;
        if (i % 5 == 0) {
            char *q = mremap(p, len, len * 2, MREMAP_MAYMOVE);
            if (q == MAP_FAILED) { perror("mremap"); return 1; }
            p = q; len *= 2; p[len - 1] = 2;
        }
        if (i % 3 == 0 && mprotect(p + 4096, 4096, PROT_READ)) { perror("mprotect"); return 1; }
        sum += (unsigned char)p[0] + p[len - 1];
        total += len;
        munmap(p, len);
    }
    printf("%lu in %lu MiB\n", sum, total >> 20);
    return 0;
}
"#;

/// Guest-physical space freed by unmapping is handed out again: a guest
/// that maps and unmaps far more than fits below 32 bits (about 3 GiB
/// usable there) in all, but never much at once, runs as natively.
#[test]
fn memory_churn_reuses_guest_physical_space() {
    if !kvm_or_skip("memory_churn_reuses_guest_physical_space") {
        return;
    }
    let dir = TempDir::new("kvm-churn");
    let exe = build(&dir, "churn", CHURN).unwrap_or_else(|e| panic!("{e}"));
    let n = native(&exe, &[]);
    assert!(String::from_utf8_lossy(&n.stdout).ends_with(" in 7196 MiB\n"), "{}", n.stderr_text());
    let d = differences(&n, &under_kvm_with(&exe, &[], &[("URUN_KVM_PHYS_BITS", "32")]));
    assert!(d.is_empty(), "under --engine kvm with 32 physical bits:\n  {}", d.join("\n  "));
}

/// Threads that allocate and free all the time (small blocks from the
/// heap, large ones from mmap, so memory is mapped and unmapped under the
/// other threads' feet), protect and unprotect pages, and come and go (each
/// thread's stack is mapped and unmapped): every thread prints nothing,
/// the main thread prints checksums that do not depend on scheduling.
const MALLOC_THREADS: &str = r#"#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#define NT 8
#define ROUNDS 300
static unsigned long sums[NT];
static void *worker(void *arg) {
    long id = (long)arg;
    unsigned long sum = 0;
    for (int i = 0; i < ROUNDS; i++) {
        size_t len = (size_t)(16 + (i * 7919 + id * 104729) % 300000);
        unsigned char *p = malloc(len);
        if (!p) return (void *)1;
        memset(p, (int)(i + id), len);
        sum += p[0] + p[len / 2] + p[len - 1];
        if (i % 10 == 0) {
            char *q = mmap(0, 3 << 12, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (q == MAP_FAILED) return (void *)2;
            q[0] = 1;
            mprotect(q + 4096, 4096, PROT_NONE);
            q[2 * 4096] = 3;
            sum += (unsigned char)q[0] + (unsigned char)q[2 * 4096];
            munmap(q, 3 << 12);
        }
        free(p);
    }
    sums[id] = sum;
    return 0;
}
int main(void) {
    for (int gen = 0; gen < 4; gen++) {
        pthread_t t[NT];
        for (long i = 0; i < NT; i++)
            if (pthread_create(&t[i], 0, worker, (void *)i)) { puts("create failed"); return 1; }
        for (int i = 0; i < NT; i++) {
            void *r;
            pthread_join(t[i], &r);
            if (r) { printf("thread %d failed: %ld\n", i, (long)r); return 1; }
        }
        unsigned long all = 0;
        for (int i = 0; i < NT; i++) all += sums[i];
        printf("generation %d: %lu\n", gen, all);
    }
    return 0;
}
"#;

/// Multi-threaded programs run many times under --engine kvm against their
/// native output: `runs` runs each, `parallel` at once (more guest threads
/// than cores, so vCPUs are preempted in the middle of each other's memory
/// resynchronisation). Returns the failures.
fn race_rounds(runs: usize, parallel: usize) -> Vec<String> {
    let out = ensure_testbins();
    let dir = TempDir::new("kvm-race");
    let mut programs: Vec<std::path::PathBuf> = [
        "threads.musl",
        "threads.glibc",
        "threads.dynamic",
        "threads.glibc-pie",
        "cxx_except.dynamic",
        "cxx_except.static",
    ]
    .iter()
    .map(|n| out.join(n))
    .collect();
    let mut failures = Vec::new();
    match build(&dir, "malloc_threads", MALLOC_THREADS) {
        Ok(exe) => programs.push(exe),
        Err(e) => failures.push(e),
    }
    for program in &programs {
        if !program.exists() {
            failures.push(format!("{}: missing", program.display()));
            continue;
        }
        let expected = native(program, &[]);
        let failed = std::sync::Mutex::new(Vec::new());
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..parallel {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= runs {
                        break;
                    }
                    let d = differences(&expected, &under_kvm(program, &[]));
                    if !d.is_empty() {
                        failed.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                            "{} (run {i}):\n  {}",
                            program.display(),
                            d.join("\n  ")
                        ));
                    }
                });
            }
        });
        let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
        println!("{}: {} of {runs} runs differ", program.display(), failed.len());
        failures.extend(failed);
    }
    failures
}

/// Threads racing on memory under the KVM engine (a few runs: the long
/// version below is in README's long-run commands).
#[test]
fn threads_race_vs_native() {
    if !kvm_or_skip("threads_race_vs_native") {
        return;
    }
    let f = race_rounds(2, 2);
    assert!(f.is_empty(), "under --engine kvm:\n{}", f.join("\n"));
}

/// As `threads_race_vs_native`, `URUN_KVM_RACE_RUNS` runs (default 100) of
/// each program, three at once.
#[test]
#[ignore]
fn threads_race_vs_native_long() {
    if !kvm_or_skip("threads_race_vs_native_long") {
        return;
    }
    let runs = std::env::var("URUN_KVM_RACE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let f = race_rounds(runs, 3);
    assert!(f.is_empty(), "{} failures under --engine kvm:\n{}", f.len(), f.join("\n"));
}
