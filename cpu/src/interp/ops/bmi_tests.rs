//! BMI1/BMI2/ADX/CRC32/RDRAND tests, plus oracle checks of general-purpose
//! instructions other files implement (LAHF/SAHF, CBW..CQO, XLAT, the
//! CF/DF instructions, ADC/SBB chains, NEG/NOT). The host CPU is the
//! oracle: every case runs natively and in the interpreter from the same
//! registers, flags and memory, and all GPRs, every status flag (only
//! what `difftest::masks::TABLE` masks on this host is ignored) and the
//! data window are compared. Instructions are
//! built with iced's encoder, so each names the `Code` it exercises.

use iced_x86::{Code, Encoder, IcedError, Instruction, MemoryOperand, Register};

use super::crc32c;
use crate::interp::ops::oracle::{Oracle, Regs, Rng, EDGE_COUNTS, EDGE_VALUES};
use crate::state::{fl, reg};

/// Encode one instruction for 64-bit mode.
fn enc(i: Result<Instruction, IcedError>) -> Vec<u8> {
    let i = i.expect("operands fit the code");
    let mut e = Encoder::new(64);
    e.encode(&i, 0).expect("encodable");
    e.take_buffer()
}

/// `[rdi]`, which tests point at the oracle's data window.
fn mem() -> MemoryOperand {
    MemoryOperand::with_base(Register::RDI)
}

/// `r` (a 64-bit register) at operand size `size`.
fn sized(r: Register, size: u8) -> Register {
    if size == 8 {
        r
    } else {
        r.full_register32()
    }
}

/// Edge values, then `n` sampled ones of varied bit density.
fn values(rng: &mut Rng, n: usize) -> Vec<u64> {
    let mut v = EDGE_VALUES.to_vec();
    for k in 0..n {
        let x = rng.next();
        v.push(match k % 4 {
            0 => x,
            1 => x & rng.next() & rng.next(),
            2 => x | rng.next() | rng.next(),
            _ => x >> (rng.next() % 64),
        });
    }
    v
}

/// Registers with garbage everywhere, the data pointer in RDI and the
/// given (register, value) pairs.
fn regs(rng: &mut Rng, o: &Oracle, set: &[(usize, u64)]) -> Regs {
    let mut r = Regs { flags: rng.next() & fl::STATUS, ..Default::default() };
    for g in r.gpr.iter_mut() {
        *g = rng.next();
    }
    r.gpr[reg::RDI] = o.data();
    for &(i, v) in set {
        r.gpr[i] = v;
    }
    r
}

/// A source operand in a register or in memory.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Src {
    Reg,
    Mem,
}

