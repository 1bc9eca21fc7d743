/* Optional C accelerator for simplews: WebSocket masking (RFC 6455 section 5.3).
 *
 * apply_mask(data, mask) -> bytes: XOR every byte of data with the 4-byte mask
 * repeated, eight bytes at a time. data is any contiguous buffer (bytes,
 * bytearray, memoryview). simplews.frames falls back to a pure-Python version
 * when this module is missing or SIMPLEWS_NO_EXTENSIONS is set.
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

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask) -> bytes: data XOR the repeated 4-byte mask (RFC 6455 5.3)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "simplews._speedups", "C accelerator for WebSocket masking.", -1,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
