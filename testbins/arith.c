/* Integer instruction self-checks through inline asm: results and flags.
 *
 * Two parts:
 *  - a table of single operations with hand-computed expected results and
 *    flags (the constants below), each reported as FAIL if wrong;
 *  - a sweep of every operation over a set of edge and pseudo-random inputs,
 *    with incoming flags set by popfq, whose results and *defined* flags are
 *    folded into a checksum. The checksum is compared with the native run.
 * Flags an instruction leaves undefined are masked out everywhere. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef uint64_t u64;
typedef uint32_t u32;
typedef uint16_t u16;
typedef uint8_t u8;

enum { CF = 0x1, PF = 0x4, AF = 0x10, ZF = 0x40, SF = 0x80, OF = 0x800 };
#define ARITH (CF | PF | AF | ZF | SF | OF)

struct r {
    u64 v;   /* result (destination register, zero-extended) */
    u64 v2;  /* second result where there is one (rdx, the other operand) */
    u64 f;   /* arithmetic flags after the instruction */
};

/* Set the arithmetic flags from fin, run body, read the flags back. rsp is
 * moved below the red zone first: pushfq/popfq must not clobber it. */
#define LOADF "lea -128(%%rsp), %%rsp\n\tpushq %[fin]\n\tpopfq\n\t"
#define SAVEF "\n\tpushfq\n\tpopq %[f]\n\tlea 128(%%rsp), %%rsp"

/* dst = dst OP src */
#define BIN(name, T, insn)                                                     \
    static struct r name(u64 a_, u64 b_, u64 fin)                              \
    {                                                                          \
        T a = (T)a_, b = (T)b_;                                                \
        u64 f;                                                                 \
        fin &= ARITH;                                                          \
        __asm__(LOADF insn " %[b], %[a]" SAVEF                                 \
                : [a] "+q"(a), [f] "=&r"(f)                                    \
                : [b] "q"(b), [fin] "r"(fin)                                   \
                : "cc");                                                       \
        return (struct r){ (u64)a, 0, f & ARITH };                             \
    }

/* dst = OP dst */
#define UN(name, T, insn)                                                      \
    static struct r name(u64 a_, u64 b_, u64 fin)                              \
    {                                                                          \
        (void)b_;                                                              \
        T a = (T)a_;                                                           \
        u64 f;                                                                 \
        fin &= ARITH;                                                          \
        __asm__(LOADF insn " %[a]" SAVEF                                       \
                : [a] "+q"(a), [f] "=&r"(f)                                    \
                : [fin] "r"(fin)                                               \
                : "cc");                                                       \
        return (struct r){ (u64)a, 0, f & ARITH };                             \
    }

/* dst = dst OP cl */
#define SH(name, T, insn)                                                      \
    static struct r name(u64 a_, u64 b_, u64 fin)                              \
    {                                                                          \
        T a = (T)a_;                                                           \
        u8 c = (u8)b_;                                                         \
        u64 f;                                                                 \
        fin &= ARITH;                                                          \
        __asm__(LOADF insn " %%cl, %[a]" SAVEF                                 \
                : [a] "+r"(a), [f] "=&r"(f)                                    \
                : "c"(c), [fin] "r"(fin)                                       \
                : "cc");                                                       \
        return (struct r){ (u64)a, 0, f & ARITH };                             \
    }

BIN(add64, u64, "add") BIN(add32, u32, "add") BIN(add16, u16, "add") BIN(add8, u8, "add")
BIN(sub64, u64, "sub") BIN(sub32, u32, "sub") BIN(sub16, u16, "sub") BIN(sub8, u8, "sub")
BIN(adc64, u64, "adc") BIN(adc32, u32, "adc") BIN(adc8, u8, "adc")
BIN(sbb64, u64, "sbb") BIN(sbb32, u32, "sbb") BIN(sbb8, u8, "sbb")
BIN(and64, u64, "and") BIN(or64, u64, "or") BIN(xor64, u64, "xor")
BIN(and8, u8, "and") BIN(or16, u16, "or") BIN(xor32, u32, "xor")
BIN(cmp64, u64, "cmp") BIN(cmp8, u8, "cmp") BIN(test64, u64, "test") BIN(test32, u32, "test")
BIN(imul64, u64, "imul") BIN(imul32, u32, "imul") BIN(imul16, u16, "imul")
BIN(bt64, u64, "bt") BIN(bts64, u64, "bts") BIN(btr64, u64, "btr") BIN(btc64, u64, "btc")
BIN(bsf64, u64, "bsf") BIN(bsr64, u64, "bsr") BIN(bsf32, u32, "bsf") BIN(bsr32, u32, "bsr")
BIN(popcnt64, u64, "popcnt") BIN(popcnt32, u32, "popcnt") BIN(popcnt16, u16, "popcnt")
UN(neg64, u64, "neg") UN(neg32, u32, "neg") UN(neg8, u8, "neg")
UN(not64, u64, "not") UN(inc64, u64, "inc") UN(dec64, u64, "dec")
UN(inc8, u8, "inc") UN(dec16, u16, "dec") UN(inc32, u32, "inc")
UN(bswap64, u64, "bswap") UN(bswap32, u32, "bswap")
SH(shl64, u64, "shl") SH(shr64, u64, "shr") SH(sar64, u64, "sar")
SH(shl32, u32, "shl") SH(shr32, u32, "shr") SH(sar32, u32, "sar")
SH(rol64, u64, "rol") SH(ror64, u64, "ror") SH(rcl64, u64, "rcl") SH(rcr64, u64, "rcr")
SH(rol32, u32, "rol") SH(ror32, u32, "ror") SH(rcl32, u32, "rcl") SH(rcr32, u32, "rcr")
SH(rol8, u8, "rol") SH(ror16, u16, "ror")

