"""Compiled trees for batch scoring: a LightGBM model compiled to machine code by `lleaves` (optional).

`lleaves` (the `fast` extra) turns a LightGBM model file into native code through LLVM; on large batches
it predicts several times faster than `Booster.predict`, with the same transformed output (sigmoid for a
binary model) up to floating-point summation order (well under 1e-9). It has no TreeSHAP, so
contributions stay on LightGBM; it is used only for large batches (see `serving.runtime.boosters`).

Compiling takes seconds per booster, so the object code is cached on disk, one file per model, keyed by a
hash of the model text, the lleaves and llvmlite versions, the compile options and the host CPU (the code
is built for it): `$WINBACK_CACHE_DIR/lleaves/`, else `$XDG_CACHE_HOME/winback/lleaves/`, else
`~/.cache/winback/lleaves/`. A file is written to a temporary name and renamed, so a reader never sees a
half-written one and two processes compiling the same model at once both end with a whole file.

lleaves is imported only here and only when compiled trees are asked for: the online service never loads it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from features.errors import DataError

CACHE_ENV = "WINBACK_CACHE_DIR"
INSTALL_HINT = "pip install 'winback[fast]'"
# what the cached object code depends on besides the model, versions and CPU: bump when compile() changes
COMPILE_OPTIONS = "lleaves-compile:v1:fp64:transformed"

stats = {"compiles": 0, "cache_loads": 0, "compile_seconds": 0.0}  # per process; tests and benchmarks read it


def available() -> bool:
    try:
        import lleaves  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    """DataError (one line for the CLI) when lleaves is not installed."""
    if not available():
        raise DataError(f"compiled trees need lleaves, which is not installed: {INSTALL_HINT}")


def cache_dir() -> Path:
    """Where compiled models are kept (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "lleaves"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "winback" / "lleaves"


def _host() -> str:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot tell on some hosts; lleaves then compiles without features too
        features = ""
    return f"{llvm.get_process_triple()}|{llvm.get_host_cpu_name()}|{features}"


def versions() -> str:
    """"lleaves version/llvmlite version"."""
    from importlib.metadata import version

    return f"{version('lleaves')}/{version('llvmlite')}"


def cache_key(model_text: str) -> str:
    """sha256 of the model text, lleaves and llvmlite versions, compile options and host CPU."""
    digest = hashlib.sha256()
    for part in (model_text, versions(), COMPILE_OPTIONS, _host()):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def cache_path(model_text: str) -> Path:
    return cache_dir() / f"{cache_key(model_text)}.o"


def compile_model(model_text: str):
    """A compiled `lleaves.Model` of the LightGBM model text, from the disk cache when it is there."""
    require()
    import lleaves

    target = cache_path(model_text)
    target.parent.mkdir(parents=True, exist_ok=True)
    # lleaves reads the model from a file (its header and categories); the object code comes from the cache
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=target.parent, delete=False) as model_file:
        model_file.write(model_text)
    try:
        model = lleaves.Model(model_file=model_file.name)
        if target.is_file():
            model.compile(cache=str(target))
            stats["cache_loads"] += 1
            return model
        partial = target.with_name(f".{target.stem}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        start = time.perf_counter()
        try:
            model.compile(cache=str(partial))  # lleaves writes the object code here once compiled
            os.replace(partial, target)
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise DataError(f"compiled trees: lleaves cannot compile this model ({exc})".splitlines()[0]) from exc
        stats["compiles"] += 1
        stats["compile_seconds"] += time.perf_counter() - start
        return model
    finally:
        os.unlink(model_file.name)


def batch_threads() -> int:
    """Threads for a compiled batch: what LightGBM's OpenMP default would use (OMP_NUM_THREADS when set,
    else the cores this process may run on)."""
    try:
        given = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        given = 0
    if given > 0:
        return given
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
