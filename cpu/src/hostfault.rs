//! Host faults have one owner: this module. urun dereferences guest memory
//! on the host (guest address == host address), and another guest thread
//! can unmap or protect a page between the check against the
//! `AddressSpace` and the access. The host then raises SIGSEGV (or SIGBUS)
//! in urun; this module turns it into the guest's fault instead of urun's
//! crash. The design follows wasmtime's trap handlers:
//!
//! - SIGSEGV, SIGBUS and SIGFPE handlers are installed once (`install`, idempotent
//!   and thread-safe), with `SA_ONSTACK`; `prepare_thread` makes sure the
//!   calling thread has an alternate signal stack (Rust's std gives the
//!   main thread and the threads it spawns one; a thread without one gets
//!   its own, freed when the thread ends).
//! - A fault is claimed only when the kernel raised it (`si_code > 0`), the
//!   thread's state says a guest access (or guest code) is in progress, and
//!   the faulting host PC is a registered site: one of the guest-access
//!   routines below, or a code range registered with
//!   `register_code_range` (the JIT's translated code will be one).
//! - Recovery rewrites the saved context (RIP, and RDX as the "faulted"
//!   result register) so that the routine returns with an error; nothing
//!   unwinds through Rust frames.
//! - Every other fault goes to the handler that was installed before ours
//!   (Rust std's stack-overflow handler, usually), or to the one the
//!   personality sets with `set_fallback`; `SIG_DFL` means the default
//!   action, as if we were not there.
//!
//! The fault stays data (`HostFault`: address, read or write, `si_code`)
//! until the engine makes it a `FaultKind::Page` for the guest.
//!
//! The guest-access routines are small assembly functions (loads and
//! stores of 1, 2, 4, 8 and 16 bytes, bulk copy and fill, compare-and-swap
//! of 1 to 16 bytes), each a direct call that returns its value in RAX and
//! 0 in RDX, or 1 in RDX when it faulted.

use std::arch::asm;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::engine::{FaultKind, PageFaultKind};

/// Why the host-fault owner could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum HostFaultError {
    #[error("cannot install the handler for signal {sig}: {err}")]
    Sigaction { sig: i32, err: std::io::Error },
    #[error("cannot give this thread an alternate signal stack: {0}")]
    AltStack(std::io::Error),
    #[error("signal {0} is not one the host-fault owner handles (SIGSEGV, SIGBUS, SIGFPE)")]
    NotOurs(i32),
    #[error("code range {start:#x}..{end:#x} is empty")]
    EmptyRange { start: usize, end: usize },
    #[error("no room for another code range ({0} are registered)")]
    RangesFull(usize),
}

/// A host fault that was claimed for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostFault {
    /// SIGSEGV, SIGBUS or (from JIT-translated code) SIGFPE.
    pub signo: i32,
    /// The faulting address (`si_addr`).
    pub addr: u64,
    /// The access was a write (bit 1 of the page-fault error code).
    pub write: bool,
    /// The kernel's `si_code` (SEGV_MAPERR, SEGV_ACCERR, BUS_ADRERR, ...).
    pub code: i32,
}

const SEGV_MAPERR: i32 = 1;
const SEGV_ACCERR: i32 = 2;
const SI_KERNEL: i32 = 0x80;

impl HostFault {
    /// The guest fault this host fault stands for.
    pub fn to_fault_kind(&self) -> FaultKind {
        if self.signo == libc::SIGFPE {
            // #DE is FPE_INTDIV (1) (FPE_INTOVF, 2, is INTO's, which urun
            // interprets); #MF and #XM carry the kernel's FPE_FLT* code.
            return match self.code {
                1 | 2 => FaultKind::Divide,
                code => FaultKind::FloatingPoint { code },
            };
        }
        if self.signo == libc::SIGBUS {
            return FaultKind::Page { addr: self.addr, write: self.write, kind: PageFaultKind::Bus };
        }
        let kind = match self.code {
            SEGV_MAPERR => PageFaultKind::NotMapped,
            // A #GP (a non-canonical address) has no page fault behind it.
            SI_KERNEL => return FaultKind::GeneralProtection,
            _ => PageFaultKind::Protection,
        };
        FaultKind::Page { addr: self.addr, write: self.write, kind }
    }
}

/// A copy that stopped at a fault: `done` bytes (or elements, for `fill`)
/// were completed before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partial {
    pub done: u64,
    pub fault: HostFault,
}

// ----- per-thread state -----

const NO_FAULT: HostFault = HostFault { signo: 0, addr: 0, write: false, code: 0 };

thread_local! {
    /// A guest access (or guest code) is in progress on this thread. Const
    /// initialised and without a destructor, so the signal handler can read
    /// it without allocating.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    /// The last fault claimed on this thread.
    static LAST: Cell<HostFault> = const { Cell::new(NO_FAULT) };
    /// The alternate signal stack this module gave the thread, if any.
    static OWN_STACK: std::cell::RefCell<Option<AltStack>> = const { std::cell::RefCell::new(None) };
}

/// Marks the calling thread as running guest code (translated code in a
/// registered range) while it lives; guest-access routines mark themselves.
pub struct InGuest {
    prev: bool,
}

impl InGuest {
    pub fn enter() -> Self {
        InGuest { prev: ACTIVE.with(|a| a.replace(true)) }
    }
}

impl Drop for InGuest {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(self.prev));
    }
}

/// The fault the last failed routine on this thread hit.
fn last_fault() -> HostFault {
    LAST.with(|l| l.get())
}

// ----- the guest-access routines -----

/// What every routine returns: a value in RAX, 0 (or 1 after a fault) in RDX.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ret {
    value: u64,
    faulted: u64,
}

/// A registered site: the PC of an instruction that touches guest memory,
/// and where to resume when it faults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Site {
    pc: usize,
    landing: usize,
}

