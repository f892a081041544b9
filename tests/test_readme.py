"""The README's commands run as written, from the repository root: every command of "Running experiments" and of
"Universes", through the real CLI (with one epoch of training, and the run's folder and store in a temp dir)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow


def readme_commands(section: str) -> list[str]:
    """The ``python -m runner ...`` commands of a README section's code blocks (continuations joined, comments
    dropped)."""
    text = (ROOT / "README.md").read_text().split(f"\n## {section}", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ", 1)[0].strip()
            if line.startswith("python -m runner "):
                commands.append(line)
    return commands


COMMANDS = readme_commands("Running experiments") + readme_commands("Universes: one portfolio over many assets")


def test_the_sections_have_their_commands() -> None:
    assert len(COMMANDS) >= 9 and any("examples/prices.csv" in c for c in COMMANDS)
    assert any("examples/universe/" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_runs_as_written(command: str, tmp_path: Path, cli_env: dict) -> None:
    args = [a for a in shlex.split(command)[2:] if not a.startswith("trainer.epochs=")]
    done = run_cli([*args, "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'run'}"], cli_env, ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "this run: http://" in done.stdout
