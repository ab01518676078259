"""Two CPU performance levers for the shipped students, measured for speed AND accuracy.

1. ONNX Runtime. The student's forces are ``-dE/dr`` by autograd, which neither ONNX exporter
   takes directly (see the "export attempts" table this script prints). What works: trace the
   whole energy+forces computation of the pure-PyTorch path (``model.fused = False``) for one
   fixed input shape with ``make_fx`` - autograd runs during tracing, so the backward pass is
   recorded as plain aten ops - decompose it to core aten (``silu_backward`` & co. have no ONNX
   translation), then export that flat graph with ``torch.onnx.export(..., dynamo=True)``.
   The graph has fixed sizes (atoms N, edges E, padded neighbour slots M), so:

   * timing exports one graph per structure size, with the exact edges of the structure;
   * accuracy on the held-out teacher frames (48-65 atoms) exports one graph for a padded
     shape: frames are padded with far-away dummy atoms and with dummy edges longer than the
     cutoff so that every atom owns exactly M edges (they contribute exactly zero energy/force).

   Timed against the shipped TorchScript artifact (mlffd's fused C++ kernels) and against the
   same pure-PyTorch math scripted (``torch.jit.script`` with ``fused = False``), interleaved in
   one process (``--threads``, default 2; ONNX Runtime intra-op threads the same).

2. int8 weights. ``quantize_dynamic`` cannot be used (no autograd through quantized ops, the
   forces come out zero); instead measure (a) the ACCURACY cost of int8 weights by fake
   quantisation (per-output-channel symmetric int8 quantise -> dequantise of every Linear weight
   and of the Interaction mixing matrices w0/w1/w2) and (b) whether int8 matmuls would be faster
   at the model's shapes at all (forward of one dynamic-quantised Linear vs float, 1024 rows).

Usage: ``.venv/bin/python tools/levers/onnx_int8.py --models tiny --sizes 512 --repeats 5``
(``--parts export,speed,accuracy,int8`` selects sections). Timings print the 1-minute load
average next to them: on a shared machine, numbers taken at load > ~0.5 are not trustworthy
(2-thread PyTorch degrades far more than ONNX Runtime when its threads are preempted).
Needs ``pip install onnx onnxruntime onnxscript`` (not project dependencies).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mlffd.artifact import load
from mlffd.bench.workers import _artifact_inputs, si_supercell
from mlffd.models import load_student
from mlffd.models.potential import centre_layout, max_neighbours
from mlffd.neighbors import neighbor_list
from mlffd.registry import resolve

TEST_FRAMES = "data/si/test.extxyz.xz"


# -- the exportable energy + forces module ---------------------------------------------------------


def pad_layout(edge_index: Tensor, n_atoms: int) -> tuple[Tensor, int]:
    """Padded-neighbour index ``centre * M + slot`` of each edge and ``M`` (as the PyTorch path
    of :meth:`StudentPotential.atomic_energies` builds them; data-dependent, so computed outside
    the exported graph)."""
    order, offsets, slot_sorted = centre_layout(edge_index[0], n_atoms, True)
    max_nbrs = max_neighbours(offsets)
    slot = slot_sorted if order.shape[0] == 0 else torch.empty_like(slot_sorted).index_copy_(0, order, slot_sorted)
    return edge_index[0] * max_nbrs + slot, max_nbrs


class EnergyForces(nn.Module):
    """``(energy, forces)`` of the pure-PyTorch student for fixed ``n_atoms`` and ``max_nbrs``.

    The same math as ``StudentPotential.atomic_energies`` + ``conservative_outputs`` (one graph),
    with the data-dependent pieces taken out: ``pad_index`` is an input, ``one_hot`` (which checks
    the largest species on the data) is a comparison. ``mode`` picks how forces are taken:
    ``"autograd"`` (``torch.autograd.grad``) or ``"func"`` (``torch.func.grad_and_value``).
    """

    def __init__(self, model: nn.Module, n_atoms: int, max_nbrs: int, mode: str = "autograd") -> None:
        super().__init__()
        self.model = model
        self.n_atoms = n_atoms
        self.max_nbrs = max_nbrs
        self.mode = mode

    def energy(self, vectors: Tensor, species: Tensor, edge_index: Tensor, pad_index: Tensor, mask: Tensor) -> Tensor:
        m = self.model
        onehot = (species.unsqueeze(-1) == torch.arange(m.num_elements)).to(vectors.dtype)
        h = m.embedding(species)
        ang_t, radial = m.padded_features(vectors, pad_index, self.n_atoms, self.max_nbrs)
        for layer in m.interactions:
            z_nb = layer.messages(h, onehot).index_select(0, edge_index[1])
            h = layer(h, z_nb, ang_t, radial, pad_index)
        return (m.atom_energy_from_features(h, species) * mask).sum()

    def forward(self, positions: Tensor, species: Tensor, edge_index: Tensor, shifts: Tensor,
                pad_index: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        v = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) + shifts
        if self.mode == "autograd":
            v = v.detach().requires_grad_(True)
            with torch.enable_grad():
                e = self.energy(v, species, edge_index, pad_index, mask)
                (g,) = torch.autograd.grad([e], [v])
        else:
            g, e = torch.func.grad_and_value(lambda vv: self.energy(vv, species, edge_index, pad_index, mask))(v)
        # force on the centre +g, on the neighbour -g (outputs.add_edge_gradients)
        forces = torch.zeros_like(positions).index_add(0, edge_index[0], g).index_add(0, edge_index[1], -g)
        return e, forces


def flat_graph(module: nn.Module, inputs: tuple) -> torch.fx.GraphModule:
    """Forward + backward of ``module`` for these input shapes as one graph of core aten ops."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    return make_fx(module, decomposition_table=core_aten_decompositions(), tracing_mode="real")(*inputs)


