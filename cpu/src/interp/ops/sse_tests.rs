//! SSE/SSE2 tests. The host CPU is the oracle: each instruction runs
//! natively (copied into the snippet's executable page, called with the
//! same registers, MXCSR, flags and memory) and in the interpreter, over
//! many inputs built from edge values, and every observable is compared:
//! XMM0..2, RAX, RCX, RDX, the status flags, MXCSR and the data bytes.
//! Faults, which cannot be run natively here, have their own table.

use core::arch::x86_64::__m128i;
use std::arch::asm;

use crate::engine::{Exit, Fault, FaultKind};
use crate::interp::testutil::Snippet;
use crate::state::{fl, reg};

/// Instructions checked against the host: (assembly, its bytes from nasm).
/// Conventions: memory operands are at [rdx], which points at the data area.
#[rustfmt::skip]
const ORACLE_CASES: &[(&str, &[u8])] = &[
    ("movaps xmm0, xmm1", &[0x0f, 0x28, 0xc1]),
    ("movaps xmm0, [rdx]", &[0x0f, 0x28, 0x02]),
    ("movaps [rdx], xmm1", &[0x0f, 0x29, 0x0a]),
    ("movapd xmm2, [rdx]", &[0x66, 0x0f, 0x28, 0x12]),
    ("movdqa xmm0, [rdx+16]", &[0x66, 0x0f, 0x6f, 0x42, 0x10]),
    ("movdqa [rdx+16], xmm2", &[0x66, 0x0f, 0x7f, 0x52, 0x10]),
    ("movups xmm0, [rdx+3]", &[0x0f, 0x10, 0x42, 0x03]),
    ("movups [rdx+5], xmm1", &[0x0f, 0x11, 0x4a, 0x05]),
    ("movupd xmm1, [rdx+1]", &[0x66, 0x0f, 0x10, 0x4a, 0x01]),
    ("movdqu xmm0, [rdx+7]", &[0xf3, 0x0f, 0x6f, 0x42, 0x07]),
    ("movdqu [rdx+9], xmm2", &[0xf3, 0x0f, 0x7f, 0x52, 0x09]),
    ("movntdq [rdx], xmm1", &[0x66, 0x0f, 0xe7, 0x0a]),
    ("movntps [rdx+16], xmm0", &[0x0f, 0x2b, 0x42, 0x10]),
    ("movntpd [rdx], xmm2", &[0x66, 0x0f, 0x2b, 0x12]),
    ("movnti [rdx+4], ecx", &[0x0f, 0xc3, 0x4a, 0x04]),
    ("movnti [rdx+3], rcx", &[0x48, 0x0f, 0xc3, 0x4a, 0x03]),
    ("movss xmm0, xmm1", &[0xf3, 0x0f, 0x10, 0xc1]),
    ("movss xmm0, [rdx+4]", &[0xf3, 0x0f, 0x10, 0x42, 0x04]),
    ("movss [rdx+2], xmm1", &[0xf3, 0x0f, 0x11, 0x4a, 0x02]),
    ("movsd xmm0, xmm1", &[0xf2, 0x0f, 0x10, 0xc1]),
    ("movsd xmm2, [rdx+8]", &[0xf2, 0x0f, 0x10, 0x52, 0x08]),
    ("movsd [rdx+1], xmm0", &[0xf2, 0x0f, 0x11, 0x42, 0x01]),
    ("movd xmm0, eax", &[0x66, 0x0f, 0x6e, 0xc0]),
    ("movd xmm1, [rdx+4]", &[0x66, 0x0f, 0x6e, 0x4a, 0x04]),
    ("movd ecx, xmm0", &[0x66, 0x0f, 0x7e, 0xc1]),
    ("movd [rdx], xmm1", &[0x66, 0x0f, 0x7e, 0x0a]),
    ("movq xmm0, rax", &[0x66, 0x48, 0x0f, 0x6e, 0xc0]),
    ("movq rcx, xmm1", &[0x66, 0x48, 0x0f, 0x7e, 0xc9]),
    ("movq xmm0, xmm1", &[0xf3, 0x0f, 0x7e, 0xc1]),
    ("movq xmm2, [rdx+8]", &[0xf3, 0x0f, 0x7e, 0x52, 0x08]),
    ("movq [rdx+3], xmm0", &[0x66, 0x0f, 0xd6, 0x42, 0x03]),
    ("movlps xmm0, [rdx+8]", &[0x0f, 0x12, 0x42, 0x08]),
    ("movlps [rdx], xmm1", &[0x0f, 0x13, 0x0a]),
    ("movhps xmm0, [rdx+8]", &[0x0f, 0x16, 0x42, 0x08]),
    ("movhps [rdx+4], xmm1", &[0x0f, 0x17, 0x4a, 0x04]),
    ("movlpd xmm1, [rdx]", &[0x66, 0x0f, 0x12, 0x0a]),
    ("movhpd xmm1, [rdx]", &[0x66, 0x0f, 0x16, 0x0a]),
    ("movhpd [rdx+8], xmm2", &[0x66, 0x0f, 0x17, 0x52, 0x08]),
    ("movhlps xmm0, xmm1", &[0x0f, 0x12, 0xc1]),
    ("movlhps xmm0, xmm1", &[0x0f, 0x16, 0xc1]),
    ("movmskps eax, xmm0", &[0x0f, 0x50, 0xc0]),
    ("movmskps rcx, xmm1", &[0x48, 0x0f, 0x50, 0xc9]),
    ("movmskpd eax, xmm1", &[0x66, 0x0f, 0x50, 0xc1]),
    ("pmovmskb eax, xmm0", &[0x66, 0x0f, 0xd7, 0xc0]),
    ("pmovmskb rcx, xmm1 (REX.W; nasm lacks it)", &[0x66, 0x48, 0x0f, 0xd7, 0xc9]),
    ("pextrw [rdx+3], xmm1, 6 (SSE4.1 form)", &[0x66, 0x0f, 0x3a, 0x15, 0x4a, 0x03, 0x06]),
    ("stmxcsr [rdx]", &[0x0f, 0xae, 0x1a]),
    ("paddb xmm0, xmm1", &[0x66, 0x0f, 0xfc, 0xc1]),
    ("paddw xmm0, [rdx]", &[0x66, 0x0f, 0xfd, 0x02]),
    ("paddd xmm0, xmm1", &[0x66, 0x0f, 0xfe, 0xc1]),
    ("paddq xmm0, xmm1", &[0x66, 0x0f, 0xd4, 0xc1]),
    ("psubb xmm0, xmm1", &[0x66, 0x0f, 0xf8, 0xc1]),
    ("psubw xmm0, xmm1", &[0x66, 0x0f, 0xf9, 0xc1]),
    ("psubd xmm0, [rdx+16]", &[0x66, 0x0f, 0xfa, 0x42, 0x10]),
    ("psubq xmm0, xmm1", &[0x66, 0x0f, 0xfb, 0xc1]),
    ("paddusb xmm0, xmm1", &[0x66, 0x0f, 0xdc, 0xc1]),
    ("paddusw xmm0, xmm1", &[0x66, 0x0f, 0xdd, 0xc1]),
    ("psubusb xmm0, xmm1", &[0x66, 0x0f, 0xd8, 0xc1]),
    ("psubusw xmm0, xmm1", &[0x66, 0x0f, 0xd9, 0xc1]),
    ("paddsb xmm0, xmm1", &[0x66, 0x0f, 0xec, 0xc1]),
    ("paddsw xmm0, xmm1", &[0x66, 0x0f, 0xed, 0xc1]),
    ("psubsb xmm0, xmm1", &[0x66, 0x0f, 0xe8, 0xc1]),
    ("psubsw xmm0, xmm1", &[0x66, 0x0f, 0xe9, 0xc1]),
    ("pcmpeqb xmm0, xmm1", &[0x66, 0x0f, 0x74, 0xc1]),
    ("pcmpeqb xmm0, xmm0", &[0x66, 0x0f, 0x74, 0xc0]),
    ("pcmpeqw xmm0, xmm1", &[0x66, 0x0f, 0x75, 0xc1]),
    ("pcmpeqd xmm0, [rdx]", &[0x66, 0x0f, 0x76, 0x02]),
    ("pcmpgtb xmm0, xmm1", &[0x66, 0x0f, 0x64, 0xc1]),
    ("pcmpgtw xmm0, xmm1", &[0x66, 0x0f, 0x65, 0xc1]),
    ("pcmpgtd xmm0, xmm1", &[0x66, 0x0f, 0x66, 0xc1]),
    ("pand xmm0, xmm1", &[0x66, 0x0f, 0xdb, 0xc1]),
    ("pandn xmm0, xmm1", &[0x66, 0x0f, 0xdf, 0xc1]),
    ("por xmm0, [rdx]", &[0x66, 0x0f, 0xeb, 0x02]),
    ("pxor xmm0, xmm1", &[0x66, 0x0f, 0xef, 0xc1]),
    ("andps xmm0, xmm1", &[0x0f, 0x54, 0xc1]),
    ("andpd xmm0, xmm1", &[0x66, 0x0f, 0x54, 0xc1]),
    ("andnps xmm0, xmm1", &[0x0f, 0x55, 0xc1]),
    ("andnpd xmm0, [rdx]", &[0x66, 0x0f, 0x55, 0x02]),
    ("orps xmm0, xmm1", &[0x0f, 0x56, 0xc1]),
    ("orpd xmm0, xmm1", &[0x66, 0x0f, 0x56, 0xc1]),
    ("xorps xmm0, xmm1", &[0x0f, 0x57, 0xc1]),
    ("xorpd xmm0, xmm0", &[0x66, 0x0f, 0x57, 0xc0]),
    ("pminub xmm0, xmm1", &[0x66, 0x0f, 0xda, 0xc1]),
    ("pmaxub xmm0, xmm1", &[0x66, 0x0f, 0xde, 0xc1]),
    ("pminsw xmm0, xmm1", &[0x66, 0x0f, 0xea, 0xc1]),
    ("pmaxsw xmm0, xmm1", &[0x66, 0x0f, 0xee, 0xc1]),
    ("pavgb xmm0, xmm1", &[0x66, 0x0f, 0xe0, 0xc1]),
    ("pavgw xmm0, xmm1", &[0x66, 0x0f, 0xe3, 0xc1]),
    ("pmullw xmm0, xmm1", &[0x66, 0x0f, 0xd5, 0xc1]),
    ("pmulhw xmm0, xmm1", &[0x66, 0x0f, 0xe5, 0xc1]),
    ("pmulhuw xmm0, xmm1", &[0x66, 0x0f, 0xe4, 0xc1]),
    ("pmuludq xmm0, xmm1", &[0x66, 0x0f, 0xf4, 0xc1]),
    ("pmaddwd xmm0, xmm1", &[0x66, 0x0f, 0xf5, 0xc1]),
    ("psadbw xmm0, xmm1", &[0x66, 0x0f, 0xf6, 0xc1]),
    ("psllw xmm0, 3", &[0x66, 0x0f, 0x71, 0xf0, 0x03]),
    ("psllw xmm0, 16", &[0x66, 0x0f, 0x71, 0xf0, 0x10]),
    ("pslld xmm0, 31", &[0x66, 0x0f, 0x72, 0xf0, 0x1f]),
    ("pslld xmm0, 200", &[0x66, 0x0f, 0x72, 0xf0, 0xc8]),
    ("psllq xmm0, 63", &[0x66, 0x0f, 0x73, 0xf0, 0x3f]),
    ("psllq xmm0, 64", &[0x66, 0x0f, 0x73, 0xf0, 0x40]),
    ("psrlw xmm0, 15", &[0x66, 0x0f, 0x71, 0xd0, 0x0f]),
    ("psrld xmm0, 1", &[0x66, 0x0f, 0x72, 0xd0, 0x01]),
    ("psrlq xmm0, 33", &[0x66, 0x0f, 0x73, 0xd0, 0x21]),
    ("psraw xmm0, 7", &[0x66, 0x0f, 0x71, 0xe0, 0x07]),
    ("psraw xmm0, 99", &[0x66, 0x0f, 0x71, 0xe0, 0x63]),
    ("psrad xmm0, 31", &[0x66, 0x0f, 0x72, 0xe0, 0x1f]),
    ("psrad xmm0, 32", &[0x66, 0x0f, 0x72, 0xe0, 0x20]),
    ("psllw xmm0, xmm1", &[0x66, 0x0f, 0xf1, 0xc1]),
    ("pslld xmm0, xmm1", &[0x66, 0x0f, 0xf2, 0xc1]),
    ("psllq xmm0, xmm1", &[0x66, 0x0f, 0xf3, 0xc1]),
    ("psrlw xmm0, xmm1", &[0x66, 0x0f, 0xd1, 0xc1]),
    ("psrld xmm0, xmm1", &[0x66, 0x0f, 0xd2, 0xc1]),
    ("psrlq xmm0, [rdx]", &[0x66, 0x0f, 0xd3, 0x02]),
    ("psraw xmm0, xmm1", &[0x66, 0x0f, 0xe1, 0xc1]),
    ("psrad xmm0, xmm1", &[0x66, 0x0f, 0xe2, 0xc1]),
    ("pslldq xmm0, 5", &[0x66, 0x0f, 0x73, 0xf8, 0x05]),
    ("pslldq xmm0, 16", &[0x66, 0x0f, 0x73, 0xf8, 0x10]),
    ("psrldq xmm0, 1", &[0x66, 0x0f, 0x73, 0xd8, 0x01]),
    ("psrldq xmm0, 15", &[0x66, 0x0f, 0x73, 0xd8, 0x0f]),
    ("psrldq xmm0, 17", &[0x66, 0x0f, 0x73, 0xd8, 0x11]),
    ("punpcklbw xmm0, xmm1", &[0x66, 0x0f, 0x60, 0xc1]),
    ("punpcklwd xmm0, xmm1", &[0x66, 0x0f, 0x61, 0xc1]),
    ("punpckldq xmm0, xmm1", &[0x66, 0x0f, 0x62, 0xc1]),
    ("punpcklqdq xmm0, xmm1", &[0x66, 0x0f, 0x6c, 0xc1]),
    ("punpckhbw xmm0, xmm1", &[0x66, 0x0f, 0x68, 0xc1]),
    ("punpckhwd xmm0, [rdx]", &[0x66, 0x0f, 0x69, 0x02]),
    ("punpckhdq xmm0, xmm1", &[0x66, 0x0f, 0x6a, 0xc1]),
    ("punpckhqdq xmm0, xmm1", &[0x66, 0x0f, 0x6d, 0xc1]),
    ("unpcklps xmm0, xmm1", &[0x0f, 0x14, 0xc1]),
    ("unpckhps xmm0, xmm1", &[0x0f, 0x15, 0xc1]),
    ("unpcklpd xmm0, xmm1", &[0x66, 0x0f, 0x14, 0xc1]),
    ("unpckhpd xmm0, xmm1", &[0x66, 0x0f, 0x15, 0xc1]),
    ("packsswb xmm0, xmm1", &[0x66, 0x0f, 0x63, 0xc1]),
    ("packssdw xmm0, xmm1", &[0x66, 0x0f, 0x6b, 0xc1]),
    ("packuswb xmm0, xmm1", &[0x66, 0x0f, 0x67, 0xc1]),
    ("pshufd xmm0, xmm1, 0x1b", &[0x66, 0x0f, 0x70, 0xc1, 0x1b]),
    ("pshufd xmm0, [rdx], 0xe4", &[0x66, 0x0f, 0x70, 0x02, 0xe4]),
    ("pshuflw xmm0, xmm1, 0x93", &[0xf2, 0x0f, 0x70, 0xc1, 0x93]),
    ("pshufhw xmm0, xmm1, 0x39", &[0xf3, 0x0f, 0x70, 0xc1, 0x39]),
    ("shufps xmm0, xmm1, 0x4e", &[0x0f, 0xc6, 0xc1, 0x4e]),
    ("shufps xmm0, xmm0, 0xb1", &[0x0f, 0xc6, 0xc0, 0xb1]),
    ("shufpd xmm0, xmm1, 1", &[0x66, 0x0f, 0xc6, 0xc1, 0x01]),
    ("shufpd xmm0, xmm1, 2", &[0x66, 0x0f, 0xc6, 0xc1, 0x02]),
    ("pextrw eax, xmm1, 5", &[0x66, 0x0f, 0xc5, 0xc1, 0x05]),
    ("pextrw rcx, xmm0, 10", &[0x66, 0x48, 0x0f, 0xc5, 0xc8, 0x0a]),
    ("pinsrw xmm0, eax, 3", &[0x66, 0x0f, 0xc4, 0xc0, 0x03]),
    ("pinsrw xmm0, [rdx+1], 12", &[0x66, 0x0f, 0xc4, 0x42, 0x01, 0x0c]),
    ("addps xmm0, xmm1", &[0x0f, 0x58, 0xc1]),
    ("addpd xmm0, xmm1", &[0x66, 0x0f, 0x58, 0xc1]),
    ("addss xmm0, xmm1", &[0xf3, 0x0f, 0x58, 0xc1]),
    ("addsd xmm0, [rdx+8]", &[0xf2, 0x0f, 0x58, 0x42, 0x08]),
    ("subps xmm0, xmm1", &[0x0f, 0x5c, 0xc1]),
    ("subpd xmm0, [rdx]", &[0x66, 0x0f, 0x5c, 0x02]),
    ("subss xmm0, [rdx+4]", &[0xf3, 0x0f, 0x5c, 0x42, 0x04]),
    ("subsd xmm0, xmm1", &[0xf2, 0x0f, 0x5c, 0xc1]),
    ("mulps xmm0, xmm1", &[0x0f, 0x59, 0xc1]),
    ("mulpd xmm0, xmm1", &[0x66, 0x0f, 0x59, 0xc1]),
    ("mulss xmm0, xmm1", &[0xf3, 0x0f, 0x59, 0xc1]),
    ("mulsd xmm0, xmm1", &[0xf2, 0x0f, 0x59, 0xc1]),
    ("divps xmm0, xmm1", &[0x0f, 0x5e, 0xc1]),
    ("divpd xmm0, xmm1", &[0x66, 0x0f, 0x5e, 0xc1]),
    ("divss xmm0, xmm1", &[0xf3, 0x0f, 0x5e, 0xc1]),
    ("divsd xmm0, xmm1", &[0xf2, 0x0f, 0x5e, 0xc1]),
    ("minps xmm0, xmm1", &[0x0f, 0x5d, 0xc1]),
    ("minpd xmm0, xmm1", &[0x66, 0x0f, 0x5d, 0xc1]),
    ("minss xmm0, xmm1", &[0xf3, 0x0f, 0x5d, 0xc1]),
    ("minsd xmm0, xmm1", &[0xf2, 0x0f, 0x5d, 0xc1]),
    ("maxps xmm0, xmm1", &[0x0f, 0x5f, 0xc1]),
    ("maxpd xmm0, xmm1", &[0x66, 0x0f, 0x5f, 0xc1]),
    ("maxss xmm0, xmm1", &[0xf3, 0x0f, 0x5f, 0xc1]),
    ("maxsd xmm0, [rdx]", &[0xf2, 0x0f, 0x5f, 0x02]),
    ("sqrtps xmm0, xmm1", &[0x0f, 0x51, 0xc1]),
    ("sqrtpd xmm0, xmm1", &[0x66, 0x0f, 0x51, 0xc1]),
    ("sqrtss xmm0, xmm1", &[0xf3, 0x0f, 0x51, 0xc1]),
    ("sqrtsd xmm0, xmm1", &[0xf2, 0x0f, 0x51, 0xc1]),
    ("rcpps xmm0, xmm1", &[0x0f, 0x53, 0xc1]),
    ("rcpss xmm0, xmm1", &[0xf3, 0x0f, 0x53, 0xc1]),
    ("rsqrtps xmm0, xmm1", &[0x0f, 0x52, 0xc1]),
    ("rsqrtss xmm0, xmm1", &[0xf3, 0x0f, 0x52, 0xc1]),
    ("cmpps xmm0, xmm1, 0", &[0x0f, 0xc2, 0xc1, 0x00]),
    ("cmpps xmm0, xmm1, 1", &[0x0f, 0xc2, 0xc1, 0x01]),
    ("cmpps xmm0, xmm1, 2", &[0x0f, 0xc2, 0xc1, 0x02]),
    ("cmpps xmm0, xmm1, 3", &[0x0f, 0xc2, 0xc1, 0x03]),
    ("cmpps xmm0, xmm1, 4", &[0x0f, 0xc2, 0xc1, 0x04]),
    ("cmpps xmm0, xmm1, 5", &[0x0f, 0xc2, 0xc1, 0x05]),
    ("cmpps xmm0, xmm1, 6", &[0x0f, 0xc2, 0xc1, 0x06]),
    ("cmpps xmm0, xmm1, 7", &[0x0f, 0xc2, 0xc1, 0x07]),
    ("cmppd xmm0, xmm1, 1", &[0x66, 0x0f, 0xc2, 0xc1, 0x01]),
    ("cmppd xmm0, [rdx], 4", &[0x66, 0x0f, 0xc2, 0x02, 0x04]),
    ("cmpss xmm0, xmm1, 2", &[0xf3, 0x0f, 0xc2, 0xc1, 0x02]),
    ("cmpss xmm0, xmm1, 6", &[0xf3, 0x0f, 0xc2, 0xc1, 0x06]),
    ("cmpsd xmm0, xmm1, 0", &[0xf2, 0x0f, 0xc2, 0xc1, 0x00]),
    ("cmpsd xmm0, xmm1, 3", &[0xf2, 0x0f, 0xc2, 0xc1, 0x03]),
    ("cmpsd xmm0, [rdx+8], 5", &[0xf2, 0x0f, 0xc2, 0x42, 0x08, 0x05]),
    ("comiss xmm0, xmm1", &[0x0f, 0x2f, 0xc1]),
    ("comisd xmm0, xmm1", &[0x66, 0x0f, 0x2f, 0xc1]),
    ("ucomiss xmm0, xmm1", &[0x0f, 0x2e, 0xc1]),
    ("ucomisd xmm0, [rdx+8]", &[0x66, 0x0f, 0x2e, 0x42, 0x08]),
    ("cvtsi2ss xmm0, eax", &[0xf3, 0x0f, 0x2a, 0xc0]),
    ("cvtsi2ss xmm0, rcx", &[0xf3, 0x48, 0x0f, 0x2a, 0xc1]),
    ("cvtsi2sd xmm0, ecx", &[0xf2, 0x0f, 0x2a, 0xc1]),
    ("cvtsi2sd xmm0, rax", &[0xf2, 0x48, 0x0f, 0x2a, 0xc0]),
    ("cvtsi2sd xmm1, dword [rdx]", &[0xf2, 0x0f, 0x2a, 0x0a]),
    ("cvtsi2ss xmm1, qword [rdx]", &[0xf3, 0x48, 0x0f, 0x2a, 0x0a]),
    ("cvtss2sd xmm0, xmm1", &[0xf3, 0x0f, 0x5a, 0xc1]),
    ("cvtsd2ss xmm0, xmm1", &[0xf2, 0x0f, 0x5a, 0xc1]),
    ("cvtss2si eax, xmm1", &[0xf3, 0x0f, 0x2d, 0xc1]),
    ("cvtss2si rax, xmm1", &[0xf3, 0x48, 0x0f, 0x2d, 0xc1]),
    ("cvttss2si ecx, xmm0", &[0xf3, 0x0f, 0x2c, 0xc8]),
    ("cvttss2si rcx, [rdx]", &[0xf3, 0x48, 0x0f, 0x2c, 0x0a]),
    ("cvtsd2si eax, xmm1", &[0xf2, 0x0f, 0x2d, 0xc1]),
    ("cvtsd2si rax, xmm0", &[0xf2, 0x48, 0x0f, 0x2d, 0xc0]),
    ("cvttsd2si ecx, xmm1", &[0xf2, 0x0f, 0x2c, 0xc9]),
    ("cvttsd2si rcx, [rdx+8]", &[0xf2, 0x48, 0x0f, 0x2c, 0x4a, 0x08]),
    ("cvtdq2ps xmm0, xmm1", &[0x0f, 0x5b, 0xc1]),
    ("cvtps2dq xmm0, xmm1", &[0x66, 0x0f, 0x5b, 0xc1]),
    ("cvttps2dq xmm0, xmm1", &[0xf3, 0x0f, 0x5b, 0xc1]),
    ("cvtdq2pd xmm0, xmm1", &[0xf3, 0x0f, 0xe6, 0xc1]),
    ("cvtdq2pd xmm0, [rdx+4]", &[0xf3, 0x0f, 0xe6, 0x42, 0x04]),
    ("cvtpd2dq xmm0, xmm1", &[0xf2, 0x0f, 0xe6, 0xc1]),
    ("cvttpd2dq xmm0, xmm1", &[0x66, 0x0f, 0xe6, 0xc1]),
    ("cvtps2pd xmm0, xmm1", &[0x0f, 0x5a, 0xc1]),
    ("cvtpd2ps xmm0, xmm1", &[0x66, 0x0f, 0x5a, 0xc1]),
];

