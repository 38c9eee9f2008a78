import os
import sys

from modelserver import serve

from .model import TFModel

# TensorFlow Serving's flags that have a meaning here under another name, so a ServingRuntime
# written for tensorflow/serving works unchanged (its thread flags are TFModel's own flags). Its
# --port (gRPC) speaks TF Serving's own protocol, which this server does not: like any unknown
# flag, it is logged and ignored.
RENAMED = {"--model_base_path": "--model_dir", "--rest_api_port": "--http_port"}


def translate(argv: list[str]) -> list[str]:
    """TF Serving's flags under this server's names."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        out.append(RENAMED[name] + eq + value if name in RENAMED else arg)
    return out


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO lines
    argv = translate(sys.argv[1:] if argv is None else argv)
    serve(TFModel, argv, prog="tfserver",
          description="Serve a TensorFlow SavedModel or Keras model over KServe v1 (TensorFlow "
                      "Serving's REST formats) and Open Inference Protocol v2. TF Serving's "
                      "--model_base_path, --rest_api_port and --tensorflow_intra_op_parallelism/"
                      "--tensorflow_inter_op_parallelism are understood too.")


if __name__ == "__main__":
    main()