def export_onnx(module: nn.Module, inputs: tuple, path: Path) -> None:
    """The working recipe: make_fx (decomposed) -> torch.onnx.export(dynamo=True)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(flat_graph(module, inputs), inputs, str(path), dynamo=True, opset_version=18, verbose=False)


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess, names


def ort_call(sess, names, inputs: tuple) -> tuple[np.ndarray, np.ndarray]:
    e, f = sess.run(None, dict(zip(names, (t.numpy() for t in inputs))))
    return e, f


def one_line(ex: BaseException) -> str:
    """Exception type and the most telling line of its message (ONNX errors are pages long)."""
    lines = [ln.strip() for ln in str(ex).splitlines() if ln.strip()]
    key = next((ln for ln in lines if ln.startswith("<class")), lines[0] if lines else "")
    return f"{type(ex).__name__}: {key}"[:300].replace("|", "/")


@contextlib.contextmanager
def silenced():
    """Swallow stdout/stderr at the file-descriptor level (the TorchScript exporter prints whole
    graphs on failure) and Python warnings."""
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def export_attempts(model: nn.Module, inputs: tuple, n_atoms: int, max_nbrs: int, tmp: Path) -> list[tuple[str, str]]:
    """Which export routes work (the direct ones are expected to fail; kept to document why)."""
    results = []

    def attempt(name, fn):
        t0 = time.perf_counter()
        try:
            with silenced():
                fn()
            results.append((name, f"OK ({time.perf_counter() - t0:.1f} s)"))
        except Exception as ex:  # noqa: BLE001 - we report every failure
            results.append((name, "FAIL " + one_line(ex)))

    for mode in ("autograd", "func"):
        mod = EnergyForces(model, n_atoms, max_nbrs, mode)
        attempt(f"dynamo=True on module ({mode})",
                lambda: torch.onnx.export(mod, inputs, str(tmp / "a.onnx"), dynamo=True, opset_version=18, verbose=False))
        attempt(f"dynamo=False on jit.trace ({mode})",
                lambda: torch.onnx.export(torch.jit.trace(mod, inputs, check_trace=False), inputs, str(tmp / "b.onnx"),
                                          dynamo=False, opset_version=17))
    from torch.fx.experimental.proxy_tensor import make_fx

    mod = EnergyForces(model, n_atoms, max_nbrs, "autograd")
    attempt("make_fx (no decomposition) -> dynamo=True",
            lambda: torch.onnx.export(make_fx(mod, tracing_mode="real")(*inputs), inputs, str(tmp / "c.onnx"),
                                      dynamo=True, opset_version=18, verbose=False))
    attempt("make_fx (core aten) -> dynamo=False",
            lambda: torch.onnx.export(torch.jit.trace(flat_graph(mod, inputs), inputs, check_trace=False), inputs,
                                      str(tmp / "d.onnx"), dynamo=False, opset_version=17))
    attempt("make_fx (core aten) -> dynamo=True  [used]", lambda: export_onnx(mod, inputs, tmp / "e.onnx"))
    return results


# -- int8 -------------------------------------------------------------------------------------------


def fake_int8(w: Tensor, channel_dim: int) -> Tensor:
    """Symmetric int8 quantise -> dequantise, one scale per output channel (``channel_dim``)."""
    reduce = tuple(d for d in range(w.dim()) if d != channel_dim)
    scale = w.abs().amax(dim=reduce, keepdim=True).clamp(min=1e-12) / 127.0
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


def int8_weights(model: nn.Module) -> nn.Module:
    """A copy of the student with fake-int8 weights: every ``nn.Linear`` weight ``[out, in]``
    (per row) and the Interaction mixing matrices ``w0/w1/w2 [in, channels]`` (per column;
    used as ``rho @ w``). Biases, embedding, reference energies stay float."""
    q = copy.deepcopy(model)
    with torch.no_grad():
        for mod in q.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.copy_(fake_int8(mod.weight, 0))
        for layer in q.interactions:
            for w in (layer.w0, layer.w1, layer.w2):
                w.copy_(fake_int8(w, 1))
    return q


def linear_shapes(model: nn.Module) -> list[tuple[int, int, bool]]:
    """Distinct ``(in, out, bias)`` of the student's matrix products with per-atom rows."""
    shapes = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and not (name.startswith("interactions.0.project")):
            shapes.append((mod.in_features, mod.out_features, mod.bias is not None))
    for layer in model.interactions:
        shapes.append((layer.w0.shape[0], layer.w0.shape[1], False))  # rho @ w0/w1/w2
    return sorted(set(shapes), key=lambda s: -s[0] * s[1])


