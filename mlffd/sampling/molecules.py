"""Gas-phase molecules for sampling: conformers from SMILES (RDKit) and bond graphs.

A SMILES seed becomes a non-periodic :class:`ase.Atoms` (no cell, ``pbc`` False) holding several
conformers: RDKit's ETKDG embeds them, MMFF94 (UFF where MMFF has no parameters) pre-optimises
them, and near-duplicates (heavy-atom RMSD below :data:`PRUNE_RMSD_A`) are pruned. The seed's
``info`` carries what the sampler needs later: ``conformers`` (positions, ``[n, N, 3]``) and the
bond graph ``bonds`` (pairs of atom indices), from which :mod:`mlffd.sampling.torsions` finds
the rotatable bonds. An xyz file of a molecule gets its bonds from RDKit's bond perception.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms

#: conformers closer than this heavy-atom RMSD (Å, after alignment) count as one
PRUNE_RMSD_A = 0.3
#: ETKDG's random seed: the same SMILES gives the same conformers on every run (resumable sampling)
EMBED_SEED = 20260
#: MMFF/UFF pre-optimisation iterations per conformer
PREOPT_ITERATIONS = 2000


def rdkit() -> Any:
    """The ``rdkit.Chem`` module, or an ImportError that says how to install it."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError as exc:
        raise ImportError("molecules from SMILES need RDKit: pip install 'mlffd[molecules]' (or make setup)") from exc
    RDLogger.DisableLog("rdApp.*")  # parse failures become our own one-line errors
    return Chem


def parse_smiles(smiles: str, where: str = "smiles") -> Any:
    """The RDKit molecule of ``smiles`` with explicit hydrogens; ValueError naming ``where`` if invalid."""
    chem = rdkit()
    mol = chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles.strip() else None
    if mol is None:
        raise ValueError(f"{where}: {smiles!r} is not a valid SMILES (RDKit cannot parse it)")
    if mol.GetNumAtoms() == 0:
        raise ValueError(f"{where}: {smiles!r} has no atoms")
    if any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        raise ValueError(f"{where}: {smiles!r} has radical electrons; give a closed-shell molecule")
    return chem.AddHs(mol)


def conformers(smiles: str, n: int, where: str = "smiles", seed: int = EMBED_SEED) -> tuple[Any, np.ndarray]:
    """The molecule (with hydrogens) and up to ``n`` distinct pre-optimised conformers ``[k, N, 3]`` (Å)."""
    from rdkit.Chem import AllChem, rdMolAlign

    mol = parse_smiles(smiles, where)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    # a few extra embeddings so that pruning still leaves n distinct ones where the molecule has them
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=max(1, 2 * int(n)), params=params))
    if not ids:
        params.useRandomCoords = True  # ETKDG's fallback for strained or unusual molecules
        ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=max(1, 2 * int(n)), params=params))
    if not ids:
        raise ValueError(f"{where}: RDKit could not embed 3-D coordinates for {smiles!r}")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=PREOPT_ITERATIONS)
    elif AllChem.UFFHasAllMoleculeParams(mol):
        AllChem.UFFOptimizeMoleculeConfs(mol, maxIters=PREOPT_ITERATIONS)
    heavy = mol.__class__(mol)
    heavy = rdkit().RemoveHs(heavy)
    kept: list[int] = []
    for cid in ids:
        if all(rdMolAlign.GetBestRMS(heavy, heavy, prbId=cid, refId=k, maxMatches=100) >= PRUNE_RMSD_A for k in kept):
            kept.append(cid)
        if len(kept) == n:
            break
    return mol, np.stack([mol.GetConformer(cid).GetPositions() for cid in kept])


def bonds_of(mol: Any) -> np.ndarray:
    """Bonded atom pairs ``[M, 2]`` of an RDKit molecule."""
    pairs = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    return np.asarray(pairs, dtype=int).reshape(-1, 2)


def bond_orders(mol: Any) -> np.ndarray:
    """Bond orders (1, 1.5 aromatic, 2, 3) in the order of :func:`bonds_of`."""
    return np.asarray([b.GetBondTypeAsDouble() for b in mol.GetBonds()], dtype=float)


def molecule_from_smiles(smiles: str, n_conformers: int = 1, where: str = "smiles") -> Atoms:
    """A non-periodic molecule (first conformer's positions) carrying ``info['conformers']``,
    ``info['bonds']``, ``info['bond_orders']`` and ``info['smiles']``."""
    mol, confs = conformers(smiles, n_conformers, where)
    atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=confs[0], pbc=False)
    atoms.info.update(conformers=confs, bonds=bonds_of(mol), bond_orders=bond_orders(mol), smiles=smiles)
    return atoms


def perceive_bonds(atoms: Atoms, charge: int = 0, where: str = "structure") -> np.ndarray:
    """Bonds of a molecule given only by its positions (RDKit's connectivity perception)."""
    chem = rdkit()
    from rdkit.Chem import rdDetermineBonds

    lines = [str(len(atoms)), ""] + [f"{s} {x:.8f} {y:.8f} {z:.8f}" for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)]
    mol = chem.MolFromXYZBlock("\n".join(lines) + "\n")
    if mol is None:
        raise ValueError(f"{where}: RDKit cannot read it as a molecule")
    try:
        rdDetermineBonds.DetermineConnectivity(mol, charge=charge)
    except ValueError as exc:
        raise ValueError(f"{where}: RDKit cannot determine its bonds ({exc})") from exc
    return bonds_of(mol)


def is_molecule(atoms: Atoms) -> bool:
    """Whether ``atoms`` is a gas-phase structure (periodic in no direction)."""
    return not bool(np.any(atoms.pbc))


def conformer_index(repeat: int, temperature_index: int, n_conformers: int) -> int:
    """Which conformer a trajectory starts from: with one repeat, each temperature of a ladder starts
    from the next conformer; with ``repeats`` equal to the conformer count, every temperature
    starts once from each."""
    return (int(repeat) + int(temperature_index)) % max(int(n_conformers), 1)
