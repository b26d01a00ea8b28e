/* sysmonx.sensor._ringbatch: a compiled libbpf ring-buffer sample callback for the eBPF
 * backend (sysmonx.sensor.backends.ebpf), so that consuming a record costs no Python call.
 *
 * libbpf's ring_buffer__poll()/ring_buffer__consume() call a ``ring_buffer_sample_fn``
 * ``int fn(void *ctx, void *data, size_t size)`` once per record. The pure path gives libbpf a
 * ctypes callback (GIL taken, Python frame, ``ctypes.string_at`` per record). Here the callback
 * is a C function, :c:func:`rb_sample`, that appends the record's bytes to a C buffer owned by a
 * ``RingBatch`` object (its ``ctx``) without touching any Python object, so it runs while ctypes
 * has released the GIL. After the poll returns, one call, ``RingBatch.take()``, turns the batch
 * into a list of ``bytes`` (the same bytes, in the same order, that the ctypes callback copied).
 *
 * Bounds: the callback returns ``FULL`` (-4242, a value no errno takes) once the batch holds
 * ``max_records`` records or at least ``max_bytes`` bytes. libbpf has then already consumed that
 * record (its consumer position is advanced before the callback runs), so the record is kept:
 * the buffer holds at most ``max_bytes`` plus one record, and nothing is lost or reordered; the
 * poll ends early and the caller takes the batch and polls again. A record that cannot be stored
 * (out of memory) is counted in ``nomem`` and the poll ends with ``-ENOMEM``.
 *
 *   sample_callback() -> int: the address of rb_sample (for ctypes: SAMPLE_CB(address)).
 *   RingBatch(max_records, max_bytes): .ctx (int, the ctx pointer to give ring_buffer__new),
 *       .take() -> list[bytes], len(batch), .nomem (int).
 *       .take_decoded(offset, ns_per_tick, classes, received) -> (list, left): take() with
 *       the common fork/exec/exit records decoded straight into observations.
 *   FULL: the callback's return value for a full batch.
 *
 * The batch is used by one thread at a time: the thread that polls is the thread that takes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <limits.h>

#define RB_FULL (-4242)

typedef struct {
    PyObject_HEAD
    char *buf;            /* records' bytes back to back */
    size_t used, alloc;
    size_t *lens;         /* length of each record */
    Py_ssize_t n, nalloc;
    Py_ssize_t max_records;
    size_t max_bytes;
    unsigned long long nomem;
} RingBatchObject;

static int rb_sample(void *ctx, void *data, size_t size) {
    RingBatchObject *b = (RingBatchObject *)ctx;
    if (b->n >= b->nalloc) {
        Py_ssize_t na = b->nalloc ? b->nalloc * 2 : 64;
        size_t *nl = realloc(b->lens, (size_t)na * sizeof(size_t));
        if (nl == NULL) {
            b->nomem++;
            return -ENOMEM;
        }
        b->lens = nl;
        b->nalloc = na;
    }
    if (size > b->alloc - b->used) {
        size_t want = b->alloc ? b->alloc : 4096;
        while (want - b->used < size) {
            if (want > ((size_t)-1) / 2) {
                b->nomem++;
                return -ENOMEM;
            }
            want *= 2;
        }
        char *nb = realloc(b->buf, want);
        if (nb == NULL) {
            b->nomem++;
            return -ENOMEM;
        }
        b->buf = nb;
        b->alloc = want;
    }
    if (size) memcpy(b->buf + b->used, data, size);
    b->used += size;
    b->lens[b->n++] = size;
    return (b->n >= b->max_records || b->used >= b->max_bytes) ? RB_FULL : 0;
}

static PyObject *ringbatch_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"max_records", "max_bytes", NULL};
    Py_ssize_t max_records = 512, max_bytes = 8 << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|nn:RingBatch", kwlist, &max_records,
                                     &max_bytes))
        return NULL;
    if (max_records < 1 || max_bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "RingBatch: max_records and max_bytes must be >= 1");
        return NULL;
    }
    RingBatchObject *self = (RingBatchObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->max_records = max_records;
    self->max_bytes = (size_t)max_bytes;
    return (PyObject *)self;
}

static void ringbatch_dealloc(RingBatchObject *self) {
    free(self->buf);
    free(self->lens);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ringbatch_take(RingBatchObject *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(self->n);
    if (out == NULL) return NULL;
    size_t pos = 0;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *item = PyBytes_FromStringAndSize(self->buf + pos, (Py_ssize_t)self->lens[i]);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;  /* the batch is kept: a later take() returns it */
        }
        PyList_SET_ITEM(out, i, item);
        pos += self->lens[i];
    }
    self->n = 0;
    self->used = 0;
    return out;
}

