//! MMX against the host. Every MMX-operand form of the family is encoded
//! with iced from random operands (MM and XMM registers, general-purpose
//! registers, `[rsi+disp]` memory, every kind of imm8) and run natively, in
//! an RWX harness that loads the whole x87/SSE state with FXRSTOR, runs the
//! instruction and saves the state with FXSAVE and FNSTENV, and in the
//! interpreter from the same state. Compared: the eight x87/MMX registers
//! bit for bit with their exponent bytes, FCW, FSW (TOP included), the full
//! tag word as the host's FNSTENV reports it, MXCSR, XMM0..15, RAX, RCX,
//! RDX, RSI, RDI, R8..R11, the status flags and the data area.
//!
//! Inputs have a random TOP, random tags and random register contents, so
//! the x87 -> MMX transition is always seen. No input leaves an unmasked
//! x87 exception pending (the host would trap); that case has its own
//! interpreter-only test.

use std::arch::asm;

use iced_x86::{Code, Encoder, EncodingKind, Instruction, MemoryOperand, Mnemonic, OpCodeOperandKind as K, Register};

use super::super::sse::tests::{Rng, EDGE32, MXCSRS, RFLAGS_IN};
use super::super::x87::host::{self, full_tag, fx, Fx};
use crate::engine::{Exit, Fault, FaultKind};
use crate::interp::testutil::Snippet;
use crate::state::{fl, reg, X87};

/// The family: every MMX-operand form of these mnemonics must have a
/// handler, and is run against the host.
#[rustfmt::skip]
const FAMILY: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Movd, Movq, Movq2dq, Movdq2q, Movntq, Maskmovq,
        Paddb, Paddw, Paddd, Paddq, Psubb, Psubw, Psubd, Psubq,
        Paddusb, Paddusw, Psubusb, Psubusw, Paddsb, Paddsw, Psubsb, Psubsw,
        Pcmpeqb, Pcmpeqw, Pcmpeqd, Pcmpgtb, Pcmpgtw, Pcmpgtd,
        Pand, Pandn, Por, Pxor,
        Pmullw, Pmulhw, Pmulhuw, Pmuludq, Pmaddwd, Psadbw, Pavgb, Pavgw,
        Pminub, Pmaxub, Pminsw, Pmaxsw, Pmovmskb, Pextrw, Pinsrw, Pshufw,
        Psllw, Pslld, Psllq, Psrlw, Psrld, Psrlq, Psraw, Psrad,
        Punpcklbw, Punpcklwd, Punpckldq, Punpckhbw, Punpckhwd, Punpckhdq,
        Packsswb, Packssdw, Packuswb,
        Cvtpi2ps, Cvtps2pi, Cvttps2pi, Cvtpi2pd, Cvtpd2pi, Cvttpd2pi,
        Pshufb, Palignr, Phaddw, Phaddd, Phaddsw, Phsubw, Phsubd, Phsubsw,
        Pabsb, Pabsw, Pabsd, Psignb, Psignw, Psignd, Pmaddubsw, Pmulhrsw,
    ]
};

fn has_mmx_operand(c: Code) -> bool {
    let oc = c.op_code();
    (0..oc.op_count()).any(|i| matches!(oc.op_kind(i), K::mm_or_mem | K::mm_reg | K::mm_rm))
}

/// The family's forms: legacy-encoded, valid in 64-bit mode, with an MMX
/// operand.
fn family_forms() -> Vec<Code> {
    Code::values()
        .filter(|c| {
            let oc = c.op_code();
            oc.encoding() == EncodingKind::Legacy
                && oc.mode64()
                && has_mmx_operand(*c)
                && FAMILY.contains(&c.mnemonic())
        })
        .collect()
}

// ----- the native harness -----

const PAGE: usize = 8192;
const IN: usize = 4096;
const OUT: usize = 4608;
const HOST: usize = 5120;
const ENV: usize = 5632;

/// Append `bytes` then a RIP-relative ModRM (`reg` field `r`) to `target`.
fn rip(c: &mut Vec<u8>, bytes: &[u8], r: u8, target: usize) {
    c.extend_from_slice(bytes);
    c.push((r << 3) | 5);
    let end = c.len() + 4;
    c.extend_from_slice(&((target as i64 - end as i64) as i32).to_le_bytes());
}

