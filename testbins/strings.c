/* libc string functions against naive reference loops, across alignments
 * 0..31 and lengths 0..300. libc picks its implementation by CPUID (SSE2,
 * AVX2, EVEX...), so this runs different code natively and under urun: the
 * results must still agree.
 *
 * Every (alignment, length) pair is covered for one function by pairing the
 * destination alignment a with source alignment (7a + 3) % 32, so the suite
 * stays fast under an interpreter (the full 32x32x301 cube would not). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MAXLEN 300
#define NALIGN 32
#define BUFSZ (MAXLEN + 2 * NALIGN + 64)

/* Called through volatile pointers so the compiler cannot inline or fold
 * them: we want libc's code. */
static void *(*volatile p_memcpy)(void *, const void *, size_t) = memcpy;
static void *(*volatile p_memmove)(void *, const void *, size_t) = memmove;
static void *(*volatile p_memset)(void *, int, size_t) = memset;
static int (*volatile p_memcmp)(const void *, const void *, size_t) = memcmp;
static size_t (*volatile p_strlen)(const char *) = strlen;
static char *(*volatile p_strchr)(const char *, int) = strchr;
static char *(*volatile p_strrchr)(const char *, int) = strrchr;
static int (*volatile p_strcmp)(const char *, const char *) = strcmp;
static int (*volatile p_strncmp)(const char *, const char *, size_t) = strncmp;
static char *(*volatile p_strcpy)(char *, const char *) = strcpy;
static char *(*volatile p_strstr)(const char *, const char *) = strstr;

static _Alignas(64) unsigned char A[BUFSZ], B[BUFSZ], R[BUFSZ];
static uint32_t seed = 1;
static int failures;
static uint64_t sum = 1469598103934665603ull;

static unsigned rnd(void)
{
    seed = seed * 1103515245u + 12345u;
    return seed >> 16;
}

static void mix(uint64_t v)
{
    sum = (sum ^ v) * 1099511628211ull;
}

static void fail(const char *fn, int a, int len, const char *what)
{
    if (failures < 20)
        printf("FAIL %s align=%d len=%d: %s\n", fn, a, len, what);
    failures++;
}

/* Naive references. volatile keeps gcc from turning them into libc calls. */
static void ref_copy(volatile unsigned char *d, const volatile unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] = s[i];
}

static int ref_cmp(const volatile unsigned char *a, const volatile unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return 0;
}

static size_t ref_len(const volatile char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static int sign(int v)
{
    return (v > 0) - (v < 0);
}

/* Fill buf with nonzero pseudo-random bytes (xorshift64, 8 bytes a step).
 * Bytes above 0x7f are included on purpose: strcmp compares unsigned char. */
static void fill(unsigned char *buf, size_t n)
{
    static uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t v = x;
        for (size_t j = i; j < i + 8 && j < n; j++, v >>= 8)
            buf[j] = (v & 0xff) ? (unsigned char)v : 1;
    }
}

static void test_mem(int a, int len)
{
    int sa = (7 * a + 3) % NALIGN;
    unsigned char *dst = B + NALIGN + a, *src = A + NALIGN + sa;

    /* memcpy: exact bytes copied, guards around the destination intact. */
    fill(A, BUFSZ);
    fill(B, BUFSZ);
    ref_copy(R, B, BUFSZ);
    ref_copy(R + NALIGN + a, src, len);
    if (p_memcpy(dst, src, len) != dst)
        fail("memcpy", a, len, "return value");
    if (ref_cmp(B, R, BUFSZ))
        fail("memcpy", a, len, "contents");

    /* memset */
    int c = rnd() & 0xff;
    ref_copy(R, B, BUFSZ);
    for (int i = 0; i < len; i++)
        ((volatile unsigned char *)R)[NALIGN + a + i] = (unsigned char)c;
    if (p_memset(dst, c, len) != dst)
        fail("memset", a, len, "return value");
    if (ref_cmp(B, R, BUFSZ))
        fail("memset", a, len, "contents");

    /* memmove, overlapping both ways (shift by sa - a, may be 0). */
    fill(B, BUFSZ);
    ref_copy(R, B, BUFSZ);
    {
        unsigned char tmp[BUFSZ];
        ref_copy(tmp, B + NALIGN + sa, len);
        ref_copy(R + NALIGN + a, tmp, len);
    }
    if (p_memmove(B + NALIGN + a, B + NALIGN + sa, len) != B + NALIGN + a)
        fail("memmove", a, len, "return value");
    if (ref_cmp(B, R, BUFSZ))
        fail("memmove", a, len, "contents");

    /* memcmp: equal, then one byte differing at a random position. */
    ref_copy(dst, src, len);
    if (p_memcmp(dst, src, len) != 0)
        fail("memcmp", a, len, "equal buffers");
    if (len > 0) {
        int pos = rnd() % len;
        dst[pos] = (unsigned char)(src[pos] + 1 + rnd() % 254);
        int want = ref_cmp(dst, src, len), got = p_memcmp(dst, src, len);
        if (sign(got) != want)
            fail("memcmp", a, len, "differing buffers");
        mix((uint64_t)(want + 1) << 32 | (uint32_t)pos);
    }
}

