/* Hardware faults caught and survived, the same source for Linux and
 * Windows: a thin layer below maps "a handler that may fix the register
 * state and resume" to a vectored exception handler (AddVectoredException-
 * Handler) and an unhandled-exception filter (SetUnhandledExceptionFilter)
 * on Windows, and to a SIGSEGV/SIGFPE handler (sigaction with SA_SIGINFO)
 * on Linux, so that both print the same lines.
 *   faults          null write fixed by the vectored handler, divide by
 *                   zero, INT_MIN / -1, ud2, int3 and an SSE divide by zero skipped by
 *                   it, a bad read fixed by the filter
 *   faults crash    an unhandled null write (the status says how it ended)
 *   faults divide   an unhandled integer divide by zero
 *   faults float    an unhandled SSE divide by zero (unmasked)
 *   faults recurse  a stack overflow
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

enum kind { ACCESS, DIVIDE, ILLEGAL, BREAKPOINT, FLOATING, OTHER };
struct fault {
    enum kind kind;
    int write;          /* access: 1 write, 0 read (Windows only; Linux reports -1) */
    unsigned long long addr;
};
/* Return 1 to resume (after fixing the registers), 0 to pass it on. */
typedef int (*fixer)(const struct fault *f, unsigned long long *pc, unsigned long long *rax,
                     unsigned long long *rcx);

static fixer first_fixer, last_fixer;
/* The MXCSR of the faulting state, for the fixers (set by the layer). */
static unsigned int *fault_mxcsr;

#ifdef _WIN32
#include <windows.h>

static void decode(EXCEPTION_RECORD *r, struct fault *f) {
    f->kind = r->ExceptionCode == EXCEPTION_ACCESS_VIOLATION ? ACCESS
              /* Linux reports INT_MIN / -1 as a divide error too (and
               * mingw's own filter would resume it forever). */
              : r->ExceptionCode == EXCEPTION_INT_DIVIDE_BY_ZERO ? DIVIDE
              : r->ExceptionCode == EXCEPTION_INT_OVERFLOW ? DIVIDE
              : r->ExceptionCode == EXCEPTION_ILLEGAL_INSTRUCTION ? ILLEGAL
              : r->ExceptionCode == EXCEPTION_BREAKPOINT ? BREAKPOINT
              : r->ExceptionCode == STATUS_FLOAT_MULTIPLE_TRAPS ? FLOATING : OTHER;
    f->write = r->NumberParameters >= 2 ? (int)r->ExceptionInformation[0] : -1;
    f->addr = r->NumberParameters >= 2 ? r->ExceptionInformation[1] : 0;
}

static LONG CALLBACK vectored(EXCEPTION_POINTERS *ep) {
    struct fault f;
    decode(ep->ExceptionRecord, &f);
    fault_mxcsr = (unsigned int *)&ep->ContextRecord->MxCsr;
    /* Windows reports a breakpoint at the INT3, Linux after it. */
    unsigned long long pc = ep->ContextRecord->Rip + (f.kind == BREAKPOINT);
    if (first_fixer && first_fixer(&f, &pc, (unsigned long long *)&ep->ContextRecord->Rax,
                                   (unsigned long long *)&ep->ContextRecord->Rcx)) {
        ep->ContextRecord->Rip = pc;
        return EXCEPTION_CONTINUE_EXECUTION;
    }
    return EXCEPTION_CONTINUE_SEARCH;
}

static LONG WINAPI filter(EXCEPTION_POINTERS *ep) {
    struct fault f;
    decode(ep->ExceptionRecord, &f);
    if (last_fixer && last_fixer(&f, (unsigned long long *)&ep->ContextRecord->Rip,
                                 (unsigned long long *)&ep->ContextRecord->Rax,
                                 (unsigned long long *)&ep->ContextRecord->Rcx))
        return EXCEPTION_CONTINUE_EXECUTION;
    return EXCEPTION_CONTINUE_SEARCH;
}

static void *veh;
static void install(void) {
    veh = AddVectoredExceptionHandler(1, vectored);
    SetUnhandledExceptionFilter(filter);
}
static void uninstall(void) {
    RemoveVectoredExceptionHandler(veh);
    SetUnhandledExceptionFilter(NULL);
}
#else
#include <signal.h>
#include <ucontext.h>