/// Observable state before and after one instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Obs {
    xmm: [u128; 3],
    rax: u64,
    rcx: u64,
    rflags: u64,
    mxcsr: u32,
    data: [u8; DATA],
}

const DATA: usize = 48;

/// A host page, readable, writable and executable, for the native runs
/// (guest code pages are never executable on the host).
pub(in crate::interp::ops) struct NativePage(pub(in crate::interp::ops) *mut u8);

impl NativePage {
    pub(in crate::interp::ops) fn new() -> Self {
        // SAFETY: an anonymous private mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap of an executable test page");
        NativePage(p.cast())
    }
}

impl Drop for NativePage {
    fn drop(&mut self) {
        // SAFETY: unmaps the page `new` mapped, which nothing uses any more.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}
/// Initial RFLAGS: every status flag set, so that clearing is seen.
pub(in crate::interp::ops) const RFLAGS_IN: u64 = fl::STATUS | 0x202;

/// Run `code` natively from state `o`; RDX points at the data area.
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
    let (mut x0, mut x1, mut x2) = (to(o.xmm[0]), to(o.xmm[1]), to(o.xmm[2]));
    let (mut rax, mut rcx, mut rdx) = (o.rax, o.rcx, s.data);
    let mut csr = o.mxcsr;
    let mut host_csr = 0u32;
    let mut rflags: u64;
    // SAFETY: calls one tested SSE/integer instruction followed by RET; it
    // touches only the registers named here and the data area. The host
    // MXCSR is saved and restored around it; the test MXCSR masks every
    // exception so it cannot trap.
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
            inout("xmm0") x0, inout("xmm1") x1, inout("xmm2") x2,
            inout("rax") rax, inout("rcx") rcx, inout("rdx") rdx,
            clobber_abi("C"),
        );
    }
    assert_eq!(rdx, s.data, "RDX changed natively");
    let from = |v: __m128i| -> u128 {
        // SAFETY: 16 plain bytes each way.
        unsafe { core::mem::transmute(v) }
    };
    let mut data = [0u8; DATA];
    // SAFETY: the data area is mapped and readable.
    unsafe { std::ptr::copy_nonoverlapping(s.data as *const u8, data.as_mut_ptr(), DATA) };
    Obs { xmm: [from(x0), from(x1), from(x2)], rax, rcx, rflags: rflags & fl::STATUS, mxcsr: csr, data }
}

