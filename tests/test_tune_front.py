"""The front, best trial, table and best config, from trial records alone."""

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qmtik.config import Config, load_config
from qmtik.tune_front import best, best_toml, counts, front, plot_front, record, table, write_best


def rec(number, accuracy, flash, ram, state="COMPLETE"):
    config = Config().replace("network.hidden", [number + 1]).to_dict()
    return {
        "number": number,
        "state": state,
        "accuracy": accuracy if state == "COMPLETE" else None,
        "flash": flash,
        "ram": ram,
        "network": f"{number + 1}-10",
        "params": {},
        "config": config,
        "note": "",
    }


def brute_front(records):
    """The definition, spelled out: no other complete trial at least as good everywhere and better somewhere."""
    done = [r for r in records if r["accuracy"] is not None]
    out = []
    for r in done:
        beaten = any(
            o["accuracy"] >= r["accuracy"]
            and o["flash"] <= r["flash"]
            and o["ram"] <= r["ram"]
            and (o["accuracy"], -o["flash"], -o["ram"]) != (r["accuracy"], -r["flash"], -r["ram"])
            for o in done
        )
        twin = any(
            (o["accuracy"], o["flash"], o["ram"]) == (r["accuracy"], r["flash"], r["ram"]) and o["number"] < r["number"]
            for o in done
        )
        if not beaten and not twin:
            out.append(r["number"])
    return sorted(out)


def test_a_hand_checked_front():
    records = [
        rec(0, 0.80, 1000, 300),  # front: the smallest
        rec(1, 0.85, 2000, 300),  # front
        rec(2, 0.84, 2500, 300),  # beaten by 1
        rec(3, 0.85, 2000, 200),  # beats 1 (less RAM, the rest equal)
        rec(4, 0.90, 9000, 900),  # front: the most accurate
        rec(5, None, 10, 10, "PRUNED"),  # not complete: never on the front
        rec(6, None, None, None, "REJECTED"),
    ]
    assert [r["number"] for r in front(records)] == [0, 3, 4]
    assert best(records)["number"] == 4
    assert counts(records) == {"complete": 5, "pruned": 1, "rejected": 1, "failed": 0, "running": 0}
    lines = table(front(records)).splitlines()
    assert lines[0].split() == ["trial", "int8", "val", "flash", "B", "RAM", "B", "network"]
    assert lines[2].split() == ["3", "85.00%", "2,000", "200", "4-10"]


def test_best_ties_go_to_the_smaller_then_the_earlier():
    assert best([rec(0, 0.9, 500, 100), rec(1, 0.9, 400, 100), rec(2, 0.9, 400, 100)])["number"] == 1
    assert best([rec(0, None, 1, 1, "PRUNED")]) is None


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 5), st.integers(1, 5)), max_size=12))
def test_the_front_is_the_definitions(points):
    records = [rec(i, a / 5, f, r) for i, (a, f, r) in enumerate(points)]
    assert sorted(r["number"] for r in front(records)) == brute_front(records)


def test_record_reads_a_trials_attributes():
    trial = SimpleNamespace(
        number=3,
        state=SimpleNamespace(name="PRUNED"),
        value=0.5,
        params={"depth": 1},
        user_attrs={"rejected": "needs 9 B of flash", "config": {}},
    )
    assert record(trial)["state"] == "REJECTED" and record(trial)["accuracy"] is None
    assert record(trial)["note"] == "needs 9 B of flash"
    trial.state.name, trial.user_attrs = "COMPLETE", {"flash": 10, "ram": 5, "network": "8-10"}
    assert record(trial)["accuracy"] == 0.5 and record(trial)["flash"] == 10


def test_the_best_config_is_trainable_toml_without_tune_and_with_the_budget(tmp_path):
    chosen = rec(7, 0.9, 1234, 321)
    text = best_toml(chosen, "s", {"target": "cortex-m0", "max_flash": 2048, "max_ram": 0})
    assert text.startswith("# The best network of study 's': trial 7") and "[tune]" not in text
    path = tmp_path / "best.toml"
    write_best(path, chosen, "s", {"target": "cortex-m0", "max_flash": 2048, "max_ram": 0})
    loaded = load_config(path)
    assert loaded.network.hidden == (8,) and loaded.deploy.max_flash == 2048 and loaded.deploy.target == "cortex-m0"
    assert loaded.tune == Config().tune


def test_a_convolution_winner_writes_its_layer_tables(tmp_path):
    chosen = rec(0, 0.9, 1, 1)
    chosen["config"] = Config.from_dict(
        {"network": {"input_shape": [8, 8, 1], "layers": [{"kind": "conv2d", "filters": 4, "kernel": 3}]}}
    ).to_dict()
    write_best(tmp_path / "b.toml", chosen, "s")
    assert "[[network.layers]]" in (tmp_path / "b.toml").read_text()
    assert load_config(tmp_path / "b.toml").network.layer_specs[0].kind == "conv2d"


def test_the_front_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot needs the [plot] extra")
    plot_front([rec(0, 0.8, 100, 10), rec(1, 0.9, 200, 20), rec(2, None, 1, 1, "PRUNED")], tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
