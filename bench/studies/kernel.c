/* The fused kernel of the convergence study (scabench.bench.studies.kernel): the DIoU protocol
 * (Zheng et al., AAAI 2020, test_1715k.m) for the built-in iou, giou, diou, ciou and sca losses,
 * with their exact gradients written out by hand (checked against autograd in the tests).
 *
 * Compiled once per precision: with -DSIM_FLOAT32 the state is float, else double. Exports
 * sim_iou, sim_giou, sim_diou, sim_ciou and sim_sca, all with the signature of SIM_ARGS below.
 *
 * Lanes are anchor points: a block of LANES points runs every (target, anchor) case for all T
 * steps with the boxes in registers; per-point error sums go to out[p, t] in double. The shared
 * part computes IoU, the enclosing box and the reverse-mode adjoints of x1..y2 (as torch's
 * autograd: clamp passes gradient at >= 0, ties of minimum/maximum split it in half); each loss
 * only seeds the adjoints of its own terms.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
/* d min(a, b) / d a and d max(a, b) / d a as torch.minimum / torch.maximum: ties share 1/2. */
#define DMIN(a, b) ((a) < (b) ? 1 : ((a) == (b) ? 0.5f : 0))
#define DMAX(a, b) ((a) > (b) ? 1 : ((a) == (b) ? 0.5f : 0))

/* Single-precision arctangent (Cephes atanf: range reduction, degree-9 odd polynomial;
   relative error below 2e-7), branch-free so that the lane loop vectorises. */
static inline float atan_f32(float x) {
    const float ax = fabsf(x);
    const int big = ax > 2.414213562373095f, mid = ax > 0.4142135623730950f;
    const float num = big ? -1.0f : (mid ? ax - 1.0f : ax);
    const float den = big ? ax : (mid ? ax + 1.0f : 1.0f);
    const float xr = num / den;
    const float y0 = big ? 1.5707963267948966f : (mid ? 0.7853981633974483f : 0.0f);
    const float z = xr * xr;
    const float r = y0 + ((((8.05374449538e-2f * z - 1.38776856032e-1f) * z + 1.99777106478e-1f) * z
                          - 3.33329491539e-1f) * z * xr + xr);
    return x < 0 ? -r : r;
}

#ifdef SIM_FLOAT32
typedef float real;
#define LANES 16
#define FABS fabsf
#define SQRT sqrtf
#define ATAN atan_f32
#else
typedef double real;
#define LANES 8
#define FABS fabs
#define SQRT sqrt
#define ATAN atan
#endif

enum loss_id { LOSS_IOU, LOSS_GIOU, LOSS_DIOU, LOSS_CIOU, LOSS_SCA };

#define SIM_ARGS                                                                             \
    int64_t n_points, const real *px, const real *py,                                        \
    int64_t n_targets, const real *tgt, /* per target: gx1 gy1 gx2 gy2 cx cy w h atan(w/h) */ \
    int64_t n_anchors, const real *anc, /* per target and anchor: w h */                      \
    int64_t T, const real *etas, real eps, real alpha,                                       \
    double *out /* [n_points, T + 1] */
#define SIM_PASS n_points, px, py, n_targets, tgt, n_anchors, anc, T, etas, eps, alpha, out

/* One function for the five losses; each export calls it with a constant `loss`, so after
   inlining the compiler keeps only that loss's terms (no branch on `loss` in the lane loop). */
