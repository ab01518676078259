"""Optional ``torch.compile`` (Inductor) evaluation of a student, for the Python/ASE path.

The artifact's TorchScript module stays the reference (LAMMPS runs it). With
``DistilledCalculator(..., compile=True)`` the eager student is rebuilt from the artifact's
weights (:func:`mlffd.models.load_student`) and its per-atom energy function is compiled with
dynamic shapes (atom and edge counts change between structures and steps without recompiling);
forces and virials come from the same autograd contract as the artifact
(:func:`mlffd.models.outputs.conservative_outputs`), so the numbers agree to float rounding.
Inductor fuses the many small elementwise kernels of the invariants and MLPs. The artifact's
fused CPU kernels do the same for its hot loops, so on the CPU this path is not faster than
the artifact (docs/performance.md); it stays for students exported without the fused kernels
and for experiments. The first call compiles (tens of seconds; a C++ compiler must be
installed), so it only ever pays for MD, not for a single energy.

Systems of up to ``max_atoms`` atoms are evaluated in one autograd graph (fastest; memory grows
with the system). Larger ones run the student's bounded-memory blocked evaluation
(:meth:`mlffd.models.blocked.BlockedEvaluation.chunked_outputs`, the artifact's path for large
systems) on a copy whose per-block pieces (edge features, interaction layers, readout) are
compiled: the same memory bound as the artifact.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from mlffd.artifact import Artifact, block_atoms
from mlffd.models import load_student
from mlffd.models.outputs import conservative_outputs, edge_vectors

#: largest system (atoms) evaluated by the compiled one-graph path by default
COMPILED_MAX_ATOMS = 8192


class CompiledStudent:
    """``__call__(positions, species, edge_index, shifts, energy_mask)`` like the artifact's forward.

    ``max_atoms``: the largest system evaluated in one graph; ``block_atoms``: centre atoms per
    block above it (``None``: :func:`mlffd.artifact.block_atoms` for the device and torch's threads).
    """

    def __init__(
        self,
        artifact: str | Path | Artifact,
        device: torch.device,
        dtype: torch.dtype,
        max_atoms: int = COMPILED_MAX_ATOMS,
        block_atoms: Optional[int] = None,
    ) -> None:
        model, _, metadata = load_student(artifact)
        self.model = model.to(device=device, dtype=dtype).eval()
        # Inductor compiles the PyTorch code path (it fuses it itself); mlffd's own fused CPU
        # kernels are opaque to it
        self.model.fused = False
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.metadata = metadata
        self.device = torch.device(device)
        self.max_atoms = int(max_atoms)
        self.block_atoms = block_atoms
        # cpp.threads 1: Inductor's fused CPU kernels run single-threaded, torch's own ops keep
        # torch's threads. The kernels' OpenMP (the system's libgomp) is another runtime than the
        # one inside the torch wheel; two spin-waiting runtimes, each with a thread per core,
        # oversubscribe the cores and stall each other. A per-compile option: no global
        # configuration is changed.
        options = dict(dynamic=True, options={"cpp.threads": 1})
        self._energies: Callable[[Tensor, Tensor, Tensor], Tensor] = torch.compile(self.model.atomic_energies, **options)
        # the blocked path: the same eager code as the artifact's, its per-block pieces compiled
        # (instance attributes shadow the methods; the one-graph model above stays uncompiled inside)
        self.blocked = copy.deepcopy(self.model)
        self.blocked.padded_features = torch.compile(self.blocked.padded_features, **options)
        self.blocked.atom_energy_from_features = torch.compile(self.blocked.atom_energy_from_features, **options)
        for layer in self.blocked.interactions:
            layer.forward = torch.compile(layer.forward, **options)

    def __call__(self, positions: Tensor, species: Tensor, edge_index: Tensor, shifts: Tensor, energy_mask: Tensor) -> Dict[str, Tensor]:
        one_graph = positions.shape[0] <= self.max_atoms or edge_index.shape[1] == 0
        with torch.enable_grad():
            try:
                if one_graph:
                    vectors = edge_vectors(positions.detach(), edge_index, shifts.detach())
                    atom_energies = self._energies(vectors, species, edge_index)
                else:
                    self.blocked.chunk_atoms = int(self.block_atoms or block_atoms(self.metadata, self.device))
                    out = self.blocked.chunked_outputs(positions.detach(), species, edge_index, shifts.detach(), energy_mask)
            except Exception as exc:  # noqa: BLE001 - Inductor's errors are many (no C++ compiler, ...)
                raise RuntimeError(
                    f"torch.compile of the student failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                    "use DistilledCalculator(..., compile=False)"
                ) from exc
            if one_graph:
                out = conservative_outputs(positions, vectors, atom_energies, energy_mask, edge_index, False)
        return {k: v.detach() for k, v in out.items()}
