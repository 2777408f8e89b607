//! Guest architectural state: registers, RFLAGS (computed lazily), segment
//! bases, SSE/AVX and x87 state.

pub use crate::cpuid::Vendor;

/// Indices of the general-purpose registers in `CpuState::gpr`.
pub mod reg {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
    pub const R8: usize = 8;
    pub const R9: usize = 9;
    pub const R10: usize = 10;
    pub const R11: usize = 11;
    pub const R12: usize = 12;
    pub const R13: usize = 13;
    pub const R14: usize = 14;
    pub const R15: usize = 15;
}

/// RFLAGS bits.
pub mod fl {
    pub const CF: u64 = 1 << 0;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const AC: u64 = 1 << 18;
    pub const ID: u64 = 1 << 21;
    /// The six arithmetic status flags.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
    /// Flags user code may change with POPF.
    pub const USER_WRITABLE: u64 = STATUS | TF | DF | AC | ID;
}

/// The operation whose result the lazy flags describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagOp {
    /// Flags are materialised in `Flags::bits`.
    None,
    /// `res = a + b + carry_in` (ADD, ADC).
    Add,
    /// `res = a - b - borrow_in` (SUB, SBB, CMP, NEG with a = 0).
    Sub,
    /// AND, OR, XOR, TEST: CF = OF = 0, AF undefined (0, as AMD Zen 5 and,
    /// by Intel's published model, Intel leave it).
    Logic,
    /// INC: like ADD a+1 but CF kept from `bits`.
    Inc,
    /// DEC: like SUB a-1 but CF kept from `bits`.
    Dec,
}

/// RFLAGS with lazy evaluation of the status flags: ALU instructions record
/// their operands and result, and the flags are computed only when read.
#[derive(Clone, Copy, Debug)]
pub struct Flags {
    /// Materialised RFLAGS; the status bits are stale while `op != None`
    /// (except CF for Inc/Dec, which is always current here).
    bits: u64,
    op: FlagOp,
    /// Operand width in bytes: 1, 2, 4 or 8.
    size: u8,
    /// Carry or borrow in (ADC/SBB).
    carry_in: bool,
    a: u64,
    b: u64,
    res: u64,
}

impl Default for Flags {
    fn default() -> Self {
        Flags { bits: 0x202, op: FlagOp::None, size: 8, carry_in: false, a: 0, b: 0, res: 0 }
    }
}

/// Mask of an operand of `size` bytes.
#[inline]
pub fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size as u32 * 8)) - 1
    }
}

/// Sign bit of an operand of `size` bytes.
#[inline]
pub fn sign_bit(size: u8) -> u64 {
    1u64 << (size as u32 * 8 - 1)
}

/// Parity flag of the low byte: set when it has an even number of ones.
#[inline]
pub fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

impl Flags {
    /// Record an ALU result for lazy flag computation.
    #[inline]
    pub fn set_lazy(&mut self, op: FlagOp, size: u8, a: u64, b: u64, res: u64, carry_in: bool) {
        if matches!(op, FlagOp::Inc | FlagOp::Dec) {
            let cf = self.cf();
            self.bits = (self.bits & !fl::CF) | cf as u64;
        }
        self.op = op;
        self.size = size;
        self.a = a;
        self.b = b;
        self.res = res;
        self.carry_in = carry_in;
    }

    #[inline]
    fn res(&self) -> u64 {
        self.res & mask(self.size)
    }

    #[inline]
    pub fn cf(&self) -> bool {
        let m = mask(self.size);
        match self.op {
            FlagOp::None | FlagOp::Inc | FlagOp::Dec => self.bits & fl::CF != 0,
            FlagOp::Add => {
                let r = self.res();
                r < (self.a & m) || (self.carry_in && r == (self.a & m))
            }
            FlagOp::Sub => {
                let (a, b) = (self.a & m, self.b & m);
                a < b || (self.carry_in && a == b)
            }
            FlagOp::Logic => false,
        }
    }

    #[inline]
    pub fn zf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & fl::ZF != 0,
            _ => self.res() == 0,
        }
    }

    #[inline]
    pub fn sf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & fl::SF != 0,
            _ => self.res & sign_bit(self.size) != 0,
        }
    }

    #[inline]
    pub fn pf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & fl::PF != 0,
            _ => parity(self.res),
        }
    }

    #[inline]
    pub fn af(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & fl::AF != 0,
            FlagOp::Logic => false,
            _ => (self.a ^ self.b ^ self.res) & 0x10 != 0,
        }
    }

    #[inline]
    pub fn of(&self) -> bool {
        let s = sign_bit(self.size);
        match self.op {
            FlagOp::None => self.bits & fl::OF != 0,
            FlagOp::Add | FlagOp::Inc => (!(self.a ^ self.b) & (self.a ^ self.res)) & s != 0,
            FlagOp::Sub | FlagOp::Dec => ((self.a ^ self.b) & (self.a ^ self.res)) & s != 0,
            FlagOp::Logic => false,
        }
    }

    #[inline]
    pub fn df(&self) -> bool {
        self.bits & fl::DF != 0
    }

    /// The full RFLAGS value.
    pub fn get(&self) -> u64 {
        if self.op == FlagOp::None {
            return self.bits;
        }
        let mut v = self.bits & !fl::STATUS;
        v |= self.cf() as u64 * fl::CF;
        v |= self.pf() as u64 * fl::PF;
        v |= self.af() as u64 * fl::AF;
        v |= self.zf() as u64 * fl::ZF;
        v |= self.sf() as u64 * fl::SF;
        v |= self.of() as u64 * fl::OF;
        v
    }

    /// Replace RFLAGS (bit 1 always reads as 1).
    pub fn set(&mut self, v: u64) {
        self.bits = v | 2;
        self.op = FlagOp::None;
    }

    /// Set or clear the bits in `which` to `on`.
    #[inline]
    pub fn set_bits(&mut self, which: u64, on: bool) {
        let v = self.get();
        self.set(if on { v | which } else { v & !which });
    }

    /// Replace only the status flags in `which` with those of `v`.
    #[inline]
    pub fn set_masked(&mut self, which: u64, v: u64) {
        let cur = self.get();
        self.set((cur & !which) | (v & which));
    }

    /// Evaluate condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc).
    #[inline]
    pub fn cond(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.pf(),
            6 => self.sf() != self.of(),
            _ => self.zf() || (self.sf() != self.of()),
        };
        r != (cc & 1 != 0)
    }
}

