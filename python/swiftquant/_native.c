/*
 * swiftquant._native: the thin CPython binding over the C ABI (swiftquant.h).
 *
 * Every function takes objects that export the buffer protocol (NumPy arrays) and passes their memory to
 * the library as it is: no copies. Outputs are allocated by the Python layer (swiftquant/__init__.py) once
 * and filled here. The GIL is released around native work. Argument checking that gives friendly messages
 * lives in the Python layer; this file re-checks element type, contiguity and sizes so that no call can make
 * the library read or write outside a buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "swiftquant.h"

static PyObject *FormatError = NULL;

/* Maps a status from the library to a Python exception with the library's message. */
static PyObject *raise_status(int status) {
    const char *msg = sq_last_error();
    PyObject *type;
    switch (status) {
    case SQ_ERR_INVALID_ARGUMENT:
    case SQ_ERR_NON_FINITE: type = PyExc_ValueError; break;
    case SQ_ERR_TYPE: type = PyExc_TypeError; break;
    case SQ_ERR_FORMAT: type = FormatError; break;
    case SQ_ERR_IO: type = PyExc_OSError; break;
    case SQ_ERR_UNSUPPORTED: type = PyExc_NotImplementedError; break;
    default: type = PyExc_RuntimeError; break;
    }
    PyErr_SetString(type, (msg && msg[0]) ? msg : "swiftquant: unknown error");
    return NULL;
}

/* The element kinds this module exchanges. */
typedef enum { K_F32, K_U8, K_I32 } kind_t;

static const char *kind_name(kind_t k) {
    switch (k) {
    case K_F32: return "float32";
    case K_U8: return "uint8";
    default: return "int32";
    }
}

static int format_matches(const char *fmt, kind_t k) {
    if (fmt == NULL) return k == K_U8;
    /* Accept a native or little-endian byte-order prefix. */
    if (fmt[0] == '@' || fmt[0] == '=' || fmt[0] == '<') fmt++;
    if (fmt[0] == 0 || fmt[1] != 0) return 0;
    switch (k) {
    case K_F32: return fmt[0] == 'f';
    case K_U8: return fmt[0] == 'B';
    default: return fmt[0] == 'i' || (fmt[0] == 'l' && sizeof(long) == 4);
    }
}

