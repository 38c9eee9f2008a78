"""Print the third-party requirements of local packages, for an image's dependency layer.

    python3 docker/requirements.py [--framework DIST[/REPLACES] --framework-version V] \
        storage[s3,gcs] runtimes/modelserver runtimes/sklearn

Reads each folder's pyproject.toml and prints its dependencies (with the extras asked for in
brackets), leaving out the local packages themselves: those are installed from source with
--no-deps afterwards, so only this list decides what else lands in the image. The framework is
pinned to V; with DIST/REPLACES, a requirement on REPLACES becomes one on DIST (xgboost-cpu for
xgboost), keeping its version specifier and markers.

Runs in the build stage with the base image's own Python and nothing else installed.
"""

from __future__ import annotations

import argparse
import re
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="package folders, optionally with [extras]")
    parser.add_argument("--framework", default="", help="DIST or DIST/REPLACES")
    parser.add_argument("--framework-version", default="", help="pin the framework to this")
    args = parser.parse_args(argv)
    requirements = Packages(args.folders).requirements()
    if args.framework:
        requirements = apply_framework(requirements, args.framework, args.framework_version)
    print("\n".join(requirements))


if __name__ == "__main__":
    main()
