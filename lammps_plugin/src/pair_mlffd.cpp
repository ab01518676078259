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
#include "domain.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include "archive_check.h"
#include "mlffd_contract.h"    // generated from mlffd/contract.json by CMakeLists.txt
#include "sha256.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sys/stat.h>
#include <unordered_map>

using namespace LAMMPS_NS;

// evaluation blocks, as mlffd.artifact: CUDA_BLOCK_ATOMS and ONE_GRAPH_EDGES
static constexpr long MLFFD_CUDA_BLOCK_ATOMS = 65536;
static constexpr long MLFFD_ONE_GRAPH_EDGES = 262144;

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

// a metadata value as JSON text for a message, shortened: metadata are untrusted input
static std::string json_repr(const json &value)
{
  std::string text = value.dump();
  return text.size() > 80 ? text.substr(0, 77) + "..." : text;
}

// whether value has the contract's JSON type (booleans are not numbers, 3.0 is not an integer)
static bool json_is(const json &value, const std::string &kind)
{
  if (kind == "string") return value.is_string();
  if (kind == "integer") return value.is_number_integer();
  if (kind == "number") return value.is_number();
  if (kind == "array") return value.is_array();
  if (kind == "object") return value.is_object();
  if (kind == "boolean") return value.is_boolean();
  return false;
}

static std::string dtype_name(c10::ScalarType t)
{
  switch (t) {
    case torch::kFloat64: return "float64";
    case torch::kFloat32: return "float32";
    case torch::kFloat16: return "float16";
    case torch::kBFloat16: return "bfloat16";
    default: return c10::toString(t);
  }
}