/* Gets a C-contiguous buffer of `kind` with exactly `count` elements (count < 0: any count). */
static int get_buffer(PyObject *obj, Py_buffer *view, kind_t kind, Py_ssize_t count, int writable,
                      const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Clear();
        if (PyObject_GetBuffer(obj, view, PyBUF_FULL_RO) == 0) {
            PyBuffer_Release(view);
            PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s %s array", what,
                         writable ? ", writable" : "", kind_name(kind));
        } else {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s must be a NumPy array (buffer protocol), got %s", what,
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    Py_ssize_t item = kind == K_U8 ? 1 : 4;
    if (view->itemsize != item || !format_matches(view->format, kind)) {
        PyErr_Format(PyExc_TypeError, "%s must have dtype %s (buffer format '%s')", what, kind_name(kind),
                     view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    if (count >= 0 && view->len != count * item) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd elements, %zd expected", what, view->len / item, count);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* ---- minifloats --------------------------------------------------------------------------------------- */

static PyObject *py_encode(PyObject *self, PyObject *args) {
    PyObject *x, *out;
    const char *fmt;
    if (!PyArg_ParseTuple(args, "OsO", &x, &fmt, &out)) return NULL;
    Py_buffer vx, vo;
    if (get_buffer(x, &vx, K_F32, -1, 0, "x") < 0) return NULL;
    Py_ssize_t n = vx.len / 4;
    if (get_buffer(out, &vo, K_U8, n, 1, "out") < 0) { PyBuffer_Release(&vx); return NULL; }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = sq_encode((const float *)vx.buf, (size_t)n, fmt, (uint8_t *)vo.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vo);
    if (st != SQ_OK) return raise_status(st);
    Py_RETURN_NONE;
}

static PyObject *py_decode(PyObject *self, PyObject *args) {
    PyObject *codes, *out;
    const char *fmt;
    if (!PyArg_ParseTuple(args, "OsO", &codes, &fmt, &out)) return NULL;
    Py_buffer vc, vo;
    if (get_buffer(codes, &vc, K_U8, -1, 0, "codes") < 0) return NULL;
    Py_ssize_t n = vc.len;
    if (get_buffer(out, &vo, K_F32, n, 1, "out") < 0) { PyBuffer_Release(&vc); return NULL; }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = sq_decode((const uint8_t *)vc.buf, (size_t)n, fmt, (float *)vo.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&vc);
    PyBuffer_Release(&vo);
    if (st != SQ_OK) return raise_status(st);
    Py_RETURN_NONE;
}

/* ---- quantizers --------------------------------------------------------------------------------------- */

/* Parses the options shared by the quantizer entry points. */
static int parse_options(PyObject *tuple, sq_quant_options *o) {
    long long group;
    int sym, policy, constraint;
    if (!PyArg_ParseTuple(tuple, "Lpii", &group, &sym, &policy, &constraint)) return -1;
    o->group_size = group;
    o->symmetric = sym;
    o->policy = policy;
    o->scale_constraint = constraint;
    o->reserved = 0;
    return 0;
}

/* Clip buffers: both None, or both float32 of rows*groups elements. */
static int get_clips(PyObject *up, PyObject *low, Py_ssize_t count, Py_buffer *vu, Py_buffer *vl, int *have) {
    *have = 0;
    if (up == Py_None && low == Py_None) return 0;
    if (up == Py_None || low == Py_None) {
        PyErr_SetString(PyExc_ValueError, "clip needs both arrays (up, low)");
        return -1;
    }
    if (get_buffer(up, vu, K_F32, count, 0, "clip[0] (up)") < 0) return -1;
    if (get_buffer(low, vl, K_F32, count, 0, "clip[1] (low)") < 0) { PyBuffer_Release(vu); return -1; }
    *have = 1;
    return 0;
}

/* quantize(w, rows, cols, fmt, options, clip_up, clip_low, codes_or_packed, scales, zeros, packed) */
static PyObject *py_quantize(PyObject *self, PyObject *args) {
    PyObject *w, *opts, *up, *low, *codes, *scales, *zeros;
    Py_ssize_t rows, cols;
    const char *fmt;
    int packed;
    if (!PyArg_ParseTuple(args, "OnnsOOOOOOp", &w, &rows, &cols, &fmt, &opts, &up, &low, &codes, &scales, &zeros,
                          &packed))
        return NULL;
    sq_quant_options o;
    if (parse_options(opts, &o) < 0) return NULL;
    if (rows <= 0 || cols <= 0) return PyErr_Format(PyExc_ValueError, "empty matrix [%zd, %zd]", rows, cols);
    if (cols > PY_SSIZE_T_MAX / 4 / rows) return PyErr_Format(PyExc_ValueError, "matrix [%zd, %zd] too large", rows, cols);
    Py_ssize_t groups = (Py_ssize_t)sq_group_count(cols, o.group_size);
    Py_ssize_t code_count = rows * cols;
    if (packed) {
        int bits = 0;
        int fst = sq_format_bits(fmt, &bits);
        if (fst != SQ_OK) return raise_status(fst);
        code_count = rows * (Py_ssize_t)sq_packed_size((size_t)cols, bits);
    }
    Py_buffer vw, vu, vl, vc, vs, vz;
    int have_clip = 0;
    if (get_buffer(w, &vw, K_F32, rows * cols, 0, "w") < 0) return NULL;
    if (get_clips(up, low, rows * groups, &vu, &vl, &have_clip) < 0) goto fail_w;
    if (get_buffer(codes, &vc, K_U8, code_count, 1, packed ? "packed" : "codes") < 0) goto fail_clip;
    if (get_buffer(scales, &vs, K_F32, rows * groups, 1, "scales") < 0) goto fail_codes;
    if (get_buffer(zeros, &vz, K_I32, rows * groups, 1, "zeros") < 0) goto fail_scales;
    int st;
    if (packed) {
        Py_BEGIN_ALLOW_THREADS
        st = sq_quantize_packed((const float *)vw.buf, rows, cols, fmt, &o, have_clip ? vu.buf : NULL,
                                have_clip ? vl.buf : NULL, (uint8_t *)vc.buf, (float *)vs.buf, (int32_t *)vz.buf);
        Py_END_ALLOW_THREADS
    } else {
        Py_BEGIN_ALLOW_THREADS
        st = sq_quantize((const float *)vw.buf, rows, cols, fmt, &o, have_clip ? vu.buf : NULL,
                         have_clip ? vl.buf : NULL, (uint8_t *)vc.buf, (float *)vs.buf, (int32_t *)vz.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&vz);
    PyBuffer_Release(&vs);
    PyBuffer_Release(&vc);
    if (have_clip) { PyBuffer_Release(&vu); PyBuffer_Release(&vl); }
    PyBuffer_Release(&vw);
    if (st != SQ_OK) return raise_status(st);
    Py_RETURN_NONE;
fail_scales:
    PyBuffer_Release(&vs);
fail_codes:
    PyBuffer_Release(&vc);
fail_clip:
    if (have_clip) { PyBuffer_Release(&vu); PyBuffer_Release(&vl); }
fail_w:
    PyBuffer_Release(&vw);
    return NULL;
}

/* gptq(w, h, rows, cols, fmt, options, act_order, codes, scales, zeros, g_idx, dequantized) */
static PyObject *py_gptq(PyObject *self, PyObject *args) {
    PyObject *w, *h, *opts, *codes, *scales, *zeros, *gidx, *deq;
    Py_ssize_t rows, cols;
    const char *fmt;
    int act_order;
    if (!PyArg_ParseTuple(args, "OOnnsOpOOOOO", &w, &h, &rows, &cols, &fmt, &opts, &act_order, &codes, &scales,
                          &zeros, &gidx, &deq))
        return NULL;
    sq_quant_options o;
    if (parse_options(opts, &o) < 0) return NULL;
    if (rows <= 0 || cols <= 0) return PyErr_Format(PyExc_ValueError, "empty matrix [%zd, %zd]", rows, cols);
    if (cols > PY_SSIZE_T_MAX / 4 / rows || cols > PY_SSIZE_T_MAX / 4 / cols)
        return PyErr_Format(PyExc_ValueError, "matrix [%zd, %zd] too large", rows, cols);
    Py_ssize_t groups = (Py_ssize_t)sq_group_count(cols, o.group_size);
    Py_buffer vw, vh, vc, vs, vz, vg, vd;
    if (get_buffer(w, &vw, K_F32, rows * cols, 0, "w") < 0) return NULL;
    if (get_buffer(h, &vh, K_F32, cols * cols, 0, "h") < 0) goto fail_w;
    if (get_buffer(codes, &vc, K_U8, rows * cols, 1, "codes") < 0) goto fail_h;
    if (get_buffer(scales, &vs, K_F32, rows * groups, 1, "scales") < 0) goto fail_c;
    if (get_buffer(zeros, &vz, K_I32, rows * groups, 1, "zeros") < 0) goto fail_s;
    if (get_buffer(gidx, &vg, K_I32, cols, 1, "g_idx") < 0) goto fail_z;
    if (get_buffer(deq, &vd, K_F32, rows * cols, 1, "dequantized") < 0) goto fail_g;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = sq_gptq((const float *)vw.buf, rows, cols, (const float *)vh.buf, fmt, &o, act_order, (uint8_t *)vc.buf,
                 (float *)vs.buf, (int32_t *)vz.buf, (int32_t *)vg.buf, (float *)vd.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&vd);
    PyBuffer_Release(&vg);
    PyBuffer_Release(&vz);
    PyBuffer_Release(&vs);
    PyBuffer_Release(&vc);
    PyBuffer_Release(&vh);
    PyBuffer_Release(&vw);
    if (st != SQ_OK) return raise_status(st);
    Py_RETURN_NONE;
fail_g:
    PyBuffer_Release(&vg);
fail_z:
    PyBuffer_Release(&vz);
fail_s:
    PyBuffer_Release(&vs);
fail_c:
    PyBuffer_Release(&vc);
fail_h:
    PyBuffer_Release(&vh);
fail_w:
    PyBuffer_Release(&vw);
    return NULL;
}

/* dequantize(codes, scales, zeros, rows, cols, fmt, options, out) */
static PyObject *py_dequantize(PyObject *self, PyObject *args) {
    PyObject *codes, *scales, *zeros, *opts, *out;
    Py_ssize_t rows, cols;
    const char *fmt;
    if (!PyArg_ParseTuple(args, "OOOnnsOO", &codes, &scales, &zeros, &rows, &cols, &fmt, &opts, &out)) return NULL;
    sq_quant_options o;
    if (parse_options(opts, &o) < 0) return NULL;
    if (rows <= 0 || cols <= 0) return PyErr_Format(PyExc_ValueError, "empty matrix [%zd, %zd]", rows, cols);
    if (cols > PY_SSIZE_T_MAX / 4 / rows) return PyErr_Format(PyExc_ValueError, "matrix [%zd, %zd] too large", rows, cols);
    Py_ssize_t groups = (Py_ssize_t)sq_group_count(cols, o.group_size);
    Py_buffer vc, vs, vz, vo;
    if (get_buffer(codes, &vc, K_U8, rows * cols, 0, "codes") < 0) return NULL;
    if (get_buffer(scales, &vs, K_F32, rows * groups, 0, "scales") < 0) { PyBuffer_Release(&vc); return NULL; }
    if (get_buffer(zeros, &vz, K_I32, rows * groups, 0, "zeros") < 0) {
        PyBuffer_Release(&vs); PyBuffer_Release(&vc); return NULL;
    }
    if (get_buffer(out, &vo, K_F32, rows * cols, 1, "out") < 0) {
        PyBuffer_Release(&vz); PyBuffer_Release(&vs); PyBuffer_Release(&vc); return NULL;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = sq_dequantize((const uint8_t *)vc.buf, (const float *)vs.buf, (const int32_t *)vz.buf, rows, cols, fmt, &o,
                       (float *)vo.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&vo);
    PyBuffer_Release(&vz);
    PyBuffer_Release(&vs);
    PyBuffer_Release(&vc);
    if (st != SQ_OK) return raise_status(st);
    Py_RETURN_NONE;
}

/* fake_quantize(w, rows, cols, fmt, options, clip_up, clip_low, out) — out may be w */
static PyObject *py_fake_quantize(PyObject *self, PyObject *args) {
    PyObject *w, *opts, *up, *low, *out;
    Py_ssize_t rows, cols;
    const char *fmt;
    if (!PyArg_ParseTuple(args, "OnnsOOOO", &w, &rows, &cols, &fmt, &opts, &up, &low, &out)) return NULL;
    sq_quant_options o;
    if (parse_options(opts, &o) < 0) return NULL;
    if (rows <= 0 || cols <= 0) return PyErr_Format(PyExc_ValueError, "empty matrix [%zd, %zd]", rows, cols);
    if (cols > PY_SSIZE_T_MAX / 4 / rows) return PyErr_Format(PyExc_ValueError, "matrix [%zd, %zd] too large", rows, cols);
    Py_ssize_t groups = (Py_ssize_t)sq_group_count(cols, o.group_size);
    Py_buffer vw, vu, vl, vo;
    int have_clip = 0;
    if (get_buffer(w, &vw, K_F32, rows * cols, 0, "w") < 0) return NULL;
    if (get_clips(up, low, rows * groups, &vu, &vl, &have_clip) < 0) { PyBuffer_Release(&vw); return NULL; }
    if (get_buffer(out, &vo, K_F32, rows * cols, 1, "out") < 0) {
        if (have_clip) { PyBuffer_Release(&vu); PyBuffer_Release(&vl); }
        PyBuffer_Release(&vw);
        return NULL;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = sq_fake_quantize((const float *)vw.buf, rows, cols, fmt, &o, have_clip ? vu.buf : NULL,
                          have_clip ? vl.buf : NULL, (float *)vo.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&vo);
    if (have_clip) { PyBuffer_Release(&vu); PyBuffer_Release(&vl); }
    PyBuffer_Release(&vw);
    if (st != SQ_OK) return raise_status(st);
    Py_RETURN_NONE;
}

/* ---- packing ------------------------------------------------------------------------------------------ */

static PyObject *py_pack(PyObject *self, PyObject *args) {
    PyObject *codes, *out;
    int bits;
    if (!PyArg_ParseTuple(args, "OiO", &codes, &bits, &out)) return NULL;
    Py_buffer vc, vo;
    if (get_buffer(codes, &vc, K_U8, -1, 0, "codes") < 0) return NULL;
    if (get_buffer(out, &vo, K_U8, -1, 1, "out") < 0) { PyBuffer_Release(&vc); return NULL; }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = sq_pack((const uint8_t *)vc.buf, (size_t)vc.len, bits, (uint8_t *)vo.buf, (size_t)vo.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&vo);
    PyBuffer_Release(&vc);
    if (st != SQ_OK) return raise_status(st);
    Py_RETURN_NONE;
}

/* pack_rows(codes2d, rows, cols, bits, out) */
static PyObject *py_pack_rows(PyObject *self, PyObject *args) {
    PyObject *codes, *out;
    Py_ssize_t rows, cols;
    int bits;
    if (!PyArg_ParseTuple(args, "OnniO", &codes, &rows, &cols, &bits, &out)) return NULL;
    if (rows <= 0 || cols <= 0) return PyErr_Format(PyExc_ValueError, "empty matrix [%zd, %zd]", rows, cols);
    if (cols > PY_SSIZE_T_MAX / rows) return PyErr_Format(PyExc_ValueError, "matrix [%zd, %zd] too large", rows, cols);
    Py_buffer vc, vo;
    if (get_buffer(codes, &vc, K_U8, rows * cols, 0, "codes") < 0) return NULL;
    if (get_buffer(out, &vo, K_U8, -1, 1, "out") < 0) { PyBuffer_Release(&vc); return NULL; }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = sq_pack_rows((const uint8_t *)vc.buf, rows, cols, bits, (uint8_t *)vo.buf, (size_t)vo.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&vo);
    PyBuffer_Release(&vc);
    if (st != SQ_OK) return raise_status(st);
    Py_RETURN_NONE;
}

static PyObject *py_format_bits(PyObject *self, PyObject *args) {
    const char *fmt;
    if (!PyArg_ParseTuple(args, "s", &fmt)) return NULL;
    int bits = 0;
    int st = sq_format_bits(fmt, &bits);
    if (st != SQ_OK) return raise_status(st);
    return PyLong_FromLong(bits);
}

static PyObject *py_unpack(PyObject *self, PyObject *args) {
    PyObject *packed, *out;
    int bits;
    if (!PyArg_ParseTuple(args, "OiO", &packed, &bits, &out)) return NULL;
    Py_buffer vp, vo;
    if (get_buffer(packed, &vp, K_U8, -1, 0, "packed") < 0) return NULL;
    if (get_buffer(out, &vo, K_U8, -1, 1, "out") < 0) { PyBuffer_Release(&vp); return NULL; }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = sq_unpack((const uint8_t *)vp.buf, (size_t)vp.len, bits, (size_t)vo.len, (uint8_t *)vo.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&vo);
    PyBuffer_Release(&vp);
    if (st != SQ_OK) return raise_status(st);
    Py_RETURN_NONE;
}

static PyObject *py_packed_size(PyObject *self, PyObject *args) {
    Py_ssize_t count;
    int bits;
    if (!PyArg_ParseTuple(args, "ni", &count, &bits)) return NULL;
    if (count < 0 || bits < 1 || bits > 8)
        return PyErr_Format(PyExc_ValueError, "bits must be in 1..8 and count >= 0 (got %d, %zd)", bits, count);
    return PyLong_FromSize_t(sq_packed_size((size_t)count, bits));
}

/* ---- BLAS ----------------------------------------------------------------------------------------------- */

/* sgemm(a, b, c, m, n, k, trans_a, trans_b): c = op(a) @ op(b), all C-contiguous float32. */
static PyObject *py_sgemm(PyObject *self, PyObject *args) {
    PyObject *a, *b, *c;
    Py_ssize_t m, n, k;
    int ta, tb;
    if (!PyArg_ParseTuple(args, "OOOnnnpp", &a, &b, &c, &m, &n, &k, &ta, &tb)) return NULL;
    if (m < 0 || n < 0 || k < 0) return PyErr_Format(PyExc_ValueError, "negative size");
    Py_buffer va, vb, vc;
    if (get_buffer(a, &va, K_F32, m * k, 0, "a") < 0) return NULL;
    if (get_buffer(b, &vb, K_F32, k * n, 0, "b") < 0) { PyBuffer_Release(&va); return NULL; }
    if (get_buffer(c, &vc, K_F32, m * n, 1, "c") < 0) { PyBuffer_Release(&vb); PyBuffer_Release(&va); return NULL; }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = sq_sgemm(ta, tb, m, n, k, 1.0f, (const float *)va.buf, ta ? m : k, (const float *)vb.buf, tb ? k : n, 0.0f,
                  (float *)vc.buf, n);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&vc);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&va);
    if (st != SQ_OK) return raise_status(st);
    Py_RETURN_NONE;
}

static PyObject *py_blas_info(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(sq_blas_info()); }
static PyObject *py_gemm_backend(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(sq_gemm_backend()); }
static PyObject *py_blas_bf16_info(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(sq_blas_bf16_info()); }
static PyObject *py_gemm_bf16_backend(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(sq_gemm_bf16_backend());
}

static PyObject *py_version(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(sq_version()); }

static PyObject *py_group_count(PyObject *self, PyObject *args) {
    long long cols, group;
    if (!PyArg_ParseTuple(args, "LL", &cols, &group)) return NULL;
    return PyLong_FromLongLong(sq_group_count(cols, group));
}


/* ---- Models and tokenizers: capsules over the opaque handles, zero-copy read-only tensor buffers ---- */

static void model_capsule_free(PyObject *cap) {
    sq_model *m = (sq_model *)PyCapsule_GetPointer(cap, "swiftquant.model");
    if (m) sq_model_free(m);
}

static void tokenizer_capsule_free(PyObject *cap) {
    sq_tokenizer *t = (sq_tokenizer *)PyCapsule_GetPointer(cap, "swiftquant.tokenizer");
    if (t) sq_tokenizer_free(t);
}

static sq_model *get_model(PyObject *cap) { return (sq_model *)PyCapsule_GetPointer(cap, "swiftquant.model"); }
static sq_tokenizer *get_tokenizer(PyObject *cap) {
    return (sq_tokenizer *)PyCapsule_GetPointer(cap, "swiftquant.tokenizer");
}

/* A read-only float32 buffer owned by a model: exports the buffer protocol and keeps the model alive, so
 * np.asarray(TensorBuffer) is a zero-copy view that outlives every Python reference to the model. */
typedef struct {
    PyObject_HEAD
    PyObject *owner;
    const float *data;
    int rank;
    Py_ssize_t shape[4];
    Py_ssize_t strides[4];
} TensorBuffer;

static int tb_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    TensorBuffer *b = (TensorBuffer *)self;
    if (flags & PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError, "swiftquant model tensors are read-only (copy them to modify)");
        return -1;
    }
    Py_ssize_t n = 1;
    for (int i = 0; i < b->rank; i++) n *= b->shape[i];
    view->buf = (void *)b->data;
    view->obj = self;
    Py_INCREF(self);
    view->len = n * (Py_ssize_t)sizeof(float);
    view->readonly = 1;
    view->itemsize = sizeof(float);
    view->format = (flags & PyBUF_FORMAT) ? "f" : NULL;
    view->ndim = b->rank;
    view->shape = (flags & PyBUF_ND) ? b->shape : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? b->strides : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    return 0;
}

static void tb_dealloc(PyObject *self) {
    Py_XDECREF(((TensorBuffer *)self)->owner);
    Py_TYPE(self)->tp_free(self);
}

static PyBufferProcs tb_as_buffer = {tb_getbuffer, NULL};

static PyTypeObject TensorBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "swiftquant._native.TensorBuffer",
    .tp_basicsize = sizeof(TensorBuffer),
    .tp_dealloc = tb_dealloc,
    .tp_as_buffer = &tb_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A read-only float32 tensor owned by a SwiftQuant model (use numpy.asarray).",
};

static PyObject *py_model_open(PyObject *self, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path)) return NULL;
    sq_model *m = NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS st = sq_model_open(path, &m);
    Py_END_ALLOW_THREADS if (st) return raise_status(st);
    return PyCapsule_New(m, "swiftquant.model", model_capsule_free);
}

