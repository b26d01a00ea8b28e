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
 *   Builder(assembler, Event, config): events 1 and 5 assembled without a Python frame
 *       (the section at the end).
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
    if (abi != 3 || ts0 > (uint64_t)LLONG_MAX || __builtin_add_overflow((long long)ts0, offset, &ts))
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
        if (n < HDR_SIZE + 48 || (flags & (F_IMAGE_FILENAME | F_IMAGE_PSEUDO))) return NULL;
        size_t alen = rd16(b + 32), ilen = rd16(b + 34), clen = rd16(b + 36);
        const unsigned char *a = b + 48;
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
        /* the namespaces at exec: None when the kernel could not read them (0) */
        uint32_t mnt = rd32(b + 40), pidns = rd32(b + 44);
        PyObject *mnt_o = mnt ? PyLong_FromUnsignedLong(mnt) : Py_NewRef(Py_None);
        PyObject *pidns_o = pidns ? PyLong_FromUnsignedLong(pidns) : Py_NewRef(Py_None);
        if (mnt_o != NULL && pidns_o != NULL)
            res = PyObject_CallFunction(PyTuple_GET_ITEM(classes, 0), "LkkkKOOOkkkKOO", ts,
                                        (unsigned long)pid, (unsigned long)rd32(b),
                                        (unsigned long)tid,
                                        (unsigned long long)(rd64(b + 16) / ns_per_tick), image,
                                        argv, cwd, (unsigned long)rd32(b + 4),
                                        (unsigned long)rd32(b + 8), (unsigned long)rd32(b + 12),
                                        (unsigned long long)rd64(b + 24), mnt_o, pidns_o);
        Py_XDECREF(mnt_o);
        Py_XDECREF(pidns_o);
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


/* ============================================ 18a: events 1 and 5 of the live hot path in C
 *
 *   Builder(assembler, Event, config) -> .exec_events(o) -> list[Event], .exit_event(o) -> Event
 *
 * sysmonx.sensor.assemble.Assembler._exec / _exit (the pure-Python definition) without a Python
 * frame for the event itself: the process cache's on_exec/get/on_exit, FileHasher.hashes, the
 * user name and LogonGuid look-ups on a miss, the formatting of a new second and the
 * ProcessTampering (25) of a deleted or fileless image stay Python calls, made in the same
 * order with the same arguments. The assembler's attributes (cache, hasher, provider, ...) are
 * read at every call, as the Python methods read them.
 *
 * config: (heads, keywords, zero_guid, unset_id, users, user_name, logon_guid, seconds, tail,
 *          hasher_type)
 *   heads: {1: (Version, Level), 5: (Version, Level)}; users: process._users (uid -> name);
 *   user_name(uid), logon_guid(machine, uid), seconds(s) -> [s, UtcTime form, ISO form];
 *   tail(info, ts_ns) -> list of the events after ProcessCreate (called only for an image that
 *   ends with " (deleted)", the only images image_state() does not answer None for);
 *   hasher_type: process.FileHasher. For a hasher of exactly that type, a path's hashes already
 *   in its cache are found here (the same stat() and cache key as FileHasher.hashes); anything
 *   else (no algorithms, a path stat() fails on or with a NUL, a miss) is its Python method.
 */

#include <structmember.h>
#include <sys/stat.h>

#define EV_NSLOTS 17
static const char *ev_slot_names[EV_NSLOTS] = {
    "event_id", "data", "provider", "provider_guid", "version", "level", "task", "opcode",
    "keywords", "time_created", "record_id", "process_id", "thread_id", "channel", "computer",
    "user_id", "origin"};
enum { E_ID, E_DATA, E_PROVIDER, E_PGUID, E_VERSION, E_LEVEL, E_TASK, E_OPCODE, E_KEYWORDS,
       E_TIME, E_RECORD, E_PID, E_TID, E_CHANNEL, E_COMPUTER, E_USER, E_ORIGIN };

typedef struct {
    PyObject_HEAD
    PyObject *asm_;          /* the Assembler */
    PyTypeObject *etype;     /* sysmonx.event.Event */
    Py_ssize_t off[EV_NSLOTS];
    PyObject *v1, *l1, *v5, *l5;
    PyObject *keywords, *zero_guid, *unset_id, *users, *user_name, *logon_guid, *seconds,
             *tail, *hasher_type;
    /* 20a: the process cache's exec/exit/get paths (see the section "20a" below) */
    PyTypeObject *cache_type, *info_type;
    PyObject *clk_tck, *logon_guids;
    Py_ssize_t ioff[14];
    long long sec;           /* the last second formatted, and its two forms */
    PyObject *sec_utc, *sec_iso;
} BuilderObject;

/* interned names */
static PyObject *n_ts_ns, *n_pid, *n_ppid, *n_start_ticks, *n_image, *n_argv, *n_cwd, *n_uid,
                *n_auid, *n_sessionid, *n_end_data, *n_cache, *n_hasher, *n_provider,
                *n_provider_guid, *n_channel, *n_computer, *n_euid, *n_machine, *n_guid,
                *n_command_line, *n_on_exec, *n_on_exit, *n_get, *n_hashes, *n_algorithms,
                *n_hcache, *exec_kwnames, *n_mnt_ns, *n_pid_ns, *n_extra, *s_ns;
/* 20a: the process cache's attribute and method names */
static PyObject *n_procs, *n_lock, *n_by_image, *n_btime, *n_max_entries, *n_acquire,
                *n_release, *n_move_to_end, *n_popitem, *n_index, *s_space, *n_exited_ns;
/* field names and constant values */
static PyObject *k_RuleName, *k_UtcTime, *k_ProcessGuid, *k_ProcessId, *k_Image,
                *k_FileVersion, *k_Description, *k_Product, *k_Company, *k_OriginalFileName,
                *k_CommandLine, *k_CurrentDirectory, *k_User, *k_LogonGuid, *k_LogonId,
                *k_TerminalSessionId, *k_IntegrityLevel, *k_Hashes, *k_ParentProcessGuid,
                *k_ParentProcessId, *k_ParentImage, *k_ParentCommandLine, *k_ParentUser,
                *s_dash, *s_no_level, *s_zero, *s_deleted, *i_zero, *i_one, *i_five;

static int intern_all(void) {
#define I(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    I(n_ts_ns, "ts_ns"); I(n_pid, "pid"); I(n_ppid, "ppid"); I(n_start_ticks, "start_ticks");
    I(n_image, "image"); I(n_argv, "argv"); I(n_cwd, "cwd"); I(n_uid, "uid");
    I(n_auid, "auid"); I(n_sessionid, "sessionid"); I(n_end_data, "end_data");
    I(n_cache, "cache"); I(n_hasher, "hasher"); I(n_provider, "provider");
    I(n_provider_guid, "provider_guid"); I(n_channel, "channel"); I(n_computer, "computer");
    I(n_euid, "euid"); I(n_machine, "machine"); I(n_guid, "guid");
    I(n_command_line, "command_line"); I(n_on_exec, "on_exec"); I(n_on_exit, "on_exit");
    I(n_get, "get"); I(n_hashes, "hashes"); I(n_algorithms, "algorithms");
    I(n_hcache, "_cache");
    I(n_mnt_ns, "mnt_ns"); I(n_pid_ns, "pid_ns"); I(n_extra, "extra"); I(s_ns, "ns");
    I(n_procs, "_procs"); I(n_lock, "_lock"); I(n_by_image, "_by_image"); I(n_btime, "btime");
    I(n_max_entries, "max_entries"); I(n_acquire, "acquire"); I(n_release, "release");
    I(n_move_to_end, "move_to_end"); I(n_popitem, "popitem"); I(n_index, "_index");
    I(s_space, " "); I(n_exited_ns, "exited_ns");
    I(k_RuleName, "RuleName"); I(k_UtcTime, "UtcTime"); I(k_ProcessGuid, "ProcessGuid");
    I(k_ProcessId, "ProcessId"); I(k_Image, "Image"); I(k_FileVersion, "FileVersion");
    I(k_Description, "Description"); I(k_Product, "Product"); I(k_Company, "Company");
    I(k_OriginalFileName, "OriginalFileName"); I(k_CommandLine, "CommandLine");
    I(k_CurrentDirectory, "CurrentDirectory"); I(k_User, "User"); I(k_LogonGuid, "LogonGuid");
    I(k_LogonId, "LogonId"); I(k_TerminalSessionId, "TerminalSessionId");
    I(k_IntegrityLevel, "IntegrityLevel"); I(k_Hashes, "Hashes");
    I(k_ParentProcessGuid, "ParentProcessGuid"); I(k_ParentProcessId, "ParentProcessId");
    I(k_ParentImage, "ParentImage"); I(k_ParentCommandLine, "ParentCommandLine");
    I(k_ParentUser, "ParentUser"); I(s_dash, "-"); I(s_no_level, "no level"); I(s_zero, "0");
    I(s_deleted, " (deleted)");
#undef I
    if ((i_zero = PyLong_FromLong(0)) == NULL || (i_one = PyLong_FromLong(1)) == NULL ||
        (i_five = PyLong_FromLong(5)) == NULL)
        return -1;
    exec_kwnames = Py_BuildValue("(OOOOOOOOOO)", n_ppid, n_start_ticks, n_image, n_argv, n_cwd,
                                 n_uid, n_auid, n_sessionid, n_end_data, n_ts_ns);
    return exec_kwnames == NULL ? -1 : 0;
}

/* 20a: the member offsets of a slotted class's plain object slots (``names``), or -1 */
static int slot_offsets(PyTypeObject *t, const char **names, int n, Py_ssize_t *off) {
    for (int i = 0; i < n; i++) {
        PyObject *d = PyDict_GetItemString(t->tp_dict, names[i]);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "%s has no slot %s", t->tp_name, names[i]);
            return -1;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
            PyErr_Format(PyExc_TypeError, "%s slot %s is not a plain object slot", t->tp_name,
                         names[i]);
            return -1;
        }
        off[i] = m->offset;
    }
    return 0;
}

