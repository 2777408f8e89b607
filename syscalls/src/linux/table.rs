//! The Linux x86-64 syscall table: for each number, its name, what its
//! arguments are (so pointers can be checked and `--strace` can print them),
//! and whether it passes straight to the host or is emulated.

use super::{emul, guest, memfile, procfs, signal, thread};
use super::{Process, Task};
use urun_cpu::Prot;

/// What an argument is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum A {
    /// An integer, printed in decimal.
    I,
    /// Flags, modes or addresses that are not dereferenced: printed in hex.
    X,
    /// A file descriptor.
    Fd,
    /// A NUL-terminated string the kernel reads (NULL allowed).
    Str,
    /// A buffer the kernel reads.
    In(Len),
    /// A buffer the kernel writes.
    Out(Len),
    /// An array of `struct iovec` whose buffers the kernel reads; count in argument N.
    IovIn(u8),
    /// An array of `struct iovec` whose buffers the kernel writes.
    IovOut(u8),
    /// A buffer the kernel writes whose size is the `u32` that argument N
    /// points to (socket addresses, socket options).
    OutLenPtr(u8),
    /// A `struct msghdr` (sendmsg: its buffers are read; recvmsg: written).
    Msg { write: bool },
    /// An array of `struct mmsghdr` (sendmmsg, recvmmsg); count in argument N.
    MsgVec { write: bool, count: u8 },
}

/// The length of a buffer argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Len {
    /// In bytes, given by argument N.
    Arg(u8),
    /// A fixed size (a struct).
    Fixed(u32),
    /// Argument N times a fixed element size.
    ArgTimes(u8, u32),
}

/// How a syscall is serviced.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// Checked, then passed to the host kernel unchanged.
    Pass,
    /// Emulated by urun.
    Emul(emul::Handler),
    /// Known but not provided: -ENOSYS without a report (libc falls back).
    Nosys,
}

/// One syscall.
pub(crate) struct Syscall {
    pub nr: u64,
    pub name: &'static str,
    pub args: &'static [A],
    pub kind: Kind,
}

use Kind::{Emul, Nosys, Pass};
use Len::{Arg, ArgTimes, Fixed};
use A::*;

const STAT: Len = Fixed(144);
const TIMESPEC: Len = Fixed(16);

macro_rules! sys {
    ($nr:expr, $name:ident, [$($a:expr),*], $kind:expr) => {
        Syscall { nr: $nr, name: stringify!($name), args: &[$($a),*], kind: $kind }
    };
}