def time_linear_int8(shapes, rows: int, repeats: int) -> list[dict]:
    """Forward of one Linear, float ``F.linear`` vs dynamic int8 (``quantize_dynamic``: int8 weight,
    activations quantised per call), interleaved, median of ``repeats`` blocks."""
    out = []
    for fin, fout, bias in shapes:
        lin = nn.Linear(fin, fout, bias=bias).eval()
        with warnings.catch_warnings():  # deprecation notices of torch.ao.quantization
            warnings.simplefilter("ignore")
            qlin = torch.ao.quantization.quantize_dynamic(nn.Sequential(copy.deepcopy(lin)), {nn.Linear}, dtype=torch.qint8)
        x = torch.randn(rows, fin)
        fns = {"float": lambda: torch.nn.functional.linear(x, lin.weight, lin.bias), "int8": lambda: qlin(x)}
        with torch.no_grad():
            for fn in fns.values():
                fn()
            # ~20 ms per block; calibrated on the fastest of 5 calls (a call the OS preempts would
            # otherwise make the blocks far too short on a shared machine)
            k = max(1, int(0.02 / max(min(_timed(fns["float"]) for _ in range(5)), 1e-7)))
            samples = {n: [1e6 * t for t in ts] for n, ts in _interleaved_blocks(fns, k, repeats).items()}
            err = (qlin(x) - fns["float"]()).abs().max().item()
        out.append({"shape": f"{rows}x{fin} -> {fout}", "float_us": statistics.median(samples["float"]),
                    "int8_us": statistics.median(samples["int8"]), "max_abs_err": err})
    return out


