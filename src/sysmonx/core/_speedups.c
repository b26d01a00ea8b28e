/* sysmonx.core._speedups: compiled fast paths for replay (EVTX record JSON -> Event) and JSON lines
 * (Event -> bytes), written against the CPython C API (no build-time dependency but a C
 * compiler and the Python headers).
 *
 * Both functions handle the common shape only and answer None for anything else, so the
 * pure-Python functions (sysmonx.sources.evtx._convert, sysmonx.sinks.jsonl.event_to_json), which
 * define the behaviour, decide those inputs. For the shapes handled the result is exactly what
 * the pure path gives (tests/test_speedups.py compares both on every corpus record and on
 * hand-made edge cases).
 *
 *   convert_raw(text, origin) -> Event | None
 *       ``text``: the ``data`` JSON of one pyevtx-rs ``records_json()`` record. Parses the JSON
 *       itself (RFC 8259; whatever orjson would reject, including lone surrogate escapes, gives
 *       None) and fills the Event's slots as ``_convert_root`` does. [26a] EventData is not
 *       made a dict: the fields stay slices of ``text`` in the ``_raw`` slot (RawData) and the
 *       first read of ``event.data`` builds the dict (LazyData, installed on Event then).
 *   convert(text, origin, notes=None) -> Event
 *       convert_raw, else the registered Python fallback ``fallback(text, origin, notes)``.
 *   event_json_raw(event) -> bytes | None
 *       the bytes ``event_to_json`` returns (orjson's rendering, C1 controls escaped).
 *   event_json(event) -> bytes
 *       event_json_raw, else the registered Python fallback.
 *   setup_convert(...), setup_json(...): called once by those two modules
 *       (sysmonx.core.native loads this module, or not: SYSMONX_PURE_PYTHON=1).
 *   RawPlan(steps, writer, failure, pipeline): [27a] the replay loop's raw path for evtx_batch
 *       (records every stage passes written from their parsed text, without an Event).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <stdint.h>

/* ------------------------------------------------------------------ module state (set up once) */

enum { S_EVENT_ID, S_DATA, S_PROVIDER, S_PROVIDER_GUID, S_VERSION, S_LEVEL, S_TASK, S_OPCODE,
       S_KEYWORDS, S_TIME_CREATED, S_RECORD_ID, S_PROCESS_ID, S_THREAD_ID, S_CHANNEL,
       S_COMPUTER, S_USER_ID, S_ORIGIN, S_RAW, N_SLOTS };

static const char *slot_names[N_SLOTS] = {
    "event_id", "data", "provider", "provider_guid", "version", "level", "task", "opcode",
    "keywords", "time_created", "record_id", "process_id", "thread_id", "channel", "computer",
    "user_id", "origin", "_raw"};

static PyTypeObject *event_type = NULL;
static Py_ssize_t slot_off[N_SLOTS];
static PyObject *guid_fields = NULL;      /* dict: int EventID -> frozenset of field names */
static PyObject *sysmon_providers = NULL; /* frozenset of provider names */
static PyObject *provider_guids = NULL;   /* dict: raw GUID text -> braced lower-case (shared) */
static PyObject *convert_fallback = NULL; /* callable(text, origin, notes) */
static PyObject *enrichment_names = NULL; /* frozenset */
static PyObject *split_enrichment = NULL; /* callable(event_id, data) -> (data, enr | None) */
static PyObject *utc_func = NULL;         /* callable(time text) -> str */
static PyObject *json_fallback = NULL;    /* callable(event) -> bytes */
/* [21b] bit n set: some enrichment name (or a non-str entry) has n characters (n < 64);
 * all bits set until setup_json computes it */
static uint64_t enrichment_lengths = ~0ULL;
static PyObject *empty_str = NULL;
static PyObject *str_true = NULL, *str_false = NULL;

#define SLOT(obj, i) (*(PyObject **)((char *)(obj) + slot_off[i]))

/* ------------------------------------------------------------------------------- JSON reader */

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    int depth;
    int latin1; /* the bytes are the text's own 1-byte (Latin-1) characters, not UTF-8 */
    int chars;  /* [20b] the bytes are the text's own characters (ASCII or Latin-1 text) */
} Reader;

#define MAX_DEPTH 256

static inline void skip_ws(Reader *r) {
    /* [28c] one test for the common case (pyevtx-rs writes no whitespace) */
    if (r->p >= r->end || *r->p > ' ') return;
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
        r->p++;
}

static inline int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(const unsigned char *p, const unsigned char *end, unsigned *out) {
    if (end - p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = (v << 4) | (unsigned)h;
    }
    *out = v;
    return 0;
}

#if defined(__SSE2__)
#include <emmintrin.h>
/* Bit i set when byte i of the 16 at p is '"', '\\' or below 0x20. */
static inline unsigned special16(const unsigned char *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i q = _mm_cmpeq_epi8(v, _mm_set1_epi8('"'));
    __m128i b = _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'));
    __m128i c = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1F)), _mm_set1_epi8(0x1F));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(q, b), c));
}
#endif

/* Non-zero when one of the 8 bytes of w is '"', '\\' or below 0x20 (the lowest flagged byte is
 * always a real one; bytes above may be false positives, which only cost the byte loop). */
static inline uint64_t special8(uint64_t w) {
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
    return (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w)) & high;
}

/* Scan a string starting after its opening quote. On success r->p is after the closing quote,
 * start and len give the raw bytes, *escaped says whether a backslash occurs. Validates escapes
 * (incl. surrogate pairing, as orjson does). Returns -1 on anything invalid. */
static int scan_string(Reader *r, const unsigned char **start, Py_ssize_t *len, int *escaped) {
    const unsigned char *p = r->p, *end = r->end;
    *start = p;
    *escaped = 0;
    while (p < end) {
#if defined(__SSE2__)
        if (end - p >= 16) {
            unsigned m = special16(p);
            if (m == 0) {
                p += 16;
                continue;
            }
            p += __builtin_ctz(m);
        } else
#endif
        if (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if (!special8(w)) {
                p += 8;
                continue;
            }
        }
        unsigned char c = *p;
        if (c == '"') {
            *len = p - *start;
            r->p = p + 1;
            return 0;
        }
        if (c < 0x20) return -1;
        if (c == '\\') {
            *escaped = 1;
            if (p + 1 >= end) return -1;
            unsigned char e = p[1];
            if (e == 'u') {
                unsigned cp;
                if (read_hex4(p + 2, end, &cp) < 0) return -1;
                p += 6;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return -1;     /* lone low surrogate */
                if (cp >= 0xD800 && cp <= 0xDBFF) {                /* needs a low surrogate */
                    unsigned lo;
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return -1;
                    if (read_hex4(p + 2, end, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF) return -1;
                    p += 6;
                }
                continue;
            }
            if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' &&
                e != 'r' && e != 't')
                return -1;
            p += 2;
            continue;
        }
        p++;
    }
    return -1;
}

static inline char *put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* [20b] Non-zero when a byte of s[0..n) is 0x80 or above (8 bytes at a time). */
static inline int any_high(const unsigned char *s, Py_ssize_t n) {
    uint64_t acc = 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        acc |= w;
    }
    for (; i < n; i++) acc |= s[i];
    return (acc & 0x8080808080808080ULL) != 0;
}

/* [20b] The str of n ASCII bytes: built directly (the same str the decoders give). */
static PyObject *ascii_string(const unsigned char *s, Py_ssize_t n) {
    PyObject *out = PyUnicode_New(n, 127);
    if (out != NULL) memcpy(PyUnicode_1BYTE_DATA(out), s, n);
    return out;
}

/* [20b] An escaped string body whose bytes are the text's own characters (r->chars) and that
 * has no \u escape: every character of the result is one of those bytes or an escape's ASCII
 * character, so it is built in one byte per character directly (two passes: length and
 * widest character, then the characters). NULL without an error set: a \u escape (the
 * caller's general path decides); NULL with an error set: memory. */
static PyObject *unescape_chars(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t len = 0;
    unsigned high = 0;
    for (Py_ssize_t i = 0; i < n; len++) {
        if (s[i] != '\\') {
            high |= s[i++];
            continue;
        }
        if (s[i + 1] == 'u') return NULL;
        i += 2;
    }
    PyObject *out = PyUnicode_New(len, (high & 0x80) ? 255 : 127);
    if (out == NULL) return NULL;
    unsigned char *o = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c != '\\') {
            *o++ = c;
            i++;
            continue;
        }
        switch (s[i + 1]) { /* validated by scan_string; 'u' excluded above */
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        default: c = s[i + 1]; /* '"', '\\', '/' */
        }
        *o++ = c;
        i += 2;
    }
    return out;
}

/* The Python str of an already validated raw JSON string body (UTF-8, or Latin-1 characters
 * when r->latin1). New reference or NULL (error set: only MemoryError can happen, the input
 * being valid). [20b] Text without a byte above 0x7F is built directly as ASCII, and an
 * escaped body of 1-byte text without \u escapes in one byte per character (the same str
 * the decoders below give, without their second pass). */
static PyObject *make_string(const Reader *r, const unsigned char *s, Py_ssize_t n, int escaped) {
    if (!escaped) {
        if ((r->chars && !r->latin1) || !any_high(s, n)) return ascii_string(s, n);
        if (r->latin1) return PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, s, n);
        return PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    }
    if (r->chars) {
        PyObject *out = unescape_chars(s, n);
        if (out != NULL || PyErr_Occurred()) return out;
    }
    /* to UTF-8: an escape is never longer in UTF-8; a Latin-1 character takes 2 bytes */
    Py_ssize_t cap = r->latin1 ? 2 * n : n;
    char stackbuf[1024];
    stackbuf[0] = 0;
    char *buf = cap <= (Py_ssize_t)sizeof(stackbuf) ? stackbuf : PyMem_Malloc(cap + 1);
    if (buf == NULL) return PyErr_NoMemory();
    char *o = buf;
    const unsigned char *p = s, *end = s + n;
    while (p < end) {
        if (*p != '\\') {
            if (*p >= 0x80 && r->latin1) o = put_utf8(o, *p++);
            else *o++ = (char)*p++;
            continue;
        }
        unsigned char e = p[1];
        p += 2;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        default: { /* 'u', validated by scan_string */
            unsigned cp = 0, lo = 0;
            read_hex4(p, end, &cp);
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                read_hex4(p + 2, end, &lo);
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            o = put_utf8(o, cp);
        }
        }
    }
    PyObject *res = PyUnicode_DecodeUTF8(buf, o - buf, NULL);
    if (buf != stackbuf) PyMem_Free(buf);
    return res;
}

/* Key cache: EventData field names repeat on every record; caching them saves the allocation
 * and the hash. Only short unescaped keys; entries live as long as the module. */
#define KEY_CACHE 1024
#define KEY_MAX 48
/* [28c] What the JSON-lines renderer needs to know of a key, found once per cached key and
 * kept in each RawField (``kf``): KF_PLAIN: written as '"' + its bytes + '"' (an unescaped
 * ASCII key of the text: no quote, backslash or control in it); KF_NOT_RESERVED: not one of
 * the names that move the fields to ExtraData; KF_NOT_ENR: not an enrichment field name,
 * valid while the bits from KF_GEN_SHIFT up equal enrichment_gen (setup_json's count). */
#define KF_PLAIN 1
#define KF_NOT_RESERVED 2
#define KF_NOT_ENR 4
#define KF_GEN_SHIFT 8
static unsigned enrichment_gen = 0;
typedef struct {
    Py_ssize_t len;
    unsigned char bytes[KEY_MAX];
    PyObject *str;
    int kf;
} KeyEntry;
static KeyEntry key_cache[KEY_CACHE];
static inline uint64_t hash_words(const unsigned char *s, Py_ssize_t n, uint64_t *high);

/* The key's str (new reference) and its flags in *kf (0 when not cached: nothing known). */
static PyObject *cached_key(const Reader *r, const unsigned char *s, Py_ssize_t n, int escaped,
                            int *kf) {
    *kf = 0;
    if (escaped || n > KEY_MAX) return make_string(r, s, n, escaped);
    uint64_t high;
    uint64_t h = hash_words(s, n, &high); /* [28c] a word at a time (was a byte at a time) */
    if (high) return make_string(r, s, n, 0); /* ASCII keys only: same bytes, same text */
    /* [29a] two places a key may be kept (its hash's low bits, then higher bits): two keys
     * of a record that share the first no longer push each other out on every record */
    KeyEntry *e = &key_cache[h & (KEY_CACHE - 1)];
    if (!(e->str != NULL && e->len == n && memcmp(e->bytes, s, n) == 0)) {
        KeyEntry *e2 = &key_cache[(h >> 20) & (KEY_CACHE - 1)];
        if (e2->str != NULL && e2->len == n && memcmp(e2->bytes, s, n) == 0) e = e2;
        else if (e->str != NULL) e = e2->str == NULL ? e2 : (h & (1ULL << 40)) ? e2 : e;
    }
    if (e->str != NULL && e->len == n && memcmp(e->bytes, s, n) == 0) {
        if ((unsigned)(e->kf >> KF_GEN_SHIFT) != enrichment_gen && enrichment_names != NULL) {
            int in = PySet_Contains(enrichment_names, e->str);
            if (in < 0) return NULL;
            e->kf = (e->kf & (KF_PLAIN | KF_NOT_RESERVED)) | (in ? 0 : KF_NOT_ENR) |
                    (int)(enrichment_gen << KF_GEN_SHIFT);
        }
        *kf = e->kf;
        Py_INCREF(e->str);
        return e->str;
    }
    PyObject *str = make_string(r, s, n, 0);
    if (str == NULL) return NULL;
    int f = KF_PLAIN;
    if (!((n == 7 && !memcmp(s, "EventID", 7)) || (n == 6 && !memcmp(s, "System", 6)) ||
          (n == 9 && !memcmp(s, "ExtraData", 9)) || (n == 10 && !memcmp(s, "Enrichment", 10))))
        f |= KF_NOT_RESERVED;
    if (enrichment_names != NULL) {
        int in = PySet_Contains(enrichment_names, str);
        if (in < 0) {
            Py_DECREF(str);
            return NULL;
        }
        f |= (in ? 0 : KF_NOT_ENR) | (int)(enrichment_gen << KF_GEN_SHIFT);
    }
    Py_XDECREF(e->str);
    e->len = n;
    memcpy(e->bytes, s, n);
    Py_INCREF(str);
    e->str = str;
    e->kf = f;
    *kf = f;
    return str;
}

/* Compare a raw (unescaped) key with a C string. */
static inline int key_is(const unsigned char *s, Py_ssize_t n, int escaped, const char *lit) {
    return !escaped && (size_t)n == strlen(lit) && memcmp(s, lit, n) == 0;
}


/* [21b] Value cache for the System values that repeat from record to record (the provider's
 * name and GUID, channel, computer, keywords, user id): the str of a short ASCII value seen
 * before is shared instead of built. Only unescaped values of at most VAL_MAX bytes, all below
 * 0x80 (the same str in every mode of make_string), direct-mapped on a hash of their bytes; a
 * slot holds one str and is replaced on a miss. Entries live as long as the module. (Tried on
 * EventData values too, 80 % hits on the corpus: converting was no faster and rendering
 * slower, the shared strs lying far from the event's other objects.) */
#define VAL_CACHE 256
#define VAL_MAX 48
typedef struct {
    Py_ssize_t len;
    unsigned char bytes[VAL_MAX];
    PyObject *str;
} ValEntry;
static ValEntry val_cache[VAL_CACHE];

/* [21b] A hash of s[0..n) read 8 bytes at a time; *high gets the bytes OR-ed together (bit 7 of
 * any byte: not ASCII). n may be anything; no byte beyond s[n-1] is read. */
static inline uint64_t hash_words(const unsigned char *s, Py_ssize_t n, uint64_t *high) {
    uint64_t h = (uint64_t)n * 0x9E3779B97F4A7C15ULL, acc = 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        acc |= w;
        h = (h ^ w) * 0x100000001B3ULL;
        h ^= h >> 29;
    }
    if (i < n) {
        uint64_t w = 0;
        memcpy(&w, s + i, (size_t)(n - i));
        acc |= w;
        h = (h ^ w) * 0x100000001B3ULL;
        h ^= h >> 29;
    }
    *high = acc & 0x8080808080808080ULL;
    return h ^ (h >> 32);
}

/* The str of the unescaped value s[0..n): shared from the cache when seen before. New
 * reference, or NULL with an error set (memory). */
static PyObject *cached_value(const Reader *r, const unsigned char *s, Py_ssize_t n) {
    if (n > VAL_MAX) return make_string(r, s, n, 0);
    uint64_t high;
    uint64_t h = hash_words(s, n, &high);
    if (high) return make_string(r, s, n, 0);
    ValEntry *e = &val_cache[h & (VAL_CACHE - 1)];
    if (e->str != NULL && e->len == n && memcmp(e->bytes, s, (size_t)n) == 0)
        return Py_NewRef(e->str);
    PyObject *str = ascii_string(s, n);
    if (str == NULL) return NULL;
    Py_XSETREF(e->str, Py_NewRef(str));
    e->len = n;
    memcpy(e->bytes, s, (size_t)n);
    return str;
}

static int skip_value(Reader *r);

static int skip_number(Reader *r, int *is_float) {
    const unsigned char *p = r->p, *end = r->end;
    *is_float = 0;
    if (p < end && *p == '-') p++;
    if (p >= end) return -1;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') p++;
    } else {
        return -1;
    }
    if (p < end && *p == '.') {
        *is_float = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9') return -1;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *is_float = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return -1;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    r->p = p;
    return 0;
}

static int skip_literal(Reader *r, const char *lit, size_t n) {
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0) return -1;
    r->p += n;
    return 0;
}

static int skip_value(Reader *r) {
    skip_ws(r);
    if (r->p >= r->end) return -1;
    unsigned char c = *r->p;
    const unsigned char *s;
    Py_ssize_t n;
    int esc, fl;
    switch (c) {
    case '"':
        r->p++;
        return scan_string(r, &s, &n, &esc);
    case '{':
    case '[': {
        unsigned char close = c == '{' ? '}' : ']';
        if (++r->depth > MAX_DEPTH) return -1;
        r->p++;
        skip_ws(r);
        if (r->p < r->end && *r->p == close) {
            r->p++;
            r->depth--;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                skip_ws(r);
                if (r->p >= r->end || *r->p != '"') return -1;
                r->p++;
                if (scan_string(r, &s, &n, &esc) < 0) return -1;
                skip_ws(r);
                if (r->p >= r->end || *r->p != ':') return -1;
                r->p++;
            }
            if (skip_value(r) < 0) return -1;
            skip_ws(r);
            if (r->p >= r->end) return -1;
            if (*r->p == ',') {
                r->p++;
                continue;
            }
            if (*r->p == close) {
                r->p++;
                r->depth--;
                return 0;
            }
            return -1;
        }
    }
    case 't': return skip_literal(r, "true", 4);
    case 'f': return skip_literal(r, "false", 5);
    case 'n': return skip_literal(r, "null", 4);
    default: return skip_number(r, &fl);
    }
}

/* Kinds of scalar a caller accepts. */
#define K_STR 1
#define K_INT 2
#define K_NULL 4
#define K_BOOL 8
#define K_ANY (K_STR | K_INT | K_NULL | K_BOOL)
#define K_CACHE 16 /* [21b] a string through cached_value (when unescaped) */

/* A JSON scalar (string, integer within orjson's integer range, true/false/null) as orjson
 * gives it. Returns a new reference, or NULL without an error set for "not handled" (float,
 * object, array, kind not in ``kinds``, invalid JSON), or NULL with an error set (memory). */
static PyObject *read_scalar(Reader *r, int kinds) {
    skip_ws(r);
    if (r->p >= r->end) return NULL;
    unsigned char c = *r->p;
    if (c == '"') {
        const unsigned char *s;
        Py_ssize_t n;
        int esc;
        if (!(kinds & K_STR)) return NULL;
        r->p++;
        if (scan_string(r, &s, &n, &esc) < 0) return NULL;
        if ((kinds & K_CACHE) && !esc) return cached_value(r, s, n);
        return make_string(r, s, n, esc);
    }
    if (c == 'n') {
        if (!(kinds & K_NULL) || skip_literal(r, "null", 4) < 0) return NULL;
        Py_RETURN_NONE;
    }
    if (c == 't') {
        if (!(kinds & K_BOOL) || skip_literal(r, "true", 4) < 0) return NULL;
        Py_RETURN_TRUE;
    }
    if (c == 'f') {
        if (!(kinds & K_BOOL) || skip_literal(r, "false", 5) < 0) return NULL;
        Py_RETURN_FALSE;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        const unsigned char *start = r->p;
        int fl;
        if (!(kinds & K_INT) || skip_number(r, &fl) < 0 || fl) return NULL;
        Py_ssize_t n = r->p - start;
        int neg = start[0] == '-';
        if (n - neg > 20) return NULL; /* beyond 64 bits orjson gives a float */
        if (neg && n == 2 && start[1] == '0') return NULL; /* "-0": leave it to orjson */
        uint64_t v = 0;
        for (Py_ssize_t i = neg; i < n; i++) {
            uint64_t d = (uint64_t)(start[i] - '0');
            if (v > (UINT64_MAX - d) / 10) return NULL; /* beyond 64 bits: a float */
            v = v * 10 + d;
        }
        if (neg) {
            if (v > (uint64_t)INT64_MAX + 1) return NULL;
            return PyLong_FromLongLong(v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v);
        }
        return PyLong_FromUnsignedLongLong(v);
    }
    return NULL;
}

/* Iterate an object: calls ``on_key`` for each key with the reader positioned at the value;
 * on_key must consume the value. Returns 0, -1 (not handled) or -2 (Python error set). */
typedef int (*KeyFn)(Reader *r, const unsigned char *k, Py_ssize_t n, int esc, void *ctx);

static int read_object(Reader *r, KeyFn fn, void *ctx) {
    skip_ws(r);
    if (r->p >= r->end || *r->p != '{') return -1;
    if (++r->depth > MAX_DEPTH) return -1;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        r->depth--;
        return 0;
    }
    for (;;) {
        const unsigned char *k;
        Py_ssize_t n;
        int esc, rc;
        skip_ws(r);
        if (r->p >= r->end || *r->p != '"') return -1;
        r->p++;
        if (scan_string(r, &k, &n, &esc) < 0) return -1;
        skip_ws(r);
        if (r->p >= r->end || *r->p != ':') return -1;
        r->p++;
        rc = fn(r, k, n, esc, ctx);
        if (rc < 0) return rc;
        skip_ws(r);
        if (r->p >= r->end) return -1;
        if (*r->p == ',') {
            r->p++;
            continue;
        }
        if (*r->p == '}') {
            r->p++;
            r->depth--;
            return 0;
        }
        return -1;
    }
}

/* A scalar into *dst (must be empty: a duplicate key is not handled). */
static int take(Reader *r, PyObject **dst, int kinds) {
    if (*dst != NULL) return -1;
    /* [29a] a one- or two-digit integer followed by ',' or '}' (EventID, Version, Level, Task,
     * Opcode mostly): its (small, shared) int directly */
    const unsigned char *p = r->p;
    if ((kinds & K_INT) && r->end - p >= 3 && p[0] >= '0' && p[0] <= '9') {
        if (p[1] == ',' || p[1] == '}') {
            *dst = PyLong_FromLong(p[0] - '0');
            r->p = p + 1;
            return *dst == NULL ? -2 : 0;
        }
        if (p[0] != '0' && p[1] >= '0' && p[1] <= '9' && (p[2] == ',' || p[2] == '}')) {
            *dst = PyLong_FromLong((p[0] - '0') * 10 + (p[1] - '0'));
            r->p = p + 2;
            return *dst == NULL ? -2 : 0;
        }
    }
    *dst = read_scalar(r, kinds);
    if (*dst == NULL) return PyErr_Occurred() ? -2 : -1;
    return 0;
}

/* Single-key wrappers: {"#attributes": {...}} and the like. */
typedef struct {
    const char *name;
    KeyFn fn;
    void *ctx;
    int seen;
} Wrap;

static int wrap_key(Reader *r, const unsigned char *k, Py_ssize_t n, int esc, void *ctx) {
    Wrap *w = ctx;
    if (key_is(k, n, esc, w->name)) {
        if (w->seen++) return -1;
        return read_object(r, w->fn, w->ctx);
    }
    return skip_value(r);
}

static int read_attributes(Reader *r, KeyFn fn, void *ctx, int required) {
    Wrap w = {"#attributes", fn, ctx, 0};
    int rc = read_object(r, wrap_key, &w);
    if (rc < 0) return rc;
    return (required && !w.seen) ? -1 : 0;
}

/* [26a] One EventData field of a record (see Rec). */
typedef struct {
    PyObject *key;
    PyObject *val;       /* the value's str, or NULL: the text's bytes [off, off + len)
                          * are its final text (plain ASCII), its escaped text (canon) or
                          * an integer's digits (canon) */
    Py_ssize_t off, len;
    /* [28c] the bytes [off, off + len) are the value's escaped JSON text, not the value
     * itself: ASCII whose only escapes are \" \\ \b \t \n \f \r, exactly what the
     * JSON-lines renderer writes for the value (rendered by copying them). val is NULL until
     * the str is asked for (field_str makes it; the filter decider keeps it in val for the
     * record's other reads). Cleared wherever val is set to another value. */
    int canon;
    int kf; /* [28c] the key's KF_ flags (cached_key) */
} RawField;

/* more EventData fields than this in one record: the Python path converts it */
#define MAX_FIELDS 256

/* [29a] An integer System value (EventRecordID, ProcessID, ThreadID): its object, or, for a
 * plain JSON integer of at most 18 digits (no sign, no fraction or exponent: JSON allows no
 * leading zero, so the digits are str(int)), its digits in the record's text and its value,
 * the int made only when something asks for it (sysint_obj). len 0 and obj NULL: not seen. */
typedef struct {
    PyObject *obj;
    const unsigned char *digits;
    Py_ssize_t len;
    unsigned long long v;
} SysInt;

typedef struct {
    PyObject *name, *guid, *eid, *version, *level, *task, *opcode, *keywords, *tc, *channel,
        *computer, *user_id;
    SysInt rid, pid, tid;
    /* [29a] TimeCreated's characters: the text's own bytes (an unescaped string: tc stays
     * NULL) or tc's (an escaped one, made a str as before); tcn their number */
    const unsigned char *tcs;
    Py_ssize_t tcn;
    int seen_provider, seen_tc, seen_exec, seen_security, seen_system, seen_data, sec_empty;
    /* [26a] the EventData fields, in order: key, and the value either as a str (val) or as a
     * slice of the record's text (val NULL: plain ASCII with no escape, or, [28c] canon, the
     * value's escaped text or an integer's digits; rendered as it is, made a str only when
     * asked for; a val made from a canon slice is rendered from the slice) */
    Py_ssize_t nf;
    RawField *fields;       /* MAX_FIELDS entries, not cleared: the first nf are in use */
    const unsigned char *base;
    uint64_t key_bits;      /* [28c] bit (hash & 63) of each key so far (duplicate check) */
} Rec;