static PyObject *py_model_config(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    sq_model *m = get_model(cap);
    if (!m) return NULL;
    const char *json = NULL;
    int st = sq_model_config_json(m, &json);
    if (st) return raise_status(st);
    return PyUnicode_FromString(json);
}

static PyObject *py_model_tensor_names(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    sq_model *m = get_model(cap);
    if (!m) return NULL;
    int64_t n = 0;
    int st = sq_model_tensor_count(m, &n);
    if (st) return raise_status(st);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (int64_t i = 0; i < n; i++) {
        const char *name = NULL;
        st = sq_model_tensor_name(m, i, &name);
        if (st) { Py_DECREF(list); return raise_status(st); }
        PyList_SET_ITEM(list, (Py_ssize_t)i, PyUnicode_FromString(name));
    }
    return list;
}

/* model_tensor(model, name) -> (TensorBuffer, is_copy) */
static PyObject *py_model_tensor(PyObject *self, PyObject *args) {
    PyObject *cap;
    const char *name;
    if (!PyArg_ParseTuple(args, "Os", &cap, &name)) return NULL;
    sq_model *m = get_model(cap);
    if (!m) return NULL;
    const float *data = NULL;
    int64_t shape[4] = {0, 0, 0, 0};
    int rank = 0, is_copy = 0, st;
    Py_BEGIN_ALLOW_THREADS st = sq_model_tensor(m, name, &data, shape, &rank, &is_copy);
    Py_END_ALLOW_THREADS if (st) return raise_status(st);
    TensorBuffer *b = PyObject_New(TensorBuffer, &TensorBufferType);
    if (!b) return NULL;
    Py_INCREF(cap);
    b->owner = cap;
    b->data = data;
    b->rank = rank;
    Py_ssize_t stride = sizeof(float);
    for (int i = rank - 1; i >= 0; i--) {
        b->shape[i] = (Py_ssize_t)shape[i];
        b->strides[i] = stride;
        stride *= (Py_ssize_t)shape[i];
    }
    return Py_BuildValue("(Ni)", (PyObject *)b, is_copy);
}

