// mlffd_kernels: the fused CPU kernels of mlffd students (PyTorch operators).
//
// moment_density: the per-edge part of an mlffd interaction layer, fused.
// SPDX-License-Identifier: MIT
//
// For every centre atom i (edges sorted by centre, centre i owning edges offsets[i]:offsets[i+1])
//
//     rho[l, i, b*D + d] = scale * sum_e Y_l(u_e) R_b(r_e) m[nbr_e, d]
//
// returned by rank, component-major: rho[0] [N, BD], rho[1:4] [3, N, BD], rho[4:10] [6, N, BD]
//
// with Y = (1, u, traceless u u^T as xx yy zz xy xz yz), R_b = sqrt(2/rc) env(r/rc) sin(b pi r/rc) / r
// (b = 1..B, the polynomial envelope of DimeNet/NequIP), m the neighbours' messages. The
// PyTorch reference is mlffd.models.layers (Interaction.density and RadialBasis); this file
// computes the same numbers without materialising any per-edge x basis x channel tensor, and
// its backward gives dE/dr_e and dE/dm analytically (first derivatives only: evaluation, not
// training). sin(b theta) and cos(b theta) come from the Chebyshev recurrence (one sin and one
// cos per edge).

#include <torch/library.h>
#include <torch/autograd.h>
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>

#include "mlffd_contract.h"  // generated from mlffd/contract.json (CMakeLists.txt)

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

constexpr int kAng = 10;

// Numbers per edge of an edge geometry (edge_geometry): 1/r, u (3), angular components, radial
// basis and its derivative.
inline int64_t geometry_width(int64_t B) { return 4 + kAng + 2 * B; }

// The 10 angular planes of a density split by rank: l = 0 in rank0 [N, BD], l = 1..3 in
// rank1 [3, N, BD], l = 4..9 in rank2 [6, N, BD]; row i of plane l starts at p[l] + i * BD.
template <typename T>
struct Planes {
  T* p[kAng];
  Planes(T* rank0, T* rank1, T* rank2, int64_t n, int64_t BD) {
    p[0] = rank0;
    for (int l = 1; l < 4; ++l) p[l] = rank1 + (l - 1) * n * BD;
    for (int l = 4; l < kAng; ++l) p[l] = rank2 + (l - 4) * n * BD;
  }
};

// The centre side of the edge-gradient sums (moment_density_backward_into), added by the thread
// that owns the centre while its edges are differentiated: each edge's gradient g on the
// centre's force row (+g) and per-atom virial (+w / 2, w_ab = -v_a g_b), the virial (+w). The
// neighbour side (-g, +w / 2 on the neighbour's rows) follows in one serial pass
// (add_edge_gradients_impl). Empty (forces == nullptr): gradients only.
template <typename T>
struct CentreSide {
  T* forces = nullptr;              // [N, 3]
  T* atom_virial = nullptr;         // [N, 9]
  const int64_t* center = nullptr;  // [E] each edge's centre row
  double* virial = nullptr;         // [9], threads add their sums under lock
  std::mutex* lock = nullptr;
};

// One thread's running sums for CentreSide: a centre's force and virial while its edges run,
// the virial of all its centres (added once, when the thread is done).
template <typename T>
struct CentreSums {
  const CentreSide<T>& side;
  T f[3], w[9];
  double total[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  explicit CentreSums(const CentreSide<T>& side_) : side(side_) {}
  bool on() const { return side.forces != nullptr; }
  void start() {
    for (int a = 0; a < 3; ++a) f[a] = T(0);
    for (int k = 0; k < 9; ++k) w[k] = T(0);
  }
  void edge(const T* ve, const T* ge) {
    for (int a = 0; a < 3; ++a) {
      f[a] += ge[a];
      for (int b = 0; b < 3; ++b) w[3 * a + b] -= ve[a] * ge[b];
    }
  }
  void finish(int64_t row) {  // the centre's row: side.center[any of its edges]
    T* fi = side.forces + 3 * row;
    T* avi = side.atom_virial + 9 * row;
    for (int a = 0; a < 3; ++a) fi[a] += f[a];
    for (int k = 0; k < 9; ++k) {
      avi[k] += T(0.5) * w[k];
      total[k] += double(w[k]);
    }
  }
  ~CentreSums() {
    if (!on()) return;
    std::lock_guard<std::mutex> guard(*side.lock);
    for (int k = 0; k < 9; ++k) side.virial[k] += total[k];
  }
};

// The density kernels, compiled twice: baseline and AVX2 + FMA (the same source; the loops over
// B * D vectorise twice as wide with AVX2, so one binary uses them where the CPU has them).
#define MLFFD_ISA isa_base
#define MLFFD_ISA_AVX2 0
#include "density.h"
#undef MLFFD_ISA_AVX2
#undef MLFFD_ISA
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define MLFFD_ISA isa_avx2
#define MLFFD_ISA_AVX2 1
#include "density.h"
#undef MLFFD_ISA_AVX2
#undef MLFFD_ISA
#pragma GCC pop_options
#define MLFFD_HAVE_AVX2 1
#endif

// AVX2 + FMA when the CPU has them, unless MLFFD_KERNELS_ISA=base (read once; for tests)
bool use_avx2() {
#ifdef MLFFD_HAVE_AVX2
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         !(std::getenv("MLFFD_KERNELS_ISA") && std::string(std::getenv("MLFFD_KERNELS_ISA")) == "base");
  return ok;
#else
  return false;
#endif
}

// Calls KERNEL<T, B, D> with compile-time sizes for the shipped shapes (8 Bessel functions,
// messages of 1..32 features), the runtime-size instance otherwise.
#define MLFFD_SIZE_DISPATCH_ISA(NS, KERNEL, T, B, D, ...)                          \
  do {                                                                             \
    if ((B) == 8 && (D) == 1) NS::KERNEL<T, 8, 1>(__VA_ARGS__);                    \
    else if ((B) == 8 && (D) == 2) NS::KERNEL<T, 8, 2>(__VA_ARGS__);               \
    else if ((B) == 8 && (D) == 4) NS::KERNEL<T, 8, 4>(__VA_ARGS__);               \
    else if ((B) == 8 && (D) == 8) NS::KERNEL<T, 8, 8>(__VA_ARGS__);               \
    else if ((B) == 8 && (D) == 16) NS::KERNEL<T, 8, 16>(__VA_ARGS__);             \
    else if ((B) == 8 && (D) == 32) NS::KERNEL<T, 8, 32>(__VA_ARGS__);             \
    else NS::KERNEL<T, 0, 0>(__VA_ARGS__);                                         \
  } while (0)
#ifdef MLFFD_HAVE_AVX2
#define MLFFD_SIZE_DISPATCH(KERNEL, T, B, D, ...)                                    \
  do {                                                                             \
    if (use_avx2()) MLFFD_SIZE_DISPATCH_ISA(isa_avx2, KERNEL, T, B, D, __VA_ARGS__); \
    else MLFFD_SIZE_DISPATCH_ISA(isa_base, KERNEL, T, B, D, __VA_ARGS__);            \
  } while (0)
#else
#define MLFFD_SIZE_DISPATCH(KERNEL, T, B, D, ...) MLFFD_SIZE_DISPATCH_ISA(isa_base, KERNEL, T, B, D, __VA_ARGS__)
#endif

// Whether every index idx[0..count) lies in 0..n-1 (one branch-free pass; the kernels check the
// indices they dereference instead of crashing).
inline bool all_in_range(const int64_t* idx, int64_t count, int64_t n) {
  bool ok = true;
  for (int64_t e = 0; e < count; ++e) ok &= (idx[e] >= 0) & (idx[e] < n);
  return ok;
}

// The radial basis' parameters (every operator that evaluates it): the kernels divide by the
// cutoff, size their buffers by num_basis and raise r / rc to the power envelope_p by p - 1
// multiplications (p < 1 is not that polynomial). The bounds lie far beyond any useful basis.
constexpr int64_t kMaxNumBasis = 1024;
constexpr int64_t kMaxEnvelopeP = 64;

void check_radial(const char* op, double cutoff, int64_t num_basis, int64_t envelope_p) {
  TORCH_CHECK_VALUE(std::isfinite(cutoff) && cutoff > 0, op, ": cutoff ", cutoff,
                    " Å: expected a finite positive number");
  TORCH_CHECK_VALUE(num_basis >= 1 && num_basis <= kMaxNumBasis, op, ": num_basis ", num_basis, ": expected 1..",
                    kMaxNumBasis);
  TORCH_CHECK_VALUE(envelope_p >= 1 && envelope_p <= kMaxEnvelopeP, op, ": envelope_p ", envelope_p, ": expected 1..",
                    kMaxEnvelopeP);
}

// The density operators' inputs, checked and contiguous, with their sizes (n centres, B basis
// functions, D message features); op names the operator in errors.
struct DensityInputs {
  at::Tensor vectors, messages, neighbor, offsets;
  int64_t n, B, D, BD;