static void rec_clear(Rec *x) {
    Py_CLEAR(x->name); Py_CLEAR(x->guid); Py_CLEAR(x->eid); Py_CLEAR(x->version);
    Py_CLEAR(x->level); Py_CLEAR(x->task); Py_CLEAR(x->opcode); Py_CLEAR(x->keywords);
    Py_CLEAR(x->tc); Py_CLEAR(x->rid.obj); Py_CLEAR(x->pid.obj); Py_CLEAR(x->tid.obj);
    x->rid.len = x->pid.len = x->tid.len = 0;
    x->tcs = NULL;
    Py_CLEAR(x->channel); Py_CLEAR(x->computer); Py_CLEAR(x->user_id);
    for (Py_ssize_t i = 0; i < x->nf; i++) {
        Py_CLEAR(x->fields[i].key);
        Py_CLEAR(x->fields[i].val);
    }
    x->nf = 0;
}

static int provider_attr(Reader *r, const unsigned char *k, Py_ssize_t n, int esc, void *ctx) {
    Rec *x = ctx;
    if (key_is(k, n, esc, "Name")) return take(r, &x->name, K_STR | K_CACHE);
    if (key_is(k, n, esc, "Guid")) return take(r, &x->guid, K_STR | K_NULL | K_CACHE);
    return skip_value(r);
}

/* [29a] An integer System value into d (see SysInt): a plain integer kept as its digits,
 * anything else as take(K_ANY) gives it. A duplicate key is not handled. */
static int take_int(Reader *r, SysInt *d) {
    if (d->obj != NULL || d->len) return -1;
    skip_ws(r);
    const unsigned char *s = r->p, *p = s, *end = r->end;
    unsigned long long v = 0;
    while (p < end && *p >= '0' && *p <= '9' && p - s < 19) v = v * 10 + (unsigned)(*p++ - '0');
    if (p > s && p - s <= 18 && (p - s == 1 || *s != '0') &&
        !(p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E'))) {
        d->digits = s;
        d->len = p - s;
        d->v = v;
        r->p = p;
        return 0;
    }
    return take(r, &d->obj, K_ANY);
}

/* [29a] d's object (new reference): its own, or the int of its digits. */
static PyObject *sysint_obj(const SysInt *d) {
    if (d->obj != NULL) return Py_NewRef(d->obj);
    return PyLong_FromUnsignedLongLong(d->v);
}

static int tc_attr(Reader *r, const unsigned char *k, Py_ssize_t n, int esc, void *ctx) {
    Rec *x = ctx;
    if (key_is(k, n, esc, "SystemTime")) {
        /* [29a] an unescaped string stays the text's bytes (no str; parse_rec checks them) */
        if (x->tc != NULL || x->tcs != NULL) return -1;
        skip_ws(r);
        if (r->p < r->end && *r->p == '"') {
            const unsigned char *s;
            Py_ssize_t len;
            int e;
            r->p++;
            if (scan_string(r, &s, &len, &e) < 0) return -1;
            if (!e) {
                x->tcs = s;
                x->tcn = len;
                return 0;
            }
            x->tc = make_string(r, s, len, e);
            return x->tc == NULL ? -2 : 0;
        }
        return take(r, &x->tc, K_STR);
    }
    return skip_value(r);
}

static int exec_attr(Reader *r, const unsigned char *k, Py_ssize_t n, int esc, void *ctx) {
    Rec *x = ctx;
    if (key_is(k, n, esc, "ProcessID")) return take_int(r, &x->pid);
    if (key_is(k, n, esc, "ThreadID")) return take_int(r, &x->tid);
    return skip_value(r);
}

static int sec_attr(Reader *r, const unsigned char *k, Py_ssize_t n, int esc, void *ctx) {
    Rec *x = ctx;
    if (key_is(k, n, esc, "UserID")) return take(r, &x->user_id, K_ANY | K_CACHE);
    return skip_value(r);
}

static int sec_key(Reader *r, const unsigned char *k, Py_ssize_t n, int esc, void *ctx) {
    Rec *x = ctx;
    x->sec_empty = 0;
    if (key_is(k, n, esc, "#attributes")) {
        if (x->seen_security++) return -1;
        return read_object(r, sec_attr, x);
    }
    return skip_value(r);
}

/* [29a] The Provider and Security values repeat byte for byte from record to record: the
 * text of the last one read (ASCII, so it reads the same in every mode of the reader) and
 * the objects it gave are kept; a value with the same text takes the same objects (equal
 * text, equal values) without being parsed again. */
#define MEMO_MAX 256
typedef struct {
    Py_ssize_t len;
    unsigned char text[MEMO_MAX];
    PyObject *a, *b;
} ValMemo;
static ValMemo prov_memo, sec_memo;

/* 1 when the reader is at m's text (then past it). */
static inline int memo_hit(Reader *r, const ValMemo *m) {
    if (m->len == 0 || r->end - r->p < m->len || memcmp(r->p, m->text, (size_t)m->len) != 0)
        return 0;
    r->p += m->len;
    return 1;
}

/* Keeps s[0..n) (a whole JSON value just read) as m's text, giving objects a and b. */
static void memo_keep(ValMemo *m, const unsigned char *s, Py_ssize_t n, PyObject *a,
                      PyObject *b) {
    if (n > MEMO_MAX || any_high(s, n)) return;
    Py_XINCREF(a);
    Py_XINCREF(b);
    Py_XSETREF(m->a, a);
    Py_XSETREF(m->b, b);
    memcpy(m->text, s, (size_t)n);
    m->len = n;
}

static int system_key(Reader *r, const unsigned char *k, Py_ssize_t n, int esc, void *ctx) {
    Rec *x = ctx;
    if (esc) return skip_value(r);
    switch (n) {
    case 4:
        if (!memcmp(k, "Task", 4)) return take(r, &x->task, K_ANY);
        break;
    case 5:
        if (!memcmp(k, "Level", 5)) return take(r, &x->level, K_ANY);
        break;
    case 6:
        if (!memcmp(k, "Opcode", 6)) return take(r, &x->opcode, K_ANY);
        break;
    case 7:
        if (!memcmp(k, "EventID", 7)) return take(r, &x->eid, K_INT);
        if (!memcmp(k, "Version", 7)) return take(r, &x->version, K_ANY);
        if (!memcmp(k, "Channel", 7)) return take(r, &x->channel, K_ANY | K_CACHE);
        break;
    case 8:
        if (!memcmp(k, "Provider", 8)) {
            if (x->seen_provider++) return -1;
            skip_ws(r);
            if (memo_hit(r, &prov_memo)) { /* [29a] the last Provider's text */
                x->name = Py_NewRef(prov_memo.a);
                x->guid = Py_NewRef(prov_memo.b);
                return 0;
            }
            const unsigned char *start = r->p;
            int rc = read_attributes(r, provider_attr, x, 1);
            if (rc == 0 && x->name != NULL && x->guid != NULL)
                memo_keep(&prov_memo, start, r->p - start, x->name, x->guid);
            return rc;
        }
        if (!memcmp(k, "Keywords", 8)) return take(r, &x->keywords, K_ANY | K_CACHE);
        if (!memcmp(k, "Computer", 8)) return take(r, &x->computer, K_ANY | K_CACHE);
        if (!memcmp(k, "Security", 8)) {
            skip_ws(r);
            if (x->seen_security) return -1;
            if (r->p < r->end && *r->p == 'n') {
                x->seen_security = 1;
                x->sec_empty = 1;
                return skip_literal(r, "null", 4);
            }
            if (memo_hit(r, &sec_memo)) { /* [29a] the last Security's text */
                x->user_id = Py_NewRef(sec_memo.a);
                x->seen_security = 1;
                x->sec_empty = 0;
                return 0;
            }
            const unsigned char *start = r->p;
            x->sec_empty = 1;
            int rc = read_object(r, sec_key, x);
            if (rc < 0) return rc;
            if (!x->sec_empty && !x->seen_security) return -1; /* keys but no #attributes */
            if (!x->sec_empty && x->user_id != NULL)
                memo_keep(&sec_memo, start, r->p - start, x->user_id, NULL);
            x->seen_security = 1;
            return 0;
        }
        break;
    case 9:
        if (!memcmp(k, "Execution", 9)) {
            if (x->seen_exec++) return -1;
            return read_attributes(r, exec_attr, x, 1);
        }
        break;
    case 11:
        if (!memcmp(k, "TimeCreated", 11)) {
            if (x->seen_tc++) return -1;
            return read_attributes(r, tc_attr, x, 1);
        }
        break;
    case 13:
        if (!memcmp(k, "EventRecordID", 13)) return take_int(r, &x->rid);
        break;
    }
    return skip_value(r);
}

/* [28c] 1 when the escaped JSON string text s[0..n) (scan_string passed it) is ASCII and its
 * every escape is one the JSON-lines renderer writes for that character (out_str, put_ascii:
 * \" \\ \b \t \n \f \r), so that rendering the unescaped str gives these bytes again;
 * 0 otherwise (\u escapes, \/, any byte above 0x7F). */
static int canon_escaped(const unsigned char *s, Py_ssize_t n) {
    if (any_high(s, n)) return 0;
    const unsigned char *p = s, *end = s + n;
    while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        unsigned char e = p[1]; /* scan_string: a backslash is never the last byte */
        if (e != '"' && e != '\\' && e != 'b' && e != 't' && e != 'n' && e != 'f' && e != 'r')
            return 0;
        p += 2;
    }
    return 1;
}

/* EventData values as the Event-log strings _scalar gives: str unchanged, int decimal,
 * true/false, null "". Anything else (float, object, array) is not handled. [26a] A string
 * value that is plain ASCII without escapes is kept as a slice of the text (no str made). */
static int data_key(Reader *r, const unsigned char *k, Py_ssize_t n, int esc, void *ctx) {
    Rec *x = ctx;
    if (key_is(k, n, esc, "Data")) return -1; /* unnamed values: the Python path names them */
    if (x->nf >= MAX_FIELDS) return -1;
    RawField *f = &x->fields[x->nf];
    PyObject *v = NULL;
    Py_ssize_t off = 0, len = 0;
    int canon = 0;
    skip_ws(r);
    if (r->p < r->end && *r->p == '"') {
        const unsigned char *s;
        int sesc;
        r->p++;
        if (scan_string(r, &s, &len, &sesc) < 0) return -1;
        if (!sesc && ((r->chars && !r->latin1) || !any_high(s, len))) {
            off = s - x->base;
        } else if (sesc && canon_escaped(s, len)) {
            /* [28c] escaped ASCII whose escapes are the renderer's own (a path's \\ mostly):
             * kept as its escaped text, copied into the line, a str only when asked for */
            canon = 1;
            off = s - x->base;
        } else {
            v = make_string(r, s, len, sesc);
            if (v == NULL) return -2;
        }
    } else if (r->p < r->end && (*r->p == '-' || (*r->p >= '0' && *r->p <= '9'))) {
        /* [28c] an integer: its decimal text is str(int) (JSON has no leading zeros; "-0",
         * fractions, exponents and values beyond 64 bits are read_scalar's cases, not
         * handled), kept as a slice: no int, no str */
        const unsigned char *start = r->p;
        int fl;
        if (skip_number(r, &fl) < 0 || fl) return -1;
        len = r->p - start;
        int neg = start[0] == '-';
        if (len - neg > 20 || (neg && len == 2 && start[1] == '0')) return -1;
        if (len - neg == 20) { /* at most 18446744073709551615 (and -9223372036854775808) */
            uint64_t u = 0;
            for (Py_ssize_t i = neg; i < len; i++) {
                uint64_t d = (uint64_t)(start[i] - '0');
                if (u > (UINT64_MAX - d) / 10) return -1;
                u = u * 10 + d;
            }
            if (neg && u > (uint64_t)INT64_MAX + 1) return -1;
        } else if (neg && len - neg == 19) {
            uint64_t u = 0;
            for (Py_ssize_t i = 1; i < len; i++) u = u * 10 + (uint64_t)(start[i] - '0');
            if (u > (uint64_t)INT64_MAX + 1) return -1;
        }
        off = start - x->base;
    } else {
        v = read_scalar(r, K_ANY);
        if (v == NULL) return PyErr_Occurred() ? -2 : -1;
        if (!PyUnicode_CheckExact(v)) {
            PyObject *s;
            if (v == Py_None) s = Py_NewRef(empty_str);
            else if (v == Py_True) s = Py_NewRef(str_true);
            else if (v == Py_False) s = Py_NewRef(str_false);
            else s = PyObject_Str(v);
            Py_DECREF(v);
            if (s == NULL) return -2;
            v = s;
        }
    }
    int kf;
    PyObject *key = cached_key(r, k, n, esc, &kf);
    if (key == NULL) {
        Py_XDECREF(v);
        return -2;
    }
    /* a duplicate key: orjson's rules (the Python path decides) */
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1) {
        Py_DECREF(key);
        Py_XDECREF(v);
        return -2;
    }
    /* [28c] the earlier keys are compared only when one had a hash with the same low 6 bits */
    uint64_t bit = 1ULL << ((uint64_t)h & 63);
    if (x->key_bits & bit) {
        for (Py_ssize_t i = 0; i < x->nf; i++) {
            PyObject *o = x->fields[i].key;
            if (o == key ||
                (((PyASCIIObject *)o)->hash == h && PyUnicode_Compare(o, key) == 0)) {
                Py_DECREF(key);
                Py_XDECREF(v);
                return -1;
            }
        }
    }
    x->key_bits |= bit;
    f->key = key;
    f->val = v;
    f->off = off;
    f->len = len;
    f->canon = canon;
    f->kf = kf;
    x->nf++;
    return 0;
}

/* [29a] the Event's attributes as pyevtx-rs writes them (skipped by one comparison) */
static const char event_attrs[] =
    "{\"xmlns\":\"http://schemas.microsoft.com/win/2004/08/events/event\"}";

static int event_key(Reader *r, const unsigned char *k, Py_ssize_t n, int esc, void *ctx) {
    Rec *x = ctx;
    if (n == 11 && key_is(k, n, esc, "#attributes") &&
        r->end - r->p >= (Py_ssize_t)sizeof event_attrs - 1 &&
        memcmp(r->p, event_attrs, sizeof event_attrs - 1) == 0) {
        r->p += sizeof event_attrs - 1;
        return 0;
    }
    if (key_is(k, n, esc, "System")) {
        if (x->seen_system++) return -1;
        return read_object(r, system_key, x);
    }
    if (key_is(k, n, esc, "EventData")) {
        if (x->seen_data++) return -1;
        return read_object(r, data_key, x);
    }
    return skip_value(r);
}

typedef struct {
    Rec *rec;
    int seen;
} Top;

static int top_key(Reader *r, const unsigned char *k, Py_ssize_t n, int esc, void *ctx) {
    Top *t = ctx;
    if (key_is(k, n, esc, "Event")) {
        if (t->seen++) return -1;
        return read_object(r, event_key, t->rec);
    }
    return skip_value(r);
}

/* [29a] "{" + the n ASCII characters at src lower-cased + "}" as a str. New reference. */
static PyObject *brace_lower_ascii(const unsigned char *src, Py_ssize_t n) {
    PyObject *out = PyUnicode_New(n + 2, 127);
    if (out == NULL) return NULL;
    unsigned char *dst = PyUnicode_1BYTE_DATA(out);
    dst[0] = '{';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = src[i];
        dst[i + 1] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    dst[n + 1] = '}';
    return out;
}

/* "{" + s.lower() + "}" (str.lower for non-ASCII text). New reference. */
static PyObject *brace_lower(PyObject *s) {
    if (PyUnicode_IS_ASCII(s))
        return brace_lower_ascii(PyUnicode_1BYTE_DATA(s), PyUnicode_GET_LENGTH(s));
    PyObject *low = PyObject_CallMethod(s, "lower", NULL);
    if (low == NULL) return NULL;
    PyObject *out = PyUnicode_FromFormat("{%U}", low);
    Py_DECREF(low);
    return out;
}

/* _GUID_SHAPE: [0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}, exactly. */
static int guid_shaped_bytes(const unsigned char *c, Py_ssize_t n) {
    if (n != 36) return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c[i] != '-') return 0;
        } else if (!((c[i] >= '0' && c[i] <= '9') || (c[i] >= 'A' && c[i] <= 'F'))) {
            return 0;
        }
    }
    return 1;
}

static int guid_shaped(PyObject *s) {
    if (PyUnicode_GET_LENGTH(s) != 36 || !PyUnicode_IS_ASCII(s)) return 0;
    return guid_shaped_bytes(PyUnicode_1BYTE_DATA(s), 36);
}

/* _provider_guid: the shared cache, else _guid(raw). New reference. */
static PyObject *provider_guid(PyObject *raw) {
    if (raw == Py_None) Py_RETURN_NONE;
    PyObject *g = PyDict_GetItemWithError(provider_guids, raw);
    if (g != NULL) return Py_NewRef(g);
    if (PyErr_Occurred()) return NULL;
    if (PyUnicode_GET_LENGTH(raw) == 0) Py_RETURN_NONE;
    if (PyUnicode_READ_CHAR(raw, 0) == '{') g = Py_NewRef(raw);
    else g = brace_lower(raw);
    if (g == NULL) return NULL;
    if (PyDict_GET_SIZE(provider_guids) < 1024 && PyDict_SetItem(provider_guids, raw, g) < 0) {
        Py_DECREF(g);
        return NULL;
    }
    return g;
}

/* [26a] Field f's value as a str. New reference. */
static PyObject *field_str(const unsigned char *base, const RawField *f) {
    if (f->val != NULL) return Py_NewRef(f->val);
    if (f->canon) { /* [28c] escaped text without \u: unescape_chars always takes it */
        PyObject *v = unescape_chars(base + f->off, f->len);
        if (v == NULL && !PyErr_Occurred())
            PyErr_SetString(PyExc_SystemError, "sysmonx: an escaped field with \\u");
        return v;
    }
    return ascii_string(base + f->off, f->len);
}

/* Field f's value as a braced lower-case GUID (brace_lower of its text), in place. 0, or
 * -2 (error). */
static int brace_field(Rec *x, RawField *f) {
    if (f->val == NULL && !f->canon) { /* [28c] plain ASCII slice: one str, built here */
        f->val = brace_lower_ascii(x->base + f->off, f->len);
        return f->val == NULL ? -2 : 0;
    }
    PyObject *v = field_str(x->base, f);
    if (v == NULL) return -2;
    PyObject *g = brace_lower(v);
    Py_DECREF(v);
    if (g == NULL) return -2;
    Py_XSETREF(f->val, g);
    f->canon = 0;
    return 0;
}

/* "{" + value.lower() + "}" into f->val when the value is not empty and does not start with
 * "{" (_convert_root's rule for a Sysmon GUID field). 0, or -2. */
static int fix_guid_field(Rec *x, RawField *f) {
    if (f->val == NULL) {
        if (f->len == 0 || x->base[f->off] == '{') return 0;
    } else if (PyUnicode_GET_LENGTH(f->val) == 0 || PyUnicode_READ_CHAR(f->val, 0) == '{') {
        return 0;
    }
    return brace_field(x, f);
}

/* The field named k among n fields, or NULL (none; no error). */
static RawField *field_named(RawField *fields, Py_ssize_t n, PyObject *k) {
    Py_hash_t h = PyObject_Hash(k);
    if (h == -1) {
        PyErr_Clear();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = fields[i].key;
        if (o == k || (((PyASCIIObject *)o)->hash == h && PyUnicode_Compare(o, k) == 0))
            return &fields[i];
    }
    return NULL;
}

/* The field named k, or NULL. */
static RawField *find_field(Rec *x, PyObject *k) { return field_named(x->fields, x->nf, k); }

/* Fill the GUID fields of the record's data (_convert_root's rules). 0, or -2 (error). */
static int fix_guids(Rec *x, int sysmon) {
    if (sysmon) {
        PyObject *guids = PyDict_GetItemWithError(guid_fields, x->eid);
        if (guids == NULL) return PyErr_Occurred() ? -2 : -1; /* unknown EventID */
        if (!PyFrozenSet_CheckExact(guids)) return -1; /* the Python path decides */
        if (x->nf == 0) return 0;
#if PY_VERSION_HEX < 0x030D0000
        /* [20b] the set's entries in place, no iterator object */
        Py_ssize_t pos = 0;
        PyObject *k;
        Py_hash_t h;
        while (_PySet_NextEntry(guids, &pos, &k, &h)) {
            if (!PyUnicode_CheckExact(k)) continue;
            RawField *f = find_field(x, k);
            if (f != NULL && fix_guid_field(x, f) < 0) return -2;
        }
#else
        /* _PySet_NextEntry left the public headers in Python 3.13: the set's iterator */
        PyObject *it = PyObject_GetIter(guids), *k;
        if (it == NULL) return -2;
        while ((k = PyIter_Next(it)) != NULL) {
            RawField *f = PyUnicode_CheckExact(k) ? find_field(x, k) : NULL;
            int rc = f != NULL ? fix_guid_field(x, f) : 0;
            Py_DECREF(k);
            if (rc < 0) { Py_DECREF(it); return -2; }
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) return -2;
#endif
        return 0;
    }
    for (Py_ssize_t i = 0; i < x->nf; i++) {
        RawField *f = &x->fields[i];
        if ((f->val == NULL ? guid_shaped_bytes(x->base + f->off, f->len)
                            : guid_shaped(f->val)) && brace_field(x, f) < 0)
            return -2;
    }
    return 0;
}

/* ------------------------------------------------------------- [26a] EventData kept lazily */
/* A record's EventData as its fields' slices of the record text (RawField), in the Event's
 * ``_raw`` slot while its ``data`` slot is empty. The C renderer, the clock check and the
 * duplicate check read it as it is; anything asking for ``event.data`` (Python code, Sigma,
 * the filter, the other writers) gets the dict the converter would have made, built once by
 * the ``data`` descriptor (LazyData below), which then drops the _raw object. */

typedef struct {
    PyObject_VAR_HEAD
    PyObject *text;                /* the record's JSON text: the slices' bytes */
    const unsigned char *base;     /* its bytes (its own characters, or its cached UTF-8) */
    RawField f[1];
} RawDataObject;

static void rawdata_dealloc(RawDataObject *self) {
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        Py_XDECREF(self->f[i].key);
        Py_XDECREF(self->f[i].val);
    }
    Py_XDECREF(self->text);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject RawDataType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sysmonx.core._speedups.RawData",
    .tp_basicsize = offsetof(RawDataObject, f),
    .tp_itemsize = sizeof(RawField),
    .tp_dealloc = (destructor)rawdata_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A record's EventData fields as slices of its JSON text (internal).",
};

