//! What the README promises of the command line and of urun's own
//! behaviour, each run once: `-E`, `-U`, `-0` and their environment twins,
//! `-L SYSROOT`, the guest's `/proc/self` views, an unknown syscall
//! (-ENOSYS and a `--strace` line), and an instruction urun does not
//! implement (SIGILL, and the log names it), and the engine `--engine
//! auto` (the default) chooses: the JIT where it can run, otherwise the
//! interpreter with one line on stderr.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{compare_runs, ensure_testbins, kvm_or_skip, report_skip, run, show, urun, Outcome, TempDir};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Run urun with `args` in a small fixed environment plus `env`.
fn urun_with(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut c = Command::new(urun());
    c.args(args).env_clear().env("PATH", "/usr/bin:/bin").env("URUN_TEST_KEEP", "kept");
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c, b"", TIMEOUT)
}

fn stdout(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Build a C program from `src` with the host's gcc.
fn build_c(dir: &Path, name: &str, src: &str) -> String {
    let c = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    std::fs::write(&c, src).expect("write C source");
    let ok = Command::new("gcc").arg("-O1").arg("-o").arg(&exe).arg(&c).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "gcc could not build {name} (scripts/test installs gcc)");
    exe.to_string_lossy().into_owned()
}

#[test]
fn environment_and_argv0_options() {
    let out = ensure_testbins();
    let args = out.join("args.musl");
    let args = args.to_str().expect("utf-8 path");
    let expect = |o: &Outcome, argv0: &str, vars: &str| {
        let text = stdout(o);
        assert_eq!(o.code, Some(0), "{}", show(&o.stderr, 300));
        assert!(text.contains(&format!("argv[0]=[{argv0}]")), "argv0 {argv0}: {text}");
        assert!(text.contains(vars), "wanted {vars:?} in: {text}");
    };
    // Options.
    let o = urun_with(&["-E", "URUN_TEST_SET=yes", "-U", "URUN_TEST_KEEP", "-0", "renamed", args, "x"], &[]);
    expect(&o, "renamed", "URUN_TEST_SET=yes");
    assert!(!stdout(&o).contains("URUN_TEST_KEEP"), "-U did not remove it: {}", stdout(&o));
    // Their environment twins.
    let o = urun_with(
        &[args, "x"],
        &[("URUN_SET_ENV", "URUN_TEST_SET=twin"), ("URUN_UNSET_ENV", "URUN_TEST_KEEP"), ("URUN_ARGV0", "twin0")],
    );
    expect(&o, "twin0", "URUN_TEST_SET=twin");
    assert!(!stdout(&o).contains("URUN_TEST_KEEP"), "URUN_UNSET_ENV did not remove it: {}", stdout(&o));
}

#[test]
fn sysroot_comes_first_for_absolute_paths() {
    let d = TempDir::new("cli-sysroot");
    std::fs::create_dir_all(d.path().join("etc")).expect("mkdir");
    std::fs::write(d.path().join("etc/urun-test-file"), "from the sysroot\n").expect("write");
    let root = d.path().to_str().expect("utf-8 path");
    let o = urun_with(&["-L", root, "/bin/cat", "/etc/urun-test-file"], &[]);
    assert_eq!((stdout(&o).as_str(), o.code), ("from the sysroot\n", Some(0)), "{}", show(&o.stderr, 300));
    // Not under the sysroot: the host's file.
    let o = urun_with(&["-L", root, "/bin/cat", "/etc/debian_version"], &[]);
    assert_eq!(stdout(&o), std::fs::read_to_string("/etc/debian_version").unwrap_or_default());
}

#[test]
fn proc_self_shows_the_guest() {
    let exe = std::fs::canonicalize("/usr/bin/readlink").expect("readlink is installed");
    let o = urun_with(&["/usr/bin/readlink", "/proc/self/exe"], &[]);
    assert_eq!(stdout(&o).trim_end(), exe.to_str().unwrap_or_default());
    let o = urun_with(&["/bin/cat", "/proc/self/cmdline"], &[]);
    assert_eq!(o.stdout, b"/bin/cat\0/proc/self/cmdline\0");
    let o = urun_with(&["/bin/cat", "/proc/self/maps"], &[]);
    let maps = stdout(&o);
    let cat = std::fs::canonicalize("/bin/cat").expect("cat is installed");
    assert!(maps.contains(cat.to_str().unwrap_or_default()), "the guest's image is listed: {maps}");
    assert!(maps.contains("[stack]") && maps.contains("[heap]"), "{maps}");
    let me = std::fs::canonicalize(urun()).expect("urun binary");
    assert!(!maps.contains(me.to_str().unwrap_or_default()), "urun's own image must not show: {maps}");
}

