/* qmtik._fused: the training step's elementwise loops, each in one pass.

   Optional: setup.py builds it when a C compiler is present, and qmtik/fused.py falls back to
   NumPy when it is not. Every function computes exactly what fused.py's NumPy form computes,
   operation for operation in float32 (no contraction into fused multiply-adds: setup.py
   passes -ffp-contract=off), so a model trains to the same bits either way; the tests in
   tests/test_fused.py compare the two forms bit for bit.

   Arrays come in as buffers that fused.py (and fused_windows.py, for the layers over windows)
   have checked: C-contiguous, float32 unless said, of the sizes given. Nothing here allocates
   but col2im's and max pooling's small tables of which window reads which input row. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* On x86-64 with GCC or clang, the loops also run AVX2 forms where the processor has it,
   chosen at run time: the same IEEE operations, twice as wide (no FMA: that is a separate
   target, and contraction is off). Adam's loop is cloned by GCC; the weight codes' is written
   with intrinsics. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define QMTIK_WIDE __attribute__((target_clones("avx2", "default")))
#else
#define QMTIK_WIDE
#endif
#if defined(__GNUC__) && defined(__x86_64__)
#define QMTIK_AVX2 1
#include <immintrin.h>
#else
#define QMTIK_AVX2 0
#endif

/* Whether a float is infinite or NaN, from its exponent bits: a test compilers vectorize. */
static inline int not_finite(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return (bits & 0x7f800000u) == 0x7f800000u;
}

/* x, or +0.0 when x is subnormal or zero (|x| below the smallest normal float): the product
   with 0 or 1 and the sum with +0.0 (which makes -0.0 +0.0) vectorize where a select does not. */
static inline float flush_subnormal(float x) {
    return x * (float)(fabsf(x) >= FLT_MIN) + 0.0f;
}

/* Adam's update of one parameter array, in place: the moments, then the step.
   m = m*b1 + g*c1;  v = v*b2 + (g*c2)*g;  each 0 where below the smallest normal float;
   p = p - (m*step) / (sqrt(v) + eps)
   Returns how many results are not finite (the caller reports divergence). */
QMTIK_WIDE static Py_ssize_t adam_loop(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                            Py_ssize_t n, float b1, float c1, float b2, float c2, float eps, float step) {
    Py_ssize_t bad = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        float mi = m[i] * b1;
        mi = mi + g[i] * c1;
        mi = flush_subnormal(mi); /* subnormal moments are 0: see fused.adam_update */
        float vi = v[i] * b2;
        float w = g[i] * c2;
        vi = vi + w * g[i];
        vi = flush_subnormal(vi);
        float denominator = sqrtf(vi) + eps;
        float pi = p[i] - (mi * step) / denominator;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        bad += not_finite(pi) | not_finite(vi) | not_finite(mi);
    }
    return bad;
}

/* Each row's largest |w| (rows of a rows x cols matrix). Returns how many weights are not
   finite (their rows' results then mean nothing). A maximum is exact, so SSE2's 8 lanes at
   a time give the scalar loop's result; compilers do not vectorize this reduction themselves. */
static Py_ssize_t row_absmax_loop(const float *restrict w, Py_ssize_t rows, Py_ssize_t cols,
                                  float *restrict absmax) {
    Py_ssize_t bad = 0;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        float high = 0.0f;
        Py_ssize_t c = 0;
#if defined(__SSE2__)
        const __m128 magnitude = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
        const __m128i exponent = _mm_set1_epi32(0x7f800000);
        __m128 high0 = _mm_setzero_ps(), high1 = _mm_setzero_ps();
        __m128i odd = _mm_setzero_si128();
        for (; c + 8 <= cols; c += 8) {
            __m128 a = _mm_and_ps(_mm_loadu_ps(row + c), magnitude);
            __m128 b = _mm_and_ps(_mm_loadu_ps(row + c + 4), magnitude);
            high0 = _mm_max_ps(high0, a);
            high1 = _mm_max_ps(high1, b);
            odd = _mm_sub_epi32(odd, _mm_cmpeq_epi32(_mm_and_si128(_mm_castps_si128(a), exponent), exponent));
            odd = _mm_sub_epi32(odd, _mm_cmpeq_epi32(_mm_and_si128(_mm_castps_si128(b), exponent), exponent));
        }
        float lanes[4];
        int32_t counts[4];
        _mm_storeu_ps(lanes, _mm_max_ps(high0, high1));
        _mm_storeu_si128((__m128i *)counts, odd);
        for (int k = 0; k < 4; k++) {
            high = lanes[k] > high ? lanes[k] : high;
            bad += counts[k];
        }
#endif
        for (; c < cols; c++) {
            float x = fabsf(row[c]);
            bad += not_finite(x);
            high = x > high ? x : high;
        }
        absmax[r] = high;
    }
    return bad;
}

/* x rounded to the nearest integer, halves away from zero, as C's roundf and NumPy's
   quantization.round_half_away, sign of zero kept; written with a truncating conversion
   (exact below 2**23, where every float is already an integer) so that it vectorizes. */
static inline float round_half_away(float x) {
    int small = fabsf(x) < 8388608.0f;
    float safe = small ? x : 0.0f;
    float whole = (float)(int32_t)safe;
    float part = safe - whole; /* exact */
    whole += (float)(part >= 0.5f) - (float)(part <= -0.5f);
    return small ? copysignf(whole, x) : x;
}

/* One weight code: w / scale rounded half away from zero, clamped to [-high, high]. */
static inline float weight_code(float w, float scale, float high) {
    float code = round_half_away(w / scale);
    code = code > high ? high : code;
    return code < -high ? -high : code;
}

#if QMTIK_AVX2
/* weight_code on 8 weights at once with AVX2 (the scalar steps, the same IEEE operations;
   compilers do not vectorize the scalar form for AVX2). Weights are finite (weight_scales
   checks them); an infinite quotient rounds to itself, as round_half_away keeps it. */
__attribute__((target("avx2"))) static void weight_codes_avx2(const float *restrict row, float scale, float high,
                                                              Py_ssize_t cols, float *restrict out) {
    const __m256 scales = _mm256_set1_ps(scale), highs = _mm256_set1_ps(high), lows = _mm256_set1_ps(-high);
    const __m256 half = _mm256_set1_ps(0.5f), minus_half = _mm256_set1_ps(-0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    Py_ssize_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m256 x = _mm256_div_ps(_mm256_loadu_ps(row + c), scales);
        __m256 whole = _mm256_round_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        __m256 part = _mm256_sub_ps(x, whole); /* exact; NaN for an infinite x: no step */
        __m256 up = _mm256_and_ps(_mm256_cmp_ps(part, half, _CMP_GE_OQ), one);
        __m256 down = _mm256_and_ps(_mm256_cmp_ps(part, minus_half, _CMP_LE_OQ), one);
        whole = _mm256_add_ps(whole, _mm256_sub_ps(up, down));
        whole = _mm256_or_ps(_mm256_andnot_ps(sign, whole), _mm256_and_ps(sign, x)); /* copysign */
        _mm256_storeu_ps(out + c, _mm256_max_ps(_mm256_min_ps(whole, highs), lows));
    }
    for (; c < cols; c++) out[c] = weight_code(row[c], scale, high);
}
#endif