/* The dict of a RawData object, in field order. New reference. */
static PyObject *rawdata_dict(RawDataObject *raw) {
    PyObject *d = _PyDict_NewPresized(Py_SIZE(raw));
    if (d == NULL) return NULL;
    for (Py_ssize_t i = 0; i < Py_SIZE(raw); i++) {
        PyObject *v = field_str(raw->base, &raw->f[i]);
        if (v == NULL || PyDict_SetItem(d, raw->f[i].key, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

/* The field named key (a str): its RawField, or NULL (none; no error). */
static RawField *rawdata_field(RawDataObject *raw, PyObject *key) {
    return field_named(raw->f, Py_SIZE(raw), key);
}

/* event.data: the data slot, made from _raw first when empty. New reference; NULL with
 * AttributeError set when neither is set. */
static PyObject *event_data(PyObject *e) {
    PyObject *d = SLOT(e, S_DATA);
    if (d != NULL) return Py_NewRef(d);
    PyObject *raw = SLOT(e, S_RAW);
    if (raw == NULL || !Py_IS_TYPE(raw, &RawDataType)) {
        PyErr_Format(PyExc_AttributeError, "'%.200s' object has no attribute 'data'",
                     Py_TYPE(e)->tp_name);
        return NULL;
    }
    /* building the dict can run other code (a collection's finalizer, another thread at a
     * str allocation) that reads or sets this event's data: hold _raw meanwhile and look at
     * the slots again before storing */
    Py_INCREF(raw);
    d = rawdata_dict((RawDataObject *)raw);
    if (d == NULL) {
        Py_DECREF(raw);
        return NULL;
    }
    PyObject *now = SLOT(e, S_DATA);
    if (now != NULL || SLOT(e, S_RAW) != raw) {
        Py_DECREF(d);
        Py_DECREF(raw);
        if (now != NULL) return Py_NewRef(now);
        return event_data(e); /* _raw replaced or dropped meanwhile: read what is there now */
    }
    SLOT(e, S_DATA) = Py_NewRef(d);
    SLOT(e, S_RAW) = NULL;
    Py_DECREF(raw); /* the slot's reference */
    Py_DECREF(raw); /* this function's */
    return d;
}

/* The descriptor that replaces Event.data's slot descriptor when the compiled converter is
 * set up: reads and writes the same slot; a read of an empty slot with _raw set builds the
 * dict (event_data); a write or delete drops _raw, so dict and raw never disagree. */
typedef struct {
    PyObject_HEAD
    PyObject *slot; /* the slot's own descriptor it replaced (``slot``: for other C code) */
} LazyDataObject;

static void lazydata_dealloc(LazyDataObject *self) {
    Py_XDECREF(self->slot);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef lazydata_members[] = {
    {"slot", T_OBJECT, offsetof(LazyDataObject, slot), READONLY,
     "the member descriptor of Event's data slot"},
    {NULL}};

static PyObject *lazydata_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) return Py_NewRef(self);
    if (event_type == NULL || !PyObject_TypeCheck(obj, event_type)) {
        PyErr_SetString(PyExc_TypeError, "Event.data: not an Event");
        return NULL;
    }
    return event_data(obj);
}

static int lazydata_set(PyObject *self, PyObject *obj, PyObject *value) {
    if (event_type == NULL || !PyObject_TypeCheck(obj, event_type)) {
        PyErr_SetString(PyExc_TypeError, "Event.data: not an Event");
        return -1;
    }
    PyObject *old = SLOT(obj, S_DATA), *raw = SLOT(obj, S_RAW);
    if (value == NULL && old == NULL && raw == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%.200s' object has no attribute 'data'",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    SLOT(obj, S_DATA) = Py_XNewRef(value);
    SLOT(obj, S_RAW) = NULL;
    Py_XDECREF(old);
    Py_XDECREF(raw);
    return 0;
}

static PyTypeObject LazyDataType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sysmonx.core._speedups.LazyData",
    .tp_basicsize = sizeof(LazyDataObject),
    .tp_dealloc = (destructor)lazydata_dealloc,
    .tp_members = lazydata_members,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_descr_get = lazydata_get,
    .tp_descr_set = lazydata_set,
    .tp_doc = "Event.data over the data slot, built from the record text when first read.",
};

/* [26a] Event.data becomes the LazyData descriptor over the same slot, once, when the first
 * Event with _raw is made (a process that never converts an EVTX record keeps the plain slot
 * descriptor, which Python's attribute cache reads faster). 0, or -1 (error set). */
static int lazy_installed = 0;
/* Event's type version tag when the descriptor was last seen installed: any change to the
 * class (a test's monkeypatch undo putting the plain slot back) changes it, and the next
 * record checks the descriptor again */
static unsigned int lazy_tag = 0;

static PyObject *lazy_name = NULL; /* "data" */

static int lazy_seen(void) {
    /* a look-up gives the type a valid version tag again after a change */
    if (lazy_name == NULL && (lazy_name = PyUnicode_InternFromString("data")) == NULL)
        return -1;
    (void)_PyType_Lookup(event_type, lazy_name);
    lazy_tag = event_type->tp_version_tag;
    lazy_installed = 1;
    return 0;
}

static int install_lazy_data(void) {
    PyObject *cur = PyDict_GetItemString(event_type->tp_dict, "data");
    if (cur != NULL && Py_IS_TYPE(cur, &LazyDataType)) return lazy_seen();
    if (cur == NULL || !Py_IS_TYPE(cur, &PyMemberDescr_Type)) {
        PyErr_SetString(PyExc_TypeError, "Event.data is not a slot");
        return -1;
    }
    PyObject *ld = PyType_GenericNew(&LazyDataType, NULL, NULL);
    if (ld == NULL) return -1;
    ((LazyDataObject *)ld)->slot = Py_NewRef(cur);
    int rc = PyObject_SetAttrString((PyObject *)event_type, "data", ld);
    Py_DECREF(ld);
    return rc == 0 ? lazy_seen() : rc;
}


/* The 27 characters at c are a time as pyevtx-rs writes it, YYYY-MM-DDTHH:MM:SS.ffffffZ (ASCII
 * digits where the outline has d): 1, else 0. Anything else of that length (markup, quotes,
 * spaces where digits go) is no time: normalize_time decides (and refuses it), as the Python
 * converter does; the first 26 characters are then safe to write as they are anywhere. */
static int pyevtx_time(const unsigned char *c) {
    static const char outline[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    for (int i = 0; i < 27; i++) {
        if (outline[i] == 'd') {
            if (c[i] < '0' || c[i] > '9') return 0;
        } else if (c[i] != (unsigned char)outline[i]) {
            return 0;
        }
    }
    return 1;
}

/* [29a] parse_rec's identity caches (cleared by setup_convert) */
static PyObject *last_provider = NULL, *last_guid_raw = NULL, *last_guid = NULL;
static int last_sysmon = 0;

/* [27a] The record's JSON text parsed into x (fields into ``fields``, MAX_FIELDS entries) and
 * checked as convert_impl takes it: the System part complete, TimeCreated in pyevtx-rs's shape,
 * the GUID fields braced; *sysmon: a Sysmon provider; *pguid: the provider GUID (new
 * reference). 0; -1: not handled (nothing set, no error); -2: error. x is cleared unless 0. */
static int parse_rec(PyObject *text, Rec *x, RawField *fields, int *sysmon, PyObject **pguid) {
    *pguid = NULL;
    if (!PyUnicode_CheckExact(text)) return -1;
    Py_ssize_t len;
    const char *bytes;
    int latin1 = PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND;
    if (latin1) { /* ASCII or Latin-1 text: read its characters in place, no UTF-8 copy */
        bytes = (const char *)PyUnicode_1BYTE_DATA(text);
        len = PyUnicode_GET_LENGTH(text);
        latin1 = !PyUnicode_IS_ASCII(text);
    } else {
        bytes = PyUnicode_AsUTF8AndSize(text, &len);
        if (bytes == NULL) { /* lone surrogates in the str itself: orjson decides */
            PyErr_Clear();
            return -1;
        }
    }
    int chars = PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND;
    Reader r = {(const unsigned char *)bytes, (const unsigned char *)bytes + len, 0, latin1,
                chars};
    memset(x, 0, sizeof *x);
    x->fields = fields;
    x->base = (const unsigned char *)bytes;
    Top t = {x, 0};
    int rc = read_object(&r, top_key, &t);
    if (rc == 0) {
        skip_ws(&r);
        if (r.p != r.end) rc = -1;
    }
    if (rc == 0 && !(t.seen && x->seen_system && x->seen_data && x->seen_provider &&
                     x->seen_tc && x->seen_exec && x->seen_security && x->name && x->guid &&
                     x->eid && x->version && x->level && x->task && x->opcode && x->keywords &&
                     (x->tc || x->tcs) && (x->rid.obj || x->rid.len) &&
                     (x->pid.obj || x->pid.len) && (x->tid.obj || x->tid.len) && x->channel &&
                     x->computer))
        rc = -1;
    if (rc == 0 && !x->sec_empty && x->user_id == NULL) rc = -1;
    /* TimeCreated as pyevtx-rs writes it (microseconds, Z: pyevtx_time); anything else:
     * normalize_time. [29a] Its 27 ASCII characters: the str's (escaped text) or the text's
     * own bytes. */
    if (rc == 0) {
        if (x->tc != NULL) {
            if (!PyUnicode_IS_ASCII(x->tc)) rc = -1;
            else {
                x->tcs = PyUnicode_1BYTE_DATA(x->tc);
                x->tcn = PyUnicode_GET_LENGTH(x->tc);
            }
        } else if (any_high(x->tcs, x->tcn)) {
            rc = -1;
        }
        if (rc == 0 && !(x->tcn == 27 && pyevtx_time(x->tcs))) rc = -1;
    }
    if (rc == 0) {
        /* [29a] the last provider name's answer again for the same object (the value cache
         * gives the same str record after record; the set is frozen) */
        if (x->name == last_provider) {
            *sysmon = last_sysmon;
        } else {
            *sysmon = PySet_Contains(sysmon_providers, x->name);
            if (*sysmon < 0) rc = -2;
            else {
                Py_XSETREF(last_provider, Py_NewRef(x->name));
                last_sysmon = *sysmon;
            }
        }
    }
    if (rc == 0) rc = fix_guids(x, *sysmon);
    if (rc == 0) {
        /* [29a] likewise the last provider GUID's braced text (provider_guid's answer for an
         * equal str is always an equal str) */
        if (x->guid == last_guid_raw) {
            *pguid = Py_NewRef(last_guid);
        } else {
            *pguid = provider_guid(x->guid);
            if (*pguid == NULL) rc = -2;
            else {
                Py_XSETREF(last_guid_raw, Py_NewRef(x->guid));
                Py_XSETREF(last_guid, Py_NewRef(*pguid));
            }
        }
    }
    if (rc != 0) {
        rec_clear(x);
        Py_CLEAR(*pguid);
        if (rc == -1) PyErr_Clear();
    }
    return rc;
}

/* The Event of a parsed record (parse_rec's x and pguid: their references move into it, or
 * are dropped on error). NULL: error. */
static PyObject *rec_event(Rec *x, PyObject *pguid, PyObject *text, PyObject *origin) {
    int rc = 0;
    PyObject *tc = PyUnicode_New(30, 127);
    if (tc == NULL) {
        rc = -2;
    } else {
        char *d = (char *)PyUnicode_1BYTE_DATA(tc);
        memcpy(d, x->tcs, 26);
        memcpy(d + 26, "000Z", 4);
    }
    /* [26a] the fields stay slices of the text (a RawData object in _raw); none: {} */
    PyObject *data = NULL, *raw = NULL;
    if (rc == 0) {
        if (x->nf == 0) {
            data = PyDict_New();
            if (data == NULL) rc = -2;
        } else {
            /* the lazy descriptor must be on Event (checked again after any class change);
             * where it cannot be put, the dict is made now, as before */
            int lazy = (lazy_installed && lazy_tag != 0 &&
                        event_type->tp_version_tag == lazy_tag);
            if (!lazy) {
                lazy = install_lazy_data() == 0;
                if (!lazy) PyErr_Clear();
            }
            RawDataObject *ro = PyObject_NewVar(RawDataObject, &RawDataType, x->nf);
            if (ro == NULL) {
                rc = -2;
            } else {
                ro->text = Py_NewRef(text);
                ro->base = x->base;
                memcpy(ro->f, x->fields, (size_t)x->nf * sizeof(RawField));
                x->nf = 0; /* the references moved */
                if (lazy) {
                    raw = (PyObject *)ro;
                } else {
                    data = rawdata_dict(ro);
                    Py_DECREF(ro);
                    if (data == NULL) rc = -2;
                }
            }
        }
    }
    /* [29a] the integers kept as digits made ints now */
    PyObject *rid = NULL, *pid = NULL, *tid = NULL;
    if (rc == 0 && ((rid = sysint_obj(&x->rid)) == NULL || (pid = sysint_obj(&x->pid)) == NULL ||
                    (tid = sysint_obj(&x->tid)) == NULL))
        rc = -2;
    PyObject *ev = NULL;
    if (rc == 0) {
        ev = event_type->tp_alloc(event_type, 0);
        if (ev == NULL) rc = -2;
    }
    if (rc != 0) {
        Py_XDECREF(rid);
        Py_XDECREF(pid);
        Py_XDECREF(tid);
        Py_XDECREF(tc);
        Py_XDECREF(pguid);
        Py_XDECREF(data);
        Py_XDECREF(raw);
        rec_clear(x);
        return NULL;
    }
    /* the references move into the slots */
    SLOT(ev, S_EVENT_ID) = x->eid;
    SLOT(ev, S_DATA) = data;
    SLOT(ev, S_RAW) = raw;
    SLOT(ev, S_PROVIDER) = x->name;
    SLOT(ev, S_PROVIDER_GUID) = pguid;
    SLOT(ev, S_VERSION) = x->version;
    SLOT(ev, S_LEVEL) = x->level;
    SLOT(ev, S_TASK) = x->task;
    SLOT(ev, S_OPCODE) = x->opcode;
    SLOT(ev, S_KEYWORDS) = x->keywords;
    SLOT(ev, S_TIME_CREATED) = tc;
    SLOT(ev, S_RECORD_ID) = rid;
    SLOT(ev, S_PROCESS_ID) = pid;
    SLOT(ev, S_THREAD_ID) = tid;
    SLOT(ev, S_CHANNEL) = x->channel;
    SLOT(ev, S_COMPUTER) = x->computer;
    SLOT(ev, S_USER_ID) = x->user_id != NULL ? x->user_id : Py_NewRef(Py_None);
    SLOT(ev, S_ORIGIN) = Py_NewRef(origin);
    Py_DECREF(x->guid);
    Py_XDECREF(x->tc);
    Py_XDECREF(x->rid.obj);
    Py_XDECREF(x->pid.obj);
    Py_XDECREF(x->tid.obj);
    memset(x, 0, offsetof(Rec, seen_provider)); /* moved: nothing left to clear */
    return ev;
}

/* NULL without error: not handled. */
static PyObject *convert_impl(PyObject *text, PyObject *origin) {
    if (convert_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "sysmonx.core._speedups is not set up");
        return NULL;
    }
    Rec x;
    RawField fields[MAX_FIELDS];
    int sysmon;
    PyObject *pguid;
    if (parse_rec(text, &x, fields, &sysmon, &pguid) != 0) return NULL;
    return rec_event(&x, pguid, text, origin);
}

static PyObject *py_convert_raw(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "convert_raw(text, origin)");
        return NULL;
    }
    PyObject *ev = convert_impl(args[0], args[1]);
    if (ev == NULL && !PyErr_Occurred()) Py_RETURN_NONE;
    return ev;
}

static PyObject *py_convert(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "convert(text, origin, notes=None)");
        return NULL;
    }
    PyObject *ev = convert_impl(args[0], args[1]);
    if (ev != NULL || PyErr_Occurred()) return ev;
    PyObject *notes = nargs == 3 ? args[2] : Py_None;
    return PyObject_CallFunctionObjArgs(convert_fallback, args[0], args[1], notes, NULL);
}

/* ------------------------------------------------------------------------------ JSON writer */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    char stack[2048];
} Out;

static int out_grow(Out *o, Py_ssize_t need) {
    Py_ssize_t cap = o->cap * 2;
    while (cap < o->len + need) cap *= 2;
    char *nb;
    if (o->buf == o->stack) {
        nb = PyMem_Malloc(cap);
        if (nb != NULL) memcpy(nb, o->buf, o->len);
    } else {
        nb = PyMem_Realloc(o->buf, cap);
    }
    if (nb == NULL) {
        PyErr_NoMemory();
        return -2;
    }
    o->buf = nb;
    o->cap = cap;
    return 0;
}

#define RESERVE(o, n) do { if ((o)->len + (n) > (o)->cap && out_grow((o), (n)) < 0) return -2; } while (0)

static inline int out_raw(Out *o, const char *s, Py_ssize_t n) {
    RESERVE(o, n);
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return 0;
}

static const char hexd[] = "0123456789abcdef";

/* One character below 0x80 as orjson writes it. */
static inline char *put_ascii(char *w, unsigned c) {
    if (c >= 0x20 && c != '"' && c != '\\') {
        *w++ = (char)c;
        return w;
    }
    *w++ = '\\';
    switch (c) {
    case '"': *w++ = '"'; break;
    case '\\': *w++ = '\\'; break;
    case '\b': *w++ = 'b'; break;
    case '\t': *w++ = 't'; break;
    case '\n': *w++ = 'n'; break;
    case '\f': *w++ = 'f'; break;
    case '\r': *w++ = 'r'; break;
    default:
        *w++ = 'u'; *w++ = '0'; *w++ = '0';
        *w++ = hexd[c >> 4]; *w++ = hexd[c & 15];
    }
    return w;
}

/* A str as orjson writes it (escapes \" \\ and controls below 0x20; everything else raw
 * UTF-8), with the C1 controls U+0080..U+009F as \u00XX. -1: a surrogate (not handled). */
static int out_str(Out *o, PyObject *s) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    RESERVE(o, n * 6 + 2); /* \u00XX (6 bytes) is the longest form of any one character */
    char *w = o->buf + o->len;
    *w++ = '"';
    if (PyUnicode_IS_ASCII(s)) { /* runs of 8 bytes that need no escape are copied as they are */
        const unsigned char *a = PyUnicode_1BYTE_DATA(s);
        Py_ssize_t i = 0;
        while (i < n) {
            if (i + 8 <= n) {
                uint64_t x;
                memcpy(&x, a + i, 8);
                if (!special8(x)) {
                    memcpy(w, a + i, 8);
                    w += 8;
                    i += 8;
                    continue;
                }
            } else {
                /* [21b] the last 1-7 bytes in one word, padded with 'a' (needs no escape):
                 * copied as they are when none needs one (short keys and values are mostly
                 * this tail) */
                uint64_t x = 0x6161616161616161ULL;
                memcpy(&x, a + i, (size_t)(n - i));
                if (!special8(x)) {
                    memcpy(w, a + i, (size_t)(n - i));
                    w += n - i;
                    break;
                }
            }
            w = put_ascii(w, a[i++]);
        }
    } else {
        int kind = PyUnicode_KIND(s);
        const void *data = PyUnicode_DATA(s);
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c < 0x80) {
                w = put_ascii(w, c);
            } else if (c < 0xA0) {
                *w++ = '\\'; *w++ = 'u'; *w++ = '0'; *w++ = '0';
                *w++ = hexd[c >> 4]; *w++ = hexd[c & 15];
            } else {
                if (c >= 0xD800 && c <= 0xDFFF) return -1;
                w = put_utf8(w, c);
            }
        }
    }
    *w++ = '"';
    o->len = w - o->buf;
    return 0;
}

/* A value as orjson writes it: str, int (64-bit signed), None, bool. -1: anything else. */
static int out_value(Out *o, PyObject *v) {
    if (PyUnicode_CheckExact(v)) return out_str(o, v);
    if (v == Py_None) return out_raw(o, "null", 4);
    if (v == Py_True) return out_raw(o, "true", 4);
    if (v == Py_False) return out_raw(o, "false", 5);
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) return -1;
        if (x == -1 && PyErr_Occurred()) return -2;
        /* [21b] decimal digits written backwards (was snprintf: its format parsing cost
         * more than the digits) */
        char tmp[24];
        char *end = tmp + sizeof tmp, *w = end;
        unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
        do {
            *--w = (char)('0' + (int)(u % 10));
            u /= 10;
        } while (u);
        if (x < 0) *--w = '-';
        return out_raw(o, w, end - w);
    }
    return -1;
}

static int out_item(Out *o, const char *lead, PyObject *k, PyObject *v) {
    int rc;
    if (!PyUnicode_CheckExact(k)) return -1;
    if ((rc = out_raw(o, lead, 1)) < 0) return rc;
    if ((rc = out_str(o, k)) < 0) return rc;
    if ((rc = out_raw(o, ":", 1)) < 0) return rc;
    return out_value(o, v);
}

static int out_field(Out *o, const char *lit, Py_ssize_t litlen, PyObject *v) {
    if (v == NULL) return -1; /* an unset slot: the Python path raises its AttributeError */
    int rc = out_raw(o, lit, litlen);
    return rc < 0 ? rc : out_value(o, v);
}

static int is_reserved(PyObject *k) {
    if (!PyUnicode_IS_ASCII(k)) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(k);
    const char *c = (const char *)PyUnicode_1BYTE_DATA(k);
    return (n == 7 && !memcmp(c, "EventID", 7)) || (n == 6 && !memcmp(c, "System", 6)) ||
           (n == 9 && !memcmp(c, "ExtraData", 9)) || (n == 10 && !memcmp(c, "Enrichment", 10));
}

/* [26a] The fields of a RawData object as render writes a dict's: 0, 1 (a field is an
 * enrichment field: render the dict instead), -1, -2. */
static int render_fields(Out *o, Out *extra, RawField *fields, Py_ssize_t n,
                         const unsigned char *base, int *in_extra) {
    int gen_ok = (int)enrichment_gen << KF_GEN_SHIFT;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = fields[i].key;
        int kf = fields[i].kf;
        if ((kf & KF_NOT_ENR) && (kf & ~((1 << KF_GEN_SHIFT) - 1)) == gen_ok)
            continue; /* [28c] known from the key cache */
        if (PyUnicode_CheckExact(k) && PyUnicode_GET_LENGTH(k) < 64 &&
            !((enrichment_lengths >> PyUnicode_GET_LENGTH(k)) & 1))
            continue;
        int in = PySet_Contains(enrichment_names, k);
        if (in < 0) return -2;
        if (in) return 1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        RawField *f = &fields[i];
        Out *w = o;
        if (!*in_extra && !(f->kf & KF_NOT_RESERVED) && is_reserved(f->key)) *in_extra = 1;
        if (*in_extra) {
            w = extra;
            rc = out_raw(w, extra->len ? "," : "{", 1);
        } else {
            rc = out_raw(w, ",", 1);
        }
        if (rc == 0 && (f->kf & KF_PLAIN)) { /* [28c] '"' + the key's ASCII bytes + '":' */
            Py_ssize_t kn = PyUnicode_GET_LENGTH(f->key);
            RESERVE(w, kn + 3);
            char *p = w->buf + w->len;
            *p++ = '"';
            memcpy(p, PyUnicode_1BYTE_DATA(f->key), (size_t)kn);
            p += kn;
            *p++ = '"';
            *p++ = ':';
            w->len = p - w->buf;
        } else {
            if (rc == 0) rc = out_str(w, f->key);
            if (rc == 0) rc = out_raw(w, ":", 1);
        }
        if (rc == 0) {
            if (f->val != NULL && !f->canon) {
                rc = out_value(w, f->val);
            } else { /* plain ASCII, nothing to escape, or [28c] escaped as the renderer
                      * would: the text's own bytes */
                RESERVE(w, f->len + 2);
                char *p = w->buf + w->len;
                *p++ = '"';
                memcpy(p, base + f->off, (size_t)f->len);
                p += f->len;
                *p++ = '"';
                w->len = p - w->buf;
            }
        }
    }
    return rc;
}

static int render_raw(Out *o, Out *extra, RawDataObject *raw, int *in_extra) {
    return render_fields(o, extra, raw->f, Py_SIZE(raw), raw->base, in_extra);
}

/* [28c] The System values that repeat from record to record (the provider's name and GUID,
 * Version, Level, Task, Opcode, Keywords; Channel, Computer, UserID) are mostly the same
 * objects (the converter's value cache, small ints): the text last rendered for the same
 * objects (held, so an address is not reused while cached) is copied instead of rendered
 * again. The same objects always give the same text (str, int, None: immutable). */
#define SYS_RUN_MAX 480
typedef struct {
    PyObject *k[7];
    Py_ssize_t len;
    char text[SYS_RUN_MAX];
} SysRun;
static SysRun sys_head, sys_tail;

/* Copies the text cached for objects v[0..n) into o: 1; 0: not cached. */
static inline int sys_run_hit(Out *o, SysRun *c, PyObject *const *v, int n) {
    if (c->len == 0) return 0;
    for (int i = 0; i < n; i++)
        if (c->k[i] != v[i]) return 0;
    if (o->len + c->len > o->cap && out_grow(o, c->len) < 0) return -2;
    memcpy(o->buf + o->len, c->text, (size_t)c->len);
    o->len += c->len;
    return 1;
}

/* Keeps o's bytes from ``start`` as the text of objects v[0..n) (when short enough). */
static void sys_run_keep(Out *o, Py_ssize_t start, SysRun *c, PyObject *const *v, int n) {
    Py_ssize_t len = o->len - start;
    if (len <= 0 || len > SYS_RUN_MAX) return;
    for (int i = 0; i < n; i++) Py_XSETREF(c->k[i], Py_NewRef(v[i]));
    memcpy(c->text, o->buf + start, (size_t)len);
    c->len = len;
}

/* [29a] The fields lit[i] + v[i] (i < n) of a cached run: copied when v are the objects
 * last rendered (every one set), else rendered (out_field) and kept. 0, -1, -2. */
static int render_run(Out *o, SysRun *c, PyObject *const *v, const char *const *lit, int n) {
    int all = 1;
    for (int i = 0; i < n; i++) all &= v[i] != NULL;
    if (all) {
        int hit = sys_run_hit(o, c, v, n);
        if (hit) return hit < 0 ? hit : 0;
    }
    Py_ssize_t start = o->len;
    for (int i = 0; i < n; i++) {
        int rc = out_field(o, lit[i], (Py_ssize_t)strlen(lit[i]), v[i]);
        if (rc != 0) return rc;
    }
    sys_run_keep(o, start, c, v, n);
    return 0;
}

static const char *const sys_head_lit[7] = {
    ",\"System\":{\"Provider\":", ",\"ProviderGuid\":", ",\"Version\":", ",\"Level\":",
    ",\"Task\":", ",\"Opcode\":", ",\"Keywords\":"};
static const char *const sys_tail_lit[3] = {",\"Channel\":", ",\"Computer\":", ",\"UserID\":"};

/* [29a] lit + an integer System value: its digits copied, or its object rendered (none:
 * -1, as out_field). */
static int out_sysint(Out *o, const char *lit, Py_ssize_t litlen, const SysInt *d) {
    if (d->obj != NULL || d->len == 0) return out_field(o, lit, litlen, d->obj);
    RESERVE(o, litlen + d->len);
    memcpy(o->buf + o->len, lit, (size_t)litlen);
    memcpy(o->buf + o->len + litlen, d->digits, (size_t)d->len);
    o->len += litlen + d->len;
    return 0;
}

/* [27a2] The JSON line's System object (from ,"System":{ to its closing brace), shared by
 * render (an Event's slots) and render_rec (a parsed record). TimeCreated: with ``tc26`` NULL,
 * ``tc`` (the Event's slot: a canonical str written as it is, else utc_func's str of it);
 * else the 26 ASCII characters at ``tc26`` and "000Z" (checked by the caller). [29a] The
 * integers as SysInt (an Event's: its slot's object). 0, -1 (not handled: the Python
 * renderer decides) or -2 (error). */
static int render_system(Out *o, PyObject *provider, PyObject *pguid, PyObject *version,
                         PyObject *level, PyObject *task, PyObject *opcode, PyObject *keywords,
                         PyObject *tc, const unsigned char *tc26, const SysInt *rid,
                         const SysInt *pid, const SysInt *tid, PyObject *channel,
                         PyObject *computer, PyObject *user) {
    PyObject *head[7] = {provider, pguid, version, level, task, opcode, keywords};
    int rc = render_run(o, &sys_head, head, sys_head_lit, 7);
    if (rc == 0 && tc26 != NULL) {
        RESERVE(o, 15 + 26 * 6 + 6);
        char *w = o->buf + o->len;
        memcpy(w, ",\"TimeCreated\":\"", 16);
        w += 16;
        const unsigned char *c = tc26;
        uint64_t w0, w1, w2, w3 = 0x6161616161616161ULL;
        memcpy(&w0, c, 8);
        memcpy(&w1, c + 8, 8);
        memcpy(&w2, c + 16, 8);
        memcpy(&w3, c + 24, 2);
        if (!(special8(w0) | special8(w1) | special8(w2) | special8(w3))) {
            memcpy(w, c, 26); /* [28c] nothing to escape (the common case) */
            w += 26;
        } else {
            for (int i = 0; i < 26; i++) w = put_ascii(w, c[i]);
        }
        memcpy(w, "000Z\"", 5);
        w += 5;
        o->len = w - o->buf;
    } else if (rc == 0) {
        if (tc == NULL) {
            rc = -1;
        } else if (PyUnicode_CheckExact(tc) && (PyUnicode_GET_LENGTH(tc) == 0 ||
                   (PyUnicode_GET_LENGTH(tc) == 30 && PyUnicode_READ_CHAR(tc, 29) == 'Z'))) {
            rc = out_field(o, ",\"TimeCreated\":", 15, tc);
        } else {
            PyObject *u = PyObject_CallOneArg(utc_func, tc);
            if (u == NULL) rc = -2;
            else {
                rc = out_field(o, ",\"TimeCreated\":", 15, u);
                Py_DECREF(u);
            }
        }
    }
    if (rc == 0) rc = out_sysint(o, ",\"EventRecordID\":", 17, rid);
    if (rc == 0) rc = out_sysint(o, ",\"ProcessID\":", 13, pid);
    if (rc == 0) rc = out_sysint(o, ",\"ThreadID\":", 12, tid);
    if (rc == 0) {
        PyObject *tail[3] = {channel, computer, user};
        rc = render_run(o, &sys_tail, tail, sys_tail_lit, 3);
    }
    if (rc == 0) rc = out_raw(o, "}", 1);
    return rc;
}

static int render(Out *o, Out *extra, PyObject *e) {
    int rc;
    PyObject *eid = SLOT(e, S_EVENT_ID), *data = SLOT(e, S_DATA);
    PyObject *enr = NULL, *split = NULL;
    int in_extra = 0;
    if (eid == NULL || !PyLong_CheckExact(eid)) return -1;
    if (data == NULL) {
        PyObject *raw = SLOT(e, S_RAW);
        if (raw == NULL || !Py_IS_TYPE(raw, &RawDataType)) return -1;
        rc = out_raw(o, "{\"EventID\":", 11);
        if (rc == 0) rc = out_value(o, eid);
        if (rc == 0) rc = render_raw(o, extra, (RawDataObject *)raw, &in_extra);
        if (rc == 0) goto system;
        if (rc != 1) return rc;
        /* an enrichment field: the dict, then the dict's rendering from the start */
        o->len = 0;
        extra->len = 0;
        in_extra = 0;
        PyObject *d = event_data(e);
        if (d == NULL) return -2;
        Py_DECREF(d); /* held by the slot */
        data = SLOT(e, S_DATA);
    }
    if (!PyDict_CheckExact(data)) return -1;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(data, &pos, &k, &v)) {
        /* [21b] a str key of a length no enrichment name has cannot be one: no set lookup */
        if (PyUnicode_CheckExact(k) && PyUnicode_GET_LENGTH(k) < 64 &&
            !((enrichment_lengths >> PyUnicode_GET_LENGTH(k)) & 1))
            continue;
        int in = PySet_Contains(enrichment_names, k);
        if (in < 0) return -2;
        if (in) {
            split = PyObject_CallFunctionObjArgs(split_enrichment, eid, data, NULL);
            if (split == NULL) return -2;
            if (!PyTuple_CheckExact(split) || PyTuple_GET_SIZE(split) != 2) {
                Py_DECREF(split);
                return -1;
            }
            data = PyTuple_GET_ITEM(split, 0);
            enr = PyTuple_GET_ITEM(split, 1);
            if (!PyDict_CheckExact(data) || (enr != Py_None && !PyDict_CheckExact(enr))) {
                Py_DECREF(split);
                return -1;
            }
            if (enr == Py_None) enr = NULL;
            break;
        }
    }
    rc = out_raw(o, "{\"EventID\":", 11);
    if (rc == 0) rc = out_value(o, eid);
    pos = 0;
    while (rc == 0 && PyDict_Next(data, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k)) {
            rc = -1;
            break;
        }
        if (!in_extra && is_reserved(k)) in_extra = 1;
        rc = in_extra ? out_item(extra, extra->len ? "," : "{", k, v) : out_item(o, ",", k, v);
    }
    /* System */