// up to 'most' atom IDs (LAMMPS tags; indices when the atoms have no IDs) of 'atoms', unique
static std::string atom_ids(Atom *atom, const std::vector<int> &atoms, size_t most = 10)
{
  std::vector<tagint> ids;
  for (int i : atoms) ids.push_back(atom->tag_enable ? atom->tag[i] : (tagint) i);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::string text;
  for (size_t k = 0; k < ids.size() && k < most; k++) text += (k ? ", " : "") + std::to_string(ids[k]);
  if (ids.size() > most) text += fmt::format(" and {} more", ids.size() - most);
  return text;
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
  comm_reverse = 1;                  // per-atom force variances of ghosts onto their owners
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
  memory->destroy(force_uncertainty);
  memory->destroy(atom_novelty);
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
  uncertainty_threshold = 0.0;
  uncertainty_stop = false;
  uncertainty_every = 100;
  last_warning = -1;
  novelty_threshold = 0.0;
  last_novelty_warning = -1;
  const std::string usage =
      "expected 'pair_style mlffd [device cpu|cuda|cuda:N] [images fold|copy] [block N] [graph reuse|rebuild] "
      "[uncertainty X] [novelty X] [action warn|stop] [every N]'";
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
    else if (key == "action" && (value == "warn" || value == "stop"))
      uncertainty_stop = (value == "stop");
    else if (key == "uncertainty") {
      char *end = nullptr;
      double x = std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0' || !std::isfinite(x) || x <= 0.0)
        error->all(FLERR, "Illegal pair_style mlffd command: uncertainty '{}' is not a positive number (eV/A)", value);
      uncertainty_threshold = x;
    } else if (key == "novelty") {
      char *end = nullptr;
      double x = std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0' || !std::isfinite(x) || x <= 0.0)
        error->all(FLERR, "Illegal pair_style mlffd command: novelty '{}' is not a positive number", value);
      novelty_threshold = x;
    } else if (key == "every") {
      char *end = nullptr;
      long n = std::strtol(value.c_str(), &end, 10);
      if (end == value.c_str() || *end != '\0' || n < 1)
        error->all(FLERR, "Illegal pair_style mlffd command: every '{}' is not a positive integer", value);
      uncertainty_every = n;
    }
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
   MODEL of pair_coeff, resolved as mlffd.registry.resolve does in Python: a name listed in
   $MLFFD_MODELS_DIR/registry.json is that shipped file, sha256-checked against the registry
   (a registry name wins over a file of that name in the working directory); anything else is a
   path to an existing file
------------------------------------------------------------------------- */

std::string PairMLFFD::resolve_model(const std::string &arg)
{
  const char *env = std::getenv("MLFFD_MODELS_DIR");
  const std::string dir = env ? env : "";
  const std::string registry_path = dir + "/" + mlffd_contract::kRegistryFile;
  std::string names;    // the registry's model names, for the error message
  if (!dir.empty() && is_regular_file(registry_path)) {
    json registry;
    try {
      std::ifstream in(registry_path);
      registry = json::parse(in);
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_coeff mlffd: {} (the shipped models' registry) is not valid JSON ({})",
                 registry_path, first_line(e.what()));
    }
    if (!registry.is_object() || !registry.contains("models") || !registry["models"].is_object())
      error->all(FLERR, "pair_coeff mlffd: {} has no 'models' object (name -> file and sha256)", registry_path);
    for (const auto &item : registry["models"].items()) names += (names.empty() ? "" : ", ") + item.key();
    if (registry["models"].contains(arg)) {
      const json &entry = registry["models"][arg];
      const bool ok = entry.is_object() && entry.contains("file") && entry["file"].is_string() &&
          entry.contains("sha256") && entry["sha256"].is_string();
      const std::string file = ok ? entry["file"].get<std::string>() : "";
      const std::string expected = ok ? entry["sha256"].get<std::string>() : "";
      // a file name inside the registry's folder, never a path out of it
      if (!ok || file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
          expected.size() != 64 || expected.find_first_not_of("0123456789abcdef") != std::string::npos)
        error->all(FLERR,
                   "pair_coeff mlffd: {}: entry '{}' must be {{\"file\": a file name in that folder, "
                   "\"sha256\": 64 lower-case hex digits}}, got {}",
                   registry_path, arg, json_repr(entry));
      const std::string path = dir + "/" + file;
      if (!is_regular_file(path))
        error->all(FLERR, "pair_coeff mlffd: shipped model '{}': file {} is missing (listed in {})", arg, path,
                   registry_path);
      std::string digest, why;
      if (!mlffd_sha256::file_digest(path, digest, why))
        error->all(FLERR, "pair_coeff mlffd: shipped model '{}': cannot read {} ({})", arg, path, why);
      if (digest != expected)
        error->all(FLERR,
                   "pair_coeff mlffd: shipped model '{}': {} has sha256 {}, expected {} (listed in {}): "
                   "file damaged or replaced",
                   arg, path, digest, expected, registry_path);
      return path;
    }
  }
  if (is_regular_file(arg)) return arg;
  if (arg.find('/') == std::string::npos) {
    std::string where = dir.empty()
        ? "MLFFD_MODELS_DIR is not set; the lammps.plugins entry point of mlffd-lammps sets it when lmp starts"
        : names.empty() ? fmt::format("MLFFD_MODELS_DIR='{}' has no {} listing models", dir, mlffd_contract::kRegistryFile)
                        : fmt::format("shipped models in MLFFD_MODELS_DIR='{}': {}", dir, names);
    error->all(FLERR, "pair_coeff mlffd: model '{}' is neither an existing file nor a shipped model name ({})",
               arg, where);
  }
  error->all(FLERR, "pair_coeff mlffd: model file {} does not exist", arg);
  return arg;
}

/* ----------------------------------------------------------------------
   the artifact at path: its metadata checked as mlffd.artifact.validate_metadata does in Python
   (every field of the contract with its JSON type), then against the module itself as
   mlffd.artifact.check_module does, so a file that one engine refuses the other refuses too
------------------------------------------------------------------------- */

void PairMLFFD::load_model(const std::string &path)
{
  using namespace mlffd_contract;
  model_loaded = false;
  std::string detail;
  const std::string damaged = mlffd_archive::damaged_member(path, detail);
  if (!damaged.empty())
    error->all(FLERR, "pair_coeff mlffd: {}: damaged file: archive member {} fails its CRC-32 check ({})", path,
               damaged, detail);
  torch::jit::ExtraFilesMap extra{{kMetadataFile, ""}};
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
  const std::string &raw = extra[kMetadataFile];
  if (raw.empty())
    error->all(FLERR, "pair_coeff mlffd: {} is a TorchScript file without {}: not an mlffd artifact", path,
               kMetadataFile);
  json meta;
  try {
    meta = json::parse(raw);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_coeff mlffd: {}: metadata {} is not valid JSON ({})", path, kMetadataFile,
               first_line(e.what()));
  }
  if (!meta.is_object())
    error->all(FLERR, "pair_coeff mlffd: {}: metadata {} is not a JSON object", path, kMetadataFile);
  if (!meta.contains("format") || !meta["format"].is_string() || meta["format"].get<std::string>() != kFormat)
    error->all(FLERR, "pair_coeff mlffd: {}: not an mlffd artifact (metadata 'format' is {}, expected '{}')", path,
               meta.contains("format") ? json_repr(meta["format"]) : "missing", kFormat);
  if (!meta.contains("format_version") || !meta["format_version"].is_number_integer())
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'format_version' is {}, expected an integer", path,
               meta.contains("format_version") ? json_repr(meta["format_version"]) : "missing");
  const int64_t version = meta["format_version"].get<int64_t>();
  if (version > kFormatVersion)
    error->all(FLERR,
               "pair_coeff mlffd: {}: format_version {} is newer than this pair style supports ({}); "
               "upgrade mlffd-lammps",
               path, version, kFormatVersion);
  if (version < 1)
    error->all(FLERR, "pair_coeff mlffd: {}: format_version {} is invalid (expected 1..{})", path, version,
               kFormatVersion);

  // every field of the contract, with its JSON type
  static const json fields = json::parse(kMetadataFieldsJson);
  for (const auto &item : fields.items()) {
    const std::string &field = item.key();
    const std::string kind = item.value().get<std::string>();
    if (!meta.contains(field)) error->all(FLERR, "pair_coeff mlffd: {}: metadata lacks the field '{}'", path, field);
    if (!json_is(meta[field], kind))
      error->all(FLERR, "pair_coeff mlffd: {}: metadata field '{}' is {}, expected a JSON {}", path, field,
                 json_repr(meta[field]), kind);
  }
  elements.clear();
  for (const auto &el : meta["elements"]) {
    if (!el.is_string())
      error->all(FLERR, "pair_coeff mlffd: {}: metadata 'elements' must be a non-empty list of symbols, got {}", path,
                 json_repr(meta["elements"]));
    elements.push_back(el.get<std::string>());
  }
  if (elements.empty())
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'elements' must be a non-empty list of symbols, got []", path);
  // optional: the elements' standard masses (amu), to check the data file's type masses against
  element_masses.clear();
  if (meta.contains("masses")) {
    const json &masses = meta["masses"];
    bool ok = masses.is_array() && masses.size() == elements.size();
    if (ok)
      for (const auto &m : masses) ok = ok && m.is_number() && !m.is_boolean() && m.get<double>() > 0.0;
    if (!ok)
      error->all(FLERR, "pair_coeff mlffd: {}: metadata 'masses' is {}, expected one positive number (amu) per element",
                 path, json_repr(masses));
    for (const auto &m : masses) element_masses.push_back(m.get<double>());
  }
  has_uncertainty = meta.contains("uncertainty") && meta["uncertainty"].is_object();
  has_novelty = meta.contains("novelty") && meta["novelty"].is_object();
  static const json dtypes = json::parse(kDtypesJson);
  const std::string dt = meta["dtype"].get<std::string>();
  if (std::find(dtypes.begin(), dtypes.end(), json(dt)) == dtypes.end())
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'dtype' is {}, expected one of {}", path,
               json_repr(meta["dtype"]), dtypes.dump());
  if (dt == "float64")
    dtype = torch::kFloat64;
  else if (dt == "float32")
    dtype = torch::kFloat32;
  else
    error->all(FLERR, "pair_coeff mlffd: {}: dtype '{}' is not supported by this pair style (float32, float64)",
               path, dt);
  cutoff = meta["cutoff"].get<double>();
  if (!(cutoff > 0.0) || !std::isfinite(cutoff))
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'cutoff' is {}, expected a positive number (Angstrom)", path,
               json_repr(meta["cutoff"]));
  const int64_t layers = meta["num_interactions"].get<int64_t>();
  if (layers < 1)
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'num_interactions' is {}, expected a positive integer", path,
               json_repr(meta["num_interactions"]));
  num_interactions = (int) std::min<int64_t>(layers, std::numeric_limits<int>::max());
  // the ghost shell must cover L hops of r_c whatever 'interaction_range' says
  interaction_range = std::max(meta["interaction_range"].get<double>(), num_interactions * cutoff);
  if (!std::isfinite(interaction_range))
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'interaction_range' is {}, expected a finite number", path,
               json_repr(meta["interaction_range"]));

  // artifacts exported with mlffd's fused CPU kernels name the operator set they call; the
  // plugin links the kernels library it was built with (its operators load with the plugin)
  if (meta.contains("kernels")) {
    if (!meta["kernels"].is_number_integer() || meta["kernels"].get<int64_t>() < 1)
      error->all(FLERR, "pair_coeff mlffd: {}: metadata 'kernels' is {}, expected a positive integer", path,
                 json_repr(meta["kernels"]));
    if (meta["kernels"].get<int64_t>() > MLFFD_KERNELS_VERSION)
      error->all(FLERR,
                 "pair_coeff mlffd: {}: needs mlffd's fused kernels operator set {}, this plugin "
                 "was built with {}; rebuild mlffd-kernels and mlffd-lammps",
                 path, meta["kernels"].get<int64_t>(), MLFFD_KERNELS_VERSION);
  }
  check_module(path, meta);

  chunk_per_thread = 0;
  if (meta["model"].contains("chunk_atoms") && meta["model"]["chunk_atoms"].is_number_integer())
    chunk_per_thread = std::max<int64_t>(0, meta["model"]["chunk_atoms"].get<int64_t>());
  block_atoms_set = -1;
  graph_valid = false;
  model.eval();
  // evaluation only: parameters that require grad make every backward also build weight
  // gradients nobody reads (artifacts are exported without it, this covers older ones)
  for (auto p : model.parameters()) p.set_requires_grad(false);
  model_loaded = true;
  model_path = path;
}

