/*
 * Vector helpers shared by the render kernels: GCC/Clang vector extensions, so the same
 * source compiles to AVX-512, AVX2 or SSE for the CPU at hand (-march=native).
 */
#ifndef MODELRUNNER_VEC_H
#define MODELRUNNER_VEC_H

#include <stdint.h>
#if defined(__SSE__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif

typedef float vf __attribute__((vector_size(VL * 4)));
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VL * 4)));

static inline vf ld(const float *p) { return *(const vfu *)p; }
static inline void st(float *p, vf v) { *(vfu *)p = v; }
/* A broadcast ((vf){0} + a would cost an addition: 0 + a is not a in every rounding case). */
#if VL == 16
static inline vf splat(float a) { return (vf){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }
#elif VL == 8
static inline vf splat(float a) { return (vf){a, a, a, a, a, a, a, a}; }
#else
static inline vf splat(float a) { return (vf){a, a, a, a}; }
#endif
/* min and max of a and b where both are numbers (one instruction on x86). */
#if VL == 16
static inline vf vmin(vf a, vf b) { return (vf)_mm512_min_ps((__m512)a, (__m512)b); }
static inline vf vmax(vf a, vf b) { return (vf)_mm512_max_ps((__m512)a, (__m512)b); }
#elif VL == 8
static inline vf vmin(vf a, vf b) { return (vf)_mm256_min_ps((__m256)a, (__m256)b); }
static inline vf vmax(vf a, vf b) { return (vf)_mm256_max_ps((__m256)a, (__m256)b); }
#elif defined(__SSE__)
static inline vf vmin(vf a, vf b) { return (vf)_mm_min_ps((__m128)a, (__m128)b); }
static inline vf vmax(vf a, vf b) { return (vf)_mm_max_ps((__m128)a, (__m128)b); }
#else
static inline vf vmin(vf a, vf b) { vi m = a < b; return (vf)(((vi)a & m) | ((vi)b & ~m)); }
static inline vf vmax(vf a, vf b) { vi m = a > b; return (vf)(((vi)a & m) | ((vi)b & ~m)); }
#endif

/* exp(x) for float32 (rnn_exp): x = n ln2 + r, |r| <= ln2 / 2, exp(r) by the Cephes expf
 * polynomial, 2**n built in the exponent bits. Within 2 ulp of expf over [-87, 88];
 * outside, the argument is clamped (sigmoid is 0 or 1 there in float32 anyway). */
static inline vf vexp(vf x) {
    x = vmax(vmin(x, splat(88.0f)), splat(-87.0f));
    const vf magic = splat(12582912.0f); /* 1.5 * 2**23: adding it rounds to an integer */
    vf n = (x * splat(1.44269504088896341f) + magic) - magic;
    vf r = x - n * splat(0.693359375f);
    r = r - n * splat(-2.12194440e-4f);
    vf p = splat(1.9875691500e-4f);
    p = p * r + splat(1.3981999507e-3f);
    p = p * r + splat(8.3334519073e-3f);
    p = p * r + splat(4.1665795894e-2f);
    p = p * r + splat(1.6666665459e-1f);
    p = p * r + splat(5.0000001201e-1f);
    p = p * (r * r) + r + splat(1.0f);
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}

/* 1 / d for d >= 1: the hardware's reciprocal estimate (12 bits with SSE and AVX, 14 with
 * AVX-512) and one Newton step, r + r (1 - d r), within 2 ulp: a few times the throughput of
 * a division. Without SSE, a division. */
static inline vf vrecip(vf d) {
#if VL == 16
    const vf r = (vf)_mm512_rcp14_ps((__m512)d);
#elif VL == 8
    const vf r = (vf)_mm256_rcp_ps((__m256)d);
#elif defined(__SSE__)
    const vf r = (vf)_mm_rcp_ps((__m128)d);
#else
    return splat(1.0f) / d;
#endif
#if VL == 16 || VL == 8 || defined(__SSE__)
    return r + r * (splat(1.0f) - d * r);
#endif
}

/* sigmoid(a) = 1 / (1 + exp(-a)), exp within 2 ulp (vexp), the reciprocal within 2 ulp
 * (vrecip): renders stay within float32 rounding of PyTorch's forward (every fixture's
 * chunked render within ESR 1e-10 of it; a cheaper rational tanh within 4e-7 was
 * measured faster but left a small LSTM at ESR 1.2e-10 against forward). */
static inline vf vsigmoid(vf a) { return vrecip(splat(1.0f) + vexp(-a)); }
/* tanh(a / 2) = 2 sigmoid(a) - 1. */
static inline vf vtanh_half(vf a) { return splat(2.0f) * vsigmoid(a) - splat(1.0f); }
/* tanh(a) given 2a. */
static inline vf vtanh_of_double(vf a2) { return vtanh_half(a2); }

#endif
