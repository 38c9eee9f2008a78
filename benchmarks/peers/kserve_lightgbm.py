"""A LightGBM model on the KServe Python SDK, the way KServe's own lgbserver serves it: the one
`.bst` file in --model_dir loaded as a Booster with --nthread threads (KServe's default: 1), and
every v1 or v2 request turned into the booster's input by the SDK's `get_predict_input` with the
booster's feature names as columns.

Runs in a virtual environment with `kserve==0.21.0` and `lightgbm` (never the project's .venv):

    python benchmarks/peers/kserve_lightgbm.py --model_name iris \\
        --model_dir examples/lightgbm-iris --http_port 8090 --grpc_port 8091

The listeners bind --host (127.0.0.1) rather than all interfaces, as kserve_sklearn.py does."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, Union

import kserve
import lightgbm as lgb
from kserve import Model, ModelServer
from kserve.errors import InferenceError, ModelMissingError
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.utils.utils import get_predict_input, get_predict_response

from kserve_sklearn import _bind


class LightGBMModel(Model):
    def __init__(self, name: str, model_dir: str, nthread: int):
        super().__init__(name)
        self.model_dir = model_dir
        self.nthread = nthread

    def load(self) -> bool:
        found = [p for p in Path(self.model_dir).iterdir() if p.is_file() and p.suffix == ".bst"]
        if len(found) != 1:
            raise ModelMissingError(self.model_dir)
        self._booster = lgb.Booster(params={"nthread": self.nthread}, model_file=str(found[0]))
        self.ready = True
        return self.ready

    def predict(self, payload: Union[Dict, InferRequest],
                headers: Dict[str, str] = None) -> Union[Dict, InferResponse]:
        try:
            instances = get_predict_input(payload, columns=self._booster.feature_name())
            return get_predict_response(payload, self._booster.predict(instances), self.name)
        except Exception as e:
            raise InferenceError(str(e))


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--nthread", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    args, _ = parser.parse_known_args()
    _bind(args.host)
    model = LightGBMModel(args.model_name, args.model_dir, args.nthread)
    model.load()
    ModelServer(workers=1).start([model])


if __name__ == "__main__":
    main()
