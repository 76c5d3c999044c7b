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
 * Trials in lanes. Inside the kernel the trials are held in chunks of up to FK_LANES
 * trials, each chunk as (2P x lanes): trial-innermost, so that the coupling products run
 * over the lanes contiguously (SIMD), and every step and its backward pass works chunk by
 * chunk on arrays that stay in cache. Trials never mix: each lane computes, operation for
 * operation, what its trial computes alone (only the step size is shared, through the
 * error norm over all trials, as in the Python loop). With one trial the layout is the
 * plain one. The entry points take and give the plain (B x 2P) layout.
 *
 * This file is included twice, with REAL = double (suffix _f64) and REAL = float (_f32).
 * Step-size control runs in double in both, as the Python loop does.
 */

#ifndef COLPLUGIN_FK_COMMON
#define COLPLUGIN_FK_COMMON
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FK_SAFETY 0.9
#define FK_IFACTOR 10.0
#define FK_DFACTOR 0.2
#define FK_STIFF_LIMIT (0.9 * 3.3)
#define FK_SERIES_Z 1e-2
/* Trials per chunk (lanes): one AVX-512 vector of doubles, two of AVX2. */
#define FK_LANES 8
/* Vector extensions (GCC, Clang) for the loops over lanes and stages, on x86-64 (measured
 * there; elsewhere plain loops, the same numbers). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(FK_NO_VEC)
#define FK_VEC 1
#endif

/* The entry points are compiled three times on x86-64 (AVX-512, AVX2 and baseline; the last
 * two with Clang or GCC before 12), the loader picks the one the CPU runs; the loops are
 * inlined into each. No reassociation or contraction is allowed, so all give the same
 * numbers. -DFK_NO_CLONES leaves them out (sanitizers such as TSan do not
 * support the loader's choice). */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute) && !defined(FK_NO_CLONES)
#if __has_attribute(target_clones) && defined(__linux__)
#if !defined(__clang__) && __GNUC__ >= 12 /* x86-64-v4 (AVX-512, twice the vector registers): GCC 12 on */
#define FK_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define FK_CLONES __attribute__((target_clones("avx2", "default")))
#endif
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
 * step's first stage, over the populations without a saturation (-inf if every one has one:
 * their rates are bounded); nonzero stops the solve. */
static int fk_watch(void *handle, double t, double x_max);

/* expm1(x) in straight-line arithmetic, so that loops over it vectorise (libm's expm1 is a
 * call per number): x = k ln2 + r, |r| <= ln2 / 2 (Cody-Waite, fdlibm's split of ln2),
 * expm1(r) by its Taylor series to r^13 (truncation below 2e-17 relative), and
 * expm1(x) = 2 (2^(k-1) expm1(r) + (2^(k-1) - 1/2)) (the halves reach k = 1024 without
 * overflow; doubling is exact). Within a few ulp of libm (tests/test_solve_compiled.py);
 * -1 below -50 (where expm1 is -1 in double), inf where it overflows, NaN for NaN. */
FK_INLINE double fk_expm1(double x)
{
    const double shift = 0x1.8p52, inv_ln2 = 0x1.71547652b82fep0;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double xc = x < -50.0 ? -50.0 : x;
    xc = xc > 709.79 ? 709.79 : xc;
    double kd = xc * inv_ln2 + shift; /* round to nearest: k in the low bits of kd */
    uint64_t kb;
    memcpy(&kb, &kd, sizeof kb);
    kd -= shift;
    const double r = (xc - kd * ln2_hi) - kd * ln2_lo;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    const double em = r + (r * r) * p; /* expm1(r) */
    const uint64_t sb = (kb + 1022u) << 52;
    double half_scale;
    memcpy(&half_scale, &sb, sizeof half_scale); /* 2^(k-1) */
    const double res = (half_scale * em + (half_scale - 0.5)) * 2.0;
    return x > 710.0 ? INFINITY : res;
}

/* Worker threads for the chunks of trials (POSIX threads; one thread where there are none).
 * A pool lives for one forward or backward call: run() hands every thread the same task,
 * fn(ctx, tid), and returns when all are done; the tasks split the chunks statically
 * (chunk c to thread c mod T) and write per-chunk results, so the numbers do not depend on
 * the number of threads. */
#define FK_MAX_THREADS 64
#if !defined(_WIN32)
#define FK_THREADS 1
#include <pthread.h>
#endif

typedef void (*fk_task)(void *ctx, int tid);

typedef struct fk_pool {
    int T;
#ifdef FK_THREADS
    pthread_mutex_t mu;
    pthread_cond_t go, done, order;
    long gen;
    int pending, quit;
    long next;                  /* the chunk whose turn it is to add its sums (fk_pool_turn) */
    fk_task fn;
    void *ctx;
    pthread_t th[FK_MAX_THREADS];
    struct fk_arg { struct fk_pool *pool; int tid; } args[FK_MAX_THREADS];
#endif
} fk_pool;

#ifdef FK_THREADS
static void *fk_worker(void *arg)
{
    struct fk_arg *a = (struct fk_arg *)arg;
    fk_pool *p = a->pool;
    long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->quit)
            pthread_cond_wait(&p->go, &p->mu);
        if (p->quit)
            break;
        seen = p->gen;
        fk_task fn = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);
        fn(ctx, a->tid);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}
#endif

/* Start up to T threads in all (the caller is thread 0); fewer if the system refuses more. */
static void fk_pool_start(fk_pool *p, int T)
{
    memset(p, 0, sizeof *p);
    p->T = 1;
#ifdef FK_THREADS
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    pthread_cond_init(&p->order, NULL);
    if (T > FK_MAX_THREADS)
        T = FK_MAX_THREADS;
    for (int i = 1; i < T; i++) {
        p->args[i].pool = p;
        p->args[i].tid = i;
        if (pthread_create(&p->th[i], NULL, fk_worker, &p->args[i]) != 0)
            break;
        p->T = i + 1;
    }
#else
    (void)T;
#endif
}

static void fk_pool_run(fk_pool *p, fk_task fn, void *ctx)
{
#ifdef FK_THREADS
    if (p->T > 1) {
        pthread_mutex_lock(&p->mu);
        p->fn = fn;
        p->ctx = ctx;
        p->pending = p->T - 1;
        p->next = 0;
        p->gen++;
        pthread_cond_broadcast(&p->go);
        pthread_mutex_unlock(&p->mu);
        fn(ctx, 0);
        pthread_mutex_lock(&p->mu);
        while (p->pending > 0)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->next = 0;
#endif
    fn(ctx, 0);
}

/* Wait until it is chunk c's turn (chunks 0, 1, ... in order), so that sums over chunks are
 * taken in the same order whatever the number of threads; fk_pool_done(c) passes the turn. */
static void fk_pool_turn(fk_pool *p, long c)
{
#ifdef FK_THREADS
    if (p->T > 1) {
        pthread_mutex_lock(&p->mu);
        while (p->next != c)
            pthread_cond_wait(&p->order, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
#else
    (void)p;
    (void)c;
#endif
}

static void fk_pool_done(fk_pool *p, long c)
{
#ifdef FK_THREADS
    if (p->T > 1) {
        pthread_mutex_lock(&p->mu);
        p->next = c + 1;
        pthread_cond_broadcast(&p->order);
        pthread_mutex_unlock(&p->mu);
    }
#else
    (void)p;
    (void)c;
#endif
}

static void fk_pool_stop(fk_pool *p)
{
#ifdef FK_THREADS
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->T; i++)
        pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->order);
#endif
    p->T = 1;
}

/* Threads for a call with this many chunks of trials and populations (the `threads` the
 * caller allows): one where a step's work is too small to share (a wake-up costs tens of
 * microseconds). */
static int fk_threads_for(int threads, int n_chunks, long trial_populations)
{
    int T = threads < n_chunks ? threads : n_chunks;
    if (trial_populations < 16384L)
        T = 1;
    return T < 1 ? 1 : T;
}

/* fk_expm1 over an array (for the tests). */
void fk_expm1_array(const double *x, double *out, long n)
{
    for (long i = 0; i < n; i++)
        out[i] = fk_expm1(x[i]);
}
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
    int threads;                /* threads the solve may use (chunks of trials in parallel) */
    REAL *drL;                  /* set by the entry points: the drive in lanes, K x (B x 2P), if Bd > 1 */
    int *trow_ptr, *tsrc;       /* set by the entry points for a sparse coupling: the same entries by */
    REAL *tval;                 /* target (2P + 1 row pointers, sources, values), in source order */
    const REAL *sat;            /* P saturations 1 / (d r_max), 0 where none: g / (1 + g sat); NULL: none */
    const REAL *Q;              /* s x 4 dense output: b_i(theta) = sum_p Q[4 i + p] theta^(p+1); NULL: none */
} MODEL;

typedef struct {
    int status;                 /* FK_OK or the reason the solve stopped */
    double t_fail;              /* time at which the solve stopped */
    long attempts;              /* steps tried, rejected ones included */
    long n_steps, cap_steps;    /* accepted steps */
    double *h;                  /* their sizes */
    int *seg;                   /* their stimulus segments */
    long n_ck, cap_ck, M;       /* checkpoints: the state before accepted step j * M (M = 0: none) */
    REAL *cks;                  /* in lanes */
    int stages_kept;            /* whether st holds w and g of every stage of every accepted step */
    int kept;                   /* stages per step the backward pass needs: s_sol, or s with dense output */
    long cap_st;
    REAL *st;                   /* per accepted step: w (kept x B x P), then g (kept x B x P), in lanes */
} SOLVE;

/* Lanes per chunk for B trials, and the chunk of trial b0: its lanes. */
FK_INLINE int FN(fk_lanes)(int B) { return B < FK_LANES ? B : FK_LANES; }
FK_INLINE int FN(fk_nl)(int B, int b0) { return B - b0 < FK_LANES ? B - b0 : FK_LANES; }

/* B x R (plain) to lanes, and back (add: accumulate into dst). */
static void FN(fk_to_lanes)(const REAL *src, REAL *dst, int B, int R)
{
    for (int b0 = 0; b0 < B; b0 += FK_LANES) {
        const int nl = FN(fk_nl)(B, b0);
        REAL *d = dst + (size_t)b0 * R;
        for (int l = 0; l < nl; l++) {
            const REAL *s = src + (size_t)(b0 + l) * R;
            for (int q = 0; q < R; q++)
                d[(size_t)q * nl + l] = s[q];
        }
    }
}

static void FN(fk_from_lanes)(const REAL *src, REAL *dst, int B, int R)
{
    for (int b0 = 0; b0 < B; b0 += FK_LANES) {
        const int nl = FN(fk_nl)(B, b0);
        const REAL *s = src + (size_t)b0 * R;
        for (int l = 0; l < nl; l++) {
            REAL *d = dst + (size_t)(b0 + l) * R;
            for (int q = 0; q < R; q++)
                d[q] = s[(size_t)q * nl + l];
        }
    }
}

#ifdef FK_VEC
/* 32 bytes of REALs as one vector (GCC/Clang vector extension; FK_NV of them per chunk of
 * lanes): the compiler emits SIMD instructions for them (one AVX2 register, two SSE2 or
 * NEON ones) where its vectoriser leaves short fixed-length loops as scalar code. Element
 * for element the same arithmetic as a plain loop. */
typedef REAL FN(fk_v) __attribute__((vector_size(32)));
FK_INLINE FN(fk_v) FN(fk_ld)(const REAL *p)
{
    FN(fk_v) v;
    memcpy(&v, p, sizeof v);
    return v;
}
FK_INLINE void FN(fk_st)(REAL *p, FN(fk_v) v) { memcpy(p, &v, sizeof v); }
#define FK_VN ((int)(32 / sizeof(REAL)))  /* REALs per vector */
#define FK_NV (FK_LANES / FK_VN)          /* vectors per chunk of lanes */
#endif