  DensityInputs(const char* op, const at::Tensor& vectors_in, const at::Tensor& messages_in, const at::Tensor& neighbor_in,
                const at::Tensor& offsets_in, double cutoff, int64_t num_basis, int64_t envelope_p, double scale) {
    TORCH_CHECK(vectors_in.device().is_cpu(), "mlffd_kernels::", op, " runs on the CPU; got vectors on ",
                vectors_in.device());
    TORCH_CHECK(vectors_in.dim() == 2 && vectors_in.size(1) == 3, op, ": vectors must be [E, 3], got ",
                vectors_in.sizes());
    TORCH_CHECK(messages_in.dim() == 2, op, ": messages must be [N, D], got ", messages_in.sizes());
    TORCH_CHECK(messages_in.scalar_type() == vectors_in.scalar_type(), op, ": messages dtype ",
                messages_in.scalar_type(), " differs from vectors dtype ", vectors_in.scalar_type());
    TORCH_CHECK(neighbor_in.dim() == 1 && neighbor_in.size(0) == vectors_in.size(0) &&
                    neighbor_in.scalar_type() == at::kLong,
                op, ": neighbor must be int64 [E] like vectors; got ", neighbor_in.sizes(), " ",
                neighbor_in.scalar_type());
    TORCH_CHECK(offsets_in.dim() == 1 && offsets_in.size(0) >= 1 && offsets_in.scalar_type() == at::kLong,
                op, ": offsets must be int64 [N + 1]; got ", offsets_in.sizes(), " ", offsets_in.scalar_type());
    check_radial(op, cutoff, num_basis, envelope_p);
    TORCH_CHECK_VALUE(std::isfinite(scale), op, ": scale ", scale, ": expected a finite number");
    vectors = vectors_in.contiguous();
    messages = messages_in.contiguous();
    neighbor = neighbor_in.contiguous();
    offsets = offsets_in.contiguous();
    n = offsets.size(0) - 1;
    B = num_basis;
    D = messages.size(1);
    BD = B * D;
    // the kernels index with these: check them (one cheap pass) instead of crashing
    const int64_t* o = offsets.data_ptr<int64_t>();
    const int64_t n_edges = vectors.size(0);
    TORCH_CHECK(o[0] == 0 && o[n] == n_edges, op, ": offsets must run from 0 to the edge count ", n_edges,
                ", got ", o[0], " .. ", o[n]);
    for (int64_t i = 0; i < n; ++i)
      TORCH_CHECK(o[i] <= o[i + 1], op, ": offsets must not decrease (edges sorted by centre); offsets[", i,
                  "] = ", o[i], " > offsets[", i + 1, "] = ", o[i + 1]);
    const int64_t* j = neighbor.data_ptr<int64_t>();
    const int64_t n_msg = messages.size(0);
    TORCH_CHECK(all_in_range(j, n_edges, n_msg), op, ": neighbor indices must lie in 0..", n_msg - 1,
                " (rows of messages)");
  }
};

// out[index[e]] += rows[e] for every edge e (rows [E, D], out [N, D], both contiguous, index checked
// by the caller): one serial pass (rows of different edges may share a target; for rows this
// short, index_add_'s per-row dispatch costs more than the additions).
void add_rows(at::Tensor& out, const at::Tensor& rows, const at::Tensor& index) {
  const int64_t E = rows.size(0), D = rows.size(1);
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "add_rows", [&] {
    const scalar_t* r = rows.data_ptr<scalar_t>();
    const int64_t* idx = index.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t e = 0; e < E; ++e) {
      scalar_t* oj = o + idx[e] * D;
      const scalar_t* re = r + e * D;
      for (int64_t d = 0; d < D; ++d) oj[d] += re[d];
    }
  });
}