static PyObject *py_model_vocab_size(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    sq_model *m = get_model(cap);
    if (!m) return NULL;
    int64_t v = 0;
    int st = sq_model_vocab_size(m, &v);
    if (st) return raise_status(st);
    return PyLong_FromLongLong(v);
}

/* model_logits(model, ids int32, out float32 [n*vocab]) */
static PyObject *py_model_logits(PyObject *self, PyObject *args) {
    PyObject *cap, *ids_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOO", &cap, &ids_obj, &out_obj)) return NULL;
    sq_model *m = get_model(cap);
    if (!m) return NULL;
    int64_t vocab = 0;
    int st = sq_model_vocab_size(m, &vocab);
    if (st) return raise_status(st);
    Py_buffer ids, out;
    if (get_buffer(ids_obj, &ids, K_I32, -1, 0, "ids") < 0) return NULL;
    Py_ssize_t n = ids.len / 4;
    if (get_buffer(out_obj, &out, K_F32, n * (Py_ssize_t)vocab, 1, "out") < 0) {
        PyBuffer_Release(&ids);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS st = sq_model_logits(m, (const int32_t *)ids.buf, n, (float *)out.buf);
    Py_END_ALLOW_THREADS PyBuffer_Release(&ids);
    PyBuffer_Release(&out);
    if (st) return raise_status(st);
    Py_RETURN_NONE;
}

/* model_perplexity(model, ids int32, seqlen, limit, progress) -> (ppl, windows) */
static PyObject *py_model_perplexity(PyObject *self, PyObject *args) {
    PyObject *cap, *ids_obj;
    long long seqlen, limit;
    int progress;
    if (!PyArg_ParseTuple(args, "OOLLp", &cap, &ids_obj, &seqlen, &limit, &progress)) return NULL;
    sq_model *m = get_model(cap);
    if (!m) return NULL;
    Py_buffer ids;
    if (get_buffer(ids_obj, &ids, K_I32, -1, 0, "ids") < 0) return NULL;
    double ppl = 0;
    int64_t windows = 0;
    int st;
    Py_BEGIN_ALLOW_THREADS st = sq_model_perplexity(m, (const int32_t *)ids.buf, ids.len / 4, seqlen, limit,
                                                    progress, &ppl, &windows);
    Py_END_ALLOW_THREADS PyBuffer_Release(&ids);
    if (st) return raise_status(st);
    return Py_BuildValue("(dL)", ppl, (long long)windows);
}

/* recipe_resolve(json) -> json: the recipe with every field filled in and checked by the core */
static PyObject *py_recipe_resolve(PyObject *self, PyObject *args) {
    const char *json;
    if (!PyArg_ParseTuple(args, "s", &json)) return NULL;
    char *out = NULL;
    int st = sq_recipe_resolve(json, &out);
    if (st) return raise_status(st);
    PyObject *r = PyUnicode_FromString(out);
    sq_free(out);
    return r;
}

/* model_quantize(model, recipe_json, calib or None, work_dir or None, resume, progress) -> model */
static PyObject *py_model_quantize(PyObject *self, PyObject *args) {
    PyObject *cap, *calib_obj, *work_obj;
    const char *json;
    int resume, progress;
    if (!PyArg_ParseTuple(args, "OsOOpp", &cap, &json, &calib_obj, &work_obj, &resume, &progress)) return NULL;
    sq_model *m = get_model(cap);
    if (!m) return NULL;
    const char *calib = NULL, *work_dir = NULL;
    if (calib_obj != Py_None && !(calib = PyUnicode_AsUTF8(calib_obj))) return NULL;
    if (work_obj != Py_None && !(work_dir = PyUnicode_AsUTF8(work_obj))) return NULL;
    sq_model *out = NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS st = sq_model_quantize(m, json, calib, work_dir, resume, progress, &out);
    Py_END_ALLOW_THREADS if (st) return raise_status(st);
    return PyCapsule_New(out, "swiftquant.model", model_capsule_free);
}

static PyObject *py_model_save(PyObject *self, PyObject *args) {
    PyObject *cap;
    const char *dir;
    if (!PyArg_ParseTuple(args, "Os", &cap, &dir)) return NULL;
    sq_model *m = get_model(cap);
    if (!m) return NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS st = sq_model_save(m, dir);
    Py_END_ALLOW_THREADS if (st) return raise_status(st);
    Py_RETURN_NONE;
}

/* model_export(model, format, path, requantize, progress) */
static PyObject *py_model_export(PyObject *self, PyObject *args) {
    PyObject *cap;
    const char *format, *path;
    int requantize, progress;
    if (!PyArg_ParseTuple(args, "Ossii", &cap, &format, &path, &requantize, &progress)) return NULL;
    sq_model *m = get_model(cap);
    if (!m) return NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS st = sq_model_export(m, format, path, requantize, progress);
    Py_END_ALLOW_THREADS if (st) return raise_status(st);
    Py_RETURN_NONE;
}

/* model_tokenizer(model) -> tokenizer capsule or None */
static PyObject *py_model_tokenizer(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    sq_model *m = get_model(cap);
    if (!m) return NULL;
    sq_tokenizer *t = NULL;
    int st = sq_model_tokenizer(m, &t);
    if (st == SQ_ERR_INVALID_ARGUMENT) Py_RETURN_NONE;
    if (st) return raise_status(st);
    return PyCapsule_New(t, "swiftquant.tokenizer", tokenizer_capsule_free);
}

static PyObject *py_tokenizer_open(PyObject *self, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path)) return NULL;
    sq_tokenizer *t = NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS st = sq_tokenizer_open(path, &t);
    Py_END_ALLOW_THREADS if (st) return raise_status(st);
    return PyCapsule_New(t, "swiftquant.tokenizer", tokenizer_capsule_free);
}

