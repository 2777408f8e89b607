//! A third-party MSVC-built Rust program under urun against its Linux twin:
//! `ruff.exe` from ruff's `win_amd64` wheel on PyPI and the `ruff` binary
//! of its `manylinux_2_17_x86_64` wheel, the same pinned version. Both run
//! from the same directory on relative paths, with HOME pointing at an
//! empty directory (no user configuration), and stdout, stderr and exit
//! status must be equal: `--version`; `check` of a file with lint errors
//! (exit status 1, the findings and the summary); `check` of a clean file;
//! `check` of one expression nested 3000 parentheses deep, which makes
//! ruff's parser grow its stack (on Windows through fibers).
//!
//! The wheels are fetched once with `pip download` into
//! `target/pe-cache/` (not committed), checked against their pinned
//! sha256, and unpacked there. Without pip or the network every case says
//! SKIPPED with the reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

const VERSION: &str = "0.17.6";
/// (platform, wheel file, sha256, the program's path inside the wheel)
const WHEELS: [(&str, &str, &str, &str); 2] = [
    (
        "win_amd64",
        "ruff-0.17.6-py3-none-win_amd64.whl",
        "9cd2fd9923e9806b8b6b67a3469e2258e84bd4d21e45d5a1a690afdfb9c8e57d",
        "ruff-0.17.6.data/scripts/ruff.exe",
    ),
    (
        "manylinux_2_17_x86_64",
        "ruff-0.17.6-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "aa3b08254a732acba246891089a152c47c5733dc36b8ecb76ce8602f8326e5e4",
        "ruff-0.17.6.data/scripts/ruff",
    ),
];
const TIMEOUT: Duration = Duration::from_secs(120);

/// (ruff.exe, the Linux ruff), fetched and unpacked once per test binary;
/// Err says why they cannot be had here.
fn ruff_pair() -> Result<(PathBuf, PathBuf), String> {
    static PAIR: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    PAIR.get_or_init(fetch).clone()
}

fn fetch() -> Result<(PathBuf, PathBuf), String> {
    // Beside cargo's build output, as tests/runners.rs keeps Go's caches.
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    let cache = target.join("pe-cache").join(format!("ruff-{VERSION}"));
    std::fs::create_dir_all(&cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
    let mut progs = Vec::new();
    for (platform, file, sha, member) in WHEELS {
        let name = Path::new(member).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let prog = cache.join(&name);
        if !prog.is_file() {
            let wheel = cache.join(file);
            if !wheel.is_file() {
                let o = Command::new("pip")
                    .args(["download", "--no-deps", "--only-binary=:all:", "--platform", platform, "-d"])
                    .arg(&cache)
                    .arg(format!("ruff=={VERSION}"))
                    .output()
                    .map_err(|e| format!("cannot run pip ({e}): it fetches the pinned ruff wheels"))?;
                if !o.status.success() || !wheel.is_file() {
                    return Err(format!(
                        "pip download of ruff {VERSION} for {platform} failed (no network?): {}",
                        show(&o.stderr, 300)
                    ));
                }
            }
            let sum = Command::new("sha256sum").arg(&wheel).output().map_err(|e| format!("sha256sum: {e}"))?;
            let got = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap_or("").to_string();
            if got != sha {
                let _ = std::fs::remove_file(&wheel);
                // A wrong download is a failure, not a skip.
                panic!("{file}: sha256 {got}, pinned {sha}");
            }
            // Unpack the one member with Python's zipfile (pip needs Python).
            let tmp = cache.join(format!("{name}.part"));
            let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], 'wb') as o:\n    o.write(z.read(sys.argv[2]))\n";
            let o = Command::new("python3")
                .args(["-c", script])
                .arg(&wheel)
                .arg(member)
                .arg(&tmp)
                .output()
                .map_err(|e| format!("python3: {e}"))?;
            assert!(o.status.success(), "unpacking {member} from {file}: {}", show(&o.stderr, 300));
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                .and_then(|()| std::fs::rename(&tmp, &prog))
                .unwrap_or_else(|e| panic!("installing {}: {e}", prog.display()));
        }
        progs.push(prog);
    }
    Ok((progs[0].clone(), progs[1].clone()))
}

