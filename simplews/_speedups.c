/* Optional C accelerator for simplews: masking (RFC 6455 section 5.3) and small messages.
 *
 * apply_mask(data, mask) -> bytes: XOR every byte of data with the 4-byte mask
 * repeated, eight bytes at a time. data is any contiguous buffer (bytes,
 * bytearray, memoryview).
 * take_message(buf, client, max_size) -> bytes | str | None: a whole message at
 * the start of buf, taken out of it (see below).
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

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    PyObject *result = NULL;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "apply_mask(data, mask) takes exactly 2 arguments");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes long");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        goto done;
    }
    if (data.len >= NOGIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        xor_mask(data.buf, (unsigned char *)PyBytes_AS_STRING(result), data.len, mask.buf);
        Py_END_ALLOW_THREADS
    } else {
        xor_mask(data.buf, (unsigned char *)PyBytes_AS_STRING(result), data.len, mask.buf);
    }
done:
    PyBuffer_Release(&mask);
    PyBuffer_Release(&data);
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

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask) -> bytes: data XOR the repeated 4-byte mask (RFC 6455 5.3)."},
    {"take_message", (PyCFunction)(void (*)(void))take_message, METH_FASTCALL,
     "take_message(buf, client, max_size) -> bytes | str | None: a whole small message."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "simplews._speedups", "C accelerator for WebSocket masking and small messages.", -1,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
