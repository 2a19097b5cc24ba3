/* Native tracking of the live instances of sandbox classes, and the two hot
 * loops of migrating them (at the end of this file's helpers).
 *
 * The pure-Python tracker (tracking.py) gives every sandbox class a Python
 * __new__ that appends a weak reference to each new instance: a Python frame,
 * a weakref object and a list append on every creation.  This module does the
 * same job without a frame and without weak references:
 *
 *  - a "hooked" class gets live_alloc as its tp_alloc and live_free as its
 *    tp_free.  live_alloc allocates as PyType_GenericAlloc does, gives the
 *    object a fresh serial number, records (address -> serial) in one
 *    process-wide table of tracked objects and appends (address, serial) to the
 *    registry kept in the class's own __dict__.  Every way of creating an
 *    instance allocates through tp_alloc (a call of the class, object.__new__,
 *    pickle, copy), so all are recorded.  live_free, the last step of every
 *    deallocation of an instance of a hooked class, removes the address from
 *    the table before the memory is released.  When the class's __new__ is the
 *    tracked one, its tp_new is object's, as for a plain class.
 *
 *  - an entry of a registry is a live instance of that class exactly when the
 *    table still maps its address to its serial (so the memory holds that
 *    object: a freed and reused address has a new serial or no entry), the
 *    object's reference count is not zero (it is not being deallocated) and its
 *    type is the class.  Only after the first test passes is the object read.
 *    An entry whose object now has another hooked class (its __class__ was
 *    assigned) moves to that class's registry.
 *
 * Registries are compacted when they have doubled since their last compaction,
 * so their size follows the number of live instances; the table and the
 * registries give memory back when they are mostly empty.  Everything runs
 * with the GIL held; nothing here calls back into Python except the slow path
 * of a class without its registry (tracking.track) and the error paths.
 *
 * A class is hooked only when every deallocation of its instances ends in
 * PyObject_GC_Del through its tp_free: it and all its bases up to object are
 * Python classes (subtype_dealloc).  __class__ assignment only moves objects
 * between classes with the same tp_free, so a hooked object is always freed
 * through live_free.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* ---- the table of live tracked objects: open addressing, linear probing ---- */

typedef struct {
    uintptr_t key;      /* 0: empty, 1: deleted */
    uint64_t serial;
} Slot;

#define EMPTY ((uintptr_t)0)
#define DELETED ((uintptr_t)1)

static Slot *table = NULL;
static size_t table_mask = 0;      /* capacity - 1; capacity is a power of two */
static size_t table_used = 0;      /* live keys */
static size_t table_filled = 0;    /* live keys + deleted markers */
static uint64_t next_serial = 1;

static inline size_t
slot_of(uintptr_t key)
{
    uint64_t h = (uint64_t)(key >> 4) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h ^ (h >> 29)) & table_mask;
}

static int
table_resize(size_t want)
{
    size_t cap = 64;
    while (cap < want * 3)
        cap <<= 1;
    Slot *fresh = PyMem_RawCalloc(cap, sizeof(Slot));
    if (fresh == NULL)
        return -1;
    Slot *old = table;
    size_t old_cap = table ? table_mask + 1 : 0;
    table = fresh;
    table_mask = cap - 1;
    table_filled = table_used;
    for (size_t i = 0; i < old_cap; i++) {
        uintptr_t key = old[i].key;
        if (key > DELETED) {
            size_t j = slot_of(key);
            while (table[j].key != EMPTY)
                j = (j + 1) & table_mask;
            table[j] = old[i];
        }
    }
    PyMem_RawFree(old);
    return 0;
}

/* Record key with serial (replacing an older serial of the same key). */
static int
table_put(uintptr_t key, uint64_t serial)
{
    if (table == NULL || (table_filled + 1) * 3 > (table_mask + 1) * 2) {
        if (table_resize(table_used + 1) < 0)
            return -1;
    }
    size_t j = slot_of(key);
    Slot *free_slot = NULL;
    for (;;) {
        uintptr_t k = table[j].key;
        if (k == key) {
            table[j].serial = serial;
            return 0;
        }
        if (k == EMPTY)
            break;
        if (k == DELETED && free_slot == NULL)
            free_slot = &table[j];
        j = (j + 1) & table_mask;
    }
    if (free_slot == NULL) {
        free_slot = &table[j];
        table_filled++;
    }
    free_slot->key = key;
    free_slot->serial = serial;
    table_used++;
    return 0;
}

static inline uint64_t
table_get(uintptr_t key)
{
    if (table == NULL)
        return 0;
    size_t j = slot_of(key);
    for (;;) {
        uintptr_t k = table[j].key;
        if (k == key)
            return table[j].serial;
        if (k == EMPTY)
            return 0;
        j = (j + 1) & table_mask;
    }
}

static inline void
table_del(uintptr_t key)
{
    if (table == NULL)
        return;
    size_t j = slot_of(key);
    for (;;) {
        uintptr_t k = table[j].key;
        if (k == key) {
            table[j].key = DELETED;
            table_used--;
            /* Mostly empty after a peak: give the memory back (a failed
             * allocation just keeps the larger table). */
            if (table_mask + 1 > 1024 && table_used * 16 < table_mask + 1)
                (void)table_resize(table_used);
            return;
        }
        if (k == EMPTY)
            return;
        j = (j + 1) & table_mask;
    }
}

/* ---- registries: one per hooked class, in the class's __dict__ ---- */

typedef struct {
    uintptr_t addr;
    uint64_t serial;
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *entries;
    Py_ssize_t size;
    Py_ssize_t capacity;
    Py_ssize_t limit;      /* compact when size exceeds it */
    PyTypeObject *owner;   /* the class whose __dict__ holds it (compared, never read) */
} Registry;

