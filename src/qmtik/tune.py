"""The budget-aware search: Optuna's study over the [tune] space, each trial a QAT run scored
on its integer model's validation accuracy.

One worker is one `search()` call. Its study lives in a storage that Optuna's relational
storage opens: a SQLite file (the default, beside the config) or a server (PostgreSQL) that
several workers share. A candidate over the budget is rejected from its topology before any
training (tune_space.fits) and recorded as a pruned trial marked `rejected`, which counts
toward nothing; trained trials (complete, or pruned by the engine's pruner after an epoch)
count toward the number asked for, over the whole study. Running trials send heartbeats; one
whose worker died is failed after the grace period and run again (Optuna's retry callback).
Optuna is imported here only, on first use: qmtik imports without it (the [tune] extra).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Config
from .data import load_data
from .errors import QmtikError, TuneError
from .network import Network
from .progress import Reporter
from .tune_space import Budget, Unfit, candidate, fits, network_line, space_problem

EXTRA = "qmtik tune needs the [tune] extra (Optuna): pip install 'qmtik[tune]'"
COUNTED = ("COMPLETE", "PRUNED")
PATH_KEYS = ("train", "train_labels", "test", "test_labels")
RACES = 5  # attempts at opening a storage whose tables another worker is creating at once
RACE_WORDS = ("unique", "duplicate", "already exists")  # trained trials, unless marked rejected


def engine():
    """The optuna module, or a TuneError naming the extra."""
    try:
        import optuna
    except ImportError:
        raise TuneError(EXTRA) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def shown_url(url: str) -> str:
    """A storage URL as messages show it: without its password."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def driver_url(url: str) -> str:
    """postgresql://... with the driver installed: SQLAlchemy 2.1 takes psycopg (3) by default;
    the [tune] extra brings psycopg2-binary, which 'postgresql+psycopg2://' names."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + rest
    return url


def open_storage(url: str, config: Config):
    """Optuna's relational storage at url, with heartbeats and the retry of dead trials; a
    TuneError in one line when it cannot be reached."""
    optuna = engine()
    storages = optuna.storages
    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    tune = config.tune
    import warnings

    for attempt in range(RACES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeats are 'experimental' in Optuna's words
            try:
                return storages.RDBStorage(
                    driver_url(url),
                    engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else {},
                    heartbeat_interval=tune.heartbeat,
                    grace_period=tune.grace,
                    heartbeat_stale_trial_callback=retry(max_retry=3),
                )
            except Exception as exc:  # sqlalchemy's and the drivers' errors, unknown dialects
                text = str(exc).strip()
                if attempt + 1 < RACES and any(word in text.lower() for word in RACE_WORDS):
                    time.sleep(0.5 + attempt)  # another worker is creating the tables this moment
                    continue
                reason = text.splitlines()[0] if text else type(exc).__name__
                raise TuneError(f"storage {shown_url(url)}: cannot be opened ({reason[:200]})") from None


def fingerprint(config: Config, budget: Budget) -> dict:
    """What makes a study's trials comparable: the space, the base network, data and budget;
    the same on every machine that runs a worker."""
    net = config.network
    return {
        "tune": config.tune.space(),
        "network": {"input_shape": list(net.input_shape), "inputs": net.inputs, "outputs": net.outputs},
        "data": {  # paths by file name: each machine may keep the data elsewhere
            k: Path(v).name if k in PATH_KEYS and v else v for k, v in config.to_dict()["data"].items()
        },
        "seed": config.training.seed,
        "validation_split": config.training.validation_split,
        "budget": budget.to_dict(),
    }


def _changed(old: dict, new: dict, prefix: str = "") -> list:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(prefix + key)
    return keys


def open_study(storage, name: str, config: Config, budget: Budget):
    """The study of that name (created when new), checked to be over the same space."""
    optuna = engine()
    tune = config.tune
    seed = config.training.seed
    sampler = optuna.samplers.TPESampler(seed=seed) if tune.sampler == "tpe" else optuna.samplers.RandomSampler(seed)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
        if tune.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True
        )
    except Exception as exc:
        raise TuneError(f"study {name!r}: cannot be opened ({str(exc).splitlines()[0][:200]})") from None
    mine = fingerprint(config, budget)
    recorded = study.user_attrs.get("qmtik_space")
    if recorded is None:
        study.set_user_attr("qmtik_space", mine)
    elif recorded != mine:
        changed = ", ".join(_changed(recorded, mine)) or "its record"
        raise TuneError(
            f"study {name!r} was searched over another space (changed: {changed}); "
            "start a new study (another --study, or remove the study file) or restore the config"
        )
    return study


def counted(trial) -> bool:
    """A trained trial: complete, or pruned after training began (not rejected before it)."""
    return trial.state.name in COUNTED and "rejected" not in trial.user_attrs


@dataclass
class TrialData:
    """The search's data: a fixed, seeded training subset and the validation part."""

    x: np.ndarray
    y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray

    @classmethod
    def of(cls, config: Config) -> "TrialData":
        (x, y), _ = load_data(config)
        share = config.training.validation_split or 0.1
        order = np.random.default_rng([config.training.seed, 0x7E5E]).permutation(len(x))
        n_val = max(1, int(round(len(x) * share)))
        val, train = np.sort(order[:n_val]), order[n_val:][: config.tune.trial_samples]
        train = np.sort(train)
        return cls(np.asarray(x)[train], np.asarray(y)[train], np.asarray(x)[val], np.asarray(y)[val])


