// Structured exceptions in C as clang compiles them for the MSVC target
// (__try/__except/__finally: scope tables for __C_specific_handler), with a
// Linux twin from the same source. The cases (bodies, filters, handlers,
// termination handlers) are shared; only two primitives differ:
// try_except(body, filter, handler) and try_finally(body, fin). On Windows
// they are __try blocks and faults are real access violations and divides
// by zero; on Linux a small dispatcher gives them the same semantics (the
// filters run first, innermost out, then the termination handlers as the
// stack unwinds, then the handler), with SIGSEGV and SIGFPE mapped to the
// Windows codes and raise_exception standing for RaiseException.
#include <stdarg.h>
#include <stddef.h>

#define EXECUTE_HANDLER 1
#define CONTINUE_SEARCH 0
#define CONTINUE_EXECUTION (-1)

typedef int (*Filter)(unsigned code, unsigned n, const unsigned long long *info);

#ifdef _MSC_VER
struct FILE;
struct FILE *__acrt_iob_func(unsigned);
int __stdio_common_vfprintf(unsigned long long, struct FILE *, const char *, void *, va_list);
_Noreturn void exit(int);
int _fltused = 0;
typedef struct EXCEPTION_RECORD {
    unsigned code, flags;
    struct EXCEPTION_RECORD *next;
    void *address;
    unsigned nparams;
    unsigned long long info[15];
} EXCEPTION_RECORD;
typedef struct {
    EXCEPTION_RECORD *rec;
    void *ctx;
} EXCEPTION_POINTERS;
__declspec(dllimport) void RaiseException(unsigned code, unsigned flags, unsigned n, const unsigned long long *args);

static int say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = __stdio_common_vfprintf(0, __acrt_iob_func(1), fmt, 0, ap);
    va_end(ap);
    return r;
}

static void raise_exception(unsigned code, unsigned n, const unsigned long long *args) {
    RaiseException(code, 0, n, args);
}

static int run_filter(Filter f, EXCEPTION_POINTERS *ep) {
    return f(ep->rec->code, ep->rec->nparams, ep->rec->info);
}

static void try_except(void (*body)(void), Filter filter, void (*handler)(void)) {
    __try {
        body();
    } __except (run_filter(filter, (EXCEPTION_POINTERS *)_exception_info())) {
        handler();
    }
}

static void try_finally(void (*body)(void), void (*fin)(int abnormal)) {
    __try {
        body();
    } __finally {
        fin(_abnormal_termination());
    }
}
#else
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define say printf

// The scopes active on this thread, innermost first.
struct scope {
    struct scope *outer;
    Filter filter;           // try_except
    void (*fin)(int);        // try_finally
    sigjmp_buf jb;
};
static struct scope *innermost;

static void raise_exception(unsigned code, unsigned n, const unsigned long long *args) {
    struct scope *s;
    for (s = innermost; s; s = s->outer) {
        if (!s->filter)
            continue;
        int r = s->filter(code, n, args);
        if (r == CONTINUE_EXECUTION)
            return;
        if (r == EXECUTE_HANDLER)
            break;
    }
    if (!s) {
        say("unhandled exception %08x\n", code);
        exit(1);
    }
    while (innermost != s) {
        struct scope *t = innermost;
        innermost = t->outer;
        if (t->fin)
            t->fin(1);
    }
    innermost = s->outer;
    siglongjmp(s->jb, 1);
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    if (sig == SIGSEGV) {
        unsigned long long info[2] = {1, (unsigned long long)si->si_addr};
        raise_exception(0xc0000005, 2, info);
    } else {
        raise_exception(0xc0000094, 0, NULL);
    }
}

static void try_except(void (*body)(void), Filter filter, void (*handler)(void)) {
    struct scope s = {innermost, filter, NULL, {{0}}};
    if (sigsetjmp(s.jb, 1)) {
        handler();
        return;
    }
    innermost = &s;
    body();
    innermost = s.outer;
}