static PyTypeObject Registry_Type;
static PyObject *live_key;        /* "__sandbox_live__" */
static PyObject *empty_tuple;
static PyObject *dict_key;        /* "__dict__" */
static PyObject *new_key;         /* "__new__" */
static PyObject *py_track;        /* tracking.track(cls, obj): the slow path */
static PyObject *py_adopt;        /* tracking.adopt(cls): a class copied from a tracked one */
static PyObject *safe_bases;      /* extension heap types known to free through tp_free */
static destructor plain_dealloc;  /* subtype_dealloc, read from a Python class */

static inline int
is_hooked(PyTypeObject *cls);

/* The registry cls owns, or NULL (borrowed; no error is set). */
static Registry *
registry_of(PyTypeObject *cls)
{
    if (cls->tp_dict == NULL)
        return NULL;
    PyObject *reg = PyDict_GetItemWithError(cls->tp_dict, live_key);
    if (reg == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (!Py_IS_TYPE(reg, &Registry_Type) || ((Registry *)reg)->owner != cls)
        return NULL;
    return (Registry *)reg;
}

static int
registry_reserve(Registry *reg)
{
    if (reg->size < reg->capacity)
        return 0;
    Py_ssize_t cap = reg->capacity ? reg->capacity * 2 : 64;
    Entry *grown = PyMem_RawRealloc(reg->entries, (size_t)cap * sizeof(Entry));
    if (grown == NULL)
        return -1;
    reg->entries = grown;
    reg->capacity = cap;
    return 0;
}

/* Keep the entries that are live instances of cls; move those whose object now
 * has another hooked class to that class's registry (no Python runs here). */
static Py_ssize_t
registry_compact(Registry *reg, PyTypeObject *cls)
{
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < reg->size; i++) {
        Entry e = reg->entries[i];
        if (table_get(e.addr) != e.serial)
            continue;                       /* freed (or freed and reused) */
        PyObject *obj = (PyObject *)e.addr;
        if (Py_REFCNT(obj) == 0)
            continue;                       /* being deallocated */
        PyTypeObject *now = Py_TYPE(obj);
        if (now == cls) {
            reg->entries[kept++] = e;
            continue;
        }
        if (is_hooked(now)) {
            Registry *other = registry_of(now);
            if (other != NULL && other != reg && registry_reserve(other) == 0)
                other->entries[other->size++] = e;
        }
    }
    reg->size = kept;
    reg->limit = kept * 2 > 64 ? kept * 2 : 64;
    if (reg->capacity > 1024 && reg->capacity > 8 * kept) {
        Py_ssize_t cap = kept * 2 > 64 ? kept * 2 : 64;
        Entry *smaller = PyMem_RawRealloc(reg->entries, (size_t)cap * sizeof(Entry));
        if (smaller != NULL) {
            reg->entries = smaller;
            reg->capacity = cap;
        }
    }
    return kept;
}

