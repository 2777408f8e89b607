//! `--strace`: one line per syscall on stderr, in strace's format.

use std::fmt::Write as _;

use super::table::{guest_cstr, lookup, A};
use super::{Process, Stop};

/// Write one line to the host's stderr, bypassing any buffering.
pub(crate) fn line(s: &str) {
    let mut s = s.to_owned();
    s.push('\n');
    // SAFETY: writes our own buffer to fd 2.
    unsafe { libc::write(2, s.as_ptr().cast(), s.len()) };
}

thread_local! {
    static PENDING: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Format `name(args` before the call (strings are read before the kernel
/// may change them).
pub(crate) fn before(p: &Process, nr: u64, args: &[u64; 6]) {
    let mut s = String::new();
    match lookup(nr) {
        Some(sc) => {
            let _ = write!(s, "{}(", sc.name);
            for (i, a) in sc.args.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let v = args[i];
                match a {
                    A::I | A::Fd => {
                        let _ = write!(s, "{}", v as i64);
                    }
                    A::Str if v != 0 => match guest_cstr(p, v) {
                        Some(b) => {
                            let shown = &b[..b.len().min(64)];
                            let _ = write!(s, "{:?}", String::from_utf8_lossy(shown));
                            if b.len() > 64 {
                                s.push_str("...");
                            }
                        }
                        None => {
                            let _ = write!(s, "{v:#x}");
                        }
                    },
                    _ if v == 0 => s.push_str("NULL"),
                    _ => {
                        let _ = write!(s, "{v:#x}");
                    }
                }
            }
            s.push(')');
        }
        None => {
            let _ = write!(s, "syscall_{nr}({:#x}, {:#x}, {:#x}, ...)", args[0], args[1], args[2]);
        }
    }
    PENDING.with(|p| *p.borrow_mut() = s);
}

/// Finish the line with the result.
pub(crate) fn after(nr: u64, r: &Result<i64, Stop>) {
    let call = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let hex = matches!(nr, 9 | 12 | 25);
    let res = match r {
        Err(_) => "?".to_string(),
        Ok(v) if (-4095..0).contains(v) => {
            let e = -*v as i32;
            format!("-1 {} ({})", errno_name(e), std::io::Error::from_raw_os_error(e))
                .replace(&format!(" (os error {e})"), "")
        }
        Ok(v) if hex => format!("{v:#x}"),
        Ok(v) => v.to_string(),
    };
    line(&format!("{call} = {res}"));
}

/// The symbolic name of an errno.
pub(crate) fn errno_name(e: i32) -> String {
    const NAMES: &[(i32, &str)] = &[
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::ESRCH, "ESRCH"),
        (libc::EINTR, "EINTR"),
        (libc::EIO, "EIO"),
        (libc::ENXIO, "ENXIO"),
        (libc::E2BIG, "E2BIG"),
        (libc::ENOEXEC, "ENOEXEC"),
        (libc::EBADF, "EBADF"),
        (libc::ECHILD, "ECHILD"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EACCES, "EACCES"),
        (libc::EFAULT, "EFAULT"),
        (libc::EBUSY, "EBUSY"),
        (libc::EEXIST, "EEXIST"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENODEV, "ENODEV"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENFILE, "ENFILE"),
        (libc::EMFILE, "EMFILE"),
        (libc::ENOTTY, "ENOTTY"),
        (libc::EFBIG, "EFBIG"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::ESPIPE, "ESPIPE"),
        (libc::EROFS, "EROFS"),
        (libc::EPIPE, "EPIPE"),
        (libc::ERANGE, "ERANGE"),
        (libc::ENAMETOOLONG, "ENAMETOOLONG"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::ENOTEMPTY, "ENOTEMPTY"),
        (libc::ELOOP, "ELOOP"),
        (libc::ETIMEDOUT, "ETIMEDOUT"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    ];
    NAMES.iter().find(|(n, _)| *n == e).map(|(_, s)| s.to_string()).unwrap_or_else(|| format!("E{e}"))
}

/// The name of a signal.
pub(crate) fn signal_name(sig: i32) -> String {
    const NAMES: &[(i32, &str)] = &[
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGABRT, "SIGABRT"),
    ];
    NAMES.iter().find(|(n, _)| *n == sig).map(|(_, s)| s.to_string()).unwrap_or_else(|| format!("signal {sig}"))
}
