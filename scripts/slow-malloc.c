/* An LD_PRELOAD shim that makes glibc's malloc and free slower by a fixed amount of work, for
 * proving that `mallard gate` catches a truly slower allocator (docs/ci-gating.md):
 *
 *   cc -O2 -shared -fPIC -o slow-malloc.so scripts/slow-malloc.c
 *   mallard gate T.mtr --allocators glibc \
 *       --baseline-preload slow-malloc.so --baseline-env SLOW_MALLOC_SPIN=0 \
 *       --candidate-preload slow-malloc.so --candidate-env SLOW_MALLOC_SPIN=4
 *
 * Both sides load the same shim, so the only difference is SLOW_MALLOC_SPIN iterations of an
 * empty loop per malloc and per free. */
#include <stddef.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

static unsigned spin;

__attribute__((constructor)) static void slow_malloc_init(void) {
    const char *s = getenv("SLOW_MALLOC_SPIN");
    spin = s ? (unsigned)atoi(s) : 0;
}

static inline void delay(void) {
    for (unsigned i = 0; i < spin; i++)
        __asm__ volatile("" ::: "memory");
}

void *malloc(size_t n) {
    delay();
    return __libc_malloc(n);
}

void free(void *p) {
    delay();
    __libc_free(p);
}