// The geometry argument of the density operators: undefined (computed per edge) or an
// edge_geometry of the same edges, checked; its data pointer or nullptr.
template <typename T>
const T* geometry_data(const at::Tensor& geometry, const DensityInputs& in) {
  if (!geometry.defined()) return nullptr;
  TORCH_CHECK(geometry.is_contiguous() && geometry.dim() == 2 && geometry.size(0) == in.vectors.size(0) &&
                  geometry.size(1) == geometry_width(in.B) && geometry.scalar_type() == in.vectors.scalar_type(),
              "moment_density: geometry must be a contiguous edge_geometry [E, ", geometry_width(in.B),
              "] of the vectors' dtype; got ", geometry.sizes());
  return geometry.data_ptr<T>();
}

std::vector<at::Tensor> density_forward(const at::Tensor& vectors_in, const at::Tensor& geometry, const at::Tensor& messages_in,
                                        const at::Tensor& neighbor_in, const at::Tensor& offsets_in, double cutoff,
                                        int64_t num_basis, int64_t envelope_p, double scale) {
  const DensityInputs in(geometry.defined() ? "moment_density_geometry" : "moment_density", vectors_in, messages_in,
                         neighbor_in, offsets_in, cutoff, num_basis, envelope_p, scale);
  const at::Tensor &vectors = in.vectors, &messages = in.messages, &neighbor = in.neighbor, &offsets = in.offsets;
  const int64_t n = in.n, B = in.B, D = in.D, BD = in.BD;
  // every row is written
  auto rank0 = at::empty({n, BD}, vectors.options());
  auto rank1 = at::empty({3, n, BD}, vectors.options());
  auto rank2 = at::empty({6, n, BD}, vectors.options());
  AT_DISPATCH_FLOATING_TYPES(vectors.scalar_type(), "moment_density", [&] {
    MLFFD_SIZE_DISPATCH(density_kernel, scalar_t, B, D, vectors.data_ptr<scalar_t>(), geometry_data<scalar_t>(geometry, in),
                        messages.data_ptr<scalar_t>(), neighbor.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(), n, B, D,
                        cutoff, envelope_p, scale,
                        Planes<scalar_t>(rank0.data_ptr<scalar_t>(), rank1.data_ptr<scalar_t>(),
                                         rank2.data_ptr<scalar_t>(), n, BD));
  });
  return {rank0, rank1, rank2};
}

std::vector<at::Tensor> moment_density_cpu(const at::Tensor& vectors, const at::Tensor& messages, const at::Tensor& neighbor,
                                           const at::Tensor& offsets, double cutoff, int64_t num_basis, int64_t envelope_p,
                                           double scale) {
  return density_forward(vectors, at::Tensor(), messages, neighbor, offsets, cutoff, num_basis, envelope_p, scale);
}

std::vector<at::Tensor> moment_density_geometry_cpu(const at::Tensor& vectors, const at::Tensor& geometry,
                                                    const at::Tensor& messages, const at::Tensor& neighbor,
                                                    const at::Tensor& offsets, double cutoff, int64_t num_basis,
                                                    int64_t envelope_p, double scale) {
  return density_forward(vectors, geometry, messages, neighbor, offsets, cutoff, num_basis, envelope_p, scale);
}

// mlffd_kernels::edge_geometry (operator set 2): what every density pass computes per edge,
// computed once: [E, 4 + 10 + 2B] (1/r, 0 beyond the cutoff; u; angular components; basis; its
// derivative). Passed to moment_density_geometry and moment_density_backward_into, one graph's
// four passes over the edges (two layers, forward and backward) share it.
at::Tensor edge_geometry_cpu(const at::Tensor& vectors_in, double cutoff, int64_t num_basis, int64_t envelope_p) {
  TORCH_CHECK(vectors_in.device().is_cpu() && vectors_in.dim() == 2 && vectors_in.size(1) == 3,
              "edge_geometry: vectors must be CPU [E, 3], got ", vectors_in.sizes());
  check_radial("edge_geometry", cutoff, num_basis, envelope_p);
  const auto vectors = vectors_in.contiguous();
  auto out = at::empty({vectors.size(0), geometry_width(num_basis)}, vectors.options());
  AT_DISPATCH_FLOATING_TYPES(vectors.scalar_type(), "edge_geometry", [&] {
#ifdef MLFFD_HAVE_AVX2
    if (use_avx2()) {
      isa_avx2::geometry_kernel<scalar_t>(vectors.data_ptr<scalar_t>(), vectors.size(0), num_basis, cutoff, envelope_p,
                                          out.data_ptr<scalar_t>());
      return;
    }
#endif
    isa_base::geometry_kernel<scalar_t>(vectors.data_ptr<scalar_t>(), vectors.size(0), num_basis, cutoff, envelope_p,
                                        out.data_ptr<scalar_t>());
  });
  return out;
}

// The tensors a backward pass adds the centre side of its edge gradients into (CentreSide):
// forces [N, 3], virial [3, 3], atom_virial [N, 9] (checked by EdgeSumInputs) and each edge's
// centre row.
struct EdgeSums {
  at::Tensor forces, virial, atom_virial, center;
};

