"""Train the example iris classifier and save it as model.joblib beside this script."""

from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def main() -> None:
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    joblib.dump(model, Path(__file__).with_name("model.joblib"))


if __name__ == "__main__":
    main()
