"""Train the example iris classifier and save it as an MLflow model in model/ beside this script:
scikit-learn, stored with skops (MLflow 3's default), with a column-based signature (the four
named iris features in, the class out) and an input example.

    python examples/mlflow-iris/make_model.py [folder]
"""

import argparse
import shutil
from pathlib import Path

import mlflow.sklearn
import pandas
import sklearn
import skops
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=Path(__file__).with_name("model"), type=Path)
    args = parser.parse_args()
    iris = load_iris(as_frame=True)
    features = iris.data.set_axis(COLUMNS, axis=1)
    model = LogisticRegression(max_iter=1000).fit(features, iris.target)
    shutil.rmtree(args.folder, ignore_errors=True)
    mlflow.sklearn.save_model(
        model, args.folder,
        signature=infer_signature(features, model.predict(features)),
        input_example=features.iloc[:2],
        serialization_format="skops",
        # Named, not inferred: inference runs the model in a subprocess and lists whatever the
        # environment has imported.
        pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}",
                          f"pandas=={pandas.__version__}"],
    )


if __name__ == "__main__":
    main()
