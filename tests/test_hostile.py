"""The standing hostile campaign in CI: hypothesis samples benchmarks/hostile_cases.py's mutants
of every reader (.qmt model, checkpoint, config and --set, IDX raw and gzipped, .npy, .npz, CSV,
C header, C model file, downloads from a loopback server that misbehaves) and each must end in
a valid result or one of qmtik's own errors in one line; the table of benchmarks/hostile.py is
checked on a quick run. The larger run is `python benchmarks/hostile.py` (thousands per reader)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RSS_PARENT = 320 << 20  # above the worker's bound, RSS_BASE
sys.path.insert(0, str(BENCHMARKS))
cases = pytest.importorskip("hostile_cases")


def load_runner():
    spec = importlib.util.spec_from_file_location("qmtik_benchmark_hostile", BENCHMARKS / "hostile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def seeds():
    return cases.seeds()


@pytest.fixture(scope="module")
def server():
    s = cases.Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.mark.parametrize("area", cases.AREAS)
def test_the_unmutated_seed_loads_and_equals_the_reference(area, seeds, server, tmp_path):
    assert cases.run_case(area, 0, seeds[area], tmp_path, server) == ("valid", "")


@pytest.mark.parametrize("area", [a for a in cases.AREAS if a != "download"])
def test_every_mutant_is_read_or_refused_in_one_line(area, seeds, server, tmp_path_factory):
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(index=st.integers(1, 10**9))
    def check(index):
        folder = tmp_path_factory.mktemp(area.replace(".", "_"))
        outcome, detail = cases.run_case(area, index, seeds[area], folder, server)
        assert outcome in ("valid", "refused"), f"{area} case {index}: {outcome}: {detail}"

    check()


@settings(max_examples=12, deadline=None)
@given(index=st.integers(1, 10**9))
def test_every_misbehaving_server_is_survived_in_one_line(index, seeds, server, tmp_path_factory):
    """Slow (deadline 0.5 s), endless, truncated, redirect loop, wrong or odd lengths, a mutated
    body: a download is the pinned file or one line, and a failure leaves no folder behind."""
    folder = tmp_path_factory.mktemp("download")
    outcome, detail = cases.run_case("download", index, seeds["download"], folder, server)
    assert outcome in ("valid", "refused"), f"download case {index} ({cases.download_mode(index)}): {detail}"


def test_a_bomb_and_a_declared_terabyte_are_among_the_mutants(seeds):
    """The generators make the hostile inputs the issue names (so the campaign can catch them)."""
    import gzip

    sizes = [len(cases.case_files("idx.gz", i, seeds["idx.gz"])["d-images-idx3-ubyte.gz"]) for i in range(1, 60)]
    assert max(sizes) > 100 * len(seeds["idx.gz"]["d-images-idx3-ubyte.gz"])  # gzip members of zeros
    headers = [cases.case_files("npy", i, seeds["npy"])["x.npy"][:128] for i in range(1, 200)]
    assert any(b"1099511627776" in h for h in headers)
    assert gzip.decompress(seeds["idx.gz"]["d-images-idx3-ubyte.gz"]) == seeds["idx"]["d-images-idx3-ubyte"]


def test_the_quick_run_prints_one_table_of_zeros(tmp_path, capsys):
    runner = load_runner()
    argv = ["--quick", "--areas", "model,npy", "--jobs", "1", "--json", str(tmp_path / "run.json")]
    code = runner.main([*argv, "--hang-seconds", "60"])  # the suite may share a loaded machine: no false hangs
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[0] == (
        "| area | cases | unexpected exceptions | hangs | over-allocations | wrong results | files damaged |"
    )
    assert lines[2:] == ["| model | 40 | 0 | 0 | 0 | 0 | 0 |", "| npy | 40 | 0 | 0 | 0 | 0 | 0 |"]
    assert code == 0
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["areas"]["model"]["done"] == 40
    assert runner.main(["--quick", "--areas", "model", "--json", str(tmp_path / "run.json")]) == 0  # resumed: done


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="no /proc: the peak is ru_maxrss alone")
def test_a_workers_peak_is_its_own_not_its_parents():
    """Run in the full suite (a 450 MB parent), every case of the quick run was an over-allocation:
    ru_maxrss, which the worker read, keeps the parent's peak across exec."""
    runner = load_runner()
    ballast = np.ones(RSS_PARENT // 8)  # the parent's peak, touched
    worker = runner.Worker()
    try:
        answer = worker.ask("model", 0)
    finally:
        worker.close()
    assert ballast.sum() == RSS_PARENT // 8
    assert answer["outcome"] == "valid" and answer["peak_mb"] < runner.RSS_BASE >> 20 < RSS_PARENT >> 20, answer


def test_a_long_override_is_named_in_a_short_line():
    """Found by the campaign: an override's whole text (thousands of characters) was quoted."""
    from qmtik import ConfigError
    from qmtik.config import parse_override

    with pytest.raises(ConfigError) as info:
        parse_override("training.epochs" * 1000)
    assert len(str(info.value)) < 300


def test_a_key_holding_a_newline_is_named_on_one_line():
    from qmtik import Config, ConfigError

    with pytest.raises(ConfigError) as info:
        Config().replace_many({"n\x00twork\n.hidden": 3})
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info:  # escapes count: the key is cut after repr()
        Config().replace_many({"training." + "\x00" * 500: 3})
    assert len(str(info.value)) < 1000 and "\\x00\\x00" in str(info.value)
