/* Floating point through libc, bit-exact: printf of doubles and x87 long
 * doubles in every style, strtod/strtold/strtof of tricky strings (with
 * errno and end offsets), libm functions over a fixed table of inputs
 * printed with %a / %La, and fenv: each rounding mode applied to rint,
 * nearbyint, lrint, the four basic operations, sqrt, conversions and
 * printf; exception flags raised by feraiseexcept and by SSE and x87
 * arithmetic, read back with fetestexcept.
 *
 * All inputs come from volatile tables so gcc cannot fold the calls. */
#define _GNU_SOURCE
#include <errno.h>
#include <fenv.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PIl
#define M_PIl 3.141592653589793238462643383279502884L
#endif

static void print_d(const char *name, double x)
{
    printf("%-10s %a | %.17g | %f | %e | %g\n", name, x, x, x, x, x);
}

static void print_ld(const char *name, long double x)
{
    printf("%-10s %La | %.20Lf | %Lg | %Le | %.25Lg\n", name, x, x, x, x, x);
}

static void formatting(void)
{
    volatile double one = 1.0, three = 3.0, zero = 0.0;
    volatile long double lone = 1.0L, lthree = 3.0L, lzero = 0.0L;
    puts("== printf double");
    const struct { const char *n; double v; } d[] = {
        {"0.1", 0.1}, {"1/3", one / three}, {"pi", M_PI}, {"DBL_MAX", DBL_MAX},
        {"DBL_MIN", DBL_MIN}, {"TRUE_MIN", 0x1p-1074}, {"denorm", 0x1.23456789abcdep-1030},
        {"-0.0", -zero}, {"inf", one / zero}, {"-inf", -one / zero}, {"1e300", 1e300},
        {"1e22-ish", 9.999999999999999e22}, {"0.5", 0.5}, {"2.5", 2.5}, {"1e-5", 1e-5},
        {"big-int", 123456789012345678.0}, {"halfway", 0.125}, {"neg", -1234.5678},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        volatile double v = d[i].v;
        print_d(d[i].n, v);
    }
    volatile double dnan = zero / zero;
    printf("0/0        %f %a %e %g\n", dnan, dnan, dnan, dnan);
    printf("-(0/0)     %f\n", -dnan);
    printf("nan()      %f %F\n", nan(""), -nan(""));
    printf("widths     [%10.3f] [%-10.2e] [%+g] [% a] [%#g] [%#.0f] [%010.4f]\n",
           d[2].v, d[2].v, d[0].v, d[0].v, d[4].v, d[13].v, -d[2].v);
    printf("rounding   %.0f %.0f %.0f %.0f %.1f %.2f %.3f\n", 0.5, 1.5, 2.5, -2.5, 0.25, 1.005, 2.0005);
    printf("precision  %.0e %.1e %.30f %.60e\n", 1.5, 0.15, 0.1, 1.0 / 3.0);

    puts("== printf long double");
    const struct { const char *n; long double v; } l[] = {
        {"0.1L", 0.1L}, {"1/3L", lone / lthree}, {"M_PIl", M_PIl}, {"LDBL_MAX", LDBL_MAX},
        {"LDBL_MIN", LDBL_MIN}, {"TRUE_MIN", 0x1p-16445L}, {"denorm", 0x1.23456789abcdef0p-16400L},
        {"-0.0L", -lzero}, {"inf", lone / lzero}, {"-inf", -lone / lzero}, {"1e4932L", 1e4932L},
        {"1e-4940L", 1e-4940L}, {"2^64", 18446744073709551616.0L}, {"2^64-1", 18446744073709551615.0L},
        {"e", 2.718281828459045235360287471352662498L}, {"neg", -1234.5678L},
    };
    for (size_t i = 0; i < sizeof l / sizeof l[0]; i++) {
        volatile long double v = l[i].v;
        print_ld(l[i].n, v);
    }
    volatile long double lnan = lzero / lzero;
    printf("0/0L       %Lf %La %Le %Lg\n", lnan, lnan, lnan, lnan);
    printf("-(0/0L)    %Lf\n", -lnan);
    printf("LDBL_MAX   %.0Lf\n", (long double)LDBL_MAX);
    printf("LDBL_MIN   %.40Le\n", (long double)LDBL_MIN);
}

