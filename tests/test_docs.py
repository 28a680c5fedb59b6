"""README is checked against the code: every setting and every CLI command is documented."""

from pathlib import Path

import click

from webapp.cli import register_commands
from webapp.config import SETTINGS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    head = README[:600]
    assert "make run" in head and "make test" in head


def test_every_setting_is_in_the_readme_table():
    missing = [s.env for s in SETTINGS if f"| `{s.env}` |" not in README]
    assert missing == []


def test_readme_documents_no_setting_that_does_not_exist():
    envs = {s.env for s in SETTINGS}
    rows = [line.split("`")[1] for line in README.splitlines() if line.startswith("| `")]
    documented = {name for name in rows if name.isupper()}
    assert documented <= envs


def _command_paths(group: click.Group, prefix: str = "humanlm") -> list[str]:
    paths = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, path))
        else:
            paths.append(path)
    return paths


def test_every_cli_command_is_in_the_readme():
    group = click.Group("humanlm")
    register_commands(type("A", (), {"cli": group})())
    undocumented = [p for p in _command_paths(group) if f"`{p}" not in README]
    assert undocumented == []