static Py_ssize_t ringbatch_len(RingBatchObject *self) { return self->n; }


/* ------------------------------------------------------------ decoding the common records */
/* The ABI of sensor.bpf.c (see sysmonx.sensor.backends.ebpf, which defines the behaviour):
 * header <HHIIIQ type flags pid tid abi ts>, then per type. Only fork, exec and exit records of
 * the current ABI in their common shape are decoded here; every other record (another type,
 * an image given as a file name or a memfd, a short or inconsistent record, a time that does
 * not fit) is handed back as its bytes for the Python decoder. */
#define HDR_SIZE 24
#define EV_EXEC 1
#define EV_EXIT 2
#define EV_FORK 8
#define EV_NTYPES 9
#define F_IMAGE_FILENAME 8
#define F_ARGV_FAIL 64
#define F_IMAGE_PSEUDO 128
#define F_IMAGE_DELETED 256

static uint16_t rd16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t rd32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* "/" + the NUL-terminated components (leaf first) joined root first, decoded as the file
 * system encoding (UTF-8, surrogateescape): ebpf._components. */
static PyObject *components(const unsigned char *raw, size_t n) {
    size_t nseg = 1;
    for (size_t i = 0; i < n; i++) nseg += raw[i] == 0;
    size_t *starts = PyMem_Malloc(sizeof(size_t) * 2 * nseg);
    char *out = PyMem_Malloc(n + 2);
    if (starts == NULL || out == NULL) {
        PyMem_Free(starts);
        PyMem_Free(out);
        return PyErr_NoMemory();
    }
    size_t *ends = starts + nseg, k = 0, st = 0;
    for (size_t i = 0; i < n; i++) {
        if (raw[i] == 0) {
            starts[k] = st;
            ends[k++] = i;
            st = i + 1;
        }
    }
    starts[k] = st;
    ends[k++] = n;
    if (ends[k - 1] == starts[k - 1]) k--;  /* split's last empty part (a trailing NUL) */
    size_t o = 0;
    out[o++] = '/';
    for (size_t j = k; j-- > 0;) {
        memcpy(out + o, raw + starts[j], ends[j] - starts[j]);
        o += ends[j] - starts[j];
        if (j) out[o++] = '/';
    }
    PyObject *res = PyUnicode_DecodeUTF8(out, (Py_ssize_t)o, "surrogateescape");
    PyMem_Free(starts);
    PyMem_Free(out);
    return res;
}

static PyObject *nul_str;