struct Native {
    page: *mut u8,
}

impl Native {
    fn new() -> Native {
        // SAFETY: a fresh anonymous mapping touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap of an executable test page");
        Native { page: p.cast() }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping, which nothing uses any more.
        unsafe { libc::munmap(self.page.cast(), PAGE) };
    }
}

/// GPRs the harness passes in and out, and compares.
const GPRS: [usize; 9] = [reg::RAX, reg::RCX, reg::RDX, reg::RSI, reg::RDI, reg::R8, reg::R9, reg::R10, reg::R11];
/// GPR operands of the tested forms (RSI and RDI point at the data area).
const GPR_OPERANDS: [usize; 7] = [reg::RAX, reg::RCX, reg::RDX, reg::R8, reg::R9, reg::R10, reg::R11];

/// Bytes of the data area seeded and compared.
const DATA: usize = 128;

/// The x87 state compared: registers by physical number, FCW, FSW and
/// the full tag word (natively as FNSTENV reports it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fpu {
    st: [[u8; 10]; 8],
    fcw: u16,
    fsw: u16,
    ftw: u16,
}

impl Fpu {
    fn of(x: &X87) -> Fpu {
        Fpu { st: x.st, fcw: x.fcw, fsw: x.fsw, ftw: x.ftw }
    }
    fn x87(&self) -> X87 {
        X87 { st: self.st, fcw: self.fcw, fsw: self.fsw, ftw: self.ftw, ..X87::default() }
    }
}

/// Everything compared.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Obs {
    x87: Fpu,
    mxcsr: u32,
    xmm: [u128; 16],
    gpr: [u64; 9],
    rflags: u64,
    data: Vec<u8>,
}

/// The FXSAVE image of `o`.
fn image(o: &Obs) -> Fx {
    let mut img = Fx::zeroed();
    host::put_x87(&mut img, &o.x87.x87(), o.x87.fcw, o.x87.fsw);
    img.put_u32(fx::MXCSR, o.mxcsr);
    for (i, v) in o.xmm.iter().enumerate() {
        img.0[fx::XMM + 16 * i..fx::XMM + 16 * (i + 1)].copy_from_slice(&v.to_le_bytes());
    }
    img
}

fn run_native(s: &Snippet, n: &Native, insn: &[u8], o: &Obs) -> Obs {
    let mut c = Vec::with_capacity(256);
    rip(&mut c, &[0x48, 0x0f, 0xae], 0, HOST); // fxsave64 [host]
    rip(&mut c, &[0x48, 0x0f, 0xae], 1, IN); // fxrstor64 [in]
    c.extend_from_slice(insn);
    rip(&mut c, &[0x48, 0x0f, 0xae], 0, OUT); // fxsave64 [out]
    rip(&mut c, &[0xd9], 6, ENV); // fnstenv [env]
    rip(&mut c, &[0x48, 0x0f, 0xae], 1, HOST); // fxrstor64 [host]
    c.push(0xc3);
    assert!(c.len() < IN);
    let img = image(o);
    let mut g = o.gpr;
    let mut rflags: u64;
    // SAFETY: our own RWX page; the code fits below IN and the images in
    // the page. The harness restores the host's x87/SSE state before it
    // returns and runs only non-waiting x87 instructions after the one under
    // test; the input has no unmasked exception pending, so nothing traps.
    // The instruction touches only the registers named here and the data
    // area (memory operands are [rsi+disp] and MASKMOVQ's [rdi], both in it).
    unsafe {
        std::ptr::copy_nonoverlapping(c.as_ptr(), n.page, c.len());
        std::ptr::copy_nonoverlapping(img.0.as_ptr(), n.page.add(IN), 512);
        std::ptr::copy_nonoverlapping(o.data.as_ptr(), s.data as *mut u8, DATA);
        asm!(
            "push r14",
            "popfq",
            "call r15",
            "pushfq",
            "pop r14",
            inout("r14") RFLAGS_IN => rflags,
            in("r15") n.page,
            inout("rax") g[0], inout("rcx") g[1], inout("rdx") g[2], inout("rsi") g[3], inout("rdi") g[4],
            inout("r8") g[5], inout("r9") g[6], inout("r10") g[7], inout("r11") g[8],
            clobber_abi("C"),
        );
    }
    let mut out = Fx::zeroed();
    let mut env = [0u8; 28];
    let mut data = vec![0u8; DATA];
    // SAFETY: reading our own page and the mapped data area.
    unsafe {
        std::ptr::copy_nonoverlapping(n.page.add(OUT), out.0.as_mut_ptr(), 512);
        std::ptr::copy_nonoverlapping(n.page.add(ENV), env.as_mut_ptr(), 28);
        std::ptr::copy_nonoverlapping(s.data as *const u8, data.as_mut_ptr(), DATA);
    }
    let mut x87 = X87::default();
    host::get_x87(&out, &mut x87);
    x87.fcw = out.u16_at(fx::FCW);
    x87.ftw = u16::from_le_bytes([env[8], env[9]]);
    let mut xmm = [0u128; 16];
    for (i, v) in xmm.iter_mut().enumerate() {
        let at = fx::XMM + 16 * i;
        *v = u128::from_le_bytes(out.0[at..at + 16].try_into().unwrap());
    }
    Obs { x87: Fpu::of(&x87), mxcsr: out.u32_at(fx::MXCSR), xmm, gpr: g, rflags: rflags & fl::STATUS, data }
}

