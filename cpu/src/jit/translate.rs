//! The block translator: guest instructions are copied verbatim into the
//! code cache; only what must change is rewritten.
//!
//! - RIP-relative operands: the disp32 is re-aimed at the same guest
//!   address from the instruction's new place (iced's constant offsets say
//!   where the displacement is). Out of reach: the interpreter runs it.
//! - The guest's thread segment (`Env::seg`): host GS holds its base while
//!   translated code runs (urun's FS stays urun's). For an FS guest, the
//!   FS prefix byte becomes GS and GS-prefixed instructions go to the
//!   interpreter; for a GS guest, GS prefixes are copied as they are and
//!   FS-prefixed instructions go to the interpreter.
//! - Control transfers end the block, except a `jcc`, whose fall-through
//!   side stays in the block (a superblock: one entry, many exits): direct
//!   ones are `jmp/jcc rel32` exits the engine links to the target's
//!   translation (until then aimed at a stub that goes through the
//!   dispatcher), `loop`/`jrcxz` keep their condition and have an exit on
//!   each side, `call` pushes the
//!   guest return address from a literal, indirect ones load their target
//!   into RCX (saved first), `ret` pops it, and both look it up inline.
//!   SYSCALL exits to the run loop.
//! - Everything urun must model or that is not safe to run as is (see
//!   `classify`) is left to the interpreter: the block ends before it.
//!
//! Each translated block carries a side table (cache offset -> guest pc,
//! plus a fixup) so that a host fault at any cache address becomes the
//! guest's fault with the guest's exact registers.

use iced_x86::{
    Code, ConditionCode, CpuidFeature, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind,
};

use super::ctx::{off, reason};
use super::TlsSegment;
use crate::cpuid;

/// Longest block, in guest instructions.
pub(crate) const MAX_INSNS: usize = 64;
/// Room a block may need in the cache (64 instructions of at most 15
/// bytes, or 64 conditional exits of 6 bytes and their 27-byte stubs, the
/// prologue, the last instruction's lookup and literal).
pub(crate) const MAX_BLOCK_BYTES: usize = 4096;
/// The most guest bytes a block can be translated from.
pub(crate) const MAX_GUEST_SPAN: u64 = (MAX_INSNS * 15) as u64;

/// What to undo when a fault hits an inserted instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fixup {
    /// The machine registers are the guest's.
    None,
    /// RCX holds a branch target; the guest's RCX is in `Ctx::s_rcx`.
    RestoreRcx,
}

/// One side-table entry: from cache offset `off` on, faults belong to the
/// guest instruction at `pc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PcEntry {
    pub off: u32,
    pub pc: u64,
    pub fixup: Fixup,
}

/// A direct exit of a block: a rel32 the engine aims at the target's
/// translation (linking) or back at the exit's stub (unlinking).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// Offset of the rel32 in the block.
    pub at: u32,
    /// Offset of the stub (continue at `target` through the dispatcher).
    pub stub: u32,
    /// The guest pc the exit goes to.
    pub target: u64,
}

/// A translated block, ready to be copied to its cache address.
///
/// It has three entries: offset 0 (`chk`, where linked backward exits
/// arrive: it checks the interrupt byte), `IBL` (where lookup-table hits
/// arrive: it reloads RAX, RDX and RCX from their `Ctx` slots), and
/// `body` (the guest code, where `enter` and forward links arrive).
#[derive(Debug)]
pub(crate) struct Block {
    pub code: Vec<u8>,
    pub map: Vec<PcEntry>,
    /// How many guest bytes from the block's pc it was translated from.
    pub guest_len: u64,
    /// Offset of the guest code.
    pub body: u32,
    /// The direct exits.
    pub links: Vec<Link>,
}

/// Distance from a table entry's tag to its cache pc (an entry is 32
/// bytes: tag and cache pc of the first way, then of the second, so one
/// lookup touches one cache line).
pub(crate) const TABLE_HOSTS: u32 = 8;
/// Distance from a table entry to its second way, which only the miss
/// routine probes.
pub(crate) const TABLE_WAY2: u32 = 16;

/// Offset of a block's `ibl` entry (the prologue's layout is fixed).
pub(crate) const IBL: u32 = 9 + 10 + 3 + 2 + 10 + 8;

/// The result of translating at a guest pc.
#[derive(Debug)]
pub(crate) enum Translation {
    Block(Block),
    /// The first instruction is the interpreter's.
    Interp,
}

/// How one guest instruction is translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Verbatim,
    Interp,
    Syscall,
    Jmp(u64),
    Jcc(u64),
    /// LOOP, LOOPE, LOOPNE, JRCXZ, JECXZ (rel8 only).
    Loop(u64),
    Call(u64),
    JmpInd,
    CallInd,
    Ret(u16),
}

