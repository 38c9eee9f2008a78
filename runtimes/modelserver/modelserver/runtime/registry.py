"""The installed runtimes: each registers its Model class under the entry-point group
`modelserver.runtimes`, so one server can host models of several frameworks."""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from ..model import Model

GROUP = "modelserver.runtimes"

log = logging.getLogger(__name__)


@cache
def installed() -> dict[str, type[Model]]:
    """The runtimes that import; one that does not (a broken install, a missing framework) is
    left out with a warning rather than taking the others down with it."""
    runtimes = {}
    for entry in entry_points(group=GROUP):
        try:
            runtimes[entry.name] = entry.load()
        except Exception as exc:  # the message only: a record holding the exception would
            # hold its traceback's frames, and whatever they refer to, as long as the record
            log.warning("runtime %r (%s) does not import, so it is not served: %s",
                        entry.name, entry.value, f"{type(exc).__name__}: {exc}")
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
