//! `urun binfmt install|status|uninstall` against the real kernel (root and
//! binfmt_misc needed; reported `SKIPPED:` otherwise). One test function,
//! so nothing here runs in parallel with itself; it registers an entry of
//! its own name (`urun-test-PID`, so a user's `urun` entry is left alone)
//! and a guard removes it, its binfmt.d file, and the binfmt_misc mount it
//! made, even when an assertion fails.
//!
//! The Windows program is a real one built with mingw-w64 when it is
//! installed (it prints its arguments and exits 7), else a hand-made PE32+
//! header. While urun refuses PE programs, the run is checked to reach urun
//! with the right command line (its debug log of the guest command line,
//! then its "not supported yet" refusal); once urun runs PE, the same test
//! checks the program's output and status.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{report_skip, run, show, urun, Outcome, TempDir};

const MOUNT: &str = "/proc/sys/fs/binfmt_misc";
const TIMEOUT: Duration = Duration::from_secs(60);

/// Undoes whatever the test did, in every case.
struct Cleanup {
    name: String,
    unmount: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let entry = Path::new(MOUNT).join(&self.name);
        if entry.exists() {
            let _ = std::fs::write(&entry, "-1");
        }
        let _ = std::fs::remove_file(format!("/usr/lib/binfmt.d/{}.conf", self.name));
        if self.unmount {
            let target = c"/proc/sys/fs/binfmt_misc";
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount(target.as_ptr()) };
        }
    }
}

fn urun_binfmt(args: &[&str], name: &str) -> Outcome {
    run(Command::new(urun()).arg("binfmt").args(args).args(["--name", name]), b"", TIMEOUT)
}

/// A PE32+ x86-64 program: built with mingw-w64 when it is there (prints
/// its arguments, exits 7), else only the headers (`real` false).
fn pe_program(dir: &Path) -> (PathBuf, bool) {
    let exe = dir.join("prog.exe");
    let src = dir.join("prog.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(int argc, char **argv) {\n  for (int i = 1; i < argc; i++) printf(\"arg %d: %s\\n\", i, argv[i]);\n  return 7;\n}\n",
    )
    .expect("writing prog.c");
    let built = Command::new("x86_64-w64-mingw32-gcc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !built {
        std::fs::write(&exe, pe_header(0x20b)).expect("writing prog.exe");
    }
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (exe, built)
}

/// MZ, e_lfanew = 0x40, "PE\0\0", machine x86-64, optional-header magic.
fn pe_header(magic: u16) -> Vec<u8> {
    let mut b = vec![0u8; 0x200];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    b[0x40..0x44].copy_from_slice(b"PE\0\0");
    b[0x44..0x46].copy_from_slice(&0x8664u16.to_le_bytes());
    b[0x58..0x5a].copy_from_slice(&magic.to_le_bytes());
    b
}

/// Run `exe` as the kernel would for a user: directly, with argv[0]
/// `argv0` and arguments `a`, `b c`, in `dir`.
fn run_direct(exe: &Path, argv0: &str, dir: &Path) -> Outcome {
    let rel = format!("./{}", exe.file_name().and_then(|n| n.to_str()).unwrap_or(""));
    run(Command::new(&rel).arg0(argv0).args(["a", "b c"]).current_dir(dir).env("URUN_LOG", "debug"), b"", TIMEOUT)
}

