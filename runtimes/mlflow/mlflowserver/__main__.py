from modelserver import serve

from .model import MLflowModel


def main(argv: list[str] | None = None) -> None:
    serve(MLflowModel, argv, prog="mlflowserver",
          description="Serve an MLflow pyfunc model over KServe v1, Open Inference Protocol v2 "
                      "and MLflow's scoring protocol (/invocations, /ping).")


if __name__ == "__main__":
    main()
