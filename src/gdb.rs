//! The gdb stub (`-g PORT`, `URUN_GDB`), qemu-user style, on the `gdbstub`
//! crate: urun listens on 127.0.0.1:PORT and waits for gdb before the
//! guest's first instruction; gdb can then set breakpoints, single-step,
//! continue, read and write registers (general, x87, SSE) and memory, list
//! the guest's threads, and is told when the guest exits or is killed.
//!
//! Every guest thread's engine is wrapped in a [`Debugged`]: while gdb has
//! nothing armed (no breakpoint, no step) it runs the chosen engine as
//! usual; while something is armed it runs the guest one instruction at a
//! time in the interpreter (all engines share `CpuState` and the
//! `AddressSpace`, so any engine can hand over to it), checking each
//! address against the breakpoints. Breakpoints are kept as addresses, not
//! written into guest code.
//!
//! All-stop: the stopped thread holds the stub's lock while it talks to
//! gdb, and a thread that is stepping takes the lock for each instruction,
//! so it waits there. A stop also arms the stub and interrupts every other
//! thread's engine (`Interrupt::raise`), so threads running guest code
//! come to that lock within a block (the JIT: at its next backward or
//! indirect branch) and wait there too. A thread blocked in a syscall runs
//! on in the kernel until the call returns, and then waits; gdb sees the
//! registers each thread had at its last look at the stub.
//!
//! Ctrl-C: while the guest runs, a watcher thread polls the connection;
//! gdb's interrupt byte arms the stub and interrupts every thread's engine,
//! and the first thread to reach the stub stops with SIGINT. (A guest whose
//! every thread is blocked in a syscall stops when one of the calls
//! returns.)

use std::collections::{BTreeMap, HashSet};
use std::net::{TcpListener, TcpStream};
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use gdbstub::arch::{Arch, Registers};
use gdbstub::common::{Signal, Tid};
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use gdbstub::target::ext::auxv::{Auxv, AuxvOps};
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{Breakpoints, BreakpointsOps, SwBreakpoint, SwBreakpointOps};
use gdbstub::target::{TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use urun_cpu::interp::Interpreter;
use urun_cpu::state::{reg, sreg};
use urun_cpu::{AddressSpace, CpuState, Engine, EngineError, Exit, Interrupt, Prot};

/// What went wrong setting up or talking to gdb.
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    #[error("cannot listen on 127.0.0.1:{port} for gdb: {source}")]
    Listen { port: u16, source: std::io::Error },
    #[error("waiting for gdb on port {port}: {source}")]
    Accept { port: u16, source: std::io::Error },
    #[error("the gdb connection failed: {0}")]
    Protocol(String),
}

/// The registers and context of the thread gdb is looking at.
pub struct Target {
    mem: Arc<AddressSpace>,
    /// The stopped thread and its live state (valid while it is in `stop`).
    current: Option<(i32, *mut CpuState)>,
    /// Every guest thread's state at its last stop or step.
    /// Each guest thread's state at its last look at the stub, in a slot
    /// of its own that the thread writes before it takes the stub's lock
    /// (so a thread waiting for the lock shows where it waits).
    threads: BTreeMap<i32, Slot>,
    /// The first thread's initial stop happened.
    started: bool,
    breakpoints: HashSet<u64>,
    /// The thread gdb asked to single-step on the next resume.
    step: Option<i32>,
    /// The guest's auxiliary vector (as /proc/PID/auxv has it), which gdb
    /// reads to relocate a PIE and find the dynamic linker, and through
    /// it the shared-library list (`r_debug`), as with qemu-user.
    auxv: Vec<u8>,
    /// Every guest thread's engine interrupt, to bring it to the stub.
    irqs: BTreeMap<i32, Arc<Interrupt>>,
}

impl Target {
    /// Interrupt every thread's engine but `except`'s.
    fn kick_all(&self, except: i32) {
        for (_, irq) in self.irqs.iter().filter(|(t, _)| **t != except) {
            irq.raise();
        }
    }
}

