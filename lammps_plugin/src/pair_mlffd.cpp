/* pair_style mlffd: mlffd TorchScript artifacts (NAME.mlffd.pt) in LAMMPS.
   Copyright (C) 2026 the mlffd authors.
   SPDX-License-Identifier: GPL-2.0-or-later

   This program is free software; you can redistribute it and/or modify it under the terms of
   the GNU General Public License as published by the Free Software Foundation; either version 2
   of the License, or (at your option) any later version. See ../LICENSE.

   Design (docs/lammps.md):
   - the artifact is a message-passing model with interaction range R = L * r_c; a local atom's
     energy depends on every atom within R. The ghost shell is set to R + skin
     (comm->cutghostuser), and a FULL neighbour list INCLUDING ghost atoms (cutoff r_c + skin)
     gives every atom of the shell its edges;
   - each rank evaluates the graph of its local atoms and the ghosts within L hops, edges within
     r_c; periodic images of one atom (same tag) are folded onto one graph node with the image
     offset as the edge shift, so no atom is evaluated twice on a rank (on one rank, no ghost
     at all); energy_mask = local atoms, so each rank sums exactly the energies it owns;
   - forces on ghost atoms are added to the ghosts and summed onto their owners by LAMMPS'
     reverse communication (newton pair on); the virial W = -sum_e r_e (x) dE/dr_e summed over
     ranks is the global virial. */

#include "pair_mlffd.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <unordered_map>

using namespace LAMMPS_NS;

static constexpr int MLFFD_FORMAT_VERSION = 1;
// evaluation blocks, as mlffd.artifact: CUDA_BLOCK_ATOMS and ONE_GRAPH_EDGES
static constexpr long MLFFD_CUDA_BLOCK_ATOMS = 65536;
static constexpr long MLFFD_ONE_GRAPH_EDGES = 262144;
static const char *MLFFD_FORMAT = "mlffd-artifact";
static const char *MLFFD_METADATA = "mlffd_metadata.json";

static bool is_regular_file(const std::string &path)
{
  struct stat st;
  return (stat(path.c_str(), &st) == 0) && S_ISREG(st.st_mode);
}

static std::string first_line(const std::string &text)
{
  auto pos = text.find('\n');
  return pos == std::string::npos ? text : text.substr(0, pos);
}

/* ---------------------------------------------------------------------- */

PairMLFFD::PairMLFFD(LAMMPS *lmp) :
    Pair(lmp), model_loaded(false), device(torch::kCPU), dtype(torch::kFloat64), cutoff(0.0),
    interaction_range(0.0), num_interactions(1)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  ghostneigh = 1;                    // neighbour lists for ghost atoms too
  no_virial_fdotr_compute = 1;       // the artifact returns the virial
  centroidstressflag = CENTROID_NOTAVAIL;
  configure_allocator();
}

/* ----------------------------------------------------------------------
   glibc malloc settings of mlffd.allocator (docs/performance.md), once per process: large
   tensors stay in the heap instead of being mmap'ed and page-faulted again every step.
   Skipped with MLFFD_MALLOC=default, when GLIBC_TUNABLES already sets glibc.malloc.*, when
   LD_PRELOAD loads jemalloc, tcmalloc or mimalloc, or when the C library is not glibc.
------------------------------------------------------------------------- */

void PairMLFFD::configure_allocator()
{
#if defined(__GLIBC__)
  static bool done = false;
  if (done) return;
  done = true;
  const char *mode = std::getenv("MLFFD_MALLOC");
  const char *tunables = std::getenv("GLIBC_TUNABLES");
  if (mode && std::strcmp(mode, "default") == 0) return;
  if (tunables && std::strstr(tunables, "glibc.malloc.")) return;
  const char *preload = std::getenv("LD_PRELOAD");
  for (const char *other : {"jemalloc", "tcmalloc", "mimalloc"})
    if (preload && std::strstr(preload, other)) return;    // another allocator is in charge
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);    // never trim (mallopt(3))
  mallopt(M_TOP_PAD, 256 * 1024 * 1024);
