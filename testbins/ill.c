/* Dies by SIGILL: ud2. */
#include <stdio.h>

int main(void)
{
    fputs("about to execute ud2\n", stderr);
    __asm__ volatile("ud2");
    puts("still alive?!");
    return 0;
}
