/* System instructions at CPL 3: each one runs under SIGSEGV/SIGILL/SIGTRAP/
 * SIGBUS handlers and one line says what happened: the signal with its
 * si_code and si_addr and where the saved RIP was (relative to the
 * instruction), or that execution went on, with the results that are the
 * same on every run of this host.
 *
 * Not printed, because they vary from run to run or machine to machine:
 * descriptor-table bases (SGDT/SIDT where they run), the CPU number LSL
 * returns for the per-CPU segment 0x7b (only ZF is printed), addresses of
 * this program (results are printed relative to the instruction or to the
 * low stub page).
 *
 * `sysinsn compat` instead runs one far transfer to the 32-bit code
 * selector 0x23 (compatibility mode) and back; urun's interpreter cannot run
 * 32-bit code and reports that (tests/sysinsn.rs).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

static sigjmp_buf jb;
/* Set by each case to the address of the instruction under test. */
uintptr_t sysinsn_at;
static volatile int got_sig, got_code;
static volatile uintptr_t got_addr, got_rip;

static void handler(int sig, siginfo_t *si, void *ctx)
{
    ucontext_t *uc = ctx;
    got_sig = sig;
    got_code = si->si_code;
    got_addr = (uintptr_t)si->si_addr;
    got_rip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    siglongjmp(jb, 1);
}

/* A page below 4 GiB, so that 32-bit far pointers can reach it. */
#define LOW 0x20000000ul
/* At LOW: mov %rsp,%r9; mov %r10,%rsp; jmp *%r11 — records the stack a far
 * CALL left, restores the caller's and returns to where %r11 says. */
static const unsigned char low_stub[] = {0x49, 0x89, 0xe1, 0x4c, 0x89, 0xd4, 0x41, 0xff, 0xe3};
/* At LOW + 0x40, 32-bit code: ljmp $0x33, $LOW + 0x48; at LOW + 0x48 (64-bit
 * again, after a NOP): jmp *%r11. */
static const unsigned char compat_stub[] = {0xea, 0x48, 0x00, 0x00, 0x20, 0x33, 0x00, 0x90, 0x41, 0xff, 0xe3};

/* Mark the next instruction as the one under test (r11 is clobbered). */
#define MARK "lea 9f(%%rip), %%r11\n\tmov %%r11, sysinsn_at(%%rip)\n\t"
#define AT "9: "

typedef void (*case_fn)(uint64_t out[2]);

/* Where the saved RIP and si_addr depend on the virtualization under the
 * host rather than the CPU: after ICEBP (INT1), a trap, bare metal reports
 * the next instruction, while this AMD machine under KVM reports the
 * instruction itself. Only the signal and si_code are printed. */
static int rip_unstable(const char *name)
{
    return strcmp(name, "int1") == 0;
}

static void run(const char *name, case_fn fn, int nout)
{
    uint64_t out[2] = {0, 0};
    got_sig = 0;
    sysinsn_at = 0;
    if (sigsetjmp(jb, 1) == 0) {
        fn(out);
        printf("%-14s ran", name);
        for (int i = 0; i < nout; i++)
            printf(" %#llx", (unsigned long long)out[i]);
        printf("\n");
    } else {
        const char *s = got_sig == SIGSEGV ? "SIGSEGV" : got_sig == SIGILL ? "SIGILL"
                      : got_sig == SIGTRAP ? "SIGTRAP" : got_sig == SIGBUS ? "SIGBUS" : "?";
        long d = (long)(got_rip - sysinsn_at);
        printf("%-14s %s code=%#x", name, s, got_code);
        if (rip_unstable(name)) {
            printf("\n");
            fflush(stdout);
            return;
        }
        printf(" addr=");
        if (got_addr == 0)
            printf("0");
        else if (got_addr >= LOW && got_addr < LOW + 4096)
            printf("low+%#lx", (unsigned long)(got_addr - LOW));
        else if (got_addr - sysinsn_at <= 16)
            printf("insn+%lu", (unsigned long)(got_addr - sysinsn_at));
        else
            printf("other");
        if (sysinsn_at == 0)
            printf(" rip=unmarked\n");
        else if (d >= -16 && d <= 16)
            printf(" rip=insn%+ld\n", d);
        else
            printf(" rip=other\n");
    }
    fflush(stdout);
}

