"""The installed runtimes: each registers its Model class under the entry-point group
`modelserver.runtime.registry`, so one server can host models of several frameworks."""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from ..model import Model

log = logging.getLogger(__name__)

GROUP = "modelserver.runtimes"


@cache
def installed() -> dict[str, type[Model]]:
    """Every runtime that imports: one whose package is broken is logged and left out, so it
    does not take the others' models down with it."""
    runtimes = {}
    for ep in entry_points(group=GROUP):
        try:
            runtimes[ep.name] = ep.load()
        except Exception as exc:
            # The message only: a log record holding the exception would keep its frames, and
            # the models their callers were loading, alive.
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("runtime %r (%s) cannot be imported, so it is not offered: %s",
                        ep.name, ep.value, reason)
    return runtimes


def model_class_for(folder: Path, runtime: str | None,
                    default_class: type[Model] | None) -> type[Model]:
    """The runtime named in the settings, else the server's own, else the first that can load
    the folder."""
    runtimes = installed()
    if runtime is not None:
        if runtime not in runtimes:
            raise ValueError(f"runtime {runtime!r} is not installed; installed: "
                             f"{', '.join(sorted(runtimes)) or 'none'}")
        return runtimes[runtime]
    candidates = [default_class] if default_class is not None else []
    candidates += [cls for cls in runtimes.values() if cls is not default_class]
    for cls in candidates:
        if cls.can_load(folder):
            return cls
    raise ValueError(f"no installed runtime recognises the model in {folder} "
                     f"(installed: {', '.join(sorted(runtimes)) or 'none'})")


def can_any_load(folder: Path) -> bool:
    return any(cls.can_load(folder) for cls in installed().values())