static int
registry_append(Registry *reg, PyObject *obj, PyTypeObject *cls)
{
    if (reg->size >= reg->limit)
        registry_compact(reg, cls);
    if (registry_reserve(reg) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    uint64_t serial = next_serial++;
    if (table_put((uintptr_t)obj, serial) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    reg->entries[reg->size].addr = (uintptr_t)obj;
    reg->entries[reg->size].serial = serial;
    reg->size++;
    return 0;
}

static void
live_free(void *p)
{
    table_del((uintptr_t)p);
    PyObject_GC_Del(p);
}

/* tp_free of hooked classes without GC support (an int or str subclass
 * with empty __slots__, say). */
static void
live_free_plain(void *p)
{
    table_del((uintptr_t)p);
    PyObject_Free(p);
}

/* Record obj in cls's registry; the slow path (no registry yet) goes through
 * tracking.track.  On failure obj is released and NULL returned. */
static PyObject *
record(PyTypeObject *cls, PyObject *obj)
{
    Registry *reg = is_hooked(cls) ? registry_of(cls) : NULL;
    if (reg != NULL) {
        if (registry_append(reg, obj, cls) < 0) {
            Py_DECREF(obj);
            return NULL;
        }
        return obj;
    }
    if (py_track == NULL) {
        Py_DECREF(obj);
        PyErr_SetString(PyExc_RuntimeError, "sandbox_magic.engine._live is not configured");
        return NULL;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(py_track, (PyObject *)cls, obj, NULL);
    if (r == NULL) {
        Py_DECREF(obj);
        return NULL;
    }
    Py_DECREF(r);
    return obj;
}

/* tp_alloc of hooked classes. */
static PyObject *
live_alloc(PyTypeObject *cls, Py_ssize_t nitems)
{
    PyObject *obj = PyType_GenericAlloc(cls, nitems);
    if (obj == NULL)
        return NULL;
    return record(cls, obj);
}

static inline int
is_hooked(PyTypeObject *cls)
{
    return cls->tp_alloc == live_alloc
        && (cls->tp_free == live_free || cls->tp_free == live_free_plain);
}

static int
refuse_arguments(PyTypeObject *cls, Py_ssize_t nargs, int has_kwargs)
{
    if ((nargs || has_kwargs) && cls->tp_init == PyBaseObject_Type.tp_init) {
        PyErr_Format(PyExc_TypeError, "%s() takes no arguments", cls->tp_name);
        return -1;
    }
    return 0;
}

/* Tracked.__new__(cls, *args, **kwargs): used by explicit calls (pickle, copy,
 * super().__new__) and by classes that are not hooked. */
static PyObject *
tracked_dunder_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    if (nargs < 1 || !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "Tracked.__new__(X): X is not a type object");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)args[0];
    /* As object.__new__ would: the nearest base that is not a plain Python
     * class must create objects the way object does. */
    PyTypeObject *base = cls;
    while (base != NULL && (base->tp_flags & Py_TPFLAGS_HEAPTYPE)
           && base->tp_dealloc == plain_dealloc)
        base = base->tp_base;
    if (base != &PyBaseObject_Type) {
        PyErr_Format(PyExc_TypeError, "Tracked.__new__(%s) is not safe, use %s.__new__()",
                     cls->tp_name, base ? base->tp_name : "?");
        return NULL;
    }
    if (refuse_arguments(cls, nargs - 1, kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) < 0)
        return NULL;
    PyObject *obj = PyBaseObject_Type.tp_new(cls, empty_tuple, NULL);
    if (obj == NULL || is_hooked(cls))
        return obj;           /* a hooked class's tp_alloc recorded it */
    return record(cls, obj);
}

/* A built-in base whose deallocator ends, for instances of subclasses, in
 * Py_TYPE(self)->tp_free, and whose constructor allocates through
 * type->tp_alloc: object, the built-in containers and scalars, exceptions. */
static int
solid_base_ok(PyTypeObject *b)
{
    static PyTypeObject *const known[] = {
        &PyBaseObject_Type, &PyDict_Type, &PyList_Type, &PySet_Type, &PyFrozenSet_Type,
        &PyTuple_Type, &PyLong_Type, &PyFloat_Type, &PyComplex_Type, &PyUnicode_Type,
        &PyBytes_Type, &PyByteArray_Type,
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (b == known[i])
            return 1;
    return PyType_IsSubtype(b, (PyTypeObject *)PyExc_BaseException);
}

/* hook(cls, new) -> bool: make cls a hooked class if it qualifies; when its
 * __new__ is new (the tracked one), its tp_new becomes object's. */
static PyObject *
hook(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "hook(cls, new) takes a class and its __new__");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)args[0];
    if (is_hooked(cls))
        Py_RETURN_TRUE;
    int gc = (cls->tp_flags & Py_TPFLAGS_HAVE_GC) != 0;
    if (!(cls->tp_flags & Py_TPFLAGS_HEAPTYPE)
            || cls->tp_free != (gc ? PyObject_GC_Del : PyObject_Free)
            || cls->tp_alloc != PyType_GenericAlloc || plain_dealloc == NULL)
        Py_RETURN_FALSE;
    PyObject *mro = cls->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro))
        Py_RETURN_FALSE;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *b = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (b->tp_flags & Py_TPFLAGS_HEAPTYPE) {
            /* a heap type from an extension module qualifies only if it adds nothing
             * to object (typing.Generic is one on 3.12+) */
            int bare = b->tp_dealloc == PyBaseObject_Type.tp_dealloc
                && b->tp_basicsize == PyBaseObject_Type.tp_basicsize && b->tp_itemsize == 0;
            int known = safe_bases != NULL
                && PySequence_Contains(safe_bases, (PyObject *)b) == 1;
            if (b->tp_dealloc != plain_dealloc && !bare && !known)
                Py_RETURN_FALSE;
        }
        else if (!solid_base_ok(b))
            Py_RETURN_FALSE;
    }
    PyObject *found = PyObject_GetAttrString((PyObject *)cls, "__new__");
    if (found == NULL)
        return NULL;
    int tracked_new = found == args[1];
    Py_DECREF(found);
    /* Its registry first, so that no instance is ever made without one. */
    Registry *reg = (Registry *)Registry_Type.tp_alloc(&Registry_Type, 0);
    if (reg == NULL)
        return NULL;
    reg->limit = 64;
    reg->owner = cls;
    /* type's own setattr: a metaclass's __setattr__ (an enum's, say) is not asked */
    int set = PyType_Type.tp_setattro((PyObject *)cls, live_key, (PyObject *)reg);
    Py_DECREF(reg);
    if (set < 0)
        return NULL;
    cls->tp_alloc = live_alloc;
    cls->tp_free = gc ? live_free : live_free_plain;
    if (tracked_new)
        cls->tp_new = PyBaseObject_Type.tp_new;
    Py_RETURN_TRUE;
}

/* reset_new(cls): after __new__ was deleted from cls, give it (and its
 * subclasses that define none) the tp_new a class statement would: CPython
 * keeps the slot that calls a Python __new__, and object.__new__ then refuses
 * the constructor's arguments. */
static void
reset_new_one(PyTypeObject *cls)
{
    PyObject *mro = cls->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro))
        return;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *b = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        /* (a built-in type's namespace is not in tp_dict on 3.12+: ask for __dict__) */
        PyObject *ns = PyObject_GetAttrString((PyObject *)b, "__dict__");
        int has = ns == NULL ? -1 : PySequence_Contains(ns, new_key);
        Py_XDECREF(ns);
        if (has <= 0) {
            PyErr_Clear();
            continue;
        }
        if (!(b->tp_flags & Py_TPFLAGS_HEAPTYPE))
            cls->tp_new = b->tp_new;   /* a built-in's __new__: call it directly */
        return;                        /* a Python __new__: the slot is right */
    }
}

