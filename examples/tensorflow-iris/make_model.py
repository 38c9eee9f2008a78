"""Train the example iris classifier with TensorFlow and save it as a SavedModel in TensorFlow
Serving's layout, `<folder>/1/` (about 20 KB), beside this script by default.

    python examples/tensorflow-iris/make_model.py [folder]

Its `serving_default` signature takes `features` (float32 [-1, 4]) and returns `probabilities`
(float32 [-1, 3]) and `class` (int64 [-1]).
"""

import argparse
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402


class IrisClassifier(tf.Module):
    """Softmax regression on standardised features."""

    def __init__(self, mean, scale):
        super().__init__()
        self.mean = tf.constant(mean, tf.float32)
        self.scale = tf.constant(scale, tf.float32)
        self.weights = tf.Variable(tf.zeros([4, 3]), name="weights")
        self.bias = tf.Variable(tf.zeros([3]), name="bias")

    def logits(self, features):
        return tf.matmul((features - self.mean) / self.scale, self.weights) + self.bias

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def serve(self, features):
        probabilities = tf.nn.softmax(self.logits(features))
        return {"probabilities": probabilities, "class": tf.argmax(probabilities, axis=1)}


def train() -> IrisClassifier:
    features, labels = load_iris(return_X_y=True)
    features = tf.constant(features, tf.float32)
    model = IrisClassifier(tf.reduce_mean(features, 0), tf.math.reduce_std(features, 0))
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.5)
    for _ in range(300):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, model.logits(features)))
        optimizer.apply_gradients(zip(tape.gradient(loss, [model.weights, model.bias]),
                                      [model.weights, model.bias]))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=Path(__file__).parent, type=Path)
    args = parser.parse_args()
    target = args.folder / "1"
    shutil.rmtree(target, ignore_errors=True)
    model = train()
    tf.saved_model.save(model, str(target), signatures={"serving_default": model.serve})


if __name__ == "__main__":
    main()