// SAFETY: `current`'s pointer is only dereferenced by the thread that set
// it, inside `stop`, while it holds the stub's lock (and clears it before
// letting go); the rest is plain data.
unsafe impl Send for Target {}

type Machine = GdbStubStateMachine<'static, Target, TcpStream>;

/// A thread's last recorded state.
type Slot = Arc<Mutex<CpuState>>;

fn record(slot: &Slot, cpu: &CpuState) {
    slot.lock().unwrap_or_else(|e| e.into_inner()).clone_from(cpu);
}

struct Stub {
    target: Target,
    machine: Option<Machine>,
}

static STUB: Mutex<Option<Stub>> = Mutex::new(None);
/// gdb sent Ctrl-C while the guest ran: the next thread to look stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Something is armed (breakpoints or a step): threads run in the
/// interpreter, one instruction at a time.
static ARMED: AtomicBool = AtomicBool::new(false);

fn lock() -> MutexGuard<'static, Option<Stub>> {
    STUB.lock().unwrap_or_else(|e| e.into_inner())
}

/// Listen on `port` and wait for gdb to connect (before the guest runs).
/// `auxv` is the guest's auxiliary vector (empty for a Windows program).
pub fn wait_for_gdb(port: u16, mem: Arc<AddressSpace>, auxv: Vec<u8>) -> Result<(), GdbError> {
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|source| GdbError::Listen { port, source })?;
    eprintln!("urun: waiting for gdb on 127.0.0.1:{port}");
    let (conn, _) = listener.accept().map_err(|source| GdbError::Accept { port, source })?;
    let _ = conn.set_nodelay(true);
    let fd = conn.as_raw_fd();
    let mut target = Target {
        mem,
        current: None,
        threads: BTreeMap::new(),
        started: false,
        breakpoints: HashSet::new(),
        step: None,
        auxv,
        irqs: BTreeMap::new(),
    };
    let machine = GdbStub::new(conn).run_state_machine(&mut target).map_err(|e| GdbError::Protocol(e.to_string()))?;
    *lock() = Some(Stub { target, machine: Some(machine) });
    // The first instruction of the first thread stops.
    ARMED.store(true, Ordering::Release);
    let watcher = std::thread::Builder::new().name("urun-gdb-ctrlc".into()).spawn(move || watch_for_ctrl_c(fd));
    if let Err(e) = watcher {
        tracing::warn!("no Ctrl-C from gdb: cannot start the watcher thread: {e}");
    }
    Ok(())
}

/// While the guest runs, read what gdb sends (its interrupt byte, 0x03)
/// and arm a stop; while a thread talks to gdb, that thread reads. Ends
/// when the connection does.
fn watch_for_ctrl_c(fd: RawFd) {
    loop {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; `fd` stays open as long as the stub
        // (which never drops its connection before the process ends).
        let r = unsafe { libc::poll(&mut p, 1, 200) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
        if r <= 0 {
            continue;
        }
        let mut g = lock();
        let Some(stub) = g.as_mut() else { return };
        let running = match stub.machine.take() {
            Some(Machine::Running(running)) => running,
            None => return, // gone
            other => {
                // Stopped: a thread reads the connection itself.
                stub.machine = other;
                drop(g);
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
        };
        let mut buf = [0u8; 64];
        // SAFETY: reads at most buf.len() bytes into `buf`, without
        // blocking (the lock is held).
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) };
        let mut m = Machine::Running(running);
        if n == 0 {
            stub.machine = Some(m);
            return; // gdb closed the connection; the guest ends on its own
        }
        for &b in buf.iter().take(n.max(0) as usize) {
            m = match m {
                Machine::Running(r) => match r.incoming_data(&mut stub.target, b) {
                    Ok(m) => m,
                    Err(e) => {
                        gone(&e);
                        return;
                    }
                },
                other => other,
            };
        }
        if matches!(m, Machine::CtrlCInterrupt(_)) {
            INTERRUPTED.store(true, Ordering::Release);
            ARMED.store(true, Ordering::Release);
            stub.target.kick_all(0);
        }
        stub.machine = Some(m);
    }
}