static PyObject *
reset_new(PyObject *module, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "reset_new(cls) takes a class");
        return NULL;
    }
    PyObject *subs = PyObject_CallMethod(cls, "__subclasses__", NULL);
    if (subs == NULL)
        return NULL;
    reset_new_one((PyTypeObject *)cls);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(subs); i++) {
        PyObject *r = reset_new(module, PyList_GET_ITEM(subs, i));
        if (r == NULL) {
            Py_DECREF(subs);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(subs);
    Py_RETURN_NONE;
}

/* class_dict_set(cls, name, value): put value in the class's own namespace,
 * value NULL-like (a missing third argument) deletes it.  For names that the
 * metaclass handles as data descriptors (__name__, __qualname__): a class may
 * define a property of that name, and setattr would try to rename the class. */
static PyObject *
class_dict_set(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 3 || !PyType_Check(args[0]) || !PyUnicode_Check(args[1])
            || !(((PyTypeObject *)args[0])->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        PyErr_SetString(PyExc_TypeError, "class_dict_set(heap class, name[, value])");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)args[0];
    PyObject *dict = cls->tp_dict;
    if (dict == NULL) {
        PyErr_SetString(PyExc_TypeError, "class without a namespace");
        return NULL;
    }
    int r = nargs == 3 ? PyDict_SetItem(dict, args[1], args[2]) : PyDict_DelItem(dict, args[1]);
    PyType_Modified(cls);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
hooked(PyObject *module, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "hooked(cls) takes a class");
        return NULL;
    }
    return PyBool_FromLong(is_hooked((PyTypeObject *)cls));
}

static PyObject *
configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyCallable_Check(args[0]) || !PyType_Check(args[1])
            || !PyCallable_Check(args[2]) || !PyTuple_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "configure(track, plain_class, adopt, safe_bases)");
        return NULL;
    }
    Py_XSETREF(safe_bases, Py_NewRef(args[3]));
    Py_XSETREF(py_track, Py_NewRef(args[0]));
    Py_XSETREF(py_adopt, Py_NewRef(args[2]));
    plain_dealloc = ((PyTypeObject *)args[1])->tp_dealloc;
    Py_RETURN_NONE;
}

static PyObject *
table_size(PyObject *module, PyObject *unused)
{
    return PyLong_FromSize_t(table_used);
}

static PyObject *
table_capacity(PyObject *module, PyObject *unused)
{
    return PyLong_FromSize_t(table ? table_mask + 1 : 0);
}

/* ---- the hot loops of big migrations (live/migration.py) ---- */

/* Every key of old is a key of new (new.keys() >= old.keys()): 1, 0 or -1. */
static int
keys_cover(PyObject *new, PyObject *old)
{
    if (PyDict_GET_SIZE(new) < PyDict_GET_SIZE(old))
        return 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(old, &pos, &key, &value)) {
        Py_INCREF(key);
        int has = PyDict_Contains(new, key);
        Py_DECREF(key);
        if (has <= 0)
            return has;
    }
    return 1;
}

/* migrate_dicts(fn, olds, start, ov, nv, out) -> int
 *
 * For each old state from index start: out.append(fn(dict(old), ov, nv)).
 * Returns -1 when all are done, or the index of the first result that is not
 * a dict keeping every old key (appended; the caller validates it and calls
 * again from the next index).  An exception from fn propagates; len(out) is
 * then the index of the state that raised. */
static PyObject *
migrate_dicts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyList_Check(args[1]) || !PyList_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "migrate_dicts(fn, olds, start, ov, nv, out)");
        return NULL;
    }
    PyObject *fn = args[0], *olds = args[1], *out = args[5];
    Py_ssize_t i = PyLong_AsSsize_t(args[2]);
    if (i < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "start must be >= 0");
        return NULL;
    }
    for (; i < PyList_GET_SIZE(olds); i++) {
        PyObject *old = Py_NewRef(PyList_GET_ITEM(olds, i));
        PyObject *copy = PyDict_CheckExact(old)
            ? PyDict_Copy(old) : PyObject_CallOneArg((PyObject *)&PyDict_Type, old);
        if (copy == NULL) {
            Py_DECREF(old);
            return NULL;
        }
        PyObject *call[3] = {copy, args[3], args[4]};
        PyObject *new = PyObject_Vectorcall(fn, call, 3, NULL);
        Py_DECREF(copy);
        if (new == NULL) {
            Py_DECREF(old);
            return NULL;
        }
        int ok = (PyDict_CheckExact(new) && PyDict_Check(old)) ? keys_cover(new, old) : 0;
        Py_DECREF(old);
        int appended = PyList_Append(out, new);
        Py_DECREF(new);
        if (appended < 0 || ok < 0)
            return NULL;
        if (!ok)
            return PyLong_FromSsize_t(i);
    }
    return PyLong_FromLong(-1);
}

/* set_dicts(objs, dicts): object.__setattr__(obj, "__dict__", d) for each pair,
 * stopping at the first error (as a loop of object.__setattr__ would). */
static PyObject *
set_dicts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0]) || !PyList_Check(args[1])
            || PyList_GET_SIZE(args[0]) != PyList_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_TypeError, "set_dicts(objs, dicts): two lists of one length");
        return NULL;
    }
    PyObject *objs = args[0], *dicts = args[1];
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objs) && i < PyList_GET_SIZE(dicts); i++) {
        PyObject *obj = Py_NewRef(PyList_GET_ITEM(objs, i));
        PyObject *d = Py_NewRef(PyList_GET_ITEM(dicts, i));
        int r = PyObject_GenericSetAttr(obj, dict_key, d);
        Py_DECREF(obj);
        Py_DECREF(d);
        if (r < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- Registry methods ---- */

static PyObject *
Registry_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *owner;
    if ((kwds && PyDict_GET_SIZE(kwds)) || !PyArg_ParseTuple(args, "O!:Registry",
                                                            &PyType_Type, &owner))
        return NULL;
    Registry *reg = (Registry *)type->tp_alloc(type, 0);
    if (reg != NULL) {
        reg->limit = 64;
        reg->owner = (PyTypeObject *)owner;
    }
    return (PyObject *)reg;
}

static PyObject *
Registry_owns(Registry *reg, PyObject *cls)
{
    return PyBool_FromLong((PyObject *)reg->owner == cls);
}

/* compact(cls) -> int: drop dead entries, move moved ones; the count kept. */
static PyObject *
Registry_compact_method(Registry *reg, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "compact(cls) takes a class");
        return NULL;
    }
    return PyLong_FromSsize_t(registry_compact(reg, (PyTypeObject *)cls));
}

