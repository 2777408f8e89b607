/* munmap a huge range that holds nothing of this program natively, then
 * carry on. Under urun, urun's own binary and heap may live in that range:
 * urun must keep them (the guest may only unmap its own memory) and the guest
 * must see what it would see natively (munmap succeeds, nothing of its own is
 * gone).
 *
 * Natively a static non-PIE binary sits at 0x400000 with its stack and mmaps
 * above 0x7f00_0000_0000, so 0x5000_0000_0000..0x7f00_0000_0000 is empty. A
 * static PIE binary or its brk heap can land inside that range, and so can a
 * dynamic binary's shared libraries and the vDSO (with ASLR, mmap_rnd_bits
 * 28, the mmap base falls up to 1 TiB below the stack, sometimes under
 * 0x7f00_0000_0000): so we leave a 4 GiB window around each address the
 * program owns (its image, brk heap, stack, a malloc'd block) and around every
 * mapping /proc/self/maps lists (under urun: the guest's view, which leaves
 * out urun's own memory), and unmap the rest. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <elf.h>
#include <link.h>

extern const ElfW(Ehdr) __ehdr_start;

#define LO 0x500000000000ull
#define HI 0x7f0000000000ull   /* LO + 0x2f0000000000 */
#define WINDOW (4ull << 30)

#define MAX_KEEP 512

/* Ranges [lo, hi) to keep: an owned address (lo == hi) or a mapping. */
struct range {
    uint64_t lo, hi;
};

static int cmp_range(const void *a, const void *b)
{
    uint64_t x = ((const struct range *)a)->lo, y = ((const struct range *)b)->lo;
    return (x > y) - (x < y);
}

static char maps[1 << 16];

/* Append the mappings of /proc/self/maps to keep[n..]; returns the new n. */
static int read_maps(struct range *keep, int n)
{
    int fd = open("/proc/self/maps", O_RDONLY);
    if (fd < 0)
        return n;
    size_t len = 0;
    ssize_t got;
    while (len < sizeof maps - 1 && (got = read(fd, maps + len, sizeof maps - 1 - len)) > 0)
        len += (size_t)got;
    close(fd);
    maps[len] = 0;
    for (char *line = maps; *line && n < MAX_KEEP;) {
        char *end;
        uint64_t lo = strtoull(line, &end, 16);
        if (*end == '-') {
            uint64_t hi = strtoull(end + 1, &end, 16);
            keep[n++] = (struct range){lo, hi};
        }
        char *nl = strchr(line, '\n');
        if (!nl)
            break;
        line = nl + 1;
    }
    return n;
}

int main(void)
{
    char *block = malloc(1000);
    strcpy(block, "heap block");
    int on_stack = 7;
    printf("before: %s %d\n", block, on_stack);
    fflush(stdout);

    static struct range keep[MAX_KEEP];
    uint64_t own[4] = {
        (uint64_t)&__ehdr_start,
        (uint64_t)syscall(SYS_brk, 0),
        (uint64_t)&on_stack,
        (uint64_t)block,
    };
    int n = 0;
    for (int i = 0; i < 4; i++)
        keep[n++] = (struct range){own[i], own[i]};
    n = read_maps(keep, n);
    qsort(keep, (size_t)n, sizeof keep[0], cmp_range);

    /* Unmap [LO, HI) minus a window around each kept range. */
    int calls = 0, failures = 0;
    uint64_t start = LO;
    for (int i = 0; i <= n && start < HI; i++) {
        uint64_t end = HI;
        uint64_t next = HI;
        if (i < n) {
            uint64_t w_lo = keep[i].lo > WINDOW ? (keep[i].lo - WINDOW) & ~0xfffull : 0;
            uint64_t w_hi = keep[i].hi > UINT64_MAX - WINDOW ? UINT64_MAX & ~0xfffull
                                                              : (keep[i].hi + WINDOW) & ~0xfffull;
            if (w_hi <= start)
                continue;
            if (w_lo >= HI) {
                i = n - 1; /* sorted: the rest of the range is free */
                continue;
            }
            end = w_lo < start ? start : w_lo;
            next = w_hi;
        }
        if (end > start) {
            calls++;
            if (munmap((void *)start, end - start) != 0) {
                perror("munmap");
                failures++;
            }
        }
        start = next;
    }
    /* Exercise what may have been hit: heap, stack, stdio, the image. */
    char *again = malloc(100000);
    memset(again, 'x', 100000);
    printf("after: %s %d %c\n", block, on_stack, again[99999]);
    printf("munmap failures: %d (calls made: %s)\n", failures, calls > 0 ? "yes" : "no");
    free(again);
    free(block);
    puts("survived");
    return failures ? 1 : 0;
}
