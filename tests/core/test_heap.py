"""Memory management: loaded models are kept out of the cyclic collector's full passes (and
unloading one still frees it); request-sized buffers are not mapped fresh from the kernel."""

import asyncio
import ctypes
import gc
import os
import subprocess
import sys
import weakref

import pytest

from modelserver.core.repository import ModelRepository
from modelserver.core.runner import Runner
from modelserver.model import Model
from modelserver.ops.metrics import ModelMetrics


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
    repository = ModelRepository(lambda model: Runner(model, ModelMetrics(), 1000), root=tmp_path,
                                 default_class=Cyclic)

    async def load_then_unload() -> weakref.ref:
        model = (await repository.load_from_disk("cyclic")).model
        assert gc.get_freeze_count() > 0
        gone = weakref.ref(model)
        del model
        await repository.unload("cyclic")
        return gone

    try:
        assert asyncio.run(load_then_unload())() is None
    finally:
        gc.unfreeze()


MMAPPED_BLOCKS = """
import ctypes, sys
from modelserver.ops.heap import tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
tune_malloc()
before = mallinfo2().hblks
block = bytearray(1 << 20)  # a request-sized buffer
print(mallinfo2().hblks - before)
"""


@pytest.mark.parametrize("env, mapped",
                         [({}, "0"), ({"GLIBC_TUNABLES": "glibc.malloc.check=0"}, "1")])
def test_request_sized_buffers_stay_on_the_heap_unless_the_environment_says(env, mapped):
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc 2.33 or later")
    out = subprocess.run([sys.executable, "-c", MMAPPED_BLOCKS], env={**os.environ, **env},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == mapped
