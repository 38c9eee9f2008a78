"""A scikit-learn model on the KServe Python SDK, the way KServe's own sklearnserver does it.

Runs in the KServe virtual environment that `make bench-peers` makes (.cache/peers/kserve), never
in the project's .venv. `--model_dir` serves one model as `--model_name`, like KServe's
sklearnserver; `--model_repository` serves every subfolder as a model named after it, from one
`kserve.ModelServer`. The other flags are kserve.model_server's (--http_port, --grpc_port,
--workers, ...).

Two small changes from KServe's defaults, neither on the request path: the listeners bind
--host (127.0.0.1 here) rather than all interfaces, and nothing is downloaded (the folders are
local)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Dict, Union

import joblib
import kserve
from kserve import Model, ModelServer
from kserve.errors import InferenceError, ModelMissingError
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.utils.utils import get_predict_input, get_predict_response

MODEL_EXTENSIONS = (".joblib", ".pkl", ".pickle")
ENV_PREDICT_PROBA = "PREDICT_PROBA"


class SKLearnModel(Model):
    """KServe's sklearnserver model: joblib-load the one model file; predict v1 and v2."""

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.ready = False

    def load(self) -> bool:
        folder = Path(self.model_dir)
        files = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(MODEL_EXTENSIONS)]
        if not files:
            raise ModelMissingError(str(folder))
        if len(files) > 1:
            raise RuntimeError(f"more than one model file in {folder}: {files}")
        self._model = joblib.load(files[0])
        self.ready = True
        return self.ready

    def predict(self, payload: Union[Dict, InferRequest],
                headers: Dict[str, str] = None) -> Union[Dict, InferResponse]:
        try:
            instances = get_predict_input(payload)
            if (os.environ.get(ENV_PREDICT_PROBA, "false").lower() == "true"
                    and hasattr(self._model, "predict_proba")):
                result = self._model.predict_proba(instances)
            else:
                result = self._model.predict(instances)
            return get_predict_response(payload, result, self.name)
        except Exception as e:
            raise InferenceError(str(e))


def _bind(host: str) -> None:
    """KServe listens on 0.0.0.0 and [::]; bind the benchmark's servers to `host` only."""
    import uvicorn
    from grpc.aio import _server

    config_init = uvicorn.Config.__init__

    def config(self, *args, **kwargs):
        kwargs["host"] = host
        config_init(self, *args, **kwargs)

    uvicorn.Config.__init__ = config
    add_port = _server.Server.add_insecure_port
    _server.Server.add_insecure_port = (
        lambda self, address: add_port(self, f"{host}:{address.rsplit(':', 1)[1]}"))


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", help="a local folder holding one model file")
    parser.add_argument("--model_repository", help="a local folder of model folders")
    parser.add_argument("--host", default="127.0.0.1")
    args, _ = parser.parse_known_args()
    _bind(args.host)
    if args.model_repository:
        root = Path(args.model_repository)
        models = [SKLearnModel(d.name, str(d)) for d in sorted(root.iterdir()) if d.is_dir()]
    else:
        models = [SKLearnModel(args.model_name, args.model_dir)]
    for model in models:
        model.load()
    ModelServer().start(models)


if __name__ == "__main__":
    main()