// The centre rows the backward's threads index (CentreSums::finish takes a centre's row from its
// first edge): rows of forces, and constant over each centre's edges (offsets as checked by
// DensityInputs).
void check_centre_rows(const EdgeSums& sums, const DensityInputs& in) {
  const int64_t* c = sums.center.data_ptr<int64_t>();
  const int64_t* o = in.offsets.data_ptr<int64_t>();
  const int64_t rows = sums.forces.size(0);
  TORCH_CHECK(all_in_range(c, sums.center.numel(), rows), "moment_density_backward_into: center indices must lie in 0..",
              rows - 1, " (rows of forces)");
  bool same = true;
  for (int64_t i = 0; i < in.n; ++i)
    for (int64_t e = o[i]; e < o[i + 1]; ++e) same &= c[e] == c[o[i]];
  TORCH_CHECK(same, "moment_density_backward_into: center must be constant over each centre's edges offsets[i]:offsets[i + 1]");
}

// Gradients of sum_q grads[q] * rho[q] with respect to the edge vectors [E, 3] and, per edge,
// the neighbour's message [E, D] (summed onto atoms by the caller; empty unless messages_grad).
// Also an operator of its own: the blocked evaluation back-propagates densities it kept.
std::vector<at::Tensor> density_backward(at::TensorList grads_in, const at::Tensor& vectors_in, const at::Tensor& geometry,
                                         const at::Tensor& messages_in, const at::Tensor& neighbor_in,
                                         const at::Tensor& offsets_in, double cutoff, int64_t num_basis,
                                         int64_t envelope_p, double scale, bool messages_grad,
                                         const EdgeSums* sums = nullptr) {
  const char* op = sums != nullptr ? "moment_density_backward_into" : "moment_density_backward";
  TORCH_CHECK_VALUE(grads_in.size() == 3, op, ": grads must hold 3 tensors (the gradients of the rank 0, 1 and 2 "
                    "densities), got ", grads_in.size());
  const DensityInputs in(op, vectors_in, messages_in, neighbor_in, offsets_in, cutoff, num_basis, envelope_p, scale);
  if (sums != nullptr) check_centre_rows(*sums, in);
  const at::Tensor &vectors = in.vectors, &messages = in.messages, &neighbor = in.neighbor, &offsets = in.offsets;
  const int64_t n = in.n, B = in.B, D = in.D, BD = in.BD;
  // undefined gradients (an output not used) are zeros
  const std::vector<int64_t> ranks{1, 3, 6};
  std::vector<at::Tensor> grad(3);
  for (int q = 0; q < 3; ++q) {
    const auto shape = q == 0 ? std::vector<int64_t>{n, BD} : std::vector<int64_t>{ranks[q], n, BD};
    grad[q] = grads_in[q].defined() ? grads_in[q].contiguous() : at::zeros(shape, vectors.options());
    TORCH_CHECK(grad[q].sizes() == at::IntArrayRef(shape) && grad[q].scalar_type() == vectors.scalar_type(), op,
                ": gradient ", q, " must be ", at::IntArrayRef(shape), " of the vectors' dtype ", vectors.scalar_type(),
                ", got ", grad[q].sizes(), " ", grad[q].scalar_type());
  }
  auto grad_v = at::zeros_like(vectors);
  auto grad_m = messages_grad ? at::zeros({vectors.size(0), D}, vectors.options()) : at::empty({0, D}, vectors.options());
  AT_DISPATCH_FLOATING_TYPES(vectors.scalar_type(), "moment_density_backward", [&] {
    CentreSide<scalar_t> side;
    std::mutex lock;
    double virial[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (sums != nullptr) {
      side.forces = sums->forces.data_ptr<scalar_t>();
      side.atom_virial = sums->atom_virial.data_ptr<scalar_t>();
      side.center = sums->center.data_ptr<int64_t>();
      side.virial = virial;
      side.lock = &lock;
    }
    MLFFD_SIZE_DISPATCH(density_backward_kernel, scalar_t, B, D,
                        Planes<const scalar_t>(grad[0].data_ptr<scalar_t>(), grad[1].data_ptr<scalar_t>(),
                                               grad[2].data_ptr<scalar_t>(), n, BD),
                        vectors.data_ptr<scalar_t>(), geometry_data<scalar_t>(geometry, in), messages.data_ptr<scalar_t>(),
                        neighbor.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(), n, B, D, cutoff, envelope_p, scale,
                        grad_v.data_ptr<scalar_t>(), messages_grad ? grad_m.data_ptr<scalar_t>() : nullptr, side);
    if (sums != nullptr) {
      scalar_t* vir = sums->virial.data_ptr<scalar_t>();
      for (int k = 0; k < 9; ++k) vir[k] += scalar_t(virial[k]);
    }
  });
  return {grad_v, grad_m};
}

std::vector<at::Tensor> moment_density_backward_cpu(at::TensorList grads, const at::Tensor& vectors, const at::Tensor& messages,
                                                    const at::Tensor& neighbor, const at::Tensor& offsets, double cutoff,
                                                    int64_t num_basis, int64_t envelope_p, double scale, bool messages_grad) {
  return density_backward(grads, vectors, at::Tensor(), messages, neighbor, offsets, cutoff, num_basis, envelope_p, scale,
                          messages_grad);
}

class MomentDensity : public torch::autograd::Function<MomentDensity> {
 public:
  // geometry: undefined, or an edge_geometry of vectors (a constant here: the backward gives
  // the whole derivative with respect to the vectors)
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& vectors,
                                                const at::Tensor& messages, const at::Tensor& neighbor,
                                                const at::Tensor& offsets, double cutoff, int64_t num_basis,
                                                int64_t envelope_p, double scale,
                                                const std::optional<at::Tensor>& geometry_opt) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const at::Tensor geometry = geometry_opt.has_value() ? *geometry_opt : at::Tensor();
    ctx->save_for_backward({vectors, messages, neighbor, offsets, geometry});
    ctx->saved_data["cutoff"] = cutoff;
    ctx->saved_data["num_basis"] = num_basis;
    ctx->saved_data["envelope_p"] = envelope_p;
    ctx->saved_data["scale"] = scale;
    return density_forward(vectors, geometry, messages, neighbor, offsets, cutoff, num_basis, envelope_p, scale);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& vectors = saved[0];
    const auto& messages = saved[1];
    const auto& neighbor = saved[2];
    const bool want_m = ctx->needs_input_grad(1);
    // create_graph=True runs the backward with grad mode on: refuse instead of returning
    // gradients that silently do not differentiate further
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "mlffd_kernels::moment_density has first derivatives only (evaluation); train with the "
                "PyTorch reference path (StudentPotential in training mode)");
    auto out = density_backward(grads, vectors, saved[4], messages, neighbor, saved[3],
                                           ctx->saved_data["cutoff"].toDouble(), ctx->saved_data["num_basis"].toInt(),
                                           ctx->saved_data["envelope_p"].toInt(), ctx->saved_data["scale"].toDouble(),
                                           want_m);
    at::Tensor grad_m;
    if (want_m) {
      grad_m = at::zeros_like(messages);
      add_rows(grad_m, out[1], neighbor.contiguous());
    }
    return {out[0], grad_m, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::vector<at::Tensor> moment_density_autograd(const at::Tensor& vectors, const at::Tensor& messages, const at::Tensor& neighbor,
                                   const at::Tensor& offsets, double cutoff, int64_t num_basis, int64_t envelope_p,
                                   double scale) {
  return MomentDensity::apply(vectors, messages, neighbor, offsets, cutoff, num_basis, envelope_p, scale,
                              std::optional<at::Tensor>());
}

std::vector<at::Tensor> moment_density_geometry_autograd(const at::Tensor& vectors, const at::Tensor& geometry,
                                                         const at::Tensor& messages, const at::Tensor& neighbor,
                                                         const at::Tensor& offsets, double cutoff, int64_t num_basis,
                                                         int64_t envelope_p, double scale) {
  return MomentDensity::apply(vectors, messages, neighbor, offsets, cutoff, num_basis, envelope_p, scale,
                              std::optional<at::Tensor>(geometry));
}

// ---------------------------------------------------------------------------------------------
// mlffd_kernels::moment_invariants: the rotation invariants of an interaction layer's moments,
// per atom n and channel k, from a1 [3, N, K] (vector) and a2 [6, N, K] (traceless symmetric
// tensor stored xx yy zz xy xz yz): out[n] = (|a1|^2 | |A2|^2 | a1.A2.a1 | tr(A2^3)) as [N, 4K].
// PyTorch reference: mlffd.models.layers.Interaction.mix (cubic_invariants).

// The nine moment components of atom i, channel k: a1 = (x, y, z), a2's diagonal (dx, dy, dz)
// and off-diagonal (oxy, oxz, oyz).
template <typename T>
struct Moment {
  T x, y, z, dx, dy, dz, oxy, oxz, oyz;
};

// f(i, k, q, moment) for every atom i and channel k (q = i K + k: the offset in a1's and a2's
// [N, K] planes), atoms in parallel, channels in SIMD lanes (f inlines into the loop).
template <typename T, typename F>
inline void for_each_moment(const T* a1, const T* a2, int64_t n, int64_t K, const F& f) {
  const int64_t NK = n * K;
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) {
        const int64_t q = i * K + k;
        f(i, k, q, Moment<T>{a1[q], a1[NK + q], a1[2 * NK + q], a2[q], a2[NK + q], a2[2 * NK + q], a2[3 * NK + q],
                             a2[4 * NK + q], a2[5 * NK + q]});
      }
    }
  });
}

