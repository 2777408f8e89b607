/* libc's string and memory functions against naive reference loops (and
 * thus against known answers), so that whatever implementation libc picks
 * for the CPU it sees (glibc: ifunc variants chosen by CPUID, SSE2 ..
 * AVX2/EVEX natively, SSE2 .. SSE4.2 under urun) must compute the same
 * results. Output is only pass counts per function, the same on any CPU.
 *
 * Coverage, for every function:
 *   - sweep: every length 0..600, each with two (dst, src) alignment pairs
 *     drawn so that all alignments 0..63 occur for dst and src;
 *   - cross: the full 17 x 17 cross product of alignments 0..16 with short
 *     and boundary lengths (memcpy, memmove, memcmp, bcmp, strcmp, strncmp,
 *     strcpy), and a sample of pairs from 17..63;
 *   - page: the data ends exactly at the end of a page whose successor is
 *     PROT_NONE (and starts exactly at a page whose predecessor is), lengths
 *     0..160, so vector code that reads past the end faults if it crosses
 *     into the next page, as on hardware;
 *   - big: 4 KiB, 64 KiB and 1 MiB + 17 for memcpy, memset, memmove
 *     (overlapping both ways), memcmp, memchr, strlen.
 */
#define _GNU_SOURCE
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>
#include <wchar.h>

#ifndef __GLIBC__
/* musl has no rawmemchr. */
static void *rawmemchr(const void *s, int c)
{
    size_t volatile all = SIZE_MAX;
    return memchr(s, c, all);
}
#endif

/* libc through volatile pointers: no inlining or constant folding. */
#define P(f) static __typeof__(&f) volatile p_##f = f
P(memcpy); P(memmove); P(memset); P(memcmp); P(bcmp); P(memchr);
P(memrchr); P(rawmemchr); P(strlen); P(strnlen); P(strchr); P(strrchr);
P(strchrnul); P(strcmp); P(strncmp); P(strcasecmp); P(strncasecmp);
P(strcpy); P(stpcpy); P(strncpy); P(strcat); P(strncat); P(strstr);
P(strcasestr); P(strspn); P(strcspn); P(strpbrk); P(memmem); P(wcslen);
P(wcschr); P(wcscmp); P(wmemset); P(wmemchr);

typedef unsigned char u8;

enum {
    F_memcpy, F_memmove, F_memset, F_memcmp, F_bcmp, F_memchr, F_memrchr,
    F_rawmemchr, F_strlen, F_strnlen, F_strchr, F_strrchr, F_strchrnul,
    F_strcmp, F_strncmp, F_strcasecmp, F_strncasecmp, F_strcpy, F_stpcpy,
    F_strncpy, F_strcat, F_strncat, F_strstr, F_strcasestr, F_strspn,
    F_strcspn, F_strpbrk, F_memmem, F_wcslen, F_wcschr, F_wcscmp, F_wmemset,
    F_wmemchr, NF
};
static const char *const fname[NF] = {
    "memcpy", "memmove", "memset", "memcmp", "bcmp", "memchr", "memrchr",
    "rawmemchr", "strlen", "strnlen", "strchr", "strrchr", "strchrnul",
    "strcmp", "strncmp", "strcasecmp", "strncasecmp", "strcpy", "stpcpy",
    "strncpy", "strcat", "strncat", "strstr", "strcasestr", "strspn",
    "strcspn", "strpbrk", "memmem", "wcslen", "wcschr", "wcscmp", "wmemset",
    "wmemchr",
};
static long passes[NF];
static long failures;

#define MAXLEN 600
#define GUARD 64
#define BUFSZ (GUARD + 64 + MAXLEN + 64 + GUARD + 64)
static _Alignas(64) u8 A[BUFSZ], B[BUFSZ], R[BUFSZ], T[BUFSZ];

static uint64_t rs = 88172645463325252ull;
static unsigned rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (unsigned)(rs >> 11);
}

static int cur_da, cur_sa; /* for failure messages */
static const char *cur_mode = "";

static void result(int f, int ok, size_t n, const char *what)
{
    if (ok) {
        passes[f]++;
        return;
    }
    if (failures < 30)
        printf("FAIL %s (%s) dst_align=%d src_align=%d len=%zu: %s\n",
               fname[f], cur_mode, cur_da, cur_sa, n, what);
    failures++;
}

static int sgn(long v) { return (v > 0) - (v < 0); }