// Each routine is a leaf that never touches the stack before or at its
// guest access, so a fault leaves RSP at the return address and the shared
// landing `ret` returns to the caller. Copies and fills resume at a landing
// that returns the elements left (RCX); CMPXCHG16B's restores RBX first.
// The table `urun_hf_sites` lists (site, landing) pairs.
std::arch::global_asm!(
    r#"
    .text
    .p2align 4
    .globl urun_hf_load8
    .hidden urun_hf_load8
urun_hf_load8:
urun_hf_load8_at:
    movzx eax, byte ptr [rdi]
    xor edx, edx
    ret

    .globl urun_hf_load16
    .hidden urun_hf_load16
urun_hf_load16:
urun_hf_load16_at:
    movzx eax, word ptr [rdi]
    xor edx, edx
    ret

    .globl urun_hf_load32
    .hidden urun_hf_load32
urun_hf_load32:
urun_hf_load32_at:
    mov eax, dword ptr [rdi]
    xor edx, edx
    ret

    .globl urun_hf_load64
    .hidden urun_hf_load64
urun_hf_load64:
urun_hf_load64_at:
    mov rax, qword ptr [rdi]
    xor edx, edx
    ret

    .globl urun_hf_load128
    .hidden urun_hf_load128
urun_hf_load128:
urun_hf_load128_at:
    movups xmm0, xmmword ptr [rdi]
    xor edx, edx
    ret

    .globl urun_hf_store8
    .hidden urun_hf_store8
urun_hf_store8:
urun_hf_store8_at:
    mov byte ptr [rdi], sil
    xor edx, edx
    ret

    .globl urun_hf_store16
    .hidden urun_hf_store16
urun_hf_store16:
urun_hf_store16_at:
    mov word ptr [rdi], si
    xor edx, edx
    ret

    .globl urun_hf_store32
    .hidden urun_hf_store32
urun_hf_store32:
urun_hf_store32_at:
    mov dword ptr [rdi], esi
    xor edx, edx
    ret

    .globl urun_hf_store64
    .hidden urun_hf_store64
urun_hf_store64:
urun_hf_store64_at:
    mov qword ptr [rdi], rsi
    xor edx, edx
    ret

    .globl urun_hf_store128
    .hidden urun_hf_store128
urun_hf_store128:
urun_hf_store128_at:
    movups xmmword ptr [rdi], xmm0
    xor edx, edx
    ret

    .globl urun_hf_copy
    .hidden urun_hf_copy
urun_hf_copy:
    mov rcx, rdx
urun_hf_copy_at:
    rep movsb
    xor eax, eax
    xor edx, edx
    ret

    .globl urun_hf_fill8
    .hidden urun_hf_fill8
urun_hf_fill8:
    mov rax, rsi
    mov rcx, rdx
urun_hf_fill8_at:
    rep stosb
    xor eax, eax
    xor edx, edx
    ret

    .globl urun_hf_fill16
    .hidden urun_hf_fill16
urun_hf_fill16:
    mov rax, rsi
    mov rcx, rdx
urun_hf_fill16_at:
    rep stosw
    xor eax, eax
    xor edx, edx
    ret

    .globl urun_hf_fill32
    .hidden urun_hf_fill32
urun_hf_fill32:
    mov rax, rsi
    mov rcx, rdx
urun_hf_fill32_at:
    rep stosd
    xor eax, eax
    xor edx, edx
    ret

    .globl urun_hf_fill64
    .hidden urun_hf_fill64
urun_hf_fill64:
    mov rax, rsi
    mov rcx, rdx
urun_hf_fill64_at:
    rep stosq
    xor eax, eax
    xor edx, edx
    ret

    .globl urun_hf_cas8
    .hidden urun_hf_cas8
urun_hf_cas8:
    mov rax, rsi
urun_hf_cas8_at:
    lock cmpxchg byte ptr [rdi], dl
    xor edx, edx
    ret

    .globl urun_hf_cas16
    .hidden urun_hf_cas16
urun_hf_cas16:
    mov rax, rsi
urun_hf_cas16_at:
    lock cmpxchg word ptr [rdi], dx
    xor edx, edx
    ret

    .globl urun_hf_cas32
    .hidden urun_hf_cas32
urun_hf_cas32:
    mov rax, rsi
urun_hf_cas32_at:
    lock cmpxchg dword ptr [rdi], edx
    xor edx, edx
    ret

    .globl urun_hf_cas64
    .hidden urun_hf_cas64
urun_hf_cas64:
    mov rax, rsi
urun_hf_cas64_at:
    lock cmpxchg qword ptr [rdi], rdx
    xor edx, edx
    ret

    .globl urun_hf_cas128
    .hidden urun_hf_cas128
urun_hf_cas128:
    mov r11, rbx
    mov rax, qword ptr [rsi]
    mov rdx, qword ptr [rsi + 8]
    mov rbx, qword ptr [rsi + 16]
    mov rcx, qword ptr [rsi + 24]
urun_hf_cas128_at:
    lock cmpxchg16b xmmword ptr [rdi]
    mov rbx, r11
    mov qword ptr [rsi], rax
    mov qword ptr [rsi + 8], rdx
    xor edx, edx
    ret

    .globl urun_hf_flush
    .hidden urun_hf_flush
urun_hf_flush:
urun_hf_flush_at:
    clflush byte ptr [rdi]
    xor edx, edx
    ret

urun_hf_fail:
    ret
urun_hf_fail_count:
    mov rax, rcx
    ret
urun_hf_fail_cas128:
    mov rbx, r11
    ret

    .section .data.rel.ro.urun_hf_sites, "aw"
    .p2align 3
    .globl urun_hf_sites
    .hidden urun_hf_sites
urun_hf_sites:
    .quad urun_hf_load8_at, urun_hf_fail
    .quad urun_hf_load16_at, urun_hf_fail
    .quad urun_hf_load32_at, urun_hf_fail
    .quad urun_hf_load64_at, urun_hf_fail
    .quad urun_hf_load128_at, urun_hf_fail
    .quad urun_hf_store8_at, urun_hf_fail
    .quad urun_hf_store16_at, urun_hf_fail
    .quad urun_hf_store32_at, urun_hf_fail
    .quad urun_hf_store64_at, urun_hf_fail
    .quad urun_hf_store128_at, urun_hf_fail
    .quad urun_hf_copy_at, urun_hf_fail_count
    .quad urun_hf_fill8_at, urun_hf_fail_count
    .quad urun_hf_fill16_at, urun_hf_fail_count
    .quad urun_hf_fill32_at, urun_hf_fail_count
    .quad urun_hf_fill64_at, urun_hf_fail_count
    .quad urun_hf_cas8_at, urun_hf_fail
    .quad urun_hf_cas16_at, urun_hf_fail
    .quad urun_hf_cas32_at, urun_hf_fail
    .quad urun_hf_cas64_at, urun_hf_fail
    .quad urun_hf_cas128_at, urun_hf_fail_cas128
    .quad urun_hf_flush_at, urun_hf_fail
    .globl urun_hf_sites_end
    .hidden urun_hf_sites_end
urun_hf_sites_end:
    .text
"#
);