static int use_avx2 = 0; /* set when the module loads, on a processor that has AVX2 */

/* The codes of a rows x cols weight matrix over each row's scale, rounded half away from
   zero and clamped to [-limit, limit] when limit > 0, as floats (training multiplies with
   floats). */
static void weight_codes_loop(const float *restrict w, const float *restrict scales, Py_ssize_t rows,
                              Py_ssize_t cols, float limit, float *restrict codes) {
    float high = limit > 0 ? limit : INFINITY;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        float *out = codes + r * cols, scale = scales[r];
#if QMTIK_AVX2
        if (use_avx2) {
            weight_codes_avx2(row, scale, high, cols, out);
            continue;
        }
#endif
        for (Py_ssize_t c = 0; c < cols; c++) out[c] = weight_code(row[c], scale, high);
    }
}

/* The real values of a rows x cols matrix of codes, each row over its float64 scale:
   float(code * scale) computed in float64, as NumPy computes (codes * scales[:, None]).astype(float32). */
static void dequantize_rows_loop(const float *restrict codes, const double *restrict scales, Py_ssize_t rows,
                                 Py_ssize_t cols, float *restrict out) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *row = codes + r * cols;
        float *real = out + r * cols;
        double scale = scales[r];
        for (Py_ssize_t c = 0; c < cols; c++) real[c] = (float)((double)row[c] * scale);
    }
}

/* The smallest and largest of n floats (none of them NaN) into range[0..1]: exact, so SSE2's
   lanes give the scalar loop's result (compilers do not vectorize this reduction themselves). */
static void range_loop(const float *restrict x, Py_ssize_t n, float *restrict range) {
    float low = INFINITY, high = -INFINITY;
    Py_ssize_t i = 0;
#if defined(__SSE2__)
    __m128 lows = _mm_set1_ps(INFINITY), highs = _mm_set1_ps(-INFINITY);
    for (; i + 4 <= n; i += 4) {
        __m128 v = _mm_loadu_ps(x + i);
        lows = _mm_min_ps(lows, v);
        highs = _mm_max_ps(highs, v);
    }
    float l[4], h[4];
    _mm_storeu_ps(l, lows);
    _mm_storeu_ps(h, highs);
    for (int k = 0; k < 4; k++) {
        low = l[k] < low ? l[k] : low;
        high = h[k] > high ? h[k] : high;
    }
#endif
    for (; i < n; i++) {
        low = x[i] < low ? x[i] : low;
        high = x[i] > high ? x[i] : high;
    }
    range[0] = low;
    range[1] = high;
}

/* A dense layer's real pre-activation z and activation a (relu, or the identity) from its
   exact accumulators without the bias (rows x outputs): z = float((acc + bias) * z_scale) in
   float64, a = relu(z) as NumPy's maximum(z, 0) computes it; the smallest and largest of the
   watched values (z when watch_z, else a) into range[0..1]. Returns how many z are not finite
   (float32 overflowed: NumPy's cast would raise, and the caller does). */
static Py_ssize_t preactivate_loop(const float *restrict acc, const double *restrict bias,
                                   const double *restrict z_scale, Py_ssize_t rows, Py_ssize_t outputs, int relu,
                                   int watch_z, float *restrict z, float *restrict a, float *restrict range) {
    Py_ssize_t bad = 0;
    for (Py_ssize_t r = 0; r < rows; r++) {
        for (Py_ssize_t o = 0; o < outputs; o++) {
            Py_ssize_t i = r * outputs + o;
            float value = (float)(((double)acc[i] + bias[o]) * z_scale[o]);
            bad += not_finite(value);
            z[i] = value;
            a[i] = relu && !(value > 0.0f) ? 0.0f : value; /* +0.0 for -0.0, as NumPy */
        }
    }
    if (!bad) range_loop(watch_z ? z : a, rows * outputs, range);
    return bad;
}

/* trunc and floor of |y| <= 2**31 by a truncating conversion, which vectorizes where the
   library calls do not; the sign of a zero is kept, as trunc and floor keep it. */
static inline double trunc_small(double y) { return copysign((double)(int32_t)y, y); }
static inline double floor_small(double y) {
    double t = trunc_small(y);
    return t > y ? t - 1.0 : t;
}

/* One requantized code: see requantize_loop. */
static inline float requantized(float acc, double scale, double offset, int relu, double zero_after,
                                double floor_code) {
    double y = (double)acc * scale;
    y = y + offset;
    y = y < -1024.0 ? -1024.0 : (y > 1024.0 ? 1024.0 : y); /* whole numbers beyond the clamp */
    y = relu ? floor_small(y) : trunc_small(y + copysign(0.5, y));
    y = zero_after != 0 ? y + zero_after : y; /* NumPy adds none when it is 0 (-0.0 stays) */
    y = y < floor_code ? floor_code : y;
    return (float)(y > 127.0 ? 127.0 : y);
}

#if QMTIK_AVX2
/* requantized on 4 accumulators at once with AVX2: the same float64 operations and choices. */
__attribute__((target("avx2"))) static void requantize_row_avx2(const float *restrict acc,
                                                                const double *restrict scale,
                                                                const double *restrict offset, Py_ssize_t outputs,
                                                                int relu, double zero_after, double floor_code,
                                                                float *restrict out) {
    const __m256d limit = _mm256_set1_pd(1024.0), minus_limit = _mm256_set1_pd(-1024.0);
    const __m256d half = _mm256_set1_pd(0.5), sign = _mm256_set1_pd(-0.0);
    const __m256d zero = _mm256_set1_pd(zero_after), low = _mm256_set1_pd(floor_code), high = _mm256_set1_pd(127.0);
    Py_ssize_t o = 0;
    for (; o + 4 <= outputs; o += 4) {
        __m256d y = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(acc + o)), _mm256_loadu_pd(scale + o));
        y = _mm256_add_pd(y, _mm256_loadu_pd(offset + o));
        y = _mm256_blendv_pd(y, minus_limit, _mm256_cmp_pd(y, minus_limit, _CMP_LT_OQ));
        y = _mm256_blendv_pd(y, limit, _mm256_cmp_pd(y, limit, _CMP_GT_OQ));
        if (relu) {
            y = _mm256_round_pd(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        } else {
            __m256d halfway = _mm256_or_pd(_mm256_and_pd(sign, y), half); /* copysign(0.5, y) */
            y = _mm256_round_pd(_mm256_add_pd(y, halfway), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        }
        if (zero_after != 0) y = _mm256_add_pd(y, zero);
        y = _mm256_blendv_pd(y, low, _mm256_cmp_pd(y, low, _CMP_LT_OQ));
        y = _mm256_blendv_pd(y, high, _mm256_cmp_pd(y, high, _CMP_GT_OQ));
        _mm_storeu_ps(out + o, _mm256_cvtpd_ps(y));
    }
    for (; o < outputs; o++) out[o] = requantized(acc[o], scale[o], offset[o], relu, zero_after, floor_code);
}
#endif