static void on_signal(int sig, siginfo_t *si, void *uc_) {
    ucontext_t *uc = uc_;
    struct fault f;
    f.kind = sig == SIGSEGV ? ACCESS
             : sig == SIGFPE  ? (si->si_code == FPE_INTDIV ? DIVIDE : FLOATING)
             : sig == SIGILL  ? ILLEGAL
             : sig == SIGTRAP ? BREAKPOINT : OTHER;
    fault_mxcsr = &uc->uc_mcontext.fpregs->mxcsr;
    /* The page-fault error code's write bit. */
    f.write = sig == SIGSEGV ? (int)((uc->uc_mcontext.gregs[REG_ERR] >> 1) & 1) : -1;
    f.addr = sig == SIGSEGV ? (unsigned long long)si->si_addr : 0;
    greg_t *g = uc->uc_mcontext.gregs;
    if (first_fixer && first_fixer(&f, (unsigned long long *)&g[REG_RIP], (unsigned long long *)&g[REG_RAX],
                                   (unsigned long long *)&g[REG_RCX]))
        return;
    if (last_fixer && last_fixer(&f, (unsigned long long *)&g[REG_RIP], (unsigned long long *)&g[REG_RAX],
                                 (unsigned long long *)&g[REG_RCX]))
        return;
    signal(sig, SIG_DFL);
}

static void install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);
    sigaction(SIGILL, &sa, NULL);
    sigaction(SIGTRAP, &sa, NULL);
}
static void uninstall(void) {
    signal(SIGSEGV, SIG_DFL);
    signal(SIGFPE, SIG_DFL);
    signal(SIGILL, SIG_DFL);
    signal(SIGTRAP, SIG_DFL);
}
#endif

/* The faulting instructions, in assembly so that their lengths are known
 * and the same for both builds. */
__asm__(".text\n"
        ".globl store_null\n"
        "store_null:\n"
        "  xorl %eax, %eax\n"
        "  movl $0x1234, %ecx\n"
        "store_at:\n"
        "  movl %ecx, 0x10(%rax)\n"  /* 3 bytes: 89 48 10 */
        "  movl 0x10(%rax), %eax\n"
        "  ret\n"
        ".globl divide\n"
        "divide:\n"
        "  movl %edi, %eax\n"
        "  cltd\n"
        "divide_at:\n"
        "  idivl %esi\n"              /* 2 bytes: f7 fe */
        "  ret\n"
        ".globl load_from\n"
        "load_from:\n"
        "  movq %rdi, %rcx\n"
        "load_at:\n"
        "  movq (%rcx), %rax\n"       /* 3 bytes: 48 8b 01 */
        "  ret\n"
        ".globl illegal\n"
        "illegal:\n"
        "  movl $7, %eax\n"
        "  ud2\n"                    /* 2 bytes: 0f 0b */
        "  addl $1, %eax\n"
        "  ret\n"
        ".globl fdivide\n"
        "fdivide:\n"                 /* 1.0 / 0.0 with divide-by-zero unmasked */
        "  subq $8, %rsp\n"
        "  stmxcsr (%rsp)\n"
        "  andl $0xfffffdff, (%rsp)\n"
        "  ldmxcsr (%rsp)\n"
        "  addq $8, %rsp\n"
        "  movl $1, %eax\n"
        "  cvtsi2sd %eax, %xmm1\n"
        "  xorpd %xmm0, %xmm0\n"
        "fdivide_at:\n"
        "  divsd %xmm0, %xmm1\n"      /* 4 bytes: f2 0f 5e c8 */
        "  movl $5, %eax\n"
        "  ret\n"
        ".globl breakpoint\n"
        "breakpoint:\n"
        "  movl $40, %eax\n"
        "  int3\n"
        "  addl $2, %eax\n"
        "  ret\n");
int illegal(void);
int fdivide(void);
int breakpoint(void);
/* The Windows build calls with the Microsoft convention: shims give both
 * the System V registers the assembly reads. */