unsafe extern "C" {
    // Called from `asm!` with their exact register use (see `load`).
    fn urun_hf_load8();
    fn urun_hf_load16();
    fn urun_hf_load32();
    fn urun_hf_load64();
    fn urun_hf_load128();
    fn urun_hf_store8();
    fn urun_hf_store16();
    fn urun_hf_store32();
    fn urun_hf_store64();
    fn urun_hf_store128();
    fn urun_hf_cas8();
    fn urun_hf_cas16();
    fn urun_hf_cas32();
    fn urun_hf_cas64();
    // Called the C way.
    fn urun_hf_copy(dst: u64, src: u64, len: u64) -> Ret;
    fn urun_hf_fill8(dst: u64, v: u64, count: u64) -> Ret;
    fn urun_hf_fill16(dst: u64, v: u64, count: u64) -> Ret;
    fn urun_hf_fill32(dst: u64, v: u64, count: u64) -> Ret;
    fn urun_hf_fill64(dst: u64, v: u64, count: u64) -> Ret;
    fn urun_hf_cas128(addr: u64, io: *mut [u64; 4]) -> Ret;
    fn urun_hf_flush(addr: u64) -> Ret;
    static urun_hf_sites: Site;
    static urun_hf_sites_end: Site;
}

/// The guest-access sites, from the table the assembly above builds.
fn sites() -> &'static [Site] {
    // SAFETY: `urun_hf_sites..urun_hf_sites_end` is the table of `Site`
    // pairs (two `.quad`s each, 8-aligned) emitted with the routines; it is
    // read-only after relocation.
    unsafe {
        let start = &raw const urun_hf_sites;
        let end = &raw const urun_hf_sites_end;
        let n = (end as usize - start as usize) / std::mem::size_of::<Site>();
        std::slice::from_raw_parts(start, n)
    }
}

/// Run one routine with this thread's "guest access in progress" set.
/// (Two small accesses rather than one `with` around the call: LLVM
/// inlines these, and the thread-local becomes one FS-relative access.)
#[inline(always)]
fn guarded<R>(f: impl FnOnce() -> R) -> R {
    let prev = ACTIVE.replace(true);
    let r = f();
    ACTIVE.set(prev);
    r
}

/// The fault of a routine that returned "faulted".
#[cold]
#[inline(never)]
fn faulted<T>() -> Result<T, HostFault> {
    Err(last_fault())
}

// The hot routines are called from `asm!` naming exactly the registers
// they use, so a guest access costs a call and a return but does not make
// the compiler save every caller-saved register around it. A call pushes
// on the stack, so these blocks must not be `nostack` (which also keeps
// the red zone out of their way). Each routine leaves RDX = 0, or 1 when
// it faulted (set by the handler).

/// Read `size` (1, 2, 4 or 8) bytes at `addr`, zero-extended.
///
/// # Safety
/// `addr` must be guest memory that the caller checked the guest may read;
/// it may vanish concurrently (that is the fault this returns).
#[inline(always)]
pub unsafe fn load(addr: u64, size: u8) -> Result<u64, HostFault> {
    // SAFETY: the routines read `size` bytes at `addr` (the caller's
    // contract), use only RDI, RAX and RDX, and recover from a fault.
    let (v, bad) = guarded(|| unsafe {
        let (v, bad): (u64, u64);
        match size {
            1 => asm!("call {f}", f = sym urun_hf_load8, in("rdi") addr, lateout("rax") v, lateout("rdx") bad),
            2 => asm!("call {f}", f = sym urun_hf_load16, in("rdi") addr, lateout("rax") v, lateout("rdx") bad),
            4 => asm!("call {f}", f = sym urun_hf_load32, in("rdi") addr, lateout("rax") v, lateout("rdx") bad),
            _ => asm!("call {f}", f = sym urun_hf_load64, in("rdi") addr, lateout("rax") v, lateout("rdx") bad),
        }
        (v, bad)
    });
    if bad != 0 {
        return faulted();
    }
    Ok(v)
}

/// Write the low `size` (1, 2, 4 or 8) bytes of `v` at `addr`.
///
/// # Safety
/// `addr` must be guest memory that the caller checked the guest may write.
#[inline(always)]
pub unsafe fn store(addr: u64, size: u8, v: u64) -> Result<(), HostFault> {
    // SAFETY: the caller's contract; the routines use only RDI, RSI and
    // RDX, and recover from a fault.
    let bad = guarded(|| unsafe {
        let bad: u64;
        match size {
            1 => asm!("call {f}", f = sym urun_hf_store8, in("rdi") addr, in("rsi") v, lateout("rdx") bad),
            2 => asm!("call {f}", f = sym urun_hf_store16, in("rdi") addr, in("rsi") v, lateout("rdx") bad),
            4 => asm!("call {f}", f = sym urun_hf_store32, in("rdi") addr, in("rsi") v, lateout("rdx") bad),
            _ => asm!("call {f}", f = sym urun_hf_store64, in("rdi") addr, in("rsi") v, lateout("rdx") bad),
        }
        bad
    });
    if bad != 0 {
        return faulted();
    }
    Ok(())
}

/// Read 16 bytes at `addr`.
///
/// # Safety
/// As for `load`.
#[inline(always)]
pub unsafe fn load128(addr: u64) -> Result<u128, HostFault> {
    // SAFETY: the caller's contract; the routine uses RDI, XMM0 and RDX.
    let (v, bad) = guarded(|| unsafe {
        let (v, bad): (std::arch::x86_64::__m128i, u64);
        asm!("call {f}", f = sym urun_hf_load128, in("rdi") addr, lateout("xmm0") v, lateout("rdx") bad);
        (v, bad)
    });
    if bad != 0 {
        return faulted();
    }
    // SAFETY: same size, plain bits.
    Ok(unsafe { std::mem::transmute::<std::arch::x86_64::__m128i, u128>(v) })
}