/* ----------------------------------------------------------------------
   the metadata against the scripted module, the rules of mlffd.artifact.check_module: its
   'cutoff' attribute (required) equals metadata 'cutoff'; 'num_elements' (when present) the
   number of 'elements'; the length of the 'interactions' module list (when present)
   'num_interactions'; the dtype of its floating-point parameters and buffers 'dtype'
------------------------------------------------------------------------- */

void PairMLFFD::check_module(const std::string &path, const json &meta)
{
  // a number held as a float, an int or a one-element tensor attribute
  auto number = [&](const char *name, double &value) {
    const c10::IValue v = model.attr(name);
    if (v.isDouble())
      value = v.toDouble();
    else if (v.isInt())
      value = (double) v.toInt();
    else if (v.isTensor() && v.toTensor().numel() == 1)
      value = v.toTensor().item<double>();
    else
      error->all(FLERR, "pair_coeff mlffd: {}: the module's '{}' attribute is a {}, expected a number", path, name,
                 v.tagKind());
  };
  if (!model.hasattr("cutoff"))
    error->all(FLERR, "pair_coeff mlffd: {}: the TorchScript module has no 'cutoff' attribute: not an mlffd model",
               path);
  double found = 0.0;
  number("cutoff", found);
  if (!(std::fabs(found - cutoff) <= 1e-9 * std::max(1.0, std::fabs(found))))
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'cutoff' is {} but the module's cutoff is {}", path,
               json_repr(meta["cutoff"]), json(found).dump());
  if (model.hasattr("num_elements")) {
    double n = 0.0;
    number("num_elements", n);
    if (n != (double) elements.size())
      error->all(FLERR, "pair_coeff mlffd: {}: metadata 'elements' lists {} element(s) but the module has {}", path,
                 elements.size(), n == std::floor(n) && std::fabs(n) < 1e15 ? json((int64_t) n).dump() : json(n).dump());
  }
  if (model.hasattr("interactions") && model.attr("interactions").isModule()) {
    size_t n = 0;
    for (const auto &child : model.attr("interactions").toModule().children()) {
      (void) child;
      n++;
    }
    if ((int64_t) n != meta["num_interactions"].get<int64_t>())
      error->all(FLERR, "pair_coeff mlffd: {}: metadata 'num_interactions' is {} but the module has {} interaction layers",
                 path, json_repr(meta["num_interactions"]), n);
  }
  std::set<std::string> found_dtypes;
  auto note = [&](const torch::Tensor &t) {
    if (t.is_floating_point()) found_dtypes.insert(dtype_name(t.scalar_type()));
  };
  for (const auto &p : model.parameters(true)) note(p);
  for (const auto &b : model.buffers(true)) note(b);
  const std::string declared = meta["dtype"].get<std::string>();
  if (!found_dtypes.empty() && !(found_dtypes.size() == 1 && *found_dtypes.begin() == declared)) {
    std::string names;
    for (const auto &n : found_dtypes) names += (names.empty() ? "" : ", ") + n;
    error->all(FLERR, "pair_coeff mlffd: {}: metadata 'dtype' is {} but the module's parameters are {}", path,
               json_repr(meta["dtype"]), names);
  }
  if (!model.find_method("forward"))
    error->all(FLERR, "pair_coeff mlffd: {}: the TorchScript module has no forward method: not an mlffd model", path);
}

