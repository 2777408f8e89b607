//! The KVM engine: guest code runs natively in a bare VM with no kernel,
//! and exits to urun for every syscall and exception, which the same
//! personality code services as for the other engines.
//!
//! # Design
//!
//! - **One VM per process, one vCPU per guest thread** (`vm.rs`). The VM
//!   sits behind `Arc<Mutex<_>>`; each `KvmEngine` owns a vCPU and locks
//!   the VM only to resynchronise memory. A forked child makes a new VM
//!   (KVM refuses a VM's ioctls from another process). All ioctls go
//!   through the rust-vmm crates `kvm-ioctls` and `kvm-bindings`.
//! - **Memory: guest-virtual == host-virtual; guest-physical handed out
//!   by urun.** Every accessible range of the guest's `AddressSpace` is
//!   inside a KVM memory slot (adjacent ranges share one when first
//!   seen; a slot stays while it lies wholly inside guest memory, and what
//!   is added beside it gets a slot of its own, up to 8 per run) whose
//!   `userspace_addr` is its host address and whose guest-physical address
//!   `gpa.rs` hands out compactly below the physical-address width of both
//!   the host and the vCPU (the smallest of CPUID 0x80000008, /proc/cpuinfo
//!   and KVM's supported CPUID; `URUN_KVM_PHYS_BITS` may lower it, for
//!   tests). 4-level page tables (`paging.rs`) map each guest page at its
//!   own virtual address to that guest-physical page, with the guest's
//!   protections (present, user, RW for PROT_WRITE, NX unless PROT_EXEC).
//!   The same pointer is valid in the guest and in urun, as for every
//!   engine. Guest-physical == host-virtual, the first design, cannot hold:
//!   host addresses reach 2^47 while KVM refuses a CR3 or a slot at or
//!   above 2^MAXPHYADDR, 46 on the Intel Xeons of CI (KVM_SET_SREGS failed
//!   with EINVAL there). Slots keep the same offset within 2 MiB as their
//!   host memory (huge pages stay possible); ranges of removed slots are
//!   reused; guest memory that does not fit below the width is an error
//!   that names it.
//! - **Resynchronisation.** Before each run, if the `AddressSpace`
//!   generation moved (access was removed or reduced somewhere), the
//!   engine compares `regions()` with what the VM last saw: new slots go
//!   in first (at fresh guest-physical addresses: a host range may sit in
//!   two slots for a moment), then the page tables move to them, then the
//!   stale slots are retired, so a vCPU running meanwhile never meets a
//!   guest-physical address with no memory behind it. A retired slot is
//!   deleted and its guest-physical range handed out again only once
//!   every vCPU inside KVM_RUN entered with the tables of a newer epoch
//!   (`reclaim.rs`: each vCPU publishes the epoch it runs on; a sync short
//!   of slots or space waits a bounded time for laggards to exit, and at
//!   most 32 stale slots wait: a vCPU spinning in guest code never exits,
//!   and KVM's own slot deletion drops translations into the slot), and
//!   lazily: up to 8 (256 MiB) are left alone, since deleting one waits
//!   for two SRCU grace periods. New
//!   mappings do not move the generation: the guest's first touch of one
//!   takes a #PF, the engine resynchronises and, if that changed anything
//!   or the vCPU ran on the tables of an older epoch (another vCPU's sync
//!   was moving or adding the mapping: before this check, a spurious
//!   guest SIGSEGV in a few runs of 100 of `threads.musl` under load, and
//!   in every run of an 8-thread malloc/mmap program), runs the
//!   instruction again; otherwise the fault is the guest's. After
//!   any page-table change a vCPU switches CR3 between two identical
//!   PML4s, so that KVM drops what it cached of the old tables (shadow
//!   paging, as in `kvm_pvm`, does not see urun's writes to them).
//! - **urun's private pages**: the system area — stub code, IDT, a probe
//!   page, and per vCPU a GDT, a TSS and an IST stack — mapped at its own
//!   host address, supervisor-only, and after it the page-table pool (1
//!   GiB reserved; no page table maps it: the guest cannot read it). One
//!   host mapping, one guest-physical range; one memory slot covers the
//!   system area and the pool's first 4 MiB, and the pool grows by slots
//!   of doubling size before a sync that may need more tables
//!   (`Vm::reserve_tables`). Being
//!   urun's memory, that address is never a guest address; it is in the
//!   lower half because `kvm_pvm` gives a guest nothing else. Both are
//!   anonymous host mappings outside the `AddressSpace`.
//! - **CPL3.** The guest runs at CPL3 with Linux's user selectors (CS
//!   0x33, SS 0x2b), so it cannot touch urun's supervisor pages, run
//!   privileged instructions or `out` (a #GP, SIGSEGV as natively). The
//!   brief suggested CPL0 because a `sysret` back to CPL3 did not work
//!   under `kvm_pvm`; measured here, CPL0 code under `kvm_pvm` is run by
//!   KVM's instruction emulator (about 1.8 µs an instruction, and no
//!   SSE/x87 at all), while CPL3 code runs natively. urun never uses
//!   `sysret`: it returns to CPL3 by setting CS/SS with KVM_SET_SREGS.
//! - **SYSCALL**: EFER.SCE, STAR, LSTAR at a supervisor stub `out
//!   PORT_SYSCALL, al`, FMASK as Linux. On hardware KVM the stub runs at
//!   CPL0 and exits. Under `kvm_pvm` the SYSCALL reaches LSTAR still at
//!   CPL3, and fetching the supervisor stub raises #PF (instruction
//!   fetch, user) at LSTAR, which the #PF stub turns into an exit;
//!   `exit::decode` recognises both. urun reads RCX (return RIP), R11
//!   (RFLAGS) and the guest RSP, returns `Exit::Syscall`, and the next run
//!   sets RIP, RFLAGS and the segments again.
//! - **Exceptions**: IDT gates for vectors 0..31 use IST1 (never the
//!   guest stack, whose red zone must survive); each stub does `out
//!   PORT_EXCEPTION + vector, al`. `exit.rs` turns the port, the IST frame
//!   (error code, RIP, RFLAGS, RSP) and CR2 into an `Exit::Fault`, a pure
//!   function with unit tests. `exit.rs` is "handle the exit",
//!   `KvmEngine::run` is "run".
//! - **State transfer**: a syscall round trip is one ioctl, KVM_RUN. GPRs,
//!   RIP and RFLAGS (in) and the segments, FS/GS base and CR3 (in, on
//!   every entry: the exit stubs leave the vCPU at CPL0) travel through
//!   the shared `kvm_run` page (KVM_CAP_SYNC_REGS: the dirty bits make KVM
//!   load them at entry, the valid bit makes it store the GPRs at exit);
//!   KVM_SET/GET_REGS and KVM_SET_SREGS where the capability is missing.
//!   x87, MXCSR and XMM go through the XSAVE area's legacy region (the
//!   FXSAVE image of `CpuState`; KVM_GET/SET_FPU do not carry MXCSR under
//!   kvm_pvm), written only when they changed. After a syscall exit they
//!   stay in the vCPU and `CpuState`'s copy is stale: the personality asks
//!   for them (`Engine::fetch_fp`) before every syscall it does not pass
//!   straight to the host and before delivering a signal; every other exit
//!   reads them back. CR2 (an ioctl) is read only for a real #PF.
//!   CR4.OSXSAVE is off, so the guest sees no AVX and libc uses SSE code.
//! - **CPUID**: the vCPU gets KVM_GET_SUPPORTED_CPUID (without it the
//!   guest sees a 36-bit physical width); its physical width bounds the
//!   guest-physical addresses urun hands out.
//! - **Interrupts**: the personality's host signal handler raises the
//!   engine's `Interrupt` (cpu/src/engine.rs), which sets a flag and the
//!   vCPU's `immediate_exit` byte, registered by the engine (atomics only:
//!   async-signal-safe). A signal during KVM_RUN makes it return EINTR; one
//!   that lands between the engine's look at the flag and KVM_RUN makes
//!   KVM_RUN return at once (the unit test
//!   `request_before_kvm_run_is_not_missed` raises it exactly there). A
//!   signal that ends KVM_RUN while the vCPU is on its way out (RIP in the
//!   stub page: the #PF at LSTAR pending, or a stub not yet at its `out`,
//!   which kvm_pvm emulates one instruction at a time) lets the exit finish
//!   first, untouched; handing that state to the guest killed it with
//!   SIGSEGV under a signal storm. Limit: a request raised by another
//!   thread without a signal to this one reaches a guest already in
//!   KVM_RUN only at its next exit.
//! - **Failure is reported, never acted on**: `Engine::run` and
//!   `KvmEngine::new` return errors (`KvmError`, mapped to the engine-
//!   neutral `EngineError`): no vCPU left (urun's 254, KVM's limit, or
//!   `URUN_KVM_MAX_VCPUS` for tests) is `Exhausted`, which the personality
//!   turns into EAGAIN for the guest's clone; no usable KVM is
//!   `Unavailable`; anything else is `Failed`. The personality decides
//!   whether and how the process ends (a vfork child with `_exit`).
//! - **Isolation**: the guest reaches only what the page tables map (its
//!   own ranges as user pages; urun's system pages are supervisor-only),
//!   and the personality validates every pointer a syscall carries.
//!
//! # Tested where
//!
//! - This project's machine: AMD EPYC (Zen 5, family 0x1A), nested KVM
//!   through the `kvm_pvm` module, 48-bit physical addresses,
//!   KVM_CAP_SYNC_REGS present: every test (`tests/kvm.rs`, and the e2e
//!   and corpus suites with `URUN_TEST_ENGINE=kvm`).
//! - Intel Xeon CI hosts (46-bit physical addresses, `kvm_pvm`): where the
//!   first design failed. Not run here; `small_physical_width_vs_native`
//!   in `tests/kvm.rs` stands in for them by running every test program
//!   with `URUN_KVM_PHYS_BITS=36` (below 46, so the same code paths), and
//!   `memory_beyond_the_physical_width_is_one_clear_line` checks the limit.
//! - Hardware KVM (VMX/SVM): designed for (the SYSCALL stub that exits at
//!   CPL0 is decoded as well as kvm_pvm's #PF at LSTAR; guest-physical
//!   addresses avoid the first MiB and the 32-bit hole under 4 GiB where
//!   KVM may place its own pages), not tested here.
//!
//! # Measured (nested `kvm_pvm`, 2 vCPUs, release build)
//!
//! - CPU-bound `bench_cpu.glibc`: 258 ms against 247 ms natively.
//! - A `getppid` round trip (`bench_syscall.glibc 20000`, medians of 9
//!   runs interleaved with the previous build, minus start-up): from five
//!   ioctls (KVM_SET_SREGS, KVM_SET_REGS, KVM_RUN, KVM_GET_REGS,
//!   KVM_GET_XSAVE) to one (KVM_RUN): 56 µs before and 33 µs after in CPU
//!   time (user + system; system alone 0.80 s against 0.35 s for 20000
//!   calls), ~60 µs and ~37 µs of wall time at a quiet moment, 88 µs and
//!   57 µs while five other builds shared the two cores. Natively 0.14
//!   µs; in the interpreter about 1 µs. What is left is KVM_RUN itself
//!   (SYSCALL, the #PF at LSTAR delivered through the IDT, the emulated
//!   `out`, the nested world switches, and the registers loaded from the
//!   kvm_run page). `perf record` of that run: about 30% of the samples
//!   are kvm_pvm's own work for every KVM_RUN ioctl (CR4 writes in
//!   `pvm_vcpu_put`, MSR reads in `kvm_arch_vcpu_load`), urun's own code
//!   under 2%: one ioctl a round trip is the floor of this design. An
//!   LSTAR stub that exits by MMIO instead saves only ~3
//!   µs of KVM_RUN (the ignored test
//!   `vm::pvm_experiment::user_mode_round_trip` measures both).
//! - Start-up (`hyperfine`, see README): the VM is made and tried
//!   ([`probe`]) on a thread of its own while the CLI loads the program.
//!   What it costs, per ioctl (`perf trace`, quiet host): KVM_CREATE_VM
//!   0.25-0.3 ms, KVM_GET_SUPPORTED_CPUID 0.3-0.45 ms (host CPUID exits
//!   to the outer hypervisor), KVM_CREATE_VCPU 0.25-0.3 ms, KVM_SET_CPUID2
//!   0.08 ms, a vCPU's first KVM_RUN 0.2-0.35 ms (the next ones 0.04-0.1),
//!   each memory-slot change 0.04-0.13 ms and the first of a VM 0.6 ms,
//!   all waiting for an SRCU grace period: on a loaded host each of them
//!   takes milliseconds (the grace period needs kworkers to run). The 1
//!   GiB page-table slot made KVM allocate reverse maps for all of it,
//!   another 0.3 ms. Then the guest: each memory slot of its own (5 for
//!   the PE hello, 7 for `/bin/true`, 10 before slots were kept), and
//!   each exit (~45 µs; the PE hello makes 36 API calls, each an exit).

