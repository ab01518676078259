"""The fused CPU kernels (mlffd-kernels) against the PyTorch reference path and finite differences."""

from __future__ import annotations

import pytest
import torch

from mlffd import artifact, kernels
from mlffd.models import preset
from mlffd.models.outputs import add_edge_gradients, conservative_outputs, edge_vectors
from mlffd.models.potential import centre_layout, cubic_invariants
from mlffd.testing import model_inputs, random_artifact, random_edges, random_student, silicon, silicon_germanium

pytestmark = pytest.mark.skipif(not kernels.available(), reason="mlffd-kernels is part of `make setup`")


@pytest.mark.parametrize("message_dim,num_basis", [(1, 8), (4, 8), (8, 8), (5, 8), (3, 6), (2, 5)])  # compiled sizes and the generic path
def test_moment_density_matches_pytorch_path(message_dim, num_basis):
    config = preset("ultra-tiny", message_dim=message_dim, num_basis=num_basis)
    model, _ = random_student(config, dtype=torch.float64)
    layer = model.interactions[1]
    n_atoms = 40
    center, neighbor, v = random_edges(n_atoms, 700, seed=message_dim)
    messages = torch.randn(n_atoms, message_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    order, offsets, slot = centre_layout(center, n_atoms)
    assert order.numel() == 0  # sorted input: no permutation
    v1, m1 = v.clone().requires_grad_(True), messages.clone().requires_grad_(True)
    fused = layer.fused_density(v1, m1, neighbor, offsets, model.cutoff, model.envelope_p)
    v2, m2 = v.clone().requires_grad_(True), messages.clone().requires_grad_(True)
    max_nbrs = int((offsets[1:] - offsets[:-1]).max())
    pad = center * max_nbrs + slot
    ang_t, radial = model.padded_features(v2, torch.zeros(2, v2.shape[0], dtype=torch.long), pad, n_atoms, max_nbrs)
    rho = layer.density(m2.index_select(0, neighbor), ang_t, radial, pad)
    reference = [rho[0], rho[1:4], rho[4:10]]
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    cotangents = [torch.randn_like(a) for a in fused]
    g1 = torch.autograd.grad(fused, [v1, m1], cotangents)
    g2 = torch.autograd.grad(reference, [v2, m2], cotangents)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_moment_density_gradcheck():
    """Analytic backward against finite differences (independent of the PyTorch path)."""
    center, neighbor, v = random_edges(6, 30, seed=3)
    inside = v.norm(dim=1) < 4.9  # finite differences must not straddle the cutoff
    center, neighbor, v = center[inside], neighbor[inside], v[inside]
    offsets = centre_layout(center, 6)[1]
    messages = torch.randn(6, 4, dtype=torch.float64)

    def f(vectors, m):
        return tuple(kernels.moment_density(vectors, m, neighbor, offsets, 5.0, 8, 6, 0.7))

    assert torch.autograd.gradcheck(f, (v.requires_grad_(True), messages.requires_grad_(True)), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("message_dim", [1, 4, 3])
def test_shared_edge_geometry_gives_the_same_densities_and_gradients(message_dim):
    """moment_density_geometry (the edges' geometry computed once by edge_geometry) equals
    moment_density, forward and backward; its gradient matches finite differences."""
    n_atoms = 25
    center, neighbor, v = random_edges(n_atoms, 400, seed=13)
    offsets = centre_layout(center, n_atoms)[1]
    messages = torch.randn(n_atoms, message_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    geometry = kernels.edge_geometry(v, 5.0, 8, 6)
    assert geometry.shape == (v.shape[0], 14 + 16)
    r = v.norm(dim=1)
    assert torch.equal(geometry[:, 0] == 0, r >= 5.0)  # 1/r, 0 beyond the cutoff
    torch.testing.assert_close(geometry[r < 5.0, 0], 1.0 / r[r < 5.0], rtol=1e-14, atol=0)
    v1, m1 = v.clone().requires_grad_(True), messages.clone().requires_grad_(True)
    v2, m2 = v.clone().requires_grad_(True), messages.clone().requires_grad_(True)
    plain = kernels.moment_density(v1, m1, neighbor, offsets, 5.0, 8, 6, 0.7)
    shared = kernels.moment_density_geometry(v2, geometry, m2, neighbor, offsets, 5.0, 8, 6, 0.7)
    for a, b in zip(plain, shared):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    cot = [torch.randn_like(a) for a in plain]
    for a, b in zip(torch.autograd.grad(plain, [v1, m1], cot), torch.autograd.grad(shared, [v2, m2], cot)):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    inside = (r < 4.9)[:60]  # finite differences must not straddle the cutoff
    c, nb, vs = center[:60][inside], neighbor[:60][inside], v[:60][inside]
    off = centre_layout(c, n_atoms)[1]

    def f(vectors, m):
        return tuple(kernels.moment_density_geometry(vectors, kernels.edge_geometry(vectors.detach(), 5.0, 8, 6), m, nb, off,
                                                     5.0, 8, 6, 0.7))

    assert torch.autograd.gradcheck(f, (vs.clone().requires_grad_(True), messages.clone().requires_grad_(True)), eps=1e-6, atol=1e-6)
    with pytest.raises(RuntimeError, match="geometry must be a contiguous edge_geometry"):
        kernels.moment_density_geometry(v, geometry[:, :-1].contiguous(), messages, neighbor, offsets, 5.0, 8, 6, 0.7)


def test_moment_invariants_match_closed_forms_and_gradcheck():
    gen = torch.Generator().manual_seed(5)
    a1 = torch.randn(3, 7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    a2 = torch.randn(6, 7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    fused = kernels.moment_invariants(a1, a2)
    b1 = (a1 * a1).sum(0)
    b2 = (a2 * a2 * torch.tensor([1.0, 1, 1, 2, 2, 2], dtype=torch.float64).view(6, 1, 1)).sum(0)
    b3, b4 = cubic_invariants(a1, a2)
    torch.testing.assert_close(fused, torch.cat([b1, b2, b3, b4], dim=1), rtol=1e-13, atol=1e-13)
    assert torch.autograd.gradcheck(kernels.moment_invariants, (a1, a2), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("n_atoms,n_edges,shuffle", [(30, 400, False), (300, 20000, False), (300, 20000, True)])
def test_add_edge_gradients_matches_pytorch(n_atoms, n_edges, shuffle, two_torch_threads):
    """The kernel's edge sums equal PyTorch's, for few and many edges, sorted by centre or not."""
    center, neighbor, v = random_edges(n_atoms, n_edges, seed=7)
    if shuffle:
        perm = torch.randperm(n_edges, generator=torch.Generator().manual_seed(1))
        center, neighbor, v = center[perm], neighbor[perm], v[perm]
    g = torch.randn_like(v)
    out = []
    for fused in (False, True):
        forces, virial, atom_virial = (torch.zeros(n_atoms, 3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64),
                                       torch.zeros(n_atoms, 9, dtype=torch.float64))
        add_edge_gradients(forces, virial, atom_virial, v, g, center, neighbor, fused)
        out.append((forces, virial, atom_virial))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("with_messages,with_geometry,n_edges", [(True, False, 500), (False, False, 500), (True, True, 500),
                                                                  (True, True, 12000), (False, False, 12000)])
def test_backward_into_equals_autograd_and_the_pytorch_sums(with_messages, with_geometry, n_edges, two_torch_threads):
    """moment_density_backward_into: the density's gradients added into forces, virials and the
    neighbours' message gradients, as autograd through moment_density and the PyTorch edge sums give
    (few and many edges)."""
    n_atoms = 30 if n_edges < 1000 else 400
    center, neighbor, v = random_edges(n_atoms, n_edges, seed=11)
    offsets = centre_layout(center, n_atoms)[1]
    gen = torch.Generator().manual_seed(2)
    messages = torch.randn(n_atoms, 4, dtype=torch.float64, generator=gen)
    v1, m1 = v.clone().requires_grad_(True), messages.clone().requires_grad_(True)
    rho = kernels.moment_density(v1, m1, neighbor, offsets, 5.0, 8, 6, 0.7)
    cot = [torch.randn(r.shape, dtype=torch.float64, generator=gen) for r in rho]
    g_v, g_m = torch.autograd.grad(rho, [v1, m1], cot)
    zeros = lambda: [torch.zeros(n_atoms, 3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64),
                     torch.zeros(n_atoms, 9, dtype=torch.float64)]
    expected = zeros()
    add_edge_gradients(*expected, v, g_v, center, neighbor, False)
    got = zeros()
    m_grad = torch.full((n_atoms, 4), 0.5, dtype=torch.float64) if with_messages else torch.zeros(0, dtype=torch.float64)
    geometry = kernels.edge_geometry(v, 5.0, 8, 6) if with_geometry else None
    kernels.moment_density_backward_into(cot, v, geometry, messages, center, neighbor, offsets, 5.0, 8, 6, 0.7, *got, m_grad)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if with_messages:  # added to what was there
        torch.testing.assert_close(m_grad, g_m + 0.5, rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="messages_grad must be contiguous"):
        kernels.moment_density_backward_into(cot, v, None, messages, center, neighbor, offsets, 5.0, 8, 6, 0.7, *got,
                                             torch.zeros(n_atoms, 3, dtype=torch.float64))
    # the centre side is added by the thread owning each centre: its rows are checked first
    e = n_edges // 2
    for value, message in (((center[e] + 1) % n_atoms, "center must be constant over each centre's edges"),
                            (n_atoms, r"center indices must lie in 0\.\.")):
        bad = center.clone()
        bad[e] = value
        with pytest.raises(RuntimeError, match=message):
            kernels.moment_density_backward_into(cot, v, geometry, messages, bad, neighbor, offsets, 5.0, 8, 6, 0.7, *got, m_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_select_edges_keeps_the_pairs_within_the_cutoff(dtype):
    """The calculator's skin filter kernel keeps exactly the edges the PyTorch filter keeps, in order."""
    from mlffd.neighbors import neighbor_list

    atoms = silicon(2, rattle=0.2)
    found = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.5 + 0.8)
    pos = torch.as_tensor(atoms.positions, dtype=dtype)
    index = torch.as_tensor(found.index, dtype=torch.int64)
    shifts = torch.as_tensor(found.shift_cells, dtype=dtype) @ torch.as_tensor(atoms.cell.array, dtype=dtype)
    d = pos[index[1]] - pos[index[0]] + shifts
    keep = (d * d).sum(1) < 4.5**2
    assert 0 < int(keep.sum()) < index.shape[1]  # the skin holds pairs beyond the cutoff
    got_index, got_shifts = kernels.select_edges(pos, index, shifts, 4.5)
    assert torch.equal(got_index, index[:, keep])
    assert torch.equal(got_shifts, shifts[keep])
    bad = index.clone()
    bad[1, 5] = len(atoms)
    with pytest.raises(RuntimeError, match="select_edges: edge_index entries must lie in 0"):
        kernels.select_edges(pos, bad, shifts, 4.5)


@pytest.mark.parametrize("name,chunk", [("ultra-tiny", 9), ("tiny", 50), ("original", 31)])
def test_fused_model_equals_pytorch_path(name, chunk):
    """One graph and blocked evaluation with the kernels = the PyTorch path (float64, two elements,
    ghost-like masks), i.e. the numbers the artifact gives on a GPU or in training."""
    config = preset(name, elements=("Si", "Ge"), chunk_atoms=chunk)
    model, _ = random_student(config, dtype=torch.float64)
    model.eval()
    atoms = silicon_germanium()
    args = list(model_inputs(atoms, torch.float64, elements=config.elements))
    perm = torch.randperm(args[2].shape[1], generator=torch.Generator().manual_seed(2))
    args[2], args[3] = args[2][:, perm], args[3][perm]  # unsorted edges: the model sorts them
    scripted = torch.jit.script(model)
    assert scripted.fused and len(atoms) > chunk
    for mask in (torch.ones(len(atoms), dtype=torch.bool), torch.arange(len(atoms)) < 20):
        args[4] = mask
        model.fused = False
        vectors = edge_vectors(args[0], args[2], args[3])
        reference = conservative_outputs(args[0], vectors, model.atomic_energies(vectors, args[1], args[2]), mask, args[2], False)
        model.fused = True
        one_graph = model.fused_outputs(*args)
        blocked = scripted(*args)
        for key in ("energy", "atom_energies", "forces", "virial", "atom_virial"):
            torch.testing.assert_close(one_graph[key], reference[key].detach(), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(blocked[key], reference[key].detach(), rtol=1e-10, atol=1e-10)


def test_training_never_uses_the_kernels_and_second_derivatives_are_refused():
    model, _ = random_student("ultra-tiny", dtype=torch.float64)
    args = model_inputs(silicon(1, rattle=0.1), torch.float64)
    model.train()
    assert not model.use_fused(torch.device("cpu"))
    out = model(*args)  # training: create_graph through the PyTorch path
    (out["forces"] ** 2).sum().backward()
    model.eval()
    center, neighbor, v = random_edges(8, 50, seed=1)
    offsets = centre_layout(center, 8)[1]
    v.requires_grad_(True)
    rho = kernels.moment_density(v, torch.ones(8, 1, dtype=torch.float64), neighbor, offsets, 5.0, 8, 6, 1.0)
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(sum(r.sum() for r in rho), [v], create_graph=True)
    (g,) = torch.autograd.grad(sum(r.sum() for r in rho), [v])  # first derivatives are fine
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_artifact_records_and_requires_the_kernels(tmp_path, monkeypatch):
    path = random_artifact(tmp_path / "m.mlffd.pt", "ultra-tiny", dtype=torch.float32)
    meta = artifact.read_metadata(path)
    assert meta["kernels"] == kernels.STUDENT_OPERATOR_SET <= kernels.VERSION  # the set its code calls
    art = artifact.load(path)
    args = model_inputs(silicon(2, rattle=0.1), torch.float32)
    fused = art.module(*args)
    art.module.fused = False  # the scripted PyTorch path, same weights
    plain = art.module(*args)
    torch.testing.assert_close(fused["forces"], plain["forces"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused["energy"], plain["energy"], rtol=1e-6, atol=1e-4)

    def missing():
        raise kernels.KernelsMissingError("the mlffd-kernels package (fused CPU kernels) is not installed")

    monkeypatch.setattr(kernels, "load", missing)
    with pytest.raises(artifact.ArtifactError, match=r"m\.mlffd\.pt: exported with mlffd's fused CPU kernels.*not installed"):
        artifact.load(path)
    monkeypatch.undo()
    with pytest.raises(artifact.ArtifactError, match="operator set 99"):
        artifact.require_kernels({"kernels": 99}, "future.mlffd.pt")


def test_kernels_refuse_inconsistentmodel_inputs():
    """Indices the kernels dereference are checked: a clear error, not a crash."""
    v, m = torch.randn(10, 3), torch.randn(4, 2)
    neighbor, offsets = torch.zeros(10, dtype=torch.long), torch.tensor([0, 5, 10])
    with pytest.raises(RuntimeError, match="offsets must run from 0 to the edge count 0"):
        kernels.moment_density(v[:0], m, neighbor[:0], offsets, 5.0, 8, 6, 1.0)
    with pytest.raises(RuntimeError, match="offsets must not decrease"):
        kernels.moment_density(v, m, neighbor, torch.tensor([0, 7, 3, 10]), 5.0, 8, 6, 1.0)
    neighbor[3] = 7
    with pytest.raises(RuntimeError, match=r"neighbor indices must lie in 0\.\.3"):
        kernels.moment_density(v, m, neighbor, offsets, 5.0, 8, 6, 1.0)
    with pytest.raises(RuntimeError, match="outside 0..3"):
        add_edge_gradients(torch.zeros(4, 3), torch.zeros(3, 3), torch.zeros(4, 9), v, v, torch.zeros(10, dtype=torch.long), neighbor, True)


def test_baseline_and_avx2_builds_agree(tmp_path):
    """The kernels are compiled twice (baseline x86-64, AVX2 + FMA) and picked at run time; the
    baseline build, forced in a child process, gives the same numbers (float64)."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from mlffd import kernels\n"
        "from mlffd.testing import random_edges\n"
        "from mlffd.models.potential import centre_layout\n"
        "c, nb, v = random_edges(30, 500, seed=11)\n"
        "v.requires_grad_(True)\n"
        "m = torch.linspace(-1, 1, 120, dtype=torch.float64).view(30, 4)\n"
        "rho = kernels.moment_density(v, m, nb, centre_layout(c, 30)[1], 5.0, 8, 6, 0.3)\n"
        "(g,) = torch.autograd.grad(sum((r * r).sum() for r in rho), [v])\n"
        "torch.save({'isa': torch.ops.mlffd_kernels.isa(), 'rho': [r.detach() for r in rho], 'g': g}, sys.argv[1])\n"
    )
    out = {}
    for isa in ("base", "auto"):
        env = dict(os.environ, MLFFD_KERNELS_ISA=isa)
        subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{isa}.pt")], env=env, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        out[isa] = torch.load(tmp_path / f"{isa}.pt")
    assert out["base"]["isa"] == "base"
    for a, b in zip(out["base"]["rho"] + [out["base"]["g"]], out["auto"]["rho"] + [out["auto"]["g"]]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol, r_min", [(torch.float64, 1e-12, 1e-3), (torch.float32, 2e-5, 0.5)])
def test_edge_geometry_basis_equals_the_model_basis_over_the_whole_range(dtype, tol, r_min):
    """The kernels' radial basis (sin and cos of the basis angle by their own series, no libm)
    and its derivative equal the PyTorch RadialBasis and its autograd derivative for distances
    from r_min to just below the cutoff, both halves of the angle range included (float32 from
    0.5 Å: below, the derivative's 1/r^2 terms cancel beyond float32's digits, with libm's sin as
    well); beyond the cutoff the row is marked empty (1/r = 0)."""
    from mlffd.models.potential import RadialBasis

    B, rc = 8, 5.0
    r = torch.cat([torch.linspace(r_min, rc * (1 - 1e-6), 4001, dtype=torch.float64), torch.tensor([rc, rc + 0.1], dtype=torch.float64)])
    u = torch.nn.functional.normalize(torch.randn(r.shape[0], 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64), dim=1)
    geometry = kernels.edge_geometry((u * r[:, None]).to(dtype), rc, B, 6).double()
    inside = r < rc
    assert torch.equal(geometry[:, 0] != 0, inside)
    basis = RadialBasis(rc, B, 6).double()
    rr = r[inside].clone().requires_grad_(True)
    ref = basis(rr)
    dref = torch.stack([torch.autograd.grad(ref[:, b].sum(), rr, retain_graph=True)[0] for b in range(B)], dim=1)
    scale = ref.detach().abs().max(dim=1, keepdim=True).values.clamp(min=1.0)
    first = kernels.GEOMETRY_BASIS  # the layout the model's switched_geometry relies on
    got, dgot = geometry[inside, first : first + B], geometry[inside, first + B : first + 2 * B]
    assert ((got - ref.detach()).abs() / scale).max() < tol
    assert ((dgot - dref).abs() / dref.abs().max(dim=1, keepdim=True).values.clamp(min=1.0)).max() < tol * 10
    assert torch.allclose(geometry[inside, 0], 1 / r[inside], rtol=tol)