/// Mnemonics the interpreter runs even though the host could: urun models
/// them (CPUID, XGETBV, SYSCALL's neighbours), they trap (INT, UD, HLT, I/O),
/// save
/// instruction pointers (FXSAVE & co. would leak cache addresses), set TF
/// or AC (POPF), or touch segment state.
const INTERP_MNEMONICS: &[Mnemonic] = &[
    Mnemonic::Cpuid,
    Mnemonic::Int,
    Mnemonic::Int1,
    Mnemonic::Int3,
    Mnemonic::Into,
    Mnemonic::Ud0,
    Mnemonic::Ud1,
    Mnemonic::Ud2,
    Mnemonic::Hlt,
    Mnemonic::In,
    Mnemonic::Out,
    Mnemonic::Insb,
    Mnemonic::Insw,
    Mnemonic::Insd,
    Mnemonic::Outsb,
    Mnemonic::Outsw,
    Mnemonic::Outsd,
    Mnemonic::Cli,
    Mnemonic::Sti,
    Mnemonic::Fxsave,
    Mnemonic::Fxsave64,
    Mnemonic::Xsave,
    Mnemonic::Xsave64,
    Mnemonic::Xsaveopt,
    Mnemonic::Xsaveopt64,
    Mnemonic::Xsavec,
    Mnemonic::Xsavec64,
    Mnemonic::Xsaves,
    Mnemonic::Xsaves64,
    Mnemonic::Fnsave,
    Mnemonic::Fsave,
    Mnemonic::Fnstenv,
    Mnemonic::Fstenv,
    Mnemonic::Xgetbv,
    Mnemonic::Popf,
    Mnemonic::Popfq,
    Mnemonic::Rdfsbase,
    Mnemonic::Rdgsbase,
    Mnemonic::Wrfsbase,
    Mnemonic::Wrgsbase,
    Mnemonic::Swapgs,
    Mnemonic::Lfs,
    Mnemonic::Lgs,
    Mnemonic::Lss,
    Mnemonic::Sysenter,
    Mnemonic::Sysexit,
    Mnemonic::Sysret,
    Mnemonic::Iret,
    Mnemonic::Iretd,
    Mnemonic::Iretq,
    Mnemonic::Xbegin,
    Mnemonic::Xabort,
    Mnemonic::Xend,
    Mnemonic::Rdpid,
    Mnemonic::Rdpkru,
    Mnemonic::Wrpkru,
];

/// The CPU model's feature words: leaf 1 ECX/EDX, leaf 7 EBX, 0x8000_0001
/// ECX/EDX.
fn model() -> &'static [u32; 5] {
    static M: std::sync::OnceLock<[u32; 5]> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let l1 = cpuid::guest_cpuid(1, 0);
        let l7 = cpuid::guest_cpuid(7, 0);
        let e1 = cpuid::guest_cpuid(0x8000_0001, 0);
        [l1[2], l1[3], l7[1], e1[2], e1[3]]
    })
}

/// Does the CPU model advertise `f`? Unknown features: no (the
/// interpreter then runs the instruction, and decides).
fn advertised(f: CpuidFeature) -> bool {
    use cpuid::{ebx7, ecx1, edx1, ext};
    use CpuidFeature as F;
    let [ecx, edx, ebx7_, eecx, eedx] = *model();
    let has = |word: u32, bit: u32| word & bit != 0;
    match f {
        F::INTEL8086 | F::INTEL186 | F::INTEL286 | F::INTEL386 | F::INTEL486 | F::X64 | F::CPUID => true,
        F::MULTIBYTENOP | F::PAUSE | F::FPU | F::FPU287 | F::FPU387 => true,
        F::CLFSH => has(edx, 1 << 19),
        F::CMOV => has(edx, edx1::CMOV),
        F::CX8 => has(edx, edx1::CX8),
        F::TSC => has(edx, edx1::TSC),
        F::MMX => has(edx, edx1::MMX),
        F::FXSR => has(edx, edx1::FXSR),
        F::SSE => has(edx, edx1::SSE),
        F::SSE2 => has(edx, edx1::SSE2),
        F::SSE3 => has(ecx, ecx1::SSE3),
        F::PCLMULQDQ => has(ecx, ecx1::PCLMULQDQ),
        F::SSSE3 => has(ecx, ecx1::SSSE3),
        F::CMPXCHG16B => has(ecx, ecx1::CX16),
        F::SSE4_1 => has(ecx, ecx1::SSE41),
        F::SSE4_2 => has(ecx, ecx1::SSE42),
        F::MOVBE => has(ecx, ecx1::MOVBE),
        F::POPCNT => has(ecx, ecx1::POPCNT),
        F::AES => has(ecx, ecx1::AES),
        F::RDRAND => has(ecx, ecx1::RDRAND),
        F::BMI1 => has(ebx7_, ebx7::BMI1),
        F::BMI2 => has(ebx7_, ebx7::BMI2),
        F::RDSEED => has(ebx7_, ebx7::RDSEED),
        F::ADX => has(ebx7_, ebx7::ADX),
        F::LZCNT => has(eecx, ext::ECX_ABM),
        F::RDTSCP => has(eedx, ext::EDX_RDTSCP),
        F::SYSCALL => has(eedx, ext::EDX_SYSCALL),
        // VEX: as the model says (its YMM upper halves cross exits in
        // `Ctx::ymm_hi`). XSAVE & co. and XGETBV stay in the interpreter.
        F::AVX | F::AVX2 | F::FMA | F::F16C => cpuid::model().allows(&[f]),
        _ => false,
    }
}

/// How `insn` is translated, for a guest whose thread segment is `seg`.
fn classify(insn: &Instruction, seg: TlsSegment) -> Kind {
    if insn.is_invalid() || crate::interp::ops::table()[insn.code() as usize].is_none() {
        return Kind::Interp;
    }
    let m = insn.mnemonic();
    if m == Mnemonic::Syscall {
        return Kind::Syscall;
    }
    // CET's branch-target markers: NOPs for the CPU model (it has no CET,
    // and the interpreter runs them as NOPs), and for the host, which never
    // enables indirect-branch tracking for urun. Every function of a
    // program built with -fcf-protection starts with one.
    if matches!(m, Mnemonic::Endbr64 | Mnemonic::Endbr32) {
        return Kind::Verbatim;
    }
    if INTERP_MNEMONICS.contains(&m)
        || insn.segment_prefix() == seg.other()
        || !insn.cpuid_features().iter().all(|f| advertised(*f))
        || (0..insn.op_count())
            .any(|i| insn.op_kind(i) == OpKind::Register && insn.op_register(i).is_segment_register())
    {
        return Kind::Interp;
    }
    match insn.flow_control() {
        FlowControl::Next => Kind::Verbatim,
        FlowControl::UnconditionalBranch => match insn.code() {
            Code::Jmp_rel8_64 | Code::Jmp_rel32_64 => Kind::Jmp(insn.near_branch_target()),
            _ => Kind::Interp,
        },
        FlowControl::ConditionalBranch if insn.op0_kind() == OpKind::NearBranch64 => match m {
            Mnemonic::Loop | Mnemonic::Loope | Mnemonic::Loopne | Mnemonic::Jrcxz | Mnemonic::Jecxz => {
                Kind::Loop(insn.near_branch_target())
            }
            _ if insn.condition_code() != ConditionCode::None => Kind::Jcc(insn.near_branch_target()),
            _ => Kind::Interp,
        },
        FlowControl::Call if insn.code() == Code::Call_rel32_64 => Kind::Call(insn.near_branch_target()),
        FlowControl::IndirectBranch if insn.code() == Code::Jmp_rm64 => Kind::JmpInd,
        FlowControl::IndirectCall if insn.code() == Code::Call_rm64 => Kind::CallInd,
        FlowControl::Return => match insn.code() {
            Code::Retnq => Kind::Ret(0),
            Code::Retnq_imm16 => Kind::Ret(insn.immediate16()),
            _ => Kind::Interp,
        },
        _ => Kind::Interp,
    }
}