/* tokenizer_encode(tok, bytes) -> bytes of int32 ids */
static PyObject *py_tokenizer_encode(PyObject *self, PyObject *args) {
    PyObject *cap;
    const char *text;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "Os#", &cap, &text, &len)) return NULL;
    sq_tokenizer *t = get_tokenizer(cap);
    if (!t) return NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    int st;
    Py_BEGIN_ALLOW_THREADS st = sq_tokenizer_encode(t, text, (size_t)len, &ids, &n);
    Py_END_ALLOW_THREADS if (st) return raise_status(st);
    PyObject *res = PyBytes_FromStringAndSize((const char *)ids, (Py_ssize_t)(n * 4));
    sq_free(ids);
    return res;
}

static PyObject *py_tokenizer_decode(PyObject *self, PyObject *args) {
    PyObject *cap, *ids_obj;
    int skip;
    if (!PyArg_ParseTuple(args, "OOp", &cap, &ids_obj, &skip)) return NULL;
    sq_tokenizer *t = get_tokenizer(cap);
    if (!t) return NULL;
    Py_buffer ids;
    if (get_buffer(ids_obj, &ids, K_I32, -1, 0, "ids") < 0) return NULL;
    char *text = NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS st = sq_tokenizer_decode(t, (const int32_t *)ids.buf, ids.len / 4, skip, &text);
    Py_END_ALLOW_THREADS PyBuffer_Release(&ids);
    if (st) return raise_status(st);
    PyObject *res = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    sq_free(text);
    return res;
}

