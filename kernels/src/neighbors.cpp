// mlffd_kernels::neighbor_lists (operator set 3): full neighbour lists of many small structures
// in one call, by testing every pair (i, j) of a structure against only the periodic images
// that can lie within the cutoff. SPDX-License-Identifier: MIT
//
// For a pair with fractional separation f = frac_j - frac_i and an image shift m (integers
// along periodic directions), r = x_j - x_i + m @ cell satisfies |f_k + m_k| <= |r| |b_k| with
// b_k the k-th reciprocal vector (row k of inv(cell)^T), so only m_k in
// [-rc |b_k| - f_k, rc |b_k| - f_k] can give |r| < rc: one or two images per pair for cells wider
// than 2 rc, however skewed, and every image for cells smaller than the cutoff. The cost is
// O(N^2) per structure: what vesin's cell lists cost at a few hundred atoms, and without its
// fixed per-call overhead, which dominates the 64-atom cells of a batch. mlffd uses it up to
// mlffd.neighbors.SMALL_SYSTEM atoms per structure and vesin above.
//
// Output, edges grouped by centre (ascending i, then j, then image), indices global (structure
// offsets added): edge_index int64 [2, E], shift_cells int32 [E, 3].
//
// Structures outside the geometry limits of mlffd/contract.json are a ValueError before any list
// is built (coordinates, periodic images to visit and pair-image tests, neighbours per atom
// estimated from the density), or, where no estimate applies (cells periodic along one or two
// directions), as soon as an atom's neighbours exceed the limit: the work and memory of one call
// stay bounded.

#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "mlffd_contract.h"  // generated from mlffd/contract.json (CMakeLists.txt)

