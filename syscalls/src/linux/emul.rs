//! Syscalls urun emulates rather than passes through: the ones that change
//! what urun manages (memory map, FS/GS bases, process exit, signal
//! dispositions) or that would otherwise reveal urun instead of the guest.

use urun_cpu::mem::{page_ceil, Placement, PAGE_SIZE, USER_TOP};
use urun_cpu::{Backing, CpuState, FileMap, MemError, Prot};

use super::table::{guest_cstr, pass, raw_result};
use super::{Process, Stop};

/// An emulated syscall: returns RAX, or stops the guest.
pub(crate) type Handler = fn(&mut Process, &mut CpuState, &[u64; 6]) -> Result<i64, Stop>;

const EINVAL: i64 = -(libc::EINVAL as i64);
const EFAULT: i64 = -(libc::EFAULT as i64);
const ENOSYS: i64 = -(libc::ENOSYS as i64);

fn err(e: MemError) -> i64 {
    -(e.errno() as i64)
}

fn prot_of(bits: u64) -> Prot {
    Prot((bits & 7) as u32)
}

// ----- memory -----

pub(crate) fn mmap(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
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
    let path = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    // SAFETY: fstat writes a `stat` into the zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; an invalid fd just fails.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
    if !ok {
        return Backing::Anonymous;
    }
    Backing::File { path, offset, dev: st.st_dev, inode: st.st_ino }
}

pub(crate) fn munmap(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    Ok(match p.mem.unmap(a[0], a[1]) {
        Ok(()) => 0,
        Err(e) => err(e),
    })
}

pub(crate) fn mprotect(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    if a[2] & !7 & !(libc::PROT_GROWSDOWN as u64 | libc::PROT_GROWSUP as u64) != 0 {
        return Ok(EINVAL);
    }
    Ok(match p.mem.protect(a[0], a[1], prot_of(a[2])) {
        Ok(()) => 0,
        Err(e) => err(e),
    })
}

pub(crate) fn mremap(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
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

pub(crate) fn madvise(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    let len = page_ceil(a[1]);
    if a[0] % PAGE_SIZE != 0 {
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
        libc::MADV_DONTNEED | libc::MADV_FREE | libc::MADV_WILLNEED | libc::MADV_SEQUENTIAL | libc::MADV_RANDOM
        | libc::MADV_NORMAL | libc::MADV_HUGEPAGE | libc::MADV_NOHUGEPAGE | libc::MADV_DONTDUMP => {
            Ok(raw_result(pass(28, &[a[0], len, a[2], 0, 0, 0])))
        }
        _ => Ok(0),
    }
}

pub(crate) fn msync(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    if !p.mem.is_guest(a[0], page_ceil(a[1]).max(1)) {
        return Ok(-(libc::ENOMEM as i64));
    }
    Ok(raw_result(pass(26, a)))
}

pub(crate) fn brk(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    let want = a[0];
    let b = &mut p.brk;
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

pub(crate) fn arch_prctl(p: &mut Process, cpu: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
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
            if !p.mem.check(a[1], 8, Prot::WRITE) {
                return Ok(EFAULT);
            }
            // SAFETY: 8 writable guest bytes (checked above).
            unsafe { (a[1] as *mut u64).write_unaligned(v) };
            0
        }
        _ => EINVAL,
    })
}

pub(crate) fn set_tid_address(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    p.clear_child_tid = a[0];
    // SAFETY: gettid has no arguments and cannot fail.
    Ok(unsafe { libc::syscall(libc::SYS_gettid) })
}

pub(crate) fn set_robust_list(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    if a[1] != 24 {
        return Ok(EINVAL);
    }
    p.robust_list = a[0];
    Ok(0)
}

pub(crate) fn exit(_: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    // One guest thread for now: exit ends the process.
    Err(Stop::Exited(a[0] as i32 & 0xff))
}

pub(crate) fn exit_group(_: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    Err(Stop::Exited(a[0] as i32 & 0xff))
}

