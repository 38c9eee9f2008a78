"""`python -m modelstorage URI DEST`: the storage initializer, with KServe's two arguments."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import StorageError, download
from .limits import MAX_BYTES_ENV, MAX_RATIO_ENV

EPILOG = """URI schemes: s3://bucket/prefix, gs://bucket/prefix,
https://<account>.blob.core.windows.net/<container>/<prefix>[?SAS], http(s)://host/file,
hf://org/repo[:revision][/path], models:/name/version, models:/name@alias, runs:/run-id/path,
pvc://claim/path, file:///path or a local path. A prefix means everything under that folder;
a single .tar, .tar.gz, .tgz or .zip is unpacked, within the expansion limits. Credentials and endpoints come from the
environment (see storage/README.md). Exit status: 0 when DEST holds the model, 1 otherwise."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="modelstorage", epilog=EPILOG,
        description="Download a model into DEST, atomically: DEST changes only once all of it "
                    "has arrived and checked out, and a DEST that already holds URI is kept.")
    parser.add_argument("uri", metavar="URI", help="where the model is")
    parser.add_argument("dest", metavar="DEST", help="the model folder to fill (e.g. /mnt/models)")
    parser.add_argument("--max-expanded-bytes", metavar="SIZE", dest=MAX_BYTES_ENV,
                        help="refuse an archive or a compressed download that expands past "
                             "SIZE (e.g. 200G; 0: no limit); default $STORAGE_MAX_EXPANDED_BYTES "
                             "or 100G")
    parser.add_argument("--max-expansion-ratio", metavar="N", dest=MAX_RATIO_ENV,
                        help="refuse one that expands more than N times (0: no limit); default "
                             "$STORAGE_MAX_EXPANSION_RATIO or 100")
    args = parser.parse_args(argv)
    # The limits are read from the environment wherever they apply: the options set it.
    os.environ.update({name: value for name in (MAX_BYTES_ENV, MAX_RATIO_ENV)
                       if (value := getattr(args, name)) is not None})
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        download(args.uri, args.dest)
    except StorageError as exc:
        logging.getLogger("modelstorage").error("download failed: %s", exc)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