/// Legacy prefix bytes.
fn is_legacy_prefix(b: u8) -> bool {
    matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3)
}

/// What a translation is for: the `Ctx` offset and the engine's own
/// addresses, which its code embeds (translations are per engine).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Env {
    /// Thread-pointer offset of `Ctx` (fs: displacements).
    pub tp: i32,
    /// The engine's interrupt byte (set by `Interrupt::raise`).
    pub kick: u64,
    /// The engine's lookup table: entries of (-guest pc, cache pc).
    pub table: u64,
    /// `--check`: instructions whose results the interpreter cannot
    /// reproduce (time stamps, random numbers) go to the interpreter.
    pub check: bool,
    /// The segment register the guest's thread data is addressed through
    /// (its base is in host GS while translated code runs).
    pub seg: TlsSegment,
}

/// What `--check` leaves to the interpreter on top of `classify`.
const NONDETERMINISTIC: &[Mnemonic] = &[Mnemonic::Rdtsc, Mnemonic::Rdtscp, Mnemonic::Rdrand, Mnemonic::Rdseed];

/// Code being emitted at cache address `at`.
struct Emitter {
    at: u64,
    env: Env,
    code: Vec<u8>,
    map: Vec<PcEntry>,
    links: Vec<Link>,
}

impl Emitter {
    fn mark(&mut self, pc: u64, fixup: Fixup) {
        self.map.push(PcEntry { off: self.code.len() as u32, pc, fixup });
    }

    fn bytes(&mut self, b: &[u8]) {
        self.code.extend_from_slice(b);
    }

    fn fs_disp(&mut self, field: i32) {
        self.bytes(&self.env.tp.wrapping_add(field).to_le_bytes());
    }

    /// mov fs:[Ctx.field], reg (reg: 0 rax, 1 rcx, 2 rdx)
    fn store(&mut self, reg: u8, field: i32) {
        self.bytes(&[0x64, 0x48, 0x89, 0x04 | reg << 3, 0x25]);
        self.fs_disp(field);
    }

    /// mov reg, fs:[Ctx.field] (reg: 0 rax, 1 rcx, 2 rdx)
    fn load(&mut self, reg: u8, field: i32) {
        self.bytes(&[0x64, 0x48, 0x8b, 0x04 | reg << 3, 0x25]);
        self.fs_disp(field);
    }

    fn store_rcx(&mut self, field: i32) {
        self.store(1, field);
    }

    fn load_rcx(&mut self, field: i32) {
        self.load(1, field);
    }

    /// mov reg, imm64 (reg: 0 rax, 1 rcx, 2 rdx)
    fn mov_imm(&mut self, reg: u8, v: u64) {
        self.bytes(&[0x48, 0xb8 | reg]);
        self.bytes(&v.to_le_bytes());
    }

    /// jmp qword ptr fs:[Ctx.field]
    fn jmp_ctx(&mut self, field: i32) {
        self.bytes(&[0x64, 0xff, 0x24, 0x25]);
        self.fs_disp(field);
    }

    /// Continue at guest `target` through the dispatcher.
    fn goto_dispatcher(&mut self, target: u64) {
        self.store_rcx(off::S_RCX);
        self.mov_imm(1, target);
        self.jmp_ctx(off::DISPATCH);
    }

    /// A direct exit to guest `target`: `jmp rel32` (or the rel32 the
    /// caller just emitted as the last 4 bytes, for `jcc`), aimed at a stub
    /// behind the block until the engine links it to the target's
    /// translation.
    fn link(&mut self, target: u64, opcode: &[u8]) {
        self.bytes(opcode);
        self.bytes(&[0; 4]);
        self.links.push(Link { at: self.code.len() as u32 - 4, stub: 0, target });
    }

    /// The stubs of the direct exits (cold code behind the block), each
    /// exit's rel32 aimed at its stub.
    fn stubs(&mut self) {
        for i in 0..self.links.len() {
            let stub = self.code.len() as u32;
            let Link { at, target, .. } = self.links[i];
            self.goto_dispatcher(target);
            self.links[i].stub = stub;
            let rel = (stub as i32).wrapping_sub(at as i32 + 4);
            self.code[at as usize..at as usize + 4].copy_from_slice(&rel.to_le_bytes());
        }
    }

    /// The block's two extra entries, in front of its body (see `Block`).
    fn prologue(&mut self, pc: u64) {
        // chk: the interrupt byte, flags-free.
        self.store_rcx(off::S_RCX);
        self.mov_imm(1, self.env.kick);
        self.bytes(&[0x0f, 0xb6, 0x09]); // movzx ecx, byte ptr [rcx]
        self.bytes(&[0xe3, 0]); // jrcxz ok
        let jr = self.code.len() - 1;
        // Raised: the dispatcher sees it too and exits at `pc`.
        self.mov_imm(1, pc);
        self.jmp_ctx(off::DISPATCH);
        // ibl: a table hit arrives with RAX, RDX and RCX in their slots.
        self.load(0, off::S_RAX);
        self.load(2, off::S_RDX);
        self.code[jr] = (self.code.len() - (jr + 1)) as u8;
        // ok:
        self.load_rcx(off::S_RCX);
    }

