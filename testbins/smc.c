/* Code written by one thread is seen by the others, and by the writer.
 *
 *   smc rwx       thread A keeps calling a function in an RWX page; thread
 *                 B rewrites the constant it returns (a 4-byte store)
 *   smc mprotect  B flips the page to RW, writes, and back to RX (W^X,
 *                 as JITs do), while A waits; then A calls again
 *   smc syscall   the same, but B rewrites the code with read(2) from a
 *                 pipe: the kernel writes it
 *   smc single    one thread: code and its data in one page, and code
 *                 rewritten then called at once
 *   smc regain    one thread: code called while its page is read-only,
 *                 then the page made writable (still executable) and the
 *                 code rewritten with a plain store, then called again
 *
 * A calls until it sees the new value, for at most LIMIT calls (natively
 * a few thousand at most), so the output is deterministic: one line per
 * round, and "never saw" if the new code was not seen. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ROUNDS 20
#define LIMIT 20000000L

typedef int (*fn_t)(void);

static unsigned char *page;
static const char *mode;
static volatile int seen; /* the last value A saw */
static volatile int go;   /* mprotect mode: the value B has written */
static volatile int failed;

/* nop; nop; nop; mov eax, imm32; ret: the immediate is 4-byte aligned at
 * offset 4, so one aligned store rewrites it. */
static void emit(unsigned char *p, uint32_t v)
{
    unsigned char code[16] = {0x90, 0x90, 0x90, 0xb8, 0, 0, 0, 0, 0xc3};
    memcpy(code + 4, &v, 4);
    memcpy(p, code, 9);
}

static void rewrite(uint32_t v)
{
    if (!strcmp(mode, "rwx")) {
        __atomic_store_n((uint32_t *)(page + 4), v, __ATOMIC_RELEASE);
    } else if (!strcmp(mode, "mprotect")) {
        if (mprotect(page, 4096, PROT_READ | PROT_WRITE))
            perror("mprotect rw");
        __atomic_store_n((uint32_t *)(page + 4), v, __ATOMIC_RELEASE);
        if (mprotect(page, 4096, PROT_READ | PROT_EXEC))
            perror("mprotect rx");
    } else {
        int fds[2];
        if (pipe(fds)) {
            perror("pipe");
            exit(1);
        }
        if (write(fds[1], &v, 4) != 4 || read(fds[0], page + 4, 4) != 4)
            perror("pipe io");
        close(fds[0]);
        close(fds[1]);
    }
}

static void *caller(void *arg)
{
    fn_t f = (fn_t)(void *)page;
    int wait = !strcmp(mode, "mprotect");
    for (int want = 1; want <= ROUNDS; want++) {
        long n = 0;
        int got;
        /* W^X: the page is not executable while B writes, so A waits. */
        while (wait && want > 1 && __atomic_load_n(&go, __ATOMIC_ACQUIRE) != want)
            usleep(100);
        while ((got = f()) != want && ++n < LIMIT)
            ;
        if (got != want) {
            printf("round %d: never saw %d (still %d after %ld calls)\n", want, want, got, n);
            failed = 1;
            __atomic_store_n(&seen, -1, __ATOMIC_RELEASE);
            return NULL;
        }
        printf("round %d: A saw %d\n", want, got);
        __atomic_store_n(&seen, want, __ATOMIC_RELEASE);
    }
    return NULL;
}

static int cross_thread(void)
{
    int prot = !strcmp(mode, "mprotect") ? PROT_READ | PROT_EXEC : PROT_READ | PROT_WRITE | PROT_EXEC;
    page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    emit(page, 1);
    if (mprotect(page, 4096, prot)) {
        perror("mprotect");
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, caller, NULL);
    for (int v = 2; v <= ROUNDS; v++) {
        /* Wait until A has run the code that returns v - 1. */
        int s;
        while ((s = __atomic_load_n(&seen, __ATOMIC_ACQUIRE)) != v - 1 && s >= 0)
            usleep(100);
        if (s < 0)
            break;
        rewrite(v);
        __atomic_store_n(&go, v, __ATOMIC_RELEASE);
    }
    pthread_join(t, NULL);
    printf("%s: %s\n", mode, failed ? "FAILED" : "every rewrite seen");
    return failed;
}

/* One thread. A counter in the same page as the code that bumps it:
 *   mov eax, [rip+0x100-6]; inc eax; mov [rip+...], eax; ret
 * then code rewritten and called at once, many times. */
static int single(void)
{
    unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    /* at 0x00: mov eax, [rip + d1]   8b 05 d1    (next ip 0x06)
     *          inc eax               ff c0       (0x08)
     *          mov [rip + d2], eax   89 05 d2    (next ip 0x0e)
     *          ret                   c3
     * counter at 0x800 */
    unsigned char code[] = {0x8b, 0x05, 0, 0, 0, 0, 0xff, 0xc0, 0x89, 0x05, 0, 0, 0, 0, 0xc3};
    int32_t d1 = 0x800 - 0x06, d2 = 0x800 - 0x0e;
    memcpy(code + 2, &d1, 4);
    memcpy(code + 10, &d2, 4);
    memcpy(p, code, sizeof code);
    fn_t bump = (fn_t)(void *)p;
    int last = 0;
    for (int i = 0; i < 100000; i++)
        last = bump();
    printf("single: counter in the code page reached %d\n", last);
    /* Rewrite a function and call it at once, over and over. */
    unsigned char *g = p + 0x400;
    fn_t gf = (fn_t)(void *)g;
    long sum = 0;
    int bad = 0;
    for (uint32_t v = 0; v < 20000; v++) {
        emit(g, v);
        int r = gf();
        sum += r;
        if (r != (int)v)
            bad++;
    }
    printf("single: rewritten code returned the new value every time: %s (sum %ld)\n", bad ? "no" : "yes", sum);
    return bad != 0;
}

/* Code translated while read-only, rewritten once its page is writable
 * again without losing PROT_EXEC. */
static int regain(void)
{
    unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    fn_t f = (fn_t)(void *)p;
    int bad = 0;
    for (uint32_t v = 1; v <= ROUNDS; v++) {
        emit(p, v);
        if (mprotect(p, 4096, PROT_READ | PROT_EXEC))
            perror("mprotect rx");
        int a = 0;
        for (int i = 0; i < 1000; i++)
            a = f();
        if (mprotect(p, 4096, PROT_READ | PROT_WRITE | PROT_EXEC))
            perror("mprotect rwx");
        emit(p, v * 100);
        int b = f();
        printf("regain %u: read-only %d, rewritten %d\n", v, a, b);
        bad += a != (int)v || b != (int)(v * 100);
    }
    return bad != 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    mode = argc > 1 ? argv[1] : "rwx";
    if (!strcmp(mode, "single"))
        return single();
    if (!strcmp(mode, "regain"))
        return regain();
    if (strcmp(mode, "rwx") && strcmp(mode, "mprotect") && strcmp(mode, "syscall")) {
        fprintf(stderr, "usage: smc rwx|mprotect|syscall|single|regain\n");
        return 2;
    }
    return cross_thread();
}
