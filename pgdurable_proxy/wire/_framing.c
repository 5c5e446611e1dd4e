/* The relay's hot path in C: the common case of ClientFramer.feed and ServerTracker.feed.
 *
 * Optional: `pip install .` builds it when a C compiler is there and installs without it
 * otherwise; pgdurable_proxy/wire/frames.py then uses the pure-Python feeds (or always,
 * with PGDURABLE_PURE_PYTHON=1). The logic stays in Python (client_frames.py,
 * server_frames.py): these types hold the state those classes read and write (as
 * attributes of the same names), and their feed() handles only chunks where nothing needs
 * Python -- every message complete or streamed, no candidate Query/Parse, nothing but
 * ReadyForQuery tracked -- returning the chunk itself. Anything else (a header cut by the
 * chunk, a message to hold, a bad header, a candidate, ParameterStatus, ...) goes to
 * self._feed_python(data) *before any state changed*, so the Python code sees exactly what
 * it would have seen alone.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#if SIZEOF_SIZE_T < 8
/* positions plus a 32-bit length must not overflow: elsewhere the pure-Python path runs */
#error "the compiled framing is for 64-bit platforms"
#endif

#define SMALL_MESSAGE_LIMIT 10000
#define LARGE_MESSAGE_LIMIT 0x3FFFFFFF

/* Frontend message types (client_frames.FRONTEND_TYPES) and what the framer does with each. */
#define FRONTEND 1 /* a frontend type of protocol 3.x */
#define SMALL 2    /* read by PostgreSQL with PQ_SMALL_MESSAGE_LIMIT */
#define HELD 4     /* Query/Parse: held whole and pre-filtered once logged in */
#define COUNTED 8  /* earns a ReadyForQuery: Query, Sync, FunctionCall */
#define TERMINATE 16

static unsigned char frontend_kind[256];

static PyObject *feed_python_name; /* "_feed_python", interned */

static void
init_kinds(void)
{
    const char *frontend = "BCDEFHPQSXdcfp", *small = "CDEHSX", *p;
    for (p = frontend; *p; p++)
        frontend_kind[(unsigned char)*p] |= FRONTEND;
    for (p = small; *p; p++)
        frontend_kind[(unsigned char)*p] |= SMALL;
    frontend_kind['Q'] |= HELD | COUNTED;
    frontend_kind['P'] |= HELD;
    frontend_kind['S'] |= COUNTED;
    frontend_kind['F'] |= COUNTED;
    frontend_kind['X'] |= TERMINATE;
}

static inline Py_ssize_t
int32_at(const unsigned char *p)
{
    return (Py_ssize_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                        ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
}

/* client_frames.is_candidate: does the message say `df` or `pg_durable`, in any ASCII case? */
static int
is_candidate(const unsigned char *s, Py_ssize_t n)
{
    static const char durable[] = "pg_durable";
    for (Py_ssize_t i = 0; i + 1 < n; i++) {
        unsigned char c = Py_TOLOWER(s[i]);
        if (c == 'd') {
            if (Py_TOLOWER(s[i + 1]) == 'f')
                return 1;
        }
        else if (c == 'p' && n - i >= 10) {
            Py_ssize_t k = 1;
            while (k < 10 && Py_TOLOWER(s[i + k]) == (unsigned char)durable[k])
                k++;
            if (k == 10)
                return 1;
        }
    }
    return 0;
}

static int
is_empty_bytearray(PyObject *o)
{
    return o != NULL && PyByteArray_CheckExact(o) && PyByteArray_GET_SIZE(o) == 0;
}

static PyObject *
feed_python(PyObject *self, PyObject *data)
{
    return PyObject_CallMethodOneArg(self, feed_python_name, data);
}

/* -- ClientFramerCore ------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    Py_ssize_t skip;     /* _skip: bytes of the current (streamed) message still to pass */
    PyObject *held;      /* _held: bytearray, an incomplete header or Query/Parse */
    Py_ssize_t requests; /* messages that each earn one ReadyForQuery */
    Py_ssize_t inspect_limit;
    char terminated;
} ClientFramerCore;

static PyObject *
client_feed(ClientFramerCore *self, PyObject *data)
{
    if (!PyBytes_CheckExact(data) || !is_empty_bytearray(self->held))
        return feed_python((PyObject *)self, data);
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data), pos = self->skip, requests = 0;
    int terminated = 0;
    if (pos >= n) {
        self->skip = pos - n;
        return Py_NewRef(data);
    }
    while (n - pos >= 5) {
        unsigned char kind = frontend_kind[buf[pos]];
        Py_ssize_t length = int32_at(buf + pos + 1);
        if (!(kind & FRONTEND) || length < 4 || length > LARGE_MESSAGE_LIMIT ||
            (length > SMALL_MESSAGE_LIMIT && (kind & SMALL)))
            return feed_python((PyObject *)self, data); /* it raises the violation */
        Py_ssize_t end = pos + 1 + length;
        if ((kind & HELD) && length <= self->inspect_limit &&
            (end > n || is_candidate(buf + pos, end - pos)))
            return feed_python((PyObject *)self, data); /* held, or offered */
        if (kind & COUNTED)
            requests++;
        else if (kind & TERMINATE)
            terminated = 1;
        pos = end;
    }
    if (pos < n) /* a header cut by the chunk: held */
        return feed_python((PyObject *)self, data);
    self->skip = pos - n;
    self->requests += requests;
    if (terminated)
        self->terminated = 1;
    return Py_NewRef(data);
}