    /// The inline lookup of the guest target in RCX (the guest's RCX in
    /// `Ctx::s_rcx`): a hit jumps to the target's `ibl` entry; a miss, or
    /// a raised interrupt byte, goes to the miss routine, which works the
    /// target out again from RCX (target + tag + byte), RAX (the byte) and
    /// RDX (the tag's address), so the hit path stores no `Ctx::rip`.
    /// Flags-free: the tag compare is `lea` + `jrcxz`, with the interrupt
    /// byte added in (the sum is zero with the byte raised only if the
    /// entry held pc + 1, which never shares pc's index: see `mod.rs`,
    /// `index`; so only for a hit with the byte clear).
    fn lookup(&mut self) {
        self.store(0, off::S_RAX);
        self.store(2, off::S_RDX);
        // The index (`mod.rs`, `index`): low 16 bits + bits 16-31 swapped.
        self.bytes(&[0x89, 0xc8, 0x0f, 0xc8]); // mov eax, ecx; bswap eax
        self.bytes(&[0x8d, 0x04, 0x01, 0x0f, 0xb7, 0xc0]); // lea eax, [rcx + rax]; movzx eax, ax
        self.mov_imm(2, self.env.table);
        self.bytes(&[0x48, 0x8d, 0x04, 0x85, 0, 0, 0, 0]); // lea rax, [rax*4]
        self.bytes(&[0x48, 0x8d, 0x14, 0xc2]); // lea rdx, [rdx + rax*8]: 32 bytes an entry
        self.bytes(&[0x48, 0x8b, 0x02]); // mov rax, [rdx]
        self.bytes(&[0x48, 0x8d, 0x0c, 0x01]); // lea rcx, [rcx + rax]
        self.mov_imm(0, self.env.kick);
        self.bytes(&[0x0f, 0xb6, 0x00]); // movzx eax, byte ptr [rax]
        self.bytes(&[0x48, 0x8d, 0x0c, 0x01]); // lea rcx, [rcx + rax]
        self.bytes(&[0xe3, 8]); // jrcxz hit
        self.jmp_ctx(off::MISS);
        // hit: jmp [rdx + TABLE_HOSTS]
        self.bytes(&[0xff, 0xa2]);
        self.bytes(&TABLE_HOSTS.to_le_bytes());
    }

    /// Leave translated code with `why`, the guest at `pc`.
    fn exit(&mut self, why: u32, pc: u64) {
        self.store_rcx(off::S_RCX);
        self.mov_imm(1, pc);
        self.store_rcx(off::RIP);
        self.load_rcx(off::S_RCX);
        // mov dword ptr fs:[Ctx.reason], why
        self.bytes(&[0x64, 0xc7, 0x04, 0x25]);
        self.fs_disp(off::REASON);
        self.bytes(&why.to_le_bytes());
        self.jmp_ctx(off::EXIT);
    }

    /// `mov rcx, <operand 0 of insn>` for an indirect branch (`raw`, its
    /// bytes: `FF /2` or `FF /4`), at the current position. None when it
    /// cannot be encoded here (an unreachable RIP-relative operand, a
    /// prefix that changes the operand).
    ///
    /// Encoded by hand from the guest's own ModRM, SIB and displacement
    /// (opcode `8B`, reg field RCX, REX.W): iced's `Encoder` builds a table
    /// of every form on first use, about 170 page faults and 0.3 ms that
    /// every program's start-up paid for its first indirect branch.
    fn load_target(&mut self, insn: &Instruction, raw: &[u8]) -> Option<()> {
        let mut seg = None;
        let mut i = 0;
        while let Some(&b) = raw.get(i).filter(|&&b| is_legacy_prefix(b)) {
            match b {
                // The guest's thread segment, through host GS.
                0x64 | 0x65 if insn.segment_prefix() == self.env.seg.register() => seg = Some(0x65),
                // Null segments in 64-bit mode; BND (F2) is a no-op
                // without MPX, which the model does not advertise.
                0x26 | 0x2e | 0x36 | 0x3e | 0xf2 => {}
                _ => return None,
            }
            i += 1;
        }
        let rex = match raw.get(i) {
            Some(&r) if r & 0xf0 == 0x40 => {
                i += 1;
                r
            }
            _ => 0x40,
        };
        if raw.get(i) != Some(&0xff) || raw.len() < i + 2 {
            return None;
        }
        let modrm = raw[i + 1];
        let rest = &raw[i + 2..];
        let start = self.code.len();
        if let Some(s) = seg {
            self.bytes(&[s]);
        }
        // REX.W, REX.R clear (reg = RCX), the guest's REX.X and REX.B.
        self.bytes(&[0x48 | (rex & 0x03), 0x8b, (modrm & 0xc7) | (1 << 3)]);
        self.bytes(rest);
        if insn.is_ip_rel_memory_operand() {
            // mod 00, r/m 101: the disp32 is the instruction's last 4 bytes.
            let end = self.code.len();
            if modrm & 0xc7 != 0x05 || rest.len() != 4 {
                self.code.truncate(start);
                return None;
            }
            let rel = (insn.ip_rel_memory_address() as i64).wrapping_sub((self.at + end as u64) as i64);
            let Ok(rel) = i32::try_from(rel) else {
                self.code.truncate(start);
                return None;
            };
            self.code[end - 4..end].copy_from_slice(&rel.to_le_bytes());
        }
        Some(())
    }