#ifdef _WIN32
__asm__(".globl divide_ms\n"
        "divide_ms:\n"
        "  pushq %rdi\n  pushq %rsi\n"
        "  movl %ecx, %edi\n  movl %edx, %esi\n"
        "  call divide\n"
        "  popq %rsi\n  popq %rdi\n  ret\n"
        ".globl load_ms\n"
        "load_ms:\n"
        "  pushq %rdi\n"
        "  movq %rcx, %rdi\n"
        "  call load_from\n"
        "  popq %rdi\n  ret\n");
int store_null(void);
int divide_ms(int, int);
unsigned long long load_ms(void *);
#define DIVIDE(a, b) divide_ms(a, b)
#define LOAD(p) load_ms(p)
#else
int store_null(void);
int divide(int, int);
unsigned long long load_from(void *);
#define DIVIDE(a, b) divide(a, b)
#define LOAD(p) load_from(p)
#endif

static unsigned long long cell[4];

/* Recursion without end (the array keeps each frame and the call from
 * being optimised away). */
static volatile int forever = 1;
__attribute__((noinline)) static int recurse(int n) {
    volatile char pad[256];
    pad[0] = (char)n;
    if (forever)
        return recurse(n + pad[0]) + pad[0];
    return n;
}
static int seen;

/* The vectored handler: a null write is redirected to `cell` (RAX is the
 * base register), a divide by zero is skipped with a result of -1. */
static int fix_first(const struct fault *f, unsigned long long *pc, unsigned long long *rax,
                     unsigned long long *rcx) {
    seen++;
    if (f->kind == ACCESS && f->addr == 0x10) {
        printf("first handler: access violation, %s at 0x%llx\n", f->write ? "write" : "read",
               f->addr);
        *rax = (unsigned long long)cell;
        return 1;
    }
    if (f->kind == DIVIDE) {
        printf("first handler: integer divide error\n");
        *pc += 2;
        *rax = (unsigned long long)-1;
        return 1;
    }
    if (f->kind == ILLEGAL) {
        printf("first handler: illegal instruction\n");
        *pc += 2;
        return 1;
    }
    if (f->kind == FLOATING) {
        printf("first handler: floating-point divide by zero, masks it\n");
        *fault_mxcsr |= 0x200;
        *pc += 4;
        return 1;
    }
    if (f->kind == BREAKPOINT) {
        printf("first handler: breakpoint\n");
        return 1;
    }
    printf("first handler: passes it on\n");
    return 0;
}

/* The last-chance handler: a read from a bad address gets a value. */
static int fix_last(const struct fault *f, unsigned long long *pc, unsigned long long *rax,
                    unsigned long long *rcx) {
    seen++;
    if (f->kind == ACCESS) {
        printf("last handler: access violation, %s at 0x%llx\n", f->write ? "write" : "read",
               f->addr);
        *pc += 3;
        *rax = 0x5eed;
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "crash") == 0) {
        printf("writing through a null pointer\n");
        fflush(stdout);
        store_null();
        printf("survived?\n");
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "recurse") == 0) {
        printf("recursing without end\n");
        fflush(stdout);
        printf("%d\n", recurse(argc));
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "float") == 0) {
        printf("dividing 1.0 by 0.0, unmasked\n");
        fflush(stdout);
        printf("%d\n", fdivide());
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "divide") == 0) {
        printf("dividing by zero\n");
        fflush(stdout);
        printf("%d\n", DIVIDE(argc, argc - 2));
        return 1;
    }
    first_fixer = fix_first;
    last_fixer = fix_last;
    install();
    int v = store_null();
    printf("store_null returned 0x%x, cell holds 0x%llx\n", v, cell[2]);
    printf("7 / 0 gave %d\n", DIVIDE(7, argc - 1));
    printf("84 / 2 gave %d\n", DIVIDE(84, argc + 1));
    printf("INT_MIN / -1 gave %d\n", DIVIDE(-2147483647 - argc, -argc));
    unsigned long long r = LOAD((void *)0x1000);
    printf("load from 0x1000 gave 0x%llx\n", r);
    printf("illegal() gave %d\n", illegal());
    printf("breakpoint() gave %d\n", breakpoint());
    printf("fdivide() gave %d\n", fdivide());
    printf("handlers ran %d times\n", seen);
    uninstall();
    return 0;
}