namespace {

using Vec3 = std::array<double, 3>;
namespace limits = mlffd_contract;

// Fractional coordinates stay below this, so that every shift (their differences plus at most
// max_periodic_images cells) fits the int32 of shift_cells.
constexpr double kMaxFraction = double(1 << 29);
// Most pair-image distance tests (atoms^2 x images) of one structure's search when its cell has
// more than the 27 images of a cell wider than the cutoff: ~1e9, a few seconds on one core. A
// compact cell within the density limit needs far fewer (there atoms x images is about twice the
// neighbours per atom); a skewed one (a long cell vector nearly along another) can need 1e6 per pair.
constexpr double kMaxPairImageTests = double(limits::kMaxPeriodicImages) * double(limits::kMaxNeighborsPerAtom);

Vec3 cross(const Vec3& a, const Vec3& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
double dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
double norm(const Vec3& a) { return std::sqrt(dot(a, a)); }
Vec3 scaled(const Vec3& a, double s) { return {a[0] * s, a[1] * s, a[2] * s}; }

// floor without libm's call (the baseline x86-64 build has no SSE4.1 rounding instruction)
inline int64_t ifloor(double v) {
  const int64_t t = int64_t(v);
  return t - (v < double(t));
}

struct Edge {
  int32_t i, j, m[3];
};

// One structure's lattice: the cell rows along periodic directions, completed to a basis by unit
// vectors orthogonal to them (the cell rows of non-periodic directions may be anything, zero too),
// and the reach rc |b_k| of each periodic direction in fractional units.
struct Lattice {
  Vec3 rows[3];
  Vec3 inverse_cols[3];  // rows of inv(basis)^T: frac_k = dot(x, inverse_cols[k])
  double reach[3];
  bool periodic[3];
  double images;  // periodic images a pair search may visit: prod over periodic k of 2 ceil(rc |b_k|) + 1
  double volume;  // |det| of the completed basis (the cell's volume when periodic along all three)
  // at least twice the cutoff wide along every periodic direction: one candidate image per pair
  bool wide() const { return reach[0] < 0.5 && reach[1] < 0.5 && reach[2] < 0.5; }
};

Lattice make_lattice(const double* cell, const bool* pbc, double cutoff, int64_t s) {
  Lattice L{};
  std::vector<int> per, open;
  for (int k = 0; k < 3; ++k) {
    L.rows[k] = {cell[3 * k], cell[3 * k + 1], cell[3 * k + 2]};
    L.periodic[k] = pbc[k];
    (pbc[k] ? per : open).push_back(k);
  }
  for (int k : per)
    TORCH_CHECK(norm(L.rows[k]) > 0, "neighbor_lists: structure ", s, " is periodic along cell vector ", k,
                ", which is zero; give a cell vector there or set pbc False along it");
  if (per.size() == 0) {
    L.rows[0] = {1, 0, 0}, L.rows[1] = {0, 1, 0}, L.rows[2] = {0, 0, 1};
  } else if (per.size() == 1) {
    const Vec3 a = scaled(L.rows[per[0]], 1 / norm(L.rows[per[0]]));
    const Vec3 t = std::fabs(a[0]) < 0.9 ? Vec3{1, 0, 0} : Vec3{0, 1, 0};
    const Vec3 u = cross(a, t);
    L.rows[open[0]] = scaled(u, 1 / norm(u));
    L.rows[open[1]] = cross(a, L.rows[open[0]]);
  } else if (per.size() == 2) {
    const Vec3 c = cross(L.rows[per[0]], L.rows[per[1]]);
    const double n = norm(c);
    TORCH_CHECK(n > 1e-12 * norm(L.rows[per[0]]) * norm(L.rows[per[1]]), "neighbor_lists: structure ", s,
                " has parallel periodic cell vectors ", per[0], " and ", per[1]);
    L.rows[open[0]] = scaled(c, 1 / n);
  }
  const Vec3 c01 = cross(L.rows[1], L.rows[2]), c12 = cross(L.rows[2], L.rows[0]), c20 = cross(L.rows[0], L.rows[1]);
  const double det = dot(L.rows[0], c01);
  TORCH_CHECK(std::fabs(det) > 1e-12 * norm(L.rows[0]) * norm(L.rows[1]) * norm(L.rows[2]), "neighbor_lists: structure ", s,
              " has a singular cell (its periodic cell vectors are linearly dependent)");
  L.inverse_cols[0] = scaled(c01, 1 / det), L.inverse_cols[1] = scaled(c12, 1 / det), L.inverse_cols[2] = scaled(c20, 1 / det);
  L.images = 1;
  for (int k = 0; k < 3; ++k) {
    L.reach[k] = pbc[k] ? cutoff * norm(L.inverse_cols[k]) * (1 + 1e-9) + 1e-12 : 0.0;
    if (pbc[k]) L.images *= 2 * std::ceil(cutoff * norm(L.inverse_cols[k])) + 1;
  }
  L.volume = std::fabs(det);
  return L;
}

// Where a structure's search stopped: an atom with more neighbours than the limit (the list is
// then incomplete and the call an error).
struct Overflow {
  int64_t atom = -1;
  int64_t count = 0;
};

// Cells at least twice the cutoff wide along every periodic direction (reach < 1/2): the window
// [-reach - f, reach - f] holds at most one integer, the rounded -f, so each pair has at most
// one candidate image and the loop over j is straight-line code.
void wide_cell_edges(const double* x, const std::vector<Vec3>& frac, int64_t n, const Lattice& L, double rc2,
                     std::vector<Edge>& out, Overflow& overflow) {
  std::vector<double> r2(n);
  std::vector<int32_t> m(3 * n);
  for (int64_t i = 0; i < n; ++i) {
    const double* xi = x + 3 * i;
    for (int64_t j = 0; j < n; ++j) {
      int32_t mk[3];
      for (int k = 0; k < 3; ++k) mk[k] = L.periodic[k] ? int32_t(-ifloor(frac[j][k] - frac[i][k] + 0.5)) : 0;
      double d2 = 0;
      for (int k = 0; k < 3; ++k) {
        const double dk = x[3 * j + k] - xi[k] + mk[0] * L.rows[0][k] + mk[1] * L.rows[1][k] + mk[2] * L.rows[2][k];
        d2 += dk * dk;
      }
      r2[j] = d2;
      m[3 * j] = mk[0], m[3 * j + 1] = mk[1], m[3 * j + 2] = mk[2];
    }
    const size_t first = out.size();
    for (int64_t j = 0; j < n; ++j)
      if (r2[j] < rc2 && (j != i || m[3 * j] != 0 || m[3 * j + 1] != 0 || m[3 * j + 2] != 0))
        out.push_back({int32_t(i), int32_t(j), {m[3 * j], m[3 * j + 1], m[3 * j + 2]}});
    if (int64_t(out.size() - first) > limits::kMaxNeighborsPerAtom) {
      overflow = {i, int64_t(out.size() - first)};
      return;
    }
  }
}

// Checks one structure (n atoms at x, its lattice) against the geometry limits before its pair
// search; s names it in errors. Its fractional coordinates are returned in frac.
void check_structure(const double* x, int64_t n, const Lattice& L, double cutoff, int64_t s, std::vector<Vec3>& frac) {
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 3; ++k) {
      const double v = x[3 * i + k];
      TORCH_CHECK_VALUE(std::isfinite(v), "neighbor_lists: structure ", s, ": position of atom ", i,
                        " is not finite (coordinate ", k, " is ", v, ")");
      TORCH_CHECK_VALUE(std::fabs(v) <= limits::kMaxAbsCoordinateA, "neighbor_lists: structure ", s, " atom ", i,
                        " coordinate ", v, " Å exceeds the limit |x| <= ", limits::kMaxAbsCoordinateA,
                        " Å (mlffd/contract.json geometry.max_abs_coordinate_A)");
    }
  if (n == 0) return;
  int thin = -1;  // the periodic direction of the smallest cell height 1 / |b_k|
  for (int k = 0; k < 3; ++k)
    if (L.periodic[k] && (thin < 0 || norm(L.inverse_cols[k]) > norm(L.inverse_cols[thin]))) thin = k;
  TORCH_CHECK_VALUE(L.images <= double(limits::kMaxPeriodicImages), "neighbor_lists: structure ", s,
                    ": a pair search within ", cutoff, " Å would visit ", L.images, " periodic images (cell height ",
                    1 / norm(L.inverse_cols[thin]), " Å along cell vector ", thin, "), over the limit ",
                    limits::kMaxPeriodicImages, " (mlffd/contract.json geometry.max_periodic_images)");
  const double tests = double(n) * double(n) * L.images;
  TORCH_CHECK_VALUE(L.images <= 27 || tests <= kMaxPairImageTests, "neighbor_lists: structure ", s, ": ", n, " atoms x ",
                    L.images, " periodic images = ", tests, " pair tests within ", cutoff, " Å, over the limit ",
                    kMaxPairImageTests, " (mlffd/contract.json geometry.max_periodic_images x max_neighbors_per_atom); "
                    "reduce the cell (ase.build.niggli_reduce) or use vesin (mlffd.neighbors)");
  if (L.periodic[0] && L.periodic[1] && L.periodic[2]) {
    const double per_atom = double(n) / L.volume * 4.0 / 3.0 * M_PI * cutoff * cutoff * cutoff;
    TORCH_CHECK_VALUE(per_atom <= double(limits::kMaxNeighborsPerAtom), "neighbor_lists: structure ", s, ": ", n,
                      " atoms in a cell of ", L.volume, " Å^3 give ~", per_atom, " neighbours per atom within ", cutoff,
                      " Å, over the limit ", limits::kMaxNeighborsPerAtom,
                      " (mlffd/contract.json geometry.max_neighbors_per_atom)");
    TORCH_CHECK_VALUE(per_atom * double(n) <= double(limits::kMaxEdges), "neighbor_lists: structure ", s, ": ~",
                      per_atom * double(n), " edges expected within ", cutoff, " Å, over the limit ", limits::kMaxEdges,
                      " (mlffd/contract.json geometry.max_edges)");
  }
  frac.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const Vec3 p = {x[3 * i], x[3 * i + 1], x[3 * i + 2]};
    for (int k = 0; k < 3; ++k) {
      frac[i][k] = dot(p, L.inverse_cols[k]);
      TORCH_CHECK_VALUE(!L.periodic[k] || std::fabs(frac[i][k]) < kMaxFraction, "neighbor_lists: structure ", s,
                        " atom ", i, " lies ", frac[i][k], " cells from the origin along cell vector ", k,
                        "; shift_cells (int32) need |fractional coordinate| < ", kMaxFraction,
                        ": wrap the positions into the cell");
    }
  }
}

