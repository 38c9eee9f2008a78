"""The third-party packages of an image: listed from the local packages, resolved, split in two.

    python3 docker/requirements.py FOLDER[extras]... [--framework DIST[/REPLACES]]
        [--framework-version V]
    python docker/requirements.py --lock CORE_FOLDER... --image FOLDER [--framework ...]
        [--framework-version V] [--framework-index URL] [--without DIST,...]

The first form prints the dependencies of each folder's pyproject.toml (with the extras asked for
in brackets), leaving out the local packages themselves: those are installed from source with
--no-deps afterwards, so only this list decides what else lands in the image. The framework is
pinned to V; with DIST/REPLACES, a requirement on REPLACES becomes one on DIST (xgboost-cpu for
xgboost), keeping its version specifier and markers.

--lock downloads the framework's wheel (from --framework-index if it answers, else from pip's own
locations), resolves the requirements of the core folders and the image's folder together (pip
--dry-run --report, with pip's own configuration) and writes two pinned lists: core.txt, what the
core folders need, and runtime.txt, the rest. Every runtime image installs core.txt in a layer of
its own, which images whose resolutions agree share. Distributions in --without are left out with
everything only they need (TensorFlow's tensorboard: nothing that serves imports it). A CUDA
package anywhere in the resolution fails the build: these are CPU images.

The first form runs with the base image's Python alone; --lock runs with the build's pip venv,
whose pip provides `packaging`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        sys.exit("docker/requirements.py needs Python 3.11+ (tomllib) or tomli in the base image")

REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?"
    r"\s*(?P<spec>[^;]*?)\s*(?:;\s*(?P<marker>.*))?$"
)
FOLDER = re.compile(r"^(?P<path>[^\[]+)(?:\[(?P<extras>[^\]]*)\])?$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def split_extras(text: str | None) -> list[str]:
    return [e.strip() for e in (text or "").split(",") if e.strip()]


class Packages:
    def __init__(self, folders: list[str]):
        self.projects: dict[str, dict] = {}
        self.wanted: list[tuple[str, list[str]]] = []
        for folder in folders:
            match = FOLDER.match(folder)
            path = Path(match["path"]) / "pyproject.toml"
            project = tomllib.loads(path.read_text())["project"]
            name = normalize(project["name"])
            self.projects[name] = project
            self.wanted.append((name, split_extras(match["extras"])))

    def requirements(self) -> list[str]:
        """Third-party requirements of every wanted package, in order, without duplicates."""
        out: list[str] = []
        seen: set[tuple[str, str]] = set()

        def visit(name: str, extras: list[str]) -> None:
            for extra in [""] + extras:
                if (name, extra) in seen:
                    continue
                seen.add((name, extra))
                project = self.projects[name]
                if extra:
                    optional = project.get("optional-dependencies", {})
                    if extra not in optional:
                        sys.exit(f"{project['name']} has no extra {extra!r}")
                    deps = optional[extra]
                else:
                    deps = project.get("dependencies", [])
                for dep in deps:
                    match = REQUIREMENT.match(dep)
                    if not match:
                        sys.exit(f"cannot read requirement {dep!r} of {project['name']}")
                    dep_name = normalize(match["name"])
                    if dep_name in self.projects:
                        visit(dep_name, split_extras(match["extras"]))
                    elif dep not in out:
                        out.append(dep)

        for name, extras in self.wanted:
            visit(name, extras)
        return out


def apply_framework(requirements: list[str], framework: str, version: str) -> list[str]:
    dist, _, replaces = framework.partition("/")
    targets = {normalize(dist), normalize(replaces or dist)}
    out, found = [], False
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        if normalize(match["name"]) not in targets:
            out.append(requirement)
            continue
        found = True
        extras = f"[{match['extras']}]" if match["extras"] else ""
        specs = [s for s in (match["spec"], f"=={version}" if version else "") if s]
        marker = f"; {match['marker']}" if match["marker"] else ""
        out.append(f"{dist}{extras}{','.join(specs)}{marker}")
    if not found:  # the runtime does not name it (yet): install it all the same
        out.append(f"{dist}=={version}" if version else dist)
    return out


# ---- --lock ----------------------------------------------------------------------------------

PIP = ["/opt/pip/bin/pip", "--python", "/opt/venv/bin/python"]
FRAMEWORK_DIR = "framework"  # in the build's /src, mounted into the runtime stage
# GPU builds of frameworks and the CUDA libraries they pull; none belongs in a CPU image.
CUDA = re.compile(r"^(nvidia-|cuda-|cupy|jax-cuda|pytorch-triton|triton$)|-(gpu|cu\d+)$|cuda\d+")


def _packaging():
    try:
        from packaging.markers import Marker
        from packaging.requirements import Requirement
    except ModuleNotFoundError:  # the build's pip venv: pip's own copy
        from pip._vendor.packaging.markers import Marker
        from pip._vendor.packaging.requirements import Requirement
    return Marker, Requirement


def closure(roots: list[str], report: dict, without: set[str]) -> set[str]:
    """Names of the resolved distributions that `roots` need, by the report's metadata and
    markers, never entering a distribution in `without`."""
    _, Requirement = _packaging()
    env = report["environment"]
    metadata = {normalize(i["metadata"]["name"]): i["metadata"] for i in report["install"]}
    needed: set[str] = set()
    seen: set[tuple[str, str]] = set()

    def applies(requirement, extras) -> bool:
        marker = requirement.marker
        return marker is None or any(marker.evaluate({**env, "extra": e}) for e in extras)

    todo = [(Requirement(r), ("",)) for r in roots]
    while todo:
        requirement, extras = todo.pop()
        name = normalize(requirement.name)
        if name in without or not applies(requirement, extras):
            continue
        if name not in metadata:
            sys.exit(f"{name} is needed but pip did not resolve it")
        needed.add(name)
        for extra in ["", *sorted(requirement.extras)]:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            for dep in metadata[name].get("requires_dist", []):
                todo.append((Requirement(dep), ("",) if not extra else (extra,)))
    return needed


def split(report: dict, core: list[str], requirements: list[str],
          without: set[str]) -> tuple[list[str], list[str]]:
    """Pins of what `core` needs, and of the rest of what `requirements` need, by pip's report."""
    pins = {normalize(i["metadata"]["name"]): f"{i['metadata']['name']}=={i['metadata']['version']}"
            for i in report["install"]}
    cuda = sorted(pins[n] for n in pins if CUDA.search(n))
    if cuda:
        sys.exit("CUDA packages in a CPU image: " + ", ".join(cuda) + "\n(choose the "
                 "framework's CPU build: a +cpu FRAMEWORK_VERSION or FRAMEWORK_INDEX_URL)")
    core_names = closure(core, report, without)
    image_names = closure(requirements, report, without)
    return ([pins[n] for n in sorted(core_names)],
            [pins[n] for n in sorted(image_names - core_names)])


