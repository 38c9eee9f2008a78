"""Repository polling (`--repository_poll_seconds`): what the repository folder holds is what is
served, as with Triton's `--model-control-mode=poll` and TF Serving's file system polling.

Each poll fingerprints every model folder: its settings.json and the version folder that would
be served, file by file (path, size, modification time). A new folder loads, a removed one
unloads, and a changed one (a new version folder, a changed settings.json, replaced files)
reloads, the old version serving until the new one is ready. A folder is loaded only once its
fingerprint has stayed the same for a whole poll period, and never while a download into it is
under way (its lock or staging folder is there), so a copy or download in progress is never
loaded half-way. A load that fails is tried again only once the folder changes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..runtime.files import latest_version
from ..settings import SETTINGS_FILE

log = logging.getLogger(__name__)

# What modelstorage leaves while it writes a folder: its lock (in the folder, or beside a folder
# that does not exist yet) and its staging folders.
IN_PROGRESS = (".modelstorage-lock", ".modelstorage-tmp-")

Fingerprint = tuple


def fingerprint(root: Path, name: str) -> Fingerprint | None:
    """What a model folder holds now, or None while something writes it."""
    folder = root / name
    if (root / f".modelstorage-lock-{name}").exists():
        return None
    try:
        if any(p.name.startswith(IN_PROGRESS) for p in folder.iterdir()):
            return None
        served, version = latest_version(folder)
        files = sorted((str(p.relative_to(served)), p.stat().st_size, p.stat().st_mtime_ns)
                       for p in served.rglob("*") if p.is_file())
        settings = folder / SETTINGS_FILE
        stamp = (settings.stat().st_size, settings.stat().st_mtime_ns) if settings.is_file() \
            else None
    except OSError:  # it changed while being read: not stable yet
        return None
    return version, stamp, tuple(files)


class Poller:
    def __init__(self, dataplane, seconds: float):
        self.dataplane = dataplane
        self.seconds = seconds
        self.previous: dict[str, Fingerprint | None] = {}  # the last poll's view
        self.applied: dict[str, Fingerprint] = {}  # what was last loaded (or tried), by name
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        """Poll from now on, taking what the server loaded at start as applied."""
        self.previous = self.scan()
        self.applied = {n: p for n, p in self.previous.items() if p is not None}
        self.task = asyncio.get_running_loop().create_task(self.run())

    def scan(self) -> dict[str, Fingerprint | None]:
        repository = self.dataplane.repository
        return {name: fingerprint(repository.root, name) for name in repository.on_disk()}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            try:
                await self.poll()
            except Exception:  # a poll that fails must not end polling
                log.exception("polling the model repository failed")

    async def poll(self) -> None:
        current = await asyncio.to_thread(self.scan)
        for name, now in current.items():
            if now is None or now != self.previous.get(name) or now == self.applied.get(name):
                continue  # being written, still changing, or already served as it is
            self.applied[name] = now
            log.info("model folder '%s' %s: loading it", name,
                     "changed" if name in self.dataplane.repository.names() else "appeared")
            try:
                await self.dataplane.apply_load(name)
            except Exception as exc:
                log.error("model '%s' failed to load: %s", name, str(exc))
        for name in [n for n in self.applied if n not in current]:
            del self.applied[name]
            log.info("model folder '%s' is gone: unloading it", name)
            await self.dataplane.forget(name)
        self.previous = current
