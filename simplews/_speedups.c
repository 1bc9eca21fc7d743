/* Optional C accelerator for simplews: masking (RFC 6455 section 5.3) and small messages.
 *
 * apply_mask(data, mask) -> bytes: XOR every byte of data with the 4-byte mask
 * repeated, eight bytes at a time. data is any contiguous buffer (bytes,
 * bytearray, memoryview).
 * mask_frame(header, data, masks, refill) -> bytes: a client's frame, masked with a
 * key from the pool (see below).
 * take_message(buf, client, max_size) -> bytes | str | None: a whole message at
 * the start of buf, taken out of it (see below).
 * mask_in_place(buffer, mask, phase): XOR a writable buffer in place, the mask
 * starting at byte phase & 3 of it.
 * PayloadBuffer(size): a large payload read straight into the bytes it is returned
 * in (see below).
 * simplews.frames falls back to pure Python when this module is missing or
 * SIMPLEWS_NO_EXTENSIONS is set.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Large payloads are masked without the GIL so that other connections' threads run. */
#define NOGIL_THRESHOLD (64 * 1024)

static void
xor_mask(const unsigned char *in, unsigned char *out, Py_ssize_t size, const unsigned char *mask)
{
    Py_ssize_t i = 0;
    uint64_t mask64;
    unsigned char wide[8];
    memcpy(wide, mask, 4);
    memcpy(wide + 4, mask, 4);
    memcpy(&mask64, wide, 8);
    for (; i + 8 <= size; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, in + i, 8);  /* unaligned-safe; compilers make this one load */
        chunk ^= mask64;
        memcpy(out + i, &chunk, 8);
    }
    for (; i < size; i++) {
        out[i] = in[i] ^ mask[i & 3];  /* i is a multiple of 8 above, so i & 3 is the phase */
    }
}

/* xor_mask, without the GIL for a large size so that other connections' threads run. */
static void
xor_mask_nogil(const unsigned char *in, unsigned char *out, Py_ssize_t size, const unsigned char *mask)
{
    if (size >= NOGIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        xor_mask(in, out, size, mask);
        Py_END_ALLOW_THREADS
    } else {
        xor_mask(in, out, size, mask);
    }
}

/* args[0] as data (PyBUF_WRITABLE in flags: writable) and args[1] as a 4-byte mask:
 * 0, or -1 with an exception set and nothing held. */
static int
get_data_and_mask(PyObject *const *args, Py_buffer *data, int flags, Py_buffer *mask)
{
    if (PyObject_GetBuffer(args[0], data, flags) < 0) {
        return -1;
    }
    if (PyObject_GetBuffer(args[1], mask, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(data);
        return -1;
    }
    if (mask->len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes long");
        PyBuffer_Release(mask);
        PyBuffer_Release(data);
        return -1;
    }
    return 0;
}

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    PyObject *result;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "apply_mask(data, mask) takes exactly 2 arguments");
        return NULL;
    }
    if (get_data_and_mask(args, &data, PyBUF_SIMPLE, &mask) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        xor_mask_nogil(data.buf, (unsigned char *)PyBytes_AS_STRING(result), data.len, mask.buf);
    }
    PyBuffer_Release(&mask);
    PyBuffer_Release(&data);
    return result;
}

/* mask_frame(header, data, masks, refill): simplews.frames._mask_frame in C: header +
 * a masking key + data masked with it (RFC 6455 section 5.3), one new bytes object.
 * The key is masks.pop() (a list of 4-byte keys: atomic under the GIL, so no key goes
 * out twice), or refill() when the list is empty. */
static PyObject *
mask_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    PyObject *masks, *key, *result = NULL;
    Py_ssize_t left, header_size;

    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "mask_frame(bytes, data, list, refill)");
        return NULL;
    }
    masks = args[2];
    left = PyList_GET_SIZE(masks);
    if (left > 0) {
        key = PyList_GET_ITEM(masks, left - 1);
        Py_INCREF(key);
        if (PyList_SetSlice(masks, left - 1, left, NULL) < 0) {
            Py_DECREF(key);
            return NULL;
        }
    } else if ((key = PyObject_CallNoArgs(args[3])) == NULL) {
        return NULL;
    }
    if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != 4) {
        PyErr_SetString(PyExc_ValueError, "a masking key must be 4 bytes");
    } else if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) == 0) {
        header_size = PyBytes_GET_SIZE(args[0]);
        result = PyBytes_FromStringAndSize(NULL, header_size + 4 + data.len);
        if (result != NULL) {
            unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
            memcpy(out, PyBytes_AS_STRING(args[0]), header_size);
            memcpy(out + header_size, PyBytes_AS_STRING(key), 4);
            xor_mask_nogil(data.buf, out + header_size + 4, data.len,
                           (const unsigned char *)PyBytes_AS_STRING(key));
        }
        PyBuffer_Release(&data);
    }
    Py_DECREF(key);
    return result;
}

