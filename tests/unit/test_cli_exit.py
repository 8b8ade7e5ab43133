"""The console script's quick exit (``evalstack.cli.main``) keeps what a normal exit gives a user: the
command's exit status, every line it printed (also through a pipe), and the exit handlers' work."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A copy of the CLI with a few extra commands, run as the console script runs it.
SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading, time
    from pathlib import Path
    import typer
    from evalstack import cli

    @cli.app.command()
    def chatty(lines: int, marker: str) -> None:
        atexit.register(lambda: Path(marker).write_text("handler ran"))
        def later() -> None:
            time.sleep(0.3)
            Path(marker + ".thread").write_text("joined")

        threading.Thread(target=later).start()
        for n in range(lines):
            print(f"line {n}")

    @cli.app.command()
    def fails(status: int) -> None:
        print("before failing")
        raise typer.Exit(status)

    @cli.app.command()
    def crashes() -> None:
        raise RuntimeError("a bug")

    @cli.app.command()
    def message() -> None:
        sys.exit("stopped: a message")

    cli.main()
    """
)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_every_printed_line_arrives_and_exit_handlers_and_threads_finish(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    done = run_cli("chatty", "20000", str(marker))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 20000 and lines[-1] == "line 19999"  # a pipe's buffer flushed, not lost
    assert marker.read_text() == "handler ran"
    assert (tmp_path / "marker.thread").read_text() == "joined"  # a running thread is waited for


@pytest.mark.parametrize("status", [0, 2, 3])
def test_a_commands_exit_status_is_the_process_status(status: int) -> None:
    done = run_cli("fails", str(status))
    assert done.returncode == status
    assert done.stdout == "before failing\n"


def test_an_uncaught_error_exits_1_with_its_traceback() -> None:
    done = run_cli("crashes")
    assert done.returncode == 1
    assert "RuntimeError: a bug" in done.stderr


def test_sys_exit_with_a_message_prints_it_once_and_exits_1() -> None:
    done = run_cli("message")
    assert done.returncode == 1
    assert done.stderr.count("stopped: a message") == 1


def test_bad_input_to_a_real_command_exits_2_with_the_reason(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from evalstack.cli import main; main()", "run", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "nope.yaml" in done.stderr
