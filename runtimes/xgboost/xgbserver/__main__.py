import argparse
import os
import sys

from modelserver import serve

from .model import NTHREAD_ENV, XGBoostModel


def main(argv: list[str] | None = None) -> None:
    # KServe's xgbserver flag; passed on to every worker through the environment.
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--nthread", type=int, default=None)
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if known.nthread is not None:
        os.environ[NTHREAD_ENV] = str(known.nthread)
    serve(XGBoostModel, rest, prog="xgbserver",
          description="Serve an XGBoost model over KServe v1 and Open Inference Protocol v2. "
                      "--nthread N (or XGBOOST_NTHREAD) sets XGBoost's threads per worker; "
                      "0 or unset: the worker's share of the CPUs.")


if __name__ == "__main__":
    main()
