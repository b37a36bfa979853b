/*
 * The layers of one NAM WaveNet layer array (van den Oord et al. 2016, in the layer-array
 * form of NeuralAmpModelerCore's wavenet.cpp), over many signals and a block of frames.
 *
 * Per layer l, with dilation d, kernel size K and n = (K - 1) d frames of context:
 *   z    = b + sum_j W_j y[t - (K-1-j) d] + M cond[t]       (M: the input mixer)
 *   post = act(z)                 or act(z[:C]) * sigmoid(z[C:]) when gated
 *   y    = y + W1 post + b1       (the residual stream, input of the next layer)
 *   head = head + post
 * Compiled and loaded by modelrunner/native.py; NamWaveNet.forward (PyTorch) is the
 * reference these outputs are tested against.
 *
 * Signals are (channels, frames) row-major, so each vector holds consecutive frames of
 * one channel: a convolution output is a sum of weight-times-vector products in which
 * every loaded vector serves a block of output channels held in registers.
 *
 * Layouts (float32, C order):
 *   y      (B, C, T): input of the first layer; overwritten with the last layer's output
 *   cond   (B, S, T)             head (B, C, T): added to
 *   ctx[l] (B, C, n_l): the layer's last n_l input frames before this block; overwritten
 *                     with the last n_l input frames of this block (the next context)
 *   w[l]   (M_l, K_l * C + S): column j * C + c for tap j and input channel c (tap K-1 is
 *          "now"), then the input mixer's S columns
 *   bias[l] (M_l)   w1[l] (C, C)   b1[l] (C)
 *   act[l]: 0 tanh, 1 relu, 2 leaky relu max(a, slope[l] a) (0 <= slope[l] <= 1);
 *   gated[l]: M_l = 2 C
 */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "vec.h"

/* A register tile: OB output channels x FB frame vectors of accumulators, with the FB
 * input vectors of one k and a broadcast weight. With AVX-512 (32 registers; a Xeon with
 * AVX-512) 8 x 3 ran 7 % faster than 4 x 4 (and 6 x 4, 8 x 2): each loaded input vector
 * serves 8 channels; with 16 registers 4 x 4. */
#if defined(__AVX512F__)
#define OB 8
#define FB 3
#else
#define OB 4
#define FB 4
#endif
_Static_assert(OB == 4 || OB == 8, "matvec_block's remainder tiles are of 1-3 rows, or 1-7 with OB 8");

static inline vf vact(int act, float slope, vf a) {
    if (act == 0) return vtanh_of_double(a + a);
    return act == 1 ? vmax(a, splat(0.0f)) : vmax(a, splat(slope) * a);
}

/* out[o, f] = res[o, f] + init[o] + sum_k W[o, k] * X[k][f] for o < R (R <= OB), over FB
 * frame vectors starting at frame 0 of each input row; rows of X are given by pointers;
 * res (row stride ldo, like out) may be NULL for none. */
static inline __attribute__((always_inline)) void tile(
    const int R, const float *const *rows, int nk, const float *W, int ldw,
    const float *init, const float *res, float *out, int ldo) {
    vf acc[OB][FB];
    for (int o = 0; o < R; o++)
        for (int f = 0; f < FB; f++)
            acc[o][f] = res ? ld(res + (size_t)o * ldo + f * VL) + splat(init[o]) : splat(init[o]);
    for (int k = 0; k < nk; k++) {
        vf x[FB];
        for (int f = 0; f < FB; f++) x[f] = ld(rows[k] + f * VL);
        for (int o = 0; o < R; o++) {
            vf wk = splat(W[(size_t)o * ldw + k]);
            for (int f = 0; f < FB; f++) acc[o][f] += wk * x[f];
        }
    }
    for (int o = 0; o < R; o++)
        for (int f = 0; f < FB; f++) st(out + (size_t)o * ldo + f * VL, acc[o][f]);
}

static void matvec_block(int M, const float *const *rows, int nk, const float *W, const float *init,
                         const float *res, float *out, int ldo) {
    int o = 0;
    for (; o + OB <= M; o += OB)
        tile(OB, rows, nk, W + (size_t)o * nk, nk, init + o, res ? res + (size_t)o * ldo : NULL,
             out + (size_t)o * ldo, ldo);
    /* the remaining rows (fewer than OB) in one tile of their own height */
    const float *Wr = W + (size_t)o * nk, *rr = res ? res + (size_t)o * ldo : NULL;
    float *outr = out + (size_t)o * ldo;
    switch (M - o) {
    case 0: break;
#if OB > 4
    case 7: tile(7, rows, nk, Wr, nk, init + o, rr, outr, ldo); break;
    case 6: tile(6, rows, nk, Wr, nk, init + o, rr, outr, ldo); break;
    case 5: tile(5, rows, nk, Wr, nk, init + o, rr, outr, ldo); break;
    case 4: tile(4, rows, nk, Wr, nk, init + o, rr, outr, ldo); break;
#endif
    case 3: tile(3, rows, nk, Wr, nk, init + o, rr, outr, ldo); break;
    case 2: tile(2, rows, nk, Wr, nk, init + o, rr, outr, ldo); break;
    default: tile(1, rows, nk, Wr, nk, init + o, rr, outr, ldo); break;
    }
}

