"""Loaded models by name."""

from __future__ import annotations

import asyncio
import logging

from .errors import ModelNotFound, ModelNotReady
from .model import Model

log = logging.getLogger(__name__)


class ModelRepository:
    def __init__(self, models: list[Model] = ()):
        self._models: dict[str, Model] = {}
        for model in models:
            self.add(model)

    def add(self, model: Model) -> None:
        self._models[model.name] = model

    def remove(self, name: str) -> Model:
        model = self._models.pop(name, None)
        if model is None:
            raise ModelNotFound(name)
        return model

    def names(self) -> list[str]:
        return list(self._models)

    def models(self) -> list[Model]:
        return list(self._models.values())

    def get(self, name: str, version: str | None = None) -> Model:
        model = self._models.get(name)
        if model is None or (version is not None and version != model.version):
            raise ModelNotFound(name, version)
        return model

    def ready_model(self, name: str, version: str | None = None) -> Model:
        model = self.get(name, version)
        if not model.ready:
            raise ModelNotReady(name)
        return model

    def all_ready(self) -> bool:
        return bool(self._models) and all(m.ready for m in self._models.values())

    async def load(self, model: Model) -> None:
        """Run `model.load()` off the event loop; a False return is a failure."""
        loaded = await asyncio.get_running_loop().run_in_executor(None, model.load)
        if loaded is False:
            raise RuntimeError(f"model '{model.name}' reported that it failed to load")
        model.ready = True
        log.info("model '%s' is ready", model.name)
