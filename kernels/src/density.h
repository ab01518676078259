// The density kernels of mlffd_kernels (see kernels.cpp), included once per instruction set:
// kernels.cpp compiles them for baseline x86-64 and again with AVX2 + FMA (function-level
// target), and picks one at run time. SPDX-License-Identifier: MIT
//
// Expects kAng and the includes of kernels.cpp; defines everything inside MLFFD_ISA.

namespace MLFFD_ISA {

// Several edges at a time in the lanes of a GCC vector: one AVX register (8 floats or 4
// doubles) in the AVX2 build, one SSE register in the baseline build.
constexpr int kVectorBytes = MLFFD_ISA_AVX2 ? 32 : 16;
template <typename T>
struct Lanes {
  typedef T V __attribute__((vector_size(kVectorBytes)));
  static constexpr int W = kVectorBytes / sizeof(T);
};

template <typename V>
inline V lane_sqrt(V x) {
#if MLFFD_ISA_AVX2
  if constexpr (sizeof(x[0]) == 4) return (V)_mm256_sqrt_ps((__m256)x);
  else return (V)_mm256_sqrt_pd((__m256d)x);
#else
  V r;
  for (int l = 0; l < int(sizeof(V) / sizeof(x[0])); ++l) r[l] = std::sqrt(x[l]);
  return r;
#endif
}

// sin and cos of theta in [0, pi] (the basis' angle), lane by lane, without a libm call: Taylor
// series about 0 of a = min(theta, pi - theta) in [0, pi/2] (sin theta = sin a, cos theta =
// +-cos a), 7 terms each for float (truncation < 1e-9), 12 for double (< 1e-20); small angles
// keep their relative accuracy.
template <typename T, typename V>
inline void sincos_0_pi(V theta, V& s, V& c) {
  // (-1)^k / (2k)! and (-1)^k / (2k + 1)!
  static constexpr double kCos[12] = {1.0, -1.0 / 2, 1.0 / 24, -1.0 / 720, 1.0 / 40320, -1.0 / 3628800, 1.0 / 479001600,
                                      -1.0 / 87178291200.0, 1.0 / 20922789888000.0, -1.0 / 6402373705728000.0,
                                      1.0 / 2432902008176640000.0, -1.0 / 1.1240007277776077e21};
  static constexpr double kSin[12] = {1.0, -1.0 / 6, 1.0 / 120, -1.0 / 5040, 1.0 / 362880, -1.0 / 39916800, 1.0 / 6227020800.0,
                                      -1.0 / 1307674368000.0, 1.0 / 355687428096000.0, -1.0 / 121645100408832000.0,
                                      1.0 / 5.109094217170944e19, -1.0 / 2.585201673888498e22};
  constexpr int n = sizeof(T) == 4 ? 7 : 12;
  const auto upper = theta > T(M_PI / 2);
  const V a = upper ? T(M_PI) - theta : theta, a2 = a * a;
  V cs = V{} + T(kCos[n - 1]), sn = V{} + T(kSin[n - 1]);
  for (int k = n - 2; k >= 0; --k) {
    cs = cs * a2 + T(kCos[k]);
    sn = sn * a2 + T(kSin[k]);
  }
  s = a * sn;
  c = upper ? -cs : cs;
}

// The radial basis' constants: cutoff, envelope exponent and coefficients, prefactor.
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
};

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