int wavenet_layers(int B, int C, int T, int S, int L, const int *ks, const int *dil, const int *act,
                   const int *gated, const float *slope, float *y, const float *cond, float *head, float *const *ctx,
                   const float *const *w, const float *const *bias, const float *const *w1,
                   const float *const *b1) {
    const int block = FB * VL;
    const int Tp = (T + block - 1) / block * block;
    int nmax = 0, mmax = C, kmax = S;
    for (int l = 0; l < L; l++) {
        int n = (ks[l] - 1) * dil[l];
        if (n > nmax) nmax = n;
        if (gated[l] && 2 * C > mmax) mmax = 2 * C;
        if (ks[l] * C + S > kmax) kmax = ks[l] * C + S;
    }
    /* Two signal buffers, each row [context | input | padding] with the input at column
     * lead (a whole number of vectors, so taps at multiples of VL frames load aligned): a
     * layer reads one and writes its output into the other, beside the next layer's context. */
    const int lead = (nmax + VL - 1) / VL * VL, stride = lead + Tp;
    float *buf[2] = {zalloc((size_t)C * stride), zalloc((size_t)C * stride)};
    float *hwork = zalloc((size_t)C * Tp);
    float *cwork = zalloc((size_t)(S > 0 ? S : 1) * Tp);
    float *z = zalloc((size_t)mmax * block);
    float *post = zalloc((size_t)C * block);
    const float **rows = malloc(sizeof(float *) * (size_t)kmax);
    if (!buf[0] || !buf[1] || !hwork || !cwork || !z || !post || !rows) {
        free(buf[0]); free(buf[1]); free(hwork); free(cwork); free(z); free(post); free(rows);
        return -1;
    }
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < C; c++) {
            memcpy(buf[0] + (size_t)c * stride + lead, y + ((size_t)b * C + c) * T, sizeof(float) * T);
            memcpy(hwork + (size_t)c * Tp, head + ((size_t)b * C + c) * T, sizeof(float) * T);
        }
        for (int s = 0; s < S; s++) memcpy(cwork + (size_t)s * Tp, cond + ((size_t)b * S + s) * T, sizeof(float) * T);
        for (int l = 0; l < L; l++) {
            const int K = ks[l], d = dil[l], n = (K - 1) * d, M = gated[l] ? 2 * C : C, nk = K * C + S;
            float *in = buf[l & 1], *out = buf[(l & 1) ^ 1];
            /* in[c] = [old context (n) | input (T)] from column lead - n; then save the new context. */
            for (int c = 0; c < C; c++) {
                float *row = in + (size_t)c * stride + lead - n;
                float *old = ctx[l] + ((size_t)b * C + c) * n;
                memcpy(row, old, sizeof(float) * n);
                memcpy(old, row + T, sizeof(float) * n);
            }
            /* One product per frame block: the taps' rows, then the conditioning rows (w[l]
             * holds the mixer's columns after the taps'). */
            for (int t0 = 0; t0 < Tp; t0 += block) {
                int k = 0;
                for (int j = 0; j < K; j++)
                    for (int c = 0; c < C; c++) rows[k++] = in + (size_t)c * stride + lead - n + t0 + j * d;
                for (int s = 0; s < S; s++) rows[k++] = cwork + (size_t)s * Tp + t0;
                matvec_block(M, rows, nk, w[l], bias[l], NULL, z, block);
                for (int c = 0; c < C; c++)
                    for (int f = 0; f < block; f += VL) {
                        vf p = vact(act[l], slope[l], ld(z + (size_t)c * block + f));
                        if (gated[l]) p *= vsigmoid(ld(z + (size_t)(C + c) * block + f));
                        st(post + (size_t)c * block + f, p);
                        float *h = hwork + (size_t)c * Tp + t0 + f;
                        st(h, ld(h) + p);
                    }
                for (int c = 0; c < C; c++) rows[c] = post + (size_t)c * block;
                /* y_next = y + W1 post + b1, into the other buffer (later frames still read this one). */
                matvec_block(C, rows, C, w1[l], b1[l], in + lead + t0, out + lead + t0, stride);
            }
        }
        const float *last = buf[L & 1];
        for (int c = 0; c < C; c++) {
            memcpy(y + ((size_t)b * C + c) * T, last + (size_t)c * stride + lead, sizeof(float) * T);
            memcpy(head + ((size_t)b * C + c) * T, hwork + (size_t)c * Tp, sizeof(float) * T);
        }
    }
    free(buf[0]); free(buf[1]); free(hwork); free(cwork); free(z); free(post); free(rows);
    return 0;
}
