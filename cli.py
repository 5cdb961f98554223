"""bgrpo-ser command line: thin wrappers over the library functions in the packages.

Stages: `manifest` (data_manifests) -> `extract` / `info` / `merge` (pipeline) ->
`train` / `ablate` / `predict` (trainer); `demo` runs all of them on a generated corpus.
"""
from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


# --- manifest (data_manifests) -------------------------------------------------------------


# --- extract / info / merge (pipeline) -----------------------------------------------------


# --- train / ablate / predict (trainer) ----------------------------------------------------


# --- demo ----------------------------------------------------------------------------------


if __name__ == "__main__":
    app()
