"""Progress a person can follow: tqdm on a terminal, a line every few seconds in a log, the demo's echo of a running
study's last line."""

import subprocess
import sys
import textwrap

from unitscope import demo
from unitscope.core.progress import LogBar, bar


def test_log_mode_prints_lines_with_the_time_left(tmp_path):
    code = textwrap.dedent("""
        import time
        from unitscope.core.progress import bar, note
        note("training the toy model once, then cached in /tmp/x")
        for _ in bar(range(4), desc="training the toy model", unit="epoch"):
            time.sleep(0.3)
    """)
    env = {
        "UNITSCOPE_PROGRESS": "log",
        "UNITSCOPE_PROGRESS_SECONDS": "0.2",
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": ":".join(sys.path),
    }
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0] == "training the toy model once, then cached in /tmp/x"
    assert any("about" in ln and "left" in ln for ln in lines[1:]), lines
    assert lines[-1].startswith("training the toy model: 4/4 epochs, ") and "left" not in lines[-1]
    assert "\r" not in res.stderr


def test_no_lines_outside_log_mode_and_none_when_disabled(monkeypatch, capsys):
    monkeypatch.delenv("UNITSCOPE_PROGRESS", raising=False)
    assert list(bar(range(3), desc="x")) == [0, 1, 2]
    monkeypatch.setenv("UNITSCOPE_PROGRESS", "log")
    assert list(bar(range(3), desc="x", progress=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    b = bar(range(2), desc="y")
    assert isinstance(b, LogBar) and list(b) == [0, 1]
    assert capsys.readouterr().err == ""  # shorter than UNITSCOPE_PROGRESS_SECONDS (5 s): silent
    monkeypatch.setenv("UNITSCOPE_PROGRESS_SECONDS", "0")
    assert list(bar(range(2), desc="y")) == [0, 1]
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("y: 2/2 its")


def test_demo_echoes_the_running_studys_last_line(tmp_path, monkeypatch):
    log = tmp_path / "log.txt"
    log.write_text("first\nstep 2/3: sampling\r\n\n")
    assert demo._last_line(str(log)) == "step 2/3: sampling"
    assert demo._last_line(str(tmp_path / "missing.txt")) == ""
    said = []
    show = demo._progress_shower("inverse", outer=None, tty=False, echo=said.append)
    show("step 1/3")  # too soon after the start: nothing yet
    real = demo.time.perf_counter
    monkeypatch.setattr(demo.time, "perf_counter", lambda: real() + 3600)
    show('{"json": "last line"}')  # the JSON summary is not progress
    show("step 2/3: sampling")
    assert said == ["  [inverse] step 2/3: sampling"]


def _fake_python(tmp_path, lines, seconds):
    """An interpreter stand-in for ``run_study``: prints ``lines`` over ``seconds``, then a JSON last line."""
    script = tmp_path / "fake-python"
    body = "".join(f"print({ln!r}, flush=True); time.sleep({seconds / len(lines)})\n" for ln in lines)
    script.write_text(f"#!{sys.executable}\nimport time\n{body}print('{{\"ok\": 1}}')\n")
    script.chmod(0o755)
    return str(script)


def test_the_study_timeout_does_not_count_first_use_training(tmp_path):
    training = [f"training the digits-cnn model on digits: {i}/6 epochs" for i in range(6)]
    st = demo.run_study(
        "digits", str(tmp_path), quick=True, seed=0, timeout=1.5, python=_fake_python(tmp_path, training, 4.0)
    )
    assert st["status"] == "ok" and st["result"] == {"ok": 1}
    assert st["seconds"] > 3.5 and st["training_seconds"] > 2.0

    analysis = [f"step {i}/6: conductance" for i in range(6)]
    st = demo.run_study(
        "digits", str(tmp_path), quick=True, seed=0, timeout=1.5, python=_fake_python(tmp_path, analysis, 4.0)
    )
    assert st["status"] == "timeout" and "stopped after 2 s of analysis" in st["error"]
    assert "training_seconds" not in st
