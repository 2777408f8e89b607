/* Dies by SIGSEGV: a write through a NULL pointer. */
#include <stdio.h>

int main(void)
{
    fputs("about to dereference NULL\n", stderr);
    *(volatile int *)0 = 42;
    puts("still alive?!");
    return 0;
}
