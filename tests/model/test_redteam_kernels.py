"""Issue 22, the fused kernels' part: bad input to an ``mlffd_kernels`` operator is a Python
error naming the value and what was expected, never a crash, a hang or all memory taken.

Cases that crashed or hung run in a fresh interpreter (a signal or a timeout there fails the
test, not the suite) with its address space capped, so that a regression cannot take the
machine's memory either. The limits are those of ``mlffd/contract.json`` (``geometry``), which
the library is built with (``mlffd_kernels::contract``)."""

import json
import math
import resource
import subprocess
import sys
import textwrap
from importlib import resources

import numpy as np
import pytest
import torch
from ase.neighborlist import primitive_neighbor_list

from mlffd import kernels
from mlffd.contract import GEOMETRY

pytestmark = pytest.mark.skipif(not kernels.available(), reason="mlffd-kernels is not installed")

ops = torch.ops.mlffd_kernels

_PRELUDE = """
import math, torch, mlffd_kernels
mlffd_kernels.load()
ops = torch.ops.mlffd_kernels
f64 = torch.float64

def report(fn):
    try:
        fn()
    except Exception as exc:
        print(type(exc).__name__ + ": " + str(exc).splitlines()[0])
    else:
        print("no error")

def si8(scale=1.0):  # 8 atoms of diamond silicon in a 5.43 Å cube, as a neighbor_lists batch of one
    frac = torch.tensor([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5], [.25, .25, .25], [.75, .75, .25],
                         [.75, .25, .75], [.25, .75, .75]], dtype=f64)
    return frac * 5.43 * scale, torch.eye(3, dtype=f64)[None] * 5.43 * scale, torch.tensor([[True] * 3]), torch.tensor([8])
"""


def _cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def _child(code: str, timeout: float = 90) -> str:
    """Runs ``code`` after :data:`_PRELUDE` in a fresh interpreter; returns what ``report`` printed."""
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=_cap_memory)
    assert proc.returncode == 0, f"exit status {proc.returncode} (negative: killed by that signal)\n{proc.stderr[-3000:]}"
    return proc.stdout.strip()


def _density_inputs():
    gen = torch.Generator().manual_seed(0)
    vectors = torch.randn(6, 3, dtype=torch.float64, generator=gen)
    messages = torch.randn(3, 2, dtype=torch.float64, generator=gen)
    neighbor = torch.tensor([1, 2, 0, 2, 0, 1])
    offsets = torch.tensor([0, 2, 4, 6])
    return vectors, messages, neighbor, offsets


# --- the gradient lists of the backward operators ------------------------------------------------

GRADIENTS = "the gradients of the rank 0, 1 and 2 densities"


@pytest.mark.parametrize("count", [0, 1, 2, 4])
def test_backward_with_a_wrong_number_of_gradients_is_an_error(count):
    """Fewer than three gradients read past the list: SIGSEGV."""
    out = _child(f"""
        v = torch.randn(6, 3, dtype=f64); m = torch.randn(3, 2, dtype=f64)
        nb = torch.tensor([1, 2, 0, 2, 0, 1]); off = torch.tensor([0, 2, 4, 6])
        rho = ops.moment_density(v, m, nb, off, 5.0, 8, 6, 1.0)
        grads = (list(rho) * 2)[:{count}]
        report(lambda: ops.moment_density_backward(grads, v, m, nb, off, 5.0, 8, 6, 1.0, True))
    """)
    assert out == f"ValueError: moment_density_backward: grads must hold 3 tensors ({GRADIENTS}), got {count}"


@pytest.mark.parametrize("count", [0, 2])
def test_backward_into_with_a_wrong_number_of_gradients_is_an_error(count):
    out = _child(f"""
        v = torch.randn(6, 3, dtype=f64); m = torch.randn(3, 2, dtype=f64)
        nb = torch.tensor([1, 2, 0, 2, 0, 1]); off = torch.tensor([0, 2, 4, 6]); ci = torch.tensor([0, 0, 1, 1, 2, 2])
        rho = ops.moment_density(v, m, nb, off, 5.0, 8, 6, 1.0)
        forces, virial, atom_virial = torch.zeros(3, 3, dtype=f64), torch.zeros(3, 3, dtype=f64), torch.zeros(3, 9, dtype=f64)
        report(lambda: ops.moment_density_backward_into(list(rho)[:{count}], v, None, m, ci, nb, off, 5.0, 8, 6, 1.0,
                                                        forces, virial, atom_virial, torch.empty(0, dtype=f64)))
        print(float(forces.abs().sum() + virial.abs().sum() + atom_virial.abs().sum()))
    """)
    assert out.splitlines() == [
        f"ValueError: moment_density_backward_into: grads must hold 3 tensors ({GRADIENTS}), got {count}",
        "0.0",  # nothing added
    ]


