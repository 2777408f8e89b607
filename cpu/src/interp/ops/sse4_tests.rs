//! SSE3/SSSE3/SSE4/AES-NI/PCLMULQDQ tests, after `sse_tests.rs`: the host
//! CPU is the oracle. Each instruction runs natively (in an executable
//! host page, with the same registers, MXCSR, flags and memory) and in the
//! interpreter, and everything observable is compared: XMM0..3, RAX, RCX,
//! RDX, the status flags, MXCSR and the data bytes. Every imm8 form is
//! checked for the instructions that take one; the string compares get
//! strings built to match often (a small alphabet, embedded NULs, ranges)
//! and lengths in EAX/EDX (RAX/RDX) that are negative, zero, over 16 and
//! with stray upper bits. Faults have their own table.

use core::arch::x86_64::__m128i;
use std::arch::asm;

use super::super::sse::tests::{NativePage, Rng, EDGE32, MXCSRS, RFLAGS_IN};
use crate::engine::{Exit, Fault, FaultKind};
use crate::interp::testutil::Snippet;
use crate::state::{fl, reg};

/// Instructions checked against the host: (assembly, its bytes from nasm).
/// Memory operands are at [rsi], which points at the data area.
#[rustfmt::skip]
const ORACLE_CASES: &[(&str, &[u8])] = &[
    ("addsubps xmm0, xmm1", &[0xf2, 0x0f, 0xd0, 0xc1]),
    ("addsubps xmm0, [rsi]", &[0xf2, 0x0f, 0xd0, 0x06]),
    ("addsubpd xmm0, xmm1", &[0x66, 0x0f, 0xd0, 0xc1]),
    ("addsubpd xmm0, [rsi+16]", &[0x66, 0x0f, 0xd0, 0x46, 0x10]),
    ("haddps xmm0, xmm1", &[0xf2, 0x0f, 0x7c, 0xc1]),
    ("haddps xmm0, xmm0", &[0xf2, 0x0f, 0x7c, 0xc0]),
    ("haddpd xmm0, [rsi+16]", &[0x66, 0x0f, 0x7c, 0x46, 0x10]),
    ("haddpd xmm0, xmm1", &[0x66, 0x0f, 0x7c, 0xc1]),
    ("hsubps xmm0, xmm1", &[0xf2, 0x0f, 0x7d, 0xc1]),
    ("hsubpd xmm0, xmm1", &[0x66, 0x0f, 0x7d, 0xc1]),
    ("hsubps xmm0, [rsi]", &[0xf2, 0x0f, 0x7d, 0x06]),
    ("movshdup xmm0, xmm1", &[0xf3, 0x0f, 0x16, 0xc1]),
    ("movshdup xmm0, [rsi]", &[0xf3, 0x0f, 0x16, 0x06]),
    ("movsldup xmm0, xmm1", &[0xf3, 0x0f, 0x12, 0xc1]),
    ("movsldup xmm2, [rsi+16]", &[0xf3, 0x0f, 0x12, 0x56, 0x10]),
    ("movddup xmm0, xmm1", &[0xf2, 0x0f, 0x12, 0xc1]),
    ("movddup xmm0, [rsi+3]", &[0xf2, 0x0f, 0x12, 0x46, 0x03]),
    ("lddqu xmm0, [rsi+5]", &[0xf2, 0x0f, 0xf0, 0x46, 0x05]),
    ("pshufb xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x00, 0xc1]),
    ("pshufb xmm0, [rsi]", &[0x66, 0x0f, 0x38, 0x00, 0x06]),
    ("pshufb xmm0, xmm0", &[0x66, 0x0f, 0x38, 0x00, 0xc0]),
    ("phaddw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x01, 0xc1]),
    ("phaddw xmm0, [rsi]", &[0x66, 0x0f, 0x38, 0x01, 0x06]),
    ("phaddd xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x02, 0xc1]),
    ("phaddsw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x03, 0xc1]),
    ("phsubw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x05, 0xc1]),
    ("phsubd xmm0, [rsi+16]", &[0x66, 0x0f, 0x38, 0x06, 0x46, 0x10]),
    ("phsubsw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x07, 0xc1]),
    ("pabsb xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x1c, 0xc1]),
    ("pabsw xmm0, [rsi]", &[0x66, 0x0f, 0x38, 0x1d, 0x06]),
    ("pabsd xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x1e, 0xc1]),
    ("psignb xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x08, 0xc1]),
    ("psignw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x09, 0xc1]),
    ("psignd xmm0, [rsi]", &[0x66, 0x0f, 0x38, 0x0a, 0x06]),
    ("pmaddubsw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x04, 0xc1]),
    ("pmaddubsw xmm0, [rsi+16]", &[0x66, 0x0f, 0x38, 0x04, 0x46, 0x10]),
    ("pmulhrsw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x0b, 0xc1]),
    ("pmulhrsw xmm0, xmm0", &[0x66, 0x0f, 0x38, 0x0b, 0xc0]),
    ("blendvps xmm1, xmm2", &[0x66, 0x0f, 0x38, 0x14, 0xca]),
    ("blendvps xmm1, [rsi]", &[0x66, 0x0f, 0x38, 0x14, 0x0e]),
    ("blendvpd xmm1, xmm2", &[0x66, 0x0f, 0x38, 0x15, 0xca]),
    ("blendvpd xmm2, [rsi+16]", &[0x66, 0x0f, 0x38, 0x15, 0x56, 0x10]),
    ("pblendvb xmm1, xmm2", &[0x66, 0x0f, 0x38, 0x10, 0xca]),
    ("pblendvb xmm2, [rsi]", &[0x66, 0x0f, 0x38, 0x10, 0x16]),
    ("pblendvb xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x10, 0xc1]),
    ("pminsb xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x38, 0xc1]),
    ("pmaxsb xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x3c, 0xc1]),
    ("pminuw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x3a, 0xc1]),
    ("pmaxuw xmm0, [rsi]", &[0x66, 0x0f, 0x38, 0x3e, 0x06]),
    ("pminsd xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x39, 0xc1]),
    ("pmaxsd xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x3d, 0xc1]),
    ("pminud xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x3b, 0xc1]),
    ("pmaxud xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x3f, 0xc1]),
    ("pmulld xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x40, 0xc1]),
    ("pmulld xmm0, [rsi]", &[0x66, 0x0f, 0x38, 0x40, 0x06]),
    ("pmuldq xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x28, 0xc1]),
    ("pmuldq xmm0, [rsi+16]", &[0x66, 0x0f, 0x38, 0x28, 0x46, 0x10]),
    ("pcmpeqq xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x29, 0xc1]),
    ("pcmpeqq xmm0, xmm0", &[0x66, 0x0f, 0x38, 0x29, 0xc0]),
    ("pcmpgtq xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x37, 0xc1]),
    ("pcmpgtq xmm0, [rsi]", &[0x66, 0x0f, 0x38, 0x37, 0x06]),
    ("packusdw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x2b, 0xc1]),
    ("packusdw xmm0, [rsi]", &[0x66, 0x0f, 0x38, 0x2b, 0x06]),
    ("pmovsxbw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x20, 0xc1]),
    ("pmovsxbw xmm0, [rsi+3]", &[0x66, 0x0f, 0x38, 0x20, 0x46, 0x03]),
    ("pmovsxbd xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x21, 0xc1]),
    ("pmovsxbd xmm0, [rsi+1]", &[0x66, 0x0f, 0x38, 0x21, 0x46, 0x01]),
    ("pmovsxbq xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x22, 0xc1]),
    ("pmovsxbq xmm0, [rsi+7]", &[0x66, 0x0f, 0x38, 0x22, 0x46, 0x07]),
    ("pmovsxwd xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x23, 0xc1]),
    ("pmovsxwd xmm0, [rsi+5]", &[0x66, 0x0f, 0x38, 0x23, 0x46, 0x05]),
    ("pmovsxwq xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x24, 0xc1]),
    ("pmovsxwq xmm0, [rsi+2]", &[0x66, 0x0f, 0x38, 0x24, 0x46, 0x02]),
    ("pmovsxdq xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x25, 0xc1]),
    ("pmovsxdq xmm0, [rsi+9]", &[0x66, 0x0f, 0x38, 0x25, 0x46, 0x09]),
    ("pmovzxbw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x30, 0xc1]),
    ("pmovzxbw xmm0, [rsi+3]", &[0x66, 0x0f, 0x38, 0x30, 0x46, 0x03]),
    ("pmovzxbd xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x31, 0xc1]),
    ("pmovzxbd xmm0, [rsi+1]", &[0x66, 0x0f, 0x38, 0x31, 0x46, 0x01]),
    ("pmovzxbq xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x32, 0xc1]),
    ("pmovzxbq xmm0, [rsi+7]", &[0x66, 0x0f, 0x38, 0x32, 0x46, 0x07]),
    ("pmovzxwd xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x33, 0xc1]),
    ("pmovzxwd xmm0, [rsi+5]", &[0x66, 0x0f, 0x38, 0x33, 0x46, 0x05]),
    ("pmovzxwq xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x34, 0xc1]),
    ("pmovzxwq xmm0, [rsi+2]", &[0x66, 0x0f, 0x38, 0x34, 0x46, 0x02]),
    ("pmovzxdq xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x35, 0xc1]),
    ("pmovzxdq xmm0, [rsi+9]", &[0x66, 0x0f, 0x38, 0x35, 0x46, 0x09]),
    ("pmovzxdq xmm0, xmm0", &[0x66, 0x0f, 0x38, 0x35, 0xc0]),
    ("ptest xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x17, 0xc1]),
    ("ptest xmm0, xmm0", &[0x66, 0x0f, 0x38, 0x17, 0xc0]),
    ("ptest xmm1, [rsi]", &[0x66, 0x0f, 0x38, 0x17, 0x0e]),
    ("phminposuw xmm0, xmm1", &[0x66, 0x0f, 0x38, 0x41, 0xc1]),
    ("phminposuw xmm0, [rsi+16]", &[0x66, 0x0f, 0x38, 0x41, 0x46, 0x10]),
    ("movntdqa xmm0, [rsi+16]", &[0x66, 0x0f, 0x38, 0x2a, 0x46, 0x10]),
    ("movntdqa xmm1, [rsi]", &[0x66, 0x0f, 0x38, 0x2a, 0x0e]),
    ("aesenc xmm0, xmm1", &[0x66, 0x0f, 0x38, 0xdc, 0xc1]),
    ("aesenc xmm0, [rsi]", &[0x66, 0x0f, 0x38, 0xdc, 0x06]),
    ("aesenclast xmm0, xmm1", &[0x66, 0x0f, 0x38, 0xdd, 0xc1]),
    ("aesdec xmm0, xmm1", &[0x66, 0x0f, 0x38, 0xde, 0xc1]),
    ("aesdec xmm0, [rsi+16]", &[0x66, 0x0f, 0x38, 0xde, 0x46, 0x10]),
    ("aesdeclast xmm0, xmm1", &[0x66, 0x0f, 0x38, 0xdf, 0xc1]),
    ("aesimc xmm0, xmm1", &[0x66, 0x0f, 0x38, 0xdb, 0xc1]),
    ("aesimc xmm0, [rsi]", &[0x66, 0x0f, 0x38, 0xdb, 0x06]),
    ("pextrb eax, xmm1, 5", &[0x66, 0x0f, 0x3a, 0x14, 0xc8, 0x05]),
    ("pextrb [rsi+1], xmm1, 15", &[0x66, 0x0f, 0x3a, 0x14, 0x4e, 0x01, 0x0f]),
    ("pextrd eax, xmm1, 3", &[0x66, 0x0f, 0x3a, 0x16, 0xc8, 0x03]),
    ("pextrd [rsi+2], xmm0, 1", &[0x66, 0x0f, 0x3a, 0x16, 0x46, 0x02, 0x01]),
    ("pextrq rax, xmm1, 1", &[0x66, 0x48, 0x0f, 0x3a, 0x16, 0xc8, 0x01]),
    ("pextrq [rsi+1], xmm1, 0", &[0x66, 0x48, 0x0f, 0x3a, 0x16, 0x4e, 0x01, 0x00]),
    ("extractps eax, xmm1, 2", &[0x66, 0x0f, 0x3a, 0x17, 0xc8, 0x02]),
    ("extractps [rsi+1], xmm1, 3", &[0x66, 0x0f, 0x3a, 0x17, 0x4e, 0x01, 0x03]),
    ("pinsrb xmm0, eax, 7", &[0x66, 0x0f, 0x3a, 0x20, 0xc0, 0x07]),
    ("pinsrb xmm0, [rsi+1], 15", &[0x66, 0x0f, 0x3a, 0x20, 0x46, 0x01, 0x0f]),
    ("pinsrd xmm0, ecx, 2", &[0x66, 0x0f, 0x3a, 0x22, 0xc1, 0x02]),
    ("pinsrd xmm0, [rsi+3], 3", &[0x66, 0x0f, 0x3a, 0x22, 0x46, 0x03, 0x03]),
    ("pinsrq xmm0, rax, 1", &[0x66, 0x48, 0x0f, 0x3a, 0x22, 0xc0, 0x01]),
    ("pinsrq xmm0, [rsi+1], 0", &[0x66, 0x48, 0x0f, 0x3a, 0x22, 0x46, 0x01, 0x00]),
    ("insertps xmm0, [rsi+4], 0xd6", &[0x66, 0x0f, 0x3a, 0x21, 0x46, 0x04, 0xd6]),
    ("roundss xmm0, [rsi+4], 4", &[0x66, 0x0f, 0x3a, 0x0a, 0x46, 0x04, 0x04]),
    ("roundsd xmm0, [rsi+8], 9", &[0x66, 0x0f, 0x3a, 0x0b, 0x46, 0x08, 0x09]),
    ("roundps xmm0, [rsi], 0x0c", &[0x66, 0x0f, 0x3a, 0x08, 0x06, 0x0c]),
    ("roundpd xmm0, [rsi+16], 2", &[0x66, 0x0f, 0x3a, 0x09, 0x46, 0x10, 0x02]),
    ("dpps xmm0, [rsi], 0xff", &[0x66, 0x0f, 0x3a, 0x40, 0x06, 0xff]),
    ("dppd xmm0, [rsi+16], 0x31", &[0x66, 0x0f, 0x3a, 0x41, 0x46, 0x10, 0x31]),
    ("mpsadbw xmm0, [rsi], 0xfd", &[0x66, 0x0f, 0x3a, 0x42, 0x06, 0xfd]),
    ("palignr xmm0, [rsi], 7", &[0x66, 0x0f, 0x3a, 0x0f, 0x06, 0x07]),
    ("pblendw xmm0, [rsi], 0x5a", &[0x66, 0x0f, 0x3a, 0x0e, 0x06, 0x5a]),
    ("blendps xmm0, [rsi+16], 0x6", &[0x66, 0x0f, 0x3a, 0x0c, 0x46, 0x10, 0x06]),
    ("blendpd xmm0, [rsi], 0x1", &[0x66, 0x0f, 0x3a, 0x0d, 0x06, 0x01]),
    ("aeskeygenassist xmm0, [rsi], 0x1b", &[0x66, 0x0f, 0x3a, 0xdf, 0x06, 0x1b]),
    ("pclmulqdq xmm0, [rsi], 0x11", &[0x66, 0x0f, 0x3a, 0x44, 0x06, 0x11]),
];

/// Forms checked for every imm8 (appended to these bytes).
#[rustfmt::skip]
const IMM8_FORMS: &[(&str, &[u8])] = &[
    ("palignr xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x0f, 0xc1]),
    ("pblendw xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x0e, 0xc1]),
    ("blendps xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x0c, 0xc1]),
    ("blendpd xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x0d, 0xc1]),
    ("pextrb eax, xmm1", &[0x66, 0x0f, 0x3a, 0x14, 0xc8]),
    ("pextrb [rsi+1], xmm0", &[0x66, 0x0f, 0x3a, 0x14, 0x46, 0x01]),
    ("pextrd ecx, xmm1", &[0x66, 0x0f, 0x3a, 0x16, 0xc9]),
    ("pextrq rax, xmm1", &[0x66, 0x48, 0x0f, 0x3a, 0x16, 0xc8]),
    ("extractps eax, xmm1", &[0x66, 0x0f, 0x3a, 0x17, 0xc8]),
    ("extractps [rsi+3], xmm1", &[0x66, 0x0f, 0x3a, 0x17, 0x4e, 0x03]),
    ("pinsrb xmm0, ecx", &[0x66, 0x0f, 0x3a, 0x20, 0xc1]),
    ("pinsrd xmm0, eax", &[0x66, 0x0f, 0x3a, 0x22, 0xc0]),
    ("pinsrq xmm0, rcx", &[0x66, 0x48, 0x0f, 0x3a, 0x22, 0xc1]),
    ("insertps xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x21, 0xc1]),
    ("insertps xmm0, [rsi+1]", &[0x66, 0x0f, 0x3a, 0x21, 0x46, 0x01]),
    ("roundps xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x08, 0xc1]),
    ("roundpd xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x09, 0xc1]),
    ("roundss xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x0a, 0xc1]),
    ("roundsd xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x0b, 0xc1]),
    ("dpps xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x40, 0xc1]),
    ("dppd xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x41, 0xc1]),
    ("mpsadbw xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x42, 0xc1]),
    ("aeskeygenassist xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0xdf, 0xc1]),
    ("pclmulqdq xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x44, 0xc1]),
    ("pextrb rcx, xmm1 (REX.W)", &[0x66, 0x48, 0x0f, 0x3a, 0x14, 0xc9]),
    ("extractps rax, xmm1 (REX.W)", &[0x66, 0x48, 0x0f, 0x3a, 0x17, 0xc8]),
    ("pinsrb xmm0, rax (REX.W)", &[0x66, 0x48, 0x0f, 0x3a, 0x20, 0xc0]),
];

/// The SSE4.2 string compares, checked for every imm8 with string inputs.
#[rustfmt::skip]
const STRING_FORMS: &[(&str, &[u8])] = &[
    ("pcmpestri xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x61, 0xc1]),
    ("pcmpestri xmm1, [rsi+1]", &[0x66, 0x0f, 0x3a, 0x61, 0x4e, 0x01]),
    ("pcmpestrm xmm1, xmm2", &[0x66, 0x0f, 0x3a, 0x60, 0xca]),
    ("pcmpestrm xmm0, [rsi+3]", &[0x66, 0x0f, 0x3a, 0x60, 0x46, 0x03]),
    ("pcmpistri xmm0, xmm1", &[0x66, 0x0f, 0x3a, 0x63, 0xc1]),
    ("pcmpistri xmm1, [rsi+1]", &[0x66, 0x0f, 0x3a, 0x63, 0x4e, 0x01]),
    ("pcmpistrm xmm1, xmm2", &[0x66, 0x0f, 0x3a, 0x62, 0xca]),
    ("pcmpistrm xmm0, [rsi+3]", &[0x66, 0x0f, 0x3a, 0x62, 0x46, 0x03]),
    ("pcmpestri xmm0, xmm1 (REX.W: lengths in RAX, RDX)", &[0x66, 0x48, 0x0f, 0x3a, 0x61, 0xc1]),
    ("pcmpestrm xmm1, xmm2 (REX.W)", &[0x66, 0x48, 0x0f, 0x3a, 0x60, 0xca]),
];

/// Observable state before and after one instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Obs {
    xmm: [u128; 4],
    rax: u64,
    rcx: u64,
    rdx: u64,
    rflags: u64,
    mxcsr: u32,
    data: [u8; DATA],
}

const DATA: usize = 64;

/// Run `code` natively from state `o`; RSI points at the data area.
fn run_native(s: &Snippet, page: &NativePage, code: &[u8], o: &Obs) -> Obs {
    let entry = page.0 as u64;
    let mut bytes = code.to_vec();
    bytes.push(0xc3);
    // SAFETY: the native page is 4 KiB of RWX host memory and instructions
    // are short; the data area is 64 KiB of mapped RW memory.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), entry as *mut u8, bytes.len());
        std::ptr::copy_nonoverlapping(o.data.as_ptr(), s.data as *mut u8, DATA);
    }
    let to = |v: u128| -> __m128i {
        // SAFETY: 16 plain bytes each way.
        unsafe { core::mem::transmute(v) }
    };
    let (mut x0, mut x1, mut x2, mut x3) = (to(o.xmm[0]), to(o.xmm[1]), to(o.xmm[2]), to(o.xmm[3]));
    let (mut rax, mut rcx, mut rdx, mut rsi) = (o.rax, o.rcx, o.rdx, s.data);
    let mut csr = o.mxcsr;
    let mut host_csr = 0u32;
    let mut rflags: u64;
    // SAFETY: calls one tested instruction followed by RET; it touches
    // only the registers named here and the data area. The host MXCSR is
    // saved and restored around it; the test MXCSR masks every exception
    // so it cannot trap.
    unsafe {
        asm!(
            "stmxcsr [r12]",
            "ldmxcsr [r13]",
            "push r14",
            "popfq",
            "call r15",
            "pushfq",
            "pop r14",
            "stmxcsr [r13]",
            "ldmxcsr [r12]",
            in("r12") &raw mut host_csr,
            in("r13") &raw mut csr,
            inout("r14") RFLAGS_IN => rflags,
            in("r15") entry,
            inout("xmm0") x0, inout("xmm1") x1, inout("xmm2") x2, inout("xmm3") x3,
            inout("rax") rax, inout("rcx") rcx, inout("rdx") rdx, inout("rsi") rsi,
            clobber_abi("C"),
        );
    }
    assert_eq!(rsi, s.data, "RSI changed natively");
    let from = |v: __m128i| -> u128 {
        // SAFETY: 16 plain bytes each way.
        unsafe { core::mem::transmute(v) }
    };
    let mut data = [0u8; DATA];
    // SAFETY: the data area is mapped and readable.
    unsafe { std::ptr::copy_nonoverlapping(s.data as *const u8, data.as_mut_ptr(), DATA) };
    Obs { xmm: [from(x0), from(x1), from(x2), from(x3)], rax, rcx, rdx, rflags: rflags & fl::STATUS, mxcsr: csr, data }
}

/// Run `code` in the interpreter from state `o`.
fn run_emulated(s: &Snippet, code: &[u8], o: &Obs) -> (Obs, Exit) {
    // SAFETY: the data area is mapped RW.
    unsafe { std::ptr::copy_nonoverlapping(o.data.as_ptr(), s.data as *mut u8, DATA) };
    // SYSCALL, which ends every snippet, overwrites RCX: keep it in R8
    // first (mov r8, rcx).
    let code = [code, &[0x49, 0x89, 0xc8]].concat();
    let (cpu, exit) = s.run(&code, |cpu| {
        cpu.xmm[..4].copy_from_slice(&o.xmm);
        cpu.gpr[reg::RAX] = o.rax;
        cpu.gpr[reg::RCX] = o.rcx;
        cpu.gpr[reg::RDX] = o.rdx;
        cpu.gpr[reg::RSI] = s.data;
        cpu.mxcsr = o.mxcsr;
        cpu.flags.set(RFLAGS_IN);
    });
    let mut data = [0u8; DATA];
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(s.data as *const u8, data.as_mut_ptr(), DATA) };
    let xmm = [cpu.xmm[0], cpu.xmm[1], cpu.xmm[2], cpu.xmm[3]];
    let obs = Obs {
        xmm,
        rax: cpu.gpr[reg::RAX],
        rcx: cpu.gpr[reg::R8],
        rdx: cpu.gpr[reg::RDX],
        rflags: cpu.flags.get() & fl::STATUS,
        mxcsr: cpu.mxcsr,
        data,
    };
    (obs, exit)
}

/// Bytes that make integer lanes interesting: zero, one, the signed and
/// unsigned extremes and their neighbours.
const EDGE_BYTES: &[u8] = &[0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x81, 0x40];

/// A vector: the SSE tests' mix of float edges and noise, or edge bytes,
/// or edge dwords (so that whole words and dwords are extreme too).
fn vector(rng: &mut Rng) -> u128 {
    match rng.next() % 4 {
        0 | 1 => rng.xmm(),
        2 => (0..16).fold(0u128, |v, i| v | (rng.pick(EDGE_BYTES) as u128) << (8 * i)),
        _ => (0..4).fold(0u128, |v, i| v | (rng.pick(EDGE32) as u128) << (32 * i)),
    }
}

fn inputs(rng: &mut Rng) -> Obs {
    let mut data = [0u8; DATA];
    for chunk in data.chunks_mut(16) {
        chunk.copy_from_slice(&vector(rng).to_le_bytes());
    }
    Obs {
        xmm: [vector(rng), vector(rng), vector(rng), vector(rng)],
        rax: rng.half(),
        rcx: rng.half(),
        rdx: rng.half(),
        rflags: RFLAGS_IN & fl::STATUS,
        mxcsr: rng.pick(MXCSRS),
        data,
    }
}

/// Run one case both ways; a description of the difference, if any.
fn check(s: &Snippet, page: &NativePage, text: &str, code: &[u8], o: &Obs) -> Option<String> {
    let want = run_native(s, page, code, o);
    let (got, exit) = run_emulated(s, code, o);
    (exit != Exit::Syscall || got != want)
        .then(|| format!("{text}\n  in:   {o:x?}\n  host: {want:x?}\n  urun: {got:x?} ({exit:?})"))
}

/// The skip notice when the host lacks what the oracle needs.
fn host_lacks_features() -> bool {
    let have = std::arch::is_x86_feature_detected!("sse4.2")
        && std::arch::is_x86_feature_detected!("ssse3")
        && std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    if !have {
        println!("SKIPPED: the host lacks SSSE3, SSE4.2, AES-NI or PCLMULQDQ, so it cannot be the oracle");
    }
    !have
}

#[test]
fn sse4_matches_host() {
    if host_lacks_features() {
        return;
    }
    let s = Snippet::new();
    let page = NativePage::new();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut failures = Vec::new();
    let mut cases = 0;
    for (text, code) in ORACLE_CASES {
        for _ in 0..200 {
            cases += 1;
            if let Some(f) = check(&s, &page, text, code, &inputs(&mut rng)) {
                failures.push(f);
                break;
            }
        }
    }
    println!("sse4_matches_host: {cases} cases over {} forms", ORACLE_CASES.len());
    assert!(
        failures.is_empty(),
        "{} of {} forms differ from the host:\n{}",
        failures.len(),
        ORACLE_CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn sse4_every_imm8_matches_host() {
    if host_lacks_features() {
        return;
    }
    let s = Snippet::new();
    let page = NativePage::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut failures = Vec::new();
    let mut cases = 0;
    for (text, code) in IMM8_FORMS {
        'form: for imm in 0..=255u8 {
            let code = [code, &[imm][..]].concat();
            for _ in 0..16 {
                cases += 1;
                if let Some(f) = check(&s, &page, &format!("{text}, {imm:#x}"), &code, &inputs(&mut rng)) {
                    failures.push(f);
                    break 'form;
                }
            }
        }
    }
    println!("sse4_every_imm8_matches_host: {cases} cases over {} forms x 256 imm8", IMM8_FORMS.len());
    assert!(
        failures.is_empty(),
        "{} of {} forms differ from the host:\n{}",
        failures.len(),
        IMM8_FORMS.len(),
        failures.join("\n")
    );
}

/// Characters for string operands: NUL, letters and digits that the
/// crafted range operands cover, and bytes with the top bit set (which
/// order differently signed and unsigned).
const ALPHABET: &[u8] = b"\0\0aabcAZz09_\x80\xff\x7f";

/// Needles for the ranges and equal-any modes: ranges "az", "AZ", "09",
/// a signed-only range, an odd count with a NUL.
const NEEDLES: &[&[u8]] = &[b"azAZ09", b"az", b"\x80\x7f", b"\xff\x01", b"a_b\0zz", b"aab", b"", b"0123456789abcdef"];

/// A string operand: random characters, or a crafted needle, with a NUL
/// somewhere (or none); as bytes or as little-endian words.
fn string(rng: &mut Rng) -> u128 {
    let mut b = [0u8; 16];
    match rng.next() % 4 {
        0 => {
            let needle = rng.pick(NEEDLES);
            b[..needle.len()].copy_from_slice(needle);
        }
        1 => {
            // Words: each character widened, sometimes with a high byte.
            for i in 0..8 {
                b[2 * i] = rng.pick(ALPHABET);
                b[2 * i + 1] = if rng.next().is_multiple_of(4) { rng.pick(ALPHABET) } else { 0 };
            }
        }
        _ => b.iter_mut().for_each(|c| *c = rng.pick(ALPHABET)),
    }
    if rng.next().is_multiple_of(2) {
        let nul = (rng.next() % 16) as usize;
        b[nul] = 0;
        if nul.is_multiple_of(2) && nul < 15 {
            b[nul + 1] = 0;
        }
    }
    u128::from_le_bytes(b)
}

/// Lengths for EAX/EDX (RAX/RDX): in range, over 16, negative (their
/// absolute value counts), the extremes, and stray upper halves (ignored
/// without REX.W).
const LENGTHS: &[u64] = &[
    0,
    1,
    2,
    3,
    5,
    7,
    8,
    9,
    15,
    16,
    17,
    100,
    -1i64 as u64,
    -5i64 as u64,
    -8i64 as u64,
    -16i64 as u64,
    -17i64 as u64,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fff9,
    0x1_0000_0003,
    0x8000_0000_0000_0000,
    0xffff_ffff_0000_0004,
    u64::MAX - 9,
];

fn string_inputs(rng: &mut Rng) -> Obs {
    let mut o = inputs(rng);
    o.xmm = [string(rng), string(rng), string(rng), string(rng)];
    for chunk in o.data.chunks_mut(16) {
        chunk.copy_from_slice(&string(rng).to_le_bytes());
    }
    o.rax = rng.pick(LENGTHS);
    o.rdx = rng.pick(LENGTHS);
    o
}

#[test]
fn sse4_string_compares_match_host() {
    if host_lacks_features() {
        return;
    }
    let s = Snippet::new();
    let page = NativePage::new();
    let mut rng = Rng(0x6a09_e667_f3bc_c908);
    let mut failures = Vec::new();
    let mut cases = 0;
    for (text, code) in STRING_FORMS {
        'form: for imm in 0..=255u8 {
            let code = [code, &[imm][..]].concat();
            for _ in 0..48 {
                cases += 1;
                if let Some(f) = check(&s, &page, &format!("{text}, {imm:#x}"), &code, &string_inputs(&mut rng)) {
                    failures.push(f);
                    break 'form;
                }
            }
        }
    }
    println!("sse4_string_compares_match_host: {cases} cases over {} forms x 256 imm8", STRING_FORMS.len());
    assert!(
        failures.is_empty(),
        "{} of {} forms differ from the host:\n{}",
        failures.len(),
        STRING_FORMS.len(),
        failures.join("\n")
    );
}

/// Faults: misaligned 128-bit operands (#GP) where the architecture
/// requires alignment, none where it does not, and #XM with the
/// destination unchanged.
#[test]
fn sse4_faults() {
    let s = Snippet::new();
    let gp = Some(FaultKind::GeneralProtection);
    let one = 0x3f80_0000_3f80_0000_3f80_0000_3f80_0000u128;
    #[rustfmt::skip]
    let cases: &[(&str, &[u8], u32, Option<FaultKind>)] = &[
        ("pshufb xmm0, [rsi+1]", &[0x66, 0x0f, 0x38, 0x00, 0x46, 0x01], 0x1f80, gp.clone()),
        ("haddps xmm0, [rsi+4]", &[0xf2, 0x0f, 0x7c, 0x46, 0x04], 0x1f80, gp.clone()),
        ("ptest xmm0, [rsi+8]", &[0x66, 0x0f, 0x38, 0x17, 0x46, 0x08], 0x1f80, gp.clone()),
        ("movntdqa xmm0, [rsi+8]", &[0x66, 0x0f, 0x38, 0x2a, 0x46, 0x08], 0x1f80, gp.clone()),
        ("roundps xmm0, [rsi+4], 0", &[0x66, 0x0f, 0x3a, 0x08, 0x46, 0x04, 0x00], 0x1f80, gp.clone()),
        ("aesenc xmm0, [rsi+1]", &[0x66, 0x0f, 0x38, 0xdc, 0x46, 0x01], 0x1f80, gp.clone()),
        ("pblendvb xmm0, [rsi+2]", &[0x66, 0x0f, 0x38, 0x10, 0x46, 0x02], 0x1f80, gp.clone()),
        ("lddqu xmm0, [rsi+1]", &[0xf2, 0x0f, 0xf0, 0x46, 0x01], 0x1f80, None),
        ("pmovsxbw xmm0, [rsi+1]", &[0x66, 0x0f, 0x38, 0x20, 0x46, 0x01], 0x1f80, None),
        ("pcmpistri xmm0, [rsi+1], 0", &[0x66, 0x0f, 0x3a, 0x63, 0x46, 0x01, 0x00], 0x1f80, None),
        // roundps xmm0, xmm1, 0 of 1.5 with PE unmasked: #XM (FPE_FLTRES).
        ("roundps xmm0, xmm1, 0", &[0x66, 0x0f, 0x3a, 0x08, 0xc1, 0x00], 0x1f80 & !0x1000, Some(FaultKind::FloatingPoint { code: 6 })),
        // ... unless imm8 bit 3 suppresses it.
        ("roundps xmm0, xmm1, 8", &[0x66, 0x0f, 0x3a, 0x08, 0xc1, 0x08], 0x1f80 & !0x1000, None),
    ];
    for (text, code, csr, fault) in cases {
        let (cpu, exit) = s.run(code, |cpu| {
            cpu.xmm[0] = one;
            cpu.xmm[1] = 0x3fc0_0000;
            cpu.gpr[reg::RSI] = s.data;
            cpu.mxcsr = *csr;
        });
        match fault {
            Some(kind) => {
                assert_eq!(exit, Exit::Fault(Fault { pc: s.code, kind: kind.clone() }), "{text}");
                assert_eq!(cpu.xmm[0], one, "{text}: destination changed by a faulting instruction");
            }
            None => assert_eq!(exit, Exit::Syscall, "{text}"),
        }
    }
}

/// A few architectural values written out, so the oracle is not the only
/// witness.
#[test]
fn sse4_spec_values() {
    let s = Snippet::new();
    #[rustfmt::skip]
    let cases: &[(&str, &[u8], u128, u128, u128)] = &[
        // (asm, bytes, xmm0 in, xmm1 in, xmm0 out)
        ("pshufb: reverse, and bit 7 zeroes", &[0x66, 0x0f, 0x38, 0x00, 0xc1],
            0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100, 0x8000_0102_0304_0506_0708_090a_0b0c_0d0e,
            0x0000_0102_0304_0506_0708_090a_0b0c_0d0e),
        ("pabsb: -128 stays 0x80", &[0x66, 0x0f, 0x38, 0x1c, 0xc1], 0, 0x80ff_7f01, 0x8001_7f01),
        ("pmulhrsw: 0x8000 * 0x8000 wraps to 0x8000", &[0x66, 0x0f, 0x38, 0x0b, 0xc1], 0x8000_4000, 0x8000_4000, 0x8000_2000),
        ("phminposuw: lowest index of the minimum", &[0x66, 0x0f, 0x38, 0x41, 0xc1],
            u128::MAX, 0x0009_0003_0007_0003_0005_0004_0006_0008, 0x4_0003),
        ("palignr 4", &[0x66, 0x0f, 0x3a, 0x0f, 0xc1, 0x04],
            0x1f1e_1d1c_1b1a_1918_1716_1514_1312_1110, 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100,
            0x1312_1110_0f0e_0d0c_0b0a_0908_0706_0504),
        ("packusdw: saturation both ways", &[0x66, 0x0f, 0x38, 0x2b, 0xc1], 0x0001_0000_ffff_ffff_0000_1234, 0, 0xffff_0000_1234),
        ("roundsd nearest-even of 2.5", &[0x66, 0x0f, 0x3a, 0x0b, 0xc1, 0x00], 0, 0x4004_0000_0000_0000, 0x4000_0000_0000_0000),
    ];
    for (text, code, a, b, want) in cases {
        let (cpu, exit) = s.run(code, |cpu| {
            cpu.xmm[0] = *a;
            cpu.xmm[1] = *b;
        });
        assert_eq!(exit, Exit::Syscall, "{text}");
        assert_eq!(cpu.xmm[0], *want, "{text}: got {:#x}", cpu.xmm[0]);
    }
    // ptest: ZF and CF only, AF OF PF SF cleared.
    let (cpu, _) = s.run(&[0x66, 0x0f, 0x38, 0x17, 0xc1], |cpu| {
        cpu.flags.set(fl::STATUS | 2);
        cpu.xmm[0] = 0xf0;
        cpu.xmm[1] = 0x0f;
    });
    assert_eq!(cpu.flags.get() & fl::STATUS, fl::ZF);
    // pcmpistri xmm0, xmm1, 0x0c (equal ordered, bytes): "lo" found at 3
    // of "hello"; CF (found), ZF (xmm1 has a NUL) and SF (xmm0 has one) set. (mov r8, rcx:
    // the closing SYSCALL overwrites RCX.)
    let (cpu, _) = s.run(&[0x66, 0x0f, 0x3a, 0x63, 0xc1, 0x0c, 0x49, 0x89, 0xc8], |cpu| {
        cpu.xmm[0] = u128::from_le_bytes(*b"lo\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        cpu.xmm[1] = u128::from_le_bytes(*b"hello\0\0\0\0\0\0\0\0\0\0\0");
    });
    assert_eq!(cpu.gpr[reg::R8], 3);
    assert_eq!(cpu.flags.get() & fl::STATUS, fl::CF | fl::ZF | fl::SF);
}

/// Every legacy, 64-bit-mode, non-MMX form of the family's mnemonics has a
/// handler and is run by one of the oracle tests above.
#[test]
fn sse4_every_form_has_a_handler() {
    use iced_x86::{Code, EncodingKind, Mnemonic::*, OpCodeOperandKind};
    #[rustfmt::skip]
    let family = [
        Addsubps, Addsubpd, Haddps, Haddpd, Hsubps, Hsubpd, Movshdup, Movsldup, Movddup, Lddqu,
        Pshufb, Palignr, Phaddw, Phaddd, Phaddsw, Phsubw, Phsubd, Phsubsw, Pabsb, Pabsw, Pabsd,
        Psignb, Psignw, Psignd, Pmaddubsw, Pmulhrsw,
        Pblendw, Blendps, Blendpd, Blendvps, Blendvpd, Pblendvb, Pminsb, Pmaxsb, Pminuw, Pmaxuw,
        Pminsd, Pmaxsd, Pminud, Pmaxud, Pmulld, Pmuldq, Pcmpeqq, Packusdw,
        Pmovsxbw, Pmovsxbd, Pmovsxbq, Pmovsxwd, Pmovsxwq, Pmovsxdq,
        Pmovzxbw, Pmovzxbd, Pmovzxbq, Pmovzxwd, Pmovzxwq, Pmovzxdq,
        Pextrb, Pextrd, Pextrq, Pinsrb, Pinsrd, Pinsrq, Extractps, Insertps, Ptest,
        Roundps, Roundpd, Roundss, Roundsd, Dpps, Dppd, Mpsadbw, Phminposuw, Movntdqa,
        Pcmpgtq, Pcmpestri, Pcmpestri64, Pcmpestrm, Pcmpestrm64, Pcmpistri, Pcmpistrm,
        Aesenc, Aesenclast, Aesdec, Aesdeclast, Aesimc, Aeskeygenassist, Pclmulqdq,
    ];
    // The forms the oracle tests run.
    let tested: Vec<Code> = ORACLE_CASES
        .iter()
        .map(|(_, b)| b.to_vec())
        .chain(IMM8_FORMS.iter().chain(STRING_FORMS).map(|(_, b)| [b, &[0][..]].concat()))
        .map(|b| iced_x86::Decoder::new(64, &b, 0).decode().code())
        .collect();
    let mut forms = 0;
    let mut missing = Vec::new();
    let mut untested = Vec::new();
    for c in Code::values() {
        let oc = c.op_code();
        let mmx = (0..oc.op_count()).any(|i| {
            matches!(oc.op_kind(i), OpCodeOperandKind::mm_or_mem | OpCodeOperandKind::mm_reg | OpCodeOperandKind::mm_rm)
        });
        if oc.encoding() != EncodingKind::Legacy || !oc.mode64() || mmx || !family.contains(&c.mnemonic()) {
            continue;
        }
        forms += 1;
        if super::super::table()[c as usize].is_none() {
            missing.push(format!("{c:?}"));
        }
        if !tested.contains(&c) {
            untested.push(format!("{c:?}"));
        }
    }
    println!("sse4_every_form_has_a_handler: {forms} forms");
    assert!(forms >= family.len(), "only {forms} forms found");
    assert!(missing.is_empty(), "no handler for {missing:?}");
    assert!(untested.is_empty(), "not checked against the host: {untested:?}");
}
