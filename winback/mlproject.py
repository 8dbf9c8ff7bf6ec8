"""Entry of the MLproject steps: `python -m winback.mlproject train churn --name=value …`.

MLflow passes every declared parameter; an empty value (`--name=`) means "not given", so the
option is dropped and the command's own default applies.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from winback.cli import app

    args = sys.argv[1:] if argv is None else argv
    app([arg for arg in args if not (arg.startswith("--") and arg.endswith("="))])


if __name__ == "__main__":
    main()