system:
    if (rc == 0) {
        SysInt rid = {SLOT(e, S_RECORD_ID), NULL, 0, 0}, pid = {SLOT(e, S_PROCESS_ID), NULL, 0, 0},
               tid = {SLOT(e, S_THREAD_ID), NULL, 0, 0};
        rc = render_system(o, SLOT(e, S_PROVIDER), SLOT(e, S_PROVIDER_GUID), SLOT(e, S_VERSION),
                           SLOT(e, S_LEVEL), SLOT(e, S_TASK), SLOT(e, S_OPCODE),
                           SLOT(e, S_KEYWORDS), SLOT(e, S_TIME_CREATED), NULL, &rid, &pid, &tid,
                           SLOT(e, S_CHANNEL), SLOT(e, S_COMPUTER), SLOT(e, S_USER_ID));
    }
    if (rc == 0 && in_extra) {
        rc = out_raw(o, ",\"ExtraData\":", 13);
        if (rc == 0) rc = out_raw(o, extra->buf, extra->len);
        if (rc == 0) rc = out_raw(o, "}", 1);
    }
    if (rc == 0 && enr != NULL) {
        rc = out_raw(o, ",\"Enrichment\":", 14);
        pos = 0;
        int first = 1;
        while (rc == 0 && PyDict_Next(enr, &pos, &k, &v)) {
            rc = out_item(o, first ? "{" : ",", k, v);
            first = 0;
        }
        if (rc == 0) rc = first ? out_raw(o, "{}", 2) : out_raw(o, "}", 1);
    }
    if (rc == 0) rc = out_raw(o, "}", 1);
    Py_XDECREF(split);
    return rc;
}

/* NULL without error: not handled. */
/* ``newline``: the bytes end with b"\n" (one object for the JSON lines writer, no copy) */
static PyObject *event_json_line(PyObject *e, int newline) {
    if (json_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "sysmonx.core._speedups is not set up");
        return NULL;
    }
    if (Py_TYPE(e) != event_type) return NULL;
    Out o, x;
    o.buf = o.stack; o.len = 0; o.cap = sizeof o.stack;
    x.buf = x.stack; x.len = 0; x.cap = sizeof x.stack;
    int rc = render(&o, &x, e);
    if (rc == 0 && newline) rc = out_raw(&o, "\n", 1);
    PyObject *res = NULL;
    if (rc == 0) res = PyBytes_FromStringAndSize(o.buf, o.len);
    else if (rc == -1) PyErr_Clear();
    if (o.buf != o.stack) PyMem_Free(o.buf);
    if (x.buf != x.stack) PyMem_Free(x.buf);
    return res;
}

static PyObject *event_json_impl(PyObject *e) { return event_json_line(e, 0); }

static PyObject *py_event_json_raw(PyObject *self, PyObject *e) {
    PyObject *res = event_json_impl(e);
    if (res == NULL && !PyErr_Occurred()) Py_RETURN_NONE;
    return res;
}

static PyObject *py_event_json(PyObject *self, PyObject *e) {
    PyObject *res = event_json_impl(e);
    if (res != NULL || PyErr_Occurred()) return res;
    return PyObject_CallOneArg(json_fallback, e);
}

/* ----------------------------------------------------------------------------------- set-up */

static int set_event_type(PyObject *et) {
    PyTypeObject *t = (PyTypeObject *)et;
    Py_ssize_t offs[N_SLOTS];
    for (int i = 0; i < N_SLOTS; i++) {
        PyObject *d = PyDict_GetItemString(t->tp_dict, slot_names[i]);
        if (i == S_DATA && d != NULL && Py_IS_TYPE(d, &LazyDataType) && event_type == t) {
            offs[i] = slot_off[i]; /* [26a] installed before, on this type */
            continue;
        }
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "Event has no slot %s", slot_names[i]);
            return -1;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
            PyErr_Format(PyExc_TypeError, "Event slot %s is not a plain object slot",
                         slot_names[i]);
            return -1;
        }
        offs[i] = m->offset;
    }
    if (event_type != NULL && event_type != t) {
        PyErr_SetString(PyExc_TypeError, "set up with another Event type before");
        return -1;
    }
    memcpy(slot_off, offs, sizeof offs);
    Py_INCREF(et);
    Py_XSETREF(event_type, t);
    return 0;
}

static PyObject *py_setup_convert(PyObject *self, PyObject *args) {
    PyObject *et, *gf, *sp, *pg, *cf;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O:setup_convert", &PyType_Type, &et, &PyDict_Type, &gf,
                          &PyFrozenSet_Type, &sp, &PyDict_Type, &pg, &cf))
        return NULL;
    if (set_event_type(et) < 0) return NULL;
    Py_INCREF(gf); Py_XSETREF(guid_fields, gf);
    Py_INCREF(sp); Py_XSETREF(sysmon_providers, sp);
    Py_INCREF(pg); Py_XSETREF(provider_guids, pg);
    Py_INCREF(cf); Py_XSETREF(convert_fallback, cf);
    Py_CLEAR(last_provider);
    Py_CLEAR(last_guid_raw);
    Py_CLEAR(last_guid);
    Py_RETURN_NONE;
}

static PyObject *py_setup_json(PyObject *self, PyObject *args) {
    PyObject *et, *en, *se, *uf, *jf;
    if (!PyArg_ParseTuple(args, "O!O!OOO:setup_json", &PyType_Type, &et, &PyFrozenSet_Type, &en,
                          &se, &uf, &jf))
        return NULL;
    if (set_event_type(et) < 0) return NULL;
    uint64_t lengths = 0;
    {
        PyObject *k;
        PyObject *it = PyObject_GetIter(en);
        if (it == NULL) return NULL;
        while ((k = PyIter_Next(it)) != NULL) {
            if (!PyUnicode_CheckExact(k) || PyUnicode_GET_LENGTH(k) >= 64) lengths = ~0ULL;
            else lengths |= 1ULL << PyUnicode_GET_LENGTH(k);
            Py_DECREF(k);
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) return NULL;
    }
    enrichment_lengths = lengths;
    Py_INCREF(en); Py_XSETREF(enrichment_names, en);
    enrichment_gen = (enrichment_gen + 1) & 0x7FFFFF; /* [28c] the keys' KF_NOT_ENR again */
    if (enrichment_gen == 0) enrichment_gen = 1;
    Py_INCREF(se); Py_XSETREF(split_enrichment, se);
    Py_INCREF(uf); Py_XSETREF(utc_func, uf);
    Py_INCREF(jf); Py_XSETREF(json_fallback, jf);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ duplicate check */
/* sysmonx.stages.dedup.DuplicateFilter's common case: a record id not seen before, in a block
 * that exists, of a stream that exists, with a canonical all-ASCII-digit time. The only state
 * change of that case is the one slot written, as the Python method writes it. Every other input
 * (no such stream or block, a slot already taken, an odd time, an id beyond 64 bits, not an
 * Event) goes to the Python method untouched, which then decides exactly as without this. */

#define DEDUP_ABSENT INT64_MIN

typedef struct {
    PyObject_HEAD
    PyObject *streams;  /* dict: (provider, computer, channel) -> {block: array('q', 64)} */
    PyObject *fallback; /* the Python method: is_duplicate(event) / process(item, emit) */
    int mode;           /* 0: is_duplicate(event) -> bool; 1: process(item, emit) -> bool */
    vectorcallfunc vectorcall;
} DedupObject;

static int dedup_digits(const char *s, int n, int64_t *out) {
    int64_t v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Seconds since 1970 of "YYYY-MM-DD?HH:MM:SS..." as DuplicateFilter._seconds computes them;
 * 0 = done, 1 = the string is not in the all-ASCII-digit shape (the Python path decides). */
static int dedup_chars(const unsigned char *c, Py_ssize_t n, int64_t *out);
static int dedup_seconds(PyObject *tc, int64_t *out) {
    if (!PyUnicode_CheckExact(tc) || !PyUnicode_IS_ASCII(tc)) return 1;
    return dedup_chars(PyUnicode_1BYTE_DATA(tc), PyUnicode_GET_LENGTH(tc), out);
}

/* [29a] dedup_seconds of n ASCII characters at c. */
static int dedup_chars(const unsigned char *c, Py_ssize_t n, int64_t *out) {
    if (n < 19) return 1;
    const char *s = (const char *)c;
    int64_t y, mo, d, h, mi, se;
    if (dedup_digits(s, 4, &y) || dedup_digits(s + 5, 2, &mo) || dedup_digits(s + 8, 2, &d) ||
        dedup_digits(s + 11, 2, &h) || dedup_digits(s + 14, 2, &mi) ||
        dedup_digits(s + 17, 2, &se))
        return 1;
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > dim[mo - 1] + (mo == 2 && leap))
        return 1; /* date() refuses it: the Python path gives its "no time" value */
    /* days from civil (proleptic Gregorian), 1970-01-01 = 0 */
    int64_t yy = y - (mo <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    *out = days * 86400 + h * 3600 + mi * 60 + se;
    return 0;
}

/* 1: a new record, remembered; 0: not the common case (nothing changed); -1: error. */
/* [27a2] The duplicate check's common case, shared by dedup_fast (an Event) and rp_dedup (a
 * parsed record): a record id the Python method keeps in blocks (an int, 0 to 2**63-1): 1 and
 * *r, else 0 (the Python method decides). */
static int dedup_rid(PyObject *rid, long long *r) {
    if (rid == NULL || !PyLong_CheckExact(rid)) return 0;
    int overflow;
    *r = PyLong_AsLongLongAndOverflow(rid, &overflow);
    if (overflow || (*r == -1 && PyErr_Occurred())) { PyErr_Clear(); return 0; }
    return *r >= 0;
}

/* The slot of record id r in a block's buffer (64 int64 slots), or NULL for another shape. */
static inline int64_t *dedup_cell(Py_buffer *view, long long r) {
    if (view->itemsize != 8 || view->len != 64 * 8) return NULL;
    return (int64_t *)view->buf + (r & 63);
}

static int dedup_fast(DedupObject *self, PyObject *ev) {
    if (event_type == NULL || Py_TYPE(ev) != event_type) return 0;
    long long r;
    if (!dedup_rid(SLOT(ev, S_RECORD_ID), &r)) return 0;
    PyObject *prov = SLOT(ev, S_PROVIDER), *comp = SLOT(ev, S_COMPUTER);
    PyObject *chan = SLOT(ev, S_CHANNEL), *tc = SLOT(ev, S_TIME_CREATED);
    if (prov == NULL || comp == NULL || chan == NULL || tc == NULL) return 0;
    int64_t t;
    if (dedup_seconds(tc, &t)) return 0;
    PyObject *key = PyTuple_Pack(3, prov, comp, chan);
    if (key == NULL) return -1;
    PyObject *blocks = PyDict_GetItemWithError(self->streams, key); /* borrowed */
    Py_DECREF(key);
    if (blocks == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyDict_CheckExact(blocks)) return 0;
    PyObject *b = PyLong_FromLongLong(r >> 6);
    if (b == NULL) return -1;
    PyObject *slots = PyDict_GetItemWithError(blocks, b); /* borrowed */
    Py_DECREF(b);
    if (slots == NULL) return PyErr_Occurred() ? -1 : 0;
    Py_buffer view;
    if (PyObject_GetBuffer(slots, &view, PyBUF_WRITABLE) < 0) { PyErr_Clear(); return 0; }
    int done = 0;
    int64_t *cell = dedup_cell(&view, r);
    if (cell != NULL && *cell == DEDUP_ABSENT) {
        *cell = t;
        done = 1;
    }
    PyBuffer_Release(&view);
    return done;
}

static PyObject *dedup_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames) {
    DedupObject *self = (DedupObject *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == (self->mode ? 2 : 1) && kwnames == NULL) {
        int r = dedup_fast(self, args[0]);
        if (r < 0) return NULL;
        if (r > 0) {
            if (self->mode) Py_RETURN_TRUE; /* passed on */
            Py_RETURN_FALSE;                /* not a duplicate */
        }
    }
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

static PyObject *dedup_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *et, *streams, *fallback;
    int mode;
    if (!PyArg_ParseTuple(args, "O!O!Oi:Dedup", &PyType_Type, &et, &PyDict_Type, &streams,
                          &fallback, &mode))
        return NULL;
    if (set_event_type(et) < 0) return NULL;
    DedupObject *self = (DedupObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    Py_INCREF(streams); self->streams = streams;
    Py_INCREF(fallback); self->fallback = fallback;
    self->mode = mode ? 1 : 0;
    self->vectorcall = dedup_vectorcall;
    return (PyObject *)self;
}

static int dedup_traverse(DedupObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->streams);
    Py_VISIT(self->fallback);
    return 0;
}

static int dedup_clear(DedupObject *self) {
    Py_CLEAR(self->streams);
    Py_CLEAR(self->fallback);
    return 0;
}

static void dedup_dealloc(DedupObject *self) {
    PyObject_GC_UnTrack(self);
    dedup_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject DedupType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sysmonx.core._speedups.Dedup",
    .tp_basicsize = sizeof(DedupObject),
    .tp_dealloc = (destructor)dedup_dealloc,
    .tp_vectorcall_offset = offsetof(DedupObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Dedup(Event, streams, fallback, mode): DuplicateFilter's common case compiled "
              "(mode 0: is_duplicate(event); 1: the stage's process(item, emit)); every other "
              "call goes to fallback with the same arguments.",
    .tp_traverse = (traverseproc)dedup_traverse,
    .tp_clear = (inquiry)dedup_clear,
    .tp_new = dedup_new,
};

/* ----------------------------------------------------------------------- JSON lines writer */
/* sysmonx.sinks.jsonl.JsonlWriter.write without a Python frame: stream.write(event_json(e) +
 * b"\n"), one write call per event as the Python method makes it. */

typedef struct {
    PyObject_HEAD
    PyObject *write; /* the stream's bound write method */
    vectorcallfunc vectorcall;
} LineWriterObject;

static PyObject *linewriter_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                       PyObject *kwnames) {
    LineWriterObject *self = (LineWriterObject *)op;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "write(event) takes one argument");
        return NULL;
    }
    PyObject *out = event_json_line(args[0], 1); /* the common case: the line itself */
    if (out == NULL && PyErr_Occurred()) return NULL;
    if (out != NULL) {
        PyObject *r = PyObject_CallOneArg(self->write, out);
        Py_DECREF(out);
        if (r == NULL) return NULL;
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    PyObject *line = PyObject_CallOneArg(json_fallback, args[0]);
    if (line == NULL) return NULL;
    if (!PyBytes_Check(line)) {
        Py_DECREF(line);
        PyErr_SetString(PyExc_TypeError, "event_json did not return bytes");
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(line);
    out = PyBytes_FromStringAndSize(NULL, n + 1);
    if (out == NULL) { Py_DECREF(line); return NULL; }
    memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(line), (size_t)n);
    PyBytes_AS_STRING(out)[n] = '\n';
    Py_DECREF(line);
    PyObject *r = PyObject_CallOneArg(self->write, out);
    Py_DECREF(out);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *linewriter_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *write;
    if (!PyArg_ParseTuple(args, "O:LineWriter", &write)) return NULL;
    if (json_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "setup_json was not called");
        return NULL;
    }
    LineWriterObject *self = (LineWriterObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    Py_INCREF(write); self->write = write;
    self->vectorcall = linewriter_vectorcall;
    return (PyObject *)self;
}

static int linewriter_traverse(LineWriterObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->write);
    return 0;
}

static int linewriter_clear(LineWriterObject *self) {
    Py_CLEAR(self->write);
    return 0;
}

static void linewriter_dealloc(LineWriterObject *self) {
    PyObject_GC_UnTrack(self);
    linewriter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject LineWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sysmonx.core._speedups.LineWriter",
    .tp_basicsize = sizeof(LineWriterObject),
    .tp_dealloc = (destructor)linewriter_dealloc,
    .tp_vectorcall_offset = offsetof(LineWriterObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "LineWriter(write): calling it with an Event calls write(event_json(event) + "
              "b'\\n') once.",
    .tp_traverse = (traverseproc)linewriter_traverse,
    .tp_clear = (inquiry)linewriter_clear,
    .tp_new = linewriter_new,
};


/* [27a] the loop's raw path (RawPlan, below) */
typedef struct RawPlanObject RawPlanObject;
#define RAW_EIDS 64

typedef struct {
    Py_ssize_t len;
    long v[RAW_EIDS];
    PyObject *o[RAW_EIDS];
    Py_ssize_t n[RAW_EIDS];
} EidCounts;

struct RawPlanObject {
    PyObject_HEAD
    PyObject *streams, *clock, *gate, *count, *write, *failure, *pipeline;
    Py_ssize_t raw, sent;
    PyObject *error; /* failure()'s exception, for the loop to raise (take_error) */
    /* the stream and block last used (held: their identity is the cache key) */
    PyObject *k_prov, *k_comp, *k_chan, *blocks, *slots;
    long long blk;
    Py_buffer view;
    int have_view;
    PyObject *filter; /* a FilterStage with an engine (its compiled deciders) */
    /* per evtx_batch call */
    int active;
    PyObject *c_path, *c_check; /* the clock stage's _path and _check (borrowed, re-read) */
    PyObject *c_deciders;       /* the filter stage's _deciders (borrowed, re-read) */
    Py_ssize_t gate_n;
    EidCounts inc, exc;         /* included / excluded per EventID, in first-seen order */
    /* [27a2] records in a row the plan did not take (across calls; a taken one resets it) */
    Py_ssize_t streak;
    /* [27a2] the steps' kinds in the order given (the stage list compiled) */
    int nk;
    char kinds[8];
};
enum { RK_DEDUP, RK_CLOCK, RK_GATE, RK_COUNT, RK_FILTER };
/* [27a2] from this many records in a row the plan did not take, a record that goes the Event
 * way no longer ends its list: the rest of the list is made the Event way (as without a plan)
 * and the next call tries the plan again. Below it (one new duplicate-check block, the first
 * record of an EventID) the record ends the list and the next record is tried at once. */
#define RAW_STREAK 8
static PyTypeObject RawPlanType;
static int rp_begin(RawPlanObject *p);
static int rp_end(RawPlanObject *p);
static int rp_take(RawPlanObject *p, Rec *x, PyObject *pguid, int sysmon, PyObject *path);
static PyObject *str_stop;
static PyTypeObject FilterDeciderType;
static int fd_decide_rec(PyObject *decider, Rec *x, PyObject **out);
static PyObject *fd_rule_name;

/* ------------------------------------------------------------ EVTX record loop (replay reader)
 *
 *   evtx_batch(it, first, last, seen_ids, path, notes, out, limit, plan=None, pending=None)
 *       -> (status, seen, last_rid, payload)
 *
 * The per-record part of sysmonx.sources.evtx._records in C: pulls records from pyevtx-rs's
 * records_json() iterator ``it`` while their event_record_id lies in [first, last] (the current
 * chunk), adds each id to the set ``seen_ids``, converts each (convert_impl, else the Python
 * fallback, exactly as convert()) with origin (path, rid) and appends the Event to the list
 * ``out``; stops after ``limit`` events. ``seen`` is the number of records counted for the chunk
 * (every record pulled but the one in the payload of status 2), ``last_rid`` the last of them
 * (None when none). Everything unusual goes back to Python, which handles it as
 * before, in order:
 *   0: the iterator is exhausted (payload None);
 *   1: ``limit`` events appended (payload None);
 *   2: a record this loop does not take (a record id out of the range or not an int, a record
 *      that is not a dict): payload the record, not counted;
 *   3: the iterator raised: payload the exception (pyevtx-rs's RuntimeError, ...);
 *   4: converting raised: payload (rid, exception); the record is counted;
 *   5: a record the compiled converter does not take: payload (rid, data text), counted; the
 *      Python converter decides (it may report through ``notes``, so it runs in order).
 * ``notes`` is unused here (kept for the Python converter's signature).
 * [27a] ``plan`` (a RawPlan, optional): the loop's raw path. A record the plan takes is written
 * (or counted excluded) here and appended as None (the list keeps one entry per record); a
 * record it does not take alone is appended as its Event, and the rest of the call's list is
 * made the Event way (no raw write after it: the loop handles it before any later record is
 * written); the next call is raw again. The plan's counters are applied before
 * the call returns; a sink failure that raised is kept in the plan (RawPlan.take_error).
 * [29a] ``pending`` (optional): a record (a dict whose event_record_id is an int) that came
 * back as status 2 and that Python has since counted for its chunk (the chunk change): taken
 * first, before any record of ``it``, as a record of the range (converted, or through the
 * plan), but not counted again (neither in ``seen`` nor in ``seen_ids``).
 */

static PyObject *evtx_key_rid = NULL, *evtx_key_data = NULL;

static PyObject *take_exception(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(tb);
        return NULL;
    }
    if (tb != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

static PyObject *py_evtx_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 8 || nargs > 10 || !PyAnySet_Check(args[3]) || !PyList_CheckExact(args[6]) ||
        (nargs >= 9 && args[8] != Py_None && !Py_IS_TYPE(args[8], &RawPlanType)) ||
        (nargs == 10 && args[9] != Py_None && !PyDict_CheckExact(args[9]))) {
        PyErr_SetString(PyExc_TypeError, "evtx_batch(it, first, last, seen_ids: set, path, "
                        "notes, out: list, limit, plan: RawPlan | None = None, "
                        "pending: dict | None = None)");
        return NULL;
    }
    RawPlanObject *plan = nargs >= 9 && args[8] != Py_None ? (RawPlanObject *)args[8] : NULL;
    PyObject *pending = nargs == 10 && args[9] != Py_None ? args[9] : NULL;
    if (convert_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "sysmonx.core._speedups is not set up");
        return NULL;
    }
    PyObject *it = args[0], *seen_ids = args[3], *path = args[4];
    PyObject *out = args[6];
    /* chunk header numbers are unsigned 64-bit */
    unsigned long long first = PyLong_AsUnsignedLongLong(args[1]);
    if (first == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    unsigned long long last = PyLong_AsUnsignedLongLong(args[2]);
    if (last == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    Py_ssize_t limit = PyLong_AsSsize_t(args[7]);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    iternextfunc next = Py_TYPE(it)->tp_iternext;
    if (next == NULL) {
        PyErr_SetString(PyExc_TypeError, "evtx_batch: not an iterator");
        return NULL;
    }
    if (evtx_key_rid == NULL) {
        evtx_key_rid = PyUnicode_InternFromString("event_record_id");
        evtx_key_data = PyUnicode_InternFromString("data");
        if (evtx_key_rid == NULL || evtx_key_data == NULL) return NULL;
    }
    Py_ssize_t seen = 0, taken = 0;
    PyObject *last_rid = NULL;
    int status = 0, event_way = 0;
    PyObject *payload = NULL;
    if (plan != NULL) {
        if (str_stop == NULL && (str_stop = PyUnicode_InternFromString("_stop")) == NULL)
            return NULL;
        if (rp_begin(plan) < 0) return NULL;
    }
    for (;;) {
        if (taken >= limit) {
            status = 1;
            break;
        }
        if (plan != NULL && plan->active && !event_way && (taken & 15) == 15) {
            /* a stop request (pipeline._stop), as the loop looks between items */
            PyObject *stop = PyObject_GetAttr(plan->pipeline, str_stop);
            int st = stop == NULL ? -1 : PyObject_IsTrue(stop);
            Py_XDECREF(stop);
            if (st < 0) goto plan_fail;
            if (st) {
                status = 1;
                break;
            }
        }
        /* [29a] the pending record first (counted by Python already) */
        int counted = pending != NULL;
        PyObject *rec = counted ? Py_NewRef(pending) : next(it);
        pending = NULL;
        if (rec == NULL) {
            if (PyErr_Occurred()) {
                if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
                    PyErr_Clear();
                    break;
                }
                payload = take_exception();
                if (payload == NULL) {
                    Py_XDECREF(last_rid);
                    return NULL;
                }
                status = 3;
            }
            break;
        }
        PyObject *rid = PyDict_CheckExact(rec) ? PyDict_GetItemWithError(rec, evtx_key_rid) : NULL;
        int ok = rid != NULL && PyLong_CheckExact(rid);
        if (ok) {
            unsigned long long r = PyLong_AsUnsignedLongLong(rid);
            if (r == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear(); /* negative or beyond 64 bits: Python decides */
                ok = 0;
            } else {
                ok = first <= r && r <= last;
            }
        }
        if (PyErr_Occurred()) {
            Py_DECREF(rec);
            Py_XDECREF(last_rid);
            return NULL;
        }
        if (counted) {
            if (rid == NULL || !PyLong_CheckExact(rid)) {
                Py_DECREF(rec);
                Py_XDECREF(last_rid);
                PyErr_SetString(PyExc_TypeError, "evtx_batch: pending record without an int "
                                "event_record_id");
                if (plan != NULL) rp_end(plan);
                return NULL;
            }
        } else if (!ok) {
            status = 2;
            payload = rec;
            break;
        } else {
            seen++;
            Py_XSETREF(last_rid, Py_NewRef(rid));
            if (PySet_Add(seen_ids, rid) < 0) {
                Py_DECREF(rec);
                Py_DECREF(last_rid);
                return NULL;
            }
        }
        PyObject *text = PyDict_GetItemWithError(rec, evtx_key_data);
        if (plan != NULL && plan->active && !event_way && text != NULL) {
            Rec x;
            RawField fields[MAX_FIELDS];
            int sysmon;
            PyObject *pguid;
            int prc = parse_rec(text, &x, fields, &sysmon, &pguid);
            if (prc == 0) {
                int tr = rp_take(plan, &x, pguid, sysmon, path);
                if (tr != 0) {
                    rec_clear(&x);
                    Py_DECREF(pguid);
                    Py_DECREF(rec);
                    if (tr < 0) goto plan_fail;
                    /* a placeholder keeps the list's length the records' count */
                    if (PyList_Append(out, Py_None) < 0) goto plan_fail;
                    taken++;
                    plan->streak = 0;
                    if (plan->error != NULL) { /* the loop raises it after this list */
                        status = 1;
                        break;
                    }
                    continue;
                }
                /* the Event decides: made from what was parsed, handed to the loop */
                PyObject *origin = PyTuple_Pack(2, path, rid);
                if (origin == NULL) {
                    rec_clear(&x);
                    Py_DECREF(pguid);
                    Py_DECREF(rec);
                    goto plan_fail;
                }
                if (PyUnicode_CheckExact(path)) PyObject_GC_UnTrack(origin);
                PyObject *ev = rec_event(&x, pguid, text, origin);
                Py_DECREF(origin);
                Py_DECREF(rec);
                if (ev == NULL) goto plan_fail;
                int rc = PyList_Append(out, ev);
                Py_DECREF(ev);
                if (rc < 0) goto plan_fail;
                taken++;
                /* no raw write may come before the loop has taken this Event: the list ends
                 * here, or [27a2] after a run of such records its rest is made the Event way
                 * (no per-record list); the next call tries the plan again */
                if (++plan->streak < RAW_STREAK) {
                    status = 1;
                    break;
                }
                event_way = 1;
                continue;
            }
            if (prc == -2) { /* a Python error (memory, ...): the record's conversion error */
                PyObject *exc = take_exception();
                if (exc == NULL) {
                    Py_DECREF(rec);
                    goto plan_fail;
                }
                payload = Py_BuildValue("(ON)", rid, exc);
                Py_DECREF(rec);
                if (payload == NULL) goto plan_fail;
                status = 4;
                break;
            }
            /* -1: the Python converter decides (status 5 below) */
        }
        PyObject *origin = PyTuple_Pack(2, path, rid);
        if (origin == NULL) {
            Py_DECREF(rec);
            Py_XDECREF(last_rid);
            return NULL;
        }
        /* [21b] a tuple of a str and an int can be in no reference cycle: untracked now (the
         * collector would untrack it at its first pass, after visiting it with every young
         * Event of the batch) */
        if (PyUnicode_CheckExact(path)) PyObject_GC_UnTrack(origin);
        PyObject *ev = NULL;
        if (text == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, evtx_key_data);
        } else {
            ev = convert_impl(text, origin);
            if (ev == NULL && !PyErr_Occurred()) {
                /* the Python converter decides (it may report through ``notes``): back to
                 * Python, so that happens after the events before it were taken */
                payload = PyTuple_Pack(2, rid, text);
                Py_DECREF(origin);
                Py_DECREF(rec);
                if (payload == NULL) {
                    Py_XDECREF(last_rid);
                    return NULL;
                }
                status = 5;
                break;
            }
        }
        Py_DECREF(origin);
        if (ev == NULL) {
            PyObject *exc = take_exception();
            if (exc == NULL) {
                Py_DECREF(rec);
                Py_XDECREF(last_rid);
                return NULL;
            }
            payload = Py_BuildValue("(ON)", rid, exc);
            Py_DECREF(rec);
            if (payload == NULL) {
                Py_XDECREF(last_rid);
                return NULL;
            }
            status = 4;
            break;
        }
        Py_DECREF(rec);
        int rc = PyList_Append(out, ev);
        Py_DECREF(ev);
        if (rc < 0) {
            Py_XDECREF(last_rid);
            return NULL;
        }
        taken++;
    }
    if (plan != NULL && rp_end(plan) < 0) {
        Py_XDECREF(payload);
        Py_XDECREF(last_rid);
        return NULL;
    }
    if (payload == NULL) payload = Py_NewRef(Py_None);
    if (last_rid == NULL) last_rid = Py_NewRef(Py_None);
    return Py_BuildValue("(inNN)", status, seen, last_rid, payload);
