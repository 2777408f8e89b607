//! The one VM of a urun process: its memory slots, page tables and system
//! pages (stubs, IDT, per-vCPU GDT/TSS/IST stack), shared by every vCPU.

use std::collections::BTreeMap;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use kvm_bindings::{kvm_dtable, kvm_msr_entry, kvm_segment, kvm_sregs, kvm_userspace_memory_region, CpuId, Msrs};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use urun_cpu::{AddressSpace, Prot};

use crate::exit::{PORT_EXCEPTION, PORT_SYSCALL};
use crate::gpa::{self, GpaSpace};
use crate::mmap::Mapping;
use crate::paging::{self, PageTables};
use crate::reclaim::{Retired, Running};
use crate::KvmError;

/// Page 0 of the system area: stub code.
const STUB_PAGE: u64 = 0;
pub const SYSCALL_STUB: u64 = 0x00;
const EXC_STUBS: u64 = 0x100;
/// Page 1: the IDT.
const IDT_PAGE: u64 = 1;
/// Page 2: the probe's user-mode code.
const PROBE_PAGE: u64 = 2;
/// Pages 3..: one per vCPU slot: GDT at 0, TSS at 0x80, IST stack below
/// the page's end.
const CPU_PAGE0: u64 = 3;
const TSS_OFF: u64 = 0x80;
/// vCPUs alive at once.
pub const MAX_VCPUS: usize = 254;

const SEL_CODE: u16 = 0x08;
const SEL_DATA: u16 = 0x10;
/// The user selectors Linux uses, so the guest sees the same CS and SS.
const SEL_USER_DATA: u16 = 0x2b;
const SEL_USER_CODE: u16 = 0x33;
/// The GDT mirrors Linux's layout where user space can see it (LAR, LSL,
/// VERR/VERW, segment loads, far transfers): 0x23 32-bit user code, 0x2b
/// user data, 0x33 64-bit user code, the TSS at 0x40 (what STR gives), the
/// per-CPU segment 0x7b (LSL gives the CPU number; here 0).
const SEL_USER32_CODE: u16 = 0x23;
const SEL_TSS: u16 = 0x40;
const GDT_ENTRIES: usize = 16;

/// The page-table pool: reserved whole (host and guest-physical), covered
/// by memory slots a chunk at a time, the first chunk in the system
/// area's slot (one slot, not two, at start-up: each slot change waits
/// for an SRCU grace period, and a 1 GiB slot made KVM allocate 2 MiB of
/// reverse maps up front, ~0.3 ms).
const PT_POOL_SIZE: usize = 1 << 30;
/// The pool's first chunk: 1,024 tables, enough for 2 GiB of dense guest
/// memory, or about a thousand separate 2 MiB areas.
const PT_FIRST_CHUNK: usize = 4 << 20;

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_FMASK: u32 = 0xc000_0084;

/// A guest range as the page tables and slots last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    start: u64,
    end: u64,
    prot: u32,
}

/// A memory slot of guest memory.
#[derive(Clone, Copy, Debug)]
struct Slot {
    number: u32,
    /// Its guest-physical address.
    gpa: u64,
}

/// A slot the page tables no longer reach, kept (with its guest-physical
/// range) until no vCPU can still be using a translation into it
/// (`reclaim.rs`).
#[derive(Clone, Copy, Debug)]
struct StaleSlot {
    number: u32,
    gpa: u64,
    size: u64,
}

/// How long a resynchronisation that ran short of slots or guest-physical
/// space waits for vCPUs still running on older tables to exit, before it
/// deletes their stale slots anyway (KVM's slot deletion then drops their
/// cached translations itself).
const RECLAIM_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Stale slots kept at most: a vCPU spinning in guest code never exits to
/// publish a newer epoch, and KVM slots are not free (more of them makes
/// every slot change slower). Beyond this, the oldest go anyway, as in
/// `reclaim_waiting`.
const RETIRED_MAX: usize = 32;

/// Stale slots left alone until there are more, or larger, than this:
/// deleting a slot waits for two SRCU grace periods (tens of µs each under
/// `kvm_pvm`, milliseconds on a loaded host), and a stale slot costs only
/// its guest-physical range and KVM's reverse maps for it. Once the page
/// tables of a newer epoch no longer reach it and every vCPU entered with
/// them, nothing translates into it (see `reclaim.rs`); a sync short of
/// slots or space deletes them at once (`reclaim_waiting`).
const STALE_KEEP: usize = 8;
const STALE_KEEP_BYTES: u64 = 256 << 20;

pub struct Vm {
    _kvm: Kvm,
    pub fd: VmFd,
    cpuid: CpuId,
    sys: Mapping,
    /// The system area's guest-physical address (the pool's follows it).
    sys_gpa: u64,
    pt: PageTables,
    /// Guest-physical space: who has what below the usable width.
    gpa: GpaSpace,
    mem: Option<Arc<AddressSpace>>,
    /// The guest ranges the tables and slots describe.
    spans: Vec<Span>,
    /// Guest memory slots by host (== guest-virtual) range (start, end).
    slots: BTreeMap<(u64, u64), Slot>,
    free_slots: Vec<u32>,
    next_slot: u32,
    max_slots: u32,
    /// Bumped by every page-table change; a vCPU that loaded an older
    /// epoch switches CR3 to drop what it cached.
    pub epoch: u64,
    /// The epoch each vCPU inside KVM_RUN entered with.
    pub running: Arc<Running>,
    /// Stale slots waiting for every running vCPU to pass their epoch.
    retired: Retired<StaleSlot>,
    /// Generation of the AddressSpace at the last sync.
    pub generation: u64,
    /// `AddressSpace::changes` at the last sync.
    pub changes: u64,
    /// vCPUs made and free for reuse, with their system-page index.
    idle_vcpus: Vec<(VcpuFd, usize)>,
    next_vcpu: usize,
    /// vCPUs this VM may make (`MAX_VCPUS`, KVM's limit, or lower by
    /// `URUN_KVM_MAX_VCPUS` for tests).
    max_vcpus: usize,
    /// KVM_CAP_SYNC_REGS covers the general and system registers.
    pub sync_regs: bool,
}

/// The VM of each process that has used this memory: one per process, made
/// on first use. Keyed by pid rather than kept as a single value because a
/// vfork child shares this memory with its parent: it must get a VM of its
/// own without replacing its parent's (KVM refuses a VM's ioctls from
/// another process, and the child's file descriptors are not the
/// parent's). Entries are never dropped: a Vm's descriptors mean something
/// only in the process that opened them, so no other process may close
/// them (a vfork child's VM memory stays mapped in the parent: a leak per
/// spawn, documented in the README).
static VMS: Mutex<Vec<(u32, Arc<Mutex<Vm>>)>> = Mutex::new(Vec::new());

