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
//! - **Memory: guest-physical == host-virtual.** Every accessible range of
//!   the guest's `AddressSpace` is inside a KVM memory slot whose
//!   guest-physical address is its host address (adjacent ranges share a
//!   slot), and 4-level page tables (`paging.rs`) identity-map it with the
//!   guest's protections (present, user, RW for PROT_WRITE, NX unless
//!   PROT_EXEC). The same pointer is valid in the guest and in urun, as
//!   for every engine.
//! - **Resynchronisation.** Before each run, if the `AddressSpace`
//!   generation moved (access was removed or reduced somewhere), the
//!   engine compares `regions()` with what the VM last saw and updates
//!   slots and page-table entries for the ranges that differ. New
//!   mappings do not move the generation: the guest's first touch of one
//!   takes a #PF, the engine resynchronises and, if that changed anything,
//!   runs the instruction again; otherwise the fault is the guest's. After
//!   any page-table change a vCPU switches CR3 between two identical
//!   PML4s, so that KVM drops what it cached of the old tables (shadow
//!   paging, as in `kvm_pvm`, does not see urun's writes to them).
//! - **urun's private pages**: the page-table pool (a slot no page table
//!   maps: the guest cannot read it), and the system area — stub code,
//!   IDT, a probe page, and per vCPU a GDT, a TSS and an IST stack —
//!   identity-mapped at its own host address, supervisor-only. Being
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
//! - **State transfer**: all GPRs, RIP, RFLAGS with KVM_SET/GET_REGS; x87,
//!   MXCSR and XMM with KVM_SET/GET_FPU (the FXSAVE image of `CpuState`);
//!   segments and FS/GS base with KVM_SET_SREGS on every entry. CR4.OSXSAVE
//!   is off, so the guest sees no AVX and libc uses SSE code.
//! - **CPUID**: the vCPU gets KVM_GET_SUPPORTED_CPUID (without it the
//!   guest sees a 36-bit physical width and high identity mappings fail).
//! - **Interrupts**: the personality's host signal handler sets the
//!   engine's interrupt flag; a signal that arrives during KVM_RUN makes it
//!   return EINTR, and the flag is checked before every KVM_RUN. Limit: a
//!   flag set by another thread without a signal to this one, or a signal
//!   that lands between the check and KVM_RUN, is seen only at the next
//!   exit (kvm-ioctls has no KVM_SET_SIGNAL_MASK wrapper to close that
//!   window).
//! - **Isolation**: the guest reaches only what the page tables map (its
//!   own ranges as user pages; urun's system pages are supervisor-only),
//!   and the personality validates every pointer a syscall carries.
//!
//! # Measured (nested `kvm_pvm`, 2 vCPUs, release build)
//!
//! - CPU-bound `bench_cpu.glibc`: 258 ms against 247 ms natively.
//! - A `getppid` round trip: 40 µs (0.14 µs natively, 0.32 µs in the
//!   interpreter). Of an exit, KVM_RUN takes ~26 µs (SYSCALL, the #PF at
//!   LSTAR delivered through the IDT, the emulated `out`, the nested world
//!   switches), KVM_SET_SREGS ~3 µs, KVM_SET_REGS ~2.5 µs, KVM_GET_REGS +
//!   KVM_GET_SREGS ~6 µs, KVM_GET_FPU + KVM_SET_FPU ~5 µs (SET_FPU is
//!   skipped when nothing changed). An LSTAR stub that exits by MMIO
//!   instead saves only ~3 µs of KVM_RUN (the ignored test
//!   `vm::pvm_experiment::user_mode_round_trip` measures both).
//! - Start-up of a tiny static program: ~3.5 ms (VM, probe, vCPU, slots).

mod exit;
mod mmap;
mod paging;
mod vm;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use urun_cpu::state::reg;
use urun_cpu::{AddressSpace, CpuState, Engine, Exit, Fault, FaultKind};

pub use exit::{decode, Action, RawExit};

/// Why the KVM engine cannot run.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("cannot open /dev/kvm: {0}")]
    Open(std::io::Error),
    #[error("{what} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Ioctl { what: &'static str, errno: i32 },
    #[error("memory slot at {start:#x}+{size:#x}: {}", std::io::Error::from_raw_os_error(*errno))]
    Slot { start: u64, size: u64, errno: i32 },
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
}

