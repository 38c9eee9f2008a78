"""Slim what pip just installed into an image's virtualenv, and gather it into a layer folder.

    python3 docker/slim.py VENV --snapshot FILE      # before pip: the paths VENV holds
    python3 docker/slim.py VENV [--since FILE] [--into DIR] [--sourceless]

The second form works on the paths that are new since the snapshot (all of VENV without one):

1. removes what no serving code path imports: test suites, C/C++ headers and sources, Cython
   sources, static libraries, compilers and test binaries that wheels ship (`PRUNE`), and the
   API models of AWS services the storage code never calls (botocore loads one per service
   client; `AWS_SERVICES` are the ones S3 and its credential providers create);
2. strips the debug information from the shared libraries that carry it (uvloop: 12 MB). Only
   those with no RPATH: `strip` corrupts libraries that auditwheel patched, OpenBLAS among them;
3. compiles every new module to its .pyc, as unchecked-hash pycs that Python uses whatever the
   files' times (a read-only image never rewrites them, and without them a start takes seconds
   longer). With --sourceless (third-party packages) the .pyc takes the module's place and the
   source goes, a third of what their Python weighs (tracebacks still name file and line),
   except in packages that read Python source at run time (`READS_SOURCE`);
4. fails if a CUDA library is among the files: these are CPU images;
5. with --into, links the new paths into DIR under their full path, for `COPY --from=... DIR/ /`:
   a layer of its own, holding only what this step added.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import py_compile
import re
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Globs matched against "/" + a path inside site-packages, with a "/" after folders: "*/tests/"
# is every folder named tests. Licence files in *.dist-info are never removed.
PRUNE = [
    "*/tests/",  # test suites ("test" is tf.test's name: only torch/test, C++ test programs)
    "/torch/test/",
    "*/include/",  # C/C++ headers (tensorflow/include alone is 236 MB)
    "*.h", "*.hpp", "*.hh", "*.cuh", "*.c", "*.cc", "*.cpp", "*.cxx",
    "*.pyx", "*.pxd", "*.pxi", "*.a",
    "/torch/bin/*",  # protoc, C++ test programs and their models (torch_shm_manager stays)
    "/torch/share/", "/torch/lib/lib*test*.so", "/torch/lib/libbackend_with_compiler.so",
    "/botocore/data/*/",  # the API model of every AWS service (AWS_SERVICES stay)
]
# The AWS services that S3 clients and botocore's credential providers create.
AWS_SERVICES = ["s3", "sts", "sso", "sso-oidc", "signin"]
KEEP = ["/torch/bin/torch_shm_manager", *(f"/botocore/data/{s}/" for s in AWS_SERVICES)]
# Code that reads Python source at run time: torch's config modules parse their own comments,
# anyio builds its lazy imports from its own source, TensorFlow's autograph converts functions.
# A package with such a call keeps its sources under --sourceless.
READS_SOURCE = re.compile(
    rb"inspect\.(getsource|getsourcelines|findsource)\(|linecache\.getlines?\(")
CUDA_LIBRARY = re.compile(r"^lib(cudart|cublas|cudnn|cufft|curand|cusolver|cusparse|nccl|nvrtc|"
                          r"torch_cuda|c10_cuda)")


def walk(root: Path) -> list[Path]:
    paths = []
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        paths += [base / d for d in dirs] + [base / f for f in files]
    return paths


def pruned(path: Path) -> bool:
    parts = path.parts
    if "site-packages" not in parts:
        return False
    inside = parts[parts.index("site-packages") + 1:]
    if not inside or inside[0].endswith(".dist-info"):
        return False
    name = "/" + "/".join(inside) + ("/" if path.is_dir() and not path.is_symlink() else "")
    if any(name.startswith(k) if k.endswith("/") else name == k for k in KEEP) \
            or any(k.startswith(name) for k in KEEP if name.endswith("/")):  # or above one
        return False
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in PRUNE)


def prune(paths: list[Path]) -> list[Path]:
    """Removes the pruned paths among `paths`; returns the rest."""
    for path in sorted(paths):  # a folder before what it holds
        if (path.exists() or path.is_symlink()) and pruned(path):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return [p for p in paths if p.exists() or p.is_symlink()]


def strip_debug_info(paths: list[Path]) -> None:
    if not shutil.which("strip"):
        return
    for path in paths:
        if path.is_symlink() or not path.is_file() or ".so" not in path.name:
            continue
        sections = subprocess.run(["readelf", "-S", "-d", str(path)], capture_output=True,
                                  text=True).stdout
        if ".debug_info" in sections and "RPATH" not in sections and "RUNPATH" not in sections:
            subprocess.run(["strip", "--strip-debug", str(path)], check=True)


def compile_module(module: str, sourceless: bool) -> str | None:
    """The module's .pyc: in __pycache__ beside it, or, sourceless, in its place."""
    # A module that does not compile (a template, Python 2 code in a data folder) is never
    # imported either: it stays as it is, as with pip's own compile step.
    pyc = py_compile.compile(
        module, cfile=module + "c" if sourceless else None, doraise=False, quiet=2,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    if pyc and sourceless:
        os.unlink(module)
    return pyc


def top_level(module: Path) -> Path | None:
    """The package folder (or single-file module) in site-packages that `module` belongs to."""
    parts = module.parts
    if "site-packages" not in parts:
        return None
    return Path(*parts[:parts.index("site-packages") + 2])


def compile_modules(paths: list[Path], sourceless: bool) -> list[Path]:
    """Compiles the modules among `paths`; returns the pycs."""
    modules = [p for p in paths if p.suffix == ".py" and p.is_file() and not p.is_symlink()]
    keep = set()
    if sourceless:
        for module in modules:
            package = top_level(module)
            if package not in keep and READS_SOURCE.search(module.read_bytes()):
                keep.add(package)
        if keep:
            print("slim.py: sources kept for", ", ".join(sorted(p.name for p in keep if p)))
    flags = [sourceless and top_level(m) not in keep for m in modules]
    with ProcessPoolExecutor() as pool:
        pycs = pool.map(compile_module, map(str, modules), flags, chunksize=64)
        return [Path(pyc) for pyc in pycs if pyc]


def link_into(paths: list[Path], into: Path) -> None:
    for path in sorted(paths):
        target = into / path.relative_to("/")
        if path.is_dir() and not path.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copystat(path, target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            target.symlink_to(os.readlink(path))
        else:
            try:
                os.link(path, target)
            except OSError:  # another filesystem
                shutil.copy2(path, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("--snapshot", type=Path, help="write the paths VENV holds to this file")
    parser.add_argument("--since", type=Path, help="work on the paths not in this snapshot")
    parser.add_argument("--into", type=Path, help="link the new paths into this folder")
    parser.add_argument("--sourceless", action="store_true",
                        help="replace each module with its .pyc")
    args = parser.parse_args(argv)
    venv = args.venv.resolve()
    if args.snapshot:
        args.snapshot.write_text("".join(f"{p}\n" for p in walk(venv)))
        return 0
    before = set(args.since.read_text().splitlines()) if args.since else set()
    new = [p for p in walk(venv) if str(p) not in before]
    new = prune(new)
    strip_debug_info(new)
    new += [c for c in compile_modules(new, args.sourceless) if str(c) not in before]
    new += [c.parent for c in new if c.parent.name == "__pycache__" and str(c.parent) not in before]
    new = [p for p in dict.fromkeys(new) if p.exists() or p.is_symlink()]
    cuda = sorted(str(p) for p in new if CUDA_LIBRARY.match(p.name))
    if cuda:
        print("CUDA libraries in a CPU image:", *cuda, sep="\n  ", file=sys.stderr)
        return 1
    if args.into:
        args.into.mkdir(parents=True, exist_ok=True)  # COPY needs it, even empty
        link_into(new, args.into)
    return 0


if __name__ == "__main__":
    sys.exit(main())
