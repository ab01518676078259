"""Active distillation: a committee of students explores with the student itself, flags frames
by committee disagreement and physics sanity, the teacher labels them, the committee is
fine-tuned; rounds repeat until few new failures are found (docs/training.md, "Active
distillation")."""

from mlffd.active.config import ActiveConfig
from mlffd.active.loop import ActiveLoop, run_active

__all__ = ["ActiveConfig", "ActiveLoop", "run_active"]
