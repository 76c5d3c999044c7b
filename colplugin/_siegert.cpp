/* The stationary rate of a LIF neuron under diffusive input (Siegert formula with the
 * Fourcaud-Brunel shift), for compiled code: Brian2's cpp_standalone (or cython/cpp runtime)
 * code generation, as a user function's support code.
 *
 * A line-by-line port of colplugin/siegert.py (``siegert_value``): the same split integral,
 * the same 16-node Gauss-Legendre rule for H(y) = int_0^y erfcx(v) dv after t = log(1 + v) up
 * to y = 20 and the integrated asymptotic series of erfcx beyond, the same Rybicki sum for
 * Dawson's function (h = 1/4, odd offsets -25..25) with its asymptotic series beyond 1e4, the
 * same scaling of every term by q = exp(-max(hi, 0)^2) (nothing overflows: far below threshold
 * the rate underflows to 0) and the same floor on s. It agrees with siegert_value (float64) to
 * about 1e-13 relative wherever the rate is above 1e-250 Hz (tests/test_siegert_cpp.py).
 *
 * Entry point (everything else is a helper):
 *
 *   double colplugin_siegert(double mu, double s2, double theta_shift, double theta, double V_r,
 *                            double tau_m, double t_ref, double c, double sigma_floor)
 *
 *   mu, theta_shift, theta, V_r, sigma_floor in mV, s2 = s^2 in mV^2 (Brunel's white-noise
 *   amplitude squared), tau_m and t_ref in s, c = sqrt(tau_s / tau_m) |zeta(1/2)| / sqrt(2) the
 *   Fourcaud-Brunel shift (dimensionless; colplugin.siegert.fourcaud_brunel_shift, 0 for white
 *   noise). Returns the rate in Hz.
 *
 * Language: this file is valid C99 and C++11 (it is compiled as both in the tests). Under C++
 * it includes only <cmath> and calls the std:: functions; under C it includes <math.h>. Every
 * function is ``static inline`` and every name carries the prefix colplugin_ / COLPLUGIN_; an
 * include guard makes a second inclusion into the same translation unit harmless, and the one
 * helper macro is #undef'd at the end. Brian2 pastes this text into an anonymous namespace
 * (its "support code"), where the #include is a no-op (its templates include <cmath> first).
 */
#ifndef COLPLUGIN_SIEGERT_CPP_INCLUDED
#define COLPLUGIN_SIEGERT_CPP_INCLUDED

#ifdef __cplusplus
#include <cmath>
#define COLPLUGIN_M(f) std::f
#else
#include <math.h>
#define COLPLUGIN_M(f) f
#endif

/* sqrt(pi) */
#define COLPLUGIN_SQRT_PI 1.7724538509055159

/* Gauss-Legendre rule with 16 nodes on [0, 1], as colplugin.siegert._nodes builds it.
 * Generated with numpy 2.3.5:
 *     x, w = numpy.polynomial.legendre.leggauss(16)
 *     print("%.17g" % v for v in (x + 1.0) / 2.0) and likewise for w / 2.0
 * (17 significant digits: each literal parses back to exactly the float64 numpy computed). */
static const double colplugin_gl_x[16] = {
    0.0052995325041750307,
    0.0277124884633837,
    0.067184398806084122,
    0.1222977958224985,
    0.19106187779867811,
    0.27099161117138632,
    0.35919822461037054,
    0.45249374508118129,
    0.54750625491881877,
    0.64080177538962946,
    0.72900838882861363,
    0.80893812220132189,
    0.87770220417750155,
    0.93281560119391593,
    0.9722875115366163,
    0.99470046749582497
};
static const double colplugin_gl_w[16] = {
    0.013576229705877088,
    0.031126761969323728,
    0.047579255841246303,
    0.062314485627767036,
    0.074797994408288354,
    0.084578259697501323,
    0.09130170752246182,
    0.09472530522753432,
    0.09472530522753432,
    0.09130170752246182,
    0.084578259697501323,
    0.074797994408288354,
    0.062314485627767036,
    0.047579255841246303,
    0.031126761969323728,
    0.013576229705877088
};

/* erfcx(x) = exp(x^2) erfc(x).
 * 0 <= x < 25: exp(x^2) erfc(x) with x^2 split exactly into xh^2 + (2 xh xl + xl^2), xh = x
 *   rounded to float (24 bits, so xh^2 is exact in double): exp(x*x) alone would carry the
 *   rounding error of x*x times x^2 (up to 7e-14 relative at x = 25).
 * x >= 25: the asymptotic series 1/(x sqrt(pi)) sum_k (-1)^k (2k-1)!! / (2 x^2)^k to k = 8
 *   (next term below 5e-21); erfc itself would go subnormal beyond x = 26.5.
 * x < 0: 2 exp(x^2) - erfcx(-x) (the Siegert rate only needs x >= 0).
 * Relative error against scipy.special.erfcx: see tests/test_siegert_cpp.py. */
static inline double colplugin_erfcx(double x)
{
    if (x < 0.0) {
        return 2.0 * COLPLUGIN_M(exp)(x * x) - colplugin_erfcx(-x);
    }
    if (x < 25.0) {
        double xh = (double)(float)x;
        double xl = x - xh;
        return COLPLUGIN_M(exp)(xh * xh) * COLPLUGIN_M(exp)(xl * (2.0 * xh + xl)) * COLPLUGIN_M(erfc)(x);
    }
    {
        double inv = 1.0 / (2.0 * x * x);
        double term = 1.0, sum = 1.0;
        int k;
        for (k = 1; k <= 8; ++k) {
            term *= -(2.0 * k - 1.0) * inv;
            sum += term;
        }
        return sum / (x * COLPLUGIN_SQRT_PI);
    }
}