static void
Registry_dealloc(Registry *reg)
{
    PyMem_RawFree(reg->entries);
    Py_TYPE(reg)->tp_free((PyObject *)reg);
}

/* add(obj): record obj as an instance of its class (after __class__ was set). */
static PyObject *
Registry_add(Registry *reg, PyObject *obj)
{
    PyTypeObject *cls = Py_TYPE(obj);
    if (!is_hooked(cls) || reg->owner != cls) {
        PyErr_Format(PyExc_TypeError, "%s objects are not tracked natively by this registry",
                     cls->tp_name);
        return NULL;
    }
    if (registry_append(reg, obj, cls) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* live(cls) -> list: the live instances whose exact class is cls. */
static PyObject *
Registry_live(Registry *reg, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "live(cls) takes a class");
        return NULL;
    }
    Py_ssize_t n = registry_compact(reg, (PyTypeObject *)cls);
    /* Take references first: allocating the list may run the collector, which
     * may free objects, but not these. */
    PyObject **held = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(PyObject *));
    if (held == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++)
        held[i] = Py_NewRef((PyObject *)reg->entries[i].addr);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            Py_DECREF(held[i]);
        PyMem_RawFree(held);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        PyList_SET_ITEM(out, i, held[i]);
    PyMem_RawFree(held);
    return out;
}

/* __set_name__(owner, name): a class was made from a namespace holding this
 * registry (a decorator that rebuilds the class: dataclass(slots=True),
 * attrs): the copy is tracked too, with a registry of its own. */
static PyObject *
Registry_set_name(Registry *reg, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "__set_name__(owner, name)");
        return NULL;
    }
    if ((PyTypeObject *)args[0] == reg->owner || py_adopt == NULL)
        Py_RETURN_NONE;
    return PyObject_CallOneArg(py_adopt, args[0]);
}

static Py_ssize_t
Registry_len(Registry *reg)
{
    return reg->size;
}

static PyObject *
Registry_capacity(Registry *reg, PyObject *unused)
{
    return PyLong_FromSsize_t(reg->capacity);
}

static PyMethodDef Registry_methods[] = {
    {"add", (PyCFunction)Registry_add, METH_O,
     "add(obj): record obj as a live instance of its class."},
    {"owns", (PyCFunction)Registry_owns, METH_O, "owns(cls) -> bool."},
    {"__set_name__", (PyCFunction)(void (*)(void))Registry_set_name, METH_FASTCALL,
     "Track a class made from a copy of the owner's namespace."},
    {"capacity", (PyCFunction)Registry_capacity, METH_NOARGS, "Entries allocated."},
    {"compact", (PyCFunction)Registry_compact_method, METH_O,
     "compact(cls) -> int: drop dead entries, move reassigned ones to their class."},
    {"live", (PyCFunction)Registry_live, METH_O,
     "live(cls) -> list of the live instances whose class is exactly cls."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Registry_as_sequence = {
    .sq_length = (lenfunc)Registry_len,
};

static PyTypeObject Registry_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sandbox_magic.engine._live.Registry",
    .tp_doc = "Addresses and serial numbers of the instances of one hooked class.",
    .tp_basicsize = sizeof(Registry),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Registry_new,
    .tp_dealloc = (destructor)Registry_dealloc,
    .tp_methods = Registry_methods,
    .tp_as_sequence = &Registry_as_sequence,
};

/* Other threads' frames, walked while none of them runs: one C call, the GIL held,
 * the collector paused, so no bytecode, finaliser or weakref callback runs until
 * the walk ends and no other thread can pop or reuse a frame while its f_back chain
 * is followed (a walk in Python can be interrupted between two steps, and then
 * reads frames that no longer exist).
 *
 * visit(frame, thread, keys, out) returns 1 to stop walking that thread's chain, 0
 * to go on, -1 on an error. */
typedef int (*frame_visit)(PyFrameObject *, PyThreadState *, PyObject *, PyObject *);

static PyObject *
walk_other_threads(PyObject *keys, frame_visit visit, const char *name)
{
    if (!PyDict_Check(keys)) {
        PyErr_Format(PyExc_TypeError, "%s() needs a dict keyed by id()", name);
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    int was_enabled = PyGC_Disable();
    PyThreadState *me = PyThreadState_Get();
    PyInterpreterState *interp = PyThreadState_GetInterpreter(me);
    int failed = 0;
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(interp);
         ts != NULL && !failed; ts = PyThreadState_Next(ts)) {
        if (ts == me)
            continue;
        PyFrameObject *f = PyThreadState_GetFrame(ts);
        while (f != NULL) {
            int r = visit(f, ts, keys, out);
            if (r < 0)
                failed = 1;
            PyFrameObject *back = r != 0 ? NULL : PyFrame_GetBack(f);
            Py_DECREF(f);
            f = back;
        }
    }
    if (was_enabled)
        PyGC_Enable();
    if (failed) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* out gets id(f_globals) when it is one of the keys. */
static int
visit_globals(PyFrameObject *f, PyThreadState *ts, PyObject *keys, PyObject *out)
{
    PyObject *g = PyFrame_GetGlobals(f);
    if (g == NULL)
        return -1;
    PyObject *key = PyLong_FromVoidPtr(g);
    Py_DECREF(g);
    int has = key == NULL ? -1 : PyDict_Contains(keys, key);
    if (has == 1 && PyList_Append(out, key) < 0)
        has = -1;
    Py_XDECREF(key);
    return has < 0 ? -1 : 0;
}

/* out gets (thread id, code) for the innermost frame running one of the keys' codes. */
static int
visit_code(PyFrameObject *f, PyThreadState *ts, PyObject *keys, PyObject *out)
{
    PyCodeObject *code = PyFrame_GetCode(f);
    PyObject *key = PyLong_FromVoidPtr(code);
    int has = key == NULL ? -1 : PyDict_Contains(keys, key);
    Py_XDECREF(key);
    if (has == 1) {
        PyObject *item = Py_BuildValue("(KO)", (unsigned long long)ts->thread_id,
                                       (PyObject *)code);
        if (item == NULL || PyList_Append(out, item) < 0)
            has = -1;
        Py_XDECREF(item);
    }
    Py_DECREF(code);
    return has;
}

/* frames_reading(by_id) -> list of ints: the keys of by_id (the id()s of staging
 * namespaces) that a frame of another thread reads as its globals. */
static PyObject *
frames_reading(PyObject *self, PyObject *by_id)
{
    return walk_other_threads(by_id, visit_globals, "frames_reading");
}

/* threads_running(by_code_id) -> list of (thread id, code): the other threads that
 * have a frame running one of the code objects whose id()s are by_code_id's keys
 * (one entry per thread, its innermost such frame). */
static PyObject *
threads_running(PyObject *self, PyObject *by_code_id)
{
    return walk_other_threads(by_code_id, visit_code, "threads_running");
}

/* quiet(by_code_id, exc_type): None when no other thread runs one of those code
 * objects; else raises exc_type(list of (thread id, code)).  Used as the first step
 * of a commit's C-level loop, so the test and the switch are one atomic step. */
static PyObject *
quiet(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "quiet(by_code_id, exc_type)");
        return NULL;
    }
    PyObject *found = threads_running(self, args[0]);
    if (found == NULL)
        return NULL;
    if (PyList_GET_SIZE(found) == 0) {
        Py_DECREF(found);
        Py_RETURN_NONE;
    }
    PyErr_SetObject(args[1], found);
    Py_DECREF(found);
    return NULL;
}

