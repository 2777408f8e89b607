//! Guest threads and processes: `clone` (a thread on its own host thread,
//! or a fork), thread exit with CLONE_CHILD_CLEARTID, `exit_group`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use urun_cpu::state::reg;
use urun_cpu::{CpuState, Prot};

use super::table::raw_result;
use super::{guest, signal, Process, Stop, Task, Thread};
use crate::guest_thread::{self, SpawnError};

const EINVAL: i64 = -(libc::EINVAL as i64);
const EFAULT: i64 = -(libc::EFAULT as i64);

/// Flags a thread-creating clone must carry together (glibc's
/// pthread_create passes these and more).
const THREAD_FLAGS: u64 = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;

pub(crate) fn clone(task: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    // x86-64: clone(flags, stack, parent_tid, child_tid, tls).
    let (flags, stack, ptid, ctid, tls) = (a[0], a[1], a[2], a[3], a[4]);
    let vm = flags & libc::CLONE_VM as u64 != 0;
    if flags & libc::CLONE_THREAD as u64 != 0 {
        if flags & THREAD_FLAGS != THREAD_FLAGS {
            return Ok(EINVAL);
        }
        return Ok(spawn_thread(task, flags, stack, ptid, ctid, tls));
    }
    if vm {
        if flags & libc::CLONE_VFORK as u64 != 0 {
            // vfork and posix_spawn: a child sharing our memory while we wait.
            return Ok(shared_vfork(task, flags, stack, ctid, tls));
        }
        tracing::warn!(
            flags = format_args!("{flags:#x}"),
            "clone(CLONE_VM) without CLONE_THREAD or CLONE_VFORK is not supported"
        );
        return Ok(-(libc::ENOSYS as i64));
    }
    fork_like(task, flags, stack, ptid, ctid, tls)
}

/// fork(): a new process.
pub(crate) fn fork(task: &mut Task<'_>, _: &[u64; 6]) -> Result<i64, Stop> {
    fork_like(task, libc::SIGCHLD as u64, 0, 0, 0, 0)
}

/// vfork(): a child sharing our memory, on our stack, while this thread
/// waits until it execs or exits.
pub(crate) fn vfork(task: &mut Task<'_>, _: &[u64; 6]) -> Result<i64, Stop> {
    Ok(shared_vfork(task, (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64, 0, 0, 0))
}

/// What a vfork child starts from.
struct VforkChild {
    p: Arc<Process>,
    cpu: CpuState,
    sigmask: u64,
    clear_child_tid: u64,
    child_settid: u64,
}

/// A real vfork: a host `clone(CLONE_VM|CLONE_VFORK)` whose child runs the
/// guest (on the guest stack it was given, or ours) in urun's shared
/// memory, while this host thread is suspended until the child execs or
/// exits, as the kernel does for the native program. The child writes to
/// shared guest memory are seen by the parent (posix_spawn reports exec
/// errors that way). The child leaves with `_exit`, never unwinding or
/// running exit handlers in the shared memory.
fn shared_vfork(task: &mut Task<'_>, flags: u64, stack: u64, ctid: u64, tls: u64) -> i64 {
    let settid = flags & libc::CLONE_CHILD_SETTID as u64 != 0;
    let cleartid = flags & libc::CLONE_CHILD_CLEARTID as u64 != 0;
    if (settid || cleartid) && !task.p.mem.check(ctid, 4, Prot::WRITE) {
        return EFAULT;
    }
    let mut cpu = task.cpu.clone();
    cpu.gpr[reg::RAX] = 0;
    if stack != 0 {
        cpu.gpr[reg::RSP] = stack;
    }
    if flags & libc::CLONE_SETTLS as u64 != 0 {
        cpu.fs_base = tls;
    }
    let mut child = VforkChild {
        p: Arc::new(task.p.for_vfork_child()),
        cpu,
        sigmask: task.t.sigmask,
        clear_child_tid: if cleartid { ctid } else { 0 },
        child_settid: if settid { ctid } else { 0 },
    };
    let mut host_stack = vec![0u8; 512 * 1024];
    // SAFETY: the stack buffer outlives the child's use of it (CLONE_VFORK
    // suspends us until the child has exec'd or exited); `child` is passed
    // by pointer and likewise outlives it. The child shares our memory and
    // our thread's TLS while we are suspended; it restores nothing of ours
    // it did not save (see `vfork_child`).
    let pid = unsafe {
        let top = host_stack.as_mut_ptr().add(host_stack.len()) as *mut libc::c_void;
        let top = ((top as usize) & !15) as *mut libc::c_void;
        libc::clone(
            vfork_child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | (flags as i32 & 0xff),
            (&mut child as *mut VforkChild).cast(),
        )
    };
    // The child ran on this thread's TLS: point the signal record back at
    // ours.
    signal::Pending::make_current(task.t.signals);
    drop(host_stack);
    if pid < 0 {
        return raw_result(-1);
    }
    pid as i64
}

/// The vfork child's host entry point: run the guest until it execs (which
/// replaces this process) or ends.
extern "C" fn vfork_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `VforkChild`, alive while we run.
    let c = unsafe { &mut *(arg as *mut VforkChild) };
    // SAFETY: gettid cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    if c.child_settid != 0 {
        // Checked before the clone; gone since, the kernel would not write.
        // The parent's other threads run on (as in `spawn_thread`).
        let _turn = urun_cpu::jit::check_exclusive();
        guest::write(&c.p.mem, c.child_settid, &tid);
    }
    let mut engine = match (c.p.new_engine)(c.p.mem.clone()) {
        Ok(e) => e,
        Err(e) => {
            // The child exists already (a vfork cannot be taken back):
            // say why it cannot run and leave as a failed exec would.
            use std::io::Write;
            let _ = std::io::stderr().write_all(format!("urun: vfork child: {e}\n").as_bytes());
            // SAFETY: leave without running exit handlers in shared memory.
            unsafe { libc::_exit(super::ENGINE_FAILED) }
        }
    };
    let mut t = Thread {
        tid,
        clear_child_tid: c.clear_child_tid,
        altstack: [0, libc::SS_DISABLE as u64, 0],
        sigmask: c.sigmask,
        saved_mask: None,
        signals: signal::Pending::for_this_thread(engine.interrupt_handle()),
    };
    let p = c.p.clone();
    let stop = run_vfork_child(&p, engine.as_mut(), &mut c.cpu, &mut t);
    match stop {
        Stop::Exited(code) | Stop::ThreadExited(code) => {
            // SAFETY: leave without running exit handlers in shared memory.
            unsafe { libc::_exit(code) }
        }
        Stop::Signaled(sig) => kill_process(sig),
    }
}

