/* The test program of the meson and CMake projects that tests/runners.rs
 * runs with urun as their exe_wrapper / CROSSCOMPILING_EMULATOR:
 *   check args A B...   prints its arguments
 *   check env NAME      prints NAME's value (the runner passes the test's env)
 *   check exit N        exits with N
 *   check threads       sums in 4 threads
 *   check file          writes, reads back and removes a file in the cwd */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* long long and intptr_t: `long` is 32 bits on Windows (LLP64). */
static long long sums[4];

static void *work(void *arg)
{
    long long i = (intptr_t)arg, s = 0;
    for (long long k = i * 100000; k < (i + 1) * 100000; k++)
        s += k;
    sums[i] = s;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    if (!strcmp(argv[1], "args")) {
        for (int i = 2; i < argc; i++)
            printf("arg %d: %s\n", i - 1, argv[i]);
        return 0;
    }
    if (!strcmp(argv[1], "env") && argc == 3) {
        const char *v = getenv(argv[2]);
        printf("%s=%s\n", argv[2], v ? v : "(unset)");
        return v ? 0 : 1;
    }
    if (!strcmp(argv[1], "exit") && argc == 3)
        return atoi(argv[2]);
    if (!strcmp(argv[1], "threads")) {
        pthread_t t[4];
        for (intptr_t i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, work, (void *)i);
        long long total = 0;
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            total += sums[i];
        }
        printf("total %lld\n", total);
        return total == 79999800000LL ? 0 : 1;
    }
    if (!strcmp(argv[1], "file")) {
        FILE *f = fopen("check-file.tmp", "w");
        if (!f || fputs("data\n", f) < 0 || fclose(f))
            return 1;
        char buf[16] = {0};
        f = fopen("check-file.tmp", "r");
        if (!f || !fgets(buf, sizeof buf, f))
            return 1;
        fclose(f);
        remove("check-file.tmp");
        return strcmp(buf, "data\n") != 0;
    }
    return 2;
}
