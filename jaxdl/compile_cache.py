"""JAX's persistent compilation cache for the command-line scripts: compile once per machine.

Each process otherwise pays XLA's compilation again (~3-5 s for a conv model's train step and
evaluation on the 2-core CPU). The scripts (`train_flax.py`, `framework_flax.py`,
`reproduce_report.py`) call `enable()` when run as programs; library calls and the tests do
not, and `scripts/benchmark.py` does not either, so its compile times stay cold compiles.

    JAXDL_COMPILE_CACHE=off       no cache
    JAXDL_COMPILE_CACHE=/a/path   this directory instead of the default
    JAX_COMPILATION_CACHE_DIR=... JAX's own setting, used as it is

The default directory is `$XDG_CACHE_HOME/jaxdl/xla-<host>` (`~/.cache/...`): entries are
native code for this CPU and this jaxlib, so the tag keeps machines (a shared home directory)
and versions apart. The cache is only an optimisation: a directory that cannot be created
leaves it off with a one-line warning.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

import jax
import jaxlib

ENV = "JAXDL_COMPILE_CACHE"
OFF = ("0", "off", "false", "no")
ON = ("", "1", "on", "true", "yes")  # the default directory


def host_tag() -> str:
    """12 hex digits naming this CPU (model and instruction-set flags) and jax/jaxlib."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                cpu += "|" + line.split(":", 1)[1].strip()
    except OSError:
        pass
    text = f"{platform.system()}|{cpu}|{jax.__version__}|{jaxlib.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxdl" / f"xla-{host_tag()}"


def enable(directory: str | Path | None = None) -> Path | None:
    """Turns the persistent cache on (every compiled program, however small); returns its
    directory, or None when it is off. Call it before the first compilation."""
    own = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if own:
        return Path(own)
    setting = os.environ.get(ENV, "").strip()
    if setting.lower() in OFF:
        return None
    path = Path(directory or (default_dir() if setting.lower() in ON else setting)).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"jaxdl: compilation cache off ({path}: {err.strerror})", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path
