/* The fused Runge-Kutta solve of a dense field, compiled: forward and discrete adjoint.
 *
 * The same arithmetic as colplugin/solve/fused.py with colplugin.field.FusedOperators,
 * written as plain loops so that one vector-field evaluation of a small network costs its
 * arithmetic instead of a dozen tensor-library calls. colplugin/solve/compiled.py builds
 * this file with cffi (once per source version, cached) and wraps it in an autograd
 * Function; the scheme, the step-size rule, the stiffness cap and the backward pass are
 * documented in fused.py.
 *
 * Model, with y = [V, A] (B x 2P, mV), w = db + m (V - A), g = w / expm1(w) (g = d f),
 *   k = drive_k + g Wg + y * c                               (one stage, B x 2P)
 *   (dk/dy)^T q = q * c - [sz * m, -sz * m],  sz = (q Wg^T) * g'(z),  z = -w.
 * The coupling Wg (P x 2P) is dense (FusedOperators) or sparse (SparseFusedOperators: the
 * intra-column blocks, inter-column edges and rate terms as one list of entries, in
 * compressed rows: row_ptr (P + 1), col (nnz), val (nnz)); its cotangent is dense, or one
 * number per entry.
 *
 * This file is included twice, with REAL = double (suffix _f64) and REAL = float (_f32).
 * Step-size control runs in double in both, as the Python loop does.
 */

#ifndef COLPLUGIN_FK_COMMON
#define COLPLUGIN_FK_COMMON
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FK_SAFETY 0.9
#define FK_IFACTOR 10.0
#define FK_DFACTOR 0.2
#define FK_STIFF_LIMIT (0.9 * 3.3)
#define FK_SERIES_Z 1e-2

/* The entry points are compiled twice on x86-64 (AVX2 and baseline), the loader picks the
 * one the CPU runs; the loops are inlined into each. No reassociation is allowed, so both
 * give the same numbers. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones) && defined(__linux__)
#define FK_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef FK_CLONES
#define FK_CLONES
#endif
#if defined(__GNUC__)
#define FK_INLINE static inline __attribute__((always_inline))
#else
#define FK_INLINE static inline
#endif

enum { FK_OK = 0, FK_STOPPED = 1, FK_UNDERFLOW = 2, FK_NOMEM = 3 };

/* The divergence check, a Python function (cffi extern "Python"): called every watch_every
 * attempted steps with the time (s) and the largest V - A (mV, NaN if any is NaN) of the
 * step's first stage; nonzero stops the solve. */
static int fk_watch(void *handle, double t, double x_max);
#endif

#define FK_CAT_(a, b) a##b
#define FK_CAT(a, b) FK_CAT_(a, b)
#define FN(name) FK_CAT(name, FK_SFX)
#define MODEL FK_CAT(fk_model, FK_SFX)
#define SOLVE FK_CAT(fk_solve, FK_SFX)

typedef struct {
    int B, P, Bd, K;            /* trials, populations, trials of the drive (1 or B), segments */
    int s, s_sol, adaptive, order;
    const REAL *A;              /* s x s stage matrix (row i: a_ij, j < i) */
    const REAL *bw;             /* s solution weights */
    const REAL *ew;             /* s error weights (adaptive schemes) */
    REAL m, db;                 /* w = db + m (V - A) */
    const REAL *Wg;             /* P x 2P */
    const REAL *WgT;            /* 2P x P */
    const REAL *c;              /* 2P state coefficients, 1/s */
    const REAL *drive;          /* Bd x K x 2P, mV/s */
    double a, b, d;             /* constants of f: x = (b - w / d) / a */
    int sparse;                 /* Wg as compressed rows instead of a dense matrix */
    const int *row_ptr, *col;
    const REAL *val;
    REAL *tmp;                  /* scratch of 4 P B numbers (set by the entry points) */
} MODEL;

