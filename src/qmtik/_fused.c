/* qmtik._fused: the training step's elementwise loops, each in one pass.

   Optional: setup.py builds it when a C compiler is present, and qmtik/fused.py falls back to
   NumPy when it is not. Every function computes exactly what fused.py's NumPy form computes,
   operation for operation in float32 (no contraction into fused multiply-adds: setup.py
   passes -ffp-contract=off), so a model trains to the same bits either way; the tests in
   tests/test_fused.py compare the two forms bit for bit.

   Arrays come in as buffers that fused.py has checked: C-contiguous, float32 unless said,
   of the sizes given. Nothing here allocates. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Adam's loop is also compiled for AVX2 where GCC can, picked at run time: the same
   IEEE operations, twice as wide (no FMA: that is a separate target, and contraction is off). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define QMTIK_WIDE __attribute__((target_clones("avx2", "default")))
#else
#define QMTIK_WIDE
#endif

/* Whether a float is infinite or NaN, from its exponent bits: a test compilers vectorize. */
static inline int not_finite(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return (bits & 0x7f800000u) == 0x7f800000u;
}

/* Adam's update of one parameter array, in place: the moments, then the step.
   m = m*b1 + g*c1;  v = v*b2 + (g*c2)*g;  p = p - (m*step) / (sqrt(v) + eps)
   Returns how many results are not finite (the caller reports divergence). */
QMTIK_WIDE static Py_ssize_t adam_loop(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                            Py_ssize_t n, float b1, float c1, float b2, float c2, float eps, float step) {
    Py_ssize_t bad = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        float mi = m[i] * b1;
        mi = mi + g[i] * c1;
        float vi = v[i] * b2;
        float w = g[i] * c2;
        vi = vi + w * g[i];
        float denominator = sqrtf(vi) + eps;
        float pi = p[i] - (mi * step) / denominator;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        bad += not_finite(pi) | not_finite(vi) | not_finite(mi);
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

/* The codes of a rows x cols weight matrix over each row's scale, rounded half away from
   zero and clamped to [-limit, limit] when limit > 0, as floats (training multiplies with
   floats). */
static void weight_codes_loop(const float *restrict w, const float *restrict scales, Py_ssize_t rows,
                                         Py_ssize_t cols, float limit, float *restrict codes) {
    float high = limit > 0 ? limit : INFINITY;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        float *out = codes + r * cols, scale = scales[r];
        for (Py_ssize_t c = 0; c < cols; c++) {
            float code = round_half_away(row[c] / scale);
            code = code > high ? high : code;
            out[c] = code < -high ? -high : code;
        }
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

static PyMethodDef methods[] = {
    {"adam", adam, METH_VARARGS, "adam(p, g, m, v, b1, c1, b2, c2, eps, step) -> count of non-finite results"},
    {"weight_codes", weight_codes, METH_VARARGS, "weight_codes(w, scales, rows, cols, limit, codes)"},
    {"dequantize_rows", dequantize_rows, METH_VARARGS, "dequantize_rows(codes, scales, rows, cols, out)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused", "qmtik's fused training loops", -1, methods};

PyMODINIT_FUNC PyInit__fused(void) { return PyModule_Create(&module); }
