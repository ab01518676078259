/* pair_style mlffd: mlffd TorchScript artifacts (NAME.mlffd.pt) in LAMMPS.
   Copyright (C) 2026 the mlffd authors.
   SPDX-License-Identifier: GPL-2.0-or-later (see ../LICENSE) */

#ifndef LMP_PAIR_MLFFD_H
#define LMP_PAIR_MLFFD_H

#include "json_fwd.h"
#include "pair.h"

#include <torch/script.h>

#include <string>
#include <unordered_map>
#include <vector>

namespace LAMMPS_NS {

class PairMLFFD : public Pair {
 public:
  PairMLFFD(class LAMMPS *);
  ~PairMLFFD() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void *extract(const char *, int &) override;
  void *extract_peratom(const char *, int &) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 protected:
  void allocate();
  static void configure_allocator();
  std::string resolve_model(const std::string &arg);
  void load_model(const std::string &path);
  void check_module(const std::string &path, const json &meta);
  void check_box();
  void check_masses();

  // run-time checks of every step (docs/lammps.md, "Errors"): an error from the rank that
  // finds the problem (error->one), naming the atoms and the step
  [[noreturn]] void fail(const std::string &message);
  void check_positions(int nall);
  void report_geometry(const std::vector<int> &atoms);
  void check_edges(const torch::Tensor &d2_all, const torch::Tensor &edge_index, int64_t nnodes);
  struct Outputs {    // on the host, float64
    torch::Tensor forces, virial, atom_energies, atom_virial;
    torch::Tensor force_variance, energy_deviations;    // ensemble students, when asked for
    torch::Tensor atom_novelty;                         // students with a novelty reference, when asked for
    double energy = 0.0;
  };
  void uncertainty(const Outputs &out, int nall);
  void novelty(const Outputs &out);
  struct Extreme {    // of a per-atom quantity over all ranks
    double value = 0.0;
    tagint id = -1;
    int above = 0;
  };
  Extreme extreme(const double *value, double threshold);
  void flag(const std::string &what, bigint &last);

  // uncertainty of ensemble students (docs/lammps.md, "Uncertainty"): 'uncertainty X' threshold
  // (eV/A, 0: none), 'action warn|stop', 'every N' steps between warnings
  bool has_uncertainty = false;       // the model carries calibrated ensemble heads
  double uncertainty_threshold = 0.0;
  bool uncertainty_stop = false;
  long uncertainty_every = 100;
  bigint last_warning = -1;
  int uncertainty_flag = 0;           // set by 'fix pair ... uncertainty 1'
  double *force_uncertainty = nullptr;    // per atom (eV/A), local atoms valid after compute
  int nmax_uncertainty = 0;
  double energy_uncertainty = 0.0;    // eV, of the whole system
  double max_force_uncertainty = 0.0;
  // novelty (mlffd/models/novelty.py; docs/lammps.md, "Uncertainty"): 'novelty X' threshold
  // (dimensionless, 0: none), sharing 'action' and 'every' with the uncertainty
  bool has_novelty = false;           // the model carries a fitted novelty reference
  double novelty_threshold = 0.0;
  bigint last_novelty_warning = -1;
  int novelty_flag = 0;               // set by 'fix pair ... novelty 1'
  double *atom_novelty = nullptr;     // per local atom, valid after compute
  int nmax_novelty = 0;
  double max_novelty = 0.0;           // of the whole system
  Outputs check_outputs(const torch::jit::IValue &result, int64_t nnodes);

  torch::jit::Module model;
  bool model_loaded;
  torch::Device device;
  torch::Dtype dtype;
  std::string model_path;
  double cutoff;               // radial cutoff r_c of the model (A)
  double interaction_range;    // num_interactions * r_c (A): what the ghost shell must cover
  int num_interactions;        // message-passing steps L: edges are needed up to L-1 hops
  std::vector<std::string> elements;    // model species order
  std::vector<double> element_masses;   // metadata 'masses' (amu) in species order; empty when absent
  std::vector<long> type_species;       // LAMMPS type (1..ntypes) -> model species index

  // reused host buffers of build_graph()
  std::vector<int> adj_first, adj_count, adj_j;    // pairs per expanded LAMMPS atom (r_c, or r_c + skin)
  std::vector<int> level, node_atom, atom_node;     // hop distance from a local atom, node maps
  std::vector<int> bfs_order, frontier;             // atoms in order of hop distance; atoms to expand
  std::vector<int64_t> node_edges;                  // edge offset of each node (prefix sums)
  std::vector<int> first_dense;                     // atom ID -> its first copy in BFS order (IDs up to a bound)
  std::unordered_map<tagint, int> first_sparse;     // the same for sparse, large IDs
  bool fold_images = true;                           // fold periodic images onto one node
  long block_atoms_arg = 0;       // 'block N' keyword: centre atoms per evaluation block (0: default)
  long chunk_per_thread = 0;      // metadata model.chunk_atoms (0: no blocked evaluation)
  long block_atoms_set = -1;      // value last written to the module's chunk_atoms
  void configure_blocks(long nnodes, long nlocal, long nedges);
  bool gather_pairs(bool skin_pairs);

  // the rank's graph on the device (build_graph). 'graph reuse': built from the r_c + skin list
  // at neighbour-list builds only, the edges within r_c picked each step from the copies'
  // coordinates (g_image, g_rep); 'graph rebuild': the pairs within r_c now, with their shifts
  // (g_shifts), every step
  int graph_mode_arg = -1;        // 'graph' keyword: -1 default (reuse on CUDA), 0 rebuild, 1 reuse
  bool graph_reuse() const { return graph_mode_arg < 0 ? device.is_cuda() : graph_mode_arg == 1; }
  bool graph_valid = false;
  int graph_nall = -1, graph_nlocal = -1;
  torch::Tensor g_node_atom, g_edge_index, g_image, g_rep, g_shifts, g_species, g_mask;
  void build_graph(bool skin_pairs);
  torch::jit::IValue evaluate(const torch::Tensor &positions, const torch::Tensor &species,
                              const torch::Tensor &edge_index, const torch::Tensor &shifts,
                              const torch::Tensor &energy_mask);
};

}    // namespace LAMMPS_NS

#endif
