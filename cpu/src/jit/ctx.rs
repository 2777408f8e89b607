//! The per-thread JIT context (`Ctx`) and the three assembly routines that
//! move between urun and translated code: `enter`, the dispatcher and
//! `exit`.
//!
//! `Ctx` lives in urun's own static TLS (a `.tbss` symbol defined below), so
//! translated code reaches it as `fs:[urun_jit_ctx@tpoff + field]`: FS stays
//! urun's own while guest code runs. The guest's FS base is put in **GS**
//! instead, and every FS-prefixed guest instruction is copied with a GS
//! prefix (see `translate.rs`). Signal handlers, which run with the
//! interrupted thread's FS, therefore find urun's TLS intact.

use std::arch::global_asm;

/// Why translated code came back to Rust (`Ctx::reason`).
pub(crate) mod reason {
    /// The dispatcher found no translation for `Ctx::rip`.
    pub const MISS: u32 = 1;
    /// SYSCALL; `Ctx::rip` is past it.
    pub const SYSCALL: u32 = 2;
    /// The interrupt flag was set.
    pub const INTERRUPTED: u32 = 3;
    /// A host fault in translated code; `Ctx::rip` is the guest instruction.
    pub const FAULT: u32 = 4;
    /// A write to a write-protected code page (now writable again, its
    /// code invalidated); `Ctx::rip` is the writing instruction, which has
    /// not run.
    pub const CODE_WRITE: u32 = 5;
}

/// Offsets of `Ctx` fields, for the assembly and the code generator.
pub(crate) mod off {
    pub const GPR: i32 = 0x00;
    pub const RIP: i32 = 0x80;
    pub const RFLAGS: i32 = 0x88;
    pub const HOST_RSP: i32 = 0x90;
    pub const REASON: i32 = 0x98;
    pub const S_RCX: i32 = 0xa0;
    pub const S_RAX: i32 = 0xa8;
    pub const S_RDX: i32 = 0xb0;
    pub const S_TARGET: i32 = 0xb8;
    pub const TABLE: i32 = 0xc0;
    pub const INTERRUPT: i32 = 0xc8;
    pub const DISPATCH: i32 = 0xd0;
    pub const EXIT: i32 = 0xd8;
    pub const HOST_MXCSR: i32 = 0xe0;
    pub const FX: i32 = 0x100;
    pub const INDEX: i32 = 0x300;
    pub const MISS: i32 = 0x308;
    pub const AVX: i32 = 0x310;
    pub const YMM_HI: i32 = 0x340;
    pub const SIZE: usize = 0x440;
}

/// A fault recorded by the host-fault handler for the run loop.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FaultRecord {
    pub signo: i32,
    pub code: i32,
    pub addr: u64,
    pub write: u64,
}

/// The per-thread context. Layout is shared with the assembly (`off`).
#[repr(C, align(64))]
pub(crate) struct Ctx {
    /// Guest GPRs while urun runs (in `CpuState::gpr` order).
    pub gpr: [u64; 16],
    /// Guest RIP: the next block to run, or the faulting instruction.
    pub rip: u64,
    pub rflags: u64,
    pub host_rsp: u64,
    pub reason: u32,
    pub _pad0: u32,
    /// Spill slots of the dispatcher and the exit stubs.
    pub s_rcx: u64,
    pub s_rax: u64,
    pub s_rdx: u64,
    pub s_target: u64,
    /// The thread's lookup table: 65536 entries of (-guest pc, cache pc).
    pub table: u64,
    /// The engine's interrupt flag (an `AtomicBool`).
    pub interrupt: u64,
    pub dispatch: u64,
    pub exit: u64,
    pub host_mxcsr: u64,
    pub fault: FaultRecord,
    /// Guest x87/SSE state while urun runs (FXSAVE64 format).
    pub fx: [u8; 512],
    /// The running engine's code index (for the fault handler).
    pub index: u64,
    /// The routine a lookup miss goes to (`urun_jit_miss`).
    pub miss: u64,
    /// Nonzero when the CPU model has AVX: `enter` and `exit` then move the
    /// YMM upper halves between the machine and `ymm_hi`.
    pub avx: u64,
    pub _pad2: [u64; 5],
    /// Guest YMM upper halves while urun runs (urun's own libc clobbers
    /// them).
    pub ymm_hi: [u128; 16],
}