static PyMethodDef client_methods[] = {
    {"feed", (PyCFunction)client_feed, METH_O,
     "Consume a chunk from the client; return the bytes to send upstream now."},
    {NULL},
};

static PyMemberDef client_members[] = {
    {"_skip", T_PYSSIZET, offsetof(ClientFramerCore, skip), 0, NULL},
    {"_held", T_OBJECT_EX, offsetof(ClientFramerCore, held), 0, NULL},
    {"requests", T_PYSSIZET, offsetof(ClientFramerCore, requests), 0, NULL},
    {"inspect_limit", T_PYSSIZET, offsetof(ClientFramerCore, inspect_limit), 0, NULL},
    {"terminated", T_BOOL, offsetof(ClientFramerCore, terminated), 0, NULL},
    {NULL},
};

static int
client_traverse(ClientFramerCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->held);
    return 0;
}

static int
client_clear(ClientFramerCore *self)
{
    Py_CLEAR(self->held);
    return 0;
}

static void
client_dealloc(ClientFramerCore *self)
{
    PyObject_GC_UnTrack(self);
    client_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ClientFramerCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pgdurable_proxy.wire._framing.ClientFramerCore",
    .tp_doc = "State and fast path of frames.ClientFramer.",
    .tp_basicsize = sizeof(ClientFramerCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)client_traverse,
    .tp_clear = (inquiry)client_clear,
    .tp_dealloc = (destructor)client_dealloc,
    .tp_methods = client_methods,
    .tp_members = client_members,
};

/* -- ServerTrackerCore ----------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Py_ssize_t remaining; /* bytes of the current message not seen yet */
    PyObject *partial;    /* bytearray: a header, or whole tracked message, being assembled */
    Py_ssize_t ready_count;
    int status; /* last ReadyForQuery status byte */
    char tapped; /* NoticeResponses are tracked too (notice tap) */
} ServerTrackerCore;

static PyObject *
server_feed(ServerTrackerCore *self, PyObject *data)
{
    if (!PyBytes_CheckExact(data) || !is_empty_bytearray(self->partial))
        return feed_python((PyObject *)self, data);
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data), pos = self->remaining, ready = 0;
    int status = self->status;
    if (pos >= n) {
        self->remaining = pos - n;
        return Py_NewRef(data);
    }
    while (n - pos >= 5) {
        unsigned char type = buf[pos];
        Py_ssize_t end = pos + 1 + int32_at(buf + pos + 1);
        if (type == 'Z') {
            if (end != pos + 6 || end > n) /* odd, or cut: Python holds it */
                return feed_python((PyObject *)self, data);
            status = buf[pos + 5];
            ready++;
        }
        else if (type == 'K' || type == 'S' || type == 'E' || (type == 'N' && self->tapped))
            return feed_python((PyObject *)self, data);
        pos = end;
    }
    if (pos < n) /* a header cut by the chunk */
        return feed_python((PyObject *)self, data);
    self->remaining = pos - n;
    self->ready_count += ready;
    self->status = status;
    return Py_NewRef(data);
}

static PyMethodDef server_methods[] = {
    {"feed", (PyCFunction)server_feed, METH_O,
     "Observe a chunk from the server; return what to forward."},
    {NULL},
};

static PyMemberDef server_members[] = {
    {"_remaining", T_PYSSIZET, offsetof(ServerTrackerCore, remaining), 0, NULL},
    {"_partial", T_OBJECT_EX, offsetof(ServerTrackerCore, partial), 0, NULL},
    {"ready_count", T_PYSSIZET, offsetof(ServerTrackerCore, ready_count), 0, NULL},
    {"status", T_INT, offsetof(ServerTrackerCore, status), 0, NULL},
    {"_tapped", T_BOOL, offsetof(ServerTrackerCore, tapped), 0, NULL},
    {NULL},
};

static int
server_traverse(ServerTrackerCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->partial);
    return 0;
}

static int
server_clear(ServerTrackerCore *self)
{
    Py_CLEAR(self->partial);
    return 0;
}

static void
server_dealloc(ServerTrackerCore *self)
{
    PyObject_GC_UnTrack(self);
    server_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ServerTrackerCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pgdurable_proxy.wire._framing.ServerTrackerCore",
    .tp_doc = "State and fast path of frames.ServerTracker.",
    .tp_basicsize = sizeof(ServerTrackerCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)server_traverse,
    .tp_clear = (inquiry)server_clear,
    .tp_dealloc = (destructor)server_dealloc,
    .tp_methods = server_methods,
    .tp_members = server_members,
};

/* -- module ---------------------------------------------------------------------------- */

static struct PyModuleDef framing_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pgdurable_proxy.wire._framing",
    .m_doc = "The common case of the relay's framing in C (see wire/frames.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__framing(void)
{
    init_kinds();
    feed_python_name = PyUnicode_InternFromString("_feed_python");
    if (feed_python_name == NULL || PyType_Ready(&ClientFramerCoreType) < 0 ||
        PyType_Ready(&ServerTrackerCoreType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&framing_module);
    if (module == NULL)
        return NULL;
    PyObject *client = (PyObject *)&ClientFramerCoreType;
    PyObject *server = (PyObject *)&ServerTrackerCoreType;
    if (PyModule_AddObjectRef(module, "ClientFramerCore", client) < 0 ||
        PyModule_AddObjectRef(module, "ServerTrackerCore", server) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