def test_gradient_of_the_wrong_dtype_is_an_error():
    v, m, nb, off = _density_inputs()
    rho = ops.moment_density(v, m, nb, off, 5.0, 8, 6, 1.0)
    grads = [rho[0], rho[1].float(), rho[2]]
    message = r"gradient 1 must be \[3, 3, 16\] of the vectors' dtype Double, got \[3, 3, 16\] Float"
    with pytest.raises(RuntimeError, match=message):
        ops.moment_density_backward(grads, v, m, nb, off, 5.0, 8, 6, 1.0, True)


# --- the radial basis' parameters -----------------------------------------------------------------


def _radial_calls(cutoff, num_basis=8, envelope_p=6, scale=1.0):
    """Every operator that evaluates the radial basis, called with these parameters."""
    v, m, nb, off = _density_inputs()
    rho = ops.moment_density(v, m, nb, off, 5.0, 8, 6, 1.0)
    geometry = ops.edge_geometry(v, 5.0, 8, 6)
    sums = lambda: (torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64),
                    torch.zeros(3, 9, dtype=torch.float64), torch.empty(0, dtype=torch.float64))
    args = (cutoff, num_basis, envelope_p, scale)
    return {
        "moment_density": lambda: ops.moment_density(v, m, nb, off, *args),
        "moment_density_geometry": lambda: ops.moment_density_geometry(v, geometry, m, nb, off, *args),
        "moment_density_backward": lambda: ops.moment_density_backward(list(rho), v, m, nb, off, *args, True),
        "moment_density_backward_into": lambda: ops.moment_density_backward_into(
            list(rho), v, None, m, torch.tensor([0, 0, 1, 1, 2, 2]), nb, off, *args, *sums()),
        "edge_geometry": lambda: ops.edge_geometry(v, cutoff, num_basis, envelope_p),
    }


OPERATORS = list(_radial_calls(5.0))


@pytest.mark.parametrize("op", OPERATORS)
@pytest.mark.parametrize("cutoff", [0.0, -1.0, math.nan, math.inf])
def test_density_cutoff_must_be_finite_and_positive(op, cutoff):
    """A cutoff <= 0, NaN or inf gave NaN or inf densities silently."""
    with pytest.raises(ValueError, match=rf"^{op}: cutoff {cutoff:g} Å: expected a finite positive number"):
        _radial_calls(cutoff)[op]()


@pytest.mark.parametrize("op", OPERATORS)
@pytest.mark.parametrize("name,value,expected", [("num_basis", 0, "1..1024"), ("num_basis", 10**12, "1..1024"),
                                                 ("envelope_p", 0, "1..64"), ("envelope_p", 2**40, "1..64")])
def test_radial_basis_sizes_are_bounded(op, name, value, expected):
    """envelope_p < 1 computed another polynomial than the reference's, a huge one looped for
    hours; a huge num_basis overflowed the buffer sizes."""
    kwargs = {"num_basis": 8, "envelope_p": 6, name: value}
    with pytest.raises(ValueError, match=rf"^{op}: {name} {value}: expected {expected}"):
        _radial_calls(5.0, **kwargs)[op]()


@pytest.mark.parametrize("scale", [math.nan, math.inf])
def test_density_scale_must_be_finite(scale):
    v, m, nb, off = _density_inputs()
    with pytest.raises(ValueError, match=rf"moment_density: scale {scale}: expected a finite number"):
        ops.moment_density(v, m, nb, off, 5.0, 8, 6, scale)


@pytest.mark.parametrize("cutoff", [0.0, -2.0, math.nan, math.inf])
def test_select_edges_cutoff_must_be_finite_and_positive(cutoff):
    positions = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"select_edges: cutoff {cutoff:g} Å: expected a finite positive number"):
        ops.select_edges(positions, torch.tensor([[0], [1]]), torch.zeros(1, 3, dtype=torch.float64), cutoff)


def test_bad_edge_indices_leave_the_sums_untouched():
    """add_edge_gradients checked each index as it went: the edges before a bad one were added."""
    v = torch.randn(10, 3, dtype=torch.float64)
    center, neighbor = torch.zeros(10, dtype=torch.long), torch.arange(10) % 4
    neighbor[7] = 4
    forces, virial, atom_virial = (torch.zeros(shape, dtype=torch.float64) for shape in ((4, 3), (3, 3), (4, 9)))
    with pytest.raises(RuntimeError, match=r"add_edge_gradients: edge 7 \(center 0, neighbor 4\) outside 0\.\.3"):
        ops.add_edge_gradients(forces, virial, atom_virial, v, v, center, neighbor)
    assert not forces.any() and not virial.any() and not atom_virial.any()


