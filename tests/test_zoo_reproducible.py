"""Zoo trainings reproduce (issue 32, item 5): the same recipe, seed and thread count give the same weights bit for
bit from an empty cache; the thread count is part of the cache key; the process is put back afterwards; the MiniLM
head folds no dead dim of the pooled embedding into a huge weight."""

import numpy as np
import pytest
import torch
from test_global_state import differences

from unitscope.core.state import process_snapshot
from unitscope.zoo import digits_cnn
from unitscope.zoo.cache import cached_state, entry_path, entry_recipe, reproducible, state_digest
from unitscope.zoo.digits_vae import digits_vae


def _fresh(monkeypatch, path):
    path.mkdir()
    monkeypatch.setenv("UNITSCOPE_CACHE", str(path))


def test_two_empty_caches_give_identical_weights(tmp_path, monkeypatch):
    runs = []
    for name in ("a", "b"):
        _fresh(monkeypatch, tmp_path / name)
        cnn = digits_cnn(epochs=2, progress=False)
        vae = digits_vae(epochs=3, progress=False)
        assert not cnn.cached and not vae.cached
        runs.append((cnn, vae))
    (cnn_a, vae_a), (cnn_b, vae_b) = runs
    for a, b in ((cnn_a, cnn_b), (vae_a, vae_b)):
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert a.info["state_sha256"] == b.info["state_sha256"] == state_digest(sa)
        assert a.info["trained_with"]["threads"] == 1 and a.info["trained_with"]["deterministic"]
    assert cnn_a.info["test_accuracy"] == cnn_b.info["test_accuracy"]
    # both files hold the same recipe under the same name
    names = [sorted(p.name for p in (tmp_path / side).glob("*.pt")) for side in ("a", "b")]
    assert names[0] == names[1]


def test_the_thread_count_is_part_of_the_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("UNITSCOPE_CACHE", str(tmp_path))
    recipe = {"model": "toy", "seed": 0}
    assert entry_recipe(recipe, threads=2) == {"model": "toy", "seed": 0, "threads": 2}
    assert entry_path("toy", recipe, threads=1) != entry_path("toy", recipe, threads=2)
    seen = []

    def train():
        seen.append(torch.get_num_threads())
        return {"w": torch.ones(1)}, {}

    with torch.random.fork_rng(devices=[]):
        _, info1, c1 = cached_state("toy", recipe, train, threads=1)
        _, info2, c2 = cached_state("toy", recipe, train, threads=2)
        _, _, c3 = cached_state("toy", recipe, train, threads=2)
    assert (c1, c2, c3) == (False, False, True) and seen == [1, 2]  # each count trains on that many threads
    assert (info1["trained_with"]["threads"], info2["trained_with"]["threads"]) == (1, 2)
    assert entry_path("toy", recipe, threads=2).exists()


class _Asked(Exception):
    pass


def test_every_zoo_trainer_passes_its_thread_count(monkeypatch):
    """Each trainer hands its ``threads`` to ``cached_state`` (which keys and trains by it); 1 by default."""
    import importlib
    import inspect

    seen = []

    def fake(name, recipe, train, *, threads=1):
        seen.append((name, threads))
        raise _Asked

    trainers = {
        "digits": "digits_cnn",
        "digits_vae": "digits_vae",
        "sentiment": "sentiment_cnn",
        "minilm_vectors": "word_vectors",
    }
    for module, name in trainers.items():
        mod = importlib.import_module(f"unitscope.zoo.{module}")
        monkeypatch.setattr(mod, "cached_state", fake)
        for kw in ({}, {"threads": 3}):
            with pytest.raises(_Asked):
                getattr(mod, name)(progress=False, **kw)
    assert seen == [(n, t) for n in ("digits-cnn", "digits-vae", "sentiment-cnn", "minilm-vectors") for t in (1, 3)]
    from unitscope.zoo.digits import digits_mlp, digits_shallow_cnn, digits_vgg
    from unitscope.zoo.minilm import minilm_sentiment

    for f in (digits_vgg, digits_mlp, digits_shallow_cnn, minilm_sentiment):
        assert inspect.signature(f).parameters["threads"].default == 1, f


def test_training_leaves_the_process_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setenv("UNITSCOPE_CACHE", str(tmp_path))
    torch.use_deterministic_algorithms(True, warn_only=True)  # a caller's own setting, not the zoo's
    try:
        before = process_snapshot()
        inside = []

        def train():
            inside.append(
                (
                    torch.get_num_threads(),
                    torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled(),
                )
            )
            torch.manual_seed(123)
            torch.set_grad_enabled(False)
            np.random.seed(5)
            return {"w": torch.randn(3)}, {}

        cached_state("toy", {"a": 1}, train, threads=1)
        assert inside == [(1, True, False)]
        assert differences(before, process_snapshot()) == []
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    with reproducible(1):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError), reproducible(1):
        raise RuntimeError("the training failed")
    assert not torch.are_deterministic_algorithms_enabled()


def _pooled_like(n, seed, dead=(5, 11, 17)):
    """Sentence embeddings as MiniLM's pooled ones look: most dims spread ≈0.2, three dims constant up to rounding
    (≈1e-32 around 0, and ≈2e-9 around −1e-7)."""
    g = np.random.default_rng(seed)
    Z = (0.2 * g.normal(size=(n, 24))).astype(np.float32)
    Z[:, dead[0]] = 1e-32 * g.normal(size=n)
    Z[:, dead[1]] = 1e-32 * g.normal(size=n)
    Z[:, dead[2]] = -1e-7 + 2e-9 * g.normal(size=n)
    y = (Z[:, :4].sum(1) + 0.1 * g.normal(size=n) > 0).astype(np.int64)
    return Z, y


def test_the_folded_head_gives_dead_dims_no_weight(monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from unitscope.zoo import minilm

    monkeypatch.setattr(minilm, "HIDDEN", 24)
    Z, y = {}, {}
    for k, s in (("train", 0), ("dev", 1), ("test", 2)):
        Z[k], y[k] = _pooled_like(400, s)
    scaler, clf, dead, X, _ = minilm._fit_head(Z, y, (0.1, 1.0), seed=0)
    assert np.flatnonzero(dead).tolist() == [5, 11, 17]
    assert np.all(clf.coef_[0][dead] == 0)  # never read by the classifier
    head = minilm._fold(scaler, clf, dead)
    w = head.weight.detach()
    assert torch.isfinite(w).all() and float(w.abs().max()) < 1e3 and torch.all(w[:, [5, 11, 17]] == 0)
    # the head's log-odds are the classifier's decision function on normal inputs, to float32 rounding
    with torch.no_grad():
        lo = head(torch.from_numpy(Z["test"])).double()
    d = clf.decision_function(X["test"])
    assert np.allclose((lo[:, 1] - lo[:, 0]).numpy(), d, rtol=1e-5, atol=1e-5)
    # and a rounding-level change of a dead dim's input leaves them (it moved the logit by O(1) before)
    bumped = Z["test"].copy()
    bumped[:, 17] += 1e-7
    with torch.no_grad():
        assert torch.allclose(head(torch.from_numpy(bumped)), head(torch.from_numpy(Z["test"])), atol=1e-6)
    # what the fold without the dead-dim rule gives on the same data: weights ~1e31 (the bug)
    raw = StandardScaler().fit(Z["train"])
    old = LogisticRegression(C=1.0, max_iter=2000).fit(raw.transform(Z["train"]), y["train"])
    assert float(np.abs(old.coef_[0] / raw.scale_).max()) > 1e6
