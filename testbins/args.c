/* Echo argc, every argv[i] (in order) and the environment variables whose
 * names start with URUN_TEST_ (sorted: the order of envp is not something
 * programs rely on, and qemu-user, for one, reverses it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv, char **envp)
{
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=[%s]\n", i, argv[i]);
    if (argv[argc] != NULL)
        puts("argv not NULL-terminated");
    static char *vars[256];
    int n = 0;
    for (char **e = envp; *e && n < 256; e++) {
        if (strncmp(*e, "URUN_TEST_", 10) == 0)
            vars[n++] = *e;
    }
    qsort(vars, n, sizeof vars[0], cmp_str);
    for (int i = 0; i < n; i++)
        printf("env[%d]=[%s]\n", i, vars[i]);
    printf("URUN_TEST_ vars: %d\n", n);
    return 0;
}
