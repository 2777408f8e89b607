/* munmap a huge range that holds nothing of this program natively, then
 * carry on. Under urun, urun's own binary and heap may live in that range:
 * urun must keep them (the guest may only unmap its own memory) and the guest
 * must see what it would see natively (munmap succeeds, nothing of its own is
 * gone).
 *
 * Natively a static non-PIE binary sits at 0x400000 with its stack and mmaps
 * above 0x7f00_0000_0000, so 0x5000_0000_0000..0x7f00_0000_0000 is empty. A
 * static PIE binary or its brk heap can land inside that range, so we leave a
 * 4 GiB window around each address the program owns (its image, brk heap,
 * stack, a malloc'd block) and unmap the rest. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <elf.h>
#include <link.h>

extern const ElfW(Ehdr) __ehdr_start;

#define LO 0x500000000000ull
#define HI 0x7f0000000000ull   /* LO + 0x2f0000000000 */
#define WINDOW (4ull << 30)

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    char *block = malloc(1000);
    strcpy(block, "heap block");
    int on_stack = 7;
    printf("before: %s %d\n", block, on_stack);
    fflush(stdout);

    uint64_t own[4] = {
        (uint64_t)&__ehdr_start,
        (uint64_t)syscall(SYS_brk, 0),
        (uint64_t)&on_stack,
        (uint64_t)block,
    };
    qsort(own, 4, sizeof own[0], cmp_u64);

    int calls = 0, failures = 0;
    uint64_t start = LO;
    for (int i = 0; i <= 4 && start < HI; i++) {
        uint64_t end = HI;
        uint64_t next = HI;
        if (i < 4) {
            uint64_t w_lo = own[i] > WINDOW ? (own[i] - WINDOW) & ~0xfffull : 0;
            uint64_t w_hi = (own[i] + WINDOW) & ~0xfffull;
            if (w_hi <= start)
                continue;
            if (w_lo >= HI) {
                i = 3; /* the rest of the range is free */
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
