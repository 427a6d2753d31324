"""The papermill course runner: parameter checking, a smoke-sized run into runs/<timestamp>/, and a notebook that
fails (a cell's error, a killed kernel, a timeout, Ctrl-C): one line, the summary, the rest skipped or run."""

import json
import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest

from anncore.course.runner import declared_parameters, load_parameters, run_course, started_cell, strip_run_metadata


def write_notebook(path, params_source="ITERS = 3\nLR = 0.01\nNAME = 'x'\nCROP = (8, 8)\nFLAG = False\nROOT = None"):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(params_source)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(ITERS * 2, NAME)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_declared_parameters(tmp_path):
    nb = write_notebook(tmp_path / "00_a.ipynb")
    assert declared_parameters(nb) == {"ITERS": 3, "LR": 0.01, "NAME": "x", "CROP": (8, 8), "FLAG": False, "ROOT": None}


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ("ITER: 5\n", "unknown parameter 'ITER'"),
        ("ITERS: '5'\n", "parameter 'ITERS' must be like the default 3"),
        ("FLAG: 1\n", "parameter 'FLAG'"),
        ("CROP: 8\n", "parameter 'CROP'"),
        ("- 1\n", "expected a YAML mapping"),
    ],
)
def test_bad_parameter_files_fail_at_once_naming_the_parameter(tmp_path, yaml_text, message):
    nb = write_notebook(tmp_path / "00_a.ipynb")
    (tmp_path / "00_a.yaml").write_text(yaml_text)
    with pytest.raises(ValueError, match=message):
        load_parameters(tmp_path / "00_a.yaml", nb)


def test_good_parameters_pass(tmp_path):
    nb = write_notebook(tmp_path / "00_a.ipynb")
    (tmp_path / "00_a.yaml").write_text("ITERS: 5\nLR: 1\nCROP: [4, 4]\nROOT: /data\n")
    assert load_parameters(tmp_path / "00_a.yaml", nb) == {"ITERS": 5, "LR": 1, "CROP": [4, 4], "ROOT": "/data"}
    assert load_parameters(tmp_path / "missing.yaml", nb) == {}


def test_run_course_executes_with_parameters(tmp_path):
    notebooks, params = tmp_path / "nb", tmp_path / "params"
    notebooks.mkdir(), params.mkdir()
    write_notebook(notebooks / "00_a.ipynb")
    (params / "00_a.yaml").write_text("ITERS: 21\n")
    rows = run_course(notebooks, params, tmp_path / "runs")
    assert [r["status"] for r in rows] == ["ok"]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())[0]["notebook"] == "00_a.ipynb"
    executed = nbformat.read(run_dir / "00_a.ipynb", as_version=4)
    assert "42 x" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    strip_run_metadata(run_dir / "00_a.ipynb")
    stripped = nbformat.read(run_dir / "00_a.ipynb", as_version=4)
    assert "papermill" not in stripped.metadata
    assert stripped.cells[0].metadata["tags"] == ["parameters"]


def test_summary_collects_a_notebooks_metrics(tmp_path):
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    source = "OUT_DIR = 'out'\nMIOU = 0.5"
    nb = write_notebook(notebooks / "07_t.ipynb", source)
    book = nbformat.read(nb, as_version=4)
    book.cells[1] = nbformat.v4.new_code_cell(
        "import json, pathlib\npathlib.Path(OUT_DIR).mkdir(exist_ok=True)\n"
        "pathlib.Path(OUT_DIR, 'metrics.json').write_text(json.dumps({'final_miou': MIOU}))"
    )
    nbformat.write(book, nb)
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "07_t.yaml").write_text("MIOU: 0.25\n")
    (row,) = run_course(notebooks, tmp_path / "params", tmp_path / "runs")
    assert row["status"] == "ok" and row["miou"] == 0.25
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "07_t_metrics.json").read_text()) == {"final_miou": 0.25}