const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(Ctx, gpr) == off::GPR as usize);
    assert!(offset_of!(Ctx, rip) == off::RIP as usize);
    assert!(offset_of!(Ctx, rflags) == off::RFLAGS as usize);
    assert!(offset_of!(Ctx, host_rsp) == off::HOST_RSP as usize);
    assert!(offset_of!(Ctx, reason) == off::REASON as usize);
    assert!(offset_of!(Ctx, s_rcx) == off::S_RCX as usize);
    assert!(offset_of!(Ctx, s_rax) == off::S_RAX as usize);
    assert!(offset_of!(Ctx, s_rdx) == off::S_RDX as usize);
    assert!(offset_of!(Ctx, s_target) == off::S_TARGET as usize);
    assert!(offset_of!(Ctx, table) == off::TABLE as usize);
    assert!(offset_of!(Ctx, interrupt) == off::INTERRUPT as usize);
    assert!(offset_of!(Ctx, dispatch) == off::DISPATCH as usize);
    assert!(offset_of!(Ctx, exit) == off::EXIT as usize);
    assert!(offset_of!(Ctx, host_mxcsr) == off::HOST_MXCSR as usize);
    assert!(offset_of!(Ctx, fx) == off::FX as usize);
    assert!(offset_of!(Ctx, index) == off::INDEX as usize);
    assert!(offset_of!(Ctx, miss) == off::MISS as usize);
    assert!(offset_of!(Ctx, avx) == off::AVX as usize);
    assert!(offset_of!(Ctx, ymm_hi) == off::YMM_HI as usize);
    assert!(std::mem::size_of::<Ctx>() == off::SIZE);
};

// The routines address `Ctx` as fs:[urun_jit_ctx@tpoff + field] (the
// local-exec TLS model: urun is an executable, its TLS block is static).
//
// enter(target): save urun's callee-saved registers, stack and MXCSR, load
// the guest state from Ctx and jump to `target` in the code cache.
//
// dispatch: rcx = next guest pc, guest rcx in S_RCX. Flags-free (lea,
// movzx, jrcxz): check the interrupt flag, look the pc up in the table and
// jump to its translation's `ibl` entry (with RAX, RDX and RCX in their
// slots, which that entry reloads); otherwise exit with MISS or
// INTERRUPTED.
//
// miss: where empty table entries (and inline lookups that miss) lead,
// with RCX = pc + tag + interrupt byte, RAX = the byte (the dispatcher: 0)
// and RDX = the tag's address. It tries the entry's second way the same
// way (RCX - tag + tag2, flags-free: `not` and `lea`) and jumps to its
// cache pc on a match; otherwise (miss2, where empty second-way entries 0
// and 0xfffe lead too, with RAX = their tag) it stores pc = RCX - tag2 -
// byte in Ctx.rip and exits. RAX, RDX and RCX are in their slots.
//
// exit: every guest register is live; store them in Ctx, back to urun's
// stack, save flags and x87/SSE state, give urun a clean MXCSR, x87 and
// RFLAGS, return from `enter`.
//
// With AVX in the model (`Ctx::avx`), enter also loads the YMM upper halves
// (VINSERTF128) after FXRSTOR64 and exit stores them (VEXTRACTF128) and
// clears them (VZEROUPPER) before urun's code runs again.
global_asm!(
    r#"
    .pushsection .tbss,"awT",@nobits
    .p2align 6
    .globl urun_jit_ctx
    .hidden urun_jit_ctx
    .type urun_jit_ctx,@object
    .size urun_jit_ctx,{size}
urun_jit_ctx:
    .zero {size}
    .popsection

    .text
    .p2align 4
    .globl urun_jit_enter
    .hidden urun_jit_enter
    .type urun_jit_enter,@function
urun_jit_enter:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    stmxcsr dword ptr [rsp]
    mov eax, dword ptr [rsp]
    mov qword ptr fs:[urun_jit_ctx@tpoff + {host_mxcsr}], rax
    mov qword ptr fs:[urun_jit_ctx@tpoff + {host_rsp}], rsp
    mov qword ptr fs:[urun_jit_ctx@tpoff + {s_target}], rdi
    fxrstor64 fs:[urun_jit_ctx@tpoff + {fx}]
    cmp qword ptr fs:[urun_jit_ctx@tpoff + {avx}], 0
    je 4f
    vinsertf128 ymm0, ymm0, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 0], 1
    vinsertf128 ymm1, ymm1, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 16], 1
    vinsertf128 ymm2, ymm2, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 32], 1
    vinsertf128 ymm3, ymm3, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 48], 1
    vinsertf128 ymm4, ymm4, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 64], 1
    vinsertf128 ymm5, ymm5, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 80], 1
    vinsertf128 ymm6, ymm6, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 96], 1
    vinsertf128 ymm7, ymm7, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 112], 1
    vinsertf128 ymm8, ymm8, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 128], 1
    vinsertf128 ymm9, ymm9, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 144], 1
    vinsertf128 ymm10, ymm10, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 160], 1
    vinsertf128 ymm11, ymm11, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 176], 1
    vinsertf128 ymm12, ymm12, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 192], 1
    vinsertf128 ymm13, ymm13, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 208], 1
    vinsertf128 ymm14, ymm14, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 224], 1
    vinsertf128 ymm15, ymm15, xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 240], 1