/// Write 16 bytes at `addr`.
///
/// # Safety
/// As for `store`.
#[inline(always)]
pub unsafe fn store128(addr: u64, v: u128) -> Result<(), HostFault> {
    // SAFETY: same size, plain bits.
    let x = unsafe { std::mem::transmute::<u128, std::arch::x86_64::__m128i>(v) };
    // SAFETY: the caller's contract; the routine uses RDI, XMM0 and RDX.
    let bad = guarded(|| unsafe {
        let bad: u64;
        asm!("call {f}", f = sym urun_hf_store128, in("rdi") addr, in("xmm0") x, lateout("rdx") bad);
        bad
    });
    if bad != 0 {
        return faulted();
    }
    Ok(())
}

/// Copy `len` bytes from `src` to `dst`, forwards (like `rep movsb`).
///
/// # Safety
/// The guest ranges among `dst` and `src` must have been checked (readable
/// source, writable destination); urun's own ranges must be valid.
pub unsafe fn copy(dst: u64, src: u64, len: u64) -> Result<(), Partial> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract; the routine recovers from a fault.
    let r = guarded(|| unsafe { urun_hf_copy(dst, src, len) });
    if r.faulted != 0 {
        return Err(Partial { done: len - r.value, fault: last_fault() });
    }
    Ok(())
}

/// Read guest memory at `src` into `buf`.
///
/// # Safety
/// `[src, src + buf.len())` must be guest memory the caller checked readable.
pub unsafe fn copy_from_guest(buf: &mut [u8], src: u64) -> Result<(), Partial> {
    // SAFETY: the caller's contract; `buf` is urun's and writable.
    unsafe { copy(buf.as_mut_ptr() as u64, src, buf.len() as u64) }
}

/// Write `buf` to guest memory at `dst`.
///
/// # Safety
/// `[dst, dst + buf.len())` must be guest memory the caller checked writable.
pub unsafe fn copy_to_guest(dst: u64, buf: &[u8]) -> Result<(), Partial> {
    // SAFETY: the caller's contract; `buf` is urun's and readable.
    unsafe { copy(dst, buf.as_ptr() as u64, buf.len() as u64) }
}

/// Store `count` elements of `size` (1, 2, 4 or 8) bytes of `v` from `dst`
/// upwards (like `rep stos`). `Partial::done` counts elements.
///
/// # Safety
/// `[dst, dst + count * size)` must be guest memory the caller checked
/// writable.
pub unsafe fn fill(dst: u64, v: u64, count: u64, size: u8) -> Result<(), Partial> {
    if count == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract; the routines recover from a fault.
    let r = guarded(|| unsafe {
        match size {
            1 => urun_hf_fill8(dst, v, count),
            2 => urun_hf_fill16(dst, v, count),
            4 => urun_hf_fill32(dst, v, count),
            _ => urun_hf_fill64(dst, v, count),
        }
    });
    if r.faulted != 0 {
        return Err(Partial { done: count - r.value, fault: last_fault() });
    }
    Ok(())
}

/// Atomic compare-and-swap of `size` (1, 2, 4 or 8) bytes at `addr`, which
/// must be aligned to `size`: writes `new` if the memory holds `expected`.
/// Returns the value found.
///
/// # Safety
/// `addr` must be guest memory the caller checked readable and writable.
#[inline(always)]
pub unsafe fn cas(addr: u64, size: u8, expected: u64, new: u64) -> Result<u64, HostFault> {
    let m = crate::state::mask(size);
    // SAFETY: the caller's contract; the routines use RDI, RSI, RAX and
    // RDX, and recover from a fault.
    let (found, bad) = guarded(|| unsafe {
        let (found, bad): (u64, u64);
        let e = expected & m;
        match size {
            1 => {
                asm!("call {f}", f = sym urun_hf_cas8, in("rdi") addr, in("rsi") e, inlateout("rdx") new => bad, lateout("rax") found)
            }
            2 => {
                asm!("call {f}", f = sym urun_hf_cas16, in("rdi") addr, in("rsi") e, inlateout("rdx") new => bad, lateout("rax") found)
            }
            4 => {
                asm!("call {f}", f = sym urun_hf_cas32, in("rdi") addr, in("rsi") e, inlateout("rdx") new => bad, lateout("rax") found)
            }
            _ => {
                asm!("call {f}", f = sym urun_hf_cas64, in("rdi") addr, in("rsi") e, inlateout("rdx") new => bad, lateout("rax") found)
            }
        }
        (found, bad)
    });
    if bad != 0 {
        return faulted();
    }
    Ok(found & m)
}

/// Atomic 16-byte compare-and-swap (CMPXCHG16B) at 16-byte aligned `addr`.
/// Returns the value found.
///
/// # Safety
/// As for `cas`; `addr` must be 16-byte aligned.
pub unsafe fn cas128(addr: u64, expected: u128, new: u128) -> Result<u128, HostFault> {
    let mut io = [expected as u64, (expected >> 64) as u64, new as u64, (new >> 64) as u64];
    // SAFETY: the caller's contract; `io` is ours.
    let r = guarded(|| unsafe { urun_hf_cas128(addr, &mut io) });
    if r.faulted != 0 {
        return Err(last_fault());
    }
    Ok(io[0] as u128 | ((io[1] as u128) << 64))
}

/// CLFLUSH the cache line at `addr`.
///
/// # Safety
/// `addr` must be guest memory the caller checked readable.
pub unsafe fn flush(addr: u64) -> Result<(), HostFault> {
    // SAFETY: the caller's contract; CLFLUSH changes no data.
    let r = guarded(|| unsafe { urun_hf_flush(addr) });
    if r.faulted != 0 {
        return Err(last_fault());
    }
    Ok(())
}