/// Every syscall urun knows, by number.
pub(crate) static SYSCALLS: &[Syscall] = &[
    sys!(0, read, [Fd, Out(Arg(2)), I], Pass),
    sys!(1, write, [Fd, In(Arg(2)), I], Pass),
    sys!(2, open, [Str, X, X], Emul(procfs::open)),
    sys!(3, close, [Fd], Emul(emul::close)),
    sys!(4, stat, [Str, Out(STAT)], Pass),
    sys!(5, fstat, [Fd, Out(STAT)], Pass),
    sys!(6, lstat, [Str, Out(STAT)], Pass),
    sys!(7, poll, [Out(ArgTimes(1, 8)), I, I], Pass),
    sys!(8, lseek, [Fd, I, I], Pass),
    sys!(9, mmap, [X, X, X, X, Fd, X], Emul(emul::mmap)),
    sys!(10, mprotect, [X, X, X], Emul(emul::mprotect)),
    sys!(11, munmap, [X, X], Emul(emul::munmap)),
    sys!(12, brk, [X], Emul(emul::brk)),
    sys!(13, rt_sigaction, [I, X, X, I], Emul(signal::rt_sigaction)),
    sys!(14, rt_sigprocmask, [I, X, X, I], Emul(signal::rt_sigprocmask)),
    sys!(15, rt_sigreturn, [], Emul(signal::rt_sigreturn)),
    sys!(16, ioctl, [Fd, X, X], Emul(emul::ioctl)),
    sys!(17, pread64, [Fd, Out(Arg(2)), I, I], Pass),
    sys!(18, pwrite64, [Fd, In(Arg(2)), I, I], Pass),
    sys!(19, readv, [Fd, IovOut(2), I], Pass),
    sys!(20, writev, [Fd, IovIn(2), I], Pass),
    sys!(21, access, [Str, X], Pass),
    sys!(22, pipe, [Out(Fixed(8))], Pass),
    sys!(23, select, [I, Out(Fixed(128)), Out(Fixed(128)), Out(Fixed(128)), Out(Fixed(16))], Pass),
    sys!(24, sched_yield, [], Pass),
    sys!(25, mremap, [X, X, X, X, X], Emul(emul::mremap)),
    sys!(26, msync, [X, X, X], Emul(emul::msync)),
    sys!(27, mincore, [X, X, X], Emul(emul::mincore)),
    sys!(28, madvise, [X, X, I], Emul(emul::madvise)),
    sys!(32, dup, [Fd], Pass),
    sys!(33, dup2, [Fd, Fd], Emul(emul::dup2)),
    sys!(34, pause, [], Pass),
    sys!(35, nanosleep, [In(TIMESPEC), Out(TIMESPEC)], Pass),
    sys!(36, getitimer, [I, Out(Fixed(32))], Pass),
    sys!(37, alarm, [I], Pass),
    sys!(38, setitimer, [I, In(Fixed(32)), Out(Fixed(32))], Pass),
    sys!(39, getpid, [], Pass),
    sys!(40, sendfile, [Fd, Fd, Out(Fixed(8)), I], Pass),
    sys!(41, socket, [I, I, I], Pass),
    sys!(42, connect, [Fd, In(Arg(2)), I], Pass),
    sys!(43, accept, [Fd, OutLenPtr(2), Out(Fixed(4))], Pass),
    sys!(44, sendto, [Fd, In(Arg(2)), I, X, In(Arg(5)), I], Pass),
    sys!(45, recvfrom, [Fd, Out(Arg(2)), I, X, OutLenPtr(5), Out(Fixed(4))], Pass),
    sys!(46, sendmsg, [Fd, Msg { write: false }, X], Pass),
    sys!(47, recvmsg, [Fd, Msg { write: true }, X], Pass),
    sys!(48, shutdown, [Fd, I], Pass),
    sys!(49, bind, [Fd, In(Arg(2)), I], Pass),
    sys!(50, listen, [Fd, I], Pass),
    sys!(51, getsockname, [Fd, OutLenPtr(2), Out(Fixed(4))], Pass),
    sys!(52, getpeername, [Fd, OutLenPtr(2), Out(Fixed(4))], Pass),
    sys!(53, socketpair, [I, I, I, Out(Fixed(8))], Pass),
    sys!(54, setsockopt, [Fd, I, I, In(Arg(4)), I], Pass),
    sys!(55, getsockopt, [Fd, I, I, OutLenPtr(4), Out(Fixed(4))], Pass),
    sys!(56, clone, [X, X, X, X, X], Emul(thread::clone)),
    sys!(57, fork, [], Emul(thread::fork)),
    sys!(58, vfork, [], Emul(thread::vfork)),
    sys!(59, execve, [Str, X, X], Emul(emul::execve)),
    sys!(60, exit, [I], Emul(thread::exit)),
    sys!(61, wait4, [I, Out(Fixed(4)), X, Out(Fixed(144))], Pass),
    sys!(62, kill, [I, I], Pass),
    sys!(63, uname, [Out(Fixed(390))], Pass),
    sys!(72, fcntl, [Fd, I, X], Emul(emul::fcntl)),
    sys!(73, flock, [Fd, I], Pass),
    sys!(74, fsync, [Fd], Pass),
    sys!(75, fdatasync, [Fd], Pass),
    sys!(76, truncate, [Str, I], Pass),
    sys!(77, ftruncate, [Fd, I], Pass),
    sys!(78, getdents, [Fd, Out(Arg(2)), I], Pass),
    sys!(79, getcwd, [Out(Arg(1)), I], Pass),
    sys!(80, chdir, [Str], Pass),
    sys!(81, fchdir, [Fd], Pass),
    sys!(82, rename, [Str, Str], Pass),
    sys!(83, mkdir, [Str, X], Pass),
    sys!(84, rmdir, [Str], Pass),
    sys!(85, creat, [Str, X], Pass),
    sys!(86, link, [Str, Str], Pass),
    sys!(87, unlink, [Str], Pass),
    sys!(88, symlink, [Str, Str], Pass),
    sys!(89, readlink, [Str, Out(Arg(2)), I], Emul(emul::readlink)),
    sys!(90, chmod, [Str, X], Pass),
    sys!(91, fchmod, [Fd, X], Pass),
    sys!(92, chown, [Str, I, I], Pass),
    sys!(93, fchown, [Fd, I, I], Pass),
    sys!(94, lchown, [Str, I, I], Pass),
    sys!(95, umask, [X], Pass),
    sys!(96, gettimeofday, [Out(Fixed(16)), Out(Fixed(8))], Pass),
    sys!(97, getrlimit, [I, Out(Fixed(16))], Pass),
    sys!(98, getrusage, [I, Out(Fixed(144))], Pass),
    sys!(99, sysinfo, [Out(Fixed(112))], Pass),
    sys!(100, times, [Out(Fixed(32))], Pass),
    sys!(102, getuid, [], Pass),
    sys!(104, getgid, [], Pass),
    sys!(105, setuid, [I], Pass),
    sys!(106, setgid, [I], Pass),
    sys!(107, geteuid, [], Pass),
    sys!(108, getegid, [], Pass),
    sys!(109, setpgid, [I, I], Pass),
    sys!(110, getppid, [], Pass),
    sys!(111, getpgrp, [], Pass),
    sys!(112, setsid, [], Pass),
    sys!(113, setreuid, [I, I], Pass),
    sys!(114, setregid, [I, I], Pass),
    sys!(115, getgroups, [I, Out(ArgTimes(0, 4))], Pass),
    sys!(116, setgroups, [I, In(ArgTimes(0, 4))], Pass),
    sys!(117, setresuid, [I, I, I], Pass),
    sys!(118, getresuid, [Out(Fixed(4)), Out(Fixed(4)), Out(Fixed(4))], Pass),
    sys!(119, setresgid, [I, I, I], Pass),
    sys!(120, getresgid, [Out(Fixed(4)), Out(Fixed(4)), Out(Fixed(4))], Pass),
    sys!(121, getpgid, [I], Pass),
    sys!(124, getsid, [I], Pass),
    sys!(127, rt_sigpending, [Out(Arg(1)), I], Pass),
    sys!(128, rt_sigtimedwait, [In(Fixed(8)), Out(Fixed(128)), In(TIMESPEC), I], Pass),
    sys!(129, rt_sigqueueinfo, [I, I, In(Fixed(128))], Pass),
    sys!(130, rt_sigsuspend, [In(Fixed(8)), I], Emul(signal::rt_sigsuspend)),
    sys!(131, sigaltstack, [X, X], Emul(signal::sigaltstack)),
    sys!(132, utime, [Str, In(Fixed(16))], Pass),
    sys!(135, personality, [X], Pass),
    sys!(137, statfs, [Str, Out(Fixed(120))], Pass),
    sys!(138, fstatfs, [Fd, Out(Fixed(120))], Pass),
    sys!(140, getpriority, [I, I], Pass),
    sys!(141, setpriority, [I, I, I], Pass),
    sys!(142, sched_setparam, [I, In(Fixed(4))], Pass),
    sys!(143, sched_getparam, [I, Out(Fixed(4))], Pass),
    sys!(144, sched_setscheduler, [I, I, In(Fixed(4))], Pass),
    sys!(145, sched_getscheduler, [I], Pass),
    sys!(146, sched_get_priority_max, [I], Pass),
    sys!(147, sched_get_priority_min, [I], Pass),
    sys!(149, mlock, [X, X], Pass),
    sys!(150, munlock, [X, X], Pass),
    sys!(157, prctl, [I, X, X, X, X], Emul(emul::prctl)),
    sys!(158, arch_prctl, [X, X], Emul(emul::arch_prctl)),
    sys!(160, setrlimit, [I, In(Fixed(16))], Pass),
    sys!(161, chroot, [Str], Pass),
    sys!(162, sync, [], Pass),
    sys!(186, gettid, [], Pass),
    sys!(188, setxattr, [Str, Str, In(Arg(3)), I, X], Pass),
    sys!(189, lsetxattr, [Str, Str, In(Arg(3)), I, X], Pass),
    sys!(190, fsetxattr, [Fd, Str, In(Arg(3)), I, X], Pass),
    sys!(191, getxattr, [Str, Str, Out(Arg(3)), I], Pass),
    sys!(192, lgetxattr, [Str, Str, Out(Arg(3)), I], Pass),
    sys!(193, fgetxattr, [Fd, Str, Out(Arg(3)), I], Pass),
    sys!(194, listxattr, [Str, Out(Arg(2)), I], Pass),
    sys!(195, llistxattr, [Str, Out(Arg(2)), I], Pass),
    sys!(196, flistxattr, [Fd, Out(Arg(2)), I], Pass),
    sys!(197, removexattr, [Str, Str], Pass),
    sys!(198, lremovexattr, [Str, Str], Pass),
    sys!(199, fremovexattr, [Fd, Str], Pass),
    sys!(200, tkill, [I, I], Pass),
    sys!(201, time, [Out(Fixed(8))], Pass),
    sys!(202, futex, [X, I, X, X, X, X], Emul(emul::futex)),
    sys!(203, sched_setaffinity, [I, I, In(Arg(1))], Pass),
    sys!(204, sched_getaffinity, [I, I, Out(Arg(1))], Pass),
    sys!(213, epoll_create, [I], Pass),
    sys!(217, getdents64, [Fd, Out(Arg(2)), I], Pass),
    sys!(218, set_tid_address, [X], Emul(emul::set_tid_address)),
    sys!(219, restart_syscall, [], Pass),
    sys!(221, fadvise64, [Fd, I, I, I], Pass),
    sys!(222, timer_create, [I, In(Fixed(64)), Out(Fixed(4))], Pass),
    sys!(223, timer_settime, [I, I, In(Fixed(32)), Out(Fixed(32))], Pass),
    sys!(224, timer_gettime, [I, Out(Fixed(32))], Pass),
    sys!(225, timer_getoverrun, [I], Pass),
    sys!(226, timer_delete, [I], Pass),
    sys!(228, clock_gettime, [I, Out(TIMESPEC)], Pass),
    sys!(229, clock_getres, [I, Out(TIMESPEC)], Pass),
    sys!(230, clock_nanosleep, [I, X, In(TIMESPEC), Out(TIMESPEC)], Pass),
    sys!(231, exit_group, [I], Emul(thread::exit_group)),
    sys!(232, epoll_wait, [Fd, Out(ArgTimes(2, 12)), I, I], Pass),
    sys!(233, epoll_ctl, [Fd, I, Fd, In(Fixed(12))], Pass),
    sys!(234, tgkill, [I, I, I], Pass),
    sys!(235, utimes, [Str, In(Fixed(32))], Pass),
    sys!(247, waitid, [I, I, Out(Fixed(128)), X, Out(Fixed(144))], Pass),
    sys!(253, inotify_init, [], Pass),
    sys!(254, inotify_add_watch, [Fd, Str, X], Pass),
    sys!(255, inotify_rm_watch, [Fd, I], Pass),
    sys!(257, openat, [Fd, Str, X, X], Emul(procfs::openat)),
    sys!(258, mkdirat, [Fd, Str, X], Pass),
    sys!(259, mknodat, [Fd, Str, X, X], Pass),
    sys!(260, fchownat, [Fd, Str, I, I, X], Pass),
    sys!(262, newfstatat, [Fd, Str, Out(STAT), X], Pass),
    sys!(263, unlinkat, [Fd, Str, X], Pass),
    sys!(264, renameat, [Fd, Str, Fd, Str], Pass),
    sys!(265, linkat, [Fd, Str, Fd, Str, X], Pass),
    sys!(266, symlinkat, [Str, Fd, Str], Pass),
    sys!(267, readlinkat, [Fd, Str, Out(Arg(3)), I], Emul(emul::readlinkat)),
    sys!(268, fchmodat, [Fd, Str, X], Pass),
    sys!(269, faccessat, [Fd, Str, X], Pass),
    sys!(270, pselect6, [I, Out(Fixed(128)), Out(Fixed(128)), Out(Fixed(128)), In(TIMESPEC), In(Fixed(16))], Pass),
    sys!(271, ppoll, [Out(ArgTimes(1, 8)), I, In(TIMESPEC), In(Fixed(8)), I], Pass),
    sys!(273, set_robust_list, [X, I], Emul(emul::set_robust_list)),
    sys!(275, splice, [Fd, Out(Fixed(8)), Fd, Out(Fixed(8)), I, X], Pass),
    sys!(276, tee, [Fd, Fd, I, X], Pass),
    sys!(280, utimensat, [Fd, Str, In(Fixed(32)), X], Pass),
    sys!(281, epoll_pwait, [Fd, Out(ArgTimes(2, 12)), I, I, In(Fixed(8)), I], Pass),
    sys!(283, timerfd_create, [I, X], Pass),
    sys!(284, eventfd, [I], Pass),
    sys!(285, fallocate, [Fd, X, I, I], Pass),
    sys!(286, timerfd_settime, [Fd, X, In(Fixed(32)), Out(Fixed(32))], Pass),
    sys!(287, timerfd_gettime, [Fd, Out(Fixed(32))], Pass),
    sys!(288, accept4, [Fd, OutLenPtr(2), Out(Fixed(4)), X], Pass),
    sys!(289, signalfd4, [Fd, In(Fixed(8)), I, X], Pass),
    sys!(290, eventfd2, [I, X], Pass),
    sys!(291, epoll_create1, [X], Pass),
    sys!(292, dup3, [Fd, Fd, X], Emul(emul::dup3)),
    sys!(293, pipe2, [Out(Fixed(8)), X], Pass),
    sys!(294, inotify_init1, [X], Pass),
    sys!(295, preadv, [Fd, IovOut(2), I, I, I], Pass),
    sys!(296, pwritev, [Fd, IovIn(2), I, I, I], Pass),
    sys!(297, rt_tgsigqueueinfo, [I, I, I, In(Fixed(128))], Pass),
    sys!(299, recvmmsg, [Fd, MsgVec { write: true, count: 2 }, I, X, Out(TIMESPEC)], Pass),
    sys!(302, prlimit64, [I, I, In(Fixed(16)), Out(Fixed(16))], Pass),
    sys!(306, syncfs, [Fd], Pass),
    sys!(307, sendmmsg, [Fd, MsgVec { write: false, count: 2 }, I, X], Pass),
    sys!(309, getcpu, [Out(Fixed(4)), Out(Fixed(4)), X], Pass),
    sys!(310, process_vm_readv, [I, X, I, X, I, X], Emul(memfile::process_vm_readv)),
    sys!(311, process_vm_writev, [I, X, I, X, I, X], Emul(memfile::process_vm_writev)),
    sys!(316, renameat2, [Fd, Str, Fd, Str, X], Pass),
    sys!(318, getrandom, [Out(Arg(1)), I, X], Pass),
    sys!(319, memfd_create, [Str, X], Pass),
    sys!(324, membarrier, [I, X, I], Pass),
    sys!(326, copy_file_range, [Fd, Out(Fixed(8)), Fd, Out(Fixed(8)), I, X], Pass),
    sys!(332, statx, [Fd, Str, X, X, Out(Fixed(256))], Pass),
    sys!(334, rseq, [X, I, X, X], Nosys),
    sys!(434, pidfd_open, [I, X], Pass),
    sys!(435, clone3, [X, I], Nosys),
    sys!(436, close_range, [I, I, X], Emul(emul::close_range)),
    sys!(439, faccessat2, [Fd, Str, X, X], Pass),
];