def _numpy(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interleaved_blocks(fns: dict, k: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function: ``repeats`` rounds, each one block of ``k`` calls per
    function in turn (interleaved, so a machine whose speed drifts biases none of them)."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[name].append((time.perf_counter() - t0) / k)
    return samples


# -- accuracy on the held-out teacher frames -----------------------------------------------------


def frame_inputs(atoms, cutoff: float, elements) -> tuple:
    """The model's five inputs for one frame (as ``mlffd.bench.workers._artifact_inputs``)."""
    edges = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    species_of = {s: k for k, s in enumerate(elements)}
    return (
        torch.as_tensor(atoms.positions, dtype=torch.float32),
        torch.as_tensor(np.array([species_of[s] for s in atoms.get_chemical_symbols()]), dtype=torch.int64),
        torch.as_tensor(edges.index, dtype=torch.int64),
        torch.as_tensor(edges.shift_cells).to(torch.float32) @ torch.as_tensor(atoms.cell.array, dtype=torch.float32),
        torch.ones(len(atoms), dtype=torch.bool),
    )


def padded_inputs(args: tuple, n_pad: int, m_pad: int, cutoff: float) -> tuple:
    """``EnergyForces`` inputs padded to ``n_pad`` atoms with exactly ``m_pad`` edges each: dummy
    atoms sit far away (energy masked out), dummy edges are self-pairs shifted beyond the cutoff
    (zero radial basis, zero gradient). Edges ordered by centre, so ``pad_index = arange``."""
    pos, spec, ei, sh, mask = args
    n = pos.shape[0]
    far = 10.0 * cutoff
    pos_p = torch.cat([pos, far * (1.0 + torch.arange(n_pad - n, dtype=pos.dtype)).unsqueeze(1).repeat(1, 3)])
    spec_p = torch.cat([spec, torch.zeros(n_pad - n, dtype=spec.dtype)])
    mask_p = torch.cat([mask.to(pos.dtype), torch.zeros(n_pad - n, dtype=pos.dtype)])
    counts = torch.bincount(ei[0], minlength=n_pad)
    assert int(counts.max()) <= m_pad
    centres, nbrs, shifts = [], [], []
    order = torch.argsort(ei[0], stable=True)
    start = 0
    for i in range(n_pad):
        c = int(counts[i])
        idx = order[start:start + c]
        start += c
        d = m_pad - c
        centres += [ei[0, idx], torch.full((d,), i)]
        nbrs += [ei[1, idx], torch.full((d,), i)]
        shifts += [sh[idx], torch.tensor([[2.0 * cutoff, 0.0, 0.0]], dtype=sh.dtype).repeat(d, 1)]
    ei_p = torch.stack([torch.cat(centres), torch.cat(nbrs)])
    return pos_p, spec_p, ei_p, torch.cat(shifts), torch.arange(n_pad * m_pad), mask_p


def force_stats(pred: list[np.ndarray], ref: list[np.ndarray]) -> tuple[float, float]:
    p, r = np.concatenate(pred).ravel(), np.concatenate(ref).ravel()
    return float(np.abs(p - r).mean()), float(1.0 - np.sum((p - r) ** 2) / np.sum((r - r.mean()) ** 2))


def accuracy(name: str, model: nn.Module, elements, tmp: Path, threads: int) -> list[dict]:
    """Force MAE / R² (and energy MAE) vs the teacher on every 4th held-out frame: float reference
    (eager pure PyTorch), ONNX Runtime (padded fixed-shape graph), fake-int8 weights."""
    from md_validation.forces import read_frames

    frames = read_frames(TEST_FRAMES)[::4]
    cutoff = model.cutoff
    inputs = [frame_inputs(f, cutoff, elements) for f in frames]
    n_pad = max(a[0].shape[0] for a in inputs)
    m_pad = max(int(torch.bincount(a[2][0]).max()) for a in inputs)
    q8 = int8_weights(model)

    # one ONNX graph for the padded shape
    t0 = time.perf_counter()
    onnx_path = tmp / f"{name}-frames.onnx"
    export_onnx(EnergyForces(model, n_pad, m_pad), padded_inputs(inputs[0], n_pad, m_pad, cutoff), onnx_path)
    export_s = time.perf_counter() - t0
    sess, names = ort_session(onnx_path, threads)

    ref_f, ref_e, n_at = [], [], []
    pred = {"float (eager PyTorch)": ([], []), "ONNX Runtime": ([], []), "int8 weights (fake-quant)": ([], [])}
    dmax = {k: 0.0 for k in pred}
    for f, args in zip(frames, inputs):
        n = len(f)
        ref_f.append(f.get_forces())
        ref_e.append(f.get_potential_energy())
        n_at.append(n)
        out_ref = model(*args)
        f_ref = out_ref["forces"].detach().numpy()
        e_ort, f_ort = ort_call(sess, names, padded_inputs(args, n_pad, m_pad, cutoff))
        out_q = q8(*args)
        for key, (e, fo) in {"float (eager PyTorch)": (out_ref["energy"].item(), f_ref),
                             "ONNX Runtime": (float(e_ort), f_ort[:n]),
                             "int8 weights (fake-quant)": (out_q["energy"].item(), out_q["forces"].detach().numpy())}.items():
            pred[key][0].append(fo)
            pred[key][1].append(e)
            dmax[key] = max(dmax[key], float(np.abs(fo - f_ref).max()))
    rows = []
    for key, (fs, es) in pred.items():
        mae, r2 = force_stats(fs, ref_f)
        e_mae = 1e3 * float(np.mean(np.abs((np.array(es) - np.array(ref_e)) / np.array(n_at))))
        rows.append({"model": name, "variant": key, "frames": len(frames), "force_mae": mae, "force_r2": r2,
                     "energy_mae_mev": e_mae, "max_dF_vs_float": dmax[key]})
    rows[1]["note"] = f"padded graph N={n_pad}, M={m_pad}; export {export_s:.1f} s"
    return rows


# -- speed ------------------------------------------------------------------------------------------


def speed(name: str, path: Path, model: nn.Module, scripted, n_atoms: int, repeats: int, tmp: Path, threads: int,
          block_s: float = 0.15) -> list[dict]:
    """Interleaved timing at ``n_atoms``: shipped artifact (fused C++), scripted pure PyTorch,
    ONNX Runtime (input layout ``pad_index`` computed per call, included in its time)."""
    art = load(path)
    atoms = si_supercell(n_atoms, rattle=0.05, seed=1)
    args, n_edges = _artifact_inputs(atoms, art)
    n = args[0].shape[0]

    assert not model.fused and not scripted.fused and scripted.chunk_atoms >= n  # pure PyTorch, one graph
    pad, m = pad_layout(args[2], n)
    ef_inputs = (args[0], args[1], args[2], args[3], pad, args[4].to(args[0].dtype))
    t0 = time.perf_counter()
    onnx_path = tmp / f"{name}-{n}.onnx"
    export_onnx(EnergyForces(model, n, m), ef_inputs, onnx_path)
    export_s = time.perf_counter() - t0
    sess, names = ort_session(onnx_path, threads)

    def run_onnx():
        p, _ = pad_layout(args[2], n)
        return ort_call(sess, names, (args[0], args[1], args[2], args[3], p, ef_inputs[5]))

    calls = {
        "artifact (TorchScript, fused C++)": lambda: art.module(*args)["forces"],
        "pure PyTorch, jit.script": lambda: scripted(*args)["forces"],
        "ONNX Runtime": lambda: run_onnx()[1],
    }
    ref = art.module(*args)["forces"].detach().numpy()
    # warm-up (the profiling executor optimises on the 2nd call), checking the forces of every
    # call: ONNX Runtime with >1 intra-op thread was seen to return wrong forces intermittently
    dF = {k: 0.0 for k in calls}
    for _ in range(4):
        for k, fn in calls.items():
            dF[k] = max(dF[k], float(np.abs(_numpy(fn()) - ref).max()))
    # each sample: a block of k calls (~block_s of the slowest variant); blocks interleaved
    n_calls = max(1, int(block_s / max(_timed(fn) for fn in calls.values())))
    samples = _interleaved_blocks(calls, n_calls, repeats)
    base = statistics.median(samples["artifact (TorchScript, fused C++)"])
    rows = []
    for k in calls:
        med = statistics.median(samples[k])
        rows.append({"model": name, "atoms": n, "edges": n_edges, "variant": k, "median_ms": 1e3 * med,
                     "us_per_atom": 1e6 * med / n, "vs_artifact": med / base,
                     "min_ms": 1e3 * min(samples[k]), "max_ms": 1e3 * max(samples[k]),
                     "min_vs_artifact": min(samples[k]) / min(samples["artifact (TorchScript, fused C++)"]),
                     "max_dF_vs_artifact_4calls": dF[k]})
    rows[0]["note"] = f"{repeats} blocks of {n_calls} calls"
    rows[-1]["note"] = f"export {export_s:.1f} s"
    return rows


# -- main -------------------------------------------------------------------------------------------


def loadavg() -> str:
    """1-minute load average: the machine is shared, timings are only meaningful when it is ~0."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def table(rows: list[dict], cols: list[str], fmt: dict) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) if c in r else "" for c in cols) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny", help="comma-separated registry names")
    ap.add_argument("--sizes", default="512", help="comma-separated atom counts for timing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="export,speed,accuracy,int8",
                    help="which parts to run: export (routes table), speed, accuracy, int8 (Linear timing)")
    opts = ap.parse_args()
    parts = set(opts.parts.split(","))
    torch.set_num_threads(opts.threads)
    import onnxruntime

    print(f"# ONNX Runtime and int8 levers ({_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC)\n")
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, threads {opts.threads}, "
          f"quantized engine {torch.backends.quantized.engine}\n")
    tmp = Path(tempfile.mkdtemp(prefix="mlffd-levers-"))
    speed_rows, acc_rows, lin_rows = [], [], []
    students = {}
    for name in opts.models.split(","):
        path = resolve(name)
        model, _, _ = load_student(path)
        model.fused = False  # pure-PyTorch path (the fused C++ operators cannot be exported)
        model.chunk_atoms = 10**9  # one graph
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        # scripted before any make_fx/torch.export tracing: scripting a StudentPotential after an
        # export in the same process failed ("padded_features ... Expected at most 2 arguments")
        students[name] = (path, model, torch.jit.script(model))
    for k, (name, (path, model, scripted)) in enumerate(students.items()):
        if k == 0 and "export" in parts:
            atoms = si_supercell(64, rattle=0.05, seed=1)
            args = frame_inputs(atoms, model.cutoff, load(path).elements)
            pad, m = pad_layout(args[2], 64)
            res = export_attempts(model, (args[0], args[1], args[2], args[3], pad, args[4].float()), 64, m, tmp)
            print(f"## Export routes ({name}, 64 atoms)\n")
            print(table([{"route": r, "result": s} for r, s in res], ["route", "result"], {}) + "\n")
        if "speed" in parts:
            for n in (int(s) for s in opts.sizes.split(",")):
                load_before = loadavg()
                speed_rows += speed(name, path, model, scripted, n, opts.repeats, tmp, opts.threads)
                speed_rows[-1]["load"] = f"{load_before} -> {loadavg()}"
        if "accuracy" in parts:
            acc_rows += accuracy(name, model, load(path).elements, tmp, opts.threads)
        if "int8" in parts:
            load_before = loadavg()
            lin_rows += [dict(model=name, **r) for r in time_linear_int8(linear_shapes(model), 1024, opts.repeats)]
            lin_rows[-1]["load"] = f"{load_before} -> {loadavg()}"

    if speed_rows:
        print("## Speed (energy + forces per call; blocks interleaved, median and min over blocks)\n")
        print(table(speed_rows, ["model", "atoms", "edges", "variant", "median_ms", "us_per_atom", "vs_artifact", "min_ms",
                                 "max_ms", "min_vs_artifact", "max_dF_vs_artifact_4calls", "note", "load"],
                    {"median_ms": "{:.1f}", "us_per_atom": "{:.1f}", "vs_artifact": "{:.2f}x", "min_ms": "{:.1f}",
                     "max_ms": "{:.1f}", "min_vs_artifact": "{:.2f}x", "max_dF_vs_artifact_4calls": "{:.1e}"}) + "\n")
    if acc_rows:
        print("## Accuracy on held-out teacher frames (every 4th of " + TEST_FRAMES + ")\n")
        print(table(acc_rows, ["model", "variant", "frames", "force_mae", "force_r2", "energy_mae_mev", "max_dF_vs_float",
                               "note"],
                    {"force_mae": "{:.4f}", "force_r2": "{:.5f}", "energy_mae_mev": "{:.2f}", "max_dF_vs_float": "{:.1e}"})
              + "\n")
    if lin_rows:
        for r in lin_rows:
            r["ratio"] = r["int8_us"] / r["float_us"]
        print("## int8 vs float Linear forward (one layer, 1024 rows, forward only, no backward)\n")
        print(table(lin_rows, ["model", "shape", "float_us", "int8_us", "ratio", "max_abs_err", "load"],
                    {"float_us": "{:.1f}", "int8_us": "{:.1f}", "ratio": "{:.2f}", "max_abs_err": "{:.1e}"}) + "\n")


if __name__ == "__main__":
    main()
