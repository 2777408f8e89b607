//! `urun NAME` with no slash in NAME looks NAME up in PATH, as `env NAME`
//! does: each case runs `env NAME ARGS` natively and `urun NAME ARGS` with
//! the same PATH, in the same working directory, and compares stdout and
//! status (stderr too where the program ran; the "not found" messages are
//! urun's own, checked for the name). The guest's own `execve` of a
//! slash-less name stays relative to its working directory (execve never
//! searches PATH).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{compare_runs, engine_under_test, ensure_testbins, run, show, urun, Outcome, TempDir};

const TIMEOUT: Duration = Duration::from_secs(60);

fn copy_exec(from: &Path, to: &Path, mode: u32) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn native(dir: &Path, path: &str, name: &str, args: &[&str]) -> Outcome {
    run(Command::new("/usr/bin/env").arg(format!("PATH={path}")).arg(name).args(args).current_dir(dir), b"", TIMEOUT)
}

fn under_urun(dir: &Path, path: &str, name: &str, args: &[&str]) -> Outcome {
    run(
        Command::new(urun())
            .arg("--engine")
            .arg(engine_under_test())
            .arg(name)
            .args(args)
            .env("PATH", path)
            .current_dir(dir),
        b"",
        TIMEOUT,
    )
}

/// A scratch tree: `a/prog` not executable, `b/prog` executable (the args
/// test program), `cwd/here` executable, `a/noexec` not executable.
fn tree() -> TempDir {
    let out = ensure_testbins();
    let t = TempDir::new("path");
    for d in ["a", "b", "cwd"] {
        std::fs::create_dir(t.path().join(d)).expect("mkdir");
    }
    let args = out.join("args.glibc");
    copy_exec(&args, &t.path().join("a/prog"), 0o644);
    copy_exec(&args, &t.path().join("b/prog"), 0o755);
    copy_exec(&args, &t.path().join("cwd/here"), 0o755);
    copy_exec(&args, &t.path().join("a/noexec"), 0o644);
    t
}

#[test]
fn found_in_path_as_env_finds_it() {
    let t = tree();
    let p = |d: &str| t.path().join(d).display().to_string();
    let cwd = t.path().join("cwd");
    let cases: Vec<(String, &str)> = vec![
        // The first entry holds a non-executable `prog`: passed over.
        (format!("{}:{}", p("a"), p("b")), "prog"),
        // An empty entry is the working directory.
        (format!("/nonexistent::{}", p("b")), "here"),
        (format!("{}:", p("a")), "here"),
    ];
    for (path, name) in &cases {
        let n = native(&cwd, path, name, &["one", "two three"]);
        assert_eq!(n.code, Some(0), "native env {name} with PATH={path}: {}\n{}", n.status_text(), n.stderr_text());
        let u = under_urun(&cwd, path, name, &["one", "two three"]);
        let problems = compare_runs(&n, &u);
        assert!(problems.is_empty(), "urun {name} with PATH={path}:\n  {}", problems.join("\n  "));
    }
}

#[test]
fn not_found_and_not_executable_statuses() {
    let t = tree();
    let cwd = t.path().join("cwd");
    let path = format!("{}:{}", t.path().join("a").display(), t.path().join("b").display());
    // (name, status the shells and env give, what urun must say)
    for (name, want, says) in [("no-such-program", 127, "not found"), ("noexec", 126, "permission denied")] {
        let n = native(&cwd, &path, name, &[]);
        assert_eq!(n.code, Some(want), "native env {name}: {}", n.status_text());
        let u = under_urun(&cwd, &path, name, &[]);
        let err = u.stderr_text();
        assert!(
            u.code == n.code && err.contains(name) && err.contains(says) && !err.contains("panicked"),
            "urun {name}: {} (native {}), stderr: {}",
            u.status_text(),
            n.status_text(),
            show(&u.stderr, 400)
        );
    }
}

/// A guest's execve("here") runs ./here even when PATH does not name the
/// working directory (natively execve does not search PATH): python3
/// calls execve directly.
#[test]
fn guest_execve_of_a_bare_name_is_relative() {
    let Some(python) = ["/usr/bin/python3"].into_iter().find(|p| Path::new(p).exists()) else {
        common::report_skip("guest_execve_of_a_bare_name_is_relative", "no /usr/bin/python3");
        return;
    };
    let t = tree();
    let cwd = t.path().join("cwd");
    let code = "import os; os.execve('here', ['here', 'x'], {'PATH': '/nonexistent', 'URUN_TEST_A': '1'})";
    let n = run(Command::new(python).args(["-c", code]).current_dir(&cwd), b"", TIMEOUT);
    assert_eq!(n.code, Some(0), "native: {}\n{}", n.status_text(), n.stderr_text());
    let u = run(
        Command::new(urun()).arg("--engine").arg(engine_under_test()).args([python, "-c", code]).current_dir(&cwd),
        b"",
        TIMEOUT,
    );
    let problems = compare_runs(&n, &u);
    assert!(problems.is_empty(), "execve('here') under urun:\n  {}", problems.join("\n  "));
}
