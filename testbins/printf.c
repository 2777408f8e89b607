/* printf of integers and doubles; everything printed is deterministic. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    static const int ints[] = { 0, 1, -1, 7, 42, -42, 255, 256, 65535, 1000000,
                                INT_MAX, INT_MIN, 0x12345678, -0x12345678 };
    for (unsigned i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int v = ints[i];
        printf("%d %i %x %X %o %u |%8d|%-8d|%+d|%08x|%#x|%#o\n",
               v, v, (unsigned)v, (unsigned)v, (unsigned)v, (unsigned)v, v, v, v,
               (unsigned)v, (unsigned)v, (unsigned)v);
    }
    static const long long lls[] = { 0, LLONG_MAX, LLONG_MIN, 1234567890123456789LL,
                                     -987654321987654321LL };
    for (unsigned i = 0; i < sizeof lls / sizeof lls[0]; i++)
        printf("%lld %llx %llu %20lld|\n", lls[i], (unsigned long long)lls[i],
               (unsigned long long)lls[i], lls[i]);

    static const double ds[] = { 0.0, -0.0, 1.0, -1.0, 0.5, 0.1, 1.0 / 3.0, 2.0 / 3.0,
                                 3.14159265358979323846, 2.718281828459045, 1e10,
                                 1e-10, 123456.789, -98765.4321, 1e300, 1e-300,
                                 DBL_MAX, DBL_MIN, 4.9e-324, 1.5, 2.5, 1e15 + 0.3,
                                 6.02214076e23, 1.0 / 7.0 };
    for (unsigned i = 0; i < sizeof ds / sizeof ds[0]; i++) {
        double d = ds[i];
        printf("%.6f %g %e %.17g %10.3f|%-12.4e|%+.2f %G %E\n", d, d, d, d, d, d, d, d, d);
    }
    printf("inf: %f %g %e  -inf: %f\n", INFINITY, INFINITY, INFINITY, -INFINITY);
    printf("nan: %f %g\n", NAN, NAN);

    /* Arithmetic through the FPU/SSE on values the compiler cannot fold. */
    volatile double a = 2.0, b = 3.0, c = 1e-3;
    printf("sqrt(2)=%.15f a/b=%.15f a*b+c=%.15g\n", sqrt(a), a / b, a * b + c);
    printf("floor=%.1f ceil=%.1f trunc=%.1f round=%.1f\n",
           floor(-b / a), ceil(-b / a), trunc(-b / a), round(-b / a));
    printf("(int)=%d (long long)=%lld (double)int=%.1f\n",
           (int)(b * 1e6 / a), (long long)(a * 1e15), (double)(int)(-b * 7.9));
    double acc = 0;
    for (int i = 1; i <= 1000; i++)
        acc += 1.0 / ((double)i * i);
    printf("sum 1/i^2 (i<=1000) = %.15f\n", acc);
    printf("strtod: %.17g %.17g %.17g\n", strtod("0.1", NULL), strtod("1e-5", NULL),
           strtod("123456789.987654321", NULL));

    volatile long double la = 1.0L, lb = 3.0L;
    printf("long double: %.18Lg %Lf\n", la / lb, la / lb);

    printf("strings: [%s] [%10s] [%-10s] [%.3s] [%c%c%c] [%%]\n",
           "abc", "right", "left", "truncated", 'x', 'y', 'z');
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%d-%s-%.2f", 17, "snprintf", 2.345);
    printf("snprintf: %d [%s]\n", n, buf);
    volatile size_t small = 8; /* volatile: no compile-time truncation warning */
    n = snprintf(buf, small, "%s", "this will be truncated");
    printf("snprintf truncated: %d [%s]\n", n, buf);
    return 0;
}