static void try_finally(void (*body)(void), void (*fin)(int abnormal)) {
    struct scope s = {innermost, NULL, fin, {{0}}};
    innermost = &s;
    body();
    innermost = s.outer;
    fin(0);
}
#endif

static int *volatile nowhere;
static volatile int zero;
static volatile int result;

static int only_access_violation(unsigned code, unsigned n, const unsigned long long *info) {
    say("  filter: code %08x, %u parameters", code, n);
    if (code == 0xc0000005 && n >= 2)
        say(", write %llu, address %#llx", info[0], info[1]);
    say("\n");
    return code == 0xc0000005 ? EXECUTE_HANDLER : CONTINUE_SEARCH;
}

static int inspect(unsigned code, unsigned n, const unsigned long long *info) {
    say("  filter: code %08x, %u parameters:", code, n);
    for (unsigned i = 0; i < n; i++)
        say(" %llu", info[i]);
    say("\n");
    return (code & 0xffff0000) == 0xe0010000 ? EXECUTE_HANDLER : CONTINUE_SEARCH;
}

static int declines(unsigned code, unsigned n, const unsigned long long *info) {
    (void)n;
    (void)info;
    say("  inner filter declines %08x\n", code);
    return CONTINUE_SEARCH;
}

static int takes_all(unsigned code, unsigned n, const unsigned long long *info) {
    (void)n;
    (void)info;
    say("  outer filter takes %08x\n", code);
    return EXECUTE_HANDLER;
}

static int continues(unsigned code, unsigned n, const unsigned long long *info) {
    (void)n;
    (void)info;
    say("  filter continues execution after %08x\n", code);
    return CONTINUE_EXECUTION;
}

static void handled(void) { say("  handler runs\n"); }
static void never(void) { say("  wrong handler!\n"); }

static void null_write(void) {
    say("  writing through a null pointer\n");
    *nowhere = 1;
    say("  not reached\n");
}

static void raise_two(void) {
    unsigned long long args[2] = {7, 9};
    raise_exception(0xe0011234, 2, args);
    say("  not reached\n");
}

static void raise_other(void) { raise_exception(0xe0000002, 0, NULL); }
static void inner_declines(void) { try_except(raise_other, declines, never); }

static void fin(int abnormal) { say("  __finally runs, abnormal %d\n", abnormal); }
static void finally_around_raise(void) { try_finally(raise_two, fin); }
static void finally_around_fault(void) { try_finally(null_write, fin); }
static void quiet(void) { say("  body runs\n"); }

static void raise_and_go_on(void) {
    raise_exception(0xe0000003, 0, NULL);
    say("  RaiseException returned\n");
}

static void divide(void) {
    result = 10 / zero;
    say("  not reached\n");
}

static int divide_only(unsigned code, unsigned n, const unsigned long long *info) {
    (void)n;
    (void)info;
    say("  filter: code %08x\n", code);
    return code == 0xc0000094 ? EXECUTE_HANDLER : CONTINUE_SEARCH;
}

int main(void) {
#ifndef _MSC_VER
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);
#endif
    say("access violation:\n");
    try_except(null_write, only_access_violation, handled);
    say("RaiseException with parameters:\n");
    try_except(raise_two, inspect, handled);
    say("an inner filter declines:\n");
    try_except(inner_declines, takes_all, handled);
    say("__finally on the unwind of a RaiseException:\n");
    try_except(finally_around_raise, inspect, handled);
    say("__finally on the unwind of a fault:\n");
    try_except(finally_around_fault, only_access_violation, handled);
    say("__finally without an exception:\n");
    try_finally(quiet, fin);
    say("a filter continues execution:\n");
    try_except(raise_and_go_on, continues, never);
    say("divide by zero:\n");
    try_except(divide, divide_only, handled);
    say("done\n");
    return 5;
}

#ifdef _MSC_VER
void mainCRTStartup(void) { exit(main()); }
#endif