fn tid_of(t: i32) -> Tid {
    NonZeroUsize::new(t.max(1) as usize).unwrap_or(NonZeroUsize::MIN)
}

/// Talk to gdb with this thread stopped for `reason`, until gdb resumes.
fn stop(stub: &mut Stub, tid: i32, cpu: &mut CpuState, reason: Option<MultiThreadStopReason<u64>>) {
    stub.target.current = Some((tid, cpu as *mut CpuState));
    stub.target.step = None;
    // All-stop: the other threads come to the stub's lock and wait.
    ARMED.store(true, Ordering::Release);
    stub.target.kick_all(tid);
    let mut m = stub.machine.take();
    if let Some(reason) = reason {
        m = match m {
            Some(Machine::Running(r)) => r.report_stop(&mut stub.target, reason).map_err(|e| gone(&e)).ok(),
            Some(Machine::CtrlCInterrupt(c)) => c.interrupt_handled(&mut stub.target, Some(reason)).ok(),
            other => other,
        };
    }
    loop {
        m = match m {
            Some(Machine::Idle(mut idle)) => match idle.borrow_conn().read() {
                Ok(byte) => idle.incoming_data(&mut stub.target, byte).map_err(|e| gone(&e)).ok(),
                Err(e) => {
                    gone(&e);
                    None
                }
            },
            Some(Machine::CtrlCInterrupt(c)) => {
                let reason = MultiThreadStopReason::SignalWithThread { tid: tid_of(tid), signal: Signal::SIGINT };
                c.interrupt_handled(&mut stub.target, Some(reason)).ok()
            }
            Some(Machine::Disconnected(d)) => {
                if d.get_reason() == DisconnectReason::Kill {
                    tracing::debug!("gdb killed the guest");
                    urun_syscalls::linux::kill_process(libc::SIGKILL);
                }
                None
            }
            Some(running @ Machine::Running(_)) => break stub.machine = Some(running),
            None => break,
        };
    }
    if stub.machine.is_none() {
        // gdb went away (detach or a broken connection): the guest runs on.
        stub.target.breakpoints.clear();
        stub.target.step = None;
    }
    stub.target.current = None;
    // Registers gdb wrote went to `cpu` itself; the record follows.
    if let Some(slot) = stub.target.threads.get(&tid) {
        record(slot, cpu);
    }
    ARMED.store(
        stub.machine.is_some() && (!stub.target.breakpoints.is_empty() || stub.target.step.is_some()),
        Ordering::Release,
    );
}

/// The connection failed: say why (the guest then runs on without gdb).
fn gone(e: &dyn std::fmt::Display) {
    tracing::warn!("gdb connection closed: {e}");
}

/// Tell gdb how the guest ended (its exit status or its signal).
pub fn report_end(status: Result<i32, i32>) {
    let mut g = lock();
    let Some(stub) = g.as_mut() else { return };
    if let Some(Machine::Running(r)) = stub.machine.take() {
        let reason = match status {
            Ok(code) => MultiThreadStopReason::Exited(code as u8),
            Err(sig) => MultiThreadStopReason::Terminated(Signal(sig as u8)),
        };
        let _ = r.report_stop(&mut stub.target, reason);
    }
}

/// A guest thread's engine under the gdb stub.
pub struct Debugged {
    inner: Box<dyn Engine>,
    interp: Interpreter,
    irq: Arc<Interrupt>,
    tid: i32,
    slot: Slot,
    /// This thread was asked to single-step: report after one instruction.
    stepping: bool,
}

impl Debugged {
    pub fn new(inner: Box<dyn Engine>, mem: Arc<AddressSpace>) -> Self {
        let irq = inner.interrupt_handle();
        Debugged { inner, interp: Interpreter::new(mem), irq, tid: 0, slot: Slot::default(), stepping: false }
    }