/* narrow(by_code_id, passing) -> list of (thread id, code): threads_running(by_code_id),
 * and, in the same C call, passing (a set of thread ids) keeps only those threads.
 * A thread let through because it was inside such code cannot slip out and back in
 * between the look and the update. */
static PyObject *
narrow(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PySet_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "narrow(by_code_id, passing_set)");
        return NULL;
    }
    PyObject *found = threads_running(self, args[0]);
    if (found == NULL)
        return NULL;
    PyObject *idents = PySet_New(NULL);
    if (idents == NULL) {
        Py_DECREF(found);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(found); i++) {
        if (PySet_Add(idents, PyTuple_GET_ITEM(PyList_GET_ITEM(found, i), 0)) < 0) {
            Py_DECREF(idents);
            Py_DECREF(found);
            return NULL;
        }
    }
    PyObject *r = PyObject_CallMethod(args[1], "intersection_update", "O", idents);
    Py_DECREF(idents);
    if (r == NULL) {
        Py_DECREF(found);
        return NULL;
    }
    Py_DECREF(r);
    return found;
}

/* refill_dicts(objs, dicts): empty each object's own attribute dict and fill it from
 * the matching dict (the instance dict is mutated in place, never replaced). */
static PyObject *
refill_dicts(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0]) || !PyList_Check(args[1])
            || PyList_GET_SIZE(args[0]) != PyList_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_TypeError, "refill_dicts(objs, dicts): two lists of one length");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args[0]); i++) {
        PyObject *d = PyObject_GenericGetDict(PyList_GET_ITEM(args[0], i), NULL);
        if (d == NULL)
            return NULL;
        PyDict_Clear(d);
        int r = PyDict_Update(d, PyList_GET_ITEM(args[1], i));
        Py_DECREF(d);
        if (r < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* snapshot(states, into, seen): for every list, dict, set and bytearray reachable from
 * the values of ``states`` (dicts, or other objects taken as one value each) through such
 * containers, append (container, copy) to ``into``; ``seen`` (a set of ids) keeps each
 * container once.  What migration.py's _snapshot does, at C speed. */
static int snapshot_value(PyObject *v, PyObject *into, PyObject *seen, int depth);

static int
snapshot_items(PyObject *copy, PyObject *into, PyObject *seen, int depth)
{
    if (PyDict_Check(copy)) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(copy, &pos, &key, &value)) {
            if (snapshot_value(value, into, seen, depth) < 0)
                return -1;
        }
        return 0;
    }
    if (PyList_Check(copy)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(copy); i++) {
            if (snapshot_value(PyList_GET_ITEM(copy, i), into, seen, depth) < 0)
                return -1;
        }
        return 0;
    }
    if (PyAnySet_Check(copy)) {      /* the copy is ours: iterating it is safe */
        PyObject *it = PyObject_GetIter(copy), *key;
        if (it == NULL)
            return -1;
        while ((key = PyIter_Next(it)) != NULL) {
            int r = snapshot_value(key, into, seen, depth);
            Py_DECREF(key);
            if (r < 0) {
                Py_DECREF(it);
                return -1;
            }
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            return -1;
    }
    return 0;
}