#[test]
fn unknown_syscall_is_enosys_and_reported() {
    let d = TempDir::new("cli-nosys");
    let exe = build_c(
        d.path(),
        "nosys",
        "#include <errno.h>\n#include <unistd.h>\nint main(void){return syscall(1000) == -1 && errno == ENOSYS ? 0 : 1;}\n",
    );
    let o = urun_with(&["--strace", &exe], &[]);
    assert_eq!(o.code, Some(0), "the guest must see -ENOSYS: {}", show(&o.stderr, 300));
    assert!(o.stderr_text().contains("unknown syscall 1000"), "{}", o.stderr_text());
}

#[test]
fn unimplemented_instruction_is_sigill_and_named() {
    let d = TempDir::new("cli-sigill");
    // VPXORD on ZMM is AVX-512, which urun's interpreter does not implement
    // (nor decode: iced is built without EVEX, the report names the encoding).
    let exe = build_c(d.path(), "avx512", "int main(void){__asm__ volatile(\"vpxord %zmm0,%zmm0,%zmm0\");return 0;}\n");
    let o = urun_with(&["--engine", "interp", &exe], &[]);
    assert_eq!(o.signal, Some(libc::SIGILL), "{}", o.status_text());
    let err = o.stderr_text();
    assert!(err.contains("unimplemented instruction") && err.contains("EVEX-encoded (AVX-512)"), "{err}");
}

/// The line `--engine auto` says when the host keeps it from the JIT.
const FALLBACK: &str = "urun: using the interpreter, not the JIT: ";
/// The test hook that makes urun believe the host has no FSGSBASE.
const NO_FSGSBASE: (&str, &str) = ("URUN_NO_FSGSBASE", "1");

/// The engines urun's `engine` debug lines name (one per urun process, so
/// one per program the guest execve'd too), as `requested->chosen`.
fn engines_logged(o: &Outcome) -> Vec<String> {
    let field = |line: &str, name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(name).map(str::to_string)).unwrap_or_default()
    };
    o.stderr_text()
        .lines()
        .filter(|l| l.starts_with("DEBUG engine "))
        .map(|l| format!("{}->{}", field(l, "requested="), field(l, "engine=")))
        .collect()
}

/// Whether the JIT runs here (FSGSBASE), as urun itself finds.
fn jit_runs_here() -> bool {
    !urun_with(&["--engine", "jit", "/bin/true"], &[]).stderr_text().contains("no FSGSBASE")
}

/// A shell that writes to stdout and stderr and execve's two programs.
const SCRIPT: &[&str] = &["/bin/sh", "-c", "echo out; echo err >&2; /bin/echo child; /bin/sh -c 'exit 3'"];

fn native(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]).env_clear().env("PATH", "/usr/bin:/bin").env("URUN_TEST_KEEP", "kept");
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c, b"", TIMEOUT)
}

#[test]
fn default_engine_is_the_jit_where_it_can_run() {
    const TEST: &str = "default_engine_is_the_jit_where_it_can_run";
    let want = native(SCRIPT, &[]);
    assert_eq!((want.stdout.as_slice(), want.code), (b"out\nchild\n".as_slice(), Some(3)), "{}", want.stderr_text());
    // Without the log: exactly native (no line from urun).
    let got = urun_with(SCRIPT, &[]);
    if !jit_runs_here() {
        report_skip(TEST, "the host has no FSGSBASE (the fallback is tested by the next test)");
        return;
    }
    let problems = compare_runs(&want, &got);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // With it: sh and the two programs it execs each chose the JIT, and
    // the JIT translated code (its own debug line).
    let got = urun_with(SCRIPT, &[("URUN_LOG", "debug")]);
    assert_eq!(engines_logged(&got), ["auto->jit"; 3], "{}", show(&got.stderr, 2000));
    assert!(got.stderr_text().contains("jit: code region"), "{}", show(&got.stderr, 2000));
    assert_eq!(got.stdout, want.stdout);
    // --check goes with the JIT that auto chose.
    let got = urun_with(&["--check", "/bin/echo", "x"], &[("URUN_LOG", "debug")]);
    assert_eq!((got.code, got.stdout.as_slice()), (Some(0), b"x\n".as_slice()), "{}", show(&got.stderr, 2000));
    assert_eq!(engines_logged(&got), ["auto->jit"], "{}", show(&got.stderr, 2000));
    // `URUN_ENGINE=auto` is the same choice.
    let got = urun_with(&["/bin/true"], &[("URUN_LOG", "debug"), ("URUN_ENGINE", "auto")]);
    assert_eq!(engines_logged(&got), ["auto->jit"], "{}", show(&got.stderr, 2000));
}

