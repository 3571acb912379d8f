"""Movie-review data (loader, checksum, tokenizer) and the sentiment CNN (embeddings in, ``filters`` layer)."""

import hashlib
import io
import json
import subprocess
import tarfile
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import torch

import unitscope as us
from unitscope.core.errors import UnitscopeError
from unitscope.studies import sentiment as st
from unitscope.zoo import rated_sentences as rs
from unitscope.zoo import sentiment as zs
from unitscope.zoo.sentiment import FILENAME, MIN_PAD, SHA256, SentimentCNN, Vocab, encode, movie_reviews, tokenize

# the real file's format: id <TAB> mean score <TAB> text, CRLF line ends, UTF-8, no line break after the last line
ROWS = [
    (1, "2.26666666667", "The Rock is destined to be the 21st Century's new ''Conan''."),
    (2, "-0.6", "Effective but too tepid biopic"),
    (3, "0.0", "A movie about people."),
    (4, "1.4375", "We\u2019ve seen the plot before, but there\u2019s an enthusiastic charm."),
    (5, "-1.8125", "It isn't funny and it doesn't try."),
    (6, "0", "Neither here nor there."),
]
ROWS += [
    (i, f"{(-1) ** i * (0.5 + i / 10):.4f}", f"Sentence number {i} is {'good' if i % 2 == 0 else 'bad'}.")
    for i in range(7, 47)
]


def _ground_truth() -> bytes:
    return "\r\n".join(f"{i}\t{s}\t{t}" for i, s, t in ROWS).encode("utf-8")