/// Read a plain value of type `T` (an integer or a `repr(C)` struct of
/// them) from guest memory.
///
/// # Safety
/// `[src, src + size_of::<T>())` must be guest memory the caller checked
/// readable; every bit pattern must be a valid `T`.
pub unsafe fn read_guest<T: Copy>(src: u64) -> Result<T, HostFault> {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the caller's contract; `v` is ours, and any bytes are a `T`.
    unsafe {
        copy(v.as_mut_ptr() as u64, src, std::mem::size_of::<T>() as u64).map_err(|p| p.fault)?;
        Ok(v.assume_init())
    }
}

/// Write a plain value to guest memory.
///
/// # Safety
/// `[dst, dst + size_of::<T>())` must be guest memory the caller checked
/// writable.
pub unsafe fn write_guest<T: Copy>(dst: u64, v: &T) -> Result<(), HostFault> {
    // SAFETY: the caller's contract; `v` is ours.
    unsafe { copy(dst, v as *const T as u64, std::mem::size_of::<T>() as u64).map_err(|p| p.fault) }
}

// ----- code ranges registered at run time (the JIT's) -----

/// The saved registers of a faulting thread, for a `Recovery::Handler`.
pub struct SavedContext<'a> {
    uc: &'a mut libc::ucontext_t,
}

/// `CpuState::gpr` order (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15)
/// to `gregs` indices.
pub(crate) const GREG_OF: [i32; 16] = [
    libc::REG_RAX,
    libc::REG_RCX,
    libc::REG_RDX,
    libc::REG_RBX,
    libc::REG_RSP,
    libc::REG_RBP,
    libc::REG_RSI,
    libc::REG_RDI,
    libc::REG_R8,
    libc::REG_R9,
    libc::REG_R10,
    libc::REG_R11,
    libc::REG_R12,
    libc::REG_R13,
    libc::REG_R14,
    libc::REG_R15,
];

impl SavedContext<'_> {
    pub fn pc(&self) -> u64 {
        self.uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64
    }
    pub fn set_pc(&mut self, pc: u64) {
        self.uc.uc_mcontext.gregs[libc::REG_RIP as usize] = pc as i64;
    }
    /// General-purpose register `r` in `CpuState::gpr` order.
    pub fn reg(&self, r: usize) -> u64 {
        self.uc.uc_mcontext.gregs[GREG_OF[r & 15] as usize] as u64
    }
    pub fn set_reg(&mut self, r: usize, v: u64) {
        self.uc.uc_mcontext.gregs[GREG_OF[r & 15] as usize] = v as i64;
    }
}

/// How a fault in a registered code range is recovered.
#[derive(Clone, Copy)]
pub enum Recovery {
    /// Resume at this address with RDX = 1; the fault is kept for the
    /// thread (what the guest-access routines do).
    Landing(usize),
    /// Let the function rewrite the saved context (it must set the PC to
    /// somewhere that leaves guest code); it returns whether it claimed the
    /// fault. It runs in the signal handler: async-signal-safe code only.
    Handler(fn(&HostFault, &mut SavedContext<'_>) -> bool),
}

/// A registered range, for `unregister_code_range`.
#[derive(Debug, PartialEq, Eq)]
pub struct RangeId(usize);

const MAX_RANGES: usize = 64;

/// One slot of the range table, read lock-free by the signal handler: the
/// fields are valid while `seq` is even and unchanged across the read.
struct Slot {
    seq: AtomicU32,
    start: AtomicUsize,
    end: AtomicUsize,
    /// 0: Landing (at `arg`), 1: Handler (`arg` is the function).
    kind: AtomicUsize,
    arg: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    seq: AtomicU32::new(0),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    kind: AtomicUsize::new(0),
    arg: AtomicUsize::new(0),
};
static RANGES: [Slot; MAX_RANGES] = [EMPTY_SLOT; MAX_RANGES];
static RANGES_LOCK: Mutex<()> = Mutex::new(());

/// Register `[start, end)` as code whose faults are the guest's while the
/// thread is `InGuest`, recovered as `recovery` says.
pub fn register_code_range(start: usize, end: usize, recovery: Recovery) -> Result<RangeId, HostFaultError> {
    if start >= end {
        return Err(HostFaultError::EmptyRange { start, end });
    }
    install()?;
    let _g = RANGES_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(i) = RANGES.iter().position(|s| s.end.load(Ordering::Relaxed) == 0) else {
        return Err(HostFaultError::RangesFull(MAX_RANGES));
    };
    let (kind, arg) = match recovery {
        Recovery::Landing(at) => (0, at),
        Recovery::Handler(f) => (1, f as usize),
    };
    let s = &RANGES[i];
    s.seq.fetch_add(1, Ordering::AcqRel);
    s.start.store(start, Ordering::Release);
    s.kind.store(kind, Ordering::Release);
    s.arg.store(arg, Ordering::Release);
    s.end.store(end, Ordering::Release);
    s.seq.fetch_add(1, Ordering::AcqRel);
    Ok(RangeId(i))
}

/// Forget a range registered with `register_code_range`.
pub fn unregister_code_range(id: RangeId) {
    let _g = RANGES_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let s = &RANGES[id.0];
    s.seq.fetch_add(1, Ordering::AcqRel);
    s.end.store(0, Ordering::Release);
    s.start.store(0, Ordering::Release);
    s.seq.fetch_add(1, Ordering::AcqRel);
}

/// The recovery for a PC in a registered range, read without locks.
fn range_recovery(pc: usize) -> Option<Recovery> {
    for s in &RANGES {
        let before = s.seq.load(Ordering::Acquire);
        if before & 1 != 0 {
            continue;
        }
        let end = s.end.load(Ordering::Acquire);
        if end == 0 {
            continue;
        }
        let start = s.start.load(Ordering::Acquire);
        let kind = s.kind.load(Ordering::Acquire);
        let arg = s.arg.load(Ordering::Acquire);
        if s.seq.load(Ordering::Acquire) != before || pc < start || pc >= end {
            continue;
        }
        return Some(if kind == 0 {
            Recovery::Landing(arg)
        } else {
            // SAFETY: `arg` was stored from a function of exactly this type
            // (kind 1), and the sequence check says the slot was not torn.
            Recovery::Handler(unsafe {
                std::mem::transmute::<usize, fn(&HostFault, &mut SavedContext<'_>) -> bool>(arg)
            })
        });
    }
    None
}

// ----- the handlers -----

/// SIGFPE only ever comes from guest code (the JIT's; urun's own
/// guest-access routines do not divide).
const SIGNALS: [i32; 3] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE];

/// The handler found at `install` for each of `SIGNALS`, and the one the
/// personality chose since (`set_fallback`): a `sa_sigaction` value.
static ORIGINAL: [AtomicUsize; 3] = [const { AtomicUsize::new(libc::SIG_DFL) }; 3];
static FALLBACK: [AtomicUsize; 3] = [const { AtomicUsize::new(libc::SIG_DFL) }; 3];

fn signal_index(sig: i32) -> Option<usize> {
    SIGNALS.iter().position(|&s| s == sig)
}

/// Install the SIGSEGV, SIGBUS and SIGFPE handlers, once for the process.
pub fn install() -> Result<(), HostFaultError> {
    static DONE: OnceLock<Result<(), (i32, i32)>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        for (i, &sig) in SIGNALS.iter().enumerate() {
            // SAFETY: all-zero is a valid sigaction; we query, then install
            // ours with SA_SIGINFO | SA_ONSTACK; the handler is
            // async-signal-safe (atomics and const thread-locals only).
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                    return Err((sig, std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
                }
                ORIGINAL[i].store(old.sa_sigaction, Ordering::Release);
                FALLBACK[i].store(old.sa_sigaction, Ordering::Release);
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_fault as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return Err((sig, std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
                }
            }
        }
        Ok(())
    });
    r.map_err(|(sig, e)| HostFaultError::Sigaction { sig, err: std::io::Error::from_raw_os_error(e) })
}

/// Make the handler for faults that are not urun's `handler` (a
/// `sa_sigaction` value: `SIG_DFL`, `SIG_IGN` or a function, called with
/// `(sig, info, ucontext)`), or with `None` the one found at `install`.
/// The personality uses this instead of `sigaction` for SIGSEGV, SIGBUS and SIGFPE,
/// which this module owns. Does not allocate (fork children may call it).
pub fn set_fallback(sig: i32, handler: Option<usize>) -> Result<(), HostFaultError> {
    let i = signal_index(sig).ok_or(HostFaultError::NotOurs(sig))?;
    install()?;
    let h = handler.unwrap_or_else(|| ORIGINAL[i].load(Ordering::Acquire));
    FALLBACK[i].store(h, Ordering::Release);
    Ok(())
}

/// Install the handlers and make sure the calling thread has an alternate
/// signal stack. Every thread that runs guest code calls this first.
pub fn prepare_thread() -> Result<(), HostFaultError> {
    install()?;
    // SAFETY: a null new stack only queries the current one into `old`.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut old) } != 0 {
        return Err(HostFaultError::AltStack(std::io::Error::last_os_error()));
    }
    if old.ss_flags & libc::SS_DISABLE == 0 {
        // Rust's std gave this thread one (sized for the kernel's frame).
        return Ok(());
    }
    let stack = AltStack::new().map_err(HostFaultError::AltStack)?;
    OWN_STACK.with(|s| *s.borrow_mut() = Some(stack));
    Ok(())
}