mod exit;
mod gpa;
mod mmap;
mod paging;
mod reclaim;
mod vm;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};
use urun_cpu::interp::Interpreter;
use urun_cpu::state::reg;
use urun_cpu::{AddressSpace, CpuState, Engine, EngineError, Exit, Fault, FaultKind, Interrupt};

pub use exit::{decode, Action, RawExit};

/// Why the KVM engine cannot run.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("cannot open /dev/kvm: {0}")]
    Open(std::io::Error),
    #[error("{what} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Ioctl { what: &'static str, errno: i32 },
    #[error(
        "memory slot for host {start:#x}+{size:#x} at guest-physical {gpa:#x}: {}",
        std::io::Error::from_raw_os_error(*errno)
    )]
    Slot { start: u64, gpa: u64, size: u64, errno: i32 },
    #[error("{0}")]
    Gpa(gpa::GpaError),
    #[error("cannot allocate urun's VM pages: {0}")]
    Memory(std::io::Error),
    #[error("{0}")]
    Paging(paging::PagingError),
    #[error("more than {0} guest threads at once")]
    TooManyVcpus(usize),
    #[error("the guest needs more than {0} memory slots")]
    TooManySlots(u32),
    #[error("the probe guest did not run: {0}")]
    Probe(String),
    #[error("KVM engine: {0}")]
    Internal(String),
}