def _tar(members: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNITSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tokenizer_keeps_negations_as_tokens():
    assert tokenize("It isn't BAD.") == ["it", "is", "n't", "bad", "."]
    assert tokenize("not good, not bad") == ["not", "good", ",", "not", "bad"]
    assert tokenize("I don't, can't and won't") == ["i", "do", "n't", ",", "ca", "n't", "and", "wo", "n't"]
    assert tokenize("It doesn\u2019t work") == ["it", "does", "n't", "work"]  # curly apostrophe
    assert tokenize("the film's ''Conan'' co-writer") == ["the", "film", "'s", '"', "conan", '"', "co-writer"]
    assert tokenize("never, no, nothing, cannot") == ["never", ",", "no", ",", "nothing", ",", "cannot"]
    v = Vocab.build([tokenize("not good"), tokenize("not bad")], min_count=1)
    assert v.itos[:3] == ["<pad>", "<unk>", "not"] and v.encode(["good", "zzz"]) == [v.stoi["good"], 1]


def test_loader_parses_the_real_format_from_an_archive(cache, tmp_path):
    txt = _ground_truth()
    inner = _tar({f"hutto_ICWSM_2014/{FILENAME}": txt, "hutto_ICWSM_2014/other.txt": b"x"})
    sdist = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    sdist.write_bytes(_tar({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner}))
    sha = hashlib.sha256(txt).hexdigest()
    data = movie_reviews(source=sdist, sha256=sha)
    assert data.n_total == len(ROWS) and data.n_zero == 2
    assert len(data.train) + len(data.dev) + len(data.test) == len(ROWS) - 2
    assert (cache / "data" / FILENAME).read_bytes() == txt  # cached for next time
    everything = data.all()
    for _s, y, score in zip(everything.sentences, everything.labels, everything.scores):
        assert int(y) == int(score > 0) and score != 0
    assert "We\u2019ve seen the plot before, but there\u2019s an enthusiastic charm." in everything.sentences
    assert "Effective but too tepid biopic" in everything.sentences  # no stray CR
    assert abs(float(everything.scores[everything.sentences.index("Effective but too tepid biopic")]) + 0.6) < 1e-6
    again = movie_reviews(sha256=sha)  # from the cache, no source, no network
    assert again.test.sentences == data.test.sentences  # fixed split
    # the inner archive alone works too
    alone = tmp_path / "hutto_ICWSM_2014.tar.gz"
    alone.write_bytes(inner)
    assert movie_reviews(source=alone, sha256=sha).n_total == len(ROWS)


def test_checksum_mismatch_fails_loudly(cache, tmp_path):
    path = cache / "data" / FILENAME
    path.parent.mkdir(parents=True)
    path.write_bytes(_ground_truth())  # not the real file: the default checksum rejects it
    with pytest.raises(UnitscopeError, match="checksum mismatch") as e:
        movie_reviews()
    assert str(path) in str(e.value) and SHA256 in str(e.value)
    # a bad source is rejected and not copied into the cache
    path.unlink()
    src = tmp_path / FILENAME
    src.write_bytes(_ground_truth()[:-5])
    with pytest.raises(UnitscopeError, match="checksum mismatch"):
        movie_reviews(source=src, sha256=hashlib.sha256(_ground_truth()).hexdigest())
    assert not path.exists()


def test_failed_download_says_what_to_do(cache, monkeypatch):
    def fail(dest):
        return subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version that satisfies ...")

    monkeypatch.setattr(rs, "_pip_download", fail)
    with pytest.raises(UnitscopeError, match="pip download") as e:
        movie_reviews()
    msg = str(e.value)
    assert str(cache / "data" / FILENAME) in msg and "UNITSCOPE_CACHE" in msg and "Could not find" in msg


def _net():
    torch.manual_seed(0)
    vocab = Vocab.build([tokenize("this film is not good at all , but not bad either .")], min_count=1)
    return SentimentCNN(len(vocab)).eval(), vocab


def test_filters_layer_and_padding_invariance():
    model, vocab = _net()
    ids, emb = encode(["not good", "this film is not bad at all , but it is good ."], vocab, model)
    assert ids.shape[1] >= 2 * MIN_PAD + 2 and (ids[0, :MIN_PAD] == 0).all()
    assert torch.equal(emb[ids == 0], torch.zeros_like(emb[ids == 0]))  # padding = the zero baseline
    acts = us.activation(model, emb, ["filters", "fc", "out"])
    assert acts["filters"].shape == (2, 256) and acts["fc"].shape == (2, 10) and acts["out"].shape == (2, 2)
    _, alone = encode(["not good"], vocab, model)
    with torch.no_grad():
        assert torch.allclose(model(alone)[0], model(emb)[0], atol=1e-6)  # extra padding changes nothing
    with pytest.raises(UnitscopeError, match="embeddings"):
        model(ids)


def test_conductance_of_filters_is_complete():
    model, vocab = _net()
    _, emb = encode(["not good", "this film is not bad at all", "good ."], vocab, model)
    s = us.conductance(model, emb, ["filters"], n_steps=256, path=us.PathConfig(gap_warning=None))
    assert s["filters"].shape == (3, 256)
    assert float(s.relative_delta("filters").max()) < 5e-3
    with torch.no_grad():
        out, base = model(emb), model(torch.zeros_like(emb))
    top = out.argmax(1, keepdim=True)
    F = (out.gather(1, top) - base.gather(1, top))[:, 0]
    assert torch.allclose(s["filters"].sum(1), F, atol=5e-3 * float(F.abs().max()) + 1e-5)


# ------------------------------------------------------------------------------------ the real data --
# These use the real file: from the user cache, or downloaded with pip (vaderSentiment==3.3.2 from PyPI) when it is
# not there yet — so a fresh CI machine exercises the download, the extraction and the checksum.


def test_real_movie_reviews():
    data = movie_reviews()
    raw = data.path.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SHA256
    first = raw.decode("utf-8").splitlines()[0].split("\t")
    assert first[0] == "1" and first[1] == "2.26666666667" and first[2].startswith("The Rock is destined")
    assert data.n_total == 10605  # ids 1 … 10605 (the file has 10,604 line breaks: none after the last line)
    assert data.n_zero == 37
    n = len(data.train) + len(data.dev) + len(data.test)
    assert n == 10605 - 37 and abs(len(data.test) - n / 10) <= 1 and abs(len(data.dev) - n / 10) <= 1
    assert abs(float(data.test.labels.float().mean()) - float(data.train.labels.float().mean())) < 0.01
    everything = data.all()
    assert len(set(everything.sentences)) > 0.99 * n and (everything.labels == (everything.scores > 0)).all()
    i = everything.sentences.index(first[2])
    assert abs(float(everything.scores[i]) - 2.26666666667) < 1e-5 and int(everything.labels[i]) == 1
    assert movie_reviews().test.sentences == data.test.sentences  # the split is fixed


def test_the_other_rated_domains():
    """Tweets, Amazon and NYT snippets from the same archive: checksums, sizes, labels, the neutral cut."""
    sizes = {"tweets": 4200, "amazon": 3708, "nyt": 5190}
    for domain, n in sizes.items():
        path = rs.ground_truth_path(domain)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == rs.DOMAINS[domain][1]
        every = rs.rated_sentences(domain, min_abs=0)
        kept = rs.rated_sentences(domain)  # |rating| >= 0.5
        assert len(every) <= n and len(kept) < len(every)
        assert bool((kept.scores.abs() >= 0.5).all()) and (kept.labels == (kept.scores > 0)).all()
        assert set(kept.sentences) <= set(every.sentences)
    assert [len(rs.rated_sentences(d)) for d in sizes] == [3432, 2985, 2970]  # measured on the real files
    with pytest.raises(UnitscopeError, match="unknown domain"):
        rs.ground_truth_path("imdb")


def test_wordpiece_vocabulary_and_negations():
    wp = zs.WordPieces()
    assert len(wp) == 30522 and wp.encode(["[PAD]"]) == [0]
    toks = wp.tokenize("It isn’t bad &amp; NOT good")
    assert toks == ["it", "isn", "'", "t", "bad", "&", "not", "good"]
    assert zs.negation_mask(toks).tolist() == [False, True, True, True, False, False, True, False]
    assert zs.negation_mask(wp.tokenize("I can't, won't, don't")).sum() == 9
    assert not zs.negation_mask(wp.tokenize("the town's inn")).any()
    assert zs.has_negation("It isn't") and zs.has_negation("never again") and not zs.has_negation("nothing new")
    ids, _ = encode(["not good"], wp)
    assert ids[0, MIN_PAD : MIN_PAD + 2].tolist() == wp.encode(["not", "good"]) and (ids[0, :MIN_PAD] == 0).all()


def test_minilm_word_vectors():
    from unitscope.zoo.minilm_vectors import word_vectors

    v = word_vectors("minilm-input")
    assert v.shape == (30522, 50) and v.dtype == torch.float32
    assert torch.equal(v[0], torch.zeros(50))  # [PAD]: the padding and the baseline
    assert float(v.std()) == pytest.approx(1.0, abs=0.01)
    wp = zs.WordPieces()
    good, great, table = (v[i] for i in wp.encode(["good", "great", "table"]))
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(good, great, dim=0)) > float(cos(good, table, dim=0))  # pretrained: similar words are close
    with pytest.raises(UnitscopeError, match="word vectors"):
        word_vectors("glove")
    with pytest.raises(UnitscopeError, match="training sentences"):
        word_vectors("minilm-context")  # averaged over the training sentences: they must be given