/* Operations with implicit registers. */
static struct r mul64(u64 a, u64 b, u64 fin)
{
    u64 lo = a, hi, f;
    fin &= ARITH;
    __asm__(LOADF "mulq %[b]" SAVEF
            : "+a"(lo), "=d"(hi), [f] "=&r"(f) : [b] "r"(b), [fin] "r"(fin) : "cc");
    return (struct r){ lo, hi, f & ARITH };
}

static struct r imul1_64(u64 a, u64 b, u64 fin)
{
    u64 lo = a, hi, f;
    fin &= ARITH;
    __asm__(LOADF "imulq %[b]" SAVEF
            : "+a"(lo), "=d"(hi), [f] "=&r"(f) : [b] "r"(b), [fin] "r"(fin) : "cc");
    return (struct r){ lo, hi, f & ARITH };
}

static struct r mul32(u64 a, u64 b, u64 fin)
{
    u32 lo = (u32)a, hi;
    u64 f;
    fin &= ARITH;
    __asm__(LOADF "mull %[b]" SAVEF
            : "+a"(lo), "=d"(hi), [f] "=&r"(f) : [b] "r"((u32)b), [fin] "r"(fin) : "cc");
    return (struct r){ lo, hi, f & ARITH };
}

static struct r mul8(u64 a, u64 b, u64 fin)
{
    u16 ax = (u8)a;
    u64 f;
    fin &= ARITH;
    __asm__(LOADF "mulb %[b]" SAVEF
            : "+a"(ax), [f] "=&r"(f) : [b] "q"((u8)b), [fin] "r"(fin) : "cc");
    return (struct r){ ax, 0, f & ARITH };
}

/* Divide the 128-bit hi:lo by b; the caller makes sure it cannot fault. */
static struct r div64(u64 hi, u64 lo, u64 b)
{
    __asm__("divq %[b]" : "+a"(lo), "+d"(hi) : [b] "r"(b) : "cc");
    return (struct r){ lo, hi, 0 };
}

static struct r idiv64(u64 hi, u64 lo, u64 b)
{
    __asm__("idivq %[b]" : "+a"(lo), "+d"(hi) : [b] "r"(b) : "cc");
    return (struct r){ lo, hi, 0 };
}

static struct r idiv32(u32 a, u32 b)
{
    u32 lo = a, hi;
    __asm__("cltd\n\tidivl %[b]" : "+a"(lo), "=&d"(hi) : [b] "r"(b) : "cc");
    return (struct r){ lo, hi, 0 };
}

static struct r imul3_64(u64 a, u64 imm_unused, u64 fin)
{
    (void)imm_unused;
    u64 d, f;
    fin &= ARITH;
    __asm__(LOADF "imulq $-12345, %[a], %[d]" SAVEF
            : [d] "=&r"(d), [f] "=&r"(f) : [a] "r"(a), [fin] "r"(fin) : "cc");
    return (struct r){ d, 0, f & ARITH };
}

static struct r shld64(u64 a, u64 b, u64 c, u64 fin)
{
    u64 f;
    fin &= ARITH;
    __asm__(LOADF "shldq %%cl, %[b], %[a]" SAVEF
            : [a] "+r"(a), [f] "=&r"(f) : [b] "r"(b), "c"((u8)c), [fin] "r"(fin) : "cc");
    return (struct r){ a, 0, f & ARITH };
}

static struct r shrd64(u64 a, u64 b, u64 c, u64 fin)
{
    u64 f;
    fin &= ARITH;
    __asm__(LOADF "shrdq %%cl, %[b], %[a]" SAVEF
            : [a] "+r"(a), [f] "=&r"(f) : [b] "r"(b), "c"((u8)c), [fin] "r"(fin) : "cc");
    return (struct r){ a, 0, f & ARITH };
}