#endif
}

PairMLFFD::~PairMLFFD()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairMLFFD::allocate()
{
  allocated = 1;
  int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  memory->create(cutghost, n + 1, n + 1, "pair:cutghost");
  for (int i = 1; i <= n; i++)
    for (int j = i; j <= n; j++) setflag[i][j] = 0;
  type_species.assign(n + 1, -1);
}

/* ----------------------------------------------------------------------
   pair_style mlffd [device cpu|cuda|cuda:N] [images fold|copy] [block N] [graph reuse|rebuild]
------------------------------------------------------------------------- */

void PairMLFFD::settings(int narg, char **arg)
{
  // pair_style mlffd [cpu|cuda|cuda:N] [device D] [images fold|copy] [block N] [graph reuse|rebuild]
  std::string dev = "cpu";
  fold_images = true;
  block_atoms_arg = 0;
  block_atoms_set = -1;
  graph_mode_arg = -1;
  graph_valid = false;
  const std::string usage =
      "expected 'pair_style mlffd [device cpu|cuda|cuda:N] [images fold|copy] [block N] [graph reuse|rebuild]'";
  int iarg = 0;
  if (narg % 2 == 1) dev = arg[iarg++];    // bare device name
  while (iarg < narg) {
    if (iarg + 1 >= narg) error->all(FLERR, "Illegal pair_style mlffd command: {}", usage);
    const std::string key = arg[iarg], value = arg[iarg + 1];
    if (key == "device")
      dev = value;
    else if (key == "images" && (value == "fold" || value == "copy"))
      fold_images = (value == "fold");
    else if (key == "graph" && (value == "reuse" || value == "rebuild"))
      graph_mode_arg = (value == "reuse") ? 1 : 0;
    else if (key == "block") {
      char *end = nullptr;
      long n = std::strtol(value.c_str(), &end, 10);
      if (end == value.c_str() || *end != '\0' || n < 1)
        error->all(FLERR, "Illegal pair_style mlffd command: block '{}' is not a positive integer", value);
      block_atoms_arg = n;
    } else
      error->all(FLERR, "Illegal pair_style mlffd command: '{} {}'; {}", key, value, usage);
    iarg += 2;
  }

  if (dev == "cpu") {
    device = torch::Device(torch::kCPU);
  } else if (dev.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available())
      error->all(FLERR, "pair_style mlffd: device '{}' requested but the libtorch in use sees no CUDA device",
                 dev);
    try {
      device = torch::Device(dev);
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_style mlffd: invalid device '{}' ({})", dev, first_line(e.what()));
    }
  } else {
    error->all(FLERR, "pair_style mlffd: unknown device '{}'; expected cpu, cuda or cuda:N", dev);
  }
  if (model_loaded) model.to(device);    // pair_style given again after pair_coeff
}

/* ----------------------------------------------------------------------
   a path to NAME.mlffd.pt, or a shipped model name looked up in $MLFFD_MODELS_DIR
------------------------------------------------------------------------- */

std::string PairMLFFD::resolve_model(const std::string &arg)
{
  if (is_regular_file(arg)) return arg;
  const char *env = std::getenv("MLFFD_MODELS_DIR");
  std::string dir = env ? env : "";
  bool is_name = arg.find('/') == std::string::npos;
  if (is_name && !dir.empty()) {
    for (const auto &candidate : {dir + "/" + arg + ".mlffd.pt", dir + "/" + arg})
      if (is_regular_file(candidate)) return candidate;
  }
  if (is_name)
    error->all(FLERR,
               "pair_coeff mlffd: model '{}' is neither an existing file nor a shipped model name "
               "(looked for {}.mlffd.pt in MLFFD_MODELS_DIR='{}'; the lammps.plugins entry point "
               "of mlffd-lammps sets it when lmp starts)",
               arg, arg, dir);
  error->all(FLERR, "pair_coeff mlffd: model file {} does not exist", arg);
  return arg;
}