class _Pruning(Reporter):
    """Reports each epoch's validation accuracy to the trial; the pruner may stop it there."""

    def __init__(self, trial, optuna):
        super().__init__(quiet=True)
        self.trial, self.optuna = trial, optuna

    def end_epoch(self, record: dict) -> None:
        if record.get("val_metric") is None:
            return
        self.trial.report(float(record["val_metric"]), record["epoch"])
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_epoch", record["epoch"])
            raise self.optuna.TrialPruned()


def trial_config(chosen: Config, epochs: int) -> Config:
    """The candidate as a trial trains it: `epochs` epochs, its other training keys kept valid."""
    tc = chosen.training
    return chosen.replace_many(
        {
            "training.epochs": epochs,
            "training.float_epochs": min(tc.float_epochs, epochs - 1),
            "training.warmup_epochs": min(tc.warmup_epochs, epochs / 2),
            "training.freeze_bn_epoch": "auto",
        }
    )


def objective(config: Config, budget: Budget, data: TrialData, optuna):
    """Optuna's objective: draw a candidate, reject it over budget, else train and score it."""

    def run(trial) -> float:
        def ask(name, kind, values):
            if kind == "int":
                return trial.suggest_int(name, *values)
            if kind == "log":
                return trial.suggest_float(name, *values, log=True)
            return trial.suggest_categorical(name, list(values))

        try:
            chosen = candidate(config, ask)
            figures = fits(chosen, budget)
        except Unfit as exc:
            trial.set_user_attr("rejected", str(exc))
            raise optuna.TrialPruned() from None
        epochs = trial.suggest_categorical("trial_epochs", list(config.tune.trial_epochs))
        for key in ("flash", "ram", "constants", "arena"):
            trial.set_user_attr(key, int(figures[key]))
        trial.set_user_attr("network", network_line(chosen))
        trial.set_user_attr("config", chosen.to_dict())
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"qmtik-trial-{trial.number}-") as folder:
            net = Network(trial_config(chosen, epochs))
            try:
                net.fit(
                    data.x,
                    data.y,
                    validation_data=(data.val_x, data.val_y),
                    checkpoint=Path(folder) / "trial.ckpt.npz",
                    reporter=_Pruning(trial, optuna),
                )
            except QmtikError as exc:  # a candidate that diverges: recorded, counted, not a crash
                trial.set_user_attr("error", str(exc).splitlines()[0])
                raise optuna.TrialPruned() from None
        accuracy = float(net.quantize().score(data.val_x, data.val_y))
        trial.set_user_attr("seconds", round(time.monotonic() - started, 3))
        return accuracy

    return run