/// Check that KVM works here: make this process's VM (system pages, page
/// tables, their memory slot) and its first vCPU (CPUID, XCR0, MSRs),
/// and run a few instructions at CPL3 in long mode that end in a
/// SYSCALL. The error says why not. The VM and the vCPU stay, idle, for
/// the first [`KvmEngine`] to take. The CLI runs it on a thread of its own
/// while the main thread loads the program: the ioctls that make a VM
/// mostly wait (a memory-slot change waits for an SRCU grace period, a
/// supported-CPUID query exits to the host hypervisor for every leaf), and
/// a vCPU's first KVM_RUN costs ~0.3 ms more than the next ones under
/// `kvm_pvm` wherever it runs; the guest thread's own first KVM_RUN then
/// costs about what any other does.
pub fn probe() -> Result<(), KvmError> {
    let vm = vm::get()?;
    let mut v = vm::lock(&vm);
    let (mut vcpu, idx, _) = v.take_vcpu()?;
    let regs = kvm_regs { rip: v.probe_code(), rflags: 0x202, ..Default::default() };
    let sregs = v.user_sregs(idx);
    let result = (|| {
        let err = |what| move |e: kvm_ioctls::Error| KvmError::Ioctl { what, errno: e.errno() };
        vcpu.set_sregs(&sregs).map_err(err("KVM_SET_SREGS"))?;
        vcpu.set_regs(&regs).map_err(err("KVM_SET_REGS"))?;
        let raw = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, _)) => RawExit::Out { port, from_stub: true },
            Ok(other) => return Err(KvmError::Probe(format!("exit {other:?}"))),
            Err(e) => {
                return Err(KvmError::Probe(format!("KVM_RUN: {}", std::io::Error::from_raw_os_error(e.errno()))))
            }
        };
        let r = vcpu.get_regs().map_err(err("KVM_GET_REGS"))?;
        let cr2 = vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?.cr2;
        match exit::decode(raw, &v.ist_top(idx), cr2, 0, v.lstar()) {
            Action::Syscall { .. } if r.rax == 42 => Ok(()),
            other => Err(KvmError::Probe(format!("{other:?} with rax {:#x}, expected a SYSCALL with 42", r.rax))),
        }
    })();
    v.put_vcpu(vcpu, idx);
    result
}

/// [`probe`], then bring the VM's memory slots and page tables up to date
/// with `mem` as it is at that moment (the CLI's thread: what the program's
/// loading mapped by then is in the VM before the engine is made; every
/// slot made waits for an SRCU grace period, better here than before the
/// guest's first instruction). Only the probe's error is returned: guest
/// memory that does not fit is not a KVM that cannot be used, and the
/// engine's own sync meets it again and reports it as such.
pub fn probe_and_sync(mem: &Arc<AddressSpace>) -> Result<(), KvmError> {
    probe()?;
    let vm = vm::get()?;
    let mut v = vm::lock(&vm);
    if let Err(e) = v.sync(mem) {
        tracing::debug!(error = %e, "early sync failed; the engine will say why");
    }
    Ok(())
}

impl From<KvmError> for EngineError {
    /// What the personality is told: `Unavailable` when KVM cannot run
    /// here at all, `Exhausted` when no vCPU is left for another guest
    /// thread, `Failed` otherwise.
    fn from(e: KvmError) -> Self {
        let exhausted_errno = |errno: i32| matches!(errno, libc::EINVAL | libc::ENOMEM | libc::EMFILE | libc::ENFILE);
        match &e {
            KvmError::Open(_) | KvmError::Probe(_) => EngineError::Unavailable(e.to_string()),
            KvmError::Ioctl { what: "KVM_CREATE_VM" | "KVM_GET_SUPPORTED_CPUID", .. } => {
                EngineError::Unavailable(e.to_string())
            }
            KvmError::TooManyVcpus(_) => EngineError::Exhausted(e.to_string()),
            KvmError::Ioctl { what: "KVM_CREATE_VCPU", errno } if exhausted_errno(*errno) => {
                EngineError::Exhausted(e.to_string())
            }
            _ => EngineError::Failed(e.to_string()),
        }
    }
}

/// What the vCPU holds besides what is set on every entry.
struct Loaded {
    sregs: kvm_sregs,
    /// The FPU image the vCPU holds, when known: KVM_SET_XSAVE is skipped
    /// when the guest state still matches it.
    fpu: Option<kvm_fpu>,
    /// The vCPU's last XSAVE area (the x87/SSE state travels through its
    /// legacy region: KVM_GET/SET_FPU do not carry MXCSR under kvm_pvm).
    xsave: Option<kvm_bindings::kvm_xsave>,
    /// The YMM upper halves the vCPU holds (with `fpu`).
    ymm_hi: [u128; 16],
    fs_base: u64,
    gs_base: u64,
    epoch: u64,
    root: usize,
}

