"""ASE calculator for mlffd artifacts: ``atoms.calc = DistilledCalculator("tiny")``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes, equal
from ase.stress import full_3x3_to_voigt_6_stress

from mlffd import artifact as _artifact
from mlffd import kernels
from mlffd.allocator import configure_allocator
from mlffd.contract import OUTPUTS
from mlffd.geometry import check_cell, check_edges, check_positions, far_images, lattice_inverse, reports_stress
from mlffd.neighbors import joined_neighbor_list, neighbor_list
from mlffd.registry import DEFAULT_MODEL, resolve

#: the uncertainty outputs (mlffd.models.uncertainty) that ``uncertainty=True`` turns into results
_UNCERTAINTY_USED = ("atom_energy_deviations", "atom_energy_uncertainty", "force_variance")


@dataclass(frozen=True)
class _Inputs:
    """Tensors for one model call (one structure or several concatenated)."""

    positions: torch.Tensor
    species: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor
    energy_mask: torch.Tensor


class UncertaintyWarning(UserWarning):
    """A structure's force uncertainty exceeded ``uncertainty_threshold`` (``action="warn"``)."""


class UncertaintyError(ValueError):
    """A structure's force uncertainty exceeded ``uncertainty_threshold`` (``action="raise"``)."""


class DistilledCalculator(Calculator):
    """ASE calculator backed by an ``NAME.mlffd.pt`` artifact.

    Like ASE's own calculators it holds the last structure, its results and a cached neighbour
    list, so it is not thread-safe: use one calculator per thread (two threads sharing one can
    get each other's results). Structures are checked against the geometry limits of
    :mod:`mlffd.geometry` before any list is built, and non-finite results are an error naming
    the atoms (docs/calculator.md, "Errors").

    Args:
        model: a shipped model name (``"tiny"``, ...) or a path to an artifact file.
        device: torch device, ``"cpu"`` or ``"cuda"``.
        dtype: ``torch.float32`` / ``torch.float64`` (or their names); ``None`` keeps the artifact's.
        skin: neighbour-list skin (Å). The list is built with ``cutoff + skin`` and reused until
            an atom has moved more than ``skin / 2`` or the cell, pbc or atoms change.
        block_atoms: centre atoms per block of the bounded-memory evaluation used for large
            systems (more: faster, more memory), at every system size; ``None``: the default
            for the device and the system (:func:`mlffd.artifact.block_atoms`: one graph up to
            262,144 edges on the CPU, e.g. 8,192 silicon atoms).
        compile: evaluate with a ``torch.compile``d copy of the student's PyTorch path
            (:mod:`mlffd.compiled`: same numbers to float rounding; tens of seconds to compile at
            the first call, a C++ compiler needed). Artifacts with mlffd's fused CPU kernels
            already fuse the hot loops, so it pays only for artifacts without them
            (docs/performance.md).
        compile_max_atoms: the largest system the compiled path evaluates in one graph (fastest,
            memory grows with the system); larger ones run its bounded-memory blocked evaluation.
        uncertainty: add ``energy_uncertainty`` (eV), ``energies_uncertainty`` (eV per atom) and
            ``forces_uncertainty`` (eV/Å per atom) to the results, from the student's calibrated
            ensemble heads (:mod:`mlffd.models.uncertainty`; same call, same cost); an artifact
            without them is a ValueError. An artifact with a novelty reference also gives
            ``novelty`` (the structure's) and ``novelties`` (per atom; :mod:`mlffd.models.novelty`:
            above 1, less like the training data than 99 % of the training structures).
        uncertainty_threshold: largest acceptable per-atom force uncertainty (eV/Å); above it
            ``action`` happens (implies ``uncertainty``).
        action: ``"warn"`` (an :class:`UncertaintyWarning` naming the atoms, results kept) or
            ``"raise"`` (an :class:`UncertaintyError`, no results kept) when the threshold is exceeded.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "stresses",
                              "energy_uncertainty", "energies_uncertainty", "forces_uncertainty", "novelty", "novelties"]
    #: the constructor's settings, kept in ``self.parameters`` as ASE's calculators keep theirs
    #: (``todict()`` lists those that differ from these; ``DistilledCalculator(**calc.todict())``
    #: builds an equal calculator). They are fixed once the model is loaded: :meth:`set` refuses
    #: to change them.
    default_parameters: dict = {
        "model": DEFAULT_MODEL, "device": "cpu", "dtype": None, "skin": 0.5, "block_atoms": None,
        "compile": False, "compile_max_atoms": None, "uncertainty": False, "uncertainty_threshold": None,
        "action": "warn",
    }

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        skin: float = 0.5,
        block_atoms: int | None = None,
        compile: bool = False,
        compile_max_atoms: int | None = None,
        uncertainty: bool = False,
        uncertainty_threshold: float | None = None,
        action: str = "warn",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        configure_allocator()  # glibc malloc keeps big tensors between calls (mlffd/allocator.py; MLFFD_MALLOC=default: off)
        self.device = torch.device(device)
        self.artifact = _artifact.load(resolve(model), device=self.device)
        self.metadata = self.artifact.metadata
        self.elements: list[str] = self.artifact.elements
        self.cutoff = self.artifact.cutoff
        if isinstance(dtype, str):
            dtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype, dtype)
        self.dtype: torch.dtype = self.artifact.dtype if dtype is None else dtype
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        self.module = self.artifact.module
        if self.dtype != self.artifact.dtype:
            self.module = self.module.to(self.dtype)
        if skin < 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        if block_atoms is not None and int(block_atoms) < 1:
            raise ValueError(f"block_atoms must be >= 1, got {block_atoms}")
        self.block_atoms = block_atoms
        if action not in ("warn", "raise"):
            raise ValueError(f"action must be 'warn' or 'raise', got {action!r}")
        if uncertainty_threshold is not None and not (np.isfinite(uncertainty_threshold) and uncertainty_threshold > 0):
            raise ValueError(f"uncertainty_threshold must be a positive number of eV/Å, got {uncertainty_threshold!r}")
        self.uncertainty = bool(uncertainty) or uncertainty_threshold is not None
        self.uncertainty_threshold = None if uncertainty_threshold is None else float(uncertainty_threshold)
        self.action = action
        if self.uncertainty and "uncertainty" not in self.metadata:
            raise ValueError(f"{self.artifact.path} carries no calibrated uncertainty (a student trained with "
                             "model_overrides ensemble >= 2 has one); use uncertainty=False")
        if self.uncertainty and compile:
            raise ValueError("uncertainty needs the artifact's own evaluation; use compile=False")
        self.parameters.update(
            uncertainty=self.uncertainty, uncertainty_threshold=self.uncertainty_threshold, action=action,
            model=str(model), device=str(self.device), dtype=None if dtype is None else str(self.dtype).removeprefix("torch."),
            skin=float(skin), block_atoms=None if block_atoms is None else int(block_atoms), compile=bool(compile),
            compile_max_atoms=None if compile_max_atoms is None else int(compile_max_atoms),
        )
        self.compiled = None
        if compile:
            from mlffd.compiled import COMPILED_MAX_ATOMS, CompiledStudent

            limit = COMPILED_MAX_ATOMS if compile_max_atoms is None else int(compile_max_atoms)
            self.compiled = CompiledStudent(self.artifact, self.device, self.dtype, limit, block_atoms)
        self.skin = float(skin)
        self._select_on_cpu = self.device.type == "cpu" and kernels.available()
        from ase.data import atomic_numbers

        self._z_to_species = np.full(119, -1, dtype=np.int64)
        for index, symbol in enumerate(self.elements):
            self._z_to_species[atomic_numbers[symbol]] = index
        self._nl_cache: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.nl_builds = 0  #: how many neighbour lists were built (for tests and diagnostics)

    def set(self, **kwargs):
        """ASE's ``set``: the constructor's settings cannot change (the model is loaded and
        compiled for them); a ValueError names those that would, and nothing changes."""
        fixed = sorted(k for k, v in kwargs.items() if k in self.default_parameters and not equal(v, self.parameters.get(k)))
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot change after the calculator is made; create a new DistilledCalculator")
        return super().set(**kwargs)

    # -- input checks -------------------------------------------------------------------------

    def species_of(self, atoms: Atoms) -> np.ndarray:
        """Model species indices of ``atoms``; ValueError naming unknown elements."""
        numbers = atoms.numbers
        species = self._z_to_species[numbers]
        if (species < 0).any():
            unknown = sorted(set(atoms.symbols[species < 0]))
            raise ValueError(
                f"element(s) {', '.join(unknown)} not in this model; it knows {', '.join(self.elements)} "
                f"({self.artifact.path})"
            )
        return species

    # -- neighbour lists ----------------------------------------------------------------------

    def _edges(self, atoms: Atoms) -> tuple[tuple[torch.Tensor, torch.Tensor], np.ndarray | float]:
        """The neighbour list within ``cutoff + skin`` as device tensors: edge index [2, E] and
        the edges' periodic shifts in Å [E, 3] (model dtype; the cell is part of the cache key),
        cached, with the lattice translations of far atoms it was built for (:meth:`_offset`). Rebuilt only when an atom moved more than ``skin / 2`` or the cell, pbc or atoms
        changed."""
        pos, cell, pbc, numbers = atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers
        if self._nl_cache is not None:
            pos0, cell0, pbc0, numbers0, edges, offset = self._nl_cache
            if (
                self.skin > 0
                and pos.shape == pos0.shape
                and np.array_equal(cell, cell0)
                and np.array_equal(pbc, pbc0)
                and np.array_equal(numbers, numbers0)
                and np.max(np.linalg.norm(pos - pos0, axis=1), initial=0.0) < 0.5 * self.skin
            ):
                return edges, offset
        check_cell(cell, pbc, self.cutoff + self.skin, len(pos))
        offset = self._offset(pos, cell, pbc, lattice_inverse(cell))
        found = neighbor_list(pos - offset, cell, pbc, self.cutoff + self.skin)
        check_edges(pos - offset, found.index, found.shifts(cell), len(pos))
        self.nl_builds += 1
        t = dict(dtype=self.dtype, device=self.device)
        edges = (
            torch.as_tensor(found.index, dtype=torch.int64, device=self.device),
            torch.as_tensor(found.shift_cells, **t) @ torch.as_tensor(cell, **t),
        )
        self._nl_cache = (pos.copy(), cell.copy(), pbc.copy(), numbers.copy(), edges, offset)
        return edges, offset

    @staticmethod
    def _offset(pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, inverse: np.ndarray) -> np.ndarray | float:
        """Lattice translations (Å) that bring atoms far outside a periodic box back next to it
        (:func:`mlffd.geometry.far_images`), fixed while a list is reused; 0 when there is none."""
        n = far_images(pos, inverse, pbc)
        return 0.0 if n is None else n @ np.asarray(cell, dtype=np.float64)

    def _inputs(self, structures: Sequence[Atoms], cache: bool) -> tuple[_Inputs, list[int]]:
        """Model inputs on the device and the atom count of each structure.

        One structure with ``cache`` (MD through ASE): the skin list stays on the device and
        its extra pairs are dropped there, each call (no per-edge work on the host: it
        dominated GPU runs of large systems). Otherwise (:meth:`calculate_batch`): lists at
        the bare cutoff (a skin would only cost: a cell whose half-width it exceeds gets many
        more images), joined on the host and copied to the device once.
        """
        if cache and len(structures) == 1:
            return self._cached_inputs(structures[0]), [len(structures[0])]
        moved, cells_seen = [], {}
        for k, atoms in enumerate(structures):  # before any list is built; the structure at fault named
            try:
                check_positions(atoms.positions)
                key = (atoms.cell.array.tobytes(), atoms.pbc.tobytes(), len(atoms))
                if key not in cells_seen:  # batches often share a cell
                    check_cell(atoms.cell.array, atoms.pbc, self.cutoff, len(atoms))
                    cells_seen[key] = lattice_inverse(atoms.cell.array)
                self.species_of(atoms)
            except ValueError as exc:
                raise type(exc)(f"structure {k} of {len(structures)}: {exc}") from None
            moved.append(atoms.positions - self._offset(atoms.positions, atoms.cell.array, atoms.pbc, cells_seen[key]))
        positions = np.concatenate(moved)
        cells = [atoms.cell.array for atoms in structures]
        species = self._z_to_species[np.concatenate([atoms.numbers for atoms in structures])]
        counts = [len(atoms) for atoms in structures]
        index, shifts = joined_neighbor_list(moved, cells, [atoms.pbc for atoms in structures], self.cutoff)
        try:
            check_edges(positions, index, shifts, len(positions))
        except ValueError:  # again, per structure, to name the one at fault
            start = np.concatenate([[0], np.cumsum(counts)])
            bounds = np.searchsorted(index[0], start)
            for k in range(len(structures)):
                e = slice(bounds[k], bounds[k + 1])
                try:
                    check_edges(positions, index[:, e], shifts[e], counts[k], first_atom=int(start[k]))
                except ValueError as exc:
                    raise type(exc)(f"structure {k} of {len(structures)}: {exc}") from None
            raise
        t = dict(dtype=self.dtype, device=self.device)
        inputs = _Inputs(
            positions=torch.as_tensor(positions, **t),
            species=torch.as_tensor(species, dtype=torch.int64, device=self.device),
            edge_index=torch.as_tensor(index, dtype=torch.int64, device=self.device),
            shifts=torch.as_tensor(shifts, **t),
            energy_mask=torch.ones(len(positions), dtype=torch.bool, device=self.device),
        )
        return inputs, counts

    def _cached_inputs(self, atoms: Atoms) -> _Inputs:
        """Inputs of one structure from the (skin-)cached device neighbour list."""
        t = dict(dtype=self.dtype, device=self.device)
        check_positions(atoms.positions)  # every step; the cell where a list is built (it rebuilds when the cell changes)
        spec = self.species_of(atoms)
        (ij, vec_shift), offset = self._edges(atoms)
        pos = torch.as_tensor(atoms.positions - offset, **t)
        if self.skin > 0 and ij.shape[1]:  # the skin list's edges within the cutoff, in centre order
            if self._select_on_cpu:  # one pass of mlffd's kernel instead of several tensor ops over all edges
                ij, vec_shift = kernels.select_edges(pos, ij, vec_shift, self.cutoff)
            else:  # gathers and one list of kept edges (boolean-mask indexing would copy every edge tensor)
                d = pos.index_select(0, ij[1]) - pos.index_select(0, ij[0]) + vec_shift
                keep = ((d * d).sum(1) < self.cutoff**2).nonzero().squeeze(1)
                ij, vec_shift = ij.index_select(1, keep), vec_shift.index_select(0, keep)
        return _Inputs(
            positions=pos,
            species=torch.as_tensor(spec, dtype=torch.int64, device=self.device),
            edge_index=ij,
            shifts=vec_shift,
            energy_mask=torch.ones(len(atoms), dtype=torch.bool, device=self.device),
        )

    # -- evaluation ---------------------------------------------------------------------------

    def _run(self, inputs: _Inputs) -> dict[str, np.ndarray]:
        args = (inputs.positions, inputs.species, inputs.edge_index, inputs.shifts, inputs.energy_mask)
        if self.compiled is not None:
            out = self.compiled(*args)
        else:
            _artifact.configure_blocks(self.module, self.metadata, self.device, self.block_atoms, n_atoms=inputs.positions.shape[0],
                                       n_edges=inputs.edge_index.shape[1])  # follows torch's thread count and the graph's size
            out = self.module(*args)
        missing = [k for k in OUTPUTS if k not in out]
        if missing:
            raise _artifact.ArtifactError(f"{self.artifact.path}: the model returned no {', '.join(missing)}; "
                                          f"an mlffd artifact returns {', '.join(OUTPUTS)}")
        # only what the results use crosses to the host: each output is its own device copy
        wanted = OUTPUTS + (_UNCERTAINTY_USED if self.uncertainty else ())
        if self.uncertainty and "atom_novelty" in out:
            wanted += ("atom_novelty",)
        result = {k: out[k].detach().to("cpu", torch.float64).numpy() for k in wanted}
        self._check_outputs(result, inputs)
        return result

    def _check_outputs(self, out: dict[str, np.ndarray], inputs: _Inputs) -> None:
        """Non-finite energies, forces or virials are an error naming the atoms, never a result."""
        bad = ~np.isfinite(out["atom_energies"]).reshape(len(out["atom_energies"]), -1).all(1)
        bad |= ~np.isfinite(out["forces"]).all(1) | ~np.isfinite(out["atom_virial"]).reshape(len(bad), -1).all(1)
        if not bad.any() and np.isfinite(out["energy"]).all():
            return
        atoms = np.nonzero(bad)[0]
        raise FloatingPointError(
            f"{self.artifact.path}: non-finite energy, forces or virial on atom(s) {atoms[:10].tolist()}"
            f"{' and more' if len(atoms) > 10 else ''} ({len(atoms)} of {len(bad)}); the structure is outside what "
            "this model can evaluate, or the file is damaged")

    @staticmethod
    def _results(atoms: Atoms, atom_energies: np.ndarray, forces: np.ndarray, atom_virial: np.ndarray) -> dict:
        energy = float(atom_energies.sum())
        res = {
            "energy": energy,
            "free_energy": energy,
            "energies": atom_energies.copy(),
            "forces": forces.copy(),
        }
        if reports_stress(atoms.cell.rank, atoms.pbc):
            volume = atoms.get_volume()
            res["stress"] = full_3x3_to_voigt_6_stress(-atom_virial.sum(0) / volume)
            res["stresses"] = full_3x3_to_voigt_6_stress(-atom_virial / volume)
        return res

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's check (:func:`ase.calculators.calculator.compare_atoms`: cell, pbc and the watched
        per-atom arrays, each within ``tol``), with every property first compared for exact
        equality, the common case (nothing changed between the energy, forces and stress
        queries of one MD step; only positions changed between steps): the same answer without
        ASE's element-wise tolerance test of every unchanged array, which runs on every query."""
        old = self.atoms
        if old is None:
            return super().check_state(atoms, tol=tol)

        def same(a, b) -> bool:
            return np.array_equal(a, b) or equal(a, b, atol=tol)

        watched = set(all_changes) - set(getattr(self, "ignored_changes", ()))
        changes = [p for p in ("cell", "pbc") if p in watched and not same(getattr(old, p)[...], getattr(atoms, p)[...])]
        ours, theirs = set(old.arrays), set(atoms.arrays)
        changes += sorted(watched & (ours ^ theirs))
        changes += [p for p in sorted(watched & ours & theirs) if not same(old.arrays[p], atoms.arrays[p])]
        return changes

    def calculate(self, atoms: Atoms | None = None, properties=None, system_changes=all_changes) -> None:
        if properties is None:
            properties = self.implemented_properties
        super().calculate(atoms, properties, system_changes)
        if ("stress" in properties or "stresses" in properties) and not reports_stress(self.atoms.cell.rank, self.atoms.pbc):
            raise PropertyNotImplementedError("stress needs a cell with three independent vectors (cell rank 3), periodic "
                                              f"along at least one of them; this structure has pbc={self.atoms.pbc.tolist()}")
        inputs, _ = self._inputs([self.atoms], cache=True)
        out = self._run(inputs)
        results = self._results(self.atoms, out["atom_energies"], out["forces"], out["atom_virial"])
        if self.uncertainty:
            results.update(self._uncertainty(out, slice(0, len(self.atoms))))
            self._check_threshold(results["forces_uncertainty"], self.atoms)
        self.results = results

    def calculate_batch(self, structures: Sequence[Atoms]) -> list[dict]:
        """Evaluate several structures in one model call; one results dict per structure.

        Each dict holds energy, free_energy, energies, forces and, for cells of rank 3 periodic
        along some direction, stress and stresses, exactly as :meth:`calculate` would give for that structure alone.
        """
        structures = list(structures)
        if not structures:
            return []
        inputs, counts = self._inputs(structures, cache=False)
        out = self._run(inputs)
        results, start = [], 0
        for atoms, n in zip(structures, counts):
            sl = slice(start, start + n)
            res = self._results(atoms, out["atom_energies"][sl], out["forces"][sl], out["atom_virial"][sl])
            if self.uncertainty:
                res.update(self._uncertainty(out, sl))
                self._check_threshold(res["forces_uncertainty"], atoms)
            results.append(res)
            start += n
        return results

    @staticmethod
    def _uncertainty(out: dict[str, np.ndarray], atoms: slice) -> dict:
        """The uncertainty (and novelty) results of the atoms ``atoms`` of one call (one structure)."""
        deviations = out["atom_energy_deviations"][atoms].sum(0)
        results = {
            "energy_uncertainty": float(np.sqrt(np.mean(deviations**2))),
            "energies_uncertainty": out["atom_energy_uncertainty"][atoms].copy(),
            "forces_uncertainty": np.sqrt(out["force_variance"][atoms]),
        }
        if "atom_novelty" in out:
            novelties = out["atom_novelty"][atoms].copy()
            results.update(novelties=novelties, novelty=float(novelties.max()) if len(novelties) else 0.0)
        return results

    def _check_threshold(self, forces_uncertainty: np.ndarray, atoms: Atoms) -> None:
        if self.uncertainty_threshold is None:
            return
        over = np.nonzero(forces_uncertainty > self.uncertainty_threshold)[0]
        if not len(over):
            return
        worst = int(over[np.argmax(forces_uncertainty[over])])
        message = (f"force uncertainty above {self.uncertainty_threshold:g} eV/Å on {len(over)} of {len(atoms)} atoms "
                   f"(largest {forces_uncertainty[worst]:.3g} eV/Å on atom {worst}; atoms {over[:10].tolist()}"
                   f"{' ...' if len(over) > 10 else ''}): {atoms.get_chemical_formula()} is outside what "
                   f"{self.artifact.path.name} was trained on")
        if self.action == "raise":
            raise UncertaintyError(message)
        import warnings

        warnings.warn(message, UncertaintyWarning, stacklevel=3)