static void parsing(void)
{
    static const char *const s[] = {
        "0x1.fffffffffffffffep+16383", "1e-4950", "123456789012345678901234567890",
        "2.2250738585072011e-308", "2.2250738585072012e-308", "2.2250738585072014e-308",
        "4.9406564584124654e-324", "2.4703282292062327e-324", "2.4703282292062328e-324",
        "1.7976931348623157e308", "1.7976931348623158e+308", "1.7976931348623159e+308",
        "1e400", "-0", "0.1", "  +.5e1xyz", "0x1p-1074", "0x1.8p1", "0X.8P-1", "inf",
        "-Infinity", "nan", "nan(123)", "1e", "0x", ".", "3.36210314311209350626e-4932",
        "1.18973149535723176502e+4932", "1.18973149535723176509e+4932",
        "0.000000000000000000000000000000000000000000001e45",
        "9007199254740993", "9007199254740992.5", "3.4028235677973366e38", "1e-46",
        "7.0064923216240862e-46", "1.00000000000000011102230246251565404236316680908203125",
        "1.00000000000000011102230246251565404236316680908203124",
        "1.00000000000000011102230246251565404236316680908203126",
    };
    puts("== strtod / strtold / strtof");
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        char *end;
        errno = 0;
        double d = strtod(s[i], &end);
        int ed = errno;
        long od = end - s[i];
        errno = 0;
        long double ld = strtold(s[i], &end);
        int eld = errno;
        long old = end - s[i];
        errno = 0;
        float f = strtof(s[i], &end);
        int ef = errno;
        long of = end - s[i];
        printf("%-30s d=%a (%ld%s) ld=%La (%ld%s) f=%a (%ld%s)\n", s[i], d, od,
               ed == ERANGE ? ",ERANGE" : ed ? ",err" : "", ld, old,
               eld == ERANGE ? ",ERANGE" : eld ? ",err" : "", (double)f, of,
               ef == ERANGE ? ",ERANGE" : ef ? ",err" : "");
    }
}

static void mathfns(void)
{
    static volatile double x[] = {
        0.5, 1.0, -1.5, 2.0, 10.0, 100.0, 1e-300, 1e10, 0.1, 3.141592653589793,
        709.78, -745.1, 1e22, 0x1.fffffffffffffp1023, 5e-324, -0.0, 0.75, 4.5, -2.5, 33.3,
    };
    static volatile double y[] = {
        2.0, 0.5, 3.0, -1.0, 0.1, 1e-3, 170.5, -0.5, 1.5, 7.0,
        1e-2, 2.5, 0.5, 0.25, 1.0, 3.0, -7.25, 10.0, 3.0, -0.75,
    };
    /* Inputs are kept where glibc's libm variants agree: libm picks e.g.
     * __pow_fma or __pow_sse2 by CPUID, and pow(DBL_MAX, 0.5) is
     * 0x1.fffffffffffffp+511 with FMA but 0x1p+512 without (natively too,
     * GLIBC_TUNABLES=glibc.cpu.hwcaps=-FMA,-AVX2), so it is not used. */
    const size_t n = sizeof x / sizeof x[0];
    puts("== libm double");
    for (size_t i = 0; i < n; i++) {
        double v = x[i], w = y[i];
        int sg;
        double lg = lgamma_r(v, &sg);
        printf("x=%a sin=%a cos=%a tan=%a exp=%a log=%a\n", v, sin(v), cos(v), tan(v), exp(v), log(v));
        printf("  pow(x,%a)=%a sqrt=%a cbrt=%a lgamma=%a/%d tgamma=%a atan2=%a fma=%a\n", w,
               pow(v, w), sqrt(v), cbrt(v), lg, sg, tgamma(v), atan2(v, w), fma(v, w, -v * w));
    }
    puts("== libm long double");
    for (size_t i = 0; i < n; i++) {
        long double v = x[i] * (1.0L + 0x1p-60L), w = y[i];
        int sg;
        long double lg = lgammal_r(v, &sg);
        printf("x=%La sinl=%La expl=%La logl=%La powl=%La lgammal=%La/%d fmal=%La\n", v,
               sinl(v), expl(v), logl(v), powl(v, w), lg, sg, fmal(v, w, -v * w));
    }
}

static const char *modename(int m)
{
    return m == FE_TONEAREST ? "nearest" : m == FE_DOWNWARD ? "down" : m == FE_UPWARD ? "up" : "zero";
}

static void flags(const char *what)
{
    int e = fetestexcept(FE_ALL_EXCEPT);
    printf("  %-28s%s%s%s%s%s%s\n", what, e & FE_INVALID ? " invalid" : "",
           e & FE_DIVBYZERO ? " divbyzero" : "", e & FE_OVERFLOW ? " overflow" : "",
           e & FE_UNDERFLOW ? " underflow" : "", e & FE_INEXACT ? " inexact" : "",
           e ? "" : " none");
    feclearexcept(FE_ALL_EXCEPT);
}

