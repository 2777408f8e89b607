//! The Linux personality: services the exits of an engine running a Linux
//! guest, with syscalls passed to the host where the ABI is the same and
//! emulated where urun manages the resource.
//!
//! Each guest thread runs on its own host thread with its own `CpuState`
//! and engine; they share one `Process` (memory map, heap, signal
//! dispositions). Signals the guest handles are caught on the host by the
//! thread the kernel picks (host masks mirror the guest's), recorded, and
//! delivered to the guest handler at the next exit with a Linux
//! `rt_sigframe`.

mod emul;
pub(crate) mod guest;
mod memfile;
mod procfs;
mod signal;
mod strace;
mod table;
mod thread;

use std::collections::HashSet;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use urun_cpu::state::reg;
use urun_cpu::{AddressSpace, CpuState, Engine, EngineError, Exit, Fault};

pub use crate::{EngineFactory, Stop, ENGINE_FAILED};
pub use signal::signal_for;
pub use thread::{finish_process, kill_process};

/// The name of the no-access reservation the heap grows into (the loader
/// makes it under the same name).
pub const HEAP_RESERVE: &str = "[heap reserve]";

/// The guest's program break.
#[derive(Clone, Copy, Debug, Default)]
pub struct Brk {
    pub start: u64,
    pub cur: u64,
    /// End of the pages mapped for the heap so far.
    pub mapped_end: u64,
    /// End of the no-access reservation the heap grows into.
    pub reserve_end: u64,
}

impl Brk {
    /// A break that starts (empty) at `start`, which must be page aligned,
    /// with room reserved up to `reserve_end`.
    pub fn at(start: u64, reserve_end: u64) -> Self {
        Brk { start, cur: start, mapped_end: start, reserve_end }
    }
}

/// What the guest's `clone` returns when no engine can be made for the
/// new thread.
pub fn clone_errno(e: &EngineError) -> i64 {
    -(match e {
        // No vCPU left, or descriptors/memory for one: a resource limit,
        // as natively when threads run out.
        EngineError::Exhausted(_) => libc::EAGAIN,
        // The engine cannot make one here at all.
        EngineError::Unavailable(_) => libc::EAGAIN,
        // It failed making one (memory it could not map, an ioctl).
        EngineError::Failed(_) => libc::ENOMEM,
    } as i64)
}

/// The engine failed under a running guest: say so once and end the
/// guest with `ENGINE_FAILED` (the caller ends the process in the way its
/// thread allows: a vfork child leaves with `_exit`).
fn engine_failed(engine: &dyn Engine, e: &EngineError) -> Stop {
    use std::io::Write;
    let line = format!("urun: --engine {}: {e}\n", engine.name());
    let _ = std::io::stderr().write_all(line.as_bytes());
    Stop::Exited(ENGINE_FAILED)
}

/// One guest process as the Linux personality sees it: what its threads
/// share.
pub struct Process {
    pub mem: Arc<AddressSpace>,
    brk: Mutex<Brk>,
    /// Canonical path of the guest program (`/proc/self/exe`).
    pub exe_path: PathBuf,
    /// Print each syscall on stderr.
    pub strace: bool,
    /// The urun command line (program and options, without the guest
    /// program) that `execve` uses to run a new guest program under urun.
    pub reexec: Vec<OsString>,
    /// qemu's `-L`: absolute paths the guest opens are looked up under
    /// this directory first.
    pub sysroot: Option<PathBuf>,
    /// `/proc/self/cmdline`: the guest's argv, each NUL-terminated.
    pub cmdline: Vec<u8>,
    /// `/proc/self/auxv`: the auxiliary vector the guest was started with.
    pub auxv: Vec<u8>,
    /// Kernel `struct sigaction` per signal: handler, flags, restorer, mask.
    sigactions: Mutex<[[u64; 4]; 65]>,
    reported_unknown: Mutex<HashSet<u64>>,
    new_engine: Arc<dyn Fn(Arc<AddressSpace>) -> Result<Box<dyn Engine>, EngineError> + Send + Sync>,
    /// Guest threads alive.
    live_threads: AtomicUsize,
}

