//! Syscalls urun emulates rather than passes through: the ones that change
//! what urun manages (memory map, FS/GS bases, process exit, signal
//! dispositions) or that would otherwise reveal urun instead of the guest.

use urun_cpu::mem::{page_ceil, Placement, PAGE_SIZE, USER_TOP};
use urun_cpu::{Backing, FileMap, MemError, Prot};

use super::table::{guest_cstr, pass, raw_result};
use super::{guest, lock, Process, Stop, Task};

/// An emulated syscall: returns RAX, or stops the guest.
pub(crate) type Handler = fn(&mut Task<'_>, &[u64; 6]) -> Result<i64, Stop>;

const EINVAL: i64 = -(libc::EINVAL as i64);
const EFAULT: i64 = -(libc::EFAULT as i64);

/// The -errno a guest syscall returns for a failed memory operation.
fn err(e: MemError) -> i64 {
    -(match e {
        MemError::BadRange { .. } => libc::EINVAL,
        MemError::NotGuestMemory { .. } | MemError::NotMapped { .. } => libc::ENOMEM,
        MemError::Host { errno, .. } => errno,
    } as i64)
}

fn prot_of(bits: u64) -> Prot {
    Prot((bits & 7) as u32)
}

// ----- memory -----

pub(crate) fn mmap(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    let (addr, len, prot, flags, fd, off) = (a[0], a[1], a[2], a[3] as i32, a[4] as i32, a[5]);
    if len == 0 || off % PAGE_SIZE != 0 || page_ceil(len) > USER_TOP {
        return Ok(EINVAL);
    }
    let shared = flags & libc::MAP_TYPE == libc::MAP_SHARED || flags & libc::MAP_TYPE == libc::MAP_SHARED_VALIDATE;
    let place = if flags & libc::MAP_FIXED_NOREPLACE != 0 {
        Placement::FixedNoReplace(addr)
    } else if flags & libc::MAP_FIXED != 0 {
        Placement::Fixed(addr)
    } else {
        Placement::Hint(addr & !(PAGE_SIZE - 1))
    };
    let file = if flags & libc::MAP_ANONYMOUS != 0 {
        None
    } else {
        Some(FileMap { fd, offset: off, backing: file_backing(fd, off) })
    };
    let r = p.mem.map_with_flags(place, len, prot_of(prot), shared, file.as_ref(), flags);
    Ok(match r {
        Ok(a) => a as i64,
        Err(MemError::Host { errno, .. }) => -(errno as i64),
        Err(e) => err(e),
    })
}

/// How `/proc/self/maps` names a file mapping of `fd`.
fn file_backing(fd: i32, offset: u64) -> Backing {
    let path =
        std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    // SAFETY: fstat writes a `stat` into the zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; an invalid fd just fails.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
    if !ok {
        return Backing::Anonymous;
    }
    Backing::File { path, offset, dev: st.st_dev, inode: st.st_ino }
}

pub(crate) fn munmap(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    Ok(match p.mem.unmap(a[0], a[1]) {
        Ok(()) => 0,
        Err(e) => err(e),
    })
}

pub(crate) fn mprotect(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    if a[2] & !7 & !(libc::PROT_GROWSDOWN as u64 | libc::PROT_GROWSUP as u64) != 0 {
        return Ok(EINVAL);
    }
    Ok(match p.mem.protect(a[0], a[1], prot_of(a[2])) {
        Ok(()) => 0,
        Err(e) => err(e),
    })
}

pub(crate) fn mremap(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    let flags = a[3] as i32;
    let may_move = flags & libc::MREMAP_MAYMOVE != 0;
    let fixed = (flags & libc::MREMAP_FIXED != 0).then_some(a[4]);
    if fixed.is_some() && !may_move {
        return Ok(EINVAL);
    }
    Ok(match p.mem.remap(a[0], a[1], a[2], may_move, fixed) {
        Ok(v) => v as i64,
        Err(e) => err(e),
    })
}

pub(crate) fn madvise(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    let len = page_ceil(a[1]);
    if !a[0].is_multiple_of(PAGE_SIZE) {
        return Ok(EINVAL);
    }
    if len == 0 {
        return Ok(0);
    }
    if !p.mem.is_guest(a[0], len) {
        return Ok(-(libc::ENOMEM as i64));
    }
    // Only advice that keeps the guest's memory the guest's is passed on.
    match a[2] as i32 {
        libc::MADV_DONTNEED
        | libc::MADV_FREE
        | libc::MADV_WILLNEED
        | libc::MADV_SEQUENTIAL
        | libc::MADV_RANDOM
        | libc::MADV_NORMAL
        | libc::MADV_HUGEPAGE
        | libc::MADV_NOHUGEPAGE
        | libc::MADV_DONTDUMP => Ok(raw_result(pass(28, &[a[0], len, a[2], 0, 0, 0]))),
        _ => Ok(0),
    }
}

pub(crate) fn mincore(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    if !a[0].is_multiple_of(PAGE_SIZE) {
        return Ok(EINVAL);
    }
    let len = page_ceil(a[1]);
    if len == 0 {
        return Ok(0);
    }
    if !p.mem.is_guest(a[0], len) {
        return Ok(-(libc::ENOMEM as i64));
    }
    // One byte a page, written by the kernel: guest memory only.
    if !p.mem.check(a[2], len / PAGE_SIZE, Prot::WRITE) {
        return Ok(-(libc::EFAULT as i64));
    }
    Ok(raw_result(pass(27, &[a[0], len, a[2], 0, 0, 0])))
}

pub(crate) fn msync(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    if !p.mem.is_guest(a[0], page_ceil(a[1]).max(1)) {
        return Ok(-(libc::ENOMEM as i64));
    }
    Ok(raw_result(pass(26, a)))
}

pub(crate) fn brk(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    let want = a[0];
    let mut guard = lock(&p.brk);
    let b = &mut *guard;
    if want < b.start {
        return Ok(b.cur as i64);
    }
    let new_end = page_ceil(want);
    if new_end > b.mapped_end {
        let grow = new_end - b.mapped_end;
        // Inside the reservation the heap replaces it; past it, only free
        // address space will do.
        let place = if new_end <= b.reserve_end {
            Placement::Fixed(b.mapped_end)
        } else if b.mapped_end >= b.reserve_end {
            Placement::FixedNoReplace(b.mapped_end)
        } else {
            return Ok(b.cur as i64);
        };
        match p.mem.map(place, grow, Prot::RW, false, None) {
            Ok(_) => {
                p.mem.set_backing(b.mapped_end, Backing::Named("[heap]".into()));
                b.mapped_end = new_end;
            }
            Err(e) => {
                tracing::debug!(%e, "brk cannot grow");
                return Ok(b.cur as i64);
            }
        }
    } else if new_end < b.mapped_end {
        let len = b.mapped_end - new_end;
        let r = if new_end < b.reserve_end {
            // Give the pages back to the reservation.
            p.mem
                .map_with_flags(Placement::Fixed(new_end), len, Prot::NONE, false, None, libc::MAP_NORESERVE)
                .map(|_| p.mem.set_backing(new_end, Backing::Named(urun_loader_heap_reserve().into())))
        } else {
            p.mem.unmap(new_end, len)
        };
        if r.is_err() {
            return Ok(b.cur as i64);
        }
        b.mapped_end = new_end;
    }
    b.cur = want;
    Ok(want as i64)
}

/// The name the loader gives the heap reservation (kept in step with
/// `urun_loader::HEAP_RESERVE`; `syscalls` does not depend on the loader).
fn urun_loader_heap_reserve() -> &'static str {
    super::HEAP_RESERVE
}