/// Syscall lookup by number, built once.
pub(crate) fn lookup(nr: u64) -> Option<&'static Syscall> {
    static BY_NR: std::sync::LazyLock<Vec<Option<&'static Syscall>>> = std::sync::LazyLock::new(|| {
        let max = SYSCALLS.iter().map(|s| s.nr).max().unwrap_or(0) as usize;
        let mut v = vec![None; max + 1];
        for s in SYSCALLS {
            v[s.nr as usize] = Some(s);
        }
        v
    });
    BY_NR.get(usize::try_from(nr).ok()?).copied().flatten()
}

/// The byte length of a buffer argument.
fn buf_len(len: Len, args: &[u64; 6]) -> u64 {
    match len {
        Arg(i) => args[i as usize],
        Fixed(n) => n as u64,
        ArgTimes(i, n) => args[i as usize].saturating_mul(n as u64),
    }
}

/// What the kernel would read through guest pointers after urun checked
/// them (strings, iovec arrays, `struct msghdr`/`mmsghdr`, length words):
/// copied into urun's memory by `prepare`, and passed to the kernel in
/// place of the guest's, so that a racing guest thread cannot change a
/// pointer or a length between the check and the kernel's use and send the
/// kernel into urun's memory. The kernel's updates to them (a length, msghdr
/// fields) are copied back by `write_back`. Buffers stay in guest memory:
/// the kernel reads and writes them where the guest has them.
#[derive(Default)]
pub(crate) struct Copies {
    strings: Vec<Vec<u8>>,
    iovs: Vec<Vec<[u64; 2]>>,
    /// (guest address, urun's copy) of a `u32` length word.
    lens: Vec<(u64, Box<u32>)>,
    msgs: Vec<MsgCopy>,
}