def test_each_recipe_has_its_own_cache_key():
    from unitscope.zoo.cache import recipe_key

    keys = {name: recipe_key(zs._cache_key(name)[1]) for name in zs.RECIPES}
    assert len(set(keys.values())) == len(keys)
    # the first recipe keeps its old key (its cached model is found again); the new ones cannot collide with it
    assert zs._cache_key("scratch-movies")[1]["version"] == 1
    assert all(zs._cache_key(n)[1]["version"] == 2 for n in zs.RECIPES if n != "scratch-movies")
    assert recipe_key(zs._cache_key(zs.DEFAULT_RECIPE, maps=8)[1]) != keys[zs.DEFAULT_RECIPE]
    with pytest.raises(UnitscopeError, match="recipe"):
        zs.sentiment_cnn(recipe="bert-large")


def test_pip_download_of_the_real_sdist(cache):
    """The fetch path itself, into an empty cache: pip download → sdist → inner archive → checksum → cache."""
    path = zs.movie_reviews_path()
    assert path == cache / "data" / FILENAME
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256


# ------------------------------------------------------------------- a small CNN trained on real data --
@pytest.fixture(scope="module")
def tiny():
    """The quick recipe (WordPiece tokens, MiniLM input vectors, all four domains; the default's in-context vectors
    would need a MiniLM pass over the corpus first) with 8 maps per window (32 filters), two epochs; cached in the
    user cache under its own recipe key (about a minute to train the first time; the full model is untouched)."""
    return zs.sentiment_cnn(recipe=zs.QUICK_RECIPE, maps=8, epochs=2, progress=False), movie_reviews()