// Rows [e0, e1) of the edge geometry (row e - e0 at out + (e - e0) * geometry_width(B)), W edges
// at a time in vector lanes: 1/r (0 beyond the cutoff and for NaN: the rest of the row is then
// meaningless), the unit vector u, the angular components, the radial basis w(r) sin(b theta)
// (b = 1..B, theta = pi r / rc, sin(b theta) by the Chebyshev recurrence) and, when
// with_derivative, its derivative d/dr (else left unset).
template <typename T>
void edge_rows(const T* v, int64_t e0, int64_t e1, const Radial<T>& rad, int64_t B, bool with_derivative, T* out) {
  using V = typename Lanes<T>::V;
  constexpr int W = Lanes<T>::W;
  const int64_t G = geometry_width(B);
  for (int64_t e = e0; e < e1; e += W) {
    const int w = int(std::min<int64_t>(W, e1 - e));
    V vx, vy, vz;
    for (int l = 0; l < W; ++l) {  // lanes past e1: an edge beyond the cutoff, not stored
      const T* ve = v + 3 * (e + std::min(l, w - 1));
      vx[l] = l < w ? ve[0] : T(2) * rad.rc;
      vy[l] = l < w ? ve[1] : T(0);
      vz[l] = l < w ? ve[2] : T(0);
    }
    const V r = lane_sqrt(vx * vx + vy * vy + vz * vz);
    const auto inside = r < rad.rc;  // false for NaN
    const V one = V{} + T(1);
    const V ir = inside ? one / r : V{};
    const V ux = vx * ir, uy = vy * ir, uz = vz * ir;
    const V rs = r > T(1e-6) ? r : V{} + T(1e-6);
    const V x = r * rad.inv_rc;
    V xp1 = one;  // x^(p-1)
    for (int k = 0; k < rad.p - 1; ++k) xp1 *= x;
    const V xp = xp1 * x;
    const V env = one + xp * (rad.c0 + x * (rad.c1 + rad.c2 * x));
    const V irs = one / rs;
    const V amp = rad.pref * env * irs;
    V s1, co1;
    sincos_0_pi<T>(T(M_PI) * rs * rad.inv_rc, s1, co1);
    T* row0 = out + (e - e0) * G;
    auto put = [&](int64_t col, const V& q) {
      for (int l = 0; l < w; ++l) row0[l * G + col] = q[l];
    };
    const T third = T(1.0 / 3.0);
    put(0, ir);
    put(1, ux), put(2, uy), put(3, uz);
    put(4, one), put(5, ux), put(6, uy), put(7, uz);
    put(8, ux * ux - third), put(9, uy * uy - third), put(10, uz * uz - third);
    put(11, ux * uy), put(12, ux * uz), put(13, uy * uz);
    const V two_c = co1 + co1;
    V s_prev = V{}, s = s1;
    if (!with_derivative) {
      for (int64_t b = 0; b < B; ++b) {
        put(4 + kAng + b, amp * s);
        const V s_next = two_c * s - s_prev;
        s_prev = s, s = s_next;
      }
      continue;
    }
    const V denv = xp1 * (T(rad.p) * rad.c0 + x * (T(rad.p + 1) * rad.c1 + T(rad.p + 2) * rad.c2 * x)) * rad.inv_rc;
    const V damp = rad.pref * (denv - env * irs) * irs;
    const V k1 = amp * (T(M_PI) * rad.inv_rc);
    V c_prev = one, c = co1;
    for (int64_t b = 0; b < B; ++b) {
      put(4 + kAng + b, amp * s);
      put(4 + kAng + B + b, damp * s + k1 * T(b + 1) * c);
      const V s_next = two_c * s - s_prev;
      const V c_next = two_c * c - c_prev;
      s_prev = s, s = s_next;
      c_prev = c, c = c_next;
    }
  }
}

// Where the density passes read an edge's geometry row: the precomputed edge_geometry when
// given (shared by several passes), else rows computed here a run of centres at a time (up to
// kRun edges, at least one centre's) into this thread's buffer.
template <typename T>
struct EdgeSource {
  static constexpr int64_t kRun = 256;
  const T* geometry;
  const T* v;
  const int64_t* off;
  const Radial<T>& radial;
  int64_t B, G, end;  // end: one past this thread's last centre
  bool with_derivative;
  std::vector<T> buffer;
  int64_t first = 0, last = 0;  // the buffered edges
  EdgeSource(const T* geometry_, const T* v_, const int64_t* off_, const Radial<T>& radial_, int64_t B_, int64_t end_,
             bool with_derivative_)
      : geometry(geometry_), v(v_), off(off_), radial(radial_), B(B_), G(geometry_width(B_)), end(end_),
        with_derivative(with_derivative_) {}
  // ready for the edges of centre i (centres taken in increasing order)
  inline void centre(int64_t i) {
    if (geometry != nullptr || off[i + 1] <= last) return;
    int64_t j = i + 1;
    while (j < end && off[j + 1] - off[i] <= kRun) ++j;
    first = off[i], last = off[j];
    buffer.resize(size_t((last - first) * G));
    edge_rows(v, first, last, radial, B, with_derivative, buffer.data());
  }
  inline const T* row(int64_t e) const {
    return geometry != nullptr ? geometry + e * G : buffer.data() + (e - first) * G;
  }
};