/// The KVM engine for one guest thread.
pub struct KvmEngine {
    mem: Arc<AddressSpace>,
    vm: Arc<Mutex<vm::Vm>>,
    vcpu: Option<VcpuFd>,
    idx: usize,
    pid: u32,
    loaded: Loaded,
    interrupt: Arc<Interrupt>,
    /// Where this vCPU publishes the epoch it runs on (`reclaim.rs`).
    running: Arc<reclaim::Running>,
    /// Registers travel through the shared `kvm_run` page
    /// (KVM_CAP_SYNC_REGS) instead of KVM_GET/SET_REGS and KVM_SET_SREGS.
    sync_regs: bool,
    /// After a syscall exit the guest's x87/SSE state stays in the vCPU
    /// (reading it costs an ioctl) and `CpuState`'s copy is stale until
    /// `fetch_fp`. Every other exit leaves `CpuState` complete.
    fp_in_vcpu: bool,
    /// Runs the block KVM cannot (made on first need, `run_block_interpreted`).
    interp: Option<Interpreter>,
}

impl KvmEngine {
    /// An engine with its own vCPU in this process's VM.
    pub fn new(mem: Arc<AddressSpace>) -> Result<Self, KvmError> {
        Self::with_interrupt(mem, Interrupt::new())
    }

    fn with_interrupt(mem: Arc<AddressSpace>, interrupt: Arc<Interrupt>) -> Result<Self, KvmError> {
        let vm = vm::get()?;
        let (mut vcpu, idx, sregs, sync_regs, running) = {
            let mut v = vm::lock(&vm);
            v.sync(&mem)?;
            let (vcpu, idx, sregs) = v.take_vcpu()?;
            (vcpu, idx, sregs, v.sync_regs, v.running.clone())
        };
        let run = vcpu.get_kvm_run();
        run.kvm_valid_regs = if sync_regs { u64::from(kvm_bindings::KVM_SYNC_X86_REGS) } else { 0 };
        run.kvm_dirty_regs = 0;
        let kick = std::ptr::addr_of_mut!(run.immediate_exit).cast::<AtomicU8>();
        // SAFETY: the byte is in the vCPU's kvm_run mapping, which lives as
        // long as the VcpuFd; vCPUs are never closed (they go back to the
        // VM's idle list), and `Drop` unregisters the byte before that.
        // AtomicU8 has the size and alignment of u8.
        unsafe {
            (*kick).store(0, Ordering::Release);
            interrupt.set_kick(kick);
        }
        Ok(KvmEngine {
            mem,
            vm,
            vcpu: Some(vcpu),
            idx,
            pid: std::process::id(),
            loaded: Loaded {
                sregs,
                fpu: None,
                xsave: None,
                ymm_hi: [0; 16],
                fs_base: 0,
                gs_base: 0,
                epoch: u64::MAX,
                root: 0,
            },
            interrupt,
            running,
            sync_regs,
            fp_in_vcpu: false,
            interp: None,
        })
    }

    /// After a fork: a new VM and vCPU in this process.
    fn remake(&mut self) -> Result<(), KvmError> {
        if self.fp_in_vcpu {
            // The personality fetches it before a fork; if it did not, the
            // state is in the parent's vCPU, out of reach.
            return Err(KvmError::Internal("x87/SSE state left in the parent's vCPU across a fork".into()));
        }
        // The parent's vCPU fd is useless here; closing it is harmless, once
        // a signal handler can no longer write to its kvm_run page.
        // SAFETY: unregistering.
        unsafe { self.interrupt.set_kick(std::ptr::null()) };
        self.vcpu = None;
        // The personality holds our interrupt request: keep it.
        let fresh = KvmEngine::with_interrupt(self.mem.clone(), self.interrupt.clone())?;
        // The old engine is dropped in a process that does not own its VM,
        // so its Drop gives nothing back.
        *self = fresh;
        Ok(())
    }

    fn vcpu(&self) -> Result<&VcpuFd, KvmError> {
        self.vcpu.as_ref().ok_or(KvmError::Internal("the engine has no vCPU".into()))
    }

    /// The vCPU's `immediate_exit` byte, as registered with the interrupt.
    fn set_immediate_exit(&mut self, v: u8) {
        if let Some(vcpu) = self.vcpu.as_mut() {
            let p = std::ptr::addr_of_mut!(vcpu.get_kvm_run().immediate_exit).cast::<AtomicU8>();
            // SAFETY: as in `with_interrupt`: the byte lives in the kvm_run
            // mapping; a signal handler may write it concurrently, hence
            // the atomic.
            unsafe { (*p).store(v, Ordering::Release) };
        }
    }