void PairMLFFD::load_model(const std::string &path)
{
  torch::jit::ExtraFilesMap extra{{MLFFD_METADATA, ""}};
  try {
    model = torch::jit::load(path, device, extra);
  } catch (const std::exception &e) {
    if (std::string(e.what()).find("mlffd_kernels::") != std::string::npos)
      error->all(FLERR,
                 "pair_coeff mlffd: cannot load {}: it calls mlffd fused kernels that this plugin's "
                 "mlffd-kernels (operator set {}) lacks; rebuild mlffd-kernels and mlffd-lammps ({})",
                 path, MLFFD_KERNELS_VERSION, first_line(e.what()));
    error->all(FLERR, "pair_coeff mlffd: cannot load {}: corrupt or not a TorchScript archive ({})",
               path, first_line(e.what()));
  }
  const std::string &raw = extra[MLFFD_METADATA];
  if (raw.empty())
    error->all(FLERR,
               "pair_coeff mlffd: {} is a TorchScript file without {}: not an mlffd artifact",
               path, MLFFD_METADATA);
  json meta;
  try {
    meta = json::parse(raw);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_coeff mlffd: {}: metadata {} is not valid JSON ({})", path,
               MLFFD_METADATA, first_line(e.what()));
  }
  if (!meta.is_object() || !meta.contains("format") || !meta["format"].is_string() ||
      meta["format"].get<std::string>() != MLFFD_FORMAT)
    error->all(FLERR, "pair_coeff mlffd: {}: not an mlffd artifact (metadata 'format' is not '{}')",
               path, MLFFD_FORMAT);
  if (!meta.contains("format_version") || !meta["format_version"].is_number_integer())
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'format_version' missing or not an integer", path);
  int version = meta["format_version"].get<int>();
  if (version > MLFFD_FORMAT_VERSION)
    error->all(FLERR,
               "pair_coeff mlffd: {}: format_version {} is newer than this pair style supports ({}); "
               "upgrade mlffd-lammps",
               path, version, MLFFD_FORMAT_VERSION);
  if (version < 1)
    error->all(FLERR, "pair_coeff mlffd: {}: format_version {} is invalid", path, version);
  // artifacts exported with mlffd's fused CPU kernels name the operator set they call; the
  // plugin links the kernels library it was built with (its operators load with the plugin)
  if (meta.contains("kernels")) {
    if (!meta["kernels"].is_number_integer() || meta["kernels"].get<int>() < 1)
      error->all(FLERR, "pair_coeff mlffd: {}: metadata 'kernels' is not a positive integer", path);
    if (meta["kernels"].get<int>() > MLFFD_KERNELS_VERSION)
      error->all(FLERR,
                 "pair_coeff mlffd: {}: needs mlffd's fused kernels operator set {}, this plugin "
                 "was built with {}; rebuild mlffd-kernels and mlffd-lammps",
                 path, meta["kernels"].get<int>(), MLFFD_KERNELS_VERSION);
  }
  for (const char *field : {"cutoff", "interaction_range"})
    if (!meta.contains(field) || !meta[field].is_number() || !(meta[field].get<double>() > 0.0))
      error->all(FLERR, "pair_coeff mlffd: {}: metadata '{}' missing or not a positive number", path,
                 field);
  if (!meta.contains("elements") || !meta["elements"].is_array() || meta["elements"].empty())
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'elements' missing or empty", path);
  if (!meta.contains("dtype") || !meta["dtype"].is_string())
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'dtype' missing", path);

  elements.clear();
  for (const auto &el : meta["elements"]) {
    if (!el.is_string())
      error->all(FLERR, "pair_coeff mlffd: {}: metadata 'elements' holds a non-string entry", path);
    elements.push_back(el.get<std::string>());
  }
  cutoff = meta["cutoff"].get<double>();
  interaction_range = std::max(meta["interaction_range"].get<double>(), cutoff);
  if (meta.contains("num_interactions") && meta["num_interactions"].is_number_integer() &&
      meta["num_interactions"].get<int>() >= 1)
    num_interactions = meta["num_interactions"].get<int>();
  else
    num_interactions = (int) std::ceil(interaction_range / cutoff - 1e-9);
  std::string dt = meta["dtype"].get<std::string>();
  if (dt == "float64")
    dtype = torch::kFloat64;
  else if (dt == "float32")
    dtype = torch::kFloat32;
  else
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'dtype' is '{}', expected float32 or float64",
               path, dt);
  chunk_per_thread = 0;
  if (meta.contains("model") && meta["model"].is_object() && meta["model"].contains("chunk_atoms") &&
      meta["model"]["chunk_atoms"].is_number_integer())
    chunk_per_thread = meta["model"]["chunk_atoms"].get<long>();
  block_atoms_set = -1;
  graph_valid = false;
  model.eval();
  // evaluation only: parameters that require grad make every backward also build weight
  // gradients nobody reads (6-7% of a CPU step; artifacts are exported without it, this covers older ones)
  for (auto p : model.parameters()) p.set_requires_grad(false);
  model_loaded = true;
  model_path = path;
}

