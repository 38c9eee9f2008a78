"""Hand the host's pip configuration to an image build: where packages come from, whom to trust.

    python3 docker/pipconf.py TOOL FOLDER

Asks the host's pip for its settings (`pip config list`: its config files and PIP_* variables),
writes FOLDER/pip.conf with those that name package locations and trust (index-url,
extra-index-url, find-links, trusted-host, cert, timeout, retries), and prints the build options
that pass them on:

- pip.conf and the CA bundle (pip's `cert`, else the system's) as build secrets, which the
  Dockerfiles mount where pip reads them.
  Secrets, not build args: an index URL may carry a token, and secrets stay out of the image and
  its history.
- for podman, every local folder those settings name (a find-links folder, a file:// index with
  the folder above it, where PEP 503 trees keep their files), mounted read-only at the same path,
  so the settings mean the same inside the build. `docker build` cannot mount host folders: it
  builds without them, and says so.

Without pip settings (and no CA bundle) it prints nothing, and the build uses PyPI.
"""

from __future__ import annotations

import ast
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

# Options that decide where packages come from and how they are fetched.
LOCATIONS = ("index-url", "extra-index-url", "find-links")
OTHERS = ("trusted-host", "timeout", "default-timeout", "retries")
CERT = "/run/secrets/pip-cert"  # where the Dockerfiles mount the CA bundle
LINE = re.compile(r"^(?P<section>[^.]+)\.(?P<key>[a-z-]+)=(?P<value>.*)$")


def pip_settings(python: str = sys.executable) -> dict[str, str]:
    """pip's own view, most specific first: PIP_* variables, [install], then [global]."""
    result = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                            text=True)
    found: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        match = LINE.match(line)
        if match:
            found.setdefault(match["section"], {})[match["key"]] = ast.literal_eval(match["value"])
    settings: dict[str, str] = {}
    for section in (":env:", "install", "global"):
        for key, value in found.get(section, {}).items():
            settings.setdefault(key, value)
    return settings


def ca_bundle(settings: dict[str, str]) -> Path | None:
    """pip's `cert`, else the system's bundle (where a company adds its own CA), which pip 24.2
    and later trust on the host but the build's older pip would not look at."""
    paths = ssl.get_default_verify_paths()
    for candidate in (settings.get("cert"), os.environ.get("SSL_CERT_FILE"), paths.cafile,
                      paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def local_folder(location: str, index: bool) -> Path | None:
    """The host folder a location needs, or None for a remote one."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return None
    path = Path(unquote(parsed.path) if parsed.scheme else location).resolve()
    if index or path.is_file():  # an index's files sit beside its simple/ tree
        path = path.parent
    return path if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    tool, folder = (argv if argv is not None else sys.argv[1:])[:2]
    settings = pip_settings()
    conf, options, mounts = [], [], []
    for key in LOCATIONS:
        kept = []
        for location in settings.get(key, "").split():
            path = local_folder(location, index=key != "find-links")
            if path is None:
                if urlparse(location).scheme in ("", "file"):
                    continue  # pip skips a missing local location too
                kept.append(location)
            elif tool.endswith("podman"):
                local = urlparse(location).scheme == ""
                kept.append(str(Path(location).resolve()) if local else location)
                mounts.append(path)
            else:
                print(f"pipconf: {tool} build cannot mount {path}; building without "
                      f"{location} (podman mounts it)", file=sys.stderr)
        if kept:
            conf.append(f"{key} = {' '.join(kept)}")
    conf += [f"{key} = {settings[key]}" for key in OTHERS if key in settings]
    cert = ca_bundle(settings)
    if cert:
        conf.append(f"cert = {CERT}")
        options.append(f"--secret=id=pip-cert,src={cert}")
    if not conf:
        return 0
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "pip.conf"
    path.unlink(missing_ok=True)
    # Only for us: an index URL may hold a token.
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write("[global]\n" + "\n".join(conf) + "\n")
    options.append(f"--secret=id=pip-conf,src={(out / 'pip.conf').resolve()}")
    options += [f"--volume={p}:{p}:ro" for p in dict.fromkeys(mounts)]
    print(" ".join(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
