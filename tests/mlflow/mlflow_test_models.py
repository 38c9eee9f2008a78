"""pyfunc models for the MLflow tests. Saved with code_paths=[this file], so the server process
imports this module from the model folder."""

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

WEIGHTS = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)


class Dot(PythonModel):
    """Tensor in ([rows, 4] float32), tensor out: a weighted sum per row."""

    def predict(self, context, model_input, params=None):
        return np.asarray(model_input) @ WEIGHTS


class Named(PythonModel):
    """Named tensors in (a: [rows, 2] float32, b: [rows] int64), two columns out."""

    def predict(self, context, model_input, params=None):
        a, b = model_input["a"], model_input["b"]
        return pd.DataFrame({"total": a.sum(axis=1).astype(np.float64) + b, "twice": b * 2})


class Words(PythonModel):
    """Columns in (text: string, n: long), columns out (a string and a number)."""

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"shout": model_input["text"].str.upper() + "!" * 1,
                             "length": model_input["text"].str.len() * model_input["n"]})


class Scaled(PythonModel):
    """A column in, scaled by the `scale` param (a float param with a default)."""

    def predict(self, context, model_input, params=None):
        return model_input["x"].to_numpy() * (params or {}).get("scale", 1.0)


class RowSum(PythonModel):
    """Unnamed columns in (taken by position), their sum out."""

    def predict(self, context, model_input, params=None):
        return model_input.sum(axis=1).to_numpy()


class Broken(PythonModel):
    def predict(self, context, model_input, params=None):
        raise RuntimeError("the model's own bug")


class Chat(PythonModel):
    """Takes a chat request as it comes (a dict), answers an OpenAI-style dict."""

    def predict(self, context, model_input, params=None):
        messages = model_input["messages"]
        if isinstance(messages, pd.Series):  # a DataFrame row, as MLflow hands dicts over
            messages = messages.iloc[0]
        last = messages[-1]["content"]
        return {"choices": [{"message": {"role": "assistant", "content": last[::-1]}}],
                "temperature": (params or {}).get("temperature")}