/// Run `insn` in the interpreter from `o`: the state, and the exit.
fn run_emulated(s: &Snippet, insn: &[u8], o: &Obs) -> (Obs, Exit) {
    // SAFETY: the data area is mapped RW.
    unsafe { std::ptr::copy_nonoverlapping(o.data.as_ptr(), s.data as *mut u8, DATA) };
    // The closing SYSCALL overwrites RCX and R11: keep them in R12 and R13
    // first (mov r12, rcx; mov r13, r11).
    let code = [insn, &[0x49, 0x89, 0xcc, 0x4d, 0x89, 0xdd]].concat();
    let (cpu, exit) = s.run(&code, |cpu| {
        cpu.x87 = o.x87.x87();
        cpu.mxcsr = o.mxcsr;
        cpu.xmm = o.xmm;
        for (k, r) in GPRS.iter().enumerate() {
            cpu.gpr[*r] = o.gpr[k];
        }
        cpu.flags.set(RFLAGS_IN);
    });
    let mut data = vec![0u8; DATA];
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(s.data as *const u8, data.as_mut_ptr(), DATA) };
    let mut gpr = [0u64; 9];
    for (k, r) in GPRS.iter().enumerate() {
        gpr[k] = cpu.gpr[*r];
    }
    gpr[1] = cpu.gpr[reg::R12];
    gpr[8] = cpu.gpr[reg::R13];
    (
        Obs { x87: Fpu::of(&cpu.x87), mxcsr: cpu.mxcsr, xmm: cpu.xmm, gpr, rflags: cpu.flags.get() & fl::STATUS, data },
        exit,
    )
}

// ----- inputs -----

/// Bytes that make integer lanes interesting.
const EDGE_BYTES: &[u8] = &[0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x81, 0x40, 0x07, 0x08];

/// A 64-bit MMX value: edge lanes, float edges, small counts, or noise.
fn value(rng: &mut Rng) -> u64 {
    match rng.next() % 3 {
        0 => (0..8).fold(0u64, |v, i| v | (rng.pick(EDGE_BYTES) as u64) << (8 * i)),
        _ => rng.half(),
    }
}