/* ----------------------------------------------------------------------
   centre atoms per block of the model's bounded-memory evaluation, as mlffd.artifact.block_atoms
   does in Python: 'block N' if given; CUDA: MLFFD_CUDA_BLOCK_ATOMS (keeps the GPU busy); CPU: the
   exported chunk_atoms per thread, or one graph for graphs of up to MLFFD_ONE_GRAPH_EDGES edges
   without ghost nodes (one rank, images folded): with ghost nodes, the blocks are faster for
   tiny and original (blocks of ghosts skip the last layer; 2 ranks, 4,096 atoms: tiny 13.4 vs
   20.8 us per atom-step with one graph)
------------------------------------------------------------------------- */

void PairMLFFD::configure_blocks(long nnodes, long nlocal, long nedges)
{
  if (chunk_per_thread <= 0 || !model.hasattr("chunk_atoms")) return;
  long wanted = block_atoms_arg;
  if (wanted <= 0) {
    wanted = device.is_cuda() ? std::max(chunk_per_thread, MLFFD_CUDA_BLOCK_ATOMS)
                              : chunk_per_thread * std::max(1, at::get_num_threads());
    if (!device.is_cuda() && nedges <= MLFFD_ONE_GRAPH_EDGES && nnodes == nlocal) wanted = std::max(wanted, nnodes);
  }
  if (wanted == block_atoms_set) return;
  model.setattr("chunk_atoms", (int64_t) wanted);
  block_atoms_set = wanted;
}

/* ----------------------------------------------------------------------
   pair_coeff * * MODEL El1 El2 ... (one element per LAMMPS atom type)
------------------------------------------------------------------------- */

void PairMLFFD::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR,
               "pair_coeff mlffd: expected 'pair_coeff * * MODEL El1 ... El{}' (one element per "
               "atom type), got {} arguments",
               ntypes, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "{}", "pair_coeff mlffd: the type ranges must be '* *'");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style mlffd requires 'units metal' (eV, Angstrom, ps); this input uses 'units {}'",
               update->unit_style);

  load_model(resolve_model(arg[2]));

  std::string known;
  for (const auto &el : elements) known += (known.empty() ? "" : ", ") + el;
  for (int t = 1; t <= ntypes; t++) {
    std::string el = arg[2 + t];
    long index = -1;
    for (size_t k = 0; k < elements.size(); k++)
      if (elements[k] == el) index = (long) k;
    if (index < 0)
      error->all(FLERR, "pair_coeff mlffd: element '{}' (atom type {}) is not in model {}; the model knows: {}",
                 el, t, model_path, known);
    type_species[t] = index;
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;

  if (comm->me == 0)
    utils::logmesg(lmp,
                   "pair mlffd: model {} elements [{}] cutoff {} A interaction range {} A dtype {} device {}\n",
                   model_path, known, cutoff, interaction_range,
                   dtype == torch::kFloat64 ? "float64" : "float32", device.str());
}

