/* One thread touches a page in a loop while another unmaps it: the
 * toucher's SIGSEGV handler must run (and siglongjmp out) every time, with
 * the faulting address in the page and SEGV_MAPERR, as natively. Under an
 * emulator that checks an access and then dereferences the page, the page
 * can vanish in between: urun must still turn that into the guest's
 * SIGSEGV, not crash itself (tests/races.rs).
 *
 * Rounds cycle through the kinds of access: loads, stores, locked
 * read-modify-writes and bulk copies (rep movs). The output is the same
 * on every run: one fault per round. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#define ROUNDS 100
#define KINDS 4

static char *page;
static sigjmp_buf jb;
static atomic_int round_ready; /* round number whose page is mapped */
static atomic_int touching;    /* round number the toucher is in */
static atomic_int caught;      /* round number whose fault was caught */
static volatile int wrong;     /* faults outside the page or not MAPERR */
static const char *kind_name[KINDS] = { "load", "store", "lock add", "copy" };
static int faults[KINDS];

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    char *a = si->si_addr;
    if (a < page || a >= page + 4096 || si->si_code != SEGV_MAPERR)
        wrong++;
    siglongjmp(jb, 1);
}

/* Touch the page until it faults, in the round's way. Unrolled, so that
 * the page can go away between two accesses of one straight-line block. */
static void touch(int kind) {
    volatile char *p = page;
    volatile uint64_t *q = (volatile uint64_t *)page;
    static char sink[4096];
    uint64_t sum = 0;
    for (unsigned i = 0;; i += 8) {
        unsigned j = i & 511;
        switch (kind) {
        case 0:
            sum += q[j] + q[j + 1] + q[j + 2] + q[j + 3] + q[j + 4] + q[j + 5] + q[j + 6] + q[j + 7];
            break;
        case 1:
            q[j] = i; q[j + 1] = i; q[j + 2] = i; q[j + 3] = i;
            q[j + 4] = i; q[j + 5] = i; q[j + 6] = i; q[j + 7] = i;
            break;
        case 2:
            __atomic_fetch_add((uint64_t *)&q[j], 1, __ATOMIC_SEQ_CST);
            __atomic_fetch_add((uint64_t *)&q[j + 1], 1, __ATOMIC_SEQ_CST);
            __atomic_fetch_add((uint64_t *)&q[j + 2], 1, __ATOMIC_SEQ_CST);
            __atomic_fetch_add((uint64_t *)&q[j + 3], 1, __ATOMIC_SEQ_CST);
            break;
        default: {
            const volatile char *src = p;
            char *dst = sink;
            unsigned long n = 4096;
            __asm__ volatile("rep movsb" : "+S"(src), "+D"(dst), "+c"(n) : : "memory");
            break;
        }
        }
    }
    (void)sum;
}

static void *toucher(void *arg) {
    (void)arg;
    /* volatile: siglongjmp comes back into this frame. */
    for (volatile int r = 0; r < ROUNDS; r++) {
        while (atomic_load(&round_ready) != r)
            sched_yield();
        if (sigsetjmp(jb, 1) == 0) {
            atomic_store(&touching, r);
            touch(r % KINDS);
        }
        faults[r % KINDS]++;
        atomic_store(&caught, r);
    }
    return NULL;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0) {
        perror("sigaction");
        return 1;
    }
    page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    atomic_store(&touching, -1);
    atomic_store(&caught, -1);
    atomic_store(&round_ready, 0);
    pthread_t t;
    if (pthread_create(&t, NULL, toucher, NULL) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 1;
    }
    for (int r = 0; r < ROUNDS; r++) {
        while (atomic_load(&touching) != r)
            sched_yield();
        /* Let the toucher get going, then pull the page from under it. */
        for (volatile int spin = 0; spin < (r % 7) * 1000; spin++)
            ;
        if (munmap(page, 4096) != 0) {
            perror("munmap");
            return 1;
        }
        while (atomic_load(&caught) != r)
            sched_yield();
        if (r + 1 < ROUNDS) {
            char *again = mmap(page, 4096, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            if (again != page) {
                perror("mmap again");
                return 1;
            }
            atomic_store(&round_ready, r + 1);
        }
    }
    pthread_join(t, NULL);
    for (int k = 0; k < KINDS; k++)
        printf("%-8s: %d rounds, %d faults caught by the handler\n", kind_name[k], ROUNDS / KINDS, faults[k]);
    printf("faults outside the page or not SEGV_MAPERR: %d\n", wrong);
    return 0;
}