template <typename T>
void invariants_kernel(const T* a1, const T* a2, int64_t n, int64_t K, T* out) {
  for_each_moment(a1, a2, n, K, [&](int64_t i, int64_t k, int64_t, const Moment<T>& mo) {
    const auto [x, y, z, dx, dy, dz, oxy, oxz, oyz] = mo;
    T* o = out + i * 4 * K;
    const T o2 = oxy * oxy + oxz * oxz + oyz * oyz;
    o[k] = x * x + y * y + z * z;
    o[K + k] = dx * dx + dy * dy + dz * dz + T(2) * o2;
    o[2 * K + k] = dx * x * x + dy * y * y + dz * z * z + T(2) * (oxy * x * y + oxz * x * z + oyz * y * z);
    o[3 * K + k] = dx * dx * dx + dy * dy * dy + dz * dz * dz +
                   T(3) * (o2 * (dx + dy + dz) - (dx * oyz * oyz + dy * oxz * oxz + dz * oxy * oxy)) +
                   T(6) * oxy * oxz * oyz;
  });
}

template <typename T>
void invariants_backward_kernel(const T* g, const T* a1, const T* a2, int64_t n, int64_t K, T* g1, T* g2) {
  const int64_t NK = n * K;
  for_each_moment(a1, a2, n, K, [&](int64_t i, int64_t k, int64_t q, const Moment<T>& mo) {
    const auto [x, y, z, dx, dy, dz, oxy, oxz, oyz] = mo;
    const T* gi = g + i * 4 * K;
    const T gb1 = gi[k], gb2 = gi[K + k], gb3 = gi[2 * K + k], gb4 = gi[3 * K + k];
    const T o2 = oxy * oxy + oxz * oxz + oyz * oyz;
    const T tr = dx + dy + dz;
    g1[q] = T(2) * (gb1 * x + gb3 * (dx * x + oxy * y + oxz * z));
    g1[NK + q] = T(2) * (gb1 * y + gb3 * (dy * y + oxy * x + oyz * z));
    g1[2 * NK + q] = T(2) * (gb1 * z + gb3 * (dz * z + oxz * x + oyz * y));
    g2[q] = T(2) * gb2 * dx + gb3 * x * x + T(3) * gb4 * (dx * dx + o2 - oyz * oyz);
    g2[NK + q] = T(2) * gb2 * dy + gb3 * y * y + T(3) * gb4 * (dy * dy + o2 - oxz * oxz);
    g2[2 * NK + q] = T(2) * gb2 * dz + gb3 * z * z + T(3) * gb4 * (dz * dz + o2 - oxy * oxy);
    g2[3 * NK + q] = T(4) * gb2 * oxy + T(2) * gb3 * x * y + T(6) * gb4 * (oxy * (tr - dz) + oxz * oyz);
    g2[4 * NK + q] = T(4) * gb2 * oxz + T(2) * gb3 * x * z + T(6) * gb4 * (oxz * (tr - dy) + oxy * oyz);
    g2[5 * NK + q] = T(4) * gb2 * oyz + T(2) * gb3 * y * z + T(6) * gb4 * (oyz * (tr - dx) + oxy * oxz);
  });
}