/* From this many trials on, the sparse products run on transposed copies (populations x
 * trials), so that the innermost loop runs over the trials, contiguously; the sums are
 * taken in the same order, so the numbers are the same. */
#define FK_TRANSPOSE_MIN 8

typedef struct {
    int status;                 /* FK_OK or the reason the solve stopped */
    double t_fail;              /* time at which the solve stopped */
    long attempts;              /* steps tried, rejected ones included */
    long n_steps, cap_steps;    /* accepted steps */
    double *h;                  /* their sizes */
    int *seg;                   /* their stimulus segments */
    long n_ck, cap_ck, M;       /* checkpoints: the state before accepted step j * M (M = 0: none) */
    REAL *cks;
    int stages_kept;            /* whether st holds w and g of every stage of every accepted step */
    long cap_st;
    REAL *st;                   /* per accepted step: w (s_sol x B x P), then g (s_sol x B x P) */
} SOLVE;

/* One stage: k = F(Y) into kout (B x 2P); w and g (B x P) kept. */
FK_INLINE void FN(fk_stage)(const MODEL *md, const REAL *Y, int seg, REAL *kout, REAL *w, REAL *g)
{
    const int B = md->B, P = md->P, P2 = 2 * md->P;
    const REAL m = md->m, db = md->db;
    for (int b = 0; b < B; b++) {
        const REAL *Yb = Y + (size_t)b * P2;
        const REAL *dr = md->drive + ((size_t)(md->Bd == 1 ? 0 : b) * md->K + seg) * P2;
        REAL *wb = w + (size_t)b * P, *gb = g + (size_t)b * P, *kb = kout + (size_t)b * P2;
        if (md->sparse) { /* the eager sparse loop's form of w: (A - V) d a + d b */
            for (int p = 0; p < P; p++) {
                REAL wv = (Yb[P + p] - Yb[p]) * (-m) + db;
                REAL gv = wv / (REAL)expm1(wv);
                wb[p] = wv;
                gb[p] = (gv != gv) ? (REAL)1 : gv;
            }
            for (int q = 0; q < P2; q++)
                kb[q] = Yb[q] * md->c[q] + dr[q];
            if (B >= FK_TRANSPOSE_MIN)
                continue; /* the product follows for all trials at once */
            for (int p = 0; p < P; p++) {
                const REAL gp = gb[p];
                for (int j = md->row_ptr[p]; j < md->row_ptr[p + 1]; j++)
                    kb[md->col[j]] += gp * md->val[j];
            }
            continue;
        }
        for (int p = 0; p < P; p++) {
            REAL wv = db + (Yb[p] * m - Yb[P + p] * m);
            REAL gv = wv / (REAL)expm1(wv);
            wb[p] = wv;
            gb[p] = (gv != gv) ? (REAL)1 : gv;
        }
        for (int q = 0; q < P2; q++)
            kb[q] = dr[q];
        for (int p = 0; p < P; p++) {
            const REAL gp = gb[p];
            const REAL *row = md->Wg + (size_t)p * P2;
            for (int q = 0; q < P2; q++)
                kb[q] += gp * row[q];
        }
        for (int q = 0; q < P2; q++)
            kb[q] += Yb[q] * md->c[q];
    }
    if (md->sparse && B >= FK_TRANSPOSE_MIN) { /* kT[col, :] += gT[p, :] val: contiguous over trials */
        REAL *gT = md->tmp, *kT = md->tmp + (size_t)P * B;
        for (int b = 0; b < B; b++)
            for (int p = 0; p < P; p++)
                gT[(size_t)p * B + b] = g[(size_t)b * P + p];
        for (int b = 0; b < B; b++)
            for (int q = 0; q < P2; q++)
                kT[(size_t)q * B + b] = kout[(size_t)b * P2 + q];
        for (int p = 0; p < P; p++) {
            const REAL *gp = gT + (size_t)p * B;
            for (int j = md->row_ptr[p]; j < md->row_ptr[p + 1]; j++) {
                const REAL v = md->val[j];
                REAL *kq = kT + (size_t)md->col[j] * B;
                for (int b = 0; b < B; b++)
                    kq[b] += gp[b] * v;
            }
        }
        for (int b = 0; b < B; b++)
            for (int q = 0; q < P2; q++)
                kout[(size_t)b * P2 + q] = kT[(size_t)q * B + b];
    }
}

