from modelserver import serve

from .model import XGBoostModel


def main(argv: list[str] | None = None) -> None:
    serve(XGBoostModel, argv, prog="xgbserver",
          description="Serve an XGBoost model over KServe v1 and Open Inference Protocol v2.")


if __name__ == "__main__":
    main()
