/*
 * Vector helpers shared by the render kernels: GCC/Clang vector extensions, so the same
 * source compiles to AVX-512, AVX2 or SSE for the CPU at hand (-march=native).
 */
#ifndef MODELRUNNER_VEC_H
#define MODELRUNNER_VEC_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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
/* n floats of zeros, 64-byte aligned (whole cache lines, so aligned vector loads never
 * straddle two), or NULL; freed with free(). */
static inline float *zalloc(size_t floats) {
    const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p) memset(p, 0, bytes ? bytes : 64);
    return p;
}

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

/* The sum of a vector's lanes, halving the vector at each step (log2 VL additions instead of
 * VL - 1 in a row, and the order of a pairwise sum). */
static inline float vsum(vf a) {
#if VL == 16
    return _mm512_reduce_add_ps((__m512)a);
#elif VL == 8
    __m128 s = _mm_add_ps(_mm256_castps256_ps128((__m256)a), _mm256_extractf128_ps((__m256)a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
#elif defined(__SSE__)
    __m128 s = _mm_add_ps((__m128)a, _mm_movehl_ps((__m128)a, (__m128)a));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
#else
    return (a[0] + a[2]) + (a[1] + a[3]);
#endif
}

/* exp(-a) for float32: -a = n ln2 + r, |r| <= ln2 / 2 (ln2 in two parts, Cody and Waite),
 * exp(r) by a degree-6 polynomial whose coefficients are a minimax fit of (exp(r) - 1) / r
 * (Lawson's iteration, rounded to float32), and 2**n built in the exponent bits (one
 * scalef with AVX-512). n is rounded by adding and subtracting 1.5 * 2**23, the addition
 * fused with the multiplication (AVX-512's roundscale takes one more operation and measured
 * no faster). Within 2 ulp of exp over -a in [-87, 88] (1.05 ulp measured); outside, the
 * argument is clamped (sigmoid is 0 or 1 there in float32 anyway). Taking a rather than
 * -a saves the negation every sigmoid would need. */
static inline vf vexp_neg(vf a) {
    a = vmax(vmin(a, splat(87.0f)), splat(-88.0f));
    const vf magic = splat(12582912.0f); /* 1.5 * 2**23: adding it rounds to an integer */
    const vf n = (a * splat(-1.44269504088896341f) + magic) - magic;
    vf r = n * splat(-0.693359375f) - a;
    r = r - n * splat(-2.12194440e-4f);
    vf p = splat(1.3843653723597527e-3f);
    p = p * r + splat(8.37415549904108e-3f);
    p = p * r + splat(4.166800156235695e-2f);
    p = p * r + splat(1.6666431725025177e-1f);
    p = p * r + splat(4.999999403953552e-1f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
#if VL == 16
    return (vf)_mm512_scalef_ps((__m512)p, (__m512)n); /* p 2**n in one instruction */
#else
    const vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
#endif
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

/* sigmoid(a) = 1 / (1 + exp(-a)), exp within 2 ulp (vexp_neg), the reciprocal within 2 ulp
 * (vrecip): renders stay within float32 rounding of PyTorch's forward (every fixture's
 * chunked render within ESR 1e-10 of it; a cheaper rational tanh within 4e-7 was
 * measured faster but left a small LSTM at ESR 1.2e-10 against forward). */
static inline vf vsigmoid(vf a) { return vrecip(splat(1.0f) + vexp_neg(a)); }
/* tanh(a / 2) = 2 sigmoid(a) - 1. */
static inline vf vtanh_half(vf a) { return splat(2.0f) * vsigmoid(a) - splat(1.0f); }
/* tanh(a) given 2a. */
static inline vf vtanh_of_double(vf a2) { return vtanh_half(a2); }

#endif
