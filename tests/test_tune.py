"""The search on Optuna (the [tune] extra), on the bundled digits with a SQLite study: budget
rejection that counts toward nothing, trained trials counted over the study, per-epoch pruning,
resume, reproducibility, and the one-line refusals."""

import sys

import pytest

from qmtik.config import Config
from qmtik.errors import TuneError
from qmtik.tune import EXTRA, TrialData, _Pruning, counted, driver_url, engine, search, shown_url
from qmtik.tune_front import best, front, record
from qmtik.tune_space import Budget

optuna = pytest.importorskip("optuna", reason="the search needs the [tune] extra (optuna)")

DIGITS = Config.from_dict(
    {
        "data": {"dataset": "digits"},
        "training": {"epochs": 3, "seed": 3},
        "tune": {"widths": [4, 8, 32], "depth": [1, 2], "trial_epochs": [2], "trial_samples": 600},
    }
)
BUDGET = Budget("cortex-m4", 2200, 0)  # 64 x 32 weights do not fit; 64 x 8 do


def url(tmp_path, name="s.db"):
    return f"sqlite:///{tmp_path / name}"


def test_rejected_candidates_count_toward_nothing_and_trained_ones_reach_n(tmp_path):
    run = search(DIGITS, 5, url(tmp_path), "s", BUDGET)
    records = [record(t) for t in run.trials]
    trained = [r for r in records if r["state"] in ("COMPLETE", "PRUNED")]
    rejected = [r for r in records if r["state"] == "REJECTED"]
    assert len(trained) == 5 == run.trained and len(rejected) == run.rejected > 0
    assert all(r["flash"] <= 2200 for r in trained) and all(not r["flash"] for r in rejected)
    assert all("32" in r["note"] or "of flash" in r["note"] for r in rejected)
    assert all("width_0" in r["params"] for r in rejected)  # the candidate is on record, never trained
    assert sorted(r["number"] for r in records) == list(range(len(records)))  # none lost, none twice
    complete = [t for t in run.trials if t.state.name == "COMPLETE"]
    assert all(t.intermediate_values for t in complete)  # each epoch's validation accuracy was reported
    assert all(0 <= t.value <= 1 and t.user_attrs["ram"] > 0 for t in complete)
    assert best(records)["accuracy"] == max(t.value for t in complete)


def test_the_score_is_the_integer_models_validation_accuracy(tmp_path, monkeypatch):
    from qmtik import network

    kept = []
    fit = network.Network.fit

    def keep(self, *args, **kwargs):
        kept.append((self, kwargs["checkpoint"]))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(network.Network, "fit", keep)
    run = search(DIGITS, 2, url(tmp_path), "s", Budget())
    data = TrialData.of(DIGITS)
    values = [t.value for t in run.trials if t.state.name == "COMPLETE"]
    scores = [net.quantize().score(data.val_x, data.val_y) for net, _ in kept]
    assert values == scores[: len(values)]
    folders = [path.parent for _, path in kept]
    assert len(set(folders)) == len(folders) and not any(f.exists() for f in folders)  # one temporary folder each


def test_the_trial_data_is_a_seeded_subset_beside_a_fixed_validation_part():
    data = TrialData.of(DIGITS)
    assert len(data.x) == 600 and len(data.val_x) == round(0.1 * 1438)  # the digits' training part
    again = TrialData.of(DIGITS)
    assert (again.x == data.x).all() and (again.val_y == data.val_y).all()


def test_the_same_config_seed_and_count_give_the_same_trials(tmp_path):
    runs = [search(DIGITS, 4, url(tmp_path, f"{i}.db"), "s", BUDGET) for i in range(2)]
    first, second = ([(t.params, t.value, t.state.name) for t in run.trials] for run in runs)
    assert first == second


def test_resume_goes_on_to_n_and_a_changed_space_is_refused(tmp_path):
    search(DIGITS, 2, url(tmp_path), "s", BUDGET)
    run = search(DIGITS, 4, url(tmp_path), "s", BUDGET)
    assert sum(counted(t) for t in run.trials) == 4 and run.trained == 2
    done = search(DIGITS, 3, url(tmp_path), "s", BUDGET)  # already holds more: nothing runs
    assert done.trained == 0 and len(done.trials) == len(run.trials)
    changed = DIGITS.replace("tune.widths", [4, 8])
    with pytest.raises(TuneError) as err:
        search(changed, 5, url(tmp_path), "s", BUDGET)
    assert "study 's' was searched over another space (changed: tune.widths)" in str(err.value)
    with pytest.raises(TuneError, match=r"changed: budget.max_flash\)"):
        search(DIGITS, 5, url(tmp_path), "s", Budget("cortex-m4", 4000, 0))