/* The int8 output codes (as floats) of a relu or linear layer from the same accumulators, as
   the NumPy backend's LayerKernel.requantize computes them: y = acc * scale + offset in
   float64, then floor (relu, whose offset holds + 0.5) or round half away from zero (linear),
   plus the zero point still to add, clamped to [floor_code, 127]; and the straight-through
   mask inside = (lower <= a <= upper), as floats. */
static void requantize_loop(const float *restrict acc, const double *restrict scale, const double *restrict offset,
                            Py_ssize_t rows, Py_ssize_t outputs, int relu, double zero_after, double floor_code,
                            const float *restrict a, float lower, float upper, float *restrict codes,
                            float *restrict inside) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *row = acc + r * outputs;
        float *out = codes + r * outputs;
#if QMTIK_AVX2
        if (use_avx2) {
            requantize_row_avx2(row, scale, offset, outputs, relu, zero_after, floor_code, out);
            continue;
        }
#endif
        for (Py_ssize_t o = 0; o < outputs; o++)
            out[o] = requantized(row[o], scale[o], offset[o], relu, zero_after, floor_code);
    }
    for (Py_ssize_t i = 0; i < rows * outputs; i++) inside[i] = (float)((a[i] >= lower) & (a[i] <= upper));
}

/* --- the layers over windows (fused_windows.py holds their NumPy definitions) ------------------ */

/* The loops below run in up to `threads` threads (POSIX threads; one elsewhere), each on its
   own part: samples, rows or columns. No part's result depends on another's, and the sums
   down a column stay in one thread, row after row: the results are the same for any count. */
#if defined(_WIN32) || !defined(__GNUC__)
#define QMTIK_THREADS 0
#else
#define QMTIK_THREADS 1
#include <pthread.h>
#endif
#define MAX_THREADS 8

static int threads = 1; /* fused_windows.py sets it from QMTIK_THREADS */

typedef void (*part_fn)(void *args, Py_ssize_t begin, Py_ssize_t end);
typedef struct {
    part_fn fn;
    void *args;
    Py_ssize_t total, parts;
    Py_ssize_t next; /* the next part to take (atomically) */
} Parts;

/* Take parts until none is left: a thread the system does not run meanwhile leaves its share
   to the others, so a busy machine costs no more than one thread would. */
static void *take_parts(void *p) {
    Parts *work = p;
    for (;;) {
#if QMTIK_THREADS
        Py_ssize_t k = __atomic_fetch_add(&work->next, 1, __ATOMIC_RELAXED);
#else
        Py_ssize_t k = work->next++;
#endif
        if (k >= work->parts) return NULL;
        work->fn(work->args, work->total * k / work->parts, work->total * (k + 1) / work->parts);
    }
}

/* fn(args, begin, end) over [0, total), in parts of at least `least`, by up to `threads` threads. */
static void in_parts(part_fn fn, void *args, Py_ssize_t total, Py_ssize_t least) {
    Py_ssize_t count = threads, parts = least > 0 ? total / least : total;
    if (parts > 4 * count) parts = 4 * count;
    if (parts < 1) parts = 1;
    if (count > parts) count = parts;
    Parts work = {fn, args, total, parts, 0};
#if QMTIK_THREADS
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (Py_ssize_t t = 1; t < count; t++) started[t] = pthread_create(&ids[t], NULL, take_parts, &work) == 0;
    take_parts(&work);
    for (Py_ssize_t t = 1; t < count; t++)
        if (started[t]) pthread_join(ids[t], NULL);
#else
    take_parts(&work);
#endif
}

#define WORK_PER_THREAD 32768 /* elements: below that a thread costs more than it saves */

/* A window op over an NHWC batch: n, in height and width, channels, kernel, stride, the top and
   left padding, and the output height and width (spatial.Geometry's). */
typedef struct {
    Py_ssize_t n, h, w, c, kh, kw, sh, sw, top, left, oh, ow;
} Geo;

/* Max pooling of samples [b0, b1): each output the first (row-major) tap of the largest value
   of its window, a NaN counting as the largest (np.argmax's rule), and that tap's number; taps
   in the padding are -inf, which never wins over tap 0. */
QMTIK_WIDE static void max_pool_loop(const float *restrict x, const Geo *g, float *restrict y, int16_t *restrict where,
                                     Py_ssize_t b0, Py_ssize_t b1) {
    const Py_ssize_t C = g->c;
    for (Py_ssize_t b = b0; b < b1; b++)
        for (Py_ssize_t oy = 0; oy < g->oh; oy++)
            for (Py_ssize_t ox = 0; ox < g->ow; ox++) {
                Py_ssize_t at = ((b * g->oh + oy) * g->ow + ox) * C;
                float *restrict best = y + at;
                int16_t *restrict wh = where + at;
                int16_t k = 0;
                for (Py_ssize_t i = 0; i < g->kh; i++)
                    for (Py_ssize_t j = 0; j < g->kw; j++, k++) {
                        Py_ssize_t iy = oy * g->sh + i - g->top, ix = ox * g->sw + j - g->left;
                        int inside = iy >= 0 && iy < g->h && ix >= 0 && ix < g->w;
                        const float *restrict v = inside ? x + ((b * g->h + iy) * g->w + ix) * C : x;
                        if (k == 0) {
                            for (Py_ssize_t c = 0; c < C; c++) {
                                best[c] = inside ? v[c] : -INFINITY;
                                wh[c] = 0;
                            }
                            continue;
                        }
                        if (!inside) continue; /* -inf wins over nothing */
                        for (Py_ssize_t c = 0; c < C; c++) {
                            float value = v[c], now = best[c];
                            int take = (value > now) | ((value != value) & (now == now));
                            best[c] = take ? value : now;
                            wh[c] = take ? k : wh[c];
                        }
                    }
            }
}

/* Which output row (or column) reads input row (column) `at` as its tap t, for every at and t:
   table[at * k + t], -1 where none does. */
static void window_table(Py_ssize_t size, Py_ssize_t k, Py_ssize_t stride, Py_ssize_t before, Py_ssize_t outs,
                         Py_ssize_t *table) {
    for (Py_ssize_t at = 0; at < size; at++)
        for (Py_ssize_t t = 0; t < k; t++) {
            Py_ssize_t p = at + before - t;
            table[at * k + t] = p >= 0 && p % stride == 0 && p / stride < outs ? p / stride : -1;
        }
}