/* ----------------------------------------------------------------------
   centre atoms per block of the model's bounded-memory evaluation, as mlffd.artifact.block_atoms
   does in Python: 'block N' if given; CUDA: MLFFD_CUDA_BLOCK_ATOMS (keeps the GPU busy); CPU: the
   exported chunk_atoms per thread, or one graph for graphs of up to MLFFD_ONE_GRAPH_EDGES edges
   without ghost nodes (one rank, images folded): with ghost nodes the blocks stay, because a
   block of ghosts skips the last layer, work one graph would have to do for every ghost
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
  if (domain->dimension != 3)
    error->all(FLERR, "pair_style mlffd requires a 3-D box (dimension 3); this input uses 'dimension {}'",
               domain->dimension);

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
  check_box();
  check_masses();
  if ((uncertainty_threshold > 0.0 || uncertainty_flag) && !has_uncertainty)
    error->all(FLERR, "pair_style mlffd: model {} carries no calibrated uncertainty (train it with model_overrides "
               "ensemble >= 2); remove 'uncertainty' from pair_style and 'fix pair ... uncertainty'", model_path);
  if ((novelty_threshold > 0.0 || novelty_flag) && !has_novelty)
    error->all(FLERR, "pair_style mlffd: model {} carries no novelty reference (export it with the current mlffd, or "
               "'mlffd calibrate --refit TRAINING_DATA'); remove 'novelty' from pair_style and 'fix pair ... novelty'",
               model_path);
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

/* ----------------------------------------------------------------------
   the elements of pair_coeff against the type masses of the data file: a type whose mass is
   another element's of the model (within 1 %) while pair_coeff maps it to one whose mass is
   more than 5 % away is an error (the element order does not follow the types); any other
   mass more than 5 % from the element's is a warning (isotopes, hydrogen mass repartitioning)
------------------------------------------------------------------------- */

void PairMLFFD::check_masses()
{
  if (element_masses.empty() || atom->rmass_flag || atom->mass == nullptr) return;
  for (int t = 1; t <= atom->ntypes; t++) {
    if (atom->mass_setflag && !atom->mass_setflag[t]) continue;
    const double m = atom->mass[t];
    const long s = type_species[t];
    const double expected = element_masses[s];
    if (std::fabs(m - expected) <= 0.05 * expected) continue;
    for (size_t k = 0; k < elements.size(); k++)
      if ((long) k != s && std::fabs(m - element_masses[k]) <= 0.01 * element_masses[k])
        error->all(FLERR, "pair_coeff mlffd: atom type {} has mass {:.4g}, that of {}, but pair_coeff maps it to {} "
                   "(mass {:.4g}): list the elements in the order of the atom types", t, m, elements[k], elements[s], expected);
    if (comm->me == 0)
      error->warning(FLERR, "pair mlffd: atom type {} ({}) has mass {:.4g}, {:.4g} for {}: fine for isotopes or "
                     "mass repartitioning, otherwise check pair_coeff's element order", t, elements[s], m, expected, elements[s]);
  }
}

/* ----------------------------------------------------------------------
   uncertainty of an ensemble student (mlffd/models/uncertainty.py): each node's force variance
   added to its LAMMPS atom, ghosts summed onto their owners by reverse communication (the
   variances add, so the result equals one process's), the square root per local atom; the
   energy deviations of the heads summed over ranks. Then the threshold: a warning at most
   every N steps, or an error on every rank naming the step and the worst atom.
------------------------------------------------------------------------- */

void PairMLFFD::uncertainty(const Outputs &out, int nall)
{
  if (atom->nmax > nmax_uncertainty) {
    memory->destroy(force_uncertainty);
    nmax_uncertainty = atom->nmax;
    memory->create(force_uncertainty, nmax_uncertainty, "pair:force_uncertainty");
  }
  std::fill(force_uncertainty, force_uncertainty + nall, 0.0);
  const double *fv = out.force_variance.data_ptr<double>();
  for (size_t n = 0; n < node_atom.size(); n++) force_uncertainty[node_atom[n]] += fv[n];
  comm->reverse_comm(this);
  const int nlocal = atom->nlocal;
  for (int i = 0; i < nlocal; i++) {
    if (!std::isfinite(force_uncertainty[i]))
      fail(fmt::format("pair mlffd: step {}: model {} returned a non-finite force uncertainty for atom {}",
                       update->ntimestep, model_path, (tagint) atom->tag[i]));
    force_uncertainty[i] = std::sqrt(std::max(force_uncertainty[i], 0.0));
  }
  // energy: the heads' deviations summed over ranks, their root mean square
  const int64_t k = out.energy_deviations.numel();
  std::vector<double> mine(out.energy_deviations.data_ptr<double>(), out.energy_deviations.data_ptr<double>() + k),
      all(k, 0.0);
  MPI_Allreduce(mine.data(), all.data(), (int) k, MPI_DOUBLE, MPI_SUM, world);
  double sq = 0.0;
  for (double d : all) sq += d * d;
  energy_uncertainty = k ? std::sqrt(sq / (double) k) : 0.0;
  const Extreme top = extreme(force_uncertainty, uncertainty_threshold);
  max_force_uncertainty = top.value;
  if (top.above == 0) return;
  flag(fmt::format("pair mlffd: step {}: force uncertainty {:.3g} eV/A on atom {} exceeds {:g} eV/A ({} atom(s) above "
                   "it); energy uncertainty {:.3g} eV: the structure is outside what model {} was trained on",
                   update->ntimestep, top.value, top.id, uncertainty_threshold, top.above, energy_uncertainty, model_path),
       last_warning);
}

/* ----------------------------------------------------------------------
   the largest of a per-local-atom quantity over all ranks, its atom's ID, and how many atoms
   exceed a threshold (none when it is 0); then a warning at most every N steps, or an error
------------------------------------------------------------------------- */

