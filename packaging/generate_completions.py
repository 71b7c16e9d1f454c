"""Writes pyrsia's shell completion scripts into a directory, from the CLI itself.

    python packaging/generate_completions.py completions/

bash and fish scripts are the app's own (`--show-completion`); the zsh one is shaped
as an autoloaded completion function (`#compdef pyrsia` file in `$fpath`), which is
how packages install it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FILES = {"bash": "pyrsia.bash", "zsh": "_pyrsia", "fish": "pyrsia.fish"}


def script(shell: str) -> str:
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1", "COLUMNS": "80"}
    out = subprocess.run(
        # The installed entry point, so the scripts name the program `pyrsia`.
        [str(Path(sys.executable).parent / "pyrsia"), "--show-completion", shell],
        capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip
    if shell == "zsh":  # autoload form: the file body runs on each completion
        registration = "compdef _pyrsia_completion pyrsia"
        if registration not in out:
            raise SystemExit(f"typer's zsh script no longer ends with {registration!r}; adapt this generator")
        out = out.replace(registration, '_pyrsia_completion "$@"')
    return out.rstrip("\n") + "\n"


def main() -> None:
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    for shell, name in FILES.items():
        (target / name).write_text(script(shell))


if __name__ == "__main__":
    main()
