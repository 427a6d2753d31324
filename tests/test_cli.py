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