/* The adjoint of a window op, gathered, for samples [b0, b1): each input element the sum, from
   0.0 in tap order, of what the windows that read it send back; NumPy adds the same terms tap
   by tap. With where (max pooling), a window sends its gradient through the tap it took, 0.0
   through the others; without (col2im), `from` holds each window's row of kh * kw * c values.
   rows and cols: window_table's of the height and the width. */
QMTIK_WIDE static void gather_loop(const float *restrict from, const int16_t *restrict where, const Geo *g,
                                   const Py_ssize_t *rows, const Py_ssize_t *cols, float *restrict dx, Py_ssize_t b0,
                                   Py_ssize_t b1) {
    const Py_ssize_t C = g->c, K = g->kh * g->kw * C;
    for (Py_ssize_t b = b0; b < b1; b++)
        for (Py_ssize_t iy = 0; iy < g->h; iy++)
            for (Py_ssize_t ix = 0; ix < g->w; ix++) {
                float *restrict d = dx + ((b * g->h + iy) * g->w + ix) * C;
                for (Py_ssize_t c = 0; c < C; c++) d[c] = 0.0f;
                for (Py_ssize_t i = 0; i < g->kh; i++) {
                    Py_ssize_t oy = rows[iy * g->kh + i];
                    if (oy < 0) continue;
                    for (Py_ssize_t j = 0; j < g->kw; j++) {
                        Py_ssize_t ox = cols[ix * g->kw + j];
                        if (ox < 0) continue;
                        Py_ssize_t o = (b * g->oh + oy) * g->ow + ox;
                        int16_t k = (int16_t)(i * g->kw + j);
                        if (where) {
                            const float *restrict gr = from + o * C;
                            const int16_t *restrict wr = where + o * C;
                            for (Py_ssize_t c = 0; c < C; c++) d[c] += wr[c] == k ? gr[c] : 0.0f;
                        } else {
                            const float *restrict col = from + o * K + k * C;
                            for (Py_ssize_t c = 0; c < C; c++) d[c] += col[c];
                        }
                    }
                }
            }
}

/* im2col of samples [b0, b1): every window of x as a row (kh, kw, c order), each value
   x - subtract, padding pad. A window's row of kw taps inside the input is kw * c values in a
   row of x, read at once. */
QMTIK_WIDE static void im2col_loop(const float *restrict x, const Geo *g, float subtract, float pad,
                                   float *restrict rows, Py_ssize_t b0, Py_ssize_t b1) {
    const Py_ssize_t C = g->c, K = g->kh * g->kw * C, run = g->kw * C;
    for (Py_ssize_t b = b0; b < b1; b++)
        for (Py_ssize_t oy = 0; oy < g->oh; oy++)
            for (Py_ssize_t ox = 0; ox < g->ow; ox++) {
                float *restrict row = rows + ((b * g->oh + oy) * g->ow + ox) * K;
                Py_ssize_t ix0 = ox * g->sw - g->left;
                int whole = ix0 >= 0 && ix0 + g->kw <= g->w;
                for (Py_ssize_t i = 0; i < g->kh; i++, row += run) {
                    Py_ssize_t iy = oy * g->sh + i - g->top;
                    if (iy < 0 || iy >= g->h) {
                        for (Py_ssize_t e = 0; e < run; e++) row[e] = pad;
                    } else if (whole) {
                        const float *restrict v = x + ((b * g->h + iy) * g->w + ix0) * C;
                        for (Py_ssize_t e = 0; e < run; e++) row[e] = v[e] - subtract;
                    } else {
                        for (Py_ssize_t j = 0; j < g->kw; j++) {
                            Py_ssize_t ix = ix0 + j;
                            float *restrict out = row + j * C;
                            if (ix < 0 || ix >= g->w) {
                                for (Py_ssize_t c = 0; c < C; c++) out[c] = pad;
                            } else {
                                const float *restrict v = x + ((b * g->h + iy) * g->w + ix) * C;
                                for (Py_ssize_t c = 0; c < C; c++) out[c] = v[c] - subtract;
                            }
                        }
                    }
                }
            }
}

/* A convolution's exact accumulators acc = acc_c + shift (integers below 2**24 in magnitude),
   rows x C, for columns [c0, c1): the sum, the sums of h*h, h*l and l*l where acc = 4096 h + l,
   0 <= l < 4096 (each term below 2**24, so every sum is exact in float64 and in any order),
   the least and the largest (added into, from the caller's zeros and +-inf). */
QMTIK_WIDE static void acc_stats_loop(const float *restrict acc_c, const float *restrict shift, Py_ssize_t rows,
                                      Py_ssize_t C, double *restrict s1, double *restrict hh, double *restrict hl,
                                      double *restrict ll, float *restrict low, float *restrict high, Py_ssize_t c0,
                                      Py_ssize_t c1) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *restrict row = acc_c + r * C;
        for (Py_ssize_t c = c0; c < c1; c++) {
            float a = row[c] + shift[c];
            int32_t ai = (int32_t)a, h = ai >> 12, l = ai & 4095;
            s1[c] += (double)ai;
            hh[c] += (double)(h * h);
            hl[c] += (double)(h * l);
            ll[c] += (double)(l * l);
            low[c] = a < low[c] ? a : low[c];
            high[c] = a > high[c] ? a : high[c];
        }
    }
}

#define STEP_CHUNK 256
/* A convolution's fake-quantized step after its product, rows [r0, r1) of the rows x C
   accumulators acc = acc_c + shift, per element: the normalization's zhat = acc * na + nb
   (when na), the folded accumulator s = acc * sign, its int8 code (requantized: as
   requantize_loop), the pre-activation z = float((s + bias) * z_scale) in float64, and the
   straight-through mask: 1 where the activation's derivative is 1 (z > 0 for relu) and
   lower <= act(z) <= upper. */
QMTIK_WIDE static void conv_step_loop(const float *restrict acc_c, const float *restrict shift, Py_ssize_t C,
                                      const float *restrict na, const float *restrict nb, const float *restrict sign,
                                      const double *restrict scale, const double *restrict offset, int relu,
                                      double zero_after, double floor_code, const double *restrict bias,
                                      const double *restrict z_scale, float lower, float upper, float *restrict codes,
                                      float *restrict zhat, uint8_t *restrict mask, Py_ssize_t r0, Py_ssize_t r1) {
    float folded[STEP_CHUNK];
    for (Py_ssize_t r = r0; r < r1; r++) {
        for (Py_ssize_t c0 = 0; c0 < C; c0 += STEP_CHUNK) {
            Py_ssize_t width = C - c0 < STEP_CHUNK ? C - c0 : STEP_CHUNK, at = r * C + c0;
            for (Py_ssize_t c = 0; c < width; c++) {
                float a = acc_c[at + c] + shift[c0 + c];
                if (na) zhat[at + c] = a * na[c0 + c] + nb[c0 + c];
                folded[c] = a * sign[c0 + c];
            }
#if QMTIK_AVX2
            if (use_avx2)
                requantize_row_avx2(folded, scale + c0, offset + c0, width, relu, zero_after, floor_code, codes + at);
            else
#endif
                for (Py_ssize_t c = 0; c < width; c++)
                    codes[at + c] = requantized(folded[c], scale[c0 + c], offset[c0 + c], relu, zero_after, floor_code);
            for (Py_ssize_t c = 0; c < width; c++) {
                float z = (float)(((double)folded[c] + bias[c0 + c]) * z_scale[c0 + c]);
                float act = relu && !(z > 0.0f) ? 0.0f : z;
                mask[at + c] = (uint8_t)(((!relu) | (z > 0.0f)) & (act >= lower) & (act <= upper));
            }
        }
    }
}