#[test]
fn fallback_says_one_line_and_otherwise_matches_native() {
    let want = native(SCRIPT, &[NO_FSGSBASE]);
    let mut got = urun_with(SCRIPT, &[NO_FSGSBASE]);
    let err = got.stderr_text();
    let (first, rest) = err.split_once('\n').unwrap_or((&err, ""));
    assert!(first.starts_with(FALLBACK) && first.contains("no FSGSBASE"), "the first line: {err}");
    // Once, though sh execs two programs, each under urun again.
    got.stderr = rest.as_bytes().to_vec();
    let problems = compare_runs(&want, &got);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Every program ran under the interpreter, the JIT translated nothing.
    let got = urun_with(SCRIPT, &[NO_FSGSBASE, ("URUN_LOG", "debug")]);
    assert_eq!(engines_logged(&got), ["auto->interp", "interp->interp", "interp->interp"], "{}", got.stderr_text());
    assert!(!got.stderr_text().contains("jit: "), "{}", show(&got.stderr, 2000));
    // --check needs the JIT: one more line, status 2.
    let got = urun_with(&["--check", "/bin/true"], &[NO_FSGSBASE]);
    assert_eq!(got.code, Some(2), "{}", got.stderr_text());
    assert!(got.stderr_text().contains("--check: only with the JIT engine"), "{}", got.stderr_text());
}

#[test]
fn explicit_engines_are_obeyed() {
    // --engine jit where it cannot run: one line, status 125, as before.
    let got = urun_with(&["--engine", "jit", "/bin/echo", "x"], &[NO_FSGSBASE]);
    assert_eq!((got.code, got.stdout.as_slice()), (Some(125), b"".as_slice()), "{}", got.stderr_text());
    let err = got.stderr_text();
    assert!(err.starts_with("urun: --engine jit: no FSGSBASE") && err.lines().count() == 1, "{err}");
    // --engine interp (and URUN_ENGINE=interp): no line, whatever the host.
    for (args, env) in [
        (&["--engine", "interp", "/bin/echo", "x"][..], &[NO_FSGSBASE, ("URUN_LOG", "debug")][..]),
        (&["--engine", "interp", "/bin/echo", "x"][..], &[("URUN_LOG", "debug")][..]),
        (&["/bin/echo", "x"][..], &[("URUN_ENGINE", "interp"), ("URUN_LOG", "debug")][..]),
    ] {
        let got = urun_with(args, env);
        assert_eq!((got.code, got.stdout.as_slice()), (Some(0), b"x\n".as_slice()), "{}", got.stderr_text());
        assert_eq!(engines_logged(&got), ["interp->interp"], "{}", got.stderr_text());
        assert!(!got.stderr_text().contains(FALLBACK) && !got.stderr_text().contains("jit: "), "{}", got.stderr_text());
    }
    if kvm_or_skip("explicit_engines_are_obeyed (kvm)") {
        let got = urun_with(&["--engine", "kvm", "/bin/echo", "x"], &[NO_FSGSBASE, ("URUN_LOG", "debug")]);
        assert_eq!((got.code, got.stdout.as_slice()), (Some(0), b"x\n".as_slice()), "{}", got.stderr_text());
        assert_eq!(engines_logged(&got), ["kvm->kvm"], "{}", got.stderr_text());
        assert!(!got.stderr_text().contains(FALLBACK), "{}", got.stderr_text());
    }
}

/// Windows programs default as Linux ones do: the JIT where the host has
/// FSGSBASE, else the interpreter with the one line saying why.
#[test]
fn windows_programs_default_as_linux_ones() {
    const TEST: &str = "windows_programs_default_as_linux_ones";
    let exe = ensure_testbins().join("win/hello.exe");
    if !exe.is_file() {
        report_skip(TEST, "x86_64-w64-mingw32-gcc is not installed (Debian: gcc-mingw-w64-x86-64)");
        return;
    }
    let exe = exe.to_str().expect("utf-8 path");
    let want = urun_with(&["--engine", "interp", exe], &[]);
    assert_eq!(want.code, Some(0), "{}", want.stderr_text());
    let jit = !urun_with(&["--engine", "jit", "/bin/true"], &[]).stderr_text().contains("no FSGSBASE");
    for (env, engine) in [(&[][..], if jit { "jit" } else { "interp" }), (&[NO_FSGSBASE][..], "interp")] {
        let got = urun_with(&[exe], env);
        assert_eq!(got.stdout, want.stdout, "{env:?}: {}", got.stderr_text());
        assert_eq!(got.code, want.code, "{env:?}: {}", got.stderr_text());
        assert_eq!(engine == "interp", got.stderr_text().contains(FALLBACK), "{env:?}: {}", got.stderr_text());
        let mut env = env.to_vec();
        env.push(("URUN_LOG", "debug"));
        let got = urun_with(&[exe], &env);
        assert_eq!(engines_logged(&got), [format!("auto->{engine}")], "{}", got.stderr_text());
    }
}
