"""qmtik.config_deploy: the [deploy] section, its sizes (bytes, K, KiB, M, MiB; 1 K = 1,024) and
the one-line refusals of anything else."""

import pytest

from qmtik.config import Config, load_config
from qmtik.config_deploy import DeployConfig, parse_size, show_size, size_problem
from qmtik.errors import ConfigError


@pytest.mark.parametrize(
    "text, size",
    [
        (0, 0),
        (1000, 1000),
        ("1000", 1000),
        ("256K", 256 * 1024),
        ("256 KiB", 256 * 1024),
        ("256KiB", 256 * 1024),
        ("1M", 1 << 20),
        ("2 MiB", 2 << 20),
        ("4096M", 1 << 32),
    ],
)
def test_sizes_in_bytes_or_binary_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "bad", [-1, "-1K", "1.5M", "256 kB", "256k", "1G", "K", "", "256  K", True, 1.0, None, [256], "4097M", 1 << 33]
)
def test_anything_else_is_refused_in_one_line(bad):
    with pytest.raises(ConfigError) as caught:
        parse_size(bad, "deploy.max_flash")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("config key deploy.max_flash")
    assert size_problem(bad, "deploy.max_flash") == message


def test_a_budget_is_shown_as_written():
    assert [show_size(s) for s in (256 * 1024, 1 << 20, 1000, 1536)] == ["256 KiB", "1 MiB", "1,000 B", "1,536 B"]


def test_the_section_loads_from_toml_and_checks_its_values(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text('[deploy]\ntarget = "cortex-m0"\nmax_flash = "256K"\nmax_ram = 8192\n')
    deploy = load_config(path).deploy
    assert (deploy.target, deploy.max_flash, deploy.max_ram) == ("cortex-m0", 262_144, 8192)
    assert Config().deploy == DeployConfig("cortex-m4", 0, 0)  # no budget unless one is set
    assert Config.from_dict(Config().replace("deploy.max_ram", "1K").to_dict()).deploy.max_ram == 1024
    for bad in ("cortex-m9", "host"):  # a budget is for a microcontroller
        with pytest.raises(ConfigError, match="deploy.target.*allowed: cortex-m0 | cortex-m4 | cortex-m7 | cortex-m33"):
            Config().replace("deploy.target", bad)
    with pytest.raises(ConfigError, match="deploy.colour"):
        Config.from_dict({"deploy": {"colour": 1}})