/* ProcInfo's slots, in its field order */
static const char *info_slot_names[14] = {
    "pid", "start_ticks", "ppid", "image", "command_line", "cwd", "uid", "auid", "sessionid",
    "end_data", "guid", "exited_ns", "forked", "extra"};
enum { P_PID, P_START, P_PPID, P_IMAGE, P_CMD, P_CWD, P_UID, P_AUID, P_SID, P_END, P_GUID,
       P_EXITED, P_FORKED, P_EXTRA };

static PyObject *builder_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *asm_, *etype, *cfg, *heads;
    if (!PyArg_ParseTuple(args, "OO!O!:Builder", &asm_, &PyType_Type, &etype, &PyTuple_Type,
                          &cfg))
        return NULL;
    BuilderObject *self = (BuilderObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->sec = LLONG_MIN;
    for (int i = 0; i < EV_NSLOTS; i++) {
        PyObject *d = PyDict_GetItemString(((PyTypeObject *)etype)->tp_dict, ev_slot_names[i]);
        if (d != NULL && !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            /* Event.data replaced by the EVTX converter's descriptor over the same slot
             * (sysmonx.core._speedups LazyData): its ``slot`` is the slot's own descriptor */
            PyObject *inner = PyObject_GetAttrString(d, "slot");
            if (inner == NULL) PyErr_Clear();
            else Py_DECREF(inner); /* held by d */
            d = inner;
        }
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "Event has no slot %s", ev_slot_names[i]);
            goto fail;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
            PyErr_Format(PyExc_TypeError, "Event slot %s is not a plain object slot",
                         ev_slot_names[i]);
            goto fail;
        }
        self->off[i] = m->offset;
    }
    if (!PyArg_ParseTuple(cfg, "O!OOOO!OOOOO!O!O!O!O!:Builder config", &PyDict_Type, &heads,
                          &self->keywords, &self->zero_guid, &self->unset_id, &PyDict_Type,
                          &self->users, &self->user_name, &self->logon_guid, &self->seconds,
                          &self->tail, &PyType_Type, &self->hasher_type,
                          &PyType_Type, &self->cache_type, &PyType_Type, &self->info_type,
                          &PyLong_Type, &self->clk_tck, &PyDict_Type, &self->logon_guids)) {
        self->keywords = self->zero_guid = self->unset_id = self->users = NULL;
        self->user_name = self->logon_guid = self->seconds = self->tail = NULL;
        self->hasher_type = NULL;
        self->cache_type = self->info_type = NULL;
        self->clk_tck = self->logon_guids = NULL;
        goto fail;
    }
    Py_INCREF(self->keywords); Py_INCREF(self->zero_guid); Py_INCREF(self->unset_id);
    Py_INCREF(self->users); Py_INCREF(self->user_name); Py_INCREF(self->logon_guid);
    Py_INCREF(self->seconds); Py_INCREF(self->tail); Py_INCREF(self->hasher_type);
    Py_INCREF(self->cache_type); Py_INCREF(self->info_type); Py_INCREF(self->clk_tck);
    Py_INCREF(self->logon_guids);
    if (slot_offsets(self->info_type, info_slot_names, 14, self->ioff) < 0) goto fail;
    {   /* the C exec path fills these 14 slots of the entries it makes: a ProcInfo with more
         * would leave them unset there (and set by the Python path): refused here */
        PyObject *slots = PyObject_GetAttrString((PyObject *)self->info_type, "__slots__");
        Py_ssize_t n = slots == NULL ? -1 : PyObject_Length(slots);
        Py_XDECREF(slots);
        if (n < 0) goto fail;
        if (n != 14) {
            PyErr_Format(PyExc_TypeError, "%s has %zd slots; the compiled builder fills 14",
                         self->info_type->tp_name, n);
            goto fail;
        }
    }
    if (PyObject_RichCompareBool(self->clk_tck, i_zero, Py_GT) != 1) {
        PyErr_SetString(PyExc_ValueError, "clock ticks per second must be > 0");
        goto fail;
    }
    PyObject *h1 = PyDict_GetItem(heads, i_one), *h5 = PyDict_GetItem(heads, i_five);
    if (h1 == NULL || h5 == NULL || !PyTuple_Check(h1) || !PyTuple_Check(h5) ||
        PyTuple_GET_SIZE(h1) != 2 || PyTuple_GET_SIZE(h5) != 2) {
        PyErr_SetString(PyExc_TypeError, "heads must map 1 and 5 to (Version, Level)");
        goto fail;
    }
    self->v1 = PyTuple_GET_ITEM(h1, 0); self->l1 = PyTuple_GET_ITEM(h1, 1);
    self->v5 = PyTuple_GET_ITEM(h5, 0); self->l5 = PyTuple_GET_ITEM(h5, 1);
    Py_INCREF(self->v1); Py_INCREF(self->l1); Py_INCREF(self->v5); Py_INCREF(self->l5);
    Py_INCREF(asm_); self->asm_ = asm_;
    Py_INCREF(etype); self->etype = (PyTypeObject *)etype;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static int builder_traverse(BuilderObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->asm_); Py_VISIT(self->etype); Py_VISIT(self->users);
    Py_VISIT(self->user_name); Py_VISIT(self->logon_guid); Py_VISIT(self->seconds);
    Py_VISIT(self->tail); Py_VISIT(self->hasher_type); Py_VISIT(self->cache_type);
    Py_VISIT(self->info_type); Py_VISIT(self->logon_guids);
    return 0;
}

static int builder_clear(BuilderObject *self) {
    Py_CLEAR(self->asm_); Py_CLEAR(self->etype); Py_CLEAR(self->v1); Py_CLEAR(self->l1);
    Py_CLEAR(self->v5); Py_CLEAR(self->l5); Py_CLEAR(self->keywords); Py_CLEAR(self->zero_guid);
    Py_CLEAR(self->unset_id); Py_CLEAR(self->users); Py_CLEAR(self->user_name);
    Py_CLEAR(self->logon_guid); Py_CLEAR(self->seconds); Py_CLEAR(self->tail);
    Py_CLEAR(self->sec_utc); Py_CLEAR(self->sec_iso); Py_CLEAR(self->hasher_type);
    Py_CLEAR(self->cache_type); Py_CLEAR(self->info_type); Py_CLEAR(self->clk_tck);
    Py_CLEAR(self->logon_guids);
    return 0;
}

static void builder_dealloc(BuilderObject *self) {
    PyObject_GC_UnTrack(self);
    builder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* user_name(uid): "-" for None, the cached name, else the Python function (new reference) */
static PyObject *b_user(BuilderObject *self, PyObject *uid) {
    if (uid == Py_None) return Py_NewRef(s_dash);
    PyObject *name = PyDict_GetItemWithError(self->users, uid);
    if (name != NULL) return Py_NewRef(name);
    if (PyErr_Occurred()) return NULL;
    return PyObject_CallOneArg(self->user_name, uid);
}

/* ``value or "-"`` (new reference) */
static PyObject *b_or_dash(PyObject *v) {
    int t = PyObject_IsTrue(v);
    if (t < 0) return NULL;
    return Py_NewRef(t ? v : s_dash);
}

/* (UtcTime, TimeCreated) of ts_ns as assemble._stamps writes them; 0 or -1 */
static int b_stamps(BuilderObject *self, PyObject *ts, PyObject **utc, PyObject **created) {
    int overflow = 0;
    long long t = PyLong_AsLongLongAndOverflow(ts, &overflow);
    if (t == -1 && PyErr_Occurred()) return -1;
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "ts_ns out of range");
        return -1;
    }
    long long s = t / 1000000000LL, ns = t % 1000000000LL;
    if (ns < 0) { ns += 1000000000LL; s -= 1; } /* floor division, as divmod */
    if (s != self->sec || self->sec_utc == NULL) {
        PyObject *sv = PyLong_FromLongLong(s);
        if (sv == NULL) return -1;
        PyObject *r = PyObject_CallOneArg(self->seconds, sv);
        Py_DECREF(sv);
        if (r == NULL) return -1;
        PyObject *u = PySequence_GetItem(r, 1), *i = u ? PySequence_GetItem(r, 2) : NULL;
        Py_DECREF(r);
        if (i == NULL || !PyUnicode_Check(u) || !PyUnicode_Check(i)) {
            Py_XDECREF(u); Py_XDECREF(i);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "seconds() gave no text");
            return -1;
        }
        Py_XSETREF(self->sec_utc, u);
        Py_XSETREF(self->sec_iso, i);
        self->sec = s;
    }
    *utc = PyUnicode_FromFormat("%U.%c%c%c", self->sec_utc, (int)('0' + ns / 100000000),
                                (int)('0' + ns / 10000000 % 10), (int)('0' + ns / 1000000 % 10));
    if (*utc == NULL) return -1;
    char frac[7];
    long long us = ns / 1000;
    for (int k = 5; k >= 0; k--) { frac[k] = (char)('0' + us % 10); us /= 10; }
    frac[6] = 0;
    *created = PyUnicode_FromFormat("%U.%s000Z", self->sec_iso, frac);
    if (*created == NULL) { Py_CLEAR(*utc); return -1; }
    return 0;
}