/// The vfork child's run loop: the usual one, but its exit must not touch
/// the parent's thread count (the memory is shared).
fn run_vfork_child(p: &Arc<Process>, engine: &mut dyn urun_cpu::Engine, cpu: &mut CpuState, t: &mut Thread) -> Stop {
    super::run_thread_raw(p, engine, cpu, t)
}

/// A new process: a host fork of urun and the guest together. With
/// CLONE_VM|CLONE_VFORK (posix_spawn) the child gets a copy of memory
/// instead of sharing it, and runs on the stack it was given; the parent
/// waits for it to exec or exit, as vfork does.
fn fork_like(task: &mut Task<'_>, flags: u64, stack: u64, ptid: u64, ctid: u64, tls: u64) -> Result<i64, Stop> {
    for (on, ptr) in [(libc::CLONE_PARENT_SETTID, ptid), (libc::CLONE_CHILD_SETTID, ctid)] {
        if flags & on as u64 != 0 && !task.p.mem.check(ptr, 4, Prot::WRITE) {
            return Ok(EFAULT);
        }
    }
    let vfork = flags & libc::CLONE_VFORK as u64 != 0;
    // The parent of a vfork waits until the child execs or exits: a pipe
    // with close-on-exec is closed by either.
    let mut fds = [-1i32; 2];
    // SAFETY: pipe2 fills our two-element array.
    if vfork && unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Ok(raw_result(-1));
    }
    // SAFETY: a fork of urun; the child continues the same guest from a
    // copy of every thread's memory (only this thread runs in the child,
    // as with a native fork).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Ok(raw_result(-1));
    }
    if pid == 0 {
        // Child.
        if vfork {
            // SAFETY: closing our copy of the read end.
            unsafe { libc::close(fds[0]) };
        }
        // SAFETY: gettid cannot fail.
        let me = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        task.t.tid = me;
        if flags & libc::CLONE_CHILD_SETTID as u64 != 0 {
            guest::write(&task.p.mem, ctid, &me);
        }
        if flags & libc::CLONE_CHILD_CLEARTID as u64 != 0 {
            task.t.clear_child_tid = ctid;
        }
        if flags & libc::CLONE_SETTLS as u64 != 0 {
            task.cpu.fs_base = tls;
        }
        if stack != 0 {
            task.cpu.gpr[reg::RSP] = stack;
        }
        task.p.live_threads.store(1, Ordering::Release);
        return Ok(0);
    }
    if flags & libc::CLONE_PARENT_SETTID as u64 != 0 {
        guest::write(&task.p.mem, ptid, &pid);
    }
    if vfork {
        // SAFETY: our pipe; read blocks until the child's write end closes
        // (at its exec or exit).
        unsafe {
            libc::close(fds[1]);
            let mut b = 0u8;
            while libc::read(fds[0], (&mut b as *mut u8).cast(), 1) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
            libc::close(fds[0]);
        }
    }
    Ok(pid as i64)
}