/// Copies of one `struct msghdr`, or of an array of `struct mmsghdr`.
struct MsgCopy {
    /// Guest address of the first header.
    guest: u64,
    /// Guest header size: 56 (`msghdr`) or 64 (`mmsghdr`).
    stride: u64,
    /// urun's copies, each an `mmsghdr` (a `msghdr` is its first 56 bytes),
    /// with `msg_iov` pointing at `iovs`.
    hdrs: Vec<[u64; 8]>,
    iovs: Vec<Vec<[u64; 2]>>,
    /// recvmsg/recvmmsg: the kernel updates the name and control lengths
    /// and the flags.
    recv: bool,
}

/// UIO_MAXIOV: more iovecs than this and the kernel refuses the call.
const UIO_MAXIOV: u64 = 1024;
const EFAULT: i64 = -(libc::EFAULT as i64);

impl Copies {
    /// After a successful call (`ret` >= 0), copy back what the kernel
    /// wrote into the copies; -EFAULT if the guest's memory is gone.
    pub(crate) fn write_back(&self, mem: &urun_cpu::AddressSpace, ret: i64) -> i64 {
        if ret < 0 {
            return ret;
        }
        for (guest, copy) in &self.lens {
            if !guest::write(mem, *guest, &**copy) {
                return EFAULT;
            }
        }
        for m in &self.msgs {
            // recvmsg fills its one header; sendmmsg/recvmmsg the first `ret`.
            let n = if m.stride == 56 { m.hdrs.len() } else { (ret as usize).min(m.hdrs.len()) };
            for (k, h) in m.hdrs[..n].iter().enumerate() {
                let at = m.guest + k as u64 * m.stride;
                let mut ok = true;
                if m.recv {
                    ok &= guest::write(mem, at + 8, &(h[1] as u32));
                    ok &= guest::write(mem, at + 40, &h[5]);
                    ok &= guest::write(mem, at + 48, &(h[6] as u32));
                }
                if m.stride == 64 {
                    ok &= guest::write(mem, at + 56, &(h[7] as u32));
                }
                if !ok {
                    return EFAULT;
                }
            }
        }
        ret
    }
}