/* New reference; NULL without an exception: not handled here; NULL with one: error. */
static PyObject *decode_one(const unsigned char *r, size_t n, long long offset,
                            unsigned long long ns_per_tick, PyObject *classes,
                            unsigned long long *counts) {
    if (n < HDR_SIZE) return NULL;
    uint16_t type = rd16(r), flags = rd16(r + 2);
    uint32_t pid = rd32(r + 4), tid = rd32(r + 8), abi = rd32(r + 12);
    uint64_t ts0 = rd64(r + 16);
    long long ts;
    if (abi != 2 || ts0 > (uint64_t)LLONG_MAX || __builtin_add_overflow((long long)ts0, offset, &ts))
        return NULL;
    const unsigned char *b = r + HDR_SIZE;
    PyObject *res = NULL;
    if (type == EV_FORK) {
        if (n < HDR_SIZE + 16) return NULL;
        res = PyObject_CallFunction(PyTuple_GET_ITEM(classes, 1), "LkkKk", ts,
                                    (unsigned long)pid, (unsigned long)rd32(b),
                                    (unsigned long long)(rd64(b + 8) / ns_per_tick),
                                    (unsigned long)rd32(b + 4));
    } else if (type == EV_EXIT) {
        if (n < HDR_SIZE + 16) return NULL;
        res = PyObject_CallFunction(PyTuple_GET_ITEM(classes, 2), "LkKk", ts, (unsigned long)pid,
                                    (unsigned long long)(rd64(b) / ns_per_tick),
                                    (unsigned long)((rd32(b + 8) >> 8) & 0xFF));
    } else if (type == EV_EXEC) {
        if (n < HDR_SIZE + 40 || (flags & (F_IMAGE_FILENAME | F_IMAGE_PSEUDO))) return NULL;
        size_t alen = rd16(b + 32), ilen = rd16(b + 34), clen = rd16(b + 36);
        const unsigned char *a = b + 40;
        if ((size_t)(a - r) + alen + ilen + clen > n) return NULL;
        PyObject *argv, *image, *cwd;
        if (flags & F_ARGV_FAIL) {
            argv = Py_NewRef(Py_None);
        } else {
            size_t al = alen;
            if (al && a[al - 1] == 0) al--;
            if (al == 0) {
                argv = PyList_New(0);
            } else {
                PyObject *text = PyUnicode_DecodeUTF8((const char *)a, (Py_ssize_t)al,
                                                      "surrogateescape");
                if (text == NULL) return NULL;
                argv = PyUnicode_Split(text, nul_str, -1);
                Py_DECREF(text);
            }
            if (argv == NULL) return NULL;
        }
        if (ilen) {
            image = components(a + alen, ilen);
            if (image != NULL && (flags & F_IMAGE_DELETED) && PyUnicode_GET_LENGTH(image)) {
                PyObject *d = PyUnicode_FromString(" (deleted)");
                PyObject *joined = d ? PyUnicode_Concat(image, d) : NULL;
                Py_XDECREF(d);
                Py_SETREF(image, joined);
            }
        } else {
            image = Py_NewRef(Py_None);
        }
        cwd = image ? components(a + alen + ilen, clen) : NULL;
        if (image == NULL || cwd == NULL) {
            Py_DECREF(argv);
            Py_XDECREF(image);
            return NULL;
        }
        res = PyObject_CallFunction(PyTuple_GET_ITEM(classes, 0), "LkkkKOOOkkkK", ts,
                                    (unsigned long)pid, (unsigned long)rd32(b),
                                    (unsigned long)tid,
                                    (unsigned long long)(rd64(b + 16) / ns_per_tick), image,
                                    argv, cwd, (unsigned long)rd32(b + 4),
                                    (unsigned long)rd32(b + 8), (unsigned long)rd32(b + 12),
                                    (unsigned long long)rd64(b + 24));
        Py_DECREF(argv);
        Py_DECREF(image);
        Py_DECREF(cwd);
    } else {
        return NULL;
    }
    if (res != NULL) counts[type]++;
    return res;
}

static PyObject *ringbatch_take_decoded(RingBatchObject *self, PyObject *args) {
    long long offset;
    unsigned long long ns_per_tick;
    PyObject *classes, *received;
    if (!PyArg_ParseTuple(args, "LKO!O!:take_decoded", &offset, &ns_per_tick, &PyTuple_Type,
                          &classes, &PyList_Type, &received))
        return NULL;
    if (PyTuple_GET_SIZE(classes) != 3 || PyList_GET_SIZE(received) != EV_NTYPES ||
        ns_per_tick == 0) {
        PyErr_SetString(PyExc_ValueError, "take_decoded: (ProcessExec, ProcessFork, "
                                          "ProcessExit), 9 counters, ns_per_tick > 0");
        return NULL;
    }
    unsigned long long counts[EV_NTYPES] = {0};
    PyObject *out = PyList_New(self->n);
    if (out == NULL) return NULL;
    Py_ssize_t left = 0;
    size_t pos = 0;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        const unsigned char *rec = (const unsigned char *)self->buf + pos;
        size_t len = self->lens[i];
        pos += len;
        PyObject *item = decode_one(rec, len, offset, ns_per_tick, classes, counts);
        if (item == NULL) {
            if (PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_MemoryError)) PyErr_Clear();
                else goto fail;
            }
            item = PyBytes_FromStringAndSize((const char *)rec, (Py_ssize_t)len);
            if (item == NULL) goto fail;
            left++;
        }
        PyList_SET_ITEM(out, i, item);
    }
    /* every new count is computed before any is stored: a failure leaves ``received`` as it
     * was and keeps the batch, so a later call counts it once */
    PyObject *sums[EV_NTYPES] = {NULL};
    PyObject *nleft = NULL, *res = NULL;
    for (int t = 0; t < EV_NTYPES; t++) {
        if (!counts[t]) continue;
        PyObject *add = PyLong_FromUnsignedLongLong(counts[t]);
        sums[t] = add ? PyNumber_Add(PyList_GET_ITEM(received, t), add) : NULL;
        Py_XDECREF(add);
        if (sums[t] == NULL) goto fail_sums;
    }
    nleft = PyLong_FromSsize_t(left);
    res = nleft ? PyTuple_New(2) : NULL;
    if (res == NULL) goto fail_sums;
    for (int t = 0; t < EV_NTYPES; t++)
        if (sums[t] != NULL) PyList_SetItem(received, t, sums[t]);  /* steals */
    PyTuple_SET_ITEM(res, 0, out);
    PyTuple_SET_ITEM(res, 1, nleft);
    self->n = 0;
    self->used = 0;
    return res;