# ------------------------------------------------------------------------------------------------ a notebook fails
FAILURES = {
    # the failing cell (cell 3 of each notebook: parameters, a print, this), and what its one line says
    "error": ("1 / 0", "ZeroDivisionError: division by zero"),
    # 200 MiB touched, held long enough to be sampled, then the kernel killed as the out-of-memory killer would
    "kill": (
        "import os, signal, time\nheld = b'x' * (200 * 2**20)\ntime.sleep(1.5)\nos.kill(os.getpid(), signal.SIGKILL)",
        "the kernel died: likely out of memory (its peak was ",
    ),
}


def write_cells(path, *sources):
    """A notebook of a ``parameters`` cell (``X = 1``) and these code cells."""
    nb = nbformat.read(write_notebook(path, "X = 1"), as_version=4)
    nb.cells[1:] = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)
    return path


def lines_of(text, notebook):
    return [line for line in text.splitlines() if line.startswith(notebook)]


@pytest.mark.parametrize("keep_going", [False, True], ids=["stop", "keep-going"])
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_failing_notebook_ends_with_one_line_and_the_summary(failure, keep_going, tmp_path, capfd):
    """A cell's error or a killed kernel: one line naming the notebook, cell and cause; the executed notebook kept up
    to that cell; the next notebook skipped (or run with --keep-going); summary.json written; exit status 1."""
    from anncore.__main__ import main

    source, cause = FAILURES[failure]
    notebooks, params, out = tmp_path / "nb", tmp_path / "params", tmp_path / "runs"
    notebooks.mkdir(), params.mkdir()
    write_cells(notebooks / "00_fails.ipynb", "print('before')", source, "print('after')")
    write_cells(notebooks / "01_next.ipynb", "print('next ran')")
    argv = ["course", "--notebooks", str(notebooks), "--params", str(params), "--out", str(out)]
    assert main(argv + ["--keep-going"] * keep_going) == 1
    captured = capfd.readouterr()
    (line,) = lines_of(captured.out, "00_fails.ipynb")
    assert f"failed at cell 3: {cause}" in line, line
    assert "Traceback" not in captured.out + captured.err, captured.err
    (summary,) = out.glob("*/summary.json")
    failed, following = json.loads(summary.read_text())
    assert (failed["notebook"], failed["status"], failed["cell"]) == ("00_fails.ipynb", "failed", 3)
    assert failed["cause"] in line and cause in failed["cause"]
    if failure == "kill":
        assert "else a crash in native code or a kill from outside" in failed["cause"]
        assert failed["peak_memory_mib"] >= 200, failed
    expected = ("ok", None) if keep_going else ("skipped", "not run: 00_fails.ipynb failed")
    assert (following["notebook"], following["status"], following.get("cause")) == ("01_next.ipynb", *expected)
    (next_line,) = lines_of(captured.out, "01_next.ipynb")
    assert expected[0] in next_line, next_line
    kept = nbformat.read(summary.parent / "00_fails.ipynb", as_version=4)
    cells = [c for c in kept.cells if c.cell_type == "code"]
    assert [o["text"] for o in cells[1].outputs] == ["before\n"]
    assert [o["output_type"] for o in cells[2].outputs][-1:] == ["error"]  # the cause, where it happened
    assert cells[3].outputs == []  # not run
    assert (summary.parent / "01_next.ipynb").is_file() == keep_going


def test_a_full_disk_while_saving_the_executed_notebook_names_the_folder(tmp_path, capfd, monkeypatch):
    """papermill writes the executed notebook after every cell; a full disk there is one line naming the folder."""
    import errno

    import anncore.course.runner
    from anncore.__main__ import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(anncore.course.runner.papermill, "execute_notebook", full)
    notebooks, params, out = tmp_path / "nb", tmp_path / "params", tmp_path / "runs"
    notebooks.mkdir(), params.mkdir()
    write_cells(notebooks / "00_a.ipynb", "print('x')")
    assert main(["course", "--notebooks", str(notebooks), "--params", str(params), "--out", str(out)]) == 1
    (line,) = lines_of(capfd.readouterr().out, "00_a.ipynb")
    (run_dir,) = out.iterdir()
    assert f"failed: no space left on the device of {run_dir} while writing 00_a.ipynb" in line, line
    assert json.loads((run_dir / "summary.json").read_text())[0]["status"] == "failed"