PairMLFFD::Extreme PairMLFFD::extreme(const double *value, double threshold)
{
  double worst = 0.0, worst_id = -1.0;    // the ID as a double: one broadcast from the owner
  int above = 0;
  for (int i = 0; i < atom->nlocal; i++) {
    if (value[i] > worst) {
      worst = value[i];
      worst_id = (double) atom->tag[i];
    }
    if (threshold > 0.0 && value[i] > threshold) above++;
  }
  struct { double value; int rank; } in{worst, comm->me}, top{};
  MPI_Allreduce(&in, &top, 1, MPI_DOUBLE_INT, MPI_MAXLOC, world);
  MPI_Bcast(&worst_id, 1, MPI_DOUBLE, top.rank, world);
  Extreme e;
  e.value = top.value;
  e.id = (tagint) worst_id;
  MPI_Allreduce(&above, &e.above, 1, MPI_INT, MPI_SUM, world);
  return e;
}

void PairMLFFD::flag(const std::string &what, bigint &last)
{
  if (uncertainty_stop) error->all(FLERR, "{}", what);
  if (last < 0 || update->ntimestep - last >= uncertainty_every) {
    last = update->ntimestep;
    if (comm->me == 0) error->warning(FLERR, "{}", what);
  }
}

/* ----------------------------------------------------------------------
   novelty of a student with a novelty reference (mlffd/models/novelty.py): only atoms that
   carry energy have one, so each local atom takes its node's value (no communication); the
   largest over ranks, then the threshold as for the uncertainty.
------------------------------------------------------------------------- */

void PairMLFFD::novelty(const Outputs &out)
{
  const int nlocal = atom->nlocal;
  if (atom->nmax > nmax_novelty) {
    memory->destroy(atom_novelty);
    nmax_novelty = atom->nmax;
    memory->create(atom_novelty, nmax_novelty, "pair:atom_novelty");
  }
  std::fill(atom_novelty, atom_novelty + nlocal, 0.0);
  const double *nv = out.atom_novelty.data_ptr<double>();
  for (size_t n = 0; n < node_atom.size(); n++) {
    const int i = node_atom[n];
    if (i >= nlocal) continue;
    if (!std::isfinite(nv[n]))
      fail(fmt::format("pair mlffd: step {}: model {} returned a non-finite novelty for atom {}", update->ntimestep,
                       model_path, (tagint) atom->tag[i]));
    atom_novelty[i] = std::max(atom_novelty[i], nv[n]);
  }
  const Extreme top = extreme(atom_novelty, novelty_threshold);
  max_novelty = top.value;
  if (top.above == 0) return;
  flag(fmt::format("pair mlffd: step {}: novelty {:.3g} on atom {} exceeds {:g} ({} atom(s) above it): the structure "
                   "is unlike what model {} was trained on",
                   update->ntimestep, top.value, top.id, novelty_threshold, top.above, model_path),
       last_novelty_warning);
}

int PairMLFFD::pack_reverse_comm(int n, int first, double *buf)
{
  for (int i = first; i < first + n; i++) buf[i - first] = force_uncertainty[i];
  return n;
}

void PairMLFFD::unpack_reverse_comm(int n, int *list, double *buf)
{
  for (int k = 0; k < n; k++) force_uncertainty[list[k]] += buf[k];
}

/* ----------------------------------------------------------------------
   'fix pair N mlffd uncertainty 1' makes the per-atom force uncertainty (eV/A) a per-atom
   vector for dump, compute reduce and variables ('fix pair N mlffd novelty 1' the novelty);
   'energy_uncertainty', 'max_force_uncertainty' (eV, eV/A) and 'max_novelty' are global
   scalars for library callers
------------------------------------------------------------------------- */

void *PairMLFFD::extract(const char *name, int &dim)
{
  dim = 0;
  if (strcmp(name, "uncertainty_flag") == 0) return (void *) &uncertainty_flag;
  if (strcmp(name, "energy_uncertainty") == 0) return (void *) &energy_uncertainty;
  if (strcmp(name, "max_force_uncertainty") == 0) return (void *) &max_force_uncertainty;
  if (strcmp(name, "novelty_flag") == 0) return (void *) &novelty_flag;
  if (strcmp(name, "max_novelty") == 0) return (void *) &max_novelty;
  return nullptr;
}

void *PairMLFFD::extract_peratom(const char *name, int &ncol)
{
  ncol = 0;
  if (strcmp(name, "uncertainty") == 0) return (void *) force_uncertainty;
  if (strcmp(name, "novelty") == 0) return (void *) atom_novelty;
  return nullptr;
}

/* ----------------------------------------------------------------------
   the box: 3-D (the models are), and a ghost shell R + skin that LAMMPS can build from a
   bounded number of periodic images of the box (geometry.max_periodic_images): an interaction
   range far beyond the box would make LAMMPS copy the box without end
------------------------------------------------------------------------- */

void PairMLFFD::check_box()
{
  if (domain->dimension != 3)
    error->all(FLERR, "pair_style mlffd requires a 3-D box (dimension 3); this input uses 'dimension {}'",
               domain->dimension);
  const double shell = interaction_range + neighbor->skin;
  // rows a, b, c of LAMMPS' restricted triclinic box (xy, xz, yz are zero for an orthogonal one)
  const double a[3] = {domain->xprd, 0.0, 0.0}, b[3] = {domain->xy, domain->yprd, 0.0},
               c[3] = {domain->xz, domain->yz, domain->zprd};
  auto cross_norm = [](const double *u, const double *v) {
    const double w[3] = {u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]};
    return std::sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]);
  };
  const double volume = domain->xprd * domain->yprd * domain->zprd;
  const double heights[3] = {volume / cross_norm(b, c), volume / cross_norm(c, a), volume / cross_norm(a, b)};
  const int periodic[3] = {domain->xperiodic, domain->yperiodic, domain->zperiodic};
  double images = 1.0;
  for (int k = 0; k < 3; k++)
    if (periodic[k]) images *= 2.0 * std::ceil(shell / heights[k]) + 1.0;
  if (!(images <= (double) mlffd_contract::kMaxPeriodicImages))
    error->all(FLERR,
               "pair_style mlffd: the ghost shell of {:g} A (interaction range {:g} A of model {} + skin {:g} A) "
               "spans {:.3g} periodic images of this box (heights {:.4g}, {:.4g}, {:.4g} A); mlffd accepts at "
               "most {} (geometry.max_periodic_images of contract.json)",
               shell, interaction_range, model_path, neighbor->skin, images, heights[0], heights[1], heights[2],
               mlffd_contract::kMaxPeriodicImages);
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
   Within r_c, the distances computed here also check the geometry limits at no extra pass: true
   when an atom has a pair closer than min_pair_distance_A or more than max_neighbors_per_atom
   neighbours (report_geometry says which).