    /// Copy `raw` (the bytes of `insn`) verbatim, with an FS guest's FS
    /// prefix turned into GS and a RIP-relative displacement re-aimed. None
    /// when the displacement cannot reach from here.
    fn verbatim(&mut self, insn: &Instruction, raw: &[u8], disp_at: Option<usize>) -> Option<()> {
        let start = self.code.len();
        self.bytes(raw);
        let prefixes = if self.env.seg == TlsSegment::Fs { raw.len() } else { 0 };
        for i in 0..prefixes {
            let b = self.code[start + i];
            if !is_legacy_prefix(b) {
                break;
            }
            if b == 0x64 {
                self.code[start + i] = 0x65;
            }
        }
        if let Some(d) = disp_at {
            let next = self.at + (start + raw.len()) as u64;
            let rel = (insn.ip_rel_memory_address() as i64).wrapping_sub(next as i64);
            let rel = i32::try_from(rel).ok()?;
            self.code[start + d..start + d + 4].copy_from_slice(&rel.to_le_bytes());
        }
        Some(())
    }
}

/// Translate the guest block at `pc`, whose bytes (as far as they can be
/// fetched) are `bytes`, for the cache address `at`.
pub(crate) fn translate(bytes: &[u8], pc: u64, at: u64, env: Env) -> Translation {
    let mut decoder = Decoder::with_ip(64, bytes, pc, DecoderOptions::NONE);
    let mut e = Emitter { at, env, code: Vec::with_capacity(512), map: Vec::new(), links: Vec::new() };
    e.prologue(pc);
    let body = e.code.len() as u32;
    let mut insn = Instruction::default();
    let mut count = 0;
    // The end of the guest bytes translated so far.
    let mut end = pc;
    // A literal behind the block (a return address `call` pushes): where
    // its rel32 is and its value.
    let mut literal = None;
    loop {
        if count == MAX_INSNS || !decoder.can_decode() {
            // Continue in the next block.
            let next = pc + decoder.position() as u64;
            e.link(next, &[0xe9]);
            break;
        }
        let pos = decoder.position();
        decoder.decode_out(&mut insn);
        let raw = &bytes[pos..pos + insn.len()];
        let kind = if insn.is_invalid() || (env.check && NONDETERMINISTIC.contains(&insn.mnemonic())) {
            Kind::Interp
        } else {
            classify(&insn, env.seg)
        };
        let first = count == 0;
        count += 1;
        let here = insn.ip();
        let next = insn.next_ip();
        match kind {
            Kind::Verbatim => {
                let offs = decoder.get_constant_offsets(&insn);
                let disp_at =
                    (insn.is_ip_rel_memory_operand() && offs.has_displacement()).then_some(offs.displacement_offset());
                let mark = e.code.len();
                e.mark(here, Fixup::None);
                if e.verbatim(&insn, raw, disp_at).is_none() {
                    // Out of reach: the interpreter runs it.
                    e.code.truncate(mark);
                    e.map.pop();
                    if first {
                        return Translation::Interp;
                    }
                    e.link(here, &[0xe9]);
                    break;
                }
                end = next;
            }
            Kind::Interp => {
                if first {
                    return Translation::Interp;
                }
                e.link(here, &[0xe9]);
                break;
            }
            Kind::Syscall => {
                end = next;
                e.exit(reason::SYSCALL, next);
                break;
            }
            Kind::Jmp(target) => {
                end = next;
                e.link(target, &[0xe9]);
                break;
            }
            Kind::Jcc(target) => {
                end = next;
                // jcc rel32 to the taken side; the block goes on with the
                // other (the fall-through stays in line: no jump, no block
                // entry).
                let cc = insn.condition_code() as u8 - 1;
                e.link(target, &[0x0f, 0x80 | cc]);
            }
            Kind::Loop(target) => {
                end = next;
                // The instruction itself with rel8 = +5 (over the jmp to
                // the fall-through side), then the jmp to the taken side.
                e.mark(here, Fixup::None);
                let mut b = raw.to_vec();
                if let Some(last) = b.last_mut() {
                    *last = 5;
                }
                e.bytes(&b);
                e.link(next, &[0xe9]);
                e.link(target, &[0xe9]);
                break;
            }
            Kind::Call(target) => {
                end = next;
                // push qword ptr [rip + literal]; the literal (the guest
                // return address) follows the block.
                e.mark(here, Fixup::None);
                e.bytes(&[0xff, 0x35, 0, 0, 0, 0]);
                literal = Some((e.code.len() - 4, next));
                e.link(target, &[0xe9]);
                break;
            }
            Kind::JmpInd | Kind::CallInd => {
                let mark = e.code.len();
                e.mark(here, Fixup::None);
                e.store_rcx(off::S_RCX);
                if e.load_target(&insn, raw).is_none() {
                    e.code.truncate(mark);
                    e.map.pop();
                    if first {
                        return Translation::Interp;
                    }
                    e.link(here, &[0xe9]);
                    break;
                }
                end = next;
                if kind == Kind::CallInd {
                    e.mark(here, Fixup::RestoreRcx);
                    e.bytes(&[0xff, 0x35, 0, 0, 0, 0]);
                    literal = Some((e.code.len() - 4, next));
                }
                // Nothing below faults (the table and the byte are urun's).
                e.lookup();
                break;
            }
            Kind::Ret(imm) => {
                end = next;
                e.mark(here, Fixup::None);
                e.store_rcx(off::S_RCX);
                e.bytes(&[0x59]); // pop rcx
                if imm != 0 {
                    // lea rsp, [rsp + imm]
                    e.bytes(&[0x48, 0x8d, 0xa4, 0x24]);
                    e.bytes(&(imm as i32).to_le_bytes());
                }
                e.lookup();
                break;
            }
        }
    }
    e.stubs();
    if let Some((patch, value)) = literal {
        let rel = (e.code.len() - (patch + 4)) as i32;
        e.code[patch..patch + 4].copy_from_slice(&rel.to_le_bytes());
        e.bytes(&value.to_le_bytes());
    }
    Translation::Block(Block { code: e.code, map: e.map, guest_len: end - pc, body, links: e.links })
}