// ----- the thread and the process -----

pub(crate) fn arch_prctl(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let (p, cpu) = (task.p.as_ref(), &mut *task.cpu);
    const SET_GS: u64 = 0x1001;
    const SET_FS: u64 = 0x1002;
    const GET_FS: u64 = 0x1003;
    const GET_GS: u64 = 0x1004;
    Ok(match a[0] {
        SET_FS | SET_GS if a[1] >= USER_TOP => -(libc::EPERM as i64),
        SET_FS => {
            cpu.fs_base = a[1];
            0
        }
        SET_GS => {
            cpu.gs_base = a[1];
            0
        }
        GET_FS | GET_GS => {
            let v = if a[0] == GET_FS { cpu.fs_base } else { cpu.gs_base };
            if !guest::write(&p.mem, a[1], &v) {
                return Ok(EFAULT);
            }
            0
        }
        _ => EINVAL,
    })
}

pub(crate) fn set_tid_address(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    // Kept by urun (not the host kernel, whose word for this host thread
    // belongs to urun's own libc) and cleared at the guest thread's exit.
    task.t.clear_child_tid = a[0];
    Ok(task.t.tid as i64)
}

pub(crate) fn set_robust_list(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    if a[1] != 24 {
        return Ok(EINVAL);
    }
    if a[0] != 0 && !task.p.mem.check(a[0], 24, Prot::READ) {
        return Ok(EFAULT);
    }
    // Guest thread == host thread and guest addresses are host addresses,
    // so the kernel walks the guest's list when this thread dies.
    Ok(raw_result(pass(273, a)))
}

