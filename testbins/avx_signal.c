/* A signal handler reads and changes YMM state through its ucontext, as
 * Linux lays it out (the XSAVE image after the FXSAVE region, found
 * through FP_XSTATE_MAGIC1 and the AVX component's CPUID offset). The
 * register holds its value across the signal, which arrives at the end of
 * a raw kill syscall. Built with -march=x86-64-v3. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static unsigned ymm_offset;
static volatile int seen;

static void handler(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    uint8_t *fp = (uint8_t *)uc->uc_mcontext.fpregs;
    uint32_t magic1, xstate_size;
    memcpy(&magic1, fp + 464, 4);
    memcpy(&xstate_size, fp + 464 + 16, 4);
    uint32_t magic2;
    memcpy(&magic2, fp + xstate_size, 4);
    uint64_t bv;
    memcpy(&bv, fp + 512, 8);
    printf("handler: uc_flags xstate %d magic1 %s magic2 %s ymm in use %d\n", (int)(uc->uc_flags & 1),
           magic1 == 0x46505853 ? "ok" : "bad", magic2 == 0x46505845 ? "ok" : "bad", (int)(bv >> 2 & 1));
    uint64_t hi[2];
    memcpy(hi, fp + ymm_offset + 7 * 16, 16);
    printf("handler: ymm7 upper %016llx %016llx\n", (unsigned long long)hi[1], (unsigned long long)hi[0]);
    /* Clobber our own YMM registers (the interrupted code must not see it)... */
    __asm__ volatile("vpcmpeqd %%ymm7, %%ymm7, %%ymm7\n\tvpcmpeqd %%ymm3, %%ymm3, %%ymm3" ::: "xmm7", "xmm3");
    /* ...and change the saved upper half of ymm7 and the lower of xmm3. */
    hi[0] ^= 0x1111111111111111ull;
    hi[1] = 0x0123456789abcdefull;
    memcpy(fp + ymm_offset + 7 * 16, hi, 16);
    fp[160 + 3 * 16] ^= 0xff;
    seen = sig;
}

int main(void) {
    unsigned a, b, c, d;
    __cpuid_count(0xd, 2, a, b, c, d);
    ymm_offset = b;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, 0);
    uint64_t in[4] = {0x1111222233334444ull, 0x5555666677778888ull, 0x99990000aaaabbbbull, 0xccccddddeeeeffffull};
    uint64_t out7[4], out3[4], out5[4];
    long pid = getpid();
    __asm__ volatile(
        "vmovdqu (%[in]), %%ymm7\n\t"
        "vmovdqu (%[in]), %%ymm3\n\t"
        "vpermq $0x1b, %%ymm7, %%ymm5\n\t"
        "mov %[nr], %%eax\n\t"
        "mov %[pid], %%rdi\n\t"
        "mov %[sig], %%esi\n\t"
        "syscall\n\t"
        "vmovdqu %%ymm7, (%[o7])\n\t"
        "vmovdqu %%ymm3, (%[o3])\n\t"
        "vmovdqu %%ymm5, (%[o5])\n\t"
        :
        : [in] "r"(in), [o7] "r"(out7), [o3] "r"(out3), [o5] "r"(out5), [nr] "i"(SYS_kill), [pid] "r"(pid),
          [sig] "i"(SIGUSR1)
        : "rax", "rdi", "rsi", "rcx", "r11", "memory", "xmm3", "xmm5", "xmm7");
    printf("signal %d\n", seen);
    printf("ymm7 %016llx %016llx %016llx %016llx\n", (unsigned long long)out7[3], (unsigned long long)out7[2],
           (unsigned long long)out7[1], (unsigned long long)out7[0]);
    printf("ymm3 %016llx %016llx %016llx %016llx\n", (unsigned long long)out3[3], (unsigned long long)out3[2],
           (unsigned long long)out3[1], (unsigned long long)out3[0]);
    printf("ymm5 %016llx %016llx %016llx %016llx\n", (unsigned long long)out5[3], (unsigned long long)out5[2],
           (unsigned long long)out5[1], (unsigned long long)out5[0]);
    return 0;
}
