"""Models by name, and the model repository on disk that they come from.

`--model_dir` holds either one model (its files at the root, served as `--model_name`) or a
repository: one folder per model, named as the model, optionally with numbered version folders
(the highest is served) and a `settings.json`. Loading runs off the event loop and never blocks
requests to other models; unloading waits for the model's in-flight requests to finish."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ops import metrics
from ..errors import InvalidInput, ModelNotFound, ModelNotReady
from ..ops.heap import freeze_heap, refreeze_heap
from ..model import Model
from ..runtime.registry import model_class_for

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
# A model name is one path segment: no separators, no dot-only names, nothing hidden.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
UNLOAD_GRACE_SECONDS = 30.0


@dataclass(slots=True)
class Unavailable:
    """A model the repository knows of that cannot serve now, and why."""

    reason: str
    version: str = ""


class ModelRepository:
    def __init__(self, models: list[Model] = (), root: Path | None = None,
                 default_class: type[Model] | None = None,
                 overrides: dict[str, Any] | None = None):
        self._models: dict[str, Model] = {}
        self._unavailable: dict[str, Unavailable] = {}
        self._loading: set[str] = set()
        self.root = root
        self.default_class = default_class
        self.overrides = overrides or {}  # settings from flags, over each settings.json
        for model in models:
            self.add(model)

    # -- lookup ---------------------------------------------------------------------------------
    def add(self, model: Model) -> None:
        self._models[model.name] = model
        self._unavailable.pop(model.name, None)

    def names(self) -> list[str]:
        return list(self._models)

    def models(self) -> list[Model]:
        return list(self._models.values())

    def get(self, name: str, version: str | None = None) -> Model:
        model = self._models.get(name)
        if model is None:
            known = self._unavailable.get(name)
            if known is not None and version in (None, known.version):
                raise ModelNotReady(name, known.reason)
            raise ModelNotFound(name, version)
        if version is not None and version != model.version:
            raise ModelNotFound(name, version)
        return model

    def ready_model(self, name: str, version: str | None = None) -> Model:
        model = self.get(name, version)
        if not model.ready:
            raise ModelNotReady(name, "it is loading" if name in self._loading else "it is not ready")
        return model

    def all_ready(self) -> bool:
        return not self._loading and all(m.ready for m in self._models.values())

    # -- loading --------------------------------------------------------------------------------
    async def load(self, model: Model) -> None:
        """Run `model.load()` off the event loop; a False return is a failure."""
        self._loading.add(model.name)
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(None, model.load)
        finally:
            self._loading.discard(model.name)
        if loaded is False:
            raise RuntimeError(f"model '{model.name}' reported that it failed to load")
        freeze_heap()
        model.ready = True
        self._count_loaded()
        log.info("model '%s' version %s is ready", model.name, model.version)

    async def load_from_disk(self, name: str) -> Model:
        """(Re)load `<root>/<name>`; the old version keeps serving until the new one is ready."""
        folder = self.folder(name)
        self._loading.add(name)
        try:
            model = build_model(name, folder, self.default_class, self.overrides)
            await self.load(model)
        except Exception as exc:
            if name not in self._models:
                self._unavailable[name] = Unavailable(f"load failed: {exc}")
            raise
        finally:
            self._loading.discard(name)
        old = self._models.get(name)
        self.add(model)
        if old is not None and old is not model:
            await self._retire(old)
            del old  # so that its reference cycles can be collected
            refreeze_heap()
        return model

    async def unload(self, name: str) -> None:
        self._require_root()
        model = self._models.pop(name, None)
        if model is None:
            raise ModelNotFound(name)
        self._unavailable[name] = Unavailable("unloaded", model.version)
        await self._retire(model)
        del model  # so that its reference cycles can be collected
        refreeze_heap()
        log.info("model '%s' unloaded", name)

    async def _retire(self, model: Model) -> None:
        """Stop new requests reaching `model`, let in-flight ones finish, then unload it."""
        model.ready = False
        deadline = asyncio.get_running_loop().time() + UNLOAD_GRACE_SECONDS
        while model.inflight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        self._count_loaded()
        await asyncio.get_running_loop().run_in_executor(None, model.unload)

    def _count_loaded(self) -> None:
        metrics.MODELS_LOADED.set(sum(m.ready for m in self._models.values()))

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
            model = self._models.get(name)
            if name in self._loading:
                state, reason, version = "LOADING", "", model.version if model else ""
            elif model is not None and model.ready:
                state, reason, version = "READY", "", model.version
            else:
                known = self._unavailable.get(name, Unavailable("not loaded"))
                state, reason, version = "UNAVAILABLE", known.reason, known.version
            if not ready_only or state == "READY":
                entries.append({"name": name, "version": version, "state": state,
                                "reason": reason})
        return entries


def read_settings(folder: Path) -> dict[str, Any]:
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return settings


def latest_version(folder: Path) -> tuple[Path, str | None]:
    """Triton's layout: numbered subfolders are versions, and the highest is served."""
    versions = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        return folder, None
    newest = max(versions, key=lambda p: int(p.name))
    return newest, newest.name


def build_model(name: str, folder: Path, default_class: type[Model] | None,
                overrides: dict[str, Any] | None = None) -> Model:
    """A model object for one repository folder, with its settings applied; not yet loaded."""
    settings = {**read_settings(folder), **(overrides or {})}
    model_dir, version = latest_version(folder)
    model_class = model_class_for(model_dir, settings.get("runtime"), default_class)
    model = model_class(name, str(model_dir))
    if version is not None:
        model.version = version
    apply_settings(model, settings)
    model.settings = settings
    return model


def apply_settings(model: Model, settings: dict[str, Any]) -> None:
    if "max_batch_size" in settings:
        model.max_batch_size = int(settings["max_batch_size"])
    if "max_batch_delay_ms" in settings:
        model.max_batch_delay = float(settings["max_batch_delay_ms"]) / 1000
    if "outputs" in settings:  # the outputs a v1 request gets
        model.v1_outputs = list(settings["outputs"])