/* Y = y + h sum_{j<i} a_ij K_j */
FK_INLINE void FN(fk_stage_input)(const MODEL *md, int i, const REAL *y, double h, const REAL *K, size_t N, REAL *Y)
{
    const REAL *ai = md->A + (size_t)i * md->s;
    for (size_t n = 0; n < N; n++) {
        REAL acc = 0;
        for (int j = 0; j < i; j++)
            acc += ai[j] * K[(size_t)j * N + n];
        Y[n] = y[n] + (REAL)h * acc;
    }
}

/* y_new = y + h sum_{i<s_sol} b_i K_i */
FK_INLINE void FN(fk_solution)(const MODEL *md, const REAL *y, double h, const REAL *K, size_t N, REAL *y_new)
{
    for (size_t n = 0; n < N; n++) {
        REAL acc = 0;
        for (int i = 0; i < md->s_sol; i++)
            acc += md->bw[i] * K[(size_t)i * N + n];
        y_new[n] = y[n] + (REAL)h * acc;
    }
}

/* The solution stages of one step from y (stage 0 evaluated afresh) and the new state. */
FK_INLINE void FN(fk_step)(const MODEL *md, const REAL *y, double h, int seg, REAL *K, REAL *Y, REAL *w, REAL *g,
                        REAL *y_new)
{
    const size_t N = (size_t)md->B * 2 * md->P, BP = (size_t)md->B * md->P;
    for (int i = 0; i < md->s_sol; i++) {
        const REAL *Yi = y;
        if (i > 0) {
            FN(fk_stage_input)(md, i, y, h, K, N, Y);
            Yi = Y;
        }
        FN(fk_stage)(md, Yi, seg, K + (size_t)i * N, w + (size_t)i * BP, g + (size_t)i * BP);
    }
    if (y_new)
        FN(fk_solution)(md, y, h, K, N, y_new);
}

static int FN(fk_push_ck)(SOLVE *sv, const REAL *y, size_t N)
{
    if (sv->n_ck == sv->cap_ck) {
        long cap = sv->cap_ck ? 2 * sv->cap_ck : 64;
        REAL *p = (REAL *)realloc(sv->cks, (size_t)cap * N * sizeof(REAL));
        if (!p)
            return FK_NOMEM;
        sv->cks = p;
        sv->cap_ck = cap;
    }
    memcpy(sv->cks + (size_t)sv->n_ck * N, y, N * sizeof(REAL));
    sv->n_ck++;
    return FK_OK;
}

static int FN(fk_push_step)(SOLVE *sv, double h, int seg)
{
    if (sv->n_steps == sv->cap_steps) {
        long cap = sv->cap_steps ? 2 * sv->cap_steps : 256;
        double *ph = (double *)realloc(sv->h, (size_t)cap * sizeof(double));
        if (!ph)
            return FK_NOMEM;
        sv->h = ph;
        int *ps = (int *)realloc(sv->seg, (size_t)cap * sizeof(int));
        if (!ps)
            return FK_NOMEM;
        sv->seg = ps;
        sv->cap_steps = cap;
    }
    sv->h[sv->n_steps] = h;
    sv->seg[sv->n_steps] = seg;
    sv->n_steps++;
    return FK_OK;
}