/* ----- far transfers ----- */

static void retf_33(uint64_t *o)
{
    __asm__ volatile("lea 1f(%%rip), %%rax\n\tpush $0x33\n\tpush %%rax\n\t" MARK AT "lretq\n1:\n\t"
                     "mov %%cs, %%eax\n\tmov %%eax, %0" : "=m"(o[0]) : : "rax", "r11", "memory");
}

static void retf_imm(uint64_t *o)
{
    __asm__ volatile("mov %%rsp, %%rcx\n\tsub $16, %%rsp\n\tlea 1f(%%rip), %%rax\n\tpush $0x33\n\tpush %%rax\n\t"
                     MARK AT "lretq $16\n1:\n\tsub %%rsp, %%rcx\n\tmov %%rcx, %0\n\tlea (%%rsp,%%rcx), %%rsp"
                     : "=m"(o[0]) : : "rax", "rcx", "r11", "memory");
}

#define RETF_TO(fn, sel)                                                                                        \
    static void fn(uint64_t *o)                                                                               \
    {                                                                                                         \
        __asm__ volatile("mov %%rsp, %%rcx\n\tlea 1f(%%rip), %%rax\n\tpush $" #sel "\n\tpush %%rax\n\t" MARK AT \
                         "lretq\n1:\n\tmov %%rcx, %%rsp" : : : "rax", "rcx", "r11", "memory");                 \
    }
RETF_TO(retf_08, 0x08)
RETF_TO(retf_10, 0x10)
RETF_TO(retf_2b, 0x2b)
RETF_TO(retf_30, 0x30)
RETF_TO(retf_null, 0x0)
RETF_TO(retf_big, 0xfff3)

/* IRETQ with a same-privilege frame: SS, RSP, RFLAGS, CS, RIP. `flags` is
 * ORed into the current RFLAGS; out[0] = RFLAGS after (status flags and
 * DF/AC/IF/IOPL), out[1] = CS after. */
#define IRET(fn, cs, ss, flags)                                                                        \
    static void fn(uint64_t *o)                                                                      \
    {                                                                                                \
        __asm__ volatile("mov %%rsp, %%rcx\n\tpush $" #ss "\n\tpush %%rcx\n\tpushfq\n\t"              \
                         "orq $" #flags ", (%%rsp)\n\tpush $" #cs "\n\tlea 1f(%%rip), %%rax\n\tpush %%rax\n\t" \
                         MARK AT "iretq\n1:\n\tmov %%rcx, %%rsp\n\tpushfq\n\tpop %%rax\n\t"           \
                         "and $0x43fd5, %%rax\n\tmov %%rax, %0\n\tcld\n\t"                          \
                         "pushfq\n\tandl $~0x40000, (%%rsp)\n\tpopfq\n\tmov %%cs, %%eax\n\tmov %%rax, %1"     \
                         : "=m"(o[0]), "=m"(o[1]) : : "rax", "rcx", "r11", "memory", "cc");          \
    }
IRET(iretq_plain, 0x33, 0x2b, 0)
IRET(iretq_flags, 0x33, 0x2b, 0x40cd5) /* CF PF AF ZF SF DF AC set */
IRET(iretq_iopl, 0x33, 0x2b, 0x3200)   /* IOPL=3 and IF: ignored at CPL 3 */
IRET(iretq_cs08, 0x08, 0x2b, 0)
IRET(iretq_cs2b, 0x2b, 0x2b, 0)
IRET(iretq_ss0, 0x33, 0x0, 0)
IRET(iretq_ss33, 0x33, 0x33, 0)
IRET(iretq_ss18, 0x33, 0x18, 0)

/* Far JMP/CALL through memory to the low stub. m16:32 with the default
 * operand size, m16:64 with REX.W (which AMD CPUs read as m16:32).
 * out[0] = bytes the far CALL pushed, out[1] = the CS value it pushed. */
static void far_ptr(unsigned char *p, int wide, unsigned sel)
{
    memset(p, 0, 16);
    uint64_t off = LOW;
    memcpy(p, &off, wide ? 8 : 4);
    memcpy(p + (wide ? 8 : 4), &sel, 2);
}

