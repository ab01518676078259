"""The fused CPU kernels (package ``mlffd-kernels``, built from ``kernels/``).

``torch.ops.mlffd_kernels.moment_density`` computes an interaction layer's neighbour density
and, in its backward, the edge gradients, without the per-edge tensors of the PyTorch path
(:meth:`mlffd.models.layers.Interaction.density`); students evaluate with it on the CPU when
it is installed, and artifacts exported that way record ``"kernels": VERSION`` in their metadata
so that loaders (Python and the LAMMPS plugin) know they need it.
"""

from __future__ import annotations

import functools
import json
from typing import List, Optional

import torch
from torch import Tensor

__all__ = ["KernelsMissingError", "available", "contract", "load", "VERSION"]

#: operator-set version this code calls (``mlffd_kernels.VERSION`` of the installed library):
#: 1 moment_density (+ backward), moment_invariants, add_edge_gradients; 2 adds
#: edge_geometry, moment_density_geometry, moment_density_backward_into and select_edges; 3 adds
#: neighbor_lists; 4 adds contract (the contract.json values it was built with) and the geometry
#: limits in neighbor_lists. A library serves artifacts of its own and older sets.
VERSION = 4

#: the operator set the students' scripted code calls, recorded in the artifacts they export
#: (the newer sets add only host-side operators, so those artifacts load with set-2 libraries too)
STUDENT_OPERATOR_SET = 2

INSTALL_HINT = "install it with `make setup` or `pip install --no-build-isolation ./kernels` (after torch)"


class KernelsMissingError(ImportError):
    """The compiled kernel library is not installed or does not match this mlffd."""


@functools.cache
def load() -> str:
    """Load ``libmlffd_kernels.so`` into this process (once; the first call of :func:`available`
    at import does it); returns its path.

    Raises :class:`KernelsMissingError` naming what is missing and how to install it.
    """
    try:
        import mlffd_kernels
    except ImportError as exc:
        raise KernelsMissingError(f"the mlffd-kernels package (fused CPU kernels) is not installed; {INSTALL_HINT}") from exc
    if getattr(mlffd_kernels, "VERSION", None) != VERSION:
        raise KernelsMissingError(
            f"mlffd-kernels {getattr(mlffd_kernels, 'VERSION', '?')} installed at {mlffd_kernels.__file__}, "
            f"this mlffd needs operator set {VERSION}; {INSTALL_HINT}"
        )
    try:
        path = mlffd_kernels.load()
    except (OSError, RuntimeError) as exc:
        raise KernelsMissingError(f"could not load {mlffd_kernels.library_path()}: {exc}; {INSTALL_HINT}") from exc
    return str(path)


def available() -> bool:
    """Whether the fused kernels are installed and load."""
    try:
        load()
    except KernelsMissingError:
        return False
    return True


def _scriptable(fn):
    """``fn`` itself when the kernels load; otherwise ``torch.jit.unused(fn)``, so that models
    calling it still script (the call raises if reached, and nothing reaches it: models use the
    kernels only when :func:`available`)."""
    return fn if available() else torch.jit.unused(fn)


# The operators as plain functions that TorchScript compiles into the models that call them.


@_scriptable
def moment_density(vectors: Tensor, messages: Tensor, neighbor: Tensor, offsets: Tensor, cutoff: float,
                   num_basis: int, envelope_p: int, scale: float) -> List[Tensor]:
    """``mlffd_kernels::moment_density``: see :meth:`mlffd.models.layers.Interaction.fused_density`."""
    return torch.ops.mlffd_kernels.moment_density(vectors, messages, neighbor, offsets, cutoff, num_basis, envelope_p, scale)


#: The columns of an :func:`edge_geometry` row before its radial basis: 1/r, the unit vector and the
#: 10 angular components (``geometry_width`` in ``kernels/src/kernels.cpp``); the basis is then
#: ``[GEOMETRY_BASIS, GEOMETRY_BASIS + B)`` and its derivative the next ``B`` columns.
GEOMETRY_BASIS = 14


@_scriptable
def edge_geometry(vectors: Tensor, cutoff: float, num_basis: int, envelope_p: int) -> Tensor:
    """``mlffd_kernels::edge_geometry`` (operator set 2): what every density pass computes per
    edge, once: ``[E, 14 + 2 B]`` (1/r, 0 beyond the cutoff; unit vector; angular components;
    radial basis; its derivative), for :func:`moment_density_geometry` and
    :func:`moment_density_backward_into`. Not differentiable itself (call it on detached vectors)."""
    return torch.ops.mlffd_kernels.edge_geometry(vectors, cutoff, num_basis, envelope_p)


