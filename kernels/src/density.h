// The density kernels of mlffd_kernels (see kernels.cpp), included once per instruction set:
// kernels.cpp compiles them for baseline x86-64 and again with AVX2 + FMA (function-level
// target), and picks one at run time. SPDX-License-Identifier: MIT
//
// Expects kAng and the includes of kernels.cpp; defines everything inside MLFFD_ISA.

namespace MLFFD_ISA {

// sin and cos of theta in [0, pi] (the basis' angle) without a libm call: Taylor series about 0
// of a = min(theta, pi - theta) in [0, pi/2] (sin theta = sin a, cos theta = +-cos a), 7 terms
// each for float (truncation < 1e-9), 12 for double (< 1e-20); small angles keep their relative
// accuracy.
template <typename T>
inline void sincos_0_pi(T theta, T& s, T& c) {
  // (-1)^k / (2k)! and (-1)^k / (2k + 1)!
  static constexpr double kCos[12] = {1.0, -1.0 / 2, 1.0 / 24, -1.0 / 720, 1.0 / 40320, -1.0 / 3628800, 1.0 / 479001600,
                                      -1.0 / 87178291200.0, 1.0 / 20922789888000.0, -1.0 / 6402373705728000.0,
                                      1.0 / 2432902008176640000.0, -1.0 / 1.1240007277776077e21};
  static constexpr double kSin[12] = {1.0, -1.0 / 6, 1.0 / 120, -1.0 / 5040, 1.0 / 362880, -1.0 / 39916800, 1.0 / 6227020800.0,
                                      -1.0 / 1307674368000.0, 1.0 / 355687428096000.0, -1.0 / 121645100408832000.0,
                                      1.0 / 5.109094217170944e19, -1.0 / 2.585201673888498e22};
  constexpr int n = sizeof(T) == 4 ? 7 : 12;
  const bool upper = theta > T(M_PI / 2);
  const T a = upper ? T(M_PI) - theta : theta, a2 = a * a;
  T cs = T(kCos[n - 1]), sn = T(kSin[n - 1]);
  for (int k = n - 2; k >= 0; --k) {
    cs = cs * a2 + T(kCos[k]);
    sn = sn * a2 + T(kSin[k]);
  }
  s = a * sn;
  c = upper ? -cs : cs;
}

// Envelope, its derivative and the basis prefactor for one edge.
template <typename T>
struct Radial {
  T rc, inv_rc, pref, c0, c1, c2;
  int p;
  Radial(double cutoff, int64_t envelope_p) {
    rc = T(cutoff);
    inv_rc = T(1.0 / cutoff);
    pref = T(std::sqrt(2.0 / cutoff));
    p = int(envelope_p);
    const double pf = double(envelope_p);
    c0 = T(-(pf + 1.0) * (pf + 2.0) / 2.0);
    c1 = T(pf * (pf + 2.0));
    c2 = T(-pf * (pf + 1.0) / 2.0);
  }
  // basis[b] = w sin((b+1) theta); with derivative: dbasis[b] = d basis[b] / dr
  inline void eval(T r, int B, T* basis, T* dbasis) const {
    const T rs = std::max(r, T(1e-6));
    const T x = r * inv_rc;
    T xp1 = T(1);  // x^(p-1)
    for (int k = 0; k < p - 1; ++k) xp1 *= x;
    const T xp = xp1 * x;
    const T env = T(1) + xp * (c0 + x * (c1 + c2 * x));
    const T w = pref * env / rs;
    const T theta = T(M_PI) * rs * inv_rc;
    T s1, co1;
    sincos_0_pi(theta, s1, co1);  // theta in [0, pi]: r < rc (callers), rs >= 1e-6
    T s_prev = T(0), s = s1, c_prev = T(1), c = co1;
    if (dbasis == nullptr) {
      for (int b = 0; b < B; ++b) {
        basis[b] = w * s;
        const T s_next = T(2) * co1 * s - s_prev;
        s_prev = s;
        s = s_next;
      }
      return;
    }
    const T denv = xp1 * (T(p) * c0 + x * (T(p + 1) * c1 + T(p + 2) * c2 * x)) * inv_rc;
    const T dw = pref * (denv - env / rs) / rs;
    const T k1 = T(M_PI) * inv_rc;
    for (int b = 0; b < B; ++b) {
      basis[b] = w * s;
      dbasis[b] = dw * s + w * k1 * T(b + 1) * c;
      const T s_next = T(2) * co1 * s - s_prev;
      const T c_next = T(2) * co1 * c - c_prev;
      s_prev = s;
      s = s_next;
      c_prev = c;
      c = c_next;
    }
  }
};

template <typename T>
inline void angular(T x, T y, T z, T* ang) {
  const T third = T(1.0 / 3.0);
  ang[0] = T(1);
  ang[1] = x;
  ang[2] = y;
  ang[3] = z;
  ang[4] = x * x - third;
  ang[5] = y * y - third;
  ang[6] = z * z - third;
  ang[7] = x * y;
  ang[8] = x * z;
  ang[9] = y * z;
}

// Work buffers of one thread: fixed-size arrays when the basis and message sizes are known at
// compile time (kB, kD > 0: the loops unroll and vectorise), heap arrays otherwise.
template <typename T, int kB, int kD>
struct Scratch {
  static constexpr bool fixed = kB > 0 && kD > 0;
  static constexpr int kBD = fixed ? kB * kD : 1;
  alignas(64) T basis_f[fixed ? kB : 1], dbasis_f[fixed ? kB : 1], t_f[kBD], gt_f[kBD], acc_f[kAng * kBD],
      gtr_f[16 * kBD];
  std::vector<T> heap;
  T *basis, *dbasis, *t, *gt, *acc, *gtr;
  explicit Scratch(int64_t B, int64_t D) {
    if (fixed) {
      basis = basis_f, dbasis = dbasis_f, t = t_f, gt = gt_f, acc = acc_f, gtr = gtr_f;
    } else {
      heap.assign(2 * B + (2 + kAng + 16) * B * D, T(0));
      basis = heap.data(), dbasis = basis + B, t = dbasis + B, gt = t + B * D, acc = gt + B * D, gtr = acc + kAng * B * D;
    }
  }
};

// The terms of one edge from its vector ve: false beyond the cutoff (and for NaN); else 1/r,
// the unit vector u, the angular components, the radial basis (and its derivative when dbasis
// is not null). Shared by the density passes (Edge::load) and edge_geometry.
template <typename T>
inline bool edge_terms(const T* ve, const Radial<T>& radial, int64_t B, T* ir, T* u, T* ang, T* basis, T* dbasis) {
  const T vx = ve[0], vy = ve[1], vz = ve[2];
  const T r = std::sqrt(vx * vx + vy * vy + vz * vz);
  if (!(r < radial.rc)) return false;
  radial.eval(r, int(B), basis, dbasis);
  *ir = T(1) / r;
  u[0] = vx * *ir, u[1] = vy * *ir, u[2] = vz * *ir;
  angular(u[0], u[1], u[2], ang);
  return true;
}

// What both passes compute for edge e: false beyond the cutoff (and for NaN); else 1/r, the unit
// vector, the angular components, the neighbour's message z, the radial basis in w.basis (with
// its derivative in w.dbasis when with_derivative) and w.t = basis (x) z.
template <typename T>
struct Edge {
  T ir, u[3], ang[kAng];
  const T* z;
  template <int kB, int kD>
  inline bool load(const T* v, const T* m, const int64_t* nb, int64_t e, int64_t B, int64_t D, const Radial<T>& radial,
                   Scratch<T, kB, kD>& w, bool with_derivative) {
    if (!edge_terms(v + 3 * e, radial, B, &ir, u, ang, w.basis, with_derivative ? w.dbasis : nullptr)) return false;
    take_message(m, nb, e, B, D, w);
    return true;
  }
  // The same from row e of a precomputed edge geometry (geometry_kernel): 1/r (0 beyond the
  // cutoff), u, the angular components, basis, its derivative.
  template <int kB, int kD>
  inline bool read(const T* geometry, const T* m, const int64_t* nb, int64_t e, int64_t B, int64_t D,
                   Scratch<T, kB, kD>& w, bool with_derivative) {
    const T* row = geometry + e * geometry_width(B);
    if (row[0] == T(0)) return false;
    ir = row[0];
    u[0] = row[1], u[1] = row[2], u[2] = row[3];
    for (int l = 0; l < kAng; ++l) ang[l] = row[4 + l];
    for (int64_t b = 0; b < B; ++b) w.basis[b] = row[4 + kAng + b];
    if (with_derivative)
      for (int64_t b = 0; b < B; ++b) w.dbasis[b] = row[4 + kAng + B + b];
    take_message(m, nb, e, B, D, w);
    return true;
  }
  // The neighbour's message z and w.t = basis (x) z (the basis already in w.basis).
  template <int kB, int kD>
  inline void take_message(const T* m, const int64_t* nb, int64_t e, int64_t B, int64_t D, Scratch<T, kB, kD>& w) {
    z = m + nb[e] * D;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) w.t[b * D + d] = w.basis[b] * z[d];
  }
  // Either of the above: from the geometry when given (computed once, shared by several passes).
  template <int kB, int kD>
  inline bool get(const T* geometry, const T* v, const T* m, const int64_t* nb, int64_t e, int64_t B, int64_t D,
                  const Radial<T>& radial, Scratch<T, kB, kD>& w, bool with_derivative) {
    return geometry != nullptr ? read(geometry, m, nb, e, B, D, w, with_derivative)
                               : load(v, m, nb, e, B, D, radial, w, with_derivative);
  }
};