pub(crate) fn execve(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    let Some(path) = guest_cstr(p, a[0]) else { return Ok(EFAULT) };
    let (Some(argv), Some(envp)) = (guest_str_array(p, a[1]), guest_str_array(p, a[2])) else {
        return Ok(EFAULT);
    };
    Ok(p.exec(path, argv, envp))
}

/// A NULL-terminated guest array of string pointers.
fn guest_str_array(p: &Process, ptr: u64) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if ptr == 0 {
        return Some(out);
    }
    for i in 0..65536u64 {
        let s: u64 = guest::read(&p.mem, ptr.checked_add(i * 8)?)?;
        if s == 0 {
            return Some(out);
        }
        out.push(guest_cstr(p, s)?);
    }
    None
}

/// readlink of `/proc/self/exe` (and `/proc/<our pid>/exe`) names the
/// guest program, not urun.
fn readlink_at(p: &Process, dirfd: u64, path_ptr: u64, buf: u64, size: u64) -> i64 {
    let Some(path) = guest_cstr(p, path_ptr) else { return EFAULT };
    if size as i64 <= 0 {
        return EINVAL;
    }
    if p.is_proc_self(&path, b"exe") {
        let target = p.exe_path.as_os_str().as_encoded_bytes().to_vec();
        let n = target.len().min(size as usize);
        if !guest::write_from(&p.mem, buf, &target[..n]) {
            return EFAULT;
        }
        return n as i64;
    }
    let size = p.mem.accessible_len(buf, size, Prot::WRITE);
    if size == 0 {
        return EFAULT;
    }
    // The kernel gets the path as checked, not the guest's bytes, which
    // another thread could change meanwhile.
    let Ok(path) = std::ffi::CString::new(path) else { return EFAULT };
    raw_result(pass(267, &[dirfd, path.as_ptr() as u64, buf, size, 0, 0]))
}

pub(crate) fn readlink(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    Ok(readlink_at(p, libc::AT_FDCWD as u64, a[0], a[1], a[2]))
}

pub(crate) fn readlinkat(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    Ok(readlink_at(p, a[0], a[1], a[2], a[3]))
}

// ----- signals -----

// ----- descriptors and misc -----

pub(crate) fn ioctl(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    // Requests whose argument is a pointer to a fixed-size struct.
    const OUT: &[(u64, u64)] = &[(0x5401, 36), (0x5413, 8), (0x540f, 4), (0x541b, 4)];
    const IN: &[(u64, u64)] = &[(0x5402, 36), (0x5403, 36), (0x5404, 36), (0x5414, 8), (0x5410, 4), (0x5421, 4)];
    let (req, arg) = (a[1] & 0xffff_ffff, a[2]);
    let ok = if let Some((_, n)) = OUT.iter().find(|(r, _)| *r == req) {
        p.mem.check(arg, *n, Prot::WRITE)
    } else if let Some((_, n)) = IN.iter().find(|(r, _)| *r == req) {
        p.mem.check(arg, *n, Prot::READ)
    } else {
        // Unknown request: its argument is passed only if it is not a
        // pointer into urun's memory.
        arg < 0x10000 || p.mem.is_guest(arg, 1)
    };
    if !ok {
        return Ok(EFAULT);
    }
    Ok(raw_result(pass(16, a)))
}

pub(crate) fn fcntl(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    // Commands taking a struct flock pointer.
    let locks =
        [libc::F_GETLK, libc::F_SETLK, libc::F_SETLKW, libc::F_OFD_GETLK, libc::F_OFD_SETLK, libc::F_OFD_SETLKW];
    if locks.contains(&(a[1] as i32)) && !p.mem.check(a[2], 32, Prot::WRITE) {
        return Ok(EFAULT);
    }
    Ok(raw_result(pass(72, a)))
}

