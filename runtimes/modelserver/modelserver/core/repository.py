"""Models by name, and the model repository on disk that they come from.

`--model_dir` holds either one model (its files at the root, served as `--model_name`) or a
repository: one folder per model, named as the model, optionally with numbered version folders
(the highest is served) and a `settings.json`. Loading runs off the event loop and never blocks
requests to other models; unloading waits for the model's in-flight requests to finish. Each
served model is held as the Runner that serves it."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, ModelNotFound, ModelNotReady
from ..model import Model
from ..ops.heap import freeze_heap, refreeze_heap
from ..runtime.files import latest_version
from ..runtime.registry import model_class_for
from ..settings import SETTINGS_FILE, read_settings, resolve
from .runner import Runner
from .threads import in_thread
from .turns import Turns

log = logging.getLogger(__name__)

# A model name is one path segment: no separators, no dot-only names, nothing hidden.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
UNLOAD_GRACE_SECONDS = 30.0


@dataclass(slots=True)
class Unavailable:
    """A model the repository knows of that cannot serve now, and why."""

    reason: str
    version: str = ""


@dataclass(slots=True)
class SettingsSources:
    """Where models' settings come from besides their folder: the server's flags (which win)
    and the server's own defaults (which lose to everything)."""

    flags: Mapping[str, Any]
    server: Mapping[str, Any]

    def settings_of(self, model_class: type[Model], folder_settings: Mapping[str, Any],
                    where: str):
        return resolve((self.flags, "flags"), (folder_settings, where),
                       (model_class.defaults, f"{model_class.__name__}.defaults"),
                       (self.server, "server defaults"))