/* An Event (new reference); steals ``data`` and ``created`` in every case */
static PyObject *b_event(BuilderObject *self, PyObject *id, PyObject *version, PyObject *level,
                         PyObject *data, PyObject *created) {
    PyObject *a = self->asm_;
    PyObject *vals[EV_NSLOTS] = {NULL};
    PyObject *ev = NULL;
    vals[E_ID] = Py_NewRef(id);
    vals[E_DATA] = data;
    vals[E_TIME] = created;
    vals[E_VERSION] = Py_NewRef(version);
    vals[E_LEVEL] = Py_NewRef(level);
    vals[E_TASK] = Py_NewRef(id);
    vals[E_OPCODE] = Py_NewRef(i_zero);
    vals[E_KEYWORDS] = Py_NewRef(self->keywords);
    vals[E_RECORD] = Py_NewRef(Py_None);
    vals[E_ORIGIN] = Py_NewRef(Py_None);
    if ((vals[E_PROVIDER] = PyObject_GetAttr(a, n_provider)) == NULL ||
        (vals[E_PGUID] = PyObject_GetAttr(a, n_provider_guid)) == NULL ||
        (vals[E_PID] = PyObject_GetAttr(a, n_pid)) == NULL ||
        (vals[E_TID] = PyLong_FromUnsignedLong(PyThread_get_thread_native_id())) == NULL ||
        (vals[E_CHANNEL] = PyObject_GetAttr(a, n_channel)) == NULL ||
        (vals[E_COMPUTER] = PyObject_GetAttr(a, n_computer)) == NULL ||
        (vals[E_USER] = PyObject_GetAttr(a, n_euid)) == NULL)
        goto done;
    ev = self->etype->tp_alloc(self->etype, 0);
    if (ev == NULL) goto done;
    for (int i = 0; i < EV_NSLOTS; i++) {
        *(PyObject **)((char *)ev + self->off[i]) = vals[i];
        vals[i] = NULL;
    }
done:
    for (int i = 0; i < EV_NSLOTS; i++) Py_XDECREF(vals[i]);
    return ev;
}

/* hasher.hashes(image) (new reference): a FileHasher's cached answer found without a Python
 * call, else the method itself (which then decides everything, errors included) */
static PyObject *b_hashes(BuilderObject *self, PyObject *hasher, PyObject *image) {
    if (Py_TYPE(hasher) == (PyTypeObject *)self->hasher_type && PyUnicode_CheckExact(image) &&
        PyUnicode_GET_LENGTH(image) > 0) {
        PyObject *algos = PyObject_GetAttr(hasher, n_algorithms);
        PyObject *cache = algos ? PyObject_GetAttr(hasher, n_hcache) : NULL;
        PyObject *path = cache ? PyUnicode_EncodeFSDefault(image) : NULL;
        PyObject *hit = NULL;
        int ok = path != NULL && PyDict_Check(cache) && PyObject_IsTrue(algos) == 1 &&
                 strlen(PyBytes_AS_STRING(path)) == (size_t)PyBytes_GET_SIZE(path);
        if (ok) {
            struct stat st;
            int rc;
            Py_BEGIN_ALLOW_THREADS /* as os.stat: a slow file system stalls this thread only */
            rc = stat(PyBytes_AS_STRING(path), &st);
            Py_END_ALLOW_THREADS
            long long mt;
            if (rc == 0 && !__builtin_mul_overflow((long long)st.st_mtim.tv_sec, 1000000000LL,
                                                   &mt) &&
                !__builtin_add_overflow(mt, (long long)st.st_mtim.tv_nsec, &mt)) {
                PyObject *key = Py_BuildValue("(KKLL)", (unsigned long long)st.st_dev,
                                              (unsigned long long)st.st_ino,
                                              (long long)st.st_size, mt);
                if (key != NULL) {
                    hit = PyDict_GetItemWithError(cache, key);
                    Py_XINCREF(hit);
                    Py_DECREF(key);
                }
            }
        }
        Py_XDECREF(algos); Py_XDECREF(cache); Py_XDECREF(path);
        if (hit != NULL) return hit;
        PyErr_Clear(); /* anything odd: the Python method says what it is */
    }
    PyObject *args[2] = {hasher, image};
    return PyObject_VectorcallMethod(n_hashes, args, 2, NULL);
}

/* ============================================================ 20a: the process cache in C
 *
 * sysmonx.sensor.process.ProcessCache.on_exec / get / on_exit (the pure-Python definition) for
 * a cache of exactly that class, in the cases tier A gives on the hot path:
 *   on_exec: every fact known (ppid, start_ticks, image, argv, cwd, uid and a non-zero
 *     end_data; nothing to read from /proc, nothing inherited), ASCII text (clean_text changes
 *     nothing), ints, no entry of that pid that has exited (a late exec or a reused pid).
 *     The GUID is process_guid()'s; the entry is stored as _store stores it (under the cache's
 *     lock: entry order, image index, eviction of the oldest).
 *   get: a pid in the cache.       on_exit: a pid in the cache with the same start time.
 * Every other case is the Python method, called as before; so is a subclass of the cache.
 * tests/test_process_cache_paths.py and tests/test_assemble_compiled.py compare the two. */

#define ISLOT(obj, i) (*(PyObject **)((char *)(obj) + self->ioff[i]))