/* w and g of the solution stages of the step just accepted (slots 0..s_sol-1 of w, g). */
static int FN(fk_push_stages)(SOLVE *sv, const REAL *w, const REAL *g, size_t half)
{
    if (sv->n_steps >= sv->cap_st) {
        long cap = sv->cap_st ? 2 * sv->cap_st : 256;
        REAL *p = (REAL *)realloc(sv->st, (size_t)cap * 2 * half * sizeof(REAL));
        if (!p)
            return FK_NOMEM;
        sv->st = p;
        sv->cap_st = cap;
    }
    REAL *dst = sv->st + (size_t)sv->n_steps * 2 * half;
    memcpy(dst, w, half * sizeof(REAL));
    memcpy(dst + half, g, half * sizeof(REAL));
    return FK_OK;
}

void FN(fk_free)(SOLVE *sv)
{
    if (!sv)
        return;
    free(sv->h);
    free(sv->seg);
    free(sv->cks);
    free(sv->st);
    free(sv);
}

static void *FN(fk_scratch)(size_t n)
{
    return calloc(n ? n : 1, sizeof(REAL));
}

/* The forward solve.
 *
 * stops (n_stops, s), seg_of (n_stops - 1): as fused_solve's; out_of_stop[m]: the row of
 * out (n_out x B x 2P) that takes the state at stop m, or -1; landed[m]: accepted steps
 * before stop m. keep: record what the backward pass needs; every: what to record, as
 * fused.py's checkpoint_every (0: w and g of every stage; M > 0: the state before every
 * M-th accepted step; -1, automatic: every stage while they take at most budget bytes,
 * and checkpoints from the start, M at least the steps whose stages fit the budget,
 * halved in number and M doubled when they outweigh a chunk); watch: the handle passed
 * to fk_watch. Returns NULL only when out of
 * memory at the start; otherwise the solve, with status FK_OK or the reason it stopped.
 */