#define FAR(fn, insn, wide, sel)                                                                      \
    static void fn(uint64_t *o)                                                                     \
    {                                                                                               \
        unsigned char ptr[16];                                                                      \
        far_ptr(ptr, wide, sel);                                                                    \
        __asm__ volatile("mov %%rsp, %%r10\n\tmov $-1, %%r9\n\t" MARK AT insn " (%2)\n"             \
                         "1:\n\tmov %%r10, %%rax\n\tsub %%r9, %%rax\n\tmov %%rax, %0\n\t"              \
                         "cmp $0, %%rax\n\tjle 2f\n\tshr $1, %%rax\n\tmovzwq (%%r9,%%rax), %%rax\n\t"          \
                         "mov %%rax, %1\n2:"                                                        \
                         : "=m"(o[0]), "=m"(o[1]) : "r"(ptr) : "rax", "r9", "r10", "r11", "memory"); \
    }
/* The stub returns through %r11 = the MARK's address... set it to 1f. */
#undef MARK
#define MARK "lea 9f(%%rip), %%r11\n\tmov %%r11, sysinsn_at(%%rip)\n\tlea 1f(%%rip), %%r11\n\t"
FAR(ljmp_32, "ljmpl *", 0, 0x33)
FAR(ljmp_64, "rex.W ljmp *", 1, 0x33)
FAR(lcall_32, "lcalll *", 0, 0x33)
FAR(lcall_64, "rex.W lcall *", 1, 0x33)
FAR(ljmp_08, "ljmpl *", 0, 0x08)
FAR(lcall_2b, "lcalll *", 0, 0x2b)
FAR(lcall_null, "lcalll *", 0, 0x0)

static void compat(uint64_t *o)
{
    (void)o;
    __asm__ volatile("mov %%rsp, %%rcx\n\tpush $0x23\n\tpush $0x20000040\n\t" MARK AT
                     "lretq\n1:\n\tmov %%rcx, %%rsp\n\tmov $0x2b, %%eax\n\tmov %%eax, %%ss"
                     : : : "rax", "rcx", "r11", "memory");
}

/* ----- descriptor tables and segments ----- */

#define STORE_REG(fn, insn)                                                                                   \
    static void fn(uint64_t *o)                                                                             \
    {                                                                                                       \
        __asm__ volatile("mov $0x5a5a5a5a5a5a5a5a, %%rax\n\t" MARK AT insn "\n1:\n\tmov %%rax, %0" : "=m"(o[0]) \
                         : : "rax", "r11", "memory");                                                      \
    }
STORE_REG(str_r, "str %%ax")
STORE_REG(sldt_r, "sldt %%ax")
STORE_REG(smsw_r, "smsw %%rax")
STORE_REG(smsw_e, "smsw %%eax") /* Linux's emulation writes 4 bytes: the upper half stays */
STORE_REG(lar_mem, "movw $0x2b, -8(%%rsp)\n\tlar -8(%%rsp), %%rax")
STORE_REG(mov_from_ss, "mov %%ss, %%rax")
STORE_REG(mov_from_cs_m, "movq $-1, -8(%%rsp)\n\tmov %%cs, -8(%%rsp)\n\tmov -8(%%rsp), %%rax")
/* CET shadow stacks are off: RDSSP is a NOP (the unwinders rely on it). */
STORE_REG(rdsspq, "rdsspq %%rax")
STORE_REG(rdsspd, "rdsspd %%eax")
STORE_REG(incsspq, "incsspq %%rax")
STORE_REG(saveprevssp, "saveprevssp")
STORE_REG(setssbsy, "setssbsy")
STORE_REG(wrussq, "wrussq %%rax, (%%rsp)")

static void sgdt_fault(uint64_t *o)
{
    (void)o;
    __asm__ volatile("mov $8, %%eax\n\t" MARK AT "sgdt (%%rax)\n1:" : : : "rax", "r11", "memory");
}

/* SGDT/SIDT: only the limit is printed (the base is the kernel's). */
#define STORE_TABLE(fn, insn, after)                                                                                       \
    static void fn(uint64_t *o)                                                                                   \
    {                                                                                                             \
        unsigned char t[16];                                                                                      \
        memset(t, 0x5a, sizeof t);                                                                                \
        __asm__ volatile(MARK AT insn " (%0)\n1:" : : "r"(t) : "r11", "memory");                                  \
        o[0] = (uint64_t)t[0] | (uint64_t)t[1] << 8;                                                              \
        o[1] = t[after];                                                                                           \
    }