/// Lock a mutex, carrying on after a panic elsewhere (the data is plain).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Process {
    pub fn new(mem: Arc<AddressSpace>, brk: Brk, exe_path: PathBuf, new_engine: EngineFactory) -> Self {
        memfile::adopt_inherited();
        Process {
            mem,
            brk: Mutex::new(brk),
            exe_path,
            strace: false,
            reexec: Vec::new(),
            sysroot: None,
            cmdline: Vec::new(),
            auxv: Vec::new(),
            sigactions: Mutex::new([[0; 4]; 65]),
            reported_unknown: Mutex::new(HashSet::new()),
            new_engine: Arc::from(new_engine),
            live_threads: AtomicUsize::new(1),
        }
    }

    /// What a vfork child (CLONE_VM without CLONE_SIGHAND) starts with: the
    /// same memory, but its own copy of the signal dispositions, as the
    /// kernel gives it (Go's os/exec child resets every handler to SIG_DFL
    /// before exec; shared, that reset was the parent's too).
    pub(crate) fn for_vfork_child(&self) -> Process {
        Process {
            mem: self.mem.clone(),
            brk: Mutex::new(*lock(&self.brk)),
            exe_path: self.exe_path.clone(),
            strace: self.strace,
            reexec: self.reexec.clone(),
            sysroot: self.sysroot.clone(),
            cmdline: self.cmdline.clone(),
            auxv: self.auxv.clone(),
            sigactions: Mutex::new(*lock(&self.sigactions)),
            reported_unknown: Mutex::new(lock(&self.reported_unknown).clone()),
            new_engine: self.new_engine.clone(),
            live_threads: AtomicUsize::new(1),
        }
    }

    /// An unknown syscall: reported once (under --strace or debug logs).
    fn report_unknown(&self, nr: u64) {
        if lock(&self.reported_unknown).insert(nr) {
            tracing::info!(nr, "unknown syscall: returning -ENOSYS");
            if self.strace {
                strace::line(&format!("unknown syscall {nr} = -1 ENOSYS (not implemented by urun)"));
            }
        }
    }

    /// Is `path` `/proc/self/<leaf>` or `/proc/<our pid>/<leaf>`?
    fn is_proc_self(&self, path: &[u8], leaf: &[u8]) -> bool {
        let Some(rest) = path.strip_prefix(b"/proc/") else { return false };
        let Some(slash) = rest.iter().position(|&b| b == b'/') else { return false };
        let (who, tail) = (&rest[..slash], &rest[slash + 1..]);
        let pid = std::process::id().to_string();
        tail == leaf && (who == b"self" || who == pid.as_bytes() || who == b"thread-self")
    }

    /// execve: run the new program under urun again, with the same options.
    /// Returns only on failure, with -errno.
    fn exec(&self, path: Vec<u8>, argv: Vec<Vec<u8>>, envp: Vec<Vec<u8>>) -> i64 {
        let Ok(cpath) = CString::new(path.clone()) else { return -(libc::ENOENT as i64) };
        // The errors a native execve would give for the file itself.
        // SAFETY: cpath is a valid C string.
        if unsafe { libc::access(cpath.as_ptr(), libc::X_OK) } != 0 {
            return -(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOENT) as i64);
        }
        match std::fs::metadata(std::ffi::OsStr::from_bytes(&path)) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return -(libc::EACCES as i64),
            Err(e) => return -(e.raw_os_error().unwrap_or(libc::ENOENT) as i64),
        }
        let mut args: Vec<CString> = Vec::new();
        for a in &self.reexec {
            let Ok(c) = CString::new(a.as_bytes()) else { return -(libc::EINVAL as i64) };
            args.push(c);
        }
        let argv0 = argv.first().cloned().unwrap_or_else(|| path.clone());
        // execve never searches PATH, but urun does for a name without a
        // slash: keep it relative to the working directory.
        let path = if path.contains(&b'/') { path } else { [b"./".as_slice(), &path].concat() };
        let tail = std::iter::once(b"-0".to_vec())
            .chain(std::iter::once(argv0))
            .chain(std::iter::once(b"--".to_vec()))
            .chain(std::iter::once(path))
            .chain(argv.into_iter().skip(1));
        for a in tail {
            let Ok(c) = CString::new(a) else { return -(libc::EINVAL as i64) };
            args.push(c);
        }
        let env: Vec<CString> = envp.into_iter().filter_map(|e| CString::new(e).ok()).collect();
        let mut argp: Vec<*const libc::c_char> = args.iter().map(|c| c.as_ptr()).collect();
        argp.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
        envp.push(std::ptr::null());
        // The new urun starts with the signal state a native execve leaves:
        // handled signals back to default, the mask kept.
        signal::reset_handled_for_exec(self);
        let me = c"/proc/self/exe";
        // SAFETY: argp and envp are NULL-terminated arrays of valid C strings
        // that outlive the call.
        unsafe { libc::execve(me.as_ptr(), argp.as_ptr(), envp.as_ptr()) };
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOEXEC) as i64)
    }
}

/// Per-thread state of one guest thread.
pub struct Thread {
    /// Host (== guest) thread id.
    pub tid: i32,
    /// set_tid_address / CLONE_CHILD_CLEARTID: zeroed and woken at exit.
    clear_child_tid: u64,
    /// sigaltstack: sp, flags, size.
    altstack: [u64; 3],
    /// The guest's signal mask (bit n-1 for signal n), mirrored on the host.
    sigmask: u64,
    /// The mask to restore after an rt_sigsuspend.
    saved_mask: Option<u64>,
    /// Signals caught on the host for this thread, waiting for delivery.
    signals: &'static signal::Pending,
}

/// What a syscall handler works on: the process, this thread, its CPU.
pub(crate) struct Task<'a> {
    pub p: &'a Arc<Process>,
    pub t: &'a mut Thread,
    pub cpu: &'a mut CpuState,
}