/* ---- naive references ---- */
static int r_memcmp(const u8 *a, const u8 *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return 0;
}
static int r_same(const u8 *a, const u8 *b, size_t n) { return r_memcmp(a, b, n) == 0; }
static int r_all(const u8 *a, u8 c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != c)
            return 0;
    return 1;
}
static size_t r_strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}
static int r_lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
static int r_strncmp(const char *a, const char *b, size_t n, int fold)
{
    for (size_t i = 0; i < n; i++) {
        int x = (u8)a[i], y = (u8)b[i];
        if (fold)
            x = r_lower(x), y = r_lower(y);
        if (x != y)
            return x < y ? -1 : 1;
        if (!x)
            return 0;
    }
    return 0;
}
static const char *r_strchr(const char *s, int c, int last)
{
    const char *found = NULL;
    for (;; s++) {
        if (*s == (char)c) {
            found = s;
            if (!last)
                return s;
        }
        if (!*s)
            return found;
    }
}
static const u8 *r_memchr(const u8 *s, int c, size_t n, int last)
{
    const u8 *found = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == (u8)c) {
            found = s + i;
            if (!last)
                return found;
        }
    return found;
}
static size_t r_span(const char *s, const char *set, int accept)
{
    size_t i = 0;
    for (; s[i]; i++) {
        int in = 0;
        for (const char *p = set; *p; p++)
            if (*p == s[i])
                in = 1;
        if (in != accept)
            break;
    }
    return i;
}
static const u8 *r_memmem(const u8 *h, size_t hn, const u8 *nd, size_t nn, int fold)
{
    if (nn == 0)
        return h;
    for (size_t i = 0; i + nn <= hn; i++) {
        size_t j = 0;
        while (j < nn && (fold ? r_lower(h[i + j]) == r_lower(nd[j]) : h[i + j] == nd[j]))
            j++;
        if (j == nn)
            return h + i;
    }
    return NULL;
}

/* ---- data ---- */
/* n random bytes from an alphabet of k letters (mixed case if 'mixed'),
 * never NUL. A small alphabet makes chr/cmp/str searches hit often. */
static void fill_str(u8 *p, size_t n, int k, int mixed)
{
    for (size_t i = 0; i < n; i++) {
        unsigned r = rnd();
        u8 c = 'a' + r % k;
        if (mixed && (r & 0x100))
            c -= 32;
        p[i] = c;
    }
}
static void fill_bytes(u8 *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (u8)rnd();
}
/* a byte to look for: usually present, sometimes NUL, sometimes absent or high */
static int pick_char(void)
{
    unsigned r = rnd() % 10;
    if (r == 0)
        return 0;
    if (r == 1)
        return 'z';
    if (r == 2)
        return 0x1e1; /* converted to unsigned char: 0xe1, tests the cast */
    return 'a' + rnd() % 6;
}

/* ---- the tests. a, b: source operands (already aligned as wanted),
 * d: destination with GUARD bytes on both sides inside R. 'str' tests
 * need n + 1 bytes at a and b (terminating NUL), mem tests n. ---- */
typedef void (*testfn)(u8 *a, u8 *b, u8 *d, size_t n);

static void guard_fill(u8 *d, size_t n)
{
    memset(d - GUARD, 0xee, n + 2 * GUARD);
}
static int guards_ok(u8 *d, size_t n)
{
    return r_all(d - GUARD, 0xee, GUARD) && r_all(d + n, 0xee, GUARD);
}

