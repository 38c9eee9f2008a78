from modelserver import serve

from .model import OnnxModel


def main(argv: list[str] | None = None) -> None:
    serve(OnnxModel, argv, prog="onnxserver",
          description="Serve an ONNX model (model.onnx, or Triton's 1/model.onnx) with ONNX "
                      "Runtime over KServe v1 and Open Inference Protocol v2.")


if __name__ == "__main__":
    main()