    /// One look at the stub before the instruction at `cpu.rip`: stop if a
    /// breakpoint or a finished step says so. Returns whether this thread
    /// should step (in the interpreter) rather than run its engine.
    fn check(&mut self, cpu: &mut CpuState) -> bool {
        record(&self.slot, cpu);
        let mut g = lock();
        let Some(stub) = g.as_mut() else { return false };
        let first = !std::mem::replace(&mut stub.target.started, true);
        let reason = if first {
            Some(None) // the initial stop: gdb asks for the reason itself
        } else if self.stepping {
            Some(Some(MultiThreadStopReason::DoneStep))
        } else if stub.target.breakpoints.contains(&cpu.rip) {
            Some(Some(MultiThreadStopReason::SwBreak(tid_of(self.tid))))
        } else if INTERRUPTED.swap(false, Ordering::AcqRel) {
            Some(Some(MultiThreadStopReason::SignalWithThread { tid: tid_of(self.tid), signal: Signal::SIGINT }))
        } else {
            None
        };
        self.stepping = false;
        if let Some(reason) = reason {
            // After gdb resumes, the instruction at `cpu.rip` runs before
            // the next look (so a continue leaves the breakpoint).
            stop(stub, self.tid, cpu, reason);
            self.stepping = stub.target.step == Some(self.tid);
        }
        ARMED.load(Ordering::Acquire)
    }
}

impl Drop for Debugged {
    fn drop(&mut self) {
        if let Some(stub) = lock().as_mut() {
            stub.target.threads.remove(&self.tid);
            stub.target.irqs.remove(&self.tid);
        }
    }
}

impl Engine for Debugged {
    fn run(&mut self, cpu: &mut CpuState) -> Result<Exit, EngineError> {
        if self.tid == 0 {
            // SAFETY: gettid has no arguments and cannot fail.
            self.tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
            record(&self.slot, cpu);
            if let Some(stub) = lock().as_mut() {
                stub.target.irqs.insert(self.tid, self.irq.clone());
                stub.target.threads.insert(self.tid, self.slot.clone());
            }
        }
        loop {
            if !ARMED.load(Ordering::Acquire) {
                return self.inner.run(cpu);
            }
            // The interpreter reads and writes all of `cpu`.
            self.inner.fetch_fp(cpu)?;
            if !self.check(cpu) {
                return self.inner.run(cpu);
            }
            if self.irq.take() {
                return Ok(Exit::Interrupted);
            }
            if let Some(exit) = self.interp.step(cpu) {
                // A syscall or fault: the step (if one) is done after it.
                return Ok(exit);
            }
        }
    }

    fn fetch_fp(&mut self, cpu: &mut CpuState) -> Result<(), EngineError> {
        self.inner.fetch_fp(cpu)
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn interrupt_handle(&self) -> Arc<Interrupt> {
        self.irq.clone()
    }
}

// ---- registers ---------------------------------------------------------------

/// x86-64 Linux as gdb describes it for a native process: the core and SSE
/// registers, `orig_rax` (the Linux feature, which also turns on gdb's
/// Linux ABI: signal frames, the shared-library list) and `fs_base` and
/// `gs_base` (the segments feature). gdbstub_arch's `X86_64_SSE` names
/// the core and SSE registers only.
pub enum X86_64Linux {}

impl Arch for X86_64Linux {
    type Usize = u64;
    type Registers = Regs;
    type RegId = gdbstub_arch::x86::reg::id::X86_64CoreRegId;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// The registers in target-description order: core and SSE, then
/// `orig_rax`, `fs_base`, `gs_base`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Regs {
    core: X86_64CoreRegs,
    orig_rax: u64,
    fs_base: u64,
    gs_base: u64,
}

/// Bytes of the core and SSE registers in a `g` packet.
const CORE_BYTES: usize = 0x218;

impl Registers for Regs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        for v in [self.orig_rax, self.fs_base, self.gs_base] {
            for b in v.to_le_bytes() {
                write_byte(Some(b));
            }
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        self.core.gdb_deserialize(bytes.get(..CORE_BYTES).ok_or(())?)?;
        let mut rest = bytes[CORE_BYTES..].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        for v in [&mut self.orig_rax, &mut self.fs_base, &mut self.gs_base] {
            if let Some(x) = rest.next() {
                *v = x;
            }
        }
        Ok(())
    }
}