/* ---------------------------------------------------------------------- */

void PairMLFFD::init_style()
{
  if (!model_loaded) error->all(FLERR, "{}", "pair_style mlffd: pair_coeff * * MODEL El... is missing");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style mlffd requires 'units metal' (eV, Angstrom, ps); this input uses 'units {}'",
               update->unit_style);
  if (force->newton_pair == 0)
    error->all(FLERR, "{}",
               "pair_style mlffd requires 'newton on' (newton pair on): ghost-atom forces are summed "
               "onto their owners by reverse communication");

  neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);

  // libtorch's CPU thread pool follows LAMMPS' OpenMP setting (OMP_NUM_THREADS, -pk omp N;
  // 1 by default), so MPI ranks do not oversubscribe the cores
  if (device.is_cpu() && comm->nthreads >= 1 && at::get_num_threads() != comm->nthreads)
    at::set_num_threads(comm->nthreads);

  // ghost shell: every atom within the interaction range of a local atom, plus the skin over
  // which atoms move between neighbour-list builds
  double needed = interaction_range + neighbor->skin;
  if (comm->cutghostuser < needed) comm->cutghostuser = needed;
}

double PairMLFFD::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "{}", "pair_style mlffd: all pair coeffs are not set");
  cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

/* ----------------------------------------------------------------------
   atom ID -> its first copy in BFS order (image folding): an array when the IDs are bounded
   (the usual 1..N), a hash map for sparse, large IDs
------------------------------------------------------------------------- */

namespace {
struct FirstCopy {
  std::vector<int> &dense;
  std::unordered_map<tagint, int> &sparse;
  bool use_dense;
  // the first copy of atom ID t, i if t is new
  int insert(tagint t, int i)
  {
    if (!use_dense) return sparse.emplace(t, i).first->second;
    int &first = dense[t];
    if (first < 0) first = i;
    return first;
  }
  int get(tagint t) const { return use_dense ? dense[t] : sparse.at(t); }
};

// the edges of a node in the graph tensors: source node, neighbour node, and either the copies
// (graph reuse: the shift is recomputed each step) or the shift x[image] - x[rep] now
template <typename Real>
void fill_edges(double **x, const std::vector<int> &node_atom, const std::vector<int> &atom_node,
                const std::vector<int> &level, int max_level, const std::vector<int> &adj_first,
                const std::vector<int> &adj_count, const std::vector<int> &adj_j,
                const std::vector<int64_t> &node_edges, int64_t *src, int64_t *dst, int64_t *image,
                int64_t *rep, Real *shift)
{
  const int64_t nnodes = (int64_t) node_atom.size();
  at::parallel_for(0, nnodes, 256, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const int i = node_atom[n];
      if (level[i] > max_level) continue;
      int64_t e = node_edges[n];
      for (int k = adj_first[i]; k < adj_first[i] + adj_count[i]; k++, e++) {
        const int j = adj_j[k];
        const int m = atom_node[j];
        const int r = node_atom[m];    // the copy that represents j's atom
        src[e] = n;
        dst[e] = m;
        if (shift) {
          for (int c = 0; c < 3; c++) shift[3 * e + c] = (Real) (x[j][c] - x[r][c]);
        } else {
          image[e] = j;
          rep[e] = r;
        }
      }
    }
  });
}
}    // namespace

/* ----------------------------------------------------------------------
   the pairs of every atom in 'frontier' appended to adj_j (adj_first, adj_count): within r_c,
   or all of the r_c + skin list (skin_pairs). In parallel over atoms, each writing at the offset
   its full list length allows (adj_j keeps the unused tail of each atom's range).
------------------------------------------------------------------------- */

