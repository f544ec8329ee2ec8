"""Entry point of one phase in a fresh interpreter: ``python -m bench.harness.phase NAME PARAMS OUT``.

NAME is ``<experiment>.<phase>``, e.g. ``b.overload`` runs ``bench.experiments.exp_b.phase_overload``.
Settings are read once per process, so each phase gets its own interpreter.
"""
from __future__ import annotations

import importlib
import json
import sys


def phase_function(name: str):
    experiment, phase = name.split(".", 1)
    return getattr(importlib.import_module(f"bench.experiments.exp_{experiment}"), f"phase_{phase}")


def main() -> None:
    name, params, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    result = phase_function(name)(params)
    with open(out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