pub fn lock(vm: &Mutex<Vm>) -> MutexGuard<'_, Vm> {
    vm.lock().unwrap_or_else(|e| e.into_inner())
}

/// The VM of this process, made on first use.
pub fn get() -> Result<Arc<Mutex<Vm>>, KvmError> {
    let mut g = VMS.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some((_, vm)) = g.iter().find(|(p, _)| *p == pid) {
        return Ok(vm.clone());
    }
    let vm = Arc::new(Mutex::new(Vm::new()?));
    g.push((pid, vm.clone()));
    Ok(vm)
}

/// CR4.OSXSAVE (bit 18): always on, so that KVM loads the model's XCR0
/// when it enters the guest. Under kvm_pvm the guest runs with the host's
/// own CR4 and, without this, the host's XCR0: AVX code would run under a
/// model without AVX. With XCR0 = x87|SSE it is #UD, as the model says.
fn osxsave_cr4() -> u64 {
    1 << 18
}

/// Make KVM's supported CPUID report the process's CPU model (`-cpu`):
/// every feature bit urun's model table knows is the model's; leaf 7
/// keeps only the model's EBX and UMIP (CR4.UMIP needs it; user code
/// cannot use it), leaf 0xD describes the model's XCR0. XSAVE is always
/// reported (see `osxsave_cr4`): the one difference from the interpreter's
/// CPUID, for the models without it. Bits urun's table
/// does not know (APIC, PAE, MSR, the hypervisor bit ...) stay KVM's:
/// KVM checks CR4 and MSR writes against them.
pub(crate) fn apply_model(entries: &mut [kvm_bindings::kvm_cpuid_entry2], m: &urun_cpu::cpuid::Model) {
    use urun_cpu::cpuid::{model_cpuid, Word, FEATURES};
    let known = |w: Word| FEATURES.iter().filter(|f| f.word == w).fold(0u32, |a, f| a | f.bit);
    let osxsave = urun_cpu::cpuid::avx1::OSXSAVE;
    for e in entries.iter_mut() {
        let want = model_cpuid(m, e.function, e.index);
        match (e.function, e.index) {
            (1, _) => {
                let k = known(Word::L1Ecx) | osxsave;
                e.ecx = (e.ecx & !k) | (want[2] & k) | urun_cpu::cpuid::avx1::XSAVE;
                let k = known(Word::L1Edx);
                e.edx = (e.edx & !k) | (want[3] & k);
            }
            (7, 0) => {
                e.ebx = want[1];
                e.ecx &= 1 << 2;
                e.edx = 0;
            }
            (7, _) => (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0),
            // A model without XSAVE still gets XSAVE with XCR0 = x87|SSE
            // (see `osxsave_cr4`).
            (0xd, 0) if !m.has("xsave") => [e.eax, e.ebx, e.ecx, e.edx] = [3, 576, 576, 0],
            (0xd, _) => [e.eax, e.ebx, e.ecx, e.edx] = want,
            (0x8000_0001, _) => {
                let k = known(Word::ExtEcx);
                e.ecx = (e.ecx & !k) | (want[2] & k);
                let k = known(Word::ExtEdx);
                e.edx = (e.edx & !k) | (want[3] & k);
            }
            _ => {}
        }
    }
}

fn ioctl_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> KvmError {
    move |e| KvmError::Ioctl { what, errno: e.errno() }
}