// What both passes take for edge e from its geometry row: false beyond the cutoff (and for
// NaN); else 1/r, the unit vector, the angular components, the radial basis in w.basis (with
// its derivative in w.dbasis when with_derivative), the neighbour's message z and
// w.t = basis (x) z.
template <typename T>
struct Edge {
  T ir, u[3], ang[kAng];
  const T* z;
  template <int kB, int kD>
  inline bool read(const T* row, const T* m, const int64_t* nb, int64_t e, int64_t B, int64_t D, Scratch<T, kB, kD>& w,
                   bool with_derivative) {
    if (row[0] == T(0)) return false;
    ir = row[0];
    u[0] = row[1], u[1] = row[2], u[2] = row[3];
    for (int l = 0; l < kAng; ++l) ang[l] = row[4 + l];
    for (int64_t b = 0; b < B; ++b) w.basis[b] = row[4 + kAng + b];
    if (with_derivative)
      for (int64_t b = 0; b < B; ++b) w.dbasis[b] = row[4 + kAng + B + b];
    z = m + nb[e] * D;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) w.t[b * D + d] = w.basis[b] * z[d];
    return true;
  }
};

// The frame of the two generic passes (density_kernel, density_backward_kernel): the sizes B and D
// (compile-time constants where kB, kD > 0, once body is inlined), centres in parallel, each
// thread with its work buffers w and its edge rows (with the basis' derivative when
// with_derivative); body(begin, end, B, D, w, rows) for the thread's centres [begin, end).
template <typename T, int kB, int kD, typename Body>
inline void generic_centres(const T* v, const T* geometry, const int64_t* off, int64_t n, int64_t B_rt, int64_t D_rt,
                            double cutoff, int64_t envelope_p, bool with_derivative, const Body& body) {
  const int64_t B = kB > 0 ? kB : B_rt;
  const int64_t D = kD > 0 ? kD : D_rt;
  const Radial<T> radial(cutoff, envelope_p);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    Scratch<T, kB, kD> w(B, D);
    EdgeSource<T> rows(geometry, v, off, radial, B, end, with_derivative);
    body(begin, end, B, D, w, rows);
  });
}

// The edge geometry [E, 4 + 10 + 2B] of every edge, runs of edges in parallel.
template <typename T>
void geometry_kernel(const T* v, int64_t E, int64_t B, double cutoff, int64_t envelope_p, T* out) {
  const Radial<T> radial(cutoff, envelope_p);
  const int64_t G = geometry_width(B);
  at::parallel_for(0, E, 256, [&](int64_t begin, int64_t end) {
    edge_rows(v, begin, end, radial, B, true, out + begin * G);
  });
}

