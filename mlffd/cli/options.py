"""What the ``mlffd`` and ``mlffd-validate`` commands share: option types that reject bad values
while the command line is parsed, and a command group whose errors are one line.

The rule (docs/training.md, docs/validation.md): a CLI error is one line on stderr that names the
value or file and what was expected, the exit status is non-zero, and a traceback shows only
with ``--debug``. Values are checked at the earliest point: numbers, devices and output folders
while the options are parsed, before a model is loaded or any MD step runs.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import click

#: environment variable that turns on ``--debug`` for every command (e.g. under a test runner)
DEBUG_ENV = "MLFFD_DEBUG"


# -- numbers ---------------------------------------------------------------------------------


class FiniteFloat(click.ParamType):
    """A finite float (``nan``/``inf`` are refused), optionally bounded.

    ``min_open``/``max_open`` make a bound strict (``> min`` rather than ``>= min``).
    """

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None, min_open: bool = False,
                 max_open: bool = False) -> None:
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def describe(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '>='} {self.min:g}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {self.max:g}")
        return "a finite number" + (" " + " and ".join(parts) if parts else "")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            if isinstance(value, bool):
                raise TypeError(value)
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number; expected {self.describe()}", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not finite; expected {self.describe()}", param, ctx)
        low_bad = self.min is not None and (number <= self.min if self.min_open else number < self.min)
        high_bad = self.max is not None and (number >= self.max if self.max_open else number > self.max)
        if low_bad or high_bad:
            self.fail(f"{number:g} is out of range; expected {self.describe()}", param, ctx)
        return number

    def __repr__(self) -> str:
        return f"FiniteFloat({self.describe()})"


#: a finite number > 0 (times, lengths, thresholds that must be positive)
POSITIVE = FiniteFloat(min=0.0, min_open=True)
#: a finite number >= 0
NON_NEGATIVE = FiniteFloat(min=0.0)
#: any finite number (a pressure may be negative)
FINITE = FiniteFloat()
#: a file that must exist (data, configs, reports)
INPUT_FILE = click.Path(exists=True, dir_okay=False)
#: an integer >= 1 (counts: threads, batch sizes, strides, intervals)
POSITIVE_INT = click.IntRange(min=1)
#: an integer >= 0 (seeds, start indices)
NON_NEGATIVE_INT = click.IntRange(min=0)


# -- devices ---------------------------------------------------------------------------------

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """``device`` when it names a device this torch can use; ValueError saying why not.

    The syntax is checked without importing torch; torch is asked only for ``cuda``.
    """
    text = str(device).strip()
    if not _DEVICE_RE.match(text):
        raise ValueError(f"{device!r} is not a device; expected 'cpu', 'cuda' or 'cuda:N'")
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"{text!r} requested, but torch {torch.__version__} ({build}) sees no CUDA GPU; use 'cpu'")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"{text!r} requested, but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return text


# -- output paths ----------------------------------------------------------------------------


def _existing_ancestor(path: Path) -> Path:
    current = path
    while not current.exists():
        if current.parent == current:
            break
        current = current.parent
    return current


def _probe_write(directory: Path) -> None:
    """Create and remove a temporary file in ``directory`` (permission bits say nothing to root
    or about read-only file systems; only a write does)."""
    with tempfile.TemporaryFile(dir=directory, prefix=".mlffd-write-check-"):
        pass


def check_output_dir(path: str | Path) -> Path:
    """``path`` when it is a directory that exists and is writable, or one that can be created;
    ValueError naming the path and the obstacle otherwise. Creates nothing."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{str(path)!r} exists and is not a directory")
    base = _existing_ancestor(path.absolute())
    if not base.is_dir():
        raise ValueError(f"cannot create {str(path)!r}: {str(base)!r} is a file, not a directory")
    try:
        _probe_write(base)
    except OSError as exc:
        what = "write in" if base == path.absolute() else "create a directory in"
        raise ValueError(f"cannot {what} {str(base)!r} ({exc.strerror or exc})") from exc
    return path


def check_output_file(path: str | Path) -> Path:
    """``path`` when a file can be written there (its folder may still have to be created)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory; expected a file name")
    check_output_dir(path.parent if str(path.parent) else Path("."))
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{str(path)!r} exists and is not writable")
    return path


# -- option types made of the checks above --------------------------------------------------


class CheckedType(click.ParamType):
    """An option value refused while parsing when ``check`` raises ValueError (its message is the
    error); kept as given, or as ``check`` returns it when ``normalise``."""

    def __init__(self, name: str, check: Callable[[Any], Any], normalise: bool = False) -> None:
        self.name = name
        self.check = check
        self.normalise = normalise

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            checked = self.check(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(checked if self.normalise else value)


#: ``cpu``, ``cuda`` or ``cuda:N``; a GPU this torch cannot see is refused while parsing
DEVICE = CheckedType("device", check_device, normalise=True)
#: an output folder: existing and writable, or creatable (nothing is created)
OUTPUT_DIR = CheckedType("directory", check_output_dir)
#: an output file whose folder is writable or creatable
OUTPUT_FILE = CheckedType("file", check_output_file)


# -- one-line errors -------------------------------------------------------------------------


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


#: library errors whose message already says what is wrong; other exception types keep their name
_PLAIN = (ValueError, OSError, LookupError)


def error_message(exc: BaseException) -> str:
    """The one-line message of an exception that escaped a command."""
    if isinstance(exc, click.BadParameter):
        return one_line(exc.format_message())
    if isinstance(exc, click.UsageError):
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return one_line(exc.format_message()) + hint
    if isinstance(exc, click.ClickException):
        return one_line(exc.format_message())
    text = one_line(exc)
    if isinstance(exc, _PLAIN) and text:
        return text
    return f"{type(exc).__name__}: {text}" + ("" if text else " (--debug shows the traceback)")


def _debug_requested(args: list[str]) -> bool:
    return "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")


class OneLineErrorGroup(click.Group):
    """A click group whose failures print one ``Error: ...`` line on stderr and exit non-zero
    (usage errors 2, everything else 1); ``--debug`` (or ``MLFFD_DEBUG=1``) adds the traceback."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        # ``--debug`` is accepted after the command name too (``mlffd train cfg.yaml --debug``);
        # :meth:`main` reads it from the raw arguments, so the option only has to parse
        if not any(p.name == "debug" for p in cmd.params):
            cmd.params.append(_debug_param())
        super().add_command(cmd, name)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        debug = _debug_requested(argv)
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            cause = exc.__cause__ or exc.__context__
            if debug and cause is not None:
                traceback.print_exception(cause, file=sys.stderr)
            click.echo(f"Error: {error_message(exc)}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the one place where anything becomes a message
            if debug:
                raise
            click.echo(f"Error: {error_message(exc)}", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


def _debug_param() -> click.Option:
    return click.Option(["--debug"], is_flag=True, expose_value=False,
                        help=f"Show the full traceback of an error (also: {DEBUG_ENV}=1).")


def debug_option(f):
    """``--debug``: show the traceback of an error (read by :class:`OneLineErrorGroup` before parsing)."""
    return click.option("--debug", is_flag=True, expose_value=False,
                        help=f"Show the full traceback of an error (also: {DEBUG_ENV}=1).")(f)


__all__ = [
    "DEVICE", "FINITE", "INPUT_FILE", "FiniteFloat", "NON_NEGATIVE", "NON_NEGATIVE_INT", "OUTPUT_DIR", "OUTPUT_FILE", "OneLineErrorGroup",
    "POSITIVE", "POSITIVE_INT", "check_device", "check_output_dir", "check_output_file", "debug_option",
    "error_message", "one_line",
]
