"""The method registry: each method (width/IDP and slimmable, adaptive, effort, DFS, or a
plugin) registers one :class:`Method`, and the command line, ``dynscale list`` and ``pick``
loop over them without importing any method by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .registry import Registry


@dataclass(frozen=True)
class Method:
    """A method of dynamic computation scaling.

    Attributes:
        name: the method's name.
        help: one line on what it does.
        kinds: the run kinds it makes (``dynscale.runs.register_kind``).
        recipes: the training recipes it registers (``dynscale.train.register_recipe``).
        add_commands: ``subparsers -> None``: adds its commands to the ``dynscale`` parser
            (each sets ``func`` to what it runs).
        points: ``(run_dir, *, data, timing, progress, **options) -> [Curve]``: the operating
            points of one of its runs, for the evaluation engine (``pick`` measures with it).
        deploy: ``(run, *, calibration, **options) -> dynscale.deployable.Deployment``: a run's
            pieces and operating points for ``dynscale deploy`` (None: its runs do not deploy).
    """

    name: str
    help: str
    kinds: tuple[str, ...] = ()
    recipes: tuple[str, ...] = ()
    add_commands: Callable[[object], None] | None = None
    points: Callable[..., list] | None = None
    deploy: Callable[..., object] | None = None


_METHODS: Registry[Method] = Registry("method", hint="the methods are")


def register_method(method: Method) -> Method:
    """Registers a method (a name may be registered once)."""
    return _METHODS.register(method.name, method)


def unregister_method(name: str) -> None:
    """Removes a registered method (a plugin's test undoing its registration)."""
    _METHODS.unregister(name)


def list_methods() -> list[Method]:
    """The registered methods, in order of registration."""
    return list(_METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name`` (``ValueError`` for an unknown one)."""
    return _METHODS.get(name)


def method_of_kind(kind: str) -> Method | None:
    """The method that makes runs of ``kind`` (None: no registered method does)."""
    return next((m for m in _METHODS if kind in m.kinds), None)


def measure_run(run_dir: str | Path, *, data=None, timing=None, progress=None, **options) -> list:
    """The operating points of a run, measured by the method of its kind.

    Args:
        options: the method's own (e.g. the width method's ``widths``); one its ``points``
            does not take is refused, it would do nothing.

    Raises:
        ValueError: if no method measures runs of the run's kind, or for an option it does not take.
    """
    from .runs import RunConfig

    kind = RunConfig.read(run_dir).kind
    method = method_of_kind(kind)
    if method is None or method.points is None:
        raise ValueError(f"{run_dir} is a {kind} run, which no registered method measures")
    takes = inspect.signature(method.points).parameters
    for name in options:
        if name not in takes:
            raise ValueError(f"--{name.replace('_', '-')} does nothing for {run_dir}, a {kind} run (the {method.name} "
                             "method measures its own operating points); leave it out")
    return method.points(run_dir, data=data, timing=timing, progress=progress, **options)
