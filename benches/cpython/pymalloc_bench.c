/* CPython's own pymalloc (PyObject_Malloc/PyObject_Free of the CPython this machine has),
 * measured with the same two patterns as benches/arena.rs (`mallard-benches --bench arena`)
 * and in the same way: pairs of malloc+free of one size with one other block of that size
 * kept live, and a churn that keeps 100,000 blocks live, each step freeing a random one and
 * allocating a new one of a random size in 16..=512 from a precomputed sequence.
 * Prints ns per pair (best of 5 rounds). Build and run: see docs/BENCHMARKS.md. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static uint64_t rng = 42;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

int main(void) {
    Py_Initialize();
    size_t sizes[] = {16, 64, 256, 512};
    for (int s = 0; s < 4; s++) {
        double best = 1e30;
        void* keep = PyObject_Malloc(sizes[s]);
        for (int round = 0; round < 5; round++) {
            long n = 20000000;
            double t0 = now_ns();
            for (long i = 0; i < n; i++) {
                volatile char* p = PyObject_Malloc(sizes[s]);
                p[0] = 1;
                PyObject_Free((void*)p);
            }
            double t = (now_ns() - t0) / n;
            if (t < best) best = t;
        }
        PyObject_Free(keep);
        printf("pair %zu B: %.2f ns\n", sizes[s], best);
    }
    enum { LIVE = 100000, STEPS = 4000000 };
    void** slots = calloc(LIVE, sizeof(void*));
    uint32_t* idx = malloc(STEPS * sizeof(uint32_t));
    uint16_t* sz = malloc(STEPS * sizeof(uint16_t));
    for (long i = 0; i < STEPS; i++) { idx[i] = next() % LIVE; sz[i] = 16 + next() % 497; }
    for (int fixed = 0; fixed < 2; fixed++) {
        for (long i = 0; i < LIVE; i++) { slots[i] = PyObject_Malloc(fixed ? 64 : sz[i]); ((char*)slots[i])[0] = 1; }
        double best = 1e30;
        for (int round = 0; round < 5; round++) {
            double t0 = now_ns();
            for (long i = 0; i < STEPS; i++) {
                uint32_t k = idx[i];
                PyObject_Free(slots[k]);
                char* p = PyObject_Malloc(fixed ? 64 : sz[i]);
                p[0] = 1;
                slots[k] = p;
            }
            double t = (now_ns() - t0) / STEPS;
            if (t < best) best = t;
        }
        for (long i = 0; i < LIVE; i++) PyObject_Free(slots[i]);
        printf("churn %s, 100k live: %.2f ns\n", fixed ? "64 B" : "16-512 B", best);
    }
    return 0;
}