/* The backward's first pass, columns [c0, c1) of rows x C: g = grad * mask (in place), and per
   column the float64 sums (row after row, as NumPy sums down a column) of g and, when zhat,
   of float(g * zhat). */
QMTIK_WIDE static void masked_sums_loop(float *restrict g, const uint8_t *restrict mask, const float *restrict zhat,
                                        Py_ssize_t rows, Py_ssize_t C, double *restrict sum_g,
                                        double *restrict sum_gz, Py_ssize_t c0, Py_ssize_t c1) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        float *restrict row = g + r * C;
        const uint8_t *restrict m = mask + r * C;
        for (Py_ssize_t c = c0; c < c1; c++) {
            float v = row[c] * (float)m[c];
            row[c] = v;
            sum_g[c] += (double)v;
        }
        if (zhat) {
            const float *restrict zr = zhat + r * C;
            for (Py_ssize_t c = c0; c < c1; c++) sum_gz[c] += (double)(row[c] * zr[c]);
        }
    }
}

/* The normalization's backward, in place, columns [c0, c1): with the batch's statistics
   d = ((g * n - d_beta) - zhat * d_gamma) * k, else d = g * k (k: factor / n, or factor);
   and each column's float64 sum of d. */
QMTIK_WIDE static void norm_backward_loop(float *restrict g, const float *restrict zhat, Py_ssize_t rows,
                                          Py_ssize_t C, int batch, float n, const float *restrict d_beta,
                                          const float *restrict d_gamma, const float *restrict k,
                                          double *restrict sum_d, Py_ssize_t c0, Py_ssize_t c1) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        float *restrict row = g + r * C;
        const float *restrict zr = zhat + r * C;
        for (Py_ssize_t c = c0; c < c1; c++) {
            float d;
            if (batch) {
                d = row[c] * n;
                d = d - d_beta[c];
                d = d - zr[c] * d_gamma[c];
                d = d * k[c];
            } else {
                d = row[c] * k[c];
            }
            row[c] = d;
            sum_d[c] += (double)d;
        }
    }
}

/* Each loop's arguments, and the part of it a thread runs. */
typedef struct {
    const float *x, *from, *acc, *shift, *na, *nb, *sign, *zhat_in, *d_beta, *d_gamma, *k;
    const int16_t *where_in;
    const double *scale, *offset, *bias, *z_scale;
    const Py_ssize_t *rows_table, *cols_table;
    const Geo *g;
    float *y, *dx, *out, *codes, *zhat, *low, *high, *grad;
    int16_t *where;
    uint8_t *mask;
    const uint8_t *mask_in;
    double *s1, *hh, *hl, *ll, *sum_a, *sum_b;
    Py_ssize_t rows, C;
    float subtract, pad, lower, upper, n;
    int relu, batch;
    double zero_after, floor_code;
} Job;

static void max_pool_part(void *a, Py_ssize_t b0, Py_ssize_t b1) {
    Job *j = a;
    max_pool_loop(j->x, j->g, j->y, j->where, b0, b1);
}
static void gather_part(void *a, Py_ssize_t b0, Py_ssize_t b1) {
    Job *j = a;
    gather_loop(j->from, j->where_in, j->g, j->rows_table, j->cols_table, j->dx, b0, b1);
}
static void im2col_part(void *a, Py_ssize_t b0, Py_ssize_t b1) {
    Job *j = a;
    im2col_loop(j->x, j->g, j->subtract, j->pad, j->out, b0, b1);
}
static void acc_stats_part(void *a, Py_ssize_t c0, Py_ssize_t c1) {
    Job *j = a;
    acc_stats_loop(j->acc, j->shift, j->rows, j->C, j->s1, j->hh, j->hl, j->ll, j->low, j->high, c0, c1);
}
static void conv_step_part(void *a, Py_ssize_t r0, Py_ssize_t r1) {
    Job *j = a;
    conv_step_loop(j->acc, j->shift, j->C, j->na, j->nb, j->sign, j->scale, j->offset, j->relu, j->zero_after,
                   j->floor_code, j->bias, j->z_scale, j->lower, j->upper, j->codes, j->zhat, j->mask, r0, r1);
}
static void masked_sums_part(void *a, Py_ssize_t c0, Py_ssize_t c1) {
    Job *j = a;
    masked_sums_loop(j->grad, j->mask_in, j->zhat_in, j->rows, j->C, j->sum_a, j->sum_b, c0, c1);
}
static void norm_backward_part(void *a, Py_ssize_t c0, Py_ssize_t c1) {
    Job *j = a;
    norm_backward_loop(j->grad, j->zhat_in, j->rows, j->C, j->batch, j->n, j->d_beta, j->d_gamma, j->k, j->sum_a, c0,
                       c1);
}

/* Columns in parts of at least 8 (an AVX2 register's floats) and of WORK_PER_THREAD elements. */
static Py_ssize_t columns_per_part(Py_ssize_t rows) {
    Py_ssize_t least = rows > 0 ? (WORK_PER_THREAD + rows - 1) / rows : 1;
    return least < 8 ? 8 : least;
}

/* --- the Python side: buffers in, counts out ------------------------------------------------ */

static int float_count(Py_buffer *b, Py_ssize_t n, const char *what) {
    if (b->len != n * (Py_ssize_t)sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd float32 values", what, b->len, n);
        return 0;
    }
    return 1;
}

static PyObject *adam(PyObject *self, PyObject *args) {
    Py_buffer p, g, m, v;
    float b1, c1, b2, c2, eps, step;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*y*w*w*ffffff", &p, &g, &m, &v, &b1, &c1, &b2, &c2, &eps, &step)) return NULL;
    Py_ssize_t n = p.len / (Py_ssize_t)sizeof(float), bad = -1;
    if (float_count(&p, n, "p") && float_count(&g, n, "g") && float_count(&m, n, "m") && float_count(&v, n, "v")) {
        Py_BEGIN_ALLOW_THREADS bad = adam_loop(p.buf, g.buf, m.buf, v.buf, n, b1, c1, b2, c2, eps, step);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&p);
    PyBuffer_Release(&g);
    PyBuffer_Release(&m);
    PyBuffer_Release(&v);
    return bad < 0 ? NULL : PyLong_FromSsize_t(bad);
}