/// The directory both run in: the Python files and an empty HOME.
fn workdir() -> TempDir {
    let d = TempDir::new("ruff");
    let files: [(&str, String); 3] = [
        ("bad.py", "import os\nimport sys\n\n\ndef f(x):\n    y = 1\n    return x == None\n".into()),
        ("good.py", "def add(a, b):\n    return a + b\n".into()),
        ("deep.py", format!("x = {}1{}\n", "(".repeat(3000), ")".repeat(3000))),
    ];
    for (n, text) in files {
        std::fs::write(d.path().join(n), text).unwrap_or_else(|e| panic!("writing {n}: {e}"));
    }
    std::fs::create_dir_all(d.path().join("home")).unwrap_or_else(|e| panic!("home: {e}"));
    d
}

fn command(prog: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(prog);
    cmd.current_dir(dir).env("HOME", dir.join("home")).env_remove("XDG_CONFIG_HOME").env_remove("RUFF_CACHE_DIR");
    cmd
}

/// Run each of `cases` with the Linux ruff natively and ruff.exe under
/// `urun --engine ENGINE`; fail listing every difference.
fn matches_linux(test: &str, engine: &str, cases: &[&[&str]]) {
    if !engine_or_skip(engine, test) {
        return;
    }
    let (exe, linux) = match ruff_pair() {
        Ok(p) => p,
        Err(why) => return report_skip(test, &why),
    };
    let dir = workdir();
    let mut problems = Vec::new();
    for args in cases {
        let native = run(command(&linux.to_string_lossy(), dir.path()).args(*args), b"", TIMEOUT);
        assert!(native.spawn_error.is_none() && !native.timed_out, "the Linux ruff {args:?}: {}", native.status_text());
        let mut cmd = command(&urun(), dir.path());
        cmd.args(["--engine", engine]).arg(&exe).args(*args);
        let under = run(&mut cmd, b"", TIMEOUT);
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("{test}: ruff {args:?}: native {:?}, urun {:?}\n", native.elapsed, under.elapsed).as_bytes(),
        );
        for p in compare_runs(&native, &under) {
            problems.push(format!("ruff {args:?}: {p}"));
        }
    }
    assert!(problems.is_empty(), "{test}:\n  {}", problems.join("\n  "));
}

const VERSION_CASES: &[&[&str]] = &[&["--version"]];
const CHECK_CASES: &[&[&str]] = &[
    &["check", "--no-cache", "--output-format", "concise", "bad.py"],
    &["check", "--no-cache", "--output-format", "full", "bad.py"],
    &["check", "--no-cache", "good.py"],
    &["check", "--no-cache", "--output-format", "concise", "deep.py"],
];

#[test]
fn ruff_version_matches_linux_interp() {
    matches_linux("ruff_version_matches_linux_interp", "interp", VERSION_CASES);
}

#[test]
fn ruff_version_matches_linux_kvm() {
    matches_linux("ruff_version_matches_linux_kvm", "kvm", VERSION_CASES);
}

#[test]
fn ruff_check_matches_linux_interp() {
    matches_linux("ruff_check_matches_linux_interp", "interp", CHECK_CASES);
}

#[test]
fn ruff_check_matches_linux_kvm() {
    matches_linux("ruff_check_matches_linux_kvm", "kvm", CHECK_CASES);
}

#[test]
fn ruff_version_matches_linux_jit() {
    matches_linux("ruff_version_matches_linux_jit", "jit", VERSION_CASES);
}

#[test]
fn ruff_check_matches_linux_jit() {
    matches_linux("ruff_check_matches_linux_jit", "jit", CHECK_CASES);
}
