"""md_validation.structure_metrics: bond angles, MSD/diffusion, nearest neighbours and stability."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list

from md_validation.structure_metrics import (
    StabilityCriteria,
    angle_distribution,
    bond_angles,
    diffusion_coefficient,
    mean_square_displacement,
    nearest_neighbor_distances,
    stability,
    unwrapped_positions,
)


def test_bond_angles_known_answers():
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    angles = bond_angles(si, 2.6)
    assert len(angles) == 8 * 6  # 4 neighbours -> 6 angles per atom
    np.testing.assert_allclose(angles, np.degrees(np.arccos(-1.0 / 3.0)), atol=1e-6)  # tetrahedral 109.47°
    x, p = angle_distribution([bulk("Cu", "fcc", a=3.6, cubic=True)], 2.8, nbins=180)
    peaks = set(np.round(x[p > 0]).astype(int))
    assert peaks == {60, 90, 120, 180}  # the fcc first-shell angles (x = bin centres, 1° bins)
    assert np.sum(p) * (x[1] - x[0]) == pytest.approx(1.0)


def test_msd_and_diffusion_known_answers():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    frames = []
    for k in range(40):  # all atoms drift +0.3 Å per frame along x through the periodic boundary
        f = cu.copy()
        f.positions += [0.3 * k, 0.0, 0.0]
        f.wrap()
        frames.append(f)
    unwrapped = unwrapped_positions(frames)
    np.testing.assert_allclose(unwrapped[-1] - unwrapped[0], [[0.3 * 39, 0, 0]] * 4, atol=1e-9)
    assert mean_square_displacement(frames)[-1] == pytest.approx(0.0, abs=1e-12)  # centre-of-mass motion removed
    t = np.linspace(0.0, 10.0, 101)
    d = diffusion_coefficient(t, 6 * 0.25 * t)
    assert d["D_A2_per_ps"] == pytest.approx(0.25) and d["D_cm2_per_s"] == pytest.approx(0.25e-4)


def test_msd_per_element_and_the_d_ratio_only_for_a_liquid():
    """Cu atoms moving ballistically in opposite pairs (centre fixed) while Au stays put: the Cu
    MSD is (v t)², the Au MSD zero; a D ratio is given for a diffusive teacher run only."""
    from md_validation.compare import diffusion_comparison

    base = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)  # 8 atoms
    base.symbols[[0, 1]] = "Au"
    cu = [k for k, s in enumerate(base.get_chemical_symbols()) if s == "Cu"]  # 6 atoms
    direction = np.zeros((len(base), 3))
    direction[cu[0::2], 0], direction[cu[1::2], 0] = 1.0, -1.0  # momentum-free: centre stays put
    frames = []
    for k in range(20):
        f = base.copy()
        f.positions += 0.1 * k * direction
        f.wrap()
        frames.append(f)
    lags = 0.1 * np.arange(20)
    np.testing.assert_allclose(mean_square_displacement(frames, symbol="Cu"), lags**2, atol=1e-9)
    np.testing.assert_allclose(mean_square_displacement(frames, symbol="Au"), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="no Ag atoms"):
        mean_square_displacement(frames, symbol="Ag")
    liquid = {"D_A2_per_ps": 2.0, "msd_final_A2": 5.0, "D_A2_per_ps_Cu": 3.0, "D_A2_per_ps_Au": 0.5}
    student = {"D_A2_per_ps": 1.0, "D_A2_per_ps_Cu": 1.5, "D_A2_per_ps_Au": 1.0}
    out = diffusion_comparison(liquid, student, bond=2.5)
    assert out == {"teacher_diffusive": True, "D_ratio": 0.5, "D_ratio_Cu": 0.5, "D_ratio_Au": 2.0}
    hot_solid = {"D_A2_per_ps": 0.02, "msd_final_A2": 0.3}  # plateau below (half a bond)² = 1.56
    assert diffusion_comparison(hot_solid, student, bond=2.5) == {"teacher_diffusive": False}


def test_nearest_neighbours_match_ase():
    for atoms in (bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2), bulk("Cu", "fcc", a=3.6), bulk("Si", "diamond", a=5.43)):
        atoms = atoms.copy()
        atoms.rattle(0.2, seed=1)
        i, d = neighbor_list("id", atoms, 4.6)
        ref = np.full(len(atoms), np.inf)
        np.minimum.at(ref, i, d)
        np.testing.assert_allclose(nearest_neighbor_distances(atoms, 4.6), ref, atol=1e-5)


def _hot_frames(n, seed=0):
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
        atoms.rattle(0.08, seed=seed + k)
        frames.append(atoms)
    return frames


def test_stability_stable_run():
    frames = _hot_frames(12)
    t = np.arange(12) * 10.0
    s = stability(frames, t, StabilityCriteria(window_fs=40.0, r_max=5.0, nbins=50), planned_fs=110.0)
    assert s["stable"] and s["reason"] is None
    assert s["stable_time_ps"] == pytest.approx(0.11)
    assert s["reference_nn_A"]["Cu"] == pytest.approx(3.6 / np.sqrt(2), abs=0.25)  # mean nearest neighbour of frame 0
    assert max(s["window_rdf_error"]) < 1.5


def test_stability_judges_each_element_by_its_own_bonds():
    """A molecule with bonds of very different length (DMSO: C-H 1.09, S=O 1.5, S-C 1.8 Å): an S=O
    bond stretched to 1.8 Å is judged against sulfur's own 1.5 Å, not against one distance for
    all atoms (the C-H bond's: 1.8 > 1.6 × 1.09 would call it dissociated); a hydrogen pulled
    1.5 Å off its carbon is dissociated."""
    pytest.importorskip("rdkit")
    from mlffd.sampling.molecules import molecule_from_smiles

    start = molecule_from_smiles("CS(C)=O", 1)
    symbols = np.array(start.get_chemical_symbols())
    s_idx, o_idx = int(np.flatnonzero(symbols == "S")[0]), int(np.flatnonzero(symbols == "O")[0])
    frames = [start.copy() for _ in range(6)]
    bond = frames[0].positions[o_idx] - frames[0].positions[s_idx]
    for f in frames[2:]:
        f.positions[o_idx] = f.positions[s_idx] + 1.2 * bond
    t = np.arange(6) * 10.0
    criteria = StabilityCriteria(window_fs=20.0, r_max=4.0, nbins=40, rdf_threshold=99.0)
    s = stability(frames, t, criteria)
    assert s["stable"], s["reason"]
    assert s["reference_nn_A"]["H"] == pytest.approx(1.09, abs=0.03)
    assert s["reference_nn_A"]["O"] == pytest.approx(np.linalg.norm(bond), abs=1e-6)
    one_scale = stability(frames, t, criteria, reference_nn=s["reference_nn_A"]["H"])
    assert not one_scale["stable"] and one_scale["stable_time_ps"] == pytest.approx(0.02)
    h_idx = int(np.flatnonzero(symbols == "H")[0])
    away = start.positions[h_idx] - start.positions[int(np.flatnonzero(symbols == "C")[0])]
    frames[4].positions[h_idx] += 1.5 * away / np.linalg.norm(away)
    s = stability(frames, t, criteria)
    assert not s["stable"] and s["stable_time_ps"] == pytest.approx(0.04) and "(H," in s["reason"]
    with pytest.raises(ValueError, match="no reference nearest-neighbour distance for S"):
        stability(frames, t, criteria, reference_nn={"C": 1.5, "H": 1.1, "O": 1.5})


def test_stability_detects_collapse_and_melt():
    criteria = StabilityCriteria(window_fs=40.0, r_max=5.0, nbins=50)
    frames = _hot_frames(12)
    t = np.arange(12) * 10.0
    frames[7].positions[3] = frames[7].positions[4] + [0.5, 0.3, 0.0]  # two atoms 0.58 Å apart at t = 70 fs
    s = stability(frames, t, criteria)
    assert not s["stable"] and s["stable_time_ps"] == pytest.approx(0.07) and "closer" in s["reason"]
    # a random gas after 60 fs: the windowed RDF leaves the crystal's
    rng = np.random.default_rng(0)
    frames = _hot_frames(12)
    for f in frames[6:]:
        f.positions = rng.uniform(0, 7.2, size=(32, 3))
    s = stability(frames, t, StabilityCriteria(window_fs=40.0, r_max=5.0, nbins=50, min_distance_factor=0.0, max_nn_factor=99.0))
    assert not s["stable"] and "RDF" in s["reason"]
    assert 0.02 <= s["stable_time_ps"] <= 0.06  # the first window that reaches into the gas