------------------------------------------------------------------------- */

bool PairMLFFD::gather_pairs(bool skin_pairs)
{
  const double *x = atom->x[0];    // LAMMPS' per-atom arrays are contiguous
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  const double rcsq = cutoff * cutoff;
  const double closesq = mlffd_contract::kMinPairDistanceA * mlffd_contract::kMinPairDistanceA;
  std::atomic<bool> outside{false};
  size_t total = adj_j.size();
  for (int a : frontier) {
    adj_first[a] = (int) total;
    total += numneigh[a];
  }
  adj_j.resize(total);
  at::parallel_for(0, (int64_t) frontier.size(), 256, [&](int64_t begin, int64_t end) {
    bool bad = false;
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
        double nearest = rcsq;
        for (int jj = 0; jj < jnum; jj++) {
          const int j = jlist[jj] & NEIGHMASK;
          const double *xj = x + 3 * j;
          const double dx = xj[0] - xi[0], dy = xj[1] - xi[1], dz = xj[2] - xi[2];
          const double rsq = dx * dx + dy * dy + dz * dz;
          out[count] = j;
          count += rsq < rcsq;
          nearest = std::min(nearest, rsq);
        }
        bad |= nearest < closesq || count > mlffd_contract::kMaxNeighborsPerAtom;
      }
      adj_count[i] = count;
    }
    if (bad) outside.store(true, std::memory_order_relaxed);
  });
  return outside.load();
}

/* ----------------------------------------------------------------------
   the error for atoms whose pairs break the geometry limits: pairs closer than
   min_pair_distance_A (an atom and another, or an image of itself) or more than
   max_neighbors_per_atom neighbours within r_c. Scans the lists of 'atoms' again: only after a
   check found a problem.
------------------------------------------------------------------------- */

void PairMLFFD::report_geometry(const std::vector<int> &atoms)
{
  using namespace mlffd_contract;
  double **x = atom->x;
  const double rcsq = cutoff * cutoff;
  const double closesq = kMinPairDistanceA * kMinPairDistanceA;
  std::set<std::pair<tagint, tagint>> seen;    // each pair once: the full list holds both directions
  std::string pairs, crowded;
  int ncrowded = 0;
  auto id = [&](int i) { return atom->tag_enable ? atom->tag[i] : (tagint) i; };
  for (int i : atoms) {
    const int *jlist = list->firstneigh[i];
    int count = 0;
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      const double rsq = dx * dx + dy * dy + dz * dz;
      count += rsq < rcsq;
      if (rsq < closesq && seen.insert(std::minmax(id(i), id(j))).second && seen.size() <= 5) {
        const std::string what = id(i) == id(j) ? fmt::format("atom {} and a periodic image of itself", id(i))
                                                : fmt::format("atoms {} and {}", std::min(id(i), id(j)), std::max(id(i), id(j)));
        pairs += fmt::format("{}{} are {:.4g} A apart", pairs.empty() ? "" : "; ", what, std::sqrt(rsq));
      }
    }
    if (count > kMaxNeighborsPerAtom && ncrowded++ < 5)
      crowded += fmt::format("{}atom {} has {}", crowded.empty() ? "" : "; ", id(i), count);
  }
  if (!seen.empty())
    fail(fmt::format("pair mlffd: step {}: {}{}; mlffd accepts no pair closer than {} A "
                     "(geometry.min_pair_distance_A of contract.json): overlapping atoms, the simulation is unstable",
                     update->ntimestep, pairs, seen.size() > 5 ? fmt::format(" (and {} more pairs)", seen.size() - 5) : "",
                     kMinPairDistanceA));
  if (ncrowded)
    fail(fmt::format("pair mlffd: step {}: {} neighbours within the cutoff {} A{}; mlffd accepts at most {} "
                     "(geometry.max_neighbors_per_atom of contract.json)",
                     update->ntimestep, crowded, cutoff, ncrowded > 5 ? fmt::format(" (and {} more atoms)", ncrowded - 5) : "",
                     kMaxNeighborsPerAtom));
  fail(fmt::format("pair mlffd: step {}: the geometry check failed for atom(s) {} (overlapping or too many neighbours)",
                   update->ntimestep, atom_ids(atom, atoms)));
}

/* ----------------------------------------------------------------------
   an error from the rank that found the problem: other ranks need not reach the same point.
   On one rank error->all, whose 'ERROR:' line ends the run the usual way.
------------------------------------------------------------------------- */

void PairMLFFD::fail(const std::string &message)
{
  if (comm->nprocs == 1) error->all(FLERR, message);
  error->one(FLERR, message);
}

/* ----------------------------------------------------------------------
   every coordinate of the rank's atoms (ghosts included, so every rank names the same atoms)
   finite and within max_abs_coordinate_A: one pass over 3 (nlocal + nghost) numbers per step
------------------------------------------------------------------------- */