// density_kernel for compile-time sizes with kB a multiple of the lane count: the basis along
// the lanes, one message feature d at a time, so a centre's 10 accumulators (per basis vector)
// stay in registers over its edges: rho[l][., d] += ang_l (scale z_d basis).
template <typename T, int kB, int kD>
void density_lanes(const T* v, const T* geometry, const T* m, const int64_t* nb, const int64_t* off, int64_t n, double cutoff,
                   int64_t envelope_p, double scale, Planes<T> out) {
  using V = typename Lanes<T>::V;
  constexpr int W = Lanes<T>::W;
  constexpr int NB = kB / W;
  constexpr int BD = kB * kD;
  static_assert(kB % W == 0, "density_lanes: the basis must fill whole vectors");
  const Radial<T> radial(cutoff, envelope_p);
  const T sc = T(scale);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    EdgeSource<T> rows(geometry, v, off, radial, kB, end, false);
    for (int64_t i = begin; i < end; ++i) {
      rows.centre(i);
      for (int d = 0; d < kD; ++d) {
        V acc[kAng][NB];
        for (int l = 0; l < kAng; ++l)
          for (int k = 0; k < NB; ++k) acc[l][k] = V{};
        for (int64_t e = off[i]; e < off[i + 1]; ++e) {
          const T* row = rows.row(e);
          if (row[0] == T(0)) continue;  // beyond the cutoff: nothing
          const T zd = m[nb[e] * kD + d] * sc;
          V bz[NB];
          std::memcpy(bz, row + 4 + kAng, sizeof(bz));
          for (int k = 0; k < NB; ++k) bz[k] *= zd;
          for (int l = 0; l < kAng; ++l) {
            const T a = row[4 + l];
            for (int k = 0; k < NB; ++k) acc[l][k] += a * bz[k];
          }
        }
        for (int l = 0; l < kAng; ++l) {
          T* o = out.p[l] + i * BD + d;
          for (int b = 0; b < kB; ++b) o[b * kD] = acc[l][b / W][b % W];
        }
      }
    }
  });
}

