"""The student potential: an equivariant moment message-passing network.

Each interaction layer builds, for every atom ``i`` and channel ``k``, Cartesian moments of its
neighbourhood up to rank 2,

    A0_ik = sum_j R0_k(r_ij, z_j)
    A1_ik = sum_j R1_k(r_ij, z_j) u_ij               (vector)
    A2_ik = sum_j R2_k(r_ij, z_j) (u_ij u_ij - I/3)  (traceless symmetric tensor)

(``u_ij`` the unit vector, ``z_j`` the neighbour's element (first layer) or a learned projection
of its features (later layers), ``R`` learned linear functions of a Bessel basis times a smooth
polynomial envelope, one per channel and rank). Their rotation
invariants - A0, |A1|^2, |A2|^2, A1.A2.A1 and tr(A2^3) - are up to four-body in the atomic
positions (like MACE with L = 2 and correlation order 3) and feed a residual MLP update of the
atom features. The energy is a per-atom readout plus per-element reference energies; forces and
virials come from autograd with respect to the edge vectors, so they are exactly conservative.
Energy and forces go continuously to zero at the cutoff (the envelope's first two derivatives
vanish there).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from ase.data import atomic_numbers
from torch import Tensor, nn

from mlffd import kernels
from mlffd.models.config import ModelConfig
from mlffd.models.outputs import add_edge_gradients, conservative_outputs, edge_vectors, output_dict
from mlffd.models.repulsion import PairRepulsion
from mlffd.models.uncertainty import add_uncertainty


def polynomial_envelope(x: Tensor, p: int) -> Tensor:
    """Smooth cutoff of DimeNet/NequIP: 1 at x=0, 0 with two vanishing derivatives at x>=1.

    ``1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, evaluated as
    ``1 + x^p (c0 + x (c1 + c2 x))`` (one power instead of three)."""
    pf = float(p)
    c0 = -(pf + 1.0) * (pf + 2.0) / 2.0
    c1 = pf * (pf + 2.0)
    c2 = -pf * (pf + 1.0) / 2.0
    env = 1.0 + torch.pow(x, p) * (c0 + x * (c1 + c2 * x))
    return torch.where(x < 1.0, env, torch.zeros_like(x))


def cubic_invariants(a1: Tensor, a2s: Tensor) -> List[Tensor]:
    """``A1.A2.A1`` and ``tr(A2^3)`` per atom and channel from ``a1 [3, N, K]`` and the symmetric
    ``a2s [6, N, K]`` (xx yy zz xy xz yz), component-major: closed forms on ``[3, N, K]`` blocks
    instead of ``[3, 3, 3, N, K]`` intermediates (the fused kernel ``moment_invariants`` computes
    the same formulas).

    With diagonal ``d`` and off-diagonal ``o = (xy, xz, yz)``:
    ``A1.A2.A1 = sum_a d_a x_a^2 + 2 (xy x y + xz x z + yz y z)`` and
    ``tr(A2^3) = sum_a d_a^3 + 3 (|o|^2 tr(A2) - sum_a d_a o_opp(a)^2) + 6 xy xz yz`` where
    ``o_opp`` pairs xx with yz, yy with xz and zz with xy."""
    d = a2s[0:3]
    o = a2s[3:6]
    pairs = a1[[0, 0, 1]] * a1[[1, 2, 2]]  # x y, x z, y z
    a1a2a1 = (d * a1 * a1).sum(0) + 2.0 * (o * pairs).sum(0)
    o2 = o * o
    tr3 = (
        (d * d * d).sum(0)
        + 3.0 * (o2.sum(0) * d.sum(0) - (d * o2.flip(0)).sum(0))
        + 6.0 * o[0] * o[1] * o[2]
    )
    return [a1a2a1, tr3]


class RadialBasis(nn.Module):
    """Bessel basis sin(n pi r / rc) / r times the polynomial envelope: ``[E] -> [E, n]``."""

    def __init__(self, cutoff: float, num_basis: int, envelope_p: int) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.envelope_p = int(envelope_p)
        # exact in float64 (rounded once when the model is cast): the fused kernel computes the same
        # frequencies as multiples of pi / cutoff
        self.register_buffer("freqs", torch.arange(1, num_basis + 1, dtype=torch.float64) * (math.pi / cutoff))
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, r: Tensor) -> Tensor:
        x = r / self.cutoff
        env = polynomial_envelope(x, self.envelope_p)
        r_safe = r.clamp(min=1e-6)
        weight = (self.prefactor * env / r_safe).unsqueeze(-1)  # one [E] factor, not [E, n] divisions
        return torch.sin(self.freqs * r_safe.unsqueeze(-1)) * weight


class MLP(nn.Module):
    """Linear -> SiLU -> ... -> Linear."""

    def __init__(self, sizes: List[int]) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for k in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[k], sizes[k + 1]))
            if k < len(sizes) - 2:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Interaction(nn.Module):
    """One message-passing layer: neighbour density -> moments -> invariants -> residual update.

    The per-edge work is factorised so that it does not grow with the channel count: each edge
    contributes the outer product ``Y_l(u) ⊗ basis_b(r) ⊗ z_j`` (10 angular components, B
    radial functions, D neighbour features) to a per-atom density ``rho[i, l, (b, d)]``; the
    learned radial/channel mixing ``W_rank`` is then a per-atom matrix product. For the first
    layer ``z_j`` is the one-hot element of the neighbour.
    """

    def __init__(
        self,
        features: int,
        channels: int,
        num_basis: int,
        hidden: int,
        avg_num_neighbors: float,
        num_elements: int,
        message_dim: int,
        first: bool,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.first = first
        self.in_dim = num_elements if first else message_dim
        self.num_basis = num_basis
        width = num_basis * self.in_dim
        self.w0 = nn.Parameter(torch.randn(width, channels) / math.sqrt(width))
        self.w1 = nn.Parameter(torch.randn(width, channels) / math.sqrt(width))
        self.w2 = nn.Parameter(torch.randn(width, channels) / math.sqrt(width))
        # the first layer carries the element one-hot instead (an empty, frozen projection)
        self.project = nn.Linear(features, message_dim, bias=False)
        if first:  # unused: keep it out of the parameter count and of optimisers
            self.project.weight.requires_grad_(False)
        self.update = MLP([5 * channels + features, hidden, features])
        self.norm = 2.0 / math.sqrt(float(avg_num_neighbors))
        self.register_buffer("sym_weight", torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], dtype=torch.get_default_dtype()))

    def messages(self, h: Tensor, onehot: Tensor) -> Tensor:
        """What each atom sends its neighbours: ``[N, S]`` element one-hot (first layer) or ``[N, D]``."""
        if self.first:
            return onehot
        return self.project(h)

    def density(self, z_nb: Tensor, ang_t: Tensor, radial: Tensor, pad_index: Tensor) -> Tensor:
        """The normalised neighbour density ``rho [10, n, B * D]`` (component-major) of ``n``
        centre atoms (PyTorch).

        ``z_nb`` holds each edge's neighbour message (:meth:`messages` gathered by neighbour);
        ``ang_t`` is ``[n, 10, M]``: the angular components of each centre's ``M`` neighbour
        slots, ``radial`` the ``[n, M, B]`` radial basis (both zero in empty slots);
        ``pad_index`` maps each edge to its slot ``centre * M + slot``.
        """
        n_atoms = ang_t.shape[0]
        max_nbrs = ang_t.shape[2]
        z_pad = torch.zeros(n_atoms * max_nbrs, self.in_dim, dtype=z_nb.dtype, device=z_nb.device)
        z_pad = z_pad.index_copy(0, pad_index, z_nb).view(n_atoms, max_nbrs, self.in_dim)
        # einsum's outer product back-propagates as two contractions (faster than broadcasting)
        radial_z = torch.einsum("nmb,nmd->nmbd", radial, z_pad).reshape(n_atoms, max_nbrs, self.num_basis * self.in_dim)
        # rho[i, l, (b, d)] = sum_j Y_l(u_ij) basis_b(r_ij) z_jd, as a batched matrix product
        return (torch.bmm(ang_t, radial_z) * self.norm).transpose(0, 1)

    def fused_density(self, vectors: Tensor, messages: Tensor, neighbor: Tensor, offsets: Tensor,
                      cutoff: float, envelope_p: int, geometry: Optional[Tensor] = None) -> List[Tensor]:
        """:meth:`density` by the fused CPU kernel ``mlffd_kernels::moment_density`` from edge
        vectors sorted by centre (centre ``i`` owns edges ``offsets[i]:offsets[i + 1]``), the
        messages of all atoms and each edge's neighbour: no per-edge tensor besides the vectors
        (and ``geometry``, the edges' ``edge_geometry`` when several passes share it).
        Split by rank as :meth:`mix` takes it: ``[rho[0], rho[1:4], rho[4:10]]``."""
        if geometry is None:
            return kernels.moment_density(vectors, messages, neighbor, offsets, cutoff, self.num_basis, envelope_p, self.norm)
        return kernels.moment_density_geometry(vectors, geometry, messages, neighbor, offsets, cutoff, self.num_basis,
                                               envelope_p, self.norm)

    def mix(self, h: Tensor, rho: List[Tensor], fused: bool) -> Tensor:
        """Updated features ``h [n, F]`` from the density by rank ``[rho[0] [n, BD], rho[1:4]
        [3, n, BD], rho[4:10] [6, n, BD]]``: moments, invariants (by the fused kernel
        ``moment_invariants`` when ``fused``), residual MLP."""
        a0 = torch.matmul(rho[0], self.w0)  # [N, K]
        a1 = torch.matmul(rho[1], self.w1)  # [3, N, K]
        a2s = torch.matmul(rho[2], self.w2)  # [6, N, K] symmetric storage
        if fused:
            inv = torch.cat([a0, kernels.moment_invariants(a1, a2s), h], dim=1)
        else:
            b1 = (a1 * a1).sum(0)
            b2 = (a2s * a2s * self.sym_weight.view(6, 1, 1)).sum(0)
            b3, b4 = cubic_invariants(a1, a2s)
            inv = torch.cat([a0, b1, b2, b3, b4, h], dim=1)
        return h + self.update(inv)

    def forward(self, h: Tensor, z_nb: Tensor, ang_t: Tensor, radial: Tensor, pad_index: Tensor) -> Tensor:
        """Updated features of the ``n`` centre atoms ``h [n, F]`` (PyTorch path, see :meth:`density`)."""
        rho = self.density(z_nb, ang_t, radial, pad_index)
        return self.mix(h, [rho[0], rho[1:4], rho[4:10]], False)


def centre_layout(center: Tensor, n_atoms: int, with_slot: bool = True) -> List[Tensor]:
    """Edges grouped by centre atom: ``order`` (stable argsort of ``center``; empty when the
    edges are already sorted by centre, as LAMMPS and the calculator give them), ``offsets
    [N + 1]`` (centre ``i`` owns sorted edges ``offsets[i]:offsets[i + 1]``) and ``slot [E]`` (the
    place of each sorted edge among its centre's neighbours, the basis of the padded layout of
    the PyTorch path; empty unless ``with_slot``)."""
    offsets = torch.zeros(n_atoms + 1, dtype=torch.int64, device=center.device)
    offsets[1:] = torch.cumsum(torch.bincount(center, minlength=n_atoms), 0)
    if bool((center[1:] >= center[:-1]).all()):
        order = torch.zeros(0, dtype=torch.int64, device=center.device)
        sorted_center = center
    else:
        order = torch.argsort(center, stable=True)
        sorted_center = center.index_select(0, order)
    slot = torch.zeros(0, dtype=torch.int64, device=center.device)
    if with_slot:
        slot = torch.arange(center.shape[0], device=center.device) - offsets.index_select(0, sorted_center)
    return [order, offsets, slot]


def in_centre_order(x: Tensor, order: Tensor, dim: int = 0) -> Tensor:
    """``x`` (per edge along ``dim``) in centre order: ``x`` itself when ``order`` is empty."""
    return x if order.shape[0] == 0 else x.index_select(dim, order)


def max_neighbours(offsets: Tensor) -> int:
    """The largest neighbour count (``M`` of the padded layout); 0 without edges."""
    return int((offsets[1:] - offsets[:-1]).max().item()) if offsets.shape[0] > 1 else 0


class StudentPotential(nn.Module):
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

    def edge_features(self, vectors: Tensor) -> List[Tensor]:
        """Angular components ``[E, 10]`` (1 | u | traceless u u^T as xx yy zz xy xz yz) and the
        radial basis ``[E, B]`` (zero at and beyond the cutoff) of edge vectors ``[E, 3]``."""
        r = torch.linalg.vector_norm(vectors, dim=1)
        inside = r < self.cutoff
        r_safe = torch.where(inside, r, torch.full_like(r, self.cutoff))
        u = vectors * (1.0 / r_safe).unsqueeze(-1)
        basis = self.basis(r_safe)
        x, y, z = u[:, 0], u[:, 1], u[:, 2]
        third = 1.0 / 3.0
        ang = torch.stack(
            [torch.ones_like(x), x, y, z, x * x - third, y * y - third, z * z - third, x * y, x * z, y * z], dim=1
        )
        return [ang, basis]

    def padded_features(self, vectors: Tensor, pad_index: Tensor, n_atoms: int, max_nbrs: int) -> List[Tensor]:
        """Edge features in the padded layout of :meth:`Interaction.forward`: ``ang_t [n, 10, M]``,
        ``radial [n, M, B]``."""
        ang, basis = self.edge_features(vectors)
        ang_pad = torch.zeros(n_atoms * max_nbrs, 10, dtype=vectors.dtype, device=vectors.device)
        ang_t = ang_pad.index_copy(0, pad_index, ang).view(n_atoms, max_nbrs, 10).transpose(1, 2)
        radial_pad = torch.zeros(n_atoms * max_nbrs, self.num_basis, dtype=vectors.dtype, device=vectors.device)
        radial = radial_pad.index_copy(0, pad_index, basis).view(n_atoms, max_nbrs, self.num_basis)
        return [ang_t, radial]

    def block_edges(
        self,
        positions: Tensor,
        edge_index: Tensor,
        shifts: Tensor,
        order: Tensor,
        offsets: Tensor,
        block: List[int],
        grad: bool,
    ) -> List[Tensor]:
        """The edges of one block ``[a0, a1, e0, e1]`` of centres (atoms ``a0:a1``, sorted edges
        ``e0:e1``): centres, neighbours, edge vectors (an autograd leaf when ``grad``) and the
        block's offsets ``[a1 - a0 + 1]`` into them."""
        a0, a1, e0, e1 = block[0], block[1], block[2], block[3]
        if order.shape[0] == 0:  # edges already in centre order
            ci = edge_index[0, e0:e1]
            nj = edge_index[1, e0:e1]
            sh = shifts[e0:e1]
        else:
            idx = order[e0:e1]
            ci = edge_index[0].index_select(0, idx)
            nj = edge_index[1].index_select(0, idx)
            sh = shifts.index_select(0, idx)
        with torch.no_grad():
            v = positions.index_select(0, nj) - positions.index_select(0, ci) + sh
        v = v.detach().requires_grad_(grad)
        return [ci, nj, v, offsets[a0 : a1 + 1] - e0]

    def block_padding(self, ci: Tensor, v: Tensor, slot: Tensor, block: List[int], max_nbrs: int) -> List[Tensor]:
        """The PyTorch path's padded inputs of one block's edges (:meth:`block_edges`): padded
        slots, ``ang_t`` and ``radial`` for :meth:`Interaction.forward`."""
        pad = (ci - block[0]) * max_nbrs + slot[block[2] : block[3]]
        ang_t, radial = self.padded_features(v, pad, block[1] - block[0], max_nbrs)
        return [pad, ang_t, radial]

    def use_fused(self, device: torch.device) -> bool:
        """Whether evaluation on ``device`` runs the fused CPU kernel (see :attr:`fused`)."""
        return self.fused and not self.training and device.type == "cpu"

    def atom_energy_from_features(self, h: Tensor, species: Tensor, heads: Optional[List[Tensor]] = None) -> Tensor:
        """Readout, scale and shift, plus per-element reference energies. With an ensemble the
        energy is the heads' mean, and ``heads`` (when given) receives their per-atom energies
        ``[N, K]`` without shift and references (they cancel in the spread); detached unless
        training, where the loss fits every head."""
        out = self.readout(h)
        if self.ensemble > 1:
            if heads is not None:
                heads.append(out * self.scale if self.training else (out * self.scale).detach())
            out = out.mean(1)
        else:
            out = out.squeeze(-1)
        return out * self.scale + self.shift + self.reference_energies.index_select(0, species)

    def atomic_energies(self, vectors: Tensor, species: Tensor, edge_index: Tensor, heads: Optional[List[Tensor]] = None) -> Tensor:
        """Per-atom energies ``[N]`` from edge vectors ``[E, 3]`` (``r_j - r_i``), in one graph."""
        center = edge_index[0]
        neighbor = edge_index[1]
        n_atoms = species.shape[0]
        fused = self.use_fused(vectors.device)
        order, offsets, slot_sorted = centre_layout(center, n_atoms, not fused)
        onehot = torch.nn.functional.one_hot(species, self.num_elements).to(vectors.dtype)
        h = self.embedding(species)
        if fused:
            return self.fused_energies(in_centre_order(vectors, order), species, in_centre_order(neighbor, order), offsets, heads)
        # padded neighbour layout: edge e -> (centre, slot); the sums over neighbours become
        # batched matrix products that never materialise per-edge x channel tensors
        max_nbrs = max_neighbours(offsets)
        slot = slot_sorted if order.shape[0] == 0 else torch.empty_like(slot_sorted).index_copy_(0, order, slot_sorted)
        pad_index = center * max_nbrs + slot
        ang_t, radial = self.padded_features(vectors, pad_index, n_atoms, max_nbrs)
        for layer in self.interactions:
            z_nb = layer.messages(h, onehot).index_select(0, neighbor)
            h = layer(h, z_nb, ang_t, radial, pad_index)
        return self.atom_energy_from_features(h, species, heads)

    def fused_energies(self, vectors: Tensor, species: Tensor, neighbor: Tensor, offsets: Tensor,
                       heads: Optional[List[Tensor]] = None) -> Tensor:
        """Per-atom energies by the fused CPU kernels from edges sorted by centre (centre ``i``
        owns edges ``offsets[i]:offsets[i + 1]``; ``neighbor`` and ``vectors`` in that order).
        The edges' geometry (distances, angular components, radial basis and its derivative) is
        computed once for all layers' densities and their backward passes."""
        onehot = torch.nn.functional.one_hot(species, self.num_elements).to(vectors.dtype)
        h = self.embedding(species)
        with torch.no_grad():
            geometry = kernels.edge_geometry(vectors.detach(), self.cutoff, self.num_basis, self.envelope_p)
        for layer in self.interactions:
            rho = layer.fused_density(vectors, layer.messages(h, onehot), neighbor, offsets, self.cutoff, self.envelope_p,
                                      geometry)
            h = layer.mix(h, rho, True)
        return self.atom_energy_from_features(h, species, heads)

    def fused_outputs(
        self, positions: Tensor, species: Tensor, edge_index: Tensor, shifts: Tensor, energy_mask: Tensor,
        heads: Optional[List[Tensor]] = None,
    ) -> Dict[str, Tensor]:
        """:func:`conservative_outputs` in one graph by the fused CPU kernels: the edge vectors,
        sorted by centre, are the autograd leaf (no scatter back to the caller's edge order)."""
        order, offsets, _ = centre_layout(edge_index[0], species.shape[0], False)
        sorted_index = in_centre_order(edge_index, order, 1)
        ci = sorted_index[0]
        nj = sorted_index[1]
        with torch.no_grad():
            v = positions.index_select(0, nj) - positions.index_select(0, ci) + in_centre_order(shifts, order)
        v.requires_grad_(True)
        energies = self.fused_energies(v, species, nj, offsets, heads)
        return conservative_outputs(positions, v, energies, energy_mask, sorted_index, False, True)

    def chunked_outputs(
        self,
        positions: Tensor,
        species: Tensor,
        edge_index: Tensor,
        shifts: Tensor,
        energy_mask: Tensor,
        heads: Optional[List[Tensor]] = None,
    ) -> Dict[str, Tensor]:
        """The outputs of :func:`conservative_outputs` evaluated in blocks of centre atoms.

        Memory does not grow with the per-edge work of all layers at once: a first pass keeps
        only the atom features ``h_t`` and messages ``z_t`` of every layer (no autograd graph);
        then, layer by layer from the last, each block of ``chunk_atoms`` centre atoms rebuilds
        its own small graph (edge vectors, neighbour messages and its features as leaves) and
        back-propagates the incoming gradient ``dE/dh_{t+1}``. The edge gradients go straight
        into forces and virials, the message gradients are scattered to the neighbours and
        joined with ``dE/dh_t``. Same numbers as the one-graph path (tests compare them), with
        peak memory ~ one block's edges plus a few numbers per atom and layer.

        With the fused CPU kernels the first pass also keeps each layer's density (``10 B D``
        numbers per atom), the second differentiates the per-atom part from it with autograd
        and hands the density gradient to ``moment_density_backward_into``: each layer's edge work
        runs once forward and once backward.
        """
        n_atoms = species.shape[0]
        dtype = positions.dtype
        device = positions.device
        chunk = self.chunk_atoms
        fused = self.use_fused(device)
        # edges in centre order: block [a0, a1) of centres owns sorted edges [e0, e1); each block
        # gathers its own edges when it runs (no per-edge copies kept)
        order, offsets, slot = centre_layout(edge_index[0], n_atoms, not fused)
        max_nbrs = 0 if fused else max_neighbours(offsets)  # the padded layout of the PyTorch path
        bounds: List[int] = offsets[torch.arange(0, n_atoms + chunk, chunk, device=device).clamp(max=n_atoms)].tolist()
        blocks: List[List[int]] = []
        for k, a0 in enumerate(range(0, n_atoms, chunk)):
            blocks.append([a0, min(a0 + chunk, n_atoms), bounds[k], bounds[k + 1]])
        onehot = torch.nn.functional.one_hot(species, self.num_elements).to(dtype)
        # pass 1: features entering every layer but the last (and, fused, their densities), no graph
        n_layers = len(self.interactions)
        hs: List[Tensor] = []
        zs: List[Tensor] = []
        rhos: List[List[Tensor]] = []
        with torch.no_grad():
            h = self.embedding(species)
            for t, layer in enumerate(self.interactions):
                z = layer.messages(h, onehot)
                hs.append(h)
                zs.append(z)
                if t < n_layers - 1:
                    h_next = torch.empty_like(h)
                    # fused: the layer's density, kept for pass 2 (the PyTorch path keeps none)
                    width = layer.num_basis * layer.in_dim if fused else 0
                    kept = [
                        torch.empty(n_atoms, width, dtype=dtype, device=device),
                        torch.empty(3, n_atoms, width, dtype=dtype, device=device),
                        torch.empty(6, n_atoms, width, dtype=dtype, device=device),
                    ]
                    for block in blocks:
                        a0, a1 = block[0], block[1]
                        ci, nj, v_c, off_c = self.block_edges(positions, edge_index, shifts, order, offsets, block, False)
                        if fused:
                            rho = layer.fused_density(v_c, z, nj, off_c, self.cutoff, self.envelope_p)
                            kept[0][a0:a1] = rho[0]
                            kept[1][:, a0:a1] = rho[1]
                            kept[2][:, a0:a1] = rho[2]
                            h_next[a0:a1] = layer.mix(h[a0:a1], rho, True)
                        else:
                            pad, ang_t, radial = self.block_padding(ci, v_c, slot, block, max_nbrs)
                            h_next[a0:a1] = layer(h[a0:a1], z.index_select(0, nj), ang_t, radial, pad)
                    if fused:
                        rhos.append(kept)
                    h = h_next
        # pass 2: from the last layer (with the readout) back to the first, one block of centres
        # at a time; g_h carries dE/dh_{t+1} between layers
        atom_energies = torch.zeros(n_atoms, dtype=dtype, device=device)
        forces = torch.zeros_like(positions)
        virial = torch.zeros(3, 3, dtype=dtype, device=device)
        atom_virial = torch.zeros(n_atoms, 9, dtype=dtype, device=device)
        g_h = torch.zeros(0, dtype=dtype, device=device)
        head_energies = torch.zeros(n_atoms, max(1, self.ensemble), dtype=dtype, device=device)
        no_messages = torch.zeros(0, dtype=dtype, device=device)  # the first layer's messages are constants
        for t in range(n_layers - 1, -1, -1):
            # TorchScript cannot index a ModuleList with a variable: pick layer t by enumerating
            for idx, blayer in enumerate(self.interactions):
                if idx == t:
                    h_t = hs[t]
                    z_t = zs[t]
                    g_prev = torch.zeros_like(h_t)
                    g_z = torch.zeros_like(z_t)
                    for block in blocks:
                        a0, a1 = block[0], block[1]
                        # blocks that cannot contribute are skipped: no energy-carrying atom in
                        # the last layer (e.g. LAMMPS ghosts), no incoming gradient before it
                        if t == n_layers - 1:
                            if not bool(energy_mask[a0:a1].any()):
                                continue
                        elif not bool((g_h[a0:a1] != 0).any()):
                            continue
                        h_c = h_t[a0:a1].detach()
                        if t > 0:  # the embedding h_0 does not depend on positions
                            h_c.requires_grad_(True)
                        # the first layer's messages are the constant one-hot: no leaf
                        leaves: List[Tensor] = []
                        ci, nj, v_c, off_c = self.block_edges(positions, edge_index, shifts, order, offsets, block, not fused)
                        geometry: Optional[Tensor] = None
                        if fused:  # leaves: the block's density (kept, or computed), its features
                            if t < n_layers - 1:
                                rho_c = [rhos[t][0][a0:a1], rhos[t][1][:, a0:a1], rhos[t][2][:, a0:a1]]
                            else:  # computed here: its forward and backward share the edges' geometry
                                with torch.no_grad():
                                    geometry = kernels.edge_geometry(v_c, self.cutoff, blayer.num_basis, self.envelope_p)
                                    rho_c = blayer.fused_density(v_c, z_t, nj, off_c, self.cutoff, self.envelope_p, geometry)
                            leaves = [r.detach().requires_grad_(True) for r in rho_c]
                            out = blayer.mix(h_c, leaves, True)
                        else:  # leaves: edge vectors, features, per-edge messages
                            pad, ang_t, radial = self.block_padding(ci, v_c, slot, block, max_nbrs)
                            z_c = z_t.index_select(0, nj).detach().requires_grad_(not blayer.first)
                            out = blayer(h_c, z_c, ang_t, radial, pad)
                            leaves = [v_c]
                            if not blayer.first:
                                leaves.append(z_c)
                        n_edge_leaves = len(leaves)
                        if t > 0:
                            leaves.append(h_c)
                        block_grad: List[Optional[Tensor]] = []
                        if t == n_layers - 1:
                            block_heads: List[Tensor] = []
                            e_c = self.atom_energy_from_features(out, species[a0:a1], block_heads)
                            if len(block_heads) > 0:
                                head_energies[a0:a1] = block_heads[0].detach()
                            e_c = torch.where(energy_mask[a0:a1], e_c, torch.zeros_like(e_c))
                            atom_energies[a0:a1] = e_c.detach()
                            target = e_c.sum()
                            block_grad.append(torch.ones_like(target))
                        else:
                            target = out
                            block_grad.append(g_h[a0:a1])
                        grads = torch.autograd.grad([target], leaves, grad_outputs=block_grad, allow_unused=True)
                        if t > 0:
                            g_c = grads[n_edge_leaves]
                            if g_c is not None:
                                g_prev[a0:a1] = g_c
                        if fused:
                            g_rho: List[Tensor] = []
                            for q in range(3):
                                g_q = grads[q]
                                g_rho.append(torch.zeros_like(leaves[q]) if g_q is None else g_q)
                            # edge gradients into forces and virials, message gradients onto g_z
                            kernels.moment_density_backward_into(
                                g_rho, v_c, geometry, z_t, ci, nj, off_c, self.cutoff, blayer.num_basis, self.envelope_p,
                                blayer.norm, forces, virial, atom_virial, no_messages if blayer.first else g_z
                            )
                        else:
                            if not blayer.first:
                                g_zc = grads[1]
                                if g_zc is not None:
                                    g_z.index_add_(0, nj, g_zc)
                            g_e = grads[0]
                            if g_e is not None:
                                add_edge_gradients(forces, virial, atom_virial, v_c.detach(), g_e, ci, nj)
                    if not blayer.first:
                        g_prev = g_prev + torch.matmul(g_z, blayer.project.weight)
                    g_h = g_prev
        if heads is not None and self.ensemble > 1:
            heads.append(head_energies)
        return output_dict(atom_energies.sum(), atom_energies, forces, virial, atom_virial)

    def forward(
        self,
        positions: Tensor,
        species: Tensor,
        edge_index: Tensor,
        shifts: Tensor,
        energy_mask: Tensor,
    ) -> Dict[str, Tensor]:
        heads: List[Tensor] = []
        if not self.training and positions.shape[0] > self.chunk_atoms and edge_index.shape[1] > 0:
            out = self.chunked_outputs(positions, species, edge_index, shifts, energy_mask, heads)
        elif self.use_fused(positions.device):
            out = self.fused_outputs(positions, species, edge_index, shifts, energy_mask, heads)
        else:
            vectors = edge_vectors(positions, edge_index, shifts)
            atom_energies = self.atomic_energies(vectors, species, edge_index, heads)
            out = conservative_outputs(positions, vectors, atom_energies, energy_mask, edge_index, self.training)
        if self.use_repulsion:
            self.add_repulsion(out, positions, species, edge_index, shifts, energy_mask)
        if self.ensemble > 1 and len(heads) > 0:
            add_uncertainty(out, heads[0], edge_index, energy_mask, self.uncertainty_scale, self.training)
        return out

    def add_repulsion(self, out: Dict[str, Tensor], positions: Tensor, species: Tensor, edge_index: Tensor,
                      shifts: Tensor, energy_mask: Tensor) -> None:
        """Add the short-range prior to ``out`` in place: closed forms with no parameters, so
        every evaluation path gets the same numbers and training fits the network to the rest."""
        vectors = (positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) + shifts).detach()
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