/// An alternate signal stack owned by this module: a guard page below it,
/// disabled and unmapped when its thread ends.
struct AltStack {
    base: *mut libc::c_void,
    len: usize,
}

const ALT_SIZE: usize = 64 * 1024;

impl AltStack {
    fn new() -> std::io::Result<AltStack> {
        let len = ALT_SIZE + 4096;
        // SAFETY: a fresh anonymous mapping; the lowest page becomes a guard.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let st = AltStack { base, len };
        // SAFETY: the guard page is the first page of our own mapping; the
        // stack is the rest of it.
        unsafe {
            libc::mprotect(base, 4096, libc::PROT_NONE);
            let ss =
                libc::stack_t { ss_sp: (base as usize + 4096) as *mut libc::c_void, ss_flags: 0, ss_size: ALT_SIZE };
            if libc::sigaltstack(&ss, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(st)
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: disable the alternate stack before unmapping it (no signal
        // handler can be running on it: we are on the thread's own stack).
        unsafe {
            let ss = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
            libc::sigaltstack(&ss, std::ptr::null_mut());
            libc::munmap(self.base, self.len);
        }
    }
}

// ----- write-protected code -----

/// `HostFault::signo` passed to a code range's `Recovery::Handler` for a
/// write the write hook claimed (see `set_write_hook`): the page is
/// writable again and its code invalidated; the handler may move the thread
/// out of translated code to run the write elsewhere (return true), or let
/// the instruction run again where it is (false).
pub const CODE_WRITE: i32 = 0;

/// The write hook (a `fn(u64) -> bool`), or 0.
static WRITE_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Set the hook that write faults (SEGV_ACCERR on a write, from any code
/// of the thread) are offered first: given the address, it returns true
/// when the fault was its own (a page it write-protected, now writable
/// again), and the write then runs again. It runs in the signal handler.
/// The `AddressSpace` sets it for its write-protected code pages.
pub fn set_write_hook(hook: fn(u64) -> bool) {
    WRITE_HOOK.store(hook as usize, Ordering::Release);
}

/// Offer a write fault to the write hook.
fn write_hook_claims(addr: u64) -> bool {
    let h = WRITE_HOOK.load(Ordering::Acquire);
    if h == 0 {
        return false;
    }
    // SAFETY: stored from a function of exactly this type.
    let f = unsafe { std::mem::transmute::<usize, fn(u64) -> bool>(h) };
    f(addr)
}

/// The SIGSEGV/SIGBUS handler.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes valid siginfo and ucontext for SA_SIGINFO.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as u64) };
    let active = ACTIVE.try_with(|a| a.get()).unwrap_or(false);
    if sig == libc::SIGSEGV && code == SEGV_ACCERR && !uc.is_null() {
        // SAFETY: as above; the context is this thread's, ours to rewrite.
        let ctx = unsafe { &mut *(uc as *mut libc::ucontext_t) };
        let write = ctx.uc_mcontext.gregs[libc::REG_ERR as usize] & 2 != 0;
        if write && write_hook_claims(addr) {
            let pc = ctx.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
            if let (true, Some(Recovery::Handler(f))) = (active, range_recovery(pc)) {
                let fault = HostFault { signo: CODE_WRITE, addr, write, code };
                f(&fault, &mut SavedContext { uc: ctx });
            }
            return;
        }
    }
    if code > 0 && active && !uc.is_null() {
        // SAFETY: as above; the context is this thread's, ours to rewrite.
        let ctx = unsafe { &mut *(uc as *mut libc::ucontext_t) };
        let pc = ctx.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
        let write = sig != libc::SIGFPE && ctx.uc_mcontext.gregs[libc::REG_ERR as usize] & 2 != 0;
        let fault = HostFault { signo: sig, addr, write, code };
        let recovery = match sites().iter().find(|s| s.pc == pc) {
            Some(s) => Some(Recovery::Landing(s.landing)),
            None => range_recovery(pc),
        };
        match recovery {
            Some(Recovery::Landing(at)) => {
                let _ = LAST.try_with(|l| l.set(fault));
                ctx.uc_mcontext.gregs[libc::REG_RIP as usize] = at as i64;
                ctx.uc_mcontext.gregs[libc::REG_RDX as usize] = 1;
                return;
            }
            Some(Recovery::Handler(f)) if f(&fault, &mut SavedContext { uc: ctx }) => return,
            _ => {}
        }
    }
    // SAFETY: forwarding the kernel's own arguments.
    unsafe { chain(sig, info, uc) };
}

/// Hand a fault that is not urun's to the fallback handler.
///
/// # Safety
/// The arguments are the ones the kernel gave `on_fault`.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let Some(i) = signal_index(sig) else { return };
    let h = FALLBACK[i].load(Ordering::Acquire);
    // SAFETY: the kernel's siginfo.
    let synchronous = unsafe { (*info).si_code } > 0;
    if h == libc::SIG_DFL || (h == libc::SIG_IGN && synchronous) {
        // The default action, as if no handler were installed: back to
        // SIG_DFL; a fault then happens again when the instruction re-runs,
        // and a sent signal is raised again (blocked until we return). An
        // ignored fault cannot be ignored: Linux forces the default too.
        // SAFETY: async-signal-safe calls on our own process.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
            if !synchronous {
                libc::raise(sig);
            }
        }
    } else if h != libc::SIG_IGN {
        // SAFETY: `h` is a handler function. Both handler shapes are called
        // the SA_SIGINFO way: a one-argument handler ignores the other two
        // argument registers.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = unsafe { std::mem::transmute(h) };
        f(sig, info, uc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address where nothing is mapped, far from where the kernel
    /// places mappings (tests in parallel must not map there by chance).
    fn unmapped_page() -> u64 {
        const HOLE: u64 = 0x2bad_0000_0000;
        static CHECKED: std::sync::Once = std::sync::Once::new();
        // Checked once: the tests using it run in parallel.
        // SAFETY: MAP_FIXED_NOREPLACE fails rather than replace anything;
        // the page is unmapped at once: a hole nobody else asks for.
        CHECKED.call_once(|| unsafe {
            let p = libc::mmap(
                HOLE as *mut libc::c_void,
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            );
            assert_eq!(p as u64, HOLE, "the test's hole address is in use");
            libc::munmap(p, 4096);
        });
        HOLE
    }

    fn page(prot: i32) -> u64 {
        // SAFETY: a fresh mapping, leaked for the test.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), 8192, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert_ne!(p, libc::MAP_FAILED);
        p as u64
    }

    #[test]
    fn every_site_recovers_with_the_fault() {
        prepare_thread().expect("install");
        let hole = unmapped_page();
        let ro = page(libc::PROT_READ);
        let mapped = |f: HostFault, addr: u64, write: bool| {
            assert_eq!(f, HostFault { signo: libc::SIGSEGV, addr, write, code: SEGV_MAPERR });
            assert_eq!(f.to_fault_kind(), FaultKind::Page { addr, write, kind: PageFaultKind::NotMapped });
        };
        // SAFETY: every access below targets a hole or a read-only page, and
        // the routines recover from the fault.
        unsafe {
            for size in [1, 2, 4, 8] {
                mapped(load(hole + 8, size).unwrap_err(), hole + 8, false);
                mapped(store(hole + 16, size, 7).unwrap_err(), hole + 16, true);
                mapped(cas(hole + 32, size, 0, 1).unwrap_err(), hole + 32, true);
                let e = store(ro, size, 1).unwrap_err();
                assert_eq!((e.code, e.write), (2, true), "SEGV_ACCERR on a read-only page");
                assert_eq!(
                    e.to_fault_kind(),
                    FaultKind::Page { addr: ro, write: true, kind: PageFaultKind::Protection }
                );
                assert_eq!(load(ro, size), Ok(0));
            }
            mapped(load128(hole).unwrap_err(), hole, false);
            mapped(store128(hole, 1).unwrap_err(), hole, true);
            mapped(cas128(hole, 0, 1).unwrap_err(), hole, true);
            mapped(flush(hole).unwrap_err(), hole, false);
            for size in [1u8, 2, 4, 8] {
                let e = fill(hole, 0, 3, size).unwrap_err();
                assert_eq!(e.done, 0);
                mapped(e.fault, hole, true);
            }
        }
    }

    #[test]
    fn a_page_past_the_end_of_its_file_is_sigbus() {
        prepare_thread().expect("install");
        // SAFETY: an empty memfd of our own, mapped one page long: the page
        // has nothing behind it.
        let p = unsafe {
            let fd = libc::memfd_create(c"urun-hostfault-test".as_ptr(), libc::MFD_CLOEXEC);
            assert!(fd >= 0);
            let p = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, fd, 0);
            libc::close(fd);
            assert_ne!(p, libc::MAP_FAILED);
            p as u64
        };
        // SAFETY: the page is mapped; the routine recovers from the SIGBUS.
        let e = unsafe { load(p + 8, 8) }.unwrap_err();
        assert_eq!((e.signo, e.addr, e.code), (libc::SIGBUS, p + 8, 2), "BUS_ADRERR");
        assert_eq!(e.to_fault_kind(), FaultKind::Page { addr: p + 8, write: false, kind: PageFaultKind::Bus });
    }

    #[test]
    fn copies_stop_at_the_hole() {
        prepare_thread().expect("install");
        // Two pages, the second without access (not unmapped: a test in
        // parallel could map something there): a copy runs into it.
        let p = page(libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: our own mapping.
        unsafe { libc::mprotect((p + 4096) as *mut libc::c_void, 4096, libc::PROT_NONE) };
        let mut buf = vec![0u8; 200];
        // SAFETY: the source starts in our page and runs into the hole.
        let e = unsafe { copy_from_guest(&mut buf, p + 4000) }.unwrap_err();
        assert_eq!((e.fault.addr, e.fault.write), (p + 4096, false));
        assert!(e.done <= 96, "done {}", e.done);
        // SAFETY: as above, writing.
        let e = unsafe { copy_to_guest(p + 4000, &buf) }.unwrap_err();
        assert_eq!((e.fault.addr, e.fault.write), (p + 4096, true));
        // SAFETY: in the mapped page.
        unsafe {
            copy_to_guest(p + 8, &[1, 2, 3]).expect("mapped");
            assert_eq!(read_guest::<[u8; 3]>(p + 8), Ok([1, 2, 3]));
            write_guest(p + 16, &0x1122_3344u32).expect("mapped");
            assert_eq!(load(p + 16, 4), Ok(0x1122_3344));
            assert_eq!(cas(p + 16, 4, 0x1122_3344, 5), Ok(0x1122_3344));
            assert_eq!(cas(p + 16, 4, 0x1122_3344, 6), Ok(5));
            assert_eq!(cas128(p + 32, 0, 9), Ok(0));
            assert_eq!(load128(p + 32), Ok(9));
            fill(p + 64, 0xabcd, 4, 2).expect("mapped");
            assert_eq!(load(p + 64, 8), Ok(0xabcd_abcd_abcd_abcd));
        }
    }

    #[test]
    fn sites_table_is_complete() {
        // One site per routine, each with a landing inside the routines.
        assert_eq!(sites().len(), 21);
        assert!(sites().iter().all(|s| s.pc != 0 && s.landing != 0));
    }

    /// Run `f` in a forked child and return its wait status.
    fn in_child(f: impl FnOnce()) -> i32 {
        // SAFETY: the child only makes async-signal-safe calls before
        // `_exit` (`f` does no allocation).
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                f();
                libc::_exit(0);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            status
        }
    }

    extern "C" fn exit_42(_: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(42) };
    }

    #[test]
    fn faults_elsewhere_go_to_the_previous_handler() {
        prepare_thread().expect("install");
        let hole = unmapped_page();
        // A fault outside the sites, with a handler behind ours: it runs.
        let status = in_child(|| {
            set_fallback(libc::SIGSEGV, Some(exit_42 as *const () as usize)).expect("ours");
            // SAFETY: deliberately faulting.
            unsafe { std::ptr::read_volatile(hole as *const u8) };
        });
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 42, "status {status:#x}");
        // With SIG_DFL behind ours: killed by SIGSEGV, as with no handler.
        let status = in_child(|| {
            set_fallback(libc::SIGSEGV, Some(libc::SIG_DFL)).expect("ours");
            // SAFETY: deliberately faulting.
            unsafe { std::ptr::read_volatile(hole as *const u8) };
        });
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV, "status {status:#x}");
        // A SIGSEGV sent (not a fault) with SIG_DFL behind: re-raised.
        let status = in_child(|| {
            set_fallback(libc::SIGSEGV, Some(libc::SIG_DFL)).expect("ours");
            // SAFETY: signalling ourselves.
            unsafe { libc::raise(libc::SIGSEGV) };
        });
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV, "status {status:#x}");
        // A fault at a site while no guest access is in progress (the
        // routine called behind the module's back) is not claimed.
        let status = in_child(|| {
            set_fallback(libc::SIGSEGV, Some(exit_42 as *const () as usize)).expect("ours");
            // SAFETY: deliberately faulting, outside `guarded`.
            unsafe { asm!("call {f}", f = sym urun_hf_load8, in("rdi") hole, out("rax") _, out("rdx") _) };
        });
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 42, "status {status:#x}");
    }

    fn to_landing(_: &HostFault, ctx: &mut SavedContext<'_>) -> bool {
        // The test's "translated code" is `mov al, [rdi]; ret` at a known
        // page: skip the two-byte load, report in RCX.
        let pc = ctx.pc();
        ctx.set_pc(pc + 2);
        ctx.set_reg(1, 0xfa17);
        true
    }

    #[test]
    fn registered_code_range_recovers_by_its_policy() {
        prepare_thread().expect("install");
        let hole = unmapped_page();
        let code = page(libc::PROT_READ | libc::PROT_WRITE);
        // mov al, [rdi] (8a 07); ret (c3)
        // SAFETY: our own page, then made executable.
        unsafe {
            std::ptr::copy_nonoverlapping([0x8a, 0x07, 0xc3].as_ptr(), code as *mut u8, 3);
            assert_eq!(libc::mprotect(code as *mut libc::c_void, 4096, libc::PROT_READ | libc::PROT_EXEC), 0);
        }
        let id = register_code_range(code as usize, code as usize + 3, Recovery::Handler(to_landing)).expect("room");
        let rcx: u64;
        {
            let _g = InGuest::enter();
            // SAFETY: calls the three bytes above, which fault on the hole
            // and are recovered by `to_landing` (past the load, RCX set).
            unsafe {
                std::arch::asm!("call {f}", f = in(reg) code, in("rdi") hole, out("rcx") rcx,
                    out("rax") _, clobber_abi("C"));
            }
        }
        unregister_code_range(id);
        assert_eq!(rcx, 0xfa17);
    }

    #[test]
    fn std_threads_have_an_alternate_stack() {
        std::thread::spawn(|| {
            // SAFETY: a query only.
            let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            assert_eq!(unsafe { libc::sigaltstack(std::ptr::null(), &mut old) }, 0);
            let std_gave_one = old.ss_flags & libc::SS_DISABLE == 0;
            prepare_thread().expect("prepare");
            // SAFETY: as above.
            assert_eq!(unsafe { libc::sigaltstack(std::ptr::null(), &mut old) }, 0);
            assert_eq!(old.ss_flags & libc::SS_DISABLE, 0, "no alternate stack (std gave one: {std_gave_one})");
        })
        .join()
        .expect("thread");
    }
}