/* sqrt(pi) times an antiderivative of erfcx for v >= 20 (siegert._h_tail):
 * ln v + sum_{k=1..7} (-1)^(k+1) (2k-1)!! / (2^k 2k) v^(-2k). */
static inline double colplugin_h_tail(double v)
{
    double inv2 = 1.0 / (v * v);
    double acc = 0.0, term = 1.0, double_fact = 1.0, pow2 = 1.0;
    int k;
    for (k = 1; k <= 7; ++k) {
        double sign = (k % 2 == 1) ? 1.0 : -1.0;
        double_fact *= 2 * k - 1;
        pow2 *= 2.0;
        term = term * inv2;
        acc = acc + sign * double_fact / (pow2 * 2.0 * k) * term;
    }
    return COLPLUGIN_M(log)(v) + acc;
}

/* H(y) = int_0^y erfcx(v) dv for y >= 0 (siegert.erfcx_integral): Gauss-Legendre in
 * t = log(1 + v) on [0, log(1 + min(y, 20))], plus the integrated asymptotic series beyond 20. */
static inline double colplugin_erfcx_integral(double y)
{
    double yc = y > 20.0 ? 20.0 : y;
    double T = COLPLUGIN_M(log1p)(yc);
    double sum = 0.0;
    double gl;
    int i;
    for (i = 0; i < 16; ++i) {
        double t = T * colplugin_gl_x[i];
        double et = COLPLUGIN_M(exp)(t);
        sum += colplugin_erfcx(et - 1.0) * et * colplugin_gl_w[i];
    }
    gl = sum * T;  /* for y > 20 this is H(20), the split value */
    if (y > 20.0) {
        gl = gl + (colplugin_h_tail(y) - colplugin_h_tail(20.0)) / COLPLUGIN_SQRT_PI;
    }
    return gl;
}

/* Dawson's function F(x) = exp(-x^2) int_0^x exp(t^2) dt for x >= 0 (siegert.dawson):
 * Rybicki's sum pi^(-1/2) sum_{n odd} exp(-(x - n h)^2) / n, h = 1/4, over the 26 odd offsets
 * -25..25 around the nearest even multiple of h (ties to even, as torch.round), and
 * 1/(2x) (1 + 1/(2x^2) + 3/(4x^4)) beyond 1e4. */
static inline double colplugin_dawson(double x)
{
    const double h = 0.25;
    if (x > 1e4) {
        double inv = 1.0 / (2.0 * x * x);
        return (1.0 + inv * (1.0 + 3.0 * inv)) / (2.0 * x);
    }
    {
        double k0 = COLPLUGIN_M(nearbyint)(x / (2.0 * h));
        double xp = x - 2.0 * h * k0;  /* |xp| <= h */
        double sum = 0.0;
        int m;
        for (m = -25; m <= 25; m += 2) {
            double d = xp - m * h;
            sum += COLPLUGIN_M(exp)(-(d * d)) / (2.0 * k0 + m);
        }
        return sum / COLPLUGIN_SQRT_PI;
    }
}

/* q P(y), P(y) = int_0^y erfcx(-u) du, without overflow (siegert._parts):
 * y >= 0: 2 exp(min(y^2 - hi_p^2, 0)) F(y) - q H(y);  y < 0: -q H(-y). */
static inline double colplugin_siegert_qp(double y, double hi_p, double q)
{
    double a = COLPLUGIN_M(fabs)(y);
    double qH = q * colplugin_erfcx_integral(a);
    if (y >= 0.0) {
        double e = y * y - hi_p * hi_p;
        if (e > 0.0) e = 0.0;
        return 2.0 * COLPLUGIN_M(exp)(e) * colplugin_dawson(a) - qH;
    }
    return -qH;
}

/* The Siegert rate (Hz): q / (t_ref q + tau_m sqrt(pi) q I), I = int_lo^hi erfcx(-u) du,
 * hi = (theta + theta_shift - mu) / s + c, lo = (V_r - mu) / s + c, s = sqrt(max(s2, floor^2)),
 * q = exp(-max(hi, 0)^2) (siegert.siegert_value). */
static inline double colplugin_siegert(double mu, double s2, double theta_shift, double theta, double V_r,
                                       double tau_m, double t_ref, double c, double sigma_floor)
{
    double f2 = sigma_floor * sigma_floor;
    double s = COLPLUGIN_M(sqrt)(s2 < f2 ? f2 : s2);
    double hi = (theta + theta_shift - mu) / s + c;
    double lo = (V_r - mu) / s + c;
    double hi_p = hi > 0.0 ? hi : 0.0;
    double q = COLPLUGIN_M(exp)(-hi_p * hi_p);
    double J = colplugin_siegert_qp(hi, hi_p, q) - colplugin_siegert_qp(lo, hi_p, q);
    return q / (t_ref * q + tau_m * COLPLUGIN_SQRT_PI * J);
}

#undef COLPLUGIN_M
#undef COLPLUGIN_SQRT_PI
#endif /* COLPLUGIN_SIEGERT_CPP_INCLUDED */
