"""Dataset-scale scans: exact accumulators, selectivity on hand-built data, 2 processes (gloo) = 1 process,
kill-and-resume, the command line."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset

from unitscope import PathConfig, StreamConfig
from unitscope.core.errors import UnitscopeError
from unitscope.cli.scan import scan_main
from unitscope.data.scan import ScanResult, merge_top, scan
from unitscope.attribution.scores import attribute
from unitscope.data.scan import class_selectivity
from ports import free_port

ROOT = Path(__file__).resolve().parents[1]


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 8),
        nn.ReLU(),
        nn.Linear(8, 4),
    )


def small_data(n=61, seed=1):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, 4, (n,), generator=g))


LAYERS = ["1", "5"]
METHODS = ["activation", "conductance", "grad_x_activation"]


def reference(model, loader, layers, methods, n_steps, k):
    """Every example's per-unit score kept in memory, then plain numpy statistics."""
    values = {m: {name: [] for name in layers} for m in methods}
    labels, index = [], []
    pos = 0
    for x, y in loader:
        s = attribute(
            model, x, layers, scores=methods, n_steps=n_steps, path=PathConfig(gap_warning=None), progress=False
        )
        for m in methods:
            for name in layers:
                v = s[m][name]
                if v.dim() > 2:
                    v = v.flatten(2).mean(2) if m == "activation" else v.flatten(2).sum(2)
                values[m][name].append(v.double().numpy())
        labels.append(y.numpy())
        index.append(np.arange(pos, pos + len(y)))
        pos += len(y)
    labels, index = np.concatenate(labels), np.concatenate(index)
    out = {}
    for m in methods:
        for name in layers:
            v = np.concatenate(values[m][name])  # [N, U]
            top_i = np.stack([index[np.lexsort((index, -v[:, u]))][:k] for u in range(v.shape[1])])
            top_v = np.stack([v[np.lexsort((index, -v[:, u])), u][:k] for u in range(v.shape[1])])
            out[m, name] = dict(
                mean=v.mean(0),
                std=v.std(0),
                std1=v.std(0, ddof=1),
                class_means=np.stack([v[labels == c].mean(0) for c in np.unique(labels)]),
                top_i=top_i,
                top_v=top_v,
            )
    return out, labels


