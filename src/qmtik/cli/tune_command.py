"""qmtik tune CONFIG: the budget-aware search (tune.py), its front and best config (tune_front.py).

Beside the config it writes CONFIG's name with .tune.db (the study, unless --storage), .best.toml
(the best config within the budget), .front.png (--plot), and with --export the winner's
.best.ckpt.npz, .best.qmt and .best.h.
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import tune_front, workflow
from ..config import load_config, parse_override
from ..config_deploy import parse_size
from ..errors import ConfigError, UsageError
from ..export_c import prefix_from_name
from ..tune import search
from ..tune_space import Budget
from .console import distinct, output_path, plot_path, say

UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_timeout(text: str) -> float:
    """'90', '90s', '30m', '1h', '1.5h' to seconds; anything else refused as usage."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"--timeout {text!r}: expected a duration such as 3600, 90s, 30m or 1h")
    return float(match.group(1)) * UNITS[match.group(2) or ""]


def beside(config_path, suffix: str) -> Path:
    """digits.toml -> digits{suffix}, beside the config."""
    path = Path(config_path)
    return path.with_name(path.name.split(".")[0] + suffix)


def cmd_tune(args) -> int:
    """qmtik tune CONFIG --trials N: every output checked first, then the search, its front and best config."""
    if args.trials < 1:
        raise UsageError(f"--trials {args.trials}: expected an integer >= 1")
    timeout = parse_timeout(args.timeout) if args.timeout else None
    sizes = {}
    for key in ("max_flash", "max_ram"):
        try:
            given = getattr(args, key)
            sizes[key] = None if given is None else parse_size(given, "--" + key.replace("_", "-"))
        except ConfigError as exc:
            raise UsageError(str(exc).replace("config key ", "")) from None
    overrides = dict(parse_override(text) for text in args.set)
    config = load_config(args.config, overrides)
    budget = Budget.of(config, args.target, sizes["max_flash"], sizes["max_ram"])
    study = args.study or Path(args.config).name.split(".")[0]
    study_file = None
    if args.storage:
        url = args.storage
    else:
        study_file = output_path(beside(args.config, ".tune.db"))
        if study_file.exists() and not args.resume:
            raise UsageError(
                f"study file {study_file} exists; pass --resume to go on with its search, or remove it to start over"
            )
        if args.resume and not study_file.exists():
            raise UsageError(f"--resume: there is no study file {study_file} to go on with")
        url = f"sqlite:///{study_file.resolve()}"
    best_path = output_path(args.out if args.out else beside(args.config, ".best.toml"))
    picture = plot_path(args.plot, beside(args.config, ".front.png"))
    exported = [output_path(best_path.with_suffix(s)) for s in (".ckpt.npz", ".qmt", ".h")] if args.export else []
    distinct(
        [("the config", args.config), *config.data.paths()],
        [("the study", study_file), ("the best config", best_path), ("--plot", picture)]
        + [("--export", path) for path in exported],
    )
    run = search(
        config,
        args.trials,
        url,
        study,
        budget,
        timeout=timeout,
        threads=args.threads,
        log=None if args.quiet else say,
        announce=lambda line: say(f"{line}, budget {budget_line(budget)}"),
    )
    records = [tune_front.record(trial) for trial in run.trials]
    count = tune_front.counts(records)
    drawn = run.rejected + run.trained
    say(
        f"this worker: {run.trained} trials trained, {run.rejected} candidates rejected before training"
        + (f" ({100 * run.rejected / drawn:.0f}%)" if drawn else "")
        + f", {run.seconds:.1f} s; the study: {count['complete']} complete, {count['pruned']} pruned, "
        f"{count['rejected']} rejected, {count['failed']} failed"
    )
    edge = tune_front.front(records)
    if edge:
        say("Pareto front (int8 validation accuracy, flash, RAM):\n" + tune_front.table(edge))
    chosen = tune_front.best(records)
    if chosen is None:
        say("no trial has completed yet: no best config to write")
        return 1
    tune_front.write_best(best_path, chosen, study, budget.to_dict())
    say(f"best: trial {chosen['number']}, {chosen['network']}, {100 * chosen['accuracy']:.2f}%; wrote {best_path}")
    if picture:
        tune_front.plot_front(records, picture, budget)
        say(f"wrote {picture}")
    if exported:
        export(best_path, exported, args.quiet)
    return 0


def budget_line(budget: Budget) -> str:
    flash = f"{budget.max_flash:,} B" if budget.max_flash else "any"
    ram = f"{budget.max_ram:,} B" if budget.max_ram else "any"
    return f"flash {flash}, RAM {ram} on {budget.target}"


def export(best_path: Path, paths: list, quiet: bool) -> None:
    """--export: the best config trained fully (its [training], all the data), its .qmt and header."""
    from ..progress import Reporter
    from .console import Console

    checkpoint, qmt, header = paths
    config = load_config(best_path)
    run = workflow.train(config, checkpoint, reporter=Reporter(Console.stream(), quiet=quiet), qmt=qmt)
    from .commands import figures_line

    if run.test is not None:
        say("the winner, trained fully: test " + figures_line(run.test, config.task))
    size = workflow.write_header(run.network.quantize(), header, prefix_from_name(header.name))
    say(f"wrote {checkpoint}, {qmt}, {header} ({size:,} bytes)")