/// Check that KVM works here: make the VM and run a few instructions at
/// CPL0 in long mode that exit with `out`. The error says why not.
pub fn probe() -> Result<(), KvmError> {
    let vm = vm::get()?;
    let mut v = vm::lock(&vm);
    let (mut vcpu, idx, _) = v.take_vcpu()?;
    let regs = kvm_regs { rip: v.probe_code(), rflags: 0x202, ..Default::default() };
    let result = (|| {
        let err = |what| move |e: kvm_ioctls::Error| KvmError::Ioctl { what, errno: e.errno() };
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

/// What the vCPU holds besides what KVM_SET_REGS/FPU set every run.
struct Loaded {
    sregs: kvm_sregs,
    /// The FPU image the vCPU holds, when known: KVM_SET_FPU is skipped
    /// when the guest state still matches it.
    fpu: Option<kvm_fpu>,
    /// The vCPU's last XSAVE area (the x87/SSE state travels through its
    /// legacy region: KVM_GET/SET_FPU do not carry MXCSR under kvm_pvm).
    xsave: Option<kvm_bindings::kvm_xsave>,
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
    interrupt: Arc<AtomicBool>,
}

impl KvmEngine {
    /// An engine with its own vCPU in this process's VM.
    pub fn new(mem: Arc<AddressSpace>) -> Result<Self, KvmError> {
        let vm = vm::get()?;
        let (vcpu, idx, sregs) = {
            let mut v = vm::lock(&vm);
            v.sync(&mem)?;
            v.take_vcpu()?
        };
        Ok(KvmEngine {
            mem,
            vm,
            vcpu: Some(vcpu),
            idx,
            pid: std::process::id(),
            loaded: Loaded { sregs, fpu: None, xsave: None, fs_base: 0, gs_base: 0, epoch: u64::MAX, root: 0 },
            interrupt: Arc::new(AtomicBool::new(false)),
        })
    }

    /// After a fork: a new VM and vCPU in this process.
    fn remake(&mut self) -> Result<(), KvmError> {
        // The parent's vCPU fd is useless here; closing it is harmless.
        self.vcpu = None;
        let mut fresh = KvmEngine::new(self.mem.clone())?;
        // The personality holds our interrupt flag: keep it.
        fresh.interrupt = self.interrupt.clone();
        // The old engine is dropped in a process that does not own its VM,
        // so its Drop gives nothing back.
        *self = fresh;
        Ok(())
    }

    /// Bring memory and system registers up to date, then the guest state.
    fn enter(&mut self, cpu: &CpuState, force_sync: bool) -> Result<(), KvmError> {
        let gen = self.mem.generation();
        let mut v = vm::lock(&self.vm);
        if force_sync || gen != v.generation || self.loaded.epoch == u64::MAX {
            v.sync(&self.mem)?;
        }
        let vcpu = self.vcpu.as_ref().ok_or(KvmError::Probe("no vCPU".into()))?;
        let l = &mut self.loaded;
        // The vCPU comes back from every exit at CPL0: the user segments
        // (and FS/GS base) go in again each time.
        let dirty = true;
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
        if dirty {
            vcpu.set_sregs(&l.sregs).map_err(|e| KvmError::Ioctl { what: "KVM_SET_SREGS", errno: e.errno() })?;
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
        vcpu.set_regs(&regs).map_err(|e| KvmError::Ioctl { what: "KVM_SET_REGS", errno: e.errno() })?;
        let fpu = fpu_from(cpu);
        if l.fpu.as_ref().is_none_or(|held| !same_fpu(held, &fpu)) {
            // Measured under kvm_pvm: KVM_SET_FPU/KVM_GET_FPU do not carry
            // MXCSR, so the state goes in through the XSAVE area's legacy
            // region (the FXSAVE image), with the x87 and SSE components
            // marked present in XSTATE_BV.
            let mut xs = match l.xsave.take() {
                Some(x) => x,
                None => vcpu.get_xsave().map_err(|e| KvmError::Ioctl { what: "KVM_GET_XSAVE", errno: e.errno() })?,
            };
            let img = cpu.fxsave_image();
            for (i, w) in img.chunks_exact(4).enumerate() {
                xs.region[i] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            }
            xs.region[128] |= 3;
            // SAFETY: the area came from KVM_GET_XSAVE for this vCPU; only
            // its legacy region (a valid FXSAVE image of CpuState) and the
            // x87/SSE bits of XSTATE_BV changed.
            unsafe { vcpu.set_xsave(&xs) }.map_err(|e| KvmError::Ioctl { what: "KVM_SET_XSAVE", errno: e.errno() })?;
            l.xsave = Some(xs);
            l.fpu = Some(fpu);
        }
        Ok(())
    }

    /// Read the guest state back after an exit.
    fn leave(&mut self, cpu: &mut CpuState) -> Result<(kvm_regs, kvm_fpu), KvmError> {
        let vcpu = self.vcpu.as_ref().ok_or(KvmError::Probe("no vCPU".into()))?;
        let r = vcpu.get_regs().map_err(|e| KvmError::Ioctl { what: "KVM_GET_REGS", errno: e.errno() })?;
        let xs = vcpu.get_xsave().map_err(|e| KvmError::Ioctl { what: "KVM_GET_XSAVE", errno: e.errno() })?;
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
        let mut img = [0u8; 512];
        for (i, w) in img.chunks_exact_mut(4).enumerate() {
            w.copy_from_slice(&xs.region[i].to_le_bytes());
        }
        if !cpu.fxrstor_image(&img) {
            tracing::warn!(mxcsr = xs.region[6], "vCPU MXCSR has reserved bits set; x87/SSE state not read back");
        }
        // What the vCPU holds now, as the next `enter` will compute it.
        let f = fpu_from(cpu);
        self.loaded.fpu = Some(f);
        self.loaded.xsave = Some(xs);
        Ok((r, f))
    }

    /// One KVM_RUN, as plain data.
    fn run_once(&mut self) -> Result<RawExit, KvmError> {
        let vcpu = self.vcpu.as_mut().ok_or(KvmError::Probe("no vCPU".into()))?;
        let raw = match vcpu.run() {
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
            Ok(VcpuExit::MmioRead(..)) | Ok(VcpuExit::MmioWrite(..)) => {
                RawExit::Other("access outside every memory slot")
            }
            Ok(_) => RawExit::Other("other"),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => RawExit::Interrupted,
            Err(e) => return Err(KvmError::Ioctl { what: "KVM_RUN", errno: e.errno() }),
        };
        Ok(raw)
    }

    fn run_inner(&mut self, cpu: &mut CpuState) -> Result<Exit, KvmError> {
        if self.pid != std::process::id() {
            self.remake()?;
        }
        let mut force_sync = false;
        let mut efaults = 0;
        loop {
            if self.interrupt.load(Ordering::Relaxed) && self.interrupt.swap(false, Ordering::AcqRel) {
                return Ok(Exit::Interrupted);
            }
            self.enter(cpu, force_sync)?;
            force_sync = false;
            let raw = self.run_once();
            if matches!(raw, Err(KvmError::Ioctl { what: "KVM_RUN", errno: libc::EFAULT })) && efaults < 8 {
                // The host memory behind a slot went away while this vCPU
                // ran guest code (another guest thread's munmap, which its
                // slots and tables had not seen yet): read the guest state
                // back, bring the VM up to date and run again; the guest
                // then takes its own #PF.
                let vcpu = self.vcpu.as_ref().ok_or(KvmError::Probe("no vCPU".into()))?;
                if vcpu.get_sregs().is_ok_and(|s| s.cs.selector & 3 == 3) {
                    self.leave(cpu)?;
                    efaults += 1;
                    force_sync = true;
                    continue;
                }
            }
            let mut raw = raw?;
            efaults = 0;
            let (regs, fpu) = self.leave(cpu)?;
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
            let cr2 = if is_pf {
                let vcpu = self.vcpu.as_ref().ok_or(KvmError::Probe("no vCPU".into()))?;
                vcpu.get_sregs().map(|s| s.cr2).unwrap_or(0)
            } else {
                0
            };
            let fpe = if matches!(raw, RawExit::Out { port, .. } if port == exit::PORT_EXCEPTION + 16) {
                exit::x87_fpe_code(fpu.fcw, fpu.fsw)
            } else {
                exit::simd_fpe_code(fpu.mxcsr)
            };
            match exit::decode(raw, &top, cr2, fpe, lstar) {
                Action::Syscall { rsp } => {
                    cpu.rip = regs.rcx;
                    cpu.flags.set(regs.r11);
                    if let Some(rsp) = rsp {
                        cpu.gpr[reg::RSP] = rsp;
                    }
                    return Ok(Exit::Syscall);
                }
                Action::Fault { pc, rsp, rflags, kind } => {
                    cpu.rip = pc;
                    cpu.gpr[reg::RSP] = rsp;
                    cpu.flags.set(rflags);
                    if let FaultKind::Page { .. } = kind {
                        // Perhaps a mapping the VM has not seen yet.
                        if vm::lock(&self.vm).sync(&self.mem)? {
                            continue;
                        }
                    }
                    return Ok(Exit::Fault(Fault { pc, kind }));
                }
                Action::Interrupted => {
                    self.interrupt.store(false, Ordering::Release);
                    return Ok(Exit::Interrupted);
                }
                Action::ProbeDone => return Err(KvmError::Probe("probe exit during a guest run".into())),
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
    fn run(&mut self, cpu: &mut CpuState) -> Exit {
        match self.run_inner(cpu) {
            Ok(e) => e,
            Err(e) => {
                // The VM itself failed (not the guest): nothing sensible
                // can continue.
                eprintln!("urun: --engine kvm: {e}");
                std::process::exit(125);
            }
        }
    }

    fn name(&self) -> &'static str {
        "kvm"
    }

    fn interrupt_handle(&self) -> Arc<AtomicBool> {
        self.interrupt.clone()
    }
}

impl Drop for KvmEngine {
    fn drop(&mut self) {
        if let Some(vcpu) = self.vcpu.take() {
            if self.pid == std::process::id() {
                vm::lock(&self.vm).put_vcpu(vcpu, self.idx);
            }
        }
    }
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