def trial_line(trial) -> str:
    """What became of a trial, in one line."""
    attrs = trial.user_attrs
    if "rejected" in attrs:
        return f"trial {trial.number}: rejected before training: {attrs['rejected']}"
    what = f"trial {trial.number}: {attrs.get('network', '?')}"
    if trial.state.name == "COMPLETE":
        return f"{what}  int8 val {100 * trial.value:.2f}%  flash {attrs['flash']:,} B  RAM {attrs['ram']:,} B"
    if "error" in attrs:
        return f"{what}  stopped: {attrs['error']}"
    if trial.state.name == "PRUNED":
        return f"{what}  pruned after epoch {attrs.get('pruned_at_epoch', '?')}"
    return f"{what}  {trial.state.name.lower()}"


@dataclass
class SearchRun:
    """What one worker's search did, and the study's trials at its end."""

    study: str
    trials: list = field(default_factory=list)  # the study's FrozenTrials
    rejected: int = 0  # this worker's candidates rejected before training
    trained: int = 0  # this worker's trained trials
    seconds: float = 0.0
    gave_up: bool = False


def search(
    config: Config,
    trials: int,
    storage_url: str,
    study_name: str,
    budget: Budget,
    *,
    timeout: float | None = None,
    threads: int | None = 1,
    log=None,
    announce=None,
) -> SearchRun:
    """Run trials in the study until it holds `trials` trained ones (or timeout seconds pass);
    returns what this worker did and every trial of the study."""
    problem = space_problem(config)
    if problem:
        raise TuneError(problem)
    optuna = engine()
    study = open_study(open_storage(storage_url, config), study_name, config, budget)
    data = TrialData.of(config)
    if announce:
        announce(f"searching study {study_name!r} in {shown_url(storage_url)}: {trials} trained trials")
    run = SearchRun(study_name)
    tune = config.tune

    def stop_when_done(study, trial) -> None:
        if "rejected" in trial.user_attrs:
            run.rejected += 1
        elif trial.state.name in COUNTED:
            run.trained += 1
        if log:
            log(trial_line(trial))
        if run.rejected >= tune.max_rejected:
            run.gave_up = not run.trained
            study.stop()
        elif sum(counted(t) for t in study.get_trials(deepcopy=False)) >= trials:
            study.stop()

    started = time.monotonic()
    done = sum(counted(t) for t in study.get_trials(deepcopy=False))
    if done < trials:
        with _threads(threads):
            study.optimize(
                objective(config, budget, data, optuna),
                timeout=timeout,
                callbacks=[stop_when_done],
                gc_after_trial=False,
            )
    run.seconds = time.monotonic() - started
    run.trials = study.get_trials()
    if run.gave_up:
        raise TuneError(
            f"no candidate fits: the first {run.rejected} drawn from [tune] all exceed the budget "
            f"({budget.target}, flash {budget.max_flash or 'any'}, RAM {budget.max_ram or 'any'} bytes); "
            "allow smaller networks in [tune] or a larger budget"
        )
    return run


class _threads:
    """At most n BLAS threads within (threadpoolctl, part of the [tune] extra); None: as is."""

    def __init__(self, n):
        self.n, self.limit = n, None

    def __enter__(self):
        if self.n:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                return self
            self.limit = threadpool_limits(limits=self.n)
        return self

    def __exit__(self, *exc):
        if self.limit is not None:
            self.limit.unregister()


def best_config(record: dict) -> Config:
    """The Config a trial record holds (its full training: the base config's [training])."""
    return Config.from_dict(json.loads(json.dumps(record["config"])))
