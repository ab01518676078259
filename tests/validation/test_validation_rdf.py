"""md_validation.rdf: g(r) with known answers and against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list

from md_validation.rdf import (
    compare_rdfs,
    first_minimum,
    first_peak,
    partial_rdfs,
    rdf_error,
    rdf_summary,
    replication_for,
    universe_from_frames,
)


def _reference_rdf(frames, r_max, nbins, a=None, b=None):
    """g(r) by histogramming ASE neighbour-list distances with exact shell volumes."""
    edges = np.linspace(0.0, r_max, nbins + 1)
    hist = np.zeros(nbins)
    n_a = n_b = 0
    volume = 0.0
    for atoms in frames:
        i, j, d = neighbor_list("ijd", atoms, r_max)
        sym = np.array(atoms.get_chemical_symbols())
        mask = np.ones(len(i), bool)
        if a is not None:
            mask &= (sym[i] == a) & (sym[j] == b)
        hist += np.histogram(d[mask], bins=edges)[0]
        n_a = (sym == a).sum() if a else len(atoms)
        n_b = (sym == b).sum() if b else len(atoms)
        volume = atoms.get_volume()
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), hist / (len(frames) * n_a * shell * n_b / volume)


def test_ideal_gas_is_one():
    rng = np.random.default_rng(0)
    frames = [Atoms("Ar400", positions=rng.uniform(0, 18.0, (400, 3)), cell=[18.0] * 3, pbc=True) for _ in range(15)]
    res = partial_rdfs(frames, r_max=8.0, nbins=32)
    g = res.g["Ar-Ar"]
    assert res.n_frames == 15
    far = res.r > 2.0
    assert abs(g[far].mean() - 1.0) < 0.02  # (N - 1) / N = 0.9975 in expectation
    np.testing.assert_allclose(g[far], 1.0, atol=0.12)


@pytest.mark.parametrize(
    "atoms, r1, cn, r2",
    [
        (bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2), 3.6 / np.sqrt(2), 12, 3.6),
        (bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2), 5.43 * np.sqrt(3) / 4, 4, 5.43 / np.sqrt(2)),
        (bulk("Cu", "fcc", a=3.6), 3.6 / np.sqrt(2), 12, 3.6),  # 1-atom triclinic cell, replicated
    ],
    ids=["fcc", "diamond", "fcc-primitive"],
)
def test_crystal_first_peak_and_coordination(atoms, r1, cn, r2):
    atoms = atoms.copy()
    atoms.rattle(0.02, seed=3)
    res = partial_rdfs([atoms], r_max=6.0, nbins=240)
    (pair,) = res.g
    summary = rdf_summary(res)[pair]
    assert summary["first_peak_A"] == pytest.approx(r1, abs=0.05)
    assert summary["coordination"] == pytest.approx(cn, abs=0.15)
    assert r1 < summary["first_minimum_A"] < r2  # the first shell ends before the second


def test_rocksalt_partials():
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    res = partial_rdfs([nacl], r_max=6.0, nbins=240)
    assert set(res.g) == {"Cl-Cl", "Cl-Na", "Na-Cl", "Na-Na", "all"}
    r_nacl, _ = first_peak(res.r, res.g["Cl-Na"])
    r_nana, _ = first_peak(res.r, res.g["Na-Na"])
    assert r_nacl == pytest.approx(2.82, abs=0.03)
    assert r_nana == pytest.approx(5.64 / np.sqrt(2), abs=0.03)
    assert res.coordination("Cl-Na", first_minimum(res.r, res.g["Cl-Na"])) == pytest.approx(6, abs=0.1)
    assert res.coordination("Na-Na", 4.5) == pytest.approx(12, abs=0.2)


def test_ordered_pairs_give_both_coordinations():
    """L1_2 Cu3Au: every Au has 12 Cu neighbours, every Cu 4 Au and 8 Cu (the structure's counts)."""
    cu3au = bulk("Cu", "fcc", a=3.75, cubic=True)  # 4 atoms: the corner site is Au's
    cu3au.symbols[0] = "Au"
    cu3au = cu3au * (2, 2, 2)
    res = partial_rdfs([cu3au], r_max=5.0, nbins=200)
    np.testing.assert_array_equal(res.g["Au-Cu"], res.g["Cu-Au"])
    cut = 3.2  # between the first (2.65 Å) and second (3.75 Å) shells
    assert res.coordination("Au-Cu", cut) == pytest.approx(12, abs=0.05)
    assert res.coordination("Cu-Au", cut) == pytest.approx(4, abs=0.05)
    assert res.coordination("Cu-Cu", cut) == pytest.approx(8, abs=0.05)
    assert res.coordination("Au-Au", cut) == pytest.approx(0, abs=0.05)


def test_agrees_with_independent_histogram():
    frames = []
    for seed in range(3):
        si = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
        si.rattle(0.15, seed=seed)
        frames.append(si)
    res = partial_rdfs(frames, r_max=5.0, nbins=50)
    r, g_ref = _reference_rdf(frames, 5.0, 50)
    np.testing.assert_allclose(res.r, r, atol=1e-6)
    np.testing.assert_allclose(res.g["Si-Si"], g_ref, rtol=1e-4, atol=1e-4)
    # and, loosely, with ASE's own RDF (which uses r^2 dr shells)
    from ase.geometry.rdf import get_rdf

    g_ase, r_ase = get_rdf(frames[0], 5.0, 50)
    g0 = partial_rdfs(frames[:1], r_max=5.0, nbins=50).g["Si-Si"]
    assert np.sum(np.abs(g0 - g_ase)) * 0.1 < 0.05 * np.sum(g_ase) * 0.1


def test_partial_agrees_with_independent_histogram():
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True) * (2, 2, 2)
    nacl.rattle(0.2, seed=1)
    res = partial_rdfs([nacl], r_max=5.5, nbins=55)
    _, g_ref = _reference_rdf([nacl], 5.5, 55, "Na", "Cl")
    np.testing.assert_allclose(res.g["Cl-Na"], g_ref, rtol=1e-4, atol=1e-4)