static PyObject *py_tokenizer_vocab_size(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    sq_tokenizer *t = get_tokenizer(cap);
    if (!t) return NULL;
    int64_t v = 0;
    int st = sq_tokenizer_vocab_size(t, &v);
    if (st) return raise_status(st);
    return PyLong_FromLongLong(v);
}

/* model_quantized(model) -> {name: (codes bytes, scales bytes, zeros bytes, rows, cols, groups, format, group, sym,
 * g_idx bytes or None)}; group is SQ_GROUP_PER_ROW (0) or the size; g_idx (int32 [cols]) only when the columns'
 * groups are not consecutive (act-order). */
static PyObject *py_model_quantized(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    sq_model *m = get_model(cap);
    if (!m) return NULL;
    int64_t n = 0;
    int st = sq_model_quantized_count(m, &n);
    if (st) return raise_status(st);
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int64_t i = 0; i < n; i++) {
        const char *name;
        const uint8_t *codes;
        const float *scales;
        const int32_t *zeros;
        const char *format;
        const int32_t *g_idx;
        int64_t rows, cols, groups, gs;
        int sym;
        if ((st = sq_model_quantized_name(m, i, &name)) ||
            (st = sq_model_quantized(m, name, &codes, &scales, &zeros, &rows, &cols, &groups, &format, &gs, &sym)) ||
            (st = sq_model_quantized_group_index(m, name, &g_idx))) {
            Py_DECREF(d);
            return raise_status(st);
        }
        PyObject *gi = g_idx ? PyBytes_FromStringAndSize((const char *)g_idx, (Py_ssize_t)(cols * 4))
                             : (Py_INCREF(Py_None), Py_None);
        if (!gi) {
            Py_DECREF(d);
            return NULL;
        }
        PyObject *t = Py_BuildValue("(y#y#y#LLLsLiN)", (const char *)codes, (Py_ssize_t)(rows * cols),
                                    (const char *)scales, (Py_ssize_t)(rows * groups * 4), (const char *)zeros,
                                    (Py_ssize_t)(rows * groups * 4), (long long)rows, (long long)cols,
                                    (long long)groups, format, (long long)gs, sym, gi);
        if (!t || PyDict_SetItemString(d, name, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(t);
    }
    return d;
}

static PyMethodDef methods[] = {
    {"model_quantized", py_model_quantized, METH_VARARGS, "model_quantized(model) -> dict"},
    {"model_open", py_model_open, METH_VARARGS, "model_open(path) -> model"},
    {"model_config", py_model_config, METH_VARARGS, "model_config(model) -> JSON text"},
    {"model_tensor_names", py_model_tensor_names, METH_VARARGS, "model_tensor_names(model) -> [str]"},
    {"model_tensor", py_model_tensor, METH_VARARGS, "model_tensor(model, name) -> (TensorBuffer, is_copy)"},
    {"model_vocab_size", py_model_vocab_size, METH_VARARGS, "model_vocab_size(model) -> int"},
    {"model_logits", py_model_logits, METH_VARARGS, "model_logits(model, ids, out)"},
    {"model_perplexity", py_model_perplexity, METH_VARARGS, "model_perplexity(model, ids, seqlen, limit, progress)"},
    {"model_quantize", py_model_quantize, METH_VARARGS,
     "model_quantize(model, recipe_json, calib, work_dir, resume, progress) -> model"},
    {"recipe_resolve", py_recipe_resolve, METH_VARARGS, "recipe_resolve(json) -> json"},
    {"model_save", py_model_save, METH_VARARGS, "model_save(model, dir)"},
    {"gptq", py_gptq, METH_VARARGS, "gptq(w, h, rows, cols, fmt, options, act_order, codes, scales, zeros, g_idx, deq)"},
    {"model_export", py_model_export, METH_VARARGS, "model_export(model, format, path, requantize, progress)"},
    {"model_tokenizer", py_model_tokenizer, METH_VARARGS, "model_tokenizer(model) -> tokenizer or None"},
    {"tokenizer_open", py_tokenizer_open, METH_VARARGS, "tokenizer_open(path) -> tokenizer"},
    {"tokenizer_encode", py_tokenizer_encode, METH_VARARGS, "tokenizer_encode(tok, utf8) -> int32 bytes"},
    {"tokenizer_decode", py_tokenizer_decode, METH_VARARGS, "tokenizer_decode(tok, ids, skip_special) -> str"},
    {"tokenizer_vocab_size", py_tokenizer_vocab_size, METH_VARARGS, "tokenizer_vocab_size(tok) -> int"},
    {"encode", py_encode, METH_VARARGS, "encode(x, fmt, out): float32 -> minifloat codes"},
    {"decode", py_decode, METH_VARARGS, "decode(codes, fmt, out): minifloat codes -> float32"},
    {"quantize", py_quantize, METH_VARARGS,
     "quantize(w, rows, cols, fmt, options, clip_up, clip_low, codes, scales, zeros, packed)"},
    {"dequantize", py_dequantize, METH_VARARGS, "dequantize(codes, scales, zeros, rows, cols, fmt, options, out)"},
    {"fake_quantize", py_fake_quantize, METH_VARARGS,
     "fake_quantize(w, rows, cols, fmt, options, clip_up, clip_low, out)"},
    {"pack", py_pack, METH_VARARGS, "pack(codes, bits, out)"},
    {"pack_rows", py_pack_rows, METH_VARARGS, "pack_rows(codes, rows, cols, bits, out)"},
    {"format_bits", py_format_bits, METH_VARARGS, "format_bits(fmt) -> int"},
    {"unpack", py_unpack, METH_VARARGS, "unpack(packed, bits, out)"},
    {"packed_size", py_packed_size, METH_VARARGS, "packed_size(count, bits) -> int"},
    {"group_count", py_group_count, METH_VARARGS, "group_count(cols, group_size) -> int"},
    {"sgemm", py_sgemm, METH_VARARGS, "sgemm(a, b, c, m, n, k, trans_a, trans_b)"},
    {"blas_info", py_blas_info, METH_NOARGS, "the GEMM backend in use and why it was chosen"},
    {"gemm_backend", py_gemm_backend, METH_NOARGS, "the GEMM backend's short name"},
    {"blas_bf16_info", py_blas_bf16_info, METH_NOARGS, "the bf16 GEMM backend in use and why it was chosen"},
    {"gemm_bf16_backend", py_gemm_bf16_backend, METH_NOARGS, "the bf16 GEMM backend's short name"},
    {"version", py_version, METH_NOARGS, "library version"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "swiftquant._native",
                                       "Thin binding over the SwiftQuant C ABI.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    if (sq_abi_version() != SQ_ABI_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "swiftquant: the native library has ABI version %d, this module was built for %d; "
                     "reinstall the package",
                     sq_abi_version(), SQ_ABI_VERSION);
        return NULL;
    }
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    FormatError = PyErr_NewExceptionWithDoc(
        "swiftquant.FormatError", "A file that cannot be read as what it claims to be (a ValueError).",
        PyExc_ValueError, NULL);
    if (!FormatError || PyModule_AddObjectRef(m, "FormatError", FormatError) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyType_Ready(&TensorBufferType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "ABI_VERSION", SQ_ABI_VERSION);
    PyModule_AddIntConstant(m, "GROUP_PER_ROW", SQ_GROUP_PER_ROW);
    return m;
}
