/* x86-64-v3 work for tests/e2e.rs (built with -march=x86-64-v3): loops the
 * compiler vectorizes with AVX2 and FMA, F16C conversions, gathers, masked
 * moves, permutes and broadcasts through intrinsics, and glibc's string
 * functions (its AVX2 ifuncs, chosen from CPUID). Prints checksums; the
 * output must match a native run bit for bit. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 1031

static float fa[N], fb[N], fc[N];
static double da[N], db[N];
static int32_t ia[N], ib[N];
static uint8_t ba[N], bb[N];
static int16_t sa[N];

static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull; }

static uint64_t hash(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = mix(h, b[i]);
    return h;
}

__attribute__((noinline)) static void saxpy(float *y, const float *x, float a, int n) {
    for (int i = 0; i < n; i++) y[i] = a * x[i] + y[i];
}

__attribute__((noinline)) static double dot(const double *x, const double *y, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s = fma(x[i], y[i], s);
    return s;
}

__attribute__((noinline)) static void int_ops(int32_t *d, const int32_t *a, const int32_t *b, int n) {
    for (int i = 0; i < n; i++) {
        int32_t x = a[i] * 7 - (b[i] >> 3);
        d[i] = x > b[i] ? x : b[i] ^ (a[i] << (i & 7));
    }
}

__attribute__((noinline)) static void byte_ops(uint8_t *d, const uint8_t *a, const uint8_t *b, int n) {
    for (int i = 0; i < n; i++) {
        unsigned s = a[i] + b[i];
        d[i] = (uint8_t)(s > 255 ? 255 : s) ^ (uint8_t)abs(a[i] - b[i]);
    }
}

__attribute__((noinline)) static void convert(int16_t *s, float *f, const int32_t *a, const double *x, int n) {
    for (int i = 0; i < n; i++) {
        f[i] = (float)a[i] * 0.25f + (float)x[i];
        s[i] = (int16_t)(a[i] >> 4);
    }
}

__attribute__((noinline)) static float minmax(const float *x, int n) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    return hi - lo;
}

static void intrinsics(void) {
    int32_t idx[8] = {7, 0, 3, 1000, 5, 2, 1030, 9};
    __m256i vi = _mm256_loadu_si256((const __m256i *)idx);
    __m256i g = _mm256_i32gather_epi32(ia, vi, 4);
    __m256 gf = _mm256_i32gather_ps(fa, vi, 4);
    __m256d gd = _mm256_i32gather_pd(da, _mm_loadu_si128((const __m128i *)idx), 8);
    __m256i mask = _mm256_setr_epi32(-1, 0, -1, 0, 0, -1, -1, 0);
    __m256i gm = _mm256_mask_i32gather_epi32(_mm256_set1_epi32(42), ia, vi, mask, 4);
    __m256 ml = _mm256_maskload_ps(fb + 100, mask);
    float out[8] = {0};
    _mm256_maskstore_ps(out, mask, gf);
    __m256i perm = _mm256_permutevar8x32_epi32(g, _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0));
    __m256i p4 = _mm256_permute4x64_epi64(perm, 0x1b);
    __m256 pv = _mm256_permutevar_ps(gf, _mm256_setr_epi32(3, 2, 1, 0, 0, 1, 2, 3));
    __m256i b = _mm256_broadcastd_epi32(_mm_cvtsi32_si128(ia[17]));
    __m256 bs = _mm256_broadcast_ss(&fa[33]);
    __m256i sh = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)ba), _mm256_loadu_si256((const __m256i *)bb));
    __m256i bl = _mm256_blend_epi32(g, b, 0xa5);
    __m256 fm = _mm256_fmadd_ps(gf, bs, ml);
    __m256d fms = _mm256_fmsub_pd(gd, gd, _mm256_set1_pd(0.5));
    __m128i ph = _mm256_cvtps_ph(fm, _MM_FROUND_TO_NEAREST_INT);
    __m256 back = _mm256_cvtph_ps(ph);
    __m256i ins = _mm256_inserti128_si256(p4, _mm256_extracti128_si256(sh, 1), 0);
    __m256i sv = _mm256_sllv_epi32(g, _mm256_setr_epi32(0, 1, 2, 3, 31, 32, 5, 40));
    __m256i sr = _mm256_srav_epi32(g, _mm256_setr_epi32(0, 1, 2, 3, 31, 32, 5, 40));
    __m256 dp = _mm256_dp_ps(gf, bs, 0xf1);
    __m256 rd = _mm256_round_ps(_mm256_mul_ps(gf, _mm256_set1_ps(1.37f)), _MM_FROUND_TO_NEG_INF);
    __m256 sq = _mm256_sqrt_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), gf));
    __m256 cmp = _mm256_cmp_ps(gf, ml, _CMP_NGE_UQ);
    int mm = _mm256_movemask_ps(cmp) | (_mm256_movemask_epi8(sh) << 8);
    int tz = _mm256_testz_si256(g, b), tc = _mm256_testc_si256(g, b);
    __m256 hadd = _mm256_hadd_ps(gf, ml);
    __m256i mad = _mm256_madd_epi16(g, sh);
    __m256i sad = _mm256_sad_epu8(sh, g);
    __m256i pk = _mm256_packs_epi32(sv, sr);
    __m256i un = _mm256_unpackhi_epi8(pk, sh);
    __m128 f16 = _mm_cvtph_ps(_mm_set1_epi16(0x3c01));
    __m128i f16b = _mm_cvtps_ph(_mm_set1_ps(65519.0f), _MM_FROUND_TO_ZERO);
    struct {
        __m256i a[12];
        __m256 f[10];
        __m256d d[2];
        __m128i h[2];
        __m128 q;
        float out[8];
        int m[3];
    } all;
    memset(&all, 0, sizeof all);
    all.a[0] = g, all.a[1] = gm, all.a[2] = perm, all.a[3] = p4, all.a[4] = b, all.a[5] = sh;
    all.a[6] = bl, all.a[7] = ins, all.a[8] = sv, all.a[9] = sr, all.a[10] = mad, all.a[11] = _mm256_add_epi64(sad, un);
    all.f[0] = gf, all.f[1] = ml, all.f[2] = pv, all.f[3] = bs, all.f[4] = fm, all.f[5] = back;
    all.f[6] = dp, all.f[7] = rd, all.f[8] = _mm256_add_ps(sq, cmp), all.f[9] = hadd;
    all.d[0] = gd, all.d[1] = fms, all.h[0] = ph, all.h[1] = f16b, all.q = f16;
    memcpy(all.out, out, sizeof out);
    all.m[0] = mm, all.m[1] = tz, all.m[2] = tc;
    printf("intrinsics %016llx\n", (unsigned long long)hash(&all, sizeof all));
    printf("f16 %.9g %.9g %04x\n", _cvtsh_ss(_cvtss_sh(3.14159f, 0)), _mm_cvtss_f32(f16), _mm_extract_epi16(f16b, 0));
    printf("gather %d %d %d %.3f %.3f\n", _mm256_extract_epi32(g, 3), _mm256_extract_epi32(gm, 1),
           _mm256_extract_epi32(gm, 2), out[0], _mm256_cvtsd_f64(gd));
}

static void strings(void) {
    static char buf[70000];
    uint64_t h = 0;
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = 'a' + (i * 7 + i / 13) % 26;
    for (int len = 0; len < 300; len += 7) {
        for (int off = 0; off < 64; off += 9) {
            char *s = buf + 1000 + off;
            char save = s[len];
            s[len] = 0;
            h = mix(h, strlen(s));
            h = mix(h, (uint64_t)(strchr(s, 'q') ? strchr(s, 'q') - s : -1));
            h = mix(h, (uint64_t)(strrchr(s, 'e') ? strrchr(s, 'e') - s : -1));
            h = mix(h, (uint64_t)(memchr(s, 'z', len) ? (char *)memchr(s, 'z', len) - s : -1));
            h = mix(h, (uint64_t)strcmp(s, s + 1) + 7);
            h = mix(h, (uint64_t)memcmp(s, buf + 2000, len) + 5);
            h = mix(h, strnlen(s, len / 2 + 1));
            char *dst = buf + 40000 + off;
            memcpy(dst, s, len + 1);
            h = mix(h, strcmp(dst, s) == 0);
            memmove(dst + 3, dst, len);
            memset(dst, 'x', len / 3);
            h = mix(h, hash(dst, len + 3));
            h = mix(h, strspn(s, "abcdefgh"));
            s[len] = save;
        }
    }
    memcpy(buf + 20000, buf + 50000, 15000);
    h = mix(h, hash(buf + 20000, 15000));
    h = mix(h, (uint64_t)(strstr(buf, "zz") ? strstr(buf, "zz") - buf : -1));
    printf("strings %016llx\n", (unsigned long long)h);
}

int main(void) {
    for (int i = 0; i < N; i++) {
        fa[i] = (float)i / 3.0f - 100.0f;
        fb[i] = 1.0f / (float)(i + 1);
        da[i] = i * 0.001 - 0.25;
        db[i] = (double)(N - i) * 1.5;
        ia[i] = (int32_t)(i * 2654435761u);
        ib[i] = (int32_t)(i * 40503u) - 20000;
        ba[i] = (uint8_t)(i * 31);
        bb[i] = (uint8_t)(i * 17 + 3);
    }
    memcpy(fc, fb, sizeof fc);
    saxpy(fc, fa, 2.5f, N);
    printf("saxpy %016llx\n", (unsigned long long)hash(fc, sizeof fc));
    printf("dot %.17g\n", dot(da, db, N));
    int32_t id[N];
    int_ops(id, ia, ib, N);
    printf("int %016llx\n", (unsigned long long)hash(id, sizeof id));
    uint8_t bd[N];
    byte_ops(bd, ba, bb, N);
    printf("bytes %016llx\n", (unsigned long long)hash(bd, sizeof bd));
    convert(sa, fc, ia, da, N);
    printf("convert %016llx %016llx\n", (unsigned long long)hash(sa, sizeof sa), (unsigned long long)hash(fc, sizeof fc));
    printf("minmax %.9g\n", minmax(fa, N));
    double s = 0;
    for (int i = 0; i < N; i++) s += sqrt(fabs(da[i])) * sin(da[i]);
    printf("libm %.17g\n", s);
    intrinsics();
    strings();
    return 0;
}