impl Vm {
    fn new() -> Result<Vm, KvmError> {
        let kvm = Kvm::new().map_err(|e| KvmError::Open(std::io::Error::from_raw_os_error(e.errno())))?;
        let fd = kvm.create_vm().map_err(ioctl_err("KVM_CREATE_VM"))?;
        urun_cpu::hostfd::reserve(kvm.as_raw_fd());
        urun_cpu::hostfd::reserve(fd.as_raw_fd());
        let mut cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl_err("KVM_GET_SUPPORTED_CPUID"))?;
        apply_model(cpuid.as_mut_slice(), urun_cpu::cpuid::model());
        // Intel's KVM wants three pages for a real-mode TSS before a vCPU
        // may ever leave long mode (ours never does); where the ioctl means
        // nothing it fails or does nothing. The pages are in the 32-bit
        // hole `gpa.rs` never hands out.
        if let Err(e) = fd.set_tss_address(0xfffb_d000) {
            tracing::debug!(errno = e.errno(), "KVM_SET_TSS_ADDR refused (harmless)");
        }
        let max_slots = kvm.get_nr_memslots() as u32;
        let max_vcpus = vcpu_limit(kvm.get_max_vcpus());
        let want = kvm_bindings::KVM_SYNC_X86_REGS | kvm_bindings::KVM_SYNC_X86_SREGS;
        let sync_regs = kvm.check_extension_int(kvm_ioctls::Cap::SyncRegs) as u32 & want == want;
        tracing::debug!(max_slots, max_vcpus, sync_regs, "KVM");
        let vcpu_bits =
            cpuid.as_slice().iter().find(|e| e.function == 0x8000_0008).and_then(|e| gpa::cpuid_leaf_bits(e.eax));
        let mut space = GpaSpace::new(gpa::usable_bits(vcpu_bits));
        tracing::debug!(bits = space.bits(), ?vcpu_bits, "guest-physical width");
        // The system area, then the page-table pool: one host mapping and
        // one guest-physical range.
        let sys_len = ((CPU_PAGE0 as usize) + MAX_VCPUS) * 4096;
        let mut sys = Mapping::new(sys_len + PT_POOL_SIZE).map_err(KvmError::Memory)?;
        let pool = sys.split_off(sys_len);
        let sys_gpa = space.alloc((sys_len + PT_POOL_SIZE) as u64, sys.addr()).map_err(KvmError::Gpa)?;
        let pt = PageTables::new(pool, PT_FIRST_CHUNK, sys_gpa + sys_len as u64).map_err(KvmError::Paging)?;
        let mut vm = Vm {
            _kvm: kvm,
            fd,
            cpuid,
            sys,
            sys_gpa,
            pt,
            gpa: space,
            mem: None,
            spans: Vec::new(),
            slots: BTreeMap::new(),
            free_slots: Vec::new(),
            next_slot: 1,
            max_slots,
            epoch: 0,
            running: Arc::new(Running::new(MAX_VCPUS)),
            retired: Retired::default(),
            generation: 0,
            changes: u64::MAX,
            idle_vcpus: Vec::new(),
            next_vcpu: 0,
            max_vcpus,
            sync_regs,
        };
        vm.build_system()?;
        Ok(vm)
    }

    /// Make slot `slot` map guest-physical `gpa` to the host memory at
    /// `host` (size 0 deletes it).
    fn set_slot(&self, slot: u32, gpa: u64, host: u64, size: u64) -> Result<(), KvmError> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host,
        };
        // SAFETY: `host..host+size` is host memory that stays mapped
        // while the slot exists: urun's own private mappings (owned by
        // this Vm) or guest ranges of the AddressSpace, whose slots are
        // removed at the next sync after they are unmapped; KVM's MMU
        // notifier keeps the guest view coherent in between, and a slot
        // that is deleted (size 0) refers to nothing.
        unsafe { self.fd.set_user_memory_region(region) }.map_err(|e| KvmError::Slot {
            start: host,
            gpa,
            size,
            errno: e.errno(),
        })
    }

    /// Stubs, IDT, page tables for the system area, and the two private
    /// slots.
    fn build_system(&mut self) -> Result<(), KvmError> {
        let mut stubs = vec![0xf4u8; 4096]; // hlt everywhere else
                                            // SYSCALL entry: out PORT_SYSCALL, al; hlt.
        let put =
            |s: &mut Vec<u8>, at: u64, code: &[u8]| s[at as usize..at as usize + code.len()].copy_from_slice(code);
        put(&mut stubs, SYSCALL_STUB, &[0xe6, PORT_SYSCALL as u8, 0xf4]);
        let mut idt = vec![0u8; 4096];
        for v in 0..32u64 {
            let at = EXC_STUBS + 16 * v;
            put(&mut stubs, at, &[0xe6, (PORT_EXCEPTION as u64 + v) as u8, 0xf4]);
            let target = self.sys.addr() + STUB_PAGE * 4096 + at;
            let mut gate = [0u8; 16];
            gate[0..2].copy_from_slice(&(target as u16).to_le_bytes());
            gate[2..4].copy_from_slice(&SEL_CODE.to_le_bytes());
            gate[4] = 1; // IST1
            gate[5] = 0x8e; // present, DPL0, 64-bit interrupt gate
            gate[6..8].copy_from_slice(&((target >> 16) as u16).to_le_bytes());
            gate[8..12].copy_from_slice(&((target >> 32) as u32).to_le_bytes());
            idt[16 * v as usize..16 * v as usize + 16].copy_from_slice(&gate);
        }
        self.sys.write((STUB_PAGE * 4096) as usize, &stubs);
        self.sys.write((IDT_PAGE * 4096) as usize, &idt);
        // Probe, at CPL3: mov eax, 42; pxor xmm0, xmm0; syscall; ud2.
        self.sys
            .write((PROBE_PAGE * 4096) as usize, &[0xb8, 42, 0, 0, 0, 0x66, 0x0f, 0xef, 0xc0, 0x0f, 0x05, 0x0f, 0x0b]);

        // Mapped at its own (lower-half) host address, which is urun's
        // memory and so never a guest address; supervisor-only.
        let (base, phys) = (self.sys.addr(), self.sys_gpa);
        let map = |pt: &mut PageTables, page: u64, flags: u64| pt.map(base + page * 4096, phys + page * 4096, flags);
        map(&mut self.pt, STUB_PAGE, 0).map_err(KvmError::Paging)?;
        map(&mut self.pt, IDT_PAGE, paging::NX).map_err(KvmError::Paging)?;
        map(&mut self.pt, PROBE_PAGE, paging::US).map_err(KvmError::Paging)?;
        for i in 0..MAX_VCPUS as u64 {
            map(&mut self.pt, CPU_PAGE0 + i, paging::RW | paging::NX).map_err(KvmError::Paging)?;
        }
        // One slot: the system area and the pool's first chunk after it.
        let (_, usable) = self.pt.usage();
        self.set_slot(0, phys, base, (self.sys.len() + usable) as u64)?;
        Ok(())
    }

    /// Make sure the pool has room for `tables` more tables, covering
    /// more of it with a slot if not (before the tables are handed out: a
    /// vCPU may walk a table as soon as it is linked in). Chunks double.
    fn reserve_tables(&mut self, tables: usize) -> Result<(), KvmError> {
        let (used, usable) = self.pt.usage();
        let need = used + tables * 4096;
        if need <= usable {
            return Ok(());
        }
        let (pool, pool_gpa, len) = self.pt.pool();
        if need > len {
            return Err(KvmError::Paging(paging::PagingError::PoolFull(len)));
        }
        let grow = (need - usable).next_multiple_of(2 << 20).max(usable).min(len - usable);
        let number = match self.slot_number() {
            Some(n) => n,
            None => {
                self.reclaim_waiting()?;
                self.slot_number().ok_or(KvmError::TooManySlots(self.max_slots))?
            }
        };
        if let Err(e) = self.set_slot(number, pool_gpa + usable as u64, pool + usable as u64, grow as u64) {
            self.free_slots.push(number);
            return Err(e);
        }
        tracing::debug!(usable = usable + grow, slot = number, "page-table pool grown");
        self.pt.set_usable(usable + grow);
        Ok(())
    }

    /// Fill vCPU slot `idx`'s GDT and TSS.
    fn build_cpu_page(&self, idx: usize) {
        let off = ((CPU_PAGE0 as usize) + idx) * 4096;
        let tss_va = self.sys.addr() + (CPU_PAGE0 + idx as u64) * 4096 + TSS_OFF;
        let ist_top = self.sys.addr() + (CPU_PAGE0 + idx as u64 + 1) * 4096;
        let mut gdt = [0u64; GDT_ENTRIES];
        gdt[1] = 0x00af_9b00_0000_ffff; // 0x08: 64-bit code, DPL0
        gdt[2] = 0x00cf_9300_0000_ffff; // 0x10: data, DPL0
        gdt[3] = 0x00cf_9300_0000_ffff; // 0x18: data, DPL0
        gdt[4] = 0x00cf_fb00_0000_ffff; // 0x20 (0x23): 32-bit code, DPL3
        gdt[5] = 0x00cf_f300_0000_ffff; // 0x28 (0x2b): data, DPL3
        gdt[6] = 0x00af_fb00_0000_ffff; // 0x30 (0x33): 64-bit code, DPL3
        let limit = 0x67u64;
        gdt[8] = limit | ((tss_va & 0xff_ffff) << 16) | (0x8b << 40) | (((tss_va >> 24) & 0xff) << 56);
        gdt[9] = tss_va >> 32;
        gdt[15] = 0x0040_f500_0000_0000; // 0x78 (0x7b): per-CPU data, DPL3, limit 0
        let bytes: Vec<u8> = gdt.iter().flat_map(|q| q.to_le_bytes()).collect();
        self.sys.write(off, &bytes);
        let mut tss = [0u8; 104];
        // IST1 at offset 0x24; I/O map base past the limit (no I/O bitmap).
        tss[4..12].copy_from_slice(&ist_top.to_le_bytes()); // RSP0
        tss[0x24..0x2c].copy_from_slice(&ist_top.to_le_bytes());
        tss[0x66..0x68].copy_from_slice(&104u16.to_le_bytes());
        self.sys.write(off + TSS_OFF as usize, &tss);
    }

    /// The six words at the top of vCPU slot `idx`'s IST stack.
    pub fn ist_top(&self, idx: usize) -> [u64; 6] {
        let end = ((CPU_PAGE0 as usize) + idx + 1) * 4096;
        std::array::from_fn(|i| self.sys.read_u64(end - 48 + 8 * i))
    }

    /// Is `rip` inside urun's stub page?
    pub fn in_stubs(&self, rip: u64) -> bool {
        let base = self.sys.addr() + STUB_PAGE * 4096;
        (base..base + 4096).contains(&rip)
    }

    /// The address of the SYSCALL entry (LSTAR).
    pub fn lstar(&self) -> u64 {
        self.sys.addr() + STUB_PAGE * 4096 + SYSCALL_STUB
    }

    /// The address of the probe code.
    pub fn probe_code(&self) -> u64 {
        self.sys.addr() + PROBE_PAGE * 4096
    }

    /// A vCPU ready to run guest code (long mode, SYSCALL to the stub),
    /// with its system-page index and the system registers to enter it
    /// with (the caller loads them).
    pub fn take_vcpu(&mut self) -> Result<(VcpuFd, usize, kvm_sregs), KvmError> {
        let (vcpu, idx) = match self.idle_vcpus.pop() {
            Some(v) => v,
            None => {
                if self.next_vcpu >= self.max_vcpus {
                    return Err(KvmError::TooManyVcpus(self.max_vcpus));
                }
                let idx = self.next_vcpu;
                let vcpu = self.fd.create_vcpu(idx as u64).map_err(ioctl_err("KVM_CREATE_VCPU"))?;
                urun_cpu::hostfd::reserve(vcpu.as_raw_fd());
                self.next_vcpu += 1;
                vcpu.set_cpuid2(&self.cpuid).map_err(ioctl_err("KVM_SET_CPUID2"))?;
                // XCR0 is the model's (x87, SSE, and AVX with AVX).
                self.set_sregs_for_xcr0(&vcpu, idx)?;
                let entries = [
                    kvm_msr_entry {
                        index: MSR_STAR,
                        data: ((SEL_CODE as u64) << 32) | ((SEL_USER32_CODE as u64) << 48),
                        ..Default::default()
                    },
                    kvm_msr_entry { index: MSR_LSTAR, data: self.lstar(), ..Default::default() },
                    kvm_msr_entry { index: MSR_CSTAR, data: self.lstar(), ..Default::default() },
                    // TF, DF, IF, IOPL, NT, AC cleared on entry, as Linux does.
                    kvm_msr_entry { index: MSR_FMASK, data: 0x47700, ..Default::default() },
                ];
                let msrs =
                    Msrs::from_entries(&entries).map_err(|_| KvmError::Ioctl { what: "Msrs", errno: libc::EINVAL })?;
                let n = vcpu.set_msrs(&msrs).map_err(ioctl_err("KVM_SET_MSRS"))?;
                if n != entries.len() {
                    return Err(KvmError::Ioctl { what: "KVM_SET_MSRS (not all taken)", errno: libc::EINVAL });
                }
                self.build_cpu_page(idx);
                (vcpu, idx)
            }
        };
        // Not loaded here: every entry loads them (`KvmEngine::enter`).
        let sregs = self.user_sregs(idx);
        Ok((vcpu, idx, sregs))
    }

    /// Set the model's XCR0 on a new vCPU: CR4.OSXSAVE first (KVM takes
    /// XCR0 only then), with the user segments `take_vcpu` sets anyway.
    fn set_sregs_for_xcr0(&self, vcpu: &VcpuFd, idx: usize) -> Result<(), KvmError> {
        vcpu.set_sregs(&self.user_sregs(idx)).map_err(ioctl_err("KVM_SET_SREGS"))?;
        let mut xcrs = kvm_bindings::kvm_xcrs { nr_xcrs: 1, ..Default::default() };
        xcrs.xcrs[0] = kvm_bindings::kvm_xcr { xcr: 0, value: urun_cpu::cpuid::model().xcr0(), ..Default::default() };
        vcpu.set_xcrs(&xcrs).map_err(ioctl_err("KVM_SET_XCRS"))
    }

    /// Give a vCPU back for the next guest thread.
    pub fn put_vcpu(&mut self, vcpu: VcpuFd, idx: usize) {
        self.idle_vcpus.push((vcpu, idx));
    }

    fn initial_sregs(&self, idx: usize) -> kvm_sregs {
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: SEL_CODE,
            type_: 11,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        let data = kvm_segment { selector: SEL_DATA, type_: 3, l: 0, db: 1, ..code };
        let cpu_va = self.sys.addr() + (CPU_PAGE0 + idx as u64) * 4096;
        let tr = kvm_segment {
            base: cpu_va + TSS_OFF,
            limit: 0x67,
            selector: SEL_TSS,
            type_: 11,
            present: 1,
            dpl: 0,
            db: 0,
            s: 0,
            l: 0,
            g: 0,
            ..Default::default()
        };
        kvm_sregs {
            cs: code,
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            tr,
            ldt: kvm_segment { type_: 2, present: 1, unusable: 1, ..Default::default() },
            gdt: kvm_dtable { base: cpu_va, limit: (GDT_ENTRIES * 8 - 1) as u16, ..Default::default() },
            idt: kvm_dtable { base: self.sys.addr() + IDT_PAGE * 4096, limit: 32 * 16 - 1, ..Default::default() },
            // PG, AM, WP, NE, ET, MP, PE.
            cr0: 0x8005_0033,
            cr3: self.pt.root(0),
            // OSXMMEXCPT, OSFXSR, PAE; UMIP as Linux sets it on this host;
            // OSXSAVE when the CPU model has XSAVE.
            cr4: 0x600 | 0x20 | self.umip_cr4() | osxsave_cr4(),
            // NXE, LMA, LME, SCE.
            efer: 0x800 | 0x400 | 0x100 | 0x1,
            ..Default::default()
        }
    }

    /// CR4.UMIP when the host CPU has UMIP (Linux then turns it on, and the
    /// personality emulates SGDT/SIDT/SLDT/STR/SMSW on their #GP, as the
    /// kernel does) and KVM offers it to the vCPU; else 0.
    fn umip_cr4(&self) -> u64 {
        const UMIP: u32 = 1 << 2;
        let host = urun_cpu::cpuid::host_cpuid(7, 0)[2] & UMIP != 0;
        let vcpu = self.cpuid.as_slice().iter().any(|e| e.function == 7 && e.index == 0 && e.ecx & UMIP != 0);
        if host && vcpu {
            1 << 11
        } else {
            0
        }
    }

    /// The system registers the guest runs with: as `initial_sregs`, but
    /// CS and SS are the user (CPL3) selectors Linux gives a process.
    pub fn user_sregs(&self, idx: usize) -> kvm_sregs {
        let mut s = self.initial_sregs(idx);
        s.cs = kvm_segment { selector: SEL_USER_CODE, dpl: 3, ..s.cs };
        s.ss = kvm_segment { selector: SEL_USER_DATA, dpl: 3, ..s.ss };
        s.ds = kvm_segment { selector: 0, ..s.ds };
        s.es = s.ds;
        s.fs = s.ds;
        s.gs = s.ds;
        s
    }

    /// The CR3 value for root `which`.
    pub fn root(&self, which: usize) -> u64 {
        self.pt.root(which)
    }

    /// A free slot number, if any is left.
    fn slot_number(&mut self) -> Option<u32> {
        if let Some(s) = self.free_slots.pop() {
            return Some(s);
        }
        (self.next_slot < self.max_slots).then(|| {
            self.next_slot += 1;
            self.next_slot - 1
        })
    }

    /// Are stale slots waiting?
    pub fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }

    /// Delete the stale slots that no vCPU inside KVM_RUN can still reach,
    /// and free their guest-physical ranges, once more of them wait than
    /// `STALE_KEEP` allows.
    pub fn reclaim(&mut self) -> Result<(), KvmError> {
        if self.retired.is_empty() {
            return Ok(());
        }
        if self.retired.len() <= STALE_KEEP && self.retired.iter().map(|s| s.size).sum::<u64>() <= STALE_KEEP_BYTES {
            return Ok(());
        }
        self.reclaim_now()
    }

    /// Delete every stale slot that may go now (and, beyond `RETIRED_MAX`,
    /// the oldest anyway).
    fn reclaim_now(&mut self) -> Result<(), KvmError> {
        let oldest = self.running.oldest(self.next_vcpu);
        let mut ready = self.retired.take_releasable(oldest);
        let excess = self.retired.take_excess(RETIRED_MAX);
        if !excess.is_empty() {
            tracing::debug!(
                n = excess.len(),
                oldest,
                epoch = self.epoch,
                "stale slots deleted under a vCPU on older tables"
            );
            ready.extend(excess);
        }
        self.release(ready)
    }

    fn release(&mut self, slots: Vec<StaleSlot>) -> Result<(), KvmError> {
        for s in slots {
            // Deleting a slot (size 0) needs only its number.
            self.set_slot(s.number, s.gpa, 0, 0)?;
            self.gpa.free(s.gpa, s.size);
            self.free_slots.push(s.number);
        }
        Ok(())
    }

    /// Slots or guest-physical space ran short: wait (a bounded time) for
    /// the vCPUs still running on older tables to exit (any syscall,
    /// fault or signal does), then delete every stale slot. A vCPU that
    /// stays in guest code longer keeps no stale translation past the
    /// deletion: KVM drops them when a slot goes. Waiting needs no lock on
    /// their side: a vCPU publishes its exit before taking the VM lock.
    fn reclaim_waiting(&mut self) -> Result<(), KvmError> {
        let deadline = std::time::Instant::now() + RECLAIM_WAIT;
        loop {
            self.reclaim_now()?;
            if self.retired.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                tracing::debug!(stale = self.retired.len(), "vCPUs still on older tables: stale slots deleted anyway");
                let all = self.retired.take_all();
                return self.release(all);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Make slots and page tables describe `mem` as it is now. Returns
    /// whether anything changed.
    pub fn sync(&mut self, mem: &Arc<AddressSpace>) -> Result<bool, KvmError> {
        if self.mem.as_ref().is_none_or(|m| !Arc::ptr_eq(m, mem)) {
            self.mem = Some(mem.clone());
        }
        self.generation = mem.generation();
        self.changes = mem.changes();
        let now: Vec<Span> = mem
            .regions()
            .into_iter()
            .filter(|r| r.prot != Prot::NONE)
            .map(|r| Span { start: r.start, end: r.end, prot: r.prot.0 })
            .collect();
        if now == self.spans {
            return Ok(false);
        }
        // Slots: each run of adjacent accessible ranges is covered by
        // slots, disjoint in host addresses (`plan_slots`): those of the
        // last sync that still lie wholly inside accessible memory stay,
        // new ones cover the rest, so a mapping added next to guest memory
        // costs one new slot and nothing else (each slot change waits for
        // an SRCU grace period). New slots go in first, at fresh
        // guest-physical addresses (a host range may be in two slots for
        // a moment), then the page tables move to them, then the stale
        // slots go: a vCPU running meanwhile never meets a guest-physical
        // address without memory behind it.
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for s in &now {
            match runs.last_mut() {
                Some(last) if last.1 == s.start => last.1 = s.end,
                _ => runs.push((s.start, s.end)),
            }
        }
        let have: Vec<(u64, u64)> = self.slots.keys().copied().collect();
        let want = plan_slots(&runs, &have);
        let mut fresh: Vec<(u64, u64)> = Vec::new();
        for &k in &want {
            if self.slots.contains_key(&k) {
                continue;
            }
            let number = match self.slot_number() {
                Some(s) => s,
                None => {
                    self.reclaim_waiting()?;
                    self.slot_number().ok_or(KvmError::TooManySlots(self.max_slots))?
                }
            };
            let size = k.1 - k.0;
            let gpa = match self.gpa.alloc(size, k.0) {
                Ok(g) => g,
                Err(_) if !self.retired.is_empty() => {
                    if let Err(e) = self.reclaim_waiting() {
                        self.free_slots.push(number);
                        return Err(e);
                    }
                    match self.gpa.alloc(size, k.0) {
                        Ok(g) => g,
                        Err(e) => {
                            self.free_slots.push(number);
                            return Err(KvmError::Gpa(e));
                        }
                    }
                }
                Err(e) => {
                    self.free_slots.push(number);
                    return Err(KvmError::Gpa(e));
                }
            };
            if let Err(e) = self.set_slot(number, gpa, k.0, size) {
                self.gpa.free(gpa, size);
                self.free_slots.push(number);
                return Err(e);
            }
            self.slots.insert(k, Slot { number, gpa });
            fresh.push(k);
        }
        // Page tables: remove what went away or changed, then map what
        // came and every part of a span in a fresh slot, each piece to
        // its own slot (stale slots for the same addresses are still
        // there).
        let (old, new) = (&self.spans, &now);
        for s in old.iter().filter(|s| new.binary_search(s).is_err()) {
            self.pt.unmap(s.start, s.end);
        }
        let mut to_map = Vec::new();
        for s in new {
            let unchanged = old.binary_search(s).is_ok();
            let first = want.partition_point(|k| k.1 <= s.start);
            for k in want[first..].iter().take_while(|k| k.0 < s.end) {
                if unchanged && fresh.binary_search(k).is_err() {
                    continue;
                }
                let Some(slot) = self.slots.get(k) else { continue };
                let (a, b) = (s.start.max(k.0), s.end.min(k.1));
                to_map.push((Span { start: a, end: b, prot: s.prot }, slot.gpa + (a - k.0)));
            }
        }
        for (s, gpa) in to_map {
            self.reserve_tables(paging::tables_for(s.start, s.end))?;
            let p = Prot(s.prot);
            let mut flags = paging::US;
            if p.contains(Prot::WRITE) {
                flags |= paging::RW;
            }
            if !p.contains(Prot::EXEC) {
                flags |= paging::NX;
            }
            self.pt.map_range(s.start, s.end, gpa, flags).map_err(KvmError::Paging)?;
        }
        // Stale slots: unreachable from the tables of the new epoch, but a
        // vCPU inside KVM_RUN may still hold a translation into them; they
        // go (and their guest-physical ranges are handed out again) once
        // every such vCPU has left KVM_RUN or entered with newer tables.
        self.spans = now;
        self.epoch += 1;
        let stale: Vec<(u64, u64)> = self.slots.keys().filter(|k| want.binary_search(k).is_err()).copied().collect();
        for k in stale {
            if let Some(slot) = self.slots.remove(&k) {
                self.retired.push(self.epoch, StaleSlot { number: slot.number, gpa: slot.gpa, size: k.1 - k.0 });
            }
        }
        self.reclaim()?;
        #[cfg(debug_assertions)]
        self.check();
        Ok(true)
    }
}

#[cfg(debug_assertions)]
impl Vm {
    /// Debug builds check after each sync: every span translates into its
    /// run's slot; slots do not overlap in guest-physical space.
    fn check(&mut self) {
        let mut ranges: Vec<(u64, u64)> = self.slots.iter().map(|(k, s)| (s.gpa, s.gpa + k.1 - k.0)).collect();
        let (_, pg, pl) = self.pt.pool();
        assert_eq!(pg, self.sys_gpa + self.sys.len() as u64, "the pool follows the system area");
        ranges.push((self.sys_gpa, pg + pl as u64));
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "guest-physical overlap {w:x?}");
        }
        let keys: Vec<(u64, u64)> = self.slots.keys().copied().collect();
        for w in keys.windows(2) {
            assert!(w[0].1 <= w[1].0, "slots overlap in host addresses {w:x?}");
        }
        for s in self.spans.clone() {
            // The first and last page of each span (a walk of every page
            // would make debug builds crawl with large mappings).
            for va in [s.start, s.end - 4096] {
                let (&(start, end), slot) = self.slots.range(..=(va, u64::MAX)).next_back().expect("no slot");
                assert!(va >= start && va < end, "span {s:x?}: no slot at {va:#x}");
                let pa = self.pt.translate(va).map(|t| t.0);
                assert_eq!(pa, Some(slot.gpa + (va - start)), "span {s:x?} at {va:#x}");
            }
        }
    }
}

