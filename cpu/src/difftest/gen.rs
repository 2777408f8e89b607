//! Random valid instances of an instruction form, built from the form's
//! `OpCodeInfo` operand kinds with iced's `Instruction` setters and
//! `Encoder`, and random starting states with edge values.

use iced_x86::{
    Code, Decoder, DecoderOptions, Encoder, FlowControl, Instruction, Mnemonic, OpCodeOperandKind as K, OpKind,
    Register,
};

use super::{full_tag, Fpu, State, EPI, INSN, LOW, PAD, WINDOW};
use crate::state::{fl, reg};

/// A small deterministic generator (xorshift64*).
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator for case `index` of `code` under `seed`: each case can
    /// be regenerated on its own.
    pub fn for_case(seed: u64, code: Code, index: u64) -> Rng {
        let mut z =
            seed ^ (code as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    #[allow(clippy::should_implement_trait)] // an infinite generator, not an iterator
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    /// A GPR value: edge values, float bit patterns, small counts or noise.
    pub fn gpr(&mut self) -> u64 {
        match self.below(8) {
            0..=2 => self.pick(EDGE_VALUES),
            3 => self.pick(EDGE32) as u64,
            4 => self.pick(EDGE64),
            5 => self.below(70),
            _ => self.next(),
        }
    }
    /// 64 bits of XMM lanes: float edge lanes, a small count, or noise.
    pub fn half(&mut self) -> u64 {
        match self.below(6) {
            0 | 1 => self.pick(EDGE32) as u64 | (self.pick(EDGE32) as u64) << 32,
            2 | 3 => self.pick(EDGE64),
            4 => self.below(70),
            _ => self.next(),
        }
    }
    pub fn xmm(&mut self) -> u128 {
        self.half() as u128 | (self.half() as u128) << 64
    }
}

/// Interesting integers: 0, ±1, sign boundaries of each width, all-ones.
pub const EDGE_VALUES: &[u64] = &[
    0,
    1,
    2,
    u64::MAX,
    u64::MAX - 1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0x8000_0000_0000_0001,
    0xffff_ffff_8000_0000,
    0xffff_ffff_ffff_ff80,
    0x0123_4567_89ab_cdef,
    0xfedc_ba98_7654_3210,
    0x5555_5555_5555_5555,
];

/// Edge values for 32-bit float lanes: NaNs (quiet, signalling), ±0, ±inf,
/// denormals, rounding ties, integer-indefinite boundaries.
pub const EDGE32: &[u32] = &[
    0x7fc0_0000,
    0xffc0_0001,
    0x7f80_0001,
    0x8000_0000,
    0x0000_0000,
    0x7f80_0000,
    0xff80_0000,
    0x0000_0001,
    0x807f_ffff,
    0x3fc0_0000,
    0xc020_0000,
    0x4020_0000,
    0x3f00_0000,
    0xbf40_0000,
    0x4f00_0000,
    0xcf00_0000,
    0x4eff_ffff,
    0xcf00_0001,
    0x5f00_0000,
    0xdf00_0000,
    0x5eff_ffff,
    0x7f7f_ffff,
    0x3dcc_cccd,
    0x7fff_ffff,
    0x8000_7fff,
    0x0001_fffe,
    0xffff_ffff,
    0x1234_5678,
    0x4b40_0001,
    0x0080_0000,
    0x3f80_0000,
    0xbf80_0000,
];

/// Edge values for 64-bit float lanes, likewise.
pub const EDGE64: &[u64] = &[
    0x7ff8_0000_0000_0000,
    0xfff8_0000_0000_0001,
    0x7ff0_0000_0000_0001,
    0x8000_0000_0000_0000,
    0,
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000,
    1,
    0x800f_ffff_ffff_ffff,
    0x3ff8_0000_0000_0000,
    0xc004_0000_0000_0000,
    0x4004_0000_0000_0000,
    0x3fe0_0000_0000_0000,
    0x41e0_0000_0000_0000,
    0xc1e0_0000_0000_0000,
    0x41df_ffff_ffc0_0000,
    0xc1e0_0000_0020_0000,
    0x43e0_0000_0000_0000,
    0xc3e0_0000_0000_0000,
    0x43df_ffff_ffff_ffff,
    0x7fef_ffff_ffff_ffff,
    0x3fb9_9999_9999_999a,
    0x3810_0000_0000_0000,
    0x47ef_ffff_f000_0000,
    0x36a0_0000_0000_0000,
    0x0010_0000_0000_0000,
    u64::MAX,
    0x3ff0_0000_0000_0000,
    0xbff0_0000_0000_0000,
];

/// Why a form is not compared, or `None` when it is.
pub fn skip_reason(code: Code) -> Option<&'static str> {
    use Mnemonic::*;
    let oc = code.op_code();
    for i in 0..oc.op_count() {
        if matches!(oc.op_kind(i), K::seg_reg | K::fs | K::gs) {
            return Some("segment register operand: urun does not model FS/GS selectors");
        }
    }
    if matches!(
        code,
        Code::Jmp_m1616 | Code::Jmp_m1632 | Code::Jmp_m1664 | Code::Call_m1616 | Code::Call_m1632 | Code::Call_m1664
    ) {
        return Some("far JMP/CALL through memory: loads CS from a selector; compared natively by testbins/sysinsn.c");
    }
    let branch = !matches!(code.flow_control(), FlowControl::Next | FlowControl::Exception | FlowControl::Interrupt);
    if branch && oc.operand_size() == 16 {
        return Some("0x66 on a near branch: iced's default (Intel) decoder, which urun uses, ignores it in 64-bit mode, so the form never decodes (and an AMD host would honour it with a 16-bit IP)");
    }
    match code.mnemonic() {
        Cpuid => return Some("CPUID: urun reports its own CPU model by design (cpuid.rs), not the host's"),
        Xgetbv => {
            return Some("XCR0 is the CPU model's by design (x87|SSE|AVX), not the host's (AVX-512 state too); the XSAVE family is compared with EDX:EAX within the model's XCR0")
        }
        Rdtsc | Rdtscp => return Some("time stamp counter: differs between any two reads"),
        Rdrand | Rdseed => return Some("random number: differs between any two reads"),
        Syscall => return Some("SYSCALL: enters the host kernel natively; the interpreter exits to the personality"),
        Int3 | Int1 | Int => return Some("INT3/INT1/INT n: SIGTRAP or a kernel entry natively, which the harness does not catch"),
        Retf | Iret | Iretd | Iretq => {
            return Some("far RET/IRET: loads CS (and SS) from the stack; compared natively by testbins/sysinsn.c")
        }
        Sgdt | Sidt | Sldt | Str | Smsw => {
            return Some("with UMIP a #GP that the kernel emulates; compared natively by testbins/sysinsn.c")
        }
        Ud0 if oc.op_count() == 0 => {
            return Some("UD0 without ModRM: iced's default (Intel) decoder reads 0F FF with a ModRM, so the form cannot be round-tripped")
        }
        Ud0 | Ud1 | Ud2 => return None,
        _ => {}
    }
    None
}

