"""TensorFlow models for the tests, made in temporary folders (imports TensorFlow: slow, once)."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


class Signatures(tf.Module):
    """One SavedModel with a signature for each thing TF Serving's formats can carry."""

    def __init__(self, seed: int):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w = tf.Variable(rng.normal(size=(4, 3)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def classify(self, x):
        scores = tf.nn.softmax(tf.matmul(x, self.w))
        return {"scores": scores, "label": tf.argmax(scores, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def scores_only(self, x):
        return {"scores": tf.nn.softmax(tf.matmul(x, self.w))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def text(self, text):
        upper = tf.strings.upper(text)
        return {"length": tf.strings.length(text), "upper": upper, "upper_bytes": upper}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="a"),
                                  tf.TensorSpec([None], tf.int32, name="b")])
    def pair(self, a, b):
        total = tf.reduce_sum(a, axis=1) + tf.cast(b, tf.float32)
        return {"total": total, "mean": tf.reduce_mean(total)}


def save_signatures(folder: Path, seed: int) -> Path:
    module = Signatures(seed)
    tf.saved_model.save(module, str(folder), signatures={
        "serving_default": module.classify, "scores_only": module.scores_only,
        "text": module.text, "pair": module.pair})
    return folder


class ImageClassifier(tf.Module):
    """The signature of KServe's TensorFlow sample (flowers): JPEG bytes and a key per example
    in; scores over three classes (from the mean colour), the best, and the key out."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes"),
                                  tf.TensorSpec([None], tf.string, name="key")])
    def classify(self, image_bytes, key):
        def mean_colour(jpeg):
            return tf.reduce_mean(tf.cast(tf.io.decode_jpeg(jpeg, channels=3), tf.float32),
                                  axis=[0, 1]) / 255.0

        colours = tf.map_fn(mean_colour, image_bytes, fn_output_signature=tf.float32)
        scores = tf.nn.softmax(4.0 * colours)
        return {"scores": scores, "prediction": tf.argmax(scores, axis=1), "key": key}


def save_image_classifier(folder: Path) -> Path:
    module = ImageClassifier()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.classify})
    return folder


def jpeg(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    pixels = tf.fill([size, size, 3], tf.constant(0, tf.uint8)) + tf.constant(rgb, tf.uint8)
    return tf.io.encode_jpeg(pixels).numpy()


IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


def save_half_plus_three(folder: Path) -> Path:
    """y = 0.5 x + 3, with the signatures of TF Serving's own example model of its REST API
    documentation: `serving_default` (predict, `x` to `y`), and `tensorflow/serving/regress`
    and `tensorflow/serving/classify` reading the float feature `x` of tf.Example protos."""
    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph, v1.Session(graph=graph) as session:
        x = v1.placeholder(tf.float32, [None], name="x")
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        from_examples = tf.io.parse_example(
            serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        predict = v1.saved_model.predict_signature_def({"x": x}, {"y": 0.5 * x + 3})
        regress = v1.saved_model.regression_signature_def(serialized, 0.5 * from_examples + 3)
        classify = v1.saved_model.classification_signature_def(serialized, None,
                                                                0.5 * from_examples + 3)
        builder = v1.saved_model.Builder(str(folder))
        builder.add_meta_graph_and_variables(
            session, [v1.saved_model.tag_constants.SERVING], strip_default_attrs=True,
            signature_def_map={"serving_default": predict, "tensorflow/serving/regress": regress,
                               "tensorflow/serving/classify": classify})
        builder.save()
    return folder


def save_example_signatures(folder: Path, weights: np.ndarray, bias: float) -> Path:
    """A SavedModel whose signatures read serialized tf.Example protos, made with TensorFlow's
    signature builders as Estimator exports were: `serving_default` and `classify` (classes and
    scores from the float feature `x` of 4 values, `weight` scaling the scores), `regress`
    (`x` · weights + bias + `offset` + the length of the string `tag`), and `predict_x`, an
    ordinary one."""
    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph, v1.Session(graph=graph) as session:
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        features = tf.io.parse_example(serialized, {
            "x": tf.io.FixedLenFeature([4], tf.float32),
            "weight": tf.io.FixedLenFeature([], tf.float32, default_value=1.0),
            "offset": tf.io.FixedLenFeature([], tf.int64, default_value=0),
            "tag": tf.io.FixedLenFeature([], tf.string, default_value=""),
        })
        x = features["x"]
        scores = tf.nn.softmax(x[:, :3]) * features["weight"][:, None]
        classes = tf.tile(tf.constant([IRIS_CLASSES]), [tf.shape(x)[0], 1])
        value = (tf.linalg.matvec(x, tf.constant(weights, tf.float32)) + bias
                 + tf.cast(features["offset"] + tf.cast(tf.strings.length(features["tag"]),
                                                        tf.int64), tf.float32))[:, None]
        raw = v1.placeholder(tf.float32, [None, 4], name="x")
        classify = v1.saved_model.classification_signature_def(serialized, classes, scores)
        regress = v1.saved_model.regression_signature_def(serialized, value)
        predict = v1.saved_model.predict_signature_def({"x": raw},
                                                       {"total": tf.reduce_sum(raw, axis=1)})
        builder = v1.saved_model.Builder(str(folder))
        builder.add_meta_graph_and_variables(
            session, [v1.saved_model.tag_constants.SERVING],
            signature_def_map={"serving_default": classify, "classify": classify,
                               "regress": regress, "predict_x": predict}, strip_default_attrs=True)
        builder.save()
    return folder


def keras_model(seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    features = keras.Input(shape=(4,), name="features")
    tokens = keras.Input(shape=(3,), name="tokens", dtype="int32")
    hidden = keras.layers.Dense(8, activation="relu")(features)
    embedded = keras.layers.Flatten()(keras.layers.Embedding(10, 2)(tokens))
    joined = keras.layers.Concatenate()([hidden, embedded])
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(joined)
    value = keras.layers.Dense(1, name="value")(joined)
    return keras.Model([features, tokens], {"probs": probs, "value": value})


def sequential_model(seed: int = 1):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(2, name="out")])


def future_saved_model(source: Path, folder: Path) -> Path:
    """A copy of the SavedModel as a newer TensorFlow would have written it: its graph uses an
    op this TensorFlow does not have."""
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(source, folder)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    meta = saved.meta_graphs[0]
    meta.meta_info_def.tensorflow_version = "9.9.9"
    for function in meta.graph_def.library.function:
        for node in function.node_def:
            if node.op == "MatMul":
                node.op = "MatMulFromTheFuture"
    (folder / "saved_model.pb").write_bytes(saved.SerializeToString())
    return folder


def future_keras_file(source: Path, target: Path) -> Path:
    """A .keras file saved by a newer Keras, with a layer this Keras does not know."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "metadata.json":
                meta = json.loads(data)
                meta["keras_version"] = "9.0.0"
                data = json.dumps(meta).encode()
            elif item.filename == "config.json":
                data = data.replace(b'"Dense"', b'"DenseFromTheFuture"')
            zout.writestr(item, data)
    return target
