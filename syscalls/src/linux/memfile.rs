//! `/proc/<pid>/mem` files, which would reach urun's own memory: this
//! process's are clipped to the guest's ranges, other processes' refused.
//!
//! A descriptor is recognised by what it is, not by the path the guest
//! named (a symlink or a directory descriptor could hide that): after
//! every successful open, a file on procfs (`fstatfs` says
//! `PROC_SUPER_MAGIC`) whose `/proc/self/fd/N` link ends in `/mem` is a
//! memory file; whose process it is comes from the link. This process's
//! are tracked here by descriptor number (copied by dup, dup2, dup3 and
//! fcntl F_DUPFD*, forgotten by close, inherited by fork; a urun started
//! by execve finds inherited ones at start-up; one received over a socket
//! is recognised on arrival), and the reads and writes
//! on them are done by urun: the offset is a guest address, a range that
//! starts outside guest memory fails with EIO (as the kernel says for an
//! unmapped address), one that runs past it is cut short. Another
//! process's memory file is refused at open (EACCES): that process may be
//! another urun, whose memory is not this guest's to reach.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use urun_cpu::Prot;

use super::table::{pass, raw_result};
use super::{Process, Stop, Task};

const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const EIO: i64 = -(libc::EIO as i64);
const EINVAL: i64 = -(libc::EINVAL as i64);
const EACCES: i64 = -(libc::EACCES as i64);

/// Whose memory a tracked descriptor reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This process: the guest's own memory (and urun's).
    This,
    /// Another process (received over a socket, or inherited).
    Other,
}

/// The memory-file descriptors the guest holds (one urun process, one
/// guest process: a process-wide table, like the host's descriptor table).
static TRACKED: Mutex<Option<HashMap<i32, Owner>>> = Mutex::new(None);
/// Fast path: no memory file was ever tracked.
static ANY: AtomicBool = AtomicBool::new(false);

fn with<R>(f: impl FnOnce(&mut HashMap<i32, Owner>) -> R) -> R {
    let mut g = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// Is `fd` a tracked memory file, and whose?
pub(crate) fn tracked(fd: i32) -> Option<Owner> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    with(|m| m.get(&fd).copied())
}

fn track(fd: i32, owner: Owner) {
    with(|m| m.insert(fd, owner));
    ANY.store(true, Ordering::Release);
}

fn forget(fd: i32) {
    if ANY.load(Ordering::Acquire) {
        with(|m| m.remove(&fd));
    }
}

/// What a procfs descriptor names: the process it belongs to and the
/// file's last path component.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ProcFile {
    pub owner: Owner,
    pub leaf: String,
}

/// Is this pid (or tid) this process's? Our pid, or one of our threads.
fn is_ours(id: &str) -> bool {
    if id == "self" || id == "thread-self" || id == std::process::id().to_string() {
        return true;
    }
    id.bytes().all(|b| b.is_ascii_digit()) && std::path::Path::new(&format!("/proc/self/task/{id}")).exists()
}

/// Parse a procfs path as `/proc/<id>/<leaf>` or
/// `/proc/<id>/task/<tid>/<leaf>`.
pub(crate) fn parse_proc_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/proc/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [id, leaf] => Some((id.to_string(), leaf.to_string())),
        [id, "task", _tid, leaf] => Some((id.to_string(), leaf.to_string())),
        _ => None,
    }
}

/// If `fd` is a per-process file on procfs, what it is.
pub(crate) fn classify(fd: i32) -> Option<ProcFile> {
    // SAFETY: fstatfs writes a `statfs` into the zeroed struct we own; an
    // invalid descriptor just fails.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstatfs(fd, &mut st) } != 0 || st.f_type != PROC_SUPER_MAGIC {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let (id, leaf) = parse_proc_path(&link.to_string_lossy())?;
    Some(ProcFile { owner: if is_ours(&id) { Owner::This } else { Owner::Other }, leaf })
}

