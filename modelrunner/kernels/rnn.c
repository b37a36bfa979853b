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
 * functions. The recurrence cannot be cut in time, but the B signals are independent,
 * so each step is one product of B rows. The weights are repacked here, per block of
 * VL hidden units, as [input | hidden] x gates x VL, so that one block's weights are a
 * contiguous few kB: every step walks the blocks once and, for each, runs all B rows
 * through it, RB rows at a time with the gates of those rows in vector registers (each
 * weight vector loaded serves RB rows, each broadcast input all gates), then applies the
 * gate nonlinearities to the accumulators in registers (the fused gates: the
 * pre-activations never go to memory). The nonlinearity that depends on another (LSTM:
 * tanh(c) after c; GRU: n after r) waits until every block of the step has run
 * (finish_rows), so that many units' tanh are in flight at once rather than one chain per
 * block (measured: LSTM-32 about 7 %, GRU-32 about 14 % faster than computing h inside the
 * block; storing every pre-activation and doing all the gates after the blocks was slower).
 * Sigmoid uses a polynomial exp and a reciprocal estimate refined by a Newton step
 * on whole vectors; tanh(a) = 2 sigmoid(2a) - 1, with the factor 2 folded into the
 * packed weights by the caller (scaling by 2 is exact in binary floating point).
 * The hidden state is double-buffered (step t reads one buffer and writes the other),
 * each row's buffer holding [layer input | h], the operand of the next step's product.
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

/* Rows per register tile: RB rows x up to 4 gate accumulators, plus the weight vectors of
 * one k and a broadcast input, fit the vector registers (16 with SSE and AVX2, 32 with
 * AVX-512). With AVX2 (12 rows, 2-core EPYC) an LSTM ran fastest with 2 rows (8
 * accumulators, the 4 weight vectors in registers), a GRU with 3 (its hidden part has
 * 3 weight vectors per k). With AVX-512 (12 rows) an LSTM ran 1-4 % faster with 3 rows
 * than with 6 on an EPYC (2 and 4 were slower there), but 2-9 % slower than with 6 on a
 * Xeon (4 between, 2 slowest), so 6 as for a GRU, which ran fastest with 6 on both. */
#if defined(__AVX512F__)
#define RB 6
#define RB_LSTM 6
#else
#define RB 3
#define RB_LSTM 2
#endif
_Static_assert(RB_LSTM <= RB, "block_rows holds at most RB rows of accumulators");
#define NA 4 /* accumulators per row: LSTM i f g o; GRU r z n_x n_h; Elman one */

enum { CELL_LSTM = 0, CELL_GRU = 1, CELL_RNN_TANH = 2, CELL_RNN_RELU = 3 };

int rnn_vector_width(void) { return VL; }

/* y = exp(x) elementwise, n a multiple of the vector width; exported for the tests. */
void rnn_exp(const float *x, float *y, long n) {
    for (long i = 0; i + VL <= n; i += VL) st(y + i, vexp_neg(-ld(x + i)));
}

/* Gate vectors per k of the input rows and of the hidden rows. GRU keeps its candidate's
 * input and hidden parts apart (n = tanh(x part + r * h part)): accumulators 2 and 3. */
static inline __attribute__((always_inline)) int gates_in(int cell) {
    return cell == CELL_LSTM ? 4 : cell == CELL_GRU ? 3 : 1;
}

/* One layer's weights, repacked per block of VL hidden units u:
 * w + u * wblock: [k < I][gates_in][VL], then [k < Hp][gates_in][VL] (GRU's third hidden
 * gate vector feeds accumulator 3); b + u * NA * VL: the accumulators' start values. */
typedef struct {
    int I;
    size_t wblock;
    float *w;
    float *b;
} packed;

