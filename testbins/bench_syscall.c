/* Syscall round trips for bench/run: N getppid calls through syscall(2)
 * (no libc caching), then the count. The cost of one round trip is the
 * difference to native divided by N. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 20000;
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += syscall(SYS_getppid) > 0;
    printf("%ld\n", sum);
    return 0;
}