/// Run `code` in the interpreter from state `o`.
fn run_emulated(s: &Snippet, code: &[u8], o: &Obs) -> (Obs, Exit) {
    // SAFETY: the data area is mapped RW.
    unsafe { std::ptr::copy_nonoverlapping(o.data.as_ptr(), s.data as *mut u8, DATA) };
    // SYSCALL, which ends every snippet, overwrites RCX: keep it in R8
    // first (mov r8, rcx).
    let code = [code, &[0x49, 0x89, 0xc8]].concat();
    let (cpu, exit) = s.run(&code, |cpu| {
        cpu.xmm[..3].copy_from_slice(&o.xmm);
        cpu.gpr[reg::RAX] = o.rax;
        cpu.gpr[reg::RCX] = o.rcx;
        cpu.gpr[reg::RDX] = s.data;
        cpu.mxcsr = o.mxcsr;
        cpu.flags.set(RFLAGS_IN);
    });
    let mut data = [0u8; DATA];
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(s.data as *const u8, data.as_mut_ptr(), DATA) };
    let xmm = [cpu.xmm[0], cpu.xmm[1], cpu.xmm[2]];
    let obs = Obs {
        xmm,
        rax: cpu.gpr[reg::RAX],
        rcx: cpu.gpr[reg::R8],
        rflags: cpu.flags.get() & fl::STATUS,
        mxcsr: cpu.mxcsr,
        data,
    };
    (obs, exit)
}