/* take_message(buf, client, max_size): simplews.frames._take_message in C, the same
 * contract: if the bytearray buf starts with a whole final, uncompressed TEXT or
 * BINARY frame (first byte 0x81 or 0x82), masked as the receiving side requires
 * (RFC 6455 section 5.1: a server receives masked frames, a client unmasked ones),
 * within max_size (None: no limit) and, for text, valid UTF-8 (section 8.1), remove
 * it and return its payload (bytes, or str for text). Else None and buf as it was:
 * the Python parser takes the frame and raises what is wrong. */
static PyObject *
take_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    PyObject *result = NULL;
    const unsigned char *p, *mask = NULL;
    unsigned char *text = NULL;
    unsigned long long length;
    Py_ssize_t size, pos = 2, max_size = -1;
    int client;

    if (nargs != 3 || !PyByteArray_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "take_message(bytearray, client, max_size)");
        return NULL;
    }
    client = PyObject_IsTrue(args[1]);
    if (client < 0) {
        return NULL;
    }
    if (args[2] != Py_None) {  /* max_size -1 below: no limit */
        max_size = PyLong_AsSsize_t(args[2]);
        if (max_size == -1 && PyErr_Occurred()) {
            PyObject *zero;
            int negative;
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return NULL;
            }
            PyErr_Clear();  /* past PY_SSIZE_T_MAX: no frame is larger; below: every one is */
            zero = PyLong_FromLong(0);
            if (zero == NULL) {
                return NULL;
            }
            negative = PyObject_RichCompareBool(args[2], zero, Py_LT);
            Py_DECREF(zero);
            if (negative < 0) {
                return NULL;
            }
            if (negative) {
                Py_RETURN_NONE;
            }
        } else if (max_size < 0) {
            Py_RETURN_NONE;  /* a negative limit refuses every frame, as in Python */
        }
    }
    /* An export: nothing can resize buf while it is read (below, maybe without the GIL). */
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    p = view.buf;
    size = view.len;
    if (size < 2 || (p[0] != 0x81 && p[0] != 0x82) || ((p[1] & 0x80) != 0) == client) {
        goto none;
    }
    length = p[1] & 0x7F;
    if (length == 126) {
        if (size < 4) {
            goto none;
        }
        length = ((unsigned long long)p[2] << 8) | p[3];
        pos = 4;
    } else if (length == 127) {
        if (size < 10) {
            goto none;
        }
        length = 0;
        for (pos = 2; pos < 10; pos++) {
            length = (length << 8) | p[pos];
        }
    }
    if (!client) {
        mask = p + pos;
        pos += 4;
    }
    if (size < pos || length > (unsigned long long)(size - pos)
            || (max_size >= 0 && length > (unsigned long long)max_size)) {
        goto none;  /* incomplete, too large or with the top bit set (the parser's error) */
    }
    if (p[0] == 0x82) {
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
        if (result == NULL) {
            goto done;
        }
        text = (unsigned char *)PyBytes_AS_STRING(result);
    } else if (mask != NULL) {
        text = PyMem_Malloc(length ? (size_t)length : 1);
        if (text == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    if (mask == NULL) {
        if (result != NULL) {
            memcpy(text, p + pos, (size_t)length);
        }
    } else if (length >= NOGIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        xor_mask(p + pos, text, (Py_ssize_t)length, mask);
        Py_END_ALLOW_THREADS
    } else {
        xor_mask(p + pos, text, (Py_ssize_t)length, mask);
    }
    if (p[0] == 0x81) {
        result = PyUnicode_DecodeUTF8(mask ? (const char *)text : (const char *)p + pos, (Py_ssize_t)length, NULL);
        PyMem_Free(text);  /* NULL unless masked */
        if (result == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();  /* the parser fails the connection with 1007 */
                goto none;
            }
            goto done;
        }
    }
    PyBuffer_Release(&view);
    if (PySequence_DelSlice(args[0], 0, pos + (Py_ssize_t)length) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
none:
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
mask_in_place(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    Py_ssize_t phase;
    unsigned char rotated[4];

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "mask_in_place(buffer, mask, phase) takes exactly 3 arguments");
        return NULL;
    }
    phase = PyLong_AsSsize_t(args[2]);
    if (phase == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (get_data_and_mask(args, &data, PyBUF_WRITABLE, &mask) < 0) {
        return NULL;
    }
    for (int i = 0; i < 4; i++) {  /* (unsigned: phase + i must not overflow) */
        rotated[i] = ((const unsigned char *)mask.buf)[((size_t)phase + (size_t)i) & 3];
    }
    xor_mask_nogil(data.buf, data.buf, data.len, rotated);
    PyBuffer_Release(&mask);
    PyBuffer_Release(&data);
    Py_RETURN_NONE;
}

/* PayloadBuffer(size): owns a new bytes object of size bytes and exports its memory
 * as a writable buffer, so that a large payload is received (and unmasked) straight
 * into the bytes that recv() returns: take() hands them out, once, and only when no
 * view of the buffer is left (BufferError otherwise), so nothing can write into them
 * afterwards. Until then nobody else holds the bytes: writing into them is safe. */
typedef struct {
    PyObject_HEAD
    PyObject *payload;     /* NULL once taken */
    Py_ssize_t exports;
} PayloadBuffer;

static PyObject *
payload_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t size;
    PayloadBuffer *self;

    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "PayloadBuffer(size) takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "n:PayloadBuffer", &size)) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must be 0 or more");
        return NULL;
    }
    self = (PayloadBuffer *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->payload = PyBytes_FromStringAndSize(NULL, size);
    if (self->payload == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
payload_dealloc(PayloadBuffer *self)
{
    Py_XDECREF(self->payload);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
payload_getbuffer(PayloadBuffer *self, Py_buffer *view, int flags)
{
    if (self->payload == NULL) {
        PyErr_SetString(PyExc_BufferError, "the payload was taken");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, PyBytes_AS_STRING(self->payload),
                          PyBytes_GET_SIZE(self->payload), 0, flags) < 0) {
        return -1;
    }
    self->exports++;
    return 0;
}

static void
payload_releasebuffer(PayloadBuffer *self, Py_buffer *view)
{
    self->exports--;
}

static PyObject *
payload_take(PayloadBuffer *self, PyObject *unused)
{
    PyObject *payload = self->payload;

    if (payload == NULL) {
        PyErr_SetString(PyExc_BufferError, "the payload was taken");
        return NULL;
    }
    if (self->exports) {
        PyErr_SetString(PyExc_BufferError, "a view of the payload is still alive");
        return NULL;
    }
    self->payload = NULL;  /* the caller's reference now */
    return payload;
}

static PyBufferProcs payload_as_buffer = {
    (getbufferproc)payload_getbuffer,
    (releasebufferproc)payload_releasebuffer,
};

static PyMethodDef payload_methods[] = {
    {"take", (PyCFunction)payload_take, METH_NOARGS,
     "take() -> bytes: the payload, once no view of it is left; once."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PayloadBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simplews._speedups.PayloadBuffer",
    .tp_basicsize = sizeof(PayloadBuffer),
    .tp_dealloc = (destructor)payload_dealloc,
    .tp_as_buffer = &payload_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "PayloadBuffer(size): bytes to receive a payload into; take() returns them.",
    .tp_methods = payload_methods,
    .tp_new = payload_new,
};

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask) -> bytes: data XOR the repeated 4-byte mask (RFC 6455 5.3)."},
    {"mask_frame", (PyCFunction)(void (*)(void))mask_frame, METH_FASTCALL,
     "mask_frame(header, data, masks, refill) -> bytes: header, masks.pop(), data masked."},
    {"take_message", (PyCFunction)(void (*)(void))take_message, METH_FASTCALL,
     "take_message(buf, client, max_size) -> bytes | str | None: a whole small message."},
    {"mask_in_place", (PyCFunction)(void (*)(void))mask_in_place, METH_FASTCALL,
     "mask_in_place(buffer, mask, phase): XOR buffer in place, the mask from byte phase & 3."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "simplews._speedups", "C accelerator for WebSocket masking and small messages.", -1,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module;

    if (PyType_Ready(&PayloadBufferType) < 0) {
        return NULL;
    }
    module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&PayloadBufferType);
    if (PyModule_AddObject(module, "PayloadBuffer", (PyObject *)&PayloadBufferType) < 0) {
        Py_DECREF(&PayloadBufferType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