static void t_memcpy(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_bytes(a, n);
    guard_fill(d, n);
    void *ret = p_memcpy(d, a, n);
    result(F_memcpy, ret == d && r_same(d, a, n) && guards_ok(d, n), n, "memcpy");
}
/* memmove within one buffer: a and d both point into it (see the drivers). */
static void t_memmove_ov(u8 *dst, u8 *src, size_t n)
{
    size_t lo = (dst < src ? (size_t)(dst - A) : (size_t)(src - A));
    u8 *save = T;
    memcpy(save, A, BUFSZ);       /* whole buffer before */
    u8 tmp[MAXLEN + 64];
    for (size_t i = 0; i < n; i++)
        tmp[i] = src[i];
    for (size_t i = 0; i < n; i++)
        save[(dst - A) + i] = tmp[i];
    void *ret = p_memmove(dst, src, n);
    (void)lo;
    result(F_memmove, ret == dst && r_same(A, save, BUFSZ), n, "memmove");
}
static void t_memmove(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_bytes(a, n);
    guard_fill(d, n);
    void *ret = p_memmove(d, a, n);
    result(F_memmove, ret == d && r_same(d, a, n) && guards_ok(d, n), n, "memmove");
}
static void t_memset(u8 *a, u8 *b, u8 *d, size_t n)
{
    int c = rnd() % 3 == 0 ? 0 : (int)(rnd() & 0x1ff);
    guard_fill(d, n);
    void *ret = p_memset(d, c, n);
    result(F_memset, ret == d && r_all(d, (u8)c, n) && guards_ok(d, n), n, "memset");
}
/* b = copy of a, then maybe one byte changed at a random place */
static size_t make_pair(u8 *a, u8 *b, size_t n, int str)
{
    if (str)
        fill_str(a, n, 4, 0), a[n] = 0;
    else
        fill_bytes(a, n);
    memcpy(b, a, n + str);
    if (n && rnd() % 4) {
        size_t p = rnd() % n;
        if (str) {
            unsigned r = rnd() % 4;
            b[p] = r == 0 ? 0 : r == 1 ? 0xc3 : 'a' + rnd() % 5;
        } else {
            b[p] = (u8)rnd();
        }
        return p;
    }
    return n;
}
static void t_memcmp(u8 *a, u8 *b, u8 *d, size_t n)
{
    make_pair(a, b, n, 0);
    result(F_memcmp, sgn(p_memcmp(a, b, n)) == r_memcmp(a, b, n) &&
                     sgn(p_memcmp(b, a, n)) == r_memcmp(b, a, n), n, "memcmp sign");
}
static void t_bcmp(u8 *a, u8 *b, u8 *d, size_t n)
{
    make_pair(a, b, n, 0);
    result(F_bcmp, (p_bcmp(a, b, n) != 0) == (r_memcmp(a, b, n) != 0), n, "bcmp");
}
static void t_memchr(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_str(a, n, 8, 0);
    int c = pick_char();
    result(F_memchr, p_memchr(a, c, n) == r_memchr(a, c, n, 0), n, "memchr");
}
static void t_memrchr(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_str(a, n, 8, 0);
    int c = pick_char();
    result(F_memrchr, p_memrchr(a, c, n) == r_memchr(a, c, n, 1), n, "memrchr");
}
static void t_rawmemchr(u8 *a, u8 *b, u8 *d, size_t n)
{
    /* str-footprint: the byte at a[n] is the one looked for if no earlier */
    fill_str(a, n, 8, 0);
    int c = 'a' + rnd() % 10;
    a[n] = (u8)c;
    result(F_rawmemchr, p_rawmemchr(a, c) == r_memchr(a, c, n + 1, 0), n, "rawmemchr");
    a[n] = 0;
}
static void t_strlen(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_bytes(a, n);
    for (size_t i = 0; i < n; i++)
        if (!a[i])
            a[i] = 0x80;
    a[n] = 0;
    result(F_strlen, p_strlen((char *)a) == n && r_strlen((char *)a) == n, n, "strlen");
}
static void t_strnlen(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_str(a, n, 8, 1);
    a[n] = 0;
    size_t lims[4] = {n, n / 2, n + 1, n + 1000 + rnd() % 64};
    size_t lim = lims[rnd() % 4];
    size_t want = n < lim ? n : lim;
    result(F_strnlen, p_strnlen((char *)a, lim) == want, n, "strnlen");
}
static void t_strchr(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_str(a, n, 8, 0);
    a[n] = 0;
    int c = pick_char();
    result(F_strchr, p_strchr((char *)a, c) == r_strchr((char *)a, c, 0), n, "strchr");
}
static void t_strrchr(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_str(a, n, 8, 0);
    a[n] = 0;
    int c = pick_char();
    result(F_strrchr, p_strrchr((char *)a, c) == r_strchr((char *)a, c, 1), n, "strrchr");
}
static void t_strchrnul(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_str(a, n, 8, 0);
    a[n] = 0;
    int c = pick_char();
    const char *w = r_strchr((char *)a, c, 0);
    if (!w)
        w = (char *)a + n;
    result(F_strchrnul, p_strchrnul((char *)a, c) == w, n, "strchrnul");
}
static void t_strcmp(u8 *a, u8 *b, u8 *d, size_t n)
{
    make_pair(a, b, n, 1);
    int w = r_strncmp((char *)a, (char *)b, SIZE_MAX, 0);
    result(F_strcmp, sgn(p_strcmp((char *)a, (char *)b)) == w &&
                     sgn(p_strcmp((char *)b, (char *)a)) == -w, n, "strcmp sign");
}
static void t_strncmp(u8 *a, u8 *b, u8 *d, size_t n)
{
    size_t p = make_pair(a, b, n, 1);
    size_t lims[5] = {n, p, p + 1, n + 1 + rnd() % 100, rnd() % (n + 1)};
    size_t lim = lims[rnd() % 5];
    int w = r_strncmp((char *)a, (char *)b, lim, 0);
    result(F_strncmp, sgn(p_strncmp((char *)a, (char *)b, lim)) == w &&
                      sgn(p_strncmp((char *)b, (char *)a, lim)) == -w, n, "strncmp sign");
}
/* b = a with random case flips, maybe one difference */
static size_t make_case_pair(u8 *a, u8 *b, size_t n)
{
    fill_str(a, n, 4, 1);
    a[n] = 0;
    for (size_t i = 0; i <= n; i++)
        b[i] = a[i] && (rnd() & 1) ? a[i] ^ 0x20 : a[i];
    if (n && rnd() % 3) {
        size_t p = rnd() % n;
        unsigned r = rnd() % 4;
        b[p] = r == 0 ? 0 : r == 1 ? '@' : r == 2 ? '[' : 'A' + rnd() % 5;
        return p;
    }
    return n;
}
static void t_strcasecmp(u8 *a, u8 *b, u8 *d, size_t n)
{
    make_case_pair(a, b, n);
    int w = r_strncmp((char *)a, (char *)b, SIZE_MAX, 1);
    result(F_strcasecmp, sgn(p_strcasecmp((char *)a, (char *)b)) == w &&
                         sgn(p_strcasecmp((char *)b, (char *)a)) == -w, n, "strcasecmp sign");
}
static void t_strncasecmp(u8 *a, u8 *b, u8 *d, size_t n)
{
    size_t p = make_case_pair(a, b, n);
    size_t lims[4] = {n, p, p + 1, rnd() % (n + 2)};
    size_t lim = lims[rnd() % 4];
    int w = r_strncmp((char *)a, (char *)b, lim, 1);
    result(F_strncasecmp, sgn(p_strncasecmp((char *)a, (char *)b, lim)) == w &&
                          sgn(p_strncasecmp((char *)b, (char *)a, lim)) == -w, n, "strncasecmp sign");
}
static void t_strcpy(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_str(a, n, 26, 1);
    a[n] = 0;
    guard_fill(d, n + 1);
    char *ret = p_strcpy((char *)d, (char *)a);
    result(F_strcpy, ret == (char *)d && r_same(d, a, n + 1) && guards_ok(d, n + 1), n, "strcpy");
}
static void t_stpcpy(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_str(a, n, 26, 1);
    a[n] = 0;
    guard_fill(d, n + 1);
    char *ret = p_stpcpy((char *)d, (char *)a);
    result(F_stpcpy, ret == (char *)d + n && r_same(d, a, n + 1) && guards_ok(d, n + 1), n, "stpcpy");
}
static void t_strncpy(u8 *a, u8 *b, u8 *d, size_t n)
{
    fill_str(a, n, 26, 1);
    a[n] = 0;
    size_t lims[4] = {n, n + 1, n / 2, n + 1 + rnd() % 80};
    size_t lim = lims[rnd() % 4];
    guard_fill(d, lim);
    char *ret = p_strncpy((char *)d, (char *)a, lim);
    size_t c = n < lim ? n : lim;
    result(F_strncpy, ret == (char *)d && r_same(d, a, c) && r_all(d + c, 0, lim - c) &&
                      guards_ok(d, lim), n, "strncpy");
}
static void t_strcat(u8 *a, u8 *b, u8 *d, size_t n)
{
    size_t m = rnd() % 40;
    fill_str(a, n, 26, 1);
    a[n] = 0;
    guard_fill(d, m + n + 1);
    fill_str(d, m, 3, 0);
    d[m] = 0;
    memcpy(T, d, m);
    char *ret = p_strcat((char *)d, (char *)a);
    result(F_strcat, ret == (char *)d && r_same(d, T, m) && r_same(d + m, a, n + 1) &&
                     guards_ok(d, m + n + 1), n, "strcat");
}
static void t_strncat(u8 *a, u8 *b, u8 *d, size_t n)
{
    size_t m = rnd() % 40;
    fill_str(a, n, 26, 1);
    a[n] = 0;
    size_t lims[4] = {n, n + 1, n / 2, n + 1 + rnd() % 80};
    size_t lim = lims[rnd() % 4];
    size_t c = n < lim ? n : lim;
    guard_fill(d, m + c + 1);
    fill_str(d, m, 3, 0);
    d[m] = 0;
    memcpy(T, d, m);
    char *ret = p_strncat((char *)d, (char *)a, lim);
    result(F_strncat, ret == (char *)d && r_same(d, T, m) && r_same(d + m, a, c) &&
                      d[m + c] == 0 && guards_ok(d, m + c + 1), n, "strncat");
}
/* needle in b: a substring of the haystack (maybe mutated) or random */
static size_t make_needle(u8 *a, u8 *b, size_t n, int mixed, int str)
{
    fill_str(a, n, 2, mixed);
    if (str)
        a[n] = 0;
    size_t k = rnd() % 24;
    if (k > n + 2)
        k = n + 2;
    if (n && rnd() % 3) {
        size_t p = rnd() % n;
        if (k > n - p)
            k = n - p;
        memcpy(b, a + p, k);
        if (k && rnd() % 4 == 0)
            b[rnd() % k] ^= 0x20 | (rnd() & 1);
    } else {
        fill_str(b, k, 2, mixed);
    }
    b[k] = 0;
    return k;
}
static void t_strstr(u8 *a, u8 *b, u8 *d, size_t n)
{
    /* the needle lives in d (a str-footprint test has only n + 1 bytes at b) */
    size_t k = make_needle(a, d, n, 0, 1);
    result(F_strstr, (u8 *)p_strstr((char *)a, (char *)d) == r_memmem(a, n, d, k, 0), n, "strstr");
}
static void t_strcasestr(u8 *a, u8 *b, u8 *d, size_t n)
{
    size_t k = make_needle(a, d, n, 1, 1);
    if (n == 0 && k == 0) /* musl returns NULL for ("", ""), glibc the haystack */
        d[0] = 'a', d[1] = 0, k = 1;
    result(F_strcasestr, (u8 *)p_strcasestr((char *)a, (char *)d) == r_memmem(a, n, d, k, 1), n, "strcasestr");
}
static void t_memmem(u8 *a, u8 *b, u8 *d, size_t n)
{
    size_t k = make_needle(a, d, n, 0, 0);
    result(F_memmem, p_memmem(a, n, d, k) == r_memmem(a, n, d, k, 0), n, "memmem");
}
static void make_set(char *set)
{
    size_t k = rnd() % 6;
    for (size_t i = 0; i < k; i++)
        set[i] = 'a' + rnd() % 8;
    set[k] = 0;
}
static void t_strspn(u8 *a, u8 *b, u8 *d, size_t n)
{
    char set[8];
    fill_str(a, n, 8, 0);
    a[n] = 0;
    make_set(set);
    strcat(set, "ab");
    result(F_strspn, p_strspn((char *)a, set) == r_span((char *)a, set, 1), n, "strspn");
}
static void t_strcspn(u8 *a, u8 *b, u8 *d, size_t n)
{
    char set[8];
    fill_str(a, n, 8, 0);
    a[n] = 0;
    make_set(set);
    result(F_strcspn, p_strcspn((char *)a, set) == r_span((char *)a, set, 0), n, "strcspn");
}
static void t_strpbrk(u8 *a, u8 *b, u8 *d, size_t n)
{
    char set[8];
    fill_str(a, n, 10, 0);
    a[n] = 0;
    make_set(set);
    size_t w = r_span((char *)a, set, 0);
    result(F_strpbrk, p_strpbrk((char *)a, set) == (w == n ? NULL : (char *)a + w), n, "strpbrk");
}