/// Edge values for 32-bit lanes: float specials, denormals, rounding
/// ties, integer-conversion bounds, integer saturation bounds.
pub(in crate::interp::ops) const EDGE32: &[u32] = &[
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
    0x5f00_0000,
    0x7f7f_ffff,
    0x3dcc_cccd,
    0x7fff_ffff,
    0x8000_7fff,
    0x7f80_ff01,
    0x0001_fffe,
    0xffff_ffff,
    0x1234_5678,
    0x4b40_0001,
    0x0080_0000,
];

/// Edge values for 64-bit lanes, likewise.
pub(in crate::interp::ops) const EDGE64: &[u64] = &[
    0x7ff8_0000_0000_0000,
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
    0xc1e0_0000_0020_0000,
    0x43e0_0000_0000_0000,
    0xc3e0_0000_0000_0000,
    0x7fef_ffff_ffff_ffff,
    0x3fb9_9999_9999_999a,
    0x4415_af1d_78b5_8c40,
    0x3810_0000_0000_0000,
    0x47ef_ffff_f000_0000,
    0x36a0_0000_0000_0000,
    0x0010_0000_0000_0000,
    u64::MAX,
    0x7fff_8000_0080_7f00,
];

/// MXCSR settings: default, each rounding mode, FTZ+DAZ.
pub(in crate::interp::ops) const MXCSRS: &[u32] = &[0x1f80, 0x3f80, 0x5f80, 0x7f80, 0x9fc0];

