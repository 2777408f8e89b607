/* Asynchronous signals reach the guest wherever its code is running, and
 * the code it interrupted continues with every register as it was.
 *
 *   sigpoints spin   SIGALRM (a one-shot timer) sets a flag that a loop
 *                    spins on: an empty loop, a loop calling a function, a
 *                    loop calling through a pointer, a loop of two blocks
 *   sigpoints storm  a second thread sends SIGUSR1 to the main thread
 *                    N times, waiting for each to be handled, while the
 *                    main thread computes (loops, calls, indirect calls, a
 *                    jump table, recursion, SSE); every pass of the
 *                    computation must give the same checksum, and the
 *                    handler checks that the interrupted pc is the
 *                    program's own code
 *
 * The output is deterministic (no timings, no counts that depend on where
 * the signals land). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <ucontext.h>
#include <unistd.h>

static volatile sig_atomic_t flag;

static void on_alarm(int sig)
{
    (void)sig;
    flag = 1;
}

static void arm(void)
{
    struct itimerval it = {{0, 0}, {0, 20000}};
    flag = 0;
    if (setitimer(ITIMER_REAL, &it, NULL)) {
        perror("setitimer");
        exit(1);
    }
}

static __attribute__((noinline)) int is_set(void)
{
    return flag;
}

static int (*volatile is_set_ptr)(void) = is_set;

static int spin(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    arm();
    while (!flag)
        ;
    puts("spin: empty loop woke");

    arm();
    while (!is_set())
        ;
    puts("spin: loop calling a function woke");

    arm();
    while (!is_set_ptr())
        ;
    puts("spin: loop calling through a pointer woke");

    arm();
    volatile unsigned long n = 0;
    for (;;) {
        if (flag)
            break;
        if (n & 1)
            n += 3;
        else
            n += 1;
    }
    puts("spin: loop of several blocks woke");
    return 0;
}

/* ----- storm ----- */

#define SIGNALS 1000

static pthread_t main_thread;
static volatile int started, done;
static volatile long handled;
static volatile long bad_pc;
extern char __executable_start[], etext[];

static void on_usr1(int sig, siginfo_t *si, void *uc_)
{
    (void)sig;
    (void)si;
    ucontext_t *uc = uc_;
    uintptr_t pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    if (pc < (uintptr_t)__executable_start || pc >= (uintptr_t)etext)
        bad_pc++;
    /* Disturb what the interrupted code may hold: flags, SSE, GPRs. */
    volatile double d = 1.0;
    for (int i = 0; i < 5; i++)
        d = d * 1.5 + (double)i;
    volatile unsigned x = 0x12345678;
    x = (x << 3) ^ (x >> 5);
    handled++;
}

static __attribute__((noinline)) uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v;
    h *= 0x100000001b3ull;
    return h ^ (h >> 29);
}

static __attribute__((noinline)) uint64_t op_add(uint64_t a, uint64_t b)
{
    return a + b;
}
static __attribute__((noinline)) uint64_t op_xor(uint64_t a, uint64_t b)
{
    return a ^ (b << 1);
}
static __attribute__((noinline)) uint64_t op_rot(uint64_t a, uint64_t b)
{
    return (a << (b & 31)) | (a >> (64 - (b & 31) - 1) >> 1);
}
static __attribute__((noinline)) uint64_t op_sub(uint64_t a, uint64_t b)
{
    return a - (b | 1);
}

static uint64_t (*const volatile ops[4])(uint64_t, uint64_t) = {op_add, op_xor, op_rot, op_sub};

static __attribute__((noinline)) uint64_t fib(int n)
{
    return n < 2 ? (uint64_t)n : fib(n - 1) + fib(n - 2);
}

static __attribute__((noinline)) uint64_t table(uint64_t x)
{
    switch (x % 7) {
    case 0:
        return x * 3;
    case 1:
        return x + 11;
    case 2:
        return x ^ 0x5555;
    case 3:
        return x >> 2;
    case 4:
        return x * x;
    case 5:
        return ~x;
    default:
        return x - 7;
    }
}

static uint64_t work(void)
{
    uint64_t h = 0xcbf29ce484222325ull;
    double acc = 0.5;
    for (uint64_t i = 0; i < 20000; i++) {
        h = mix(h, ops[i & 3](h, i));
        h = mix(h, table(h + i));
        acc = acc * 1.0000001 + (double)(i & 15) / 3.0;
        if (h & 0x100)
            h += (uint64_t)acc;
        else
            h -= i;
        if ((i & 1023) == 0)
            h = mix(h, fib(12));
    }
    return mix(h, (uint64_t)(acc * 1000.0));
}

static void *sender(void *arg)
{
    (void)arg;
    while (!started)
        ;
    for (long i = 0; i < SIGNALS; i++) {
        pthread_kill(main_thread, SIGUSR1);
        while (handled <= i)
            sched_yield();
    }
    done = 1;
    return NULL;
}

static int storm(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    main_thread = pthread_self();

    uint64_t want = work();
    pthread_t t;
    if (pthread_create(&t, NULL, sender, NULL)) {
        fputs("pthread_create failed\n", stderr);
        return 1;
    }
    long passes = 0, wrong = 0;
    started = 1;
    while (!done) {
        if (work() != want)
            wrong++;
        passes++;
    }
    pthread_join(t, NULL);
    printf("storm: checksum %016llx\n", (unsigned long long)want);
    printf("storm: %ld signals handled, %ld passes gave another checksum, %ld pcs outside the program\n",
           (long)handled, wrong, (long)bad_pc);
    return passes > 0 && wrong == 0 && bad_pc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "spin"))
        return spin();
    if (argc == 2 && !strcmp(argv[1], "storm"))
        return storm();
    fputs("usage: sigpoints spin|storm\n", stderr);
    return 2;
}