FK_CLONES SOLVE *FN(fk_forward)(const MODEL *md, const REAL *y0, int n_stops, const double *stops, const int *seg_of,
                      const int *out_of_stop, REAL *out, long *landed, double step, double rtol, double atol,
                      int watch_every, void *watch, int keep, long every, double budget)
{
    const int s = md->s, s_sol = md->s_sol, P = md->P;
    const size_t N = (size_t)md->B * 2 * P, BP = (size_t)md->B * P;
    MODEL local = *md;
    local.tmp = FN(fk_scratch)(4 * BP);
    md = &local;
    SOLVE *sv = (SOLVE *)calloc(1, sizeof(SOLVE));
    REAL *K = FN(fk_scratch)((size_t)s * N), *Y = FN(fk_scratch)(N), *Ys = FN(fk_scratch)(N);
    REAL *y = FN(fk_scratch)(N), *y_new = FN(fk_scratch)(N);
    REAL *w = FN(fk_scratch)((size_t)s * BP), *g = FN(fk_scratch)((size_t)s * BP);
    if (!sv || !K || !Y || !Ys || !y || !y_new || !w || !g || !local.tmp) {
        free(K); free(Y); free(Ys); free(y); free(y_new); free(w); free(g); free(local.tmp);
        if (sv)
            sv->status = FK_NOMEM;
        return sv;
    }
    const int auto_ck = every < 0;
    const size_t half = (size_t)s_sol * BP;
    const double step_bytes = (double)(2 * half * sizeof(REAL));
    sv->stages_kept = keep && every <= 0;
    sv->M = every > 0 ? every : (every == 0 ? 0 : (long)fmax(1.0, floor(budget / step_bytes)));
    memcpy(y, y0, N * sizeof(REAL));
    landed[0] = 0;
    double h_next = step;
    int first_valid = 0;
    for (int mi = 0; mi + 1 < n_stops && sv->status == FK_OK; mi++) {
        double t = stops[mi];
        const double t_end = stops[mi + 1];
        const int k = seg_of[mi];
        if (mi == 0 || k != seg_of[mi - 1])
            first_valid = 0; /* the drive changed: stage 1 must be re-evaluated */
        while (t < t_end) {
            if (keep && sv->M && sv->n_steps == sv->n_ck * sv->M) {
                if ((sv->status = FN(fk_push_ck)(sv, y, N)) != FK_OK)
                    break;
                if (auto_ck && sv->n_ck > 2 * s_sol * sv->M) { /* checkpoints outweigh a chunk: halve them */
                    long j = 0;
                    for (long i = 0; i < sv->n_ck; i += 2, j++)
                        memmove(sv->cks + (size_t)j * N, sv->cks + (size_t)i * N, N * sizeof(REAL));
                    sv->n_ck = j;
                    sv->M *= 2;
                }
            }
            const double rem = t_end - t;
            const int last = !md->adaptive || h_next >= rem * (1 - 1e-9);
            const double h = last ? rem : h_next;
            if (!first_valid) {
                FN(fk_stage)(md, y, k, K, w, g);
                first_valid = 1;
            }
            if (sv->attempts % watch_every == 0) { /* stop a diverging solve early */
                double xm = -INFINITY;
                for (size_t n = 0; n < BP; n++) {
                    double xv = (md->b - (double)w[n] / md->d) / md->a;
                    if (xv != xv) { xm = NAN; break; }
                    if (xv > xm) xm = xv;
                }
                if (fk_watch(watch, t, xm)) {
                    sv->status = FK_STOPPED;
                    sv->t_fail = t;
                    break;
                }
            }
            sv->attempts++;
            for (int i = 1; i < s_sol; i++) {
                FN(fk_stage_input)(md, i, y, h, K, N, Y);
                FN(fk_stage)(md, Y, k, K + (size_t)i * N, w + (size_t)i * BP, g + (size_t)i * BP);
                if (i == s - 2)
                    memcpy(Ys, Y, N * sizeof(REAL));
            }
            FN(fk_solution)(md, y, h, K, N, y_new);
            if (md->adaptive) {
                REAL *Kl = K + (size_t)(s - 1) * N, *Kp = K + (size_t)(s - 2) * N;
                FN(fk_stage)(md, y_new, k, Kl, w + (size_t)(s - 1) * BP, g + (size_t)(s - 1) * BP);
                if (s - 2 == 0)
                    memcpy(Ys, y, N * sizeof(REAL));
                /* error (torchdiffeq's RMS norm) and stiffness (Hairer & Wanner) */
                REAL sq = 0;
                for (size_t n = 0; n < N; n++) {
                    REAL e = 0;
                    for (int i = 0; i < s; i++)
                        e += md->ew[i] * K[(size_t)i * N + n];
                    e *= (REAL)h;
                    REAL ay = fabs(y[n]), an = fabs(y_new[n]);
                    REAL tol = (ay > an ? ay : an) * (REAL)rtol + (REAL)atol;
                    REAL q = e / tol;
                    sq += q * q;
                }
                double rho = 0;
                for (int b = 0; b < md->B; b++) {
                    REAL nu = 0, de = 0;
                    for (int q = 0; q < 2 * P; q++) {
                        size_t n = (size_t)b * 2 * P + q;
                        REAL dk = Kl[n] - Kp[n], dy = y_new[n] - Ys[n];
                        nu += dk * dk;
                        de += dy * dy;
                    }
                    double r = (double)sqrt(nu) / (double)sqrt(de);
                    if (!isfinite(r))
                        r = 0;
                    if (r > rho)
                        rho = r;
                }
                const double ratio = (double)(REAL)sqrt(sq) / sqrt((double)N);
                if (!(ratio <= 1.0)) { /* rejected (or NaN): shrink and retry */
                    double fac = isfinite(ratio) ? fmax(FK_DFACTOR, FK_SAFETY * pow(ratio, -1.0 / md->order))
                                                 : FK_DFACTOR;
                    h_next = h * fac;
                    if (h_next < 1e-12 * fmax(fabs(t_end), 1.0)) {
                        sv->status = FK_UNDERFLOW;
                        sv->t_fail = t;
                        break;
                    }
                    continue;
                }
                double fac = ratio > 0 ? fmin(FK_IFACTOR, fmax(FK_DFACTOR, FK_SAFETY * pow(ratio, -1.0 / md->order)))
                                       : FK_IFACTOR;
                if (!last || fac < 1.0)
                    h_next = h * fac;
                if (rho > 0)
                    h_next = fmin(h_next, FK_STIFF_LIMIT / rho);
            } else {
                first_valid = 0;
            }
            if (keep) {
                if (sv->stages_kept) {
                    if (auto_ck && (double)(sv->n_steps + 1) * step_bytes > budget) {
                        free(sv->st); /* too large to keep: from here on the checkpoints serve */
                        sv->st = NULL;
                        sv->cap_st = 0;
                        sv->stages_kept = 0;
                    } else {
                        if ((sv->status = FN(fk_push_stages)(sv, w, g, half)) != FK_OK)
                            break;
                    }
                }
                if ((sv->status = FN(fk_push_step)(sv, h, k)) != FK_OK)
                    break;
            }
            if (md->adaptive) { /* first same as last */
                memcpy(K, K + (size_t)(s - 1) * N, N * sizeof(REAL));
                memcpy(w, w + (size_t)(s - 1) * BP, BP * sizeof(REAL));
                memcpy(g, g + (size_t)(s - 1) * BP, BP * sizeof(REAL));
            }
            memcpy(y, y_new, N * sizeof(REAL));
            t = last ? t_end : t + h;
        }
        if (sv->status != FK_OK)
            break;
        landed[mi + 1] = sv->n_steps;
        if (out_of_stop[mi + 1] >= 0)
            memcpy(out + (size_t)out_of_stop[mi + 1] * N, y, N * sizeof(REAL));
    }
    free(K); free(Y); free(Ys); free(y); free(y_new); free(w); free(g); free(local.tmp);
    return sv;
}