static void pack(int cell, int I, int Hp, const float *wx, const float *bx, const float *wh, const float *bh,
                 packed *p) {
    const int G = gates_in(cell) * Hp, ng = gates_in(cell), nb = Hp / VL;
    p->I = I;
    p->wblock = (size_t)(I + Hp) * ng * VL;
    for (int u = 0; u < nb; u++) {
        float *w = p->w + u * p->wblock;
        for (int k = 0; k < I + Hp; k++)
            for (int g = 0; g < ng; g++)
                for (int v = 0; v < VL; v++) {
                    const int col = g * Hp + u * VL + v;
                    *w++ = k < I ? wx[(size_t)k * G + col] : wh[(size_t)(k - I) * G + col];
                }
        float *b = p->b + (size_t)u * NA * VL;
        memset(b, 0, sizeof(float) * NA * VL);
        for (int v = 0; v < VL; v++) {
            const int at = u * VL + v;
            if (cell == CELL_GRU) {
                b[0 * VL + v] = bx[at] + bh[at];
                b[1 * VL + v] = bx[Hp + at] + bh[Hp + at];
                b[2 * VL + v] = bx[2 * Hp + at];
                b[3 * VL + v] = bh[2 * Hp + at];
            } else {
                for (int g = 0; g < ng; g++) b[g * VL + v] = bx[g * Hp + at] + bh[g * Hp + at];
            }
        }
    }
}

/* R rows (a[r] = [input (I) | h (Hp)], row stride lda) through one block of a layer (w, b:
 * the block's packed weights). Elman cells: the block's new h into hn[r] (stride lda) and,
 * for the layer above when up is not NULL, up[r] (stride ldu). LSTM: c (stride Hp) updated
 * in place and the output gate into s1; GRU: z into s1 and tanh's argument into s2 (stride
 * Hp), for finish_rows to make h. */
static inline __attribute__((always_inline)) void block_rows(
    const int cell, const int R, const float *a, int lda, int I, int Hp, const float *w,
    const float *b, float *hn, float *up, int ldu, float *c, float *s1, float *s2) {
    const int ng = gates_in(cell);
    vf acc[RB][NA];
    for (int r = 0; r < R; r++)
        for (int g = 0; g < NA; g++) acc[r][g] = ld(b + g * VL);
    for (int k = 0; k < I; k++, w += ng * VL) {
        vf wv[4];
        for (int g = 0; g < ng; g++) wv[g] = ld(w + g * VL);
        for (int r = 0; r < R; r++) {
            const vf s = splat(a[(size_t)r * lda + k]);
            for (int g = 0; g < ng; g++) acc[r][g] += s * wv[g];
        }
    }
#pragma GCC unroll 2
    for (int k = I; k < I + Hp; k++, w += ng * VL) {
        vf wv[4];
        for (int g = 0; g < ng; g++) wv[g] = ld(w + g * VL);
        for (int r = 0; r < R; r++) {
            const vf s = splat(a[(size_t)r * lda + k]);
            for (int g = 0; g < ng; g++) acc[r][cell == CELL_GRU && g == 2 ? 3 : g] += s * wv[g];
        }
    }
    for (int r = 0; r < R; r++) {
        vf h;
        if (cell == CELL_LSTM) {
            /* h = o tanh(c) waits for the whole step (finish_rows): the second nonlinearity
             * of a unit depends on the first, and as one chain per block it left the core idle. */
            const vf i = vsigmoid(acc[r][0]), f = vsigmoid(acc[r][1]), gg = vtanh_of_double(acc[r][2]);
            const vf cc = f * ld(c + (size_t)r * Hp) + i * gg;
            st(c + (size_t)r * Hp, cc);
            st(s1 + (size_t)r * Hp, vsigmoid(acc[r][3]));
            continue;
        } else if (cell == CELL_GRU) {
            /* n = tanh(x part + r h part) and h likewise wait for the step (finish_rows). */
            const vf rg = vsigmoid(acc[r][0]);
            st(s1 + (size_t)r * Hp, vsigmoid(acc[r][1]));
            st(s2 + (size_t)r * Hp, acc[r][2] + rg * acc[r][3]);
            continue;
        } else if (cell == CELL_RNN_TANH) {
            h = vtanh_of_double(acc[r][0]);
        } else {
            h = vmax(acc[r][0], splat(0.0f));
        }
        st(hn + (size_t)r * lda, h);
        if (up) st(up + (size_t)r * ldu, h);
    }
}