static struct r xadd64(u64 a, u64 b, u64 fin)
{
    u64 f;
    fin &= ARITH;
    __asm__(LOADF "xaddq %[b], %[a]" SAVEF
            : [a] "+r"(a), [b] "+r"(b), [f] "=&r"(f) : [fin] "r"(fin) : "cc");
    return (struct r){ a, b, f & ARITH };
}

static struct r cmpxchg64(u64 mem, u64 expected, u64 desired)
{
    u64 f, fin = 0;
    __asm__(LOADF "cmpxchgq %[d], %[m]" SAVEF
            : [m] "+r"(mem), "+a"(expected), [f] "=&r"(f) : [d] "r"(desired), [fin] "r"(fin)
            : "cc");
    return (struct r){ mem, expected, f & ARITH };
}

/* All 16 condition codes from the given flags, as a bit mask (o first,
 * in the highest bit). lea accumulates without touching the flags. */
#define SETCC(cc) "set" cc " %%dl\n\tlea (%%rdx,%%rax,2), %%rax\n\t"
static u64 setcc_all(u64 fin)
{
    u64 out;
    fin &= ARITH;
    __asm__("xor %%eax, %%eax\n\txor %%edx, %%edx\n\t" LOADF
            SETCC("o") SETCC("no") SETCC("b") SETCC("ae") SETCC("e") SETCC("ne")
            SETCC("be") SETCC("a") SETCC("s") SETCC("ns") SETCC("p") SETCC("np")
            SETCC("l") SETCC("ge") SETCC("le") SETCC("g")
            "lea 128(%%rsp), %%rsp"
            : "=&a"(out) : [fin] "r"(fin) : "rdx", "cc");
    return out;
}

/* cmovcc for a few conditions after a cmp. */
static u64 cmov_after_cmp(u64 a, u64 b)
{
    u64 out = 0, one = 1;
    __asm__("xor %%eax, %%eax\n\t"
            "cmp %[b], %[a]\n\t"
            "mov $0, %%edx\n\tcmovl %[one], %%rdx\n\tor %%rdx, %%rax\n\tshl $4, %%rax\n\t"
            "cmp %[b], %[a]\n\t"
            "mov $0, %%edx\n\tcmovb %[one], %%rdx\n\tor %%rdx, %%rax\n\tshl $4, %%rax\n\t"
            "cmp %[b], %[a]\n\t"
            "mov $0, %%edx\n\tcmove %[one], %%rdx\n\tor %%rdx, %%rax\n\tshl $4, %%rax\n\t"
            "cmp %[b], %[a]\n\t"
            "mov $0, %%edx\n\tcmovg %[one], %%rdx\n\tor %%rdx, %%rax\n\tshl $4, %%rax\n\t"
            "cmp %[b], %[a]\n\t"
            "mov $0, %%edx\n\tcmova %[one], %%rdx\n\tor %%rdx, %%rax\n\t"
            : "=&a"(out) : [a] "r"(a), [b] "r"(b), [one] "r"(one) : "rdx", "cc");
    return out;
}

/* 256-bit add and subtract through adc/sbb chains. Returns the carry out. */
static u64 add256(u64 d[4], const u64 a[4], const u64 b[4])
{
    u64 c;
    u64 x0 = a[0], x1 = a[1], x2 = a[2], x3 = a[3];
    __asm__("add %[b0], %[x0]\n\tadc %[b1], %[x1]\n\tadc %[b2], %[x2]\n\tadc %[b3], %[x3]\n\t"
            "setc %b[c]\n\tmovzbl %b[c], %k[c]"
            : [x0] "+&r"(x0), [x1] "+&r"(x1), [x2] "+&r"(x2), [x3] "+&r"(x3), [c] "=&q"(c)
            : [b0] "rm"(b[0]), [b1] "rm"(b[1]), [b2] "rm"(b[2]), [b3] "rm"(b[3])
            : "cc");
    d[0] = x0, d[1] = x1, d[2] = x2, d[3] = x3;
    return c;
}

static u64 sub256(u64 d[4], const u64 a[4], const u64 b[4])
{
    u64 c;
    u64 x0 = a[0], x1 = a[1], x2 = a[2], x3 = a[3];
    __asm__("sub %[b0], %[x0]\n\tsbb %[b1], %[x1]\n\tsbb %[b2], %[x2]\n\tsbb %[b3], %[x3]\n\t"
            "setc %b[c]\n\tmovzbl %b[c], %k[c]"
            : [x0] "+&r"(x0), [x1] "+&r"(x1), [x2] "+&r"(x2), [x3] "+&r"(x3), [c] "=&q"(c)
            : [b0] "rm"(b[0]), [b1] "rm"(b[1]), [b2] "rm"(b[2]), [b3] "rm"(b[3])
            : "cc");
    d[0] = x0, d[1] = x1, d[2] = x2, d[3] = x3;
    return c;
}

