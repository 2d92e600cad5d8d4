"""qmtik.targets: the table of Cortex-M targets, and an unknown name refused with the list."""

import pytest

from qmtik.errors import ConfigError
from qmtik.intref_windows import KINDS
from qmtik.targets import HOST, NAMES, TARGETS, get_target, target_problem


def test_the_table_names_four_cores_and_the_host():
    assert NAMES == ("host", "cortex-m0", "cortex-m4", "cortex-m7", "cortex-m33")
    assert get_target(HOST) is None
    assert {t.cpu for t in TARGETS.values()} == {"cortex-m0", "cortex-m4", "cortex-m7", "cortex-m33"}
    # qemu's boards: an386 (M4), an500 (M7), an505 (M33); no board runs a Cortex-M0 (unicorn does)
    assert {name: t.qemu_machine for name, t in TARGETS.items()} == {
        "cortex-m0": None,
        "cortex-m4": "mps2-an386",
        "cortex-m7": "mps2-an500",
        "cortex-m33": "mps2-an505",
    }


def test_every_layer_kind_has_a_code_allowance():
    for target in TARGETS.values():
        assert set(target.code_first) == set(target.code_more) == {"dense", *KINDS}
        assert target.stack > 0 and target.code_base > 0
        assert target.flags()[:2] == [f"-mcpu={target.cpu}", "-mthumb"]


@pytest.mark.parametrize("bad", ["cortex-m9", "m4", "", "Cortex-M4"])
def test_an_unknown_target_is_refused_with_the_list(bad):
    assert target_problem(bad) == f"unknown target {bad!r}: choose one of {', '.join(NAMES)}"
    with pytest.raises(ConfigError, match="choose one of host, cortex-m0, cortex-m4, cortex-m7, cortex-m33"):
        get_target(bad)
