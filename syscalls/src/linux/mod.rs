//! The Linux personality: services the exits of an engine running a Linux
//! guest, with syscalls passed to the host where the ABI is the same and
//! emulated where urun manages the resource.

mod emul;
mod strace;
mod table;

use std::collections::HashSet;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use urun_cpu::state::reg;
use urun_cpu::{AddressSpace, CpuState, Engine, Exit, Fault, FaultKind};

/// The name of the no-access reservation the heap grows into (the loader
/// makes it under the same name).
pub const HEAP_RESERVE: &str = "[heap reserve]";

/// How the guest ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// exit/exit_group with this status (0..=255).
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

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

/// One guest process as the Linux personality sees it.
pub struct Process {
    pub mem: Arc<AddressSpace>,
    pub brk: Brk,
    /// Canonical path of the guest program (`/proc/self/exe`).
    pub exe_path: PathBuf,
    /// Print each syscall on stderr.
    pub strace: bool,
    /// The urun command line (program and options, without the guest
    /// program) that `execve` uses to run a new guest program under urun.
    pub reexec: Vec<OsString>,
    /// Kernel `struct sigaction` per signal: handler, flags, restorer, mask.
    sigactions: [[u64; 4]; 65],
    /// sigaltstack: sp, flags, size.
    altstack: [u64; 3],
    clear_child_tid: u64,
    robust_list: u64,
    reported_unknown: HashSet<u64>,
}

impl Process {
    pub fn new(mem: Arc<AddressSpace>, brk: Brk, exe_path: PathBuf) -> Self {
        Process {
            mem,
            brk,
            exe_path,
            strace: false,
            reexec: Vec::new(),
            sigactions: [[0; 4]; 65],
            altstack: [0, libc::SS_DISABLE as u64, 0],
            clear_child_tid: 0,
            robust_list: 0,
            reported_unknown: HashSet::new(),
        }
    }

    /// An unknown syscall: reported once (under --strace or debug logs).
    fn report_unknown(&mut self, nr: u64) {
        if self.reported_unknown.insert(nr) {
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
    fn exec(&mut self, path: Vec<u8>, argv: Vec<Vec<u8>>, envp: Vec<Vec<u8>>) -> i64 {
        let Ok(cpath) = CString::new(path.clone()) else { return -(libc::ENOENT as i64) };
        // The errors a native execve would give for the file itself.
        // SAFETY: cpath is a valid C string.
        if unsafe { libc::access(cpath.as_ptr(), libc::X_OK) } != 0 {
            return -(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOENT) as i64);
        }
        let mut args: Vec<CString> = Vec::new();
        for a in &self.reexec {
            let Ok(c) = CString::new(a.as_bytes()) else { return -(libc::EINVAL as i64) };
            args.push(c);
        }
        let argv0 = argv.first().cloned().unwrap_or_else(|| path.clone());
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
        let me = c"/proc/self/exe";
        // SAFETY: argp and envp are NULL-terminated arrays of valid C strings
        // that outlive the call.
        unsafe { libc::execve(me.as_ptr(), argp.as_ptr(), envp.as_ptr()) };
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOEXEC) as i64)
    }
}

/// The signal Linux sends for a fault.
pub fn signal_for(fault: &Fault) -> i32 {
    match fault.kind {
        FaultKind::Page { .. } | FaultKind::GeneralProtection => libc::SIGSEGV,
        FaultKind::Divide | FaultKind::FloatingPoint { .. } => libc::SIGFPE,
        FaultKind::InvalidOpcode { .. } => libc::SIGILL,
        FaultKind::Breakpoint => libc::SIGTRAP,
    }
}

/// Run the guest until it exits or is killed.
pub fn run(engine: &mut dyn Engine, cpu: &mut CpuState, p: &mut Process) -> Stop {
    loop {
        match engine.run(cpu) {
            Exit::Syscall => {
                let nr = cpu.gpr[reg::RAX];
                let g = &cpu.gpr;
                let args = [g[reg::RDI], g[reg::RSI], g[reg::RDX], g[reg::R10], g[reg::R8], g[reg::R9]];
                if p.strace {
                    strace::before(p, nr, &args);
                }
                let r = table::dispatch(p, cpu, nr, &args);
                if p.strace {
                    strace::after(nr, &r);
                }
                match r {
                    Ok(v) => cpu.gpr[reg::RAX] = v as u64,
                    Err(stop) => return stop,
                }
            }
            Exit::Fault(f) => {
                let sig = signal_for(&f);
                tracing::debug!(?f, sig, "guest fault");
                if p.strace {
                    strace::line(&format!("--- {} {{pc={:#x} {:?}}} ---", strace::signal_name(sig), f.pc, f.kind));
                    strace::line(&format!("+++ killed by {} +++", strace::signal_name(sig)));
                }
                return Stop::Signaled(sig);
            }
            Exit::Interrupted => {}
        }
    }
}