void PairMLFFD::check_positions(int nall)
{
  const double limit = mlffd_contract::kMaxAbsCoordinateA;
  const double *x = atom->x[0];
  bool bad = false;
  for (int64_t k = 0; k < 3 * (int64_t) nall; k++) bad |= !(std::fabs(x[k]) <= limit);    // NaN fails too
  // collective: every rank learns whether any rank found a bad coordinate, and all stop
  // together with the first such rank's message (error->one on several ranks at once races
  // MPI_Abort against their output, which can then be lost)
  int mine = bad ? comm->me : comm->nprocs, first = mine;
  if (comm->nprocs > 1) MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world);
  if (first == comm->nprocs) return;
  std::string message;
  if (bad) {
    std::vector<int> nonfinite, far;
    for (int i = 0; i < nall; i++) {
      const double *xi = x + 3 * i;
      if (!std::isfinite(xi[0]) || !std::isfinite(xi[1]) || !std::isfinite(xi[2]))
        nonfinite.push_back(i);
      else if (!(std::max({std::fabs(xi[0]), std::fabs(xi[1]), std::fabs(xi[2])}) <= limit))
        far.push_back(i);
    }
    message = !nonfinite.empty()
                  ? fmt::format("pair mlffd: step {}: NaN or infinite coordinates of atom(s) {}: the simulation is "
                                "unstable (a time step too large, overlapping atoms, or bad input)",
                                update->ntimestep, atom_ids(atom, nonfinite))
                  : fmt::format("pair mlffd: step {}: coordinates of atom(s) {} beyond {:g} A "
                                "(geometry.max_abs_coordinate_A of contract.json)",
                                update->ntimestep, atom_ids(atom, far), limit);
  }
  if (comm->nprocs > 1) {
    int length = (int) message.size();
    MPI_Bcast(&length, 1, MPI_INT, first, world);
    message.resize(length);
    MPI_Bcast(message.data(), length, MPI_CHAR, first, world);
  }
  error->all(FLERR, message);
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
    if (frontier.empty()) break;    // nothing further is in reach
    if (gather_pairs(skin_pairs)) report_geometry(frontier);
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
  if (!skin_pairs && ne > mlffd_contract::kMaxEdges)
    fail(fmt::format("pair mlffd: step {}: the graph of this rank has {} edges, mlffd accepts at most {} "
                     "(geometry.max_edges of contract.json); use more MPI ranks",
                     update->ntimestep, ne, mlffd_contract::kMaxEdges));
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
    fail(fmt::format("pair mlffd: step {}: evaluating model {} failed: {}", update->ntimestep, model_path,
                     first_line(e.what())));
  }
}

/* ----------------------------------------------------------------------
   'graph reuse': the geometry limits checked on the device from the squared distances of every
   candidate pair (d2_all, computed anyway to pick the edges within r_c) and the kept edges: one
   reduction each and one small copy after the selection of the edges, which waits for the
   device already. The atoms are named from the host lists only when a limit is broken.
------------------------------------------------------------------------- */

void PairMLFFD::check_edges(const torch::Tensor &d2_all, const torch::Tensor &edge_index, int64_t nnodes)
{
  using namespace mlffd_contract;
  const int64_t ne = edge_index.size(1);
  if (ne > kMaxEdges)
    fail(fmt::format("pair mlffd: step {}: the graph of this rank has {} edges, mlffd accepts at most {} "
                     "(geometry.max_edges of contract.json); use more MPI ranks",
                     update->ntimestep, ne, kMaxEdges));
  if (d2_all.size(0) == 0) return;
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(d2_all.device());
  torch::Tensor most = ne ? torch::bincount(edge_index[0], {}, nnodes).max().to(torch::kFloat64)
                          : torch::zeros({}, f64);
  torch::Tensor stats = torch::stack({d2_all.min(), most}).cpu();
  const double nearest = stats[0].item<double>(), crowded = stats[1].item<double>();
  if (nearest >= kMinPairDistanceA * kMinPairDistanceA && crowded <= (double) kMaxNeighborsPerAtom) return;
  std::vector<int> expanded;    // the atoms whose pairs the graph holds
  for (int i : node_atom)
    if (level[i] <= num_interactions - 1) expanded.push_back(i);
  report_geometry(expanded);
}

/* ----------------------------------------------------------------------
   the model's outputs on the host: a dictionary with every key of the contract, tensors of the
   sizes of the graph. forces and energy every step, the others when LAMMPS asks for them this
   step (undefined tensors otherwise); a non-finite value in any of them is an error naming the
   atoms, never a result.
------------------------------------------------------------------------- */