void structure_edges(const double* x, const std::vector<Vec3>& frac, int64_t n, const Lattice& L, double cutoff,
                     std::vector<Edge>& out, Overflow& overflow) {
  const double rc2 = cutoff * cutoff;
  out.reserve(out.size() + 32 * n);
  if (L.wide()) return wide_cell_edges(x, frac, n, L, rc2, out, overflow);
  int64_t lo[3], hi[3];
  for (int64_t i = 0; i < n; ++i) {
    const size_t first = out.size();
    const double* xi = x + 3 * i;
    for (int64_t j = 0; j < n; ++j) {
      bool any = true;
      for (int k = 0; k < 3; ++k) {
        if (L.periodic[k]) {
          const double f = frac[j][k] - frac[i][k];
          lo[k] = -ifloor(L.reach[k] + f);  // ceil(-reach - f)
          hi[k] = ifloor(L.reach[k] - f);
          any = any && lo[k] <= hi[k];
        } else {
          lo[k] = hi[k] = 0;
        }
      }
      if (!any) continue;
      const double* xj = x + 3 * j;
      const Vec3 d0 = {xj[0] - xi[0], xj[1] - xi[1], xj[2] - xi[2]};
      for (int64_t a = lo[0]; a <= hi[0]; ++a)
        for (int64_t b = lo[1]; b <= hi[1]; ++b)
          for (int64_t c = lo[2]; c <= hi[2]; ++c) {
            if (i == j && a == 0 && b == 0 && c == 0) continue;
            double r2 = 0;
            for (int k = 0; k < 3; ++k) {
              const double dk = d0[k] + a * L.rows[0][k] + b * L.rows[1][k] + c * L.rows[2][k];
              r2 += dk * dk;
            }
            if (r2 < rc2) out.push_back({int32_t(i), int32_t(j), {int32_t(a), int32_t(b), int32_t(c)}});
          }
      // one pair adds at most max_periodic_images edges: memory stays bounded
      if (int64_t(out.size() - first) > limits::kMaxNeighborsPerAtom) {
        overflow = {i, int64_t(out.size() - first)};
        return;
      }
    }
  }
}