def test_pruning_reports_each_epoch_and_stops_when_the_pruner_says():
    class Trial:
        def __init__(self, prune_at):
            self.reported, self.attrs, self.prune_at = [], {}, prune_at

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return len(self.reported) == self.prune_at

        def set_user_attr(self, key, value):
            self.attrs[key] = value

    trial = Trial(prune_at=2)
    reporter = _Pruning(trial, optuna)
    reporter.end_epoch({"epoch": 1, "val_metric": 0.5})
    reporter.end_epoch({"epoch": 2, "val_metric": None})  # no validation: nothing to report
    with pytest.raises(optuna.TrialPruned):
        reporter.end_epoch({"epoch": 3, "val_metric": 0.25})
    assert trial.reported == [(1, 0.5), (3, 0.25)] and trial.attrs == {"pruned_at_epoch": 3}


def test_the_median_pruner_stops_trials_in_a_real_search(tmp_path):
    config = DIGITS.replace_many({"tune.trial_epochs": [3], "tune.learning_rate": [0.0005, 0.05]})
    run = search(config, 14, url(tmp_path), "s", Budget())
    pruned = [t for t in run.trials if t.state.name == "PRUNED" and "rejected" not in t.user_attrs]
    assert pruned and all(t.user_attrs["pruned_at_epoch"] < 3 for t in pruned)
    assert all(counted(t) for t in pruned)  # trained for an epoch or more: they count


def test_a_budget_nothing_fits_gives_up_in_one_line(tmp_path):
    config = DIGITS.replace("tune.max_rejected", 5)
    with pytest.raises(TuneError) as err:
        search(config, 3, url(tmp_path), "s", Budget("cortex-m4", 100, 0))
    assert str(err.value).startswith("no candidate fits: the first 5 drawn") and "\n" not in str(err.value)


def test_without_the_extra_the_search_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(TuneError, match=r"pip install 'qmtik\[tune\]'") as err:
        engine()
    assert str(err.value) == EXTRA


def test_an_unreachable_storage_is_one_line_without_its_password(tmp_path):
    with pytest.raises(TuneError) as err:
        search(DIGITS, 1, "postgresql://tuner:hunter2@127.0.0.1:1/nowhere", "s", BUDGET)
    message = str(err.value)
    assert message.startswith("storage postgresql://tuner:***@127.0.0.1:1/nowhere: cannot be opened (")
    assert "hunter2" not in message and "\n" not in message
    with pytest.raises(TuneError, match="cannot be opened"):
        search(DIGITS, 1, "nosuchdb://x", "s", BUDGET)
    assert shown_url("sqlite:////a/b.db") == "sqlite:////a/b.db"


def test_postgresql_urls_name_an_installed_driver():
    url = driver_url("postgresql://u@h/d")
    assert url in ("postgresql://u@h/d", "postgresql+psycopg2://u@h/d")
    assert driver_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_regression_config_is_refused_before_any_engine_work(tmp_path):
    config = Config.from_dict({"task": "regression", "network": {"outputs": 1, "output": "linear", "cost": "mse"}})
    with pytest.raises(TuneError, match="task = 'classification'"):
        search(config, 1, url(tmp_path), "s", BUDGET)
    assert not (tmp_path / "s.db").exists()


def test_the_front_comes_from_the_records(tmp_path):
    run = search(DIGITS, 4, url(tmp_path), "s", Budget())
    records = [record(t) for t in run.trials]
    on_front = front(records)
    assert on_front and all(r["accuracy"] is not None for r in on_front)
    assert best(records) in on_front


def test_a_worker_uses_one_blas_thread_by_default():
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="the thread limit needs threadpoolctl ([tune] extra)")
    from qmtik.tune import _threads

    with _threads(1):
        inside = [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    assert all(n == 1 for n in inside)
    with _threads(None) as limit:  # 0 or None: left as it is
        assert limit.limit is None


def test_a_timeout_stops_starting_trials_and_the_study_resumes_later(tmp_path):
    run = search(DIGITS, 1000, url(tmp_path), "s", Budget(), timeout=1.0)
    assert 1 <= run.trained < 1000 and run.seconds < 60
    again = search(DIGITS, run.trained + 1, url(tmp_path), "s", Budget())
    assert again.trained == 1


def test_the_fingerprint_names_data_files_not_where_a_machine_keeps_them(tmp_path):
    from qmtik.tune import fingerprint

    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "train.npz").write_bytes(b"")
    configs = [DIGITS.replace_many({"data.dataset": "", "data.train": str(f / "train.npz")}) for f in (a, b)]
    assert fingerprint(configs[0], BUDGET) == fingerprint(configs[1], BUDGET)
    assert fingerprint(configs[0], BUDGET)["data"]["train"] == "train.npz"


def test_a_line_per_trial_says_what_became_of_it(tmp_path):
    lines = []
    run = search(DIGITS, 4, url(tmp_path), "s", BUDGET, log=lines.append)
    assert len(lines) == len(run.trials)
    for line, trial in zip(lines, run.trials):
        assert line.startswith(f"trial {trial.number}: ")
        if "rejected" in trial.user_attrs:
            assert "rejected before training: needs" in line
        elif trial.state.name == "COMPLETE":
            assert f"int8 val {100 * trial.value:.2f}%" in line and "flash" in line
        else:
            assert "pruned after epoch" in line
