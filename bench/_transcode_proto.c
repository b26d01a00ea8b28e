/* bench/_transcode_proto.c: an upper bound for bench_replay.py --split --upper-bound, NOT used
 * by sysmonx. One pyevtx-rs records_json() record's "data" text -> the JSON-lines bytes a
 * no-config replay writes for it, straight from the text's slices: no Event, no dict, no str per
 * field. It handles the common shape only and is exact only there (every corpus record gives the
 * bytes sysmonx.sinks.jsonl.event_to_json gives; --upper-bound checks that and reports the
 * records that differ): no enrichment names, no reserved keys, no unnamed or complex
 * values, GUID fields told by their shape rather than by the EventID's schema, no replay stage
 * (clock check, duplicate check, filter counts). What it measures is the cost of the byte path
 * with pyevtx-rs as the parser: the ratio reachable at all without an object per field.
 *
 *   transcode(text) -> bytes | None     (None: not the common shape)
 *   run(iterator, write) -> records     every record's line passed to write(bytes) (None: kept)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

typedef struct { const char *p, *e; } R;
typedef struct { const char *s; Py_ssize_t n; int str; } Sl;
typedef struct { char *b; Py_ssize_t n, cap; } O;

static void ws(R *r) { while (r->p < r->e && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) r->p++; }
static int str_(R *r, Sl *s) { /* at '"' */
    if (r->p >= r->e || *r->p != '"') return -1;
    const char *st = ++r->p;
    for (;;) {
#if defined(__SSE2__)
        /* 16 bytes at a time (SSE2) to the first '"' or '\\' */
        while (r->p + 16 <= r->e) {
            __m128i v = _mm_loadu_si128((const __m128i *)r->p);
            int m = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                                   _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
            if (m) { r->p += __builtin_ctz((unsigned)m); break; }
            r->p += 16;
        }
#else
        while (r->p < r->e && *r->p != '"' && *r->p != '\\') r->p++;
#endif
        if (r->p >= r->e) return -1;
        char c = *r->p;
        if (c == '"') { s->s = st; s->n = r->p - st; s->str = 1; r->p++; return 0; }
        if (c == '\\') r->p += 2; else r->p++;
    }
}
static int skip(R *r);
static int skip_obj(R *r, char open, char close) {
    r->p++; int depth = 1;
    while (r->p < r->e && depth) {
        char c = *r->p;
        if (c == '"') { Sl s; if (str_(r, &s)) return -1; continue; }
        if (c == open) depth++; else if (c == close) depth--;
        r->p++;
    }
    return depth ? -1 : 0;
}
static int val(R *r, Sl *s) {
    ws(r);
    if (r->p >= r->e) return -1;
    char c = *r->p;
    if (c == '"') return str_(r, s);
    if (c == '{') { const char *st = r->p; if (skip_obj(r, '{', '}')) return -1; s->s = st; s->n = r->p - st; s->str = 2; return 0; }
    if (c == '[') { const char *st = r->p; if (skip_obj(r, '[', ']')) return -1; s->s = st; s->n = r->p - st; s->str = 2; return 0; }
    const char *st = r->p;
    while (r->p < r->e && *r->p != ',' && *r->p != '}' && *r->p != ']' && *r->p != ' ') r->p++;
    s->s = st; s->n = r->p - st; s->str = 0;
    return 0;
}
static int skip(R *r) { Sl s; return val(r, &s); }
#define KEYIS(k, lit) ((k).n == (Py_ssize_t)sizeof(lit) - 1 && !memcmp((k).s, lit, sizeof(lit) - 1))
/* iterate object: calls fn per key */
typedef int (*KF)(R *, Sl, void *);
static int obj(R *r, KF fn, void *ctx) {
    ws(r);
    if (r->p >= r->e || *r->p != '{') return -1;
    r->p++;
    ws(r);
    if (r->p < r->e && *r->p == '}') { r->p++; return 0; }
    for (;;) {
        ws(r); Sl k; if (str_(r, &k)) return -1;
        ws(r); if (r->p >= r->e || *r->p != ':') return -1; r->p++;
        ws(r);
        if (fn(r, k, ctx)) return -1;
        ws(r);
        if (r->p >= r->e) return -1;
        if (*r->p == ',') { r->p++; continue; }
        if (*r->p == '}') { r->p++; return 0; }
        return -1;
    }
}
enum { F_NAME, F_GUID, F_EID, F_VER, F_LEVEL, F_TASK, F_OP, F_KW, F_TC, F_RID, F_PID, F_TID, F_CH, F_COMP, F_UID, NF };
typedef struct { Sl f[NF]; Sl dk[128], dv[128]; int nd; } Rec;
static int attrs_cb(R *r, Sl k, void *ctx) {
    Rec *x = ctx;
    if (KEYIS(k, "Name")) return val(r, &x->f[F_NAME]);
    if (KEYIS(k, "Guid")) return val(r, &x->f[F_GUID]);
    if (KEYIS(k, "SystemTime")) return val(r, &x->f[F_TC]);
    if (KEYIS(k, "ProcessID")) return val(r, &x->f[F_PID]);
    if (KEYIS(k, "ThreadID")) return val(r, &x->f[F_TID]);
    if (KEYIS(k, "UserID")) return val(r, &x->f[F_UID]);
    return skip(r);
}
static int wrap_cb(R *r, Sl k, void *ctx) {
    if (KEYIS(k, "#attributes")) return obj(r, attrs_cb, ctx);
    return skip(r);
}
static int sys_cb(R *r, Sl k, void *ctx) {
    Rec *x = ctx;
    if (KEYIS(k, "Provider") || KEYIS(k, "TimeCreated") || KEYIS(k, "Execution") || KEYIS(k, "Security")) {
        ws(r); if (*r->p == 'n') return skip(r);
        return obj(r, wrap_cb, ctx);
    }
    if (KEYIS(k, "EventID")) return val(r, &x->f[F_EID]);
    if (KEYIS(k, "Version")) return val(r, &x->f[F_VER]);
    if (KEYIS(k, "Level")) return val(r, &x->f[F_LEVEL]);
    if (KEYIS(k, "Task")) return val(r, &x->f[F_TASK]);
    if (KEYIS(k, "Opcode")) return val(r, &x->f[F_OP]);
    if (KEYIS(k, "Keywords")) return val(r, &x->f[F_KW]);
    if (KEYIS(k, "EventRecordID")) return val(r, &x->f[F_RID]);
    if (KEYIS(k, "Channel")) return val(r, &x->f[F_CH]);
    if (KEYIS(k, "Computer")) return val(r, &x->f[F_COMP]);
    return skip(r);
}
static int data_cb(R *r, Sl k, void *ctx) {
    Rec *x = ctx;
    if (x->nd >= 128) return -1;
    x->dk[x->nd] = k;
    if (val(r, &x->dv[x->nd])) return -1;
    if (x->dv[x->nd].str == 2) return -1;
    x->nd++;
    return 0;
}
static int ev_cb(R *r, Sl k, void *ctx) {
    if (KEYIS(k, "System")) return obj(r, sys_cb, ctx);
    if (KEYIS(k, "EventData")) return obj(r, data_cb, ctx);
    return skip(r);
}
static int top_cb(R *r, Sl k, void *ctx) {
    if (KEYIS(k, "Event")) return obj(r, ev_cb, ctx);
    return skip(r);
}
static inline void put(O *o, const char *s, Py_ssize_t n) {
    if (o->n + n > o->cap) { while (o->n + n > o->cap) o->cap *= 2; o->b = PyMem_Realloc(o->b, o->cap); if (o->b == NULL) Py_FatalError("_transcode_proto: out of memory"); }
    memcpy(o->b + o->n, s, n); o->n += n;
}
/* a raw JSON string slice re-emitted: its escapes kept as they are; the text's characters as
 * UTF-8 (``lat``: the slice holds Latin-1 characters, one byte each), C1 controls as \u00XX */
