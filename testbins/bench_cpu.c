/* CPU-bound benchmark for bench/run (not part of the e2e suite): integer
 * hashing, an insertion-sort pass and a merge sort over pseudo-random data.
 * argv[1] = rounds (default 60, about 0.3 s natively on a 2020s x86-64). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 65536

static uint32_t a[N], tmp[N];

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static void merge_sort(uint32_t *v, uint32_t *t, size_t n)
{
    if (n < 32) {
        for (size_t i = 1; i < n; i++) {
            uint32_t x = v[i];
            size_t j = i;
            while (j > 0 && v[j - 1] > x) {
                v[j] = v[j - 1];
                j--;
            }
            v[j] = x;
        }
        return;
    }
    size_t h = n / 2;
    merge_sort(v, t, h);
    merge_sort(v + h, t, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        t[k++] = v[i] <= v[j] ? v[i++] : v[j++];
    while (i < h)
        t[k++] = v[i++];
    while (j < n)
        t[k++] = v[j++];
    memcpy(v, t, n * sizeof *v);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 60;
    uint64_t h = 0;
    for (int r = 0; r < rounds; r++) {
        for (uint32_t i = 0; i < N; i++)
            a[i] = (uint32_t)mix64((uint64_t)r << 32 | i);
        merge_sort(a, tmp, N);
        for (uint32_t i = 0; i < N; i += 64)
            h = mix64(h ^ a[i]);
    }
    printf("rounds=%d hash=%016llx\n", rounds, (unsigned long long)h);
    return 0;
}