/// A random starting state: every x87 register holds a value with random
/// sign and exponent, TOP and the tags are random, FSW carries condition
/// codes and masked exception flags, FCW masks everything with a random
/// rounding and precision control.
fn inputs(rng: &mut Rng, data_base: u64) -> Obs {
    let mut x87 = X87::default();
    for r in x87.st.iter_mut() {
        r[..8].copy_from_slice(&value(rng).to_le_bytes());
        let se: u16 = match rng.next() % 4 {
            0 => 0xffff,
            1 => 0,
            2 => 0x3fff,
            _ => rng.next() as u16,
        };
        r[8..].copy_from_slice(&se.to_le_bytes());
    }
    let top = (rng.next() % 8) as u16;
    x87.fsw = (top << 11) | (rng.next() as u16 & 0x473f);
    x87.fcw = 0x007f | ((rng.next() as u16 & 0xf) << 8);
    if x87.fcw & 0x0300 == 0x0100 {
        x87.fcw &= !0x0100; // precision control 01 is reserved
    }
    let abridged = match rng.next() % 4 {
        0 => 0,
        1 => 0xff,
        _ => rng.next() as u8,
    };
    x87.ftw = full_tag(abridged, &x87.st);
    let mut xmm = [0u128; 16];
    for v in xmm.iter_mut() {
        *v = if rng.next().is_multiple_of(2) {
            rng.xmm()
        } else {
            value(rng) as u128 | (rng.pick(EDGE32) as u128) << 64
        };
    }
    let mut gpr = [0u64; 9];
    for g in gpr.iter_mut() {
        *g = value(rng);
    }
    gpr[3] = data_base;
    gpr[4] = data_base + rng.next() % (DATA as u64 - 8);
    let data = (0..DATA / 8).flat_map(|_| value(rng).to_le_bytes()).collect();
    Obs { x87: Fpu::of(&x87), mxcsr: rng.pick(MXCSRS), xmm, gpr, rflags: RFLAGS_IN & fl::STATUS, data }
}

// ----- encoding random operands for a form -----

/// One operand of an instruction to encode.
#[derive(Clone, Copy)]
enum Op {
    Reg(Register),
    Mem(MemoryOperand),
    Imm(u32),
}

fn gpr32(i: usize) -> Register {
    [Register::EAX, Register::ECX, Register::EDX, Register::R8D, Register::R9D, Register::R10D, Register::R11D][i]
}
fn gpr64(i: usize) -> Register {
    [Register::RAX, Register::RCX, Register::RDX, Register::R8, Register::R9, Register::R10, Register::R11][i]
}

/// Instruction bytes of form `c` with random operands: registers, or
/// `[rsi+disp]` (16-byte aligned for m128), or an imm8 (small shift counts
/// and byte counts are favoured).
fn encode(c: Code, rng: &mut Rng) -> Vec<u8> {
    let oc = c.op_code();
    let mem_size = oc.memory_size().size() as u64;
    let mut r = Rng(rng.next() | 1);
    let disp = if mem_size == 16 { 16 * (rng.next() % 7) } else { rng.next() % (DATA as u64 - 8) };
    let mem = || Op::Mem(MemoryOperand::with_base_displ(Register::RSI, disp as i64));
    let mut ops = Vec::new();
    for i in 0..oc.op_count() {
        let mm = Register::MM0 as usize + (r.next() % 8) as usize;
        let xmm = Register::XMM0 as usize + (r.next() % 16) as usize;
        let g = (r.next() % GPR_OPERANDS.len() as u64) as usize;
        let use_mem = r.next().is_multiple_of(2);
        let reg = |n: usize| Register::values().nth(n).unwrap();
        ops.push(match oc.op_kind(i) {
            K::mm_reg | K::mm_rm => Op::Reg(reg(mm)),
            K::mm_or_mem if use_mem => mem(),
            K::mm_or_mem => Op::Reg(reg(mm)),
            K::xmm_reg | K::xmm_rm => Op::Reg(reg(xmm)),
            K::xmm_or_mem if use_mem => mem(),
            K::xmm_or_mem => Op::Reg(reg(xmm)),
            K::r32_reg | K::r32_rm => Op::Reg(gpr32(g)),
            K::r64_reg | K::r64_rm => Op::Reg(gpr64(g)),
            K::r32_or_mem if use_mem => mem(),
            K::r32_or_mem => Op::Reg(gpr32(g)),
            K::r64_or_mem if use_mem => mem(),
            K::r64_or_mem => Op::Reg(gpr64(g)),
            K::mem => mem(),
            K::imm8 => Op::Imm(match r.next() % 3 {
                0 => (r.next() % 20) as u32,
                1 => (r.next() % 80) as u32,
                _ => (r.next() % 256) as u32,
            }),
            K::seg_rDI => Op::Imm(0), // MASKMOVQ's implicit [rdi]
            k => panic!("{c:?}: operand kind {k:?} not handled by the test"),
        });
    }
    let insn = if c == Code::Maskmovq_rDI_mm_mm {
        let (Op::Reg(a), Op::Reg(b)) = (ops[1], ops[2]) else { unreachable!() };
        Instruction::with_maskmovq(64, a, b, Register::None)
    } else {
        match ops[..] {
            [] => Ok(Instruction::with(c)),
            [Op::Reg(a), Op::Reg(b)] => Instruction::with2(c, a, b),
            [Op::Reg(a), Op::Mem(b)] => Instruction::with2(c, a, b),
            [Op::Mem(a), Op::Reg(b)] => Instruction::with2(c, a, b),
            [Op::Reg(a), Op::Imm(b)] => Instruction::with2(c, a, b),
            [Op::Reg(a), Op::Reg(b), Op::Imm(i)] => Instruction::with3(c, a, b, i),
            [Op::Reg(a), Op::Mem(b), Op::Imm(i)] => Instruction::with3(c, a, b, i),
            _ => panic!("{c:?}: operand shape not handled by the test"),
        }
    }
    .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let mut e = Encoder::new(64);
    e.encode(&insn, 0).unwrap_or_else(|err| panic!("{c:?}: {err}"));
    e.take_buffer()
}