// rho[:, i] = scale * sum_e ang_e (x) basis_e (x) m[nbr_e] over centre i's edges (accumulated in
// the thread's buffer, written once), centres in parallel.
template <typename T, int kB, int kD>
void density_kernel(const T* v, const T* geometry, const T* m, const int64_t* nb, const int64_t* off, int64_t n, int64_t B_rt,
                    int64_t D_rt, double cutoff, int64_t envelope_p, double scale, Planes<T> out) {
  if constexpr (kB > 0 && kD > 0 && kB % Lanes<T>::W == 0) {
    density_lanes<T, kB, kD>(v, geometry, m, nb, off, n, cutoff, envelope_p, scale, out);
    return;
  }
  const T sc = T(scale);
  generic_centres<T, kB, kD>(v, geometry, off, n, B_rt, D_rt, cutoff, envelope_p, false,
                             [&](int64_t begin, int64_t end, int64_t B, int64_t D, Scratch<T, kB, kD>& w, EdgeSource<T>& rows) {
    const int64_t BD = B * D;
    T* __restrict__ t = w.t;
    T* __restrict__ acc = w.acc;
    Edge<T> edge;
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t k = 0; k < kAng * BD; ++k) acc[k] = T(0);
      rows.centre(i);
      for (int64_t e = off[i]; e < off[i + 1]; ++e) {
        if (!edge.read(rows.row(e), m, nb, e, B, D, w, false)) continue;  // beyond the cutoff: nothing
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

// dL/dv of one edge from dL/dang (components 1..9; 0 is constant) and dL/dr: the angular part
// through d ang / d u, projected (d u / d v = (I - u u^T) / r), the radial part along u.
template <typename T>
inline void edge_vector_gradient(const T* gang, T gr, T ux, T uy, T uz, T ir, T* gve) {
  const T gux = gang[1] + T(2) * ux * gang[4] + uy * gang[7] + uz * gang[8];
  const T guy = gang[2] + T(2) * uy * gang[5] + ux * gang[7] + uz * gang[9];
  const T guz = gang[3] + T(2) * uz * gang[6] + ux * gang[8] + uy * gang[9];
  const T gu_u = gux * ux + guy * uy + guz * uz;
  gve[0] = (gux - gu_u * ux) * ir + gr * ux;
  gve[1] = (guy - gu_u * uy) * ir + gr * uy;
  gve[2] = (guz - gu_u * uz) * ir + gr * uz;
}

// One folding step of lane_sums: the lanes lo plus the lanes hi of the pair (x, y).
template <typename V, typename M>
inline V fold(const V& x, const V& y, const M& lo, const M& hi) {
  return __builtin_shuffle(x, y, lo) + __builtin_shuffle(x, y, hi);
}

// The lane sums of count vectors: out[k] = sum of the lanes of P[k], W vectors at a time folded
// into one (each step adds the two halves of every group of lanes: W - 1 shuffle pairs and
// additions per W sums instead of W horizontal reductions).
template <typename T>
inline void lane_sums(const typename Lanes<T>::V* P, int count, T* out) {
  using V = typename Lanes<T>::V;
  using M = decltype(V{} < V{});
  constexpr int W = Lanes<T>::W;
  for (int s = 0; s < count; s += W) {
    V x[W];
    for (int k = 0; k < W; ++k) x[k] = s + k < count ? P[s + k] : V{};
    V sum;
    if constexpr (W == 8) {
      const M lo1 = {0, 1, 2, 3, 8, 9, 10, 11}, hi1 = {4, 5, 6, 7, 12, 13, 14, 15};
      const M lo2 = {0, 1, 4, 5, 8, 9, 12, 13}, hi2 = {2, 3, 6, 7, 10, 11, 14, 15};
      const M lo3 = {0, 2, 4, 6, 8, 10, 12, 14}, hi3 = {1, 3, 5, 7, 9, 11, 13, 15};
      const V a0 = fold(x[0], x[1], lo1, hi1), a1 = fold(x[2], x[3], lo1, hi1);
      const V a2 = fold(x[4], x[5], lo1, hi1), a3 = fold(x[6], x[7], lo1, hi1);
      sum = fold(fold(a0, a1, lo2, hi2), fold(a2, a3, lo2, hi2), lo3, hi3);
    } else if constexpr (W == 4) {
      const M lo1 = {0, 1, 4, 5}, hi1 = {2, 3, 6, 7}, lo2 = {0, 2, 4, 6}, hi2 = {1, 3, 5, 7};
      sum = fold(fold(x[0], x[1], lo1, hi1), fold(x[2], x[3], lo1, hi1), lo2, hi2);
    } else {
      static_assert(W == 2, "lane_sums: 2, 4 or 8 lanes");
      const M lo = {0, 2}, hi = {1, 3};
      sum = fold(x[0], x[1], lo, hi);
    }
    for (int k = 0; k < W && s + k < count; ++k) out[s + k] = sum[k];
  }
}

// density_backward_kernel for compile-time sizes with kB a multiple of the lane count: the
// centre's gradient rows reordered d-major ([l][d][b], the basis along the lanes, scale folded
// in), so an edge's basis and its derivative are vectors read straight from its geometry row:
//   gt[d] = sum_l ang_l G[l][d]                (vectors over b)
//   dL/dang_l = sum_d G[l][d] . (basis z_d),   dL/dm_d = basis . gt[d],
//   dL/dr = dbasis . sum_d z_d gt[d]
// each dot product a vector of partial sums, all of an edge's (10 + D) summed by lane_sums.
template <typename T, int kB, int kD>
void density_backward_lanes(Planes<const T> g, const T* v, const T* geometry, const T* m, const int64_t* nb,
                            const int64_t* off, int64_t n, double cutoff, int64_t envelope_p, double scale, T* gv, T* gm,
                            const CentreSide<T>& side) {
  using V = typename Lanes<T>::V;
  constexpr int W = Lanes<T>::W;
  constexpr int NB = kB / W;  // vectors per basis row
  constexpr int BD = kB * kD;
  constexpr int NR = kAng + kD;  // sums per edge: dL/dr, dL/dang_1..9, dL/dm_0..D-1
  static_assert(kB % W == 0, "density_backward_lanes: the basis must fill whole vectors");
  const Radial<T> radial(cutoff, envelope_p);
  const T sc = T(scale);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    EdgeSource<T> rows(geometry, v, off, radial, kB, end, true);
    CentreSums<T> sums(side);
    V G[kAng * kD * NB];  // this centre's sc * G[l][b * D + d] at [l][d][b] (at most 20 KB)
    V P[NR];
    T red[NR];
    for (int64_t i = begin; i < end; ++i) {
      if (off[i] == off[i + 1]) continue;
      for (int l = 0; l < kAng; ++l) {
        const T* gl = g.p[l] + i * BD;
        for (int d = 0; d < kD; ++d)
          for (int b = 0; b < kB; ++b) G[(l * kD + d) * NB + b / W][b % W] = sc * gl[b * kD + d];
      }
      rows.centre(i);
      if (sums.on()) sums.start();
      for (int64_t e = off[i]; e < off[i + 1]; ++e) {
        const T* row = rows.row(e);
        if (row[0] == T(0)) continue;  // beyond the cutoff: gv stays zero
        const T ir = row[0], ux = row[1], uy = row[2], uz = row[3];
        const T* ang = row + 4;
        V basis[NB], dbasis[NB], q[NB];
        std::memcpy(basis, row + 4 + kAng, sizeof(basis));
        std::memcpy(dbasis, row + 4 + kAng + kB, sizeof(dbasis));
        const T* z = m + nb[e] * kD;
        for (int k = 0; k < NB; ++k) q[k] = V{};
        for (int l = 1; l < kAng; ++l) P[l] = V{};
        for (int d = 0; d < kD; ++d) {
          const V* Gd = G + d * NB;  // G[l][d] at Gd + l * kD * NB
          V gt[NB], t[NB];
          for (int k = 0; k < NB; ++k) {
            gt[k] = ang[0] * Gd[k];
            t[k] = basis[k] * z[d];
          }
          for (int l = 1; l < kAng; ++l) {
            const V* Gld = Gd + l * kD * NB;
            for (int k = 0; k < NB; ++k) {
              gt[k] += ang[l] * Gld[k];
              P[l] += Gld[k] * t[k];
            }
          }
          V pm = basis[0] * gt[0];
          for (int k = 1; k < NB; ++k) pm += basis[k] * gt[k];
          P[kAng + d] = pm;
          for (int k = 0; k < NB; ++k) q[k] += z[d] * gt[k];
        }
        P[0] = dbasis[0] * q[0];
        for (int k = 1; k < NB; ++k) P[0] += dbasis[k] * q[k];
        lane_sums<T>(P, gm != nullptr ? NR : kAng, red);
        const T gr = red[0];
        const T* gang = red;  // dL/dang_l at l = 1..9
        if (gm != nullptr)
          for (int d = 0; d < kD; ++d) gm[e * kD + d] = red[kAng + d];
        edge_vector_gradient(gang, gr, ux, uy, uz, ir, gv + 3 * e);
        if (sums.on()) sums.edge(v + 3 * e, gv + 3 * e);
      }
      if (sums.on()) sums.finish(side.center[off[i]]);
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
                             int64_t B_rt, int64_t D_rt, double cutoff, int64_t envelope_p, double scale, T* gv, T* gm,
                             const CentreSide<T>& side) {
  if constexpr (kB > 0 && kD > 0 && kB % Lanes<T>::W == 0 && kB * kD > 16) {  // short rows: below
    density_backward_lanes<T, kB, kD>(g, v, geometry, m, nb, off, n, cutoff, envelope_p, scale, gv, gm, side);
    return;
  }
  const T sc = T(scale);
  generic_centres<T, kB, kD>(v, geometry, off, n, B_rt, D_rt, cutoff, envelope_p, true,
                             [&](int64_t begin, int64_t end, int64_t B, int64_t D, Scratch<T, kB, kD>& w, EdgeSource<T>& rows) {
    const int64_t BD = B * D;
    T* __restrict__ t = w.t;
    T* __restrict__ gt = w.gt;
    T* __restrict__ G = w.acc;    // this centre's gradient rows [10, BD], contiguous
    T* __restrict__ GT = w.gtr;   // and transposed [BD, 16] (lanes 10..15 zero)
    CentreSums<T> sums(side);
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
      rows.centre(i);
      if (sums.on()) sums.start();
      for (int64_t e = off[i]; e < off[i + 1]; ++e) {
        if (!edge.read(rows.row(e), m, nb, e, B, D, w, true)) continue;  // gv stays zero
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
        edge_vector_gradient(gang, gr, ux, uy, uz, ir, gv + 3 * e);
        if (sums.on()) sums.edge(v + 3 * e, gv + 3 * e);
      }
      if (sums.on()) sums.finish(side.center[off[i]]);
    }
  });
}


}  // namespace MLFFD_ISA