def test_a_cell_over_the_timeout_fails_its_notebook_in_place_too(tmp_path, capfd):
    """``--in-place`` (``make notebooks``) with ``--cell-timeout``: the slow notebook fails with one line, the rest
    run with ``--keep-going``, the notebooks are rewritten without run metadata, and no summary lands among them."""
    from anncore.__main__ import main

    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    write_cells(notebooks / "00_slow.ipynb", "import time\ntime.sleep(60)")
    write_cells(notebooks / "01_next.ipynb", "print('next ran')")
    argv = ["course", "--notebooks", str(notebooks), "--in-place", "--keep-going", "--cell-timeout", "2"]
    assert main(argv) == 1
    captured = capfd.readouterr()
    (line,) = lines_of(captured.out, "00_slow.ipynb")
    assert "failed at cell 2: the cell ran past --cell-timeout 2 s" in line, line
    assert "Traceback" not in captured.out + captured.err, captured.err
    assert "ok" in lines_of(captured.out, "01_next.ipynb")[0]
    assert sorted(p.name for p in notebooks.iterdir()) == ["00_slow.ipynb", "01_next.ipynb"]
    for name in ("00_slow.ipynb", "01_next.ipynb"):
        assert "papermill" not in nbformat.read(notebooks / name, as_version=4).metadata
    ran = nbformat.read(notebooks / "01_next.ipynb", as_version=4)
    assert ran.cells[1].outputs[0]["text"] == "next ran\n"


def test_a_bad_cell_timeout_is_one_line(tmp_path, capsys):
    from anncore.__main__ import main

    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    write_notebook(notebooks / "00_a.ipynb")
    assert main(["course", "--notebooks", str(notebooks), "--in-place", "--cell-timeout", "0"]) == 2
    assert "--cell-timeout 0: expected a positive number of seconds" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a process group")
def test_ctrl_c_mid_cell_exits_130_with_the_summary_and_the_rest_skipped(tmp_path):
    """A real Ctrl-C (SIGINT) in the course command while a cell runs, --keep-going or not: exit 130, one line on
    stderr naming the notebook and cell, the summary with the notebook interrupted and the next one skipped."""
    notebooks, params, out = tmp_path / "nb", tmp_path / "params", tmp_path / "runs"
    notebooks.mkdir(), params.mkdir()
    write_cells(notebooks / "00_slow.ipynb", "print('before')", "import time\ntime.sleep(120)")
    write_cells(notebooks / "01_next.ipynb", "print('next ran')")
    argv = [sys.executable, "-m", "anncore", "course", "--notebooks", str(notebooks), "--params", str(params)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with subprocess.Popen(
        [*argv, "--out", str(out), "--keep-going"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job would ignore it
    ) as course:  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and course.poll() is None:
            kept = list(out.glob("*/00_slow.ipynb"))
            if kept and started_cell(kept[0]) == 2:  # the sleeping cell (0-based) has started
                break
            time.sleep(0.2)
        course.send_signal(signal.SIGINT)
        stdout, stderr = course.communicate(timeout=120)
    assert course.returncode == 130, stderr
    (line,) = stderr.strip().splitlines()
    (summary,) = out.glob("*/summary.json")
    assert line == f"interrupted in 00_slow.ipynb at cell 3 after {json.loads(summary.read_text())[0]['seconds']} s; " \
        f"summary of what ran: {summary}", line  # fmt: skip
    rows = json.loads(summary.read_text())
    assert [(r["notebook"], r["status"], r.get("cell")) for r in rows] == [
        ("00_slow.ipynb", "interrupted", 3), ("01_next.ipynb", "skipped", None)
    ]  # fmt: skip
    assert "skipped (not run: the interrupt)" in lines_of(stdout, "01_next.ipynb")[0]