def test_tiny_cnn_learns_from_the_real_data(tiny):
    net, data = tiny
    assert net.info["n_test"] == len(data.test) and net.model.filters.maps == 8
    assert isinstance(net.vocab, zs.WordPieces) and net.info["recipe"] == zs.QUICK_RECIPE
    # trained on the movie train split + the other domains' sentences with |rating| >= 0.5
    extra = sum(len(zs.rated_sentences(d)) for d in ("tweets", "amazon", "nyt"))
    assert net.info["n_train"] == len(data.train) + extra
    majority = max(float(data.test.labels.float().mean()), 1 - float(data.test.labels.float().mean()))
    assert net.test_accuracy > majority + 0.05  # measured 0.734 (quick recipe, 8 maps) vs a majority of 0.50
    assert net.test_accuracy == pytest.approx(
        float((net.predict(data.test.sentences) == data.test.labels).float().mean())
    )


def test_study_parts_on_the_tiny_cnn(tiny):
    net, data = tiny
    corpus = data.test.sentences[:40]
    cond, gaps = st.corpus_conductance(net, corpus, n_steps=32)
    assert cond.shape == (40, 32) and gaps.shape == (40,)
    _, emb = net.encode(corpus)
    with torch.no_grad():
        F = st.log_odds(net.model(emb)) - st.log_odds(net.model(torch.zeros_like(emb)))
    # completeness on real sentences: Σ_filters conductance = F(x) − F(baseline), F = log-odds
    assert torch.allclose(cond.sum(1), F, atol=0.02 * float(F.abs().max()))
    assert torch.allclose(gaps, (cond.sum(1) - F).abs() / F.abs(), atol=1e-3, rtol=1e-2)

    probe = st.negation_filters(net, "this is not good", candidates=16, n_steps=32)
    t = probe.table
    assert probe.phrase == [2, 3] and probe.sign == (1 if probe.log_odds >= 0 else -1)
    assert (t["conductance"].diff().dropna() <= 1e-7).all() and (t["conductance"] > 0).all()
    # Eq. 2 summed over the tokens is the filter's conductance
    assert np.allclose(t["per_token_sum"], t["conductance"], atol=0.05 * float(t["conductance"].abs().max()))
    ok = (t["phrase_share"] >= 0.5) & (t["negation_share"] >= 0.2)
    assert (ok == t["falls_on_phrase"]).all()
    assert probe.found == t.loc[ok, "filter"].head(3).tolist()
    assert set(probe.ngrams) == set(probe.found)
    for f in probe.found:
        assert probe.ngrams[f] == st.picked_ngram(net, "this is not good", f)
        a = np.array(probe.attributions[f])
        assert a.shape == (4,) and a[2] > 0 and np.abs(a[2:]).sum() >= 0.5 * np.abs(a).sum() - 1e-6

    if probe.found:
        rows = st.negation_examples(net, corpus, cond, probe, k=3, n_steps=32)
        assert len(rows) == 3 * len(probe.found)
        for f in probe.found:
            mine = [r for r in rows if r["filter"] == f]
            best = float((probe.sign * cond[:, f]).max())
            assert mine[0]["conductance"] == pytest.approx(best)
            assert all(a["conductance"] >= b["conductance"] for a, b in zip(mine, mine[1:]))
            for r in mine:  # per-token conductance there sums to the filter's conductance
                assert sum(r["attributions"]) == pytest.approx(r["conductance"], abs=0.05 * abs(best) + 0.01)
    with pytest.raises(UnitscopeError, match="negation"):
        st.negation_filters(net, "this is good")
    # WordPiece splits "isn't" into three negation pieces: the phrase is them and the word after
    split = st.negation_filters(net, "this isn't good", candidates=8, n_steps=16)
    assert split.tokens == ["this", "isn", "'", "t", "good"] and split.phrase == [1, 2, 3, 4]