def test_accumulators_exact_against_in_memory_statistics():
    model, data = small_cnn(), small_data()
    loader = DataLoader(data, batch_size=7)  # the last batch is short
    r = scan(model, loader, LAYERS, scores=METHODS, top_k=5, path=PathConfig(n_steps=6), progress=False)
    ref, labels = reference(model, loader, LAYERS, METHODS, 6, 5)
    assert r.count == len(data)
    assert r.classes.tolist() == np.unique(labels).tolist()
    assert r.class_counts[r.classes].tolist() == np.bincount(labels).tolist()
    for (m, name), want in ref.items():
        np.testing.assert_allclose(r.mean(name, score=m).numpy(), want["mean"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(r.std(name, score=m).numpy(), want["std"], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(r.std(name, score=m, ddof=1).numpy(), want["std1"], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(r.class_means(name, score=m).numpy(), want["class_means"], rtol=1e-12, atol=1e-12)
        top = r.top(name, score=m)
        assert top.indices.tolist() == want["top_i"].tolist(), (m, name)
        np.testing.assert_array_equal(top.values.numpy(), want["top_v"])
    # the same batches as a plain list of (x, y): positions are the dataset's indices here too
    r2 = scan(model, list(loader), LAYERS, scores=METHODS, top_k=5, path=PathConfig(n_steps=6), progress=False)
    assert torch.equal(r2.top("5", score="conductance").indices, r.top("5", score="conductance").indices)
    frame = r.to_frame()
    assert len(frame) == len(METHODS) * (6 + 8) and {"selectivity", "preferred_class", "top_examples"} <= set(frame)


def test_top_k_ties_go_to_the_lower_index_and_sampler_indices_are_dataset_indices():
    v, i = merge_top(torch.tensor([[0.0, 5.0, 0.0, 5.0]]), torch.tensor([[8, 3, 2, 1]]), 3)
    assert i.tolist() == [[1, 3, 2]] and v.tolist() == [[5.0, 5.0, 0.0]]
    model, data = small_cnn(), small_data()
    chosen = [3, 10, 11, 40, 52, 57]
    loader = DataLoader(data, batch_size=4, sampler=SubsetRandomSampler(chosen))
    r = scan(model, loader, ["5"], by=None, top_k=3, progress=False)
    assert r.count == len(chosen) and r.class_counts is None
    assert set(r.top("5").indices.flatten().tolist()) <= set(chosen)
    acts = attribute(model, data.tensors[0][chosen], ["5"], scores=["activation"])["activation"]["5"].double()
    np.testing.assert_allclose(r.mean("5").numpy(), acts.mean(0).numpy(), rtol=1e-6)
    with pytest.raises(UnitscopeError, match="by='class'"):
        r.class_means("5")
    with pytest.raises(UnitscopeError, match="closest|scanned layers"):
        r.mean("6")


def test_selectivity_exact_on_a_hand_built_loader():
    # the model passes its input through a ReLU: the activations are the inputs, [N, 2 channels, 2, 1]
    model = nn.Sequential(nn.ReLU())
    acts = torch.tensor([[4.0, 1.0], [2.0, 1.0], [0.0, 3.0], [0.0, 5.0], [0.0, 1.0]])
    x = torch.stack([acts * 1.5, acts * 0.5], dim=2).unsqueeze(3)  # spatial mean = acts, values ≥ 0
    y = torch.tensor([0, 0, 1, 2, 2])
    loader = [(x[:2], y[:2]), (x[2:3], y[2:3]), (x[3:], y[3:])]
    sel = class_selectivity(model, loader, ["0"], eps=0.0)["0"]
    # unit 0: class means 3, 0, 0 → SI = (3 − 0)/(3 + 0) = 1; unit 1: 1, 3, 3 → (3 − 2)/(3 + 2) = 0.2
    assert sel.class_means.tolist() == [[3.0, 1.0], [0.0, 3.0], [0.0, 3.0]]
    assert sel.counts.tolist() == [2, 1, 2]
    assert sel.index.tolist() == pytest.approx([1.0, 0.2])
    assert sel.preferred.tolist() == [0, 1]
    # a class that never occurs is left out; labels beyond num_classes are an error
    y_gap = torch.tensor([0, 0, 3, 3, 3])
    sel = class_selectivity(model, [(x, y_gap)], ["0"], num_classes=4, eps=0.0)["0"]
    assert sel.counts.tolist() == [2, 3] and sel.preferred.tolist() == [0, 3]
    assert sel.index.tolist() == pytest.approx([1.0, (3 - 1) / (3 + 1)])
    with pytest.raises(UnitscopeError, match="labels out of range"):
        class_selectivity(model, [(x, y)], ["0"], num_classes=2)


def _worker(rank, port, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        model, data = small_cnn(), small_data()
        world = dist.group.WORLD
        r = scan(
            model,
            DataLoader(data, batch_size=9),
            LAYERS,
            scores=METHODS,
            top_k=4,
            path=PathConfig(n_steps=6),
            stream=StreamConfig(group=world),
            progress=False,
        )
        r.save(Path(out) / f"rank{rank}.pt")
        # one batch only: rank 1 gets an empty shard
        r1 = scan(
            model, DataLoader(data, batch_size=100), ["5"], top_k=4, progress=False, stream=StreamConfig(group=world)
        )
        r1.save(Path(out) / f"single{rank}.pt")
    finally:
        dist.destroy_process_group()


def _assert_same(a: ScanResult, b: ScanResult, rtol):
    assert a.count == b.count and a.layers == b.layers and a.scores == b.scores
    assert torch.equal(a.class_counts, b.class_counts)
    for m in a.scores:
        for name in a.layers:
            sa, sb = a.stats[m][name], b.stats[m][name]
            for key in ("sum", "sumsq", "class_sums", "top_values", "minimum"):
                torch.testing.assert_close(getattr(sa, key), getattr(sb, key), rtol=rtol, atol=1e-12)
            assert torch.equal(sa.top_indices, sb.top_indices), (m, name)


def test_two_processes_gloo_equal_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    model, data = small_cnn(), small_data()
    one = scan(
        model,
        DataLoader(data, batch_size=9),
        LAYERS,
        scores=METHODS,
        top_k=4,
        path=PathConfig(n_steps=6),
        progress=False,
    )
    r0, r1 = ScanResult.load(tmp_path / "rank0.pt"), ScanResult.load(tmp_path / "rank1.pt")
    assert r0.settings["world_size"] == 2
    _assert_same(r0, r1, rtol=0)  # every rank holds the merged result
    _assert_same(r0, one, rtol=1e-6)
    single = scan(model, DataLoader(data, batch_size=100), ["5"], top_k=4, progress=False)
    _assert_same(ScanResult.load(tmp_path / "single1.pt"), single, rtol=1e-6)


RESUMABLE = textwrap.dedent("""
    import os, sys, time, torch
    sys.path.insert(0, {tests!r})
    from torch.utils.data import DataLoader, Dataset
    from test_scan import small_cnn, small_data, LAYERS, METHODS
    from unitscope import PathConfig, StreamConfig
    from unitscope.data.scan import scan

    torch.set_num_threads(1)

    class Slow(Dataset):  # with HANG=1 it blocks for good at example 40 (batch 5), after the checkpoint of batch 4
        def __init__(self):
            self.data = small_data(97)
        def __len__(self):
            return len(self.data)
        def __getitem__(self, i):
            while os.environ.get("HANG") == "1" and i >= 40:
                time.sleep(0.05)
            return self.data[i]

    r = scan(small_cnn(), DataLoader(Slow(), batch_size=8), LAYERS, scores=METHODS, top_k=4, progress=False,
             path=PathConfig(n_steps=6), stream=StreamConfig(checkpoint=sys.argv[1], checkpoint_every=2))
    r.save(sys.argv[2])
""")


def test_killed_scan_resumes_to_the_same_result(tmp_path):
    script = tmp_path / "resumable.py"
    script.write_text(RESUMABLE.format(tests=str(Path(__file__).parent)))
    ck, out = tmp_path / "scan.ckpt", tmp_path / "result.pt"
    env = dict(os.environ, HANG="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, str(script), str(ck), str(out)], env=env)
    try:
        deadline = time.time() + 90
        done = 0
        while time.time() < deadline and done < 4:
            assert proc.poll() is None, "the scan ended before it could be killed"
            if ck.exists():
                done = torch.load(ck, weights_only=True)["batches_done"]
            time.sleep(0.1)
        assert done == 4
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    env["HANG"] = "0"
    subprocess.run([sys.executable, str(script), str(ck), str(out)], env=env, check=True, timeout=120)
    resumed = ScanResult.load(out)
    assert resumed.settings["resumed_from_batch"] == 4
    whole = scan(
        small_cnn(),
        DataLoader(small_data(97), batch_size=8),
        LAYERS,
        scores=METHODS,
        top_k=4,
        path=PathConfig(n_steps=6),
        progress=False,
    )
    _assert_same(resumed, whole, rtol=1e-6)
    # a finished checkpoint resumes to the same result with nothing left to do; another scan's is refused
    again = scan(
        small_cnn(),
        DataLoader(small_data(97), batch_size=8),
        LAYERS,
        scores=METHODS,
        top_k=4,
        path=PathConfig(n_steps=6),
        stream=StreamConfig(checkpoint=ck),
        progress=False,
    )
    assert again.settings["resumed_from_batch"] == 13
    _assert_same(again, resumed, rtol=0)
    with pytest.raises(UnitscopeError, match="another scan.*top_k"):
        scan(
            small_cnn(),
            DataLoader(small_data(97), batch_size=8),
            LAYERS,
            scores=METHODS,
            top_k=3,
            path=PathConfig(n_steps=6),
            stream=StreamConfig(checkpoint=ck),
            progress=False,
        )


def test_errors_name_what_is_wrong():
    model, data = small_cnn(), small_data()
    with pytest.raises(UnitscopeError, match="unknown score"):
        scan(model, DataLoader(data, batch_size=8), ["1"], scores=["activations"])
    with pytest.raises(UnitscopeError, match="no labels"):
        scan(model, [data.tensors[0][:4]], ["1"])
    with pytest.raises(UnitscopeError, match="closest valid names"):
        scan(model, DataLoader(data, batch_size=8), ["7"], by=None)
    r = scan(model, [data.tensors[0][:4]], ["1"], by=None, progress=False)
    assert r.count == 4


def test_command_line_writes_tables_grids_and_summary(tmp_path, capsys):
    summary = scan_main(
        ["digits-cnn", "digits", "--quick", "--out", str(tmp_path), "--top-k", "5", "--grid-units", "4"]
    )
    printed = capsys.readouterr().out
    assert "scanned 360 examples of digits with digits-cnn" in printed and "features.relu2 · activation" in printed
    assert json.loads((tmp_path / "scan.json").read_text())["examples"] == summary["examples"] == 360
    for f in summary["files"]:
        assert (tmp_path / f).exists(), f
    assert json.loads((tmp_path / "scan.json").read_text())["layers"] == ["features.relu2", "classifier.relu"]
    assert any(f.startswith("top_conductance_") and f.endswith(".png") for f in summary["files"])
    r = ScanResult.load(tmp_path / "scan.pt")
    assert r.top("features.relu2", score="activation").indices.shape == (64, 5)


def test_top_sentences_bold_the_ngram_that_the_filter_picked():
    import re

    from unitscope.cli.scan import SentenceBatches
    from unitscope.report.scan_figures import top_sentences
    from unitscope.zoo.sentiment import SentimentCNN, TrainedSentiment, Vocab, encode, tokenize

    words = "a great film not bad very dull plot and the acting is fine but slow".split()
    g = torch.Generator().manual_seed(3)
    sentences = [
        " ".join(words[int(i)] for i in torch.randint(0, len(words), (int(n),), generator=g))
        for n in torch.randint(3, 12, (30,), generator=g)
    ]
    vocab = Vocab.build([tokenize(s) for s in sentences], min_count=1)
    torch.manual_seed(0)
    trained = TrainedSentiment(SentimentCNN(len(vocab), windows=(3, 4), maps=3).eval(), vocab, {}, False)
    labels = torch.randint(0, 2, (30,), generator=g)
    r = scan(
        trained.model, SentenceBatches(trained, sentences, labels, batch_size=8), ["filters"], top_k=3, progress=False
    )
    text = top_sentences(trained, sentences, labels, r, "activation", [1, 4])
    items = [line for line in text.splitlines() if re.match(r"\d+\. ", line)]
    assert len(items) == 6
    for u, line in zip([1] * 3 + [4] * 3, items):
        value = float(re.search(r", ([-\d.e]+)\)", line).group(1))
        bold = re.findall(r"\*\*(.+?)\*\*", line)
        w = (3, 4)[u // 3]
        assert 1 <= len(bold) <= w
        # the bold n-gram alone (zero-padded) reaches the filter's top value for that sentence
        _, emb = encode([" ".join(bold)], vocab, trained.model)
        with torch.no_grad():
            alone = float(trained.model.filters(emb)[0, u])
        assert alone == pytest.approx(value, rel=1e-2, abs=1e-3) or alone > value


def test_scan_study_entry_point_writes_grids_and_summary(tmp_path, monkeypatch):
    from unitscope.runs import scan as study

    monkeypatch.setattr(study, "SCANS", {"digits": ["digits-cnn", "digits"]})
    summary = study.main(["--quick", "--out", str(tmp_path)])
    assert summary["digits"]["examples"] == 360  # the test split, each digit once
    assert json.loads((tmp_path / "scan.json").read_text()) == json.loads(json.dumps(summary, default=float))
    grids = sorted(p.name for p in (tmp_path / "digits").glob("top_*.png"))
    assert len(grids) == 4 and all((tmp_path / "digits" / g).stat().st_size > 1000 for g in grids)


def test_selectivity_only_where_it_is_defined():
    # unit 0 is post-ReLU-like (≥ 0), unit 1 takes a negative value once: its ratio would be (3 − 0.5)/(3 + 0.5)
    # from the class means alone, but the index is not defined for signed values
    model = nn.Sequential(nn.Identity())
    x = torch.tensor([[2.0, 3.0], [4.0, 3.0], [0.0, -1.0], [0.0, 2.0]])
    y = torch.tensor([0, 0, 1, 1])
    r = scan(model, [(x[:2], y[:2]), (x[2:], y[2:])], ["0"], progress=False)
    assert r.stats["activation"]["0"].minimum.tolist() == [0.0, -1.0]
    with pytest.warns(RuntimeWarning, match="1 of 2 units take negative values"):
        sel = r.selectivity("0", eps=0.0)
    assert sel.index[0].item() == pytest.approx(1.0) and torch.isnan(sel.index[1])
    assert sel.defined.tolist() == [True, False] and "non-negative" in sel.reason
    # one class present: no unit has an index
    with pytest.warns(RuntimeWarning, match="at least two"):
        one = scan(model, [(x[:2].abs(), y[:2])], ["0"], progress=False).selectivity("0")
    assert torch.isnan(one.index).all()
    back = ScanResult.from_state(r.state_dict())
    assert torch.equal(back.stats["activation"]["0"].minimum, r.stats["activation"]["0"].minimum)
