"""The Representative Substitution study: its parts on hand-made cases, and the entry point's contract."""

import json
import math
import os

import pytest
import torch
import torch.nn as nn

from unitscope.data.ablation import ablate
from unitscope.data.selectivity import Selectivity
from unitscope.studies import substitution as study


pytestmark = pytest.mark.usefixtures("one_thread")


def _sel(index, class_means):
    cm = torch.tensor(class_means)
    return Selectivity(torch.tensor(index), cm, torch.ones(cm.shape[0], dtype=torch.long), cm.argmax(0))


def test_spearman_known_values_and_constant_input():
    assert study.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert study.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(study.spearman([0, 0, 0, 0], [1, 2, 3, 4]))


def test_live_units_and_even_pick_over_the_selectivity_ranking():
    sel = _sel([0.9, 0.0, 0.1, 0.5, 0.3, 0.7], [[1.0, 0, 1, 1, 1, 1], [0.0, 0, 2, 0, 1, 3]])
    assert study.live_units(sel).tolist() == [True, False, True, True, True, True]
    assert study.pick_units(sel, None).tolist() == list(range(6))
    # live units ranked by SI: 2 (0.1), 4 (0.3), 3 (0.5), 5 (0.7), 0 (0.9); 3 evenly spread: 2, 3, 0
    assert study.pick_units(sel, 3).tolist() == [0, 2, 3]


def test_ablation_curves_follow_the_selectivity_order():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    si = torch.tensor([0.2, 0.9, 0.5, 0.0, 0.7, 0.4])
    live = torch.tensor([True, True, True, False, True, True])
    fr = [0.0, 0.4, 1.0]
    curves = study.ablation_curves(net, "1", si, x, y, fractions=fr, seed=0, random_repeats=2, live=live)

    def acc(units):
        with ablate(net, {"1": units}) if units else torch.no_grad():
            return float((net(x).argmax(1) == y).float().mean())

    # 5 live units: 40 % = 2 units; high first = units 1 (0.9), 4 (0.7); low first = 0 (0.2), 5 (0.4)
    assert curves["high_first"] == pytest.approx([acc([]), acc([1, 4]), acc([0, 1, 2, 4, 5])])
    assert curves["low_first"] == pytest.approx([acc([]), acc([0, 5]), acc([0, 1, 2, 4, 5])])
    assert curves["random"][0] == pytest.approx(acc([]))
    assert curves["random"][2] == pytest.approx(curves["high_first"][2])
    assert not any(p.grad is not None for p in net.parameters()) and net[1]._forward_hooks == {}


def test_batches_is_a_generator_of_slices():
    x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
    parts = list(study.batches(x, y, size=4))
    assert [len(b[1]) for b in parts] == [4, 4, 2] and torch.equal(torch.cat([b[0] for b in parts]), x)


def test_entry_point_contract(tmp_path, monkeypatch, capsys):
    # the cached zoo CNN (shared with other tests) and two of its layers keep this under a few seconds
    monkeypatch.setattr(study, "MODELS", {"cnn": ("digits_cnn", ["features.relu4", "classifier.relu"])})
    out = tmp_path / "rs"
    summary = study.main(["--quick", "--out", str(out), "--no-efficientnet"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(summary))
    assert json.load(open(out / "substitution.json")) == json.loads(last)
    rho = summary["spearman_by_layer"]["cnn"]
    assert set(rho) == {"features.relu4", "classifier.relu"}
    for v in rho.values():
        assert set(v) == {"iam", "am"}
        assert all(r is None or -1 <= r <= 1 for r in v.values())
    acc = summary["ablation_accuracy"]["cnn"]
    assert set(acc) == {"high_first", "low_first", "random"}
    for layer in rho:
        curves = [acc[o][layer] for o in acc]
        assert all(len(c) == len(summary["ablation_fractions"]) for c in curves)
        assert len({c[0] for c in curves}) == 1 and len({c[-1] for c in curves}) == 1  # nothing / everything off
        assert curves[0][0] > 0.9 and curves[0][-1] < 0.3  # all live units of a layer off: near chance
    for name in summary["figures"] + summary["tables"]:
        assert os.path.getsize(out / name) > 0
    units = (out / "substitution_units.csv").read_text().splitlines()
    assert units[0].startswith("model,layer,unit,selectivity") and len(units) == 1 + 2 * 16