/* The discrete adjoint of a recorded forward solve.
 *
 * grad_out (n_out x B x 2P): cotangents of the outputs; inj_ptr (n_steps + 2), inj_idx:
 * the output rows landed after j accepted steps are inj_idx[inj_ptr[j] .. inj_ptr[j+1]).
 * lam (B x 2P, zero on entry) becomes the cotangent of y0; gWg (P x 2P, or nnz for a sparse
 * coupling) and gdrive (Bd x K x 2P) are accumulated into where not NULL. Returns FK_OK or FK_NOMEM.
 */
FK_CLONES int FN(fk_backward)(const MODEL *md, const SOLVE *sv, const REAL *grad_out, const long *inj_ptr,
                    const long *inj_idx, REAL *lam, REAL *gWg, REAL *gdrive)
{
    const int s = md->s, s_sol = md->s_sol, P = md->P, P2 = 2 * md->P, B = md->B;
    const size_t N = (size_t)B * P2, BP = (size_t)B * P;
    const long n_steps = sv->n_steps;
    MODEL local = *md;
    local.tmp = FN(fk_scratch)(4 * BP);
    md = &local;
    const size_t half = (size_t)s_sol * BP;
    /* chunks of steps whose stages are at hand: all of them, or those between checkpoints */
    const long chunk = sv->stages_kept ? (n_steps ? n_steps : 1) : sv->M;
    const long n_chunks = n_steps ? (n_steps + chunk - 1) / chunk : 0;
    REAL *K = FN(fk_scratch)((size_t)s * N), *Y = FN(fk_scratch)(N), *y = FN(fk_scratch)(N);
    REAL *y_new = FN(fk_scratch)(N);
    REAL *w = FN(fk_scratch)((size_t)s * BP), *g = FN(fk_scratch)((size_t)s * BP);
    REAL *U = FN(fk_scratch)((size_t)s * N), *gk = FN(fk_scratch)(N), *sz = FN(fk_scratch)(BP);
    REAL *buf = sv->stages_kept ? NULL : FN(fk_scratch)((size_t)(chunk < n_steps ? chunk : n_steps) * 2 * half);
    if (!K || !Y || !y || !y_new || !w || !g || !U || !gk || !sz || (!sv->stages_kept && !buf) || !local.tmp) {
        free(K); free(Y); free(y); free(y_new); free(w); free(g); free(U); free(gk); free(sz); free(buf);
        free(local.tmp);
        return FK_NOMEM;
    }
    for (long c = n_chunks - 1; c >= 0; c--) { /* last chunk first */
        const long a = c * chunk, e = a + chunk < n_steps ? a + chunk : n_steps;
        const REAL *stages = sv->st + (size_t)a * 2 * half;
        if (!sv->stages_kept) { /* recompute the chunk's stages from its checkpoint, as the forward did */
            memcpy(y, sv->cks + (size_t)c * N, N * sizeof(REAL));
            for (long n = a; n < e; n++) {
                FN(fk_step)(md, y, sv->h[n], sv->seg[n], K, Y, w, g, y_new);
                memcpy(buf + (size_t)(n - a) * 2 * half, w, half * sizeof(REAL));
                memcpy(buf + (size_t)(n - a) * 2 * half + half, g, half * sizeof(REAL));
                memcpy(y, y_new, N * sizeof(REAL));
            }
            stages = buf;
        }
        for (long n = e - 1; n >= a; n--) {
            for (long j = inj_ptr[n + 1]; j < inj_ptr[n + 2]; j++) {
                const REAL *go = grad_out + (size_t)inj_idx[j] * N;
                for (size_t q = 0; q < N; q++)
                    lam[q] += go[q];
            }
            const double h = sv->h[n];
            const int k = sv->seg[n];
            const REAL *ws = stages + (size_t)(n - a) * 2 * half, *gs = ws + half;
            for (int i = s_sol - 1; i >= 0; i--) {
                /* gk_i = h b_i lam + h sum_{j>i} a_ji U_j */
                const REAL hb = (REAL)(h * (double)md->bw[i]);
                for (size_t q = 0; q < N; q++) {
                    REAL acc = 0;
                    for (int j = i + 1; j < s_sol; j++)
                        acc += md->A[(size_t)j * s + i] * U[(size_t)j * N + q];
                    gk[q] = hb * lam[q] + (REAL)h * acc;
                }
                /* U_i = (dF/dy)(Y_i)^T gk_i */
                const REAL *wi = ws + (size_t)i * BP, *gi = gs + (size_t)i * BP;
                REAL *Ui = U + (size_t)i * N;
                const int tr = md->sparse && B >= FK_TRANSPOSE_MIN;
                if (tr) { /* the sparse products on transposed copies, contiguous over trials */
                    REAL *gkT = md->tmp, *szT = md->tmp + (size_t)P2 * B, *gT = szT + (size_t)P * B;
                    for (int b = 0; b < B; b++)
                        for (int q = 0; q < P2; q++)
                            gkT[(size_t)q * B + b] = gk[(size_t)b * P2 + q];
                    for (int p = 0; p < P; p++) {
                        REAL *sp = szT + (size_t)p * B;
                        for (int b = 0; b < B; b++)
                            sp[b] = 0;
                        for (int j = md->row_ptr[p]; j < md->row_ptr[p + 1]; j++) {
                            const REAL v = md->val[j];
                            const REAL *gq = gkT + (size_t)md->col[j] * B;
                            for (int b = 0; b < B; b++)
                                sp[b] += v * gq[b];
                        }
                    }
                    for (int b = 0; b < B; b++)
                        for (int p = 0; p < P; p++)
                            sz[(size_t)b * P + p] = szT[(size_t)p * B + b];
                    if (gWg) {
                        for (int b = 0; b < B; b++)
                            for (int p = 0; p < P; p++)
                                gT[(size_t)p * B + b] = gi[(size_t)b * P + p];
                        for (int p = 0; p < P; p++) {
                            const REAL *gp = gT + (size_t)p * B;
                            for (int j = md->row_ptr[p]; j < md->row_ptr[p + 1]; j++) {
                                const REAL *gq = gkT + (size_t)md->col[j] * B;
                                REAL acc = gWg[j];
                                for (int b = 0; b < B; b++)
                                    acc += gp[b] * gq[b];
                                gWg[j] = acc;
                            }
                        }
                    }
                }
                for (int b = 0; b < B; b++) {
                    const REAL *gkb = gk + (size_t)b * P2;
                    REAL *szb = sz + (size_t)b * P;
                    if (tr) {
                        /* sz filled above */
                    } else if (md->sparse) {
                        for (int p = 0; p < P; p++) {
                            REAL acc = 0;
                            for (int j = md->row_ptr[p]; j < md->row_ptr[p + 1]; j++)
                                acc += md->val[j] * gkb[md->col[j]];
                            szb[p] = acc;
                        }
                    } else {
                        for (int p = 0; p < P; p++)
                            szb[p] = 0;
                        for (int q = 0; q < P2; q++) {
                            const REAL gq = gkb[q];
                            const REAL *row = md->WgT + (size_t)q * P;
                            for (int p = 0; p < P; p++)
                                szb[p] += gq * row[p];
                        }
                    }
                    for (int p = 0; p < P; p++) {
                        const REAL z = -wi[(size_t)b * P + p], gv = gi[(size_t)b * P + p];
                        REAL S;
                        if (fabs(z) < (REAL)FK_SERIES_Z)
                            S = (REAL)0.5 + z / (REAL)6.0 - z * z * z / (REAL)180.0;
                        else
                            S = gv * ((REAL)1.0 + z - gv) / z;
                        szb[p] *= S;
                    }
                    REAL *Ub = Ui + (size_t)b * P2;
                    for (int p = 0; p < P; p++) {
                        Ub[p] = gkb[p] * md->c[p] - szb[p] * md->m;
                        Ub[P + p] = gkb[P + p] * md->c[P + p] + szb[p] * md->m;
                    }
                    if (gWg && md->sparse && !tr) { /* per entry: sum over steps, stages and trials of g_source gk_target */
                        const REAL *gb = gi + (size_t)b * P;
                        for (int p = 0; p < P; p++) {
                            const REAL gp = gb[p];
                            for (int j = md->row_ptr[p]; j < md->row_ptr[p + 1]; j++)
                                gWg[j] += gp * gkb[md->col[j]];
                        }
                    } else if (gWg && !md->sparse) { /* sum over steps, stages and trials of g (source) times gk (target) */
                        const REAL *gb = gi + (size_t)b * P;
                        for (int p = 0; p < P; p++) {
                            const REAL gp = gb[p];
                            REAL *row = gWg + (size_t)p * P2;
                            for (int q = 0; q < P2; q++)
                                row[q] += gp * gkb[q];
                        }
                    }
                    if (gdrive) {
                        REAL *gd = gdrive + ((size_t)(md->Bd == 1 ? 0 : b) * md->K + k) * P2;
                        for (int q = 0; q < P2; q++)
                            gd[q] += gkb[q];
                    }
                }
            }
            for (size_t q = 0; q < N; q++) {
                REAL acc = 0;
                for (int i = 0; i < s_sol; i++)
                    acc += U[(size_t)i * N + q];
                lam[q] += acc;
            }
        }
    }
    for (long j = inj_ptr[0]; j < inj_ptr[1]; j++) {
        const REAL *go = grad_out + (size_t)inj_idx[j] * N;
        for (size_t q = 0; q < N; q++)
            lam[q] += go[q];
    }
    free(K); free(Y); free(y); free(y_new); free(w); free(g); free(U); free(gk); free(sz); free(buf);
    free(local.tmp);
    return FK_OK;
}

#undef FN
#undef MODEL
#undef SOLVE