4:
    push qword ptr fs:[urun_jit_ctx@tpoff + {rflags}]
    popfq
    mov rax, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 0]
    mov rcx, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 8]
    mov rdx, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 16]
    mov rbx, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 24]
    mov rbp, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 40]
    mov rsi, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 48]
    mov rdi, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 56]
    mov r8, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 64]
    mov r9, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 72]
    mov r10, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 80]
    mov r11, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 88]
    mov r12, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 96]
    mov r13, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 104]
    mov r14, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 112]
    mov r15, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 120]
    mov rsp, qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 32]
    jmp qword ptr fs:[urun_jit_ctx@tpoff + {s_target}]
    .size urun_jit_enter, . - urun_jit_enter

    .p2align 4
    .globl urun_jit_dispatch
    .hidden urun_jit_dispatch
    .type urun_jit_dispatch,@function
urun_jit_dispatch:
    mov qword ptr fs:[urun_jit_ctx@tpoff + {rip}], rcx
    mov qword ptr fs:[urun_jit_ctx@tpoff + {s_rax}], rax
    mov qword ptr fs:[urun_jit_ctx@tpoff + {s_rdx}], rdx
    mov rax, qword ptr fs:[urun_jit_ctx@tpoff + {interrupt}]
    movzx ecx, byte ptr [rax]
    jrcxz 2f
    mov dword ptr fs:[urun_jit_ctx@tpoff + {reason}], {interrupted}
    jmp 3f
2:
    mov rcx, qword ptr fs:[urun_jit_ctx@tpoff + {rip}]
    mov eax, ecx
    bswap eax
    lea eax, [rcx + rax]
    movzx eax, ax
    mov rdx, qword ptr fs:[urun_jit_ctx@tpoff + {table}]
    lea rax, [rax * 4]
    lea rdx, [rdx + rax * 8]
    mov rax, qword ptr [rdx]
    lea rcx, [rcx + rax]
    jrcxz 1f
    mov dword ptr fs:[urun_jit_ctx@tpoff + {reason}], {miss}
3:
    mov rax, qword ptr fs:[urun_jit_ctx@tpoff + {s_rax}]
    mov rdx, qword ptr fs:[urun_jit_ctx@tpoff + {s_rdx}]
    mov rcx, qword ptr fs:[urun_jit_ctx@tpoff + {s_rcx}]
    jmp urun_jit_exit
1:
    mov eax, 0
    jmp qword ptr [rdx + {hosts}]
    .size urun_jit_dispatch, . - urun_jit_dispatch

    .p2align 4
    .globl urun_jit_miss
    .hidden urun_jit_miss
    .type urun_jit_miss,@function
urun_jit_miss:
    mov qword ptr fs:[urun_jit_ctx@tpoff + {s_target}], rax
    mov rax, qword ptr [rdx]
    not rax
    lea rcx, [rcx + rax + 1]
    mov rax, qword ptr [rdx + {way2}]
    lea rcx, [rcx + rax]
    jrcxz 5f
    .globl urun_jit_miss2
    .hidden urun_jit_miss2
urun_jit_miss2:
    not rax
    lea rcx, [rcx + rax + 1]
    mov rax, qword ptr fs:[urun_jit_ctx@tpoff + {s_target}]
    not rax
    lea rcx, [rcx + rax + 1]
    mov qword ptr fs:[urun_jit_ctx@tpoff + {rip}], rcx
    mov dword ptr fs:[urun_jit_ctx@tpoff + {reason}], {miss}
    mov rax, qword ptr fs:[urun_jit_ctx@tpoff + {s_rax}]
    mov rdx, qword ptr fs:[urun_jit_ctx@tpoff + {s_rdx}]
    mov rcx, qword ptr fs:[urun_jit_ctx@tpoff + {s_rcx}]
    jmp urun_jit_exit
