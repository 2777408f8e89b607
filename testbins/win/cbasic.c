/* argv, exit status, printf of numbers, malloc/free, environment
 * variables and stderr: the same source built for Linux (gcc) and for
 * Windows (mingw), compared by tests/pe.rs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    /* argv from [1]: argv[0] differs between the two builds' runs. */
    printf("argc=%d\n", argc);
    for (int i = 1; i < argc; i++)
        printf("argv[%d]=\"%s\" (%zu bytes)\n", i, argv[i], strlen(argv[i]));

    printf("int %d %i %u %x %X %o %c|%5d|%-5d|%05d|%+d\n", -42, 42, 3000000000u, 0xbeef, 0xbeef, 8, 'z', 7, 7, 7, 7);
    printf("long long %lld %llu %llx\n", -1234567890123LL, 18446744073709551615ULL, 0x123456789abcULL);
    printf("size %zu, str |%s|%8s|%-8s|%.2s|\n", sizeof(long long), "abc", "right", "left", "truncated");
    printf("double %f %.3f %10.2f %g %g %.10g\n", 3.14159, -2.5, 1e6, 0.0001, 123456789.0, 1.0 / 3);
    printf("percent %% done\n");

    int n = 1000;
    int *v = malloc(n * sizeof *v);
    if (!v) return 99;
    for (int i = 0; i < n; i++) v[i] = (i * 7919) % 1009;
    qsort(v, n, sizeof *v, cmp_int);
    long sum = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    printf("sorted: first %d last %d sum %ld\n", v[0], v[n - 1], sum);
    v = realloc(v, 2 * n * sizeof *v);
    if (!v) return 98;
    v[2 * n - 1] = 5;
    printf("realloc kept %d, new %d\n", v[n - 1], v[2 * n - 1]);
    free(v);
    char *s = calloc(16, 1);
    strcpy(s, "calloc");
    strcat(s, "+strcat");
    printf("%s %d %d %d\n", s, (int)strlen(s), strcmp(s, "calloc") > 0, strcmp("abc", "abd") < 0);
    free(s);

    const char *e = getenv("URUN_PE_TEST");
    printf("URUN_PE_TEST=%s\n", e ? e : "(unset)");
    printf("NOT_SET_ANYWHERE=%s\n", getenv("URUN_NOT_SET_ANYWHERE") ? "set" : "(unset)");
    printf("atoi %d strtol %ld\n", atoi("  -17x"), strtol("ff", NULL, 16));

    fprintf(stderr, "to stderr: %d\n", 12345);
    fflush(stdout);
    return argc > 2 ? 3 : 0;
}
