"""Loaded models are kept out of the cyclic garbage collector's full passes, and unloading one
still frees it."""

import asyncio
import gc
import weakref

from modelserver.model import Model
from modelserver.repository import ModelRepository


class Cyclic(Model):
    """A model in a reference cycle: only the cyclic collector can free it."""

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)

    @classmethod
    def can_load(cls, folder) -> bool:
        return True

    def load(self) -> bool:
        self.myself = self
        return True


def test_loaded_models_are_frozen_and_unloaded_ones_freed(tmp_path):
    (tmp_path / "cyclic").mkdir()
    repository = ModelRepository(root=tmp_path, default_class=Cyclic)

    async def load_then_unload() -> weakref.ref:
        model = await repository.load_from_disk("cyclic")
        assert gc.get_freeze_count() > 0
        gone = weakref.ref(model)
        del model
        await repository.unload("cyclic")
        return gone

    try:
        assert asyncio.run(load_then_unload())() is None
    finally:
        gc.unfreeze()