/// One generated case.
pub struct Case {
    pub insn: Instruction,
    pub bytes: Vec<u8>,
    pub input: State,
    pub mem: Vec<u8>,
    /// Offset in the window of the explicit memory operand, if any.
    pub ea: Option<usize>,
    /// The taken landing pad of a control transfer.
    pub target: Option<u64>,
}

/// Interesting 80-bit values: zeros, infinities, NaNs of each kind,
/// denormals, pseudo-denormals, unnormals, pseudo-NaN/infinity, extremes,
/// integer-conversion boundaries, pi.
const F80: &[(u16, u64)] = &[
    (0, 0),
    (0x8000, 0),
    (0x7fff, 1 << 63),
    (0xffff, 1 << 63),
    (0x7fff, 0xc000_0000_0000_0000),
    (0xffff, 0xc000_0000_0000_0000),
    (0x7fff, 0xa000_0000_0000_0001),
    (0xffff, 0xe123_4567_89ab_cdef),
    (0x0000, 1),
    (0x8000, 0x7fff_ffff_ffff_ffff),
    (0x0000, 0x8000_0000_0000_0001),
    (0x3fff, 0x4000_0000_0000_0000),
    (0x7fff, 0x4000_0000_0000_0000),
    (0x7fff, 0),
    (0x7ffe, u64::MAX),
    (0xfffe, u64::MAX),
    (0x0001, 1 << 63),
    (0x3fff, 1 << 63),
    (0xbfff, 1 << 63),
    (0x3fff, 0x8000_0000_0000_0001),
    (0xbfff, u64::MAX),
    (0x403e, 1 << 63),
    (0xc03e, 1 << 63),
    (0x401d, 0xffff_fffe_0000_0000),
    (0x400e, 0xffff_0000_0000_0000),
    (0x403f, 1 << 63),
    (0x3ffd, 0xaaaa_aaaa_aaaa_aaab),
    (0x4000, 0xc90f_daa2_2168_c235),
    (0x3fff, 0xc90f_daa2_2168_c235),
    (0x3ffe, 0x8000_0000_0000_0000),
    (0x4000, 0xa000_0000_0000_0000),
    (0x3c00, 0xc000_0000_0000_0001),
];

fn f80(se: u16, m: u64) -> [u8; 10] {
    let mut r = [0u8; 10];
    r[..8].copy_from_slice(&m.to_le_bytes());
    r[8..].copy_from_slice(&se.to_le_bytes());
    r
}

/// An x87 register value: an edge value, an MMX-style value (exponent
/// 0xFFFF), a normal number of moderate size, or noise.
fn f80_value(rng: &mut Rng) -> [u8; 10] {
    match rng.below(4) {
        0 => {
            let (se, m) = rng.pick(F80);
            f80(se, m)
        }
        1 => f80(0xffff, rng.gpr()),
        2 => {
            let e = 0x3fff + rng.below(140) as u16 - 70;
            f80(e | (rng.below(2) as u16) << 15, rng.next() | 1 << 63)
        }
        _ => f80(rng.next() as u16, rng.next()),
    }
}

