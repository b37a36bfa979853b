/*
 * Recurrent cells (LSTM, GRU, Elman RNN) stepped one sample at a time over many signals.
 *
 * Same equations and gate order as PyTorch's nn.LSTM / nn.GRU / nn.RNN (their docs);
 * the model is y = lin(rnn([x, knobs])) + skip * x (Wright et al., DAFx 2019).
 * Compiled on the machine that runs it (see modelrunner/native.py) and called through
 * ctypes; PyTorch's own forward stays the reference these outputs are tested against.
 *
 * Why a kernel of our own: at audio rates the work is one tiny matrix product per
 * sample, and the cost is in the per-step overhead and in the transcendental
 * functions. Here each step keeps a tile of rows x gates in vector registers
 * (rows share each weight load) and evaluates sigmoid with a polynomial exp on whole
 * vectors; tanh(a) = 2 sigmoid(2a) - 1, with the factor 2 folded into the packed
 * weights by the caller (scaling by 2 is exact in binary floating point).
 *
 * Layouts (all float32, C order), with Hp = hidden size rounded up to the vector width
 * and G = gates * Hp (gates: LSTM 4 [i f g o], GRU 3 [r z n], RNN 1):
 *   x      (B, T) at row stride x_stride       knobs (B, I0 - 1)
 *   wx[l]  (I_l, G), I_0 = I0, I_l = Hp        bx[l] (G)
 *   wh[l]  (Hp, G)                             bh[l] (G)
 *   h, c   (layers, B, Hp), read as the start state and overwritten with the end state
 *   lin_w  (Hp)                                y     (B, T)
 * Padded units have zero weights and biases, so they stay at zero.
 */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "vec.h"

#if defined(__AVX512F__)
#define JB 4
#else
#define JB 2
#endif
#define RB 4

enum { CELL_LSTM = 0, CELL_GRU = 1, CELL_RNN_TANH = 2, CELL_RNN_RELU = 3 };

int rnn_vector_width(void) { return VL; }

/* y = exp(x) elementwise, n a multiple of the vector width; exported for the tests. */
void rnn_exp(const float *x, float *y, long n) {
    for (long i = 0; i + VL <= n; i += VL) st(y + i, vexp(ld(x + i)));
}


/* out[r, :] = init[r, :] + A[r, :K] @ W[:K, :], for R rows and J vectors of columns.
 * With R and J compile-time constants the accumulators live in registers. */
static inline __attribute__((always_inline)) void tile(
    const int R, const int J, const float *A, int lda, int K, const float *W, int ldw,
    float *out, int ldo, const float *init, int init_ld) {
    vf acc[RB][JB];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < J; j++) acc[r][j] = ld(init + r * init_ld + j * VL);
    for (int k = 0; k < K; k++) {
        vf w[JB];
        for (int j = 0; j < J; j++) w[j] = ld(W + (size_t)k * ldw + j * VL);
        for (int r = 0; r < R; r++) {
            vf a = splat(A[r * lda + k]);
            for (int j = 0; j < J; j++) acc[r][j] += a * w[j];
        }
    }
    for (int r = 0; r < R; r++)
        for (int j = 0; j < J; j++) st(out + r * ldo + j * VL, acc[r][j]);
}

/* out (R, G) = init + A (R, K) @ W (K, G); init is a bias row (init_ld 0) or out itself. */
static void gemm_rows4(const float *A, int lda, int K, const float *W, int G, float *out,
                       const float *init, int init_ld) {
    int j = 0;
    for (; j + JB * VL <= G; j += JB * VL)
        tile(RB, JB, A, lda, K, W + j, G, out + j, G, init + j, init_ld);
    for (; j < G; j += VL) tile(RB, 1, A, lda, K, W + j, G, out + j, G, init + j, init_ld);
}

static void gemm_rows1(const float *A, int K, const float *W, int G, float *out,
                       const float *init) {
    int j = 0;
    for (; j + JB * VL <= G; j += JB * VL) tile(1, JB, A, 0, K, W + j, G, out + j, 0, init + j, 0);
    for (; j < G; j += VL) tile(1, 1, A, 0, K, W + j, G, out + j, 0, init + j, 0);
}

static void gemm(int R, const float *A, int lda, int K, const float *W, int G, float *out,
                 const float *init, int init_ld) {
    if (R == RB) {
        gemm_rows4(A, lda, K, W, G, out, init, init_ld);
        return;
    }
    for (int r = 0; r < R; r++)
        gemm_rows1(A + r * lda, K, W, G, out + r * G, init + r * init_ld);
}