@_scriptable
def moment_density_geometry(vectors: Tensor, geometry: Tensor, messages: Tensor, neighbor: Tensor, offsets: Tensor,
                            cutoff: float, num_basis: int, envelope_p: int, scale: float) -> List[Tensor]:
    """:func:`moment_density` from the edges' :func:`edge_geometry` (computed once, shared by
    the layers); differentiable with respect to ``vectors`` (the geometry's derivatives are in it)."""
    return torch.ops.mlffd_kernels.moment_density_geometry(vectors, geometry, messages, neighbor, offsets, cutoff, num_basis,
                                                           envelope_p, scale)


@_scriptable
def moment_invariants(a1: Tensor, a2: Tensor) -> Tensor:
    """``mlffd_kernels::moment_invariants``: ``[N, 4K]`` invariants of ``a1 [3, N, K]``, ``a2 [6, N, K]``."""
    return torch.ops.mlffd_kernels.moment_invariants(a1, a2)


@_scriptable
def add_edge_gradients(forces: Tensor, virial: Tensor, atom_virial: Tensor, vectors: Tensor, grad: Tensor,
                       center: Tensor, neighbor: Tensor) -> None:
    """``mlffd_kernels::add_edge_gradients``: see :func:`mlffd.models.outputs.add_edge_gradients`."""
    torch.ops.mlffd_kernels.add_edge_gradients(forces, virial, atom_virial, vectors, grad, center, neighbor)



@_scriptable
def moment_density_backward_into(grads: List[Tensor], vectors: Tensor, geometry: Optional[Tensor], messages: Tensor,
                                 center: Tensor, neighbor: Tensor, offsets: Tensor, cutoff: float, num_basis: int,
                                 envelope_p: int, scale: float, forces: Tensor, virial: Tensor, atom_virial: Tensor,
                                 messages_grad: Tensor) -> None:
    """``mlffd_kernels::moment_density_backward_into`` (operator set 2): ``mlffd_kernels::moment_density_backward``
    with the edge gradients added into ``forces``, ``virial`` and ``atom_virial`` (as
    :func:`add_edge_gradients`) and the message gradients onto the neighbours' rows of
    ``messages_grad [N, D]`` (skipped when it is empty), in one call; ``geometry``: the edges'
    :func:`edge_geometry` when computed already, else ``None``."""
    torch.ops.mlffd_kernels.moment_density_backward_into(
        grads, vectors, geometry, messages, center, neighbor, offsets, cutoff, num_basis, envelope_p, scale,
        forces, virial, atom_virial, messages_grad
    )


def select_edges(positions: Tensor, edge_index: Tensor, shifts: Tensor, cutoff: float) -> List[Tensor]:
    """``mlffd_kernels::select_edges`` (operator set 2): the edges ``[2, K]`` and shifts ``[K, 3]``
    of a skin list that lie within ``cutoff`` at ``positions`` (``|x_j - x_i + shift| < cutoff``),
    in their order. CPU; used by :class:`mlffd.calculator.DistilledCalculator`."""
    load()
    return torch.ops.mlffd_kernels.select_edges(positions, edge_index, shifts, cutoff)


def neighbor_lists(positions: Tensor, cells: Tensor, pbc: Tensor, counts: Tensor, cutoff: float) -> List[Tensor]:
    """``mlffd_kernels::neighbor_lists`` (operator set 3): the full neighbour lists of ``S``
    structures, atoms concatenated (``positions [N, 3]`` float64, ``counts [S]``, ``cells
    [S, 3, 3]``, ``pbc [S, 3]`` bool): global ``edge_index [2, E]`` grouped by centre and
    ``shift_cells [E, 3]`` int32, pairs tested against only the images that can lie within
    ``cutoff`` (O(N^2) per structure; :func:`mlffd.neighbors.neighbor_lists` uses it for small ones)."""
    load()
    return torch.ops.mlffd_kernels.neighbor_lists(positions, cells, pbc, counts, cutoff)


def contract() -> dict:
    """``mlffd_kernels::contract`` (operator set 4): the :mod:`mlffd.contract` values the installed
    library was compiled with (``{"artifact": {format, format_version, metadata_file}, "geometry":
    {...}}``), to compare with what Python reads from ``contract.json``."""
    load()
    return json.loads(torch.ops.mlffd_kernels.contract())