void PairMLFFD::gather_pairs(bool skin_pairs)
{
  const double *x = atom->x[0];    // LAMMPS' per-atom arrays are contiguous
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  const double rcsq = cutoff * cutoff;
  size_t total = adj_j.size();
  for (int a : frontier) {
    adj_first[a] = (int) total;
    total += numneigh[a];
  }
  adj_j.resize(total);
  at::parallel_for(0, (int64_t) frontier.size(), 256, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; q++) {
      const int i = frontier[q];
      const double *xi = x + 3 * i;
      const int *jlist = firstneigh[i];
      const int jnum = numneigh[i];
      int *out = adj_j.data() + adj_first[i];
      int count = 0;
      if (skin_pairs) {
        for (int jj = 0; jj < jnum; jj++) out[count++] = jlist[jj] & NEIGHMASK;
      } else {
        // branch-free: every candidate is written, the count advances for those within r_c
        // (about a third of the r_c + skin list: a branch on it would mispredict half the time)
        for (int jj = 0; jj < jnum; jj++) {
          const int j = jlist[jj] & NEIGHMASK;
          const double *xj = x + 3 * j;
          const double dx = xj[0] - xi[0], dy = xj[1] - xi[1], dz = xj[2] - xi[2];
          out[count] = j;
          count += dx * dx + dy * dy + dz * dz < rcsq;
        }
      }
      adj_count[i] = count;
    }
  });
}

/* ----------------------------------------------------------------------
   the rank's graph, built on the host and moved to the device: nodes (node_atom, g_node_atom,
   g_species, g_mask), edges (g_edge_index) and for each edge either the LAMMPS indices of the
   neighbour copy (g_image) and of the copy its node stands for (g_rep; 'graph reuse': the shift
   x[image] - x[rep] is taken each step, pairs of the r_c + skin list beyond r_c dropped then),
   or the shift now (g_shifts; pairs within r_c now). On the CPU the device tensors are the ones
   written here (new ones at each build).
------------------------------------------------------------------------- */