# --- neighbor_lists: limits checked before any list is built ------------------------------------


def test_huge_cutoff_is_an_error_not_a_hang():
    """A 1e9 Å cutoff in a 5.43 Å cell looped over ~1e25 images."""
    out = _child("report(lambda: ops.neighbor_lists(*si8(), 1e9))")
    assert out.startswith("ValueError: neighbor_lists: structure 0: a pair search within 1e+09 Å would visit "
                          "4.99678e+25 periodic images (cell height 5.43 Å along cell vector 0)")
    assert "over the limit 1000000 (mlffd/contract.json geometry.max_periodic_images)" in out


def test_large_cutoff_is_an_error_not_bad_alloc():
    """A 1e4 Å cutoff in a 5.43 Å cell threw std::bad_alloc."""
    out = _child("report(lambda: ops.neighbor_lists(*si8(), 1e4))")
    assert out.startswith("ValueError: neighbor_lists: structure 0: a pair search within 10000 Å would visit "
                          "5.00394e+10 periodic images")
    assert "geometry.max_periodic_images" in out


@pytest.mark.parametrize("value", [1e300, -1e9, math.nan, math.inf])
def test_coordinate_beyond_the_limit_is_an_error_not_a_hang(value):
    """An atom at 1e300 Å hung (its image window overflowed int64)."""
    out = _child(f"""
        positions, cells, pbc, counts = si8()
        positions[3, 1] = float("{value}")
        report(lambda: ops.neighbor_lists(positions, cells, pbc, counts, 5.0))
    """)
    if math.isfinite(value):
        assert out == (f"ValueError: neighbor_lists: structure 0 atom 3 coordinate {value:g} Å exceeds the limit "
                       "|x| <= 1e+08 Å (mlffd/contract.json geometry.max_abs_coordinate_A)")
    else:
        assert out == f"ValueError: neighbor_lists: structure 0: position of atom 3 is not finite (coordinate 1 is {value})"


@pytest.mark.parametrize("length", [1e-6, 1e-5])
def test_tiny_cell_vector_is_an_error_before_any_allocation(length):
    """A 1e-6 Å periodic cell vector enumerated ~1e7 images per pair and took all memory."""
    out = _child(f"""
        positions, cells, pbc, counts = si8()
        cells[0, 2, 2] = {length}
        report(lambda: ops.neighbor_lists(positions, cells, pbc, counts, 5.0))
    """)
    assert out.startswith(f"ValueError: neighbor_lists: structure 0: a pair search within 5 Å would visit ")
    assert f"(cell height {length:g} Å along cell vector 2), over the limit 1000000" in out


def test_collapsed_cell_is_an_error():
    """Eight atoms in a 0.54 Å cube: ~4e5 neighbours per atom estimated from the density."""
    out = _child("report(lambda: ops.neighbor_lists(*si8(0.1), 5.0))")
    assert out.startswith("ValueError: neighbor_lists: structure 0: 8 atoms in a cell of 0.160103 Å^3 give ~26163")
    assert "neighbours per atom within 5 Å, over the limit 1024 (mlffd/contract.json geometry.max_neighbors_per_atom)" in out


def test_thin_wire_stops_at_the_neighbour_limit():
    """Periodic along one 1e-3 Å vector only (no density estimate): the search stops at the
    limit instead of listing ~1e4 images of every atom."""
    out = _child("""
        positions = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=f64)
        cells = torch.diag(torch.tensor([1e-3, 0.0, 0.0], dtype=f64))[None]
        report(lambda: ops.neighbor_lists(positions, cells, torch.tensor([[True, False, False]]), torch.tensor([2]), 5.0))
    """)
    assert out.startswith("ValueError: neighbor_lists: structure 0 atom 0 has at least ")
    assert out.endswith("neighbours within 5 Å, over the limit 1024 (mlffd/contract.json geometry.max_neighbors_per_atom)")