/// Check every pointer argument the kernel would follow against the
/// guest's memory, and put urun's copies in `args` where the kernel would
/// read a pointer or a length through one (see `Copies`). `Err(-errno)`
/// means the syscall fails with it (-EFAULT for memory the guest may not
/// access). A buffer whose length is an argument is clipped to the guest
/// memory that follows it, as the kernel stops copying where a native
/// process's memory ends (a short read or write, or -EFAULT if nothing is
/// there).
pub(crate) fn prepare(p: &Process, sc: &Syscall, args: &mut [u64; 6], copies: &mut Copies) -> Result<(), i64> {
    let mem = &p.mem;
    // Arguments replaced by a pointer to urun's copy (already checked).
    let mut replaced = 0u8;
    for (i, a) in sc.args.iter().enumerate() {
        let ptr = args[i];
        if replaced & (1 << i) != 0 {
            continue;
        }
        match *a {
            I | X | Fd => {}
            Str if ptr == 0 => {}
            Str => {
                let mut s = guest_cstr(p, ptr).ok_or(EFAULT)?;
                s.push(0);
                args[i] = s.as_ptr() as u64;
                copies.strings.push(s);
            }
            In(Arg(n)) | Out(Arg(n)) => {
                let need = if matches!(*a, In(_)) { Prot::READ } else { Prot::WRITE };
                let want = args[n as usize];
                if ptr != 0 && want != 0 {
                    let have = mem.accessible_len(ptr, want, need);
                    if have == 0 {
                        return Err(EFAULT);
                    }
                    args[n as usize] = have;
                }
            }
            In(len) if ptr != 0 && !mem.check(ptr, buf_len(len, args), Prot::READ) => return Err(EFAULT),
            Out(len) if ptr != 0 && !mem.check(ptr, buf_len(len, args), Prot::WRITE) => return Err(EFAULT),
            In(_) | Out(_) => {}
            OutLenPtr(n) => {
                let lp = args[n as usize];
                if ptr == 0 || lp == 0 {
                    continue;
                }
                // The kernel reads the length, fills that much of the
                // buffer, and writes the length back: it gets urun's copy of
                // the length word, the one checked here.
                if !mem.check(lp, 4, Prot::WRITE) {
                    return Err(EFAULT);
                }
                let len: u32 = guest::read(mem, lp).ok_or(EFAULT)?;
                if !mem.check(ptr, len as u64, Prot::WRITE) {
                    return Err(EFAULT);
                }
                let copy = Box::new(len);
                args[n as usize] = &*copy as *const u32 as u64;
                replaced |= 1 << n;
                copies.lens.push((lp, copy));
            }
            Msg { write } if ptr != 0 => {
                let (hdr, iov) = copy_msghdr(p, ptr, write)?;
                let mut m = MsgCopy { guest: ptr, stride: 56, hdrs: vec![hdr], iovs: vec![iov], recv: write };
                m.hdrs[0][2] = m.iovs[0].as_ptr() as u64;
                args[i] = m.hdrs.as_ptr() as u64;
                copies.msgs.push(m);
            }
            Msg { .. } => {}
            MsgVec { write, count } if ptr != 0 => {
                // The kernel handles at most UIO_MAXIOV headers a call.
                let n = args[count as usize].min(UIO_MAXIOV);
                let mut m = MsgCopy { guest: ptr, stride: 64, hdrs: Vec::new(), iovs: Vec::new(), recv: write };
                for k in 0..n {
                    let (hdr, iov) = copy_msghdr(p, ptr + k * 64, write)?;
                    m.hdrs.push(hdr);
                    m.iovs.push(iov);
                }
                for (h, iov) in m.hdrs.iter_mut().zip(&m.iovs) {
                    h[2] = iov.as_ptr() as u64;
                }
                args[count as usize] = n;
                args[i] = m.hdrs.as_ptr() as u64;
                copies.msgs.push(m);
            }
            MsgVec { .. } => {}
            IovIn(n) | IovOut(n) => {
                let count = args[n as usize];
                if count == 0 {
                    continue;
                }
                if count > UIO_MAXIOV {
                    return Err(-(libc::EINVAL as i64));
                }
                let need = if matches!(*a, IovIn(_)) { Prot::READ } else { Prot::WRITE };
                let iov = copy_iovec(p, ptr, count, need)?;
                args[i] = iov.as_ptr() as u64;
                copies.iovs.push(iov);
            }
        }
    }
    Ok(())
}

