"""Neighbour lists (mlffd.neighbors): the pair kernel and vesin against ASE's primitive_neighbor_list."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.neighborlist import primitive_neighbor_list

from mlffd import kernels, neighbors
from mlffd.testing import silicon, triclinic_silicon

CUTOFF = 5.0


def _structures():
    """(name, positions, cell, pbc): wide and tiny cells, skewed, mixed pbc, unwrapped, isolated."""
    wide = silicon(2, rattle=0.1, seed=3)
    tiny = bulk("Si", "diamond", a=5.43)  # 2 atoms, cell vectors 3.84 A: many images, self-images
    tiny.rattle(0.05, seed=1)
    skew = triclinic_silicon(rattle=0.1, seed=2)
    slab = silicon(2, rattle=0.1, seed=4)
    unwrapped = silicon(2, rattle=0.1, seed=5)
    unwrapped.positions[::3] += 3 * unwrapped.cell[0] - 2 * unwrapped.cell[2]
    mol = molecule("CH3CH2OH")
    wire = molecule("C6H6")
    big = silicon(3, rattle=0.1, seed=6)  # 216 atoms: above SMALL_SYSTEM, vesin
    return [
        ("wide", wide.positions, wide.cell.array, (True, True, True)),
        ("tiny", tiny.positions, tiny.cell.array, (True, True, True)),
        ("skew", skew.positions, skew.cell.array, (True, True, True)),
        ("slab", slab.positions, slab.cell.array, (True, True, False)),
        ("slab-zero-vector", slab.positions, np.diag([slab.cell[0, 0], slab.cell[1, 1], 0.0]), (True, True, False)),
        ("unwrapped", unwrapped.positions, unwrapped.cell.array, (True, True, True)),
        ("molecule", mol.positions, np.zeros((3, 3)), (False, False, False)),
        ("wire", wire.positions, np.diag([4.0, 0.0, 0.0]), (True, False, False)),
        ("big", big.positions, big.cell.array, (True, True, True)),
        ("empty", np.zeros((0, 3)), np.eye(3) * 10, (True, True, True)),
    ]


def _canonical(i, j, shifts) -> np.ndarray:
    rows = np.column_stack([i, j, np.asarray(shifts).reshape(-1, 3)]).astype(np.int64)
    return rows[np.lexsort(rows.T[::-1])]


def _ase(positions, cell, pbc, cutoff=CUTOFF) -> np.ndarray:
    if len(positions) == 0:
        return np.zeros((0, 5), dtype=np.int64)
    ref_cell = np.array(cell, dtype=float)
    for k in range(3):  # ASE needs a non-singular cell; a non-periodic vector only spans space
        if not pbc[k] and not np.any(ref_cell[k]):
            ref_cell[k, k] = 1.0
    i, j, S = primitive_neighbor_list("ijS", pbc, ref_cell, positions, cutoff)
    return _canonical(i, j, S)


@pytest.mark.parametrize("use_kernel", [True, False], ids=["kernel", "vesin"])
def test_lists_match_ase(monkeypatch, use_kernel):
    if not use_kernel:
        monkeypatch.setattr(neighbors, "_pair_kernel", lambda: False)
    structures = _structures()
    found = neighbors.neighbor_lists([s[1] for s in structures], [s[2] for s in structures], [s[3] for s in structures], CUTOFF)
    assert len(found) == len(structures)
    for (name, positions, cell, pbc), edges in zip(structures, found):
        ref = _ase(positions, cell, pbc)
        assert len(ref) > 0 or name == "empty"
        assert np.array_equal(_canonical(edges.i, edges.j, edges.shift_cells), ref), name
        assert np.all(np.diff(edges.i) >= 0), f"{name}: edges not grouped by centre"
        r = positions[edges.j] - positions[edges.i] + edges.shifts(cell)
        assert np.all(np.linalg.norm(r, axis=1) < CUTOFF), name


def test_kernel_used_for_small_structures(monkeypatch):
    """The small structures of a call go to the kernel together, the large ones to vesin."""
    calls = []
    real = neighbors._kernel_lists
    monkeypatch.setattr(neighbors, "_kernel_lists", lambda p, *a: calls.append(len(p)) or real(p, *a))
    structures = _structures()
    neighbors.neighbor_lists([s[1] for s in structures], [s[2] for s in structures], [s[3] for s in structures], CUTOFF)
    small = sum(len(s[1]) <= neighbors.SMALL_SYSTEM for s in structures)
    assert kernels.available() and calls == [small] and small < len(structures)


def test_kernel_global_indices():
    """Several structures in one call: indices offset by the atoms before each structure."""
    a, b = silicon(1, rattle=0.1, seed=1), silicon(1, rattle=0.1, seed=2)
    index, shift_cells = kernels.neighbor_lists(
        torch.from_numpy(np.concatenate([a.positions, b.positions])),
        torch.from_numpy(np.stack([a.cell.array, b.cell.array])),
        torch.ones(2, 3, dtype=torch.bool),
        torch.tensor([len(a), len(b)]),
        CUTOFF,
    )
    index, shift_cells = index.numpy(), shift_cells.numpy()
    second = index[0] >= len(a)
    assert np.all(index[1][second] >= len(a)) and np.all(index[1][~second] < len(a))
    assert np.array_equal(_canonical(index[0][~second], index[1][~second], shift_cells[~second]), _ase(a.positions, a.cell.array, a.pbc))
    assert np.array_equal(
        _canonical(index[0][second] - len(a), index[1][second] - len(a), shift_cells[second]), _ase(b.positions, b.cell.array, b.pbc)
    )


def _call(positions, cell, pbc, counts=None, cutoff=CUTOFF):
    positions = torch.as_tensor(positions, dtype=torch.float64)
    return kernels.neighbor_lists(
        positions, torch.as_tensor(cell, dtype=torch.float64)[None], torch.tensor([pbc]),
        torch.tensor([len(positions) if counts is None else counts]), cutoff,
    )


def test_kernel_errors():
    pos = silicon(1).positions
    with pytest.raises(RuntimeError, match="periodic along cell vector 2, which is zero"):
        _call(pos, np.diag([5.43, 5.43, 0.0]), [True, True, True])
    with pytest.raises(RuntimeError, match="parallel periodic cell vectors 0 and 1"):
        _call(pos, [[5.43, 0, 0], [2 * 5.43, 0, 0], [0, 0, 0]], [True, True, False])
    with pytest.raises(RuntimeError, match="counts add up to 7 atoms, positions have 8"):
        _call(pos, np.eye(3) * 5.43, [True] * 3, counts=7)
    bad = pos.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="position of atom 3 is not finite"):  # bad values: ValueError
        _call(bad, np.eye(3) * 5.43, [True] * 3)
    with pytest.raises(ValueError, match="cutoff must be positive"):
        _call(pos, np.eye(3) * 5.43, [True] * 3, cutoff=0.0)


@pytest.mark.parametrize("use_kernel", [True, False], ids=["kernel", "vesin"])
def test_joined_list_is_the_lists_renumbered(monkeypatch, use_kernel):
    """joined_neighbor_list: every structure's pairs, atoms numbered across the structures,
    Cartesian shifts of each structure's own cell."""
    if not use_kernel:
        monkeypatch.setattr(neighbors, "_pair_kernel", lambda: False)
    structures = [s for s in _structures() if s[0] != "big"]
    args = ([s[1] for s in structures], [s[2] for s in structures], [s[3] for s in structures], CUTOFF)
    index, shifts = neighbors.joined_neighbor_list(*args)
    start = np.cumsum([0] + [len(s[1]) for s in structures])
    rows = []
    for k, ((_, positions, cell, pbc), edges) in enumerate(zip(structures, neighbors.neighbor_lists(*args))):
        rows.append(np.column_stack([edges.index.T + start[k], edges.shifts(cell)]))
    expected = np.concatenate(rows)
    got = np.column_stack([index.T, shifts])
    order = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(got), order(expected), atol=1e-12)
    assert np.all(np.diff(index[0]) >= 0)