PairMLFFD::Outputs PairMLFFD::check_outputs(const torch::jit::IValue &result, int64_t nnodes)
{
  if (!result.isGenericDict())
    fail(fmt::format("pair mlffd: model {}: forward returned a {}, expected a dictionary of tensors", model_path,
                     result.tagKind()));
  const auto out = result.toGenericDict();
  static const json keys = json::parse(mlffd_contract::kOutputsJson);
  std::string missing;
  for (const auto &key : keys)
    if (!out.contains(c10::IValue(key.get<std::string>())))
      missing += (missing.empty() ? "" : ", ") + key.get<std::string>();
  if (!missing.empty())
    fail(fmt::format("pair mlffd: model {}: forward returned no {}; an mlffd artifact returns {}", model_path,
                     missing, keys.dump()));
  auto sized = [&](const char *key, int64_t numel) {
    const c10::IValue v = out.at(c10::IValue(std::string(key)));
    if (!v.isTensor())
      fail(fmt::format("pair mlffd: model {}: output '{}' is a {}, expected a tensor", model_path, key, v.tagKind()));
    const torch::Tensor t = v.toTensor();
    if (t.numel() != numel || !t.is_floating_point()) {
      std::string shape;
      for (int64_t size : t.sizes()) shape += (shape.empty() ? "" : ", ") + std::to_string(size);
      fail(fmt::format("pair mlffd: model {}: output '{}' has shape [{}] and dtype {} for a graph of {} atoms, "
                       "expected {} floating-point values",
                       model_path, key, shape, dtype_name(t.scalar_type()), nnodes, numel));
    }
    return t.detach();
  };
  auto host = [](const torch::Tensor &t) { return t.to(torch::kCPU, torch::kFloat64).contiguous(); };
  const torch::Tensor forces = sized("forces", 3 * nnodes), energy = sized("energy", 1),
                      atom_energies = sized("atom_energies", nnodes), virial = sized("virial", 9),
                      atom_virial = sized("atom_virial", 9 * nnodes);
  Outputs o;
  o.forces = host(forces);
  o.energy = host(energy).item<double>();
  if (vflag_global) o.virial = host(virial);
  if (eflag_atom) o.atom_energies = host(atom_energies);
  if (vflag_atom) o.atom_virial = host(atom_virial);
  if (has_uncertainty && (uncertainty_threshold > 0.0 || uncertainty_flag)) {
    if (!out.contains(c10::IValue(std::string("force_variance"))) ||
        !out.contains(c10::IValue(std::string("energy_deviations"))))
      fail(fmt::format("pair mlffd: model {}: its metadata promises uncertainty but forward returned no "
                       "force_variance / energy_deviations", model_path));
    o.force_variance = host(sized("force_variance", nnodes));
    const c10::IValue dev = out.at(c10::IValue(std::string("energy_deviations")));
    o.energy_deviations = host(dev.toTensor().detach());
  }
  if (has_novelty && (novelty_threshold > 0.0 || novelty_flag)) {
    if (!out.contains(c10::IValue(std::string("atom_novelty"))))
      fail(fmt::format("pair mlffd: model {}: its metadata promises a novelty but forward returned no atom_novelty",
                       model_path));
    o.atom_novelty = host(sized("atom_novelty", nnodes));
  }

  bool bad = !std::isfinite(o.energy);
  for (const torch::Tensor *t : {&o.forces, &o.virial, &o.atom_energies, &o.atom_virial}) {
    if (!t->defined()) continue;
    const double *p = t->data_ptr<double>();
    for (int64_t k = 0; k < t->numel(); k++) bad |= !std::isfinite(p[k]);
  }
  if (!bad) return o;

  // which atoms: the nodes with a non-finite per-atom output
  torch::Tensor per_node = torch::cat({o.forces.view({nnodes, 3}), host(atom_energies).view({nnodes, 1}),
                                       host(atom_virial).view({nnodes, 9})}, 1);
  torch::Tensor rows = torch::isfinite(per_node).all(1).logical_not().nonzero().view(-1);
  std::vector<int> atoms;
  for (int64_t k = 0; k < rows.size(0); k++) atoms.push_back(node_atom[rows[k].item<int64_t>()]);
  std::string what;
  for (const auto &[key, t] : {std::make_pair("energy", energy), std::make_pair("atom_energies", atom_energies),
                               std::make_pair("forces", forces), std::make_pair("virial", virial),
                               std::make_pair("atom_virial", atom_virial)})
    if (!torch::isfinite(t).all().item<bool>()) what += (what.empty() ? "" : ", ") + std::string(key);
  fail(fmt::format("pair mlffd: step {}: model {} returned non-finite values ({}){}; the positions are finite "
                   "and no pair is closer than {} A: the model fails on this structure",
                   update->ntimestep, model_path, what,
                   atoms.empty() ? std::string(", its per-atom values are finite")
                                 : fmt::format(" for atom(s) {}", atom_ids(atom, atoms)),
                   mlffd_contract::kMinPairDistanceA));
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
  check_positions(nall);

  // the graph: rebuilt every step ('graph rebuild': pairs within r_c now; the distances check
  // the geometry limits), or only when LAMMPS rebuilt its lists ('graph reuse': atoms keep their
  // indices between builds; all pairs of the r_c + skin list, those beyond r_c dropped on the
  // device each step, where the limits are checked)
  const bool reuse = graph_reuse();
  if (!reuse || !graph_valid || neighbor->ago == 0 || nall != graph_nall || nlocal != graph_nlocal)
    build_graph(reuse);
  const int64_t nnodes = (int64_t) node_atom.size();
  // coordinates in float64 on the device; edge shifts x[image] - x[rep] are lattice vectors of
  // the current box (followed when it changes)
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor xall = torch::from_blob(x[0], {(int64_t) nall, 3}, f64).to(device);
  torch::Tensor pos64 = xall.index_select(0, g_node_atom);
  torch::Tensor edge_index = g_edge_index, shifts = g_shifts;
  if (reuse) {
    torch::Tensor shift64 = xall.index_select(0, g_image) - xall.index_select(0, g_rep);
    torch::Tensor d = pos64.index_select(0, edge_index[1]) - pos64.index_select(0, edge_index[0]) + shift64;
    torch::Tensor d2 = d.mul(d).sum(1);
    torch::Tensor keep = d2.lt(cutoff * cutoff).nonzero().squeeze(1);
    edge_index = edge_index.index_select(1, keep);
    shifts = shift64.index_select(0, keep).to(dtype);
    check_edges(d2, edge_index, nnodes);
  }
  const Outputs out = check_outputs(evaluate(pos64.to(dtype), g_species, edge_index, shifts, g_mask), nnodes);

  // forces on ghost atoms too: LAMMPS' reverse communication adds them to their owners
  const double *fp = out.forces.data_ptr<double>();
  for (int64_t n = 0; n < nnodes; n++) {
    const int i = node_atom[n];
    f[i][0] += fp[3 * n + 0];
    f[i][1] += fp[3 * n + 1];
    f[i][2] += fp[3 * n + 2];
  }

  if (out.force_variance.defined()) uncertainty(out, nall);
  if (out.atom_novelty.defined()) novelty(out);

  if (eflag_global) eng_vdwl += out.energy;
  if (eflag_atom) {
    const double *ep = out.atom_energies.data_ptr<double>();
    for (int i = 0; i < nlocal; i++) eatom[i] += ep[i];
  }
  // LAMMPS Voigt order xx, yy, zz, xy, xz, yz; off-diagonals symmetrised
  if (vflag_global) {
    const double *wp = out.virial.data_ptr<double>();
    virial[0] += wp[0];
    virial[1] += wp[4];
    virial[2] += wp[8];
    virial[3] += 0.5 * (wp[1] + wp[3]);
    virial[4] += 0.5 * (wp[2] + wp[6]);
    virial[5] += 0.5 * (wp[5] + wp[7]);
  }
  if (vflag_atom) {
    const double *vp = out.atom_virial.data_ptr<double>();
    for (int64_t n = 0; n < nnodes; n++) {
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