/* x[l] += a[l] v over the lanes */
FK_INLINE void FN(fk_axpy)(REAL *x, const REAL *a, REAL v, int nl)
{
    if (nl == FK_LANES) {
#ifdef FK_VEC
        for (int u = 0; u < FK_NV; u++)
            FN(fk_st)(x + u * FK_VN, FN(fk_ld)(x + u * FK_VN) + FN(fk_ld)(a + u * FK_VN) * v);
#else
        for (int l = 0; l < FK_LANES; l++)
            x[l] += a[l] * v;
#endif
    } else {
        for (int l = 0; l < nl; l++)
            x[l] += a[l] * v;
    }
}

/* sum over the lanes of a[l] b[l]; full chunks as four partial sums of lanes l and l + 4,
 * added as (s0 + s1) + (s2 + s3) (a fixed order, so the same numbers on every machine and
 * clone) */
FK_INLINE REAL FN(fk_dot)(const REAL *a, const REAL *b, int nl)
{
    if (nl == FK_LANES) {
#ifdef FK_VEC
        REAL pr[FK_LANES];
        for (int u = 0; u < FK_NV; u++)
            FN(fk_st)(pr + u * FK_VN, FN(fk_ld)(a + u * FK_VN) * FN(fk_ld)(b + u * FK_VN));
        const REAL s0 = pr[0] + pr[4], s1 = pr[1] + pr[5], s2 = pr[2] + pr[6], s3 = pr[3] + pr[7];
#else
        const REAL s0 = a[0] * b[0] + a[4] * b[4], s1 = a[1] * b[1] + a[5] * b[5];
        const REAL s2 = a[2] * b[2] + a[6] * b[6], s3 = a[3] * b[3] + a[7] * b[7];
#endif
        return (s0 + s1) + (s2 + s3);
    }
    REAL acc = 0;
    for (int l = 0; l < nl; l++)
        acc += a[l] * b[l];
    return acc;
}

/* k[q][l] = Y[q][l] c[q] + drive (Y NULL: drive alone) over a chunk's 2P x nl targets */
FK_INLINE void FN(fk_base)(const MODEL *md, int b0, int nl, int seg, const REAL *Y, REAL *kout)
{
    const int P2 = 2 * md->P;
    if (md->Bd == 1) {
        const REAL *dr = md->drive + (size_t)seg * P2;
        for (int q = 0; q < P2; q++) {
            const REAL cq = md->c[q], dq = dr[q];
            REAL *kq = kout + (size_t)q * nl;
            if (Y) {
                const REAL *Yq = Y + (size_t)q * nl;
                for (int l = 0; l < nl; l++)
                    kq[l] = Yq[l] * cq + dq;
            } else {
                for (int l = 0; l < nl; l++)
                    kq[l] = dq;
            }
        }
        return;
    }
    const REAL *dr = md->drL + ((size_t)seg * md->B + b0) * P2; /* in lanes, like kout */
    const size_t Nc = (size_t)nl * P2;
    if (!Y) {
        memcpy(kout, dr, Nc * sizeof(REAL));
        return;
    }
    for (int q = 0; q < P2; q++) {
        const REAL cq = md->c[q];
        for (int l = 0; l < nl; l++)
            kout[(size_t)q * nl + l] = Y[(size_t)q * nl + l] * cq + dr[(size_t)q * nl + l];
    }
}

/* The saturation of g (P x nl) in place, g / (1 + g sat) with sat = 1 / (d r_max) per
 * population (the eager loop's _saturate_g); nothing without one. */
FK_INLINE void FN(fk_saturate)(const MODEL *md, int nl, REAL *g)
{
    if (!md->sat)
        return;
    for (int p = 0; p < md->P; p++) {
        const REAL sp = md->sat[p];
        REAL *gp = g + (size_t)p * nl;
        for (int l = 0; l < nl; l++)
            gp[l] = gp[l] / (gp[l] * sp + (REAL)1.0);
    }
}

/* One stage of the chunk of nl trials from b0: k = F(Y) into kout (2P x nl); w and g (P x nl)
 * kept (g saturated where the model saturates). */
FK_INLINE void FN(fk_stage)(const MODEL *md, int b0, int nl, const REAL *Y, int seg, REAL *kout, REAL *w, REAL *g)
{
    const int P = md->P, P2 = 2 * md->P;
    const size_t NP = (size_t)P * nl;
    const REAL m = md->m, db = md->db;
    const REAL *V = Y, *Aa = Y + NP;
    if (md->sparse) { /* the eager sparse loop's form of w: (A - V) d a + d b */
        for (size_t n = 0; n < NP; n++) {
            REAL wv = (Aa[n] - V[n]) * (-m) + db;
            REAL gv = wv / (REAL)fk_expm1((double)wv);
            w[n] = wv;
            g[n] = (gv != gv) ? (REAL)1 : gv;
        }
        FN(fk_saturate)(md, nl, g);
        FN(fk_base)(md, b0, nl, seg, Y, kout);
        /* k[q] += sum over the entries into q of val g[source], in source order: the sums a
         * loop over the sources that adds into the targets takes, with each target's sum held
         * in registers (a gather instead of a scatter) */
        const int *tp = md->trow_ptr, *ts = md->tsrc;
        const REAL *tv = md->tval;
        for (int q = 0; q < P2; q++) {
            REAL *kq = kout + (size_t)q * nl;
#ifdef FK_VEC
            if (nl == FK_LANES) {
                FN(fk_v) acc[FK_NV];
                for (int u = 0; u < FK_NV; u++)
                    acc[u] = FN(fk_ld)(kq + u * FK_VN);
                for (int t = tp[q]; t < tp[q + 1]; t++) {
                    const REAL *gs = g + (size_t)ts[t] * FK_LANES;
                    const REAL v = tv[t];
                    for (int u = 0; u < FK_NV; u++)
                        acc[u] += FN(fk_ld)(gs + u * FK_VN) * v;
                }
                for (int u = 0; u < FK_NV; u++)
                    FN(fk_st)(kq + u * FK_VN, acc[u]);
                continue;
            }
#endif
            for (int t = tp[q]; t < tp[q + 1]; t++)
                FN(fk_axpy)(kq, g + (size_t)ts[t] * nl, tv[t], nl);
        }
        return;
    }
    for (size_t n = 0; n < NP; n++) {
        REAL wv = db + (V[n] * m - Aa[n] * m);
        REAL gv = wv / (REAL)fk_expm1((double)wv);
        w[n] = wv;
        g[n] = (gv != gv) ? (REAL)1 : gv;
    }
    FN(fk_saturate)(md, nl, g);
    FN(fk_base)(md, b0, nl, seg, NULL, kout);
    if (nl == 1) {
        for (int p = 0; p < P; p++) {
            const REAL gp = g[p];
            const REAL *row = md->Wg + (size_t)p * P2;
            for (int q = 0; q < P2; q++)
                kout[q] += gp * row[q];
        }
    } else {
        for (int p = 0; p < P; p++) {
            const REAL *gp = g + (size_t)p * nl;
            const REAL *row = md->Wg + (size_t)p * P2;
            for (int q = 0; q < P2; q++)
                FN(fk_axpy)(kout + (size_t)q * nl, gp, row[q], nl);
        }
    }
    for (int q = 0; q < P2; q++) {
        const REAL cq = md->c[q];
        for (int l = 0; l < nl; l++)
            kout[(size_t)q * nl + l] += Y[(size_t)q * nl + l] * cq;
    }
}

/* out[n] = base[n] + h sum_{j in [j0, j1)} coef[j * stride] K[j * N + n], for n < N (coef
 * NULL: all coefficients 1).
 * In tiles of FK_LANES elements with the sum over j inside, as vectors, so that the
 * elements run side by side; each element's sum is taken in j order from 0, as a plain
 * loop's (the same numbers). base NULL: 0 + h sum (the h sum alone). */
FK_INLINE void FN(fk_combine)(const REAL *coef, int stride, int j0, int j1, const REAL *base, REAL h, const REAL *K,
                              size_t N, REAL *out)
{
    size_t n = 0;
#ifdef FK_VEC
    for (; n + FK_LANES <= N; n += FK_LANES) {
        FN(fk_v) acc[FK_NV];
        for (int u = 0; u < FK_NV; u++)
            acc[u] = (FN(fk_v)){0};
        for (int j = j0; j < j1; j++) {
            if (!coef) {
                for (int u = 0; u < FK_NV; u++)
                    acc[u] += FN(fk_ld)(K + (size_t)j * N + n + u * FK_VN);
                continue;
            }
            const REAL c = coef[(size_t)j * stride];
            for (int u = 0; u < FK_NV; u++)
                acc[u] += FN(fk_ld)(K + (size_t)j * N + n + u * FK_VN) * c;
        }
        for (int u = 0; u < FK_NV; u++)
            FN(fk_st)(out + n + u * FK_VN, base ? FN(fk_ld)(base + n + u * FK_VN) + acc[u] * h : acc[u] * h);
    }
#endif
    for (; n < N; n++) {
        REAL acc = 0;
        for (int j = j0; j < j1; j++)
            acc += coef ? coef[(size_t)j * stride] * K[(size_t)j * N + n] : K[(size_t)j * N + n];
        out[n] = base ? base[n] + h * acc : h * acc;
    }
}

/* sum of x[0..N): in FK_LANES partial sums (x[n] into n mod FK_LANES) added in lane order,
 * then the rest (a fixed order: the same number on every machine and clone) */
FK_INLINE REAL FN(fk_sum)(const REAL *x, size_t N)
{
    REAL part[FK_LANES] = {0};
    size_t n = 0;
#ifdef FK_VEC
    FN(fk_v) acc[FK_NV];
    for (int u = 0; u < FK_NV; u++)
        acc[u] = (FN(fk_v)){0};
    for (; n + FK_LANES <= N; n += FK_LANES)
        for (int u = 0; u < FK_NV; u++)
            acc[u] += FN(fk_ld)(x + n + u * FK_VN);
    for (int u = 0; u < FK_NV; u++)
        FN(fk_st)(part + u * FK_VN, acc[u]);
#else
    for (; n + FK_LANES <= N; n += FK_LANES)
        for (int l = 0; l < FK_LANES; l++)
            part[l] += x[n + l];
#endif
    REAL total = 0;
    for (int l = 0; l < FK_LANES; l++)
        total += part[l];
    for (; n < N; n++)
        total += x[n];
    return total;
}

/* Y = y + h sum_{j<i} a_ij K_j */
FK_INLINE void FN(fk_stage_input)(const MODEL *md, int i, const REAL *y, double h, const REAL *K, size_t N, REAL *Y)
{
    FN(fk_combine)(md->A + (size_t)i * md->s, 1, 0, i, y, (REAL)h, K, N, Y);
}

/* y_new = y + h sum_{i<s_sol} b_i K_i */
FK_INLINE void FN(fk_solution)(const MODEL *md, const REAL *y, double h, const REAL *K, size_t N, REAL *y_new)
{
    FN(fk_combine)(md->bw, 1, 0, md->s_sol, y, (REAL)h, K, N, y_new);
}

/* The solution stages of one step of a chunk from y (stage 0 evaluated afresh) and the new
 * state; K (s x 2P nl), w and g (kept x P nl). With kept = s (dense output), also the FSAL
 * stage at the new state (y_new then required). */
