//! The guest's view of `/proc/self`: `maps`, `auxv`, `cmdline` and `exe`
//! (also as `/proc/<pid>/…`, `/proc/thread-self/…` and
//! `/proc/<pid>/task/<tid>/…`) describe the guest program, not urun.
//! Opening one gives a memfd holding the generated text. Every open is
//! checked after the fact by what it opened (see `after_open`), so a
//! directory descriptor or a symlink cannot reach urun's own views.

use std::os::unix::ffi::{OsStrExt, OsStringExt};

use urun_cpu::{Backing, Prot, Region};

use super::table::{guest_cstr, pass, raw_result};
use super::{memfile, Process, Stop, Task, HEAP_RESERVE};

/// One line of `/proc/self/maps` per guest region, as Linux formats it.
pub(crate) fn maps_text(regions: &[Region]) -> String {
    let mut out = String::new();
    for r in regions {
        let name = match &r.backing {
            Backing::Named(n) if n == HEAP_RESERVE => continue,
            Backing::Named(n) => n.as_str(),
            Backing::File { path, .. } => path.as_str(),
            Backing::Anonymous => "",
        };
        let (offset, dev, inode) = match &r.backing {
            Backing::File { offset, dev, inode, .. } => (*offset, *dev, *inode),
            _ => (0, 0, 0),
        };
        let perm = |p: Prot, c: char| if r.prot.contains(p) { c } else { '-' };
        let line = format!(
            "{:08x}-{:08x} {}{}{}{} {:08x} {:02x}:{:02x} {} ",
            r.start,
            r.end,
            perm(Prot::READ, 'r'),
            perm(Prot::WRITE, 'w'),
            perm(Prot::EXEC, 'x'),
            if r.shared { 's' } else { 'p' },
            offset,
            libc::major(dev),
            libc::minor(dev),
            inode
        );
        out.push_str(&line);
        if !name.is_empty() {
            for _ in line.len()..73 {
                out.push(' ');
            }
            out.push_str(name);
        }
        out.push('\n');
    }
    out
}

/// The generated contents of `/proc/self/<leaf>`, or `None` for a file
/// urun passes through.
fn contents(p: &Process, leaf: &[u8]) -> Option<Vec<u8>> {
    match leaf {
        b"maps" => Some(maps_text(&p.mem.regions()).into_bytes()),
        b"auxv" => Some(p.auxv.clone()),
        b"cmdline" => Some(p.cmdline.clone()),
        _ => None,
    }
}

/// A read-only file descriptor holding `data`.
fn memfd_with(data: &[u8], flags: u64) -> i64 {
    let cloexec = if flags & libc::O_CLOEXEC as u64 != 0 { libc::MFD_CLOEXEC } else { 0 };
    // SAFETY: memfd_create with a static name; write/lseek on our new fd
    // from our own buffer.
    unsafe {
        let fd = libc::memfd_create(c"urun-proc".as_ptr(), cloexec);
        if fd < 0 {
            return raw_result(-1);
        }
        let mut at = 0;
        while at < data.len() {
            let n = libc::write(fd, data[at..].as_ptr().cast(), data.len() - at);
            if n <= 0 {
                libc::close(fd);
                return -(libc::EIO as i64);
            }
            at += n as usize;
        }
        libc::lseek(fd, 0, libc::SEEK_SET);
        fd as i64
    }
}

/// open/openat of a guest path: the `/proc/self` views, or the host file.
fn open_at(task: &mut Task<'_>, dirfd: u64, path_ptr: u64, flags: u64, mode: u64) -> i64 {
    let p = task.p.as_ref();
    let Some(path) = guest_cstr(p, path_ptr) else { return -(libc::EFAULT as i64) };
    for leaf in [&b"maps"[..], b"auxv", b"cmdline"] {
        if p.is_proc_self(&path, leaf) {
            if flags & (libc::O_WRONLY | libc::O_RDWR) as u64 != 0 {
                return -(libc::EACCES as i64);
            }
            if let Some(data) = contents(p, leaf) {
                return memfd_with(&data, flags);
            }
        }
    }
    if p.is_proc_self(&path, b"exe") {
        let Ok(exe) = std::ffi::CString::new(p.exe_path.as_os_str().as_encoded_bytes()) else {
            return -(libc::ENOENT as i64);
        };
        return raw_result(pass(257, &[libc::AT_FDCWD as u64, exe.as_ptr() as u64, flags, mode, 0, 0]));
    }
    let fd = match in_sysroot(p, &path) {
        Some(inside) => raw_result(pass(257, &[libc::AT_FDCWD as u64, inside.as_ptr() as u64, flags, mode, 0, 0])),
        None => raw_result(pass(257, &[dirfd, path_ptr, flags, mode, 0, 0])),
    };
    if fd < 0 {
        return fd;
    }
    after_open(p, fd, flags)
}

