/* What CPUID and XGETBV say about AVX2 (tests/cpu_models.rs: `-cpu
 * x86-64-v2` must make this say "no AVX2"). */
#include <cpuid.h>
#include <stdio.h>

int main(void) {
    unsigned a, b, c, d, xcr0 = 0;
    __cpuid(1, a, b, c, d);
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (osxsave) {
        unsigned hi;
        __asm__ volatile("xgetbv" : "=a"(xcr0), "=d"(hi) : "c"(0));
    }
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    if (avx2 && avx && (xcr0 & 6) == 6)
        printf("AVX2 (avx %d fma %d f16c %d)\n", avx, fma, f16c);
    else
        printf("no AVX2\n");
    return 0;
}