static int failures;
static u64 checksum = 0xcbf29ce484222325ull;

static void mix(u64 v)
{
    checksum ^= v;
    checksum *= 0x100000001b3ull;
    checksum ^= checksum >> 29;
}

static void expect(const char *what, struct r got, u64 want_v, u64 want_f, u64 fmask)
{
    if (got.v != want_v || (got.f & fmask) != (want_f & fmask)) {
        printf("FAIL %s: got %#llx flags %#llx, want %#llx flags %#llx (mask %#llx)\n", what,
               (unsigned long long)got.v, (unsigned long long)(got.f & fmask),
               (unsigned long long)want_v, (unsigned long long)(want_f & fmask),
               (unsigned long long)fmask);
        failures++;
    }
}

static void expect2(const char *what, struct r got, u64 want_v, u64 want_v2)
{
    if (got.v != want_v || got.v2 != want_v2) {
        printf("FAIL %s: got %#llx:%#llx, want %#llx:%#llx\n", what,
               (unsigned long long)got.v2, (unsigned long long)got.v,
               (unsigned long long)want_v2, (unsigned long long)want_v);
        failures++;
    }
}

#define M1 0xffffffffffffffffull
#define SMIN 0x8000000000000000ull
#define SMAX 0x7fffffffffffffffull

