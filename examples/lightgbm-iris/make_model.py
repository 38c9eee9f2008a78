"""Train the example iris classifier with LightGBM's scikit-learn API on a DataFrame (so its
features have names) and save its booster beside this script as model.bst, LightGBM's text
format, which is what KServe's lgbserver loads.

    python examples/lightgbm-iris/make_model.py [folder]
"""

import argparse
from pathlib import Path

import lightgbm as lgb
from sklearn.datasets import load_iris

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def train() -> lgb.LGBMClassifier:
    data = load_iris(as_frame=True)
    features = data.frame.drop(columns="target").set_axis(FEATURES, axis=1)
    model = lgb.LGBMClassifier(n_estimators=10, num_leaves=4, learning_rate=0.3, n_jobs=1,
                               random_state=0, verbose=-1)
    return model.fit(features, data.target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=Path(__file__).parent, type=Path)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    train().booster_.save_model(args.folder / "model.bst")


if __name__ == "__main__":
    main()