/// A small deterministic generator (xorshift64).
pub(in crate::interp::ops) struct Rng(pub(in crate::interp::ops) u64);
impl Rng {
    pub(in crate::interp::ops) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(in crate::interp::ops) fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    /// 64 bits made of edge lanes, a small shift count, or noise.
    pub(in crate::interp::ops) fn half(&mut self) -> u64 {
        match self.next() % 5 {
            0 | 1 => self.pick(EDGE32) as u64 | (self.pick(EDGE32) as u64) << 32,
            2 => self.pick(EDGE64),
            3 => self.next() % 70,
            _ => self.next(),
        }
    }
    pub(in crate::interp::ops) fn xmm(&mut self) -> u128 {
        self.half() as u128 | (self.half() as u128) << 64
    }
}

fn inputs(rng: &mut Rng) -> Obs {
    let mut data = [0u8; DATA];
    for chunk in data.chunks_mut(8) {
        chunk.copy_from_slice(&rng.half().to_le_bytes());
    }
    let gpr = |r: &mut Rng| match r.next() % 3 {
        0 => r.pick(EDGE64),
        1 => r.pick(EDGE32) as u64,
        _ => r.next(),
    };
    Obs {
        xmm: [rng.xmm(), rng.xmm(), rng.xmm()],
        rax: gpr(rng),
        rcx: gpr(rng),
        rflags: RFLAGS_IN & fl::STATUS,
        mxcsr: rng.pick(MXCSRS),
        data,
    }
}

