"""The README's promises: two commands, and CI runs the test one."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(scripts/\S+\.sh)", readme, flags=re.M)
    assert commands[:2] == ["scripts/main.sh", "scripts/test.sh"]
    for command in commands[:2]:
        assert (ROOT / command).stat().st_mode & 0o111, f"{command} is not executable"
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    main = (ROOT / "scripts" / "main.sh").read_text()
    for config in re.findall(r"configs/\S+\.toml", main):
        assert (ROOT / config).is_file(), config


def test_shipped_configs_load():
    from aevb.config.run import load_config

    for path in sorted((ROOT / "configs").glob("*.toml")):
        load_config(path)


def test_readme_commands_are_one_per_line_not_a_pipe():
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        for line in block.splitlines():
            assert "| aevb" not in line.split("#")[0], line
