"""The ``ehrscale`` command: one subcommand per workflow stage.

Each stage module exposes ``add_arguments(parser)`` and ``run(args) -> int | None`` (or,
for a second command of one module, ``add_<suffix>_arguments`` and ``run_<suffix>``).
Modules are imported only when their subcommand runs, so ``ehrscale extract`` never
pays for importing torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.memory import MemoryGuard, budget_mb_from_env

# subcommand -> (module, one-line help[, function suffix])
COMMANDS: dict[str, tuple[str, ...]] = {
    "synth": ("ehrscale.synth", "generate a synthetic cohort in MIMIC-IV's raw CSV layout"),
    "extract": ("ehrscale.extract.raw", "read raw MIMIC-IV CSVs into a MEDS dataset with DuckDB"),
    "meds-import": ("ehrscale.extract.meds_import", "validate any MEDS dataset and bring it into ehrscale's layout"),
    "tokenize": ("ehrscale.tokens.encode", "turn MEDS timelines into token streams"),
    "labels": ("ehrscale.labels.make", "write clinical task labels in the MEDS label schema"),
    "plan": ("ehrscale.plan.command", "print the IsoFLOPs grid, or the compute-optimal plan for a budget"),
    "tune": ("ehrscale.train.tune", "every size's peak learning rate, from one rule fitted to the whole LR sweep"),
    "stable": ("ehrscale.train.command", "train one segment of a size's WSD stable phase", "stable"),
    "train": ("ehrscale.train.command", "train one IsoFLOPs cell (with --branch: its WSD cooldown)"),
    "embed": ("ehrscale.probe.embed", "embed every task's labelled examples with one trained cell"),
    "probe": ("ehrscale.probe.linear", "fit the linear probe of one cell's embeddings on every task"),
    "baseline": ("ehrscale.probe.baseline", "fit the no-model baseline (bag of codes) of one task"),
    "fit": ("ehrscale.fit.command", "fit the loss laws to the trained cells"),
    "fit-utility": ("ehrscale.fit.command", "fit the utility laws to the cells' probes", "utility"),
    "summary": ("ehrscale.report.summary", "join the fits' sections into summary.md"),
}


def _usage() -> str:
    lines = ["usage: ehrscale COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<11} {entry[1]}" for name, entry in COMMANDS.items()]
    lines += ["", "Run 'ehrscale COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if argv[0] == "--version":
        from ehrscale import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ehrscale: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_, *suffix = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"ehrscale {name}", description=help_)
    add_arguments = getattr(module, f"add_{suffix[0]}_arguments" if suffix else "add_arguments")
    run = getattr(module, f"run_{suffix[0]}" if suffix else "run")
    add_arguments(parser)
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    guard = None
    try:
        budget = budget_mb_from_env()
        with MemoryGuard(budget, f"ehrscale {name}") if budget else contextlib.nullcontext() as guard:
            return int(run(args) or 0)
    except BrokenPipeError:  # e.g. `ehrscale plan ... | head`
        sys.stderr.close()
        return 0
    except BaseException as err:
        if guard is not None and guard.exceeded_mb is not None:  # whatever surfaced, memory was the cause
            print(f"ehrscale {name}: error: {guard.message()}", file=sys.stderr)
            return 3
        if isinstance(err, EhrscaleError):
            print(f"ehrscale {name}: error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