/// Run the guest's first thread until the process exits or is killed
/// (`Stop::ThreadExited` when it ended with `exit` while others go on).
pub fn run(p: &Arc<Process>, engine: &mut dyn Engine, cpu: &mut CpuState) -> Stop {
    if let Err(e) = urun_cpu::hostfault::prepare_thread() {
        tracing::warn!(%e, "guest thread without host-fault recovery");
    }
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    let mut t = Thread {
        tid,
        clear_child_tid: 0,
        altstack: [0, libc::SS_DISABLE as u64, 0],
        sigmask: signal::host_mask(),
        saved_mask: None,
        signals: signal::Pending::for_this_thread(engine.interrupt_handle()),
    };
    run_thread(p, engine, cpu, &mut t)
}

/// The loop every guest thread runs: take the engine's exits and service
/// them, delivering signals in between.
fn run_thread(p: &Arc<Process>, engine: &mut dyn Engine, cpu: &mut CpuState, t: &mut Thread) -> Stop {
    match run_thread_raw(p, engine, cpu, t) {
        Stop::ThreadExited(code) => thread::exit_thread(p, t, code),
        other => other,
    }
}

/// `run_thread` without the thread bookkeeping of `exit`.
fn run_thread_raw(p: &Arc<Process>, engine: &mut dyn Engine, cpu: &mut CpuState, t: &mut Thread) -> Stop {
    let interrupt = engine.interrupt_handle();
    loop {
        let exit = match engine.run(cpu) {
            Ok(exit) => exit,
            Err(e) => return engine_failed(engine, &e),
        };
        // After a syscall exit the engine may hold the x87/SSE state: it
        // comes back into `cpu` before anything but a plain pass-through
        // syscall (which touches GPRs only) and before signal delivery.
        if exit == Exit::Syscall && !passes_through(cpu.gpr[reg::RAX]) {
            if let Err(e) = engine.fetch_fp(cpu) {
                return engine_failed(engine, &e);
            }
        }
        let mut task = Task { p, t: &mut *t, cpu: &mut *cpu };
        let r = match exit {
            Exit::Syscall => syscall(&mut task),
            Exit::Fault(f) => signal::deliver_fault(&mut task, &f),
            Exit::Interrupted => Ok(()),
        };
        if interrupt.is_raised() || task.t.signals.any() {
            if let Err(e) = engine.fetch_fp(task.cpu) {
                return engine_failed(engine, &e);
            }
        }
        let r = r.and_then(|()| signal::deliver_pending(&mut task));
        if let Err(stop) = r {
            return stop;
        }
    }
}

/// Does syscall `nr` go straight to the host (or fail with ENOSYS),
/// touching no register state but the GPRs? Everything urun emulates may
/// read or write the whole `CpuState`.
fn passes_through(nr: u64) -> bool {
    match table::lookup(nr) {
        Some(sc) => matches!(sc.kind, table::Kind::Pass | table::Kind::Nosys),
        None => true,
    }
}

/// Service one SYSCALL exit.
fn syscall(task: &mut Task<'_>) -> Result<(), Stop> {
    let nr = task.cpu.gpr[reg::RAX];
    let g = &task.cpu.gpr;
    let args = [g[reg::RDI], g[reg::RSI], g[reg::RDX], g[reg::R10], g[reg::R8], g[reg::R9]];
    if task.p.strace {
        strace::before(task.p, nr, &args);
    }
    let r = table::dispatch(task, nr, &args);
    if task.p.strace {
        strace::after(nr, &r);
    }
    let v = signal::restart_after_signal(task, nr, r?);
    task.cpu.gpr[reg::RAX] = v as u64;
    Ok(())
}

/// Log a fatal fault under --strace and debug logging.
fn report_fatal(p: &Process, f: &Fault, sig: i32) {
    tracing::debug!(?f, sig, "guest fault");
    if p.strace {
        strace::line(&format!("--- {} {{pc={:#x} {:?}}} ---", strace::signal_name(sig), f.pc, f.kind));
        strace::line(&format!("+++ killed by {} +++", strace::signal_name(sig)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the guest's clone returns when no engine can be made.
    #[test]
    fn engine_errors_become_clone_errnos() {
        let table = [
            (EngineError::Exhausted("more than 254 guest threads at once".into()), -libc::EAGAIN),
            (EngineError::Unavailable("cannot open /dev/kvm".into()), -libc::EAGAIN),
            (EngineError::Failed("KVM_SET_SREGS failed".into()), -libc::ENOMEM),
        ];
        for (e, want) in table {
            assert_eq!(clone_errno(&e), want as i64, "{e}");
        }
    }

    /// Plain pass-through syscalls need the GPRs only; everything urun
    /// emulates gets the whole state (the engine is asked for its x87/SSE
    /// part first).
    #[test]
    fn which_syscalls_need_the_whole_state() {
        for nr in [libc::SYS_getppid, libc::SYS_read, libc::SYS_write, 99_999] {
            assert!(passes_through(nr as u64), "{nr}");
        }
        for nr in [libc::SYS_rt_sigreturn, libc::SYS_clone, libc::SYS_fork, libc::SYS_vfork, libc::SYS_rt_sigaction] {
            assert!(!passes_through(nr as u64), "{nr}");
        }
    }
}