#[test]
fn sse_matches_host() {
    let s = Snippet::new();
    let page = NativePage::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut failures = Vec::new();
    for (text, code) in ORACLE_CASES {
        for _ in 0..60 {
            let o = inputs(&mut rng);
            let want = run_native(&s, &page, code, &o);
            let (got, exit) = run_emulated(&s, code, &o);
            if exit != Exit::Syscall || got != want {
                failures.push(format!("{text}\n  in:   {o:x?}\n  host: {want:x?}\n  urun: {got:x?} ({exit:?})"));
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} instructions differ from the host:\n{}",
        failures.len(),
        ORACLE_CASES.len(),
        failures.join("\n")
    );
}

/// Faults and values that cannot or should not come from the host run:
/// (assembly, bytes, MXCSR, expected exit fault or None, check on the
/// final state).
#[test]
fn sse_faults_and_limits() {
    let s = Snippet::new();
    let gp = Some(FaultKind::GeneralProtection);
    // xmm0 = 1.0f32 lanes, xmm1 = 0.0; rdx = data.
    let one = 0x3f80_0000_3f80_0000_3f80_0000_3f80_0000u128;
    #[rustfmt::skip]
    let cases: &[(&str, &[u8], u32, Option<FaultKind>)] = &[
        ("movaps xmm0, [rdx+1]", &[0x0f, 0x28, 0x42, 0x01], 0x1f80, gp.clone()),
        ("movdqa [rdx+8], xmm0", &[0x66, 0x0f, 0x7f, 0x42, 0x08], 0x1f80, gp.clone()),
        ("movntdq [rdx+4], xmm0", &[0x66, 0x0f, 0xe7, 0x42, 0x04], 0x1f80, gp.clone()),
        ("paddb xmm0, [rdx+1]", &[0x66, 0x0f, 0xfc, 0x42, 0x01], 0x1f80, gp.clone()),
        ("addps xmm0, [rdx+4]", &[0x0f, 0x58, 0x42, 0x04], 0x1f80, gp.clone()),
        ("movups xmm0, [rdx+1]", &[0x0f, 0x10, 0x42, 0x01], 0x1f80, None),
        ("addss xmm0, [rdx+1]", &[0xf3, 0x0f, 0x58, 0x42, 0x01], 0x1f80, None),
        // ldmxcsr [rdx] with data = 0x10000 (a reserved bit).
        ("ldmxcsr [rdx]", &[0x0f, 0xae, 0x12], 0x1f80, gp.clone()),
        // divps xmm0, xmm1 by zero with ZE unmasked: #XM, FPE_FLTDIV.
        ("divps xmm0, xmm1", &[0x0f, 0x5e, 0xc1], 0x1f80 & !0x200, Some(FaultKind::FloatingPoint { code: 3 })),
        // 1.0 * 0.0 raises nothing even with everything unmasked.
        ("mulps xmm0, xmm1", &[0x0f, 0x59, 0xc1], 0, None),
    ];
    for (text, code, csr, fault) in cases {
        // SAFETY: the data area is mapped RW.
        unsafe { (s.data as *mut u32).write(0x10000) };
        let (cpu, exit) = s.run(code, |cpu| {
            cpu.xmm[0] = one;
            cpu.gpr[reg::RDX] = s.data;
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
    // The #XM case recorded ZE in MXCSR.
    let (cpu, _) = s.run(&[0x0f, 0x5e, 0xc1], |cpu| {
        cpu.xmm[0] = one;
        cpu.mxcsr = 0x1f80 & !0x200;
    });
    assert_eq!(cpu.mxcsr & 0x3f, 0x04);
}

/// A few architectural values written out, so the oracle test is not the
/// only witness: x86 MAX returns the second operand for NaN and for two
/// zeros; conversions out of range give the integer indefinite.
#[test]
fn sse_spec_values() {
    let s = Snippet::new();
    #[rustfmt::skip]
    let cases: &[(&str, &[u8], u128, u128, u128)] = &[
        // (asm, bytes, xmm0 in, xmm1 in, xmm0 out)
        ("maxsd xmm0, xmm1 (-0, +0)", &[0xf2, 0x0f, 0x5f, 0xc1], 0x8000_0000_0000_0000, 0, 0),
        ("maxsd xmm0, xmm1 (NaN, 1)", &[0xf2, 0x0f, 0x5f, 0xc1], 0x7ff8_0000_0000_0000, 0x3ff0_0000_0000_0000, 0x3ff0_0000_0000_0000),
        ("minss xmm0, xmm1 (1, NaN)", &[0xf3, 0x0f, 0x5d, 0xc1], 0x3f80_0000, 0x7fc0_0000, 0x7fc0_0000),
        ("paddsb xmm0, xmm1", &[0x66, 0x0f, 0xec, 0xc1], 0x807f, 0xff01, 0x807f),
        ("psraw xmm0, 99", &[0x66, 0x0f, 0x71, 0xe0, 0x63], 0x8000_7fff, 0, 0xffff_0000),
        ("movss xmm0, xmm1", &[0xf3, 0x0f, 0x10, 0xc1], u128::MAX, 0x1234_5678_0000_0001, u128::MAX << 32 | 1),
    ];
    for (text, code, a, b, want) in cases {
        let (cpu, exit) = s.run(code, |cpu| {
            cpu.xmm[0] = *a;
            cpu.xmm[1] = *b;
        });
        assert_eq!(exit, Exit::Syscall, "{text}");
        assert_eq!(cpu.xmm[0], *want, "{text}: got {:#x}", cpu.xmm[0]);
    }
    // cvttsd2si rax, xmm1 (1e20) and cvtss2si eax, xmm1 (NaN): indefinite.
    let (cpu, _) = s.run(&[0xf2, 0x48, 0x0f, 0x2c, 0xc1], |cpu| cpu.xmm[1] = 1e20f64.to_bits() as u128);
    assert_eq!(cpu.gpr[reg::RAX], 0x8000_0000_0000_0000);
    let (cpu, _) = s.run(&[0xf3, 0x0f, 0x2d, 0xc1], |cpu| {
        cpu.gpr[reg::RAX] = u64::MAX;
        cpu.xmm[1] = 0x7fc0_0000;
    });
    assert_eq!(cpu.gpr[reg::RAX], 0x8000_0000);
    // comisd with NaN: ZF PF CF set, OF SF AF cleared.
    let (cpu, _) = s.run(&[0x66, 0x0f, 0x2f, 0xc1], |cpu| {
        cpu.flags.set(fl::STATUS | 2);
        cpu.xmm[1] = 0x7ff8_0000_0000_0000;
    });
    assert_eq!(cpu.flags.get() & fl::STATUS, fl::ZF | fl::PF | fl::CF);
}
