/* brk and mmap use: raw brk growth and shrink, malloc of many sizes, realloc,
 * anonymous mmap/munmap/mprotect, MAP_FIXED over our own mapping, mremap
 * growth. Prints results, never addresses. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int failures;

static void check(const char *what, int ok)
{
    printf("%s: %s\n", what, ok ? "ok" : "FAIL");
    if (!ok)
        failures++;
}

static int filled_with(const unsigned char *p, size_t n, unsigned char c)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != c)
            return 0;
    return 1;
}

static void brk_tests(void)
{
    /* Raw brk, not sbrk: musl's sbrk only supports sbrk(0). Done first and
     * undone before malloc runs, so libc's own idea of the break holds. */
    uintptr_t cur = (uintptr_t)syscall(SYS_brk, 0);
    check("brk(0) nonzero", cur != 0);
    uintptr_t want = cur + 10 * 4096 + 123;
    uintptr_t got = (uintptr_t)syscall(SYS_brk, want);
    check("brk grows", got == want);
    memset((void *)cur, 0xab, want - cur);
    check("brk memory usable", filled_with((void *)cur, want - cur, 0xab));
    got = (uintptr_t)syscall(SYS_brk, cur + 5 * 4096);
    check("brk shrinks", got == cur + 5 * 4096);
    got = (uintptr_t)syscall(SYS_brk, want);
    check("brk regrows", got == want);
    /* Memory given back by a shrink comes back zeroed. */
    check("regrown brk memory zeroed", filled_with((void *)(cur + 6 * 4096), 4096, 0));
    got = (uintptr_t)syscall(SYS_brk, cur);
    check("brk back to start", got == cur);
}

static void malloc_tests(void)
{
    enum { N = 400 };
    static unsigned char *blocks[N];
    static size_t sizes[N];
    uint32_t s = 777;
    for (int i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u;
        size_t sz;
        switch (i % 4) {
        case 0: sz = s % 64; break;                    /* tiny */
        case 1: sz = s % 4096; break;                  /* small */
        case 2: sz = 4096 + s % 60000; break;          /* medium */
        default: sz = (i % 40 == 3) ? 150000 + s % 200000 : s % 300; break; /* some mmap-sized */
        }
        sizes[i] = sz;
        blocks[i] = malloc(sz ? sz : 1);
        if (!blocks[i]) {
            check("malloc", 0);
            return;
        }
        memset(blocks[i], (unsigned char)i, sz);
    }
    int intact = 1;
    for (int i = 0; i < N; i++)
        intact &= filled_with(blocks[i], sizes[i], (unsigned char)i);
    check("malloc 400 blocks intact", intact);

    /* Free every third, reallocate with new sizes, then realloc the rest. */
    for (int i = 0; i < N; i += 3) {
        free(blocks[i]);
        sizes[i] = (sizes[i] * 3) % 5000;
        blocks[i] = malloc(sizes[i] + 1);
        memset(blocks[i], (unsigned char)i, sizes[i]);
    }
    for (int i = 1; i < N; i += 3) {
        size_t old = sizes[i];
        sizes[i] = old * 2 + 10;
        blocks[i] = realloc(blocks[i], sizes[i]);
        intact &= filled_with(blocks[i], old, (unsigned char)i);
        memset(blocks[i], (unsigned char)i, sizes[i]);
    }
    check("realloc keeps contents", intact);
    intact = 1;
    for (int i = 0; i < N; i++)
        intact &= filled_with(blocks[i], sizes[i], (unsigned char)i);
    check("all blocks intact after churn", intact);
    for (int i = N - 1; i >= 0; i--)
        free(blocks[i]);

    int *z = calloc(100000, sizeof *z);
    int zero = 1;
    for (int i = 0; i < 100000; i++)
        zero &= z[i] == 0;
    check("calloc zeroed", zero);
    free(z);

    /* Big allocation: mmap-backed in both glibc and musl. */
    size_t big = 8u << 20;
    unsigned char *p = malloc(big);
    check("malloc 8 MiB", p != NULL);
    if (p) {
        for (size_t i = 0; i < big; i += 4096)
            p[i] = (unsigned char)(i >> 12);
        int ok = 1;
        for (size_t i = 0; i < big; i += 4096)
            ok &= p[i] == (unsigned char)(i >> 12);
        check("8 MiB block usable", ok);
        free(p);
    }
}

static void mmap_tests(void)
{
    const size_t pg = 4096;
    unsigned char *m = mmap(NULL, 16 * pg, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check("mmap anonymous 16 pages", m != MAP_FAILED);
    if (m == MAP_FAILED)
        return;
    check("mmap memory zeroed", filled_with(m, 16 * pg, 0));
    check("mmap page aligned", ((uintptr_t)m & (pg - 1)) == 0);
    memset(m, 0x5a, 16 * pg);
    check("mprotect read-only", mprotect(m, 4 * pg, PROT_READ) == 0);
    check("read-only pages readable", filled_with(m, 4 * pg, 0x5a));
    check("mprotect back to read-write", mprotect(m, 4 * pg, PROT_READ | PROT_WRITE) == 0);
    m[0] = 1;
    check("writable again", m[0] == 1);
    check("munmap middle page", munmap(m + 8 * pg, pg) == 0);
    check("munmap unaligned fails", munmap(m + 1, pg) != 0);

    unsigned char *f = mmap(m + 8 * pg, pg, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    check("MAP_FIXED refills the hole", f == m + 8 * pg && filled_with(f, pg, 0));
    unsigned char *g = mmap(m + 2 * pg, 2 * pg, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    check("MAP_FIXED over live pages zeroes them", g == m + 2 * pg && filled_with(g, 2 * pg, 0));
    check("neighbours untouched", filled_with(m + 4 * pg, 4 * pg, 0x5a));

    unsigned char *r = mremap(m, 16 * pg, 64 * pg, MREMAP_MAYMOVE);
    check("mremap grow", r != MAP_FAILED);
    if (r != MAP_FAILED) {
        check("mremap keeps contents", filled_with(r + 4 * pg, 4 * pg, 0x5a) && r[0] == 1);
        check("mremap new part zeroed", filled_with(r + 16 * pg, 48 * pg, 0));
        memset(r + 16 * pg, 7, 48 * pg);
        unsigned char *s = mremap(r, 64 * pg, 8 * pg, 0);
        check("mremap shrink in place", s == r);
        check("munmap remapped", munmap(r, 8 * pg) == 0);
    }
    check("munmap of nothing succeeds", munmap(m, 16 * pg) == 0);
    void *bad = mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check("mmap length 0 fails", bad == MAP_FAILED);
}

int main(void)
{
    /* A static stdout buffer: a malloc'd one could live in the brk heap
     * that brk_tests shrinks (it does with dynamic glibc). */
    static char outbuf[8192];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    brk_tests();
    malloc_tests();
    mmap_tests();
    puts(failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