def lock(core: list[str], image: list[str], framework: str, version: str, index: str,
         without: set[str]) -> tuple[list[str], list[str]]:
    requirements = Packages(core + image).requirements()
    Path(FRAMEWORK_DIR).mkdir(exist_ok=True)  # the runtime stage mounts it, even empty
    find_links = []
    if framework:
        requirements = apply_framework(requirements, framework, version)
        # The framework's wheel first, alone, from its index where it has one: an index that
        # does not answer (a mirror-only network) costs one try here, not one per package in
        # the resolution. The resolution and the runtime stage then take it from FRAMEWORK_DIR.
        dist = framework.split("/")[0]
        command = [*PIP, "download", "--no-deps", "--quiet", "--dest", FRAMEWORK_DIR,
                   f"{dist}=={version}" if version else dist]
        if index:
            command += ["--extra-index-url", index, "--retries", "1"]
        subprocess.run(command, check=True)
        find_links = ["--find-links", FRAMEWORK_DIR]
    Path("image.in").write_text("\n".join(requirements) + "\n")
    subprocess.run([*PIP, "install", "--dry-run", "--ignore-installed", "--quiet", *find_links,
                    "--report", "report.json", "-r", "image.in"], check=True)
    report = json.loads(Path("report.json").read_text())
    return split(report, Packages(core).requirements(), requirements, without)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="package folders, optionally with [extras]")
    parser.add_argument("--framework", default="", help="DIST or DIST/REPLACES")
    parser.add_argument("--framework-version", default="", help="pin the framework to this")
    parser.add_argument("--lock", action="store_true",
                        help="resolve; the folders are the core, write core.txt and runtime.txt")
    parser.add_argument("--image", nargs="*", default=[], help="with --lock: the image's folders")
    parser.add_argument("--framework-index", default="", help="with --lock: an extra index")
    parser.add_argument("--without", default="", help="with --lock: DIST,... to leave out")
    args = parser.parse_args(argv)
    if args.lock:
        core, runtime = lock(args.folders, args.image, args.framework, args.framework_version,
                             args.framework_index, set(map(normalize, split_extras(args.without))))
        if args.framework:  # where the runtime stage finds the framework's wheel
            runtime.insert(0, f"--find-links /{FRAMEWORK_DIR}")
        for name, pins in (("core.txt", core), ("runtime.txt", runtime)):
            Path(name).write_text("".join(f"{pin}\n" for pin in pins))
            print(f"# {name}", *pins, sep="\n")
        return
    requirements = Packages(args.folders).requirements()
    if args.framework:
        requirements = apply_framework(requirements, args.framework, args.framework_version)
    print("\n".join(requirements))


if __name__ == "__main__":
    main()