plan_fail:
    /* an error of the raw path (a sink's failure raised, memory): the counters first */
    rp_end(plan);
    Py_XDECREF(last_rid);
    return NULL;
}


/* ------------------------------------------------------------ recorded-run loop (one list)
 *
 *   run_batch(items, processes, emits, event_type, write, failure, deliver, pipeline) -> sent
 *
 * sysmonx.pipeline.loop.Pipeline's per-item loop for a recorded source, over one list of
 * items, in C; the same calls in the same order as the Python loop:
 *     for item in items:
 *         for process, emit in zip(processes, emits):
 *             if not process(item, emit): break
 *         else:
 *             if write is not None and type(item) is event_type:
 *                 try: write(item)
 *                 except Exception as exc: failure(exc)
 *                 else: sent += 1
 *             else:
 *                 deliver(item)
 *         if pipeline._stop: break
 * Returns ``sent`` (events written). An exception from a stage, ``failure`` or ``deliver``
 * propagates; the count of what was written before it is then lost to the caller, so
 * ``failure`` (the sink slot's, which raises under the fatal policy) is given the count first:
 * ``pipeline._sent_pending`` is set to ``sent`` before any exception leaves (the Python
 * caller adds it to the slot).
 */

static PyObject *str_stop = NULL;
static PyObject *str_sent_pending = NULL;

static PyObject *py_run_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8 || !PyList_CheckExact(args[0]) || !PyTuple_CheckExact(args[1]) ||
        !PyTuple_CheckExact(args[2]) || PyTuple_GET_SIZE(args[1]) != PyTuple_GET_SIZE(args[2]) ||
        !PyType_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "run_batch(items: list, processes: tuple, emits: tuple, "
                        "event_type, write, failure, deliver, pipeline)");
        return NULL;
    }
    if (str_stop == NULL || str_sent_pending == NULL) {
        str_stop = PyUnicode_InternFromString("_stop");
        str_sent_pending = PyUnicode_InternFromString("_sent_pending");
        if (str_stop == NULL || str_sent_pending == NULL) return NULL;
    }
    PyObject *items = args[0], *processes = args[1], *emits = args[2];
    PyTypeObject *etype = (PyTypeObject *)args[3];
    PyObject *write = args[4] == Py_None ? NULL : args[4];
    PyObject *failure = args[5], *deliver = args[6], *pipeline = args[7];
    Py_ssize_t nsteps = PyTuple_GET_SIZE(processes);
    Py_ssize_t sent = 0;
    /* the list may not change under us: hold it, and re-read its size each time */
    Py_INCREF(items);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (item == Py_None) continue; /* [27a] a record the raw path wrote (evtx_batch) */
        Py_INCREF(item);
        int pass = 1;
        for (Py_ssize_t k = 0; k < nsteps; k++) {
            PyObject *cargs[2] = {item, PyTuple_GET_ITEM(emits, k)};
            PyObject *r = PyObject_Vectorcall(PyTuple_GET_ITEM(processes, k), cargs, 2, NULL);
            if (r == NULL) goto fail_item;
            int t = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (t < 0) goto fail_item;
            if (!t) {
                pass = 0;
                break;
            }
        }
        if (pass) {
            if (write != NULL && Py_TYPE(item) == etype) {
                PyObject *r = PyObject_Vectorcall(write, &item, 1, NULL);
                if (r != NULL) {
                    Py_DECREF(r);
                    sent++;
                } else if (PyErr_ExceptionMatches(PyExc_Exception)) {
                    PyObject *exc = take_exception();
                    if (exc == NULL) goto fail_item;
                    r = PyObject_Vectorcall(failure, &exc, 1, NULL);
                    Py_DECREF(exc);
                    if (r == NULL) goto fail_item;
                    Py_DECREF(r);
                } else {
                    goto fail_item;
                }
            } else {
                PyObject *r = PyObject_Vectorcall(deliver, &item, 1, NULL);
                if (r == NULL) goto fail_item;
                Py_DECREF(r);
            }
        }
        Py_DECREF(item);
        PyObject *stop = PyObject_GetAttr(pipeline, str_stop);
        if (stop == NULL) goto fail;
        int t = PyObject_IsTrue(stop);
        Py_DECREF(stop);
        if (t < 0) goto fail;
        if (t) break;
        continue;
    fail_item:
        Py_DECREF(item);
        goto fail;
    }
    Py_DECREF(items);
    return PyLong_FromSsize_t(sent);
fail:
    Py_DECREF(items);
    {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *n = PyLong_FromSsize_t(sent);
        if (n == NULL || PyObject_SetAttr(pipeline, str_sent_pending, n) < 0) PyErr_Clear();
        Py_XDECREF(n);
        PyErr_Restore(type, value, tb);
    }
    return NULL;
}


/* ------------------------------------------------------------ replay stages' common case
 *
 *   StageFast(kind, stage, fallback): a callable ``(item, emit) -> bool`` for a stage's
 *   ``process``; it answers the common case itself and calls ``fallback(item, emit)`` (the
 *   stage's Python method, which defines the behaviour) for everything else, with the stage
 *   unchanged. Reads the stage's attributes on every call (a reload or a new file is seen at
 *   once). Kinds:
 *     0 "clock"  sysmonx.stages.clock.ClockCheckStage: an Event whose origin's path is the
 *        stage's ``_path`` (the same object), with ``_check`` None (the file was warned about)
 *        or whose data has no ``UtcTime`` or one of the same date and hour as its
 *        ``time_created`` (both one-byte strings of 13 characters or more): True.
 *     1 "count"  sysmonx.filtering.stage.FilterStage without an engine: a Sysmon Event (its
 *        provider in the set given to setup_convert) with ``engine`` None: ``included[event_id]
 *        += 1`` on the stage's Counter (an exact int count already there), True.
 */

typedef struct {
    PyObject_HEAD
    int kind;
    PyObject *stage, *fallback;
    vectorcallfunc vectorcall;
} StageFastObject;

static PyObject *sf_path = NULL, *sf_check = NULL, *sf_utc = NULL, *sf_engine = NULL,
                *sf_included = NULL, *sf_one = NULL;

static PyObject *stagefast_fallback(StageFastObject *self, PyObject *const *args) {
    return PyObject_Vectorcall(self->fallback, args, 2, NULL);
}

/* [27a2] The clock check's rule on two canonical times (13 characters or more each): the
 * same date and hour. Shared by clock_fast (an Event) and rp_clock (a parsed record). */
static inline int same_hour(const char *a, const char *b) {
    return memcmp(a, b, 10) == 0 && a[11] == b[11] && a[12] == b[12];
}

/* 1: handled (True), 0: the fallback decides, -1: error */
static int clock_fast(StageFastObject *self, PyObject *item) {
    PyObject *origin = SLOT(item, S_ORIGIN);
    if (origin == NULL || !PyTuple_CheckExact(origin) || PyTuple_GET_SIZE(origin) < 1) return 0;
    PyObject *spath = PyObject_GetAttr(self->stage, sf_path);
    if (spath == NULL) return -1;
    int same = spath == PyTuple_GET_ITEM(origin, 0);
    Py_DECREF(spath);
    if (!same) return 0;
    PyObject *check = PyObject_GetAttr(self->stage, sf_check);
    if (check == NULL) return -1;
    Py_DECREF(check);
    if (check == Py_None) return 1;
    PyObject *data = SLOT(item, S_DATA), *t = SLOT(item, S_TIME_CREATED);
    if (t == NULL || !PyUnicode_CheckExact(t)) return 0;
    PyObject *u = NULL;
    if (data == NULL) { /* [26a] the record's fields as they are: UtcTime's slice */
        PyObject *raw = SLOT(item, S_RAW);
        if (raw == NULL || !Py_IS_TYPE(raw, &RawDataType)) return 0;
        RawDataObject *ro = (RawDataObject *)raw;
        Py_hash_t h = PyObject_Hash(sf_utc);
        if (h == -1) return -1;
        RawField *f = NULL;
        for (Py_ssize_t i = 0; i < Py_SIZE(ro); i++) {
            PyObject *o = ro->f[i].key;
            if (o == sf_utc || (((PyASCIIObject *)o)->hash == h &&
                                PyUnicode_Compare(o, sf_utc) == 0)) {
                f = &ro->f[i];
                break;
            }
        }
        if (f == NULL) return 1;
        if (f->val != NULL) {
            u = f->val;
        } else {
            if (PyUnicode_KIND(t) != PyUnicode_1BYTE_KIND || PyUnicode_GET_LENGTH(t) < 13 ||
                f->len < 13 || f->canon) /* [28c] escaped text: the Python method decides */
                return 0;
            const char *a = (const char *)PyUnicode_1BYTE_DATA(t);
            const char *b = (const char *)ro->base + f->off;
            return same_hour(a, b);
        }
    } else {
        if (!PyDict_CheckExact(data)) return 0;
        u = PyDict_GetItemWithError(data, sf_utc);
        if (u == NULL) return PyErr_Occurred() ? -1 : 1;
    }
    if (!PyUnicode_CheckExact(u) || PyUnicode_KIND(t) != PyUnicode_1BYTE_KIND ||
        PyUnicode_KIND(u) != PyUnicode_1BYTE_KIND || PyUnicode_GET_LENGTH(t) < 13 ||
        PyUnicode_GET_LENGTH(u) < 13)
        return 0;
    const char *a = (const char *)PyUnicode_1BYTE_DATA(t), *b = (const char *)PyUnicode_1BYTE_DATA(u);
    return same_hour(a, b);
}

static int count_fast(StageFastObject *self, PyObject *item) {
    PyObject *provider = SLOT(item, S_PROVIDER), *eid = SLOT(item, S_EVENT_ID);
    if (provider == NULL || eid == NULL || sysmon_providers == NULL || !PyLong_CheckExact(eid))
        return 0;
    int sysmon = PySet_Contains(sysmon_providers, provider);
    if (sysmon <= 0) return sysmon < 0 ? -1 : 0;
    PyObject *engine = PyObject_GetAttr(self->stage, sf_engine);
    if (engine == NULL) return -1;
    Py_DECREF(engine);
    if (engine != Py_None) return 0;
    PyObject *inc = PyObject_GetAttr(self->stage, sf_included);
    if (inc == NULL) return -1;
    int rc = 0;
    if (PyDict_Check(inc)) {
        PyObject *n = PyDict_GetItemWithError(inc, eid);
        if (n == NULL) {
            rc = PyErr_Occurred() ? -1 : 0;
        } else if (PyLong_CheckExact(n)) {
            PyObject *m = PyNumber_Add(n, sf_one);
            if (m == NULL) {
                rc = -1;
            } else {
                rc = PyDict_SetItem(inc, eid, m) < 0 ? -1 : 1;
                Py_DECREF(m);
            }
        }
    }
    Py_DECREF(inc);
    return rc;
}

static PyObject *stagefast_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                      PyObject *kwnames) {
    StageFastObject *self = (StageFastObject *)op;
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "process(item, emit) takes two arguments");
        return NULL;
    }
    PyObject *item = args[0];
    if (event_type == NULL || Py_TYPE(item) != event_type) return stagefast_fallback(self, args);
    int rc = self->kind == 0 ? clock_fast(self, item) : count_fast(self, item);
    if (rc < 0) return NULL;
    if (rc == 0) return stagefast_fallback(self, args);
    Py_RETURN_TRUE;
}

/* StageFast's interned names and the constant 1, made once (StageFast and RawPlan use them):
 * 0, or -1 with an exception set. */
static int sf_names(void) {
    if (sf_path != NULL) return 0;
    sf_path = PyUnicode_InternFromString("_path");
    sf_check = PyUnicode_InternFromString("_check");
    sf_utc = PyUnicode_InternFromString("UtcTime");
    sf_engine = PyUnicode_InternFromString("engine");
    sf_included = PyUnicode_InternFromString("included");
    sf_one = PyLong_FromLong(1);
    if (!sf_path || !sf_check || !sf_utc || !sf_engine || !sf_included || !sf_one) {
        sf_path = NULL; /* tried again next time */
        return -1;
    }
    return 0;
}

static PyObject *stagefast_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    const char *kind;
    PyObject *stage, *fallback;
    if (!PyArg_ParseTuple(args, "sOO:StageFast", &kind, &stage, &fallback)) return NULL;
    int k = strcmp(kind, "clock") == 0 ? 0 : strcmp(kind, "count") == 0 ? 1 : -1;
    if (k < 0) {
        PyErr_Format(PyExc_ValueError, "StageFast: unknown kind %s", kind);
        return NULL;
    }
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "setup_convert was not called");
        return NULL;
    }
    if (sf_names() < 0) return NULL;
    StageFastObject *self = (StageFastObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->kind = k;
    self->stage = Py_NewRef(stage);
    self->fallback = Py_NewRef(fallback);
    self->vectorcall = stagefast_vectorcall;
    return (PyObject *)self;
}

static int stagefast_traverse(StageFastObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->stage);
    Py_VISIT(self->fallback);
    return 0;
}

static int stagefast_clear(StageFastObject *self) {
    Py_CLEAR(self->stage);
    Py_CLEAR(self->fallback);
    return 0;
}

static void stagefast_dealloc(StageFastObject *self) {
    PyObject_GC_UnTrack(self);
    stagefast_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject StageFastType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sysmonx.core._speedups.StageFast",
    .tp_basicsize = sizeof(StageFastObject),
    .tp_dealloc = (destructor)stagefast_dealloc,
    .tp_vectorcall_offset = offsetof(StageFastObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "StageFast(kind, stage, fallback): a replay stage's process for its common case "
              "(kind 'clock' or 'count'), else fallback(item, emit).",
    .tp_traverse = (traverseproc)stagefast_traverse,
    .tp_clear = (inquiry)stagefast_clear,
    .tp_new = stagefast_new,
};

/* ---------------------------------------------------------- [27a] the loop's raw path (replay)
 *
 *   RawPlan(steps, writer, failure, pipeline)
 *
 * The replay's stages and its one JSON-lines sink compiled over a parsed record (Rec), for
 * evtx_batch: a record that every step passes is written (the same bytes as event_json_line
 * of its Event, one ``write`` call, as LineWriter) without an Event, a dict, an origin tuple
 * or a stage call. ``steps``: the stages' ``raw_step()`` answers, each a tuple:
 *   ("dedup", streams)  DuplicateStage: a record id not seen in a block that exists (Dedup's
 *                       common case); the slot is written;
 *   ("clock", stage)    ClockCheckStage: the file at hand (``stage._raw_enter(path)`` on a new
 *                       path, as the Python method resets), warned about or UtcTime of the same
 *                       date and hour as TimeCreated, or none (clock_fast's case);
 *   ("gate", stage)     SysmonGate: a Sysmon provider (``stage.sysmon`` += 1);
 *   ("count", stage)    FilterStage without an engine (``stage.included[eid]`` += 1);
 *   ("filter", stage)   FilterStage with an engine that sets no field sizes: the record's
 *                       compiled decider (``stage._deciders[eid]``, a FilterDecider, made by
 *                       the Python method for the first record of each EventID) over the
 *                       record's fields; excluded: ``excluded[eid]`` += 1, not written;
 *                       included: RuleName set in the fields as set_rule_name does (no
 *                       RuleName field and a name other than "-": the Event decides),
 *                       ``included[eid]`` += 1.
 * [27a2] The steps' checks run in the order given (the stages' order: a switch per kind in
 * rp_take); the helpers they run are the Event path's own (same_hour, dedup_rid / dedup_cell,
 * render_system), so each rule has one C copy. A plan needs a ``gate`` step.
 * ``writer``: a LineWriter (its stream's write is called); ``failure(exc)``: a write's
 * exception (the sink slot's); ``pipeline._stop``: read between records.
 * Every check is made before anything changes; a record one of them does not pass alone (or
 * whose line the Event path would render otherwise: an enrichment field, an odd value) becomes
 * its Event, which evtx_batch hands back to the loop as today (all the stages, in order). The
 * counters are added when evtx_batch returns (before the loop sees the list), in the order
 * the Python stages would have first counted each EventID.
 * Attributes: ``raw`` records written this way, ``sent`` lines written (both since made).
 */


static PyObject *rp_excluded_s, *rp_constant_s;
static PyObject *rp_streams_s, *rp_dedup_s, *rp_clock_s, *rp_gate_s, *rp_count_s,
                *rp_sysmon_s, *rp_before_s, *rp_trace_s, *rp_raw_enter_s;

static void rp_drop_cache(RawPlanObject *p) {
    if (p->have_view) {
        PyBuffer_Release(&p->view);
        p->have_view = 0;
    }
    Py_CLEAR(p->slots);
    Py_CLEAR(p->blocks);
    Py_CLEAR(p->k_prov);
    Py_CLEAR(p->k_comp);
    Py_CLEAR(p->k_chan);
}

static int rp_traverse(RawPlanObject *p, visitproc visit, void *arg) {
    Py_VISIT(p->streams); Py_VISIT(p->clock); Py_VISIT(p->gate); Py_VISIT(p->count);
    Py_VISIT(p->write); Py_VISIT(p->failure); Py_VISIT(p->pipeline); Py_VISIT(p->blocks);
    Py_VISIT(p->slots); Py_VISIT(p->error); Py_VISIT(p->filter);
    return 0;
}

static int rp_clear(RawPlanObject *p) {
    rp_drop_cache(p);
    Py_CLEAR(p->streams); Py_CLEAR(p->clock); Py_CLEAR(p->gate); Py_CLEAR(p->count);
    Py_CLEAR(p->write); Py_CLEAR(p->failure); Py_CLEAR(p->pipeline); Py_CLEAR(p->error);
    Py_CLEAR(p->filter);
    for (Py_ssize_t i = 0; i < p->inc.len; i++) Py_CLEAR(p->inc.o[i]);
    for (Py_ssize_t i = 0; i < p->exc.len; i++) Py_CLEAR(p->exc.o[i]);
    p->inc.len = p->exc.len = 0;
    return 0;
}

static void rp_dealloc(RawPlanObject *p) {
    PyObject_GC_UnTrack(p);
    rp_clear(p);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyObject *rp_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *steps, *writer, *failure, *pipeline;
    if (!PyArg_ParseTuple(args, "O!OOO:RawPlan", &PyTuple_Type, &steps, &writer, &failure,
                          &pipeline))
        return NULL;
    /* [27a2] only the JSON side is needed here (a LineWriter exists only once sinks.jsonl,
     * which calls setup_json, is imported); the converter's setup is checked by evtx_batch on
     * every call, so a plan can be made before sysmonx.sources.evtx is imported */
    if (json_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "setup_json was not called");
        return NULL;
    }
    if (!Py_IS_TYPE(writer, &LineWriterType)) {
        PyErr_SetString(PyExc_TypeError, "RawPlan: the sink is not a LineWriter");
        return NULL;
    }
    if (rp_streams_s == NULL) {
        rp_dedup_s = PyUnicode_InternFromString("dedup");
        rp_clock_s = PyUnicode_InternFromString("clock");
        rp_gate_s = PyUnicode_InternFromString("gate");
        rp_count_s = PyUnicode_InternFromString("count");
        rp_sysmon_s = PyUnicode_InternFromString("sysmon");
        rp_before_s = PyUnicode_InternFromString("_before");
        rp_trace_s = PyUnicode_InternFromString("trace");
        rp_raw_enter_s = PyUnicode_InternFromString("_raw_enter");
        rp_excluded_s = PyUnicode_InternFromString("excluded");
        rp_constant_s = PyUnicode_InternFromString("sysmonx_constant");
        if (rp_excluded_s == NULL || rp_constant_s == NULL) return NULL;
        rp_streams_s = rp_dedup_s;
        if (!rp_dedup_s || !rp_clock_s || !rp_gate_s || !rp_count_s || !rp_sysmon_s ||
            !rp_before_s || !rp_trace_s || !rp_raw_enter_s) {
            rp_streams_s = NULL;
            return NULL;
        }
    }
    if (sf_names() < 0) return NULL; /* StageFast's names, which the raw path's steps read */
    RawPlanObject *p = (RawPlanObject *)type->tp_alloc(type, 0);
    if (p == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(steps); i++) {
        PyObject *st = PyTuple_GET_ITEM(steps, i), *kind, *obj, **dst = NULL;
        if (!PyTuple_CheckExact(st) || PyTuple_GET_SIZE(st) != 2 ||
            !PyUnicode_CheckExact(kind = PyTuple_GET_ITEM(st, 0))) {
            PyErr_SetString(PyExc_TypeError, "RawPlan: a step is not (kind, object)");
            goto fail;
        }
        obj = PyTuple_GET_ITEM(st, 1);
        int code = -1;
        if (PyUnicode_Compare(kind, rp_dedup_s) == 0) {
            if (!PyDict_CheckExact(obj)) {
                PyErr_SetString(PyExc_TypeError, "RawPlan: dedup streams is not a dict");
                goto fail;
            }
            dst = &p->streams;
            code = RK_DEDUP;
        } else if (PyUnicode_Compare(kind, rp_clock_s) == 0) {
            dst = &p->clock;
            code = RK_CLOCK;
        } else if (PyUnicode_Compare(kind, rp_gate_s) == 0) {
            dst = &p->gate;
            code = RK_GATE;
        } else if (PyUnicode_Compare(kind, rp_count_s) == 0) {
            dst = &p->count;
            code = RK_COUNT;
        } else if (PyUnicode_CompareWithASCIIString(kind, "filter") == 0) {
            dst = &p->filter;
            code = RK_FILTER;
        }
        if (dst == NULL || *dst != NULL) {
            PyErr_Format(PyExc_ValueError, "RawPlan: unknown or repeated step %R", kind);
            goto fail;
        }
        *dst = Py_NewRef(obj);
        p->kinds[p->nk++] = (char)code; /* at most 5: each kind once */
    }
    if (p->count != NULL && p->filter != NULL) {
        PyErr_SetString(PyExc_ValueError, "RawPlan: two filter steps");
        goto fail;
    }
    if (p->gate == NULL) { /* the gate keeps SysmonX's own events (SigmaAlert) off this path */
        PyErr_SetString(PyExc_ValueError, "RawPlan: no gate step");
        goto fail;
    }
    p->write = Py_NewRef(((LineWriterObject *)writer)->write);
    p->failure = Py_NewRef(failure);
    p->pipeline = Py_NewRef(pipeline);
    return (PyObject *)p;
fail:
    Py_DECREF(p);
    return NULL;
}

/* The clock stage's _path and _check, read again. 0 / -1. */
static int rp_begin_clock(RawPlanObject *p) {
    if (p->clock == NULL) return 0;
    PyObject *a = PyObject_GetAttr(p->clock, sf_path);
    if (a == NULL) return -1;
    PyObject *b = PyObject_GetAttr(p->clock, sf_check);
    if (b == NULL) { Py_DECREF(a); return -1; }
    /* borrowed: the stage holds them (only _raw_enter, after which they are read again, or a
     * record's Event, after which this call ends, changes them) */
    Py_DECREF(a);
    Py_DECREF(b);
    p->c_path = a;
    p->c_check = b;
    return 0;
}

/* At the start of an evtx_batch call: whether the raw path applies now (the filter's engine
 * is none or sets no field sizes, no reload overlap, no trace), the clock stage's state and
 * the filter's deciders. 0, or -1 (error). */
static int rp_begin(RawPlanObject *p) {
    p->active = 0;
    p->gate_n = 0;
    p->inc.len = p->exc.len = 0;
    p->c_path = p->c_check = p->c_deciders = NULL;
    PyObject *fs = p->count != NULL ? p->count : p->filter;
    if (fs != NULL) {
        PyObject *v = PyObject_GetAttr(fs, sf_engine);
        if (v == NULL) return -1;
        int ok;
        if (p->count != NULL) {
            ok = v == Py_None;
        } else { /* an engine that sets no field sizes */
            PyObject *sizes = v == Py_None ? NULL : PyObject_GetAttrString(v, "field_sizes");
            if (v != Py_None && sizes == NULL) {
                Py_DECREF(v);
                return -1;
            }
            int t = sizes == NULL ? 1 : PyObject_IsTrue(sizes);
            Py_XDECREF(sizes);
            if (t < 0) {
                Py_DECREF(v);
                return -1;
            }
            ok = sizes != NULL && !t;
        }
        Py_DECREF(v);
        if (!ok) return 0;
        v = PyObject_GetAttr(fs, rp_before_s);
        if (v == NULL) return -1;
        Py_DECREF(v);
        if (v != Py_None) return 0;
        v = PyObject_GetAttr(fs, rp_trace_s);
        if (v == NULL) return -1;
        Py_DECREF(v);
        if (v != Py_None) return 0;
        if (p->filter != NULL) {
            v = PyObject_GetAttrString(fs, "_deciders");
            if (v == NULL) return -1;
            Py_DECREF(v); /* borrowed: the stage holds it (replaced only by a reload) */
            if (!PyDict_CheckExact(v)) return 0;
            p->c_deciders = v;
        }
    }
    if (rp_begin_clock(p) < 0) return -1;
    p->active = 1;
    return 0;
}