    /// Bring memory and system registers up to date, then the guest state.
    fn enter(&mut self, cpu: &CpuState, force_sync: bool) -> Result<(), KvmError> {
        let gen = self.mem.generation();
        let changes = self.mem.changes();
        let mut v = vm::lock(&self.vm);
        // Mappings added since the last sync go in now, not at the guest's
        // first touch of them (a #PF exit, ~65 µs with the x87/SSE state
        // read back: three or four of them at each start-up).
        if force_sync || gen != v.generation || changes != v.changes || self.loaded.epoch == u64::MAX {
            v.sync(&self.mem)?;
        } else if v.has_retired() {
            v.reclaim()?;
        }
        let l = &mut self.loaded;
        if l.epoch != v.epoch {
            l.root ^= 1;
            l.sregs.cr3 = v.root(l.root);
            l.epoch = v.epoch;
        }
        drop(v);
        if l.fs_base != cpu.fs_base || l.gs_base != cpu.gs_base {
            l.sregs.fs.base = cpu.fs_base;
            l.sregs.gs.base = cpu.gs_base;
            l.fs_base = cpu.fs_base;
            l.gs_base = cpu.gs_base;
        }
        let g = &cpu.gpr;
        let regs = kvm_regs {
            rax: g[reg::RAX],
            rbx: g[reg::RBX],
            rcx: g[reg::RCX],
            rdx: g[reg::RDX],
            rsi: g[reg::RSI],
            rdi: g[reg::RDI],
            rsp: g[reg::RSP],
            rbp: g[reg::RBP],
            r8: g[reg::R8],
            r9: g[reg::R9],
            r10: g[reg::R10],
            r11: g[reg::R11],
            r12: g[reg::R12],
            r13: g[reg::R13],
            r14: g[reg::R14],
            r15: g[reg::R15],
            rip: cpu.rip,
            rflags: cpu.flags.get() | 2,
        };
        // The vCPU comes back from every exit at CPL0 (the exit stubs): the
        // user segments (and FS/GS base) go in again each time.
        if self.sync_regs {
            let vcpu = self.vcpu.as_mut().ok_or(KvmError::Internal("the engine has no vCPU".into()))?;
            let s = vcpu.sync_regs_mut();
            s.regs = regs;
            s.sregs = self.loaded.sregs;
            vcpu.set_sync_dirty_reg(SyncReg::Register);
            vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
        } else {
            let vcpu = self.vcpu()?;
            vcpu.set_sregs(&self.loaded.sregs)
                .map_err(|e| KvmError::Ioctl { what: "KVM_SET_SREGS", errno: e.errno() })?;
            vcpu.set_regs(&regs).map_err(|e| KvmError::Ioctl { what: "KVM_SET_REGS", errno: e.errno() })?;
        }
        if self.fp_in_vcpu {
            // The vCPU holds the guest's x87/SSE state and nobody asked
            // for it: nothing to write.
            return Ok(());
        }
        let fpu = fpu_from(cpu);
        if self.loaded.fpu.as_ref().is_none_or(|held| !same_fpu(held, &fpu)) || self.loaded.ymm_hi != cpu.ymm_hi {
            // Measured under kvm_pvm: KVM_SET_FPU/KVM_GET_FPU do not carry
            // MXCSR, so the state goes in through the XSAVE area's legacy
            // region (the FXSAVE image), with the x87 and SSE components
            // marked present in XSTATE_BV.
            let vcpu = self.vcpu.as_ref().ok_or(KvmError::Internal("the engine has no vCPU".into()))?;
            // The first time, an area of our own (standard format, no
            // component but those written below), not the vCPU's: one
            // ioctl less at start-up. XCR0 has nothing else (x87, SSE,
            // AVX with AVX), and a new engine's guest state is `cpu`.
            let mut xs = self.loaded.xsave.take().unwrap_or_default();
            let img = cpu.fxsave_image();
            for (i, w) in img.chunks_exact(4).enumerate() {
                xs.region[i] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            }
            xs.region[128] |= 3;
            if urun_cpu::cpuid::model().has("avx") {
                put_ymm_hi(&mut xs, &cpu.ymm_hi);
            }
            // SAFETY: the area came from KVM_GET_XSAVE for this vCPU, or is
            // all zero (standard format, XCOMP_BV 0); only its legacy region
            // (a valid FXSAVE image of CpuState), its AVX component when
            // XCR0 has it, and those bits of XSTATE_BV changed.
            unsafe { vcpu.set_xsave(&xs) }.map_err(|e| KvmError::Ioctl { what: "KVM_SET_XSAVE", errno: e.errno() })?;
            self.loaded.xsave = Some(xs);
            self.loaded.fpu = Some(fpu);
            self.loaded.ymm_hi = cpu.ymm_hi;
        }
        Ok(())
    }

    /// Read the general registers back after an exit.
    fn leave_gprs(&mut self, cpu: &mut CpuState) -> Result<kvm_regs, KvmError> {
        let r = if self.sync_regs {
            let vcpu = self.vcpu.as_mut().ok_or(KvmError::Internal("the engine has no vCPU".into()))?;
            vcpu.sync_regs_mut().regs
        } else {
            self.vcpu()?.get_regs().map_err(|e| KvmError::Ioctl { what: "KVM_GET_REGS", errno: e.errno() })?
        };
        let g = &mut cpu.gpr;
        g[reg::RAX] = r.rax;
        g[reg::RBX] = r.rbx;
        g[reg::RCX] = r.rcx;
        g[reg::RDX] = r.rdx;
        g[reg::RSI] = r.rsi;
        g[reg::RDI] = r.rdi;
        g[reg::RSP] = r.rsp;
        g[reg::RBP] = r.rbp;
        g[reg::R8] = r.r8;
        g[reg::R9] = r.r9;
        g[reg::R10] = r.r10;
        g[reg::R11] = r.r11;
        g[reg::R12] = r.r12;
        g[reg::R13] = r.r13;
        g[reg::R14] = r.r14;
        g[reg::R15] = r.r15;
        cpu.rip = r.rip;
        cpu.flags.set(r.rflags);
        Ok(r)
    }

    /// Read the x87/SSE state back from the vCPU if `CpuState` lacks it.
    fn fetch_fp_state(&mut self, cpu: &mut CpuState) -> Result<(), KvmError> {
        if !self.fp_in_vcpu {
            return Ok(());
        }
        let xs = self.vcpu()?.get_xsave().map_err(|e| KvmError::Ioctl { what: "KVM_GET_XSAVE", errno: e.errno() })?;
        let mut img = [0u8; 512];
        for (i, w) in img.chunks_exact_mut(4).enumerate() {
            w.copy_from_slice(&xs.region[i].to_le_bytes());
        }
        if !cpu.fxrstor_image(&img) {
            tracing::warn!(mxcsr = xs.region[6], "vCPU MXCSR has reserved bits set; x87/SSE state not read back");
        }
        if urun_cpu::cpuid::model().has("avx") {
            cpu.ymm_hi = get_ymm_hi(&xs);
        }
        self.loaded.ymm_hi = cpu.ymm_hi;
        // What the vCPU holds now, as the next `enter` will compute it.
        self.loaded.fpu = Some(fpu_from(cpu));
        self.loaded.xsave = Some(xs);
        self.fp_in_vcpu = false;
        Ok(())
    }