static inline __attribute__((always_inline)) void simulate(const enum loss_id loss, SIM_ARGS) {
    /* Only the IoU loss has zero-gradient regions (disjoint boxes); the check costs the others. */
    const int freeze = loss == LOSS_IOU;
    double *acc = (double *)malloc(sizeof(double) * (size_t)(T + 1) * LANES);
    if (!acc) return;
    for (int64_t p0 = 0; p0 < n_points; p0 += LANES) {
        real PX[LANES], PY[LANES];
        for (int l = 0; l < LANES; l++) {
            const int64_t p = p0 + l < n_points ? p0 + l : n_points - 1;
            PX[l] = px[p]; PY[l] = py[p];
        }
        for (int64_t i = 0; i < (T + 1) * LANES; i++) acc[i] = 0.0;
        for (int64_t t = 0; t < n_targets; t++) {
            const real *g = tgt + 9 * t;
            const real gx1 = g[0], gy1 = g[1], gx2 = g[2], gy2 = g[3];
            const real gcx = g[4], gcy = g[5], gw = g[6], gh = g[7], gatan = g[8];
            const real area_g = MAX(gx2 - gx1, 0) * MAX(gy2 - gy1, 0);
            for (int64_t a = 0; a < n_anchors; a++) {
                const real aw = anc[2 * (t * n_anchors + a)], ah = anc[2 * (t * n_anchors + a) + 1];
                real X[LANES], Y[LANES], W[LANES], H[LANES], E[LANES];
                for (int l = 0; l < LANES; l++) {
                    X[l] = PX[l]; Y[l] = PY[l]; W[l] = aw; H[l] = ah;
                    E[l] = FABS(X[l] - gcx) + FABS(Y[l] - gcy) + FABS(W[l] - gw) + FABS(H[l] - gh);
                }
                for (int l = 0; l < LANES; l++) acc[l] += (double)E[l];
                for (int64_t it = 0; it < T; it++) {
                    const real eta = etas[it];
                    int moved = 0;
                    #pragma omp simd reduction(|:moved)
                    for (int l = 0; l < LANES; l++) {
                        const real x = X[l], y = Y[l], w = W[l], h = H[l];
                        const real x1 = x - w / 2, x2 = x + w / 2, y1 = y - h / 2, y2 = y + h / 2;
                        const real iwr = MIN(x2, gx2) - MAX(x1, gx1), ihr = MIN(y2, gy2) - MAX(y1, gy1);
                        const real iw = MAX(iwr, 0), ih = MAX(ihr, 0);
                        const real inter = iw * ih;
                        const real pwr = x2 - x1, phr = y2 - y1;
                        const real pw = MAX(pwr, 0), ph = MAX(phr, 0);
                        const real uni = pw * ph + area_g - inter;
                        const real rU = 1 / (uni + eps);
                        const real iou = inter * rU;
                        const real cw = MAX(x2, gx2) - MIN(x1, gx1), ch = MAX(y2, gy2) - MIN(y1, gy1);
                        real a_x1 = 0, a_y1 = 0, a_x2 = 0, a_y2 = 0;
                        real a_iou = 0, a_uni = 0, a_cw = 0, a_ch = 0, a_iwr = 0, a_ihr = 0;

                        /* ---- the loss's own terms ---- */
                        if (loss != LOSS_SCA) a_iou = -1; /* 1 - IoU */
                        if (loss == LOSS_GIOU) { /* + (C - U) / (C + eps) */
                            const real C = cw * ch, rCE = 1 / (C + eps);
                            const real a_C = rCE - ((C - uni) * rCE) * rCE;
                            a_uni += -rCE;
                            a_cw += a_C * ch; a_ch += a_C * cw;
                        }
                        if (loss == LOSS_DIOU || loss == LOSS_CIOU) { /* + rho^2 / (cw^2 + ch^2 + eps) */
                            const real rD = 1 / (cw * cw + ch * ch + eps);
                            const real dxc = (x1 + x2 - gx1 - gx2) * 0.5f, dyc = (y1 + y2 - gy1 - gy2) * 0.5f;
                            const real a_D = -((dxc * dxc + dyc * dyc) * rD) * rD;
                            a_cw += 2 * cw * a_D; a_ch += 2 * ch * a_D;
                            const real a_dxc = 2 * dxc * rD, a_dyc = 2 * dyc * rD;
                            a_x1 += a_dxc * 0.5f; a_x2 += a_dxc * 0.5f; a_y1 += a_dyc * 0.5f; a_y2 += a_dyc * 0.5f;
                        }
                        if (loss == LOSS_CIOU) {
                            /* + alpha v, v = 4/pi^2 (atan(gw/gh) - atan(w / max(h, eps)))^2,
                               alpha = v / (1 - IoU + v + eps) detached; dv/dq = -(8/pi^2) dat / (1 + q^2) */
                            const real rhc = 1 / MAX(phr, eps);
                            const real q = pwr * rhc;
                            const real dat = gatan - ATAN(q);
                            const real v = (real)(4 / (M_PI * M_PI)) * dat * dat;
                            const real a_q =
                                -(v * (real)(8 / (M_PI * M_PI)) * dat) / ((1 - iou + v + eps) * (1 + q * q));
                            const real a_wr = a_q * rhc;
                            const real a_hr = phr >= eps ? -a_q * (q * rhc) : 0;
                            a_x2 += a_wr; a_x1 -= a_wr; a_y2 += a_hr; a_y1 -= a_hr;
                        }
                        if (loss == LOSS_SCA) {
                            /* SO = w_in / w_out + h_in / h_out (a ratio is 1 where w_out = 0), loss 2 - SO */
                            const real rcw = cw > 0 ? 1 / cw : 0, rch = ch > 0 ? 1 / ch : 0;
                            a_iwr += -rcw; a_ihr += -rch;
                            a_cw += (iwr * rcw) * rcw; a_ch += (ihr * rch) * rch;
                            /* + alpha (d_lt + d_rb) / (diag + eps), eps inside each difference */
                            const real ex1 = x1 - gx1 + eps, ey1 = y1 - gy1 + eps;
                            const real ex2 = x2 - gx2 + eps, ey2 = y2 - gy2 + eps;
                            const real dlt = SQRT(ex1 * ex1 + ey1 * ey1), drb = SQRT(ex2 * ex2 + ey2 * ey2);
                            const real dg = SQRT((cw + eps) * (cw + eps) + (ch + eps) * (ch + eps));
                            const real rDG = 1 / (dg + eps);
                            const real a_lt = alpha * rDG / dlt, a_rb = alpha * rDG / drb;
                            const real a_dg = -alpha * ((dlt + drb) * rDG) * rDG / dg;
                            a_x1 += a_lt * ex1; a_y1 += a_lt * ey1;
                            a_x2 += a_rb * ex2; a_y2 += a_rb * ey2;
                            a_cw += a_dg * (cw + eps); a_ch += a_dg * (ch + eps);
                        }

                        /* ---- shared backward: IoU, union, intersection, enclosing box ---- */
                        real a_inter = a_iou * rU;
                        a_uni += -a_iou * (iou * rU);
                        a_inter -= a_uni;
                        a_iwr += iwr >= 0 ? a_inter * ih : 0;
                        a_ihr += ihr >= 0 ? a_inter * iw : 0;
                        /* min(x2, gx2) takes share s of d/dx2 and max(x2, gx2) the rest, 1 - s */
                        const real s_x2 = DMIN(x2, gx2), s_y2 = DMIN(y2, gy2);
                        const real s_x1 = DMAX(x1, gx1), s_y1 = DMAX(y1, gy1);
                        const real g_pw = pwr >= 0 ? a_uni * ph : 0, g_ph = phr >= 0 ? a_uni * pw : 0;
                        a_x2 += a_iwr * s_x2 + a_cw * (1 - s_x2) + g_pw;
                        a_x1 -= a_iwr * s_x1 + a_cw * (1 - s_x1) + g_pw;
                        a_y2 += a_ihr * s_y2 + a_ch * (1 - s_y2) + g_ph;
                        a_y1 -= a_ihr * s_y1 + a_ch * (1 - s_y1) + g_ph;
                        /* ---- the DIoU-protocol step in (x, y, w, h) ---- */
                        const real step = eta * (2 - iou);
                        const real nx = x - step * (a_x1 + a_x2);
                        const real ny = y - step * (a_y1 + a_y2);
                        const real nw = w - step * ((a_x2 - a_x1) / 2);
                        const real nh = h - step * ((a_y2 - a_y1) / 2);
                        moved |= (nx != x) | (ny != y) | (nw != w) | (nh != h);
                        X[l] = nx; Y[l] = ny; W[l] = nw; H[l] = nh;
                        E[l] = FABS(nx - gcx) + FABS(ny - gcy) + FABS(nw - gw) + FABS(nh - gh);
                    }
                    double *row = acc + (it + 1) * LANES;
                    for (int l = 0; l < LANES; l++) row[l] += (double)E[l];
                    if (freeze && !moved) {
                        /* No box of the group moved: every later step repeats this one exactly
                           (a zero gradient, e.g. IoU on disjoint boxes), so its error stands. */
                        for (int64_t rest = it + 2; rest <= T; rest++)
                            for (int l = 0; l < LANES; l++) acc[rest * LANES + l] += (double)E[l];
                        break;
                    }
                }
            }
        }
        for (int l = 0; l < LANES && p0 + l < n_points; l++)
            for (int64_t it = 0; it <= T; it++) out[(p0 + l) * (T + 1) + it] = acc[it * LANES + l];
    }
    free(acc);
}

void sim_iou(SIM_ARGS) { simulate(LOSS_IOU, SIM_PASS); }
void sim_giou(SIM_ARGS) { simulate(LOSS_GIOU, SIM_PASS); }
void sim_diou(SIM_ARGS) { simulate(LOSS_DIOU, SIM_PASS); }
void sim_ciou(SIM_ARGS) { simulate(LOSS_CIOU, SIM_PASS); }
void sim_sca(SIM_ARGS) { simulate(LOSS_SCA, SIM_PASS); }

/* The lane count of this build, so that the caller sizes its blocks in whole lane groups. */
int sim_lanes(void) { return LANES; }