/// The guest pc and fixup for a fault at cache offset `off` of a block
/// with side table `map`.
pub(crate) fn guest_pc_at(map: &[PcEntry], off: u32) -> Option<(u64, Fixup)> {
    let i = map.partition_point(|e| e.off <= off);
    (i > 0).then(|| (map[i - 1].pc, map[i - 1].fixup))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::Register;

    const TP: i32 = -0x1000;
    const PC: u64 = 0x40_1000;
    const AT: u64 = 0x50_0000;
    const KICK: u64 = 0x7000_0000_1234;
    const TABLE: u64 = 0x7000_0010_0000;
    const ENV: Env = Env { tp: TP, kick: KICK, table: TABLE, check: false, seg: TlsSegment::Fs };
    const GS_ENV: Env = Env { seg: TlsSegment::Gs, ..ENV };

    fn block(bytes: &[u8]) -> Block {
        match translate(bytes, PC, AT, ENV) {
            Translation::Block(b) => b,
            Translation::Interp => panic!("interpreted"),
        }
    }

    fn disp(field: i32) -> [u8; 4] {
        (TP + field).to_le_bytes()
    }

    /// mov fs:[field], reg / mov reg, fs:[field] (0 rax, 1 rcx, 2 rdx)
    fn st(reg: u8, field: i32) -> Vec<u8> {
        let mut v = vec![0x64, 0x48, 0x89, 0x04 | reg << 3, 0x25];
        v.extend(disp(field));
        v
    }
    fn ld(reg: u8, field: i32) -> Vec<u8> {
        let mut v = vec![0x64, 0x48, 0x8b, 0x04 | reg << 3, 0x25];
        v.extend(disp(field));
        v
    }
    fn imm(reg: u8, v: u64) -> Vec<u8> {
        let mut b = vec![0x48, 0xb8 | reg];
        b.extend(v.to_le_bytes());
        b
    }
    fn jmp_ctx(field: i32) -> Vec<u8> {
        let mut v = vec![0x64, 0xff, 0x24, 0x25];
        v.extend(disp(field));
        v
    }

    /// The three entries in front of every block.
    fn prologue() -> Vec<u8> {
        let mut v = st(1, off::S_RCX);
        v.extend(imm(1, KICK));
        v.extend([0x0f, 0xb6, 0x09, 0xe3, 10 + 8 + 9 + 9]);
        v.extend(imm(1, PC));
        v.extend(jmp_ctx(off::DISPATCH));
        assert_eq!(v.len(), IBL as usize);
        v.extend(ld(0, off::S_RAX));
        v.extend(ld(2, off::S_RDX));
        v.extend(ld(1, off::S_RCX));
        v
    }

    /// mov fs:[S_RCX], rcx; mov rcx, target; jmp fs:[DISPATCH]
    fn to_dispatcher(target: u64) -> Vec<u8> {
        let mut v = st(1, off::S_RCX);
        v.extend(imm(1, target));
        v.extend(jmp_ctx(off::DISPATCH));
        v
    }

    /// The inline lookup of the target in RCX.
    fn inline_lookup() -> Vec<u8> {
        let mut v = st(0, off::S_RAX);
        v.extend(st(2, off::S_RDX));
        v.extend([0x89, 0xc8, 0x0f, 0xc8, 0x8d, 0x04, 0x01, 0x0f, 0xb7, 0xc0]);
        v.extend(imm(2, TABLE));
        v.extend([0x48, 0x8d, 0x04, 0x85, 0, 0, 0, 0]);
        v.extend([0x48, 0x8d, 0x14, 0xc2, 0x48, 0x8b, 0x02, 0x48, 0x8d, 0x0c, 0x01]);
        v.extend(imm(0, KICK));
        v.extend([0x0f, 0xb6, 0x00, 0x48, 0x8d, 0x0c, 0x01, 0xe3, 8]);
        v.extend(jmp_ctx(off::MISS));
        v.extend([0xff, 0xa2, 0x08, 0x00, 0x00, 0x00]);
        v
    }

    /// The body of `b` (past the prologue).
    fn body(b: &Block) -> &[u8] {
        assert_eq!(&b.code[..b.body as usize], &prologue()[..], "prologue");
        &b.code[b.body as usize..]
    }

    #[test]
    fn rip_relative_load_is_reaimed() {
        // mov rax, [rip + 0x100] at PC: reads PC + 7 + 0x100.
        let b = block(&[0x48, 0x8b, 0x05, 0x00, 0x01, 0x00, 0x00]);
        let at = AT + b.body as u64;
        let rel = ((PC + 7 + 0x100) as i64 - (at + 7) as i64) as i32;
        let mut want = vec![0x48, 0x8b, 0x05];
        want.extend(rel.to_le_bytes());
        // jmp rel32 to the stub right behind it (the next block, unlinked)
        want.extend([0xe9, 0, 0, 0, 0]);
        want.extend(to_dispatcher(PC + 7));
        assert_eq!(body(&b), &want[..]);
        assert_eq!(b.map, vec![PcEntry { off: b.body, pc: PC, fixup: Fixup::None }]);
        assert_eq!(b.guest_len, 7);
        assert_eq!(b.links, vec![Link { at: b.body + 8, stub: b.body + 12, target: PC + 7 }]);
    }

    /// The hand-encoded target loads of indirect branches: each decodes
    /// as `mov rcx, <the branch's operand>` (same base, index, scale,
    /// displacement or RIP-relative address, segment through GS).
    #[test]
    fn indirect_branch_targets_load_into_rcx() {
        let forms: &[(&[u8], TlsSegment)] = &[
            (&[0xff, 0xe0], TlsSegment::Fs),                               // jmp rax
            (&[0x41, 0xff, 0xe1], TlsSegment::Fs),                         // jmp r9
            (&[0xff, 0xd1], TlsSegment::Fs),                               // call rcx
            (&[0x3e, 0xff, 0xe2], TlsSegment::Fs),                         // notrack jmp rdx
            (&[0xff, 0x25, 0x10, 0x20, 0, 0], TlsSegment::Fs),             // jmp [rip+0x2010]
            (&[0xf2, 0xff, 0x25, 0xf0, 0xff, 0xff, 0xff], TlsSegment::Fs), // bnd jmp [rip-0x10]
            (&[0x43, 0xff, 0x64, 0xec, 0x10], TlsSegment::Fs),             // jmp [r12+r13*8+0x10]
            (&[0xff, 0x54, 0x24, 0x08], TlsSegment::Fs),                   // call [rsp+8]
            (&[0x41, 0xff, 0x14, 0x24], TlsSegment::Fs),                   // call [r12]
            (&[0x41, 0xff, 0x55, 0x00], TlsSegment::Fs),                   // call [r13+0]
            (&[0xff, 0x24, 0xcd, 0x00, 0x10, 0x40, 0], TlsSegment::Fs),    // jmp [rcx*8+0x401000]
            (&[0x64, 0xff, 0x20], TlsSegment::Fs),                         // jmp fs:[rax]
            (&[0x65, 0xff, 0x10], TlsSegment::Gs),                         // call gs:[rax]
        ];
        for &(raw, seg) in forms {
            let mut d = Decoder::with_ip(64, raw, PC, DecoderOptions::NONE);
            let insn = d.decode();
            assert!(matches!(insn.code(), Code::Jmp_rm64 | Code::Call_rm64), "{raw:x?}");
            let mut e =
                Emitter { at: AT, env: Env { seg, ..ENV }, code: Vec::new(), map: Vec::new(), links: Vec::new() };
            e.load_target(&insn, raw).expect("encoded");
            let mut d = Decoder::with_ip(64, &e.code, AT, DecoderOptions::NONE);
            let load = d.decode();
            assert_eq!(load.len(), e.code.len(), "{raw:x?} -> {:x?}", e.code);
            assert_eq!(load.code(), Code::Mov_r64_rm64, "{raw:x?} -> {:x?}", e.code);
            assert_eq!(load.op0_register(), Register::RCX);
            assert_eq!(load.op1_kind(), insn.op0_kind());
            if insn.op0_kind() == OpKind::Register {
                assert_eq!(load.op1_register(), insn.op0_register());
                continue;
            }
            assert_eq!(load.memory_base(), insn.memory_base(), "{raw:x?}");
            assert_eq!(load.memory_index(), insn.memory_index());
            assert_eq!(load.memory_index_scale(), insn.memory_index_scale());
            let want_seg = if insn.segment_prefix() == seg.register() { Register::GS } else { Register::None };
            let got_seg = match load.segment_prefix() {
                Register::DS => Register::None,
                r => r,
            };
            assert_eq!(got_seg, want_seg, "{raw:x?}");
            if insn.is_ip_rel_memory_operand() {
                assert_eq!(load.ip_rel_memory_address(), insn.ip_rel_memory_address());
            } else {
                assert_eq!(load.memory_displacement64(), insn.memory_displacement64());
            }
        }
        // A 32-bit address size changes the operand: left to the interpreter.
        let raw = [0x67, 0xff, 0x20];
        let insn = Decoder::with_ip(64, &raw, PC, DecoderOptions::NONE).decode();
        let mut e = Emitter { at: AT, env: ENV, code: Vec::new(), map: Vec::new(), links: Vec::new() };
        assert!(e.load_target(&insn, &raw).is_none());
        // Out of reach.
        let raw = [0xff, 0x25, 0, 0, 0, 0];
        let insn = Decoder::with_ip(64, &raw, PC, DecoderOptions::NONE).decode();
        let mut e = Emitter { at: AT + (3 << 30), env: ENV, code: Vec::new(), map: Vec::new(), links: Vec::new() };
        assert!(e.load_target(&insn, &raw).is_none() && e.code.is_empty());
    }

    #[test]
    fn rip_relative_out_of_reach_is_interpreted() {
        let b = match translate(&[0x48, 0x8b, 0x05, 0, 0, 0, 0], PC, AT + (3 << 30), ENV) {
            Translation::Interp => return,
            Translation::Block(b) => b,
        };
        panic!("translated out of reach: {b:?}");
    }

    #[test]
    fn fs_prefix_becomes_gs() {
        // mov rax, fs:[0x28]
        let b = block(&[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0]);
        assert_eq!(&body(&b)[..9], &[0x65, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0]);
    }

    #[test]
    fn a_gs_guest_keeps_its_gs_prefix_and_interprets_fs() {
        // mov rax, gs:[0x30]; mov rcx, fs:[0]
        let code = [0x65, 0x48, 0x8b, 0x04, 0x25, 0x30, 0, 0, 0, 0x64, 0x48, 0x8b, 0x0c, 0x25, 0, 0, 0, 0];
        let Translation::Block(b) = translate(&code, PC, AT, GS_ENV) else { panic!("interpreted") };
        let mut want = code[..9].to_vec();
        want.extend([0xe9, 0, 0, 0, 0]);
        want.extend(to_dispatcher(PC + 9));
        assert_eq!(body(&b), &want[..], "the FS access is left to the interpreter");
        assert_eq!(b.guest_len, 9);
        assert!(matches!(translate(&code[9..], PC, AT, GS_ENV), Translation::Interp));
        // jmp qword ptr gs:[rax]: the target is loaded through GS.
        let Translation::Block(b) = translate(&[0x65, 0xff, 0x20], PC, AT, GS_ENV) else { panic!("interpreted") };
        let o = b.body as usize;
        assert_eq!(&b.code[o + 9..o + 13], &[0x65, 0x48, 0x8b, 0x08]);
        assert!(matches!(translate(&[0x64, 0xff, 0x20], PC, AT, GS_ENV), Translation::Interp));
    }

    #[test]
    fn jcc_has_a_link_on_each_side() {
        // cmp eax, ebx; jne -4 (rel8)
        let b = block(&[0x39, 0xd8, 0x75, 0xfc]);
        let taken = PC + 4 - 4;
        let stub = to_dispatcher(PC + 4).len() as i32;
        let mut want = vec![0x39, 0xd8, 0x0f, 0x85];
        want.extend(5i32.to_le_bytes()); // to the first stub, past the jmp
        want.push(0xe9);
        want.extend(stub.to_le_bytes()); // to the second stub
        want.extend(to_dispatcher(taken));
        want.extend(to_dispatcher(PC + 4));
        assert_eq!(body(&b), &want[..]);
        let o = b.body;
        assert_eq!(
            b.links,
            vec![
                Link { at: o + 4, stub: o + 13, target: taken },
                Link { at: o + 9, stub: o + 13 + stub as u32, target: PC + 4 }
            ]
        );
    }

    #[test]
    fn a_block_goes_on_past_a_conditional_branch() {
        // cmp eax, ebx; jne +1; nop; nop: one block, the taken side an exit.
        let b = block(&[0x39, 0xd8, 0x75, 0x01, 0x90, 0x90]);
        let stub = to_dispatcher(PC + 5).len() as i32;
        let mut want = vec![0x39, 0xd8, 0x0f, 0x85];
        want.extend(7i32.to_le_bytes()); // over the nops and the jmp
        want.extend([0x90, 0x90, 0xe9]);
        want.extend(stub.to_le_bytes());
        want.extend(to_dispatcher(PC + 5));
        want.extend(to_dispatcher(PC + 6));
        assert_eq!(body(&b), &want[..]);
        let o = b.body;
        assert_eq!(
            b.links,
            vec![
                Link { at: o + 4, stub: o + 15, target: PC + 5 },
                Link { at: o + 11, stub: o + 15 + stub as u32, target: PC + 6 }
            ]
        );
        assert_eq!(b.guest_len, 6);
        assert_eq!(guest_pc_at(&b.map, o + 9), Some((PC + 5, Fixup::None)));
    }

    #[test]
    fn syscall_exits_with_the_next_pc() {
        // mov eax, 60; syscall
        let b = block(&[0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05]);
        let mut want = vec![0xb8, 0x3c, 0, 0, 0];
        want.extend(st(1, off::S_RCX));
        want.extend(imm(1, PC + 7));
        want.extend(st(1, off::RIP));
        want.extend(ld(1, off::S_RCX));
        want.extend([0x64, 0xc7, 0x04, 0x25]);
        want.extend(disp(off::REASON));
        want.extend(reason::SYSCALL.to_le_bytes());
        want.extend(jmp_ctx(off::EXIT));
        assert_eq!(body(&b), &want[..]);
        assert!(b.links.is_empty());
    }

    #[test]
    fn call_pushes_the_guest_return_address() {
        // call +0x10
        let b = block(&[0xe8, 0x10, 0, 0, 0]);
        let stub = to_dispatcher(PC + 5 + 0x10);
        let mut want = vec![0xff, 0x35];
        want.extend((5 + stub.len() as i32).to_le_bytes());
        want.extend([0xe9, 0, 0, 0, 0]);
        want.extend(stub);
        want.extend((PC + 5).to_le_bytes());
        assert_eq!(body(&b), &want[..]);
    }

    #[test]
    fn indirect_call_restores_rcx_on_a_push_fault() {
        // call [rax + 8]
        let b = block(&[0xff, 0x50, 0x08]);
        let o = b.body as usize;
        // mov fs:[S_RCX], rcx (9) ; mov rcx, [rax+8] (4) ; push [rip+x] (6)
        assert_eq!(&b.code[o + 9..o + 13], &[0x48, 0x8b, 0x48, 0x08]);
        assert_eq!(&b.code[o + 13..o + 15], &[0xff, 0x35]);
        assert_eq!(&b.code[o + 19..o + 19 + inline_lookup().len()], &inline_lookup()[..]);
        assert_eq!(guest_pc_at(&b.map, o as u32), Some((PC, Fixup::None)));
        assert_eq!(guest_pc_at(&b.map, o as u32 + 9), Some((PC, Fixup::None)));
        assert_eq!(guest_pc_at(&b.map, o as u32 + 13), Some((PC, Fixup::RestoreRcx)));
        assert_eq!(&b.code[b.code.len() - 8..], &(PC + 3).to_le_bytes());
    }

    #[test]
    fn endbr64_is_copied() {
        // endbr64; nop
        let b = block(&[0xf3, 0x0f, 0x1e, 0xfa, 0x90]);
        assert_eq!(&body(&b)[..5], &[0xf3, 0x0f, 0x1e, 0xfa, 0x90]);
        assert_eq!(b.guest_len, 5);
    }

    #[test]
    fn modelled_instructions_go_to_the_interpreter() {
        for bytes in [&[0x0f, 0xa2][..], &[0x0f, 0x0b], &[0xcc], &[0x65, 0x48, 0x8b, 0x00]] {
            assert!(matches!(translate(bytes, PC, AT, ENV), Translation::Interp), "{bytes:x?}");
        }
        // After a translated instruction, the block ends before it.
        let b = block(&[0x90, 0x0f, 0xa2]);
        let mut want = vec![0x90, 0xe9, 0, 0, 0, 0];
        want.extend(to_dispatcher(PC + 1));
        assert_eq!(body(&b), &want[..]);
        assert_eq!(b.guest_len, 1);
    }

    #[test]
    fn ret_pops_and_looks_up_inline() {
        let b = block(&[0xc3]);
        let mut want = st(1, off::S_RCX);
        want.push(0x59);
        want.extend(inline_lookup());
        assert_eq!(body(&b), &want[..]);
    }
}
