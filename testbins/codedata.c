/* Code and the data it reads and writes in one page (as JITs and packed
 * code do): a function in an RWX page loops over a counter stored 3 bytes
 * after its last instruction (the same 64-byte granule) and stores its
 * result beside it; the caller rewrites that data between calls and keeps
 * a sum in the same page. The output is the arithmetic, which must not
 * depend on how the page is executed. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

/* f(n): rax = 0; n times: rax += [X]; [Y] = rax. X at 24, Y at 32. */
static const unsigned char code[] = {
    0x31, 0xc0,                               /* 0:  xor eax, eax */
    0x48, 0x03, 0x05, 24 - 9, 0, 0, 0,        /* 2:  add rax, [rip + X] */
    0x48, 0x89, 0x05, 32 - 16, 0, 0, 0,       /* 9:  mov [rip + Y], rax */
    0x48, 0xff, 0xcf,                         /* 16: dec rdi */
    0x75, 0xed,                               /* 19: jnz 2 */
    0xc3,                                     /* 21: ret */
};

int main(void)
{
    unsigned char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memcpy(page, code, sizeof code);
    uint64_t (*f)(uint64_t) = (uint64_t (*)(uint64_t))page;
    volatile uint64_t *x = (uint64_t *)(page + 24), *y = (uint64_t *)(page + 32), *sum = (uint64_t *)(page + 2048);
    *x = 3;
    uint64_t h = 0;
    for (uint64_t i = 0; i < 20000; i++) {
        uint64_t r = f(i % 50 + 1);
        if (r != *y) {
            printf("call %llu: returned %llu, stored %llu\n", (unsigned long long)i, (unsigned long long)r,
                   (unsigned long long)*y);
            return 1;
        }
        *x = (r & 0xff) + 1;
        *sum += r;
        h = h * 31 + r;
    }
    printf("sum %llu hash %016llx last x %llu\n", (unsigned long long)*sum, (unsigned long long)h,
           (unsigned long long)*x);
    return 0;
}
