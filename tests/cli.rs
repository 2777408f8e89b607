//! What the README promises of the command line and of urun's own
//! behaviour, each run once: `-E`, `-U`, `-0` and their environment twins,
//! `-L SYSROOT`, the guest's `/proc/self` views, an unknown syscall
//! (-ENOSYS and a `--strace` line), and an instruction urun does not
//! implement (SIGILL, and the log names it).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{ensure_testbins, run, show, urun, Outcome, TempDir};

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
    // VPXORD on ZMM is AVX-512, which urun's interpreter does not implement.
    let exe = build_c(d.path(), "avx512", "int main(void){__asm__ volatile(\"vpxord %zmm0,%zmm0,%zmm0\");return 0;}\n");
    let o = urun_with(&["--engine", "interp", &exe], &[]);
    assert_eq!(o.signal, Some(libc::SIGILL), "{}", o.status_text());
    let err = o.stderr_text();
    assert!(err.contains("unimplemented instruction") && err.contains("vpxord"), "{err}");
}