/// After the guest opened `fd`: track a memory file of this process,
/// refuse another process's. Returns the syscall's result.
pub(crate) fn after_open(fd: i64) -> Option<ProcFile> {
    let f = classify(fd as i32)?;
    if f.leaf == "mem" {
        track(fd as i32, f.owner);
    }
    Some(f)
}

/// A memory file of another process: closed again, EACCES.
pub(crate) fn refuse(fd: i64) -> i64 {
    forget(fd as i32);
    // SAFETY: the guest's open just returned this descriptor; nothing else
    // has seen it.
    unsafe { libc::close(fd as i32) };
    EACCES
}

/// At start-up (a urun started by execve inherits the old guest's
/// descriptors): track the memory files already open.
pub(crate) fn adopt_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    for fd in fds {
        if let Some(f) = classify(fd) {
            if f.leaf == "mem" {
                track(fd, f.owner);
            }
        }
    }
}

/// After a syscall returned `r`: copy or forget tracking across
/// dup/dup2/dup3/fcntl(F_DUPFD*) and close/close_range; track memory
/// files received over a socket (recvmsg with SCM_RIGHTS).
pub(crate) fn after(p: &Process, nr: u64, a: &[u64; 6], r: i64) {
    if nr == 47 && r >= 0 {
        for fd in received_fds(p, a[1]) {
            if let Some(f) = classify(fd) {
                if f.leaf == "mem" {
                    track(fd, f.owner);
                }
            }
        }
        return;
    }
    if !ANY.load(Ordering::Acquire) || r < 0 {
        return;
    }
    let copy_to = |new: i64| {
        forget(new as i32);
        if let Some(o) = tracked(a[0] as i32) {
            track(new as i32, o);
        }
    };
    match nr {
        3 => forget(a[0] as i32),
        32 => copy_to(r),
        33 | 292 if a[0] != a[1] => copy_to(a[1] as i64),
        72 if matches!(a[1] as i32, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC) => copy_to(r),
        436 if a[2] & libc::CLOSE_RANGE_CLOEXEC as u64 == 0 => {
            let (lo, hi) = (a[0] as u32, a[1] as u32);
            with(|m| m.retain(|fd, _| !(lo..=hi).contains(&(*fd as u32))));
        }
        _ => {}
    }
}

/// The descriptors an SCM_RIGHTS control message of the (already
/// received) `struct msghdr` at `msg` carries.
fn received_fds(p: &Process, msg: u64) -> Vec<i32> {
    let mut out = Vec::new();
    if !p.mem.check(msg, 56, Prot::READ) {
        return out;
    }
    // SAFETY: 56 readable guest bytes (checked above): struct msghdr.
    let (control, len) =
        unsafe { (((msg + 32) as *const u64).read_unaligned(), ((msg + 40) as *const u64).read_unaligned()) };
    if control == 0 || len < 16 || !p.mem.check(control, len, Prot::READ) {
        return out;
    }
    let mut off = 0u64;
    while off + 16 <= len {
        // SAFETY: [control, control+len) is readable guest memory (checked
        // above) and off + 16 <= len: a cmsghdr (len, level, type).
        let (clen, level, kind) = unsafe {
            let h = (control + off) as *const u8;
            (
                (h as *const u64).read_unaligned(),
                (h.add(8) as *const i32).read_unaligned(),
                (h.add(12) as *const i32).read_unaligned(),
            )
        };
        if clen < 16 || off + clen > len {
            break;
        }
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            for k in 0..(clen - 16) / 4 {
                // SAFETY: inside this cmsg's data, within the checked range.
                out.push(unsafe { ((control + off + 16 + 4 * k) as *const i32).read_unaligned() });
            }
        }
        off += (clen + 7) & !7;
    }
    out
}

/// Syscalls that take a memory file and move bytes: (nr, positioned,
/// vectored, write).
const IO: &[(u64, bool, bool, bool)] = &[
    (0, false, false, false), // read
    (1, false, false, true),  // write
    (17, true, false, false), // pread64
    (18, true, false, true),  // pwrite64
    (19, false, true, false), // readv
    (20, false, true, true),  // writev
    (295, true, true, false), // preadv
    (296, true, true, true),  // pwritev
    (327, true, true, false), // preadv2
    (328, true, true, true),  // pwritev2
];

