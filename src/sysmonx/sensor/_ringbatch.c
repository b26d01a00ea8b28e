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
 *   FULL: the callback's return value for a full batch.
 *
 * The batch is used by one thread at a time: the thread that polls is the thread that takes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