/// The target description: gdb's register names, types and order for
/// x86-64 Linux (core, SSE, Linux, segments), written out here.
const TARGET_XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
<architecture>i386:x86-64</architecture>
<osabi>GNU/Linux</osabi>
<feature name="org.gnu.gdb.i386.core">
<flags id="i386_eflags" size="4">
<field name="CF" start="0" end="0"/><field name="" start="1" end="1"/><field name="PF" start="2" end="2"/>
<field name="AF" start="4" end="4"/><field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
<field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/><field name="DF" start="10" end="10"/>
<field name="OF" start="11" end="11"/><field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
<field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/><field name="VIF" start="19" end="19"/>
<field name="VIP" start="20" end="20"/><field name="ID" start="21" end="21"/>
</flags>
<reg name="rax" bitsize="64" type="int64"/><reg name="rbx" bitsize="64" type="int64"/>
<reg name="rcx" bitsize="64" type="int64"/><reg name="rdx" bitsize="64" type="int64"/>
<reg name="rsi" bitsize="64" type="int64"/><reg name="rdi" bitsize="64" type="int64"/>
<reg name="rbp" bitsize="64" type="data_ptr"/><reg name="rsp" bitsize="64" type="data_ptr"/>
<reg name="r8" bitsize="64" type="int64"/><reg name="r9" bitsize="64" type="int64"/>
<reg name="r10" bitsize="64" type="int64"/><reg name="r11" bitsize="64" type="int64"/>
<reg name="r12" bitsize="64" type="int64"/><reg name="r13" bitsize="64" type="int64"/>
<reg name="r14" bitsize="64" type="int64"/><reg name="r15" bitsize="64" type="int64"/>
<reg name="rip" bitsize="64" type="code_ptr"/><reg name="eflags" bitsize="32" type="i386_eflags"/>
<reg name="cs" bitsize="32" type="int32"/><reg name="ss" bitsize="32" type="int32"/>
<reg name="ds" bitsize="32" type="int32"/><reg name="es" bitsize="32" type="int32"/>
<reg name="fs" bitsize="32" type="int32"/><reg name="gs" bitsize="32" type="int32"/>
<reg name="st0" bitsize="80" type="i387_ext"/><reg name="st1" bitsize="80" type="i387_ext"/>
<reg name="st2" bitsize="80" type="i387_ext"/><reg name="st3" bitsize="80" type="i387_ext"/>
<reg name="st4" bitsize="80" type="i387_ext"/><reg name="st5" bitsize="80" type="i387_ext"/>
<reg name="st6" bitsize="80" type="i387_ext"/><reg name="st7" bitsize="80" type="i387_ext"/>
<reg name="fctrl" bitsize="32" type="int" group="float"/><reg name="fstat" bitsize="32" type="int" group="float"/>
<reg name="ftag" bitsize="32" type="int" group="float"/><reg name="fiseg" bitsize="32" type="int" group="float"/>
<reg name="fioff" bitsize="32" type="int" group="float"/><reg name="foseg" bitsize="32" type="int" group="float"/>
<reg name="fooff" bitsize="32" type="int" group="float"/><reg name="fop" bitsize="32" type="int" group="float"/>
</feature>
<feature name="org.gnu.gdb.i386.sse">
<vector id="v4f" type="ieee_single" count="4"/><vector id="v2d" type="ieee_double" count="2"/>
<vector id="v16i8" type="int8" count="16"/><vector id="v8i16" type="int16" count="8"/>
<vector id="v4i32" type="int32" count="4"/><vector id="v2i64" type="int64" count="2"/>
<union id="vec128">
<field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/>
<field name="v8_int16" type="v8i16"/><field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>
<field name="uint128" type="uint128"/>
</union>
<flags id="i386_mxcsr" size="4">
<field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/><field name="ZE" start="2" end="2"/>
<field name="OE" start="3" end="3"/><field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
<field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/><field name="DM" start="8" end="8"/>
<field name="ZM" start="9" end="9"/><field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
<field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
</flags>
<reg name="xmm0" bitsize="128" type="vec128" regnum="40"/><reg name="xmm1" bitsize="128" type="vec128"/>
<reg name="xmm2" bitsize="128" type="vec128"/><reg name="xmm3" bitsize="128" type="vec128"/>
<reg name="xmm4" bitsize="128" type="vec128"/><reg name="xmm5" bitsize="128" type="vec128"/>
<reg name="xmm6" bitsize="128" type="vec128"/><reg name="xmm7" bitsize="128" type="vec128"/>
<reg name="xmm8" bitsize="128" type="vec128"/><reg name="xmm9" bitsize="128" type="vec128"/>
<reg name="xmm10" bitsize="128" type="vec128"/><reg name="xmm11" bitsize="128" type="vec128"/>
<reg name="xmm12" bitsize="128" type="vec128"/><reg name="xmm13" bitsize="128" type="vec128"/>
<reg name="xmm14" bitsize="128" type="vec128"/><reg name="xmm15" bitsize="128" type="vec128"/>
<reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/>
</feature>
<feature name="org.gnu.gdb.i386.linux">
<reg name="orig_rax" bitsize="64" type="int" regnum="57"/>
</feature>
<feature name="org.gnu.gdb.i386.segments">
<reg name="fs_base" bitsize="64" type="int"/><reg name="gs_base" bitsize="64" type="int"/>
</feature>
</target>
"#;