static int lat;
static void put_raw_str(O *o, Sl s) {
    static const char h[] = "0123456789abcdef";
    put(o, "\"", 1);
    if (o->n + s.n * 6 + 2 > o->cap) {
        while (o->n + s.n * 6 + 2 > o->cap) o->cap *= 2;
        o->b = PyMem_Realloc(o->b, o->cap);
        if (o->b == NULL) Py_FatalError("_transcode_proto: out of memory");
    }
    const unsigned char *a = (const unsigned char *)s.s; char *w = o->b + o->n;
    for (Py_ssize_t i = 0; i < s.n; i++) {
        if (i + 8 <= s.n) { /* runs of 8 ASCII bytes copied as they are */
            uint64_t x; memcpy(&x, a + i, 8);
            if (!(x & 0x8080808080808080ULL)) { memcpy(w, a + i, 8); w += 8; i += 7; continue; }
        }
        unsigned c = a[i];
        if (c < 0x80) { *w++ = (char)c; continue; }
        if (lat) {
            if (c < 0xA0) { memcpy(w, "\\u00", 4); w += 4; *w++ = h[c >> 4]; *w++ = h[c & 15]; }
            else { *w++ = (char)(0xC0 | (c >> 6)); *w++ = (char)(0x80 | (c & 63)); }
        } else if (c == 0xC2 && i + 1 < s.n && a[i + 1] >= 0x80 && a[i + 1] < 0xA0) {
            memcpy(w, "\\u00", 4); w += 4; *w++ = h[a[i + 1] >> 4]; *w++ = h[a[i + 1] & 15]; i++;
        } else *w++ = (char)c;
    }
    o->n = w - o->b;
    put(o, "\"", 1);
}
static int guidish(Sl s) { return s.str == 1 && s.n == 36 && s.s[8] == '-' && s.s[13] == '-'; }
static void put_guid(O *o, Sl s) {
    char t[40]; t[0] = '"'; t[1] = '{';
    for (int i = 0; i < 36; i++) { char c = s.s[i]; t[i + 2] = (c >= 'A' && c <= 'Z') ? c + 32 : c; }
    t[38] = '}'; t[39] = '"'; put(o, t, 40);
}
static void put_val(O *o, Sl s, int as_str) {
    if (s.str == 1) { put_raw_str(o, s); return; }
    if (as_str) {
        if (s.n == 4 && !memcmp(s.s, "null", 4)) { put(o, "\"\"", 2); return; }
        put(o, "\"", 1); put(o, s.s, s.n); put(o, "\"", 1); return;
    }
    put(o, s.s, s.n);
}
static O out;
static PyObject *transcode_text(PyObject *text) {
    Py_ssize_t len; const char *b;
    if (PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND) { /* ASCII or Latin-1: read in place */
        b = (const char *)PyUnicode_1BYTE_DATA(text);
        len = PyUnicode_GET_LENGTH(text);
        lat = !PyUnicode_IS_ASCII(text);
    } else {
        b = PyUnicode_AsUTF8AndSize(text, &len);
        lat = 0;
        if (!b) { PyErr_Clear(); Py_RETURN_NONE; } /* lone surrogates: not taken */
    }
    if (out.b == NULL) return PyErr_NoMemory();
    R r = {b, b + len}; Rec x; x.nd = 0; memset(x.f, 0, sizeof x.f);
    if (obj(&r, top_cb, &x)) Py_RETURN_NONE;
    out.n = 0;
    put(&out, "{\"EventID\":", 11); put(&out, x.f[F_EID].s, x.f[F_EID].n);
    for (int i = 0; i < x.nd; i++) {
        put(&out, ",", 1); put_raw_str(&out, x.dk[i]); put(&out, ":", 1);
        if (guidish(x.dv[i])) put_guid(&out, x.dv[i]); else put_val(&out, x.dv[i], 1);
    }
    put(&out, ",\"System\":{\"Provider\":", 22); put_val(&out, x.f[F_NAME], 0);
    put(&out, ",\"ProviderGuid\":", 16); if (x.f[F_GUID].s) put_guid(&out, x.f[F_GUID]); else put(&out, "null", 4);
    put(&out, ",\"Version\":", 11); put_val(&out, x.f[F_VER], 0);
    put(&out, ",\"Level\":", 9); put_val(&out, x.f[F_LEVEL], 0);
    put(&out, ",\"Task\":", 8); put_val(&out, x.f[F_TASK], 0);
    put(&out, ",\"Opcode\":", 10); put_val(&out, x.f[F_OP], 0);
    put(&out, ",\"Keywords\":", 12); put_val(&out, x.f[F_KW], 0);
    put(&out, ",\"TimeCreated\":\"", 16); put(&out, x.f[F_TC].s, x.f[F_TC].n > 0 ? x.f[F_TC].n - 1 : 0); put(&out, "000Z\"", 5);
    put(&out, ",\"EventRecordID\":", 17); put_val(&out, x.f[F_RID], 0);
    put(&out, ",\"ProcessID\":", 13); put_val(&out, x.f[F_PID], 0);
    put(&out, ",\"ThreadID\":", 12); put_val(&out, x.f[F_TID], 0);
    put(&out, ",\"Channel\":", 11); put_val(&out, x.f[F_CH], 0);
    put(&out, ",\"Computer\":", 12); put_val(&out, x.f[F_COMP], 0);
    put(&out, ",\"UserID\":", 10); if (x.f[F_UID].s) put_val(&out, x.f[F_UID], 0); else put(&out, "null", 4);
    put(&out, "}}\n", 3);
    return PyBytes_FromStringAndSize(out.b, out.n);
}
static PyObject *py_transcode(PyObject *self, PyObject *text) {
    if (!PyUnicode_CheckExact(text)) { PyErr_SetString(PyExc_TypeError, "transcode(str)"); return NULL; }
    return transcode_text(text);
}
/* run(it, write) -> records: pull every record, transcode its data, call write(bytes) */
static PyObject *py_run(PyObject *self, PyObject *args) {
    PyObject *it, *write; if (!PyArg_ParseTuple(args, "OO", &it, &write)) return NULL;
    static PyObject *kd = NULL;
    if (kd == NULL && (kd = PyUnicode_InternFromString("data")) == NULL) return NULL;
    if (Py_TYPE(it)->tp_iternext == NULL) { PyErr_SetString(PyExc_TypeError, "run: not an iterator"); return NULL; }
    iternextfunc next = Py_TYPE(it)->tp_iternext; Py_ssize_t n = 0; PyObject *rec;
    while ((rec = next(it)) != NULL) {
        PyObject *t = PyDict_CheckExact(rec) ? PyDict_GetItem(rec, kd) : NULL;
        PyObject *b = t != NULL && PyUnicode_CheckExact(t) ? transcode_text(t) : NULL;
        Py_DECREF(rec);
        if (b == NULL && PyErr_Occurred()) return NULL;
        if (b == NULL || b == Py_None) { Py_XDECREF(b); n++; continue; }
        if (write != Py_None) { PyObject *rr = PyObject_CallOneArg(write, b); Py_XDECREF(rr); if (!rr) { Py_DECREF(b); return NULL; } }
        Py_DECREF(b); n++;
    }
    if (PyErr_Occurred()) { if (PyErr_ExceptionMatches(PyExc_StopIteration)) PyErr_Clear(); else return NULL; }
    return PyLong_FromSsize_t(n);
}
static PyMethodDef m[] = {{"transcode", py_transcode, METH_O, NULL}, {"run", py_run, METH_VARARGS, NULL}, {NULL}};
static struct PyModuleDef md = {PyModuleDef_HEAD_INIT, "_transcode_proto", NULL, -1, m};
PyMODINIT_FUNC PyInit__transcode_proto(void) { out.cap = 4096; out.b = PyMem_Malloc(out.cap); return PyModule_Create(&md); }