/* counts[eid] += n for each EventID counted (a Counter attribute ``name`` of ``stage``), in
 * first-seen order; the table emptied. 0 / -1. */
static int rp_commit_counts(PyObject *stage, PyObject *name, EidCounts *t) {
    int rc = 0;
    if (t->len) {
        PyObject *counts = PyObject_GetAttr(stage, name);
        if (counts == NULL) rc = -1;
        for (Py_ssize_t i = 0; counts != NULL && i < t->len && rc == 0; i++) {
            if (t->n[i] == 0) continue; /* its record went the Event way */
            PyObject *cur = PyObject_GetItem(counts, t->o[i]), *n = NULL, *s = NULL;
            if (cur != NULL) n = PyLong_FromSsize_t(t->n[i]);
            if (n != NULL) s = PyNumber_Add(cur, n);
            if (s == NULL || PyObject_SetItem(counts, t->o[i], s) < 0) rc = -1;
            Py_XDECREF(cur); Py_XDECREF(n); Py_XDECREF(s);
        }
        Py_XDECREF(counts);
    }
    for (Py_ssize_t i = 0; i < t->len; i++) Py_CLEAR(t->o[i]);
    t->len = 0;
    return rc;
}

/* The slot of EventID eid (value v) in t, made when new; -1: the table is full. */
static Py_ssize_t rp_eid_slot(EidCounts *t, PyObject *eid, long v) {
    Py_ssize_t e;
    for (e = 0; e < t->len && t->v[e] != v; e++) {}
    if (e == RAW_EIDS) return -1;
    if (e == t->len) {
        t->v[e] = v;
        t->o[e] = Py_NewRef(eid);
        t->n[e] = 0;
        t->len++;
    }
    return e;
}

/* At every return of an evtx_batch call: the counters of the records written raw. 0 / -1. */
static int rp_end(RawPlanObject *p) {
    int rc = 0;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb); /* an error already on its way out stays the one raised */
    if (p->gate_n && p->gate != NULL) {
        PyObject *v = PyObject_GetAttr(p->gate, rp_sysmon_s), *n = NULL, *s = NULL;
        if (v != NULL) n = PyLong_FromSsize_t(p->gate_n);
        if (n != NULL) s = PyNumber_Add(v, n);
        if (s == NULL || PyObject_SetAttr(p->gate, rp_sysmon_s, s) < 0) rc = -1;
        Py_XDECREF(v); Py_XDECREF(n); Py_XDECREF(s);
    }
    p->gate_n = 0;
    PyObject *fs = p->count != NULL ? p->count : p->filter;
    if (fs != NULL && rp_commit_counts(fs, sf_included, &p->inc) < 0) rc = -1;
    if (fs != NULL && rp_commit_counts(fs, rp_excluded_s, &p->exc) < 0) rc = -1;
    p->active = 0;
    if (type != NULL) {
        if (rc < 0) PyErr_Clear();
        PyErr_Restore(type, value, tb);
        return -1;
    }
    return rc;
}

/* The clock check of a parsed record (clock_fast's case). 1 passes, 0 the Event decides,
 * -1 error. */
static int rp_clock(RawPlanObject *p, Rec *x, PyObject *path) {
    if (p->c_path != path) {
        int eq = PyObject_RichCompareBool(path, p->c_path, Py_EQ);
        if (eq != 0) return eq < 0 ? -1 : 0; /* an equal path of another object: Python */
        /* a new file: the stage's own reset (as its Python method does first), then on */
        PyObject *r = PyObject_CallMethodOneArg(p->clock, rp_raw_enter_s, path);
        if (r == NULL) return -1;
        Py_DECREF(r);
        if (rp_begin_clock(p) < 0) return -1;
        if (p->c_path != path) return 0;
    }
    if (p->c_check == Py_None) return 1;
    RawField *f = field_named(x->fields, x->nf, sf_utc);
    if (f == NULL) return 1;
    const char *a = (const char *)x->tcs, *b;
    if (f->val != NULL) {
        PyObject *u = f->val;
        if (!PyUnicode_CheckExact(u) || PyUnicode_KIND(u) != PyUnicode_1BYTE_KIND ||
            PyUnicode_GET_LENGTH(u) < 13)
            return 0;
        b = (const char *)PyUnicode_1BYTE_DATA(u);
    } else {
        if (f->len < 13 || f->canon) return 0; /* [28c] escaped text: the Event decides */
        b = (const char *)x->base + f->off;
    }
    return same_hour(a, b);
}

/* The duplicate check of a parsed record: its slot (still free) in *cell and its time in *t:
 * 1; 0: the Event decides; -1: error. */
static int rp_dedup(RawPlanObject *p, Rec *x, int64_t **cell, int64_t *t) {
    long long r;
    if (x->rid.obj != NULL) {
        if (!dedup_rid(x->rid.obj, &r)) return 0;
    } else {
        r = (long long)x->rid.v; /* [29a] digits: at most 18, so 0 to 2**63-1 */
    }
    if (dedup_chars(x->tcs, x->tcn, t)) return 0;
    if (p->blocks == NULL || x->name != p->k_prov || x->computer != p->k_comp ||
        x->channel != p->k_chan) {
        rp_drop_cache(p);
        PyObject *key = PyTuple_Pack(3, x->name, x->computer, x->channel);
        if (key == NULL) return -1;
        PyObject *blocks = PyDict_GetItemWithError(p->streams, key);
        Py_DECREF(key);
        if (blocks == NULL) return PyErr_Occurred() ? -1 : 0;
        if (!PyDict_CheckExact(blocks)) return 0;
        p->blocks = Py_NewRef(blocks);
        p->k_prov = Py_NewRef(x->name);
        p->k_comp = Py_NewRef(x->computer);
        p->k_chan = Py_NewRef(x->channel);
    }
    long long b = r >> 6;
    if (!p->have_view || b != p->blk) {
        if (p->have_view) {
            PyBuffer_Release(&p->view);
            p->have_view = 0;
        }
        Py_CLEAR(p->slots);
        PyObject *bo = PyLong_FromLongLong(b);
        if (bo == NULL) return -1;
        PyObject *slots = PyDict_GetItemWithError(p->blocks, bo);
        Py_DECREF(bo);
        if (slots == NULL) return PyErr_Occurred() ? -1 : 0;
        if (PyObject_GetBuffer(slots, &p->view, PyBUF_WRITABLE) < 0) {
            PyErr_Clear();
            return 0;
        }
        if (dedup_cell(&p->view, 0) == NULL) { /* another shape */
            PyBuffer_Release(&p->view);
            return 0;
        }
        p->have_view = 1;
        p->slots = Py_NewRef(slots);
        p->blk = b;
    }
    int64_t *c = dedup_cell(&p->view, r);
    if (*c != DEDUP_ABSENT) return 0;
    *cell = c;
    return 1;
}

/* The JSON line (with its "\n") of a parsed record as event_json_line writes its Event's:
 * 0; 1 or -1: the Event path renders it (an enrichment field, a value of another type); -2. */
static int render_rec(Out *o, Out *extra, Rec *x, PyObject *pguid) {
    int in_extra = 0, rc;
    if (!PyLong_CheckExact(x->eid)) return -1;
    rc = out_raw(o, "{\"EventID\":", 11);
    if (rc == 0) rc = out_value(o, x->eid);
    if (rc == 0) rc = render_fields(o, extra, x->fields, x->nf, x->base, &in_extra);
    /* the Event's TimeCreated would be the first 26 characters and "000Z" (ASCII, checked) */
    if (rc == 0)
        rc = render_system(o, x->name, pguid, x->version, x->level, x->task, x->opcode,
                           x->keywords, NULL, x->tcs, &x->rid, &x->pid, &x->tid, x->channel,
                           x->computer, x->user_id != NULL ? x->user_id : Py_None);
    if (rc == 0 && in_extra) {
        rc = out_raw(o, ",\"ExtraData\":", 13);
        if (rc == 0) rc = out_raw(o, extra->buf, extra->len);
        if (rc == 0) rc = out_raw(o, "}", 1);
    }
    if (rc == 0) rc = out_raw(o, "}\n", 2);
    return rc;
}

/* [27a2] The filter step (FilterStage._process_py with a compiled or a constant decider) over
 * a parsed record: 1 decided (``*include``; an included record's RuleName set in its field,
 * ``*rn`` that field and ``*rn_old`` its old value, for rp_take to keep or undo), 0 the Event
 * decides (nothing changed), -1 error. */
static int rp_filter(RawPlanObject *p, Rec *x, int *include_out, RawField **rn_out,
                     PyObject **rn_old_out, int *rn_canon_out) {
    int rc, include;
    RawField *rn = NULL;
    PyObject *rn_old = NULL;
    PyObject *dec = PyDict_GetItemWithError(p->c_deciders, x->eid);
    if (dec == NULL) return PyErr_Occurred() ? -1 : 0; /* made by the Python method */
    PyObject *res = NULL;
    if (Py_IS_TYPE(dec, &FilterDeciderType)) {
        Py_INCREF(dec);
        rc = fd_decide_rec(dec, x, &res);
        Py_DECREF(dec);
    } else if (PyFunction_Check(dec)) {
        /* [27a2] an EventID without rules: the engine's constant decider carries its
         * answer (sysmonx.filtering.engine._constant_decider) */
        PyObject *d = ((PyFunctionObject *)dec)->func_dict;
        res = d == NULL ? NULL : PyDict_GetItemWithError(d, rp_constant_s);
        if (res == NULL) return PyErr_Occurred() ? -1 : 0;
        Py_INCREF(res);
        rc = 1;
    } else {
        return 0;
    }
    if (rc <= 0) { /* the Python decider decides (and raises what it raises) */
        /* [27a2] but KeyboardInterrupt, SystemExit, ... are not swallowed */
        if (rc < 0 && !PyErr_ExceptionMatches(PyExc_Exception)) return -1;
        PyErr_Clear();
        return 0;
    }
    if (!PyTuple_CheckExact(res) || PyTuple_GET_SIZE(res) != 2) {
        Py_DECREF(res);
        return 0;
    }
    include = PyObject_IsTrue(PyTuple_GET_ITEM(res, 0));
    PyObject *name = PyTuple_GET_ITEM(res, 1);
    if (include < 0) {
        Py_DECREF(res);
        if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
        PyErr_Clear();
        return 0;
    }
    if (include && name != Py_None) {
        if (!PyUnicode_CheckExact(name) || fd_rule_name == NULL) {
            Py_DECREF(res);
            return 0;
        }
        rn = field_named(x->fields, x->nf, fd_rule_name);
        if (rn == NULL) {
            /* no RuleName field: only "-" leaves the fields as they are */
            if (PyUnicode_CompareWithASCIIString(name, "-") != 0) {
                Py_DECREF(res);
                return 0;
            }
        } else { /* set_rule_name's change, undone below if the record goes back */
            rn_old = rn->val;
            rn->val = Py_NewRef(name);
            /* [28c] the old value's flag kept in rn_old's place: see rp_take */
            *rn_canon_out = rn->canon;
            rn->canon = 0;
        }
    }
    Py_DECREF(res);
    *include_out = include;
    *rn_out = rn;
    *rn_old_out = rn_old;
    return 1;
}

/* A parsed record through the plan: 1 written (or its write's failure handed to
 * ``failure``), 0 the Event decides (nothing changed), -1 error (``failure`` raised: the
 * record counts as handed to the sink, as in run_batch). */
static int rp_take(RawPlanObject *p, Rec *x, PyObject *pguid, int sysmon, PyObject *path) {
    int64_t *cell = NULL, t = 0;
    int rc;
    long v = 0;
    int include = 1;
    RawField *rn = NULL;
    PyObject *rn_old = NULL;
    int rn_canon = 0;
    /* [27a2] the checks in the stages' order (none changes anything; the filter's RuleName
     * swap is undone at ``back``) */
    for (int k = 0; k < p->nk; k++) {
        switch (p->kinds[k]) {
        case RK_DEDUP:
            if ((rc = rp_dedup(p, x, &cell, &t)) != 1) goto back_rc;
            break;
        case RK_CLOCK:
            if ((rc = rp_clock(p, x, path)) != 1) goto back_rc;
            break;
        case RK_GATE:
            if (!sysmon) goto back;
            break;
        case RK_COUNT:
        case RK_FILTER:
            if (!sysmon) goto back;
            if (!PyLong_CheckExact(x->eid)) goto back;
            int overflow;
            v = PyLong_AsLongAndOverflow(x->eid, &overflow);
            if (overflow || (v == -1 && PyErr_Occurred())) { PyErr_Clear(); goto back; }
            if (p->kinds[k] == RK_FILTER) {
                rc = rp_filter(p, x, &include, &rn, &rn_old, &rn_canon);
                if (rc != 1) goto back_rc;
            }
            break;
        }
    }
    goto checked;
back_rc:
    if (rc < 0) goto back_error;
    goto back;
checked:;
    Py_ssize_t e = -1;
    EidCounts *table = include ? &p->inc : &p->exc;
    if (p->count != NULL || p->filter != NULL) {
        e = rp_eid_slot(table, x->eid, v);
        if (e < 0) goto back;
    }
    if (!include) { /* excluded: counted, not written */
        if (cell != NULL) *cell = t;
        if (p->gate != NULL) p->gate_n++;
        table->n[e]++;
        p->raw++;
        return 1;
    }
    Out o, xo;
    o.buf = o.stack; o.len = 0; o.cap = sizeof o.stack;
    xo.buf = xo.stack; xo.len = 0; xo.cap = sizeof xo.stack;
    rc = render_rec(&o, &xo, x, pguid);
    PyObject *line = NULL;
    if (rc == 0) line = PyBytes_FromStringAndSize(o.buf, o.len);
    if (o.buf != o.stack) PyMem_Free(o.buf);
    if (xo.buf != xo.stack) PyMem_Free(xo.buf);
    if (rc != 0) {
        if (rc == -1 || rc == 1) {
            PyErr_Clear();
            goto back;
        }
        goto back_error;
    }
    if (line == NULL) goto back_error;
    /* everything passed: the stages' changes, then the write */
    Py_XDECREF(rn_old);
    if (cell != NULL) *cell = t;
    if (p->gate != NULL) p->gate_n++;
    if (e >= 0) table->n[e]++;
    p->raw++;
    PyObject *r = PyObject_CallOneArg(p->write, line);
    Py_DECREF(line);
    if (r != NULL) {
        Py_DECREF(r);
        p->sent++;
        return 1;
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyObject *exc = take_exception();
    if (exc == NULL) return -1;
    r = PyObject_CallOneArg(p->failure, exc);
    Py_DECREF(exc);
    if (r == NULL) {
        /* raised (the fatal policy): not through the source, which would take it for a read
         * error; the loop raises it after this list (take_error) */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
        p->error = take_exception();
        return p->error == NULL ? -1 : 1;
    }
    Py_DECREF(r);
    return 1;
back: /* the record goes the Event way, as parsed */
    if (rn != NULL) {
        Py_SETREF(rn->val, rn_old);
        rn->canon = rn_canon;
    }
    return 0;
back_error:
    if (rn != NULL) {
        Py_SETREF(rn->val, rn_old);
        rn->canon = rn_canon;
    }
    return -1;
}

static PyObject *rp_take_error(RawPlanObject *p, PyObject *unused) {
    PyObject *e = p->error;
    p->error = NULL;
    if (e == NULL) Py_RETURN_NONE;
    return e;
}

static PyMethodDef rp_methods[] = {
    {"take_error", (PyCFunction)rp_take_error, METH_NOARGS,
     "take_error() -> the exception the sink slot's failure() raised (then cleared), or None"},
    {NULL}};

static PyMemberDef rp_members[] = {
    {"raw", T_PYSSIZET, offsetof(RawPlanObject, raw), READONLY,
     "records written without an Event"},
    {"sent", T_PYSSIZET, offsetof(RawPlanObject, sent), 0,
     "lines written (the caller adds them to its sink slot and may reset this)"},
    {NULL}};

static PyTypeObject RawPlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sysmonx.core._speedups.RawPlan",
    .tp_basicsize = sizeof(RawPlanObject),
    .tp_dealloc = (destructor)rp_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "RawPlan(steps, writer, failure, pipeline): the replay's stages and its JSON-lines "
              "sink over a record's text, for evtx_batch (records every step passes are written "
              "without an Event).",
    .tp_traverse = (traverseproc)rp_traverse,
    .tp_clear = (inquiry)rp_clear,
    .tp_members = rp_members,
    .tp_methods = rp_methods,
    .tp_new = rp_new,
};