static void fixed_checks(void)
{
    /* add/sub: every arithmetic flag is defined. */
    expect("add64 1+1", add64(1, 1, 0), 2, 0, ARITH);
    expect("add64 -1+1", add64(M1, 1, 0), 0, CF | PF | AF | ZF, ARITH);
    expect("add64 max+1", add64(SMAX, 1, 0), SMIN, PF | AF | SF | OF, ARITH);
    expect("add64 min+min", add64(SMIN, SMIN, 0), 0, CF | PF | ZF | OF, ARITH);
    expect("add32 0xffffffff+2", add32(0xffffffff, 2, 0), 1, CF | AF, ARITH);
    expect("add8 0x7f+1", add8(0x7f, 1, 0), 0x80, AF | SF | OF, ARITH);
    expect("add16 0xff+1", add16(0xff, 1, 0), 0x100, PF | AF, ARITH);
    expect("sub64 0-1", sub64(0, 1, 0), M1, CF | PF | AF | SF, ARITH);
    expect("sub64 5-5", sub64(5, 5, 0), 0, PF | ZF, ARITH);
    expect("sub64 min-1", sub64(SMIN, 1, 0), SMAX, PF | AF | OF, ARITH);
    expect("sub8 0x80-1", sub8(0x80, 1, 0), 0x7f, AF | OF, ARITH);
    expect("cmp64 3,5", cmp64(3, 5, 0), 3, CF | AF | SF, ARITH);
    expect("cmp8 0x10,0x01", cmp8(0x10, 0x01, 0), 0x10, PF | AF, ARITH);
    /* adc/sbb use the incoming carry. */
    expect("adc64 -1+0+CF", adc64(M1, 0, CF), 0, CF | PF | AF | ZF, ARITH);
    expect("adc64 1+1+0", adc64(1, 1, 0), 2, 0, ARITH);
    expect("adc32 7+8+CF", adc32(7, 8, CF), 16, AF, ARITH);
    expect("adc8 0xff+0xff+CF", adc8(0xff, 0xff, CF), 0xff, CF | PF | AF | SF, ARITH);
    expect("sbb64 0-0-CF", sbb64(0, 0, CF), M1, CF | PF | AF | SF, ARITH);
    expect("sbb32 10-3-CF", sbb32(10, 3, CF), 6, PF, ARITH);
    expect("sbb8 0-0xff-CF", sbb8(0, 0xff, CF), 0, CF | PF | AF | ZF, ARITH);
    /* logic: CF=OF=0, AF undefined. */
    expect("and64", and64(0xf0f0f0f0f0f0f0f0ull, 0xff00ff00ff00ff00ull, CF | OF),
           0xf000f000f000f000ull, PF | SF, ARITH & ~AF);
    expect("or64 zero", or64(0, 0, CF), 0, PF | ZF, ARITH & ~AF);
    expect("xor64 self", xor64(0x1234, 0x1234, SF), 0, PF | ZF, ARITH & ~AF);
    expect("and8", and8(0x81, 0x83, 0), 0x81, PF | SF, ARITH & ~AF);
    expect("or16", or16(0x0100, 0x0001, 0), 0x0101, 0, ARITH & ~AF);
    expect("xor32", xor32(0x80000000, 0x1, 0), 0x80000001, SF, ARITH & ~AF);
    expect("test64", test64(0x100, 0x0ff, 0), 0x100, PF | ZF, ARITH & ~AF);
    expect("test32 sign", test32(0x80000000, 0xffffffff, 0), 0x80000000, PF | SF, ARITH & ~AF);
    /* inc/dec keep CF; neg sets CF unless zero; not touches nothing. */
    expect("inc64 max keeps CF", inc64(SMAX, 0, CF), SMIN, CF | PF | AF | SF | OF, ARITH);
    expect("dec64 0 keeps no-CF", dec64(0, 0, 0), M1, PF | AF | SF, ARITH);
    expect("inc8 0xff", inc8(0xff, 0, CF), 0, CF | PF | AF | ZF, ARITH);
    expect("dec16 0x8000", dec16(0x8000, 0, 0), 0x7fff, PF | AF | OF, ARITH);
    expect("inc32 -1 zero-extends", inc32(0xffffffff, 0, 0), 0, PF | AF | ZF, ARITH);
    expect("neg64 1", neg64(1, 0, 0), M1, CF | PF | AF | SF, ARITH);
    expect("neg64 0", neg64(0, 0, CF), 0, PF | ZF, ARITH);
    expect("neg64 min", neg64(SMIN, 0, 0), SMIN, CF | PF | SF | OF, ARITH);
    expect("neg32 5", neg32(5, 0, 0), 0xfffffffb, CF | AF | SF, ARITH);
    expect("neg8 0x80", neg8(0x80, 0, 0), 0x80, CF | SF | OF, ARITH);
    expect("not64 keeps flags", not64(0x00ff, 0, CF | ZF | OF), 0xffffffffffffff00ull,
           CF | ZF | OF, ARITH);
    /* multiply: CF=OF (high half significant); SF ZF AF PF undefined. */
    expect2("mul64", mul64(M1, M1, 0), 1, M1 - 1);
    expect("mul64 flags", mul64(M1, M1, 0), 1, CF | OF, CF | OF);
    expect("mul64 small", mul64(0x100000000ull, 0xffffffffull, 0), 0xffffffff00000000ull, 0,
           CF | OF);
    expect2("imul1_64 -1*-1", imul1_64(M1, M1, 0), 1, 0);
    expect2("imul1_64 min*2", imul1_64(SMIN, 2, 0), 0, M1);
    expect2("mul32", mul32(0xffffffff, 0xffffffff, 0), 1, 0xfffffffe);
    expect("mul8", mul8(200, 200, 0), 40000, CF | OF, CF | OF);
    expect("imul64 2op", imul64(-3ll, 7, 0), (u64)-21ll, 0, CF | OF);
    expect("imul64 overflow", imul64(SMAX, 2, 0), M1 - 1, CF | OF, CF | OF);
    expect("imul32", imul32(0x10000, 0x10000, 0), 0, CF | OF, CF | OF);
    expect("imul16", imul16(-2 & 0xffff, 300, 0), (u16)-600, 0, CF | OF);
    expect("imul3 imm", imul3_64(1000, 0, 0), (u64)-12345000ll, 0, CF | OF);
    /* divide */
    expect2("div64 128/64", div64(1, 0, 2), SMIN, 0);
    expect2("div64 7/2", div64(0, 7, 2), 3, 1);
    expect2("div64 big", div64(0x123, 0x456789abcdef0123ull, 0x1000), 0x123456789abcdef0ull,
            0x123);
    expect2("idiv64 -7/2", idiv64(M1, (u64)-7ll, 2), (u64)-3ll, M1);
    expect2("idiv64 7/-2", idiv64(0, 7, (u64)-2ll), (u64)-3ll, 1);
    expect2("idiv32 -100/7", idiv32((u32)-100, 7), (u32)-14, (u32)-2);
    /* shifts: count masked to 6 (64-bit) or 5 (32-bit) bits; count 0 keeps
     * all flags; AF undefined; OF defined for count 1 only. */
    expect("shl64 1", shl64(SMIN | 1, 1, 0), 2, CF | OF, CF | PF | ZF | SF | OF);
    expect("shl64 63", shl64(3, 63, 0), SMIN, CF | PF | SF, CF | PF | ZF | SF);
    expect("shl64 64 is 0", shl64(0x1234, 64, CF | ZF), 0x1234, CF | ZF, ARITH);
    expect("shr64 4", shr64(0xf8, 4, 0), 0xf, CF | PF, CF | PF | ZF | SF);
    expect("shr64 1 OF=msb", shr64(SMIN, 1, 0), 0x4000000000000000ull, OF | PF, ARITH & ~AF);
    expect("sar64 1", sar64(SMIN | 1, 1, 0), 0xc000000000000000ull, CF | PF | SF, ARITH & ~AF);
    expect("sar64 63", sar64(SMIN, 63, 0), M1, PF | SF, CF | PF | ZF | SF);
    expect("shl32 33 is 1", shl32(0x80000001, 33, 0), 2, CF, CF | PF | ZF | SF);
    expect("shr32 zero-extends", shr32(0xffffffff, 4, 0), 0x0fffffff, CF | PF, CF | PF | ZF | SF);
    expect("sar32 31", sar32(0x80000000, 31, 0), 0xffffffff, PF | SF, CF | PF | ZF | SF);
    /* rotates: only CF and OF change. */
    expect("rol64 4", rol64(0xf00000000000000full, 4, ZF), 0xff, CF | ZF, CF | ZF | SF | PF);
    expect("ror64 4", ror64(0xf00000000000000full, 4, 0), 0xff00000000000000ull, CF,
           CF | ZF | SF | PF);
    expect("rol64 1 OF", rol64(0x4000000000000000ull, 1, 0), SMIN, OF, CF | OF);
    expect("rcl64 1 through CF", rcl64(SMIN, 1, CF), 1, CF | OF, CF | OF);
    expect("rcr64 1 through CF", rcr64(1, 1, CF), SMIN, CF | OF, CF | OF);
    expect("rcl32 8", rcl32(0x12345678, 8, CF), 0x345678 << 8 | 0x80 | 0x09, 0, CF);
    expect("rcr32 4", rcr32(0x12345678, 4, 0), 0x01234567, CF, CF);
    expect("rol32 0 keeps flags", rol32(5, 32, CF | OF | SF), 5, CF | OF | SF, ARITH);
    expect("ror32 8", ror32(0x12345678, 8, 0), 0x78123456, 0, CF);
    expect("rol8 3", rol8(0x81, 3, 0), 0x0c, 0, CF);
    expect("ror16 4", ror16(0x1234, 4, 0), 0x4123, 0, CF);
    /* double shifts */
    expect("shld64 8", shld64(0x1122334455667788ull, 0xaabbccddeeff0011ull, 8, 0),
           0x22334455667788aaull, CF, CF | ZF | SF);
    expect("shrd64 8", shrd64(0x1122334455667788ull, 0xaabbccddeeff0011ull, 8, 0),
           0x1111223344556677ull, CF, CF | ZF | SF);
    /* bit tests: CF is the bit; ZF unchanged; bit offset masked to 6 bits. */
    expect("bt64 bit 3", bt64(8, 3, ZF), 8, CF | ZF, CF | ZF);
    expect("bt64 bit 67", bt64(8, 67, 0), 8, CF, CF | ZF);
    expect("bts64", bts64(0, 63, 0), SMIN, 0, CF);
    expect("btr64", btr64(M1, 0, 0), M1 - 1, CF, CF);
    expect("btc64", btc64(0x10, 4, 0), 0, CF, CF);
    /* bit scans (a zero source leaves an undefined destination: not tested). */
    expect("bsf64", bsf64(0, 0x100000, 0), 20, 0, ZF);
    expect("bsr64", bsr64(0, SMIN | 1, 0), 63, 0, ZF);
    expect("bsf32", bsf32(0, 0x80000000, 0), 31, 0, ZF);
    expect("bsr32", bsr32(0, 0x00010000, 0), 16, 0, ZF);
    {
        struct r z = bsf64(77, 0, 0);
        z.v = 0; /* destination undefined for a zero source: flags only */
        expect("bsf64 zero sets ZF", z, 0, ZF, ZF);
    }
    /* popcnt: every flag cleared, ZF if the source is zero. */
    expect("popcnt64", popcnt64(0, 0xf0f0f0f0f0f0f0f1ull, ARITH), 33, 0, ARITH);
    expect("popcnt64 zero", popcnt64(5, 0, CF), 0, ZF, ARITH);
    expect("popcnt32", popcnt32(0, 0xffffffff, 0), 32, 0, ARITH);
    expect("popcnt16", popcnt16(0, 0x8001, 0), 2, 0, ARITH);
    /* bswap */
    expect("bswap64", bswap64(0x0102030405060708ull, 0, 0), 0x0807060504030201ull, 0, 0);
    expect("bswap32", bswap32(0x11223344, 0, 0), 0x44332211, 0, 0);
    /* xadd, cmpxchg */
    expect2("xadd64", xadd64(40, 2, 0), 42, 40);
    expect2("cmpxchg64 match", cmpxchg64(5, 5, 9), 9, 5);
    expect("cmpxchg64 match ZF", cmpxchg64(5, 5, 9), 9, ZF | PF, ZF);
    expect2("cmpxchg64 mismatch", cmpxchg64(5, 6, 9), 5, 5);
    /* setcc/cmovcc */
    {
        u64 got = setcc_all(0);
        /* flags all clear: no, ae, ne, a, ns, np, ge, g are set. */
        u64 want = 0;
        static const int bits[16] = { 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1 };
        for (int i = 0; i < 16; i++)
            want = want << 1 | (u64)bits[i];
        if (got != want) {
            printf("FAIL setcc flags=0: got %#llx want %#llx\n", (unsigned long long)got,
                   (unsigned long long)want);
            failures++;
        }
        got = setcc_all(ZF | CF);
        /* o=0 no=1 b=1 ae=0 e=1 ne=0 be=1 a=0 s=0 ns=1 p=0 np=1 l=0 ge=1 le=1 g=0 */
        want = 0x6a56; /* 0110 1010 0101 0110 */
        if (got != want) {
            printf("FAIL setcc flags=ZF|CF: got %#llx want %#llx\n", (unsigned long long)got,
                   (unsigned long long)want);
            failures++;
        }
    }
    /* cmov bits: l b e g a, 4 bits apart */
    if (cmov_after_cmp((u64)-1ll, 1) != 0x10001 || cmov_after_cmp(1, 1) != 0x00100 ||
        cmov_after_cmp(2, 1) != 0x00011) {
        printf("FAIL cmovcc: %#llx %#llx %#llx\n", (unsigned long long)cmov_after_cmp(-1ll, 1),
               (unsigned long long)cmov_after_cmp(1, 1), (unsigned long long)cmov_after_cmp(2, 1));
        failures++;
    }
    /* 256-bit arithmetic */
    {
        const u64 a[4] = { M1, M1, M1, M1 }, one[4] = { 1, 0, 0, 0 }, zero[4] = { 0 };
        u64 d[4];
        u64 c = add256(d, a, one);
        if (c != 1 || d[0] || d[1] || d[2] || d[3]) {
            puts("FAIL add256 (2^256-1)+1");
            failures++;
        }
        c = sub256(d, zero, one);
        if (c != 1 || d[0] != M1 || d[1] != M1 || d[2] != M1 || d[3] != M1) {
            puts("FAIL sub256 0-1");
            failures++;
        }
        const u64 x[4] = { 0x8000000000000000ull, 0xffffffffffffffffull, 0, 1 };
        const u64 y[4] = { 0x8000000000000000ull, 0, 0xffffffffffffffffull, 2 };
        c = add256(d, x, y);
        if (c != 0 || d[0] != 0 || d[1] != 0 || d[2] != 0 || d[3] != 4) {
            puts("FAIL add256 carry ripple");
            failures++;
        }
    }
}