/// Copy `count` guest iovecs at `ptr` and check their buffers for `need`.
fn copy_iovec(p: &Process, ptr: u64, count: u64, need: Prot) -> Result<Vec<[u64; 2]>, i64> {
    let mut iov = vec![[0u64; 2]; count as usize];
    // SAFETY: `[u64; 2]` is plain data; the byte view covers exactly `iov`.
    let bytes = unsafe { std::slice::from_raw_parts_mut(iov.as_mut_ptr() as *mut u8, iov.len() * 16) };
    if !guest::read_into(&p.mem, ptr, bytes) {
        return Err(EFAULT);
    }
    for &[base, len] in &iov {
        if len != 0 && !p.mem.check(base, len, need) {
            return Err(EFAULT);
        }
    }
    Ok(iov)
}

/// Copy a guest `struct msghdr` and its iovec array, checking the name,
/// control and iovec buffers (written by the kernel if `write`). The
/// header's `msg_iov` still names the guest's array: the caller points it
/// at the copy.
fn copy_msghdr(p: &Process, ptr: u64, write: bool) -> Result<([u64; 8], Vec<[u64; 2]>), i64> {
    let h: [u64; 7] = guest::read(&p.mem, ptr).ok_or(EFAULT)?;
    let (name, namelen, iov, iovlen, control, controllen) = (h[0], h[1] & 0xffff_ffff, h[2], h[3], h[4], h[5]);
    let need = if write { Prot::WRITE } else { Prot::READ };
    let buf_ok = |b: u64, n: u64| b == 0 || n == 0 || p.mem.check(b, n, need);
    if !buf_ok(name, namelen) || !buf_ok(control, controllen) {
        return Err(EFAULT);
    }
    if iovlen > UIO_MAXIOV {
        return Err(-(libc::EMSGSIZE as i64));
    }
    let iovs = if iovlen == 0 { Vec::new() } else { copy_iovec(p, iov, iovlen, need)? };
    Ok(([h[0], h[1], h[2], h[3], h[4], h[5], h[6], 0], iovs))
}

/// The NUL-terminated guest string at `ptr`, if it lies wholly in readable
/// guest memory (at most 64 KiB).
pub(crate) fn guest_cstr(p: &Process, ptr: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = ptr;
    let mut chunk = [0u8; 4096];
    while out.len() < 65536 {
        let page_end = (at | 0xfff).checked_add(1)?;
        let part = &mut chunk[..(page_end - at) as usize];
        if !guest::read_into(&p.mem, at, part) {
            return None;
        }
        match part.iter().position(|&b| b == 0) {
            Some(n) => {
                out.extend_from_slice(&part[..n]);
                return Some(out);
            }
            None => out.extend_from_slice(part),
        }
        at = page_end;
    }
    None
}

