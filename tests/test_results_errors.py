"""Every number with its error where the user reads it: ``Scores.top``/``to_frame``/``summary``/``plot``, the scan's
standard errors, the CLI's importance figure, and figures and pages from Python (``Atlas.save``)."""

import json
import sys

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn as nn

import unitscope as us
from nets import cnn
from unitscope.attribution.results import ERROR_MEANING, SIGN_COLOURS, Scores
from unitscope.report.figures import DIVERGING, importance_bars


@pytest.fixture(scope="module")
def scored():
    torch.manual_seed(0)
    net, x = cnn(41), torch.randn(3, 3, 8, 8)
    return net, x, us.conductance(net, x, ["3", "6"], n_steps=10, path=us.PathConfig(gap_warning=None))


def test_top_returns_the_error_of_each_value(scored):
    _, _, s = scored
    t = s.top("3", k=4)
    assert t.errors.shape == t.values.shape == (3, 4)
    torch.testing.assert_close(t.errors, s.unit_error["3"].gather(1, t.indices))  # channels: the layer's own estimate
    assert bool((t.errors > 0).all())
    el = s.top("3", k=5, channels=False)  # single elements
    torch.testing.assert_close(el.errors, s.error["3"].abs().reshape(3, -1).gather(1, el.indices))
    torch.testing.assert_close(s.per_unit_error("6"), s.unit_error["6"])


def test_activation_has_zero_error_and_an_unestimated_score_nan():
    net, x = cnn(41), torch.randn(2, 3, 8, 8)
    a = us.activation(net, x, ["3"])
    assert torch.equal(a.top("3", k=3).errors, torch.zeros(2, 3))
    captum = us.conductance(
        net,
        x,
        ["3"],
        n_steps=8,
        path=us.PathConfig(gap_warning=None, captum_compatible=True),
        method="riemann_trapezoid",
    )
    assert bool(torch.isnan(captum.top("3", k=3).errors).all())
    assert captum.to_frame(per_channel=True)["error"].isna().all()
    assert (a.to_frame()["error"] == 0).all()


def test_units_that_only_look_like_the_estimated_ones_get_the_sum_of_their_elements_errors():
    # Conv1d [N, C, L] with C == L: the engine's per-unit estimate is over dim 1 ([N, L]), the units are channels
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    s = us.conductance(net, torch.randn(2, 2, 6), ["1"], n_steps=8, path=us.PathConfig(gap_warning=None))
    assert s["1"].shape == (2, 4, 4) and s.unit_error["1"].shape == (2, 4)
    torch.testing.assert_close(s.per_unit_error("1"), s.error["1"].abs().sum(2))


def test_to_frame_and_summary_show_the_errors(scored):
    _, _, s = scored
    frame = s.to_frame(per_channel=True)
    row = frame[(frame.layer == "3") & (frame.example == 2) & (frame.unit == 5)]
    assert float(row.error.iloc[0]) == pytest.approx(float(s.unit_error["3"][2, 5]), rel=1e-6)
    assert list(frame.columns).index("error") == list(frame.columns).index("value") + 1
    per_unit = s.to_frame(per_unit=True)
    np.testing.assert_allclose(
        per_unit[per_unit.layer == "6"].error.to_numpy(), s.unit_error["6"].reshape(-1).numpy(), rtol=1e-6
    )
    elements = s.to_frame()
    np.testing.assert_allclose(
        elements[elements.layer == "6"].error.to_numpy(), s.error["6"].abs().reshape(-1).numpy(), rtol=1e-6
    )
    text = s.summary(k=2)
    mean, err = s.per_unit("3").mean(0), s.unit_error["3"].mean(0)
    best = int(mean.argmax())
    assert f"{best}({float(mean[best]):+.3g}±{float(err[best]):.2g})" in text
    assert "±" in s._repr_html_()


def test_docstrings_say_what_the_error_means_with_the_measured_coverage():
    assert "3 ×" in ERROR_MEANING and "98 %" in ERROR_MEANING and "bench/error_calibration.py" in ERROR_MEANING
    assert ERROR_MEANING in sys.modules["unitscope.attribution.results"].__doc__
    for doc in (Scores.__doc__, Scores.top.__doc__, Scores.to_frame.__doc__, Scores.plot.__doc__):
        assert "3 ×" in doc and "98 %" in doc


def _bars(ax):
    return [p for c in ax.containers if isinstance(c, matplotlib.container.BarContainer) for p in c]


def _errorbars(ax):
    return [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]