static PyObject *row_absmax(PyObject *self, PyObject *args) {
    Py_buffer w, absmax;
    Py_ssize_t rows, cols, bad = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnw*", &w, &rows, &cols, &absmax)) return NULL;
    if (float_count(&w, rows * cols, "weight") && float_count(&absmax, rows, "absmax")) {
        Py_BEGIN_ALLOW_THREADS bad = row_absmax_loop(w.buf, rows, cols, absmax.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&w);
    PyBuffer_Release(&absmax);
    return bad < 0 ? NULL : PyLong_FromSsize_t(bad);
}

static PyObject *weight_codes(PyObject *self, PyObject *args) {
    Py_buffer w, scales, codes;
    Py_ssize_t rows, cols;
    float limit;
    int ok = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnfw*", &w, &scales, &rows, &cols, &limit, &codes)) return NULL;
    if (float_count(&w, rows * cols, "weight") && float_count(&scales, rows, "scales") &&
        float_count(&codes, rows * cols, "codes")) {
        Py_BEGIN_ALLOW_THREADS weight_codes_loop(w.buf, scales.buf, rows, cols, limit, codes.buf);
        Py_END_ALLOW_THREADS ok = 1;
    }
    PyBuffer_Release(&w);
    PyBuffer_Release(&scales);
    PyBuffer_Release(&codes);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *dequantize_rows(PyObject *self, PyObject *args) {
    Py_buffer codes, scales, out;
    Py_ssize_t rows, cols;
    int ok = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnw*", &codes, &scales, &rows, &cols, &out)) return NULL;
    if (float_count(&codes, rows * cols, "codes") && float_count(&out, rows * cols, "out")) {
        if (scales.len != rows * (Py_ssize_t)sizeof(double)) {
            PyErr_SetString(PyExc_ValueError, "scales: expected one float64 per row");
        } else {
            Py_BEGIN_ALLOW_THREADS dequantize_rows_loop(codes.buf, scales.buf, rows, cols, out.buf);
            Py_END_ALLOW_THREADS ok = 1;
        }
    }
    PyBuffer_Release(&codes);
    PyBuffer_Release(&scales);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *preactivate(PyObject *self, PyObject *args) {
    Py_buffer acc, bias, z_scale, z, a, range;
    Py_ssize_t rows, outputs, bad = -1;
    int relu, watch_z;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*nnppw*w*w*", &acc, &bias, &z_scale, &rows, &outputs, &relu, &watch_z, &z, &a,
                          &range))
        return NULL;
    Py_ssize_t n = rows * outputs;
    if (float_count(&acc, n, "acc") && float_count(&z, n, "z") && float_count(&a, n, "a") &&
        float_count(&range, 2, "range")) {
        if (bias.len != outputs * (Py_ssize_t)sizeof(double) || z_scale.len != outputs * (Py_ssize_t)sizeof(double)) {
            PyErr_SetString(PyExc_ValueError, "bias and z_scale: expected one float64 per output");
        } else {
            Py_BEGIN_ALLOW_THREADS bad = preactivate_loop(acc.buf, bias.buf, z_scale.buf, rows, outputs, relu, watch_z,
                                                          z.buf, a.buf, range.buf);
            Py_END_ALLOW_THREADS
        }
    }
    PyBuffer_Release(&acc);
    PyBuffer_Release(&bias);
    PyBuffer_Release(&z_scale);
    PyBuffer_Release(&z);
    PyBuffer_Release(&a);
    PyBuffer_Release(&range);
    return bad < 0 ? NULL : PyLong_FromSsize_t(bad);
}

static PyObject *requantize(PyObject *self, PyObject *args) {
    Py_buffer acc, scale, offset, a, codes, inside;
    Py_ssize_t rows, outputs;
    int relu, ok = 0;
    double zero_after, floor_code;
    float lower, upper;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*nnpddy*ffw*w*", &acc, &scale, &offset, &rows, &outputs, &relu, &zero_after,
                          &floor_code, &a, &lower, &upper, &codes, &inside))
        return NULL;
    Py_ssize_t n = rows * outputs;
    if (float_count(&acc, n, "acc") && float_count(&a, n, "a") && float_count(&codes, n, "codes") &&
        float_count(&inside, n, "inside")) {
        if (scale.len != outputs * (Py_ssize_t)sizeof(double) || offset.len != outputs * (Py_ssize_t)sizeof(double)) {
            PyErr_SetString(PyExc_ValueError, "scale and offset: expected one float64 per output");
        } else {
            Py_BEGIN_ALLOW_THREADS requantize_loop(acc.buf, scale.buf, offset.buf, rows, outputs, relu, zero_after,
                                                   floor_code, a.buf, lower, upper, codes.buf, inside.buf);
            Py_END_ALLOW_THREADS ok = 1;
        }
    }
    PyBuffer_Release(&acc);
    PyBuffer_Release(&scale);
    PyBuffer_Release(&offset);
    PyBuffer_Release(&a);
    PyBuffer_Release(&codes);
    PyBuffer_Release(&inside);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* The window ops' arguments: the geometry as a tuple of 12 sizes, buffers checked by size. */
#define GEO_FORMAT "(nnnnnnnnnnnn)"
#define GEO_ARGS(g) &g.n, &g.h, &g.w, &g.c, &g.kh, &g.kw, &g.sh, &g.sw, &g.top, &g.left, &g.oh, &g.ow

static int sized(Py_buffer *b, Py_ssize_t n, Py_ssize_t item, const char *what) {
    if (b->len != n * item) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd values of %zd bytes", what, b->len, n, item);
        return 0;
    }
    return 1;
}

static void release(Py_buffer **buffers, int count) {
    for (int i = 0; i < count; i++)
        if (buffers[i]->obj || buffers[i]->buf) PyBuffer_Release(buffers[i]);
}

static int geo_ok(const Geo *g) {
    if (g->n < 0 || g->h < 1 || g->w < 1 || g->c < 1 || g->kh < 1 || g->kw < 1 || g->sh < 1 || g->sw < 1 ||
        g->oh < 1 || g->ow < 1 || g->kh * g->kw > 32767) {
        PyErr_SetString(PyExc_ValueError, "not a window geometry");
        return 0;
    }
    return 1;
}