    /// One KVM_RUN, as plain data.
    fn run_once(&mut self) -> Result<RawExit, KvmError> {
        let vcpu = self.vcpu.as_mut().ok_or(KvmError::Internal("the engine has no vCPU".into()))?;
        // Published for `reclaim.rs`: the tables this vCPU runs on, while
        // it is inside KVM_RUN.
        self.running.enter(self.idx, self.loaded.epoch);
        let result = vcpu.run();
        self.running.leave(self.idx);
        let raw = match result {
            Ok(VcpuExit::IoOut(port, _)) => RawExit::Out { port, from_stub: false },
            Ok(VcpuExit::Hlt) => RawExit::Hlt,
            Ok(VcpuExit::Intr) => RawExit::Interrupted,
            Ok(VcpuExit::Shutdown) => RawExit::Shutdown,
            Ok(VcpuExit::FailEntry(..)) => RawExit::Other("entry failed"),
            Ok(VcpuExit::InternalError) => {
                let run = vcpu.get_kvm_run();
                // SAFETY: the exit reason says the `internal` member is the live one.
                let i = unsafe { run.__bindgen_anon_1.internal };
                tracing::error!(suberror = i.suberror, data = ?&i.data[..(i.ndata as usize).min(16)], "KVM internal error");
                RawExit::Other("KVM internal error")
            }
            Ok(VcpuExit::MmioRead(gpa, _)) | Ok(VcpuExit::MmioWrite(gpa, _)) => {
                tracing::debug!(gpa = format_args!("{gpa:#x}"), "MMIO exit");
                RawExit::Other("access outside every memory slot")
            }
            Ok(_) => RawExit::Other("other"),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => RawExit::Interrupted,
            Err(e) => return Err(KvmError::Ioctl { what: "KVM_RUN", errno: e.errno() }),
        };
        Ok(raw)
    }

    /// Stop for the personality: the interrupt is taken, `immediate_exit`
    /// cleared, and `cpu` made complete.
    fn interrupted(&mut self, cpu: &mut CpuState) -> Result<Exit, KvmError> {
        self.interrupt.take();
        self.set_immediate_exit(0);
        self.fetch_fp_state(cpu)?;
        Ok(Exit::Interrupted)
    }

    /// Run the block at `cpu.rip` in the interpreter, `cpu` made complete
    /// first (the vCPU's x87/SSE state read back); `None` when it ran
    /// through without an exit.
    fn run_block_interpreted(&mut self, cpu: &mut CpuState) -> Result<Option<Exit>, KvmError> {
        self.fetch_fp_state(cpu)?;
        tracing::debug!(rip = format_args!("{:#x}", cpu.rip), "KVM_RUN EFAULT again: the interpreter runs this block");
        let mem = &self.mem;
        let interp = self.interp.get_or_insert_with(|| Interpreter::new(mem.clone()));
        Ok(interp.run_block(cpu))
    }

    fn run_inner(&mut self, cpu: &mut CpuState) -> Result<Exit, KvmError> {
        if self.pid != std::process::id() {
            self.remake()?;
        }
        let mut force_sync = false;
        let mut efaults = 0;
        loop {
            // A request raised after this look sets `immediate_exit` too,
            // and KVM_RUN then returns at once (EINTR): none is missed.
            if self.interrupt.is_raised() {
                return self.interrupted(cpu);
            }
            self.enter(cpu, force_sync)?;
            force_sync = false;
            let raw = self.run_once();
            if matches!(raw, Err(KvmError::Ioctl { what: "KVM_RUN", errno: libc::EFAULT }))
                && self.vcpu()?.get_sregs().is_ok_and(|s| s.cs.selector & 3 == 3)
            {
                // The host could not provide the memory behind a slot while
                // this vCPU ran guest code, and KVM says no more than that.
                self.leave_gprs(cpu)?;
                // The x87/SSE state is the vCPU's, newer than `cpu`'s.
                self.fp_in_vcpu = true;
                if efaults == 0 {
                    // Most often another guest thread's munmap, which this
                    // vCPU's slots and tables had not seen yet: bring the
                    // VM up to date and run again; the guest then takes
                    // its own #PF.
                    efaults += 1;
                    force_sync = true;
                    continue;
                }
                // Still: memory mapped for the guest that the host cannot
                // back (a file mapping past the end of its file), or a
                // race the VM keeps losing. The interpreter runs this
                // block on the same memory and state; its host-fault
                // routines find the guest's SIGBUS or SIGSEGV, or it runs
                // through and the VM takes over after it.
                efaults = 0;
                force_sync = true;
                match self.run_block_interpreted(cpu)? {
                    Some(exit) => return Ok(exit),
                    None => continue,
                }
            }
            let mut raw = raw?;
            efaults = 0;
            let mut regs = self.leave_gprs(cpu)?;
            // A signal can end KVM_RUN while the vCPU is on its way out:
            // the SYSCALL's #PF at LSTAR (kvm_pvm) or an exception not yet
            // delivered, or a stub not yet at its `out` (CPL0 code is
            // emulated one instruction at a time under kvm_pvm). RIP is
            // then in urun's stub page, not the guest's. Let the exit
            // finish, touching nothing; the request stays raised and is
            // seen after it.
            let mut reruns = 0;
            while raw == RawExit::Interrupted && vm::lock(&self.vm).in_stubs(regs.rip) {
                reruns += 1;
                if reruns > 10_000 {
                    return Err(KvmError::Internal(format!(
                        "the vCPU does not leave urun's stubs (at {:#x})",
                        regs.rip
                    )));
                }
                self.set_immediate_exit(0);
                raw = self.run_once()?;
                regs = self.leave_gprs(cpu)?;
            }
            let (top, lstar) = {
                let v = vm::lock(&self.vm);
                if let RawExit::Out { port, .. } = raw {
                    raw = RawExit::Out { port, from_stub: v.in_stubs(regs.rip) };
                }
                (v.ist_top(self.idx), v.lstar())
            };
            // CR2 costs an ioctl: not needed for the #PF at LSTAR that is a
            // SYSCALL under kvm_pvm (see `exit::decode`).
            let is_pf = matches!(raw, RawExit::Out { port, from_stub: true } if port == exit::PORT_EXCEPTION + 14)
                && top[1] != lstar;
            let cr2 = if is_pf { self.vcpu()?.get_sregs().map(|s| s.cr2).unwrap_or(0) } else { 0 };
            let mut action = exit::decode(raw, &top, cr2, 0, lstar);
            if let Action::Syscall { rsp } = action {
                // A syscall needs the general registers only: the x87/SSE
                // state stays in the vCPU until someone asks (`fetch_fp`).
                self.fp_in_vcpu = true;
                cpu.rip = regs.rcx;
                cpu.flags.set(regs.r11);
                if let Some(rsp) = rsp {
                    cpu.gpr[reg::RSP] = rsp;
                }
                return Ok(Exit::Syscall);
            }
            self.fp_in_vcpu = true;
            self.fetch_fp_state(cpu)?;
            if matches!(action, Action::Fault { kind: FaultKind::FloatingPoint { .. }, .. }) {
                let fpe = if matches!(raw, RawExit::Out { port, .. } if port == exit::PORT_EXCEPTION + 16) {
                    exit::x87_fpe_code(cpu.x87.fcw, cpu.x87.fsw)
                } else {
                    exit::simd_fpe_code(cpu.mxcsr)
                };
                action = exit::decode(raw, &top, cr2, fpe, lstar);
            }
            match action {
                Action::Syscall { .. } => unreachable!("handled above"),
                Action::Fault { pc, rsp, rflags, kind } => {
                    cpu.rip = pc;
                    cpu.gpr[reg::RSP] = rsp;
                    cpu.flags.set(rflags);
                    if let FaultKind::Page { .. } = kind {
                        // Perhaps a mapping the VM has not seen yet, or one
                        // another thread's resynchronisation was moving
                        // while this vCPU ran on the tables of an older
                        // epoch (a span is unmapped, then mapped again at
                        // its new slot; or another vCPU's sync already
                        // added the mapping this one faulted on): run the
                        // instruction again on the current tables. Only a
                        // fault taken on the current tables is the guest's.
                        let mut v = vm::lock(&self.vm);
                        if v.sync(&self.mem)? {
                            continue;
                        }
                        if retry_fault(self.loaded.epoch, v.epoch) {
                            tracing::debug!(
                                entered = self.loaded.epoch,
                                now = v.epoch,
                                "fault on older tables: run again"
                            );
                            continue;
                        }
                    }
                    return Ok(Exit::Fault(Fault { pc, kind }));
                }
                Action::Interrupted => return self.interrupted(cpu),
                Action::ProbeDone => return Err(KvmError::Internal("probe exit during a guest run".into())),
                Action::Broken(msg) if msg.is_empty() => {
                    // The guest's own `out`/`hlt`: #GP natively. RIP is
                    // past the instruction for hlt; for out it may be at
                    // it, which the signal handler does not see anyway.
                    return Ok(Exit::Fault(Fault { pc: cpu.rip, kind: FaultKind::GeneralProtection }));
                }
                Action::Broken(msg) => {
                    tracing::error!(rip = format_args!("{:#x}", cpu.rip), "{msg}");
                    return Ok(Exit::Fault(Fault { pc: cpu.rip, kind: FaultKind::GeneralProtection }));
                }
            }
        }
    }
}

