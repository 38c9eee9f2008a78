"""`python -m modelserver --model_dir REPO`: serve a repository of models of any installed runtime."""

from .server import serve


def main(argv: list[str] | None = None) -> None:
    serve(None, argv, prog="modelserver",
          description="Serve a repository of models with every installed runtime.")


if __name__ == "__main__":
    main()