def test_replication_gives_same_rdf():
    small = bulk("Cu", "fcc", a=3.6, cubic=True)
    small.rattle(0.05, seed=0)
    assert replication_for(small, 6.0) == (4, 4, 4)
    big = small * (4, 4, 4)
    a = partial_rdfs([small], r_max=6.0, nbins=60)
    b = partial_rdfs([big], r_max=6.0, nbins=60)
    # equal up to float32 rounding of pair distances that sit exactly on a bin edge (images of
    # one pair are one distance apart by symmetry): compare the cumulative neighbour counts
    for r_cut in (2.7, 3.8, 4.6, 5.5):
        assert a.coordination("Cu-Cu", r_cut) == pytest.approx(b.coordination("Cu-Cu", r_cut), rel=1e-6)
    assert rdf_error(a.g["Cu-Cu"], b.g["Cu-Cu"])["mean"] < 0.02


def test_universe_has_box_and_types():
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    u = universe_from_frames([si, si])
    assert len(u.atoms) == 8 and len(u.trajectory) == 2
    np.testing.assert_allclose(u.dimensions, [5.43, 5.43, 5.43, 90, 90, 90], atol=1e-4)
    assert set(u.atoms.types) == {"Si"}


def test_rdf_error_definition():
    r = np.linspace(0.025, 5.975, 120)
    g = np.exp(-((r - 2.5) ** 2))
    assert rdf_error(g, g, r) == {"mean": 0.0, "integral": 0.0}
    err = rdf_error(g, g + 0.5, r)
    assert err["mean"] == pytest.approx(0.5)
    assert err["integral"] == pytest.approx(0.5 * 6.0)
    with pytest.raises(ValueError):
        rdf_error(g, g[:-1])


def test_compare_rdfs_identical_is_zero():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    cu.rattle(0.1, seed=0)
    a = partial_rdfs([cu], 5.0, 50)
    assert compare_rdfs(a, a)["Cu-Cu"]["mean"] == 0.0
    with pytest.raises(ValueError):
        compare_rdfs(a, partial_rdfs([cu], 5.0, 40))


def test_vacuum_pair_distribution_of_points_in_a_ball_is_the_analytic_one():
    """Atoms uniform in a ball of radius R (no cell, pbc False): the per-pair-count distribution
    of distances is the known P(r) = 3r²/R³ - 9r³/(4R⁴) + 3r⁵/(16R⁶) on [0, 2R]; it integrates to
    1, and the coordination is (N - 1) x the fraction of pairs within r_cut."""
    from ase import Atoms

    from md_validation.rdf import partial_rdfs

    rng = np.random.default_rng(4)
    radius, n = 3.0, 40
    frames = []
    for _ in range(300):
        u = rng.normal(size=(n, 3))
        u *= (radius * rng.random(n) ** (1 / 3) / np.linalg.norm(u, axis=1))[:, None]
        frames.append(Atoms(f"Ar{n}", positions=u))
    res = partial_rdfs(frames, r_max=6.5, nbins=65)
    r, g = res.r, res.g["Ar-Ar"]
    exact = np.where(r <= 2 * radius, 3 * r**2 / radius**3 - 9 * r**3 / (4 * radius**4) + 3 * r**5 / (16 * radius**6), 0.0)
    assert not res.periodic
    assert np.sum(g) * (r[1] - r[0]) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(g, exact, atol=0.01)
    inside = np.mean([np.sum((np.linalg.norm(f.positions[:, None] - f.positions[None], axis=-1) < 2.0)) - n for f in frames]) / n
    assert res.coordination("Ar-Ar", 2.0) == pytest.approx(inside, rel=1e-9)


def test_vacuum_pairs_of_a_water_molecule():
    """Partial pairs of one water molecule: each O has two H at the O-H bond, each H one O;
    a frame periodic in some directions only is refused."""
    from ase.build import molecule

    from md_validation.rdf import partial_rdfs

    water = molecule("H2O")
    res = partial_rdfs([water], r_max=3.0, nbins=300)
    d_oh = water.get_distance(0, 1)
    assert res.coordination("O-H", d_oh + 0.05) == pytest.approx(2.0)
    assert res.coordination("H-O", d_oh + 0.05) == pytest.approx(1.0)
    assert res.coordination("H-H", 3.0) == pytest.approx(1.0)
    assert set(res.g) == {"H-H", "H-O", "O-H", "all"}
    slab = water.copy()
    slab.cell = [10, 10, 10]
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="periodic in no direction"):
        partial_rdfs([slab])