/* wide: n counts bytes of footprint here too; the drivers pass 4-aligned
 * pointers for these and the wide length is n / 4. */
static void wfill(wchar_t *w, size_t n, int k)
{
    for (size_t i = 0; i < n; i++) {
        unsigned r = rnd();
        w[i] = (r & 0x300) == 0x300 ? (wchar_t)(0x10000 + r % 0x1000) : (wchar_t)('a' + r % k);
    }
}
static wchar_t pick_wchar(void)
{
    unsigned r = rnd() % 8;
    return r == 0 ? 0 : r == 1 ? 0x10fff : r == 2 ? (wchar_t)0x80000061 /* negative */ : (wchar_t)('a' + rnd() % 6);
}
static void t_wcslen(u8 *a, u8 *b, u8 *d, size_t n)
{
    wchar_t *w = (wchar_t *)a;
    size_t k = n / 4;
    wfill(w, k, 8);
    w[k] = 0;
    result(F_wcslen, p_wcslen(w) == k, n, "wcslen");
}
static void t_wcschr(u8 *a, u8 *b, u8 *d, size_t n)
{
    wchar_t *w = (wchar_t *)a;
    size_t k = n / 4;
    wfill(w, k, 8);
    w[k] = 0;
    wchar_t c = pick_wchar();
    wchar_t *want = NULL;
    for (size_t i = 0; i <= k; i++)
        if (w[i] == c) {
            want = w + i;
            break;
        }
    result(F_wcschr, p_wcschr(w, c) == want, n, "wcschr");
}
static void t_wcscmp(u8 *a, u8 *b, u8 *d, size_t n)
{
    wchar_t *x = (wchar_t *)a, *y = (wchar_t *)b;
    size_t k = n / 4;
    wfill(x, k, 3);
    x[k] = 0;
    memcpy(y, x, (k + 1) * 4);
    if (k && rnd() % 4) {
        unsigned r = rnd() % 4;
        y[rnd() % k] = r == 0 ? 0 : r == 1 ? (wchar_t)0x7fff0000 : r == 2 ? 0x10000 : (wchar_t)('a' + rnd() % 4);
    }
    int want = 0;
    for (size_t i = 0;; i++) {
        if (x[i] != y[i]) {
            want = x[i] < y[i] ? -1 : 1; /* no negatives: libcs differ (musl subtracts) */
            break;
        }
        if (!x[i])
            break;
    }
    result(F_wcscmp, sgn(p_wcscmp(x, y)) == want && sgn(p_wcscmp(y, x)) == -want, n, "wcscmp sign");
}
static void t_wmemset(u8 *a, u8 *b, u8 *d, size_t n)
{
    wchar_t *w = (wchar_t *)d;
    size_t k = n / 4;
    wchar_t c = (wchar_t)(rnd() * 2654435761u);
    guard_fill(d, k * 4);
    wchar_t *ret = p_wmemset(w, c, k);
    int ok = ret == w && guards_ok(d, k * 4);
    for (size_t i = 0; i < k; i++)
        ok &= w[i] == c;
    result(F_wmemset, ok, n, "wmemset");
}
static void t_wmemchr(u8 *a, u8 *b, u8 *d, size_t n)
{
    wchar_t *w = (wchar_t *)a;
    size_t k = n / 4;
    wfill(w, k, 8);
    wchar_t c = pick_wchar();
    wchar_t *want = NULL;
    for (size_t i = 0; i < k; i++)
        if (w[i] == c) {
            want = w + i;
            break;
        }
    result(F_wmemchr, p_wmemchr(w, c, k) == want, n, "wmemchr");
}