/// After a pass-through call that wrote guest buffers: if one holds code
/// an engine translated, log it (the code log in `AddressSpace`), so every
/// engine sees code the kernel wrote (a `read` into an executable page).
/// Only the plain data buffers (`Out(Arg)`, `IovOut`) are followed: the
/// fixed-size structs the kernel fills are not code.
fn note_kernel_writes(p: &Process, sc: &Syscall, args: &[u64; 6]) {
    for (i, a) in sc.args.iter().enumerate() {
        match *a {
            Out(Arg(n)) => {
                p.mem.code_written(args[i], args[n as usize]);
            }
            IovOut(n) => {
                let count = args[n as usize].min(UIO_MAXIOV);
                for k in 0..count {
                    // SAFETY: `args` were prepared (`prepare`): a nonzero
                    // count's iovec array is urun's own copy of the guest's,
                    // alive until the call returns.
                    let (base, len) = unsafe {
                        let e = (args[i] + k * 16) as *const u64;
                        (e.read_unaligned(), e.add(1).read_unaligned())
                    };
                    p.mem.code_written(base, len);
                }
            }
            _ => {}
        }
    }
}

/// Pass a syscall to the host kernel unchanged.
pub(crate) fn pass(nr: u64, args: &[u64; 6]) -> i64 {
    // SAFETY: every pointer argument was checked to be guest memory with the
    // right access, or is urun's copy of one (`prepare`), so the kernel
    // reads and writes only the guest's memory, as it would natively.
    unsafe { libc::syscall(nr as i64, args[0], args[1], args[2], args[3], args[4], args[5]) as i64 }
}

/// Result of a raw syscall as `-errno` or a value.
pub(crate) fn raw_result(r: i64) -> i64 {
    if r == -1 {
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) as i64)
    } else {
        r
    }
}

/// Run syscall `nr` for the guest; returns the value for RAX.
pub(crate) fn dispatch(task: &mut Task<'_>, nr: u64, args: &[u64; 6]) -> Result<i64, super::Stop> {
    let p = task.p.as_ref();
    let Some(sc) = lookup(nr) else {
        p.report_unknown(nr);
        return Ok(-(libc::ENOSYS as i64));
    };
    if names_urun_fd(sc, args) {
        return Ok(-(libc::EBADF as i64));
    }
    let r = match sc.kind {
        Nosys => Ok(-(libc::ENOSYS as i64)),
        Pass => {
            let mut args = *args;
            let mut copies = Copies::default();
            if let Err(e) = prepare(p, sc, &mut args, &mut copies) {
                return Ok(e);
            }
            if let Some(r) = memfile::io(p, nr, &args) {
                return Ok(r);
            }
            let r = raw_result(pass(nr, &args));
            if r > 0 {
                note_kernel_writes(p, sc, &args);
            }
            Ok(copies.write_back(&p.mem, r))
        }
        Emul(h) => h(task, args),
    };
    if let Ok(v) = r {
        memfile::after(p, nr, args, v);
    }
    r
}

