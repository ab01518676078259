"""Weight averaging of students ("model soup"): one student whose parameters are a weighted mean
of several fine-tunes of the same student.

Fine-tunes that start from one artifact stay in one basin of the loss, so a weighted mean of
their parameters is itself a good student and often better than either: it can keep what a
fine-tune fixed and take back some of what it lost elsewhere. Averaging students that were not
fine-tuned from a common start gives nonsense; the checks here refuse what they can see (another
architecture, other elements, other normalisation or short-range prior), not all of it.

The heads' calibration and the novelty reference describe one set of weights, not the average:
the result has neither (its calibration buffers are reset and their records dropped; ``mlffd
calibrate`` makes them anew), and its test metrics are its own, measured on the held-out
frames given (none given: none). Its other metadata (teacher, training-data hash, structure)
come from the input with the largest weight; ``averaged_from`` lists every input with its weight
and file hash.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from mlffd.jsonable import jsonable
from mlffd.models import CALIBRATION_BUFFERS, build, export_like, load_student, load_weights
from mlffd.registry import sha256_file
from mlffd.training.evaluate import evaluate_model, read_graphs

#: metadata records that describe one set of weights and are dropped from an average
PER_WEIGHTS_METADATA = ("uncertainty", "novelty")
#: model-config fields that set how a student is evaluated, not what it computes
EVALUATION_ONLY = ("chunk_atoms",)


def _check_weights(weights: Sequence[float], n: int) -> list[float]:
    if len(weights) != n:
        raise ValueError(f"{n} students but {len(weights)} weights: give one weight per student")
    w = [float(x) for x in weights]
    if not all(math.isfinite(x) and x >= 0 for x in w):
        raise ValueError(f"weights must be finite and >= 0, got {list(weights)}")
    top = max(w)
    if top <= 0:
        raise ValueError(f"weights sum to {sum(w)}: at least one must be positive")
    scaled = [x / top for x in w]  # first by the largest, so that huge weights cannot overflow the sum
    total = sum(scaled)
    return [x / total for x in scaled]


def average_students(sources: Sequence[str | Path], weights: Sequence[float], dst: str | Path,
                     test_data: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Write to ``dst`` the student whose floating-point parameters are the mean of those of
    ``sources`` (artifact paths) weighted by ``weights`` (>= 0, normalised to sum 1), with its
    metrics on ``test_data`` (held-out labelled frames; none: no metrics) in its metadata.

    ValueError, before anything is written, unless there are at least two sources with the same
    model config, the same parameter and buffer names and shapes, and equal buffers other than
    :data:`CALIBRATION_BUFFERS`. Returns the ``averaged_from`` record and the ``metrics``."""
    paths = [Path(s) for s in sources]
    if len(paths) < 2:
        raise ValueError("averaging needs at least two students")
    w = _check_weights(weights, len(paths))
    if Path(dst).resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"the output {dst} is one of the students averaged: write it elsewhere")
    loaded = [load_student(p) for p in paths]
    first_path, (first, config, _) = paths[0], loaded[0]
    for path, (_, other_config, _) in zip(paths[1:], loaded[1:]):
        diff = sorted(k for k, v in config.to_dict().items() if other_config.to_dict().get(k) != v and k not in EVALUATION_ONLY)
        if diff:
            raise ValueError(f"{path} is another architecture than {first_path} (model config differs in {', '.join(diff)}); "
                             "only fine-tunes of one student can be averaged")
    graphs = read_graphs(test_data, config.elements, config.cutoff)  # before averaging: a bad file fails early
    dtypes = [next(m.parameters()).dtype for m, _, _ in loaded]
    if len(set(dtypes)) > 1:
        raise ValueError(f"the students have different dtypes ({', '.join(str(d).removeprefix('torch.') for d in dtypes)}): "
                         "only fine-tunes of one student can be averaged")
    states = [m.state_dict() for m, _, _ in loaded]
    unfitted = build(config, dtypes[0]).state_dict()  # calibration buffers as before any fit
    params = {name for name, _ in first.named_parameters()}
    averaged: dict[str, torch.Tensor] = {}
    for name, ref in states[0].items():
        for path, state in zip(paths[1:], states[1:]):
            if name not in state or state[name].shape != ref.shape:
                raise ValueError(f"{path} has no tensor {name!r} of shape {tuple(ref.shape)} as {first_path} has")
        if name in params and ref.is_floating_point():
            averaged[name] = sum(wi * s[name].double() for wi, s in zip(w, states)).to(ref.dtype)
        elif name.split(".")[-1] in CALIBRATION_BUFFERS:
            averaged[name] = unfitted[name]
        else:
            for path, state in zip(paths[1:], states[1:]):
                if not torch.equal(state[name], ref):
                    raise ValueError(f"{path} and {first_path} differ in the fixed tensor {name!r} (normalisation, prior or "
                                     "basis): only fine-tunes of one student can be averaged")
            averaged[name] = ref
    for path, state in zip(paths, states):
        extra = set(state) - set(states[0])
        if extra:
            raise ValueError(f"{path} has tensors {sorted(extra)[:3]} that {first_path} lacks")
    if not all(bool(torch.isfinite(t).all()) for t in averaged.values() if t.is_floating_point()):
        raise ValueError("the average has non-finite parameters (an input has NaN or inf weights)")

    lead = max(range(len(paths)), key=lambda i: w[i])
    model, lead_config, meta = loaded[lead]
    load_weights(model, averaged)
    model.eval()
    metrics: dict[str, Any] = {}
    if graphs:
        metrics = {**evaluate_model(model, graphs, elements=config.elements), "split": "test",
                   "data": [str(p) for p in test_data]}
    record = [{"path": str(p), "sha256": sha256_file(p), "weight": wi} for p, wi in zip(paths, w)]
    meta = {k: v for k, v in meta.items() if k not in PER_WEIGHTS_METADATA}
    metrics = jsonable(metrics)
    export_like(model, lead_config, meta, dst, metrics=metrics, averaged_from=record)
    return {"averaged_from": record, "metrics": metrics}