/* str: footprint n + 1 (NUL); wide: 4-byte alignment, footprint n rounded
 * down to 4 plus one wchar_t. */
enum { MEM, STR, WIDE };
static const struct {
    testfn fn;
    int kind;
    int cross; /* in the full alignment cross product */
} tests[NF] = {
    [F_memcpy] = {t_memcpy, MEM, 1}, [F_memmove] = {t_memmove, MEM, 1},
    [F_memset] = {t_memset, MEM, 0}, [F_memcmp] = {t_memcmp, MEM, 1},
    [F_bcmp] = {t_bcmp, MEM, 1}, [F_memchr] = {t_memchr, MEM, 0},
    [F_memrchr] = {t_memrchr, MEM, 0}, [F_rawmemchr] = {t_rawmemchr, STR, 0},
    [F_strlen] = {t_strlen, STR, 0}, [F_strnlen] = {t_strnlen, STR, 0},
    [F_strchr] = {t_strchr, STR, 0}, [F_strrchr] = {t_strrchr, STR, 0},
    [F_strchrnul] = {t_strchrnul, STR, 0}, [F_strcmp] = {t_strcmp, STR, 1},
    [F_strncmp] = {t_strncmp, STR, 1}, [F_strcasecmp] = {t_strcasecmp, STR, 0},
    [F_strncasecmp] = {t_strncasecmp, STR, 0}, [F_strcpy] = {t_strcpy, STR, 1},
    [F_stpcpy] = {t_stpcpy, STR, 0}, [F_strncpy] = {t_strncpy, STR, 0},
    [F_strcat] = {t_strcat, STR, 0}, [F_strncat] = {t_strncat, STR, 0},
    [F_strstr] = {t_strstr, STR, 0}, [F_strcasestr] = {t_strcasestr, STR, 0},
    [F_strspn] = {t_strspn, STR, 0}, [F_strcspn] = {t_strcspn, STR, 0},
    [F_strpbrk] = {t_strpbrk, STR, 0}, [F_memmem] = {t_memmem, MEM, 0},
    [F_wcslen] = {t_wcslen, WIDE, 0}, [F_wcschr] = {t_wcschr, WIDE, 0},
    [F_wcscmp] = {t_wcscmp, WIDE, 0}, [F_wmemset] = {t_wmemset, WIDE, 0},
    [F_wmemchr] = {t_wmemchr, WIDE, 0},
};