pub(crate) fn prctl(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    match a[0] as i32 {
        libc::PR_SET_NAME => {
            // The name as checked (the kernel reads up to 16 bytes).
            let Some(name) = guest_cstr(p, a[1]) else { return Ok(EFAULT) };
            let Ok(name) = std::ffi::CString::new(name) else { return Ok(EFAULT) };
            Ok(raw_result(pass(157, &[a[0], name.as_ptr() as u64, 0, 0, 0, 0])))
        }
        libc::PR_GET_NAME if !p.mem.check(a[1], 16, Prot::WRITE) => Ok(EFAULT),
        libc::PR_GET_NAME
        | libc::PR_GET_DUMPABLE
        | libc::PR_SET_DUMPABLE
        | libc::PR_SET_PDEATHSIG
        | libc::PR_GET_NO_NEW_PRIVS
        | libc::PR_SET_NO_NEW_PRIVS => Ok(raw_result(pass(157, a))),
        _ => Ok(EINVAL),
    }
}

pub(crate) fn futex(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let p = task.p.as_ref();
    // Guest addresses are host addresses, so futexes pass through once the
    // words they name are checked.
    if !p.mem.check(a[0], 4, Prot::READ) {
        return Ok(EFAULT);
    }
    let op = a[1] as i32 & libc::FUTEX_CMD_MASK;
    let timeout_ptr =
        matches!(op, libc::FUTEX_WAIT | libc::FUTEX_WAIT_BITSET | libc::FUTEX_LOCK_PI | libc::FUTEX_WAIT_REQUEUE_PI);
    if timeout_ptr && a[3] != 0 && !p.mem.check(a[3], 16, Prot::READ) {
        return Ok(EFAULT);
    }
    let second =
        matches!(op, libc::FUTEX_REQUEUE | libc::FUTEX_CMP_REQUEUE | libc::FUTEX_WAKE_OP | libc::FUTEX_CMP_REQUEUE_PI);
    if second && !p.mem.check(a[4], 4, Prot::READ) {
        return Ok(EFAULT);
    }
    Ok(raw_result(pass(202, a)))
}

// ----- descriptors urun keeps for itself -----

/// Is `fd` one of urun's own descriptors right now? Registered by an
/// engine and still naming what it opened (a KVM object): a number urun
/// closed since (a forked child remakes its VM) may be the guest's again.
pub(crate) fn is_urun_fd(fd: i32) -> bool {
    urun_cpu::hostfd::is_reserved(fd)
        && std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|t| {
                let t = t.to_string_lossy();
                t == "/dev/kvm" || t.starts_with("anon_inode:kvm")
            })
            .unwrap_or(false)
}

/// close: urun's own descriptors stay open; the guest is told they were
/// closed, as if they had been its own.
pub(crate) fn close(_: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    if is_urun_fd(a[0] as i32) {
        return Ok(0);
    }
    Ok(raw_result(pass(3, a)))
}

/// close_range: close the guest's descriptors in the range, around urun's.
pub(crate) fn close_range(_: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    let (first, last, flags) = (a[0] as u32, a[1] as u32, a[2]);
    if first > last {
        return Ok(EINVAL);
    }
    let mut lo = first;
    for fd in urun_cpu::hostfd::reserved().into_iter().filter(|fd| is_urun_fd(*fd)) {
        let fd = fd as u32;
        if fd < lo || fd > last {
            continue;
        }
        if fd > lo {
            let r = raw_result(pass(436, &[lo as u64, (fd - 1) as u64, flags, 0, 0, 0]));
            if r < 0 {
                return Ok(r);
            }
        }
        lo = fd + 1;
    }
    if lo <= last && lo >= first {
        return Ok(raw_result(pass(436, &[lo as u64, last as u64, flags, 0, 0, 0])));
    }
    Ok(0)
}

/// dup2/dup3 onto one of urun's own descriptors would close it under the
/// engine: refused with EBUSY (a documented difference; natively the
/// number would be free).
pub(crate) fn dup2(_: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    if is_urun_fd(a[1] as i32) {
        return Ok(-(libc::EBUSY as i64));
    }
    Ok(raw_result(pass(33, a)))
}

pub(crate) fn dup3(_: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    if is_urun_fd(a[1] as i32) {
        return Ok(-(libc::EBUSY as i64));
    }
    Ok(raw_result(pass(292, a)))
}