STORE_TABLE(sgdt_m, "sgdt", 10)
STORE_TABLE(sidt_m, "sidt", 10)
STORE_TABLE(str_m, "str", 2)
STORE_TABLE(sldt_m, "sldt", 2)
STORE_TABLE(smsw_m, "smsw", 2)

/* LAR/LSL/VERR/VERW on one selector: out[0] = ZF, out[1] = the result
 * (LAR/LSL) where it is stable. */
#define SEL_OP(fn, insn, sel, keep)                                                                      \
    static void fn(uint64_t *o)                                                                        \
    {                                                                                                  \
        __asm__ volatile("mov $" #sel ", %%ecx\n\tmov $0x5a5a5a5a5a5a5a5a, %%rax\n\t" MARK AT insn "\n" \
                         "1:\n\tsetz %%dl\n\tmovzbl %%dl, %%edx\n\tmov %%rdx, %0\n\tmov %%rax, %1"     \
                         : "=m"(o[0]), "=m"(o[1]) : : "rax", "rcx", "rdx", "r11", "memory", "cc");    \
        if (!(keep))                                                                                   \
            o[1] = 0;                                                                                  \
    }
SEL_OP(lar_33, "lar %%rcx, %%rax", 0x33, 1)
SEL_OP(lar_2b, "lar %%rcx, %%rax", 0x2b, 1)
SEL_OP(lar_23, "lar %%rcx, %%rax", 0x23, 1)
SEL_OP(lar_08, "lar %%rcx, %%rax", 0x08, 1)
SEL_OP(lar_10, "lar %%rcx, %%rax", 0x10, 1)
SEL_OP(lar_18, "lar %%rcx, %%rax", 0x18, 1)
SEL_OP(lar_40, "lar %%rcx, %%rax", 0x40, 1)
SEL_OP(lar_7b, "lar %%rcx, %%rax", 0x7b, 1)
SEL_OP(lar_0, "lar %%rcx, %%rax", 0x0, 1)
SEL_OP(lar_big, "lar %%rcx, %%rax", 0xfff3, 1)
SEL_OP(lar_ldt, "lar %%rcx, %%rax", 0x7, 1)
SEL_OP(lar_32, "lar %%ecx, %%eax", 0x33, 1)
SEL_OP(lsl_33, "lsl %%rcx, %%rax", 0x33, 1)
SEL_OP(lsl_2b, "lsl %%rcx, %%rax", 0x2b, 1)
SEL_OP(lsl_23, "lsl %%rcx, %%rax", 0x23, 1)
SEL_OP(lsl_7b, "lsl %%rcx, %%rax", 0x7b, 0) /* the limit is the CPU (and node) number */
SEL_OP(lsl_40, "lsl %%rcx, %%rax", 0x40, 1)
SEL_OP(lsl_0, "lsl %%rcx, %%rax", 0x0, 1)
SEL_OP(verr_33, "verr %%cx", 0x33, 0)
SEL_OP(verr_2b, "verr %%cx", 0x2b, 0)
SEL_OP(verr_23, "verr %%cx", 0x23, 0)
SEL_OP(verr_08, "verr %%cx", 0x08, 0)
SEL_OP(verr_7b, "verr %%cx", 0x7b, 0)
SEL_OP(verw_33, "verw %%cx", 0x33, 0)
SEL_OP(verw_2b, "verw %%cx", 0x2b, 0)
SEL_OP(verw_7b, "verw %%cx", 0x7b, 0)
SEL_OP(verw_0, "verw %%cx", 0x0, 0)

/* Segment register moves (DS, ES, SS and GS; FS holds libc's TLS base).
 * out[0] = the selector read back. */
