/*
 * The functions the render kernels export, as modelrunner/native.py calls them through
 * ctypes. rnn.c and wavenet.c include this header, so the compiler checks each definition
 * against it (and, with -Werror=missing-prototypes, that nothing else is exported);
 * tests/modelrunner/test_kernel_api.py checks native.py's argtypes and restype against it.
 * Argument layouts are described at the top of each .c file. All arrays are float32 (or
 * int) in C order; every pointer is passed from Python as a plain address (c_void_p).
 */
#ifndef MODELRUNNER_API_H
#define MODELRUNNER_API_H

/* rnn.c: floats per vector register the kernels were compiled for (hidden sizes are padded to it). */
int rnn_vector_width(void);

/* rnn.c: y = exp(x) elementwise with the kernels' polynomial exp; n a multiple of the vector width. */
void rnn_exp(const float *x, float *y, long n);

/* rnn.c: y = lin(rnn([x, knobs])) + skip * x for B signals of T frames; h and c (LSTM only,
 * else NULL) hold the start state and receive the end state. Returns 0, or -1 when scratch
 * memory could not be allocated. */
int rnn_run(int cell, int layers, int B, int T, int I0, int Hp, const float *x, long x_stride,
            const float *knobs, const float *const *wx, const float *const *bx,
            const float *const *wh, const float *const *bh, float *h, float *c,
            const float *lin_w, float lin_b, int skip, float *y);

/* wavenet.c: the L layers of one NAM WaveNet layer array over B signals of T frames, in place.
 * Returns 0, or -1 when scratch memory could not be allocated. */
int wavenet_layers(int B, int C, int T, int S, int L, const int *ks, const int *dil, const int *act,
                   const int *gated, const float *slope, float *y, const float *cond, float *head, float *const *ctx,
                   const float *const *w, const float *const *bias, const float *const *w1,
                   const float *const *b1);

/* peak.c: iters rounds of independent multiply-adds on the widest vectors of this build;
 * returns the floating-point operations done (a multiply-add counts two). sink[0..2] seed
 * the operands (nothing is known at compile time); sink[3] receives a sum of the results. */
long peak_fma(long iters, float *sink);

#endif
