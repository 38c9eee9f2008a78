"""MLflow models for the tests, made once per session."""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
EXAMPLE = HERE.parents[1] / "examples" / "mlflow-iris" / "model"
REQUIREMENTS = ["pandas"]  # named, so MLflow does not run each model to infer them


@pytest.fixture(scope="session")
def mlflow_models(tmp_path_factory):
    """name -> model folder, all in one repository folder (the fixture's `root` attribute)."""
    with warnings.catch_warnings():  # MLflow's own advice on type hints, at import
        warnings.simplefilter("ignore", UserWarning)
        import mlflow.pyfunc
        import mlflow.sklearn
        import mlflow_test_models as models
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("mlflow-repository")
    code = [str(HERE / "mlflow_test_models.py")]
    folders = {"iris": root / "iris"}
    shutil.copytree(EXAMPLE, folders["iris"])

    def pyfunc(name, model, inputs, outputs=None, params=None):
        folders[name] = root / name
        with warnings.catch_warnings():  # MLflow's advice to add type hints and an example
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(folders[name], python_model=model, code_paths=code,
                                     signature=ModelSignature(inputs, outputs, params),
                                     pip_requirements=REQUIREMENTS)

    pyfunc("dot", models.Dot(), Schema([TensorSpec(np.dtype("float32"), (-1, 4))]),
           Schema([TensorSpec(np.dtype("float32"), (-1,))]))
    pyfunc("named", models.Named(),
           Schema([TensorSpec(np.dtype("float32"), (-1, 2), "a"),
                   TensorSpec(np.dtype("int64"), (-1,), "b")]),
           Schema([ColSpec("double", "total"), ColSpec("long", "twice")]))
    pyfunc("words", models.Words(), Schema([ColSpec("string", "text"), ColSpec("long", "n")]),
           Schema([ColSpec("string", "shout"), ColSpec("long", "length")]))
    pyfunc("scaled", models.Scaled(), Schema([ColSpec("double", "x")]),
           Schema([ColSpec("double")]), ParamSchema([ParamSpec("scale", "double", 1.0)]))
    pyfunc("broken", models.Broken(), Schema([ColSpec("double", "x")]))
    pyfunc("rowsum", models.RowSum(), Schema([ColSpec("double"), ColSpec("long")]))
    pyfunc("chat", models.Chat(), None, None, ParamSchema([ParamSpec("temperature", "double",
                                                                     0.5)]))

    # No signature, pickled the MLflow 2 way.
    iris = load_iris()
    folders["nosig"] = root / "nosig"
    mlflow.sklearn.save_model(LogisticRegression(max_iter=500).fit(iris.data, iris.target),
                              folders["nosig"], serialization_format="cloudpickle",
                              pip_requirements=REQUIREMENTS)
    # No signature, but an input example: a DataFrame pipeline with a text and an integer column.
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    houses = pd.DataFrame({"city": rng.choice(["Lyon", "Oslo"], 30).astype(object),
                           "rooms": rng.integers(1, 6, 30), "area": rng.uniform(20, 99, 30)})
    encode = ColumnTransformer([("city", OneHotEncoder(), ["city"])], remainder="passthrough")
    pipeline = Pipeline([("encode", encode), ("fit", LinearRegression())]).fit(
        houses, houses["area"] * 3 + houses["rooms"])
    folders["example"] = root / "example"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mlflow.sklearn.save_model(pipeline, folders["example"], signature=False,
                                  input_example=houses.head(3),
                                  serialization_format="cloudpickle",
                                  pip_requirements=REQUIREMENTS)
    return Folders(root, folders)


class Folders(dict):
    def __init__(self, root: Path, folders: dict):
        super().__init__(folders)
        self.root = root