5:
    jmp qword ptr [rdx + {way2} + {hosts}]
    .size urun_jit_miss, . - urun_jit_miss

    .p2align 4
    .globl urun_jit_exit
    .hidden urun_jit_exit
    .type urun_jit_exit,@function
urun_jit_exit:
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 0], rax
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 8], rcx
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 16], rdx
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 24], rbx
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 32], rsp
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 40], rbp
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 48], rsi
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 56], rdi
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 64], r8
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 72], r9
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 80], r10
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 88], r11
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 96], r12
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 104], r13
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 112], r14
    mov qword ptr fs:[urun_jit_ctx@tpoff + {gpr} + 120], r15
    mov rsp, qword ptr fs:[urun_jit_ctx@tpoff + {host_rsp}]
    pushfq
    pop qword ptr fs:[urun_jit_ctx@tpoff + {rflags}]
    fxsave64 fs:[urun_jit_ctx@tpoff + {fx}]
    cmp qword ptr fs:[urun_jit_ctx@tpoff + {avx}], 0
    je 4f
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 0], ymm0, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 16], ymm1, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 32], ymm2, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 48], ymm3, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 64], ymm4, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 80], ymm5, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 96], ymm6, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 112], ymm7, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 128], ymm8, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 144], ymm9, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 160], ymm10, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 176], ymm11, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 192], ymm12, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 208], ymm13, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 224], ymm14, 1
    vextractf128 xmmword ptr fs:[urun_jit_ctx@tpoff + {ymm_hi} + 240], ymm15, 1
    vzeroupper
4:
    fninit
    ldmxcsr dword ptr fs:[urun_jit_ctx@tpoff + {host_mxcsr}]
    push 2
    popfq
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
    .size urun_jit_exit, . - urun_jit_exit
"#,
    size = const off::SIZE,
    gpr = const off::GPR,
    rip = const off::RIP,
    rflags = const off::RFLAGS,
    host_rsp = const off::HOST_RSP,
    reason = const off::REASON,
    s_rcx = const off::S_RCX,
    s_rax = const off::S_RAX,
    s_rdx = const off::S_RDX,
    s_target = const off::S_TARGET,
    table = const off::TABLE,
    interrupt = const off::INTERRUPT,
    host_mxcsr = const off::HOST_MXCSR,
    fx = const off::FX,
    avx = const off::AVX,
    ymm_hi = const off::YMM_HI,
    miss = const reason::MISS,
    hosts = const super::translate::TABLE_HOSTS,
    way2 = const super::translate::TABLE_WAY2,
    interrupted = const reason::INTERRUPTED,
);

unsafe extern "C" {
    /// Run translated code at `target` with the guest state in `Ctx` until
    /// it exits; the reason is in `Ctx::reason`.
    pub(crate) fn urun_jit_enter(target: u64);
    fn urun_jit_dispatch();
    fn urun_jit_exit();
    fn urun_jit_miss();
    fn urun_jit_miss2();
}

/// Address of the routine an empty second-way entry leads to.
pub(crate) fn miss2_addr() -> u64 {
    urun_jit_miss2 as *const () as u64
}

/// Address of the dispatcher (translated code jumps there through `Ctx`).
pub(crate) fn dispatch_addr() -> u64 {
    urun_jit_dispatch as *const () as u64
}

/// Address of the exit routine.
pub(crate) fn exit_addr() -> u64 {
    urun_jit_exit as *const () as u64
}

/// Address of the routine an empty table entry leads to.
pub(crate) fn miss_addr() -> u64 {
    urun_jit_miss as *const () as u64
}

/// This thread's `Ctx`.
#[inline(always)]
pub(crate) fn ctx_ptr() -> *mut Ctx {
    let p: *mut Ctx;
    // SAFETY: fs:0 holds the thread pointer (x86-64 TLS ABI, glibc and
    // musl); adding the symbol's TP offset gives this thread's copy of it.
    unsafe {
        std::arch::asm!(
            "mov {p}, qword ptr fs:[0]",
            "lea {p}, [{p} + urun_jit_ctx@tpoff]",
            p = out(reg) p,
            options(nostack, readonly, preserves_flags)
        );
    }
    p
}

/// The offset of `Ctx` from the thread pointer: what generated code puts
/// in its `fs:` displacements. The same in every thread.
pub(crate) fn tp_offset() -> i32 {
    let tp: u64;
    // SAFETY: reads the thread pointer (fs:0).
    unsafe {
        std::arch::asm!("mov {t}, qword ptr fs:[0]", t = out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    (ctx_ptr() as u64).wrapping_sub(tp) as i64 as i32
}