/* Inputs for the sweep: edges, then pseudo-random values. */
#define NIN 40
static u64 inputs[NIN];

static void make_inputs(void)
{
    static const u64 edge[] = { 0, 1, 2, 3, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff,
                                0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull,
                                SMAX, SMIN, M1, M1 - 1, 0x5555555555555555ull,
                                0xaaaaaaaaaaaaaaaaull, 0x0123456789abcdefull };
    int n = 0;
    for (; n < (int)(sizeof edge / sizeof edge[0]); n++)
        inputs[n] = edge[n];
    u64 x = 0x9e3779b97f4a7c15ull;
    for (; n < NIN; n++) {
        x ^= x << 7;
        x ^= x >> 9;
        inputs[n] = x * 0x2545f4914f6cdd1dull >> (n % 5 * 8);
    }
}

typedef struct r (*binop)(u64, u64, u64);

static void sweep(void)
{
    static const struct {
        binop fn;
        u64 fmask;
    } ops[] = {
        { add64, ARITH }, { add32, ARITH }, { add16, ARITH }, { add8, ARITH },
        { sub64, ARITH }, { sub32, ARITH }, { sub16, ARITH }, { sub8, ARITH },
        { adc64, ARITH }, { adc32, ARITH }, { adc8, ARITH },
        { sbb64, ARITH }, { sbb32, ARITH }, { sbb8, ARITH },
        { and64, ARITH & ~AF }, { or64, ARITH & ~AF }, { xor64, ARITH & ~AF },
        { and8, ARITH & ~AF }, { or16, ARITH & ~AF }, { xor32, ARITH & ~AF },
        { cmp64, ARITH }, { cmp8, ARITH }, { test64, ARITH & ~AF }, { test32, ARITH & ~AF },
        { imul64, CF | OF }, { imul32, CF | OF }, { imul16, CF | OF },
        { mul64, CF | OF }, { imul1_64, CF | OF }, { mul32, CF | OF }, { mul8, CF | OF },
        { xadd64, ARITH }, { popcnt64, ARITH }, { popcnt32, ARITH }, { popcnt16, ARITH },
        { neg64, ARITH }, { neg32, ARITH }, { neg8, ARITH }, { not64, ARITH },
        { inc64, ARITH }, { dec64, ARITH }, { inc8, ARITH }, { dec16, ARITH }, { inc32, ARITH },
        { bswap64, ARITH }, { bswap32, ARITH },
        { bt64, CF | ZF }, { bts64, CF | ZF }, { btr64, CF | ZF }, { btc64, CF | ZF },
    };
    static const u64 fins[] = { 0, CF, ZF | SF, ARITH };
    for (unsigned o = 0; o < sizeof ops / sizeof ops[0]; o++)
        for (int i = 0; i < NIN; i++)
            for (int j = 0; j < NIN; j++) {
                u64 fin = fins[(i + j + o) & 3];
                struct r res = ops[o].fn(inputs[i], inputs[j], fin);
                mix(res.v);
                mix(res.v2);
                mix(res.f & ops[o].fmask);
            }
    /* bit scans with nonzero sources only */
    for (int i = 0; i < NIN; i++) {
        if (!inputs[i])
            continue;
        mix(bsf64(0, inputs[i], 0).v);
        mix(bsr64(0, inputs[i], 0).v);
        if ((u32)inputs[i]) {
            mix(bsf32(0, inputs[i], 0).v);
            mix(bsr32(0, inputs[i], 0).v);
        }
    }
    /* shifts and rotates over all counts 0..70 (masked by the CPU) */
    static const binop sh64[] = { shl64, shr64, sar64 }, sh32[] = { shl32, shr32, sar32 };
    static const binop rot[] = { rol64, ror64, rcl64, rcr64, rol32, ror32, rcl32, rcr32 };
    for (int i = 0; i < NIN; i++)
        for (u64 c = 0; c < 70; c++) {
            u64 fin = (i + c) & 1 ? ARITH : CF;
            for (int k = 0; k < 3; k++) {
                u64 m = (c & 63) == 0 ? ARITH : (c & 63) == 1 ? CF | PF | ZF | SF | OF : CF | PF | ZF | SF;
                struct r res = sh64[k](inputs[i], c, fin);
                mix(res.v);
                mix(res.f & m);
                m = (c & 31) == 0 ? ARITH : (c & 31) == 1 ? CF | PF | ZF | SF | OF : CF | PF | ZF | SF;
                res = sh32[k](inputs[i], c, fin);
                mix(res.v);
                mix(res.f & m);
            }
            for (int k = 0; k < 8; k++) {
                u64 cm = c & (k < 4 ? 63 : 31);
                u64 m = cm == 0 ? ARITH : cm == 1 ? CF | OF : CF;
                m |= PF | ZF | SF | AF; /* never touched by rotates */
                struct r res = rot[k](inputs[i], c, fin);
                mix(res.v);
                mix(res.f & m);
            }
            if (c >= 1 && c < 64) {
                u64 m = c == 1 ? CF | PF | ZF | SF | OF : CF | PF | ZF | SF;
                mix(shld64(inputs[i], inputs[(i + 7) % NIN], c, 0).v);
                mix(shld64(inputs[i], inputs[(i + 7) % NIN], c, 0).f & m);
                mix(shrd64(inputs[i], inputs[(i + 3) % NIN], c, 0).v);
                mix(shrd64(inputs[i], inputs[(i + 3) % NIN], c, 0).f & m);
            }
        }
    /* divisions that cannot fault */
    for (int i = 0; i < NIN; i++)
        for (int j = 0; j < NIN; j++) {
            u64 b = inputs[j];
            if (!b)
                continue;
            struct r d = div64(inputs[i] % b, inputs[(i + j) % NIN], b);
            mix(d.v);
            mix(d.v2);
            int64_t sb = (int64_t)b, sa = (int64_t)inputs[i];
            if (!(sb == -1 && sa == INT64_MIN)) {
                d = idiv64(sa < 0 ? M1 : 0, (u64)sa, b);
                mix(d.v);
                mix(d.v2);
            }
        }
    for (int i = 0; i < NIN; i++) {
        mix(setcc_all(inputs[i]));
        for (int j = 0; j < NIN; j++)
            mix(cmov_after_cmp(inputs[i], inputs[j]));
    }
}

int main(void)
{
    fixed_checks();
    make_inputs();
    sweep();
    printf("checksum=%016llx\n", (unsigned long long)checksum);
    puts(failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