/// A new guest thread on a new host thread, with its own engine.
fn spawn_thread(task: &mut Task<'_>, flags: u64, stack: u64, ptid: u64, ctid: u64, tls: u64) -> i64 {
    let settid = flags & libc::CLONE_PARENT_SETTID as u64 != 0;
    let child_settid = flags & libc::CLONE_CHILD_SETTID as u64 != 0;
    let cleartid = flags & libc::CLONE_CHILD_CLEARTID as u64 != 0;
    for (on, ptr) in [(settid, ptid), (child_settid || cleartid, ctid)] {
        if on && !task.p.mem.check(ptr, 4, Prot::WRITE) {
            return EFAULT;
        }
    }
    let mut cpu: CpuState = task.cpu.clone();
    cpu.gpr[reg::RAX] = 0;
    if stack != 0 {
        cpu.gpr[reg::RSP] = stack;
    }
    if flags & libc::CLONE_SETTLS as u64 != 0 {
        cpu.fs_base = tls;
    }
    let p: Arc<Process> = task.p.clone();
    let sigmask = task.t.sigmask;
    p.live_threads.fetch_add(1, Ordering::AcqRel);
    let ep = p.clone();
    let new_engine = move || (ep.new_engine)(ep.mem.clone());
    let spawned = guest_thread::spawn(new_engine, move |mut engine, started| {
        // SAFETY: gettid cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        // Checked before the spawn; gone since, the kernel would not write.
        // Under `--check` the stores take an exclusive turn: other threads
        // run guest code meanwhile, and the word may be one they use (musl
        // and glibc name a word of the new thread's, but any word will do).
        let turn = urun_cpu::jit::check_exclusive();
        if child_settid {
            guest::write(&p.mem, ctid, &tid);
        }
        if settid {
            guest::write(&p.mem, ptid, &tid);
        }
        drop(turn);
        started.started(tid);
        let mut t = Thread {
            tid,
            clear_child_tid: if cleartid { ctid } else { 0 },
            altstack: [0, libc::SS_DISABLE as u64, 0],
            sigmask,
            saved_mask: None,
            signals: signal::Pending::for_this_thread(engine.interrupt_handle()),
        };
        let stop = super::run_thread_raw(&p, engine.as_mut(), &mut cpu, &mut t);
        // The engine goes (a vCPU back to its VM) before a joining thread
        // can see this one gone.
        drop(engine);
        let stop = match stop {
            Stop::ThreadExited(code) => exit_thread(&p, &mut t, code),
            other => other,
        };
        match stop {
            Stop::Exited(code) => finish_process(code),
            Stop::Signaled(sig) => kill_process(sig),
            Stop::ThreadExited(_) => {}
        }
    });
    match spawned {
        Ok(tid) => tid as i64,
        Err(SpawnError::Host(e)) => {
            task.p.live_threads.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%e, "cannot start a host thread for a guest thread");
            -(libc::EAGAIN as i64)
        }
        Err(SpawnError::Engine(e)) => {
            task.p.live_threads.fetch_sub(1, Ordering::AcqRel);
            tracing::info!(%e, "no engine for a new guest thread");
            super::clone_errno(&e)
        }
        Err(SpawnError::Vanished) => -(libc::EAGAIN as i64),
    }
}

/// End the calling guest thread (`exit`): clear and wake its
/// CLONE_CHILD_CLEARTID word; the last thread's exit ends the process.
/// Returns what the caller's host thread should do.
pub(crate) fn exit_thread(p: &Arc<Process>, t: &mut Thread, code: i32) -> Stop {
    let addr = t.clear_child_tid;
    // The word is often shared (musl's thread-list lock): under `--check`
    // the store must not land between the two runs of another thread's
    // checked block.
    let turn = urun_cpu::jit::check_exclusive();
    let cleared = addr != 0 && guest::write(&p.mem, addr, &0i32);
    drop(turn);
    if cleared {
        // SAFETY: the futex wake names the same guest (== host) address, as
        // the kernel would; it does not touch the memory.
        unsafe { libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAKE, 1, 0, 0, 0) };
    }
    if p.live_threads.fetch_sub(1, Ordering::AcqRel) == 1 {
        return Stop::Exited(code);
    }
    Stop::ThreadExited(code)
}

/// exit(status) of one thread: the process ends only with its last thread.
pub(crate) fn exit(_: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    Err(Stop::ThreadExited(a[0] as i32 & 0xff))
}

/// exit_group: the whole process ends now.
pub(crate) fn exit_group(_: &mut Task<'_>, a: &[u64; 6]) -> Result<i64, Stop> {
    Err(Stop::Exited(a[0] as i32 & 0xff))
}

/// End the process from any thread with `code`.
pub fn finish_process(code: i32) -> ! {
    std::process::exit(code)
}

/// End the process from any thread by signal `sig`, as the kernel would:
/// default action, no core file.
pub fn kill_process(sig: i32) -> ! {
    // SAFETY: plain libc calls on our own process: no core file, the
    // default action for `sig`, unblocked, then raised.
    unsafe {
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}