pub(crate) fn fork(_: &mut Process, _: &mut CpuState, _: &[u64; 6]) -> Result<i64, Stop> {
    // One guest thread: a host fork duplicates urun and the guest together,
    // and the child carries on from the same guest state.
    // SAFETY: urun runs one thread here, so the child is consistent.
    Ok(raw_result(unsafe { libc::fork() } as i64))
}

pub(crate) fn clone(p: &mut Process, cpu: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    let flags = a[0];
    let forklike = flags
        & (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND | libc::CLONE_VFORK | libc::CLONE_SETTLS) as u64
        == 0;
    if !forklike || a[1] != 0 {
        tracing::warn!(flags = format_args!("{flags:#x}"), "clone of threads or shared memory is not supported yet");
        return Ok(ENOSYS);
    }
    for ptr in [a[2], a[3]] {
        if ptr != 0 && !p.mem.check(ptr, 4, Prot::WRITE) {
            return Ok(EFAULT);
        }
    }
    let _ = cpu;
    // SAFETY: as for fork; the tid pointers were checked to be guest memory.
    Ok(raw_result(unsafe { libc::syscall(libc::SYS_clone, flags, 0u64, a[2], a[3], 0u64) }))
}

pub(crate) fn execve(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
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
        let at = ptr + i * 8;
        if !p.mem.check(at, 8, Prot::READ) {
            return None;
        }
        // SAFETY: checked readable guest memory.
        let s = unsafe { (at as *const u64).read_unaligned() };
        if s == 0 {
            return Some(out);
        }
        out.push(guest_cstr(p, s)?);
    }
    None
}

/// readlink of `/proc/self/exe` (and `/proc/<our pid>/exe`) names the
/// guest program, not urun.
fn readlink_at(p: &mut Process, dirfd: u64, path_ptr: u64, buf: u64, size: u64) -> i64 {
    let Some(path) = guest_cstr(p, path_ptr) else { return EFAULT };
    if size as i64 <= 0 {
        return EINVAL;
    }
    if p.is_proc_self(&path, b"exe") {
        let target = p.exe_path.as_os_str().as_encoded_bytes().to_vec();
        let n = target.len().min(size as usize);
        if !p.mem.check(buf, n as u64, Prot::WRITE) {
            return EFAULT;
        }
        // SAFETY: checked writable guest memory of n bytes.
        unsafe { std::ptr::copy_nonoverlapping(target.as_ptr(), buf as *mut u8, n) };
        return n as i64;
    }
    let size = p.mem.accessible_len(buf, size, Prot::WRITE);
    if size == 0 {
        return EFAULT;
    }
    raw_result(pass(267, &[dirfd, path_ptr, buf, size, 0, 0]))
}

pub(crate) fn readlink(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    Ok(readlink_at(p, libc::AT_FDCWD as u64, a[0], a[1], a[2]))
}

pub(crate) fn readlinkat(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    Ok(readlink_at(p, a[0], a[1], a[2], a[3]))
}

// ----- signals -----

pub(crate) fn rt_sigaction(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    let (sig, act, old, size) = (a[0] as usize, a[1], a[2], a[3]);
    if size != 8 || sig == 0 || sig > 64 {
        return Ok(EINVAL);
    }
    if act != 0 && (sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize) {
        return Ok(EINVAL);
    }
    if (act != 0 && !p.mem.check(act, 32, Prot::READ)) || (old != 0 && !p.mem.check(old, 32, Prot::WRITE)) {
        return Ok(EFAULT);
    }
    let prev = p.sigactions[sig];
    if act != 0 {
        // SAFETY: 32 readable guest bytes (checked above): the kernel's
        // struct sigaction {handler, flags, restorer, mask}.
        let new = unsafe {
            let q = act as *const u64;
            [q.read_unaligned(), q.add(1).read_unaligned(), q.add(2).read_unaligned(), q.add(3).read_unaligned()]
        };
        p.sigactions[sig] = new;
        // Ignore and default take effect on the host; guest handlers are
        // recorded (delivery to guest handlers is not implemented yet).
        let host = match new[0] {
            0 => Some(libc::SIG_DFL),
            1 => Some(libc::SIG_IGN),
            _ => None,
        };
        if let Some(h) = host {
            // SAFETY: installing SIG_DFL or SIG_IGN for a valid signal.
            unsafe { libc::signal(sig as i32, h) };
        }
    }
    if old != 0 {
        // SAFETY: 32 writable guest bytes (checked above).
        unsafe {
            let q = old as *mut u64;
            for (i, v) in prev.iter().enumerate() {
                q.add(i).write_unaligned(*v);
            }
        }
    }
    Ok(0)
}

