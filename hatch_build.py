"""Build hook: compiles the native instance tracker (sandbox_magic/engine/_live.c).

The compiled tracker makes creating instances of sandbox classes nearly as
cheap as of plain classes.  When no C compiler is available the build goes
on without it and the package uses its pure-Python tracker (with a warning).
With ``SANDBOX_MAGIC_PURE_WHEEL=1`` nothing is compiled: the wheel is
``py3-none-any`` and installs on any platform and Python the package supports.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
import warnings
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("sandbox_magic") / "engine" / "_live.c"


def compile_tracker(root: Path) -> Path:
    """Compile the tracker beside its source; returns the extension's path."""
    src = root / SOURCE
    out = src.with_name("_live" + sysconfig.get_config_var("EXT_SUFFIX"))
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    cmd = [*cc, "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror",
           "-Wno-missing-field-initializers", "-Wno-unused-parameter",
           "-I", sysconfig.get_paths()["include"], str(src), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


class TrackerBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("SANDBOX_MAGIC_PURE_WHEEL") == "1":
            return
        root = Path(self.root)
        try:
            out = compile_tracker(root)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            warnings.warn("sandbox-magic: the native instance tracker was not compiled "
                          f"(the pure-Python one will be used): {detail}", stacklevel=1)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(out)] = str(out.relative_to(root))