impl Engine for KvmEngine {
    fn run(&mut self, cpu: &mut CpuState) -> Result<Exit, EngineError> {
        // The VM itself failed (not the guest): the personality decides
        // what becomes of the process.
        self.run_inner(cpu).map_err(EngineError::from)
    }

    fn fetch_fp(&mut self, cpu: &mut CpuState) -> Result<(), EngineError> {
        self.fetch_fp_state(cpu).map_err(EngineError::from)
    }

    fn name(&self) -> &'static str {
        "kvm"
    }

    fn interrupt_handle(&self) -> Arc<Interrupt> {
        self.interrupt.clone()
    }
}

impl Drop for KvmEngine {
    fn drop(&mut self) {
        if let Some(vcpu) = self.vcpu.take() {
            // SAFETY: unregistering the kvm_run byte before the vCPU is
            // given away. (Without a vCPU, as after `remake` moved the
            // request to a new engine, there is nothing of ours to
            // unregister.)
            unsafe { self.interrupt.set_kick(std::ptr::null()) };
            if self.pid == std::process::id() {
                vm::lock(&self.vm).put_vcpu(vcpu, self.idx);
            }
        }
    }
}

/// Is a page fault taken by a vCPU that entered with the tables of epoch
/// `entered` to be run again rather than given to the guest, the tables
/// being at epoch `now`? Yes when they changed since: the fault may come
/// from a mapping that was being moved, or that another vCPU's sync added.
fn retry_fault(entered: u64, now: u64) -> bool {
    entered != now
}

/// The vCPU FPU image of `cpu`'s x87/SSE state.
fn fpu_from(cpu: &CpuState) -> kvm_fpu {
    let img = cpu.fxsave_image();
    let u16_at = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(img[o..o + 8].try_into().unwrap_or([0; 8]));
    let mut f = kvm_fpu { fcw: u16_at(0), fsw: u16_at(2), ftwx: img[4], last_opcode: u16_at(6), ..Default::default() };
    f.last_ip = u64_at(8);
    f.last_dp = u64_at(16);
    f.mxcsr = cpu.mxcsr;
    for i in 0..8 {
        f.fpr[i].copy_from_slice(&img[32 + 16 * i..48 + 16 * i]);
    }
    for i in 0..16 {
        f.xmm[i].copy_from_slice(&img[160 + 16 * i..176 + 16 * i]);
    }
    f
}

/// Index of the AVX component (YMM upper halves) in a standard-format
/// XSAVE area as `u32` words, and of XSTATE_BV.
const YMM_WORD: usize = urun_cpu::cpuid::XSAVE_YMM_OFFSET as usize / 4;
const XSTATE_BV_WORD: usize = 128;

/// Write the YMM upper halves into an XSAVE area, marking the component
/// present.
fn put_ymm_hi(xs: &mut kvm_bindings::kvm_xsave, hi: &[u128; 16]) {
    for (i, v) in hi.iter().enumerate() {
        for (j, w) in v.to_le_bytes().chunks_exact(4).enumerate() {
            xs.region[YMM_WORD + 4 * i + j] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        }
    }
    xs.region[XSTATE_BV_WORD] |= 4;
}

/// The YMM upper halves of an XSAVE area (zero when the component is in
/// its initial state).
fn get_ymm_hi(xs: &kvm_bindings::kvm_xsave) -> [u128; 16] {
    let mut hi = [0u128; 16];
    if xs.region[XSTATE_BV_WORD] & 4 == 0 {
        return hi;
    }
    for (i, v) in hi.iter_mut().enumerate() {
        let mut b = [0u8; 16];
        for j in 0..4 {
            b[4 * j..4 * j + 4].copy_from_slice(&xs.region[YMM_WORD + 4 * i + j].to_le_bytes());
        }
        *v = u128::from_le_bytes(b);
    }
    hi
}