/// How many vCPUs a VM may make: urun's system area has room for
/// `MAX_VCPUS`, KVM allows `kvm_max`; `URUN_KVM_MAX_VCPUS` may lower it
/// (tests use it to reach the limit with a few threads).
fn vcpu_limit(kvm_max: usize) -> usize {
    let mut n = MAX_VCPUS.min(kvm_max.max(1));
    if let Some(v) = std::env::var_os("URUN_KVM_MAX_VCPUS").filter(|v| !v.is_empty()) {
        match v.to_str().and_then(|s| s.parse::<usize>().ok()) {
            Some(m) if (1..=n).contains(&m) => n = m,
            _ => {
                tracing::warn!(value = ?v, n, "URUN_KVM_MAX_VCPUS ignored: it may only lower the limit, to 1 at least")
            }
        }
    }
    n
}

/// Slots a run of accessible memory may be covered by before they are
/// merged into one for the whole run (as when the run was first seen).
const SLOTS_PER_RUN: usize = 8;

/// The slots (host ranges, sorted and disjoint) that cover `runs` (sorted,
/// disjoint, not adjacent): every slot of `have` that lies wholly inside
/// a run stays, each stretch of a run that none covers gets a slot of its
/// own; a run that would need more than `SLOTS_PER_RUN` gets one slot for
/// the whole of it. A pure function (unit tests below).
fn plan_slots(runs: &[(u64, u64)], have: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut want = Vec::new();
    for &(start, end) in runs {
        let first = have.partition_point(|k| k.0 < start);
        let kept: Vec<(u64, u64)> = have[first..].iter().take_while(|k| k.1 <= end).copied().collect();
        let mut cover = Vec::new();
        let mut at = start;
        for k in kept {
            if k.0 > at {
                cover.push((at, k.0));
            }
            cover.push(k);
            at = k.1;
        }
        if at < end {
            cover.push((at, end));
        }
        if cover.len() > SLOTS_PER_RUN {
            cover = vec![(start, end)];
        }
        want.extend(cover);
    }
    want
}

