from modelserver import serve

from .model import SKLearnModel


def main(argv: list[str] | None = None) -> None:
    serve(SKLearnModel, argv, prog="sklearnserver",
          description="Serve a scikit-learn model over KServe v1 and Open Inference Protocol v2.")


if __name__ == "__main__":
    main()