void check_moments(const at::Tensor& a1, const at::Tensor& a2) {
  TORCH_CHECK(a1.device().is_cpu() && a2.device().is_cpu(), "mlffd_kernels::moment_invariants runs on the CPU");
  TORCH_CHECK(a1.dim() == 3 && a1.size(0) == 3, "moment_invariants: a1 must be [3, N, K], got ", a1.sizes());
  TORCH_CHECK(a2.dim() == 3 && a2.size(0) == 6 && a2.size(1) == a1.size(1) && a2.size(2) == a1.size(2),
              "moment_invariants: a2 must be [6, N, K] like a1 ", a1.sizes(), ", got ", a2.sizes());
  TORCH_CHECK(a1.scalar_type() == a2.scalar_type(), "moment_invariants: a1 and a2 differ in dtype");
}

at::Tensor moment_invariants_cpu(const at::Tensor& a1_in, const at::Tensor& a2_in) {
  check_moments(a1_in, a2_in);
  const auto a1 = a1_in.contiguous();
  const auto a2 = a2_in.contiguous();
  const int64_t n = a1.size(1), K = a1.size(2);
  auto out = at::empty({n, 4 * K}, a1.options());
  AT_DISPATCH_FLOATING_TYPES(a1.scalar_type(), "moment_invariants", [&] {
    invariants_kernel<scalar_t>(a1.data_ptr<scalar_t>(), a2.data_ptr<scalar_t>(), n, K, out.data_ptr<scalar_t>());
  });
  return out;
}

class MomentInvariants : public torch::autograd::Function<MomentInvariants> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a1, const at::Tensor& a2) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({a1, a2});
    return moment_invariants_cpu(a1, a2);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "mlffd_kernels::moment_invariants has first derivatives only (evaluation); train with the "
                "PyTorch reference path (StudentPotential in training mode)");
    const auto saved = ctx->get_saved_variables();
    const auto a1 = saved[0].contiguous();
    const auto a2 = saved[1].contiguous();
    const auto g = grads[0].contiguous();
    const int64_t n = a1.size(1), K = a1.size(2);
    TORCH_CHECK(g.dim() == 2 && g.size(0) == n && g.size(1) == 4 * K, "moment_invariants_backward: bad grad ", g.sizes());
    auto g1 = at::empty_like(a1);
    auto g2 = at::empty_like(a2);
    AT_DISPATCH_FLOATING_TYPES(a1.scalar_type(), "moment_invariants_backward", [&] {
      invariants_backward_kernel<scalar_t>(g.data_ptr<scalar_t>(), a1.data_ptr<scalar_t>(), a2.data_ptr<scalar_t>(), n, K,
                                           g1.data_ptr<scalar_t>(), g2.data_ptr<scalar_t>());
    });
    return {g1, g2};
  }
};

at::Tensor moment_invariants_autograd(const at::Tensor& a1, const at::Tensor& a2) {
  return MomentInvariants::apply(a1, a2);
}

// ---------------------------------------------------------------------------------------------
// mlffd_kernels::add_edge_gradients: forces, virial and per-atom virial from the edge gradients
// g_e = dE/dr_e (r_e = x_j - x_i + shift), added in place: F_i += g_e, F_j -= g_e,
// W -= r_e (x) g_e (summed in double), half of each edge's W_e to each end. PyTorch reference:
// mlffd.models.outputs.add_edge_gradients. One pass over the edges, no per-edge temporaries.

// The checks of the edge-gradient sums' tensors (add_edge_gradients, backward_into; op names the
// operator in errors), indices included; center and neighbor contiguous.
struct EdgeSumInputs {
  at::Tensor center, neighbor;
  EdgeSumInputs(const char* op, const at::Tensor& forces, const at::Tensor& virial, const at::Tensor& atom_virial,
                const at::Tensor& vectors, const at::Tensor& center_in, const at::Tensor& neighbor_in) {
    TORCH_CHECK(vectors.dim() == 2 && vectors.size(1) == 3, op, ": vectors must be [E, 3], got ", vectors.sizes());
    const int64_t n_edges = vectors.size(0);
    TORCH_CHECK(center_in.scalar_type() == at::kLong && neighbor_in.scalar_type() == at::kLong &&
                    center_in.numel() == n_edges && neighbor_in.numel() == n_edges,
                op, ": center and neighbor must be int64 [E]");
    TORCH_CHECK(forces.is_contiguous() && forces.dim() == 2 && forces.size(1) == 3 && forces.scalar_type() == vectors.scalar_type(),
                op, ": forces must be contiguous [N, 3] of the vectors' dtype");
    TORCH_CHECK(atom_virial.is_contiguous() && atom_virial.dim() == 2 && atom_virial.size(1) == 9 &&
                    atom_virial.size(0) == forces.size(0) && atom_virial.scalar_type() == vectors.scalar_type(),
                op, ": atom_virial must be contiguous [N, 9] like forces");
    TORCH_CHECK(virial.numel() == 9 && virial.is_contiguous() && virial.scalar_type() == vectors.scalar_type(),
                op, ": virial must be a contiguous 3x3 tensor");
    center = center_in.contiguous();
    neighbor = neighbor_in.contiguous();
    // before anything is added: an error leaves forces and virials as they were
    const int64_t n_atoms = forces.size(0);
    const int64_t* ci = center.data_ptr<int64_t>();
    const int64_t* nj = neighbor.data_ptr<int64_t>();
    if (!all_in_range(ci, n_edges, n_atoms) || !all_in_range(nj, n_edges, n_atoms)) {
      int64_t e = 0;
      while (ci[e] >= 0 && ci[e] < n_atoms && nj[e] >= 0 && nj[e] < n_atoms) ++e;
      TORCH_CHECK(false, op, ": edge ", e, " (center ", ci[e], ", neighbor ", nj[e], ") outside 0..", n_atoms - 1,
                  "; center indices must lie in 0..", n_atoms - 1, ", neighbor indices too (rows of forces)");
    }
  }
};

