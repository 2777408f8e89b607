/* SIGFPE caught and survived, case by case: integer division by zero (32
 * and 64 bits), quotient overflow (IDIV INT_MIN / -1, DIV with a high half
 * too big), and SSE divisions with the exception unmasked (divide by zero,
 * invalid). For each: the signal, si_code, whether si_addr and the saved
 * RIP are the faulting instruction, and that the registers the division
 * did not write are intact. The handler leaves with siglongjmp. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>

static sigjmp_buf env;
static volatile int got_sig, got_code;
static volatile uintptr_t got_addr, got_rip, got_rbx;

static void on_fpe(int sig, siginfo_t *si, void *uc_)
{
    ucontext_t *uc = uc_;
    got_sig = sig;
    got_code = si->si_code;
    got_addr = (uintptr_t)si->si_addr;
    got_rip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    got_rbx = (uintptr_t)uc->uc_mcontext.gregs[REG_RBX];
    siglongjmp(env, 1);
}

extern char at_div32[], at_div64[], at_idiv_ovf[], at_div_ovf[], at_divsd[], at_sqrtsd[];

static __attribute__((noinline, noclone)) void div32(uint32_t d)
{
    uint32_t a = 42, r = 0;
    __asm__ volatile("mov $0x1234, %%ebx\n.globl at_div32\nat_div32: divl %2" : "+a"(a), "+d"(r) : "r"(d) : "rbx");
}

static __attribute__((noinline, noclone)) void div64(uint64_t d)
{
    uint64_t a = 42, r = 0;
    __asm__ volatile("mov $0x1234, %%ebx\n.globl at_div64\nat_div64: divq %2" : "+a"(a), "+d"(r) : "r"(d) : "rbx");
}

static __attribute__((noinline, noclone)) void idiv_ovf(int64_t d)
{
    int64_t a = INT64_MIN, r = -1;
    __asm__ volatile("mov $0x1234, %%ebx\n.globl at_idiv_ovf\nat_idiv_ovf: idivq %2"
                     : "+a"(a), "+d"(r)
                     : "r"(d)
                     : "rbx");
}

static __attribute__((noinline, noclone)) void div_ovf(uint32_t d)
{
    uint32_t a = 0, r = 5;
    __asm__ volatile("mov $0x1234, %%ebx\n.globl at_div_ovf\nat_div_ovf: divl %2" : "+a"(a), "+d"(r) : "r"(d) : "rbx");
}

static __attribute__((noinline, noclone)) void divsd(double d)
{
    double x = 1.0;
    unsigned csr = 0x1f80 & ~0x200; /* ZM clear: divide by zero unmasked */
    __asm__ volatile("ldmxcsr %2\nmov $0x1234, %%ebx\n.globl at_divsd\nat_divsd: divsd %1, %0"
                     : "+x"(x)
                     : "x"(d), "m"(csr)
                     : "rbx");
}

static __attribute__((noinline, noclone)) void sqrtsd(double d)
{
    double x = 0;
    unsigned csr = 0x1f80 & ~0x80; /* IM clear: invalid unmasked */
    __asm__ volatile("ldmxcsr %2\nmov $0x1234, %%ebx\n.globl at_sqrtsd\nat_sqrtsd: sqrtsd %1, %0"
                     : "+x"(x)
                     : "x"(d), "m"(csr)
                     : "rbx");
}

static void reset_mxcsr(void)
{
    unsigned csr = 0x1f80;
    __asm__ volatile("ldmxcsr %0" : : "m"(csr));
}

#define CASE(name, at, call)                                                                                     \
    do {                                                                                                         \
        got_sig = 0;                                                                                             \
        if (!sigsetjmp(env, 1)) {                                                                                \
            call;                                                                                                \
            printf("%-9s no signal\n", name);                                                                    \
        } else {                                                                                                 \
            reset_mxcsr();                                                                                       \
            printf("%-9s signal %d si_code %d si_addr %s rip %s rbx %#lx\n", name, got_sig, got_code,              \
                   got_addr == (uintptr_t)(at) ? "=insn" : "other", got_rip == (uintptr_t)(at) ? "=insn" : "other", \
                   (unsigned long)got_rbx);                                                                      \
        }                                                                                                        \
    } while (0)

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fpe;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGFPE, &sa, NULL);
    for (int round = 0; round < 3; round++) {
        CASE("div32", at_div32, div32(0));
        CASE("div64", at_div64, div64(0));
        CASE("idiv_ovf", at_idiv_ovf, idiv_ovf(-1));
        CASE("div_ovf", at_div_ovf, div_ovf(2));
        CASE("divsd", at_divsd, divsd(0.0));
        CASE("sqrtsd", at_sqrtsd, sqrtsd(-1.0));
        CASE("div_ok", at_div32, div32(7));
    }
    return 0;
}