#[cfg(test)]
mod pvm_experiment {
    use super::*;
    use kvm_bindings::kvm_regs;

    /// Can guest code run natively at CPL3, with SYSCALL going to a CPL0
    /// stub (lower half) that exits with `out`, and resume at CPL3 by
    /// KVM_SET_SREGS? (Run with `--ignored --nocapture`.)
    #[test]
    #[ignore]
    fn user_mode_round_trip() {
        let Ok(vm) = get() else { return };
        let mut v = lock(&vm);
        // Page 0: stubs; 1: user code; 2: IDT; 3: GDT+TSS; 4: IST stack; 5: user stack.
        let area = Mapping::new(6 * 4096).unwrap();
        let a = area.addr();
        let mut stubs = vec![0xf4u8; 4096];
        stubs[0..3].copy_from_slice(&[0xe6, 0x10, 0xf4]);
        let mut idt = vec![0u8; 4096];
        for vec in 0..32u64 {
            let at = 0x100 + 16 * vec;
            stubs[at as usize..at as usize + 3].copy_from_slice(&[0xe6, (0x80 + vec) as u8, 0xf4]);
            let target = a + at;
            let mut gate = [0u8; 16];
            gate[0..2].copy_from_slice(&(target as u16).to_le_bytes());
            gate[2..4].copy_from_slice(&SEL_CODE.to_le_bytes());
            gate[4] = 1;
            gate[5] = 0x8e;
            gate[6..8].copy_from_slice(&((target >> 16) as u16).to_le_bytes());
            gate[8..12].copy_from_slice(&((target >> 32) as u32).to_le_bytes());
            idt[16 * vec as usize..16 * vec as usize + 16].copy_from_slice(&gate);
        }
        area.write(0, &stubs);
        area.write(2 * 4096, &idt);
        // user: pxor xmm0,xmm0; mov eax,39; syscall; mov eax,40; syscall; ud2
        let user = [0x66, 0x0f, 0xef, 0xc0, 0xb8, 39, 0, 0, 0, 0x0f, 0x05, 0xb8, 40, 0, 0, 0, 0x0f, 0x05, 0x0f, 0x0b];
        area.write(4096, &user);
        // GDT: null, kernel code 0x08, kernel data 0x10, user32 0x18, user data 0x20 (0x2b... use 0x28?), TSS.
        let tss_va = a + 3 * 4096 + 0x80;
        let mut gdt = [0u64; 9];
        gdt[1] = 0x00af_9b00_0000_ffff;
        gdt[2] = 0x00cf_9300_0000_ffff;
        gdt[3] = 0x00cf_fb00_0000_ffff; // 0x18 user32 code
        gdt[5] = 0x00cf_f300_0000_ffff; // 0x28 (0x2b) user data
        gdt[6] = 0x00af_fb00_0000_ffff; // 0x30 (0x33) user code64
        gdt[7] = 0x67 | ((tss_va & 0xff_ffff) << 16) | (0x8b << 40) | (((tss_va >> 24) & 0xff) << 56);
        gdt[8] = tss_va >> 32;
        let bytes: Vec<u8> = gdt.iter().flat_map(|q| q.to_le_bytes()).collect();
        area.write(3 * 4096, &bytes);
        let mut tss = [0u8; 104];
        tss[4..12].copy_from_slice(&(a + 5 * 4096).to_le_bytes()); // RSP0
        tss[0x24..0x2c].copy_from_slice(&(a + 5 * 4096).to_le_bytes()); // IST1
        tss[0x66..0x68].copy_from_slice(&104u16.to_le_bytes());
        area.write(3 * 4096 + 0x80, &tss);
        // Guest-physical: 8 pages, the last two without a slot.
        let g = v.gpa.alloc(8 * 4096, a).unwrap();
        v.pt.map(a, g, 0).unwrap();
        v.pt.map(a + 4096, g + 4096, paging::US).unwrap();
        v.pt.map(a + 2 * 4096, g + 2 * 4096, paging::NX).unwrap();
        v.pt.map(a + 3 * 4096, g + 3 * 4096, paging::RW | paging::NX).unwrap();
        v.pt.map(a + 4 * 4096, g + 4 * 4096, paging::RW | paging::NX).unwrap();
        v.pt.map(a + 5 * 4096, g + 5 * 4096, paging::RW | paging::NX | paging::US).unwrap();
        v.set_slot(200, g, a, 6 * 4096).unwrap();
        let vcpu = v.fd.create_vcpu(100).unwrap();
        vcpu.set_cpuid2(&v.cpuid).unwrap();
        let entries = [
            kvm_msr_entry { index: MSR_STAR, data: (0x08u64 << 32) | (0x1bu64 << 48), ..Default::default() },
            kvm_msr_entry { index: MSR_LSTAR, data: a, ..Default::default() },
            kvm_msr_entry { index: MSR_FMASK, data: 0x47700, ..Default::default() },
        ];
        println!("msrs: {:?}", vcpu.set_msrs(&Msrs::from_entries(&entries).unwrap()));
        let mut s = v.initial_sregs(0);
        s.gdt = kvm_dtable { base: a + 3 * 4096, limit: 9 * 8 - 1, ..Default::default() };
        s.idt = kvm_dtable { base: a + 2 * 4096, limit: 32 * 16 - 1, ..Default::default() };
        s.tr = kvm_segment { base: tss_va, selector: 0x38, ..s.tr };
        let user_sregs = {
            let mut u = s;
            u.cs = kvm_segment { selector: 0x33, dpl: 3, ..s.cs };
            u.ss = kvm_segment { selector: 0x2b, dpl: 3, ..s.ss };
            u
        };
        println!("set_sregs: {:?}", vcpu.set_sregs(&user_sregs));
        drop(v);
        let mut vcpu = vcpu;
        let regs = kvm_regs { rip: a + 4096, rflags: 0x202, rsp: a + 6 * 4096 - 64, rbx: 0x1234, ..Default::default() };
        vcpu.set_regs(&regs).unwrap();
        for round in 0..3 {
            let t = std::time::Instant::now();
            let r = format!("{:?}", vcpu.run());
            let took = t.elapsed();
            let g = vcpu.get_regs().unwrap();
            let sr = vcpu.get_sregs().unwrap();
            println!(
                "round {round}: {r} in {took:?}: rip={:#x} rsp={:#x} rax={} rcx={:#x} r11={:#x} cs={:#x} dpl={}",
                g.rip, g.rsp, g.rax, g.rcx, g.r11, sr.cs.selector, sr.cs.dpl
            );
            let top: Vec<u64> = (0..6).map(|i| area.read_u64(5 * 4096 - 48 + 8 * i)).collect();
            println!("  ist top (err, rip, cs, rflags, rsp, ss): {top:x?} cr2={:#x} a={a:#x}", sr.cr2);
            if !(r.contains("IoOut(16") || (r.contains("IoOut(142") && sr.cr2 == a)) {
                break;
            }
            println!("  back to CPL3: {:?}", vcpu.set_sregs(&user_sregs));
            let mut g2 = g;
            g2.rip = g.rcx;
            g2.rflags = g.r11;
            vcpu.set_regs(&g2).unwrap();
        }
        // Where an exit's time goes: time each ioctl of a round trip. The
        // user code is now `mov eax,40; syscall` at a+4096+11, looped.
        let n = 2000u32;
        let (mut t_sregs, mut t_regs, mut t_run, mut t_get, mut t_fpu) = Default::default();
        let clock = std::time::Instant::now;
        let fpu = vcpu.get_fpu().unwrap();
        for _ in 0..n {
            let t = clock();
            vcpu.set_sregs(&user_sregs).unwrap();
            t_sregs += t.elapsed();
            let t = clock();
            vcpu.set_regs(&kvm_regs {
                rip: a + 4096 + 11,
                rflags: 0x202,
                rsp: a + 6 * 4096 - 64,
                ..Default::default()
            })
            .unwrap();
            t_regs += t.elapsed();
            let t = clock();
            let _ = vcpu.run().unwrap();
            t_run += t.elapsed();
            let t = clock();
            let _ = vcpu.get_regs().unwrap();
            let _ = vcpu.get_sregs().unwrap();
            t_get += t.elapsed();
            let t = clock();
            let _ = vcpu.get_fpu().unwrap();
            vcpu.set_fpu(&fpu).unwrap();
            t_fpu += t.elapsed();
        }
        let per = |d: std::time::Duration| d / n;
        // Variant: LSTAR at a user page whose code writes to a page mapped
        // to a guest-physical address with no memory slot (an MMIO exit).
        let extra = Mapping::new(4096).unwrap();
        let e = extra.addr();
        let hole: u64 = g + 7 * 4096;
        let mut code = vec![0xa2u8];
        code.extend_from_slice(&(a + 7 * 4096).to_le_bytes());
        code.push(0xf4);
        extra.write(0, &code);
        {
            let mut v = lock(&vm);
            let ge = v.gpa.alloc(4096, e).unwrap();
            v.pt.map(e, ge, paging::US).unwrap();
            v.pt.map(a + 7 * 4096, hole, paging::US | paging::RW | paging::NX).unwrap();
            v.set_slot(201, ge, e, 4096).unwrap();
        }
        vcpu.set_msrs(
            &Msrs::from_entries(&[kvm_msr_entry { index: MSR_LSTAR, data: e, ..Default::default() }]).unwrap(),
        )
        .unwrap();
        let mut t_mmio = std::time::Duration::ZERO;
        let mut last = String::new();
        for _ in 0..n {
            vcpu.set_sregs(&user_sregs).unwrap();
            vcpu.set_regs(&kvm_regs {
                rip: a + 4096 + 11,
                rflags: 0x202,
                rsp: a + 6 * 4096 - 64,
                ..Default::default()
            })
            .unwrap();
            let t = clock();
            last = format!("{:?}", vcpu.run());
            t_mmio += t.elapsed();
        }
        println!("MMIO variant: KVM_RUN {:?} ({last})", per(t_mmio));
        println!(
            "per exit: set_sregs {:?}, set_regs {:?}, KVM_RUN (syscall -> #PF -> stub -> out) {:?}, get_regs+get_sregs {:?}, get_fpu+set_fpu {:?}",
            per(t_sregs), per(t_regs), per(t_run), per(t_get), per(t_fpu)
        );
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;
    use urun_cpu::cpuid::{avx1, ebx7, ecx1, Model};

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        let [eax, ebx, ecx, edx] = regs;
        kvm_cpuid_entry2 { function, index, eax, ebx, ecx, edx, ..Default::default() }
    }