pub(crate) fn sigaltstack(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    let (ss, old) = (a[0], a[1]);
    if (ss != 0 && !p.mem.check(ss, 24, Prot::READ)) || (old != 0 && !p.mem.check(old, 24, Prot::WRITE)) {
        return Ok(EFAULT);
    }
    if old != 0 {
        // SAFETY: 24 writable guest bytes (checked above): stack_t.
        unsafe {
            let q = old as *mut u64;
            q.write_unaligned(p.altstack[0]);
            q.add(1).write_unaligned(if p.altstack[2] == 0 { libc::SS_DISABLE as u64 } else { p.altstack[1] });
            q.add(2).write_unaligned(p.altstack[2]);
        }
    }
    if ss != 0 {
        // SAFETY: 24 readable guest bytes (checked above).
        let v = unsafe {
            let q = ss as *const u64;
            [q.read_unaligned(), q.add(1).read_unaligned(), q.add(2).read_unaligned()]
        };
        if v[1] as i32 & libc::SS_DISABLE != 0 {
            p.altstack = [0, libc::SS_DISABLE as u64, 0];
        } else if v[2] < 2048 {
            return Ok(-(libc::ENOMEM as i64));
        } else {
            p.altstack = v;
        }
    }
    Ok(0)
}

// ----- descriptors and misc -----

pub(crate) fn ioctl(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
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

pub(crate) fn fcntl(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    // Commands taking a struct flock pointer.
    let locks = [libc::F_GETLK, libc::F_SETLK, libc::F_SETLKW, libc::F_OFD_GETLK, libc::F_OFD_SETLK, libc::F_OFD_SETLKW];
    if locks.contains(&(a[1] as i32)) && !p.mem.check(a[2], 32, Prot::WRITE) {
        return Ok(EFAULT);
    }
    Ok(raw_result(pass(72, a)))
}

pub(crate) fn prctl(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    match a[0] as i32 {
        libc::PR_SET_NAME if guest_cstr(p, a[1]).is_none() => Ok(EFAULT),
        libc::PR_GET_NAME if !p.mem.check(a[1], 16, Prot::WRITE) => Ok(EFAULT),
        libc::PR_SET_NAME | libc::PR_GET_NAME | libc::PR_GET_DUMPABLE | libc::PR_SET_DUMPABLE
        | libc::PR_SET_PDEATHSIG | libc::PR_GET_NO_NEW_PRIVS | libc::PR_SET_NO_NEW_PRIVS => {
            Ok(raw_result(pass(157, a)))
        }
        _ => Ok(EINVAL),
    }
}

pub(crate) fn futex(p: &mut Process, _: &mut CpuState, a: &[u64; 6]) -> Result<i64, Stop> {
    // Guest addresses are host addresses, so futexes pass through once the
    // words they name are checked.
    if !p.mem.check(a[0], 4, Prot::READ) {
        return Ok(EFAULT);
    }
    let op = a[1] as i32 & libc::FUTEX_CMD_MASK;
    let timeout_ptr = matches!(op, libc::FUTEX_WAIT | libc::FUTEX_WAIT_BITSET | libc::FUTEX_LOCK_PI | libc::FUTEX_WAIT_REQUEUE_PI);
    if timeout_ptr && a[3] != 0 && !p.mem.check(a[3], 16, Prot::READ) {
        return Ok(EFAULT);
    }
    let second = matches!(op, libc::FUTEX_REQUEUE | libc::FUTEX_CMP_REQUEUE | libc::FUTEX_WAKE_OP | libc::FUTEX_CMP_REQUEUE_PI);
    if second && !p.mem.check(a[4], 4, Prot::READ) {
        return Ok(EFAULT);
    }
    Ok(raw_result(pass(202, a)))
}