/* One layer, one step, rows b0 .. b0 + R - 1. ``in`` holds their inputs (stride in_ld). */
static void layer_step(int cell, int R, int Hp, int G, const float *in, int in_ld, int I,
                       const float *wx, const float *bx, const float *wh, const float *bh,
                       float *h, float *c, float *g1, float *g2) {
    if (cell == CELL_GRU) {
        gemm(R, in, in_ld, I, wx, G, g1, bx, 0);
        gemm(R, h, Hp, Hp, wh, G, g2, bh, 0);
        for (int r = 0; r < R; r++) {
            const float *gx = g1 + r * G, *gh = g2 + r * G;
            float *hr = h + r * Hp;
            for (int u = 0; u < Hp; u += VL) {
                vf rg = vsigmoid(ld(gx + u) + ld(gh + u));
                vf z = vsigmoid(ld(gx + Hp + u) + ld(gh + Hp + u));
                vf n = vtanh_of_double(ld(gx + 2 * Hp + u) + rg * ld(gh + 2 * Hp + u));
                st(hr + u, n + z * (ld(hr + u) - n));
            }
        }
        return;
    }
    gemm(R, in, in_ld, I, wx, G, g1, bx, 0);
    gemm(R, h, Hp, Hp, wh, G, g1, g1, G);
    for (int r = 0; r < R; r++) {
        const float *g = g1 + r * G;
        float *hr = h + r * Hp;
        if (cell == CELL_LSTM) {
            float *cr = c + r * Hp;
            for (int u = 0; u < Hp; u += VL) {
                vf i = vsigmoid(ld(g + u));
                vf f = vsigmoid(ld(g + Hp + u));
                vf gg = vtanh_of_double(ld(g + 2 * Hp + u));
                vf o = vsigmoid(ld(g + 3 * Hp + u));
                vf cc = f * ld(cr + u) + i * gg;
                st(cr + u, cc);
                st(hr + u, o * vtanh_of_double(cc + cc));
            }
        } else if (cell == CELL_RNN_TANH) {
            for (int u = 0; u < Hp; u += VL) st(hr + u, vtanh_of_double(ld(g + u)));
        } else {
            for (int u = 0; u < Hp; u += VL) st(hr + u, vmax(ld(g + u), splat(0.0f)));
        }
    }
}

/* Returns 0, or -1 when scratch memory could not be allocated (nothing is written). */
int rnn_run(int cell, int layers, int B, int T, int I0, int Hp, const float *x, long x_stride,
            const float *knobs, const float *const *wx, const float *const *bx,
            const float *const *wh, const float *const *bh, float *h, float *c,
            const float *lin_w, float lin_b, int skip, float *y) {
    const int gates = cell == CELL_LSTM ? 4 : cell == CELL_GRU ? 3 : 1;
    const int G = gates * Hp;
    float *g1 = malloc(sizeof(float) * (size_t)RB * G);
    float *g2 = malloc(sizeof(float) * (size_t)RB * G);
    float *in0 = malloc(sizeof(float) * (size_t)RB * I0);
    /* Each row group's state is copied into a contiguous block so tiles read it densely. */
    float *hs = malloc(sizeof(float) * (size_t)layers * RB * Hp);
    float *cs = malloc(sizeof(float) * (size_t)layers * RB * Hp);
    if (!g1 || !g2 || !in0 || !hs || !cs) {
        free(g1); free(g2); free(in0); free(hs); free(cs);
        return -1;
    }
    for (int b0 = 0; b0 < B; b0 += RB) {
        const int R = B - b0 < RB ? B - b0 : RB;
        for (int r = 0; r < R; r++) {
            for (int k = 1; k < I0; k++) in0[r * I0 + k] = knobs[(size_t)(b0 + r) * (I0 - 1) + k - 1];
            for (int l = 0; l < layers; l++) {
                memcpy(hs + ((size_t)l * RB + r) * Hp, h + ((size_t)l * B + b0 + r) * Hp, sizeof(float) * Hp);
                if (c) memcpy(cs + ((size_t)l * RB + r) * Hp, c + ((size_t)l * B + b0 + r) * Hp, sizeof(float) * Hp);
            }
        }
        for (int t = 0; t < T; t++) {
            for (int r = 0; r < R; r++) in0[r * I0] = x[(size_t)(b0 + r) * x_stride + t];
            for (int l = 0; l < layers; l++) {
                const float *in = l == 0 ? in0 : hs + (size_t)(l - 1) * RB * Hp;
                layer_step(cell, R, Hp, G, in, l == 0 ? I0 : Hp, l == 0 ? I0 : Hp, wx[l], bx[l],
                           wh[l], bh[l], hs + (size_t)l * RB * Hp, cs + (size_t)l * RB * Hp, g1, g2);
            }
            const float *top = hs + (size_t)(layers - 1) * RB * Hp;
            for (int r = 0; r < R; r++) {
                vf acc = splat(0.0f);
                for (int u = 0; u < Hp; u += VL) acc += ld(top + r * Hp + u) * ld(lin_w + u);
                float s = lin_b;
                for (int v = 0; v < VL; v++) s += acc[v];
                if (skip) s += in0[r * I0];
                y[(size_t)(b0 + r) * T + t] = s;
            }
        }
        for (int r = 0; r < R; r++)
            for (int l = 0; l < layers; l++) {
                memcpy(h + ((size_t)l * B + b0 + r) * Hp, hs + ((size_t)l * RB + r) * Hp, sizeof(float) * Hp);
                if (c) memcpy(c + ((size_t)l * B + b0 + r) * Hp, cs + ((size_t)l * RB + r) * Hp, sizeof(float) * Hp);
            }
    }
    free(g1); free(g2); free(in0); free(hs); free(cs);
    return 0;
}
