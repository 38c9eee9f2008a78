"""The core starts without pandas: the tabular codec imports it only to build a DataFrame."""

import subprocess
import sys


def test_the_core_and_the_tabular_codec_do_not_import_pandas():
    code = ("import sys, modelserver.server, modelserver.runtime.tabular, "
            "modelserver.protocol.content_types; print('pandas' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