// Row e of the edge geometry [E, 4 + 10 + 2B]: 1/r (0 beyond the cutoff: the rest unset), u,
// the angular components, the radial basis and its derivative, edges in parallel.
template <typename T>
void geometry_kernel(const T* v, int64_t E, int64_t B, double cutoff, int64_t envelope_p, T* out) {
  const Radial<T> radial(cutoff, envelope_p);
  const int64_t G = geometry_width(B);
  at::parallel_for(0, E, 256, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      T* row = out + e * G;
      if (!edge_terms(v + 3 * e, radial, B, row, row + 1, row + 4, row + 4 + kAng, row + 4 + kAng + B)) row[0] = T(0);
    }
  });
}

// rho[:, i] = scale * sum_e ang_e (x) basis_e (x) m[nbr_e] over centre i's edges (accumulated in
// the thread's buffer, written once), centres in parallel.
template <typename T, int kB, int kD>
void density_kernel(const T* v, const T* geometry, const T* m, const int64_t* nb, const int64_t* off, int64_t n, int64_t B_rt,
                    int64_t D_rt, double cutoff, int64_t envelope_p, double scale, Planes<T> out) {
  const int64_t B = kB > 0 ? kB : B_rt;
  const int64_t D = kD > 0 ? kD : D_rt;
  const int64_t BD = B * D;
  const Radial<T> radial(cutoff, envelope_p);
  const T sc = T(scale);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    Scratch<T, kB, kD> w(B, D);
    T* __restrict__ t = w.t;
    T* __restrict__ acc = w.acc;
    Edge<T> edge;
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t k = 0; k < kAng * BD; ++k) acc[k] = T(0);
      for (int64_t e = off[i]; e < off[i + 1]; ++e) {
        if (!edge.get(geometry, v, m, nb, e, B, D, radial, w, false)) continue;  // beyond the cutoff: nothing
        for (int l = 0; l < kAng; ++l) {
          const T a = edge.ang[l] * sc;
#pragma omp simd
          for (int64_t k = 0; k < BD; ++k) acc[l * BD + k] += a * t[k];
        }
      }
      for (int l = 0; l < kAng; ++l) std::copy(acc + l * BD, acc + (l + 1) * BD, out.p[l] + i * BD);
    }
  });
}