/// Do two FPU images hold the same state?
fn same_fpu(a: &kvm_fpu, b: &kvm_fpu) -> bool {
    a.fpr == b.fpr
        && a.fcw == b.fcw
        && a.fsw == b.fsw
        && a.ftwx == b.ftwx
        && a.last_opcode == b.last_opcode
        && a.last_ip == b.last_ip
        && a.last_dp == b.last_dp
        && a.xmm == b.xmm
        && a.mxcsr == b.mxcsr
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, Instant};
    use urun_cpu::{Placement, Prot};

    /// Milestone 1: a VM in long mode at CPL0 runs a few instructions and
    /// exits with `out`. Where /dev/kvm opens, a failure is a failure.
    #[test]
    fn probe_runs() {
        if let Err(why) = urun_cpu::testing::kvm_device_opens() {
            urun_cpu::testing::report_skip("probe_runs", &why);
            return;
        }
        if let Err(e) = probe() {
            panic!("/dev/kvm opens but urun's VM does not run: {e}");
        }
    }

    /// What the personality is told for each kind of KVM failure.
    #[test]
    fn errors_map_to_engine_errors() {
        use EngineError::{Exhausted, Failed, Unavailable};
        let kind = |e: EngineError| match e {
            Unavailable(_) => "unavailable",
            Exhausted(_) => "exhausted",
            Failed(_) => "failed",
        };
        let ioctl = |what, errno| KvmError::Ioctl { what, errno };
        let table: Vec<(KvmError, &str)> = vec![
            (KvmError::Open(std::io::Error::from_raw_os_error(libc::ENOENT)), "unavailable"),
            (ioctl("KVM_CREATE_VM", libc::EPERM), "unavailable"),
            (KvmError::Probe("no".into()), "unavailable"),
            (KvmError::Internal("the engine has no vCPU".into()), "failed"),
            (KvmError::TooManyVcpus(254), "exhausted"),
            (ioctl("KVM_CREATE_VCPU", libc::EINVAL), "exhausted"),
            (ioctl("KVM_CREATE_VCPU", libc::EMFILE), "exhausted"),
            (ioctl("KVM_CREATE_VCPU", libc::EIO), "failed"),
            (ioctl("KVM_SET_SREGS", libc::EINVAL), "failed"),
            (KvmError::Gpa(gpa::GpaError::Exhausted { len: 4096, bits: 36, used: 0 }), "failed"),
            (KvmError::TooManySlots(509), "failed"),
        ];
        for (e, want) in table {
            let text = e.to_string();
            let got = EngineError::from(e);
            assert_eq!(got.to_string(), text, "the message travels unchanged");
            assert_eq!(kind(got), want, "{text}");
        }
    }

    /// A guest spinning in `jmp .` at a fresh address space, with its
    /// engine and state.
    fn spinning_guest() -> Result<(KvmEngine, CpuState), KvmError> {
        let mem = Arc::new(AddressSpace::new());
        let rwx = Prot::RW.union(Prot::EXEC);
        let code = mem.map(Placement::Hint(0), 4096, rwx, false, None).expect("a code page");
        let stack = mem.map(Placement::Hint(0), 4 * 4096, Prot::RW, false, None).expect("a stack");
        // SAFETY: `code` is a page we just mapped read-write.
        unsafe { std::ptr::copy_nonoverlapping([0xebu8, 0xfe].as_ptr(), code as *mut u8, 2) };
        let mut cpu = CpuState { rip: code, ..CpuState::default() };
        cpu.gpr[reg::RSP] = stack + 4 * 4096;
        Ok((KvmEngine::new(mem)?, cpu))
    }

    extern "C" fn ignore(_: libc::c_int) {}

    /// The window that `immediate_exit` closes: a request raised after the
    /// engine's last look at it and before KVM_RUN (where a signal handler
    /// may run) makes KVM_RUN return at once instead of running the guest
    /// until the next exit (here: never, it spins). A backstop signal ends
    /// KVM_RUN after 5 s if the request was missed, and the test fails.
    #[test]
    fn request_before_kvm_run_is_not_missed() {
        if let Err(why) = urun_cpu::testing::kvm_device_opens() {
            return urun_cpu::testing::report_skip("request_before_kvm_run_is_not_missed", &why);
        }
        let (mut engine, mut cpu) = spinning_guest().expect("an engine");
        // SAFETY: a no-op handler without SA_RESTART, so that the backstop
        // signal interrupts KVM_RUN with EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore as *const () as usize;
            libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
        }
        // SAFETY: pthread_self cannot fail.
        let me = unsafe { libc::pthread_self() };
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let backstop = {
            let done = done.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                while !done.load(Ordering::Acquire) {
                    if t.elapsed() > Duration::from_secs(5) {
                        // SAFETY: the test thread is alive until `done`.
                        unsafe { libc::pthread_kill(me, libc::SIGUSR2) };
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        engine.enter(&cpu, false).expect("enter");
        // The host signal handler runs here: after the engine's look at
        // the request, before KVM_RUN.
        engine.interrupt_handle().raise();
        let t = Instant::now();
        let raw = engine.run_once().expect("KVM_RUN");
        let took = t.elapsed();
        assert_eq!(raw, RawExit::Interrupted);
        assert!(took < Duration::from_secs(1), "KVM_RUN ran the guest for {took:?}: the request was missed");
        // A full run returns the request once, then runs the guest again.
        assert_eq!(engine.run(&mut cpu), Ok(Exit::Interrupted));
        assert!(!engine.interrupt_handle().is_raised());
        engine.interrupt_handle().raise();
        assert_eq!(engine.run(&mut cpu), Ok(Exit::Interrupted));
        done.store(true, Ordering::Release);
        let _ = backstop.join();
    }

    /// A page fault taken on the tables of an older epoch is run again
    /// (another vCPU's sync was moving or adding the mapping); one taken on
    /// the current tables is the guest's.
    #[test]
    fn faults_on_older_tables_are_retried() {
        assert!(retry_fault(3, 4));
        assert!(retry_fault(u64::MAX, 0));
        assert!(!retry_fault(4, 4));
    }

    #[test]
    fn fpu_image_round_trips() {
        let mut cpu = CpuState::default();
        cpu.xmm[3] = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        cpu.mxcsr = 0x1f80 | 0x8000;
        cpu.x87.fcw = 0x027f;
        // The image that travels through the XSAVE legacy region and back.
        let f = fpu_from(&cpu);
        assert_eq!((f.mxcsr, f.fcw), (cpu.mxcsr, 0x027f));
        let mut back = CpuState::default();
        assert!(back.fxrstor_image(&cpu.fxsave_image()));
        assert_eq!(back.xmm[3], cpu.xmm[3]);
        assert_eq!(back.mxcsr, cpu.mxcsr);
        assert_eq!(back.x87.fcw, 0x027f);
    }
}
