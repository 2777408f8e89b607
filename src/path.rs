//! Finding the program: a name without a slash is looked up in `PATH`, as
//! `execvp(3)`, `env(1)` and the shells do.
//!
//! The rules are glibc's `execvp`: `PATH` unset means `/bin:/usr/bin`; an
//! empty entry means the current directory; the first entry holding a file
//! of that name that may be executed wins; a file that exists but may not
//! be executed (no execute bit, a directory) is passed over, and if nothing
//! else is found the answer is "permission denied" (status 126, as the
//! shells give) rather than "not found" (127).

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What glibc searches when `PATH` is not set (`confstr(_CS_PATH)`).
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// Why a program name could not be turned into a file.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{name}: command not found (looked in PATH={path})")]
    NotFound { name: String, path: String },
    #[error("{name}: permission denied ({found} is in PATH but cannot be executed)")]
    Denied { name: String, found: String },
}

impl PathError {
    /// The status the shells give: 127 not found, 126 found but not runnable.
    pub fn exit_code(&self) -> i32 {
        match self {
            PathError::NotFound { .. } => 127,
            PathError::Denied { .. } => 126,
        }
    }
}

/// The file to run for `name`: `name` itself when it holds a slash, else the
/// first match in `path_var` (the guest's `PATH`, `None` when unset).
pub fn resolve(name: &Path, path_var: Option<&OsStr>) -> Result<PathBuf, PathError> {
    let bytes = name.as_os_str().as_bytes();
    if bytes.contains(&b'/') {
        return Ok(name.to_path_buf());
    }
    let search = path_var.map(OsStr::as_bytes).unwrap_or(DEFAULT_PATH);
    let mut denied: Option<PathBuf> = None;
    if !bytes.is_empty() {
        for dir in search.split(|&b| b == b':') {
            let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
            let mut candidate = OsString::from(OsStr::from_bytes(dir));
            candidate.push("/");
            candidate.push(name.as_os_str());
            let candidate = PathBuf::from(candidate);
            match executable(&candidate) {
                Found::Yes => return Ok(candidate),
                Found::Denied => {
                    denied.get_or_insert(candidate);
                }
                Found::No => {}
            }
        }
    }
    let name = name.display().to_string();
    match denied {
        Some(found) => Err(PathError::Denied { name, found: found.display().to_string() }),
        None => Err(PathError::NotFound { name, path: String::from_utf8_lossy(search).into_owned() }),
    }
}

enum Found {
    Yes,
    /// There, but execve would fail with EACCES.
    Denied,
    No,
}

/// Would `execve(path)` find a file it may run?
fn executable(path: &Path) -> Found {
    let Ok(meta) = std::fs::metadata(path) else { return Found::No };
    if !meta.is_file() {
        return Found::Denied;
    }
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return Found::No };
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
        Found::Yes
    } else {
        Found::Denied
    }
}

/// `PATH` in an environment given as `NAME=VALUE` byte strings.
pub fn path_of(env: &[Vec<u8>]) -> Option<&OsStr> {
    env.iter().find_map(|e| e.strip_prefix(b"PATH=")).map(OsStr::from_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("urun-path-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("a")).unwrap();
        std::fs::create_dir_all(d.join("b")).unwrap();
        d
    }

    fn file(p: &Path, mode: u32) {
        std::fs::write(p, b"x").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn lookup_rules() {
        let d = scratch("rules");
        let (a, b) = (d.join("a"), d.join("b"));
        file(&a.join("prog"), 0o644); // not executable: passed over
        file(&b.join("prog"), 0o755);
        file(&a.join("only-a"), 0o644);
        std::fs::create_dir(b.join("dir")).unwrap();
        let path = OsString::from(format!("{}:{}", a.display(), b.display()));
        let r = |n: &str| resolve(Path::new(n), Some(&path));
        assert_eq!(r("prog").unwrap(), b.join("prog"));
        assert_eq!(r("./prog").unwrap(), PathBuf::from("./prog"), "a slash: no lookup");
        assert!(matches!(r("missing"), Err(PathError::NotFound { .. })));
        assert!(matches!(r(""), Err(PathError::NotFound { .. })));
        let e = r("only-a").unwrap_err();
        assert!(matches!(e, PathError::Denied { .. }) && e.exit_code() == 126, "{e}");
        assert!(matches!(r("dir"), Err(PathError::Denied { .. })));
        assert_eq!(r("missing").unwrap_err().exit_code(), 127);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn path_variable_from_environment() {
        let env = vec![b"HOME=/root".to_vec(), b"PATH=/x:/y".to_vec()];
        assert_eq!(path_of(&env), Some(OsStr::new("/x:/y")));
        assert_eq!(path_of(&[b"PATHX=1".to_vec()]), None);
    }
}