// forces[i] += g, forces[j] -= g, atom_virial[i] and [j] += w / 2, virial += w (w_ab = -v_a g_b)
// for every edge (i, j) with vector v and gradient g, in one serial pass; only the neighbour
// side (forces[j], atom_virial[j]) when the centre side was added already (CentreSide).
void add_edge_gradients_impl(at::Tensor& forces, at::Tensor& virial, at::Tensor& atom_virial, const at::Tensor& vectors,
                             const at::Tensor& grad, const EdgeSumInputs& in, bool centre_side) {
  const int64_t n_edges = vectors.size(0);
  AT_DISPATCH_FLOATING_TYPES(vectors.scalar_type(), "add_edge_gradients", [&] {
    using T = scalar_t;
    const T* r = vectors.data_ptr<T>();
    const T* g = grad.data_ptr<T>();
    const int64_t* ci = in.center.data_ptr<int64_t>();
    const int64_t* nj = in.neighbor.data_ptr<int64_t>();
    T* f = forces.data_ptr<T>();
    T* av = atom_virial.data_ptr<T>();
    double w[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t e = 0; e < n_edges; ++e) {
      const int64_t i = ci[e], j = nj[e];  // checked by EdgeSumInputs
      const T* re = r + 3 * e;
      const T* ge = g + 3 * e;
      T* avj = av + 9 * j;
      if (centre_side) {
        T* avi = av + 9 * i;
        for (int a = 0; a < 3; ++a) {
          f[3 * i + a] += ge[a];
          f[3 * j + a] -= ge[a];
          for (int b = 0; b < 3; ++b) {
            const T we = -re[a] * ge[b];
            w[3 * a + b] += double(we);
            avi[3 * a + b] += T(0.5) * we;
            avj[3 * a + b] += T(0.5) * we;
          }
        }
      } else {
        for (int a = 0; a < 3; ++a) {
          f[3 * j + a] -= ge[a];
          for (int b = 0; b < 3; ++b) avj[3 * a + b] -= T(0.5) * re[a] * ge[b];
        }
      }
    }
    if (centre_side) {
      T* vir = virial.data_ptr<T>();
      for (int k = 0; k < 9; ++k) vir[k] += T(w[k]);
    }
  });
}

void add_edge_gradients_cpu(at::Tensor& forces, at::Tensor& virial, at::Tensor& atom_virial, const at::Tensor& vectors_in,
                            const at::Tensor& grad_in, const at::Tensor& center_in, const at::Tensor& neighbor_in) {
  const auto vectors = vectors_in.contiguous();
  const auto grad = grad_in.contiguous();
  TORCH_CHECK(vectors.device().is_cpu() && vectors.dim() == 2 && vectors.size(1) == 3 && grad.sizes() == vectors.sizes(),
              "add_edge_gradients: vectors and grad must be CPU [E, 3]; got ", vectors.sizes(), " and ", grad.sizes());
  const EdgeSumInputs in("add_edge_gradients", forces, virial, atom_virial, vectors, center_in, neighbor_in);
  add_edge_gradients_impl(forces, virial, atom_virial, vectors, grad, in, true);
}

// ---------------------------------------------------------------------------------------------
// mlffd_kernels::moment_density_backward_into (operator set 2): moment_density_backward with its
// results added in place where the blocked evaluation needs them: the edge gradients into forces,
// virial and per-atom virial (as add_edge_gradients), the message gradients onto the neighbours'
// rows of messages_grad [N, D] (skipped when it is empty: the first layer's messages are
// constants). One operator call per layer and block instead of four.

void moment_density_backward_into_cpu(at::TensorList grads, const at::Tensor& vectors, const c10::optional<at::Tensor>& geometry,
                                      const at::Tensor& messages, const at::Tensor& center, const at::Tensor& neighbor,
                                      const at::Tensor& offsets, double cutoff, int64_t num_basis, int64_t envelope_p,
                                      double scale, at::Tensor& forces, at::Tensor& virial, at::Tensor& atom_virial,
                                      at::Tensor& messages_grad) {
  const bool want_m = messages_grad.numel() > 0;
  if (want_m)
    TORCH_CHECK(messages_grad.is_contiguous() && messages_grad.sizes() == messages.sizes() &&
                    messages_grad.scalar_type() == messages.scalar_type(),
                "moment_density_backward_into: messages_grad must be contiguous ", messages.sizes(), " like messages (or empty); got ",
                messages_grad.sizes());
  const EdgeSumInputs sum_in("moment_density_backward_into", forces, virial, atom_virial, vectors, center, neighbor);
  const EdgeSums sums{forces, virial, atom_virial, sum_in.center};
  const auto out = density_backward(grads, vectors, geometry.has_value() ? *geometry : at::Tensor(), messages, neighbor,
                                    offsets, cutoff, num_basis, envelope_p, scale, want_m, &sums);
  add_edge_gradients_impl(forces, virial, atom_virial, vectors.contiguous(), out[0], sum_in, false);
  if (want_m) add_rows(messages_grad, out[1], neighbor.contiguous());  // indices checked by the backward
}

// ---------------------------------------------------------------------------------------------
// mlffd_kernels::select_edges (operator set 2): the edges of a neighbour list built with a skin
// (cutoff + skin, reused while atoms move less than skin / 2) that lie within the cutoff now,
// r_e = x_j - x_i + shift_e, |r_e|^2 < cutoff^2 in the positions' precision; kept in their order.
// One pass instead of a dozen tensor operations per MD step (ASE calculator, CPU).