    /// KVM's supported set (everything on, plus bits urun's table does not
    /// know) becomes the model's, keeping the unknown bits and UMIP.
    #[test]
    fn cpuid_follows_the_model() {
        let all = u32::MAX;
        let mut e = vec![
            entry(1, 0, [0x00b0_0f21, 0, all, all]),
            entry(7, 0, [0, all, all, all]),
            entry(0xd, 0, [0xe7, 2696, 2696, 0]),
            entry(0xd, 1, [0xf, 0, 0, 0]),
            entry(0xd, 2, [256, 576, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, all, all]),
        ];
        let v2 = Model::parse("x86-64-v2").unwrap();
        apply_model(&mut e, &v2);
        assert_eq!(e[0].eax, 0x00b0_0f21);
        assert_eq!(e[0].ecx & (avx1::AVX | avx1::FMA | avx1::F16C | ecx1::MOVBE | ecx1::AES), 0);
        assert_ne!(e[0].ecx & ecx1::SSE42, 0);
        assert_ne!(e[0].ecx & avx1::XSAVE, 0, "XSAVE stays for CR4.OSXSAVE");
        assert_ne!(e[0].ecx & (1 << 31), 0, "the hypervisor bit is not urun's");
        assert_ne!(e[0].edx & (1 << 6), 0, "PAE is not urun's");
        assert_eq!([e[1].ebx, e[1].ecx, e[1].edx], [0, 1 << 2, 0]);
        assert_eq!([e[2].eax, e[2].ebx, e[2].ecx, e[2].edx], [3, 576, 576, 0]);
        assert_eq!([e[3].eax, e[4].eax], [0, 0]);
        assert_eq!(e[5].ecx & 1 << 5, 0, "no LZCNT in v2");
        let v3 = Model::parse("x86-64-v3").unwrap();
        apply_model(&mut e, &v3);
        assert_eq!(e[1].ebx, avx1::AVX2 | ebx7::BMI1 | ebx7::BMI2);
        assert_eq!([e[2].eax, e[2].ebx], [7, 832]);
        assert_eq!([e[4].eax, e[4].ebx], [256, 576]);
    }
}

