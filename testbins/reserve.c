/* Memory the guest released (munmap, mremap, a shrinking brk) is unmapped
 * memory to it: faults are SIGSEGV with SEGV_MAPERR at the address, calls
 * on it fail as on unmapped memory, MAP_FIXED may reuse it, and a loop of
 * many mmap/munmap pairs runs as natively. Compared natively vs urun. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096UL

static sigjmp_buf jb;
static volatile int got_code;
static volatile uintptr_t got_addr;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    got_code = si->si_code;
    got_addr = (uintptr_t)si->si_addr;
    siglongjmp(jb, 1);
}

/* Touch `p` (read or write); report the fault's si_code and whether
 * si_addr is `p`. */
static void probe(const char *what, volatile char *p, int write) {
    got_code = 0;
    got_addr = 0;
    if (sigsetjmp(jb, 1) == 0) {
        if (write)
            *p = 1;
        else
            (void)*p;
        printf("%s: no fault\n", what);
    } else {
        printf("%s: SIGSEGV %s si_addr %s\n", what,
               got_code == SEGV_MAPERR ? "SEGV_MAPERR" : got_code == SEGV_ACCERR ? "SEGV_ACCERR" : "other",
               got_addr == (uintptr_t)p ? "right" : "wrong");
    }
}

static char *map(void *at, size_t len, int flags) {
    return mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
}

/* /proc/self/maps, read without allocating (an allocation could land in
 * the hole being looked at). */
static char mapsbuf[1 << 20];

static size_t read_maps(void) {
    int fd = open("/proc/self/maps", O_RDONLY);
    size_t n = 0;
    ssize_t r;
    if (fd < 0)
        return 0;
    while (n < sizeof mapsbuf - 1 && (r = read(fd, mapsbuf + n, sizeof mapsbuf - 1 - n)) > 0)
        n += (size_t)r;
    close(fd);
    mapsbuf[n] = 0;
    return n;
}

/* True when /proc/self/maps lists a mapping holding `addr`. */
static int maps_has(uintptr_t addr) {
    read_maps();
    for (char *l = mapsbuf; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
        unsigned long s = strtoul(l, 0, 16), e = strtoul(strchr(l, '-') + 1, 0, 16);
        if (s <= addr && addr < e)
            return 1;
    }
    return 0;
}

static int maps_lines(void) {
    int n = 0;
    read_maps();
    for (char *l = mapsbuf; *l; l++)
        n += *l == '\n';
    return n;
}

static const char *rc(int r) {
    static char buf[32];
    if (r == 0)
        return "ok";
    snprintf(buf, sizeof buf, "errno %d", errno);
    return buf;
}
#define RC(call) rc(call)

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, 0);

    /* Access after munmap. */
    char *a = map(0, 4 * PG, 0);
    if (a == MAP_FAILED)
        return 1;
    memset(a, 7, 4 * PG);
    printf("munmap middle: %s\n", RC(munmap(a + PG, PG)));
    probe("read freed page", a + PG + 123, 0);
    probe("write freed page", a + PG + 8, 1);
    probe("neighbour", a + 2 * PG, 0);
    printf("maps shows freed page: %d, neighbour: %d\n", maps_has((uintptr_t)a + PG), maps_has((uintptr_t)a + 2 * PG));

    /* Calls on the freed page, as on unmapped memory. */
    unsigned char vec[4];
    printf("munmap again: %s\n", RC(munmap(a + PG, PG)));
    printf("mprotect freed: %s\n", RC(mprotect(a + PG, PG, PROT_READ)));
    printf("msync freed: %s\n", RC(msync(a + PG, PG, MS_SYNC)));
    printf("madvise freed: %s\n", RC(madvise(a + PG, PG, MADV_DONTNEED)));
    printf("mincore freed: %s\n", RC(mincore(a + PG, PG, vec)));

    /* MAP_FIXED and MAP_FIXED_NOREPLACE into the freed range. */
    char *f = map(a + PG, PG, MAP_FIXED_NOREPLACE);
    printf("noreplace into freed: %s, fresh %d\n", f == a + PG ? "same address" : "elsewhere", f != MAP_FAILED && f[5] == 0);
    errno = 0;
    char *g = map(a + PG, 2 * PG, MAP_FIXED_NOREPLACE);
    printf("noreplace over mapped: %s\n", g == MAP_FAILED ? (errno == EEXIST ? "EEXIST" : "other error") : "mapped");
    munmap(a, 4 * PG);
    probe("read after whole munmap", a + 3 * PG, 0);
    char *h = map(a, 4 * PG, MAP_FIXED);
    printf("fixed into freed: %s, fresh %d\n", h == a ? "same address" : "elsewhere", h != MAP_FAILED && h[3 * PG] == 0);

    /* mremap: shrink, access past the end, grow, move. */
    char *m = mremap(h, 4 * PG, 2 * PG, 0);
    printf("mremap shrink: %s\n", m == h ? "in place" : "moved");
    probe("read shrunk tail", h + 3 * PG, 0);
    h[PG] = 42;
    char *dst = map(0, 8 * PG, 0);
    munmap(dst, 8 * PG);
    char *mv = mremap(h, 2 * PG, 3 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst + 2 * PG);
    printf("mremap fixed into freed: %s, kept %d, grown zero %d\n", mv == dst + 2 * PG ? "there" : "elsewhere",
           mv != MAP_FAILED && mv[PG] == 42, mv != MAP_FAILED && mv[2 * PG] == 0);
    probe("read old mremap source", h + PG, 0);
    probe("write below mremap target", dst + PG, 1);

    /* A loop of mmap/munmap pairs of varied sizes. */
    int n = argc > 1 ? atoi(argv[1]) : 100000;
    int before = maps_lines();
    char *keep[8] = {0};
    for (int i = 0; i < n; i++) {
        size_t len = PG * (1 + (size_t)(i * 7919) % 61);
        char *p = map(0, len, 0);
        if (p == MAP_FAILED) {
            printf("loop: mmap failed at %d: %s\n", i, strerror(errno));
            return 1;
        }
        p[0] = 1;
        p[len - 1] = 2;
        /* Some stay mapped a while, so freed ranges are fragmented. */
        int k = i % 8;
        if (keep[k])
            munmap(keep[k], PG);
        keep[k] = map(0, PG, 0);
        if (munmap(p, len) != 0) {
            printf("loop: munmap failed at %d\n", i);
            return 1;
        }
    }
    int after = maps_lines();
    printf("loop of %d: maps grew by at most 16: %d\n", n, after - before <= 16);
    if (getenv("RESERVE_PAUSE")) {
        fprintf(stderr, "paused\n");
        pause();
    }
    return 0;
}