/// gdb's order: RAX RBX RCX RDX RSI RDI RBP RSP R8..R15.
const GDB_GPR: [usize; 16] = [
    reg::RAX,
    reg::RBX,
    reg::RCX,
    reg::RDX,
    reg::RSI,
    reg::RDI,
    reg::RBP,
    reg::RSP,
    reg::R8,
    reg::R9,
    reg::R10,
    reg::R11,
    reg::R12,
    reg::R13,
    reg::R14,
    reg::R15,
];

fn to_gdb(cpu: &CpuState, all: &mut Regs) {
    // No system call is being restarted when gdb looks (as Linux reports
    // for a thread stopped outside one).
    all.orig_rax = u64::MAX;
    all.fs_base = cpu.fs_base;
    all.gs_base = cpu.gs_base;
    let regs = &mut all.core;
    for (i, &r) in GDB_GPR.iter().enumerate() {
        regs.regs[i] = cpu.gpr[r];
    }
    regs.rip = cpu.rip;
    regs.eflags = cpu.rflags() as u32;
    let s = &mut regs.segments;
    (s.cs, s.ss, s.ds, s.es, s.fs, s.gs) = (
        cpu.seg[sreg::CS] as u32,
        cpu.seg[sreg::SS] as u32,
        cpu.seg[sreg::DS] as u32,
        cpu.seg[sreg::ES] as u32,
        cpu.seg[sreg::FS] as u32,
        cpu.seg[sreg::GS] as u32,
    );
    // ST(i) is physical register (TOP + i) mod 8.
    let top = ((cpu.x87.fsw >> 11) & 7) as usize;
    for i in 0..8 {
        regs.st[i] = cpu.x87.st[(top + i) % 8];
    }
    regs.fpu.fctrl = cpu.x87.fcw as u32;
    regs.fpu.fstat = cpu.x87.fsw as u32;
    regs.fpu.ftag = cpu.x87.ftw as u32;
    regs.fpu.fop = cpu.x87.fop as u32;
    regs.fpu.fioff = cpu.x87.fip as u32;
    regs.fpu.fooff = cpu.x87.fdp as u32;
    regs.xmm = cpu.xmm;
    regs.mxcsr = cpu.mxcsr;
}

