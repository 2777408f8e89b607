/* Dies by SIGFPE: an integer division by a zero the compiler cannot see. */
#include <stdio.h>

int main(void)
{
    volatile int divisor = 0;
    volatile int dividend = 42;
    fputs("about to divide by zero\n", stderr);
    int q = dividend / divisor;
    printf("still alive?! %d\n", q);
    return 0;
}
