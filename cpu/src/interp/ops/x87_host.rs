//! The host fence for x87 arithmetic: the guest's x87 state is loaded into
//! the host's own FPU, one x87 instruction runs there, and the state is
//! saved back. The host FPU is exact by construction, so every result,
//! status bit and tag matches hardware bit for bit.
//!
//! One `asm!` block does all of it, so no Rust code ever runs while the host
//! FPU holds guest state:
//!
//! ```text
//! fxsave64  [host]    ; the host's own x87/SSE state
//! fxrstor64 [image]   ; the guest's x87 state, exception masks forced on
//! sahf                ; guest CF/PF/ZF for FCMOVcc
//! .byte OP, MODRM     ; the guest instruction; a memory operand is [rdi]
//! lahf                ; CF/PF/ZF from FCOMI and kin
//! fxsave64  [image]
//! fxrstor64 [host]    ; the host's x87, MXCSR and XMM registers come back
//! ```
//!
//! The image always has all six exception masks set and ES/B clear, so the
//! instruction never raises #MF on the host (FXSAVE and FXRSTOR never wait
//! for pending exceptions either). The caller compares the new exception
//! flags with the guest's own masks afterwards.
//!
//! Each form is one instantiation of `exec::<OP, MODRM>`: the register
//! forms (`OP` D8..DF, `MODRM` C0..FF) and the memory forms (`MODRM` =
//! `reg << 3 | 7`, i.e. `[rdi]`). Only forms the dispatch table registers
//! are ever called, so reserved encodings never run on the host.

use std::arch::asm;

use crate::state::X87;

/// A 512-byte FXSAVE area.
#[repr(C, align(16))]
#[derive(Clone)]
pub(crate) struct Fx(pub [u8; 512]);

impl Fx {
    pub(crate) fn zeroed() -> Fx {
        Fx([0; 512])
    }
    pub(crate) fn u16_at(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }
    pub(crate) fn put_u16(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }
    pub(crate) fn put_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// Offsets in the FXSAVE layout.
pub(crate) mod fx {
    pub const FCW: usize = 0;
    pub const FSW: usize = 2;
    pub const FTW: usize = 4;
    pub const MXCSR: usize = 24;
    pub const MXCSR_MASK: usize = 28;
    /// ST(0)..ST(7) in stack order, 16 bytes apart.
    pub const ST: usize = 32;
    /// XMM0..XMM15.
    pub const XMM: usize = 160;
}

/// FSW bits.
pub(crate) mod sw {
    /// The six exception flags.
    pub const EXCEPTIONS: u16 = 0x3f;
    /// Stack fault.
    pub const SF: u16 = 0x40;
    /// Error summary.
    pub const ES: u16 = 0x80;
    /// Busy (mirrors ES).
    pub const B: u16 = 0x8000;
}

/// TOP from a status word.
#[inline]
pub(crate) fn top(fsw: u16) -> usize {
    ((fsw >> 11) & 7) as usize
}

/// The full 2-bit tag of a non-empty register from its contents:
/// 0 valid, 1 zero, 2 special (NaN, infinity, denormal, unnormal, pseudo-*).
pub(crate) fn tag_of(r: &[u8; 10]) -> u16 {
    let exp = u16::from_le_bytes([r[8], r[9]]) & 0x7fff;
    let sig = u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]);
    match exp {
        0x7fff => 2,
        0 if sig == 0 => 1,
        0 => 2,
        _ if sig >> 63 == 0 => 2,
        _ => 0,
    }
}

/// The full tag word from the abridged one (bit per physical register,
/// set when it is not empty) and the registers' contents.
pub(crate) fn full_tag(abridged: u8, st: &[[u8; 10]; 8]) -> u16 {
    (0..8).fold(0, |w, p| {
        let t = if abridged >> p & 1 == 0 { 3 } else { tag_of(&st[p]) };
        w | t << (2 * p)
    })
}

/// The abridged tag (bit set for each non-empty physical register).
pub(crate) fn abridged_tag(ftw: u16) -> u8 {
    (0..8).fold(0, |a, p| if (ftw >> (2 * p)) & 3 != 3 { a | 1 << p } else { a })
}

/// Write the x87 part of an FXSAVE image (FCW, FSW, tags, registers);
/// FOP, FIP and FDP are written as zero.
pub(crate) fn put_x87(img: &mut Fx, x: &X87, fcw: u16, fsw: u16) {
    img.put_u16(fx::FCW, fcw);
    img.put_u16(fx::FSW, fsw);
    img.0[fx::FTW] = abridged_tag(x.ftw);
    img.0[fx::FTW + 1] = 0;
    img.0[6..24].fill(0);
    let t = top(fsw);
    for j in 0..8 {
        let at = fx::ST + 16 * j;
        img.0[at..at + 10].copy_from_slice(&x.st[(t + j) & 7]);
        img.0[at + 10..at + 16].fill(0);
    }
}

/// Read the x87 part of an FXSAVE image back: registers, FSW and the full
/// tag word; FCW is left to the caller. FOP/FIP/FDP become zero.
pub(crate) fn get_x87(img: &Fx, x: &mut X87) {
    let fsw = img.u16_at(fx::FSW);
    let t = top(fsw);
    for j in 0..8 {
        let at = fx::ST + 16 * j;
        x.st[(t + j) & 7].copy_from_slice(&img.0[at..at + 10]);
    }
    x.fsw = fsw;
    x.ftw = full_tag(img.0[fx::FTW], &x.st);
    x.fop = 0;
    x.fip = 0;
    x.fdp = 0;
}