std::vector<at::Tensor> select_edges_cpu(const at::Tensor& positions_in, const at::Tensor& index_in, const at::Tensor& shifts_in,
                                         double cutoff) {
  TORCH_CHECK(positions_in.device().is_cpu() && positions_in.dim() == 2 && positions_in.size(1) == 3,
              "select_edges: positions must be CPU [N, 3], got ", positions_in.sizes());
  TORCH_CHECK(index_in.dim() == 2 && index_in.size(0) == 2 && index_in.scalar_type() == at::kLong,
              "select_edges: edge_index must be int64 [2, E], got ", index_in.sizes(), " ", index_in.scalar_type());
  TORCH_CHECK_VALUE(std::isfinite(cutoff) && cutoff > 0, "select_edges: cutoff ", cutoff,
                    " Å: expected a finite positive number");
  TORCH_CHECK(shifts_in.dim() == 2 && shifts_in.size(1) == 3 && shifts_in.size(0) == index_in.size(1) &&
                  shifts_in.scalar_type() == positions_in.scalar_type(),
              "select_edges: shifts must be [E, 3] of the positions' dtype, got ", shifts_in.sizes(), " ",
              shifts_in.scalar_type());
  const auto positions = positions_in.contiguous();
  const auto index = index_in.contiguous();
  const auto shifts = shifts_in.contiguous();
  const int64_t n = positions.size(0), E = index.size(1);
  const int64_t* ci = index.data_ptr<int64_t>();
  const int64_t* nj = ci + E;
  TORCH_CHECK(all_in_range(ci, 2 * E, n), "select_edges: edge_index entries must lie in 0..", n - 1, " (rows of positions)");
  std::vector<int64_t> kept;
  kept.reserve(E);
  AT_DISPATCH_FLOATING_TYPES(positions.scalar_type(), "select_edges", [&] {
    using T = scalar_t;
    const T* x = positions.data_ptr<T>();
    const T* sh = shifts.data_ptr<T>();
    const T rc2 = T(cutoff * cutoff);
    for (int64_t e = 0; e < E; ++e) {
      const T* xi = x + 3 * ci[e];
      const T* xj = x + 3 * nj[e];
      const T dx = xj[0] - xi[0] + sh[3 * e], dy = xj[1] - xi[1] + sh[3 * e + 1], dz = xj[2] - xi[2] + sh[3 * e + 2];
      if (dx * dx + dy * dy + dz * dz < rc2) kept.push_back(e);
    }
  });
  const auto keep = at::from_blob(kept.data(), {int64_t(kept.size())}, index.options());
  return {index.index_select(1, keep), shifts.index_select(0, keep)};
}

std::string kernels_isa() { return use_avx2() ? "avx2" : "base"; }

// A double as JSON: the shortest text that reads back as the same double.
std::string json_number(double v) {
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

// mlffd_kernels::contract (operator set 4): the mlffd/contract.json values this library was
// built with, as JSON, so that a test can prove them equal to what Python reads.
std::string kernels_contract() {
  namespace c = mlffd_contract;
  return std::string("{\"artifact\": {\"format\": \"") + c::kFormat + "\", \"format_version\": " +
         std::to_string(c::kFormatVersion) + ", \"metadata_file\": \"" + c::kMetadataFile +
         "\"}, \"geometry\": {\"max_abs_coordinate_A\": " + json_number(c::kMaxAbsCoordinateA) +
         ", \"min_pair_distance_A\": " + json_number(c::kMinPairDistanceA) +
         ", \"max_neighbors_per_atom\": " + std::to_string(c::kMaxNeighborsPerAtom) +
         ", \"max_periodic_images\": " + std::to_string(c::kMaxPeriodicImages) +
         ", \"max_edges\": " + std::to_string(c::kMaxEdges) + "}}";
}

}  // namespace

TORCH_LIBRARY(mlffd_kernels, m) {
  m.def("moment_density(Tensor vectors, Tensor messages, Tensor neighbor, Tensor offsets, float cutoff, "
        "int num_basis, int envelope_p, float scale) -> Tensor[]");
  m.def("moment_density_backward(Tensor[] grads, Tensor vectors, Tensor messages, Tensor neighbor, Tensor offsets, "
        "float cutoff, int num_basis, int envelope_p, float scale, bool messages_grad) -> Tensor[]");
  m.def("edge_geometry(Tensor vectors, float cutoff, int num_basis, int envelope_p) -> Tensor");
  m.def("moment_density_geometry(Tensor vectors, Tensor geometry, Tensor messages, Tensor neighbor, Tensor offsets, "
        "float cutoff, int num_basis, int envelope_p, float scale) -> Tensor[]");
  m.def("moment_density_backward_into(Tensor[] grads, Tensor vectors, Tensor? geometry, Tensor messages, Tensor center, Tensor neighbor, "
        "Tensor offsets, float cutoff, int num_basis, int envelope_p, float scale, Tensor(a!) forces, Tensor(b!) virial, "
        "Tensor(c!) atom_virial, Tensor(d!) messages_grad) -> ()");
  m.def("select_edges(Tensor positions, Tensor edge_index, Tensor shifts, float cutoff) -> Tensor[]");
  m.def("moment_invariants(Tensor a1, Tensor a2) -> Tensor");
  m.def("add_edge_gradients(Tensor(a!) forces, Tensor(b!) virial, Tensor(c!) atom_virial, Tensor vectors, "
        "Tensor grad, Tensor center, Tensor neighbor) -> ()");
  m.def("isa() -> str", &kernels_isa);
  m.def("contract() -> str", &kernels_contract);
}

TORCH_LIBRARY_IMPL(mlffd_kernels, CPU, m) {
  m.impl("moment_density", &moment_density_cpu);
  m.impl("moment_density_backward", &moment_density_backward_cpu);
  m.impl("moment_density_backward_into", &moment_density_backward_into_cpu);
  m.impl("edge_geometry", &edge_geometry_cpu);
  m.impl("moment_density_geometry", &moment_density_geometry_cpu);
  m.impl("select_edges", &select_edges_cpu);
  m.impl("moment_invariants", &moment_invariants_cpu);
  m.impl("add_edge_gradients", &add_edge_gradients_cpu);
}

TORCH_LIBRARY_IMPL(mlffd_kernels, Autograd, m) {
  m.impl("moment_density", &moment_density_autograd);
  m.impl("moment_density_geometry", &moment_density_geometry_autograd);
  m.impl("moment_invariants", &moment_invariants_autograd);
}
