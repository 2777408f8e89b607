/* The program tests/gdb.rs debugs through urun's gdb stub (-g PORT) and
 * natively with gdb: built with -g -O0 by the test itself. */
#include <stdio.h>

static int square(int x)
{
    return x * x;
}

int main(int argc, char **argv)
{
    int n = argc * 10;
    double d = n / 4.0;
    printf("n=%d d=%g sq=%d first=%s\n", n, d, square(n), argc > 1 ? argv[1] : "-");
    return 0;
}