static int
snapshot_value(PyObject *v, PyObject *into, PyObject *seen, int depth)
{
    int is_dict = PyDict_Check(v), is_list = PyList_Check(v);
    int is_set = PySet_Check(v), is_bytes = PyByteArray_Check(v);
    if (!(is_dict || is_list || is_set || is_bytes))
        return 0;
    if (depth > 200) {
        PyErr_SetString(PyExc_RecursionError, "snapshot: containers nested too deep");
        return -1;
    }
    int r;
    /* held once (by the container being walked): no other path reaches it, and it is
     * in no cycle, so it cannot have been seen; the common case skips the set */
    if (Py_REFCNT(v) > 1) {
        PyObject *key = PyLong_FromVoidPtr(v);
        if (key == NULL)
            return -1;
        int known = PySet_Contains(seen, key);
        if (known != 0) {
            Py_DECREF(key);
            return known < 0 ? -1 : 0;
        }
        r = PySet_Add(seen, key);
        Py_DECREF(key);
        if (r < 0)
            return -1;
    }
    PyObject *copy;
    if (is_dict)
        copy = PyDict_Copy(v);
    else if (is_list)
        copy = PyList_GetSlice(v, 0, PyList_GET_SIZE(v));
    else if (is_set)
        copy = PySet_New(v);
    else
        copy = PyByteArray_FromObject(v);
    if (copy == NULL)
        return -1;
    PyObject *pair = PyTuple_Pack(2, v, copy);
    if (pair == NULL || PyList_Append(into, pair) < 0) {
        Py_XDECREF(pair);
        Py_DECREF(copy);
        return -1;
    }
    Py_DECREF(pair);
    r = is_bytes ? 0 : snapshot_items(copy, into, seen, depth + 1);
    Py_DECREF(copy);
    return r;
}