#[cfg(test)]
mod plan_tests {
    use super::{plan_slots, SLOTS_PER_RUN};

    const M: u64 = 1 << 20;

    #[test]
    fn first_sight_is_one_slot_per_run() {
        let runs = [(M, 3 * M), (10 * M, 11 * M)];
        assert_eq!(plan_slots(&runs, &[]), runs.to_vec());
    }

    #[test]
    fn slots_inside_a_grown_run_stay() {
        // A mapping added on each side of a slot: the slot stays, the two
        // new stretches get one each.
        let have = [(2 * M, 3 * M)];
        assert_eq!(plan_slots(&[(M, 4 * M)], &have), vec![(M, 2 * M), (2 * M, 3 * M), (3 * M, 4 * M)]);
        // Two runs joined by a mapping between them.
        let have = [(M, 2 * M), (3 * M, 4 * M)];
        assert_eq!(plan_slots(&[(M, 4 * M)], &have), vec![(M, 2 * M), (2 * M, 3 * M), (3 * M, 4 * M)]);
    }

    #[test]
    fn slots_reaching_outside_the_runs_go() {
        // The run lost its first MiB: its slot no longer fits, a new one
        // covers what is left. Slots of runs that went are not kept.
        let have = [(M, 4 * M), (8 * M, 9 * M)];
        assert_eq!(plan_slots(&[(2 * M, 4 * M)], &have), vec![(2 * M, 4 * M)]);
        // A hole punched in the middle: two new slots.
        assert_eq!(plan_slots(&[(M, 2 * M), (3 * M, 4 * M)], &[(M, 4 * M)]), vec![(M, 2 * M), (3 * M, 4 * M)]);
    }

    #[test]
    fn too_many_pieces_become_one_slot() {
        // brk growing a page at a time: a slot per step until the run has
        // more than SLOTS_PER_RUN, then one slot for all of it.
        let p = 4096;
        let mut have: Vec<(u64, u64)> = Vec::new();
        for n in 1..=(SLOTS_PER_RUN as u64 + 1) {
            have = plan_slots(&[(M, M + n * p)], &have);
            let covered: u64 = have.iter().map(|k| k.1 - k.0).sum();
            assert_eq!(covered, n * p);
            assert!(have.windows(2).all(|w| w[0].1 == w[1].0));
        }
        assert_eq!(have, vec![(M, M + (SLOTS_PER_RUN as u64 + 1) * p)]);
    }
}