/* one call at the given alignments in the static buffers */
static void at(int f, int da, int sa, size_t n)
{
    if (tests[f].kind == WIDE) {
        da &= ~3;
        sa &= ~3;
        n &= ~(size_t)3;
    }
    cur_da = da;
    cur_sa = sa;
    int sb = (sa * 5 + 11) & 63;
    if (tests[f].kind == WIDE)
        sb &= ~3;
    tests[f].fn(A + GUARD + sa, B + GUARD + sb, R + GUARD + da, n);
}

static const size_t cross_lens[] = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
    20, 23, 24, 25, 31, 32, 33, 47, 48, 49, 63, 64, 65, 95, 96, 97, 127,
    128, 129, 200, 255, 256, 257,
};
#define NCROSS (sizeof cross_lens / sizeof cross_lens[0])

static long pagesz;
static u8 *pages; /* NONE RW NONE RW NONE */

static void page_tests(int f)
{
    u8 *p1 = pages + pagesz, *p2 = pages + 3 * pagesz;
    int kind = tests[f].kind;
    cur_mode = "page";
    for (size_t n = 0; n <= 160; n++) {
        size_t foot = kind == MEM ? n : kind == STR ? n + 1 : (n & ~(size_t)3) + 4;
        size_t nn = kind == WIDE ? n & ~(size_t)3 : n;
        /* ends exactly at the protected page */
        cur_da = (int)((n * 13) & 63);
        if (kind == WIDE)
            cur_da &= ~3; /* glibc's SSE2 wmemset needs 4-aligned wchar_t */
        cur_sa = (int)(pagesz - foot) & 63;
        tests[f].fn(p1 + pagesz - foot, p2 + pagesz - foot, R + GUARD + cur_da, nn);
        /* starts exactly after a protected page */
        cur_sa = 0;
        tests[f].fn(p1, p2, R + GUARD + cur_da, nn);
        /* source at page end, second operand at a page start */
        tests[f].fn(p1 + pagesz - foot, p2, R + GUARD + cur_da, nn);
    }
}

