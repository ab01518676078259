"""The end of a training run: test metrics of the best EMA weights, the exported artifact and
``metrics.json`` (rank 0), and whether the run looks under-trained."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from mlffd.jsonable import jsonable
from mlffd.models import export_student, num_parameters
from mlffd.training.evaluate import evaluate_model

if TYPE_CHECKING:
    from mlffd.training.trainer import Trainer

UNDER_TRAINED = ("the best validation loss came at the last evaluation: the student was still improving when "
                 "training stopped; train longer (max_steps / max_epochs) or fine-tune it (init_from)")


def under_trained(history: list[dict[str, Any]]) -> bool:
    """Whether the best validation loss came at the run's last evaluation (of at least three):
    it was still falling when training stopped, so more steps would likely help."""
    evals = [h for h in history if "val_loss" in h]
    return len(evals) >= 3 and bool(evals[-1].get("best"))


def export_run(trainer: "Trainer") -> dict[str, Any]:
    """Evaluate ``trainer``'s best model on the test split (else validation), fit its novelty
    reference on the training frames (:mod:`mlffd.training.novelty`), refit and calibrate its
    uncertainty (ensembles: :mod:`mlffd.training.head_refit`, :mod:`mlffd.training.calibration`),
    export the artifact and write ``metrics.json``; returns the summary."""
    t = trainer
    model = t.best_model()
    graphs = t.data.test or t.data.val
    metrics = evaluate_model(model, graphs, batch_size=2 * t.config.batch_size, device=t.device, elements=t.model_config.elements)
    metrics["split"] = "test" if t.data.test else "val"
    metrics["best_step"] = t.best_step
    metrics["steps"] = t.step
    metrics["under_trained"] = under_trained(t.history)
    extra: dict[str, Any] = {}
    from mlffd.training.novelty import fit_novelty

    # each training frame once: the novelty percentile and the head refit describe the data, not
    # how often the sampler of an oversampled (``repeat``) file drew it
    unique = list(dict(zip(t.data.train_index, t.data.train)).values())

    # how unlike the training atoms an atom looks (mlffd.models.novelty), for every student; a
    # model element without a training atom has no reference, and the student ships without one
    try:
        extra["novelty"] = jsonable(fit_novelty(model.to("cpu"), unique, t.model_config.elements))
    except ValueError as exc:
        metrics["novelty"] = f"not fitted: {exc}"
    if t.model_config.ensemble > 1:  # the heads' spread made to follow the error, then scaled on held-out frames
        from mlffd.training.calibration import calibrate, refit_best_of

        refit = refit_best_of(model.to("cpu"), unique, t.data.val)
        extra["uncertainty"] = jsonable({**calibrate(model, t.data.val, "cpu"), "refit": refit})
        metrics["uncertainty"] = extra["uncertainty"]
    path = export_student(
        model.to("cpu"),
        t.model_config,
        t.out / f"{t.config.name}.mlffd.pt",
        teacher=t.data.stats.get("teacher", t.config.teacher),
        dataset_sha256=t.data.dataset_sha256,
        metrics=jsonable(metrics),
        structure=t.data.stats.get("structure"),
        **extra,
    )
    summary = {
        "artifact": str(path),
        "metrics": metrics,
        "stats": t.data.stats,
        "num_parameters": num_parameters(model),
        "model_config": t.model_config.to_dict(),
        "stop_reason": t.stop_reason,
    }
    tmp = t.out / "metrics.json.tmp"
    tmp.write_text(json.dumps(jsonable(summary), indent=2))
    os.replace(tmp, t.out / "metrics.json")
    return summary