/// sendfile, splice, copy_file_range: (nr, the argument indexes of fds).
const COPY: &[(u64, [usize; 2])] = &[(40, [0, 1]), (275, [0, 2]), (326, [0, 2])];

/// A syscall on a memory file, done by urun: `Some(result)`, or `None`
/// when `args` names no tracked memory file. `args` were checked already
/// (`check_pointers`: the guest's buffers are its own memory, clipped).
pub(crate) fn io(p: &Process, nr: u64, args: &[u64; 6]) -> Option<i64> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    if let Some((_, fds)) = COPY.iter().find(|(n, _)| *n == nr) {
        // Natively these fail on memory files too (EINVAL, or EOVERFLOW
        // for sendfile): the kernel has no splice path for them.
        return fds.iter().any(|i| tracked(args[*i] as i32).is_some()).then_some(EINVAL);
    }
    let &(_, positioned, vectored, write) = IO.iter().find(|(n, ..)| *n == nr)?;
    let fd = args[0] as i32;
    match tracked(fd)? {
        Owner::Other => return Some(EACCES),
        Owner::This => {}
    }
    let pos = if positioned {
        args[3]
    } else {
        // SAFETY: lseek on the guest's descriptor reads its position.
        let r = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
        if r < 0 {
            return Some(raw_result(-1));
        }
        r as u64
    };
    if (pos as i64) < 0 {
        return Some(EINVAL);
    }
    let segments: Vec<(u64, u64)> = if vectored {
        let count = args[2].min(1024);
        (0..count)
            .map(|k| {
                // SAFETY: `args` were prepared (`table::prepare`): a nonzero
                // count's iovec array is urun's own copy of the guest's.
                unsafe {
                    let e = (args[1] + k * 16) as *const u64;
                    (e.read_unaligned(), e.add(1).read_unaligned())
                }
            })
            .collect()
    } else {
        vec![(args[1], args[2])]
    };
    let need = if write { Prot::READ } else { Prot::WRITE };
    let mut total: u64 = 0;
    let mut at = pos;
    for (buf, len) in segments {
        if len == 0 {
            continue;
        }
        // The guest's own buffer must be its memory (vectored buffers were
        // checked by `check_pointers` only as a whole array: check here).
        let len = p.mem.accessible_len(buf, len, need);
        if len == 0 {
            if total == 0 {
                return Some(-(libc::EFAULT as i64));
            }
            break;
        }
        // The file side: guest memory of any protection from `at` on
        // (the kernel's memory file ignores protections, as ptrace does).
        let room = p.mem.accessible_len(at, len, Prot::NONE);
        if room == 0 {
            if total == 0 {
                return Some(EIO);
            }
            break;
        }
        let r = raw_result(pass(if write { 18 } else { 17 }, &[fd as u64, buf, room, at, 0, 0]));
        if r < 0 {
            if total == 0 {
                return Some(r);
            }
            break;
        }
        let n = r as u64;
        // Code written through the file (or read into a buffer) reaches
        // every engine through the code log.
        if write {
            p.mem.code_written(at, n);
        } else {
            p.mem.code_written(buf, n);
        }
        total += n;
        at += n;
        if n < len {
            break;
        }
    }
    if !positioned {
        // SAFETY: lseek on the guest's descriptor moves its position past
        // what was transferred, as read/write would.
        unsafe { libc::lseek(fd, at as i64, libc::SEEK_SET) };
    }
    Some(total as i64)
}

