"""The student potential: an equivariant moment message-passing network (its architecture).

Layers (:mod:`mlffd.models.layers`) build rotation invariants of Cartesian moments of each
atom's neighbourhood up to rank 2 - up to four-body in the atomic positions, like MACE with
L = 2 and correlation order 3 - and update the atom features; the energy is a per-atom readout
plus per-element reference energies; forces and virials come from autograd with respect to the
edge vectors, so they are exactly conservative. Energy and forces go continuously to zero at the
cutoff (the envelope's first two derivatives vanish there).

:class:`StudentPotential` holds the parameters and the readout and picks one of three
evaluation paths, each in its own module and mixed in here: one graph in PyTorch
(:mod:`mlffd.models.one_graph`, training and the reference), one graph by the fused CPU kernels
(:mod:`mlffd.models.fused`), or blocks of centre atoms (:mod:`mlffd.models.blocked`, large
systems). Its scripted ``forward`` is the artifact's entry point: the LAMMPS plugin
(``lammps_plugin/src/pair_mlffd.cpp``) calls it with the inputs ``mlffd/calculator.py`` builds in
ASE, and its metadata (``mlffd/artifact.py``) carries this config.

The names of the split-out modules are re-exported here, so ``from mlffd.models.potential
import X`` keeps working for every public name.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from ase.data import atomic_numbers
from torch import Tensor, nn

from mlffd import kernels
from mlffd.models.blocked import BlockedEvaluation
from mlffd.models.config import ModelConfig
from mlffd.models.fused import FusedEvaluation
from mlffd.models.layers import MLP, Interaction, RadialBasis, cubic_invariants, polynomial_envelope
from mlffd.models.layout import block_edges, centre_layout, in_centre_order, max_neighbours
from mlffd.models.novelty import add_novelty, atom_novelty
from mlffd.models.one_graph import OneGraphEvaluation
from mlffd.models.outputs import add_edge_gradients, conservative_outputs, edge_vectors
from mlffd.models.repulsion import PairRepulsion
from mlffd.models.uncertainty import add_uncertainty

__all__ = [
    "MLP", "Interaction", "RadialBasis", "StudentPotential", "block_edges", "centre_layout", "cubic_invariants",
    "in_centre_order", "max_neighbours", "polynomial_envelope",
]


class StudentPotential(OneGraphEvaluation, FusedEvaluation, BlockedEvaluation, nn.Module):
    """Energy model with conservative forces and virials; the artifact's scripted entry point."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.cutoff = float(config.cutoff)
        self.num_elements = len(config.elements)
        self.embedding = nn.Embedding(self.num_elements, config.features)
        self.num_basis = int(config.num_basis)
        self.basis = RadialBasis(config.cutoff, config.num_basis, config.envelope_p)
        self.interactions = nn.ModuleList(
            [
                Interaction(
                    config.features,
                    config.channels,
                    config.num_basis,
                    config.hidden,
                    config.avg_num_neighbors,
                    self.num_elements,
                    config.message_dim,
                    first=(t == 0),
                )
                for t in range(config.num_interactions)
            ]
        )
        #: readout heads: one, or the ``ensemble`` heads of a shallow ensemble whose mean is the
        #: energy and whose spread the uncertainty (heads share everything but the last layer)
        self.ensemble = int(config.ensemble)
        self.readout = MLP([config.features, config.readout_hidden, max(1, self.ensemble)])
        #: calibration of the ensemble's spread (energy, force), fitted on validation data at export
        self.register_buffer("uncertainty_scale", torch.ones(2, dtype=torch.get_default_dtype()))
        #: the novelty reference (:mod:`mlffd.models.novelty`): per-element feature means and
        #: whitening matrices, fitted on training frames at export; all zero (and
        #: ``use_novelty`` False) until fitted
        self.register_buffer("novelty_mean", torch.zeros(self.num_elements, config.features, dtype=torch.get_default_dtype()))
        self.register_buffer("novelty_whiten", torch.zeros(self.num_elements, config.features, config.features,
                                                           dtype=torch.get_default_dtype()))
        self.use_novelty: bool = False
        self.register_buffer("reference_energies", torch.zeros(self.num_elements, dtype=torch.get_default_dtype()))
        self.register_buffer("scale", torch.ones((), dtype=torch.get_default_dtype()))
        self.register_buffer("shift", torch.zeros((), dtype=torch.get_default_dtype()))
        #: the ZBL short-range prior; its switch distances are set by training from the data
        #: (all zero: off), and ``repulsion=False`` skips it
        self.repulsion = PairRepulsion([atomic_numbers[e] for e in config.elements])
        self.use_repulsion: bool = bool(config.repulsion)
        #: evaluation (not training) of more atoms than this runs :meth:`chunked_outputs`
        self.chunk_atoms = int(config.chunk_atoms)
        self.envelope_p = int(config.envelope_p)
        #: CPU evaluation (not training) runs the fused kernel ``mlffd_kernels::moment_density``
        #: (same numbers as the PyTorch path, a fraction of its time and memory); on when the
        #: kernel library is installed
        self.fused: bool = kernels.available()

    @torch.jit.unused
    def unused_parameters(self) -> List[str]:
        """Names of parameters the energy does not depend on (the first layer's projection)."""
        return ["interactions.0.project.weight"]

    def atom_energy_from_features(self, h: Tensor, species: Tensor, extras: Optional[Dict[str, Tensor]] = None) -> Tensor:
        """Readout, scale and shift, plus per-element reference energies. With an ensemble the
        energy is the heads' mean, and ``extras`` (when given) receives their per-atom energies
        ``[N, K]`` as ``"heads"``, without shift and references (they cancel in the spread;
        detached unless training, where the loss fits every head), and, with a novelty
        reference, each atom's novelty ``[N]`` as ``"novelty"``."""
        if extras is not None and self.use_novelty and not self.training:
            extras["novelty"] = atom_novelty(h, species, self.novelty_mean, self.novelty_whiten)
        out = self.readout(h)
        if self.ensemble > 1:
            if extras is not None:
                extras["heads"] = out * self.scale if self.training else (out * self.scale).detach()
            out = out.mean(1)
        else:
            out = out.squeeze(-1)
        return out * self.scale + self.shift + self.reference_energies.index_select(0, species)

    def forward(
        self,
        positions: Tensor,
        species: Tensor,
        edge_index: Tensor,
        shifts: Tensor,
        energy_mask: Tensor,
    ) -> Dict[str, Tensor]:
        extras: Dict[str, Tensor] = {}
        if not self.training and positions.shape[0] > self.chunk_atoms and edge_index.shape[1] > 0:
            out = self.chunked_outputs(positions, species, edge_index, shifts, energy_mask, extras)
        elif self.use_fused(positions.device):
            out = self.fused_outputs(positions, species, edge_index, shifts, energy_mask, extras)
        else:
            vectors = edge_vectors(positions, edge_index, shifts)
            atom_energies = self.atomic_energies(vectors, species, edge_index, extras)
            out = conservative_outputs(positions, vectors, atom_energies, energy_mask, edge_index, self.training)
        # the fused and blocked paths have tested every edge's length already: without a contact
        # inside the prior's reach it adds nothing, and its own test is skipped
        if self.use_repulsion and ("contacts" not in extras or bool(extras["contacts"])):
            if "edge_vectors" in extras:  # the fused or blocked path's edge vectors (in its edge order): not computed twice
                self.add_repulsion(out, positions, species, extras["edge_index"], shifts, energy_mask, extras["edge_vectors"])
            else:
                self.add_repulsion(out, positions, species, edge_index, shifts, energy_mask)
        if self.ensemble > 1 and "heads" in extras:
            add_uncertainty(out, extras["heads"], edge_index, energy_mask, self.uncertainty_scale, self.training)
        if "novelty" in extras:
            add_novelty(out, extras["novelty"], energy_mask)
        return out

    def geometry_in_reach(self, geometry: Tensor) -> bool:
        """Whether the prior is on and reaches any edge of an :func:`kernels.edge_geometry`
        (column 0 is 1/r, 0 beyond the cutoff): one pass over the edges, which also tells the
        fused path whether the prior has anything to add."""
        if not self.use_repulsion or geometry.shape[0] == 0:
            return False
        return float(geometry[:, 0].max()) * float(self.repulsion.r_outer.max()) > 1.0

    def switched_geometry(self, geometry: Tensor, species: Tensor, center: Tensor, neighbor: Tensor) -> Tensor:
        """``geometry`` (:func:`kernels.edge_geometry` rows of the edges ``center -> neighbor``) with
        the radial basis and its derivative times the network's share, on the edges the prior
        reaches: what :meth:`edge_features` does to the PyTorch path's basis. The same tensor when
        the prior reaches none."""
        if not self.use_repulsion:
            return geometry
        reach = self.repulsion.r_outer.max().to(geometry.dtype)
        close = torch.nonzero(geometry[:, 0] * reach > 1.0).squeeze(1)  # column 0 is 1/r (0 beyond the cutoff)
        if close.shape[0] == 0:
            return geometry
        rows = geometry.index_select(0, close)
        a = species.index_select(0, center.index_select(0, close))
        b = species.index_select(0, neighbor.index_select(0, close))
        share, dshare = self.repulsion.network_share(1.0 / rows[:, 0], a, b)
        first = kernels.GEOMETRY_BASIS
        nb = self.num_basis
        basis = rows[:, first : first + nb]
        dbasis = rows[:, first + nb : first + 2 * nb]
        rows = torch.cat([rows[:, :first], basis * share.unsqueeze(1), dbasis * share.unsqueeze(1) + basis * dshare.unsqueeze(1)],
                         dim=1)
        return geometry.index_copy(0, close, rows)

    def add_repulsion(self, out: Dict[str, Tensor], positions: Tensor, species: Tensor, edge_index: Tensor,
                      shifts: Tensor, energy_mask: Tensor, edge_vectors: Optional[Tensor] = None) -> None:
        """Add the short-range prior to ``out`` in place: closed forms with no parameters, so
        every evaluation path gets the same numbers and training fits the network to the rest.
        ``edge_vectors``, when given, are the vectors of ``edge_index``'s edges (not recomputed)."""
        if edge_vectors is None:
            vectors = (positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) + shifts).detach()
        else:
            vectors = edge_vectors.detach()
        pair = self.repulsion(vectors, species, edge_index, energy_mask)
        close = pair[1]
        if close.shape[0] == 0:
            return
        forces = out["forces"].clone()
        virial = out["virial"].clone()
        atom_virial = out["atom_virial"].reshape(-1, 9).clone()
        add_edge_gradients(forces, virial, atom_virial, vectors.index_select(0, close), pair[2],
                           edge_index[0].index_select(0, close), edge_index[1].index_select(0, close))
        out["energy"] = out["energy"] + pair[0].sum()
        out["atom_energies"] = out["atom_energies"] + pair[0]
        out["forces"] = forces
        out["virial"] = virial
        out["atom_virial"] = atom_virial.view(-1, 3, 3)
