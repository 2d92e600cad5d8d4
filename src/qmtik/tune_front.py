"""What a search found, read from its trial records alone: the Pareto front of int8 validation
accuracy against flash and RAM, a table of it, a plot (the [plot] extra), and the best config
within the budget written as TOML, ready for `qmtik train`.

A record is plain data (`record(trial)`), so the front can be recomputed from any copy of the
study's trials, and a test can hold it equal to what they say.
"""

from __future__ import annotations

from .config import Config
from .config_docs import toml_value
from .output_files import write_atomic


def record(trial) -> dict:
    """One trial as plain data: number, state, accuracy (complete only), flash, RAM, network,
    config, and why it was rejected or stopped."""
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": "REJECTED" if "rejected" in attrs else trial.state.name,
        "accuracy": trial.value if trial.state.name == "COMPLETE" else None,
        "flash": attrs.get("flash"),
        "ram": attrs.get("ram"),
        "network": attrs.get("network", ""),
        "params": dict(trial.params),
        "config": attrs.get("config"),
        "note": attrs.get("rejected") or attrs.get("error") or "",
    }


def scored(records) -> list:
    """The complete trials (those with an accuracy), by trial number."""
    return sorted((r for r in records if r["accuracy"] is not None), key=lambda r: r["number"])


def dominates(a: dict, b: dict) -> bool:
    """a is at least as good as b in accuracy, flash and RAM, and better in one."""
    at_least = a["accuracy"] >= b["accuracy"] and a["flash"] <= b["flash"] and a["ram"] <= b["ram"]
    better = a["accuracy"] > b["accuracy"] or a["flash"] < b["flash"] or a["ram"] < b["ram"]
    return at_least and better


def front(records) -> list:
    """The complete trials no other complete trial dominates, smallest flash first (equal
    trials: the first of them)."""
    done = scored(records)
    kept, seen = [], set()
    for r in done:
        key = (r["accuracy"], r["flash"], r["ram"])
        if key in seen or any(dominates(other, r) for other in done):
            continue
        seen.add(key)
        kept.append(r)
    return sorted(kept, key=lambda r: (r["flash"], r["ram"], -r["accuracy"], r["number"]))


def best(records) -> dict | None:
    """The most accurate complete trial (every trained one is within the budget); ties: the
    smaller flash, then RAM, then the earlier trial."""
    done = scored(records)
    return min(done, key=lambda r: (-r["accuracy"], r["flash"], r["ram"], r["number"])) if done else None


def counts(records) -> dict:
    """How many trials ended each way: complete, pruned (trained, stopped), rejected, failed, other."""
    out = {"complete": 0, "pruned": 0, "rejected": 0, "failed": 0, "running": 0}
    names = {"COMPLETE": "complete", "PRUNED": "pruned", "REJECTED": "rejected", "FAIL": "failed"}
    for r in records:
        out[names.get(r["state"], "running")] += 1
    return out


def table(rows) -> str:
    """The front (or any records) as a text table."""
    lines = [f"{'trial':>5}  {'int8 val':>8}  {'flash B':>8}  {'RAM B':>7}  network"]
    for r in rows:
        lines.append(f"{r['number']:>5}  {100 * r['accuracy']:7.2f}%  {r['flash']:>8,}  {r['ram']:>7,}  {r['network']}")
    return "\n".join(lines)


def best_toml(chosen: dict, study: str, deploy: dict | None = None) -> str:
    """The winning trial's config as TOML (every key but [tune]; [deploy] the search's budget,
    which `qmtik train` checks again), its origin in a comment."""
    data = Config.from_dict(chosen["config"]).to_dict()
    data.pop("tune", None)
    data["deploy"].update(deploy or {})
    lines = [
        f"# The best network of study {study!r}: trial {chosen['number']}, int8 validation accuracy "
        f"{100 * chosen['accuracy']:.2f}% (trial training), flash {chosen['flash']:,} B, RAM {chosen['ram']:,} B.",
        "# Train it fully with: qmtik train THIS_FILE",
        f"task = {toml_value(data.pop('task'))}",
    ]
    for section, values in data.items():
        layers = values.pop("layers", None) if section == "network" else None
        lines += ["", f"[{section}]"] + [f"{key} = {toml_value(value)}" for key, value in values.items()]
        for layer in layers or []:
            lines += ["", "[[network.layers]]"] + [f"{key} = {toml_value(value)}" for key, value in layer.items()]
    return "\n".join(lines) + "\n"


def write_best(path, chosen: dict, study: str, deploy: dict | None = None) -> None:
    """best_toml at path, atomically."""
    text = best_toml(chosen, study, deploy)
    write_atomic(path, lambda f: f.write(text.encode()))


def plot_front(records, path, budget=None) -> None:
    """Every complete trial's accuracy against flash (RAM as the colour), the front joined by a
    line, the flash budget marked: an image at path (needs matplotlib, the [plot] extra)."""
    from .plots import _figure, _save

    done, edge = scored(records), front(records)
    fig, fmt = _figure(path, (7, 4.5))
    ax = fig.subplots()
    if done:
        points = ax.scatter(
            [r["flash"] for r in done], [100 * r["accuracy"] for r in done], c=[r["ram"] for r in done], s=18
        )
        fig.colorbar(points, ax=ax, label="RAM (bytes)")
        ax.plot([r["flash"] for r in edge], [100 * r["accuracy"] for r in edge], "k-", lw=1, label="Pareto front")
    if budget is not None and budget.max_flash:
        ax.axvline(budget.max_flash, color="r", ls="--", lw=1, label="flash budget")
    ax.set(xlabel="flash (bytes)", ylabel="int8 validation accuracy (%)", title="trials of the search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    _save(fig, path, fmt)