fn from_gdb(all: &Regs, cpu: &mut CpuState) {
    cpu.fs_base = all.fs_base;
    cpu.gs_base = all.gs_base;
    let regs = &all.core;
    for (i, &r) in GDB_GPR.iter().enumerate() {
        cpu.gpr[r] = regs.regs[i];
    }
    cpu.rip = regs.rip;
    // What user code may change of RFLAGS (a native ptrace allows no more).
    use urun_cpu::state::fl;
    let keep = cpu.rflags() & !fl::USER_WRITABLE;
    cpu.flags.set(keep | (regs.eflags as u64 & fl::USER_WRITABLE));
    let fsw = regs.fpu.fstat as u16;
    let top = ((fsw >> 11) & 7) as usize;
    for i in 0..8 {
        cpu.x87.st[(top + i) % 8] = regs.st[i];
    }
    cpu.x87.fcw = regs.fpu.fctrl as u16;
    cpu.x87.fsw = fsw;
    cpu.x87.ftw = regs.fpu.ftag as u16;
    cpu.xmm = regs.xmm;
    cpu.mxcsr = regs.mxcsr & 0xffff;
}

impl Target {
    /// `f` on thread `tid`'s state: the live one of the stopped thread,
    /// the last record of any other.
    fn with_cpu<R>(&mut self, tid: Tid, f: impl FnOnce(&mut CpuState) -> R) -> Option<R> {
        let t = tid.get() as i32;
        match self.current {
            // SAFETY: see `unsafe impl Send for Target`: the pointer is the
            // stopped thread's live state, valid while it talks to gdb.
            Some((cur, p)) if cur == t => Some(f(unsafe { &mut *p })),
            _ => self.threads.get(&t).map(|slot| f(&mut slot.lock().unwrap_or_else(|e| e.into_inner()))),
        }
    }
}

impl gdbstub::target::Target for Target {
    type Arch = X86_64Linux;
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_auxv(&mut self) -> Option<AuxvOps<'_, Self>> {
        (!self.auxv.is_empty()).then_some(self)
    }
}

impl Auxv for Target {
    fn get_auxv(&self, offset: u64, length: usize, buf: &mut [u8]) -> TargetResult<usize, Self> {
        let start = (offset as usize).min(self.auxv.len());
        let n = length.min(buf.len()).min(self.auxv.len() - start);
        buf[..n].copy_from_slice(&self.auxv[start..start + n]);
        Ok(n)
    }
}

impl MultiThreadBase for Target {
    fn read_registers(&mut self, regs: &mut Regs, tid: Tid) -> TargetResult<(), Self> {
        self.with_cpu(tid, |cpu| to_gdb(cpu, regs)).ok_or(TargetError::NonFatal)
    }

