from modelserver import serve

from .model import LightGBMModel


def main(argv: list[str] | None = None) -> None:
    serve(LightGBMModel, argv, prog="lgbserver",
          description="Serve a LightGBM model over KServe v1 and Open Inference Protocol v2.")


if __name__ == "__main__":
    main()
