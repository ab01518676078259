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


def test_stability_judges_each_atom_by_its_own_bonds():
    """A box of water and DMSO: a DMSO oxygen's nearest neighbour is its sulfur (1.5 Å), a water
    oxygen's a hydrogen (1.0 Å). An S=O bond stretched by 20 % is vibration judged against its own
    1.5 Å, not dissociation against the oxygens' mean (1.6 × ~1.1 Å) or one distance for all atoms;
    a methyl hydrogen pushed to 0.5 Å from the sulfur is a collapse. Bad references and frames with
    other atoms are errors."""
    pytest.importorskip("rdkit")
    from mlffd.sampling.boxes import pack_box

    start = pack_box(["O", "CS(C)=O"], [6, 1], 1.0, 1.7, np.random.default_rng(0))
    symbols = np.array(start.get_chemical_symbols())
    s_idx = int(np.flatnonzero(symbols == "S")[0])
    o_idx = int(np.argmin(np.where(symbols == "O", start.get_distances(s_idx, range(len(start)), mic=True), np.inf)))
    frames = [start.copy() for _ in range(6)]
    bond = start.get_distance(s_idx, o_idx, mic=True, vector=True)
    for f in frames[2:]:
        f.positions[o_idx] = f.positions[s_idx] + 1.2 * bond
    t = np.arange(6) * 10.0
    criteria = StabilityCriteria(window_fs=20.0, r_max=3.0, nbins=30, rdf_threshold=99.0)
    s = stability(frames, t, criteria)
    assert s["stable"], s["reason"]
    assert s["reference_nn_per_atom_A"][o_idx] == pytest.approx(np.linalg.norm(bond), abs=1e-6)
    assert 1.2 * np.linalg.norm(bond) > 1.6 * min(s["reference_nn_A"]["O"], s["reference_nn_A"]["H"])
    one_scale = stability(frames, t, criteria, reference_nn=s["reference_nn_A"]["H"])
    assert not one_scale["stable"] and one_scale["stable_time_ps"] == pytest.approx(0.02) and "beyond" in one_scale["reason"]
    c_idx = int(np.flatnonzero(symbols == "C")[0])
    h_idx = int(np.argmin(np.where(symbols == "H", start.get_distances(c_idx, range(len(start)), mic=True), np.inf)))
    frames[4].positions[h_idx] = frames[4].positions[s_idx] + [0.0, 0.0, 0.5]
    s = stability(frames, t, criteria)
    assert not s["stable"] and s["stable_time_ps"] == pytest.approx(0.04) and "closer" in s["reason"]
    with pytest.raises(ValueError, match="must be > 0"):
        stability(frames, t, criteria, reference_nn=np.full(len(start), np.nan))
    with pytest.raises(ValueError, match="frame 3 holds other atoms"):
        stability(frames[:3] + [frames[3][:-1]] + frames[4:], t, criteria)


def test_an_atom_without_neighbours_is_not_judged():
    """One argon atom alone in a big periodic cell: no neighbour within 6 Å, no reference, stable."""
    from ase import Atoms

    frames = [Atoms("Ar", positions=[[0, 0, 0]], cell=[20, 20, 20], pbc=True) for _ in range(4)]
    s = stability(frames, np.arange(4) * 10.0, StabilityCriteria(window_fs=20.0, r_max=5.0, nbins=20))
    assert s["stable"] and s["reference_nn_A"] == {"Ar": None} and s["reference_nn_per_atom_A"] == [None]


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


