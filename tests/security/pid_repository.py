"""A repository server whose models answer with the pid of the worker that served the request
(run as a script, with --model_dir). A folder is such a model when it holds `pid.model`; a
number in that file is how many seconds its load takes, and a file `fail.<pid>` beside it makes
its load fail in the worker of that pid."""

import os
import time
from pathlib import Path

import numpy as np

from modelserver import InferRequest, Model, ModelServer
from modelserver.args import build_parser, parse_args

MARKER = "pid.model"


class PidModel(Model):
    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = Path(model_dir)

    @classmethod
    def can_load(cls, folder: Path) -> bool:
        return (Path(folder) / MARKER).is_file()

    def load(self) -> bool:
        time.sleep(float((self.model_dir / MARKER).read_text() or 0))
        if (self.model_dir / f"fail.{os.getpid()}").exists():
            raise RuntimeError(f"told to fail in worker {os.getpid()}")
        return True

    def predict(self, request: InferRequest):
        return np.array([os.getpid()], dtype=np.int64)


if __name__ == "__main__":
    args = parse_args(build_parser("pidserver"))
    ModelServer(args).start(root=Path(args.model_dir), default_class=PidModel)