/// x87 FPU state. Registers are kept as raw 80-bit values (in the low 10
/// bytes) by physical register number, as FXSAVE lays them out.
#[derive(Clone, Copy, Debug)]
pub struct X87 {
    pub st: [[u8; 10]; 8],
    pub fcw: u16,
    pub fsw: u16,
    /// Full tag word (2 bits a register: 00 valid, 01 zero, 10 special, 11 empty).
    pub ftw: u16,
    pub fop: u16,
    pub fip: u64,
    pub fdp: u64,
}

impl Default for X87 {
    fn default() -> Self {
        X87 { st: [[0; 10]; 8], fcw: 0x037f, fsw: 0, ftw: 0xffff, fop: 0, fip: 0, fdp: 0 }
    }
}

/// The architectural state of one guest thread.
#[derive(Clone, Debug)]
pub struct CpuState {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub flags: Flags,
    pub fs_base: u64,
    pub gs_base: u64,
    /// Segment selectors, in iced's order ES, CS, SS, DS, FS, GS (`sreg::*`).
    /// CS and SS are Linux's 64-bit user selectors; the others start null.
    pub seg: [u16; 6],
    pub xmm: [u128; 16],
    /// The upper halves (bits 255:128) of YMM0..15: AVX state. Legacy SSE
    /// forms leave them alone, VEX.128 forms zero them.
    pub ymm_hi: [u128; 16],
    pub mxcsr: u32,
    pub x87: X87,
    /// Whose CPUs the interpreter imitates where the manuals leave a result
    /// undefined: the host's vendor (see `interp::ops::vendor`), settable
    /// so tests can run either model on any host.
    pub vendor: Vendor,
}

/// Indices into `CpuState::seg`, and Linux's user selectors.
pub mod sreg {
    pub const ES: usize = 0;
    pub const CS: usize = 1;
    pub const SS: usize = 2;
    pub const DS: usize = 3;
    pub const FS: usize = 4;
    pub const GS: usize = 5;
    /// __USER_CS: 64-bit code, DPL 3.
    pub const USER_CS: u16 = 0x33;
    /// __USER_DS: data, DPL 3.
    pub const USER_DS: u16 = 0x2b;
}

impl Default for CpuState {
    fn default() -> Self {
        CpuState {
            gpr: [0; 16],
            rip: 0,
            flags: Flags::default(),
            fs_base: 0,
            gs_base: 0,
            seg: [0, sreg::USER_CS, sreg::USER_DS, 0, 0, 0],
            xmm: [0; 16],
            ymm_hi: [0; 16],
            mxcsr: 0x1f80,
            x87: X87::default(),
            vendor: Vendor::host(),
        }
    }
}

impl CpuState {
    /// RFLAGS as the guest would read it with PUSHF.
    pub fn rflags(&self) -> u64 {
        self.flags.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (op, size, a, b, carry_in) -> expected status flags, computed by hand.
    fn check(op: FlagOp, size: u8, a: u64, b: u64, cin: bool, expect: u64) {
        let res = match op {
            FlagOp::Add | FlagOp::Inc => a.wrapping_add(b).wrapping_add(cin as u64),
            FlagOp::Sub | FlagOp::Dec => a.wrapping_sub(b).wrapping_sub(cin as u64),
            _ => a & b,
        } & mask(size);
        let mut f = Flags::default();
        f.set_lazy(op, size, a, b, res, cin);
        assert_eq!(f.get() & fl::STATUS, expect, "{op:?} size {size} a {a:#x} b {b:#x} cin {cin}");
    }

    #[test]
    fn flag_table() {
        use fl::*;
        check(FlagOp::Add, 1, 0xff, 1, false, CF | ZF | PF | AF);
        check(FlagOp::Add, 1, 0x7f, 1, false, OF | SF | AF);
        check(FlagOp::Add, 8, u64::MAX, 0, true, CF | ZF | PF | AF);
        check(FlagOp::Sub, 4, 0, 1, false, CF | SF | PF | AF);
        check(FlagOp::Sub, 2, 0x8000, 1, false, OF | PF | AF);
        check(FlagOp::Sub, 8, 5, 5, false, ZF | PF);
        check(FlagOp::Sub, 1, 5, 5, true, CF | SF | PF | AF);
        check(FlagOp::Logic, 8, 0x80, 0x80, false, 0);
    }

    #[test]
    fn conditions() {
        let mut f = Flags::default();
        f.set_lazy(FlagOp::Sub, 8, 1, 2, 1u64.wrapping_sub(2), false);
        assert!(f.cond(0x2)); // B
        assert!(f.cond(0xc)); // L
        assert!(!f.cond(0x4)); // E
        assert!(f.cond(0x6)); // BE
        assert!(!f.cond(0xf)); // G
    }
}
