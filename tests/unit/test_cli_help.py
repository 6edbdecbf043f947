"""Every command and subcommand of the three programs answers ``-h`` with its usage."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from netdist.adminctl.cli import main as admin_main
from netdist.server.cli import main as server_main
from netdist.worker.cli import main as worker_main

PROGRAMS = {"netdist-admin": admin_main, "netdist-server": server_main, "netdist-worker": worker_main}


def command_paths(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(group, click.Group):
        for name, command in group.commands.items():
            yield from command_paths(command, (*path, name))


CASES = [(prog, path) for prog, root in PROGRAMS.items() for path in command_paths(root)]


@pytest.mark.parametrize(("prog", "path"), CASES, ids=[" ".join((p, *path)) for p, path in CASES])
def test_dash_h_prints_the_usage(prog: str, path: tuple[str, ...]) -> None:
    done = CliRunner().invoke(PROGRAMS[prog], [*path, "-h"], prog_name=prog)
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"Usage: {' '.join((prog, *path))}"), done.output


def test_the_walk_finds_the_subcommands() -> None:
    assert ("handlers", "show") in [path for prog, path in CASES if prog == "netdist-admin"]
    assert len(CASES) > 30