fail_sums:
    for (int t = 0; t < EV_NTYPES; t++) Py_XDECREF(sums[t]);
    Py_XDECREF(nleft);
fail:
    Py_DECREF(out);
    return NULL;  /* the batch is kept */
}

static PyObject *ringbatch_feed(RingBatchObject *self, PyObject *records) {
    PyObject *seq = PySequence_Fast(records, "feed() takes a sequence of bytes");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i;
    for (i = 0; i < n; i++) {
        PyObject *r = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(r)) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "feed() takes a sequence of bytes");
            return NULL;
        }
        if (rb_sample(self, PyBytes_AS_STRING(r), (size_t)PyBytes_GET_SIZE(r)) < 0) {
            i++;
            break;
        }
    }
    Py_DECREF(seq);
    return PyLong_FromSsize_t(i);
}

static PyObject *ringbatch_get_ctx(RingBatchObject *self, void *Py_UNUSED(closure)) {
    return PyLong_FromVoidPtr(self);
}

static PyObject *ringbatch_get_nomem(RingBatchObject *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->nomem);
}

static PyMethodDef ringbatch_methods[] = {
    {"take", (PyCFunction)ringbatch_take, METH_NOARGS,
     "take() -> list[bytes]: the records stored since the last take, in order; empties the "
     "batch."},
    {"feed", (PyCFunction)ringbatch_feed, METH_O,
     "feed(records) -> int: call the sample callback with each bytes record in turn, as "
     "libbpf would (it stops after a negative return); returns how many were handed over "
     "(benchmarks and tests without a kernel)."},
    {"take_decoded", (PyCFunction)ringbatch_take_decoded, METH_VARARGS,
     "take_decoded(offset_ns, ns_per_tick, (ProcessExec, ProcessFork, ProcessExit), received) "
     "-> (list, left): take(), with the common fork/exec/exit records already decoded as the "
     "eBPF backend's Python decoder does (``received[type]`` counted for each); every other "
     "record stays bytes, ``left`` of them."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef ringbatch_getset[] = {
    {"ctx", (getter)ringbatch_get_ctx, NULL,
     "address of this batch: the ctx argument of ring_buffer__new for sample_callback()", NULL},
    {"nomem", (getter)ringbatch_get_nomem, NULL,
     "records that could not be stored (out of memory); each ended its poll with -ENOMEM", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PySequenceMethods ringbatch_as_sequence = {
    .sq_length = (lenfunc)ringbatch_len,
};

static PyTypeObject RingBatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sysmonx.sensor._ringbatch.RingBatch",
    .tp_basicsize = sizeof(RingBatchObject),
    .tp_dealloc = (destructor)ringbatch_dealloc,
    .tp_as_sequence = &ringbatch_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RingBatch(max_records=512, max_bytes=8 MiB): the C-side batch that "
              "sample_callback() fills (see the module docstring).",
    .tp_methods = ringbatch_methods,
    .tp_getset = ringbatch_getset,
    .tp_new = ringbatch_new,
};

static PyObject *py_sample_callback(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromVoidPtr((void *)(uintptr_t)&rb_sample);
}

static PyMethodDef methods[] = {
    {"sample_callback", py_sample_callback, METH_NOARGS,
     "sample_callback() -> int: address of the C ring_buffer_sample_fn; its ctx must be a "
     "RingBatch's .ctx (and the RingBatch kept alive while the ring buffer exists)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_ringbatch",
    "Compiled libbpf ring-buffer sample callback for the eBPF backend.", -1, methods,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__ringbatch(void) {
    if (PyType_Ready(&RingBatchType) < 0) return NULL;
    nul_str = PyUnicode_FromStringAndSize("\0", 1);
    if (nul_str == NULL) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "FULL", RB_FULL) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&RingBatchType);
    if (PyModule_AddObject(m, "RingBatch", (PyObject *)&RingBatchType) < 0) {
        Py_DECREF(&RingBatchType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