/// Run one case both ways; a description of the difference, if any.
fn check(s: &Snippet, n: &Native, insn: &[u8], o: &Obs) -> Option<String> {
    let want = run_native(s, n, insn, o);
    let (got, exit) = run_emulated(s, insn, o);
    if exit == Exit::Syscall && got == want {
        return None;
    }
    let text = iced_x86::Decoder::new(64, insn, 0).decode();
    Some(format!("{text} ({insn:02x?})\n  in:   {o:x?}\n  host: {want:x?}\n  urun: {got:x?} ({exit:?})"))
}

fn host_lacks_features() -> bool {
    let have = std::arch::is_x86_feature_detected!("ssse3") && std::arch::is_x86_feature_detected!("sse2");
    if !have {
        println!("SKIPPED: the host lacks SSSE3, so it cannot be the oracle for the MMX forms");
    }
    !have
}

/// Cases per form.
const CASES: usize = 400;

#[test]
fn mmx_matches_host() {
    if host_lacks_features() {
        return;
    }
    let s = Snippet::new();
    let n = Native::new();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let forms = family_forms();
    let mut failures = Vec::new();
    let mut cases = 0;
    // EMMS too: it leaves the MMX state the forms above enter.
    let extra = [Code::Emms];
    for c in forms.iter().chain(&extra) {
        for _ in 0..CASES {
            cases += 1;
            let insn = encode(*c, &mut rng);
            if let Some(f) = check(&s, &n, &insn, &inputs(&mut rng, s.data)) {
                failures.push(format!("{c:?}: {f}"));
                break;
            }
        }
    }
    println!("mmx_matches_host: {cases} cases over {} forms, {} differ", forms.len() + extra.len(), failures.len());
    assert!(
        failures.is_empty(),
        "{} of {} forms differ from the host:\n{}",
        failures.len(),
        forms.len() + extra.len(),
        failures.join("\n")
    );
}

/// Every MMX-operand form of the family has a handler (the oracle test runs
/// each of them); MMX-operand forms outside the family are listed.
#[test]
fn mmx_every_form_has_a_handler() {
    let forms = family_forms();
    let table = super::super::table();
    let missing: Vec<String> =
        forms.iter().filter(|c| table[**c as usize].is_none()).map(|c| format!("{c:?}")).collect();
    let others: Vec<String> = Code::values()
        .filter(|c| {
            let oc = c.op_code();
            oc.encoding() == EncodingKind::Legacy && oc.mode64() && has_mmx_operand(*c) && table[*c as usize].is_none()
        })
        .map(|c| format!("{c:?}"))
        .collect();
    println!(
        "mmx_every_form_has_a_handler: {} forms; other MMX-operand forms without a handler: {others:?}",
        forms.len()
    );
    // Every mnemonic of the family has at least one MMX form.
    for m in FAMILY {
        assert!(forms.iter().any(|c| c.mnemonic() == *m), "{m:?} has no MMX-operand form");
    }
    assert!(missing.is_empty(), "no handler for {missing:?}");
}