    fn write_registers(&mut self, regs: &Regs, tid: Tid) -> TargetResult<(), Self> {
        // Only the stopped thread's registers are live.
        if self.current.map(|(t, _)| t) != Some(tid.get() as i32) {
            return Err(TargetError::NonFatal);
        }
        self.with_cpu(tid, |cpu| from_gdb(regs, cpu)).ok_or(TargetError::NonFatal)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], _tid: Tid) -> TargetResult<usize, Self> {
        // As much as the guest can read from `start` (gdb asks past ends).
        let mut n = 0;
        while n < data.len() {
            let addr = start.wrapping_add(n as u64);
            let chunk = (data.len() - n).min((urun_cpu::PAGE_SIZE - addr % urun_cpu::PAGE_SIZE) as usize);
            if !self.mem.check(addr, chunk as u64, Prot::READ) {
                break;
            }
            // SAFETY: checked readable guest memory just above; a racing
            // unmap is recovered by the routine.
            if unsafe { urun_cpu::hostfault::copy_from_guest(&mut data[n..n + chunk], addr) }.is_err() {
                break;
            }
            n += chunk;
        }
        if n == 0 && !data.is_empty() {
            return Err(TargetError::Errno(14)); // EFAULT
        }
        Ok(n)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], _tid: Tid) -> TargetResult<(), Self> {
        if !self.mem.check(start, data.len() as u64, Prot::WRITE) {
            return Err(TargetError::Errno(14));
        }
        // SAFETY: checked writable guest memory; a racing unmap is recovered.
        unsafe { urun_cpu::hostfault::copy_to_guest(start, data) }.map_err(|_| TargetError::Errno(14))?;
        self.mem.code_written(start, data.len() as u64);
        Ok(())
    }

    fn list_active_threads(&mut self, report: &mut dyn FnMut(Tid)) -> Result<(), Self::Error> {
        let mut tids: Vec<i32> = self.threads.keys().copied().collect();
        if let Some((t, _)) = self.current {
            if !tids.contains(&t) {
                tids.push(t);
            }
        }
        for t in tids {
            report(tid_of(t));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for Target {
    fn resume(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.step = None;
        Ok(())
    }

    fn set_resume_action_continue(&mut self, _tid: Tid, signal: Option<Signal>) -> Result<(), Self::Error> {
        if signal.is_some() {
            return Err("urun's gdb stub cannot resume with a signal");
        }
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

/// gdb steps one thread and names no action for the others (`vCont;s:T`):
/// they stay where they are if they are stepping (they wait on the stub's
/// lock); a thread running unarmed or in a syscall is not stopped.
impl MultiThreadSchedulerLocking for Target {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl MultiThreadSingleStep for Target {
    fn set_resume_action_step(&mut self, tid: Tid, signal: Option<Signal>) -> Result<(), Self::Error> {
        if signal.is_some() {
            return Err("urun's gdb stub cannot step with a signal");
        }
        self.step = Some(tid.get() as i32);
        Ok(())
    }
}

impl Breakpoints for Target {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Target {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.breakpoints.insert(addr);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.breakpoints.remove(&addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_round_trip_through_gdb_order() {
        let mut cpu = CpuState::default();
        for (i, g) in cpu.gpr.iter_mut().enumerate() {
            *g = 0x1000 + i as u64;
        }
        cpu.rip = 0x401000;
        cpu.x87.fsw = 3 << 11; // TOP = 3
        cpu.x87.st[3] = [1, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]; // ST(0) = 1.0
        cpu.xmm[5] = 0xdead_beef;
        cpu.fs_base = 0x7f00_1234_5000;
        let mut all = Regs::default();
        to_gdb(&cpu, &mut all);
        let regs = &all.core;
        assert_eq!(regs.regs[1], 0x1000 + reg::RBX as u64, "gdb's second register is RBX");
        assert_eq!(regs.regs[7], 0x1000 + reg::RSP as u64);
        assert_eq!(regs.st[0], cpu.x87.st[3], "ST(0) is the top of the stack");
        assert_eq!(regs.segments.cs, 0x33);
        // The g packet: core and SSE, then orig_rax, fs_base, gs_base.
        let mut bytes = Vec::new();
        all.gdb_serialize(|b| bytes.push(b.unwrap_or(0)));
        assert_eq!(bytes.len(), CORE_BYTES + 24);
        assert_eq!(bytes[CORE_BYTES + 8..CORE_BYTES + 16], cpu.fs_base.to_le_bytes());
        let mut parsed = Regs::default();
        parsed.gdb_deserialize(&bytes).expect("a g packet");
        assert_eq!(parsed, all);
        let mut back = CpuState::default();
        back.x87 = cpu.x87;
        from_gdb(&parsed, &mut back);
        assert_eq!((back.gpr, back.rip, back.xmm, back.x87.st), (cpu.gpr, cpu.rip, cpu.xmm, cpu.x87.st));
        assert_eq!(back.fs_base, cpu.fs_base);
    }
}