def test_picked_ngram_is_the_window_of_the_filters_max(tiny):
    net, data = tiny
    filt = net.model.filters
    for sentence in data.test.sentences[:5]:
        for f in (0, filt.maps, 3 * filt.maps + 1):  # windows 3, 4, 6
            a, b = st.picked_ngram(net, sentence, f)
            w = filt.windows[f // filt.maps]
            tokens = net.tokens(sentence)
            assert 0 <= a <= b <= len(tokens) and b - a <= w
            # the picked n-gram alone (zero-padded) reaches the filter's value on the whole sentence (or more: its
            # parts next to padding are windows too)
            _, emb = net.encode([sentence])
            ids = torch.tensor([[0] * MIN_PAD + net.vocab.encode(tokens[a:b]) + [0] * MIN_PAD])
            with torch.no_grad():
                whole = float(filt(emb)[0, f])
                part = float(filt(net.model.embed(ids))[0, f])
            assert part >= whole - 1e-5
            # and every other window of the same width does less
            with torch.no_grad():
                acts = torch.relu(filt.convs[f"w{w}"](emb.transpose(1, 2)))[0, f % filt.maps]
            assert float(acts[a + MIN_PAD if b - a == w else int(acts.argmax())]) == pytest.approx(whole)


def test_negation_html_escapes_text(tmp_path):
    table = pd.DataFrame({"filter": [4], "conductance": [0.5]})
    probe = st.NegationProbe(
        "<b>not</b> good", ["<b>", "not", "good"], [1, 2], "negative", -1, -1.5, table, [4], {4: [0.0, 0.3, -0.1]}
    )
    ex = [
        {
            "probe": probe.probe,
            "filter": 4,
            "conductance": 0.7,
            "tokens": ["a", "<script>", "not"],
            "attributions": [0.0, 0.2, 0.6],
        }
    ]
    html = open(st.negation_html([probe], ex, str(tmp_path / "n.html"))).read()
    ex[0].update(ngram=[1, 3], has_negation=True)
    marked = open(
        st.negation_html([probe], ex, str(tmp_path / "m.html"), base_rate=0.25, windows=(3, 4, 5, 6), maps=64)
    ).read()
    assert '<u style="text-decoration-thickness: 2px"><span' in marked and "&lt;script&gt;</span> <span" in marked
    assert "1 of its top\n1 corpus sentences contain a negation" in marked and "25.0%" in marked
    balanced = _Balanced()
    balanced.feed(marked)
    assert balanced.stack == []
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>" not in html
    parser = _Balanced()
    parser.feed(html)
    assert parser.stack == [] and parser.spans == 4  # the zero-conductance tokens are plain text
    assert 'title="+0.6000"' in html and "rgba(178,24,43,0.17)" in html  # −0.1 / 0.6: red, opacity 0.17


def test_study_entry_point_on_the_tiny_cnn(tiny, tmp_path, monkeypatch, capsys):
    net, data = tiny
    monkeypatch.setattr(zs, "sentiment_cnn", lambda **kw: net)
    monkeypatch.setattr(zs, "movie_reviews", lambda **kw: data)
    monkeypatch.setattr(
        st,
        "QUICK",
        {
            **st.QUICK,
            "agreement": 20,
            "corpus": 80,
            "division": 60,
            "examples": 2,
            "agreement_steps": 16,
            "corpus_steps": 16,
        },
    )
    result = st.main(["--quick", "--out", str(tmp_path), "--seed", "3"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(result))
    assert json.loads((tmp_path / "sentiment.json").read_text()) == json.loads(last)
    assert set(result["pearson"]) == {"conductance", "internal_influence", "grad_x_activation", "activation"}
    assert all(-1 <= v <= 1 for v in result["pearson"].values()) and result["n_agreement"] == 20
    assert result["test_accuracy"] == round(net.test_accuracy, 4)
    worst = result["conductance_gap_max"]  # the largest relative gap, with what it is relative to
    assert worst["relative"] >= result["conductance_gap_median"] and worst["sentence"] in data.test.sentences
    assert worst["absolute"] == pytest.approx(worst["relative"] * abs(worst["output_diff"]), rel=1e-3, abs=1e-6)
    assert result["augmentation"] is None and result["n_augmented"] == 0  # the quick recipe: human-rated data only
    for probe in st.NEGATION_PROBES:  # the summary's keys that the issue names
        assert isinstance(result["negation"][probe]["log_odds"], float)
        for f in result["negation"][probe]["filters"]:
            assert 0 <= f["top_sentences_with_negation"] <= 1 and f["n_top_sentences"] == 2
    assert 0 < result["negation_sentence_share_in_corpus"] < 1
    caption = (tmp_path / "sentiment_negation_caption.md").read_text()
    assert "Figures 4 and 5" in caption and all(p in caption for p in st.NEGATION_PROBES)
    div = pd.read_csv(tmp_path / "sentiment_division.csv")
    assert len(div) == 32 and result["n_division"] == 60
    assert result["both_sign_filter_share"] == round(float(div["both_signs"].mean()), 3)
    assert div["both_signs"].tolist() == ((div["positive"] >= 0.1) & (div["negative"] >= 0.1)).tolist()
    neg = pd.read_csv(tmp_path / "sentiment_negation.csv")
    assert set(result["negation_filters"]) == set(st.NEGATION_PROBES)
    for probe, found in result["negation_filters"].items():
        mine = neg[neg["probe"] == probe]
        assert found == mine.loc[mine["falls_on_phrase"], "filter"].head(3).tolist()
    ratio = pd.read_csv(tmp_path / "sentiment_ablation_ratio.csv")["ratio"]
    assert len(ratio) == 20 and ((ratio >= 0) & (ratio <= 1 + 1e-6)).all()
    for name in ("sentiment_division.png", "sentiment_ablation_ratio.png", "sentiment_negation.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "sentiment_negation.html").read_text()
    parser = _Balanced()
    parser.feed(html)
    assert parser.stack == [] and parser.spans > 0
    for probe in st.NEGATION_PROBES:
        assert probe in html


class _Balanced(HTMLParser):
    """Checks that every opened tag is closed, in order; counts the coloured token spans."""

    def __init__(self):
        super().__init__()
        self.stack, self.spans = [], 0

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)
        self.spans += tag == "span" and any(k == "title" for k, _ in attrs)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag


def test_class_balanced_batches_and_label_thresholds():
    from unitscope.zoo.sentiment import _batches, training_sentences

    y = torch.tensor([0] * 90 + [1] * 10)
    lengths = torch.randint(1, 30, (100,), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    plain = torch.cat(_batches(lengths, 8, g, bucket=True))
    assert sorted(plain.tolist()) == list(range(100))  # every example once per epoch
    drawn = torch.cat([torch.cat(_batches(lengths, 8, g, bucket=True, labels=y)) for _ in range(20)])
    assert len(drawn) == 2000 and abs(float(y[drawn].float().mean()) - 0.5) < 0.05  # as many of each class
    data = movie_reviews()
    every, _, _ = training_sentences(dict(domains=("movies",)), data)
    strong, labels, ratings = training_sentences(dict(domains=("movies",), movie_min_abs=1.0), data)
    assert len(every) == len(data.train) and 0 < len(strong) < len(every) and len(labels) == len(strong)
    assert (labels == (ratings > 0)).all() and bool((ratings.abs() >= 1.0).all())
    scores = dict(zip(data.train.sentences, data.train.scores.tolist()))
    assert all(abs(scores[s]) >= 1.0 for s in strong)


def test_recipe_row_of_the_readme_table(tiny, monkeypatch, capsys):
    from unitscope.studies import sentiment_recipe

    net, _ = tiny
    monkeypatch.setattr(zs, "sentiment_cnn", lambda **kw: net)
    row = sentiment_recipe.main(["quick"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(row))
    assert row["test_accuracy"] == round(net.test_accuracy, 4) and row["dev_accuracy"] == round(net.dev_accuracy, 4)
    lo = net.log_odds(list(st.NEGATION_PROBES)).tolist()
    assert [row["log_odds"][p] for p in st.NEGATION_PROBES] == [round(v, 3) for v in lo]
    assert "negation_filters" not in row  # only with --negation


def test_an_unknown_recipe_names_the_closest(capsys):
    with pytest.raises(UnitscopeError, match="closest: minilm-context-soft-vader-edrop"):
        zs.sentiment_cnn(recipe="minilm-context-soft-vader-edorp")
    from unitscope.studies import sentiment_recipe

    with pytest.raises(SystemExit) as exit_:
        sentiment_recipe.main(["minilm-context-soft-vadr-edrop"])
    assert exit_.value.code == 2 and "closest: minilm-context-soft-vader-edrop" in capsys.readouterr().err
