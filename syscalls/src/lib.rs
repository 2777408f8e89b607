//! urun's guest operating systems. Only this crate asks the host kernel for
//! anything on the guest's behalf (apart from the guest memory mappings,
//! which `urun_cpu::AddressSpace` owns).
//!
//! The seam: a `Personality` takes a guest's first thread (an engine and
//! its `CpuState`) and runs it to the end; the CLI and the engines know
//! nothing more of the OS the guest expects. `linux` runs ELF programs,
//! `win32` PE32+ console programs.

mod guest_thread;
pub mod linux;
pub mod win32;

use std::sync::Arc;

use urun_cpu::{AddressSpace, CpuState, Engine, EngineError};

/// How the guest (or one of its threads) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The process ended with this status (0..=255).
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// This thread ended with `exit(status)`; other threads go on.
    ThreadExited(i32),
}

/// Makes a fresh engine for a new guest thread, or says why it cannot.
pub type EngineFactory = Box<dyn Fn(Arc<AddressSpace>) -> Result<Box<dyn Engine>, EngineError> + Send + Sync>;

/// Exit status when the engine fails under a running guest (as `env`
/// uses for "the command itself failed").
pub const ENGINE_FAILED: i32 = 125;

/// A guest operating system, as the run loop sees it.
pub trait Personality: Send + Sync {
    /// Run the guest's first thread on `engine` from `cpu` until the
    /// process ends (or, `Stop::ThreadExited`, until this thread ends
    /// while others go on).
    fn run_main(self: Arc<Self>, engine: &mut dyn Engine, cpu: &mut CpuState) -> Stop;
}

impl Personality for linux::Process {
    fn run_main(self: Arc<Self>, engine: &mut dyn Engine, cpu: &mut CpuState) -> Stop {
        linux::run(&self, engine, cpu)
    }
}

/// Leave the host process as the guest left: its exit status, or killed
/// by its signal. `ThreadExited` keeps this host thread parked (returning
/// from main would end the process) while the other guest threads go on.
pub fn finish(stop: Stop) -> ! {
    match stop {
        Stop::Exited(code) => linux::finish_process(code),
        Stop::Signaled(sig) => linux::kill_process(sig),
        Stop::ThreadExited(_) => {
            // SAFETY: blocking every signal on this thread, then sleeping.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
                loop {
                    libc::pause();
                }
            }
        }
    }
}
