"""Feature functions of the test pipelines (FunctionTransformer steps), importable both by our
server and by MLServer (the tests put this folder on their PYTHONPATH), so that the same joblib
files load in both."""

from datetime import datetime

import numpy as np
import pandas as pd

# The rows every server is asked about.
IRIS = np.array([[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]])
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
HOUSES = pd.DataFrame({"city": ["Oslo", "Lyon", "Porto"], "floor": [0, 3, 1],
                       "area": [50.0, 80.5, 120.0], "rooms": [2, 3, 5]})
BLOBS = [b"\x00\xff" * 3, b"", b"\x89PNG\r\n\x1a\n"]
WHEN = [datetime(2001, 1, 1, 12), datetime(2024, 2, 29), datetime(1999, 12, 31)]


def blob_lengths(frame):
    """A column of raw bytes as their lengths."""
    return np.array([[len(value)] for value in frame["blob"]], dtype=float)


def days_since_2000(frame):
    """A datetime column as days since 2000-01-01."""
    when = frame["when"].to_numpy().astype("datetime64[us]")
    return ((when - np.datetime64("2000-01-01")) / np.timedelta64(1, "D")).reshape(-1, 1)