void PairMLFFD::build_graph(bool skin_pairs)
{
  double **x = atom->x;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const bool fold = atom->tag_enable && fold_images;
  tagint *tag = atom->tag;

  tagint max_tag = 0;
  if (fold)
    for (int i = 0; i < nall; i++) max_tag = std::max(max_tag, tag[i]);
  const bool dense = max_tag < std::max<tagint>(1 << 22, 8 * (tagint) nall);
  if (fold && dense && (tagint) first_dense.size() <= max_tag) first_dense.assign(max_tag + 1, -1);
  first_sparse.clear();
  FirstCopy first{first_dense, first_sparse, dense};

  // 1. hop distance from the local atoms (breadth first, up to L hops). A local energy depends
  //    on the features of atoms up to L hops away; an atom needs its own edges only if it is at
  //    most L-1 hops away (see docs/lammps.md). Atoms further out are left out of the graph.
  //    Pairs within r_c (or the list's r_c + skin) are gathered only for the atoms expanded here:
  //    levels 0..L-1, and with image folding only the first copy of each atom ID (another copy
  //    has the same neighbours, shifted by a lattice vector; its node's edges come from the first
  //    copy). On one rank that is the local atoms alone, not every ghost (3-4x fewer pairs).
  adj_first.assign(nall, -1);
  adj_count.assign(nall, 0);
  adj_j.clear();
  level.assign(nall, -1);
  bfs_order.clear();
  for (int i = 0; i < nlocal; i++) {
    level[i] = 0;
    bfs_order.push_back(i);
    if (fold) first.insert(tag[i], i);
  }
  size_t begin = 0;
  for (int hop = 1; hop <= num_interactions; hop++) {
    const size_t end = bfs_order.size();
    frontier.clear();
    for (size_t q = begin; q < end; q++) {
      const int a = bfs_order[q];
      if (!fold || first.get(tag[a]) == a) frontier.push_back(a);    // a later copy: expanded through the first
    }
    gather_pairs(skin_pairs);
    for (int a : frontier)
      for (int k = adj_first[a]; k < adj_first[a] + adj_count[a]; k++) {
        const int j = adj_j[k];
        if (level[j] < 0) {
          level[j] = hop;
          bfs_order.push_back(j);
          if (fold) first.insert(tag[j], j);    // kept if the ID was seen
        }
      }
    begin = end;
  }

  // 2. graph nodes: one per ATOM, not per copy. Periodic images of the same atom (same tag)
  //    have the same environment, so every copy folds onto one node (local atoms first, node
  //    i = atom i; then foreign atoms, represented by their copy nearest in hops, whose edges
  //    are complete) and edges to images carry the image offset as a shift. The model then
  //    sees each atom once, as with ASE's periodic graph: on one rank no ghost is evaluated.
  //    Without atom IDs every copy is its own node (zero shifts).
  atom_node.assign(nall, -1);
  node_atom.clear();
  for (int i : bfs_order) {
    if (fold) {
      const int f = first.get(tag[i]);
      if (f != i) {    // a later copy: its first copy (earlier in BFS order) has the node
        atom_node[i] = atom_node[f];
        continue;
      }
    }
    atom_node[i] = (int) node_atom.size();
    node_atom.push_back(i);
  }
  if (fold && dense)
    for (int i : bfs_order) first_dense[tag[i]] = -1;    // reset for the next build
  const int64_t nnodes = (int64_t) node_atom.size();

  // 3. edges of the nodes up to L-1 hops, written in parallel at their prefix-sum offsets
  const int max_level = num_interactions - 1;
  node_edges.assign(nnodes + 1, 0);
  for (int64_t n = 0; n < nnodes; n++) {
    const int i = node_atom[n];
    node_edges[n + 1] = node_edges[n] + (level[i] <= max_level ? adj_count[i] : 0);
  }
  const int64_t ne = node_edges[nnodes];
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor edge_index = torch::empty({2, ne}, i64);
  int64_t *src = edge_index.data_ptr<int64_t>(), *dst = src + ne;
  torch::Tensor image, rep, shifts;    // per edge: the copies ('graph reuse') or the shift now
  if (skin_pairs) {
    image = torch::empty({ne}, i64);
    rep = torch::empty({ne}, i64);
  } else {
    shifts = torch::empty({ne, 3}, torch::TensorOptions().dtype(dtype));
  }
  auto fill = [&](auto *shift) {
    fill_edges(x, node_atom, atom_node, level, max_level, adj_first, adj_count, adj_j, node_edges, src, dst,
               skin_pairs ? image.data_ptr<int64_t>() : nullptr, skin_pairs ? rep.data_ptr<int64_t>() : nullptr, shift);
  };
  if (skin_pairs)
    fill((double *) nullptr);
  else if (dtype == torch::kFloat64)
    fill(shifts.data_ptr<double>());
  else
    fill(shifts.data_ptr<float>());
  torch::Tensor species = torch::empty({nnodes}, i64);
  int64_t *sp = species.data_ptr<int64_t>();
  int *type = atom->type;
  for (int64_t n = 0; n < nnodes; n++) sp[n] = type_species[type[node_atom[n]]];

  g_node_atom = torch::from_blob(node_atom.data(), {nnodes}, torch::TensorOptions().dtype(torch::kInt32))
                    .to(device, torch::kInt64, false, true);
  g_species = species.to(device);
  g_mask = torch::arange(nnodes, i64.device(device)).lt(nlocal);
  g_edge_index = edge_index.to(device);
  g_image = skin_pairs ? image.to(device) : torch::Tensor();
  g_rep = skin_pairs ? rep.to(device) : torch::Tensor();
  g_shifts = skin_pairs ? torch::Tensor() : shifts.to(device);
  graph_valid = true;
  graph_nall = nall;
  graph_nlocal = nlocal;
}

torch::jit::IValue PairMLFFD::evaluate(const torch::Tensor &positions, const torch::Tensor &species,
                                       const torch::Tensor &edge_index, const torch::Tensor &shifts,
                                       const torch::Tensor &energy_mask)
{
  try {
    configure_blocks(positions.size(0), graph_nlocal, edge_index.size(1));
    std::vector<torch::jit::IValue> inputs{positions, species, edge_index, shifts, energy_mask};
    return model.forward(inputs);
  } catch (const std::exception &e) {
    error->one(FLERR, "pair mlffd: evaluating model {} failed: {}", model_path, first_line(e.what()));
  }
  return {};
}