static int c_lock(PyObject *lock) {
    PyObject *r = PyObject_CallMethodNoArgs(lock, n_acquire);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* release the lock, keeping an error already set */
static int c_unlock(PyObject *lock) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *r = PyObject_CallMethodNoArgs(lock, n_release);
    if (et != NULL) {
        if (r == NULL) PyErr_Clear();
        Py_XDECREF(r);
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* ProcessCache._index(info, False): ``info`` out of the image index (0 or -1) */
static int c_unindex(BuilderObject *self, PyObject *cache, PyObject *by_image, PyObject *info) {
    if (!Py_IS_TYPE(info, self->info_type) || !PyDict_CheckExact(by_image)) {
        PyObject *r = PyObject_CallMethodObjArgs(cache, n_index, info, Py_False, NULL);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    PyObject *image = ISLOT(info, P_IMAGE), *pid = ISLOT(info, P_PID);
    if (image == NULL || pid == NULL) {
        PyErr_SetString(PyExc_AttributeError, "ProcInfo slot not set");
        return -1;
    }
    int t = PyObject_IsTrue(image);
    if (t <= 0) return t;
    PyObject *pids = PyDict_GetItemWithError(by_image, image);
    if (pids == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyAnySet_CheckExact(pids)) {
        PyObject *r = PyObject_CallMethodObjArgs(cache, n_index, info, Py_False, NULL);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    Py_INCREF(pids);
    int rc = PySet_Discard(pids, pid) < 0 ? -1 : 0;
    if (rc == 0 && PySet_GET_SIZE(pids) == 0) rc = PyDict_DelItem(by_image, image);
    Py_DECREF(pids);
    return rc;
}

/* ``obj.exited_ns is None`` (1, 0, -1) */
static int c_running(BuilderObject *self, PyObject *obj) {
    if (Py_IS_TYPE(obj, self->info_type)) {
        PyObject *v = ISLOT(obj, P_EXITED);
        if (v == NULL) {
            PyErr_SetString(PyExc_AttributeError, "exited_ns");
            return -1;
        }
        return v == Py_None;
    }
    PyObject *v = PyObject_GetAttr(obj, n_exited_ns);
    if (v == NULL) return -1;
    Py_DECREF(v);
    return v == Py_None;
}

/* ProcessCache._store(info) for a running entry with a non-empty image (0 or -1) */
static int c_store(BuilderObject *self, PyObject *cache, PyObject *procs, PyObject *info,
                   PyObject *pid, PyObject *image, PyObject *lock, PyObject *by_image,
                   Py_ssize_t max_entries) {
    if (c_lock(lock) < 0) return -1;
    PyObject *old = PyDict_GetItemWithError(procs, pid);
    if (old == NULL && PyErr_Occurred()) goto fail;
    if (old != NULL) {
        Py_INCREF(old);
        int run = c_running(self, old);
        if (run < 0 || (run == 1 && c_unindex(self, cache, by_image, old) < 0)) {
            Py_DECREF(old);
            goto fail;
        }
        Py_DECREF(old);
        PyObject *r = PyObject_CallMethodOneArg(procs, n_move_to_end, pid);
        if (r == NULL) goto fail;
        Py_DECREF(r);
    }
    if (PyObject_SetItem(procs, pid, info) < 0) goto fail;
    {
        PyObject *pids = PyDict_GetItemWithError(by_image, image);
        if (pids == NULL) {
            if (PyErr_Occurred()) goto fail;
            PyObject *set = PySet_New(NULL);
            if (set == NULL) goto fail;
            int rc = PySet_Add(set, pid) < 0 ? -1 : PyDict_SetItem(by_image, image, set);
            Py_DECREF(set);
            if (rc < 0) goto fail;
        } else {
            Py_INCREF(pids);
            int rc;
            if (PyAnySet_CheckExact(pids)) {
                rc = PySet_Add(pids, pid);
            } else {
                PyObject *r = PyObject_CallMethod(pids, "add", "O", pid);
                rc = r == NULL ? -1 : 0;
                Py_XDECREF(r);
            }
            Py_DECREF(pids);
            if (rc < 0) goto fail;
        }
    }
    for (;;) {
        Py_ssize_t n = PyObject_Length(procs);
        if (n < 0) goto fail;
        if (n <= max_entries) break;
        PyObject *item = PyObject_CallMethodOneArg(procs, n_popitem, Py_False);
        if (item == NULL) goto fail;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            Py_DECREF(item);
            PyErr_SetString(PyExc_TypeError, "popitem() gave no pair");
            goto fail;
        }
        PyObject *dropped = PyTuple_GET_ITEM(item, 1);
        int run = c_running(self, dropped);
        int rc = run < 0 ? -1 : run == 1 ? c_unindex(self, cache, by_image, dropped) : 0;
        Py_DECREF(item);
        if (rc < 0) goto fail;
    }
    return c_unlock(lock);
fail:
    c_unlock(lock);
    return -1;
}

/* on_exec for the cases above: 1 (``*out`` the new entry), 0 (not such a case: nothing was
 * changed; the caller calls the method), -1 (error).
 * f: ts_ns pid ppid start_ticks image argv cwd uid auid sessionid end_data */
/* The sign of an exact int: -1, 0 or 1. Py_SIZE() gave it up to Python 3.11 only (3.12's
 * compact ints keep the sign elsewhere: Py_SIZE(0) is 1 there). */
static int long_sign(PyObject *v) {
    int overflow = 0;
    long x = PyLong_AsLongAndOverflow(v, &overflow);
    if (overflow) return overflow;
    if (x == -1 && PyErr_Occurred()) { PyErr_Clear(); return 0; }
    return (x > 0) - (x < 0);
}

static int c_on_exec(BuilderObject *self, PyObject *cache, PyObject **f, PyObject **out) {
    PyObject *pid = f[1], *ppid = f[2], *st = f[3], *image = f[4], *argv = f[5], *cwd = f[6],
             *uid = f[7], *end = f[10];
    if (!Py_IS_TYPE(cache, self->cache_type) || ppid == Py_None || uid == Py_None ||
        !PyLong_CheckExact(pid) || !PyLong_CheckExact(st) || !PyLong_CheckExact(end) ||
        !PyUnicode_CheckExact(image) || !PyUnicode_IS_ASCII(image) ||
        PyUnicode_GET_LENGTH(image) == 0 || !PyUnicode_CheckExact(cwd) ||
        !PyUnicode_IS_ASCII(cwd) || !(PyList_CheckExact(argv) || PyTuple_CheckExact(argv)))
        return 0;
    if (long_sign(end) == 0) return 0; /* end_data 0: a synthetic key (make_guid) */
    int found = 0;
    PyObject *procs = NULL, *cmd = NULL, *lock = NULL, *by_image = NULL, *btime = NULL,
             *machine = NULL, *maxe = NULL, *q = NULL, *start = NULL, *guid = NULL,
             *info = NULL, *extra = NULL;
    if ((procs = PyObject_GetAttr(cache, n_procs)) == NULL) goto fail;
    if (!Py_IS_TYPE(procs, &PyODict_Type)) goto done;
    {
        PyObject *old = PyDict_GetItemWithError(procs, pid);
        if (old == NULL && PyErr_Occurred()) goto fail;
        if (old != NULL) {
            if (!Py_IS_TYPE(old, self->info_type)) goto done;
            PyObject *ex = ISLOT(old, P_EXITED);
            if (ex == NULL || ex != Py_None) goto done; /* late exec, reused pid: the method */
        }
    }
    if ((cmd = PyUnicode_Join(s_space, argv)) == NULL) {
        PyErr_Clear(); /* the method raises what it raises */
        goto done;
    }
    if (!PyUnicode_IS_ASCII(cmd)) goto done;
    if ((lock = PyObject_GetAttr(cache, n_lock)) == NULL ||
        (by_image = PyObject_GetAttr(cache, n_by_image)) == NULL ||
        (btime = PyObject_GetAttr(cache, n_btime)) == NULL ||
        (machine = PyObject_GetAttr(cache, n_machine)) == NULL ||
        (maxe = PyObject_GetAttr(cache, n_max_entries)) == NULL)
        goto fail;
    if (!PyDict_CheckExact(by_image) || !PyUnicode_Check(machine) || !PyLong_CheckExact(btime) ||
        !PyLong_CheckExact(maxe))
        goto done;
    Py_ssize_t max_entries = PyLong_AsSsize_t(maxe);
    if (max_entries == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        goto done;
    }
    /* process_guid(machine, btime + start_ticks // CLK_TCK, end_data, pid) */
    if ((q = PyNumber_FloorDivide(st, self->clk_tck)) == NULL ||
        (start = PyNumber_Add(btime, q)) == NULL)
        goto fail;
    {
        unsigned long long s = PyLong_AsUnsignedLongLongMask(start) & 0xFFFFFFFFULL;
        unsigned long long key = PyLong_AsUnsignedLongLongMask(end);
        unsigned long long p16 = PyLong_AsUnsignedLongLongMask(pid) & 0xFFFFULL;
        if (PyErr_Occurred()) goto fail;
        key = (key & ((1ULL << 48) - 1)) | (p16 << 48);
        static const char hex[] = "0123456789abcdef";
        char tail[17];
        for (int i = 0; i < 8; i++) {
            unsigned b = (unsigned)((key >> (8 * i)) & 0xFF);
            tail[2 * i] = hex[b >> 4];
            tail[2 * i + 1] = hex[b & 15];
        }
        tail[16] = 0;
        char rest[48];
        snprintf(rest, sizeof rest, "-%04x-%04x-%.4s-%s}", (unsigned)(s & 0xFFFF),
                 (unsigned)(s >> 16), tail, tail + 4);
        if ((guid = PyUnicode_FromFormat("{%U%s", machine, rest)) == NULL) goto fail;
    }
    if ((extra = PyDict_New()) == NULL) goto fail;
    if ((info = self->info_type->tp_alloc(self->info_type, 0)) == NULL) goto fail;
    {
        PyObject *vals[14] = {pid, st, ppid, image, cmd, cwd, uid, f[8], f[9], end, guid,
                              Py_None, Py_False, extra};
        for (int i = 0; i < 14; i++) ISLOT(info, i) = Py_NewRef(vals[i]);
    }
    if (c_store(self, cache, procs, info, pid, image, lock, by_image, max_entries) < 0)
        goto fail;
    *out = info;
    info = NULL;
    found = 1;
    goto done;
fail:
    found = -1;
done:
    Py_XDECREF(procs); Py_XDECREF(cmd); Py_XDECREF(lock); Py_XDECREF(by_image);
    Py_XDECREF(btime); Py_XDECREF(machine); Py_XDECREF(maxe); Py_XDECREF(q);
    Py_XDECREF(start); Py_XDECREF(guid); Py_XDECREF(info); Py_XDECREF(extra);
    return found;
}

/* cache.get(pid) (new reference): an entry in the cache found here, else the method */
static PyObject *c_get(BuilderObject *self, PyObject *cache, PyObject *pid) {
    if (Py_IS_TYPE(cache, self->cache_type) && PyLong_CheckExact(pid)) {
        if (long_sign(pid) <= 0) return Py_NewRef(Py_None); /* pid <= 0 */
        PyObject *procs = PyObject_GetAttr(cache, n_procs);
        if (procs == NULL) return NULL;
        if (PyDict_Check(procs)) {
            PyObject *hit = PyDict_GetItemWithError(procs, pid);
            if (hit != NULL) {
                Py_INCREF(hit);
                Py_DECREF(procs);
                return hit;
            }
            if (PyErr_Occurred()) {
                Py_DECREF(procs);
                return NULL;
            }
        }
        Py_DECREF(procs);
    }
    PyObject *args[2] = {cache, pid};
    return PyObject_VectorcallMethod(n_get, args, 2, NULL);
}

/* on_exit for an entry in the cache with the same start time (or none given): 1 (``*out``
 * the entry), 0 (the caller calls the method), -1 */
static int c_on_exit(BuilderObject *self, PyObject *cache, PyObject *pid, PyObject *ts,
                     PyObject *st, PyObject **out) {
    if (!Py_IS_TYPE(cache, self->cache_type) || !PyLong_CheckExact(pid) || long_sign(pid) <= 0)
        return 0;
    int found = 0;
    PyObject *procs = NULL, *info = NULL, *lock = NULL, *by_image = NULL;
    if ((procs = PyObject_GetAttr(cache, n_procs)) == NULL) goto fail;
    if (!PyDict_Check(procs)) goto done;
    info = PyDict_GetItemWithError(procs, pid);
    if (info == NULL) {
        if (PyErr_Occurred()) goto fail;
        goto done; /* not cached: /proc, or an entry made from the exit: the method */
    }
    Py_INCREF(info);
    if (!Py_IS_TYPE(info, self->info_type)) goto done;
    {
        PyObject *ist = ISLOT(info, P_START);
        if (ist == NULL) goto done;
        if (st != Py_None && ist != Py_None) {
            int ne = PyObject_RichCompareBool(ist, st, Py_NE);
            if (ne < 0) goto fail;
            if (ne) goto done; /* another process of that pid: the method */
        }
    }
    if (ISLOT(info, P_EXITED) == Py_None) {
        if ((lock = PyObject_GetAttr(cache, n_lock)) == NULL ||
            (by_image = PyObject_GetAttr(cache, n_by_image)) == NULL)
            goto fail;
        if (c_lock(lock) < 0) goto fail;
        if (c_unindex(self, cache, by_image, info) < 0) {
            c_unlock(lock);
            goto fail;
        }
        Py_SETREF(ISLOT(info, P_EXITED), Py_NewRef(ts));
        if (c_unlock(lock) < 0) goto fail;
    }
    *out = info;
    info = NULL;
    found = 1;
    goto done;
fail:
    found = -1;
done:
    Py_XDECREF(procs); Py_XDECREF(info); Py_XDECREF(lock); Py_XDECREF(by_image);
    return found;
}
#undef ISLOT
/* ====================================================================== end of 20a section */

#define SET(d, k, v) do { PyObject *v_ = (v); \
    if (v_ == NULL || PyDict_SetItem(d, k, v_) < 0) { Py_XDECREF(v_); goto fail; } \
    Py_DECREF(v_); } while (0)

static PyObject *builder_exec(BuilderObject *self, PyObject *o) {
    PyObject *f[11] = {NULL}; /* ts_ns pid ppid start_ticks image argv cwd uid auid sid end */
    PyObject *names[11] = {n_ts_ns, n_pid, n_ppid, n_start_ticks, n_image, n_argv, n_cwd, n_uid,
                           n_auid, n_sessionid, n_end_data};
    PyObject *cache = NULL, *info = NULL, *parent = NULL, *data = NULL, *utc = NULL,
             *created = NULL, *res = NULL, *tmp = NULL, *image = NULL, *iuid = NULL,
             *ippid = NULL, *hasher = NULL;
    for (int i = 0; i < 11; i++)
        if ((f[i] = PyObject_GetAttr(o, names[i])) == NULL) goto fail;
    if ((cache = PyObject_GetAttr(self->asm_, n_cache)) == NULL) goto fail;
    if (c_on_exec(self, cache, f, &info) < 0) goto fail;
    if (info == NULL) {
        PyObject *args[12] = {cache, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9],
                              f[10], f[0]};
        info = PyObject_VectorcallMethod(n_on_exec, args, 2, exec_kwnames);
        if (info == NULL) goto fail;
    }
    { /* the namespaces the kernel read at the exec: info.extra["ns"] = (mnt_ns, pid_ns),
       * as AssembleCore._exec does (kept for the enrichment's host facts) */
        PyObject *mn = PyObject_GetAttr(o, n_mnt_ns);
        if (mn == NULL) goto fail;
        if (mn != Py_None) {
            PyObject *pn = PyObject_GetAttr(o, n_pid_ns);
            PyObject *ex = pn ? PyObject_GetAttr(info, n_extra) : NULL;
            PyObject *pair = ex ? PyTuple_Pack(2, mn, pn) : NULL;
            int rc = pair ? PyObject_SetItem(ex, s_ns, pair) : -1;
            Py_XDECREF(pair);
            Py_XDECREF(ex);
            Py_XDECREF(pn);
            if (rc < 0) {
                Py_DECREF(mn);
                goto fail;
            }
        }
        Py_DECREF(mn);
    }
    if ((ippid = PyObject_GetAttr(info, n_ppid)) == NULL) goto fail;
    if ((parent = c_get(self, cache, ippid)) == NULL) goto fail;
    if ((iuid = PyObject_GetAttr(info, n_uid)) == NULL) goto fail;
    if (b_stamps(self, f[0], &utc, &created) < 0) goto fail;
    if ((image = PyObject_GetAttr(info, n_image)) == NULL) goto fail;
    if ((data = PyDict_New()) == NULL) goto fail;
    SET(data, k_RuleName, Py_NewRef(s_dash));
    SET(data, k_UtcTime, Py_NewRef(utc));
    SET(data, k_ProcessGuid, PyObject_GetAttr(info, n_guid));
    SET(data, k_ProcessId, PyObject_Str(f[1]));
    SET(data, k_Image, b_or_dash(image));
    SET(data, k_FileVersion, Py_NewRef(s_dash));
    SET(data, k_Description, Py_NewRef(s_dash));
    SET(data, k_Product, Py_NewRef(s_dash));
    SET(data, k_Company, Py_NewRef(s_dash));
    SET(data, k_OriginalFileName, Py_NewRef(s_dash));
    if ((tmp = PyObject_GetAttr(info, n_command_line)) == NULL) goto fail;
    SET(data, k_CommandLine, b_or_dash(tmp));
    Py_CLEAR(tmp);
    if ((tmp = PyObject_GetAttr(info, n_cwd)) == NULL) goto fail;
    SET(data, k_CurrentDirectory, b_or_dash(tmp));
    Py_CLEAR(tmp);
    SET(data, k_User, b_user(self, iuid));
    {
        PyObject *logon_uid = iuid != Py_None ? iuid : self->unset_id;
        PyObject *machine = PyObject_GetAttr(cache, n_machine);
        if (machine == NULL) goto fail;
        /* logon_guid(machine, uid): its cached text found here (the same key), else the call */
        PyObject *g = NULL, *key = PyTuple_Pack(4, machine, logon_uid, i_zero, i_zero);
        if (key == NULL) { Py_DECREF(machine); goto fail; }
        g = PyDict_GetItemWithError(self->logon_guids, key);
        Py_DECREF(key);
        if (g != NULL && PyUnicode_CheckExact(g)) {
            Py_INCREF(g);
        } else if (PyErr_Occurred()) {
            Py_DECREF(machine);
            goto fail;
        } else {
            PyObject *args[2] = {machine, logon_uid};
            g = PyObject_Vectorcall(self->logon_guid, args, 2, NULL);
        }
        Py_DECREF(machine);
        SET(data, k_LogonGuid, g);
        SET(data, k_LogonId, PyObject_Str(logon_uid));
    }
    {
        PyObject *sid = PyObject_GetAttr(info, n_sessionid);
        if (sid == NULL) goto fail;
        int unset = sid == Py_None ? 1 : PyObject_RichCompareBool(sid, self->unset_id, Py_EQ);
        if (unset < 0) { Py_DECREF(sid); goto fail; }
        PyObject *sv = unset ? Py_NewRef(s_zero) : PyObject_Str(sid);
        Py_DECREF(sid);
        SET(data, k_TerminalSessionId, sv);
    }
    SET(data, k_IntegrityLevel, Py_NewRef(s_no_level));
    if ((hasher = PyObject_GetAttr(self->asm_, n_hasher)) == NULL) goto fail;
    SET(data, k_Hashes, b_hashes(self, hasher, image));
    if (parent != Py_None) {
        SET(data, k_ParentProcessGuid, PyObject_GetAttr(parent, n_guid));
    } else {
        SET(data, k_ParentProcessGuid, Py_NewRef(self->zero_guid));
    }
    {
        int t = PyObject_IsTrue(ippid);
        if (t < 0) goto fail;
        SET(data, k_ParentProcessId, t ? PyObject_Str(ippid) : Py_NewRef(s_zero));
    }
    if (parent != Py_None) {
        if ((tmp = PyObject_GetAttr(parent, n_image)) == NULL) goto fail;
        SET(data, k_ParentImage, b_or_dash(tmp));
        Py_CLEAR(tmp);
        if ((tmp = PyObject_GetAttr(parent, n_command_line)) == NULL) goto fail;
        SET(data, k_ParentCommandLine, b_or_dash(tmp));
        Py_CLEAR(tmp);
        if ((tmp = PyObject_GetAttr(parent, n_uid)) == NULL) goto fail;
        SET(data, k_ParentUser, b_user(self, tmp));
        Py_CLEAR(tmp);
    } else {
        SET(data, k_ParentImage, Py_NewRef(s_dash));
        SET(data, k_ParentCommandLine, Py_NewRef(s_dash));
        SET(data, k_ParentUser, Py_NewRef(s_dash));
    }
    {
        PyObject *ev = b_event(self, i_one, self->v1, self->l1, data, created);
        data = created = NULL;
        if (ev == NULL) goto fail;
        res = PyList_New(1);
        if (res == NULL) { Py_DECREF(ev); goto fail; }
        PyList_SET_ITEM(res, 0, ev);
    }
    if (PyUnicode_Check(image) && PyUnicode_Tailmatch(image, s_deleted, 0, PY_SSIZE_T_MAX, 1)) {
        PyObject *args[2] = {info, f[0]};
        PyObject *more = PyObject_Vectorcall(self->tail, args, 2, NULL);
        if (more == NULL) goto fail;
        Py_ssize_t n = PyList_GET_SIZE(res);
        int rc = PyList_SetSlice(res, n, n, more);
        Py_DECREF(more);
        if (rc < 0) goto fail;
    }
    goto done;
fail:
    Py_CLEAR(res);
done:
    for (int i = 0; i < 11; i++) Py_XDECREF(f[i]);
    Py_XDECREF(cache); Py_XDECREF(info); Py_XDECREF(parent); Py_XDECREF(data);
    Py_XDECREF(utc); Py_XDECREF(created); Py_XDECREF(tmp); Py_XDECREF(image);
    Py_XDECREF(iuid); Py_XDECREF(ippid); Py_XDECREF(hasher);
    return res;
}

static PyObject *builder_exit(BuilderObject *self, PyObject *o) {
    PyObject *ts = NULL, *pid = NULL, *st = NULL, *cache = NULL, *info = NULL, *data = NULL,
             *utc = NULL, *created = NULL, *tmp = NULL, *res = NULL;
    if ((ts = PyObject_GetAttr(o, n_ts_ns)) == NULL || (pid = PyObject_GetAttr(o, n_pid)) == NULL
        || (st = PyObject_GetAttr(o, n_start_ticks)) == NULL)
        goto fail;
    if ((cache = PyObject_GetAttr(self->asm_, n_cache)) == NULL) goto fail;
    if (c_on_exit(self, cache, pid, ts, st, &info) < 0) goto fail;
    if (info == NULL) {
        PyObject *args[4] = {cache, pid, ts, st};
        if ((info = PyObject_VectorcallMethod(n_on_exit, args, 4, NULL)) == NULL) goto fail;
    }
    if (b_stamps(self, ts, &utc, &created) < 0) goto fail;
    if ((data = PyDict_New()) == NULL) goto fail;
    SET(data, k_RuleName, Py_NewRef(s_dash));
    SET(data, k_UtcTime, Py_NewRef(utc));
    if (info == Py_None) {
        SET(data, k_ProcessGuid, Py_NewRef(self->zero_guid));
        SET(data, k_ProcessId, PyObject_Str(pid));
        SET(data, k_Image, Py_NewRef(s_dash));
        SET(data, k_User, Py_NewRef(s_dash));
    } else {
        SET(data, k_ProcessGuid, PyObject_GetAttr(info, n_guid));
        SET(data, k_ProcessId, PyObject_Str(pid));
        if ((tmp = PyObject_GetAttr(info, n_image)) == NULL) goto fail;
        SET(data, k_Image, b_or_dash(tmp));
        Py_CLEAR(tmp);
        if ((tmp = PyObject_GetAttr(info, n_uid)) == NULL) goto fail;
        SET(data, k_User, b_user(self, tmp));
        Py_CLEAR(tmp);
    }
    res = b_event(self, i_five, self->v5, self->l5, data, created);
    data = created = NULL;
    goto done;
fail:
    Py_CLEAR(res);
done:
    Py_XDECREF(ts); Py_XDECREF(pid); Py_XDECREF(st); Py_XDECREF(cache); Py_XDECREF(info);
    Py_XDECREF(data); Py_XDECREF(utc); Py_XDECREF(created); Py_XDECREF(tmp);
    return res;
}
#undef SET

static PyMethodDef builder_methods[] = {
    {"exec_events", (PyCFunction)builder_exec, METH_O,
     "exec_events(o: ProcessExec) -> list[Event]: Assembler._exec compiled."},
    {"exit_event", (PyCFunction)builder_exit, METH_O,
     "exit_event(o: ProcessExit) -> Event: Assembler._exit compiled."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sysmonx.sensor._ringbatch.Builder",
    .tp_basicsize = sizeof(BuilderObject),
    .tp_dealloc = (destructor)builder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Builder(assembler, Event, config): events 1 and 5 of the live hot path "
              "(Assembler._exec/_exit) without a Python frame; see the C source.",
    .tp_traverse = (traverseproc)builder_traverse,
    .tp_clear = (inquiry)builder_clear,
    .tp_methods = builder_methods,
    .tp_new = builder_new,
};
/* ================================================================== end of 18a section */

/* ================================================ 20a: the order buffer's batch steps in C
 *
 * sysmonx.sensor.order.OrderBuffer.push_many / ready (the pure-Python definition), the same
 * heap entries (ts_ns, rank, seq, arrival, observation) pushed and popped with heapq's own
 * functions, without a Python step per observation:
 *
 *   order_push(heap, items, now, seq, ranks, unheld, room, heappush) -> (out, seq, i)
 *       items[:i] handled as push_many handles them (``out``: the unheld ones, in order);
 *       i < len(items) when the next item would pass ``max_held`` (room 0): the caller goes
 *       on from there.
 *   order_ready(heap, limit, last, heappop) -> (out, last, late)
 *       the entries whose arrival <= limit, popped while the smallest one's has passed.
 */
/* getattr(o, "ts_ns", <absent>): 1 and a new reference, 0 and NULL when absent, -1 error */
static int get_ts(PyObject *o, PyObject **out) {
    *out = PyObject_GetAttr(o, n_ts_ns);
    if (*out != NULL) return 1;
    if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

static PyObject *py_order_push(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *heap, *items, *now, *seqo, *ranks, *unheld, *heappush;
    Py_ssize_t room;
    if (!PyArg_ParseTuple(args, "O!O!OO!O!O!nO:order_push", &PyList_Type, &heap, &PyList_Type,
                          &items, &now, &PyLong_Type, &seqo, &PyDict_Type, &ranks,
                          &PyFrozenSet_Type, &unheld, &room, &heappush))
        return NULL;
    long long seq = PyLong_AsLongLong(seqo);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    PyObject *out = PyList_New(0), *two = PyLong_FromLong(2);
    if (out == NULL || two == NULL) goto fail;
    Py_ssize_t i, n = PyList_GET_SIZE(items);
    for (i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(items, i);
        PyObject *kind = (PyObject *)Py_TYPE(o);
        int un = PySet_Contains(unheld, kind);
        if (un < 0) goto fail;
        if (un) {
            if (PyList_Append(out, o) < 0) goto fail;
            continue;
        }
        if (room <= 0) break; /* this push passes max_held: the caller's loop */
        PyObject *ts = NULL;
        if (get_ts(o, &ts) < 0) goto fail;
        if (ts != NULL) {
            int t = PyObject_IsTrue(ts);
            if (t < 0) { Py_DECREF(ts); goto fail; }
            if (!t) Py_SETREF(ts, PyLong_FromLong(0));
        } else {
            ts = PyLong_FromLong(0);
        }
        if (ts == NULL) goto fail;
        PyObject *rank = PyDict_GetItemWithError(ranks, kind);
        if (rank == NULL && PyErr_Occurred()) { Py_DECREF(ts); goto fail; }
        seq++;
        PyObject *sv = PyLong_FromLongLong(seq);
        if (sv == NULL) { Py_DECREF(ts); goto fail; }
        PyObject *entry = PyTuple_New(5);
        if (entry == NULL) { Py_DECREF(ts); Py_DECREF(sv); goto fail; }
        PyTuple_SET_ITEM(entry, 0, ts);
        PyTuple_SET_ITEM(entry, 1, Py_NewRef(rank != NULL ? rank : two));
        PyTuple_SET_ITEM(entry, 2, sv);
        PyTuple_SET_ITEM(entry, 3, Py_NewRef(now));
        PyTuple_SET_ITEM(entry, 4, Py_NewRef(o));
        PyObject *cargs[2] = {heap, entry};
        PyObject *r = PyObject_Vectorcall(heappush, cargs, 2, NULL);
        Py_DECREF(entry);
        if (r == NULL) goto fail;
        Py_DECREF(r);
        room--;
    }
    Py_DECREF(two);
    return Py_BuildValue("(NLn)", out, seq, i);
fail:
    Py_XDECREF(out);
    Py_XDECREF(two);
    return NULL;
}

static PyObject *py_order_ready(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *heap, *limit, *last, *heappop;
    if (!PyArg_ParseTuple(args, "O!OOO:order_ready", &PyList_Type, &heap, &limit, &last,
                          &heappop))
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    Py_INCREF(last);
    Py_ssize_t late = 0;
    while (PyList_GET_SIZE(heap) > 0) {
        PyObject *top = PyList_GET_ITEM(heap, 0);
        if (!PyTuple_Check(top) || PyTuple_GET_SIZE(top) != 5) {
            PyErr_SetString(PyExc_TypeError, "order heap entries are 5-tuples");
            goto fail;
        }
        int due = PyObject_RichCompareBool(PyTuple_GET_ITEM(top, 3), limit, Py_LE);
        if (due < 0) goto fail;
        if (!due) break;
        PyObject *entry = PyObject_Vectorcall(heappop, &heap, 1, NULL);
        if (entry == NULL) goto fail;
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 5) {
            Py_DECREF(entry);
            PyErr_SetString(PyExc_TypeError, "order heap entries are 5-tuples");
            goto fail;
        }
        PyObject *ts = PyTuple_GET_ITEM(entry, 0);
        int lt = PyObject_RichCompareBool(ts, last, Py_LT);
        if (lt < 0 || PyList_Append(out, PyTuple_GET_ITEM(entry, 4)) < 0) {
            Py_DECREF(entry);
            goto fail;
        }
        if (lt) late++;
        else Py_SETREF(last, Py_NewRef(ts));
        Py_DECREF(entry);
    }
    return Py_BuildValue("(NNn)", out, last, late);
fail:
    Py_DECREF(out);
    Py_DECREF(last);
    return NULL;
}
/* ====================================================================== end of 20a section */


/* ============================================================== audit records (tier B), 23a
 * The kernel audit reader of sysmonx.sensor.backends.audit without a Python frame per datagram.
 * The pure-Python definition is AuditSocket.recv_datagram + AuditSocket.split + parse_record
 * (audit_netlink.py) for audit_recv, and parse_fields's regular expression for audit_fields;
 * tests/test_audit_compiled.py compares both on the same input.
 *
 *   audit_recv(fd, max_datagrams, keep) -> (records, datagrams): reads up to max_datagrams
 *       (at most 64) datagrams without waiting (one recvmmsg call; a datagram longer than 64 KiB
 *       is cut as recv_into's 64 KiB buffer cuts it), splits each as AuditSocket.split does and
 *       returns, for each message whose type is in ``keep`` (a set of ints), in order,
 *       ``(type, serial, ts_ns, text)`` with parse_record's values, or ``(type, None, None,
 *       payload)`` when the header is not the usual ``audit(SEC.FRAC:SERIAL): `` with at most
 *       10 digits of seconds and 18 of serial (the caller then parses the payload itself);
 *       ``datagrams`` is how many were read (0: none was waiting). Raises OSError as recv does
 *       (e.g. ENOBUFS) when the first read fails.
 *   audit_fields(text) -> dict or None: parse_fields(text) for an ASCII str, None otherwise.
 */
#include <sys/socket.h>

#define AU_SLOTS 64
#define AU_SLOT 65536
#define AU_FIRST_RECORD 1100
static char *au_buf = NULL;

static int au_space(unsigned char c) { /* bytes-pattern \s */
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* parse_record's header regex; returns the offset of the text, or -1 (let Python decide) */
static Py_ssize_t au_header(const unsigned char *p, Py_ssize_t n, unsigned long long *ts,
                            unsigned long long *serial) {
    Py_ssize_t i = 6, s0;
    unsigned long long sec = 0, frac = 0, ser = 0;
    int fd = 0;
    if (n < 6 || memcmp(p, "audit(", 6) != 0) return -1;
    for (s0 = i; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
        if (i - s0 >= 10) return -1;
        sec = sec * 10 + (unsigned)(p[i] - '0');
    }
    if (i == s0 || i >= n || p[i] != '.') return -1;
    for (s0 = ++i; i < n && p[i] >= '0' && p[i] <= '9'; i++)
        if (fd < 9) { frac = frac * 10 + (unsigned)(p[i] - '0'); fd++; }
    if (i == s0 || i >= n || p[i] != ':') return -1;
    for (; fd < 9; fd++) frac *= 10;
    for (s0 = ++i; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
        if (i - s0 >= 18) return -1;
        ser = ser * 10 + (unsigned)(p[i] - '0');
    }
    if (i == s0 || i + 2 > n || p[i] != ')' || p[i + 1] != ':') return -1;
    i += 2;
    if (i < n && au_space(p[i])) i++;
    *ts = sec * 1000000000ULL + frac;
    *serial = ser;
    return i;
}

static int au_emit(PyObject *out, unsigned type, const unsigned char *p, Py_ssize_t n) {
    unsigned long long ts = 0, serial = 0;
    Py_ssize_t at = au_header(p, n, &ts, &serial);
    PyObject *t;
    if (at < 0) {
        t = Py_BuildValue("(IOOy#)", type, Py_None, Py_None, (const char *)p, n);
    } else {
        Py_ssize_t e = n;
        while (e > at && (p[e - 1] == 0 || p[e - 1] == '\n')) e--;
        PyObject *text = PyUnicode_DecodeUTF8((const char *)p + at, e - at, "surrogateescape");
        if (text == NULL) return -1;
        t = Py_BuildValue("(IKKN)", type, serial, ts, text);
    }
    if (t == NULL) return -1;
    int r = PyList_Append(out, t);
    Py_DECREF(t);
    return r;
}

static PyObject *py_audit_recv(PyObject *Py_UNUSED(m), PyObject *args) {
    int fd, vlen;
    PyObject *keep;
    if (!PyArg_ParseTuple(args, "iiO", &fd, &vlen, &keep)) return NULL;
    if (!PyAnySet_Check(keep)) {
        PyErr_SetString(PyExc_TypeError, "audit_recv: keep must be a set or frozenset of ints");
        return NULL;
    }
    if (vlen < 1) vlen = 1;
    if (vlen > AU_SLOTS) vlen = AU_SLOTS;
    /* the wanted types as a bitmap (record types are below 4096; others never wanted here) */
    unsigned char want[4096 / 8];
    memset(want, 0, sizeof want);
    {
        /* the public iterator (_PySet_NextEntry is internal from CPython 3.13 on) */
        PyObject *it = PyObject_GetIter(keep), *key;
        if (it == NULL) return NULL;
        while ((key = PyIter_Next(it)) != NULL) {
            long v = PyLong_AsLong(key);
            Py_DECREF(key);
            if (v == -1 && PyErr_Occurred()) { Py_DECREF(it); return NULL; }
            if (v < 0 || v >= 4096) {
                Py_DECREF(it);
                PyErr_SetString(PyExc_ValueError, "audit_recv: keep types must be in 0..4095");
                return NULL;
            }
            want[v >> 3] |= (unsigned char)(1u << (v & 7));
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) return NULL;
    }
    if (au_buf == NULL && (au_buf = malloc((size_t)AU_SLOTS * AU_SLOT)) == NULL)
        return PyErr_NoMemory();
    struct mmsghdr msgs[AU_SLOTS];
    struct iovec iov[AU_SLOTS];
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)vlen);
    for (int i = 0; i < vlen; i++) {
        iov[i].iov_base = au_buf + (size_t)i * AU_SLOT;
        iov[i].iov_len = AU_SLOT;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int got;
    for (;;) {
        got = recvmmsg(fd, msgs, (unsigned)vlen, MSG_DONTWAIT, NULL);
        if (got >= 0) break;
        if (errno == EAGAIN || errno == EWOULDBLOCK) { got = 0; break; }
        if (errno == EINTR) {
            if (PyErr_CheckSignals() < 0) return NULL;
            continue;
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (int i = 0; i < got; i++) {
        const unsigned char *d = (const unsigned char *)au_buf + (size_t)i * AU_SLOT;
        size_t total = msgs[i].msg_len, off = 0;
        while (off + 16 <= total) {
            uint32_t length;
            uint16_t type;
            memcpy(&length, d + off, 4);
            memcpy(&type, d + off + 4, 2);
            int last = type >= AU_FIRST_RECORD || length < 16 || off + length > total;
            size_t end = last ? total : off + length;
            if (type < 4096 && (want[type >> 3] & (1u << (type & 7))) &&
                au_emit(out, type, d + off + 16, (Py_ssize_t)(end - off - 16)) < 0) {
                Py_DECREF(out);
                return NULL;
            }
            if (last) break;
            off += ((size_t)length + 3) & ~(size_t)3;
        }
    }
    return Py_BuildValue("(Ni)", out, got);
}

static int au_key(Py_UCS1 c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static int au_digit(Py_UCS1 c) { return c >= '0' && c <= '9'; }

static PyObject *py_audit_fields(PyObject *Py_UNUSED(m), PyObject *text) {
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "audit_fields: text must be str");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(text)) Py_RETURN_NONE;
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), i = 0;
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    while (i < n) {
        if (!au_key(s[i])) { i++; continue; }
        /* ([A-Za-z0-9_]+(?:\[\d+\])?)= : every start inside one run of key characters ends at
         * the same place, so a run that fails is skipped whole */
        Py_ssize_t k0 = i, j = i;
        while (j < n && au_key(s[j])) j++;
        Py_ssize_t kend = j;
        if (j < n && s[j] == '[') {
            Py_ssize_t m = j + 1;
            while (m < n && au_digit(s[m])) m++;
            if (m > j + 1 && m + 1 < n && s[m] == ']' && s[m + 1] == '=') kend = j = m + 1;
        }
        if (j >= n || s[j] != '=') {
            i = j; /* the end of the run (a bracket is taken only when "=" follows it) */
            continue;
        }
        /* ("[^"]*"|'[^']*'|\S*) */
        Py_ssize_t v0 = j + 1, v1 = -1;
        if (v0 < n && (s[v0] == '"' || s[v0] == '\'')) {
            const Py_UCS1 *q = memchr(s + v0 + 1, s[v0], (size_t)(n - v0 - 1));
            if (q != NULL) v1 = (q - s) + 1;
        }
        if (v1 < 0) {
            v1 = v0;
            while (v1 < n && !Py_UNICODE_ISSPACE(s[v1])) v1++;
        }
        PyObject *k = PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, s + k0, kend - k0);
        PyObject *v = k ? PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, s + v0, v1 - v0) : NULL;
        if (v == NULL || PyDict_SetItem(out, k, v) < 0) {
            Py_XDECREF(k);
            Py_XDECREF(v);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(k);
        Py_DECREF(v);
        i = v1;
    }
    return out;
}

/* cn_gather(fd, timeout_ms, max_datagrams) -> (datagrams, snapshots, enobufs, error, nomem): the audit
 * tier's short wait for proc connector messages (AuditBackend._run, "gather") without the GIL.
 * It reads the proc connector socket ``fd`` (non-blocking reads, poll between them) for up to
 * ``timeout_ms`` or until ``max_datagrams`` datagrams came, and for every PROC_EVENT_EXEC in them
 * reads ``/proc/TGID/stat`` at once (one read of at most 4096 bytes, as _exec_snapshot does: a
 * short-lived process is gone a millisecond after its exec, and a thread that needs the GIL
 * first may come too late). Returns the datagrams as ``bytes`` (as recv_into a 64 KiB buffer
 * gives them; an empty datagram ends the reading, as ProcConnector.read ends it), the snapshots
 * in order as ``(tgid, stat bytes or None, mount namespace inode, pid namespace inode)`` (an
 * inode 0: its ``/proc/TGID/ns`` link could not be read; both are read before the stat), how
 * many reads failed with ENOBUFS, the errno of another failure (0: none; what was read
 * before it is returned), and how many datagrams read from the socket could not be kept for
 * want of memory (a failed allocation: 0 or 1, the reading stops there and what was kept before
 * it is returned; the caller counts it as lost, never silently). A datagram kept whose exec
 * snapshot could not be kept stops the reading too: its exec is then read as without the
 * compiled gather. */
#include <poll.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>

#define CN_DGRAM 65536
#define CN_STAT 4096
#define CN_HEAD 21 /* a snapshot record's tgid, namespace inodes and "stat was read" flag */

typedef struct {
    char *buf;
    size_t used, alloc;
} cn_arena;

/* cn_fail_alloc(n) (tests only): the n-th cn_put from now fails as a failed realloc does (0:
 * none); how a MemoryError in the gather is shown to be counted, not silent */
static long cn_fail_countdown = 0;

static int cn_put(cn_arena *a, const void *data, size_t n) {
    if (cn_fail_countdown > 0 && --cn_fail_countdown == 0) return -1;
    if (a->used + n + sizeof(size_t) > a->alloc) {
        size_t na = a->alloc ? a->alloc * 2 : 16384;
        while (na < a->used + n + sizeof(size_t)) na *= 2;
        char *nb = realloc(a->buf, na);
        if (nb == NULL) return -1;
        a->buf = nb;
        a->alloc = na;
    }
    memcpy(a->buf + a->used, &n, sizeof(size_t));
    if (n) memcpy(a->buf + a->used + sizeof(size_t), data, n);
    a->used += n + sizeof(size_t);
    return 0;
}

static long long cn_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* procfs.ns_inode: the namespace inode a /proc/PID/ns/NAME link names, from the link's text
 * ("mnt:[4026531841]": the namespace's inum, which is the st_ino stat() of the link gives,
 * without the nsfs dentry and inode stat() allocates and frees each time); 0 when it cannot be
 * read or is not of that form (0 is never a namespace's inode) */
static uint64_t cn_ns_inode(const char *path) {
    char link[64];
    ssize_t n = readlink(path, link, sizeof link);
    if (n < 4 || n >= (ssize_t)sizeof link || link[n - 1] != ']') return 0;
    const char *b = memchr(link, '[', (size_t)n);
    if (b == NULL || b == link || b[-1] != ':' || b + 2 > link + n - 1) return 0;
    uint64_t v = 0;
    for (const char *p = b + 1; p < link + n - 1; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10) return 0;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    return v;
}

/* the exec events of one datagram (parse_cn_messages's walk): snapshot each */
static int cn_snap(const unsigned char *d, size_t total, cn_arena *snaps, char *statbuf) {
    size_t off = 0;
    while (off + 16 <= total) {
        uint32_t nl_len, idx, val, what, tgid;
        uint16_t clen;
        memcpy(&nl_len, d + off, 4);
        if (nl_len < 16 || off + nl_len > total) return 0;
        if (nl_len >= 52 + 16) { /* room for the u32 fields parse_cn_messages reads */
            memcpy(&idx, d + off + 16, 4);
            memcpy(&val, d + off + 20, 4);
            memcpy(&clen, d + off + 32, 2);
            memcpy(&what, d + off + 36, 4);
            if (idx == 1 && val == 1 && clen >= 16 && what == 2) {
                memcpy(&tgid, d + off + 56, 4);
                char path[40];
                ssize_t n = -1;
                /* the mount and pid namespaces first (as _exec_snapshot: they are released
                 * with the mm, before the process is a zombie); 0: not read */
                uint64_t ns[2] = {0, 0};
                snprintf(path, sizeof path, "/proc/%u/ns/mnt", (unsigned)tgid);
                ns[0] = cn_ns_inode(path);
                snprintf(path, sizeof path, "/proc/%u/ns/pid", (unsigned)tgid);
                ns[1] = cn_ns_inode(path);
                snprintf(path, sizeof path, "/proc/%u/stat", (unsigned)tgid);
                int sfd = open(path, O_RDONLY | O_CLOEXEC);
                if (sfd >= 0) {
                    n = read(sfd, statbuf, CN_STAT);
                    close(sfd);
                }
                /* record: tgid (4 bytes), the two namespace inodes (8 + 8), a flag (1: the
                 * stat was read, 0: it could not be opened or read), then the stat bytes
                 * (none when not read; an empty read is a read) */
                char rec[CN_HEAD + CN_STAT];
                memcpy(rec, &tgid, 4);
                memcpy(rec + 4, ns, 16);
                rec[20] = n >= 0 ? 1 : 0;
                if (n > 0) memcpy(rec + CN_HEAD, statbuf, (size_t)n);
                if (cn_put(snaps, rec, CN_HEAD + (n > 0 ? (size_t)n : 0)) < 0)
                    return -1;
            }
        }
        off += ((size_t)nl_len + 3) & ~(size_t)3;
    }
    return 0;
}

static PyObject *py_cn_gather(PyObject *Py_UNUSED(m), PyObject *args) {
    int fd, timeout_ms, maxd;
    if (!PyArg_ParseTuple(args, "iii", &fd, &timeout_ms, &maxd)) return NULL;
    if (maxd < 1) maxd = 1;
    if (timeout_ms < 0) timeout_ms = 0;
    char *scratch = malloc(CN_DGRAM), *stat = malloc(CN_STAT);
    cn_arena dg = {NULL, 0, 0}, sn = {NULL, 0, 0};
    int nd = 0, enobufs = 0, err = 0, nomem = 0;
    if (scratch == NULL || stat == NULL) {
        free(scratch);
        free(stat);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    long long deadline = cn_now_ns() + (long long)timeout_ms * 1000000LL;
    int done = 0;
    while (!done && nd < maxd) {
        for (;;) {
            ssize_t n = recv(fd, scratch, CN_DGRAM, MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                if (errno == EINTR) continue;
                if (errno == ENOBUFS) { enobufs++; continue; }
                err = errno;
                done = 1;
                break;
            }
            if (n == 0) { done = 1; break; }
            if (cn_put(&dg, scratch, (size_t)n) < 0) {
                nomem = 1; /* read and not kept: lost, counted by the caller */
                done = 1;
                break;
            }
            nd++;
            if (cn_snap((const unsigned char *)scratch, (size_t)n, &sn, stat) < 0) {
                /* the datagram is kept; the snapshot records that fit are returned, an exec
                 * without one is read by the caller (as without the gather) */
                done = 1;
                break;
            }
            if (nd >= maxd) { done = 1; break; }
        }
        if (done) break;
        long long left = deadline - cn_now_ns();
        if (left <= 0) break;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, (int)((left + 999999) / 1000000));
        if (r < 0 && errno != EINTR) { err = errno; break; }
        if (r == 0) break;
    }
    Py_END_ALLOW_THREADS
    free(scratch);
    free(stat);
    PyObject *dl = NULL, *sl = NULL, *res = NULL;
    if ((dl = PyList_New(0)) == NULL || (sl = PyList_New(0)) == NULL) goto out;
    for (size_t off = 0; off < dg.used;) {
        size_t n;
        memcpy(&n, dg.buf + off, sizeof(size_t));
        PyObject *b = PyBytes_FromStringAndSize(dg.buf + off + sizeof(size_t), (Py_ssize_t)n);
        if (b == NULL || PyList_Append(dl, b) < 0) { Py_XDECREF(b); goto out; }
        Py_DECREF(b);
        off += sizeof(size_t) + n;
    }
    for (size_t off = 0; off < sn.used;) {
        size_t n;
        uint32_t tgid;
        uint64_t ns[2];
        memcpy(&n, sn.buf + off, sizeof(size_t));
        const char *r = sn.buf + off + sizeof(size_t);
        memcpy(&tgid, r, 4);
        memcpy(ns, r + 4, 16);
        PyObject *t;
        if (r[20] == 0)
            t = Py_BuildValue("(IOKK)", (unsigned)tgid, Py_None, (unsigned long long)ns[0],
                              (unsigned long long)ns[1]);
        else
            t = Py_BuildValue("(Iy#KK)", (unsigned)tgid, r + CN_HEAD, (Py_ssize_t)(n - CN_HEAD),
                              (unsigned long long)ns[0], (unsigned long long)ns[1]);
        if (t == NULL || PyList_Append(sl, t) < 0) { Py_XDECREF(t); goto out; }
        Py_DECREF(t);
        off += sizeof(size_t) + n;
    }
    res = Py_BuildValue("(OOiii)", dl, sl, enobufs, err, nomem);
out:
    free(dg.buf);
    free(sn.buf);
    Py_XDECREF(dl);
    Py_XDECREF(sl);
    return res;
}

static PyObject *py_cn_fail_alloc(PyObject *Py_UNUSED(m), PyObject *args) {
    long n;
    if (!PyArg_ParseTuple(args, "l", &n)) return NULL;
    cn_fail_countdown = n > 0 ? n : 0;
    Py_RETURN_NONE;
}

/* cn_parse(data, out, cls) -> int: cnproc.parse_cn_messages (the definition, kept as
 * parse_cn_messages_py) in C: every proc connector message of one datagram appended to ``out``
 * as ``cls((what, cpu, seq, mono_ns, a, b, c, d, e, f, ack))``; returns the number of malformed
 * messages. */
static PyObject *py_cn_parse(PyObject *Py_UNUSED(m), PyObject *args) {
    Py_buffer buf;
    PyObject *out, *cls;
    if (!PyArg_ParseTuple(args, "y*O!O", &buf, &PyList_Type, &out, &cls)) return NULL;
    const unsigned char *d = buf.buf;
    size_t end = (size_t)buf.len, off = 0;
    long bad = 0;
    /* CnEvent: a tuple subclass whose __new__ and __init__ are tuple's and that adds no storage */
    int direct = PyType_Check(cls) && PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type) &&
                 ((PyTypeObject *)cls)->tp_new == PyTuple_Type.tp_new &&
                 ((PyTypeObject *)cls)->tp_init == PyTuple_Type.tp_init &&
                 ((PyTypeObject *)cls)->tp_basicsize == PyTuple_Type.tp_basicsize &&
                 ((PyTypeObject *)cls)->tp_itemsize == PyTuple_Type.tp_itemsize;
    while (off + 16 <= end) {
        uint32_t nl_len;
        memcpy(&nl_len, d + off, 4);
        if (nl_len < 16 || off + nl_len > end) { bad++; break; }
        if (nl_len >= 52) {
            uint32_t idx, val, seq, ack, what, cpu, f[6] = {0, 0, 0, 0, 0, 0};
            uint16_t clen;
            uint64_t ts;
            memcpy(&idx, d + off + 16, 4);
            memcpy(&val, d + off + 20, 4);
            memcpy(&seq, d + off + 24, 4);
            memcpy(&ack, d + off + 28, 4);
            memcpy(&clen, d + off + 32, 2);
            if (idx == 1 && val == 1 && clen >= 16) {
                memcpy(&what, d + off + 36, 4);
                memcpy(&cpu, d + off + 40, 4);
                memcpy(&ts, d + off + 44, 8);
                size_t room = nl_len - 52;
                if (room >= 24) memcpy(f, d + off + 52, 24);
                else if (room >= 16) memcpy(f, d + off + 52, 16);
                PyObject *t = Py_BuildValue("(kkkKkkkkkkk)", (unsigned long)what,
                                            (unsigned long)cpu, (unsigned long)seq,
                                            (unsigned long long)ts, (unsigned long)f[0],
                                            (unsigned long)f[1], (unsigned long)f[2],
                                            (unsigned long)f[3], (unsigned long)f[4],
                                            (unsigned long)f[5], (unsigned long)ack);
                if (t == NULL) goto fail;
                PyObject *ev;
                if (direct) { /* cls(t) without the call: a tuple subclass with no own slots */
                    ev = ((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 11);
                    if (ev != NULL)
                        for (Py_ssize_t k = 0; k < 11; k++)
                            PyTuple_SET_ITEM(ev, k, Py_NewRef(PyTuple_GET_ITEM(t, k)));
                } else {
                    ev = PyObject_CallOneArg(cls, t);
                }
                Py_DECREF(t);
                if (ev == NULL) goto fail;
                int r = PyList_Append(out, ev);
                Py_DECREF(ev);
                if (r < 0) goto fail;
            }
        } else {
            bad++;
        }
        off += ((size_t)nl_len + 3) & ~(size_t)3;
    }
    PyBuffer_Release(&buf);
    return PyLong_FromLong(bad);
fail:
    PyBuffer_Release(&buf);
    return NULL;
}
/* ====================================================================== end of 23a section */

static PyObject *py_sample_callback(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromVoidPtr((void *)(uintptr_t)&rb_sample);
}

static PyMethodDef methods[] = {
    {"sample_callback", py_sample_callback, METH_NOARGS,
     "sample_callback() -> int: address of the C ring_buffer_sample_fn; its ctx must be a "
     "RingBatch's .ctx (and the RingBatch kept alive while the ring buffer exists)."},
    {"order_push", py_order_push, METH_VARARGS,
     "order_push(heap, items, now, seq, ranks, unheld, room, heappush) -> (out, seq, i): "
     "OrderBuffer.push_many's loop over items[:i] (see the C source)."},
    {"order_ready", py_order_ready, METH_VARARGS,
     "order_ready(heap, limit, last, heappop) -> (out, last, late): OrderBuffer.ready's loop."},
    {"audit_recv", py_audit_recv, METH_VARARGS,
     "audit_recv(fd, max_datagrams, keep) -> (records, datagrams): audit datagrams read and "
     "parsed as AuditSocket.recv_datagram/split/parse_record do (see the C source)."},
    {"cn_fail_alloc", py_cn_fail_alloc, METH_VARARGS,
     "cn_fail_alloc(n) -> None: tests only: the n-th arena allocation of cn_gather from now "
     "fails (0: none)."},
    {"cn_gather", py_cn_gather, METH_VARARGS,
     "cn_gather(fd, timeout_ms, max_datagrams) -> (datagrams, snapshots, enobufs, error, nomem): proc "
     "connector messages gathered without the GIL, /proc/TGID/stat read at each exec."},
    {"cn_parse", py_cn_parse, METH_VARARGS,
     "cn_parse(data, out, cls) -> int: cnproc.parse_cn_messages in C (see the C source)."},
    {"audit_fields", py_audit_fields, METH_O,
     "audit_fields(text) -> dict or None: audit_netlink.parse_fields(text) for ASCII text."},
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
    if (PyType_Ready(&BuilderType) < 0 || intern_all() < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&BuilderType);
    if (PyModule_AddObject(m, "Builder", (PyObject *)&BuilderType) < 0) {
        Py_DECREF(&BuilderType);
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