static void fenv(void)
{
    static const int modes[] = {FE_TONEAREST, FE_DOWNWARD, FE_UPWARD, FE_TOWARDZERO};
    static volatile double in[] = {2.5, -2.5, 3.5, 0.5, -0.5, 1.4999999999999998, 1e15 + 0.5, -7.7};
    volatile double one = 1.0, three = 3.0, two = 2.0, tiny = 0x1p-1070, big = 0x1p1023;
    volatile long double lone = 1.0L, lthree = 3.0L, ltwo = 2.0L;
    volatile float fone = 1.0f, fthree = 3.0f;
    puts("== rounding modes");
    for (int m = 0; m < 4; m++) {
        if (fesetround(modes[m])) {
            printf("fesetround(%s) failed\n", modename(modes[m]));
            continue;
        }
        printf("mode %s (fegetround %s)\n", modename(modes[m]), modename(fegetround()));
        for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
            double v = in[i];
            printf("  %a: rint=%a nearbyint=%a lrint=%ld llrint=%lld rintl=%La lrintl=%ld (int)=%d rintf=%a\n",
                   v, rint(v), nearbyint(v), lrint(v), llrint(v), rintl((long double)v),
                   lrintl((long double)v), (int)v, (double)rintf((float)v));
        }
        printf("  1/3=%a -1/3=%a 1/3L=%La -1/3L=%La 1/3f=%a\n", one / three, -one / three,
               lone / lthree, -lone / lthree, (double)(fone / fthree));
        printf("  sqrt2=%a sqrtl2=%La 1+tiny=%a 1-tiny=%a big*2=%a tiny/4=%a\n", sqrt(two),
               sqrtl(ltwo), one + tiny * 0x1p60, one - tiny * 0x1p60, big * two, tiny / 4);
        printf("  (float)1/3=%a (double)1/3L=%a 0.1*3=%a 1e308*10=%a\n", (double)(float)(one / three),
               (double)(lone / lthree), 0.1 * three, 1e308 * (three + 7));
        printf("  printf 0.1=%.20f 2/3=%.5f -2/3=%.5f 1/3L=%.25Lf strtod(0.1)=%a\n", 0.1,
               two / three, -two / three, lone / lthree, strtod("0.1", NULL));
    }
    fesetround(FE_TONEAREST);

    puts("== exception flags");
    feclearexcept(FE_ALL_EXCEPT);
    flags("after clear");
    static const struct { int e; const char *n; } ex[] = {
        {FE_INVALID, "raise invalid"}, {FE_DIVBYZERO, "raise divbyzero"},
        {FE_OVERFLOW, "raise overflow"}, {FE_UNDERFLOW, "raise underflow"},
        {FE_INEXACT, "raise inexact"}, {FE_OVERFLOW | FE_INEXACT, "raise overflow|inexact"},
        {FE_ALL_EXCEPT, "raise all"},
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        feraiseexcept(ex[i].e);
        flags(ex[i].n);
    }
    volatile double zero = 0.0, r;
    volatile long double lzero = 0.0L, lr;
    volatile float fr;
    r = one / zero; flags("sse 1/0");
    r = zero / zero; flags("sse 0/0");
    r = sqrt(-one); flags("sse sqrt(-1)");
    r = big * two; flags("sse big*2");
    r = tiny / three; flags("sse tiny/3");
    r = tiny * 0.5; flags("sse tiny*0.5");
    r = one / three; flags("sse 1/3");
    r = one + two; flags("sse 1+2");
    fr = (float)big; flags("sse (float)big");
    r = (double)(long long)(big); flags("sse (long long)big");
    lr = lone / lzero; flags("x87 1/0");
    lr = lzero / lzero; flags("x87 0/0");
    lr = sqrtl(-lone); flags("x87 sqrtl(-1)");
    lr = lone / lthree; flags("x87 1/3");
    lr = LDBL_MAX * ltwo; flags("x87 max*2");
    lr = LDBL_MIN / lthree; flags("x87 min/3");
    lr = lone + ltwo; flags("x87 1+2");
    r = exp(1000.0 * one); flags("exp(1000)");
    r = log(zero); flags("log(0)");
    r = pow(-one, 0.5 * one); flags("pow(-1,0.5)");
    lr = expl(-20000.0L * lone); flags("expl(-20000)");
    (void)r;
    (void)lr;
    (void)fr;
    fenv_t env;
    feraiseexcept(FE_DIVBYZERO);
    feholdexcept(&env);
    flags("feholdexcept");
    r = one / three;
    feupdateenv(&env);
    flags("feupdateenv");
}

int main(void)
{
    formatting();
    parsing();
    mathfns();
    fenv();
    puts("ok");
    return 0;
}
