/* Echo argc, every argv[i] and the environment variables whose names start
 * with URUN_TEST_, in the order the kernel (or urun) laid them out. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv, char **envp)
{
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=[%s]\n", i, argv[i]);
    if (argv[argc] != NULL)
        puts("argv not NULL-terminated");
    int n = 0;
    for (char **e = envp; *e; e++) {
        if (strncmp(*e, "URUN_TEST_", 10) == 0)
            printf("env[%d]=[%s]\n", n++, *e);
    }
    printf("URUN_TEST_ vars: %d\n", n);
    return 0;
}