std::vector<at::Tensor> neighbor_lists_cpu(const at::Tensor& positions_in, const at::Tensor& cells_in, const at::Tensor& pbc_in,
                                           const at::Tensor& counts_in, double cutoff) {
  TORCH_CHECK(positions_in.device().is_cpu() && positions_in.dim() == 2 && positions_in.size(1) == 3 &&
                  positions_in.scalar_type() == at::kDouble,
              "neighbor_lists: positions must be CPU float64 [N, 3], got ", positions_in.sizes(), " ", positions_in.scalar_type());
  const int64_t S = counts_in.numel();
  TORCH_CHECK(counts_in.device().is_cpu() && counts_in.dim() == 1 && counts_in.scalar_type() == at::kLong,
              "neighbor_lists: counts must be CPU int64 [S], got ", counts_in.sizes(), " ", counts_in.scalar_type());
  TORCH_CHECK(cells_in.device().is_cpu() && cells_in.scalar_type() == at::kDouble && cells_in.dim() == 3 && cells_in.size(0) == S &&
                  cells_in.size(1) == 3 && cells_in.size(2) == 3,
              "neighbor_lists: cells must be CPU float64 [S, 3, 3] with S = ", S, " structures, got ", cells_in.sizes(), " ",
              cells_in.scalar_type());
  TORCH_CHECK(pbc_in.device().is_cpu() && pbc_in.scalar_type() == at::kBool && pbc_in.dim() == 2 && pbc_in.size(0) == S &&
                  pbc_in.size(1) == 3,
              "neighbor_lists: pbc must be CPU bool [S, 3], got ", pbc_in.sizes(), " ", pbc_in.scalar_type());
  TORCH_CHECK_VALUE(std::isfinite(cutoff) && cutoff > 0, "neighbor_lists: cutoff must be positive and finite (Å), got ",
                    cutoff);
  const auto positions = positions_in.contiguous();
  const auto cells = cells_in.contiguous();
  const auto pbc = pbc_in.contiguous();
  const auto counts = counts_in.contiguous();
  const int64_t* cnt = counts.data_ptr<int64_t>();
  std::vector<int64_t> start(S + 1, 0);
  for (int64_t s = 0; s < S; ++s) {
    TORCH_CHECK(cnt[s] >= 0 && cnt[s] <= INT32_MAX, "neighbor_lists: structure ", s, " has ", cnt[s], " atoms");
    start[s + 1] = start[s] + cnt[s];
  }
  TORCH_CHECK(start[S] == positions.size(0), "neighbor_lists: counts add up to ", start[S], " atoms, positions have ",
              positions.size(0));
  const double* x = positions.data_ptr<double>();
  const double* cell = cells.data_ptr<double>();
  for (int64_t e = 0; e < 9 * S; ++e)
    TORCH_CHECK_VALUE(std::isfinite(cell[e]), "neighbor_lists: structure ", e / 9, " cell entry [", e % 9 / 3, ", ",
                      e % 3, "] is ", cell[e], "; expected finite cell vectors (Å)");
  std::vector<Lattice> lattices;
  lattices.reserve(S);
  std::vector<std::vector<Vec3>> frac(S);
  for (int64_t s = 0; s < S; ++s) {
    lattices.push_back(make_lattice(cell + 9 * s, pbc.data_ptr<bool>() + 3 * s, cutoff, s));
    check_structure(x + 3 * start[s], cnt[s], lattices[s], cutoff, s, frac[s]);
  }

  std::vector<std::vector<Edge>> found(S);
  std::vector<Overflow> overflow(S);
  at::parallel_for(0, S, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      structure_edges(x + 3 * start[s], frac[s], cnt[s], lattices[s], cutoff, found[s], overflow[s]);
      frac[s] = {};
    }
  });
  for (int64_t s = 0; s < S; ++s) {
    TORCH_CHECK_VALUE(overflow[s].atom < 0, "neighbor_lists: structure ", s, " atom ", overflow[s].atom, " has at least ",
                      overflow[s].count, " neighbours within ", cutoff, " Å, over the limit ",
                      limits::kMaxNeighborsPerAtom, " (mlffd/contract.json geometry.max_neighbors_per_atom)");
    TORCH_CHECK_VALUE(int64_t(found[s].size()) <= limits::kMaxEdges, "neighbor_lists: structure ", s, " has ",
                      found[s].size(), " edges within ", cutoff, " Å, over the limit ", limits::kMaxEdges,
                      " (mlffd/contract.json geometry.max_edges)");
  }
  std::vector<int64_t> first(S + 1, 0);
  for (int64_t s = 0; s < S; ++s) first[s + 1] = first[s] + int64_t(found[s].size());
  const int64_t E = first[S];
  auto index = at::empty({2, E}, counts.options());
  auto shift_cells = at::empty({E, 3}, counts.options().dtype(at::kInt));
  int64_t* ii = index.data_ptr<int64_t>();
  int32_t* sc = shift_cells.data_ptr<int32_t>();
  at::parallel_for(0, S, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      int64_t e = first[s];
      for (const Edge& edge : found[s]) {
        ii[e] = start[s] + edge.i;
        ii[E + e] = start[s] + edge.j;
        sc[3 * e] = edge.m[0], sc[3 * e + 1] = edge.m[1], sc[3 * e + 2] = edge.m[2];
        ++e;
      }
    }
  });
  return {index, shift_cells};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mlffd_kernels, m) {
  m.def("neighbor_lists(Tensor positions, Tensor cells, Tensor pbc, Tensor counts, float cutoff) -> Tensor[]",
        &neighbor_lists_cpu);
}