/// (name, 32-bit code, 64-bit code).
type Forms = [(&'static str, Code, Code)];

/// ANDN, PDEP, PEXT: `op0 = f(op1, op2)` with op0 = rAX, op1 = rCX,
/// op2 = rDX or [rdi].
#[test]
fn andn_pdep_pext_match_host() {
    let Some(mut o) = Oracle::new() else { return };
    let mut rng = Rng(0xa9d9);
    let forms: &Forms = &[
        ("andn", Code::VEX_Andn_r32_r32_rm32, Code::VEX_Andn_r64_r64_rm64),
        ("pdep", Code::VEX_Pdep_r32_r32_rm32, Code::VEX_Pdep_r64_r64_rm64),
        ("pext", Code::VEX_Pext_r32_r32_rm32, Code::VEX_Pext_r64_r64_rm64),
    ];
    let vals = values(&mut rng, 20);
    for &(name, c32, c64) in forms {
        for size in [4u8, 8] {
            let code = if size == 8 { c64 } else { c32 };
            let (d, a) = (sized(Register::RAX, size), sized(Register::RCX, size));
            let mut pairs: Vec<(u64, u64)> = vals.iter().flat_map(|&x| vals.iter().map(move |&y| (x, y))).collect();
            pairs.extend((0..200).map(|_| (rng.next(), rng.next())));
            for (x, y) in pairs {
                for src in [Src::Reg, Src::Mem] {
                    let bytes = match src {
                        Src::Reg => enc(Instruction::with3(code, d, a, sized(Register::RDX, size))),
                        Src::Mem => enc(Instruction::with3(code, d, a, mem())),
                    };
                    let r = regs(&mut rng, &o, &[(reg::RCX, x), (reg::RDX, y)]);
                    o.check(&format!("{name} size {size} {src:?} {x:#x}, {y:#x}"), &bytes, &r, &y.to_le_bytes());
                }
            }
        }
    }
    o.finish("andn-pdep-pext");
}

/// BEXTR, BZHI, SARX, SHLX, SHRX: `op0 = f(op1, op2)` with op0 = rAX,
/// op1 = rCX or [rdi], op2 = rDX (control, index or count).
#[test]
fn bextr_bzhi_shiftx_match_host() {
    let Some(mut o) = Oracle::new() else { return };
    let mut rng = Rng(0xbe47);
    let vals = values(&mut rng, 12);
    let fields = [0u64, 1, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 128, 255];
    let mut bextr_ctl: Vec<u64> = fields.iter().flat_map(|&s| fields.iter().map(move |&l| s | (l << 8))).collect();
    let mut index: Vec<u64> = (0..=70).chain([127, 128, 255, 256, 0x1_0005, u64::MAX, 0xffff_ff20]).collect();
    let mut counts: Vec<u64> = EDGE_COUNTS.to_vec();
    for _ in 0..20 {
        let x = rng.next();
        // Random fields, and garbage above bit 15 that must be ignored.
        bextr_ctl.push((x & 0xffff_0000_0000_0000) | ((x % 72) << 8) | ((x >> 8) % 72));
        index.push(x);
        counts.push(x);
    }
    let forms: [(&str, Code, Code, &[u64]); 5] = [
        ("bextr", Code::VEX_Bextr_r32_rm32_r32, Code::VEX_Bextr_r64_rm64_r64, &bextr_ctl),
        ("bzhi", Code::VEX_Bzhi_r32_rm32_r32, Code::VEX_Bzhi_r64_rm64_r64, &index),
        ("sarx", Code::VEX_Sarx_r32_rm32_r32, Code::VEX_Sarx_r64_rm64_r64, &counts),
        ("shlx", Code::VEX_Shlx_r32_rm32_r32, Code::VEX_Shlx_r64_rm64_r64, &counts),
        ("shrx", Code::VEX_Shrx_r32_rm32_r32, Code::VEX_Shrx_r64_rm64_r64, &counts),
    ];
    for (name, c32, c64, ctls) in forms {
        for size in [4u8, 8] {
            let code = if size == 8 { c64 } else { c32 };
            let (d, c) = (sized(Register::RAX, size), sized(Register::RDX, size));
            for &x in &vals {
                for &ctl in ctls {
                    for src in [Src::Reg, Src::Mem] {
                        let bytes = match src {
                            Src::Reg => enc(Instruction::with3(code, d, sized(Register::RCX, size), c)),
                            Src::Mem => enc(Instruction::with3(code, d, mem(), c)),
                        };
                        let r = regs(&mut rng, &o, &[(reg::RCX, x), (reg::RDX, ctl)]);
                        o.check(&format!("{name} size {size} {src:?} {x:#x}, {ctl:#x}"), &bytes, &r, &x.to_le_bytes());
                    }
                }
            }
        }
    }
    o.finish("bextr-bzhi-shiftx");
}

/// BLSI, BLSMSK, BLSR and RORX: op0 = rAX, op1 = rCX or [rdi].
#[test]
fn bls_rorx_match_host() {
    let Some(mut o) = Oracle::new() else { return };
    let mut rng = Rng(0xb151);
    let mut vals = values(&mut rng, 200);
    vals.extend([0x100, 0x8000_0000_0000, 0x1_0000_0000, 0x1_8000_0000]);
    let forms: &Forms = &[
        ("blsi", Code::VEX_Blsi_r32_rm32, Code::VEX_Blsi_r64_rm64),
        ("blsmsk", Code::VEX_Blsmsk_r32_rm32, Code::VEX_Blsmsk_r64_rm64),
        ("blsr", Code::VEX_Blsr_r32_rm32, Code::VEX_Blsr_r64_rm64),
    ];
    let mut imms: Vec<u32> = EDGE_COUNTS.iter().map(|&c| c as u32 & 0xff).collect();
    imms.extend((0..8).map(|_| rng.next() as u32 & 0xff));
    for size in [4u8, 8] {
        let d = sized(Register::RAX, size);
        let s = sized(Register::RCX, size);
        for &x in &vals {
            for &(name, c32, c64) in forms {
                let code = if size == 8 { c64 } else { c32 };
                for (src, bytes) in [
                    (Src::Reg, enc(Instruction::with2(code, d, s))),
                    (Src::Mem, enc(Instruction::with2(code, d, mem()))),
                ] {
                    let r = regs(&mut rng, &o, &[(reg::RCX, x)]);
                    o.check(&format!("{name} size {size} {src:?} {x:#x}"), &bytes, &r, &x.to_le_bytes());
                }
            }
            let code = if size == 8 { Code::VEX_Rorx_r64_rm64_imm8 } else { Code::VEX_Rorx_r32_rm32_imm8 };
            for &imm in &imms {
                for (src, bytes) in [
                    (Src::Reg, enc(Instruction::with3(code, d, s, imm))),
                    (Src::Mem, enc(Instruction::with3(code, d, mem(), imm))),
                ] {
                    let r = regs(&mut rng, &o, &[(reg::RCX, x)]);
                    o.check(&format!("rorx size {size} {src:?} {x:#x}, {imm}"), &bytes, &r, &x.to_le_bytes());
                }
            }
        }
    }
    o.finish("bls-rorx");
}

/// MULX hi, lo, r/m (rDX implicit), including destinations that alias
/// each other or rDX.
#[test]
fn mulx_matches_host() {
    let Some(mut o) = Oracle::new() else { return };
    let mut rng = Rng(0x3017);
    let vals = values(&mut rng, 16);
    for size in [4u8, 8] {
        let code = if size == 8 { Code::VEX_Mulx_r64_r64_rm64 } else { Code::VEX_Mulx_r32_r32_rm32 };
        let r = |x: Register| sized(x, size);
        use Register::{RAX, RBX, RCX, RDX};
        let forms = [
            ("hi rax lo rbx, rcx", enc(Instruction::with3(code, r(RAX), r(RBX), r(RCX)))),
            ("hi rax lo rbx, [rdi]", enc(Instruction::with3(code, r(RAX), r(RBX), mem()))),
            ("hi rax lo rax, rcx", enc(Instruction::with3(code, r(RAX), r(RAX), r(RCX)))),
            ("hi rdx lo rbx, rcx", enc(Instruction::with3(code, r(RDX), r(RBX), r(RCX)))),
            ("hi rbx lo rdx, rdx", enc(Instruction::with3(code, r(RBX), r(RDX), r(RDX)))),
        ];
        for &x in &vals {
            for &y in &vals {
                for (form, bytes) in &forms {
                    let regs = regs(&mut rng, &o, &[(reg::RDX, x), (reg::RCX, y)]);
                    o.check(&format!("mulx size {size} {form} rdx {x:#x} src {y:#x}"), bytes, &regs, &y.to_le_bytes());
                }
            }
        }
    }
    o.finish("mulx");
}

/// ADCX and ADOX alone, from every combination of CF and OF, and as the
/// two interleaved carry chains they exist for.
#[test]
fn adcx_adox_match_host() {
    let Some(mut o) = Oracle::new() else { return };
    let mut rng = Rng(0xadc5);
    let vals = values(&mut rng, 12);
    let forms: &Forms =
        &[("adcx", Code::Adcx_r32_rm32, Code::Adcx_r64_rm64), ("adox", Code::Adox_r32_rm32, Code::Adox_r64_rm64)];
    for &(name, c32, c64) in forms {
        for size in [4u8, 8] {
            let code = if size == 8 { c64 } else { c32 };
            let (d, s) = (sized(Register::RAX, size), sized(Register::RCX, size));
            for &x in &vals {
                for &y in &vals {
                    for cin in [0, fl::CF, fl::OF, fl::CF | fl::OF] {
                        for (src, bytes) in [
                            (Src::Reg, enc(Instruction::with2(code, d, s))),
                            (Src::Mem, enc(Instruction::with2(code, d, mem()))),
                        ] {
                            let mut r = regs(&mut rng, &o, &[(reg::RAX, x), (reg::RCX, y)]);
                            r.flags = (r.flags & !(fl::CF | fl::OF)) | cin;
                            o.check(
                                &format!("{name} size {size} {src:?} {x:#x}, {y:#x} flags {cin:#x}"),
                                &bytes,
                                &r,
                                &y.to_le_bytes(),
                            );
                        }
                    }
                }
            }
        }
    }
    // adcx rax, rcx; adox rdx, rbx; adcx rsi, r8; adox r9, [rdi]
    let chain = [
        enc(Instruction::with2(Code::Adcx_r64_rm64, Register::RAX, Register::RCX)),
        enc(Instruction::with2(Code::Adox_r64_rm64, Register::RDX, Register::RBX)),
        enc(Instruction::with2(Code::Adcx_r64_rm64, Register::RSI, Register::R8)),
        enc(Instruction::with2(Code::Adox_r64_rm64, Register::R9, mem())),
    ]
    .concat();
    for k in 0..400 {
        let pick =
            |rng: &mut Rng| if k % 2 == 0 { vals[(rng.next() % vals.len() as u64) as usize] } else { rng.next() };
        let set: Vec<(usize, u64)> = [reg::RAX, reg::RCX, reg::RDX, reg::RBX, reg::RSI, reg::R8, reg::R9]
            .iter()
            .map(|&g| (g, pick(&mut rng)))
            .collect();
        let r = regs(&mut rng, &o, &set);
        let m = pick(&mut rng);
        o.check(&format!("adcx/adox chain #{k}"), &chain, &r, &m.to_le_bytes());
    }
    o.finish("adx");
}

#[test]
fn crc32c_known_answer() {
    // The CRC-32C check value of "123456789", with the usual pre- and
    // post-inversion around the raw instruction semantics.
    let crc = b"123456789".iter().fold(!0u32, |c, &b| crc32c(c, b as u64, 1));
    assert_eq!(!crc, 0xe306_9283);
    // Folding a qword equals folding its bytes in memory order.
    let v = 0x0123_4567_89ab_cdefu64;
    let bytewise = v.to_le_bytes().iter().fold(0x1234_5678, |c, &b| crc32c(c, b as u64, 1));
    assert_eq!(crc32c(0x1234_5678, v, 8), bytewise);
}

/// CRC32 in each of its five forms, register and memory sources.
#[test]
fn crc32_matches_host() {
    let Some(mut o) = Oracle::new() else { return };
    let mut rng = Rng(0xc3c3);
    let vals = values(&mut rng, 30);
    // (code, destination, register source)
    let forms = [
        (Code::Crc32_r32_rm8, Register::EAX, Register::CL),
        (Code::Crc32_r32_rm16, Register::EAX, Register::CX),
        (Code::Crc32_r32_rm32, Register::EAX, Register::ECX),
        (Code::Crc32_r64_rm8, Register::RAX, Register::CL),
        (Code::Crc32_r64_rm64, Register::RAX, Register::RCX),
    ];
    for (code, d, s) in forms {
        for &crc in &vals {
            for &data in &vals {
                for (src, bytes) in [
                    (Src::Reg, enc(Instruction::with2(code, d, s))),
                    (Src::Mem, enc(Instruction::with2(code, d, mem()))),
                ] {
                    let r = regs(&mut rng, &o, &[(reg::RAX, crc), (reg::RCX, data)]);
                    o.check(&format!("{code:?} {src:?} crc {crc:#x} data {data:#x}"), &bytes, &r, &data.to_le_bytes());
                }
            }
        }
        // A high-byte register source (AH..BH) needs no REX.
        if s == Register::CL && d == Register::EAX {
            let bytes = enc(Instruction::with2(code, Register::EAX, Register::CH));
            for &data in &vals {
                let r = regs(&mut rng, &o, &[(reg::RCX, data)]);
                o.check(&format!("crc32 eax, ch data {data:#x}"), &bytes, &r, &[]);
            }
        }
    }
    o.finish("crc32");
}

/// RDRAND/RDSEED give different numbers on each run, so each case follows
/// the instruction with flag-neutral moves that keep only what is
/// deterministic: the flags, the untouched upper bits of a 16-bit
/// destination, and the zeroed upper half of a 32-bit one. A host run
/// that reports failure (CF = 0, which RDSEED may do under load) is
/// retried; the interpreter must always succeed.
#[test]
fn rdrand_rdseed_match_host() {
    let Some(mut o) = Oracle::new() else { return };
    let mut rng = Rng(0x5eed);
    let mut cases = Vec::new();
    for (name, c16, c32, c64) in [
        ("rdrand", Code::Rdrand_r16, Code::Rdrand_r32, Code::Rdrand_r64),
        ("rdseed", Code::Rdseed_r16, Code::Rdseed_r32, Code::Rdseed_r64),
    ] {
        // r16: the random low word is overwritten; bits 16..63 must survive.
        let r16 = [
            enc(Instruction::with1(c16, Register::AX)),
            enc(Instruction::with2(Code::Mov_r16_imm16, Register::AX, 0x1234u32)),
        ]
        .concat();
        // r32: rotate the (zero) upper half down, then drop the random half.
        let r32 = [
            enc(Instruction::with1(c32, Register::EAX)),
            enc(Instruction::with3(Code::VEX_Rorx_r64_rm64_imm8, Register::RAX, Register::RAX, 32u32)),
            enc(Instruction::with2(Code::Mov_r32_rm32, Register::EAX, Register::EAX)),
        ]
        .concat();
        let r64 = [
            enc(Instruction::with1(c64, Register::R9)),
            enc(Instruction::with2(Code::Mov_r64_imm64, Register::R9, 7u64)),
        ]
        .concat();
        cases.extend([(format!("{name} r16"), r16), (format!("{name} r32"), r32), (format!("{name} r64"), r64)]);
    }
    for (what, bytes) in &cases {
        for k in 0..20 {
            let r = regs(&mut rng, &o, &[]);
            o.checked += 1;
            let mut host = o.native(bytes, &r, &[]).0;
            for _ in 0..1000 {
                if host.flags & fl::CF != 0 {
                    break;
                }
                host = o.native(bytes, &r, &[]).0;
            }
            let diff = match o.interp(bytes, &r, &[]) {
                Err(e) => Some(format!("interpreter exited with {e:?}")),
                Ok((i, _)) if i.gpr != host.gpr || i.flags & fl::STATUS != host.flags & fl::STATUS => {
                    Some(format!("host {:x?} {:#x}, interp {:x?} {:#x}", host.gpr, host.flags, i.gpr, i.flags))
                }
                Ok(_) => None,
            };
            if let Some(d) = diff {
                o.failures.push(format!("{what} #{k}: {d}"));
            }
        }
    }
    o.finish("rdrand");
}

// ----- general-purpose instructions implemented elsewhere -----

fn prefix(size: u8) -> &'static [u8] {
    match size {
        2 => &[0x66],
        8 => &[0x48],
        _ => &[],
    }
}

/// LAHF, SAHF, CBW..CQO, CMC/CLC/STC/CLD/STD and XLAT from sampled
/// registers and every status-flag pattern the sample reaches.
#[test]
fn flag_and_widening_ops_match_host() {
    let Some(mut o) = Oracle::new() else { return };
    let mut rng = Rng(0x1a4f);
    let vals = values(&mut rng, 60);
    let ops: [(&str, &[u8]); 15] = [
        ("lahf", &[0x9f]),
        ("sahf", &[0x9e]),
        ("sahf; lahf", &[0x9e, 0x9f]),
        ("cbw", &[0x66, 0x98]),
        ("cwde", &[0x98]),
        ("cdqe", &[0x48, 0x98]),
        ("cwd", &[0x66, 0x99]),
        ("cdq", &[0x99]),
        ("cqo", &[0x48, 0x99]),
        ("cmc", &[0xf5]),
        ("clc", &[0xf8]),
        ("stc", &[0xf9]),
        ("std", &[0xfd]),
        ("cld", &[0xfc]),
        ("std; cmc; cld; stc; cmc", &[0xfd, 0xf5, 0xfc, 0xf9, 0xf5]),
    ];
    for (name, bytes) in ops {
        for &v in &vals {
            for _ in 0..4 {
                let mut r = regs(&mut rng, &o, &[(reg::RAX, v)]);
                r.flags |= rng.next() & fl::DF;
                o.check(&format!("{name} rax {v:#x}"), bytes, &r, &[]);
            }
        }
    }
    // XLAT: AL = [rbx + al], over all 256 indices.
    let table: Vec<u8> = (0..256).map(|_| rng.next() as u8).collect();
    for al in 0..256u64 {
        let rax = (rng.next() & !0xff) | al;
        let r = regs(&mut rng, &o, &[(reg::RAX, rax), (reg::RBX, o.data())]);
        o.check(&format!("xlat al {al:#x}"), &[0xd7], &r, &table);
    }
    // 67 XLAT uses EBX + AL as a 32-bit address: only testable when the
    // data window lies below 4 GiB.
    if o.data() + 256 <= u32::MAX as u64 {
        for al in 0..256u64 {
            let r = regs(&mut rng, &o, &[(reg::RAX, al), (reg::RBX, o.data() | 0xdead_0000_0000_0000)]);
            o.check(&format!("addr32 xlat al {al:#x}"), &[0x67, 0xd7], &r, &table);
        }
    } else {
        eprintln!("flag_and_widening_ops: addr32 XLAT SKIPPED, data window at {:#x} is above 4 GiB", o.data());
    }
    o.finish("gp-flags");
}

/// ADC/SBB chains at each width (the CF produced by one feeds the next),
/// and NEG/NOT on registers, memory and locked memory over edge values.
#[test]
fn carry_chains_and_neg_not_match_host() {
    let Some(mut o) = Oracle::new() else { return };
    let mut rng = Rng(0xcac4);
    let vals = values(&mut rng, 30);
    for size in [1u8, 2, 4, 8] {
        let p = prefix(size);
        let w = if size == 1 { 0 } else { 1 };
        // Registers AL/CL/DL/BL widened to the size; memory at [rdi].
        let imm_op = if size == 1 { 0x80 } else { 0x83 };
        let chain = [
            [p, &[w, 0xc8]].concat(),              // add al, cl
            [p, &[0x10 | w, 0xda]].concat(),       // adc dl, bl
            [p, &[0x10 | w, 0x17]].concat(),       // adc [rdi], dl
            [p, &[0x1a | w, 0x5f, 0x08]].concat(), // sbb bl, [rdi+8]
            [p, &[0x18 | w, 0xc8]].concat(),       // sbb al, cl
            [p, &[imm_op, 0xd2, 0x7f]].concat(),   // adc dl, 0x7f
            [p, &[imm_op, 0xdb, 0x80]].concat(),   // sbb bl, -0x80
        ]
        .concat();
        for k in 0..600 {
            let pick =
                |rng: &mut Rng| if k % 2 == 0 { vals[(rng.next() % vals.len() as u64) as usize] } else { rng.next() };
            let set: Vec<(usize, u64)> =
                [reg::RAX, reg::RCX, reg::RDX, reg::RBX].iter().map(|&g| (g, pick(&mut rng))).collect();
            let r = regs(&mut rng, &o, &set);
            let m = [pick(&mut rng).to_le_bytes(), pick(&mut rng).to_le_bytes()].concat();
            o.check(&format!("adc/sbb chain size {size} #{k}"), &chain, &r, &m);
        }
        for &v in &vals {
            let forms: [(&str, Vec<u8>); 6] = [
                ("neg reg", [p, &[0xf6 | w, 0xd8]].concat()),
                ("neg mem", [p, &[0xf6 | w, 0x1f]].concat()),
                ("lock neg mem", [&[0xf0], p, &[0xf6 | w, 0x1f]].concat()),
                ("not reg", [p, &[0xf6 | w, 0xd0]].concat()),
                ("not mem", [p, &[0xf6 | w, 0x17]].concat()),
                ("lock not mem", [&[0xf0], p, &[0xf6 | w, 0x17]].concat()),
            ];
            for (form, bytes) in forms {
                let r = regs(&mut rng, &o, &[(reg::RAX, v)]);
                o.check(&format!("{form} size {size} {v:#x}"), &bytes, &r, &v.to_le_bytes());
            }
        }
    }
    o.finish("adc-sbb-neg-not");
}

/// VEX.L = 1 makes every BMI form #UD (iced decodes it as invalid), and
/// so does a LOCK prefix; the guest must see SIGILL's fault, not a result.
#[test]
fn bmi_with_vex_l1_or_lock_is_invalid() {
    use crate::engine::{Exit, Fault, FaultKind};
    let Some(mut o) = Oracle::new() else { return };
    let cases: [(&str, &[u8]); 5] = [
        ("bextr L1", &[0xc4, 0xe2, 0x6c, 0xf7, 0xc1]),
        ("mulx L1", &[0xc4, 0xe2, 0xef, 0xf6, 0xc1]),
        ("bzhi L1", &[0xc4, 0xe2, 0xec, 0xf5, 0xc1]),
        ("andn L1", &[0xc4, 0xe2, 0x74, 0xf2, 0xc2]),
        ("lock andn", &[0xf0, 0xc4, 0xe2, 0x70, 0xf2, 0xc2]),
    ];
    for (what, bytes) in cases {
        let r = Regs::default();
        let got = o.interp(bytes, &r, &[]);
        assert!(
            matches!(got, Err(Exit::Fault(Fault { kind: FaultKind::InvalidOpcode { .. }, .. }))),
            "{what}: expected #UD, got {got:?}"
        );
    }
}

/// CLFLUSH (filled in passing: CPUID leaf 1 EDX bit 19 is passed through
/// from the host): no architectural effect on a readable line, a page
/// fault on an unmapped one.
#[test]
fn clflush_matches_host_and_faults_on_unmapped() {
    use crate::engine::{Exit, Fault, FaultKind};
    let Some(mut o) = Oracle::new() else { return };
    let mut rng = Rng(0xc1f1);
    let bytes = enc(Instruction::with1(Code::Clflush_m8, MemoryOperand::with_base_displ(Register::RDI, 0x40)));
    let mem: Vec<u8> = (0..256).map(|_| rng.next() as u8).collect();
    for k in 0..16 {
        let r = regs(&mut rng, &o, &[]);
        o.check(&format!("clflush #{k}"), &bytes, &r, &mem);
    }
    o.finish("clflush");
    let mut r = Regs::default();
    r.gpr[reg::RDI] = 0x1000;
    let got = o.interp(&bytes, &r, &[]);
    assert!(matches!(got, Err(Exit::Fault(Fault { kind: FaultKind::Page { .. }, .. }))), "clflush [0x1040]: {got:?}");
}
