"""After the image tests: each image's size and how long each runtime took to be ready."""

from __future__ import annotations

import subprocess
import sys


def pytest_terminal_summary(terminalreporter):
    test_images = sys.modules.get("test_images")
    if test_images is None or not test_images._built:
        return
    terminalreporter.section("images")
    for name, ref in test_images._built.items():
        size = subprocess.run([test_images.TOOL, "image", "inspect", "-f", "{{.Size}}", ref],
                              capture_output=True, text=True).stdout.strip()
        ready = test_images.READY_SECONDS.get(name)
        after = f"   ready {ready:.1f} s after `{test_images.TOOL} run` (KServe pod)" if ready else ""
        terminalreporter.write_line(f"{name:22s} {int(size or 0) / 1e6:7.0f} MB{after}")
