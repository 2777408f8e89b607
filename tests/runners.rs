//! urun as the test runner of other build tools, as their users set it up
//! (the README has the line for each): `go test -exec urun`, meson's
//! `exe_wrapper` in a cross file, CMake's `CMAKE_CROSSCOMPILING_EMULATOR`
//! with ctest. (`cargo test` with urun as the runner is in unwind.rs.)
//! Each runs natively and through urun; the per-test results, the output
//! of the test programs and the tool's exit status must be the same, for a
//! passing run and for a run with a failing test. A tool that is not
//! installed is reported `SKIPPED:` (scripts/test installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{engine_under_test, repo_root, report_skip, run, show, urun, Outcome, TempDir};

const TIMEOUT: Duration = Duration::from_secs(180);

/// Is `tool` on PATH? If not, report `test` skipped.
fn have(tool: &str, test: &str) -> bool {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false);
    if !found {
        report_skip(test, &format!("{tool} is not installed (scripts/test installs it)"));
    }
    found
}

/// The urun command line a runner gets, as words.
fn urun_words() -> Vec<String> {
    vec![urun(), "--engine".into(), engine_under_test()]
}

/// What differs between two runs of the same tests and means nothing:
/// durations (`0.01s`, `(0.36s)`, `0.01 sec`), the build directories, and
/// spacing.
fn normalize(text: &[u8], dirs: &[&Path]) -> Vec<String> {
    let mut s = String::from_utf8_lossy(text).into_owned();
    for d in dirs {
        s = s.replace(&*d.to_string_lossy(), "<dir>");
    }
    let is_time = |w: &str| {
        let w = w.trim_matches(|c| c == '(' || c == ')');
        let w = w.strip_suffix("sec").or_else(|| w.strip_suffix('s')).unwrap_or(w);
        !w.is_empty() && w.parse::<f64>().is_ok() && w.contains('.')
    };
    s.lines()
        .filter(|l| !l.contains("Total Test time"))
        .map(|l| l.split_whitespace().filter(|w| !is_time(w) && *w != "sec").collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

fn assert_same(what: &str, native: &Outcome, under: &Outcome, n: &[String], u: &[String]) {
    assert!(
        n == u && native.code == under.code && native.signal == under.signal,
        "{what}: {} natively, {} through urun\nnative:\n{}\nurun:\n{}\nurun stderr:\n{}",
        native.status_text(),
        under.status_text(),
        n.join("\n"),
        u.join("\n"),
        show(&under.stderr, 3000)
    );
}

// ---- go test -exec urun ----------------------------------------------------

fn go_cmd(args: &[&str]) -> Command {
    // Go's caches live beside cargo's build output (testbins/out holds
    // only guest programs: e2e.rs checks each has a case).
    let out = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    let mut c = Command::new("go");
    c.arg("test")
        .args(["-count=1", "-v"])
        .args(args)
        .arg(".")
        .current_dir(repo_root().join("testbins/go-runner"))
        .env("GOCACHE", out.join("go-cache"))
        .env("GOPATH", out.join("go-path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env_remove("GORUNNER_FAIL");
    c
}

#[test]
fn go_test_exec_urun() {
    if !have("go", "go_test_exec_urun") {
        return;
    }
    let exec = urun_words().join(" ");
    for fail in [false, true] {
        let mut native = go_cmd(&[]);
        let mut under = go_cmd(&["-exec", &exec]);
        if fail {
            native.env("GORUNNER_FAIL", "1");
            under.env("GORUNNER_FAIL", "1");
        }
        let n = run(&mut native, b"", TIMEOUT);
        assert_eq!(n.code, Some(fail as i32), "native go test: {}\n{}", n.status_text(), n.stderr_text());
        let u = run(&mut under, b"", TIMEOUT);
        let (nn, uu) = (normalize(&n.stdout, &[]), normalize(&u.stdout, &[]));
        assert_same(&format!("go test -exec '{exec}' (failing test: {fail})"), &n, &u, &nn, &uu);
        for t in ["TestGoroutines", "TestChildProcess"] {
            assert!(nn.iter().any(|l| l.contains(&format!("--- PASS: {t}"))), "{}", nn.join("\n"));
        }
    }
}

// ---- meson exe_wrapper ---------------------------------------------------------

fn project() -> PathBuf {
    repo_root().join("testbins/runners")
}

/// A cross file whose exe_wrapper is urun (`needs_exe_wrapper`, since the
/// host could run these programs itself).
fn meson_cross_file(dir: &Path) -> PathBuf {
    let words: Vec<String> = urun_words().iter().map(|w| format!("'{w}'")).collect();
    let text = format!(
        "[binaries]\nc = 'gcc'\nexe_wrapper = [{}]\n\n[properties]\nneeds_exe_wrapper = true\n\n\
         [host_machine]\nsystem = 'linux'\ncpu_family = 'x86_64'\ncpu = 'x86_64'\nendian = 'little'\n",
        words.join(", ")
    );
    let f = dir.join("urun.cross");
    std::fs::write(&f, text).expect("writing the cross file");
    f
}

fn meson(args: &[&str], dir: &Path) -> Outcome {
    run(Command::new("meson").args(args).current_dir(dir), b"", TIMEOUT)
}

#[test]
fn meson_exe_wrapper() {
    if !have("meson", "meson_exe_wrapper") || !have("ninja", "meson_exe_wrapper") {
        return;
    }
    let t = TempDir::new("meson");
    let (nat, cross) = (t.path().join("native"), t.path().join("cross"));
    let src = project();
    let cross_file = meson_cross_file(t.path());
    for (dir, extra) in [(&nat, vec![]), (&cross, vec!["--cross-file".to_string(), cross_file.display().to_string()])] {
        let mut args = vec!["setup".to_string(), dir.display().to_string(), src.display().to_string()];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = meson(&args, t.path());
        assert_eq!(o.code, Some(0), "meson setup: {}\n{}\n{}", o.status_text(), show(&o.stdout, 3000), o.stderr_text());
    }
    for (suite, want) in [("ok", 0), ("failing", 1)] {
        let n = meson(&["test", "-C", &nat.display().to_string(), "--suite", suite], t.path());
        assert_eq!(n.code, Some(want), "native meson test: {}\n{}", n.status_text(), show(&n.stdout, 3000));
        let u = meson(&["test", "-C", &cross.display().to_string(), "--suite", suite], t.path());
        let keep = |o: &Outcome, d: &Path| -> Vec<String> {
            // Results in the order the tests finished: compared sorted,
            // without the "n/N" counter.
            let mut v: Vec<String> = normalize(&o.stdout, &[d])
                .into_iter()
                .filter(|l| l.contains(" / ") || l.starts_with("Ok:") || l.starts_with("Fail:"))
                .map(|l| l.split_once(' ').filter(|(n, _)| n.contains('/')).map_or(l.clone(), |(_, r)| r.to_string()))
                .collect();
            v.sort();
            v
        };
        assert_same(&format!("meson test --suite {suite}"), &n, &u, &keep(&n, &nat), &keep(&u, &cross));
        if suite == "ok" {
            // The programs' own output, and that urun ran them.
            let log = std::fs::read_to_string(cross.join("meson-logs/testlog.txt")).unwrap_or_default();
            for want in [urun().as_str(), "arg 2: two words", "RUNNER_TEST_VAR=from meson", "total 79999800000"] {
                assert!(
                    log.contains(want),
                    "the cross build's testlog.txt lacks {want:?}:\n{}",
                    show(log.as_bytes(), 4000)
                );
            }
        }
    }
}

// ---- CMake CROSSCOMPILING_EMULATOR + ctest ------------------------------------

fn cmake_build(dir: &Path, extra: &[String]) -> Result<(), String> {
    let o = run(
        Command::new("cmake").arg("-S").arg(project()).arg("-B").arg(dir).args(extra).arg("-DCMAKE_BUILD_TYPE=Release"),
        b"",
        TIMEOUT,
    );
    if o.code != Some(0) {
        return Err(format!("cmake configure: {}\n{}\n{}", o.status_text(), show(&o.stdout, 2000), o.stderr_text()));
    }
    let o = run(Command::new("cmake").arg("--build").arg(dir), b"", TIMEOUT);
    if o.code != Some(0) {
        return Err(format!("cmake --build: {}\n{}\n{}", o.status_text(), show(&o.stdout, 2000), o.stderr_text()));
    }
    Ok(())
}

fn ctest(dir: &Path, args: &[&str]) -> Outcome {
    run(Command::new("ctest").args(args).current_dir(dir), b"", TIMEOUT)
}

fn emulator_arg() -> String {
    format!("-DCMAKE_CROSSCOMPILING_EMULATOR={}", urun_words().join(";"))
}

#[test]
fn cmake_crosscompiling_emulator_ctest() {
    if !have("cmake", "cmake_crosscompiling_emulator_ctest") {
        return;
    }
    let t = TempDir::new("cmake");
    let (nat, cross) = (t.path().join("native"), t.path().join("cross"));
    cmake_build(&nat, &[]).unwrap_or_else(|e| panic!("{e}"));
    let toolchain = format!("-DCMAKE_TOOLCHAIN_FILE={}", project().join("linux-x86_64.cmake").display());
    cmake_build(&cross, &[toolchain, emulator_arg()]).unwrap_or_else(|e| panic!("{e}"));
    // ctest's status for failed tests is 8.
    for (args, want) in [(["-LE", "failing"], 0), (["-L", "failing"], 8)] {
        let n = ctest(&nat, &args);
        assert_eq!(n.code, Some(want), "native ctest {args:?}: {}\n{}", n.status_text(), show(&n.stdout, 3000));
        let u = ctest(&cross, &args);
        let (nn, uu) = (normalize(&n.stdout, &[&nat]), normalize(&u.stdout, &[&cross]));
        assert_same(&format!("ctest {args:?} with the emulator"), &n, &u, &nn, &uu);
    }
    let log = std::fs::read_to_string(cross.join("Testing/Temporary/LastTest.log")).unwrap_or_default();
    // The last run was the failing label; run the passing ones verbosely for
    // the programs' output and the command line.
    let v = ctest(&cross, &["-LE", "failing", "-V"]);
    let text = format!("{log}{}", String::from_utf8_lossy(&v.stdout));
    for want in [urun().as_str(), "arg 2: two words", "RUNNER_TEST_VAR=from cmake", "total 79999800000"] {
        assert!(text.contains(want), "ctest -V through urun lacks {want:?}:\n{}", show(text.as_bytes(), 4000));
    }
}

/// The same project cross-built for Windows with mingw-w64, its tests run
/// by ctest through urun: the hook for PE programs. The program links
/// libwinpthread-1.dll, which urun loads from the mingw sysroot through
/// URUN_DLL_PATH (ctest passes the environment on). While the program
/// cannot start (winpthreads' DllMain needs vectored exception handlers,
/// and the `threads` test needs threads), this case reports itself
/// skipped with urun's own line.
#[test]
fn cmake_mingw_ctest() {
    if !have("cmake", "cmake_mingw_ctest") || !have("x86_64-w64-mingw32-gcc", "cmake_mingw_ctest") {
        return;
    }
    let t = TempDir::new("cmake-mingw");
    let dir = t.path().join("build");
    let toolchain = format!("-DCMAKE_TOOLCHAIN_FILE={}", project().join("mingw-x86_64.cmake").display());
    cmake_build(&dir, &[toolchain, emulator_arg()]).unwrap_or_else(|e| panic!("{e}"));
    let o = run(Command::new("x86_64-w64-mingw32-gcc").arg("-print-file-name=libwinpthread-1.dll"), b"", TIMEOUT);
    let dll = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let sysroot = dll.parent().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default();
    let ctest = |args: &[&str]| {
        run(Command::new("ctest").args(args).current_dir(&dir).env("URUN_DLL_PATH", &sysroot), b"", TIMEOUT)
    };
    let u = ctest(&["-LE", "failing", "--output-on-failure"]);
    assert_eq!(
        u.code,
        Some(0),
        "ctest of the mingw build through urun: {}\n{}",
        u.status_text(),
        show(&u.stdout, 4000)
    );
    let f = ctest(&["-L", "failing"]);
    assert_eq!(f.code, Some(8), "the failing test through urun: {}\n{}", f.status_text(), show(&f.stdout, 4000));
}