def test_plot_draws_the_top_units_with_error_bars_and_leaves_matplotlib_alone(scored):
    from matplotlib.figure import Figure

    _, _, s = scored
    backend, params = matplotlib.get_backend(), dict(matplotlib.rcParams)
    fig = s.plot("3", k=5)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    mean, err = s.per_unit("3").mean(0), s.unit_error["3"].mean(0)
    want = mean.abs().topk(5).indices.tolist()
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(i) for i in want]
    bars = _bars(ax)
    np.testing.assert_allclose([b.get_height() for b in bars], mean[want].numpy(), rtol=1e-5)
    red, blue = (matplotlib.colors.to_rgba(c) for c in SIGN_COLOURS)
    assert [b.get_facecolor() for b in bars] == [red if float(mean[i]) >= 0 else blue for i in want]
    (eb,) = _errorbars(ax)
    segments = eb.lines[2][0].get_segments()
    np.testing.assert_allclose([seg[1][1] - seg[0][1] for seg in segments], 2 * err[want].numpy(), rtol=1e-5)
    one = s.plot("6", k=3, example=1)
    assert "example 1" in one.axes[0].get_ylabel()
    import matplotlib.figure as mfig

    own = mfig.Figure()
    ax2 = own.add_subplot()
    assert s.plot("6", k=3, ax=ax2) is own and len(_bars(ax2)) == 3
    with pytest.raises(us.UnitscopeError, match="example 7 does not exist: the scores have 3 examples"):
        s.plot("3", example=7)
    assert matplotlib.get_backend() == backend
    assert {k: v for k, v in matplotlib.rcParams.items() if params.get(k) != v and k != "backend"} == {}
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_activation_plot_has_no_error_bars():
    net, x = cnn(41), torch.randn(2, 3, 8, 8)
    fig = us.activation(net, x, ["3"]).plot("3", k=4)
    assert _errorbars(fig.axes[0]) == [] and len(_bars(fig.axes[0])) == 4


def test_scan_result_sem_frame_and_plot():
    from unitscope.data.accumulators import UnitStats
    from unitscope.data.scan_result import ScanResult

    values = torch.tensor([[1.0, -4.0, 2.0], [3.0, -2.0, 2.0], [2.0, -6.0, 2.0]], dtype=torch.float64)
    st = UnitStats.empty(3, 2, False)
    st.update(values, None, torch.arange(3))
    r = ScanResult({"activation": {"fc": st}}, 3, None, {})
    want = values.std(0, unbiased=True) / 3**0.5
    torch.testing.assert_close(r.sem("fc"), want)
    assert r.to_frame()["sem"].tolist() == pytest.approx(want.tolist())
    assert r.top("fc").errors is None
    fig = r.plot("fc", k=2)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "0"]
    (eb,) = _errorbars(ax)
    seg = eb.lines[2][0].get_segments()
    assert seg[0][1][1] - seg[0][0][1] == pytest.approx(2 * float(want[1]))


def test_the_cli_importance_figure_helper_draws_error_bars(scored):
    _, _, s = scored
    frame = s.to_frame(per_channel=True)
    fig = importance_bars(frame, "3", top=6)
    ax = fig.axes[0]
    mean = frame[frame.layer == "3"].groupby("channel")["value"].mean()
    err = frame[frame.layer == "3"].groupby("channel")["error"].mean()
    best = mean.abs().sort_values(ascending=False).index[:6]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in best]
    (eb,) = _errorbars(ax)
    seg = eb.lines[2][0].get_segments()
    np.testing.assert_allclose([g[1][1] - g[0][1] for g in seg], 2 * err.loc[best].to_numpy(), rtol=1e-5)


def test_one_sign_convention_red_positive():
    from matplotlib import colormaps

    cmap = colormaps[DIVERGING]
    r, _, b, _ = cmap(1.0)
    assert r > b  # the top of the map (positive) is red
    r, _, b, _ = cmap(0.0)
    assert b > r
    assert SIGN_COLOURS == ("tab:red", "tab:blue")
    from unitscope.report.atlas_html import _signed_rgb

    rgb = _signed_rgb(torch.tensor([[[1.0, -1.0]]]))
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[0, 1].tolist() == [0, 0, 255]


def test_atlas_save_writes_the_page_and_the_report_shows_it(tmp_path, capsys):
    from unitscope.cli import main

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 36, 2))
    a = us.atlas(
        net,
        (torch.rand(8, 1, 8, 8), torch.arange(8) % 2),
        layers=["1"],
        top_k=2,
        path=us.PathConfig(n_steps=4),
        synthesis=us.SynthesisConfig(iam_steps=4, inverse_samples=2, inverse_steps=4),
        progress=False,
    )
    a.save(tmp_path / "data-only", html=False)
    assert sorted(p.name for p in (tmp_path / "data-only").iterdir()) == ["atlas.json", "atlas_tensors.pt"]
    a.save(tmp_path / "atlas", title="My atlas")
    page = (tmp_path / "atlas" / "index.html").read_text()
    assert "<title>My atlas</title>" in page and (tmp_path / "atlas" / "img").is_dir()
    assert json.loads((tmp_path / "atlas" / "manifest.json").read_text())["links"][0]["path"] == "index.html"
    assert main(["report", str(tmp_path / "atlas")]) == 0
    assert "index.html" in (tmp_path / "atlas" / "report.html").read_text()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "data-only")]) == 2  # atlas.json alone: nothing to show
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nothing to report in" in err and "Atlas.save" in err