static PyObject *
snapshot(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[1]) || !PySet_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "snapshot(states, into: list, seen: set)");
        return NULL;
    }
    PyObject *it = PyObject_GetIter(args[0]);
    if (it == NULL)
        return NULL;
    PyObject *state;
    while ((state = PyIter_Next(it)) != NULL) {
        int r = PyDict_Check(state) ? snapshot_items(state, args[1], args[2], 0)
                                    : snapshot_value(state, args[1], args[2], 0);
        Py_DECREF(state);
        if (r < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* The code objects that start running in this thread between calls_start and
 * calls_stop (a module body's import-time calls), through the profile hook:
 * a set add per call, no Python frame.  A call of one of `markers` (thread
 * starts) adds None to the set.  The previous profile function is put back by
 * calls_stop, which says whether the hook stayed in place all along; when it was
 * this hook too, its set keeps receiving the code objects meanwhile. */

typedef struct {
    Py_tracefunc func;
    PyObject *obj;          /* strong, may be NULL */
    PyObject *mine;         /* the (seen, markers, outer, limited) state */
    PyObject *installed;    /* what the hook gets: the state, or a function holding it */
} CallsToken;

/* The hook's state: the object itself, or the first default of a function that
 * holds it (what sys.getprofile() then returns is a harmless callable: code that
 * saves and later re-installs "the profiler" gets a function that does nothing). */
static PyObject *
calls_state(PyObject *obj)
{
    if (PyFunction_Check(obj)) {
        PyObject *d = PyFunction_GET_DEFAULTS(obj);
        return (d != NULL && PyTuple_GET_SIZE(d) == 1) ? PyTuple_GET_ITEM(d, 0) : NULL;
    }
    return obj;
}

/* Calls a limited recording still sees (see calls_start's limit). */
static Py_ssize_t calls_budget = 0;

static int
calls_profile(PyObject *holder, PyFrameObject *frame, int what, PyObject *arg)
{
    PyObject *obj = calls_state(holder);
    if (obj == NULL || !PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 4)
        return 0;
    PyObject *seen = PyTuple_GET_ITEM(obj, 0);
    if (what == PyTrace_CALL && PyTuple_GET_ITEM(obj, 3) == Py_True && --calls_budget < 0) {
        /* spent: the hook leaves (calls_stop puts back what was there before) */
        int r = PySet_Add(seen, Py_Ellipsis);
        PyEval_SetProfile(NULL, NULL);
        return r;
    }
    if (what == PyTrace_CALL) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        PyObject *outer = PyTuple_GET_ITEM(obj, 2);
        int r = PySet_Add(seen, (PyObject *)code);
        if (r == 0 && outer != Py_None)
            r = PySet_Add(outer, (PyObject *)code);
        Py_DECREF(code);
        return r;
    }
    if (what == PyTrace_C_CALL) {
        PyObject *markers = PyTuple_GET_ITEM(obj, 1);
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(markers); i++) {
            if (PyTuple_GET_ITEM(markers, i) == arg)
                return PySet_Add(seen, Py_None);
        }
    }
    return 0;
}

static void
calls_token_free(PyObject *capsule)
{
    CallsToken *t = PyCapsule_GetPointer(capsule, "sandbox_magic.calls");
    if (t != NULL) {
        Py_XDECREF(t->obj);
        Py_XDECREF(t->mine);
        Py_XDECREF(t->installed);
        PyMem_Free(t);
    }
}

static PyObject *
calls_start(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t limit = 0;
    if (nargs < 2 || nargs > 4 || !PySet_Check(args[0]) || !PyTuple_Check(args[1])
            || (nargs == 4 && !PyFunction_Check(args[3]))) {
        PyErr_SetString(PyExc_TypeError,
                        "calls_start(set, markers: tuple[, limit: int[, holder: function]])");
        return NULL;
    }
    if (nargs >= 3) {
        limit = PyLong_AsSsize_t(args[2]);
        if (limit < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "limit must be >= 0");
            return NULL;
        }
    }
    CallsToken *t = PyMem_Calloc(1, sizeof(CallsToken));
    if (t == NULL)
        return PyErr_NoMemory();
    /* a recording already running in this thread (a cell's, around a module body's)
     * keeps seeing what starts: the inner one adds to both sets */
    PyThreadState *now = PyThreadState_Get();
    PyObject *running = (now->c_profilefunc == calls_profile && now->c_profileobj != NULL)
        ? calls_state(now->c_profileobj) : NULL;
    PyObject *outer = (running != NULL && PyTuple_Check(running) && PyTuple_GET_SIZE(running) == 4)
        ? PyTuple_GET_ITEM(running, 0) : Py_None;
    t->mine = PyTuple_Pack(4, args[0], args[1], outer, limit ? Py_True : Py_False);
    if (limit)
        calls_budget = limit;
    if (t->mine == NULL) {
        PyMem_Free(t);
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(t, "sandbox_magic.calls", calls_token_free);
    if (capsule == NULL) {
        Py_DECREF(t->mine);
        PyMem_Free(t);
        return NULL;
    }
    if (nargs == 4) {
        PyObject *defaults = PyTuple_Pack(1, t->mine);
        if (defaults == NULL || PyFunction_SetDefaults(args[3], defaults) < 0) {
            Py_XDECREF(defaults);
            Py_DECREF(capsule);
            return NULL;
        }
        Py_DECREF(defaults);
        t->installed = Py_NewRef(args[3]);
    }
    else {
        t->installed = Py_NewRef(t->mine);
    }
    PyThreadState *ts = PyThreadState_Get();
    t->func = ts->c_profilefunc;
    t->obj = Py_XNewRef(ts->c_profileobj);
    PyEval_SetProfile(calls_profile, t->installed);
    return capsule;
}

static PyObject *
calls_stop(PyObject *Py_UNUSED(module), PyObject *capsule)
{
    CallsToken *t = PyCapsule_GetPointer(capsule, "sandbox_magic.calls");
    if (t == NULL)
        return NULL;
    PyThreadState *ts = PyThreadState_Get();
    int kept = ts->c_profilefunc == calls_profile && ts->c_profileobj == t->installed;
    int spent = !kept && ts->c_profilefunc == NULL && t->mine != NULL
        && PySet_Contains(PyTuple_GET_ITEM(t->mine, 0), Py_Ellipsis) == 1;
    if (kept || spent)
        PyEval_SetProfile(t->func, t->obj);
    /* else: the body set a profile function of its own; it stays */
    Py_CLEAR(t->obj);
    return PyBool_FromLong(kept);
}

static PyMethodDef module_methods[] = {
    {"calls_start", (PyCFunction)(void (*)(void))calls_start, METH_FASTCALL,
     "calls_start(seen, markers[, limit]) -> token: add to seen each code object that "
     "starts in this thread (None for a call of one of markers) until calls_stop(token), "
     "or (limit) for that many calls, then ... is added and the hook leaves."},
    {"calls_stop", calls_stop, METH_O,
     "calls_stop(token) -> bool: put the previous profile function back; False when "
     "the hook was replaced meanwhile (the record is incomplete)."},
    {"snapshot", (PyCFunction)(void (*)(void))snapshot, METH_FASTCALL,
     "snapshot(states, into, seen): record the containers reachable from each state."},
    {"new", (PyCFunction)(void (*)(void))tracked_dunder_new, METH_FASTCALL | METH_KEYWORDS,
     "The __new__ of tracked classes."},
    {"hook", (PyCFunction)(void (*)(void))hook, METH_FASTCALL,
     "hook(cls, new) -> bool: track cls's instances natively if it qualifies."},
    {"hooked", hooked, METH_O, "hooked(cls) -> bool."},
    {"class_dict_set", (PyCFunction)(void (*)(void))class_dict_set, METH_FASTCALL,
     "class_dict_set(cls, name[, value]): set (or delete) a name in a class's own namespace."},
    {"reset_new", reset_new, METH_O,
     "reset_new(cls): the constructor slot a class without __new__ gets (after a delete)."},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(track, plain_class, adopt, safe_bases): the slow path, a plain class to "
     "learn from, what tracks a class copied from a tracked one, and extension bases "
     "whose instances are freed through their class."},
    {"migrate_dicts", (PyCFunction)(void (*)(void))migrate_dicts, METH_FASTCALL,
     "migrate_dicts(fn, olds, start, ov, nv, out) -> index of a result to check, or -1."},
    {"set_dicts", (PyCFunction)(void (*)(void))set_dicts, METH_FASTCALL,
     "set_dicts(objs, dicts): give each object its new attribute dict."},
    {"frames_reading", frames_reading, METH_O,
     "frames_reading(by_id) -> the ids among by_id's keys that other threads' frames "
     "read as globals (walked in C, no other thread running meanwhile)."},
    {"threads_running", threads_running, METH_O,
     "threads_running(by_code_id) -> [(thread id, code)]: other threads running one of "
     "those code objects (walked in C, no other thread running meanwhile)."},
    {"quiet", (PyCFunction)(void (*)(void))quiet, METH_FASTCALL,
     "quiet(by_code_id, exc_type): raise exc_type([(thread id, code)]) if another thread "
     "runs one of those code objects."},
    {"narrow", (PyCFunction)(void (*)(void))narrow, METH_FASTCALL,
     "narrow(by_code_id, passing) -> threads_running(by_code_id); passing keeps only "
     "those threads (one C call)."},
    {"refill_dicts", (PyCFunction)(void (*)(void))refill_dicts, METH_FASTCALL,
     "refill_dicts(objs, dicts): each object's own dict emptied and filled from its new one."},
    {"table_capacity", table_capacity, METH_NOARGS,
     "The number of slots of that table (it shrinks when mostly empty)."},
    {"table_size", table_size, METH_NOARGS,
     "The number of live natively tracked objects in the process."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef live_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sandbox_magic.engine._live",
    .m_doc = "Native tracking of the live instances of sandbox classes.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__live(void)
{
    if (PyType_Ready(&Registry_Type) < 0)
        return NULL;
    live_key = PyUnicode_InternFromString("__sandbox_live__");
    empty_tuple = PyTuple_New(0);
    dict_key = PyUnicode_InternFromString("__dict__");
    new_key = PyUnicode_InternFromString("__new__");
    if (live_key == NULL || empty_tuple == NULL || dict_key == NULL || new_key == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&live_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Registry", (PyObject *)&Registry_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