/* ---------------------------------------------------------------------- */

void PairMLFFD::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);

  double **x = atom->x;
  double **f = atom->f;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  if (nall == 0) return;

  // the graph: rebuilt every step ('graph rebuild': pairs within r_c now), or only when LAMMPS
  // rebuilt its lists ('graph reuse': atoms keep their indices between builds; all pairs of the
  // r_c + skin list, those beyond r_c dropped on the device each step)
  const bool reuse = graph_reuse();
  if (!reuse || !graph_valid || neighbor->ago == 0 || nall != graph_nall || nlocal != graph_nlocal)
    build_graph(reuse);
  // coordinates in float64 on the device; edge shifts x[image] - x[rep] are lattice vectors of
  // the current box (followed when it changes)
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor xall = torch::from_blob(x[0], {(int64_t) nall, 3}, f64).to(device);
  torch::Tensor pos64 = xall.index_select(0, g_node_atom);
  torch::Tensor edge_index = g_edge_index, shifts = g_shifts;
  if (reuse) {
    torch::Tensor shift64 = xall.index_select(0, g_image) - xall.index_select(0, g_rep);
    torch::Tensor d = pos64.index_select(0, edge_index[1]) - pos64.index_select(0, edge_index[0]) + shift64;
    torch::Tensor keep = d.mul(d).sum(1).lt(cutoff * cutoff).nonzero().squeeze(1);
    edge_index = edge_index.index_select(1, keep);
    shifts = shift64.index_select(0, keep).to(dtype);
  }
  torch::jit::IValue result = evaluate(pos64.to(dtype), g_species, edge_index, shifts, g_mask);
  const int nnodes = (int) node_atom.size();

  auto out = result.toGenericDict();
  auto host = [&](const char *key) {
    return out.at(c10::IValue(std::string(key))).toTensor().detach().to(torch::kCPU, torch::kFloat64).contiguous();
  };

  // forces on ghost atoms too: LAMMPS' reverse communication adds them to their owners
  torch::Tensor forces = host("forces");
  const double *fp = forces.data_ptr<double>();
  for (int n = 0; n < nnodes; n++) {
    const int i = node_atom[n];
    f[i][0] += fp[3 * n + 0];
    f[i][1] += fp[3 * n + 1];
    f[i][2] += fp[3 * n + 2];
  }

  if (eflag_global) eng_vdwl += host("energy").item<double>();
  if (eflag_atom) {
    torch::Tensor ae = host("atom_energies");
    const double *ep = ae.data_ptr<double>();
    for (int i = 0; i < nlocal; i++) eatom[i] += ep[i];
  }
  // LAMMPS Voigt order xx, yy, zz, xy, xz, yz; off-diagonals symmetrised
  if (vflag_global) {
    torch::Tensor w = host("virial");
    const double *wp = w.data_ptr<double>();
    virial[0] += wp[0];
    virial[1] += wp[4];
    virial[2] += wp[8];
    virial[3] += 0.5 * (wp[1] + wp[3]);
    virial[4] += 0.5 * (wp[2] + wp[6]);
    virial[5] += 0.5 * (wp[5] + wp[7]);
  }
  if (vflag_atom) {
    torch::Tensor av = host("atom_virial");
    const double *vp = av.data_ptr<double>();
    for (int n = 0; n < nnodes; n++) {
      const int i = node_atom[n];
      const double *w = vp + 9 * n;
      vatom[i][0] += w[0];
      vatom[i][1] += w[4];
      vatom[i][2] += w[8];
      vatom[i][3] += 0.5 * (w[1] + w[3]);
      vatom[i][4] += 0.5 * (w[2] + w[6]);
      vatom[i][5] += 0.5 * (w[5] + w[7]);
    }
  }
}
