"""The demo's bar shows a running study's steps, not its data (issue 30 item 6)."""

import json

from unitscope import demo


def test_a_long_last_line_is_never_shown_from_its_middle(tmp_path):
    # the study's JSON summary, longer than the part of the log that is read, printed after its last step
    summary = json.dumps(
        {
            "study": "substitution",
            "rows": [{"re_am_increased": 0.9375, "share_am_still_off": 0.0, "sentence": "a gripping , moving film"}]
            * 200,
        }
    )
    assert len(summary) > 2 * demo._TAIL_BYTES
    log = tmp_path / "log.txt"
    log.write_text("step 3/4: RS of every layer\n" + summary + "\n")
    assert demo._last_line(str(log)) == ""  # no complete line in the window: nothing new
    log.write_text("step 3/4: RS of every layer\n" + summary[:100] + "\nstep 4/4: done\n")
    assert demo._last_line(str(log)) == "step 4/4: done"
    log.write_text("x" * (demo._TAIL_BYTES + 10) + "\nstep 2/4: IAM\n")  # a long first line cut by the window
    assert demo._last_line(str(log)) == "step 2/4: IAM"


def test_only_steps_reach_the_bar(monkeypatch):
    said = []
    show = demo._progress_shower("transformer", outer=None, tty=False, echo=said.append)
    real = demo.time.perf_counter
    monkeypatch.setattr(demo.time, "perf_counter", lambda: real() + 3600)
    data = [
        're_am_increased": 0.9375, "share_am_still_off": 0.0}',
        '"a gripping , moving film ."',
        "[1, 2, 3]",
        "/x/y.py:12: UserWarning: the gap is large",
        "warnings.warn(",
        "Traceback (most recent call last):",
        '{"study": "transformer"}',
        "   ",
    ]
    for line in data:
        show(line)
    assert said == []
    for k, line in enumerate(
        [
            "scores: 24 test sentences, 4 scores × 18 sites, 32 adaptive path points",
            "training the sentiment CNN: 3/20 epochs, 12 s elapsed, about 70 s left",
        ]
    ):
        monkeypatch.setattr(demo.time, "perf_counter", lambda k=k: real() + 3600 * (2 + k))  # an hour later each
        show(line)
    assert [s.split("] ", 1)[1] for s in said] == [
        "scores: 24 test sentences, 4 scores × 18 sites, 32 adaptive path points",
        "training the sentiment CNN: 3/20 epochs, 12 s elapsed, about 70 s left",
    ]


def test_the_bar_on_a_terminal_carries_steps_only():
    class Bar:
        postfix = None

        def set_postfix_str(self, s, refresh=True):
            self.postfix = s

    bar = Bar()
    show = demo._progress_shower("substitution", outer=bar, tty=True, echo=None)
    show("model 1/3: digits-cnn (digits_cnn; trained on first use, then cached)")
    show('re_am_increased": 0.9375, "share_am_still_off": 0.0')
    assert bar.postfix == "model 1/3: digits-cnn (digits_cnn; trained on first use, then cached)"
