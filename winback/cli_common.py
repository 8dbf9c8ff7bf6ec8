"""What every CLI command shares: one-line errors with exit code 2, date parsing, progress bars."""

from __future__ import annotations

import functools
import sys
import warnings
from datetime import date
from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from features.errors import DataError, DataWarning

err_console = Console(stderr=True)
console = Console()


def fail(message: str) -> None:
    """Print one clear line on stderr and exit with code 2 (bad input)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def handle_errors(func):
    """Turn contract errors into one line + exit 2; never a traceback for bad input."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, DataWarning):
                err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        try:
            return func(*args, **kwargs)
        except DataError as exc:
            fail(str(exc))
        except FileNotFoundError as exc:
            fail(f"file not found: {exc.filename or exc}")
        finally:
            warnings.showwarning = shown

    return wrapper


def flag(names: str, help: str, default: bool = False):
    """A boolean option typed as a bare flag (`--mkdir`), shown in help without a `<bool>` value."""
    return typer.Option(default, *names.split(), help=help, metavar="")


MKDIR_HELP = "Create the output's folder if it does not exist."
COMPILED_TREES_ENV = "WINBACK_COMPILED_TREES"


def compiled_trees_option():
    """`--compiled-trees/--no-compiled-trees` for the batch commands; default off, or WINBACK_COMPILED_TREES."""
    return typer.Option(False, "--compiled-trees/--no-compiled-trees", envvar=COMPILED_TREES_ENV,
                        help="Score large batches with the boosters compiled by lleaves (same predictions within "
                             "1e-9, faster; compiled once per model and cached; needs the `fast` extra). Default "
                             f"off, or ${COMPILED_TREES_ENV}=1. pandas engine only.", show_default=False)


def start_compiled_trees(runtime) -> None:
    """Switch `runtime` to compiled trees (DataError, exit 2, when lleaves is missing); says what compiling cost."""
    from serving.runtime import compiled

    compiled.require()
    before = dict(compiled.stats)
    runtime.compile_trees()
    done = compiled.stats["compiles"] - before["compiles"]
    if done:
        seconds = compiled.stats["compile_seconds"] - before["compile_seconds"]
        err_console.print(f"compiled {done} booster(s) with lleaves in {seconds:.1f} s, cached in "
                          f"{compiled.cache_dir()}", highlight=False, soft_wrap=True)


def check_output(path: Path | None, option: str, mkdir: bool) -> None:
    """An output's folder must exist (a typo must not create folders anywhere), unless `--mkdir`."""
    if path is None:
        return
    parent = Path(path).expanduser().absolute().parent
    if parent.is_dir():
        return
    if not mkdir:
        raise DataError(f"{option}: folder {parent} does not exist (create it, or pass --mkdir)")
    parent.mkdir(parents=True, exist_ok=True)


def parse_date(value: str, option: str) -> pd.Timestamp:
    """A YYYY-MM-DD option value as a Timestamp; DataError naming the option otherwise."""
    try:
        return pd.Timestamp(date.fromisoformat(value))
    except (TypeError, ValueError):
        raise DataError(f"{option}: {value!r} is not a date in YYYY-MM-DD form") from None


def progress() -> Progress:
    """A rich progress bar on stderr (quiet when stderr is not a terminal)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not sys.stderr.isatty(),
    )


def print_registered(registered: dict | None) -> None:
    """One line on where a trained model went in the registry, and why (champion or challenger)."""
    if registered:
        console.print(f"registered {registered['name']} version {registered['version']} as "
                      f"models:/{registered['name']}@{registered['alias']}: {registered['reason']}", highlight=False)
