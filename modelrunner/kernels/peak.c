/*
 * The CPU's peak multiply-add rate as these kernels are compiled: CHAINS independent
 * accumulators on the widest vectors of the build (vec.h), each updated by a multiply-add
 * per iteration, so that neither latency nor loads limit the loop. bench/bench_render.py
 * times it and states the kernels' speed as a share of it.
 *
 * With FMA (-march of an FMA CPU) each update is one fused instruction; without, a multiply
 * and an add. Either way an update counts two floating-point operations.
 */
#include "api.h"
#include "vec.h"

/* Enough independent chains to cover FMA latency times issue width (4 cycles x 2 pipes on
 * Zen 3 and Ice Lake, 5 x 2 on Zen 2), few enough to stay in the 16 registers of AVX2 with
 * the two operands. */
#define CHAINS 12

long peak_fma(long iters, float *sink) {
    vf acc[CHAINS];
    const vf a = splat(sink[0]), b = splat(sink[1]);
    for (int i = 0; i < CHAINS; i++) acc[i] = splat(sink[2] + (float)i);
    /* a and b are only known at run time, and without -ffast-math the compiler may not
     * reassociate, so every update stays a multiply-add in the loop. */
    for (long n = 0; n < iters; n++)
        for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * a + b;
    vf total = splat(0.0f);
    for (int i = 0; i < CHAINS; i++) total += acc[i];
    float s = 0.0f;
    for (int v = 0; v < VL; v++) s += total[v];
    sink[3] = s;
    return iters * CHAINS * VL * 2;
}
