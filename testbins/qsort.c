/* qsort a pseudo-random array, check it is sorted and a permutation of the
 * input, and print checksums. */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>

#define N 5000

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    static int a[N];
    uint32_t s = 12345;
    uint64_t sum_before = 0, xor_before = 0;
    for (int i = 0; i < N; i++) {
        s = s * 1103515245u + 12345u;
        a[i] = (int)(s >> 1) % 100000 - 50000;
        sum_before += (uint64_t)(int64_t)a[i];
        xor_before ^= (uint32_t)a[i];
    }
    qsort(a, N, sizeof a[0], cmp_int);
    int sorted = 1;
    uint64_t sum_after = 0, xor_after = 0, h = 1469598103934665603ull;
    for (int i = 0; i < N; i++) {
        if (i && a[i - 1] > a[i])
            sorted = 0;
        sum_after += (uint64_t)(int64_t)a[i];
        xor_after ^= (uint32_t)a[i];
        h = (h ^ (uint32_t)a[i]) * 1099511628211ull;
    }
    printf("n=%d min=%d max=%d median=%d\n", N, a[0], a[N - 1], a[N / 2]);
    printf("sorted=%s permutation=%s\n", sorted ? "true" : "false",
           sum_before == sum_after && xor_before == xor_after ? "true" : "false");
    printf("checksum=%016llx\n", (unsigned long long)h);
    if (!sorted)
        return 1;
    puts("ok");
    return 0;
}
