"""`python -m modelstorage URI DEST`: the storage initializer, as KServe runs its own."""

from __future__ import annotations

import argparse
import logging
import sys

from . import StorageError, download


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="modelstorage",
        description="Download a model from s3://, gs://, http(s)://, Azure Blob, pvc:// or a "
                    "local path into DEST, atomically: DEST changes only once all has arrived.")
    parser.add_argument("uri", help="where the model is")
    parser.add_argument("dest", help="the model directory to fill (e.g. /mnt/models)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        download(args.uri, args.dest)
    except StorageError as exc:
        logging.getLogger("modelstorage").error("download failed: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