static PyObject *max_pool(PyObject *self, PyObject *args) {
    Py_buffer x = {0}, y = {0}, where = {0};
    Py_buffer *all[] = {&x, &y, &where};
    Geo g;
    int ok = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*" GEO_FORMAT "w*w*", &x, GEO_ARGS(g), &y, &where)) return NULL;
    Py_ssize_t outs = g.n * g.oh * g.ow * g.c;
    if (geo_ok(&g) && sized(&x, g.n * g.h * g.w * g.c, 4, "x") && sized(&y, outs, 4, "y") &&
        sized(&where, outs, 2, "where")) {
        Job job = {.x = x.buf, .g = &g, .y = y.buf, .where = where.buf};
        Py_BEGIN_ALLOW_THREADS in_parts(max_pool_part, &job, g.n, 1 + WORK_PER_THREAD / (g.oh * g.ow * g.c));
        Py_END_ALLOW_THREADS ok = 1;
    }
    release(all, 3);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* gather(from, where or None, geo, dx): max pooling's backward (with where) or col2im. */
static PyObject *gather(PyObject *self, PyObject *args) {
    Py_buffer from = {0}, where = {0}, dx = {0};
    Py_buffer *all[] = {&from, &where, &dx};
    PyObject *where_obj;
    Geo g;
    int ok = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*O" GEO_FORMAT "w*", &from, &where_obj, GEO_ARGS(g), &dx)) return NULL;
    Py_ssize_t outs = g.n * g.oh * g.ow;
    int pooled = where_obj != Py_None;
    if (pooled && PyObject_GetBuffer(where_obj, &where, PyBUF_SIMPLE) < 0) {
        release(all, 3);
        return NULL;
    }
    if (geo_ok(&g) && sized(&dx, g.n * g.h * g.w * g.c, 4, "dx") &&
        sized(&from, outs * g.c * (pooled ? 1 : g.kh * g.kw), 4, "from") &&
        (!pooled || sized(&where, outs * g.c, 2, "where"))) {
        Py_ssize_t *tables = malloc(sizeof(Py_ssize_t) * (g.h * g.kh + g.w * g.kw));
        if (!tables) {
            PyErr_NoMemory();
        } else {
            window_table(g.h, g.kh, g.sh, g.top, g.oh, tables);
            window_table(g.w, g.kw, g.sw, g.left, g.ow, tables + g.h * g.kh);
            Job job = {.from = from.buf, .where_in = pooled ? where.buf : NULL, .g = &g, .rows_table = tables,
                       .cols_table = tables + g.h * g.kh, .dx = dx.buf};
            Py_BEGIN_ALLOW_THREADS in_parts(gather_part, &job, g.n, 1 + WORK_PER_THREAD / (g.h * g.w * g.c));
            Py_END_ALLOW_THREADS ok = 1;
            free(tables);
        }
    }
    release(all, 3);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *im2col(PyObject *self, PyObject *args) {
    Py_buffer x = {0}, rows = {0};
    Py_buffer *all[] = {&x, &rows};
    Geo g;
    float subtract, pad;
    int ok = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*" GEO_FORMAT "ffw*", &x, GEO_ARGS(g), &subtract, &pad, &rows)) return NULL;
    if (geo_ok(&g) && sized(&x, g.n * g.h * g.w * g.c, 4, "x") &&
        sized(&rows, g.n * g.oh * g.ow * g.kh * g.kw * g.c, 4, "rows")) {
        Job job = {.x = x.buf, .g = &g, .subtract = subtract, .pad = pad, .out = rows.buf};
        Py_BEGIN_ALLOW_THREADS in_parts(im2col_part, &job, g.n, 1 + WORK_PER_THREAD / (g.oh * g.ow * g.kh * g.kw * g.c));
        Py_END_ALLOW_THREADS ok = 1;
    }
    release(all, 2);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* acc_stats(acc_c, shift, rows, C, s1, hh, hl, ll, low, high): adds into the sums, and into
   low / high (which the caller starts at +inf / -inf). */
static PyObject *acc_stats(PyObject *self, PyObject *args) {
    Py_buffer acc = {0}, shift = {0}, s1 = {0}, hh = {0}, hl = {0}, ll = {0}, low = {0}, high = {0};
    Py_buffer *all[] = {&acc, &shift, &s1, &hh, &hl, &ll, &low, &high};
    Py_ssize_t rows, C;
    int ok = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnw*w*w*w*w*w*", &acc, &shift, &rows, &C, &s1, &hh, &hl, &ll, &low, &high))
        return NULL;
    if (sized(&acc, rows * C, 4, "acc") && sized(&shift, C, 4, "shift") && sized(&s1, C, 8, "s1") &&
        sized(&hh, C, 8, "hh") && sized(&hl, C, 8, "hl") && sized(&ll, C, 8, "ll") && sized(&low, C, 4, "low") &&
        sized(&high, C, 4, "high")) {
        Job job = {.acc = acc.buf, .shift = shift.buf, .rows = rows, .C = C, .s1 = s1.buf, .hh = hh.buf, .hl = hl.buf,
                   .ll = ll.buf, .low = low.buf, .high = high.buf};
        Py_BEGIN_ALLOW_THREADS in_parts(acc_stats_part, &job, C, columns_per_part(rows));
        Py_END_ALLOW_THREADS ok = 1;
    }
    release(all, 8);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* conv_step(acc_c, shift, rows, C, na or None, nb or None, sign, scale, offset, relu, zero_after,
   floor, bias, z_scale, lower, upper, codes, zhat or None, mask) */
static PyObject *conv_step(PyObject *self, PyObject *args) {
    Py_buffer acc = {0}, shift = {0}, na = {0}, nb = {0}, sign = {0}, scale = {0}, offset = {0}, bias = {0};
    Py_buffer z_scale = {0}, codes = {0}, zhat = {0}, mask = {0};
    Py_buffer *all[] = {&acc, &shift, &na, &nb, &sign, &scale, &offset, &bias, &z_scale, &codes, &zhat, &mask};
    PyObject *na_obj, *nb_obj, *zhat_obj;
    Py_ssize_t rows, C;
    int relu, ok = 0;
    double zero_after, floor_code;
    float lower, upper;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnOOy*y*y*pddy*y*ffw*Ow*", &acc, &shift, &rows, &C, &na_obj, &nb_obj, &sign,
                          &scale, &offset, &relu, &zero_after, &floor_code, &bias, &z_scale, &lower, &upper, &codes,
                          &zhat_obj, &mask))
        return NULL;
    int normed = na_obj != Py_None;
    if (normed && (PyObject_GetBuffer(na_obj, &na, PyBUF_SIMPLE) < 0 || PyObject_GetBuffer(nb_obj, &nb, PyBUF_SIMPLE) < 0 ||
                   PyObject_GetBuffer(zhat_obj, &zhat, PyBUF_WRITABLE) < 0)) {
        release(all, 12);
        return NULL;
    }
    Py_ssize_t n = rows * C;
    if (sized(&acc, n, 4, "acc") && sized(&shift, C, 4, "shift") && sized(&sign, C, 4, "sign") &&
        sized(&scale, C, 8, "scale") && sized(&offset, C, 8, "offset") && sized(&bias, C, 8, "bias") &&
        sized(&z_scale, C, 8, "z_scale") && sized(&codes, n, 4, "codes") && sized(&mask, n, 1, "mask") &&
        (!normed || (sized(&na, C, 4, "na") && sized(&nb, C, 4, "nb") && sized(&zhat, n, 4, "zhat")))) {
        Job job = {.acc = acc.buf, .shift = shift.buf, .C = C, .na = normed ? na.buf : NULL,
                   .nb = normed ? nb.buf : NULL, .sign = sign.buf, .scale = scale.buf, .offset = offset.buf,
                   .relu = relu, .zero_after = zero_after, .floor_code = floor_code, .bias = bias.buf,
                   .z_scale = z_scale.buf, .lower = lower, .upper = upper, .codes = codes.buf,
                   .zhat = normed ? zhat.buf : NULL, .mask = mask.buf};
        Py_BEGIN_ALLOW_THREADS in_parts(conv_step_part, &job, rows, 1 + WORK_PER_THREAD / C);
        Py_END_ALLOW_THREADS ok = 1;
    }
    release(all, 12);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* masked_sums(g, mask, zhat or None, rows, C, sum_g, sum_gz) */
static PyObject *masked_sums(PyObject *self, PyObject *args) {
    Py_buffer g = {0}, mask = {0}, zhat = {0}, sum_g = {0}, sum_gz = {0};
    Py_buffer *all[] = {&g, &mask, &zhat, &sum_g, &sum_gz};
    PyObject *zhat_obj;
    Py_ssize_t rows, C;
    int ok = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*y*Onnw*w*", &g, &mask, &zhat_obj, &rows, &C, &sum_g, &sum_gz)) return NULL;
    int normed = zhat_obj != Py_None;
    if (normed && PyObject_GetBuffer(zhat_obj, &zhat, PyBUF_SIMPLE) < 0) {
        release(all, 5);
        return NULL;
    }
    if (sized(&g, rows * C, 4, "g") && sized(&mask, rows * C, 1, "mask") && sized(&sum_g, C, 8, "sum_g") &&
        sized(&sum_gz, C, 8, "sum_gz") && (!normed || sized(&zhat, rows * C, 4, "zhat"))) {
        Job job = {.grad = g.buf, .mask_in = mask.buf, .zhat_in = normed ? zhat.buf : NULL, .rows = rows, .C = C,
                   .sum_a = sum_g.buf, .sum_b = sum_gz.buf};
        Py_BEGIN_ALLOW_THREADS in_parts(masked_sums_part, &job, C, columns_per_part(rows));
        Py_END_ALLOW_THREADS ok = 1;
    }
    release(all, 5);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* norm_backward(g, zhat, rows, C, batch, n, d_beta, d_gamma, k, sum_d) */
static PyObject *norm_backward(PyObject *self, PyObject *args) {
    Py_buffer g = {0}, zhat = {0}, d_beta = {0}, d_gamma = {0}, k = {0}, sum_d = {0};
    Py_buffer *all[] = {&g, &zhat, &d_beta, &d_gamma, &k, &sum_d};
    Py_ssize_t rows, C;
    int batch, ok = 0;
    float n;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*y*nnpfy*y*y*w*", &g, &zhat, &rows, &C, &batch, &n, &d_beta, &d_gamma, &k, &sum_d))
        return NULL;
    if (sized(&g, rows * C, 4, "g") && sized(&zhat, rows * C, 4, "zhat") && sized(&d_beta, C, 4, "d_beta") &&
        sized(&d_gamma, C, 4, "d_gamma") && sized(&k, C, 4, "k") && sized(&sum_d, C, 8, "sum_d")) {
        Job job = {.grad = g.buf, .zhat_in = zhat.buf, .rows = rows, .C = C, .batch = batch, .n = n,
                   .d_beta = d_beta.buf, .d_gamma = d_gamma.buf, .k = k.buf, .sum_a = sum_d.buf};
        Py_BEGIN_ALLOW_THREADS in_parts(norm_backward_part, &job, C, columns_per_part(rows));
        Py_END_ALLOW_THREADS ok = 1;
    }
    release(all, 6);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* wide([flag]) -> whether the AVX2 forms were in use (and sets it): tests run both forms. */
static PyObject *wide(PyObject *self, PyObject *args) {
    int flag = -1, before = use_avx2;
    (void)self;
    if (!PyArg_ParseTuple(args, "|p", &flag)) return NULL;
#if QMTIK_AVX2
    if (flag >= 0) use_avx2 = flag && __builtin_cpu_supports("avx2");
#endif
    return PyBool_FromLong(before);
}

/* threads([count]) -> how many threads the window loops used (and sets it, 1 to MAX_THREADS). */
static PyObject *threads_of(PyObject *self, PyObject *args) {
    int count = 0, before = threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "|i", &count)) return NULL;
    if (count > 0) threads = count < MAX_THREADS ? count : MAX_THREADS;
    return PyLong_FromLong(before);
}

static PyMethodDef methods[] = {
    {"adam", adam, METH_VARARGS, "adam(p, g, m, v, b1, c1, b2, c2, eps, step) -> count of non-finite results"},
    {"row_absmax", row_absmax, METH_VARARGS, "row_absmax(w, rows, cols, absmax) -> count of non-finite weights"},
    {"weight_codes", weight_codes, METH_VARARGS, "weight_codes(w, scales, rows, cols, limit, codes)"},
    {"dequantize_rows", dequantize_rows, METH_VARARGS, "dequantize_rows(codes, scales, rows, cols, out)"},
    {"preactivate", preactivate, METH_VARARGS,
     "preactivate(acc, bias, z_scale, rows, outputs, relu, watch_z, z, a, range) -> count of non-finite z"},
    {"requantize", requantize, METH_VARARGS,
     "requantize(acc, scale, offset, rows, outputs, relu, zero_after, floor, a, lower, upper, codes, inside)"},
    {"max_pool", max_pool, METH_VARARGS, "max_pool(x, geo, y, where)"},
    {"gather", gather, METH_VARARGS, "gather(from, where or None, geo, dx): max pooling's backward, or col2im"},
    {"im2col", im2col, METH_VARARGS, "im2col(x, geo, subtract, pad, rows)"},
    {"acc_stats", acc_stats, METH_VARARGS, "acc_stats(acc_c, shift, rows, C, s1, hh, hl, ll, low, high)"},
    {"conv_step", conv_step, METH_VARARGS,
     "conv_step(acc_c, shift, rows, C, na, nb, sign, scale, offset, relu, zero_after, floor, bias, z_scale, lower, "
     "upper, codes, zhat, mask)"},
    {"masked_sums", masked_sums, METH_VARARGS, "masked_sums(g, mask, zhat, rows, C, sum_g, sum_gz)"},
    {"norm_backward", norm_backward, METH_VARARGS, "norm_backward(g, zhat, rows, C, batch, n, d_beta, d_gamma, k, sum_d)"},
    {"threads", threads_of, METH_VARARGS, "threads([count]) -> the window loops' thread count (before setting it)"},
    {"wide", wide, METH_VARARGS, "wide([flag]) -> whether the AVX2 forms were in use (before setting them to flag)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fused", "qmtik's fused training loops", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fused(void) {
#if QMTIK_AVX2
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2");
#endif
    return PyModule_Create(&module);
}