/* [20c] Defined in the section of that tag at the end of this file. */
static int add_filter_decider(PyObject *m);
/* Defined in the Sigma alerts section at the end of this file. */
static PyObject *py_alert_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
/* [17q] Defined in the section of that tag at the end of this file. */
static PyObject *py_sigma_alerts(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
static PyObject *py_set_rule_name(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
static PyObject *py_set_decider_event(PyObject *self, PyObject *et);
static PyObject *py_sigma_match(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
static PyObject *py_sigma_process(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
static PyObject *py_setup_sigma_alerts(PyObject *self, PyObject *args);

static PyMethodDef methods[] = {
    {"setup_convert", py_setup_convert, METH_VARARGS,
     "setup_convert(Event, guid_fields, sysmon_providers, provider_guids, fallback): the "
     "objects convert shares with sysmonx.sources.evtx."},
    {"setup_json", py_setup_json, METH_VARARGS,
     "setup_json(Event, enrichment_names, split_enrichment, utc, fallback): the objects "
     "event_json shares with sysmonx.sinks.jsonl."},
    {"convert_raw", (PyCFunction)(void (*)(void))py_convert_raw, METH_FASTCALL,
     "convert_raw(text, origin) -> Event | None: a records_json() record's data JSON as an "
     "Event, None for any shape this does not handle."},
    {"convert", (PyCFunction)(void (*)(void))py_convert, METH_FASTCALL,
     "convert(text, origin, notes=None) -> Event: convert_raw, else the Python fallback."},
    {"event_json_raw", (PyCFunction)py_event_json_raw, METH_O,
     "event_json_raw(event) -> bytes | None: the JSON line of an Event (no line break), None "
     "for anything this does not handle."},
    {"event_json", (PyCFunction)py_event_json, METH_O,
     "event_json(event) -> bytes: event_json_raw, else the Python fallback."},
    {"set_decider_event", (PyCFunction)py_set_decider_event, METH_O,
     "set_decider_event(Event): FilterDecider objects then also take an Event (decide(event): "
     "an EVTX record's fields read from its text)."},
    {"set_rule_name", (PyCFunction)(void (*)(void))py_set_rule_name, METH_FASTCALL,
     "set_rule_name(event, name) -> bool: the RuleName field of an EVTX record whose fields "
     "are still slices of its text set to name in place; False (nothing done) otherwise."},
    {"evtx_batch", (PyCFunction)(void (*)(void))py_evtx_batch, METH_FASTCALL,
     "evtx_batch(it, first, last, seen_ids, path, notes, out, limit, plan=None) -> (status, seen, "
     "last_rid, payload): the EVTX reader's record loop for one chunk (see the source)."},
    {"run_batch", (PyCFunction)(void (*)(void))py_run_batch, METH_FASTCALL,
     "run_batch(items, processes, emits, event_type, write, failure, deliver, pipeline) -> "
     "sent: the recorded-run loop over one list of items (see the source)."},
    {"alert_fields", (PyCFunction)(void (*)(void))py_alert_fields, METH_FASTCALL,
     "alert_fields(data, names, limit) -> dict | None: the key fields of a Sigma alert (see "
     "the Sigma alerts section of the source); None for anything this does not handle."},
    {"sigma_alerts", (PyCFunction)(void (*)(void))py_sigma_alerts, METH_FASTCALL,
     "sigma_alerts(stage, event, hits, rows, limit, alert_type, names=None) -> list | None: "
     "a detection "
     "stage's alerts and counts for one event without correlations (see the [17q] section "
     "of the source); None, nothing changed, for anything this does not handle."},
    {"setup_sigma_alerts", py_setup_sigma_alerts, METH_VARARGS,
     "setup_sigma_alerts(source_of, matched_event, max_fields=-1): the functions sigma_alerts "
     "calls for an "
     "alert's source_file and event (sysmonx.detection.alerts); until set, sigma_alerts "
     "returns None. With max_fields >= 0 (alerts.MAX_EVENT_FIELDS) sigma_alerts builds both "
     "itself by the same rule, once per event, and calls the functions only for what "
     "alert_fields leaves to Python."},
    {"sigma_match", (PyCFunction)(void (*)(void))py_sigma_match, METH_FASTCALL,
     "sigma_match(sysmon, event, index) -> list | None: the rules a Sysmon event matches "
     "(see the [17q] section of the source); None, nothing changed, for anything this does "
     "not handle."},
    {"sigma_process", (PyCFunction)(void (*)(void))py_sigma_process, METH_FASTCALL,
     "sigma_process(stage, event, from_event, match, index, alert_type, names) -> list | "
     "None: a detection stage's process(event) without correlations or rule profile (see "
     "the [17q] section of the source); None, nothing changed, for anything else."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "Compiled fast paths for EVTX record conversion and JSON lines (see sysmonx.core.native).", -1,
    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__speedups(void) {
    empty_str = PyUnicode_FromStringAndSize("", 0);
    str_true = PyUnicode_InternFromString("true");
    str_false = PyUnicode_InternFromString("false");
    if (empty_str == NULL || str_true == NULL || str_false == NULL) return NULL;
    if (PyType_Ready(&DedupType) < 0 || PyType_Ready(&LineWriterType) < 0 ||
        PyType_Ready(&RawDataType) < 0 || PyType_Ready(&LazyDataType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    Py_INCREF(&DedupType);
    if (PyModule_AddObject(m, "Dedup", (PyObject *)&DedupType) < 0) {
        Py_DECREF(&DedupType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&LineWriterType);
    if (PyModule_AddObject(m, "LineWriter", (PyObject *)&LineWriterType) < 0) {
        Py_DECREF(&LineWriterType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyType_Ready(&StageFastType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&StageFastType);
    if (PyModule_AddObject(m, "StageFast", (PyObject *)&StageFastType) < 0) {
        Py_DECREF(&StageFastType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyType_Ready(&RawPlanType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&RawPlanType);
    if (PyModule_AddObject(m, "RawPlan", (PyObject *)&RawPlanType) < 0) {
        Py_DECREF(&RawPlanType);
        Py_DECREF(m);
        return NULL;
    }
    if (add_filter_decider(m) < 0) {  /* [20c] */
        Py_DECREF(m);
        return NULL;
    }
    return m;
}


/* ===========================================================================================
 * Sigma alerts (sysmonx.detection.stage.DetectionStage._alert)
 *
 * alert_fields(data, names, limit): the dict
 *     {n: v if len(v) <= limit else v[:limit] + "\u2026" for n in names
 *      if (v := data.get(n)) is not None}
 * for an exact dict ``data``, a tuple ``names`` and an int ``limit``; the Python expression in
 * DetectionStage._fields_py defines the behaviour. Returns None (nothing raised) when the
 * arguments are of other types, so that the caller runs the Python expression instead; an
 * error of len() or of slicing a value propagates as it would in Python.
 * =========================================================================================== */

static PyObject *alert_ellipsis;

static PyObject *py_alert_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "alert_fields(data, names, limit) takes 3 arguments");
        return NULL;
    }
    PyObject *data = args[0], *names = args[1];
    if (!PyDict_CheckExact(data) || !PyTuple_CheckExact(names) || !PyLong_CheckExact(args[2]))
        Py_RETURN_NONE;
    int overflow = 0;
    long long limit = PyLong_AsLongLongAndOverflow(args[2], &overflow);
    if (overflow != 0 || (limit == -1 && PyErr_Occurred()) || limit < 0) {
        PyErr_Clear();
        Py_RETURN_NONE; /* huge or negative limits: the Python expression */
    }
    if (alert_ellipsis == NULL) {
        alert_ellipsis = PyUnicode_FromString("\xe2\x80\xa6"); /* U+2026 */
        if (alert_ellipsis == NULL) return NULL;
    }
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *v = PyDict_GetItemWithError(data, name); /* borrowed */
        if (v == NULL) {
            if (PyErr_Occurred()) goto fail;
            continue;
        }
        if (v == Py_None) continue;
        Py_ssize_t len;
        if (PyUnicode_CheckExact(v)) {
            len = PyUnicode_GET_LENGTH(v);
        } else {
            len = PyObject_Length(v);
            if (len < 0) goto fail;
        }
        if ((long long)len <= limit) {
            if (PyDict_SetItem(out, name, v) < 0) goto fail;
            continue;
        }
        PyObject *cut = PySequence_GetSlice(v, 0, (Py_ssize_t)limit);
        if (cut == NULL) goto fail;
        PyObject *joined = PyNumber_Add(cut, alert_ellipsis);
        Py_DECREF(cut);
        if (joined == NULL) goto fail;
        int rc = PyDict_SetItem(out, name, joined);
        Py_DECREF(joined);
        if (rc < 0) goto fail;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}


/* ===========================================================================================
 * [17q] Sigma alerts of one event in one call (sysmonx.detection.stage.DetectionStage
 * .correlate_timed without correlations; its Python code defines the behaviour)
 *
 * sigma_alerts(stage, event, hits, rows, limit, alert_type, names=None) -> list | None
 *   stage: the DetectionStage; its ``matches`` and ``alert_counts`` Counters and its ``stats``
 *     (``matched``, ``alerts``, ``alerts_by_level``) are read on every call and updated
 *     exactly as the Python code does (``c[k] += 1`` through the objects' own item and
 *     number protocols, so a Counter's ``__missing__`` gives the 0 of a new key), in the
 *     same order: ``stats.matched``, ``matches`` per hit, then per alert ``stats.alerts``,
 *     ``alerts_by_level``, ``alert_counts``.
 *   hits: a non-empty list of CompiledRule (each read for its ``index``).
 *   rows: per rule index a tuple (key, title, level, status, tags, names, output, level_key)
 *     built by DetectionStage._alert_rows from the compiled rules.
 *   limit: the key fields' cut (an int), as for alert_fields.
 *   alert_type: the Alert class, called with the 18 positional arguments of
 *     DetectionStage._alert (the last two, source_file and event, from the functions given
 *     to setup_sigma_alerts: ``source_of(event)`` and ``matched_event(event, limit)``, called
 *     per alert as the Python code does; until they are set this returns None).
 *   names: None, or the 18 attribute names those arguments set, in order, when the caller
 *     has checked that calling alert_type does no more than set them (a dataclass with exactly
 *     these fields, no __post_init__, object's __new__ and __setattr__): the alert is then
 *     made by object.__new__ and the same 18 attribute sets in the same order, without the
 *     __init__ call (also checked here: the type's tp_new and tp_setattro are object's).
 * Returns None, with nothing changed, for what it leaves to the Python code: an event whose
 * ``data`` alert_fields does not take, a row that is not an 8-tuple, an index out of range.
 * An error while building the alerts propagates with nothing counted (as in Python, where
 * the alerts are built before anything is counted).
 * =========================================================================================== */

static PyObject *sa_index, *sa_data, *sa_time_created, *sa_record_id, *sa_computer,
    *sa_event_id, *sa_matches, *sa_alert_counts, *sa_stats, *sa_matched, *sa_alerts,
    *sa_alerts_by_level, *sa_detection, *sa_one;
/* sysmonx.detection.alerts.source_of and .matched_event (setup_sigma_alerts). */
static PyObject *sa_source_of, *sa_matched_event;
/* [18b] MAX_EVENT_FIELDS when given to setup_sigma_alerts (the matched event is then built
 * here, see sa_event_parts), else -1 (matched_event is called per alert). */
static Py_ssize_t sa_max_fields = -1;

static PyObject *py_setup_sigma_alerts(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *source_of, *matched_event;
    Py_ssize_t max_fields = -1;
    if (!PyArg_ParseTuple(args, "OO|n", &source_of, &matched_event, &max_fields)) return NULL;
    if (!PyCallable_Check(source_of) || !PyCallable_Check(matched_event)) {
        PyErr_SetString(PyExc_TypeError, "setup_sigma_alerts takes two callables");
        return NULL;
    }
    Py_XSETREF(sa_source_of, Py_NewRef(source_of));
    Py_XSETREF(sa_matched_event, Py_NewRef(matched_event));
    sa_max_fields = max_fields < 0 ? -1 : max_fields;
    Py_RETURN_NONE;
}


/* ===========================================================================================
 * [18b] An alert's source_file and matched event, built once per event in C
 * (sysmonx.detection.alerts.source_of and matched_event define the behaviour)
 *
 * sa_source(event): ``None if not origin or origin[0] is None else str(origin[0])`` of
 *   ``event.origin``.
 * sa_event_data(data, limit): matched_event's EventData: alert_fields(data, the first
 *   sa_max_fields keys of data, limit); None (nothing raised) when alert_fields leaves it to
 *   Python (data not an exact dict, an odd limit): the caller then calls matched_event.
 * sa_matched_dict(eid, rid, sys, event_data): {"EventID": eid, "EventRecordID": rid,
 *   "TimeCreated", "Provider", "Channel", "Computer" (sys, [20d]), "EventData": ...}.
 * sigma_alerts reads the source and the EventData once per event and gives each alert its own
 * dicts (the first alert the EventData read, each later one a copy), as the Python code, which
 * calls both functions per alert, gives equal values in distinct dicts.
 * =========================================================================================== */

static PyObject *sa_origin, *sa_k_event_id, *sa_k_record_id, *sa_k_event_data, *sa_provider,
    *sa_channel, *sa_k_time_created, *sa_k_provider, *sa_k_channel, *sa_k_computer, *sa_zulu;

static int sa18_init(void) {
    if (sa_zulu != NULL) return 0;
#define SA18_INTERN(var, s) if ((var = PyUnicode_InternFromString(s)) == NULL) return -1
    SA18_INTERN(sa_origin, "origin");
    SA18_INTERN(sa_k_event_id, "EventID");
    SA18_INTERN(sa_k_record_id, "EventRecordID");
    SA18_INTERN(sa_k_event_data, "EventData");
    SA18_INTERN(sa_provider, "provider");
    SA18_INTERN(sa_channel, "channel");
    SA18_INTERN(sa_k_time_created, "TimeCreated");
    SA18_INTERN(sa_k_provider, "Provider");
    SA18_INTERN(sa_k_channel, "Channel");
    SA18_INTERN(sa_k_computer, "Computer");
    SA18_INTERN(sa_zulu, "Z");
#undef SA18_INTERN
    return 0;
}

/* [20d] ``getattr(event, name) or ""`` (a new reference). */
static PyObject *sa_attr_or_empty(PyObject *event, PyObject *name) {
    PyObject *v = PyObject_GetAttr(event, name);
    if (v == NULL) return NULL;
    int truth = PyObject_IsTrue(v);
    if (truth < 0) {
        Py_DECREF(v);
        return NULL;
    }
    if (!truth) Py_SETREF(v, Py_NewRef(empty_str));
    return v;
}

/* [20d] alerts.system_time(t or "") for an exact str ``t`` (a new reference): the first 27
 * characters and ``Z`` when t is 30 long with ``T`` at 10 and ``Z`` last, else t. NULL with
 * nothing raised for anything else (the caller then calls matched_event). */
static PyObject *sa_system_time(PyObject *t) {
    if (t == Py_None) return Py_NewRef(empty_str);
    if (!PyUnicode_CheckExact(t)) return NULL;
    if (PyUnicode_GET_LENGTH(t) == 30 && PyUnicode_READ_CHAR(t, 10) == 'T' &&
        PyUnicode_READ_CHAR(t, 29) == 'Z') {
        PyObject *head = PyUnicode_Substring(t, 0, 27);
        if (head == NULL) return NULL;
        PyObject *out = PyUnicode_Concat(head, sa_zulu);
        Py_DECREF(head);
        return out;
    }
    return Py_NewRef(t);
}

static PyObject *sa_source(PyObject *event) {
    PyObject *origin = PyObject_GetAttr(event, sa_origin);
    if (origin == NULL) return NULL;
    int truth = PyObject_IsTrue(origin);
    if (truth <= 0) {
        Py_DECREF(origin);
        if (truth < 0) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *first = PySequence_GetItem(origin, 0);
    Py_DECREF(origin);
    if (first == NULL) return NULL;
    if (first == Py_None) return first;
    PyObject *s = PyObject_Str(first);
    Py_DECREF(first);
    return s;
}

static PyObject *py_alert_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

static PyObject *sa_event_data(PyObject *data, PyObject *limit) {
    if (!PyDict_CheckExact(data)) Py_RETURN_NONE;
    Py_ssize_t n = PyDict_GET_SIZE(data);
    if (n > sa_max_fields) n = sa_max_fields;
    PyObject *names = PyTuple_New(n);
    if (names == NULL) return NULL;
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    while (i < n && PyDict_Next(data, &pos, &k, &v)) PyTuple_SET_ITEM(names, i++, Py_NewRef(k));
    PyObject *fa[3] = {data, names, limit};
    PyObject *out = py_alert_fields(NULL, fa, 3);
    Py_DECREF(names);
    return out;
}

/* [20d] sys: the (TimeCreated, Provider, Channel, Computer) values, a 4-tuple. */
static PyObject *sa_matched_dict(PyObject *eid, PyObject *rid, PyObject *sys,
                                 PyObject *event_data) {
    PyObject *d = PyDict_New();
    if (d == NULL) return NULL;
    if (PyDict_SetItem(d, sa_k_event_id, eid) < 0 || PyDict_SetItem(d, sa_k_record_id, rid) < 0
        || PyDict_SetItem(d, sa_k_time_created, PyTuple_GET_ITEM(sys, 0)) < 0
        || PyDict_SetItem(d, sa_k_provider, PyTuple_GET_ITEM(sys, 1)) < 0
        || PyDict_SetItem(d, sa_k_channel, PyTuple_GET_ITEM(sys, 2)) < 0
        || PyDict_SetItem(d, sa_k_computer, PyTuple_GET_ITEM(sys, 3)) < 0
        || PyDict_SetItem(d, sa_k_event_data, event_data) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* [20d] The matched event's System values (sa_matched_dict's ``sys``) of ``event`` whose
 * time_created is ``t`` and computer (``or ""``) ``computer``; NULL with nothing raised when
 * sa_system_time leaves ``t`` to Python. */
static PyObject *sa_system(PyObject *event, PyObject *t, PyObject *computer) {
    PyObject *st = sa_system_time(t);
    if (st == NULL) return NULL;
    PyObject *prov = sa_attr_or_empty(event, sa_provider);
    PyObject *chan = prov == NULL ? NULL : sa_attr_or_empty(event, sa_channel);
    PyObject *out = chan == NULL ? NULL : PyTuple_Pack(4, st, prov, chan, computer);
    Py_DECREF(st);
    Py_XDECREF(prov);
    Py_XDECREF(chan);
    return out;
}

static int sa_init(void) {
    if (sa_one != NULL) return 0;
#define SA_INTERN(var, s) if ((var = PyUnicode_InternFromString(s)) == NULL) return -1
    SA_INTERN(sa_index, "index");
    SA_INTERN(sa_data, "data");
    SA_INTERN(sa_time_created, "time_created");
    SA_INTERN(sa_record_id, "record_id");
    SA_INTERN(sa_computer, "computer");
    SA_INTERN(sa_event_id, "event_id");
    SA_INTERN(sa_matches, "matches");
    SA_INTERN(sa_alert_counts, "alert_counts");
    SA_INTERN(sa_stats, "stats");
    SA_INTERN(sa_matched, "matched");
    SA_INTERN(sa_alerts, "alerts");
    SA_INTERN(sa_alerts_by_level, "alerts_by_level");
    SA_INTERN(sa_detection, "detection");
#undef SA_INTERN
    sa_one = PyLong_FromLong(1);
    return sa_one == NULL ? -1 : 0;
}

/* ``obj[key] += 1`` as Python runs it (BINARY_SUBSCR, +=, STORE_SUBSCR). */
static int sa_incr_item(PyObject *obj, PyObject *key) {
    PyObject *v = PyObject_GetItem(obj, key);
    if (v == NULL) return -1;
    PyObject *n = PyNumber_InPlaceAdd(v, sa_one);
    Py_DECREF(v);
    if (n == NULL) return -1;
    int rc = PyObject_SetItem(obj, key, n);
    Py_DECREF(n);
    return rc;
}

/* ``obj.name += 1``. */
static int sa_incr_attr(PyObject *obj, PyObject *name) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) return -1;
    PyObject *n = PyNumber_InPlaceAdd(v, sa_one);
    Py_DECREF(v);
    if (n == NULL) return -1;
    int rc = PyObject_SetAttr(obj, name, n);
    Py_DECREF(n);
    return rc;
}

/* The row of hit ``r`` (borrowed), or NULL with *fallback set (nothing raised) / an error. */
static PyObject *sa_row(PyObject *rows, PyObject *r, int *fallback) {
    PyObject *idx = PyObject_GetAttr(r, sa_index);
    if (idx == NULL) return NULL;
    Py_ssize_t i = PyLong_Check(idx) ? PyLong_AsSsize_t(idx) : -1;
    Py_DECREF(idx);
    if (i == -1 && PyErr_Occurred()) PyErr_Clear();
    if (i < 0 || i >= PyList_GET_SIZE(rows)) {
        *fallback = 1;
        return NULL;
    }
    PyObject *row = PyList_GET_ITEM(rows, i);
    if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != 8) {
        *fallback = 1;
        return NULL;
    }
    return row;
}

static PyObject *py_sigma_alerts(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6 && nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "sigma_alerts(stage, event, hits, rows, limit, alert_type, names=None) "
                        "takes 6 or 7 arguments");
        return NULL;
    }
    PyObject *stage = args[0], *event = args[1], *hits = args[2], *rows = args[3];
    PyObject *limit = args[4], *alert_type = args[5];
    PyObject *anames = nargs == 7 ? args[6] : Py_None;
    if (!PyList_CheckExact(hits) || !PyList_CheckExact(rows) || !PyLong_CheckExact(limit) ||
        sa_source_of == NULL || sa_matched_event == NULL)
        Py_RETURN_NONE;
    if (anames != Py_None) {
        PyTypeObject *tp = (PyTypeObject *)alert_type;
        if (!PyTuple_CheckExact(anames) || PyTuple_GET_SIZE(anames) != 18 ||
            !PyType_Check(alert_type) || tp->tp_new != PyBaseObject_Type.tp_new ||
            tp->tp_setattro != PyObject_GenericSetAttr)
            anames = Py_None; /* not the plain class the caller checked: call it */
    }
    if (sa_init() < 0) return NULL;
    Py_ssize_t nh = PyList_GET_SIZE(hits);
    PyObject *alerts = PyList_New(0);
    if (alerts == NULL) return NULL;
    PyObject *data = NULL, *t = NULL, *rid = NULL, *computer = NULL, *eid = NULL;
    PyObject *ids = NULL, *eids = NULL, *stats = NULL, *counter = NULL;
    PyObject *src1 = NULL, *edata = NULL; /* [18b] once per event, when sa_max_fields is set */
    PyObject *sys = NULL; /* [20d] the matched event's System values, with edata */
    int fallback = 0, edata_used = 0;
    if (sa_max_fields >= 0 && sa18_init() < 0) return NULL;
    /* 1. the alerts (nothing counted yet) */
    for (Py_ssize_t h = 0; h < nh; h++) {
        PyObject *row = sa_row(rows, PyList_GET_ITEM(hits, h), &fallback);
        if (row == NULL) goto fail;
        int output = PyObject_IsTrue(PyTuple_GET_ITEM(row, 6));
        if (output < 0) goto fail;
        if (!output) continue;
        if (data == NULL) { /* the event's parts, read once per event with an alert */
            if ((data = PyObject_GetAttr(event, sa_data)) == NULL) goto fail;
            if ((t = PyObject_GetAttr(event, sa_time_created)) == NULL) goto fail;
            if ((rid = PyObject_GetAttr(event, sa_record_id)) == NULL) goto fail;
            if ((computer = PyObject_GetAttr(event, sa_computer)) == NULL) goto fail;
            int truth = PyObject_IsTrue(computer);
            if (truth < 0) goto fail;
            if (!truth) Py_SETREF(computer, Py_NewRef(empty_str)); /* ``or ""`` */
            if ((eid = PyObject_GetAttr(event, sa_event_id)) == NULL) goto fail;
            if (sa_max_fields >= 0) { /* [18b] */
                if ((src1 = sa_source(event)) == NULL) goto fail;
                if ((edata = sa_event_data(data, limit)) == NULL) goto fail;
                if (edata == Py_None) Py_CLEAR(edata); /* matched_event per alert */
                if (edata != NULL && (sys = sa_system(event, t, computer)) == NULL) {
                    if (PyErr_Occurred()) goto fail;
                    Py_CLEAR(edata); /* [20d] an odd time: matched_event per alert */
                }
            }
        }
        PyObject *fa[3] = {data, PyTuple_GET_ITEM(row, 5), limit};
        PyObject *fields = py_alert_fields(NULL, fa, 3);
        if (fields == NULL) goto fail;
        if (fields == Py_None) {
            Py_DECREF(fields);
            fallback = 1;
            goto fail;
        }
        PyObject *group = PyDict_New();
        /* a new tuple per alert, as Python builds them */
        ids = rid == Py_None ? PyTuple_New(0) : PyTuple_Pack(1, rid);
        eids = PyTuple_Pack(1, eid);
        if (group == NULL || ids == NULL || eids == NULL) {
            Py_XDECREF(group);
            Py_DECREF(fields);
            goto fail;
        }
        PyObject *empty = PyTuple_New(0);
        /* source_of(event), matched_event(event, limit): per alert, as _alert calls them */
        PyObject *src = empty == NULL ? NULL
            : src1 != NULL ? Py_NewRef(src1) : PyObject_CallOneArg(sa_source_of, event);
        PyObject *matched = NULL;
        if (src != NULL && edata != NULL) { /* [18b] */
            PyObject *ed = edata_used ? PyDict_Copy(edata) : Py_NewRef(edata);
            edata_used = 1;
            if (ed != NULL) {
                matched = sa_matched_dict(eid, rid, sys, ed);
                Py_DECREF(ed);
            }
        } else if (src != NULL) {
            matched = PyObject_CallFunctionObjArgs(sa_matched_event, event, limit, NULL);
        }
        PyObject *a[18] = {PyTuple_GET_ITEM(row, 0), PyTuple_GET_ITEM(row, 1),
                           PyTuple_GET_ITEM(row, 2), PyTuple_GET_ITEM(row, 3), sa_detection,
                           PyTuple_GET_ITEM(row, 4), t, t, computer, group, ids, sa_one, eids,
                           empty, Py_None, fields, src, matched};
        PyObject *alert = NULL;
        if (matched != NULL && anames == Py_None) {
            alert = PyObject_Vectorcall(alert_type, a, 18, NULL);
        } else if (matched != NULL) { /* object.__new__(alert_type), then the 18 sets */
            alert = PyBaseObject_Type.tp_new((PyTypeObject *)alert_type, empty, NULL);
            for (Py_ssize_t i = 0; alert != NULL && i < 18; i++) {
                if (PyObject_GenericSetAttr(alert, PyTuple_GET_ITEM(anames, i), a[i]) < 0)
                    Py_CLEAR(alert);
            }
        }
        Py_XDECREF(src);
        Py_XDECREF(matched);
        Py_XDECREF(empty);
        Py_DECREF(group);
        Py_CLEAR(ids);
        Py_CLEAR(eids);
        Py_DECREF(fields);
        if (alert == NULL) goto fail;
        int rc = PyList_Append(alerts, alert);
        Py_DECREF(alert);
        if (rc < 0) goto fail;
    }
    /* 2. the counts, in the Python code's order */
    if ((stats = PyObject_GetAttr(stage, sa_stats)) == NULL) goto fail;
    if (sa_incr_attr(stats, sa_matched) < 0) goto fail;
    if ((counter = PyObject_GetAttr(stage, sa_matches)) == NULL) goto fail;
    for (Py_ssize_t h = 0; h < nh; h++) {
        PyObject *row = sa_row(rows, PyList_GET_ITEM(hits, h), &fallback);
        if (row == NULL) goto fail; /* checked above: not reached */
        if (sa_incr_item(counter, PyTuple_GET_ITEM(row, 0)) < 0) goto fail;
    }
    Py_CLEAR(counter);
    Py_ssize_t na = PyList_GET_SIZE(alerts);
    if (na) {
        PyObject *by_level = NULL, *acounts = NULL;
        Py_ssize_t k = 0;
        if ((by_level = PyObject_GetAttr(stats, sa_alerts_by_level)) == NULL) goto fail;
        if ((acounts = PyObject_GetAttr(stage, sa_alert_counts)) == NULL) {
            Py_DECREF(by_level);
            goto fail;
        }
        for (Py_ssize_t h = 0; h < nh && k < na; h++) {
            PyObject *row = sa_row(rows, PyList_GET_ITEM(hits, h), &fallback);
            int output = row == NULL ? -1 : PyObject_IsTrue(PyTuple_GET_ITEM(row, 6));
            if (output == 0) continue;
            if (output < 0 || sa_incr_attr(stats, sa_alerts) < 0 ||
                sa_incr_item(by_level, PyTuple_GET_ITEM(row, 7)) < 0 ||
                sa_incr_item(acounts, PyTuple_GET_ITEM(row, 0)) < 0) {
                Py_DECREF(by_level);
                Py_DECREF(acounts);
                goto fail;
            }
            k++;
        }
        Py_DECREF(by_level);
        Py_DECREF(acounts);
    }
    Py_DECREF(stats);
    Py_XDECREF(src1);
    Py_XDECREF(edata);
    Py_XDECREF(sys);
    Py_XDECREF(data);
    Py_XDECREF(t);
    Py_XDECREF(rid);
    Py_XDECREF(computer);
    Py_XDECREF(eid);
    return alerts;
fail:
    Py_DECREF(alerts);
    Py_XDECREF(src1);
    Py_XDECREF(edata);
    Py_XDECREF(sys);
    Py_XDECREF(data);
    Py_XDECREF(t);
    Py_XDECREF(rid);
    Py_XDECREF(computer);
    Py_XDECREF(eid);
    Py_XDECREF(ids);
    Py_XDECREF(eids);
    Py_XDECREF(stats);
    Py_XDECREF(counter);
    if (fallback && !PyErr_Occurred()) Py_RETURN_NONE;
    return NULL;
}


/* ===========================================================================================
 * [17q] A Sigma event's matching rules (sysmonx.detection.matcher.RuleMatcher.match for a
 * Sysmon event, then _Group.matches; their Python code defines the behaviour)
 *
 * sigma_match(sysmon, event, index) -> list | None
 *   sysmon: RuleMatcher._sysmon (provider -> {EventID: _Group}); index: matcher._index (the
 *   sort key of rules).
 * The event's group is looked up by its provider and EventID; no group: []. With a group:
 * its key (the event data's values of ``key_names``) is looked up in ``combos`` (a key not
 * remembered: ``_remember(values, event)``, the Python method, computes its entry), the
 * calibration countdown is run as _Group.matches runs it (``countdown -= 1`` while
 * ``next_relead``; at 0 ``_calibrate(entry)`` is called), the remembered matches are
 * copied and the rules still to evaluate are called ``evaluate(event, hits)`` in order; a
 * result of more than one rule is sorted by ``index``. Returns None, with nothing changed,
 * for everything else, which the Python code then runs: a provider with no Sysmon groups,
 * an event whose data is not a dict, a group with getters.
 * =========================================================================================== */

static PyObject *sm_provider, *sm_key_names, *sm_getter_fns, *sm_combos, *sm_next_relead,
    *sm_countdown, *sm_calibrate, *sm_sort, *sm_key, *sm_remember, *sm_raw_combos;

static int sm_init(void) {
    if (sm_key != NULL) return 0;
#define SM_INTERN(var, s) if ((var = PyUnicode_InternFromString(s)) == NULL) return -1
    SM_INTERN(sm_provider, "provider");
    SM_INTERN(sm_key_names, "key_names");
    SM_INTERN(sm_getter_fns, "getter_fns");
    SM_INTERN(sm_combos, "combos");
    SM_INTERN(sm_next_relead, "next_relead");
    SM_INTERN(sm_countdown, "countdown");
    SM_INTERN(sm_calibrate, "_calibrate");
    SM_INTERN(sm_sort, "sort");
    SM_INTERN(sm_key, "key");
    SM_INTERN(sm_remember, "_remember");
    SM_INTERN(sm_raw_combos, "raw_combos");
#undef SM_INTERN
    return 0;
}

/* [27c] The group key of an event whose EventData is still its record's slices (the _raw
 * slot set, the data slot empty; RawData, [26a]): one bytes object that spells, for each of
 * ``names`` in order, the value ``event.data.get(name)`` would give: a tag (0: no such
 * field; 1: a slice of the record's text, plain ASCII; 2, 3, 5: a str of 1, 2 or 4 bytes
 * per character; 6: [28c] a slice of escaped text, RawField.canon), the value's length in bytes, then those bytes. It reads back to exactly
 * one tuple of values, so events with equal raw keys have equal keys (the converse does
 * not hold: the same text as a slice and as a str differ), and it stands for that tuple
 * without making the event's dict or its strings. New reference; Py_None (a new reference)
 * when the event is not such an event, a name is not a str or there are more than
 * SM_RAW_MAX_NAMES names; NULL on error. */
#define SM_RAW_MAX_NAMES 64
static PyObject *sm_raw_key(PyObject *event, PyObject *names) {
    if (event_type == NULL || !Py_IS_TYPE(event, event_type) || !lazy_installed ||
        lazy_tag == 0 || event_type->tp_version_tag != lazy_tag)
        Py_RETURN_NONE; /* Event.data may not be the lazy descriptor: the attribute decides */
    PyObject *raw = SLOT(event, S_RAW);
    if (SLOT(event, S_DATA) != NULL || raw == NULL || !Py_IS_TYPE(raw, &RawDataType))
        Py_RETURN_NONE;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n > SM_RAW_MAX_NAMES) Py_RETURN_NONE;
    RawField *fs[SM_RAW_MAX_NAMES];
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_CheckExact(name)) Py_RETURN_NONE;
        RawField *f = fs[i] = rawdata_field((RawDataObject *)raw, name);
        size += 1 + (Py_ssize_t)sizeof(Py_ssize_t);
        if (f == NULL) continue;
        if (f->val == NULL || f->canon) {
            size += f->len;
        } else {
            if (!PyUnicode_CheckExact(f->val)) Py_RETURN_NONE;
            size += PyUnicode_GET_LENGTH(f->val) * PyUnicode_KIND(f->val);
        }
    }
    PyObject *key = PyBytes_FromStringAndSize(NULL, size);
    if (key == NULL) return NULL;
    char *p = PyBytes_AS_STRING(key);
    const unsigned char *base = ((RawDataObject *)raw)->base;
    for (Py_ssize_t i = 0; i < n; i++) {
        RawField *f = fs[i];
        const void *src = NULL;
        Py_ssize_t len = 0;
        char tag = 0;
        if (f != NULL && (f->val == NULL || f->canon)) {
            tag = f->canon ? 6 : 1; /* [28c] 6: escaped text (canonical: one text per value) */
            src = base + f->off;
            len = f->len;
        } else if (f != NULL) {
            int kind = PyUnicode_KIND(f->val);
            tag = (char)(1 + kind);
            src = PyUnicode_DATA(f->val);
            len = PyUnicode_GET_LENGTH(f->val) * kind;
        }
        *p++ = tag;
        memcpy(p, &len, sizeof len);
        p += sizeof len;
        if (len) memcpy(p, src, (size_t)len);
        p += len;
    }
    return key;
}

/* [27c] The bound of a group's raw_combos (matcher.COMBO_ENTRIES, the bound of combos):
 * full, it is cleared. */
#define SM_RAW_COMBO_ENTRIES 4096

static PyObject *py_sigma_match(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "sigma_match(sysmon, event, index) takes 3 arguments");
        return NULL;
    }
    PyObject *sysmon = args[0], *event = args[1], *index = args[2];
    if (!PyDict_CheckExact(sysmon)) Py_RETURN_NONE;
    if (sm_init() < 0 || sa_init() < 0) return NULL;
    PyObject *g = NULL, *names = NULL, *getters = NULL, *combos = NULL, *data = NULL;
    PyObject *values = NULL, *out = NULL, *rawmap = NULL, *rawkey = NULL, *entry = NULL;
    PyObject *prov = PyObject_GetAttr(event, sm_provider);
    if (prov == NULL) return NULL;
    PyObject *by_id = PyDict_GetItemWithError(sysmon, prov); /* borrowed */
    Py_DECREF(prov);
    if (by_id == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (!PyDict_CheckExact(by_id)) Py_RETURN_NONE;
    PyObject *eid = PyObject_GetAttr(event, sa_event_id);
    if (eid == NULL) return NULL;
    g = PyDict_GetItemWithError(by_id, eid);
    Py_DECREF(eid);
    if (g == NULL) {
        if (PyErr_Occurred()) return NULL;
        return PyList_New(0);
    }
    Py_INCREF(g);
    if ((getters = PyObject_GetAttr(g, sm_getter_fns)) == NULL) goto fail;
    int truth = PyObject_IsTrue(getters);
    if (truth != 0) goto done; /* -1: error, 1: getters: the Python code */
    if ((names = PyObject_GetAttr(g, sm_key_names)) == NULL) goto fail;
    if ((combos = PyObject_GetAttr(g, sm_combos)) == NULL) goto fail;
    if (!PyTuple_CheckExact(names) || !PyDict_CheckExact(combos)) goto done;
    /* [27c] an event still in its record's slices: its raw key (sm_raw_key) finds its entry
     * in the group's raw_combos (the entry combos holds for its values; the Python code
     * clears raw_combos with combos and moves it to the new entries of a re-choice);
     * neither the event's dict nor its strings are made */
    if ((rawmap = PyObject_GetAttr(g, sm_raw_combos)) == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) goto fail;
        PyErr_Clear(); /* a group without one (made by other code): the values' lookup */
    } else if (PyDict_CheckExact(rawmap)) {
        if ((rawkey = sm_raw_key(event, names)) == NULL) goto fail;
        if (rawkey == Py_None) {
            Py_CLEAR(rawkey);
        } else {
            entry = PyDict_GetItemWithError(rawmap, rawkey); /* borrowed */
            if (entry == NULL && PyErr_Occurred()) goto fail;
            Py_XINCREF(entry);
        }
    }
    if (entry == NULL) {
        if ((data = PyObject_GetAttr(event, sa_data)) == NULL) goto fail;
        if (!PyDict_CheckExact(data)) goto done;
        Py_ssize_t n = PyTuple_GET_SIZE(names);
        if ((values = PyTuple_New(n)) == NULL) goto fail;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = PyDict_GetItemWithError(data, PyTuple_GET_ITEM(names, i));
            if (v == NULL) {
                if (PyErr_Occurred()) goto fail;
                v = Py_None;
            }
            PyTuple_SET_ITEM(values, i, Py_NewRef(v));
        }
        entry = PyDict_GetItemWithError(combos, values); /* borrowed */
        if (entry != NULL) {
            Py_INCREF(entry);
        } else { /* ``entry = self._remember(values, event)`` */
            if (PyErr_Occurred()) goto fail;
            entry = PyObject_CallMethodObjArgs(g, sm_remember, values, event, NULL);
            if (entry == NULL) goto fail;
        }
        if (rawkey != NULL) { /* [27c] the raw key finds the entry while combos holds it */
            PyObject *now = PyDict_GetItemWithError(combos, values); /* borrowed */
            int rc = now == NULL && PyErr_Occurred() ? -1 : 0;
            if (rc == 0 && now == entry) {
                if (PyDict_GET_SIZE(rawmap) >= SM_RAW_COMBO_ENTRIES) PyDict_Clear(rawmap);
                rc = PyDict_SetItem(rawmap, rawkey, entry);
            }
            if (rc < 0) {
                Py_DECREF(entry);
                entry = NULL;
                goto fail;
            }
        }
    }
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 4 ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(entry, 2)) ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(entry, 3))) {
        Py_DECREF(entry);
        PyErr_SetString(PyExc_TypeError, "sigma_match: a group's entry is not a 4-tuple");
        entry = NULL;
        goto fail;
    }
    /* if self.next_relead: self.countdown -= 1; if not self.countdown: self._calibrate(entry) */
    PyObject *nr = PyObject_GetAttr(g, sm_next_relead);
    truth = nr == NULL ? -1 : PyObject_IsTrue(nr);
    Py_XDECREF(nr);
    if (truth < 0) {
        Py_DECREF(entry);
        goto fail;
    }
    if (truth) {
        PyObject *cd = PyObject_GetAttr(g, sm_countdown);
        PyObject *cd1 = cd == NULL ? NULL : PyNumber_InPlaceSubtract(cd, sa_one);
        Py_XDECREF(cd);
        if (cd1 == NULL || PyObject_SetAttr(g, sm_countdown, cd1) < 0) {
            Py_XDECREF(cd1);
            Py_DECREF(entry);
            goto fail;
        }
        PyObject *now = PyObject_GetAttr(g, sm_countdown); /* re-read, as Python does */
        Py_DECREF(cd1);
        truth = now == NULL ? -1 : PyObject_IsTrue(now);
        Py_XDECREF(now);
        if (truth < 0) {
            Py_DECREF(entry);
            goto fail;
        }
        if (!truth) {
            PyObject *r = PyObject_CallMethodOneArg(g, sm_calibrate, entry);
            if (r == NULL) {
                Py_DECREF(entry);
                goto fail;
            }
            Py_DECREF(r);
        }
    }
    PyObject *pending = PyTuple_GET_ITEM(entry, 3);
    out = PySequence_List(PyTuple_GET_ITEM(entry, 2));
    if (out == NULL) {
        Py_DECREF(entry);
        goto fail;
    }
    Py_ssize_t np = PyTuple_GET_SIZE(pending);
    if (np) {
        PyObject *hits = PyTuple_GET_ITEM(entry, 0);
        for (Py_ssize_t i = 0; i < np; i++) {
            PyObject *pair = PyTuple_GET_ITEM(pending, i);
            if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_TypeError, "sigma_match: a pending entry is not a pair");
                Py_DECREF(entry);
                goto fail;
            }
            PyObject *ea[2] = {event, hits};
            PyObject *ok = PyObject_Vectorcall(PyTuple_GET_ITEM(pair, 0), ea, 2, NULL);
            truth = ok == NULL ? -1 : PyObject_IsTrue(ok);
            Py_XDECREF(ok);
            if (truth < 0 || (truth && PyList_Append(out, PyTuple_GET_ITEM(pair, 1)) < 0)) {
                Py_DECREF(entry);
                goto fail;
            }
        }
        if (PyList_GET_SIZE(out) > 1) {
            PyObject *sort = PyObject_GetAttr(out, sm_sort);
            PyObject *kw = sort == NULL ? NULL : PyDict_New();
            PyObject *r = NULL;
            PyObject *empty = PyTuple_New(0);
            if (kw != NULL && empty != NULL && PyDict_SetItem(kw, sm_key, index) == 0)
                r = PyObject_Call(sort, empty, kw);
            Py_XDECREF(empty);
            Py_XDECREF(sort);
            Py_XDECREF(kw);
            if (r == NULL) {
                Py_DECREF(entry);
                goto fail;
            }
            Py_DECREF(r);
        }
    }
    Py_DECREF(entry);
    goto finish;