/* The end of an LSTM or GRU step, once every block has run: h = o tanh(c) (LSTM; s1 = o),
 * h = n + z (h_old - n) with n = tanh(s2) (GRU; s1 = z), into an and up. All B x Hp units at
 * once, so the tanh of many units are in flight together rather than one block's at a time. */
static inline __attribute__((always_inline)) void finish_rows(
    const int cell, int B, int I, int Hp, const float *a, float *an, float *up, int ldu, const float *c,
    const float *s1, const float *s2) {
    const int lda = I + Hp;
    for (int r = 0; r < B; r++)
        for (int u = 0; u < Hp; u += VL) {
            const size_t at = (size_t)r * Hp + u;
            vf h;
            if (cell == CELL_LSTM) {
                const vf cc = ld(c + at);
                h = ld(s1 + at) * vtanh_of_double(cc + cc);
            } else {
                const vf n = vtanh_of_double(ld(s2 + at));
                h = n + ld(s1 + at) * (ld(a + (size_t)r * lda + I + u) - n);
            }
            st(an + (size_t)r * lda + I + u, h);
            if (up) st(up + (size_t)r * ldu + u, h);
        }
}

/* One step of one layer for all B rows: block by block, so that each block's weights are
 * loaded from cache once per step for all rows. s1, s2: (B, Hp) scratch for finish_rows. */
static inline __attribute__((always_inline)) void layer_step(
    const int cell, int B, int Hp, const packed *p, const float *a, float *an, float *up, int ldu, float *c,
    float *s1, float *s2) {
    const int I = p->I, lda = I + Hp, rb = cell == CELL_LSTM ? RB_LSTM : RB;
    for (int u = 0; u < Hp / VL; u++) {
        const float *w = p->w + u * p->wblock, *b = p->b + (size_t)u * NA * VL;
        const int v = u * VL;
        int r = 0;
        for (; r + rb <= B; r += rb)
            block_rows(cell, rb, a + (size_t)r * lda, lda, I, Hp, w, b, an + (size_t)r * lda + I + v,
                       up ? up + (size_t)r * ldu + v : NULL, ldu, c ? c + (size_t)r * Hp + v : NULL,
                       s1 + (size_t)r * Hp + v, s2 + (size_t)r * Hp + v);
        for (; r < B; r++)
            block_rows(cell, 1, a + (size_t)r * lda, lda, I, Hp, w, b, an + (size_t)r * lda + I + v,
                       up ? up + (size_t)r * ldu + v : NULL, ldu, c ? c + (size_t)r * Hp + v : NULL,
                       s1 + (size_t)r * Hp + v, s2 + (size_t)r * Hp + v);
    }
    if (cell == CELL_LSTM || cell == CELL_GRU) finish_rows(cell, B, I, Hp, a, an, up, ldu, c, s1, s2);
}

static void step_any(int cell, int B, int Hp, const packed *p, const float *a, float *an, float *up, int ldu,
                     float *c, float *s1, float *s2) {
    switch (cell) {
    case CELL_LSTM: layer_step(CELL_LSTM, B, Hp, p, a, an, up, ldu, c, s1, s2); break;
    case CELL_GRU: layer_step(CELL_GRU, B, Hp, p, a, an, up, ldu, c, s1, s2); break;
    case CELL_RNN_TANH: layer_step(CELL_RNN_TANH, B, Hp, p, a, an, up, ldu, c, s1, s2); break;
    default: layer_step(CELL_RNN_RELU, B, Hp, p, a, an, up, ldu, c, s1, s2); break;
    }
}