/// A random x87/MMX state: random registers, TOP, tags, condition codes and
/// masked exception flags; FCW masks every exception, with a random
/// rounding and (valid) precision control.
fn fpu(rng: &mut Rng) -> Fpu {
    let mut st = [[0u8; 10]; 8];
    for r in st.iter_mut() {
        *r = f80_value(rng);
    }
    let top = rng.below(8) as u16;
    let fsw = (top << 11) | (rng.next() as u16 & 0x473f);
    let fcw = 0x007f | (rng.below(4) as u16) << 10 | rng.pick(&[0u16, 2, 3]) << 8;
    let abridged = match rng.below(4) {
        0 => 0,
        1 => 0xff,
        _ => rng.next() as u8,
    };
    Fpu { st, fcw, fsw, ftw: full_tag(abridged, &st) }
}

/// A taken target for a branch at `ip` (a landing pad's address, clear of
/// the instruction and its fall-through pad): ahead or behind, within a
/// rel8's reach when `near`.
fn branch_target(rng: &mut Rng, ip: u64, near: bool) -> u64 {
    let area = ip - INSN;
    let ahead = rng.below(2) == 0;
    match (near, ahead) {
        // 16 bytes of instruction and a pad ahead; rel8 reaches 127 past
        // the end of a 2-byte instruction and 125 before a 3-byte one.
        (true, true) => ip + 16 + PAD + rng.below(129 - 28 + 1),
        (true, false) => ip - 125 + rng.below(125 - PAD + 1),
        (false, true) => ip + 16 + PAD + rng.below(EPI - PAD - INSN - 16 - PAD + 1),
        (false, false) => area + LOW + rng.below(INSN - PAD - LOW + 1),
    }
}

const GPR8: &[Register] = &[
    Register::AL,
    Register::CL,
    Register::DL,
    Register::BL,
    Register::AH,
    Register::CH,
    Register::DH,
    Register::BH,
    Register::BPL,
    Register::SIL,
    Register::DIL,
    Register::R8L,
    Register::R9L,
    Register::R10L,
    Register::R11L,
    Register::R12L,
    Register::R13L,
    Register::R14L,
    Register::R15L,
];

fn gpr_of_size(size: usize, i: usize) -> Register {
    let base = match size {
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    };
    reg_add(base, i)
}

/// The register `i` places after `base` in iced's enum (GPRs of one width
/// and XMM0..15 are contiguous there).
fn reg_add(base: Register, i: usize) -> Register {
    Register::values().nth(base as usize + i).unwrap_or(base)
}

fn random_gpr(rng: &mut Rng, size: usize) -> Register {
    if size == 1 {
        return rng.pick(GPR8);
    }
    let mut i = rng.below(15) as usize;
    if i >= reg::RSP {
        i += 1;
    }
    gpr_of_size(size, i)
}

/// GPR index (0..15) of a register of any width, if it is one.
fn gpr_index(r: Register) -> Option<usize> {
    r.is_gpr().then(|| r.full_register() as usize - Register::RAX as usize)
}

fn imm_value(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => rng.pick(EDGE_VALUES),
        1 => rng.pick(&[0u64, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 0x7f, 0x80, 0xfe, 0xff]),
        _ => rng.next(),
    }
}