done: /* the Python code's case, or an error (then out stays NULL) */
    if (PyErr_Occurred()) goto fail;
    out = Py_NewRef(Py_None);
finish:
fail:
    Py_XDECREF(g);
    Py_XDECREF(names);
    Py_XDECREF(getters);
    Py_XDECREF(combos);
    Py_XDECREF(data);
    Py_XDECREF(values);
    Py_XDECREF(rawmap);
    Py_XDECREF(rawkey);
    return out;
}


/* ===========================================================================================
 * [17q] A detection stage's process(event) without correlations and without a rule profile
 * (sysmonx.detection.stage.DetectionStage.process; its Python code defines the behaviour)
 *
 * sigma_process(stage, event, from_event, match, index, alert_type, names) -> list | None
 *   from_event: stage._FROM_EVENT; match: RuleMatcher.match (the function the matcher's type
 *   must have); index, alert_type, names: as for sigma_match and sigma_alerts.
 * Returns None, with nothing changed, when the stage has a correlation engine, its matcher
 * has a ``match`` of its own (a rule profile is set) or another type's ``match``: the Python
 * code runs then. Otherwise: ``stats.events += 1``; the hits from sigma_match, or from
 * ``matcher.match(event)`` where sigma_match leaves the event to Python; no hit: the (new,
 * empty) list; else the alerts from sigma_alerts with ``stage._rows`` (built by
 * ``stage._alert_rows()`` when still None), or ``stage.correlate_timed(event, hits,
 * from_event)`` where sigma_alerts leaves the event to Python.
 * =========================================================================================== */

static PyObject *sp_matcher, *sp_correlation, *sp_match, *sp_sysmon, *sp_events, *sp_rows,
    *sp_alert_rows, *sp_options, *sp_max_field_chars, *sp_correlate_timed;

static int sp_init(void) {
    if (sp_correlate_timed != NULL) return 0;
#define SP_INTERN(var, s) if ((var = PyUnicode_InternFromString(s)) == NULL) return -1
    SP_INTERN(sp_matcher, "matcher");
    SP_INTERN(sp_correlation, "correlation");
    SP_INTERN(sp_match, "match");
    SP_INTERN(sp_sysmon, "_sysmon");
    SP_INTERN(sp_events, "events");
    SP_INTERN(sp_rows, "_rows");
    SP_INTERN(sp_alert_rows, "_alert_rows");
    SP_INTERN(sp_options, "options");
    SP_INTERN(sp_max_field_chars, "max_field_chars");
    SP_INTERN(sp_correlate_timed, "correlate_timed");
#undef SP_INTERN
    return 0;
}

static PyObject *py_sigma_process(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "sigma_process(stage, event, from_event, match, "
                                         "index, alert_type, names) takes 7 arguments");
        return NULL;
    }
    PyObject *stage = args[0], *event = args[1], *from_event = args[2], *match_fn = args[3];
    PyObject *index = args[4], *alert_type = args[5], *names = args[6];
    if (sp_init() < 0 || sa_init() < 0) return NULL;
    PyObject *matcher = NULL, *corr = NULL, *d = NULL, *tm = NULL, *stats = NULL;
    PyObject *sysmon = NULL, *hits = NULL, *rows = NULL, *opts = NULL, *limit = NULL;
    PyObject *out = NULL;
    /* 1. the cases left to Python, nothing changed */
    if ((corr = PyObject_GetAttr(stage, sp_correlation)) == NULL) goto fail;
    if (corr != Py_None) goto left;
    if ((matcher = PyObject_GetAttr(stage, sp_matcher)) == NULL) goto fail;
    if ((tm = PyObject_GetAttr((PyObject *)Py_TYPE(matcher), sp_match)) == NULL) goto fail;
    if (tm != match_fn) goto left;
    if ((d = PyObject_GenericGetDict(matcher, NULL)) == NULL) {
        PyErr_Clear();
        goto left;
    }
    if (!PyDict_Check(d)) goto left;
    int has = PyDict_Contains(d, sp_match);
    if (has < 0) goto fail;
    if (has) goto left; /* a rule profile's match */
    /* 2. from here on every case is run (by the Python code where the compiled one leaves it) */
    if ((stats = PyObject_GetAttr(stage, sa_stats)) == NULL) goto fail;
    if (sa_incr_attr(stats, sp_events) < 0) goto fail;
    if ((sysmon = PyObject_GetAttr(matcher, sp_sysmon)) == NULL) goto fail;
    PyObject *ma[3] = {sysmon, event, index};
    if ((hits = py_sigma_match(NULL, ma, 3)) == NULL) goto fail;
    if (hits == Py_None) {
        Py_DECREF(hits);
        if ((hits = PyObject_CallMethodOneArg(matcher, sp_match, event)) == NULL) goto fail;
    }
    if (!PyList_CheckExact(hits) || PyList_GET_SIZE(hits) == 0) {
        int truth = PyObject_IsTrue(hits);
        if (truth < 0) goto fail;
        if (!truth) { /* ``if not hits and self.correlation is None: return []`` */
            out = PyList_New(0);
            goto finish;
        }
        goto python; /* a hit container sigma_alerts does not take */
    }
    if ((rows = PyObject_GetAttr(stage, sp_rows)) == NULL) goto fail;
    if (rows == Py_None) {
        Py_DECREF(rows);
        if ((rows = PyObject_CallMethodNoArgs(stage, sp_alert_rows)) == NULL) goto fail;
    }
    if ((opts = PyObject_GetAttr(stage, sp_options)) == NULL) goto fail;
    if ((limit = PyObject_GetAttr(opts, sp_max_field_chars)) == NULL) goto fail;
    PyObject *aa[7] = {stage, event, hits, rows, limit, alert_type, names};
    if ((out = py_sigma_alerts(NULL, aa, 7)) == NULL) goto fail;
    if (out != Py_None) goto finish;
    Py_CLEAR(out);
python:
    out = PyObject_CallMethodObjArgs(stage, sp_correlate_timed, event, hits, from_event, NULL);
    goto finish;
left:
    out = Py_NewRef(Py_None);
finish:
fail:
    Py_XDECREF(matcher);
    Py_XDECREF(corr);
    Py_XDECREF(d);
    Py_XDECREF(tm);
    Py_XDECREF(stats);
    Py_XDECREF(sysmon);
    Py_XDECREF(hits);
    Py_XDECREF(rows);
    Py_XDECREF(opts);
    Py_XDECREF(limit);
    return out;
}


/* ===========================================================================================
 * [20c] The filter's indexed decision (sysmonx.filtering.index.decider_from_plan)
 *
 * FilterDecider(readers, always, rule_name_used, miss, evals, owner, includes, stale, fill,
 *               build, fallback) is called as decide(data) and does what the Python decide of
 * decider_from_plan does (that function defines the behaviour; the names are its names):
 *     lv = {"RuleName": "-"} if rule_name_used else {}
 *     hits = set(always)
 *     for reader in readers:                  # reader = (field, memo, scan, used)
 *         raw = data.get(field); entry = memo.get(raw)
 *         if entry is None: entry = fill(reader, raw)   # fold, scan, remember: Python
 *         lv[field] = entry[0]
 *         if entry[1]: hits |= entry[1]
 *     if not hits: return miss
 *     for k in sorted(hits): the evaluator evals[k] (None: build(k) builds and stores it)
 *         gives (ok, name); the RuleName bookkeeping per rule set position owner[k]; the first
 *         ok returns (includes[pos], (current if stale else set_name) or "-"); else miss.
 * ``data`` that is not an exact dict, a reader, entry or result of another shape, an item
 * number or position that is not an int in range: fallback(data), the Python decide, decides
 * (from the start). Errors raised by fill, build or an evaluator propagate as in Python.
 * =========================================================================================== */

typedef struct {
    PyObject_HEAD
    PyObject *readers, *always, *miss, *evals, *owner, *includes, *fill, *build, *fallback;
    int rule_name_used, stale;
    vectorcallfunc vectorcall;
} FilterDeciderObject;

static PyObject *fd_rule_name = NULL;
static PyObject *fd_dash = NULL;
static PyTypeObject *fd_event_type = NULL; /* [26a] set_decider_event */

/* Item k's position, or -1 when k or its position is not usable (the fallback decides). */
static Py_ssize_t fd_position(FilterDeciderObject *self, PyObject *ko, Py_ssize_t *k) {
    if (!PyLong_CheckExact(ko)) return -1;
    int overflow = 0;
    long v = PyLong_AsLongAndOverflow(ko, &overflow);
    if (overflow || v < 0 || v >= PyList_GET_SIZE(self->evals) ||
        v >= PyTuple_GET_SIZE(self->owner))
        return -1;
    *k = (Py_ssize_t)v;
    PyObject *po = PyTuple_GET_ITEM(self->owner, v);
    if (!PyLong_CheckExact(po)) return -1;
    long pos = PyLong_AsLongAndOverflow(po, &overflow);
    if (overflow || pos < 0 || pos >= PyTuple_GET_SIZE(self->includes)) return -1;
    return (Py_ssize_t)pos;
}

/* 1: decided (*out: new reference), 0: the fallback decides, -1: error. ``data``: a dict, a
 * RawData object, or NULL: [27a] the fields ``rf[0..nrf)`` over ``rbase`` (a parsed record). */
static int fd_decide_any(FilterDeciderObject *self, PyObject *data, RawField *rf,
                         Py_ssize_t nrf, const unsigned char *rbase, PyObject **out) {
    if (data != NULL && !PyDict_CheckExact(data)) {
        rf = ((RawDataObject *)data)->f;
        nrf = Py_SIZE(data);
        rbase = ((RawDataObject *)data)->base;
        data = NULL;
    }
    PyObject *lv = NULL, *hits = NULL, *order = NULL, *keep = NULL;
    int rc = -1;
    *out = NULL;
    if ((lv = PyDict_New()) == NULL) return -1;
    if (self->rule_name_used && PyDict_SetItem(lv, fd_rule_name, fd_dash) < 0) goto done;
    if ((hits = PySet_New(self->always)) == NULL) goto done;
    Py_ssize_t nreaders = PyTuple_GET_SIZE(self->readers);
    for (Py_ssize_t i = 0; i < nreaders; i++) {
        PyObject *reader = PyTuple_GET_ITEM(self->readers, i);
        if (!PyTuple_CheckExact(reader) || PyTuple_GET_SIZE(reader) != 4 ||
            !PyDict_CheckExact(PyTuple_GET_ITEM(reader, 1))) {
            rc = 0;
            goto done;
        }
        PyObject *field = PyTuple_GET_ITEM(reader, 0), *memo = PyTuple_GET_ITEM(reader, 1);
        PyObject *raw;
        if (data == NULL) { /* [26a] an EVTX record's fields as slices: this one */
            if (!PyUnicode_CheckExact(field)) {
                rc = 0;
                goto done;
            }
            RawField *f = field_named(rf, nrf, field);
            if (f == NULL) {
                raw = Py_NewRef(Py_None);
            } else {
                raw = field_str(rbase, f);
                if (raw == NULL) goto done;
                /* [28c] an escaped value's str, made now, kept for the record's other reads
                 * (one str and one hash, as when the converter made it) */
                if (f->canon && f->val == NULL) f->val = Py_NewRef(raw);
            }
        } else {
            raw = PyDict_GetItemWithError(data, field);
            if (raw == NULL) {
                if (PyErr_Occurred()) goto done;
                raw = Py_None;
            }
            Py_INCREF(raw);  /* held while memo and fill use it */
        }
        PyObject *entry = PyDict_GetItemWithError(memo, raw);
        if (entry != NULL) {
            Py_INCREF(entry);
        } else if (!PyErr_Occurred()) {
            entry = PyObject_CallFunctionObjArgs(self->fill, reader, raw, NULL);
        }
        Py_DECREF(raw);
        if (entry == NULL) goto done;
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2) {
            Py_DECREF(entry);
            rc = 0;
            goto done;
        }
        PyObject *found = PyTuple_GET_ITEM(entry, 1);
        int any = PyDict_SetItem(lv, field, PyTuple_GET_ITEM(entry, 0));
        if (any == 0) any = PyObject_IsTrue(found);
        if (any > 0) {
            PyObject *u = PyNumber_InPlaceOr(hits, found);
            if (u == NULL) {
                any = -1;
            } else {
                Py_SETREF(hits, u);
            }
        }
        Py_DECREF(entry);
        if (any < 0) goto done;
    }
    if (!PyAnySet_Check(hits)) {
        rc = 0;
        goto done;
    }
    if (PySet_GET_SIZE(hits) == 0) {
        *out = Py_NewRef(self->miss);
        rc = 1;
        goto done;
    }
    if ((order = PySequence_List(hits)) == NULL || PyList_Sort(order) < 0) goto done;
    if ((keep = PyList_New(0)) == NULL) goto done;  /* the results the names below are from */
    PyObject *current = Py_None, *set_name = Py_None;
    Py_ssize_t at = -1, n = PyList_GET_SIZE(order);
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *ko = PyList_GET_ITEM(order, j);
        Py_ssize_t k = 0, pos = fd_position(self, ko, &k);
        if (pos < 0) {
            if (PyErr_Occurred()) PyErr_Clear();
            rc = 0;
            goto done;
        }
        PyObject *e = PyList_GET_ITEM(self->evals, k);
        if (e == Py_None) {
            if ((e = PyObject_CallOneArg(self->build, ko)) == NULL) goto done;
        } else {
            Py_INCREF(e);
        }
        PyObject *res = PyObject_CallOneArg(e, lv);
        Py_DECREF(e);
        if (res == NULL) goto done;
        int appended = PyList_Append(keep, res);
        Py_DECREF(res);
        if (appended < 0) goto done;
        if (!PyTuple_CheckExact(res) || PyTuple_GET_SIZE(res) != 2) {
            rc = 0;
            goto done;
        }
        if (pos != at) {
            at = pos;
            set_name = Py_None;
        }
        PyObject *name = PyTuple_GET_ITEM(res, 1);
        if (name != Py_None) current = set_name = name;
        int ok = PyObject_IsTrue(PyTuple_GET_ITEM(res, 0));
        if (ok < 0) goto done;
        if (ok) {
            PyObject *chosen = self->stale ? current : set_name;
            int named = PyObject_IsTrue(chosen);
            if (named < 0) goto done;
            *out = PyTuple_Pack(2, PyTuple_GET_ITEM(self->includes, pos), named ? chosen : fd_dash);
            rc = *out == NULL ? -1 : 1;
            goto done;
        }
    }
    *out = Py_NewRef(self->miss);
    rc = 1;
done:
    Py_XDECREF(lv);
    Py_XDECREF(hits);
    Py_XDECREF(order);
    Py_XDECREF(keep);
    return rc;
}

static int fd_decide(FilterDeciderObject *self, PyObject *data, PyObject **out) {
    return fd_decide_any(self, data, NULL, 0, NULL, out);
}

/* [27a] The decision over a parsed record's fields (RawPlan's filter step). */
static int fd_decide_rec(PyObject *decider, Rec *x, PyObject **out) {
    return fd_decide_any((FilterDeciderObject *)decider, NULL, x->fields, x->nf, x->base, out);
}

static PyObject *fd_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames) {
    FilterDeciderObject *self = (FilterDeciderObject *)op;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "decide(data) takes one argument");
        return NULL;
    }
    PyObject *data = args[0], *out = NULL;
    if (fd_event_type != NULL && Py_IS_TYPE(data, fd_event_type)) {
        /* [26a] decide(event): an EVTX record's fields read from its text, no dict made
         * (the fallback gets the dict); any other Event: decide(event.data) */
        PyObject *e = data, *d;
        if (event_type == fd_event_type) {
            PyObject *raw = SLOT(e, S_RAW);
            if (SLOT(e, S_DATA) == NULL && raw != NULL && Py_IS_TYPE(raw, &RawDataType)) {
                Py_INCREF(raw);
                int rc = fd_decide(self, raw, &out);
                Py_DECREF(raw);
                if (rc < 0) return NULL;
                if (rc > 0) return out;
            }
            d = event_data(e);
        } else { /* the converter is not set up: no Event has _raw */
            d = PyObject_GetAttrString(e, "data");
        }
        if (d == NULL) return NULL;
        if (PyDict_CheckExact(d)) {
            int rc = fd_decide(self, d, &out);
            if (rc != 0) {
                Py_DECREF(d);
                return rc < 0 ? NULL : out;
            }
        }
        out = PyObject_CallOneArg(self->fallback, d);
        Py_DECREF(d);
        return out;
    }
    if (PyDict_CheckExact(data)) {
        int rc = fd_decide(self, data, &out);
        if (rc < 0) return NULL;
        if (rc > 0) return out;
    }
    return PyObject_CallOneArg(self->fallback, data);
}

/* [26a] set_decider_event(Event): the type FilterDecider objects take as decide(event) */
static PyObject *py_set_decider_event(PyObject *self, PyObject *et) {
    if (!PyType_Check(et)) {
        PyErr_SetString(PyExc_TypeError, "set_decider_event(Event)");
        return NULL;
    }
    Py_INCREF(et);
    Py_XSETREF(fd_event_type, (PyTypeObject *)et);
    Py_RETURN_NONE;
}

/* [26a] set_rule_name(event, name) -> bool: an EVTX record's RuleName field, still a slice of
 * its text (no dict made), set to the str name in place, as the filter stage's
 * ``data["RuleName"] = name`` does on the dict; False (nothing done) for anything else. */
static PyObject *py_set_rule_name(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_rule_name(event, name)");
        return NULL;
    }
    PyObject *e = args[0], *name = args[1];
    if (fd_rule_name == NULL || event_type == NULL || !Py_IS_TYPE(e, event_type) ||
        !PyUnicode_CheckExact(name) || SLOT(e, S_DATA) != NULL)
        Py_RETURN_FALSE;
    PyObject *raw = SLOT(e, S_RAW);
    if (raw == NULL || !Py_IS_TYPE(raw, &RawDataType)) Py_RETURN_FALSE;
    RawField *f = rawdata_field((RawDataObject *)raw, fd_rule_name);
    if (f == NULL) Py_RETURN_FALSE;
    Py_XSETREF(f->val, Py_NewRef(name));
    f->canon = 0;
    Py_RETURN_TRUE;
}

static PyObject *fd_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *readers, *always, *miss, *evals, *owner, *includes, *fill, *build, *fallback;
    int rule_name_used, stale;
    if (kw != NULL && PyDict_GET_SIZE(kw)) {
        PyErr_SetString(PyExc_TypeError, "FilterDecider takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!pOO!O!O!pOOO:FilterDecider", &PyTuple_Type, &readers,
                          &PyFrozenSet_Type, &always, &rule_name_used, &miss, &PyList_Type,
                          &evals, &PyTuple_Type, &owner, &PyTuple_Type, &includes, &stale, &fill,
                          &build, &fallback))
        return NULL;
    if (fd_rule_name == NULL) {
        fd_rule_name = PyUnicode_InternFromString("RuleName");
        fd_dash = PyUnicode_InternFromString("-");
        if (fd_rule_name == NULL || fd_dash == NULL) return NULL;
    }
    FilterDeciderObject *self = (FilterDeciderObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->readers = Py_NewRef(readers);
    self->always = Py_NewRef(always);
    self->miss = Py_NewRef(miss);
    self->evals = Py_NewRef(evals);
    self->owner = Py_NewRef(owner);
    self->includes = Py_NewRef(includes);
    self->fill = Py_NewRef(fill);
    self->build = Py_NewRef(build);
    self->fallback = Py_NewRef(fallback);
    self->rule_name_used = rule_name_used;
    self->stale = stale;
    self->vectorcall = fd_vectorcall;
    return (PyObject *)self;
}

static int fd_traverse(FilterDeciderObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->readers);
    Py_VISIT(self->always);
    Py_VISIT(self->miss);
    Py_VISIT(self->evals);
    Py_VISIT(self->owner);
    Py_VISIT(self->includes);
    Py_VISIT(self->fill);
    Py_VISIT(self->build);
    Py_VISIT(self->fallback);
    return 0;
}

static int fd_clear(FilterDeciderObject *self) {
    Py_CLEAR(self->readers);
    Py_CLEAR(self->always);
    Py_CLEAR(self->miss);
    Py_CLEAR(self->evals);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->includes);
    Py_CLEAR(self->fill);
    Py_CLEAR(self->build);
    Py_CLEAR(self->fallback);
    return 0;
}

static void fd_dealloc(FilterDeciderObject *self) {
    PyObject_GC_UnTrack(self);
    fd_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef fd_members[] = {
    {"python", T_OBJECT_EX, offsetof(FilterDeciderObject, fallback), READONLY,
     "the Python decide this object computes (and hands other shapes to)"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FilterDeciderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sysmonx.core._speedups.FilterDecider",
    .tp_basicsize = sizeof(FilterDeciderObject),
    .tp_dealloc = (destructor)fd_dealloc,
    .tp_vectorcall_offset = offsetof(FilterDeciderObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "FilterDecider(readers, always, rule_name_used, miss, evals, owner, includes, "
              "stale, fill, build, fallback): the indexed filter's decide(data) -> (include, "
              "rule_name) (sysmonx.filtering.index.decider_from_plan defines it; .python is "
              "fallback, that definition).",
    .tp_traverse = (traverseproc)fd_traverse,
    .tp_clear = (inquiry)fd_clear,
    .tp_members = fd_members,
    .tp_new = fd_new,
};

/* Called by PyInit__speedups: adds FilterDecider to the module. */
static int add_filter_decider(PyObject *m) {
    if (PyType_Ready(&FilterDeciderType) < 0) return -1;
    if (fd_rule_name == NULL) { /* set_rule_name needs it before any decider is built */
        fd_rule_name = PyUnicode_InternFromString("RuleName");
        fd_dash = PyUnicode_InternFromString("-");
        if (fd_rule_name == NULL || fd_dash == NULL) return -1;
    }
    Py_INCREF(&FilterDeciderType);
    if (PyModule_AddObject(m, "FilterDecider", (PyObject *)&FilterDeciderType) < 0) {
        Py_DECREF(&FilterDeciderType);
        return -1;
    }
    return 0;
}