/// The image a host run starts from: the guest's registers with every
/// exception masked and no exception pending, and a valid default MXCSR.
pub(crate) fn fenced_image(x: &X87) -> Fx {
    let mut img = Fx::zeroed();
    put_x87(&mut img, x, x.fcw | sw::EXCEPTIONS, x.fsw & !(sw::ES | sw::B));
    img.put_u32(fx::MXCSR, 0x1f80);
    img
}

/// One host instruction: `img` in and out, `mem` is the memory operand,
/// `ah` the guest's low RFLAGS byte in and the host's out (bits 8..15).
pub(crate) type HostFn = unsafe fn(&mut Fx, *mut u8, u64) -> u64;

/// Run `OP MODRM` on the host FPU from `img`.
///
/// # Safety
/// `img` must hold a valid FXSAVE image with all exception masks set in
/// FCW, ES clear in FSW and a valid MXCSR; `OP MODRM` must be an x87
/// instruction the host implements that touches no memory other than at
/// most 128 bytes at `mem`, which must be valid for them.
unsafe fn exec<const OP: u8, const MODRM: u8>(img: &mut Fx, mem: *mut u8, ax: u64) -> u64 {
    let mut host = Fx::zeroed();
    let mut ax = ax;
    // SAFETY: the caller guarantees the image and the operand; the host
    // state is saved first and restored last in the same block, so Rust
    // code never sees guest x87, MXCSR or XMM state. No exception can be
    // raised: masks are all set and nothing is pending.
    unsafe {
        asm!(
            "fxsave64 [{host}]",
            "fxrstor64 [{img}]",
            "sahf",
            ".byte {op}, {modrm}",
            "lahf",
            "fxsave64 [{img}]",
            "fxrstor64 [{host}]",
            host = in(reg) host.0.as_mut_ptr(),
            img = in(reg) img.0.as_mut_ptr(),
            op = const OP,
            modrm = const MODRM,
            in("rdi") mem,
            inout("rax") ax,
            options(nostack),
        );
    }
    ax
}

macro_rules! rm_row {
    ($op:literal, $reg:literal) => {
        [
            exec::<$op, { 0xc0 | ($reg << 3) }>,
            exec::<$op, { 0xc1 | ($reg << 3) }>,
            exec::<$op, { 0xc2 | ($reg << 3) }>,
            exec::<$op, { 0xc3 | ($reg << 3) }>,
            exec::<$op, { 0xc4 | ($reg << 3) }>,
            exec::<$op, { 0xc5 | ($reg << 3) }>,
            exec::<$op, { 0xc6 | ($reg << 3) }>,
            exec::<$op, { 0xc7 | ($reg << 3) }>,
        ]
    };
}

macro_rules! reg_forms {
    ($op:literal) => {
        [
            rm_row!($op, 0),
            rm_row!($op, 1),
            rm_row!($op, 2),
            rm_row!($op, 3),
            rm_row!($op, 4),
            rm_row!($op, 5),
            rm_row!($op, 6),
            rm_row!($op, 7),
        ]
    };
}

macro_rules! mem_forms {
    ($op:literal) => {
        [
            exec::<$op, 0x07>,
            exec::<$op, 0x0f>,
            exec::<$op, 0x17>,
            exec::<$op, 0x1f>,
            exec::<$op, 0x27>,
            exec::<$op, 0x2f>,
            exec::<$op, 0x37>,
            exec::<$op, 0x3f>,
        ]
    };
}

/// Register forms: `[OP - 0xD8][reg][rm]` for ModRM `11 reg rm`.
static REG_FORMS: [[[HostFn; 8]; 8]; 8] = [
    reg_forms!(0xd8),
    reg_forms!(0xd9),
    reg_forms!(0xda),
    reg_forms!(0xdb),
    reg_forms!(0xdc),
    reg_forms!(0xdd),
    reg_forms!(0xde),
    reg_forms!(0xdf),
];

/// Memory forms: `[OP - 0xD8][reg]` with the operand at `[rdi]`.
static MEM_FORMS: [[HostFn; 8]; 8] = [
    mem_forms!(0xd8),
    mem_forms!(0xd9),
    mem_forms!(0xda),
    mem_forms!(0xdb),
    mem_forms!(0xdc),
    mem_forms!(0xdd),
    mem_forms!(0xde),
    mem_forms!(0xdf),
];

/// The host routine for escape opcode `op` (D8..DF) and ModRM `modrm`;
/// a memory ModRM selects the `[rdi]` form with the same `reg` field.
pub(crate) fn host_fn(op: u8, modrm: u8) -> HostFn {
    let o = (op & 7) as usize;
    let reg = ((modrm >> 3) & 7) as usize;
    if modrm >= 0xc0 {
        REG_FORMS[o][reg][(modrm & 7) as usize]
    } else {
        MEM_FORMS[o][reg]
    }
}

/// EMMS on the host from `img`.
pub(crate) fn emms(img: &mut Fx) {
    let mut scratch = [0u8; 16];
    // SAFETY: `img` comes from `fenced_image` by the callers' contract of
    // this module; EMMS touches no memory.
    unsafe { exec::<0x0f, 0x77>(img, scratch.as_mut_ptr(), 0) };
}

/// The host's MXCSR_MASK (the MXCSR bits FXRSTOR accepts), read once.
pub(crate) fn mxcsr_mask() -> u32 {
    static MASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MASK.get_or_init(|| {
        let mut img = Fx::zeroed();
        // SAFETY: FXSAVE only writes the 512-byte, 16-aligned area given;
        // it changes no register state.
        unsafe { asm!("fxsave64 [{p}]", p = in(reg) img.0.as_mut_ptr(), options(nostack)) };
        match img.u32_at(fx::MXCSR_MASK) {
            0 => 0xffbf,
            m => m,
        }
    })
}