// Per edge e of centre i, with G = grad_rho[:, i] and t = basis (x) m[nbr_e]:
//   dL/dang_l = scale sum_k G[l, k] t[k],   gt[k] = sum_l ang_l G[l, k],
//   dL/dbasis_b = scale sum_d gt[b, d] m_d,  dL/dm_d = scale sum_b gt[b, d] basis_b.
// For short rows (B * D <= 16, e.g. the first layer) both products with G run as sums of
// vectors (no per-edge horizontal sums): gt along the rows of G, dL/dang along the rows of G's
// transpose (kept per centre, padded to 16 lanes); longer rows amortise one reduction per row.
template <typename T, int kB, int kD>
void density_backward_kernel(Planes<const T> g, const T* v, const T* geometry, const T* m, const int64_t* nb, const int64_t* off, int64_t n,
                             int64_t B_rt, int64_t D_rt, double cutoff, int64_t envelope_p, double scale, T* gv, T* gm) {
  const int64_t B = kB > 0 ? kB : B_rt;
  const int64_t D = kD > 0 ? kD : D_rt;
  const int64_t BD = B * D;
  const Radial<T> radial(cutoff, envelope_p);
  const T sc = T(scale);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    Scratch<T, kB, kD> w(B, D);
    T* __restrict__ t = w.t;
    T* __restrict__ gt = w.gt;
    T* __restrict__ G = w.acc;    // this centre's gradient rows [10, BD], contiguous
    T* __restrict__ GT = w.gtr;   // and transposed [BD, 16] (lanes 10..15 zero)
    Edge<T> edge;
    const T* ang = edge.ang;
    T gang[kAng];
    for (int64_t k = 0; k < 16 * BD; ++k) GT[k] = T(0);
    for (int64_t i = begin; i < end; ++i) {
      if (off[i] == off[i + 1]) continue;
      for (int l = 0; l < kAng; ++l) std::copy(g.p[l] + i * BD, g.p[l] + (i + 1) * BD, G + l * BD);
      if (BD <= 16)
        for (int l = 0; l < kAng; ++l)
          for (int64_t k = 0; k < BD; ++k) GT[k * 16 + l] = G[l * BD + k] * sc;
      for (int64_t e = off[i]; e < off[i + 1]; ++e) {
        if (!edge.get(geometry, v, m, nb, e, B, D, radial, w, true)) continue;  // gv stays zero
        const T* z = edge.z;
        const T ir = edge.ir, ux = edge.u[0], uy = edge.u[1], uz = edge.u[2];
        if (BD <= 16) {  // short rows: gt along G's rows, dL/dang along its transpose
#pragma omp simd
          for (int64_t k = 0; k < BD; ++k) gt[k] = ang[0] * G[k];
          for (int l = 1; l < kAng; ++l) {
            const T a = ang[l];
#pragma omp simd
            for (int64_t k = 0; k < BD; ++k) gt[k] += a * G[l * BD + k];
          }
          // 16 lanes as a GCC vector value kept in registers; two partial sums
          typedef T V16 __attribute__((vector_size(16 * sizeof(T))));
          V16 ga0 = {}, ga1 = {};
          int64_t k = 0;
          for (; k + 2 <= BD; k += 2) {
            V16 r0, r1;
            std::memcpy(&r0, GT + k * 16, sizeof(V16));
            std::memcpy(&r1, GT + (k + 1) * 16, sizeof(V16));
            ga0 += t[k] * r0;
            ga1 += t[k + 1] * r1;
          }
          if (k < BD) {
            V16 r0;
            std::memcpy(&r0, GT + k * 16, sizeof(V16));
            ga0 += t[k] * r0;
          }
          const V16 ga = ga0 + ga1;
          for (int l = 0; l < kAng; ++l) gang[l] = ga[l];  // (component 0 is constant: unused)
        } else {  // long rows: one pass over G, a vector reduction per component
#pragma omp simd
          for (int64_t k = 0; k < BD; ++k) gt[k] = ang[0] * G[k];
          gang[0] = T(0);
          for (int l = 1; l < kAng; ++l) {
            const T a = ang[l];
            T acc = T(0);
#pragma omp simd reduction(+ : acc)
            for (int64_t k = 0; k < BD; ++k) {
              gt[k] += a * G[l * BD + k];
              acc += G[l * BD + k] * t[k];
            }
            gang[l] = acc * sc;
          }
        }
        T gr = T(0);
        for (int64_t b = 0; b < B; ++b) {
          T gb = T(0);
          for (int64_t d = 0; d < D; ++d) gb += gt[b * D + d] * z[d];
          gr += gb * w.dbasis[b];
        }
        gr *= sc;
        if (gm != nullptr) {
          T* __restrict__ gme = gm + e * D;
          for (int64_t d = 0; d < D; ++d) gme[d] = T(0);
          for (int64_t b = 0; b < B; ++b) {
            const T bb = w.basis[b] * sc;
            for (int64_t d = 0; d < D; ++d) gme[d] += gt[b * D + d] * bb;
          }
        }
        // angular part: d ang / d u, projected (d u / d v = (I - u u^T) / r)
        const T gux = gang[1] + T(2) * ux * gang[4] + uy * gang[7] + uz * gang[8];
        const T guy = gang[2] + T(2) * uy * gang[5] + ux * gang[7] + uz * gang[9];
        const T guz = gang[3] + T(2) * uz * gang[6] + ux * gang[8] + uy * gang[9];
        const T gu_u = gux * ux + guy * uy + guz * uz;
        gv[3 * e] = (gux - gu_u * ux) * ir + gr * ux;
        gv[3 * e + 1] = (guy - gu_u * uy) * ir + gr * uy;
        gv[3 * e + 2] = (guz - gu_u * uz) * ir + gr * uz;
      }
    }
  });
}


}  // namespace MLFFD_ISA