/// What the guest opened, judged by what it is rather than by the path it
/// named (a directory descriptor or a symlink may hide a /proc file): this
/// process's `maps`, `auxv` and `cmdline` (also under `task/<tid>/`) are
/// replaced by the guest's views; memory files are tracked or refused
/// (`memfile`).
fn after_open(p: &Process, fd: i64, flags: u64) -> i64 {
    let Some(f) = memfile::after_open(fd) else { return fd };
    match (f.owner, f.leaf.as_str()) {
        (memfile::Owner::Other, "mem") => memfile::refuse(fd),
        (memfile::Owner::This, leaf @ ("maps" | "auxv" | "cmdline")) if flags & libc::O_PATH as u64 == 0 => {
            let Some(data) = contents(p, leaf.as_bytes()) else { return fd };
            let view = memfd_with(&data, flags);
            if view < 0 {
                return view;
            }
            let cloexec = if flags & libc::O_CLOEXEC as u64 != 0 { libc::O_CLOEXEC } else { 0 };
            // SAFETY: both descriptors were just opened by this call; the
            // view takes the number the guest's open returned.
            unsafe {
                let r = libc::dup3(view as i32, fd as i32, cloexec);
                libc::close(view as i32);
                if r < 0 {
                    libc::close(fd as i32);
                    return raw_result(-1);
                }
            }
            fd
        }
        _ => fd,
    }
}

/// With `-L SYSROOT`, an absolute path that exists under the sysroot is
/// opened there (qemu-user's rule); others fall through to the host's.
fn in_sysroot(p: &Process, path: &[u8]) -> Option<std::ffi::CString> {
    let root = p.sysroot.as_ref()?;
    let rel = path.strip_prefix(b"/")?;
    let full = root.join(std::ffi::OsStr::from_bytes(rel));
    full.exists().then(|| std::ffi::CString::new(full.into_os_string().into_vec()).ok()).flatten()
}

pub(crate) fn open(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    Ok(open_at(task, libc::AT_FDCWD as u64, a[0], a[1], a[2]))
}

pub(crate) fn openat(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    Ok(open_at(task, a[0], a[1], a[2], a[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_look_like_linux() {
        let regions = vec![
            Region {
                start: 0x400000,
                end: 0x401000,
                prot: Prot::RX,
                shared: false,
                backing: Backing::File {
                    path: "/bin/prog".into(),
                    offset: 0x1000,
                    dev: libc::makedev(0xfe, 0),
                    inode: 42,
                },
            },
            Region {
                start: 0x402000,
                end: 0x403000,
                prot: Prot::RW,
                shared: false,
                backing: Backing::Named("[heap]".into()),
            },
            Region {
                start: 0x403000,
                end: 0x503000,
                prot: Prot::NONE,
                shared: false,
                backing: Backing::Named(HEAP_RESERVE.into()),
            },
            Region {
                start: 0x7f0000000000,
                end: 0x7f0000001000,
                prot: Prot::RW,
                shared: true,
                backing: Backing::Anonymous,
            },
        ];
        let text = maps_text(&regions);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "the heap reservation is hidden");
        assert_eq!(lines[0], format!("00400000-00401000 r-xp 00001000 fe:00 42{}/bin/prog", " ".repeat(73 - 40)));
        assert_eq!(lines[0].find('/'), Some(73));
        assert!(lines[1].ends_with(" [heap]") && lines[1].starts_with("00402000-00403000 rw-p 00000000 00:00 0 "));
        assert_eq!(lines[2], "7f0000000000-7f0000001000 rw-s 00000000 00:00 0 ");
    }
}