FK_INLINE void FN(fk_step)(const MODEL *md, int b0, int nl, const REAL *y, double h, int seg, REAL *K, REAL *Y,
                           REAL *w, REAL *g, REAL *y_new, int kept)
{
    const size_t N = (size_t)nl * 2 * md->P, BP = (size_t)nl * md->P;
    for (int i = 0; i < md->s_sol; i++) {
        const REAL *Yi = y;
        if (i > 0) {
            FN(fk_stage_input)(md, i, y, h, K, N, Y);
            Yi = Y;
        }
        FN(fk_stage)(md, b0, nl, Yi, seg, K + (size_t)i * N, w + (size_t)i * BP, g + (size_t)i * BP);
    }
    if (y_new)
        FN(fk_solution)(md, y, h, K, N, y_new);
    if (kept > md->s_sol) {
        const int i = md->s - 1;
        FN(fk_stage)(md, b0, nl, y_new, seg, K + (size_t)i * N, w + (size_t)i * BP, g + (size_t)i * BP);
    }
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

/* The DMF's rates r = f(x) = (w / expm1(w)) / d, w = -d (a x - b) (its limit 1 / d at w = 0),
 * x = V - A (A NULL: x = V), of `rows` rows of P populations: row r of V (and A) starts r * stride
 * numbers in; out is rows x P, contiguous. One straight-line expm1 per number, so the loop
 * vectorises (the recorded rates of a trajectory, millions of numbers). */
FK_CLONES void FN(fk_dmf_rates)(const REAL *V, const REAL *A, long rows, int P, long stride, double a, double b,
                                double d, REAL *out)
{
    const double m = -d * a, db = d * b, inv_d = 1.0 / d;
    for (long r = 0; r < rows; r++) {
        const REAL *v = V + (size_t)r * stride;
        const REAL *av = A ? A + (size_t)r * stride : NULL;
        REAL *o = out + (size_t)r * P;
        if (av) {
            for (int p = 0; p < P; p++) {
                const double w = db + m * ((double)v[p] - (double)av[p]);
                o[p] = (REAL)((w == 0.0 ? 1.0 : w / fk_expm1(w)) * inv_d);
            }
        } else {
            for (int p = 0; p < P; p++) {
                const double w = db + m * (double)v[p];
                o[p] = (REAL)((w == 0.0 ? 1.0 : w / fk_expm1(w)) * inv_d);
            }
        }
    }
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

/* The drive in lanes (K x (B x 2P)) where it differs between trials; NULL (and *ok) if it
 * does not. */
static REAL *FN(fk_drive_lanes)(const MODEL *md, int *ok)
{
    *ok = 1;
    if (md->Bd == 1)
        return NULL;
    const int P2 = 2 * md->P, B = md->B;
    REAL *d = (REAL *)malloc((size_t)md->K * B * P2 * sizeof(REAL) + 1);
    REAL *plain = (REAL *)malloc((size_t)B * P2 * sizeof(REAL) + 1);
    if (!d || !plain) {
        free(d);
        free(plain);
        *ok = 0;
        return NULL;
    }
    for (int k = 0; k < md->K; k++) {
        for (int b = 0; b < B; b++)
            memcpy(plain + (size_t)b * P2, md->drive + ((size_t)b * md->K + k) * P2, P2 * sizeof(REAL));
        FN(fk_to_lanes)(plain, d + (size_t)k * B * P2, B, P2);
    }
    free(plain);
    return d;
}

/* An entry point's common start: its own copy of the model with the drive in lanes (*ok = 0
 * if out of memory), and the pool of threads for its chunks of trials. */
static void FN(fk_begin)(const MODEL *md, MODEL *local, fk_pool *pool, int *ok)
{
    *local = *md;
    local->drL = FN(fk_drive_lanes)(md, ok);
    local->trow_ptr = NULL;
    local->tsrc = NULL;
    local->tval = NULL;
    if (md->sparse && *ok) { /* the coupling by target (a counting sort that keeps the source order) */
        const int P = md->P, P2 = 2 * md->P, nnz = md->row_ptr[P];
        int *tp = (int *)calloc((size_t)P2 + 1, sizeof(int)), *ts = (int *)malloc((size_t)nnz * sizeof(int) + 1);
        REAL *tv = (REAL *)malloc((size_t)nnz * sizeof(REAL) + 1);
        int *fill = (int *)malloc((size_t)P2 * sizeof(int) + 1);
        if (!tp || !ts || !tv || !fill) {
            free(tp); free(ts); free(tv); free(fill);
            *ok = 0;
        } else {
            for (int j = 0; j < nnz; j++)
                tp[md->col[j] + 1]++;
            for (int q = 0; q < P2; q++)
                tp[q + 1] += tp[q];
            memcpy(fill, tp, (size_t)P2 * sizeof(int));
            for (int p = 0; p < P; p++)
                for (int j = md->row_ptr[p]; j < md->row_ptr[p + 1]; j++) {
                    const int at = fill[md->col[j]]++;
                    ts[at] = p;
                    tv[at] = md->val[j];
                }
            free(fill);
            local->trow_ptr = tp;
            local->tsrc = ts;
            local->tval = tv;
        }
    }
    const int L = FN(fk_lanes)(md->B);
    fk_pool_start(pool, fk_threads_for(md->threads, (md->B + L - 1) / L, (long)md->B * md->P));
}

/* Frees what fk_begin made. */
static void FN(fk_end)(MODEL *local)
{
    free(local->drL);
    free(local->trow_ptr);
    free(local->tsrc);
    free(local->tval);
}

/* What the threads of a forward step share. */
typedef struct {
    const MODEL *md;
    int L, n_chunks, T, phase; /* phase 0: stage 0 of every chunk; 1: the step */
    double h, rtol, atol;
    int seg;
    size_t half;
    REAL *y, *yn, *K0, *K1, *w0, *g0, *w1, *g1, *rec;
    REAL *D;                    /* 4 x N: the dense output's coefficients of theta^1..4 (this attempt) */
    int interp, kept;           /* whether to form D; stages recorded per step */
    REAL *scr[FK_MAX_THREADS];  /* per thread: K (s x NL), Y, Ys (NL), w, g (s x BPL) */
    double *sq, *rho;           /* per chunk */
} FN(fk_fctx);

/* One attempted step of one chunk: its stages, new state, part of the error norm (sum of
 * squares) and stiffness estimate (largest over its trials). */
FK_INLINE void FN(fk_step_chunk)(FN(fk_fctx) *cx, int tid, int b0)
{
    const MODEL *md = cx->md;
    const int s = md->s, s_sol = md->s_sol, P = md->P, P2 = 2 * md->P, B = md->B;
    const int nl = FN(fk_nl)(B, b0), seg = cx->seg;
    const size_t NL = (size_t)cx->L * P2, BPL = (size_t)cx->L * P, BP = (size_t)B * P, half = cx->half;
    const size_t Nc = (size_t)nl * P2, BPc = (size_t)nl * P;
    const double h = cx->h;
    REAL *K = cx->scr[tid], *Y = K + (size_t)s * NL, *Ys = Y + NL, *w = Ys + NL, *g = w + (size_t)s * BPL;
    REAL *rec = cx->rec;
    const REAL *yc = cx->y + (size_t)b0 * P2;
    REAL *ync = cx->yn + (size_t)b0 * P2;
    memcpy(K, cx->K0 + (size_t)b0 * P2, Nc * sizeof(REAL));
    if (rec) {
        memcpy(rec + (size_t)b0 * P, cx->w0 + (size_t)b0 * P, BPc * sizeof(REAL));
        memcpy(rec + half + (size_t)b0 * P, cx->g0 + (size_t)b0 * P, BPc * sizeof(REAL));
    }
    for (int i = 1; i < s_sol; i++) {
        REAL *wi = rec ? rec + (size_t)i * BP + (size_t)b0 * P : w + (size_t)i * BPc;
        REAL *gi = rec ? rec + half + (size_t)i * BP + (size_t)b0 * P : g + (size_t)i * BPc;
        FN(fk_stage_input)(md, i, yc, h, K, Nc, Y);
        FN(fk_stage)(md, b0, nl, Y, seg, K + (size_t)i * Nc, wi, gi);
        if (i == s - 2)
            memcpy(Ys, Y, Nc * sizeof(REAL));
    }
    FN(fk_solution)(md, yc, h, K, Nc, ync);
    const long c = b0 / cx->L;
    cx->sq[c] = 0;
    cx->rho[c] = 0;
    if (!md->adaptive)
        return;
    REAL *Kl = K + (size_t)(s - 1) * Nc, *Kp = K + (size_t)(s - 2) * Nc;
    FN(fk_stage)(md, b0, nl, ync, seg, Kl, cx->w1 + (size_t)b0 * P, cx->g1 + (size_t)b0 * P);
    memcpy(cx->K1 + (size_t)b0 * P2, Kl, Nc * sizeof(REAL));
    if (rec && cx->kept == s) { /* dense output: the FSAL stage enters the backward pass */
        memcpy(rec + (size_t)(s - 1) * BP + (size_t)b0 * P, cx->w1 + (size_t)b0 * P, BPc * sizeof(REAL));
        memcpy(rec + half + (size_t)(s - 1) * BP + (size_t)b0 * P, cx->g1 + (size_t)b0 * P, BPc * sizeof(REAL));
    }
    if (cx->interp) /* D_p = h sum_i Q_ip K_i */
        for (int p = 0; p < 4; p++)
            FN(fk_combine)(md->Q + p, 4, 0, s, NULL, (REAL)h, K, Nc, cx->D + (size_t)p * B * P2 + (size_t)b0 * P2);
    if (s - 2 == 0)
        memcpy(Ys, yc, Nc * sizeof(REAL));
    /* error (torchdiffeq's RMS norm) and stiffness (Hairer & Wanner), per trial */
    const REAL rtol = (REAL)cx->rtol, atol = (REAL)cx->atol;
    REAL *E = Y; /* free now: the error estimate h sum_i e_i K_i, then its scaled squares */
    FN(fk_combine)(md->ew, 1, 0, s, NULL, (REAL)h, K, Nc, E);
    for (size_t n = 0; n < Nc; n++) {
        REAL ay = fabs(yc[n]), an = fabs(ync[n]);
        REAL tol = (ay > an ? ay : an) * rtol + atol;
        REAL q = E[n] / tol;
        E[n] = q * q;
    }
    REAL sqc = FN(fk_sum)(E, Nc);
    REAL nu[FK_LANES] = {0}, de[FK_LANES] = {0};
    for (int q = 0; q < P2; q++) {
        for (int l = 0; l < nl; l++) {
            const size_t n = (size_t)q * nl + l;
            REAL dk = Kl[n] - Kp[n], dy = ync[n] - Ys[n];
            nu[l] += dk * dk;
            de[l] += dy * dy;
        }
    }
    double rho = 0;
    for (int l = 0; l < nl; l++) {
        double r = (double)sqrt(nu[l]) / (double)sqrt(de[l]);
        if (!isfinite(r))
            r = 0;
        if (r > rho)
            rho = r;
    }
    cx->sq[c] = (double)sqc;
    cx->rho[c] = rho;
}

FK_CLONES static void FN(fk_forward_task)(void *ctx, int tid)
{
    FN(fk_fctx) *cx = (FN(fk_fctx) *)ctx;
    const MODEL *md = cx->md;
    const int P = md->P, P2 = 2 * md->P;
    for (int c = tid; c < cx->n_chunks; c += cx->T) {
        const int b0 = c * cx->L;
        if (cx->phase == 0)
            FN(fk_stage)(md, b0, FN(fk_nl)(md->B, b0), cx->y + (size_t)b0 * P2, cx->seg, cx->K0 + (size_t)b0 * P2,
                         cx->w0 + (size_t)b0 * P, cx->g0 + (size_t)b0 * P);
        else
            FN(fk_step_chunk)(cx, tid, b0);
    }
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
 * to fk_watch. n_dense outputs at t_dense (increasing, inside (stops[0], stops[-1]]) come from
 * the scheme's dense output (md->Q) into the rows row_dense of out; for each, the accepted
 * step it lies in (step_dense: steps before it) and theta_dense (its place in the step, 0-1)
 * are written for the backward pass. Returns NULL only when out of
 * memory at the start; otherwise the solve, with status FK_OK or the reason it stopped.
 *
 * Each attempted step runs chunk by chunk (chunks on md->threads threads): all stages of a
 * chunk of trials, its part of the error norm and its stiffness estimate, its new state;
 * then the step is accepted or rejected for all trials at once.
 */
FK_CLONES SOLVE *FN(fk_forward)(const MODEL *md, const REAL *y0, int n_stops, const double *stops, const int *seg_of,
                      const int *out_of_stop, REAL *out, long *landed, double step, double rtol, double atol,
                      int watch_every, void *watch, int keep, long every, double budget, int n_dense,
                      const double *t_dense, const int *row_dense, long *step_dense, double *theta_dense)
{
    const int s = md->s, s_sol = md->s_sol, P = md->P, P2 = 2 * md->P, B = md->B;
    const int kept = n_dense > 0 && md->Q ? s : s_sol;
    if (B < 1) { /* no trials (the Python side refuses them): nothing to solve */
        SOLVE *sv = (SOLVE *)calloc(1, sizeof(SOLVE));
        if (sv)
            sv->status = FK_NOMEM;
        return sv;
    }
    const int L = FN(fk_lanes)(B), n_chunks = (B + L - 1) / L;
    const size_t N = (size_t)B * P2, BP = (size_t)B * P, NL = (size_t)L * P2, BPL = (size_t)L * P;
    const int auto_ck = every < 0, may_keep_stages = keep && every <= 0;
    const size_t half = (size_t)kept * BP;
    MODEL local;
    fk_pool pool;
    int drive_ok;
    FN(fk_begin)(md, &local, &pool, &drive_ok);
    md = &local;
    FN(fk_fctx) cx;
    memset(&cx, 0, sizeof cx);
    cx.md = md;
    cx.L = L;
    cx.n_chunks = n_chunks;
    cx.T = pool.T;
    cx.rtol = rtol;
    cx.atol = atol;
    cx.half = half;
    cx.kept = kept;
    SOLVE *sv = (SOLVE *)calloc(1, sizeof(SOLVE));
    /* the state, its successor, and stage 0 (first same as last: the next step's stage 0) */
    cx.y = FN(fk_scratch)(N); cx.yn = FN(fk_scratch)(N); cx.K0 = FN(fk_scratch)(N); cx.K1 = FN(fk_scratch)(N);
    cx.w0 = FN(fk_scratch)(BP); cx.g0 = FN(fk_scratch)(BP); cx.w1 = FN(fk_scratch)(BP); cx.g1 = FN(fk_scratch)(BP);
    /* the step's w and g of all trials where they are recorded */
    REAL *wst = may_keep_stages ? FN(fk_scratch)(2 * half) : NULL;
    /* the dense output's coefficients, and one interpolated state (in lanes) */
    cx.D = kept > s_sol ? FN(fk_scratch)(4 * N) : NULL;
    REAL *yo = kept > s_sol ? FN(fk_scratch)(N) : NULL;
    cx.sq = (double *)calloc((size_t)n_chunks, sizeof(double));
    cx.rho = (double *)calloc((size_t)n_chunks, sizeof(double));
    int ok = sv && cx.y && cx.yn && cx.K0 && cx.K1 && cx.w0 && cx.g0 && cx.w1 && cx.g1 && (!may_keep_stages || wst)
             && cx.sq && cx.rho && drive_ok && (kept == s_sol || (cx.D && yo));
    for (int t = 0; t < pool.T; t++) /* a chunk's stages, per thread */
        ok = ok && (cx.scr[t] = FN(fk_scratch)((size_t)s * NL + 2 * NL + 2 * (size_t)s * BPL)) != NULL;
    if (ok) {
        const double step_bytes = (double)(2 * half * sizeof(REAL));
        sv->stages_kept = may_keep_stages;
        sv->kept = kept;
        long di = 0; /* the next dense output */
        sv->M = every > 0 ? every : (every == 0 ? 0 : (long)fmax(1.0, floor(budget / step_bytes)));
        FN(fk_to_lanes)(y0, cx.y, B, P2);
        landed[0] = 0;
        double h_next = step;
        int first_valid = 0;
        for (int mi = 0; mi + 1 < n_stops && sv->status == FK_OK; mi++) {
            double t = stops[mi];
            const double t_end = stops[mi + 1];
            const int k = seg_of[mi];
            cx.seg = k;
            if (mi == 0 || k != seg_of[mi - 1])
                first_valid = 0; /* the drive changed: stage 1 must be re-evaluated */
            while (t < t_end) {
                if (keep && sv->M && sv->n_steps == sv->n_ck * sv->M) {
                    if ((sv->status = FN(fk_push_ck)(sv, cx.y, N)) != FK_OK)
                        break;
                    if (auto_ck && sv->n_ck > 2 * kept * sv->M) { /* checkpoints outweigh a chunk: halve them */
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
                    cx.phase = 0;
                    fk_pool_run(&pool, FN(fk_forward_task), &cx);
                    first_valid = 1;
                }
                if (sv->attempts % watch_every == 0) { /* stop a diverging solve early */
                    double xm = -INFINITY;
                    if (!md->sat) {
                        for (size_t n = 0; n < BP; n++) {
                            double xv = (md->b - (double)cx.w0[n] / md->d) / md->a;
                            if (xv != xv) { xm = NAN; break; }
                            if (xv > xm) xm = xv;
                        }
                    } else { /* a saturating population's rate is bounded: only NaN counts there */
                        for (int b0 = 0; b0 < md->B && xm == xm; b0 += FK_LANES) {
                            const int nl = FN(fk_nl)(md->B, b0);
                            for (int p = 0; p < P && xm == xm; p++) {
                                const REAL *wp = cx.w0 + (size_t)b0 * P + (size_t)p * nl;
                                for (int l = 0; l < nl; l++) {
                                    double xv = (md->b - (double)wp[l] / md->d) / md->a;
                                    if (xv != xv) { xm = NAN; break; }
                                    if (md->sat[p] == 0 && xv > xm) xm = xv;
                                }
                            }
                        }
                    }
                    if (fk_watch(watch, t, xm)) {
                        sv->status = FK_STOPPED;
                        sv->t_fail = t;
                        break;
                    }
                }
                sv->attempts++;
                cx.phase = 1;
                cx.h = h;
                const double t_new = last ? t_end : t + h;
                cx.interp = kept > s_sol && di < n_dense && t_dense[di] <= t_new;
                cx.rec = sv->stages_kept ? wst : NULL; /* w and g of this step's stages, all trials */
                fk_pool_run(&pool, FN(fk_forward_task), &cx);
                if (md->adaptive) {
                    double sq = 0, rho = 0;
                    for (int c = 0; c < n_chunks; c++) { /* in chunk order: the same sum on any number of threads */
                        sq += cx.sq[c];
                        rho = cx.rho[c] > rho ? cx.rho[c] : rho;
                    }
                    const double ratio = (double)(REAL)sqrt(sq) / sqrt((double)N); /* the norm in REAL, as eager */
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
                    double fac = ratio > 0
                                     ? fmin(FK_IFACTOR, fmax(FK_DFACTOR, FK_SAFETY * pow(ratio, -1.0 / md->order)))
                                     : FK_IFACTOR;
                    if (!last || fac < 1.0)
                        h_next = h * fac;
                    if (rho > 0)
                        h_next = fmin(h_next, FK_STIFF_LIMIT / rho);
                } else {
                    first_valid = 0;
                }
                for (; cx.interp && di < n_dense && t_dense[di] <= t_new; di++) { /* outputs inside the step */
                    double th = (t_dense[di] - t) / h;
                    th = th < 0 ? 0 : (th > 1 ? 1 : th);
                    const REAL x = (REAL)th;
                    const REAL *D0 = cx.D, *D1 = D0 + N, *D2 = D1 + N, *D3 = D2 + N;
                    for (size_t n = 0; n < N; n++)
                        yo[n] = cx.y[n] + x * (D0[n] + x * (D1[n] + x * (D2[n] + x * D3[n])));
                    FN(fk_from_lanes)(yo, out + (size_t)row_dense[di] * N, B, P2);
                    step_dense[di] = sv->n_steps;
                    theta_dense[di] = th;
                }
                if (keep) {
                    if (sv->stages_kept) {
                        if (auto_ck && (double)(sv->n_steps + 1) * step_bytes > budget) {
                            free(sv->st); /* too large to keep: from here on the checkpoints serve */
                            sv->st = NULL;
                            sv->cap_st = 0;
                            sv->stages_kept = 0;
                        } else {
                            if ((sv->status = FN(fk_push_stages)(sv, wst, wst + half, half)) != FK_OK)
                                break;
                        }
                    }
                    if ((sv->status = FN(fk_push_step)(sv, h, k)) != FK_OK)
                        break;
                }
                REAL *tp;
                if (md->adaptive) { /* first same as last */
                    tp = cx.K0; cx.K0 = cx.K1; cx.K1 = tp;
                    tp = cx.w0; cx.w0 = cx.w1; cx.w1 = tp;
                    tp = cx.g0; cx.g0 = cx.g1; cx.g1 = tp;
                }
                tp = cx.y; cx.y = cx.yn; cx.yn = tp;
                t = last ? t_end : t + h;
            }
            if (sv->status != FK_OK)
                break;
            landed[mi + 1] = sv->n_steps;
            if (out_of_stop[mi + 1] >= 0)
                FN(fk_from_lanes)(cx.y, out + (size_t)out_of_stop[mi + 1] * N, B, P2);
        }
    } else if (sv) {
        sv->status = FK_NOMEM;
    }
    fk_pool_stop(&pool);
    free(cx.y); free(cx.yn); free(cx.K0); free(cx.K1); free(cx.w0); free(cx.g0); free(cx.w1); free(cx.g1);
    for (int t = 0; t < FK_MAX_THREADS; t++)
        free(cx.scr[t]);
    free(wst); free(cx.sq); free(cx.rho); free(cx.D); free(yo); FN(fk_end)(&local);
    return sv;
}

/* What the threads of a backward pass share. */
typedef struct {
    const MODEL *md;
    const SOLVE *sv;
    const REAL *grad_out;
    const long *inj_ptr, *inj_idx;
    const long *dptr, *didx;     /* dense outputs inside accepted step n: rows didx[dptr[n] .. dptr[n+1]) */
    const double *dth;           /* and their thetas */
    REAL *lamL, *gWg, *gdrive;
    int L, n_chunks, T;
    long chunk, n_steps_chunks;  /* steps per chunk of steps (between checkpoints), their number */
    size_t n_gW, n_gd;           /* numbers in gWg, and in gdrive where trials share it (else 0) */
    REAL *scr[FK_MAX_THREADS];   /* per thread: K, Y, y, y_new, U, gk, sz, Gp (4 NL), gsum (NL), buf, gW, gd */
    fk_pool *pool;
} FN(fk_bctx);

/* The backward pass of one chunk of trials through all steps; its part of gWg (and gdrive
 * if the trials share it) added to the totals in chunk order. */
FK_INLINE void FN(fk_backward_chunk)(FN(fk_bctx) *cx, int tid, int b0)
{
    const MODEL *md = cx->md;
    const SOLVE *sv = cx->sv;
    const int s = md->s, s_sol = md->s_sol, P = md->P, P2 = 2 * md->P, B = md->B;
    const int nl = FN(fk_nl)(B, b0);
    const size_t N = (size_t)B * P2, BP = (size_t)B * P, NL = (size_t)cx->L * P2, BPL = (size_t)cx->L * P;
    const int kept = sv->kept;
    const size_t half = (size_t)kept * BP, halfL = (size_t)kept * BPL;
    const size_t Nc = (size_t)nl * P2, BPc = (size_t)nl * P, halfc = (size_t)kept * BPc;
    const long n_steps = sv->n_steps, chunk = cx->chunk;
    REAL *K = cx->scr[tid], *Y = K + (size_t)s * NL, *y = Y + NL, *y_new = y + NL;
    REAL *U = y_new + NL, *gk = U + (size_t)s * NL, *sz = gk + NL;
    REAL *Gp = sz + BPL, *gsum = Gp + 4 * NL;
    REAL *buf = gsum + NL;
    REAL *gW = buf + (sv->stages_kept ? 0 : (size_t)(chunk < n_steps ? chunk : n_steps) * 2 * halfL);
    REAL *gd = gW + cx->n_gW;
    REAL *lc = cx->lamL + (size_t)b0 * P2;
    const REAL *grad_out = cx->grad_out;
    const long *inj_ptr = cx->inj_ptr, *inj_idx = cx->inj_idx;
    memset(gW, 0, (cx->n_gW + cx->n_gd) * sizeof(REAL));
    for (long c = cx->n_steps_chunks - 1; c >= 0; c--) { /* last chunk of steps first */
        const long a = c * chunk, e = a + chunk < n_steps ? a + chunk : n_steps;
        if (!sv->stages_kept) { /* recompute the chunk's stages from its checkpoint, as the forward did */
            REAL *yc = y, *yn = y_new;
            memcpy(yc, sv->cks + (size_t)c * N + (size_t)b0 * P2, Nc * sizeof(REAL));
            for (long n = a; n < e; n++) { /* w and g straight into the chunk's record */
                REAL *wn = buf + (size_t)(n - a) * 2 * halfc;
                FN(fk_step)(md, b0, nl, yc, sv->h[n], sv->seg[n], K, Y, wn, wn + halfc,
                            n + 1 < e || kept > s_sol ? yn : NULL, kept);
                REAL *tmp = yc;
                yc = yn;
                yn = tmp;
            }
        }
        for (long n = e - 1; n >= a; n--) {
            for (long j = inj_ptr[n + 1]; j < inj_ptr[n + 2]; j++) {
                const REAL *go = grad_out + (size_t)inj_idx[j] * N + (size_t)b0 * P2;
                for (int l = 0; l < nl; l++)
                    for (int q = 0; q < P2; q++)
                        lc[(size_t)q * nl + l] += go[(size_t)l * P2 + q];
            }
            const double h = sv->h[n];
            const int k = sv->seg[n];
            const int inside = cx->dptr && cx->dptr[n] < cx->dptr[n + 1];
            const int top = inside ? kept : s_sol; /* stages with a cotangent */
            if (inside) { /* the outputs inside the step: Gp = sum_j theta_j^(p+1) g_j, gsum = sum_j g_j */
                memset(Gp, 0, 4 * Nc * sizeof(REAL));
                memset(gsum, 0, Nc * sizeof(REAL));
                for (long j = cx->dptr[n]; j < cx->dptr[n + 1]; j++) {
                    const REAL *go = grad_out + (size_t)cx->didx[j] * N + (size_t)b0 * P2;
                    const REAL th = (REAL)cx->dth[j];
                    const REAL pw[4] = {th, th * th, th * th * th, th * th * th * th};
                    for (int l = 0; l < nl; l++)
                        for (int q = 0; q < P2; q++) {
                            const size_t nq = (size_t)q * nl + l;
                            const REAL gv = go[(size_t)l * P2 + q];
                            for (int p = 0; p < 4; p++)
                                Gp[(size_t)p * Nc + nq] += pw[p] * gv;
                            gsum[nq] += gv;
                        }
                }
            }
            for (int i = top - 1; i >= 0; i--) {
                /* gk_i = h b_i lam + h sum_{j>i} a_ji U_j (+ h sum_p Q_ip Gp: the outputs inside) */
                const REAL hb = (REAL)(h * (double)md->bw[i]);
                FN(fk_combine)(md->A + i, s, i + 1, top, NULL, (REAL)h, U, Nc, gk);
                for (size_t q = 0; q < Nc; q++)
                    gk[q] = hb * lc[q] + gk[q];
                if (inside)
                    FN(fk_combine)(md->Q + 4 * i, 1, 0, 4, gk, (REAL)h, Gp, Nc, gk);
                /* U_i = (dF/dy)(Y_i)^T gk_i */
                const REAL *wi, *gi;
                if (sv->stages_kept) {
                    wi = sv->st + (size_t)n * 2 * half + (size_t)i * BP + (size_t)b0 * P;
                    gi = wi + half;
                } else {
                    wi = buf + (size_t)(n - a) * 2 * halfc + (size_t)i * BPc;
                    gi = wi + halfc;
                }
                REAL *Ui = U + (size_t)i * Nc;
                if (md->sparse) { /* sz = gk's gather through the entries; per entry also its weight's
                                   * cotangent: the sum over steps, stages and trials of g_source gk_target */
                    for (int p = 0; p < P; p++) {
#ifdef FK_VEC
                        if (nl == FK_LANES) { /* the sum in registers, in entry order from 0 */
                            FN(fk_v) acc[FK_NV];
                            for (int u = 0; u < FK_NV; u++)
                                acc[u] = (FN(fk_v)){0};
                            const REAL *gp = gi + (size_t)p * FK_LANES;
                            for (int j = md->row_ptr[p]; j < md->row_ptr[p + 1]; j++) {
                                const REAL *gq = gk + (size_t)md->col[j] * FK_LANES;
                                const REAL v = md->val[j];
                                for (int u = 0; u < FK_NV; u++)
                                    acc[u] += FN(fk_ld)(gq + u * FK_VN) * v;
                                if (cx->gWg)
                                    gW[j] += FN(fk_dot)(gp, gq, FK_LANES);
                            }
                            for (int u = 0; u < FK_NV; u++)
                                FN(fk_st)(sz + (size_t)p * FK_LANES + u * FK_VN, acc[u]);
                            continue;
                        }
#endif
                        REAL acc[FK_LANES] = {0};
                        const REAL *gp = gi + (size_t)p * nl;
                        for (int j = md->row_ptr[p]; j < md->row_ptr[p + 1]; j++) {
                            const REAL *gq = gk + (size_t)md->col[j] * nl;
                            FN(fk_axpy)(acc, gq, md->val[j], nl);
                            if (cx->gWg)
                                gW[j] += FN(fk_dot)(gp, gq, nl);
                        }
                        for (int l = 0; l < nl; l++)
                            sz[(size_t)p * nl + l] = acc[l];
                    }
                } else if (nl == 1) {
                    for (int p = 0; p < P; p++)
                        sz[p] = 0;
                    for (int q = 0; q < P2; q++) {
                        const REAL gq = gk[q];
                        const REAL *row = md->WgT + (size_t)q * P;
                        for (int p = 0; p < P; p++)
                            sz[p] += gq * row[p];
                    }
                } else {
                    for (size_t n2 = 0; n2 < BPc; n2++)
                        sz[n2] = 0;
                    for (int q = 0; q < P2; q++) {
                        const REAL *gq = gk + (size_t)q * nl;
                        const REAL *row = md->WgT + (size_t)q * P;
                        for (int p = 0; p < P; p++)
                            FN(fk_axpy)(sz + (size_t)p * nl, gq, row[p], nl);
                    }
                }
                if (!md->sat) {
                    for (size_t n2 = 0; n2 < BPc; n2++) {
                        const REAL z = -wi[n2], gv = gi[n2];
                        REAL S;
                        if (fabs(z) < (REAL)FK_SERIES_Z)
                            S = (REAL)0.5 + z / (REAL)6.0 - z * z * z / (REAL)180.0;
                        else
                            S = gv * ((REAL)1.0 + z - gv) / z;
                        sz[n2] *= S;
                    }
                } else { /* dg/dz of the saturated g: g_raw'(z) / (1 + g_raw sat)^2, with g_raw
                          * recomputed from w (the eager loop's _slope_g) */
                    for (size_t n2 = 0; n2 < BPc; n2++) {
                        const REAL wv = wi[n2], z = -wv;
                        REAL gv = wv / (REAL)fk_expm1((double)wv);
                        gv = (gv != gv) ? (REAL)1 : gv;
                        REAL S;
                        if (fabs(z) < (REAL)FK_SERIES_Z)
                            S = (REAL)0.5 + z / (REAL)6.0 - z * z * z / (REAL)180.0;
                        else
                            S = gv * ((REAL)1.0 + z - gv) / z;
                        const REAL den = gv * md->sat[n2 / nl] + (REAL)1.0;
                        sz[n2] *= S / (den * den);
                    }
                }
                for (int p = 0; p < P; p++) {
                    const REAL cV = md->c[p], cA = md->c[P + p];
                    for (int l = 0; l < nl; l++) {
                        const size_t nv = (size_t)p * nl + l, na = (size_t)(P + p) * nl + l;
                        Ui[nv] = gk[nv] * cV - sz[nv] * md->m;
                        Ui[na] = gk[na] * cA + sz[nv] * md->m;
                    }
                }
                if (cx->gWg && !md->sparse && nl == 1) { /* sum over steps, stages and trials of g (source) times gk (target) */
                    for (int p = 0; p < P; p++) {
                        const REAL gp = gi[p];
                        REAL *row = gW + (size_t)p * P2;
                        for (int q = 0; q < P2; q++)
                            row[q] += gp * gk[q];
                    }
                } else if (cx->gWg && !md->sparse) { /* (a sparse coupling's: with sz above) */
                    for (int p = 0; p < P; p++) {
                        const REAL *gp = gi + (size_t)p * nl;
                        REAL *row = gW + (size_t)p * P2;
                        for (int q = 0; q < P2; q++)
                            row[q] += FN(fk_dot)(gp, gk + (size_t)q * nl, nl);
                    }
                }
                if (cx->gdrive && md->Bd == 1) {
                    REAL *gdk = gd + (size_t)k * P2;
                    for (int q = 0; q < P2; q++)
                        for (int l = 0; l < nl; l++)
                            gdk[q] += gk[(size_t)q * nl + l];
                } else if (cx->gdrive) { /* each trial its own: no other chunk writes here */
                    for (int l = 0; l < nl; l++) {
                        REAL *gdb = cx->gdrive + ((size_t)(b0 + l) * md->K + k) * P2;
                        for (int q = 0; q < P2; q++)
                            gdb[q] += gk[(size_t)q * nl + l];
                    }
                }
            }
            FN(fk_combine)(NULL, 1, 0, top, lc, (REAL)1, U, Nc, lc); /* lam += sum_i U_i */
            if (inside)
                for (size_t q = 0; q < Nc; q++)
                    lc[q] += gsum[q];
        }
    }
    for (long j = inj_ptr[0]; j < inj_ptr[1]; j++) {
        const REAL *go = grad_out + (size_t)inj_idx[j] * N + (size_t)b0 * P2;
        for (int l = 0; l < nl; l++)
            for (int q = 0; q < P2; q++)
                lc[(size_t)q * nl + l] += go[(size_t)l * P2 + q];
    }
    const long ci = b0 / cx->L;
    fk_pool_turn(cx->pool, ci); /* the chunk's sums, in chunk order */
    if (cx->gWg)
        for (size_t j = 0; j < cx->n_gW; j++)
            cx->gWg[j] += gW[j];
    for (size_t j = 0; j < cx->n_gd; j++)
        cx->gdrive[j] += gd[j];
    fk_pool_done(cx->pool, ci);
}

FK_CLONES static void FN(fk_backward_task)(void *ctx, int tid)
{
    FN(fk_bctx) *cx = (FN(fk_bctx) *)ctx;
    for (int c = tid; c < cx->n_chunks; c += cx->T)
        FN(fk_backward_chunk)(cx, tid, c * cx->L);
}

/* The discrete adjoint of a recorded forward solve.
 *
 * grad_out (n_out x B x 2P): cotangents of the outputs; inj_ptr (n_steps + 2), inj_idx:
 * the output rows landed after j accepted steps are inj_idx[inj_ptr[j] .. inj_ptr[j+1]);
 * dptr (n_steps + 1), didx, dth (NULL: none): the dense outputs inside accepted step n are
 * rows didx[dptr[n] .. dptr[n+1]) at thetas dth[...].
 * lam (B x 2P, zero on entry) becomes the cotangent of y0; gWg (P x 2P, or nnz for a sparse
 * coupling) and gdrive (Bd x K x 2P) are accumulated into where not NULL. Returns FK_OK or FK_NOMEM.
 *
 * Trials are independent in the backward pass: it runs chunk by chunk of trials (on
 * md->threads threads), each back through all steps, its stages recomputed from the
 * checkpoints where they were not kept; the chunks' parts of gWg and gdrive are summed in
 * chunk order.
 */
FK_CLONES int FN(fk_backward)(const MODEL *md, const SOLVE *sv, const REAL *grad_out, const long *inj_ptr,
                    const long *inj_idx, const long *dptr, const long *didx, const double *dth, REAL *lam,
                    REAL *gWg, REAL *gdrive)
{
    const int s = md->s, P = md->P, P2 = 2 * md->P, B = md->B;
    if (B < 1)
        return FK_NOMEM;
    const int L = FN(fk_lanes)(B), n_chunks = (B + L - 1) / L;
    const size_t N = (size_t)B * P2, NL = (size_t)L * P2, BPL = (size_t)L * P;
    const long n_steps = sv->n_steps;
    MODEL local;
    fk_pool pool;
    int drive_ok;
    FN(fk_begin)(md, &local, &pool, &drive_ok);
    md = &local;
    FN(fk_bctx) cx;
    memset(&cx, 0, sizeof cx);
    cx.md = md;
    cx.sv = sv;
    cx.grad_out = grad_out;
    cx.inj_ptr = inj_ptr;
    cx.inj_idx = inj_idx;
    cx.dptr = dptr;
    cx.didx = didx;
    cx.dth = dth;
    cx.gWg = gWg;
    cx.gdrive = gdrive;
    cx.L = L;
    cx.n_chunks = n_chunks;
    cx.T = pool.T;
    cx.pool = &pool;
    /* chunks of steps whose stages are at hand: all of them, or those between checkpoints */
    cx.chunk = sv->stages_kept ? (n_steps ? n_steps : 1) : sv->M;
    cx.n_steps_chunks = n_steps ? (n_steps + cx.chunk - 1) / cx.chunk : 0;
    cx.n_gW = gWg ? (md->sparse ? (size_t)md->row_ptr[P] : (size_t)P * P2) : 0;
    cx.n_gd = gdrive && md->Bd == 1 ? (size_t)md->K * P2 : 0;
    const size_t n_buf = sv->stages_kept ? 0 : (size_t)(cx.chunk < n_steps ? cx.chunk : n_steps) * 2 * sv->kept * BPL;
    const size_t n_scr = (size_t)s * NL + 3 * NL + (size_t)s * NL + NL + BPL + 5 * NL + n_buf + cx.n_gW + cx.n_gd;
    cx.lamL = FN(fk_scratch)(N);
    int ok = cx.lamL && drive_ok;
    for (int t = 0; t < pool.T; t++)
        ok = ok && (cx.scr[t] = FN(fk_scratch)(n_scr)) != NULL;
    if (ok) {
        fk_pool_run(&pool, FN(fk_backward_task), &cx);
        FN(fk_from_lanes)(cx.lamL, lam, B, P2);
    }
    fk_pool_stop(&pool);
    for (int t = 0; t < FK_MAX_THREADS; t++)
        free(cx.scr[t]);
    free(cx.lamL);
    FN(fk_end)(&local);
    return ok ? FK_OK : FK_NOMEM;
}

/* ---------------------------------------------------------------------------------------
 * Rosenbrock-W steps (colplugin/solve/rosenbrock.py documents the scheme and the adjoint).
 *
 * One step of all trials per call, chunk by chunk of trials (in lanes, on md->threads
 * threads); the step-size control, the stops and the outputs stay in Python. Per column c
 * and trial, the W-matrix's system is the n x n one
 *     (I - h gamma U~ diag(sigma)) z = E^T D^-1 r,  U~[i][j] = Wcol[c][j][i] / D_V - Wcol[c][j][n+i] / D_A,
 * inverted by Gauss-Jordan elimination with partial pivoting (the lanes side by side). */

#define ROS FK_CAT(fk_ros, FK_SFX)
#ifndef FK_ROS_SHARE_MIN
#define FK_ROS_SHARE_MIN 131072L /* trials x populations from which a Rosenbrock step uses several threads */
#endif

typedef struct {
    int n, C, s;                /* populations per column, columns, stages */
    const REAL *Wcol;           /* C x n x 2n: the intra-column coupling of g (source; V then A targets) */
    const REAL *a, *cc;         /* s x s: stage inputs and stage couplings of the transformed scheme */
    const REAL *m, *e;          /* s: solution and error weights */
    double gamma;
} ROS;

/* S = dg/dz (z = -w) of the (saturated) g, and dS/dw, of one value of w; sp: the population's sat */
FK_INLINE REAL FN(fk_ros_slope_g)(REAL wv, REAL gv)
{
    /* S = g (1 + z - g) / z (z = -w, g = w / expm1(w) unsaturated), by the series near z = 0 */
    const REAL z = -wv;
    if (fabs(z) < (REAL)FK_SERIES_Z)
        return (REAL)0.5 + z / (REAL)6.0 - z * z * z / (REAL)180.0;
    return gv * ((REAL)1.0 + z - gv) / z;
}

FK_INLINE void FN(fk_ros_slope)(REAL wv, const REAL *sat, int p, REAL *S, REAL *dS)
{
    const double w = (double)wv, z = -w;
    double g = w / fk_expm1(w);
    if (g != g)
        g = 1.0;
    double g1, g2;
    if (fabs(z) < 1e-2) {
        g1 = 0.5 + z / 6.0 - z * z * z / 180.0;
        g2 = 1.0 / 6.0 - z * z / 60.0 + z * z * z * z / 1008.0;
    } else {
        g1 = g * (1.0 + z - g) / z;
        g2 = (g1 * (1.0 + z - g) + g * (1.0 - g1)) / z - g * (1.0 + z - g) / (z * z);
        if (!isfinite(g2))
            g2 = 0.0;
    }
    if (sat) {
        const double sp = (double)sat[p], q = g * sp + 1.0;
        g2 = g2 / (q * q) - 2.0 * sp * g1 * g1 / (q * q * q);
        g1 = g1 / (q * q);
    }
    *S = (REAL)g1;
    if (dS)
        *dS = (REAL)(-g2);
}

/* What the threads of a Rosenbrock step (or its adjoint) share. */
typedef struct {
    const MODEL *md;
    const ROS *rs;
    int L, n_chunks, T, seg, fresh, want_end;
    double h, rtol, atol;
    const REAL *y, *extra0, *qe, *lam_in; /* lam_in: the adjoint's cotangent of y_new (lam: of y, out) */
    REAL *F0, *w0, *g0, *yn, *Fn, *wn, *gn, *lam;
    REAL *gW, *gWcol, *gd;      /* adjoint: per-chunk accumulators (n_chunks x ...), or NULL */
    size_t n_gW, n_gWcol, n_gd;
    double *sq;                 /* per chunk: sum of squared scaled errors */
    int *bad;                   /* per chunk: a singular system or a non-finite number */
    REAL *scr[FK_MAX_THREADS];
} FN(fk_rctx);

/* Scratch per thread, in REALs: see fk_ros_chunk. */
FK_INLINE size_t FN(fk_ros_scratch)(const MODEL *md, const ROS *rs, int L)
{
    const size_t NL = (size_t)L * 2 * md->P, BPL = (size_t)L * md->P, s = (size_t)rs->s, n = (size_t)rs->n;
    return 7 * NL + 3 * s * NL + 3 * s * BPL + 5 * BPL + (size_t)rs->C * L * n * n + 3 * (size_t)rs->C * n * n
           + (size_t)n * n * L + 2 * (size_t)n * L;
}

/* The step's per-column matrices (shared by the lanes): with iD = 1 / D (2P, D = 1 - hg c),
 * Wv[c][j][i] = Wcol[c][j][i] iD_V,i, Wa[c][j][i] = Wcol[c][j][n+i] iD_A,i and
 * Ut[c][i][j] = Wv[c][j][i] - Wa[c][j][i] (U~). */
FK_INLINE void FN(fk_ros_prepare)(const ROS *rs, int P, const REAL *iD, REAL *Wv, REAL *Wa, REAL *Ut)
{
    const int n = rs->n;
    for (int c = 0; c < rs->C; c++) {
        const REAL *W = rs->Wcol + (size_t)c * n * 2 * n;
        REAL *wv = Wv + (size_t)c * n * n, *wa = Wa + (size_t)c * n * n, *ut = Ut + (size_t)c * n * n;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < n; i++) {
                wv[j * n + i] = W[(size_t)j * 2 * n + i] * iD[c * n + i];
                wa[j * n + i] = W[(size_t)j * 2 * n + n + i] * iD[P + c * n + i];
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                ut[i * n + j] = wv[j * n + i] - wa[j * n + i];
    }
}

/* x[l] -= f[l] a[l] over the lanes */
FK_INLINE void FN(fk_vsub)(REAL *x, const REAL *f, const REAL *a, int nl)
{
#ifdef FK_VEC
    if (nl == FK_LANES) {
        for (int u = 0; u < FK_NV; u++)
            FN(fk_st)(x + u * FK_VN, FN(fk_ld)(x + u * FK_VN) - FN(fk_ld)(f + u * FK_VN) * FN(fk_ld)(a + u * FK_VN));
        return;
    }
#endif
    for (int l = 0; l < nl; l++)
        x[l] -= f[l] * a[l];
}

/* Invert, per column, M = I - hg U~ diag(sigma) of every lane: Gauss-Jordan elimination with
 * partial pivoting (rows swapped lane by lane, the elimination across the lanes at once).
 * Mi: C x n x n x nl (lanes innermost), A: n x n x nl scratch. Returns 0 if a matrix is singular. */
FK_INLINE int FN(fk_ros_invert)(const ROS *rs, int nl, double hg, const REAL *Ut, const REAL *sigma, REAL *Mi, REAL *A)
{
    const int n = rs->n, C = rs->C;
    for (int c = 0; c < C; c++) {
        const REAL *ut = Ut + (size_t)c * n * n, *sg = sigma + (size_t)c * n * nl;
        REAL *B = Mi + (size_t)c * n * n * nl;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                REAL *a = A + ((size_t)i * n + j) * nl, *b = B + ((size_t)i * n + j) * nl;
                const REAL u = (REAL)hg * ut[i * n + j], d = i == j ? (REAL)1 : (REAL)0;
                for (int l = 0; l < nl; l++) {
                    a[l] = d - u * sg[(size_t)j * nl + l];
                    b[l] = d;
                }
            }
        for (int k = 0; k < n; k++) {
            REAL inv[FK_LANES];
            for (int l = 0; l < nl; l++) {
                int pk = k;
                REAL best = fabs(A[((size_t)k * n + k) * nl + l]);
                for (int i = k + 1; i < n; i++) {
                    const REAL v = fabs(A[((size_t)i * n + k) * nl + l]);
                    if (v > best) {
                        best = v;
                        pk = i;
                    }
                }
                if (!(best > 0) || !isfinite(best))
                    return 0;
                if (pk != k) {
                    for (int j = k; j < n; j++) {
                        REAL *x = A + ((size_t)k * n + j) * nl + l, *y = A + ((size_t)pk * n + j) * nl + l;
                        const REAL t = *x;
                        *x = *y;
                        *y = t;
                    }
                    for (int j = 0; j < n; j++) {
                        REAL *x = B + ((size_t)k * n + j) * nl + l, *y = B + ((size_t)pk * n + j) * nl + l;
                        const REAL t = *x;
                        *x = *y;
                        *y = t;
                    }
                }
                inv[l] = (REAL)1 / A[((size_t)k * n + k) * nl + l];
            }
            for (int j = k + 1; j < n; j++) {
                REAL *a = A + ((size_t)k * n + j) * nl;
                for (int l = 0; l < nl; l++)
                    a[l] *= inv[l];
            }
            for (int j = 0; j < n; j++) {
                REAL *b = B + ((size_t)k * n + j) * nl;
                for (int l = 0; l < nl; l++)
                    b[l] *= inv[l];
            }
            for (int i = 0; i < n; i++) {
                if (i == k)
                    continue;
                REAL f[FK_LANES];
                for (int l = 0; l < nl; l++)
                    f[l] = A[((size_t)i * n + k) * nl + l];
                for (int j = k + 1; j < n; j++)
                    FN(fk_vsub)(A + ((size_t)i * n + j) * nl, f, A + ((size_t)k * n + j) * nl, nl);
                for (int j = 0; j < n; j++)
                    FN(fk_vsub)(B + ((size_t)i * n + j) * nl, f, B + ((size_t)k * n + j) * nl, nl);
            }
        }
    }
    return 1;
}

/* out = B t (transpose 0) or B^T t (1), lane by lane: B n x n x nl, t and out n x nl */
FK_INLINE void FN(fk_ros_matvec)(int n, int nl, const REAL *B, int transpose, const REAL *t, REAL *out)
{
    for (int i = 0; i < n; i++) {
        REAL acc[FK_LANES] = {0};
        for (int j = 0; j < n; j++) {
            const REAL *b = B + ((size_t)(transpose ? j * n + i : i * n + j)) * nl, *tj = t + (size_t)j * nl;
            for (int l = 0; l < nl; l++)
                acc[l] += b[l] * tj[l];
        }
        for (int l = 0; l < nl; l++)
            out[i * nl + l] = acc[l];
    }
}

/* x = L^-1 r (chunk, lanes), z = E^T x per column (population-major lanes: (c n + i) nl + l); t: n nl scratch */
FK_INLINE void FN(fk_ros_solve)(const ROS *rs, int nl, int P, const REAL *iD, double hg, const REAL *sigma,
                             const REAL *Wv, const REAL *Wa, const REAL *Mi, const REAL *r, REAL *x, REAL *z, REAL *t)
{
    const int n = rs->n, C = rs->C;
    for (int q = 0; q < 2 * P; q++) {
        const REAL d = iD[q];
        for (int l = 0; l < nl; l++)
            x[(size_t)q * nl + l] = r[(size_t)q * nl + l] * d;
    }
    for (int c = 0; c < C; c++) {
        REAL *xv = x + (size_t)c * n * nl, *xa = x + (size_t)(P + c * n) * nl, *zc = z + (size_t)c * n * nl;
        const REAL *sg = sigma + (size_t)c * n * nl, *B = Mi + (size_t)c * n * n * nl;
        for (int i = 0; i < n * nl; i++)
            t[i] = xv[i] - xa[i];
        FN(fk_ros_matvec)(n, nl, B, 0, t, zc); /* z = M^-1 t */
        /* x += hg W^T (sigma z) / D */
        const REAL *wv = Wv + (size_t)c * n * n, *wa = Wa + (size_t)c * n * n;
        for (int j = 0; j < n; j++) {
            REAL sz[FK_LANES];
            for (int l = 0; l < nl; l++)
                sz[l] = (REAL)hg * sg[j * nl + l] * zc[j * nl + l];
            for (int i = 0; i < n; i++) {
                FN(fk_axpy)(xv + i * nl, sz, wv[j * n + i], nl);
                FN(fk_axpy)(xa + i * nl, sz, wa[j * n + i], nl);
            }
        }
    }
}

/* rho = L^-T kappa (chunk, lanes) and u = Wcol rho per column (population-major like z); t: 2 n nl scratch */
FK_INLINE void FN(fk_ros_solve_T)(const ROS *rs, int nl, int P, const REAL *iD, double hg, const REAL *sigma,
                               const REAL *Ut, const REAL *Mi, const REAL *kappa, REAL *rho, REAL *u, REAL *t)
{
    const int n = rs->n, C = rs->C;
    REAL *v = t + (size_t)n * nl;
    for (int q = 0; q < 2 * P; q++) {
        const REAL d = iD[q];
        for (int l = 0; l < nl; l++)
            rho[(size_t)q * nl + l] = kappa[(size_t)q * nl + l] * d;
    }
    for (int c = 0; c < C; c++) {
        const REAL *W = rs->Wcol + (size_t)c * n * 2 * n, *ut = Ut + (size_t)c * n * n;
        const REAL *B = Mi + (size_t)c * n * n * nl;
        REAL *rv = rho + (size_t)c * n * nl, *ra = rho + (size_t)(P + c * n) * nl, *uc = u + (size_t)c * n * nl;
        const REAL *sg = sigma + (size_t)c * n * nl;
        for (int j = 0; j < n; j++) { /* s = Wcol (kappa / D) into uc, t = sigma s */
            const REAL *row = W + (size_t)j * 2 * n;
            REAL acc[FK_LANES] = {0};
            for (int i = 0; i < n; i++) {
                FN(fk_axpy)(acc, rv + i * nl, row[i], nl);
                FN(fk_axpy)(acc, ra + i * nl, row[n + i], nl);
            }
            for (int l = 0; l < nl; l++) {
                uc[j * nl + l] = acc[l];
                t[j * nl + l] = sg[j * nl + l] * acc[l];
            }
        }
        FN(fk_ros_matvec)(n, nl, B, 1, t, v); /* v = M^-T t */
        /* u = s + hg U~^T v; rho += hg [v, -v] / D */
        for (int p = 0; p < n; p++)
            for (int i = 0; i < n; i++)
                FN(fk_axpy)(uc + p * nl, v + i * nl, (REAL)hg * ut[i * n + p], nl);
        for (int i = 0; i < n; i++) {
            const REAL dv = (REAL)hg * iD[c * n + i], da = -(REAL)hg * iD[P + c * n + i];
            FN(fk_axpy)(rv + i * nl, v + i * nl, dv, nl);
            FN(fk_axpy)(ra + i * nl, v + i * nl, da, nl);
        }
    }
}

/* phi = (dF/dy)(Y)^T q of a stage (w, g) in lanes; sz scratch (P x nl). Adds g_source q_target
 * to gW (dense P x 2P, or per entry) where gW is not NULL. */
FK_INLINE void FN(fk_ros_vjp)(const MODEL *md, int nl, const REAL *q, const REAL *w, const REAL *g, REAL *phi, REAL *sz,
                           REAL *gW)
{
    const int P = md->P, P2 = 2 * md->P;
    const size_t BPc = (size_t)nl * P;
    if (md->sparse) {
        for (int p = 0; p < P; p++) {
            REAL acc[FK_LANES] = {0};
            const REAL *gp = g + (size_t)p * nl;
            for (int j = md->row_ptr[p]; j < md->row_ptr[p + 1]; j++) {
                const REAL *gq = q + (size_t)md->col[j] * nl;
                FN(fk_axpy)(acc, gq, md->val[j], nl);
                if (gW)
                    gW[j] += FN(fk_dot)(gp, gq, nl);
            }
            for (int l = 0; l < nl; l++)
                sz[(size_t)p * nl + l] = acc[l];
        }
    } else {
        for (size_t n2 = 0; n2 < BPc; n2++)
            sz[n2] = 0;
        for (int qq = 0; qq < P2; qq++) {
            const REAL *gq = q + (size_t)qq * nl;
            const REAL *row = md->WgT + (size_t)qq * P;
            for (int p = 0; p < P; p++)
                FN(fk_axpy)(sz + (size_t)p * nl, gq, row[p], nl);
        }
        if (gW)
            for (int p = 0; p < P; p++) {
                const REAL *gp = g + (size_t)p * nl;
                REAL *row = gW + (size_t)p * P2;
                for (int qq = 0; qq < P2; qq++)
                    row[qq] += FN(fk_dot)(gp, q + (size_t)qq * nl, nl);
            }
    }
    for (size_t n2 = 0; n2 < BPc; n2++) {
        REAL S;
        if (md->sat)
            FN(fk_ros_slope)(w[n2], md->sat, (int)(n2 / nl), &S, NULL);
        else
            S = FN(fk_ros_slope_g)(w[n2], g[n2]);
        sz[n2] *= S;
    }
    for (int p = 0; p < P; p++) {
        const REAL cV = md->c[p], cA = md->c[P + p];
        for (int l = 0; l < nl; l++) {
            const size_t nv = (size_t)p * nl + l, na = (size_t)(P + p) * nl + l;
            phi[nv] = q[nv] * cV - sz[nv] * md->m;
            phi[na] = q[na] * cA + sz[nv] * md->m;
        }
    }
}

/* gd (K x 2P, shared by the trials) or the per-trial drive cotangent += q of segment k */
FK_INLINE void FN(fk_ros_gdrive)(const MODEL *md, int b0, int nl, int k, const REAL *q, REAL *gd, REAL *gdrive_trials)
{
    const int P2 = 2 * md->P;
    if (md->Bd == 1) {
        REAL *gdk = gd + (size_t)k * P2;
        for (int qq = 0; qq < P2; qq++)
            for (int l = 0; l < nl; l++)
                gdk[qq] += q[(size_t)qq * nl + l];
    } else {
        for (int l = 0; l < nl; l++) {
            REAL *gdb = gdrive_trials + ((size_t)(b0 + l) * md->K + k) * P2;
            for (int qq = 0; qq < P2; qq++)
                gdb[qq] += q[(size_t)qq * nl + l];
        }
    }
}

/* One step of one chunk (forward, or recomputed and differentiated where cx->lam is set). */
FK_INLINE void FN(fk_ros_chunk)(FN(fk_rctx) *cx, int tid, int b0)
{
    const MODEL *md = cx->md;
    const ROS *rs = cx->rs;
    const int s = rs->s, P = md->P, P2 = 2 * md->P, B = md->B, n = rs->n;
    const int nl = FN(fk_nl)(B, b0), seg = cx->seg;
    const size_t Nc = (size_t)nl * P2, BPc = (size_t)nl * P;
    const size_t NL = (size_t)cx->L * P2, BPL = (size_t)cx->L * P;
    const double h = cx->h, hg = h * rs->gamma;
    const long ci = b0 / cx->L;
    REAL *y = cx->scr[tid], *Y = y + NL, *yn = Y + NL, *r = yn + NL, *lam = r + NL, *kap = lam + NL;
    REAL *K = kap + NL, *Fs = K + (size_t)s * NL, *Rho = Fs + (size_t)s * NL;
    REAL *Ws = Rho + (size_t)s * NL, *Gs = Ws + (size_t)s * BPL, *Z = Gs + (size_t)s * BPL;
    REAL *sigma = Z + (size_t)s * BPL, *iD = sigma + BPL, *u = iD + NL /* iD: 2P */, *sz = u + BPL;
    REAL *sbar = sz + BPL, *we = sbar + BPL, *Mi = we + BPL, *Wv = Mi + (size_t)rs->C * cx->L * n * n;
    REAL *Wa = Wv + (size_t)rs->C * n * n, *Ut = Wa + (size_t)rs->C * n * n, *Aw = Ut + (size_t)rs->C * n * n;
    REAL *t = Aw + (size_t)n * n * cx->L;
    FN(fk_to_lanes)(cx->y + (size_t)b0 * P2, y, nl, P2);
    for (int q = 0; q < P2; q++)
        iD[q] = (REAL)1 / ((REAL)1 - (REAL)hg * md->c[q]);
    FN(fk_ros_prepare)(rs, P, iD, Wv, Wa, Ut);
    /* stage 0 */
    if (cx->fresh || cx->lam) {
        FN(fk_stage)(md, b0, nl, y, seg, Fs, Ws, Gs);
        if (!cx->lam) {
            FN(fk_from_lanes)(Fs, cx->F0 + (size_t)b0 * P2, nl, P2);
            FN(fk_from_lanes)(Ws, cx->w0 + (size_t)b0 * P, nl, P);
            FN(fk_from_lanes)(Gs, cx->g0 + (size_t)b0 * P, nl, P);
        }
    } else {
        FN(fk_to_lanes)(cx->F0 + (size_t)b0 * P2, Fs, nl, P2);
        FN(fk_to_lanes)(cx->w0 + (size_t)b0 * P, Ws, nl, P);
        FN(fk_to_lanes)(cx->g0 + (size_t)b0 * P, Gs, nl, P);
    }
    for (size_t n2 = 0; n2 < BPc; n2++) {
        REAL S;
        if (md->sat)
            FN(fk_ros_slope)(Ws[n2], md->sat, (int)(n2 / nl), &S, NULL);
        else
            S = FN(fk_ros_slope_g)(Ws[n2], Gs[n2]);
        sigma[n2] = -md->m * S; /* d a S */
    }
    if (!FN(fk_ros_invert)(rs, nl, hg, Ut, sigma, Mi, Aw)) {
        cx->bad[ci] = 1;
        return;
    }
    for (int i = 0; i < s; i++) {
        REAL *Fi = Fs + (size_t)i * Nc, *Ki = K + (size_t)i * Nc;
        if (i > 0) {
            FN(fk_combine)(rs->a + (size_t)i * s, 1, 0, i, y, (REAL)h, K, (size_t)nl * P2, Y);
            FN(fk_stage)(md, b0, nl, Y, seg, Fi, Ws + (size_t)i * BPc, Gs + (size_t)i * BPc);
        }
        /* r = gamma (F_i + sum_j c_ij K_j) */
        FN(fk_combine)(rs->cc + (size_t)i * s, 1, 0, i, Fi, (REAL)1, K, (size_t)nl * P2, r);
        for (size_t q = 0; q < (size_t)nl * P2; q++)
            r[q] *= (REAL)rs->gamma;
        FN(fk_ros_solve)(rs, nl, P, iD, hg, sigma, Wv, Wa, Mi, r, Ki, Z + (size_t)i * BPc, t);
    }
    FN(fk_combine)(rs->m, 1, 0, s, y, (REAL)h, K, (size_t)nl * P2, yn);
    if (!cx->lam) {
        /* error: h sum_i e_i K_i, scaled by atol + rtol max(|y|, |y_new|) */
        FN(fk_combine)(rs->e, 1, 0, s, NULL, (REAL)h, K, (size_t)nl * P2, r);
        double sq = 0;
        int finite = 1;
        for (size_t q = 0; q < (size_t)nl * P2; q++) {
            const double ay = fabs((double)y[q]), an = fabs((double)yn[q]);
            const double e = (double)r[q] / ((ay > an ? ay : an) * cx->rtol + cx->atol);
            sq += e * e;
            finite = finite && isfinite((double)yn[q]);
        }
        cx->sq[ci] = sq;
        if (!finite || !isfinite(sq))
            cx->bad[ci] = 1;
        FN(fk_from_lanes)(yn, cx->yn + (size_t)b0 * P2, nl, P2);
        if (cx->want_end) {
            FN(fk_stage)(md, b0, nl, yn, seg, Y, we, sz);
            FN(fk_from_lanes)(Y, cx->Fn + (size_t)b0 * P2, nl, P2);
            FN(fk_from_lanes)(we, cx->wn + (size_t)b0 * P, nl, P);
            FN(fk_from_lanes)(sz, cx->gn + (size_t)b0 * P, nl, P);
        }
        return;
    }
    /* the adjoint of the step: lam (cotangent of y_new) becomes the cotangent of y */
    REAL *gW = cx->gW ? cx->gW + (size_t)ci * cx->n_gW : NULL;
    REAL *gWc = cx->gWcol ? cx->gWcol + (size_t)ci * cx->n_gWcol : NULL;
    REAL *gd = cx->gd ? (md->Bd == 1 ? cx->gd + (size_t)ci * cx->n_gd : cx->gd) : NULL;
    FN(fk_to_lanes)(cx->lam_in + (size_t)b0 * P2, lam, nl, P2);
    if (cx->qe) { /* outputs interpolated inside the step: F(y_new) has a cotangent */
        REAL *ge = sbar; /* scratch until sbar is used */
        FN(fk_stage)(md, b0, nl, yn, seg, Y, we, ge);
        FN(fk_to_lanes)(cx->qe + (size_t)b0 * P2, r, nl, P2);
        FN(fk_ros_vjp)(md, nl, r, we, ge, kap, sz, gW);
        if (gd)
            FN(fk_ros_gdrive)(md, b0, nl, seg, r, gd, cx->gd);
        for (size_t q = 0; q < (size_t)nl * P2; q++)
            lam[q] += kap[q];
    }
    for (size_t n2 = 0; n2 < BPc; n2++)
        sbar[n2] = 0;
    memcpy(yn, lam, (size_t)nl * P2 * sizeof(REAL)); /* yn: the new lam, lam + sum_i phi_i + ... */
    REAL *Phi = Fs; /* the stage derivatives are no longer needed: phi_i in their place */
    for (int i = s - 1; i >= 0; i--) {
        const size_t NN = (size_t)nl * P2;
        for (size_t q = 0; q < NN; q++)
            kap[q] = (REAL)(h * (double)rs->m[i]) * lam[q];
        for (int j = i + 1; j < s; j++) {
            const REAL aj = (REAL)(h * (double)rs->a[(size_t)j * s + i]);
            const REAL cj = (REAL)(rs->gamma * (double)rs->cc[(size_t)j * s + i]);
            const REAL *pj = Phi + (size_t)j * Nc, *rj = Rho + (size_t)j * Nc;
            for (size_t q = 0; q < NN; q++)
                kap[q] += aj * pj[q] + cj * rj[q];
        }
        REAL *rho = Rho + (size_t)i * Nc;
        FN(fk_ros_solve_T)(rs, nl, P, iD, hg, sigma, Ut, Mi, kap, rho, u, t);
        for (size_t q = 0; q < NN; q++)
            r[q] = (REAL)rs->gamma * rho[q];
        if (i == 0 && cx->extra0) {
            FN(fk_to_lanes)(cx->extra0 + (size_t)b0 * P2, kap, nl, P2);
            for (size_t q = 0; q < NN; q++)
                r[q] += kap[q];
        }
        REAL *phi = Phi + (size_t)i * Nc;
        FN(fk_ros_vjp)(md, nl, r, Ws + (size_t)i * BPc, Gs + (size_t)i * BPc, phi, sz, gW);
        if (gd)
            FN(fk_ros_gdrive)(md, b0, nl, seg, r, gd, cx->gd);
        for (size_t q = 0; q < NN; q++)
            yn[q] += phi[q];
        const REAL *zi = Z + (size_t)i * BPc;
        for (size_t n2 = 0; n2 < BPc; n2++)
            sbar[n2] += (REAL)hg * u[n2] * zi[n2];
        if (gWc) /* Wcol[c][p][q] += hg sum_l (sigma z)[c n + p] rho[q of column c] */
            for (int c = 0; c < rs->C; c++)
                for (int p = 0; p < n; p++)
                    for (int l = 0; l < nl; l++) {
                        const size_t np = (size_t)(c * n + p) * nl + l;
                        const REAL sz2 = (REAL)hg * sigma[np] * zi[np];
                        REAL *row = gWc + ((size_t)c * n + p) * 2 * n;
                        for (int q = 0; q < n; q++) {
                            row[q] += sz2 * rho[(size_t)(c * n + q) * nl + l];
                            row[n + q] += sz2 * rho[(size_t)(P + c * n + q) * nl + l];
                        }
                    }
    }
    /* the matrix's dependence on y: sigma = d a S(w0), w0 = db + m (V - A) */
    for (int p = 0; p < P; p++)
        for (int l = 0; l < nl; l++) {
            const size_t np = (size_t)p * nl + l;
            REAL S, dS;
            FN(fk_ros_slope)(Ws[np], md->sat, p, &S, &dS);
            const REAL wbar = sbar[np] * dS * (-md->m); /* dL/dw0 */
            yn[np] += wbar * md->m;
            yn[(size_t)(P + p) * nl + l] -= wbar * md->m;
        }
    FN(fk_from_lanes)(yn, cx->lam + (size_t)b0 * P2, nl, P2);
}

FK_CLONES static void FN(fk_ros_task)(void *ctx, int tid)
{
    FN(fk_rctx) *cx = (FN(fk_rctx) *)ctx;
    for (int c = tid; c < cx->n_chunks; c += cx->T)
        FN(fk_ros_chunk)(cx, tid, c * cx->L);
}

/* Run one step (or its adjoint) chunk by chunk, as cx (the caller's fields set, the rest 0)
 * describes: the model's local copy, the pool (several threads only from FK_ROS_SHARE_MIN
 * trial-populations: a smaller step costs more in thread starts than it saves) and the
 * scratch in work. *sq (if not NULL) gets the error norm's sum of squares, summed in chunk
 * order. Returns 0, 1 (a singular system or a non-finite state) or 3 (out of memory). */
static int FN(fk_ros_run)(const MODEL *md, const ROS *rs, REAL *work, FN(fk_rctx) *cx, double *sq)
{
    MODEL m1 = *md, local;
    fk_pool pool;
    int drive_ok;
    if ((long)md->B * md->P < FK_ROS_SHARE_MIN)
        m1.threads = 1;
    FN(fk_begin)(&m1, &local, &pool, &drive_ok);
    cx->md = &local;
    cx->rs = rs;
    cx->L = FN(fk_lanes)(md->B);
    cx->n_chunks = (md->B + cx->L - 1) / cx->L;
    cx->T = pool.T;
    const size_t n_scr = FN(fk_ros_scratch)(md, rs, cx->L);
    for (int t = 0; t < pool.T; t++)
        cx->scr[t] = work + (size_t)t * n_scr;
    cx->sq = (double *)calloc((size_t)cx->n_chunks, sizeof(double));
    cx->bad = (int *)calloc((size_t)cx->n_chunks, sizeof(int));
    int status = 3;
    if (drive_ok && cx->sq && cx->bad) {
        fk_pool_run(&pool, FN(fk_ros_task), cx);
        status = 0;
        double total = 0;
        for (int c = 0; c < cx->n_chunks; c++) {
            total += cx->sq[c];
            if (cx->bad[c])
                status = 1;
        }
        if (sq)
            *sq = total;
    }
    free(cx->sq);
    free(cx->bad);
    fk_pool_stop(&pool);
    FN(fk_end)(&local);
    return status;
}

/* REALs of the workspace the two entry points need: per thread one chunk's scratch, for
 * up to `threads` threads (the caller allocates it once per solve). */
size_t FN(fk_ros_work)(const MODEL *md, const ROS *rs, int threads)
{
    const int L = FN(fk_lanes)(md->B), n_chunks = (md->B + L - 1) / L;
    int T = threads < n_chunks ? threads : n_chunks;
    T = T < 1 ? 1 : (T > FK_MAX_THREADS ? FK_MAX_THREADS : T);
    return (size_t)T * FN(fk_ros_scratch)(md, rs, L);
}

/* One Rosenbrock-W step of h from y (B x 2P, plain layout) in segment seg: y_new into yn and
 * the error norm's sum of squares into *sq. fresh: evaluate stage 0 into F0, w0, g0 (else
 * they hold it); want_end: also F(y_new) into Fn, wn, gn. Returns 0 (ok), 1 (a singular
 * system or a non-finite state: reject the step) or 3 (out of memory). */
FK_CLONES int FN(fk_ros_step)(const MODEL *md, const ROS *rs, REAL *work, const REAL *y, double h, int seg, int fresh,
                              REAL *F0, REAL *w0, REAL *g0, REAL *yn, int want_end, REAL *Fn, REAL *wn, REAL *gn,
                              double rtol, double atol, double *sq)
{
    FN(fk_rctx) cx;
    memset(&cx, 0, sizeof cx);
    cx.y = y; cx.h = h; cx.seg = seg; cx.fresh = fresh; cx.F0 = F0; cx.w0 = w0; cx.g0 = g0; cx.yn = yn;
    cx.want_end = want_end; cx.Fn = Fn; cx.wn = wn; cx.gn = gn; cx.rtol = rtol; cx.atol = atol;
    return FN(fk_ros_run)(md, rs, work, &cx, sq);
}

/* The adjoint of one step (recomputed from y): from lam (B x 2P), the cotangent of y_new, to
 * lam_out, that of y. extra0 (or NULL): an added cotangent of stage 0's F; qe (or NULL): the cotangent
 * of F(y_new) (outputs interpolated inside the step). Accumulates per chunk of trials into
 * gW (n_chunks x entries), gWcol (n_chunks x C x n x 2n) and gdrive (n_chunks x K x 2P where the
 * trials share the drive, else B x K x 2P), where not NULL. Returns 0, 1 (singular) or 3. */
FK_CLONES int FN(fk_ros_adjoint)(const MODEL *md, const ROS *rs, REAL *work, const REAL *y, double h, int seg,
                                 const REAL *lam, REAL *lam_out, const REAL *extra0, const REAL *qe, REAL *gW,
                                 REAL *gWcol, REAL *gdrive)
{
    FN(fk_rctx) cx;
    memset(&cx, 0, sizeof cx);
    cx.y = y; cx.h = h; cx.seg = seg; cx.lam_in = lam; cx.lam = lam_out; cx.extra0 = extra0; cx.qe = qe;
    cx.gW = gW; cx.gWcol = gWcol; cx.gd = gdrive;
    cx.n_gW = md->sparse ? (size_t)md->row_ptr[md->P] : (size_t)md->P * 2 * md->P;
    cx.n_gWcol = (size_t)rs->C * rs->n * 2 * rs->n;
    cx.n_gd = (size_t)md->K * 2 * md->P;
    return FN(fk_ros_run)(md, rs, work, &cx, NULL);
}

#undef ROS

#undef FN
#undef MODEL
#undef SOLVE
#ifdef FK_VEC
#undef FK_VN
#undef FK_NV
#endif