/// Build one random instance of `code`. `window` is the host address of
/// the data window; the state's memory operands point into it.
/// `ip` is where the instruction will run (`Bench::insn_addr`); branch
/// targets are landing pads around it.
pub fn generate(code: Code, rng: &mut Rng, window: u64, ip: u64) -> Result<Case, String> {
    let mut last_err = String::new();
    for _ in 0..64 {
        match try_generate(code, rng, window, ip) {
            Ok(c) => return Ok(c),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

fn try_generate(code: Code, rng: &mut Rng, window: u64, ip: u64) -> Result<Case, String> {
    use Mnemonic::*;
    let oc = code.op_code();
    let mnemonic = code.mnemonic();
    // `Instruction::with` insists on a form without operands; the operands
    // are filled in below with the setters.
    let mut insn = Instruction::default();
    insn.set_code(code);
    let mut used = [false; 16];
    used[reg::RSP] = true;
    let mut mem_op = None;
    let mut target = None;
    let mut rdi_mem = false;
    // A gather's VSIB operand: the index element size.
    let mut vsib = None;
    for i in 0..oc.op_count() {
        let k = oc.op_kind(i);
        let reg_size = match k {
            K::r8_reg | K::r8_opcode => Some(1),
            K::r16_reg | K::r16_rm | K::r16_opcode => Some(2),
            K::r32_reg | K::r32_rm | K::r32_opcode | K::r32_vvvv => Some(4),
            K::r64_reg | K::r64_rm | K::r64_opcode | K::r64_vvvv => Some(8),
            K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem | K::xmm_or_mem if rng.below(2) == 0 => None,
            K::r8_or_mem => Some(1),
            K::r16_or_mem => Some(2),
            K::r32_or_mem => Some(4),
            K::r64_or_mem => Some(8),
            _ => None,
        };
        if let Some(size) = reg_size {
            let r = random_gpr(rng, size);
            insn.set_op_kind(i, OpKind::Register);
            insn.set_op_register(i, r);
            if let Some(g) = gpr_index(r) {
                used[g] = true;
            }
            continue;
        }
        let fixed = |r: Register| Some(r);
        let fixed_reg = match k {
            K::al => fixed(Register::AL),
            K::cl => fixed(Register::CL),
            K::ax => fixed(Register::AX),
            K::eax => fixed(Register::EAX),
            K::rax => fixed(Register::RAX),
            K::dx => fixed(Register::DX),
            K::xmm_reg | K::xmm_rm | K::xmm_vvvv | K::xmm_is4 => Some(reg_add(Register::XMM0, rng.below(16) as usize)),
            K::xmm_or_mem if rng.below(2) == 0 => Some(reg_add(Register::XMM0, rng.below(16) as usize)),
            K::ymm_reg | K::ymm_rm | K::ymm_vvvv | K::ymm_is4 => Some(reg_add(Register::YMM0, rng.below(16) as usize)),
            K::ymm_or_mem if rng.below(2) == 0 => Some(reg_add(Register::YMM0, rng.below(16) as usize)),
            K::mm_reg | K::mm_rm => Some(reg_add(Register::MM0, rng.below(8) as usize)),
            K::mm_or_mem if rng.below(2) == 0 => Some(reg_add(Register::MM0, rng.below(8) as usize)),
            K::st0 => Some(Register::ST0),
            K::sti_opcode => Some(reg_add(Register::ST0, rng.below(8) as usize)),
            K::cr_reg => Some(rng.pick(&[Register::CR0, Register::CR2, Register::CR3, Register::CR4, Register::CR8])),
            K::dr_reg => Some(rng.pick(&[Register::DR0, Register::DR1, Register::DR6, Register::DR7])),
            _ => None,
        };
        if let Some(r) = fixed_reg {
            insn.set_op_kind(i, OpKind::Register);
            insn.set_op_register(i, r);
            if let Some(g) = gpr_index(r) {
                used[g] = true;
            }
            continue;
        }
        match k {
            K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r64_or_mem
            | K::xmm_or_mem
            | K::ymm_or_mem
            | K::mm_or_mem
            | K::mem => {
                insn.set_op_kind(i, OpKind::Memory);
                mem_op = Some(i);
            }
            K::mem_offs => {
                insn.set_op_kind(i, OpKind::Memory);
                mem_op = Some(i);
            }
            K::mem_vsib32x | K::mem_vsib32y | K::mem_vsib64x | K::mem_vsib64y => {
                insn.set_op_kind(i, OpKind::Memory);
                let wide = matches!(k, K::mem_vsib32y | K::mem_vsib64y);
                let first = if wide { Register::YMM0 } else { Register::XMM0 };
                insn.set_memory_index(reg_add(first, rng.below(16) as usize));
                vsib = Some(if matches!(k, K::mem_vsib32x | K::mem_vsib32y) { 4 } else { 8 });
            }
            K::seg_rSI => insn.set_op_kind(i, OpKind::MemorySegRSI),
            K::es_rDI => insn.set_op_kind(i, OpKind::MemoryESRDI),
            K::seg_rDI => {
                insn.set_op_kind(i, OpKind::MemorySegRDI);
                rdi_mem = true;
            }
            K::br16_1 | K::br32_1 | K::br64_1 | K::br16_2 | K::br32_4 | K::br64_4 => {
                let near = matches!(k, K::br16_1 | K::br32_1 | K::br64_1);
                let t = branch_target(rng, ip, near);
                match k {
                    K::br16_1 | K::br16_2 => {
                        insn.set_op_kind(i, OpKind::NearBranch16);
                        insn.set_near_branch16(t as u16);
                    }
                    K::br32_1 | K::br32_4 => {
                        insn.set_op_kind(i, OpKind::NearBranch32);
                        insn.set_near_branch32(t as u32);
                    }
                    _ => {
                        insn.set_op_kind(i, OpKind::NearBranch64);
                        insn.set_near_branch64(t);
                    }
                }
                target = Some(t);
            }
            K::seg_rBX_al => {
                insn.set_op_kind(i, OpKind::Memory);
                insn.set_memory_base(Register::RBX);
                insn.set_memory_index(Register::AL);
                insn.set_memory_index_scale(1);
            }
            K::imm8
            | K::imm8_const_1
            | K::imm8sex16
            | K::imm8sex32
            | K::imm8sex64
            | K::imm16
            | K::imm32
            | K::imm32sex64
            | K::imm64 => {
                let kind = match k {
                    K::imm8 if oc.op_count() > 1 && i > 0 && oc.op_kind(i - 1) == K::imm16 => OpKind::Immediate8_2nd,
                    K::imm8 | K::imm8_const_1 => OpKind::Immediate8,
                    K::imm8sex16 => OpKind::Immediate8to16,
                    K::imm8sex32 => OpKind::Immediate8to32,
                    K::imm8sex64 => OpKind::Immediate8to64,
                    K::imm16 => OpKind::Immediate16,
                    K::imm32 => OpKind::Immediate32,
                    K::imm32sex64 => OpKind::Immediate32to64,
                    _ => OpKind::Immediate64,
                };
                insn.set_op_kind(i, kind);
                let v = if k == K::imm8_const_1 { 1 } else { imm_value(rng) };
                insn.try_set_immediate_u64(i, v).map_err(|e| format!("immediate: {e}"))?;
            }
            other => return Err(format!("operand kind {other:?} is not generated")),
        }
    }

    // Prefixes.
    let string = (0..oc.op_count()).any(|i| matches!(oc.op_kind(i), K::seg_rSI | K::es_rDI));
    if string {
        let choices = [false, oc.can_use_rep_prefix(), oc.can_use_repne_prefix()];
        match rng.below(3) {
            1 if choices[1] => insn.set_has_rep_prefix(true),
            2 if choices[2] => insn.set_has_repne_prefix(true),
            _ => {}
        }
    }
    if mem_op == Some(0) && oc.can_use_lock_prefix() && rng.below(3) == 0 {
        insn.set_has_lock_prefix(true);
    }

    // The state.
    let mut s =
        State { rflags: (rng.next() & fl::STATUS) | if rng.below(4) == 0 { fl::DF } else { 0 }, ..State::default() };
    for g in s.gpr.iter_mut() {
        *g = rng.gpr();
    }
    for x in s.xmm.iter_mut() {
        *x = rng.xmm();
    }
    if super::native::host_has_avx() {
        for x in s.ymm_hi.iter_mut() {
            *x = rng.xmm();
        }
    }
    s.mxcsr = 0x1f80 | (rng.below(4) as u32) << 13;
    if rng.below(4) == 0 {
        s.mxcsr |= 0x8000;
    }
    if rng.below(4) == 0 {
        s.mxcsr |= 0x40;
    }
    if rng.below(2) == 0 {
        s.mxcsr |= rng.next() as u32 & 0x3f;
    }
    let mut mem = vec![0u8; WINDOW];
    for chunk in mem.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    // A private stack in the window for forms that use RSP implicitly.
    s.gpr[reg::RSP] = window + 0x3000 + 8 * rng.below(128);
    if rng.below(8) == 0 {
        s.gpr[reg::RSP] += rng.below(8);
    }
    if string {
        s.gpr[reg::RSI] = window + 0x1000 + rng.below(0x800);
        s.gpr[reg::RDI] = window + 0x2000 + rng.below(0x800);
        if insn.has_rep_prefix() || insn.has_repne_prefix() {
            s.gpr[reg::RCX] = rng.below(41);
        }
    }
    s.fpu = fpu(rng);
    if rdi_mem {
        s.gpr[reg::RDI] = window + 0x2000 + rng.below(0x800);
    }
    if matches!(mnemonic, Loop | Loope | Loopne | Jrcxz | Jecxz) && rng.below(2) == 0 {
        s.gpr[reg::RCX] = rng.pick(&[0u64, 1, 2, 0x1_0000_0000, 0x1_0000_0001, 0xffff_ffff_0000_0001, u64::MAX]);
    }
    // Indirect JMP/CALL through a register and RET: the destination is a
    // landing pad.
    let indirect = matches!(mnemonic, Jmp | Call) && target.is_none();
    if indirect && insn.op0_kind() == OpKind::Register {
        let t = branch_target(rng, ip, false);
        if let Some(g) = gpr_index(insn.op0_register()) {
            s.gpr[g] = t;
        }
        target = Some(t);
    }
    if mnemonic == Ret {
        let t = branch_target(rng, ip, false);
        let at = (s.gpr[reg::RSP] - window) as usize;
        mem[at..at + 8].copy_from_slice(&t.to_le_bytes());
        target = Some(t);
    }
    let xsave_family =
        matches!(mnemonic, Xsave | Xsave64 | Xsaveopt | Xsaveopt64 | Xsavec | Xsavec64 | Xrstor | Xrstor64);
    if xsave_family {
        // The requested-feature bitmap within the model's XCR0, which the
        // host's XCR0 contains: both sides then save and load the same
        // components (the whole XCR0 half the time).
        let xcr0 = crate::cpuid::model().xcr0();
        let low = if rng.below(2) == 0 { xcr0 } else { rng.next() & xcr0 };
        s.gpr[reg::RAX] = (rng.next() & !0xffff_ffff) | low;
        s.gpr[reg::RDX] = rng.next() & !0xffff_ffff;
    }
    if matches!(mnemonic, Enter | Leave) {
        s.gpr[reg::RBP] = window + 0x2800 + 8 * rng.below(64);
    }
    if matches!(mnemonic, Popf | Popfq) {
        // TF would single-step and AC would check alignment in the harness.
        let at = (s.gpr[reg::RSP] - window) as usize;
        for b in [1usize, 2] {
            mem[at + b] &= if b == 1 { !0x01 } else { !0x04 };
        }
    }

    if let Some(isz) = vsib {
        vsib_operand(&mut insn, &mut s, rng, window, isz, &used);
    }

    // The explicit memory operand: [base + index*scale + disp] in the window.
    let mut ea = None;
    if let Some(i) = mem_op {
        let size = insn.memory_size().size().max(1);
        let align = if xsave_family { 64 } else { size.next_power_of_two().min(16) };
        let lo = if matches!(mnemonic, Bt | Bts | Btr | Btc) { 0x1000 } else { 0 };
        let mut off = lo + (rng.below(0x1000) as usize & !(align - 1));
        if rng.below(8) == 0 {
            off += 1 + rng.below(15) as usize;
        }
        if matches!(mnemonic, Vmaskmovps | Vmaskmovpd | Vpmaskmovd | Vpmaskmovq) && rng.below(4) == 0 {
            // Straddle the end of the window: the elements past it lie in
            // the guard page, and fault only when the mask selects them.
            let elem = if matches!(mnemonic, Vmaskmovps | Vpmaskmovd) { 4 } else { 8 };
            off = WINDOW - elem * (1 + rng.below((size / elem - 1).max(1) as u64) as usize);
        }
        let addr = window + off as u64;
        if oc.op_kind(i) == K::mem_offs {
            insn.set_memory_displacement64(addr);
            insn.set_memory_displ_size(8);
        } else if insn.memory_base() == Register::RBX && insn.memory_index() == Register::AL {
            // XLAT: [rbx + al].
            s.gpr[reg::RBX] = addr - (s.gpr[reg::RAX] & 0xff);
        } else {
            let mut free: Vec<usize> = (0..16)
                .filter(|&g| !used[g] && ![reg::RAX, reg::RCX, reg::RDX, reg::RSI, reg::RDI].contains(&g))
                .collect();
            if matches!(mnemonic, Cmpxchg8b | Cmpxchg16b) {
                free.retain(|&g| g != reg::RBX);
            }
            if free.is_empty() {
                return Err("no free base register".into());
            }
            let base = free.swap_remove(rng.below(free.len() as u64) as usize);
            let disp: i64 = match rng.below(4) {
                0 => 0,
                1 => rng.below(256) as i64 - 128,
                _ => (rng.next() as i32 >> 8) as i64,
            };
            let mut rest = addr.wrapping_sub(disp as u64);
            insn.set_memory_base(reg_add(Register::RAX, base));
            if !free.is_empty() && rng.below(4) == 0 {
                let index = free[rng.below(free.len() as u64) as usize];
                let scale = 1u64 << rng.below(4);
                let iv = rng.below(64);
                s.gpr[index] = iv;
                rest = rest.wrapping_sub(iv * scale);
                insn.set_memory_index(reg_add(Register::RAX, index));
                insn.set_memory_index_scale(scale as u32);
            }
            s.gpr[base] = rest;
            insn.set_memory_displacement64(disp as u64);
            insn.set_memory_displ_size(if disp == 0 {
                0
            } else if (-128..128).contains(&disp) {
                1
            } else {
                4
            });
        }
        // Edge values in the operand itself.
        match rng.below(3) {
            _ if off + 16 > WINDOW => {}
            0 => mem[off..off + 8].copy_from_slice(&rng.gpr().to_le_bytes()),
            1 => {
                mem[off..off + 8].copy_from_slice(&rng.half().to_le_bytes());
                mem[off + 8..off + 16].copy_from_slice(&rng.half().to_le_bytes());
            }
            _ => {}
        }
        let size = insn.memory_size().size();
        if size == 10 && rng.below(2) == 0 {
            if mnemonic == Fbld {
                // Valid BCD digits.
                for b in &mut mem[off..off + 9] {
                    *b = (rng.below(10) as u8) << 4 | rng.below(10) as u8;
                }
                mem[off + 9] = rng.pick(&[0u8, 0x80]);
            } else {
                mem[off..off + 10].copy_from_slice(&f80_value(rng));
            }
        }
        // Loaded control words keep every exception masked, and loaded
        // status words have no exception pending (ES, B): the host would
        // trap on its next waiting instruction.
        match mnemonic {
            Fldcw | Fldenv | Frstor | Fxrstor | Fxrstor64 | Xrstor | Xrstor64 => mem[off] |= 0x3f,
            _ => {}
        }
        match mnemonic {
            Fldenv | Frstor => {
                mem[off + 4] &= !0x80;
                mem[off + 5] &= !0x80;
            }
            Fxrstor | Fxrstor64 | Xrstor | Xrstor64 => {
                mem[off + 2] &= !0x80;
                mem[off + 3] &= !0x80;
                if rng.below(4) != 0 {
                    mem[off + 24..off + 28].copy_from_slice(&s.mxcsr.to_le_bytes());
                }
            }
            _ => {}
        }
        if matches!(mnemonic, Xrstor | Xrstor64) && off + 576 <= WINDOW {
            // A header XRSTOR takes (mostly): XSTATE_BV within the model's
            // XCR0, XCOMP_BV zero (standard form) or naming XSTATE_BV's
            // components and more (compacted), zero reserved bytes.
            let xcr0 = crate::cpuid::model().xcr0();
            let bv = rng.next() & xcr0;
            let comp = match rng.below(8) {
                0..=3 => 0,
                4..=6 => 1 << 63 | bv | (rng.next() & xcr0),
                _ => rng.next(),
            };
            let h = off + 512;
            mem[h..h + 8].copy_from_slice(&bv.to_le_bytes());
            mem[h + 8..h + 16].copy_from_slice(&comp.to_le_bytes());
            mem[h + 16..h + 64].fill(0);
            if rng.below(16) == 0 {
                mem[h + 16 + rng.below(48) as usize] = 1;
            }
        }
        if indirect {
            let t = branch_target(rng, ip, false);
            mem[off..off + 8].copy_from_slice(&t.to_le_bytes());
            target = Some(t);
        }
        if mnemonic == Ldmxcsr && rng.below(4) != 0 {
            let v = s.mxcsr | (rng.next() as u32 & 0x3f);
            mem[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        if matches!(mnemonic, Bt | Bts | Btr | Btc) {
            // A register bit offset may reach ±2 KiB around the operand.
            if let Some(g) =
                (0..oc.op_count()).find(|&j| insn.op_kind(j) == OpKind::Register).map(|j| insn.op_register(j))
            {
                if let Some(gi) = gpr_index(g) {
                    s.gpr[gi] = (rng.below(32768) as i64 - 16384) as u64;
                }
            }
        }
        ea = Some(off);
    }

    let mut enc = Encoder::new(64);
    enc.encode(&insn, ip).map_err(|e| format!("encoder: {e}"))?;
    let bytes = enc.take_buffer();
    let mut dec = Decoder::with_ip(64, &bytes, ip, DecoderOptions::NONE);
    let mut back = dec.decode();
    if back.code() == Code::Wait && bytes.len() > 1 {
        // A waiting x87 form (FSTCW, FSTSW, FSAVE, FSTENV, FCLEX, FINIT)
        // decodes as WAIT and then the non-waiting form, and runs as those
        // two instructions on both sides.
        let mut rest = Decoder::with_ip(64, &bytes[1..], ip + 1, DecoderOptions::NONE);
        let second = rest.decode();
        if format!("{:?}", second.code()) == format!("{code:?}").replacen('F', "Fn", 1)
            && second.len() + 1 == bytes.len()
        {
            back = insn;
        }
    }
    if back.code() != code {
        return Err(format!("encoding {bytes:02x?} decodes as {:?}", back.code()));
    }
    if back.len() != bytes.len() && back.len() != 0 {
        return Err(format!("encoding {bytes:02x?} decodes {} bytes long", back.len()));
    }
    if back.flow_control() != FlowControl::Next
        && matches!(back.op0_kind(), OpKind::NearBranch64)
        && Some(back.near_branch_target()) != target
    {
        return Err(format!("branch target {:#x}, meant {target:x?}", back.near_branch_target()));
    }
    let flow = back.flow_control();
    if target.is_none() && !matches!(flow, FlowControl::Next | FlowControl::Exception | FlowControl::Interrupt) {
        return Err(format!("no landing pad for a {flow:?} instruction"));
    }
    Ok(Case { insn: back, bytes, input: s, mem, ea, target })
}

/// Offset from the window of the guard page `Bench` keeps inaccessible
/// right after it (a gather element or a masked-move element there faults).
pub const GUARD: usize = WINDOW;

/// Are faulting gathers generated on this host? Their partial progress
/// (which mask elements are cleared, the upper half of an XMM destination
/// kept) was measured on AMD (Zen 5), and the interpreter does as AMD; on
/// Intel the manual leaves more open, so those cases wait for a run there.
fn faults_measured() -> bool {
    crate::cpuid::HostCpu::get().vendor == crate::cpuid::Vendor::Amd
}

/// Vector register `r` (XMM or YMM) of `s` as 32 bytes.
fn vreg(s: &State, r: Register) -> [u8; 32] {
    let i = vreg_index(r);
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&s.xmm[i].to_le_bytes());
    b[16..].copy_from_slice(&s.ymm_hi[i].to_le_bytes());
    b
}

fn set_vreg(s: &mut State, r: Register, b: &[u8; 32]) {
    let i = vreg_index(r);
    let (lo, hi) = b.split_at(16);
    s.xmm[i] = lo.iter().rev().fold(0u128, |v, &x| v << 8 | x as u128);
    s.ymm_hi[i] = hi.iter().rev().fold(0u128, |v, &x| v << 8 | x as u128);
}

fn vreg_index(r: Register) -> usize {
    let first = if r.is_ymm() { Register::YMM0 } else { Register::XMM0 };
    (r as usize).wrapping_sub(first as usize) & 15
}

fn put_elem(b: &mut [u8; 32], j: usize, size: usize, v: u64) {
    b[j * size..(j + 1) * size].copy_from_slice(&v.to_le_bytes()[..size]);
}

/// The VSIB operand of a gather (`VPGATHERDD xmm1, [base + xmm2*scale +
/// disp], xmm3` and kin): picks the scale, the base (none at times, for
/// qword indices), the displacement, the mask (all, none or mixed
/// elements selected) and index elements such that every selected element
/// lands in the data window. Unselected elements get garbage indices half
/// the time (hardware must not touch them). In one case of eight the
/// highest selected element faults instead: it points into the guard page
/// past the window (or, with qword indices, at times to a non-canonical
/// address, not through RBP), so the partial progress of a faulting gather is compared too
/// (hardware completes every element below the faulting one), and one
/// case in sixteen uses a 32-bit base (an address-size prefix), whose
/// addresses wrap below the window and fault: both on AMD hosts only
/// (`faults_measured`). One case in
/// eight in which the three registers differ makes two of them the same
/// (#UD).
fn vsib_operand(insn: &mut Instruction, s: &mut State, rng: &mut Rng, window: u64, isz: usize, used: &[bool; 16]) {
    use Mnemonic::*;
    let dsz = match insn.mnemonic() {
        Vgatherdps | Vpgatherdd | Vgatherqps | Vpgatherqd => 4,
        _ => 8,
    };
    let (dst, mask_reg) = (insn.op0_register(), insn.op2_register());
    let mut index_reg = insn.memory_index();
    let clash = |a: Register, b: Register| vreg_index(a) == vreg_index(b);
    if (clash(index_reg, dst) || clash(index_reg, mask_reg) || clash(dst, mask_reg)) && rng.below(8) != 0 {
        // Mostly valid: re-pick the index among the registers left.
        let first = if index_reg.is_ymm() { Register::YMM0 } else { Register::XMM0 };
        let left: Vec<usize> = (0..16).filter(|&x| x != vreg_index(dst) && x != vreg_index(mask_reg)).collect();
        index_reg = reg_add(first, rng.pick(&left));
        insn.set_memory_index(index_reg);
    }
    let n = (index_reg.size() / isz).min(dst.size() / dsz);
    let scale = 1i64 << rng.below(4);
    insn.set_memory_index_scale(scale as u32);

    // Where index 0 lands: window offset `c`; index value `q + idx0`
    // lands at `c + q*scale`.
    let free: Vec<usize> = (0..16).filter(|&g| !used[g] && g != reg::RSP).collect();
    let no_base = free.is_empty() || (isz == 8 && rng.below(6) == 0);
    let (c, idx0, disp) = if no_base {
        // [index*scale + disp32]: the index carries the address.
        let disp = rng.below(0x1000) as i64 - 0x800;
        let b = ((window + 0x2000) as i64) / scale;
        insn.set_memory_base(Register::None);
        (b * scale + disp - window as i64, b, disp)
    } else {
        let disp: i64 = match rng.below(4) {
            0 => 0,
            1 => rng.below(256) as i64 - 128,
            _ => (rng.next() as i32 >> 8) as i64,
        };
        let g = free[rng.below(free.len() as u64) as usize];
        s.gpr[g] = (window + 0x2000).wrapping_sub(disp as u64);
        // At times with an address-size prefix (a 32-bit base): the
        // addresses wrap to 32 bits, below the window, and fault.
        let first = if faults_measured() && rng.below(16) == 0 { Register::EAX } else { Register::RAX };
        insn.set_memory_base(reg_add(first, g));
        (0x2000, 0, disp)
    };
    insn.set_memory_displacement64(disp as u64);
    insn.set_memory_displ_size(if no_base {
        8
    } else if !(-128..128).contains(&disp) {
        4
    } else if disp == 0 {
        0
    } else {
        1
    });
    // An index value whose element lands at a window offset in lo..=hi.
    let land = |rng: &mut Rng, lo: i64, hi: i64| -> u64 {
        let qlo = (lo - c).div_euclid(scale) + i64::from((lo - c).rem_euclid(scale) != 0);
        let qhi = (hi - c).div_euclid(scale);
        (qlo + rng.below((qhi - qlo + 1).max(1) as u64) as i64 + idx0) as u64
    };

    let mut mask = vreg(s, mask_reg);
    let mut index = vreg(s, index_reg);
    let mode = rng.below(8);
    let mut highest = None;
    for j in 0..n {
        let on = match mode {
            0 | 1 => true,
            2 => false,
            _ => rng.below(2) == 0,
        };
        let noise = rng.next() & !(1 << (dsz * 8 - 1));
        put_elem(&mut mask, j, dsz, if on { noise | 1 << (dsz * 8 - 1) } else { noise });
        let v = if on || rng.below(2) == 0 {
            land(rng, 0, (WINDOW - dsz) as i64)
        } else if isz == 8 {
            rng.gpr()
        } else {
            rng.next()
        };
        put_elem(&mut index, j, isz, v);
        if on {
            highest = Some(j);
        }
    }
    if let Some(j) = highest.filter(|_| faults_measured() && rng.below(8) == 0) {
        // (Not through RBP: a non-canonical address in the stack segment is
        // #SS, SIGBUS natively, which urun does not model.)
        let stack = matches!(insn.memory_base(), Register::RBP | Register::EBP);
        let v = if isz == 8 && !stack && rng.below(2) == 0 {
            // Far past the canonical range: #GP.
            (rng.next() >> 6 | 1 << 58) + idx0 as u64
        } else {
            land(rng, GUARD as i64, (GUARD + 4096 - dsz) as i64)
        };
        put_elem(&mut index, j, isz, v);
    }
    set_vreg(s, mask_reg, &mask);
    set_vreg(s, index_reg, &index);
}
