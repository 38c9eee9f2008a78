"""Train the example iris classifier with scikit-learn and convert it to ONNX with skl2onnx, as
1/model.onnx beside this script (Triton's layout: version 1).

    python examples/onnx-iris/make_model.py [folder]

The model takes `features` (float32 [-1, 4]; any number of rows) and returns `output_label`
(int64 [-1]) and `output_probability`: skl2onnx's default ZipMap (one {class: probability} map
per row), which onnxserver serves as a float32 [-1, 3] tensor.
"""

import argparse
from pathlib import Path

from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

# Opsets that ONNX Runtime 1.19 and later all run.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=Path(__file__).parent, type=Path)
    args = parser.parse_args()
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    onnx_model = to_onnx(model, initial_types=[("features", FloatTensorType([None, 4]))],
                         target_opset=TARGET_OPSET)
    (args.folder / "1").mkdir(parents=True, exist_ok=True)
    (args.folder / "1" / "model.onnx").write_bytes(onnx_model.SerializeToString())


if __name__ == "__main__":
    main()