static void test_str(int a, int len)
{
    int sa = (7 * a + 3) % NALIGN;
    char *s = (char *)A + NALIGN + sa, *d = (char *)B + NALIGN + a;

    fill(A, BUFSZ);
    A[NALIGN + sa + len] = 0;
    if (p_strlen(s) != (size_t)len || ref_len(s) != (size_t)len)
        fail("strlen", a, len, "length");

    /* strchr/strrchr: a character present (maybe several times), absent, NUL. */
    int ch = len ? (unsigned char)s[rnd() % len] : 'x';
    char *first = NULL, *last = NULL;
    for (int i = 0; i < len; i++)
        if ((unsigned char)s[i] == ch) {
            if (!first)
                first = s + i;
            last = s + i;
        }
    if (p_strchr(s, ch) != first)
        fail("strchr", a, len, "found char");
    if (p_strrchr(s, ch) != last)
        fail("strrchr", a, len, "found char");
    if (p_strchr(s, 0) != s + len || p_strrchr(s, 0) != s + len)
        fail("strchr/strrchr", a, len, "NUL");
    mix(first ? (uint64_t)(first - s) : 999);
    mix(last ? (uint64_t)(last - s) : 999);

    /* strcpy, then strcmp/strncmp equal and differing. */
    fill(B, BUFSZ);
    ref_copy(R, B, BUFSZ);
    ref_copy(R + NALIGN + a, (unsigned char *)s, len + 1);
    if (p_strcpy(d, s) != d)
        fail("strcpy", a, len, "return value");
    if (ref_cmp(B, R, BUFSZ))
        fail("strcpy", a, len, "contents");
    if (p_strcmp(d, s) != 0 || p_strncmp(d, s, len + 5) != 0)
        fail("strcmp", a, len, "equal strings");
    if (len > 0) {
        int pos = rnd() % len;
        d[pos] = (char)((unsigned char)s[pos] == 0xff ? 1 : (unsigned char)s[pos] + 1);
        int want = ref_cmp((unsigned char *)d, (unsigned char *)s, len);
        if (sign(p_strcmp(d, s)) != want)
            fail("strcmp", a, len, "differing strings");
        if (sign(p_strncmp(d, s, len)) != want)
            fail("strncmp", a, len, "differing strings");
        if (p_strncmp(d, s, pos) != 0)
            fail("strncmp", a, len, "equal prefix");
        /* A shorter string compares below its extension. */
        ref_copy((unsigned char *)d, (unsigned char *)s, len + 1);
        d[pos] = 0;
        if (p_strcmp(d, s) >= 0)
            fail("strcmp", a, len, "prefix");
        mix((uint64_t)pos << 8 | (uint64_t)(want + 1));
    }

    /* strstr: a needle cut out of the haystack, and one that is absent. */
    if (len > 0) {
        int nlen = 1 + rnd() % (len < 12 ? len : 12);
        int npos = rnd() % (len - nlen + 1);
        char needle[16];
        for (int i = 0; i < nlen; i++)
            needle[i] = s[npos + i];
        needle[nlen] = 0;
        char *want = NULL;
        for (int i = 0; i + nlen <= len && !want; i++)
            if (ref_cmp((unsigned char *)s + i, (unsigned char *)needle, nlen) == 0)
                want = s + i;
        if (p_strstr(s, needle) != want)
            fail("strstr", a, len, "present needle");
        needle[nlen - 1] = 0; /* still present (shorter) */
        if (nlen > 1 && p_strstr(s, needle) == NULL)
            fail("strstr", a, len, "shorter needle");
        mix(want ? (uint64_t)(want - s) : 999);
    }
    if (p_strstr(s, "") != s)
        fail("strstr", a, len, "empty needle");
    static const char absent[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 0 };
    char *got = p_strstr(s, absent);
    char *want = NULL;
    for (int i = 0; i + 9 <= len && !want; i++)
        if (ref_cmp((unsigned char *)s + i, (const unsigned char *)absent, 9) == 0)
            want = s + i;
    if (got != want)
        fail("strstr", a, len, "absent needle");
}

int main(void)
{
    for (int a = 0; a < NALIGN; a++)
        for (int len = 0; len <= MAXLEN; len++) {
            test_mem(a, len);
            test_str(a, len);
        }
    printf("cases: %d\n", NALIGN * (MAXLEN + 1));
    printf("checksum=%016llx\n", (unsigned long long)sum);
    puts(failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