/// A pending unmasked x87 exception makes an MMX instruction fault (#MF)
/// before it changes anything; a masked one does not.
#[test]
fn mmx_pending_x87_exception_faults() {
    let s = Snippet::new();
    // paddb mm0, mm1; movd eax, mm0; cvtps2pi mm0, xmm1
    for code in [&[0x0f, 0xfc, 0xc1][..], &[0x0f, 0x7e, 0xc0], &[0x0f, 0x2d, 0xc1]] {
        for (fcw, fsw, faults) in [(0x037e, 0x3881u16, true), (0x037f, 0x3801, false), (0x037b, 0x3804, true)] {
            let (cpu, exit) = s.run(code, |cpu| {
                cpu.x87.fcw = fcw;
                cpu.x87.fsw = fsw;
                cpu.x87.ftw = 0xffff;
            });
            if faults {
                let code = if fsw & 1 != 0 { 7 } else { 3 };
                assert_eq!(
                    exit,
                    Exit::Fault(Fault { pc: s.code, kind: FaultKind::FloatingPoint { code } }),
                    "{code:x?}"
                );
                assert_eq!(cpu.x87.fsw & 0x3800, 0x3800, "TOP changed by a faulting instruction");
                assert_eq!(cpu.x87.ftw, 0xffff, "tags changed by a faulting instruction");
                assert_eq!(cpu.x87.fsw & 0x8080, 0x8080, "ES and B set");
            } else {
                assert_eq!(exit, Exit::Syscall);
                assert_eq!(cpu.x87.fsw & 0x3800, 0, "TOP reset");
            }
        }
    }
}

/// A few architectural values written out, so the host is not the only
/// witness.
#[test]
fn mmx_spec_values() {
    let s = Snippet::new();
    // movq mm3, rax with TOP = 5 and every register empty.
    let (cpu, exit) = s.run(&[0x48, 0x0f, 0x6e, 0xd8], |cpu| {
        cpu.gpr[reg::RAX] = 0x0123_4567_89ab_cdef;
        cpu.x87.fsw = 5 << 11;
    });
    assert_eq!(exit, Exit::Syscall);
    assert_eq!(cpu.x87.st[3], [0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0xff, 0xff]);
    assert_eq!(cpu.x87.fsw & 0x3800, 0);
    assert_eq!(host::abridged_tag(cpu.x87.ftw), 0xff);
    // emms afterwards: every register empty again.
    let (cpu, _) = s.run(&[0x0f, 0x77], |cpu| cpu.x87.ftw = 0);
    assert_eq!(cpu.x87.ftw, 0xffff);
    #[rustfmt::skip]
    let cases: &[(&str, &[u8], u64, u64, u64)] = &[
        // (asm, bytes, mm0 in, mm1 in, mm0 out)
        ("packsswb mm0, mm1", &[0x0f, 0x63, 0xc1], 0x8000_7fff_0080_ff80, 0x0001_0002_fffe_0100, 0x0102_fe7f_807f_7f80),
        ("punpckhbw mm0, mm1", &[0x0f, 0x68, 0xc1], 0x8877_6655_4433_2211, 0xffee_ddcc_bbaa_9988, 0xff88_ee77_dd66_cc55),
        ("pshufb mm0, mm1", &[0x0f, 0x38, 0x00, 0xc1], 0x8877_6655_4433_2211, 0x8000_0107_0f08_0009, 0x0011_2288_8811_1122),
        ("phaddw mm0, mm1", &[0x0f, 0x38, 0x01, 0xc1], 0x0004_0003_0002_0001, 0xffff_0001_0010_0020, 0x0000_0030_0007_0003),
        ("psadbw mm0, mm1", &[0x0f, 0xf6, 0xc1], 0xff00_0000_0000_0000, 0x00ff_0000_0000_0001, 0x1ff),
    ];
    for (text, code, a, b, want) in cases {
        let (cpu, exit) = s.run(code, |cpu| {
            cpu.x87.st[0][..8].copy_from_slice(&a.to_le_bytes());
            cpu.x87.st[1][..8].copy_from_slice(&b.to_le_bytes());
        });
        assert_eq!(exit, Exit::Syscall, "{text}");
        let got = u64::from_le_bytes(cpu.x87.st[0][..8].try_into().unwrap());
        assert_eq!(got, *want, "{text}: got {got:#x}");
    }
}