/// Does the call name one of urun's own descriptors (the KVM engine's) as
/// a descriptor argument? Then it gets EBADF, as if that descriptor were
/// not open, and never reaches the host. Left to their handlers: close
/// (a no-op on them) and the target of dup2/dup3 (EBUSY), and the ignored
/// descriptor of an anonymous mmap.
fn names_urun_fd(sc: &Syscall, args: &[u64; 6]) -> bool {
    sc.args.iter().enumerate().any(|(i, a)| {
        *a == Fd
            && !(sc.nr == 3 || (matches!(sc.nr, 33 | 292) && i == 1))
            && !(sc.nr == 9 && args[3] & libc::MAP_ANONYMOUS as u64 != 0)
            && emul::is_urun_fd(args[i] as i32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use urun_cpu::{AddressSpace, Placement};

    /// A process with two pages of guest memory, and their address.
    fn process() -> (Process, u64) {
        let mem = Arc::new(AddressSpace::new());
        let g = mem.map(Placement::Hint(0), 8192, Prot::READ.union(Prot::WRITE), false, None).expect("guest pages");
        let factory: super::super::EngineFactory =
            Box::new(|m| Ok(Box::new(urun_cpu::interp::Interpreter::new(m)) as Box<dyn urun_cpu::Engine>));
        (Process::new(mem, super::super::Brk::at(0, 0), "/guest".into(), factory), g)
    }

    /// Store `v` at guest address `at` as another guest thread would.
    fn poke<T>(at: u64, v: T) {
        // SAFETY: `at` lies in the test's guest pages.
        unsafe { (at as *mut T).write_unaligned(v) };
    }

    fn peek<T: Copy>(at: u64) -> T {
        // SAFETY: `at` lies in the test's guest pages.
        unsafe { (at as *const T).read_unaligned() }
    }

    fn fds(f: impl FnOnce(&mut [i32; 2]) -> i32) -> [i32; 2] {
        let mut fds = [0; 2];
        assert_eq!(f(&mut fds), 0);
        fds
    }

    /// Prepare syscall `nr` with `args` (run on the copies), let a racing
    /// "guest thread" run `race` between the check and the kernel's use,
    /// then make the call.
    fn call(p: &Process, nr: u64, args: [u64; 6], race: impl FnOnce()) -> (i64, [u64; 6]) {
        let sc = lookup(nr).expect("known");
        let mut a = args;
        let mut copies = Copies::default();
        prepare(p, sc, &mut a, &mut copies).expect("checks pass");
        race();
        let r = copies.write_back(&p.mem, raw_result(pass(nr, &a)));
        (r, a)
    }

    #[test]
    fn writev_uses_the_checked_iovec_copy() {
        let (p, g) = process();
        // SAFETY: a pipe of our own.
        let [rd, wr] = fds(|f| unsafe { libc::pipe(f.as_mut_ptr()) });
        let secret = b"urun's own memory".to_vec();
        poke(g, *b"guest data");
        poke(g + 256, [g, 10u64]);
        let (r, a) = call(&p, 20, [wr as u64, g + 256, 1, 0, 0, 0], || {
            // The racing thread points the iovec at urun's memory.
            poke(g + 256, [secret.as_ptr() as u64, secret.len() as u64]);
        });
        assert_eq!(r, 10);
        assert_ne!(a[1], g + 256, "the kernel got the guest's array, not a copy");
        let mut got = [0u8; 32];
        // SAFETY: reading our pipe into our buffer.
        let n = unsafe { libc::read(rd, got.as_mut_ptr().cast(), got.len()) };
        assert_eq!(&got[..n as usize], b"guest data");
    }

    #[test]
    fn recvmsg_uses_copies_and_writes_back_what_the_kernel_updates() {
        let (p, g) = process();
        // SAFETY: a socket pair of our own.
        let [s0, s1] = fds(|f| unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, f.as_mut_ptr()) });
        // SAFETY: sending from our buffer.
        assert_eq!(unsafe { libc::send(s1, b"hello".as_ptr().cast(), 5, 0) }, 5);
        let mut secret = vec![0u8; 64];
        let fake_iov = [secret.as_mut_ptr() as u64, 64u64];
        let (buf, iov, hdr, name) = (g + 1024, g + 256, g + 512, g + 2048);
        poke(iov, [buf, 16u64]);
        // msghdr: name, namelen, iov, iovlen, control, controllen, flags.
        poke(hdr, [name, 64, iov, 1, 0, 0, 0x5555u64]);
        let (r, a) = call(&p, 47, [s0 as u64, hdr, 0, 0, 0, 0], || {
            poke(iov, fake_iov);
            poke(hdr + 16, &fake_iov as *const _ as u64);
        });
        assert_eq!(r, 5);
        assert_ne!(a[1], hdr);
        assert_eq!(peek::<[u8; 5]>(buf), *b"hello");
        assert!(secret.iter().all(|&b| b == 0), "the kernel wrote into urun's memory");
        // The kernel's updates reached the guest's header: the name length
        // (64 before; an unnamed socketpair peer has none), the flags.
        assert_eq!(peek::<u32>(hdr + 8), 0);
        assert_eq!(peek::<u32>(hdr + 48), 0);
    }

    #[test]
    fn length_words_are_read_once() {
        let (p, g) = process();
        // SAFETY: a socket pair of our own.
        let [s0, _s1] = fds(|f| unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, f.as_mut_ptr()) });
        let (addr, len) = (g + 4096 - 16, g + 600);
        poke(len, 16u32);
        poke(addr + 16 - 1, 0xeeu8);
        // getsockname: the racing thread grows the length past the end of
        // the guest's memory; the kernel must use the 16 that were checked.
        let (r, a) = call(&p, 51, [s0 as u64, addr, len, 0, 0, 0], || poke(len, 1u32 << 20));
        assert_eq!(r, 0);
        assert_ne!(a[2], len);
        assert_eq!(peek::<u32>(len), 2, "the kernel's length was written back");
    }

    #[test]
    fn too_many_iovecs_fail_without_the_kernel() {
        let (p, g) = process();
        let sc = lookup(20).expect("writev");
        let mut a = [1, g, 1025, 0, 0, 0];
        assert_eq!(prepare(&p, sc, &mut a, &mut Copies::default()).err(), Some(-(libc::EINVAL as i64)));
    }

    #[test]
    fn table_is_sorted_unique_and_sized() {
        for w in SYSCALLS.windows(2) {
            assert!(w[0].nr < w[1].nr, "{} before {}", w[0].name, w[1].name);
        }
        for s in SYSCALLS {
            assert!(s.args.len() <= 6, "{}", s.name);
            for a in s.args {
                let refs = match a {
                    In(Arg(i))
                    | Out(Arg(i))
                    | In(ArgTimes(i, _))
                    | Out(ArgTimes(i, _))
                    | IovIn(i)
                    | IovOut(i)
                    | OutLenPtr(i)
                    | MsgVec { count: i, .. } => Some(*i),
                    _ => None,
                };
                if let Some(i) = refs {
                    assert!((i as usize) < s.args.len(), "{}: length argument {i} missing", s.name);
                }
            }
        }
        assert_eq!(lookup(1).map(|s| s.name), Some("write"));
        assert!(lookup(100_000).is_none());
    }
}
