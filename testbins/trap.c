/* Dies by SIGTRAP: int3 with no debugger and no handler. */
#include <stdio.h>

int main(void)
{
    fputs("about to execute int3\n", stderr);
    __asm__ volatile("int3");
    puts("still alive?!");
    return 0;
}
