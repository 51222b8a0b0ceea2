/* TF Serving's REST number format for float32 tensors, at C speed (genserve.serving.json_values).
 *
 * tensorflow_serving/util/json_tensor.cc (WriteDecimal) writes a float as TensorFlow's FloatToBuffer
 * does (tensorflow/core/platform/numbers.cc / tsl): printf("%.6g") when strtof reads that text back as
 * the same float, else printf("%.9g"); then ".0" on a whole number printed without '.' or exponent, and
 * NaN / Infinity / -Infinity bare. json_values.bulk_float_texts is the same rule in Python (the reference
 * the tests compare this with); this file only makes it fast:
 *
 * - For 1.1e-9 <= |v| < 1e4 (normal floats; nearly every value a generative model outputs), v = m * 2^e
 *   exactly (m: the 24-bit significand), and the P-digit decimal printf writes is
 *   D = round_half_even(m * 5^k / 2^s) with k = P - 1 - E and s = -(e + k), E the decimal exponent:
 *   m * 5^k < 2^64 for k <= 17, so this is exact integer arithmetic (printf and CPython's dtoa are
 *   correctly rounded, ties to even, on the same exact value).
 *   The six-digit text reads back as v (strtof rounds to nearest, ties to even) iff the decimal is within
 *   half an ulp of v: |D6 * 2^s - m * 5^k| * 2 < 5^k, or equal with m even. A significand of exactly
 *   2^23 has a narrower gap below it, so those values take the printf route below.
 * - Every other value (zero, subnormal, tiny, large, non-finite, 2^n) takes glibc's snprintf and strtof:
 *   literally FloatToBuffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint64_t POW5[18] = {
    1ULL, 5ULL, 25ULL, 125ULL, 625ULL, 3125ULL, 15625ULL, 78125ULL, 390625ULL, 1953125ULL,
    9765625ULL, 48828125ULL, 244140625ULL, 1220703125ULL, 6103515625ULL, 30517578125ULL,
    152587890625ULL, 762939453125ULL};
static const uint64_t POW10[10] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL,
    1000000000ULL};

/* D (exactly P digits) and E for m * 2^e; 0 when out of the exact range. */
static int decimal(uint64_t m, int e, int P, int E, uint64_t *D, int *Eout) {
    for (int tries = 0; tries < 3; tries++) {
        int k = P - 1 - E;
        int s = -(e + k);
        if (k < 0 || k > 17 || s < 1 || s > 62) return 0;
        uint64_t a = m * POW5[k];
        uint64_t q = a >> s, r = a & ((1ULL << s) - 1), half = 1ULL << (s - 1);
        if (r > half || (r == half && (q & 1))) q++;
        if (q >= POW10[P]) E++;
        else if (q < POW10[P - 1]) E--;
        else { *D = q; *Eout = E; return 1; }
    }
    return 0;
}

/* printf("%.{P}g") of D * 10^(E-P+1) for -9 <= E <= 3 (the fast range), with ".0" on whole numbers. */
static int render(char *out, int neg, uint64_t D, int E, int P) {
    char dig[10];
    int n = 0, t;
    for (int j = P - 1; j >= 0; j--) { dig[j] = (char)('0' + D % 10); D /= 10; }
    for (t = P - 1; t > 0 && dig[t] == '0'; t--) {}  /* the last digit printed (%g strips zeros) */
    if (neg) out[n++] = '-';
    if (E < -4) {  /* d[.ddd]e-0X */
        out[n++] = dig[0];
        if (t > 0) { out[n++] = '.'; memcpy(out + n, dig + 1, t); n += t; }
        out[n++] = 'e'; out[n++] = '-'; out[n++] = '0'; out[n++] = (char)('0' - E);
    } else if (E < 0) {  /* 0.000ddd */
        out[n++] = '0'; out[n++] = '.';
        for (int z = 0; z < -E - 1; z++) out[n++] = '0';
        memcpy(out + n, dig, t + 1); n += t + 1;
    } else {  /* ddd.ddd, or ddd.0 for a whole number */
        memcpy(out + n, dig, E + 1); n += E + 1;
        out[n++] = '.';
        if (t > E) { memcpy(out + n, dig + E + 1, t - E); n += t - E; }
        else out[n++] = '0';
    }
    return n;
}

/* FloatToBuffer, then WriteDecimal's NaN/Infinity and ".0" rules, through the C library. */
static int slow(char *out, float v) {
    if (isnan(v)) { memcpy(out, "NaN", 3); return 3; }
    if (isinf(v)) {
        if (v < 0) { memcpy(out, "-Infinity", 9); return 9; }
        memcpy(out, "Infinity", 8); return 8;
    }
    int n = snprintf(out, 32, "%.6g", (double)v);
    if (strtof(out, NULL) != v) n = snprintf(out, 32, "%.9g", (double)v);
    if (v == truncf(v) && !memchr(out, '.', n) && !memchr(out, 'e', n)) { out[n++] = '.'; out[n++] = '0'; }
    return n;
}

static int one(char *out, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    float a = fabsf(v);
    uint64_t m = (bits & 0x7FFFFFu) | 0x800000u;
    if (!(a >= 1.1e-9f && a < 1e4f) || m == 0x800000u) return slow(out, v);
    int e = (int)((bits >> 23) & 0xFFu) - 150;
    /* floor(log10(a)) or one less: log10(2^x) = x * 0.30103 (1233 / 4096), corrected in decimal() */
    int guess = ((e + 23) * 1233) >> 12;
    uint64_t D6, D9;
    int E6, E9;
    if (!decimal(m, e, 6, guess, &D6, &E6)) return slow(out, v);
    int k = 5 - E6, s = -(e + k);  /* decimal() checked 0 <= k <= 17 and s >= 1; D6 < 2^20 */
    if (s > 43) return slow(out, v);
    uint64_t lhs = D6 << s, rhs = m * POW5[k];
    uint64_t diff2 = 2 * (lhs > rhs ? lhs - rhs : rhs - lhs);
    if (diff2 < POW5[k] || (diff2 == POW5[k] && !(m & 1))) return render(out, v < 0, D6, E6, 6);
    if (!decimal(m, e, 9, E6, &D9, &E9)) return slow(out, v);
    return render(out, v < 0, D9, E9, 9);
}

static PyObject *float32_texts(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (view.itemsize != 4 || !view.format || strcmp(view.format, "f") != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "float32_texts takes a C-contiguous float32 buffer");
        return NULL;
    }
    Py_ssize_t n = view.len / 4;
    const float *values = (const float *)view.buf;
    PyObject *list = PyList_New(n);
    if (list) {
        char text[48];
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *s = PyUnicode_FromStringAndSize(text, one(text, values[i]));
            if (!s) { Py_CLEAR(list); break; }
            PyList_SET_ITEM(list, i, s);
        }
    }
    PyBuffer_Release(&view);
    return list;
}

static PyMethodDef methods[] = {
    {"float32_texts", float32_texts, METH_O,
     "float32_texts(buffer) -> list of str: each float32 value as TF Serving's REST JSON writes it."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_json_floats", NULL, -1, methods};

PyMODINIT_FUNC PyInit__json_floats(void) { return PyModule_Create(&module); }
