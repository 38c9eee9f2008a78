"""Tree ensembles (random forests, extra trees) evaluated as a whole, in numpy.

scikit-learn predicts with a forest tree by tree: input checks and joblib's dispatch for every
tree, about 40 µs each, so a 100-tree forest costs 4 ms a call whether it is given 1 row or 64,
and merging requests into batches barely helps. Here every tree's nodes are laid end to end in
arrays, and all rows walk all trees together, one numpy step per level of depth: about 0.2 ms
for 100 trees of depth 8 and a batch of 8 rows. The arithmetic is scikit-learn's own (float32
features compared with the float64 thresholds, each tree's leaf values normalised, trees added
one after another, then divided by their number), and at load the result is compared with
scikit-learn's on probe rows; any difference, and the model keeps scikit-learn's own predict."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORESTS = {"RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier",
           "ExtraTreesRegressor"}


class Forest:
    outputs = ("predict", "predict_proba")

    def __init__(self, estimator: Any):
        trees = [tree.tree_ for tree in estimator.estimators_]
        sizes = [tree.node_count for tree in trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.roots = offsets.astype(np.intp)
        self.feature = np.concatenate([t.feature for t in trees]).astype(np.intp)
        self.threshold = np.concatenate([t.threshold for t in trees])
        self.left = np.concatenate([t.children_left + o for t, o in zip(trees, offsets)])
        self.right = np.concatenate([t.children_right + o for t, o in zip(trees, offsets)])
        self.depth = max(t.max_depth for t in trees)
        self.classifier = hasattr(estimator, "classes_")
        values = np.concatenate([t.value[:, 0, :] for t in trees])  # one output
        if self.classifier:
            total = values.sum(axis=1, keepdims=True)
            total[total == 0.0] = 1.0
            values = values / total
            self.classes = estimator.classes_
        else:
            values = values[:, 0]
        self.values = values
        # Leaves point at themselves, so that rows already at one stay there.
        leaf = np.concatenate([t.children_left == -1 for t in trees])
        index = np.arange(len(self.feature))
        self.left[leaf] = index[leaf]
        self.right[leaf] = index[leaf]
        self.feature[leaf] = 0
        self.n_trees = len(trees)

    @classmethod
    def create(cls, estimator: Any) -> Forest | None:
        """An evaluator of this estimator, or None where it is not a plain single-output forest
        or does not give scikit-learn's answers on probe rows."""
        if type(estimator).__name__ not in FORESTS or getattr(estimator, "n_outputs_", 1) != 1:
            return None
        try:
            forest = cls(estimator)
            width = estimator.n_features_in_
            probe = np.random.default_rng(0).normal(size=(64, width)).astype(np.float32) * 3
            ours = cls.rows(probe)
            if forest.classifier:
                same = (np.array_equal(forest.predict_proba(ours),
                                       estimator.predict_proba(probe))
                        and np.array_equal(forest.predict(ours), estimator.predict(probe)))
            else:
                same = np.array_equal(forest.predict(ours), estimator.predict(probe))
            if not same:
                raise ValueError("its answers differ from scikit-learn's")
            log.info("%d trees of depth up to %d, evaluated together", forest.n_trees,
                     forest.depth)
            return forest
        except Exception as exc:  # any surprise at all: scikit-learn's own predict answers
            log.warning("the forest is predicted by scikit-learn itself (%s)", exc)
            return None

    @staticmethod
    def rows(features: Any) -> np.ndarray | None:
        """The features as the float32 matrix scikit-learn's trees read; None when they hold
        something only scikit-learn's own predict handles right (text, missing or infinite
        values, whose routing and errors are its own)."""
        x = features.to_numpy() if hasattr(features, "to_numpy") else features
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.kind not in "biuf":
            return None
        with np.errstate(over="ignore"):  # past float32's range is inf: scikit-learn's way
            x = x.astype(np.float32)
        return x if np.isfinite(x).all() else None

    def leaves(self, rows: np.ndarray) -> np.ndarray:
        """Each row's leaf in each tree: [rows, trees] node indices; `rows` from `rows()`."""
        x = rows.astype(np.float64)  # float32 values, compared as scikit-learn compares them
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), self.n_trees)).copy()
        for _ in range(self.depth):
            left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(left, self.left[node], self.right[node])
        return node

    def _mean(self, leaves: np.ndarray) -> np.ndarray:
        # Tree after tree (a cumulative sum adds in order), as the forest adds them.
        return np.cumsum(self.values[leaves], axis=1)[:, -1] / self.n_trees

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        return self._mean(self.leaves(rows))

    def predict(self, rows: np.ndarray) -> np.ndarray:
        mean = self._mean(self.leaves(rows))
        if self.classifier:
            return self.classes.take(np.argmax(mean, axis=1), axis=0)
        return mean