/// A guest iovec array of `count` entries, copied (IOV_MAX at most).
fn iovecs(p: &Process, ptr: u64, count: u64) -> Result<Vec<(u64, u64)>, i64> {
    if count > 1024 {
        return Err(EINVAL);
    }
    if count > 0 && !p.mem.check(ptr, count * 16, Prot::READ) {
        return Err(-(libc::EFAULT as i64));
    }
    Ok((0..count)
        .map(|k| {
            // SAFETY: the array is readable guest memory (checked above).
            unsafe {
                let e = (ptr + k * 16) as *const u64;
                (e.read_unaligned(), e.add(1).read_unaligned())
            }
        })
        .collect())
}

/// process_vm_readv/process_vm_writev. On this process the remote side is
/// the guest's memory, clipped as the kernel clips a transfer that meets
/// memory it cannot reach (bytes so far, or EFAULT); the local side must be
/// the guest's. Another process (perhaps another urun) is refused with
/// EPERM: a documented limit.
fn process_vm(task: &mut Task<'_>, a: &[u64; 6], write: bool) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    if a[5] != 0 {
        return Ok(EINVAL);
    }
    if !is_ours(&(a[0] as i32).to_string()) {
        return Ok(-(libc::EPERM as i64));
    }
    let (local, remote) = match (iovecs(p, a[1], a[2]), iovecs(p, a[3], a[4])) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(e), _) | (_, Err(e)) => return Ok(e),
    };
    let local_need = if write { Prot::READ } else { Prot::WRITE };
    if local.iter().any(|&(b, n)| n != 0 && !p.mem.check(b, n, local_need)) {
        return Ok(-(libc::EFAULT as i64));
    }
    let remote_need = if write { Prot::WRITE } else { Prot::READ };
    let mut clipped = Vec::with_capacity(remote.len());
    for &(b, n) in &remote {
        let ok = p.mem.accessible_len(b, n, remote_need);
        clipped.push((b, ok));
        if ok < n {
            break;
        }
    }
    let wanted: u64 = remote.iter().map(|r| r.1).sum();
    if wanted > 0 && clipped.iter().all(|r| r.1 == 0) {
        return Ok(-(libc::EFAULT as i64));
    }
    let flat = |v: &[(u64, u64)]| v.iter().flat_map(|&(b, n)| [b, n]).collect::<Vec<u64>>();
    let (l, r) = (flat(&local), flat(&clipped));
    let nr = if write { 311 } else { 310 };
    // Our own pid: the kernel copies between the checked local buffers and
    // the clipped guest ranges, from urun's copies of the arrays.
    let args =
        [std::process::id() as u64, l.as_ptr() as u64, local.len() as u64, r.as_ptr() as u64, clipped.len() as u64, 0];
    let n = raw_result(pass(nr, &args));
    if n > 0 {
        let targets = if write { &clipped } else { &local };
        for &(b, len) in targets {
            p.mem.code_written(b, len);
        }
    }
    Ok(n)
}

pub(crate) fn process_vm_readv(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    process_vm(task, a, false)
}

pub(crate) fn process_vm_writev(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    process_vm(task, a, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths_parse() {
        assert_eq!(parse_proc_path("/proc/12/mem"), Some(("12".into(), "mem".into())));
        assert_eq!(parse_proc_path("/proc/12/task/13/maps"), Some(("12".into(), "maps".into())));
        assert_eq!(parse_proc_path("/proc/12/fd/3"), None);
        assert_eq!(parse_proc_path("/tmp/mem"), None);
    }

    #[test]
    fn our_own_mem_file_is_recognised() {
        // SAFETY: open a C string path; the descriptor is closed below.
        let fd = unsafe { libc::open(c"/proc/self/mem".as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 0);
        assert_eq!(classify(fd), Some(ProcFile { owner: Owner::This, leaf: "mem".into() }));
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        // SAFETY: as above.
        let fd = unsafe { libc::open(c"/proc/1/maps".as_ptr(), libc::O_RDONLY) };
        if fd >= 0 {
            assert_eq!(classify(fd), Some(ProcFile { owner: Owner::Other, leaf: "maps".into() }));
            // SAFETY: as above.
            unsafe { libc::close(fd) };
        }
        // SAFETY: as above.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        assert_eq!(classify(fd), None);
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
}