#define LOAD_SEG(fn, seg, sel)                                                                          \
    static void fn(uint64_t *o)                                                                       \
    {                                                                                                 \
        __asm__ volatile("mov $" #sel ", %%eax\n\t" MARK AT "mov %%eax, %%" #seg "\n1:\n\t"            \
                         "mov %%" #seg ", %%eax\n\tmov %%rax, %0\n\txor %%eax, %%eax\n\t"             \
                         "mov %%eax, %%" #seg : "=m"(o[0]) : : "rax", "r11", "memory");               \
    }
LOAD_SEG(mov_ds_2b, ds, 0x2b)
LOAD_SEG(mov_ds_0, ds, 0x0)
LOAD_SEG(mov_ds_3, ds, 0x3)
LOAD_SEG(mov_ds_33, ds, 0x33)
LOAD_SEG(mov_ds_23, ds, 0x23)
LOAD_SEG(mov_ds_08, ds, 0x08)
LOAD_SEG(mov_ds_10, ds, 0x10)
LOAD_SEG(mov_ds_big, ds, 0xfff3)
LOAD_SEG(mov_es_2b, es, 0x2b)
LOAD_SEG(mov_es_7b, es, 0x7b)
LOAD_SEG(mov_gs_2b, gs, 0x2b)

static void mov_ss_2b(uint64_t *o)
{
    __asm__ volatile("mov $0x2b, %%eax\n\t" MARK AT "mov %%eax, %%ss\n1:\n\tmov %%ss, %%eax\n\tmov %%rax, %0"
                     : "=m"(o[0]) : : "rax", "r11", "memory");
}
#define LOAD_SS(fn, sel)                                                                         \
    static void fn(uint64_t *o)                                                                \
    {                                                                                          \
        (void)o;                                                                               \
        __asm__ volatile("mov $" #sel ", %%eax\n\t" MARK AT "mov %%eax, %%ss\n1:" : : : "rax", "r11", "memory"); \
    }
LOAD_SS(mov_ss_0, 0x0)
LOAD_SS(mov_ss_33, 0x33)
LOAD_SS(mov_ss_08, 0x08)

static void read_segs(uint64_t *o)
{
    __asm__ volatile("xor %%eax, %%eax\n\tmov %%cs, %%ax\n\tshl $16, %%eax\n\tmov %%ss, %%ax\n\tmov %%rax, %0\n\t"
                     "xor %%eax, %%eax\n\tmov %%ds, %%ax\n\tshl $16, %%eax\n\tmov %%es, %%ax\n\tshl $16, %%rax\n\t"
                     "mov %%gs, %%ax\n\tmov %%rax, %1"
                     : "=m"(o[0]), "=m"(o[1]) : : "rax", "memory");
}

static void push_pop_gs(uint64_t *o)
{
    __asm__ volatile("mov %%rsp, %%rcx\n\tpush $0x2b\n\t" MARK AT "pop %%gs\n1:\n\tpush %%gs\n\tpop %%rax\n\t"
                     "mov %%rax, %0\n\tsub %%rsp, %%rcx\n\tmov %%rcx, %1\n\txor %%eax, %%eax\n\tmov %%eax, %%gs"
                     : "=m"(o[0]), "=m"(o[1]) : : "rax", "rcx", "r11", "memory");
}

/* ----- privileged and I/O instructions: raw bytes where the assembler
 * would refuse or where the form matters ----- */

#define SIMPLE(fn, insn)                                                                     \
    static void fn(uint64_t *o)                                                            \
    {                                                                                      \
        (void)o;                                                                           \
        __asm__ volatile("xor %%eax, %%eax\n\txor %%ecx, %%ecx\n\txor %%edx, %%edx\n\t"    \
                         "lea -64(%%rsp), %%rsi\n\tlea -64(%%rsp), %%rdi\n\t" MARK AT insn "\n1:" \
                         : : : "rax", "rcx", "rdx", "rsi", "rdi", "r11", "memory", "cc");   \
    }
SIMPLE(in_al_dx, "in %%dx, %%al")
SIMPLE(in_al_imm, "in $0x80, %%al")
SIMPLE(in_eax_dx, "in %%dx, %%eax")
SIMPLE(out_dx_al, "out %%al, %%dx")
SIMPLE(out_imm_ax, "out %%ax, $0x80")
SIMPLE(insb, "insb")
SIMPLE(outsb, "outsb")
SIMPLE(rep_outsd, "rep outsl")
SIMPLE(hlt, "hlt")
SIMPLE(cli, "cli")
SIMPLE(sti, "sti")
SIMPLE(int_20, "int $0x20")
SIMPLE(int_01, "int $0x01")
SIMPLE(int_03, ".byte 0xcd, 0x03") /* gas would make "int $3" the one-byte INT3 */
SIMPLE(int_04, "int $0x04")
SIMPLE(int_0d, "int $0x0d")
SIMPLE(int_ff, "int $0xff")
SIMPLE(int1, ".byte 0xf1")
SIMPLE(int3, "int3")
SIMPLE(into, ".byte 0xce")
SIMPLE(lgdt, "lgdt (%%rsi)")
SIMPLE(lidt, "lidt (%%rsi)")
SIMPLE(lldt, "lldt %%ax")
SIMPLE(ltr, "ltr %%ax")
SIMPLE(lmsw, "lmsw %%ax")
SIMPLE(clts, "clts")
SIMPLE(invlpg, "invlpg (%%rsi)")
SIMPLE(wbinvd, "wbinvd")
SIMPLE(invd, "invd")
SIMPLE(mov_cr0, "mov %%cr0, %%rax")
SIMPLE(mov_to_cr3, "mov %%rax, %%cr3")
SIMPLE(mov_dr7, "mov %%db7, %%rax")
SIMPLE(rdmsr, "rdmsr")
SIMPLE(wrmsr, "wrmsr")
SIMPLE(rdpmc, "rdpmc")
SIMPLE(swapgs, "swapgs")
SIMPLE(sysret, "sysretq")
SIMPLE(sysexit, "sysexitq")
SIMPLE(xsetbv, "xsetbv")
SIMPLE(stac, "stac")
SIMPLE(clac, "clac")
SIMPLE(pop_ds, ".byte 0x1f")
SIMPLE(push_cs, ".byte 0x0e")
SIMPLE(mov_to_cs, ".byte 0x8e, 0xc8")
SIMPLE(ud2, "ud2")
SIMPLE(lock_nop, ".byte 0xf0, 0x90")

struct entry {
    const char *name;
    case_fn fn;
    int nout;
};

static const struct entry cases[] = {
    {"retf_33", retf_33, 1},       {"retf_imm", retf_imm, 1},     {"retf_08", retf_08, 0},
    {"retf_10", retf_10, 0},       {"retf_2b", retf_2b, 0},       {"retf_30", retf_30, 0},
    {"retf_null", retf_null, 0},   {"retf_big", retf_big, 0},     {"iretq_plain", iretq_plain, 2},
    {"iretq_flags", iretq_flags, 2}, {"iretq_iopl", iretq_iopl, 2}, {"iretq_cs08", iretq_cs08, 0},
    {"iretq_cs2b", iretq_cs2b, 0}, {"iretq_ss0", iretq_ss0, 0},   {"iretq_ss33", iretq_ss33, 0},
    {"iretq_ss18", iretq_ss18, 0}, {"ljmp_32", ljmp_32, 1},       {"ljmp_64", ljmp_64, 1},
    {"lcall_32", lcall_32, 2},     {"lcall_64", lcall_64, 2},     {"ljmp_08", ljmp_08, 1},
    {"lcall_2b", lcall_2b, 2},     {"lcall_null", lcall_null, 2}, {"str_r", str_r, 1},
    {"sldt_r", sldt_r, 1},         {"smsw_r", smsw_r, 1},         {"sgdt_m", sgdt_m, 1},
    {"smsw_e", smsw_e, 1},         {"lar_mem", lar_mem, 1},       {"mov_from_ss", mov_from_ss, 1},
    {"mov_from_cs_m", mov_from_cs_m, 1}, {"rdsspq", rdsspq, 1},   {"rdsspd", rdsspd, 1},
    {"incsspq", incsspq, 1},       {"saveprevssp", saveprevssp, 1}, {"setssbsy", setssbsy, 1},
    {"wrussq", wrussq, 1},         {"sgdt_fault", sgdt_fault, 0},
    {"sidt_m", sidt_m, 1},         {"str_m", str_m, 2},           {"sldt_m", sldt_m, 2},
    {"smsw_m", smsw_m, 2},         {"lar_33", lar_33, 2},         {"lar_2b", lar_2b, 2},
    {"lar_23", lar_23, 2},         {"lar_08", lar_08, 2},         {"lar_10", lar_10, 2},
    {"lar_18", lar_18, 2},         {"lar_40", lar_40, 2},         {"lar_7b", lar_7b, 2},
    {"lar_0", lar_0, 2},           {"lar_big", lar_big, 2},       {"lar_ldt", lar_ldt, 2},
    {"lar_32", lar_32, 2},         {"lsl_33", lsl_33, 2},         {"lsl_2b", lsl_2b, 2},
    {"lsl_23", lsl_23, 2},         {"lsl_7b", lsl_7b, 1},         {"lsl_40", lsl_40, 2},
    {"lsl_0", lsl_0, 2},           {"verr_33", verr_33, 1},       {"verr_2b", verr_2b, 1},
    {"verr_23", verr_23, 1},       {"verr_08", verr_08, 1},       {"verr_7b", verr_7b, 1},
    {"verw_33", verw_33, 1},       {"verw_2b", verw_2b, 1},       {"verw_7b", verw_7b, 1},
    {"verw_0", verw_0, 1},         {"read_segs", read_segs, 2},   {"mov_ds_2b", mov_ds_2b, 1},
    {"mov_ds_0", mov_ds_0, 1},     {"mov_ds_3", mov_ds_3, 1},     {"mov_ds_33", mov_ds_33, 1},
    {"mov_ds_23", mov_ds_23, 1},   {"mov_ds_08", mov_ds_08, 1},   {"mov_ds_10", mov_ds_10, 1},
    {"mov_ds_big", mov_ds_big, 1}, {"mov_es_2b", mov_es_2b, 1},   {"mov_es_7b", mov_es_7b, 1},
    {"mov_gs_2b", mov_gs_2b, 1},   {"mov_ss_2b", mov_ss_2b, 1},   {"mov_ss_0", mov_ss_0, 0},
    {"mov_ss_33", mov_ss_33, 0},   {"mov_ss_08", mov_ss_08, 0},   {"push_pop_gs", push_pop_gs, 2},
    {"in_al_dx", in_al_dx, 0},     {"in_al_imm", in_al_imm, 0},   {"in_eax_dx", in_eax_dx, 0},
    {"out_dx_al", out_dx_al, 0},   {"out_imm_ax", out_imm_ax, 0}, {"insb", insb, 0},
    {"outsb", outsb, 0},           {"rep_outsd", rep_outsd, 0},   {"hlt", hlt, 0},
    {"cli", cli, 0},               {"sti", sti, 0},               {"int_20", int_20, 0},
    {"int_01", int_01, 0},         {"int_03", int_03, 0},         {"int_04", int_04, 0},
    {"int_0d", int_0d, 0},         {"int_ff", int_ff, 0},         {"int1", int1, 0},
    {"int3", int3, 0},             {"into", into, 0},             {"lgdt", lgdt, 0},
    {"lidt", lidt, 0},             {"lldt", lldt, 0},             {"ltr", ltr, 0},
    {"lmsw", lmsw, 0},             {"clts", clts, 0},             {"invlpg", invlpg, 0},
    {"wbinvd", wbinvd, 0},         {"invd", invd, 0},             {"mov_cr0", mov_cr0, 0},
    {"mov_to_cr3", mov_to_cr3, 0}, {"mov_dr7", mov_dr7, 0},       {"rdmsr", rdmsr, 0},
    {"wrmsr", wrmsr, 0},           {"rdpmc", rdpmc, 0},           {"swapgs", swapgs, 0},
    {"sysret", sysret, 0},         {"sysexit", sysexit, 0},       {"xsetbv", xsetbv, 0},
    {"stac", stac, 0},             {"clac", clac, 0},             {"pop_ds", pop_ds, 0},
    {"push_cs", push_cs, 0},       {"mov_to_cs", mov_to_cs, 0},   {"ud2", ud2, 0},               {"lock_nop", lock_nop, 0},
};

int main(int argc, char **argv)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGILL, &sa, NULL);
    sigaction(SIGTRAP, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);

    unsigned char *low = mmap((void *)LOW, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (low != (unsigned char *)LOW) {
        perror("mmap at 0x20000000");
        return 1;
    }
    memcpy(low, low_stub, sizeof low_stub);
    memcpy(low + 0x40, compat_stub, sizeof compat_stub);

    if (argc > 1 && strcmp(argv[1], "compat") == 0) {
        run("compat_23", compat, 0);
        return 0;
    }
    /* `sysinsn NAME...` runs only the named cases (for debugging). */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int want = argc == 1;
        for (int a = 1; a < argc; a++)
            want |= strcmp(argv[a], cases[i].name) == 0;
        if (want)
            run(cases[i].name, cases[i].fn, cases[i].nout);
    }
    return 0;
}