/// The run reached urun with this command line; or, once urun runs PE
/// programs, the program ran with its arguments and status.
fn check_dispatched(o: &Outcome, real: bool, want_argv0: &str, what: &str) {
    let err = o.stderr_text();
    if err.contains("not supported yet") {
        let line = format!(r#"program="./prog.exe" argv0={want_argv0} args=["a", "b c"]"#);
        assert!(
            err.contains(&line) && o.code == Some(126),
            "{what}: urun was not started with the file and its arguments as expected ({}):\nwant {line}\nstderr: {}",
            o.status_text(),
            show(&o.stderr, 2000)
        );
    } else if real {
        assert!(
            // C stdio text mode writes CRLF on Windows: compared as LF.
            o.code == Some(7) && String::from_utf8_lossy(&o.stdout).replace("\r\n", "\n") == "arg 1: a\narg 2: b c\n",
            "{what}: the PE program through urun: {}\nstdout: {}\nstderr: {}",
            o.status_text(),
            show(&o.stdout, 1000),
            show(&o.stderr, 2000)
        );
    } else {
        panic!("{what}: unexpected result {}: {}", o.status_text(), show(&o.stderr, 2000));
    }
}

#[test]
fn binfmt_install_status_run_uninstall() {
    const TEST: &str = "binfmt_install_status_run_uninstall";
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        report_skip(TEST, "needs root");
        return;
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.contains("binfmt_misc") {
        report_skip(TEST, "the kernel has no binfmt_misc");
        return;
    }
    let name = format!("urun-test-{}", std::process::id());
    let _cleanup = Cleanup { name: name.clone(), unmount: !Path::new(MOUNT).join("register").exists() };
    let t = TempDir::new("binfmt");
    let (exe, real) = pe_program(t.path());

    // A clear error for a bad command, as for a non-root user (the message
    // is checked by the unit tests).
    let o = run(Command::new(urun()).args(["binfmt", "frobnicate"]), b"", TIMEOUT);
    assert!(o.code == Some(2) && o.stderr_text().contains("usage: urun binfmt"), "{}", o.stderr_text());

    let o = urun_binfmt(&["install", "--persist"], &name);
    assert_eq!(o.code, Some(0), "install: {}\n{}{}", o.status_text(), o.stderr_text(), show(&o.stdout, 1000));
    let entry = std::fs::read_to_string(Path::new(MOUNT).join(&name)).expect("the entry exists after install");
    assert!(entry.contains("magic 4d5a") && entry.contains("offset 0"), "{entry}");
    assert!(entry.lines().any(|l| l == "flags: F"), "{entry}");
    let conf = std::fs::read_to_string(format!("/usr/lib/binfmt.d/{name}.conf")).expect("--persist wrote the file");
    assert!(conf.contains(&format!(":{name}:M:0:\\x4d\\x5a::")), "{conf}");

    let o = urun_binfmt(&["status"], &name);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.code == Some(0) && text.contains("registered, enabled") && text.contains("(this urun)"),
        "status: {}\n{text}",
        o.status_text()
    );

    // Dispatched to urun; argv[0] is the file (no P flag).
    let o = run_direct(&exe, "custom-argv0", t.path());
    check_dispatched(&o, real, "None", "./prog.exe with flags F");

    // Another MZ file (PE32): urun says what it is.
    let pe32 = t.path().join("pe32.exe");
    std::fs::write(&pe32, pe_header(0x10b)).expect("writing pe32.exe");
    std::fs::set_permissions(&pe32, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let o = run(Command::new("./pe32.exe").current_dir(t.path()), b"", TIMEOUT);
    assert!(
        o.code == Some(126) && o.stderr_text().contains("32-bit"),
        "a PE32 file through binfmt: {}\n{}",
        o.status_text(),
        o.stderr_text()
    );

    // --preserve-argv0: the P flag, and urun gives the guest argv[0].
    let o = urun_binfmt(&["install", "--preserve-argv0"], &name);
    assert_eq!(o.code, Some(0), "install -P: {}\n{}", o.status_text(), o.stderr_text());
    let entry = std::fs::read_to_string(Path::new(MOUNT).join(&name)).unwrap_or_default();
    assert!(entry.lines().any(|l| l == "flags: PF"), "{entry}");
    let o = run_direct(&exe, "custom-argv0", t.path());
    check_dispatched(&o, real, r#"Some("custom-argv0")"#, "./prog.exe with flags F P");

    let o = urun_binfmt(&["uninstall"], &name);
    assert_eq!(o.code, Some(0), "uninstall: {}\n{}", o.status_text(), o.stderr_text());
    assert!(!Path::new(MOUNT).join(&name).exists(), "the entry is still there after uninstall");
    let o = urun_binfmt(&["status"], &name);
    assert!(
        o.code == Some(1) && String::from_utf8_lossy(&o.stdout).contains("not registered"),
        "status after uninstall"
    );
    // No longer dispatched: the kernel refuses the file (unless another
    // entry, not this test's, claims MZ files).
    let o = run_direct(&exe, "custom-argv0", t.path());
    let others_claim_mz = std::fs::read_dir(MOUNT)
        .map(|d| {
            d.flatten().any(|e| std::fs::read_to_string(e.path()).map(|s| s.contains("magic 4d5a")).unwrap_or(false))
        })
        .unwrap_or(false);
    if !others_claim_mz {
        // The kernel says ENOEXEC; glibc's exec then hands the file to
        // /bin/sh as a script (which fails on it). Either way, not urun.
        let refused = o.spawn_error.as_deref().is_some_and(|e| e.contains("Exec format error"))
            || (o.code == Some(2) && o.stderr_text().contains("./prog.exe: "));
        assert!(
            refused && !o.stderr_text().contains("urun"),
            "after uninstall the file still ran through urun: {} {}",
            o.status_text(),
            o.stderr_text()
        );
    }
}
