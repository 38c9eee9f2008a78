"""Train the example iris classifier with XGBoost's scikit-learn API and save it beside this script
as model.json (a few KB; XGBoost's JSON format, which any XGBoost from 1.0 on reads).

    python examples/xgboost-iris/make_model.py [folder] [--format json|ubj]
"""

import argparse
from pathlib import Path

import xgboost as xgb
from sklearn.datasets import load_iris


def train() -> xgb.XGBClassifier:
    features, labels = load_iris(return_X_y=True)
    model = xgb.XGBClassifier(n_estimators=4, max_depth=2, learning_rate=0.5, n_jobs=1,
                              random_state=0)
    return model.fit(features, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=Path(__file__).parent, type=Path)
    parser.add_argument("--format", choices=["json", "ubj"], default="json")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    train().save_model(args.folder / f"model.{args.format}")


if __name__ == "__main__":
    main()