static void big_tests(void)
{
    static const size_t sizes[] = {4096, 65536, (1 << 20) + 17};
    size_t cap = (1 << 20) + 17 + 256;
    u8 *x = malloc(cap), *y = malloc(cap), *z = malloc(cap);
    cur_mode = "big";
    for (int si = 0; si < 3; si++) {
        size_t n = sizes[si];
        for (int k = 0; k < 3; k++) {
            int da = (int[]){0, 1, 63}[k], sa = (int[]){0, 17, 32}[k];
            cur_da = da;
            cur_sa = sa;
            for (size_t i = 0; i < n + 128; i++)
                x[i] = (u8)(i * 7 + (i >> 9) + k);
            memset(y, 0xee, n + 256);
            int ok = p_memcpy(y + 64 + da, x + sa, n) == y + 64 + da &&
                     r_same(y + 64 + da, x + sa, n) && r_all(y, 0xee, 64 + da) &&
                     r_all(y + 64 + da + n, 0xee, 64);
            result(F_memcpy, ok, n, "big memcpy");
            int c = 0x40 + k;
            ok = p_memset(y + 64 + da, c, n) == y + 64 + da && r_all(y + 64 + da, (u8)c, n) &&
                 r_all(y, 0xee, 64 + da) && r_all(y + 64 + da + n, 0xee, 64);
            result(F_memset, ok, n, "big memset");
            /* memmove overlapping forwards (dst > src) and backwards */
            for (int dir = 0; dir < 2; dir++) {
                size_t shift = (size_t[]){1, 15, 3000}[k];
                if (shift > n / 2)
                    shift = n / 2;
                size_t mv = n - shift;
                memcpy(y, x, n + 128);
                memcpy(z, x, n + 128);
                u8 *dst = dir ? y + sa : y + sa + shift, *src = dir ? y + sa + shift : y + sa;
                u8 *zdst = z + (dst - y), *zsrc = z + (src - y);
                if (zdst > zsrc)
                    for (size_t i = mv; i-- > 0;)
                        zdst[i] = zsrc[i];
                else
                    for (size_t i = 0; i < mv; i++)
                        zdst[i] = zsrc[i];
                ok = p_memmove(dst, src, mv) == dst && r_same(y, z, n + 128);
                result(F_memmove, ok, mv, dir ? "big memmove backwards" : "big memmove forwards");
            }
            /* memcmp: equal, then differing near the end */
            memcpy(y, x, n + 128);
            ok = p_memcmp(y + sa, x + sa, n) == 0;
            y[sa + n - 1 - k] ^= 0x80;
            ok &= sgn(p_memcmp(y + sa, x + sa, n)) == r_memcmp(y + sa, x + sa, n);
            result(F_memcmp, ok, n, "big memcmp");
            /* memchr and strlen on a long run with the target at the end */
            memset(y + sa, 'q', n);
            y[sa + n - 1] = 'Z';
            y[sa + n] = 0;
            ok = p_memchr(y + sa, 'Z', n) == y + sa + n - 1 && p_memchr(y + sa, 'Y', n) == NULL;
            result(F_memchr, ok, n, "big memchr");
            result(F_strlen, p_strlen((char *)y + sa) == n, n, "big strlen");
        }
    }
    free(x);
    free(y);
    free(z);
}