class ModelRepository:
    def __init__(self, runner: Callable[[Model], Runner], models: list[Model] = (),
                 root: Path | None = None, default_class: type[Model] | None = None,
                 sources: SettingsSources | None = None,
                 folder_settings: Mapping[str, Mapping[str, Any]] | None = None):
        self._runner = runner  # makes the Runner of a loaded model
        self._given: list[Model] = list(models)  # served as given, loaded at start
        self._models: dict[str, Runner] = {}
        self._unavailable: dict[str, Unavailable] = {}
        self._loading: set[str] = set()
        self._turns = Turns()  # one load or unload of a name at a time
        self._fetched_from: dict[str, str] = {}  # name -> the storage_uri its folder came from
        self.root = root
        self.default_class = default_class
        self.sources = sources or SettingsSources({}, {})
        for model in self._given:  # with their folder's settings.json, when they have one
            model.settings = self.sources.settings_of(
                type(model), (folder_settings or {}).get(model.name, {}), SETTINGS_FILE)
        self.expect([model.name for model in self._given])  # readiness waits for them

    # -- lookup ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._models)

    def runners(self) -> list[Runner]:
        return list(self._models.values())

    def knows(self, name: str) -> bool:
        return name in self._models or name in self._unavailable or name in self._loading

    def get(self, name: str, version: str | None = None) -> Runner:
        runner = self._models.get(name)
        if runner is None:
            known = self._unavailable.get(name)
            if known is not None and version in (None, known.version):
                raise ModelNotReady(name, known.reason)
            if name in self._loading:
                raise ModelNotReady(name, "it is loading")
            raise ModelNotFound(name, version)
        if version is not None and version != runner.version:
            raise ModelNotFound(name, version)
        return runner

    def ready(self, name: str, version: str | None = None) -> Runner:
        runner = self.get(name, version)
        if not runner.model.ready:
            raise ModelNotReady(name, "it is loading" if name in self._loading
                                else "it is not ready")
        return runner

    def model_classes(self) -> list[type[Model]]:
        """The classes this repository serves or may load, the server's own first."""
        classes = [self.default_class] if self.default_class is not None else []
        classes += [type(model) for model in self._given]
        classes += [type(runner.model) for runner in self._models.values()]
        return list(dict.fromkeys(classes))

    def all_ready(self) -> bool:
        """Every model loaded (one being reloaded serves its old version meanwhile), and none
        stuck."""
        return (all(name in self._models for name in self._loading)
                and all(r.model.ready and not r.stuck() for r in self._models.values()))

    # -- loading --------------------------------------------------------------------------------
    def exclusive(self, name: str):
        """One load or unload of a name at a time: a second waits for the first, so two loads
        of one model neither fetch into the same folder at once nor race to serve."""
        return self._turns.of(name)

    async def load_given(self) -> None:
        """Load the models the server was given; the first failure is raised."""
        for model in self._given:
            await self._load(model)

    async def load_from_disk(self, name: str, fetched_from: str | None = None) -> Runner:
        """(Re)load `<root>/<name>`; the old version keeps serving until the new one is ready.
        `fetched_from`: the storage_uri a load request just fetched the folder from."""
        folder = self.folder(name)
        if fetched_from is not None:
            self._fetched_from[name] = fetched_from
        self._loading.add(name)
        try:
            runner = await self._load(self.build(name, folder), replace=True)
        except Exception as exc:
            if name not in self._models:
                self._unavailable[name] = Unavailable(f"load failed: {exc}")
            raise
        finally:
            self._loading.discard(name)
        return runner

    async def _load(self, model: Model, replace: bool = False) -> Runner:
        """Run `model.load()` off the event loop (a False return is a failure), warm the model
        up, then serve it; it counts as loading until then."""
        self._loading.add(model.name)
        try:
            if not model.ready:
                loaded = await in_thread(model.load, name=f"load-{model.name}")
                if loaded is False:
                    raise RuntimeError(f"model '{model.name}' reported that it failed to load")
            model.settings = model.settings.default(max_batch_size=0)  # still open: no batching
            runner = self._runner(model)
            try:
                await runner.warm_up()
            except Exception:
                runner.close()
                raise
        finally:
            self._loading.discard(model.name)
        freeze_heap()
        model.ready = True
        old = self._models.get(model.name)
        self._models[model.name] = runner
        self._unavailable.pop(model.name, None)
        log.info("model '%s' version %s is ready", model.name, model.version)
        if replace and old is not None:
            await self._retire(old)
            del old  # so that its reference cycles can be collected
            refreeze_heap()
        return runner

    def build(self, name: str, folder: Path) -> Model:
        """A model object for one repository folder, with its settings; not yet loaded."""
        folder_settings = read_settings(folder)
        model_dir, version = latest_version(folder)
        runtime = self.sources.flags.get("runtime") or folder_settings.get("runtime")
        model_class = model_class_for(model_dir, runtime, self.default_class)
        model = model_class(name, str(model_dir))
        if version is not None:
            model.version = version
        model.fetched_from = self._fetched_from.get(name)
        model.settings = self.sources.settings_of(model_class, folder_settings,
                                                  str(folder / SETTINGS_FILE))
        return model

    async def unload(self, name: str) -> None:
        self._require_root()
        runner = self._models.pop(name, None)
        if runner is None:
            raise ModelNotFound(name)
        self._unavailable[name] = Unavailable("unloaded", runner.version)
        await self._retire(runner)
        del runner  # so that its reference cycles can be collected
        refreeze_heap()
        log.info("model '%s' unloaded", name)

    def forget(self, name: str) -> None:
        """A model whose folder is gone: not listed any more."""
        self._unavailable.pop(name, None)

    async def _retire(self, runner: Runner) -> None:
        """Stop new requests reaching the model, let in-flight ones finish, then unload it."""
        runner.model.ready = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UNLOAD_GRACE_SECONDS
        while runner.inflight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        runner.close()
        await in_thread(runner.model.unload, name=f"unload-{runner.name}")

    def loaded_count(self) -> int:
        return sum(r.model.ready for r in self._models.values())

    # -- the repository on disk -----------------------------------------------------------------
    def folder(self, name: str) -> Path:
        if not _NAME.fullmatch(name) or name.strip(".") == "":
            raise InvalidInput(f"invalid model name {name!r}: use letters, digits, '.', '_', '-'")
        self._require_root()
        folder = self.root / name
        if not folder.is_dir():
            raise ModelNotFound(name)
        return folder

    def folder_for_download(self, name: str) -> Path:
        """Where a model fetched by a load request goes: `<root>/<name>`, validated."""
        try:
            return self.folder(name)
        except ModelNotFound:
            return self.root / name

    def expect(self, names: list[str]) -> None:
        """Mark models as loading before their loads start, so readiness waits for all."""
        self._loading.update(names)

    def unloaded(self, name: str) -> None:
        """Know `name` as unloaded without having served it (a worker started after it was
        unloaded, so that its index says what the others' say)."""
        if name not in self._models:
            self._unavailable[name] = Unavailable("unloaded")

    def _require_root(self) -> None:
        # A server started on one model has nothing to load from, so it cannot unload either.
        if self.root is None:
            raise InvalidInput("this server has no model repository")

    def on_disk(self) -> list[str]:
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _NAME.fullmatch(p.name) and not p.name.startswith("."))

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        entries = []
        for name in sorted({*self._models, *self._unavailable, *self._loading, *self.on_disk()}):
            runner = self._models.get(name)
            if name in self._loading:
                state, reason, version = "LOADING", "", runner.version if runner else ""
            elif runner is not None and runner.model.ready:
                state, reason, version = "READY", "", runner.version
            else:
                known = self._unavailable.get(name, Unavailable("not loaded"))
                state, reason, version = "UNAVAILABLE", known.reason, known.version
            if not ready_only or state == "READY":
                entries.append({"name": name, "version": version, "state": state,
                                "reason": reason})
        return entries