def test_skewed_cell_is_an_error_not_a_hang():
    """A cell vector of 250 km nearly along another: 9e5 images per pair, ~1 minute for 200 atoms."""
    out = _child("""
        cell = torch.tensor([[5.0, 0, 0], [250000.0, 5.0, 0], [0, 0, 5.0]], dtype=f64)
        positions = torch.rand(200, 3, dtype=f64, generator=torch.Generator().manual_seed(0)) @ cell
        report(lambda: ops.neighbor_lists(positions, cell[None], torch.tensor([[True] * 3]), torch.tensor([200]), 5.0))
    """, timeout=30)
    assert out.startswith("ValueError: neighbor_lists: structure 0: 200 atoms x 900027 periodic images = 3.60011e+10 pair tests")
    assert "(mlffd/contract.json geometry.max_periodic_images x max_neighbors_per_atom)" in out


def test_shift_beyond_int32_is_an_error():
    """An atom 2e9 cells away: its shift did not fit shift_cells' int32."""
    with pytest.raises(ValueError, match=r"structure 0 atom 0 lies 2e\+09 cells from the origin along cell vector 0; "
                                         r"shift_cells \(int32\) need"):
        ops.neighbor_lists(torch.tensor([[1e8, 0.0, 0.0]], dtype=torch.float64), torch.eye(3, dtype=torch.float64)[None] * 0.05,
                           torch.tensor([[True] * 3]), torch.tensor([1]), 0.01)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_cell_is_an_error(value):
    cells = torch.eye(3, dtype=torch.float64)[None].repeat(2, 1, 1) * 5.43
    cells[1, 2, 0] = value
    with pytest.raises(ValueError, match=rf"neighbor_lists: structure 1 cell entry \[2, 0\] is {value}; expected finite"):
        ops.neighbor_lists(torch.zeros(2, 3, dtype=torch.float64), cells, torch.tensor([[True] * 3] * 2),
                           torch.tensor([1, 1]), 5.0)


@pytest.mark.parametrize("cutoff", [0.0, -1.0, math.nan, math.inf])
def test_neighbor_cutoff_must_be_finite_and_positive(cutoff):
    with pytest.raises(ValueError, match=rf"neighbor_lists: cutoff must be positive and finite \(Å\), got {cutoff:g}"):
        ops.neighbor_lists(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)[None] * 5,
                           torch.tensor([[True] * 3]), torch.tensor([1]), cutoff)


# --- legal extremes: unchanged results ----------------------------------------------------------


def _ase_pairs(positions, cell, pbc, cutoff):
    i, j, S = primitive_neighbor_list("ijS", pbc, cell, positions, cutoff)
    rows = np.column_stack([i, j, S]).astype(np.int64)
    return rows[np.lexsort(rows.T[::-1])]


def _kernel_pairs(positions, cell, pbc, cutoff):
    index, shifts = ops.neighbor_lists(torch.as_tensor(positions, dtype=torch.float64),
                                       torch.as_tensor(cell, dtype=torch.float64)[None], torch.tensor([pbc]),
                                       torch.tensor([len(positions)]), cutoff)
    rows = np.column_stack([index[0].numpy(), index[1].numpy(), shifts.numpy()]).astype(np.int64)
    return rows[np.lexsort(rows.T[::-1])]


def test_legal_extremes_give_the_full_lists():
    """At the limits (an atom at |x| = max_abs_coordinate_A, one atom per 1 Å cube: 1331 images,
    484 neighbours), the lists are ASE's."""
    cell = np.eye(3) * 5.43
    positions = np.array([[0.1, 0.2, 0.3], [1.4, 1.3, 1.5], [2.9, 0.1, 2.6]])
    far = positions.copy()
    far[1, 0] = GEOMETRY.max_abs_coordinate_A
    far[2, 2] = -GEOMETRY.max_abs_coordinate_A
    assert np.array_equal(_kernel_pairs(far, cell, [True] * 3, 5.0), _ase_pairs(far, cell, [True] * 3, 5.0))
    dense = _kernel_pairs(np.zeros((1, 3)), np.eye(3), [True] * 3, 5.0)
    assert np.array_equal(dense, _ase_pairs(np.zeros((1, 3)), np.eye(3), [True] * 3, 5.0))
    assert len(dense) == 484 <= GEOMETRY.max_neighbors_per_atom


# --- the contract the library was built with -------------------------------------------------------


def test_contract_operator_equals_contract_json():
    """mlffd_kernels::contract: the values compiled in (mlffd/mlffd_common.cmake reads contract.json)."""
    raw = json.loads(resources.files("mlffd").joinpath("contract.json").read_text())
    compiled = json.loads(ops.contract())
    assert compiled == {
        "artifact": {key: raw["artifact"][key] for key in ("format", "format_version", "metadata_file")},
        "geometry": raw["geometry"],
    }
    assert kernels.contract() == compiled
    import mlffd_kernels

    assert mlffd_kernels.contract() == compiled and mlffd_kernels.VERSION == kernels.VERSION == 4