int main(void)
{
    pagesz = sysconf(_SC_PAGESIZE);
    pages = mmap(NULL, 5 * pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pages == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    for (int i = 0; i < 5; i += 2)
        if (mprotect(pages + i * pagesz, pagesz, PROT_NONE)) {
            perror("mprotect");
            return 2;
        }

    for (int f = 0; f < NF; f++) {
        /* sweep: every length, two alignment pairs each */
        cur_mode = "sweep";
        for (size_t n = 0; n <= MAXLEN; n++) {
            at(f, (int)(n * 37) & 63, (int)(n * 11 + 5) & 63, n);
            at(f, (int)(n * 29 + 7) & 63, (int)(n * 53 + 40) & 63, n);
        }
        /* cross product of alignments 0..16, and a sample of 17..63 */
        cur_mode = "cross";
        if (tests[f].cross) {
            for (int da = 0; da <= 16; da++)
                for (int sa = 0; sa <= 16; sa++)
                    for (size_t i = 0; i < NCROSS; i++)
                        at(f, da, sa, cross_lens[i]);
            for (int i = 0; i < 200; i++)
                at(f, 17 + rnd() % 47, 17 + rnd() % 47, cross_lens[rnd() % NCROSS]);
        } else {
            for (int a = 0; a < 64; a++)
                for (size_t i = 0; i < NCROSS; i += 3)
                    at(f, (a * 7) & 63, a, cross_lens[i]);
        }
        page_tests(f);
    }

    /* memmove with overlap in one buffer, both directions, all shifts */
    cur_mode = "overlap";
    for (size_t n = 0; n <= MAXLEN; n += 1 + n / 16)
        for (int s = 0; s < 64; s += 1 + (int)(n % 5)) {
            cur_da = s;
            cur_sa = 63 - s;
            fill_bytes(A, BUFSZ);
            t_memmove_ov(A + GUARD + s, A + GUARD + 63 - s, n);
        }

    big_tests();

    for (int f = 0; f < NF; f++)
        printf("%-12s %ld passed\n", fname[f], passes[f]);
    if (failures) {
        printf("%ld failures\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