/* Returns 0, or -1 when scratch memory could not be allocated (nothing is written). */
int rnn_run(int cell, int layers, int B, int T, int I0, int Hp, const float *x, long x_stride,
            const float *knobs, const float *const *wx, const float *const *bx,
            const float *const *wh, const float *const *bh, float *h, float *c,
            const float *lin_w, float lin_b, int skip, float *y) {
    const int ng = gates_in(cell);
    packed *p = calloc((size_t)layers, sizeof(packed));
    /* per layer: the two operand buffers (B, I_l + Hp) and the weights */
    float **buf = calloc((size_t)layers * 2, sizeof(float *));
    float *cs = c ? zalloc((size_t)layers * B * Hp) : NULL;
    float *s1 = zalloc((size_t)B * Hp), *s2 = zalloc((size_t)B * Hp);
    int failed = !p || !buf || (c && !cs) || !s1 || !s2;
    for (int l = 0; !failed && l < layers; l++) {
        const int I = l == 0 ? I0 : Hp;
        p[l].w = zalloc((size_t)(I + Hp) * ng * Hp);
        p[l].b = zalloc((size_t)NA * Hp);
        buf[2 * l] = zalloc((size_t)B * (I + Hp));
        buf[2 * l + 1] = zalloc((size_t)B * (I + Hp));
        failed = !p[l].w || !p[l].b || !buf[2 * l] || !buf[2 * l + 1];
        if (!failed) pack(cell, I, Hp, wx[l], bx[l], wh[l], bh[l], &p[l]);
    }
    if (failed) {
        for (int l = 0; p && buf && l < layers; l++) {
            free(p[l].w); free(p[l].b); free(buf[2 * l]); free(buf[2 * l + 1]);
        }
        free(p); free(buf); free(cs); free(s1); free(s2);
        return -1;
    }
    for (int l = 0; l < layers; l++) {
        const int I = p[l].I, lda = I + Hp;
        for (int b = 0; b < B; b++) {
            memcpy(buf[2 * l] + (size_t)b * lda + I, h + ((size_t)l * B + b) * Hp, sizeof(float) * Hp);
            if (c) memcpy(cs + ((size_t)l * B + b) * Hp, c + ((size_t)l * B + b) * Hp, sizeof(float) * Hp);
            if (l == 0)
                for (int k = 1; k < I0; k++)
                    buf[0][(size_t)b * lda + k] = buf[1][(size_t)b * lda + k] = knobs[(size_t)b * (I0 - 1) + k - 1];
        }
    }
    const int top = layers - 1, ldt = p[top].I + Hp;
    for (int t = 0; t < T; t++) {
        const int cur = t & 1, nxt = cur ^ 1;
        for (int b = 0; b < B; b++) buf[cur][(size_t)b * (I0 + Hp)] = x[(size_t)b * x_stride + t];
        for (int l = 0; l < layers; l++) {
            float *up = l < top ? buf[2 * (l + 1) + cur] : NULL;
            step_any(cell, B, Hp, &p[l], buf[2 * l + cur], buf[2 * l + nxt], up, Hp + Hp,
                     cs ? cs + (size_t)l * B * Hp : NULL, s1, s2);
        }
        const float *ht = buf[2 * top + nxt] + p[top].I;
        for (int b = 0; b < B; b++) {
            vf acc = splat(0.0f);
            for (int u = 0; u < Hp; u += VL) acc += ld(ht + (size_t)b * ldt + u) * ld(lin_w + u);
            float s = lin_b + vsum(acc);
            if (skip) s += x[(size_t)b * x_stride + t];
            y[(size_t)b * T + t] = s;
        }
    }
    for (int l = 0; l < layers; l++) {
        const int I = p[l].I, lda = I + Hp;
        const float *last = buf[2 * l + (T & 1)];
        for (int b = 0; b < B; b++) {
            memcpy(h + ((size_t)l * B + b) * Hp, last + (size_t)b * lda + I, sizeof(float) * Hp);
            if (c) memcpy(c + ((size_t)l * B + b) * Hp, cs + ((size_t)l * B + b) * Hp, sizeof(float) * Hp);
        }
        free(p[l].w); free(p[l].b); free(buf[2 * l]); free(buf[2 * l + 1]);
    }
    free(p); free(buf); free(cs); free(s1); free(s2);
    return 0;
}
