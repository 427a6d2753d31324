"""The command line answers --help and info without touching the network."""

import json
import subprocess
import sys

from anncore.__main__ import main


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "anncore", "--help"], capture_output=True, text=True, check=True)
    assert "info" in out.stdout and "course" in out.stdout


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == "cpu"
    assert report["sdpa_float32"]["math"] is True


def test_bad_input_prints_a_message_not_a_traceback(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "anncore",
            "evaluate",
            "--checkpoint",
            str(tmp_path / "none.pt"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "error: checkpoint" in out.stderr and "none.pt" in out.stderr and "Traceback" not in out.stderr
