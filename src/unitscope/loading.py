"""Models and inputs named on the command line: zoo names, saved files, ``hf:FOLDER``, ``package.module:factory``.

>>> import torch
>>> m = load_model("torch.nn:Identity")
>>> type(m.model).__name__, m.kind
('Identity', 'factory')
>>> load_model("digits-cnm")
Traceback (most recent call last):
...
unitscope.core.errors.UnitscopeError: unknown MODEL 'digits-cnm'; closest zoo names: 'digits-cnn', 'digits-mlp', 'digits-vgg'

MODEL is one of

* a zoo name: ``digits-cnn``, ``digits-vgg``, ``digits-mlp``, ``sentiment-cnn``, ``sentiment-cnn-quick`` (the quick
  demo's: the ``quick`` recipe, two epochs), ``efficientnet-lite0``;
* a ``torch.export`` file (``torch.export.save``; unflattened so that every sub-module keeps its name —
  export with a dynamic batch dimension to score more than the example batch);
* a TorchScript file (``torch.jit.save``): its layers are listed, but TorchScript modules cannot be hooked, so
  scores need a ``torch.export`` file or the Python model;
* ``hf:FOLDER`` — a ``transformers`` classifier or causal LM saved with ``save_pretrained`` (loaded with
  ``local_files_only``; paths start at the token embedding). With its tokenizer saved there too, a ``.txt`` of
  sentences is tokenized; without one, the inputs are token-id tensors (``.pt``/``.npy``, integers ``[N, T]``). An
  image classifier (``*ForImageClassification``) takes images, prepared by the image processor saved beside it;
* ``package.module:factory`` — a callable that returns an ``nn.Module``, or an object with a ``.model`` (and,
  optionally, ``.preprocess`` or ``.transform``: PIL image → input tensor, the way the model wants its images).

DATA is a zoo data name (``digits``, ``photos``, ``reviews``), a ``.pt`` / ``.npy`` tensor (batch first; a ``.pt``
dict ``{"inputs": …, "labels": …}`` carries labels), image files or folders of images (a folder of class
sub-folders gives labels, as torchvision's ``ImageFolder``: the classes in sorted order), or a ``.txt`` file of
sentences (one a line; ``LABEL<TAB>sentence`` lines carry labels). ``labels=FILE`` (``--labels``) gives labels to
any of them. Images are prepared the way the model expects: the model's own transform when it has one (the zoo's,
a factory's ``.preprocess``/``.transform``, timm's data config), else ``[0, 1]`` values with the channels of the
model's first convolution, resized to ``--image-size`` (or the model's example input, or the first image) and
normalized with ``--mean``/``--std`` when given.

Everything that can be checked without the model is checked first, without loading anything:
:func:`check_model` (the MODEL argument), :func:`plan_inputs` (the DATA argument: names, paths, formats, labels;
tensor files are read, images opened to their headers) and :func:`check_pair` (a text model with images …).
"""  # noqa: E501 — a doctest output line, verbatim

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from .core.errors import UnitscopeError

__all__ = [
    "Loaded",
    "Inputs",
    "ModelSpec",
    "DataPlan",
    "ImageSettings",
    "ZOO_MODELS",
    "ZOO_DATA",
    "IMAGE_SUFFIXES",
    "TENSOR_SUFFIXES",
    "MODEL_HELP",
    "DATA_HELP",
    "check_model",
    "plan_inputs",
    "check_pair",
    "load_model",
    "load_inputs",
    "check_device",
    "check_layers",
    "check_token_ids",
    "TokenItems",
    "SentenceBatches",
    "TokenBatches",
]

ZOO_MODELS = ("digits-cnn", "digits-vgg", "digits-mlp", "sentiment-cnn", "sentiment-cnn-quick", "efficientnet-lite0")
ZOO_DATA = ("digits", "photos", "reviews")
#: what each zoo model reads: images (prepared by the model's own transform) or sentences
ZOO_MODALITY = {
    "digits-cnn": "images",
    "digits-vgg": "images",
    "digits-mlp": "images",
    "efficientnet-lite0": "images",
    "sentiment-cnn": "text",
    "sentiment-cnn-quick": "text",
}
ZOO_DATA_MODALITY = {"digits": "images", "photos": "images", "reviews": "text"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TENSOR_SUFFIXES = (".pt", ".pth", ".npy")

MODEL_HELP = (
    f"zoo name ({', '.join(ZOO_MODELS)}), hf:FOLDER (a transformers text or image classifier or causal LM "
    "saved with save_pretrained, with or without its tokenizer), a torch.export / TorchScript file, or "
    "package.module:factory"
)
DATA_HELP = (
    f"zoo data name ({', '.join(ZOO_DATA)}), a .pt/.npy tensor (token ids for hf:FOLDER; a .pt dict "
    "{'inputs', 'labels'} carries labels), image files or folders (class sub-folders give labels), or a "
    ".txt of sentences (one a line, or LABEL<TAB>sentence)"
)


def _closest(word: str, choices, n: int = 3) -> str:
    return ", ".join(repr(c) for c in difflib.get_close_matches(word, list(choices), n=n, cutoff=0.0))


# ------------------------------------------------------------------------------------- checks before loading --
@dataclass(frozen=True)
class ModelSpec:
    """What the MODEL argument names, found out without loading it: ``kind`` (``"zoo"``, ``"hf"``, ``"export"``,
    ``"torchscript"``, ``"factory"``) and ``modality``: ``"images"``, ``"text"`` (sentences), ``"tokens"`` (token-id
    tensors only: an ``hf:`` folder without a tokenizer) or ``None`` (not known before loading)."""

    spec: str
    kind: str
    modality: str | None = None
    hf: object | None = None  # unitscope.hf.FolderInfo for hf:FOLDER

    @property
    def text(self) -> bool:
        return self.modality in ("text", "tokens")


def check_model(spec: str, *, zoo=ZOO_MODELS) -> ModelSpec:
    """Check the MODEL argument without loading anything (no import of the factory's module, no weights, no
    training): a zoo name (``zoo``), ``hf:FOLDER`` (the folder and its ``config.json``), a file (its archive kind)
    or ``package.module:factory`` (the module can be found). A one-line :class:`UnitscopeError` names what is wrong
    and the closest valid values."""
    spec = str(spec)
    if spec in zoo:
        return ModelSpec(spec, "zoo", ZOO_MODALITY.get(spec, "text" if spec == "minilm" else None))
    if spec.startswith("hf:"):
        from .hf import folder_info

        if importlib.util.find_spec("transformers") is None:
            raise UnitscopeError("hf:FOLDER needs the transformers package", hint="pip install transformers")
        info = folder_info(spec[3:])
        return ModelSpec(spec, "hf", "images" if info.image else "text" if info.tokenizer else "tokens", info)
    path = Path(spec)
    if path.is_file():
        kind = _archive_kind(path)
        if kind is None:
            raise UnitscopeError(
                f"MODEL {spec!r} is neither a torch.export nor a TorchScript file",
                hint="save with torch.export.save(ep, 'model.pt2'), or pass package.module:factory "
                "(a state_dict alone does not say how to build the model)",
            )
        return ModelSpec(spec, kind)
    if path.is_dir():
        raise UnitscopeError(f"MODEL {spec!r} is a folder", hint=f"a Hugging Face folder is written hf:{spec}")
    if ":" in spec and os.sep not in spec.partition(":")[0]:
        module_name, _, attr = spec.partition(":")
        if (
            not module_name
            or not attr
            or not all(p.isidentifier() for p in module_name.split("."))
            or not attr.isidentifier()
        ):
            raise UnitscopeError(f"MODEL {spec!r} is not package.module:factory", hint="e.g. mypackage.nets:make")
        try:
            found = importlib.util.find_spec(module_name)
        except (ImportError, ValueError) as e:  # a parent package that is missing or broken
            raise UnitscopeError(f"cannot import {module_name!r} for {spec!r}", hint=str(e)) from None
        if found is None:
            raise UnitscopeError(
                f"cannot import {module_name!r} for {spec!r}",
                hint=f"no module named {module_name!r} on the Python path (PYTHONPATH)",
            )
        return ModelSpec(spec, "factory")
    if path.suffix or os.sep in spec:
        raise UnitscopeError(f"model file {spec!r} not found")
    raise UnitscopeError(f"unknown MODEL {spec!r}", hint=f"closest zoo names: {_closest(spec, zoo)}")


@dataclass(frozen=True)
class ImageSettings:
    """``--image-size``, ``--mean``, ``--std``: how to prepare images for a model that has no transform of its
    own (``None``: not given)."""

    size: tuple | None = None
    mean: tuple | None = None
    std: tuple | None = None

    def __post_init__(self):
        if self.size is not None and (len(self.size) not in (1, 2) or min(self.size) < 1):
            raise UnitscopeError(
                f"--image-size {' '.join(map(str, self.size))}: give H or H W, positive", hint="e.g. --image-size 224"
            )
        for name, v in (("--mean", self.mean), ("--std", self.std)):
            if v is not None and len(v) not in (1, 3):
                raise UnitscopeError(
                    f"{name} takes 1 or 3 numbers (one per channel), got {len(v)}",
                    hint="e.g. --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225",
                )
        if self.std is not None and min(self.std) <= 0:
            raise UnitscopeError("--std must be positive", std=list(self.std))
        if (self.mean is None) != (self.std is None):
            raise UnitscopeError("--mean and --std go together", hint="give both (or neither)")

    @property
    def given(self) -> bool:
        return self.size is not None or self.mean is not None

    @property
    def hw(self) -> tuple | None:
        return None if self.size is None else (self.size[0], self.size[-1])


@dataclass
class DataPlan:
    """What the DATA argument names, checked and read as far as it can be without the model: ``kind`` is
    ``"zoo"``, ``"tensor"``, ``"images"`` or ``"sentences"``. A tensor file is read here (``tensor``), a text file's
    sentences too; image files are listed (``files``) with their class labels for a folder of class folders."""

    specs: list
    kind: str
    name: str
    tensor: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    sentences: list | None = None
    files: list | None = None
    class_names: list | None = None

    @property
    def modality(self) -> str:
        if self.kind == "zoo":
            return ZOO_DATA_MODALITY[self.name]
        return {"tensor": "tensor", "images": "images", "sentences": "text"}[self.kind]

    @property
    def has_labels(self) -> bool:
        return self.labels is not None or (self.kind == "zoo" and self.name in ("digits", "reviews"))

    def __len__(self):
        if self.kind == "tensor":
            return len(self.tensor)
        if self.kind == "sentences":
            return len(self.sentences)
        if self.kind == "images":
            return len(self.files)
        raise TypeError("the zoo data's size is known once it is loaded")

    def limited(self, limit: int | None) -> "DataPlan":
        """The first ``limit`` examples (the zoo data is cut when it is loaded)."""
        if limit is None or self.kind == "zoo":
            return self
        cut = lambda v: None if v is None else v[:limit]  # noqa: E731
        return replace(
            self, tensor=cut(self.tensor), labels=cut(self.labels), sentences=cut(self.sentences), files=cut(self.files)
        )


def plan_inputs(specs, *, labels=None, limit: int | None = None) -> DataPlan:
    """Check the DATA argument (and ``labels``, a ``--labels`` file) without the model: a zoo data name, or paths
    that exist, in one format (one tensor file, image files/folders or ``.txt`` files). A one-line
    :class:`UnitscopeError` names the argument, what is wrong and the closest valid values."""
    specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    if not specs:
        raise UnitscopeError("no DATA given", hint=f"a zoo data name ({', '.join(ZOO_DATA)}), files or folders")
    if limit is not None and limit < 1:
        raise UnitscopeError("--limit must be ≥ 1", limit=limit)
    if len(specs) == 1 and str(specs[0]) in ZOO_DATA:
        if labels is not None:
            raise UnitscopeError(
                f"--labels: the zoo data {str(specs[0])!r} has its own labels",
                hint="give --labels with your own files only",
            )
        return DataPlan([str(specs[0])], "zoo", str(specs[0]))
    paths = [Path(s) for s in specs]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        close = difflib.get_close_matches(missing[0], ZOO_DATA, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"zoo data names: {', '.join(ZOO_DATA)}"
        raise UnitscopeError(f"input {missing[0]!r} not found", hint=hint)
    name = specs[0] if len(specs) == 1 else ", ".join(map(str, specs))
    name = str(name)
    suffixes = {p.suffix.lower() for p in paths if p.is_file()}
    if suffixes & set(TENSOR_SUFFIXES):
        if len(paths) != 1:
            raise UnitscopeError("DATA: give one tensor file, not several", files=[str(p) for p in paths])
        x, y = _tensor_file(paths[0], labels=True)
        plan = DataPlan([name], "tensor", name, tensor=x, labels=y)
    elif suffixes and suffixes <= {".txt"} and not any(p.is_dir() for p in paths):
        sentences, y = _sentence_files(paths)
        plan = DataPlan([str(s) for s in specs], "sentences", name, sentences=sentences, labels=y)
    else:
        files, y, classes = _image_files(paths)
        plan = DataPlan([str(s) for s in specs], "images", name, files=files, labels=y, class_names=classes)
    if labels is not None:
        if plan.labels is not None:
            raise UnitscopeError(
                f"--labels {str(labels)!r}: DATA {name!r} has labels of its own",
                hint="drop --labels, or give the inputs without theirs",
            )
        plan.labels = _label_file(Path(labels), len(plan))
    return plan.limited(limit)


def _label_file(path: Path, n: int) -> torch.Tensor:
    """``--labels FILE``: a ``.txt`` of one class index a line, or a ``.pt``/``.npy`` tensor of ``n`` integers."""
    if not path.is_file():
        raise UnitscopeError(f"--labels {str(path)!r} not found")
    if path.suffix.lower() == ".txt":
        rows = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        bad = next((r for r in rows if not re.fullmatch(r"\d+", r)), None)
        if bad is not None:
            raise UnitscopeError(
                f"--labels {str(path)!r}: {bad!r} is not a class index", hint="one class index (0, 1, …) a line"
            )
        y = torch.tensor([int(r) for r in rows], dtype=torch.long)
    elif path.suffix.lower() in TENSOR_SUFFIXES:
        y, _ = _tensor_file(path, labels=False, what="--labels")
    else:
        raise UnitscopeError(f"--labels {str(path)!r}: a .txt, .pt or .npy file", hint="one class index a line")
    return _check_labels(y, n, f"--labels {str(path)!r}")


def _check_labels(y: torch.Tensor, n: int, what: str) -> torch.Tensor:
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise UnitscopeError(
            f"{what}: labels must be one class index per example (integers, [N])",
            shape=list(y.shape),
            dtype=str(y.dtype),
        )
    if len(y) != n:
        raise UnitscopeError(f"{what}: {len(y)} labels for {n} inputs", hint="give one label per input")
    if len(y) and int(y.min()) < 0:
        raise UnitscopeError(f"{what}: labels are class indices ≥ 0", smallest=int(y.min()))
    return y.long()


def _tensor_file(path: Path, *, labels: bool = False, what: str = "DATA"):
    """The tensor in a ``.npy`` or ``.pt`` file (plain tensors only, read with ``weights_only=True``): a tensor,
    or a dict with ``inputs``/``x``/``data`` (and ``labels``/``y``/``targets``). ``(tensor, labels or None)``
    with ``labels=True``, else the tensor."""
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise UnitscopeError(f"cannot read {str(path)!r} as a numpy array", hint=str(e)) from None
        x, y = torch.from_numpy(np.ascontiguousarray(arr)), None
    else:
        from .core.files import safe_load

        obj = safe_load(path, what="tensor file")  # plain tensors only (weights_only=True); damaged/unsafe: an error
        y = None
        if isinstance(obj, dict):
            key = next((k for k in ("inputs", "x", "data") if isinstance(obj.get(k), torch.Tensor)), None)
            if key is None:
                raise UnitscopeError(
                    f"{what} {str(path)!r} holds a dict without an 'inputs'/'x'/'data' tensor",
                    keys=sorted(map(str, obj)),
                )
            x = obj[key]
            ykey = next((k for k in ("labels", "y", "targets") if k in obj), None)
            if ykey is not None:
                if not isinstance(obj[ykey], torch.Tensor):
                    raise UnitscopeError(
                        f"{what} {str(path)!r}: {ykey!r} is a {type(obj[ykey]).__name__}, not a tensor of class indices"
                    )
                y = _check_labels(obj[ykey], len(x), f"{what} {str(path)!r} ({ykey!r})")
        elif isinstance(obj, torch.Tensor):
            x = obj
        else:
            raise UnitscopeError(f"{what} {str(path)!r} holds a {type(obj).__name__}, not a tensor")
    if x.dim() == 0 or len(x) == 0:
        raise UnitscopeError(f"{what} {str(path)!r} holds no examples (batch first)", shape=list(x.shape))
    return (x, y) if labels else x


_LABELLED = re.compile(r"(\d+)\t(.*)")


def _sentence_files(paths: list[Path]):
    """Sentences (one a line) and their labels when every line is ``LABEL<TAB>sentence``."""
    lines = []
    for p in paths:
        try:
            lines += [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
        except UnicodeDecodeError as e:
            raise UnitscopeError(f"DATA {str(p)!r} is not a UTF-8 text file", hint=str(e)) from None
    if not lines:
        raise UnitscopeError("no sentences in the text file(s)", files=[str(p) for p in paths])
    tagged = [_LABELLED.fullmatch(ln) for ln in lines]
    if not any(tagged):
        return lines, None
    if not all(tagged):
        k = next(i for i, t in enumerate(tagged) if t is None)
        raise UnitscopeError(
            f"DATA: line {k + 1} of the sentences has no LABEL<TAB> while others do",
            line=lines[k][:60],
            hint="label every line (LABEL<TAB>sentence) or none",
        )
    return [t.group(2).strip() for t in tagged], torch.tensor([int(t.group(1)) for t in tagged])


def _image_files(paths: list[Path]):
    """``(files, labels or None, class names or None)``: image files as given; a folder's images (recursively),
    or, for one folder whose sub-folders hold the images, every sub-folder a class (sorted names, as
    torchvision's ``ImageFolder``). Every file is opened to its header here (nothing decoded)."""
    from PIL import Image, UnidentifiedImageError

    def images_in(folder: Path):
        return sorted(q for q in folder.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)

    files, labels, classes = [], None, None
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
        subs = sorted(d for d in root.iterdir() if d.is_dir() and images_in(d))
        loose = [q for q in root.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES]
        if subs and not loose:
            classes, labels = [d.name for d in subs], []
            for k, d in enumerate(subs):
                found = images_in(d)
                files += found
                labels += [k] * len(found)
            labels = torch.tensor(labels, dtype=torch.long)
    if not files:
        for p in paths:
            if p.is_dir():
                found = images_in(p)
                if not found:
                    raise UnitscopeError(
                        f"no images in folder {str(p)!r}", hint=f"looked for {', '.join(IMAGE_SUFFIXES)}"
                    )
                files += found
            else:
                files.append(p)
    bad = [f for f in files if f.suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
        raise UnitscopeError(
            f"cannot read {str(bad[0])!r}: not an image, .pt/.npy tensor or .txt",
            hint=f"images end in {', '.join(IMAGE_SUFFIXES)}",
        )
    for f in files:
        try:
            with Image.open(f):
                pass
        except (UnidentifiedImageError, OSError) as e:
            raise UnitscopeError(f"cannot read image {str(f)!r}", hint=str(e)) from None
    return files, labels, classes


def check_pair(model: ModelSpec, data: DataPlan | None, image: ImageSettings | None = None) -> None:
    """The MODEL and DATA arguments together, before either loads: sentences need a text model (one with a
    tokenizer), a text model takes no images, an ``hf:`` model takes token ids (integers), ``--image-size`` /
    ``--mean`` / ``--std`` are for images and models without a transform of their own."""
    name = model.spec
    if image is not None and image.given:
        if model.kind == "zoo":
            raise UnitscopeError(
                f"--image-size/--mean/--std: the zoo model {name!r} prepares its own inputs", hint="leave them out"
            )
        if data is not None and data.modality != "images":
            raise UnitscopeError("--image-size/--mean/--std are for image inputs", data=data.name)
    if data is None:
        return
    if data.modality == "text":
        if model.modality == "text":
            return
        if model.modality == "tokens":
            from .hf import TOKENIZER_FILES

            raise UnitscopeError(
                f"DATA {data.name!r} is sentences, and {name} has no tokenizer (none of "
                f"{', '.join(TOKENIZER_FILES[:3])}, … in the folder)",
                hint="save it there with tokenizer.save_pretrained(FOLDER), or give token ids as a .pt tensor [N, T]",
            )
        if model.modality == "images":
            raise UnitscopeError(
                f"DATA {data.name!r} is sentences, and {name} takes images", hint="give it images or a tensor file"
            )
        raise UnitscopeError(
            f"DATA {data.name!r} is sentences, which need a text model: sentiment-cnn or "
            f"hf:FOLDER with its tokenizer ({name} is a {model.kind})",
            hint="give a tensor file (token ids or embeddings) instead",
        )
    if data.modality == "images" and model.text:
        raise UnitscopeError(
            f"DATA {data.name!r} is images, and {name} is a text model",
            hint="give it sentences (a .txt file)"
            if model.modality == "text"
            else "give it token ids as a .pt tensor [N, T]",
        )
    if data.kind == "tensor" and model.kind == "hf" and model.text:
        x = data.tensor
        if x.is_floating_point() or x.is_complex() or x.dim() != 2:
            raise UnitscopeError(
                f"DATA {data.name!r}: {name} takes token ids, integers [N, T]", shape=list(x.shape), dtype=str(x.dtype)
            )


# ------------------------------------------------------------------------------------------------ models --
@dataclass
class Loaded:
    """A model ready to analyse, with what the command line needs to feed it."""

    model: nn.Module
    name: str
    kind: str  # "zoo", "export", "torchscript", "factory" or "hf"
    prepare_image: Callable | None = None  # PIL image -> input tensor (one example, no batch dim)
    encode_text: Callable | None = None  # list[str] -> (input tensor, tokens per example, padded to T)
    example: torch.Tensor | None = None  # one batch of valid inputs (for shapes)
    class_names: list[str] | None = None
    default_data: str | None = None  # the zoo data that fits the model
    image_shape: tuple | None = None  # (C, H, W) of an input image, when known
    value_range: tuple = (0.0, 1.0)  # the valid range of input values (for synthesis)
    extra: dict = field(default_factory=dict)

    @property
    def hookable(self) -> bool:
        return self.kind != "torchscript"

    @property
    def embedding(self) -> str | None:
        """The token embedding's name for models that read token ids (paths start at its output)."""
        return self.extra.get("embedding")

    def require_hooks(self) -> None:
        if not self.hookable:
            raise UnitscopeError(
                f"{self.name!r} is a TorchScript module, and TorchScript modules cannot be hooked",
                hint="save the model with torch.export.save (dynamic batch dimension) or pass package.module:factory",
            )


@dataclass
class Inputs:
    x: torch.Tensor
    labels: torch.Tensor | None = None
    names: list[str] | None = None  # file names / photo names / sentences, one per example
    images: list | None = None  # displayable pictures (HxW or HxWx3 arrays) when the inputs are images
    tokens: list | None = None  # per example its token strings, "" for padding (text inputs)
    mask: torch.Tensor | None = None  # the attention mask of tokenized sentences ([N, T]), when there is one
    value_range: tuple | None = None  # the range of the prepared image values, when the inputs are images
    class_names: list | None = None
    display_range: tuple | None = None  # per channel ([lo_c], [hi_c]): undoes --mean/--std for the pictures


def _digits_prepare(image) -> torch.Tensor:
    """Any picture → ``[1, 8, 8]`` grey in ``[0, 1]`` (sklearn digits are light strokes on a dark ground)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    grey = np.asarray(image.convert("L").resize((8, 8), Image.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(grey)[None]


def _zoo_model(name: str, device) -> Loaded:
    if name in ("digits-cnn", "digits-vgg", "digits-mlp"):
        from . import zoo

        factory = {"digits-cnn": zoo.digits_cnn, "digits-vgg": zoo.digits_vgg, "digits-mlp": zoo.digits_mlp}[name]
        trained = factory()
        _, test = zoo.digits_data()
        return Loaded(
            trained.model.to(device),
            name,
            "zoo",
            prepare_image=_digits_prepare,
            example=test.x[:2],
            class_names=[str(i) for i in range(10)],
            default_data="digits",
            image_shape=(1, 8, 8),
            extra={"test_accuracy": trained.info.get("test_accuracy")},
        )
    if name == "efficientnet-lite0":
        from .zoo import efficientnet_lite0

        try:
            net = efficientnet_lite0()
        except (ImportError, FileNotFoundError) as e:
            raise UnitscopeError(str(e).split("\n")[0], model=name) from None
        return Loaded(
            net.model.to(device),
            name,
            "zoo",
            prepare_image=net.preprocess,
            example=torch.zeros(1, 3, 224, 224),
            class_names=list(net.class_names),
            default_data="photos",
            image_shape=(3, 224, 224),
            value_range=(-1.0, 1.0),
        )
    if name in ("sentiment-cnn", "sentiment-cnn-quick"):
        from .zoo.sentiment import MIN_PAD, QUICK_RECIPE, sentiment_cnn

        net = sentiment_cnn(recipe=QUICK_RECIPE) if name == "sentiment-cnn-quick" else sentiment_cnn()

        def encode(sentences):
            _, emb = net.encode(list(sentences))
            tokens = [[""] * MIN_PAD + net.tokens(s) for s in sentences]  # position t is MIN_PAD + t
            return emb, [t + [""] * (emb.shape[1] - len(t)) for t in tokens]

        example, _ = encode(["a fine , moving film ."])
        return Loaded(
            net.model.to(device),
            name,
            "zoo",
            encode_text=encode,
            example=example,
            class_names=["negative", "positive"],
            default_data="reviews",
            extra={"test_accuracy": net.test_accuracy, "trained": net},
        )
    raise AssertionError(name)


def _archive_kind(path: Path) -> str | None:
    """``"export"`` for a ``torch.export.save`` archive, ``"torchscript"`` for ``torch.jit.save``, else None."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("archive_format") for n in names):
        return "export"
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return "torchscript"
    return None


def _first_conv_channels(model: nn.Module) -> int | None:
    """The input channels of the model's first 2-D convolution (images for it have that many)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
        weight = getattr(m, "weight", None)  # an unflattened torch.export module keeps the conv weights only
        if isinstance(weight, torch.Tensor) and weight.dim() == 4 and not list(m.children()):
            return int(weight.shape[1])
    return None


def _file_model(path: Path, device) -> Loaded:
    import warnings

    kind = _archive_kind(path)
    if kind == "export":
        try:
            ep = torch.export.load(str(path))
        except Exception as e:  # noqa: BLE001 — whatever torch.export.load raises: the file is not usable
            raise UnitscopeError(
                f"cannot load the torch.export file {str(path)!r}", hint=(str(e).splitlines() or [type(e).__name__])[0]
            ) from None
        model = torch.export.unflatten(ep)
        example = None
        ex = getattr(ep, "example_inputs", None)
        if ex and ex[0] and isinstance(ex[0][0], torch.Tensor):
            example = ex[0][0]
        shape = tuple(example.shape[1:]) if example is not None and example.dim() == 4 else None
        return Loaded(model.to(device), str(path), "export", example=example, image_shape=shape)
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(path), map_location=device)
        except Exception as e:  # noqa: BLE001 — whatever torch.jit.load raises: the file is not usable
            raise UnitscopeError(
                f"cannot load the TorchScript file {str(path)!r}", hint=(str(e).splitlines() or [type(e).__name__])[0]
            ) from None
        return Loaded(model, str(path), "torchscript")
    raise UnitscopeError(
        f"{str(path)!r} is neither a torch.export nor a TorchScript file",
        hint="save with torch.export.save(ep, 'model.pt2'), or pass package.module:factory "
        "(a state_dict alone does not say how to build the model)",
    )


def _import_factory(spec: str, what: str = "MODEL"):
    """The object that ``package.module:attr`` names."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UnitscopeError(f"cannot import {module_name!r} for {spec!r}", hint=str(e)) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        close = difflib.get_close_matches(attr, [n for n in dir(module) if not n.startswith("_")], n=3)
        raise UnitscopeError(
            f"{what}: {module_name!r} has no attribute {attr!r}",
            hint=f"closest names: {', '.join(map(repr, close))}" if close else None,
        ) from None


def _call_factory(spec: str, factory):
    if not callable(factory) or isinstance(factory, nn.Module):
        return factory
    try:
        return factory()
    except TypeError as e:
        raise UnitscopeError(f"{spec!r} must be callable without arguments", hint=str(e)) from None


def _timm_prepare(model: nn.Module):
    """timm's own transform (its data config: size, crop, mean, std) for a timm model, else None."""
    if getattr(model, "pretrained_cfg", None) is None or importlib.util.find_spec("timm") is None:
        return None
    import timm.data

    config = timm.data.resolve_data_config({}, model=model)
    return timm.data.create_transform(**config), tuple(config["input_size"])


def _factory_model(spec: str, device) -> Loaded:
    obj = _call_factory(spec, _import_factory(spec))
    model = obj if isinstance(obj, nn.Module) else getattr(obj, "model", None)
    if not isinstance(model, nn.Module):
        raise UnitscopeError(
            f"{spec!r} returned {type(obj).__name__}, not an nn.Module",
            hint="return the model, or an object with a .model attribute",
        )
    prepare = next(
        (
            getattr(obj, a)
            for a in ("preprocess", "transform")
            if callable(getattr(obj, a, None)) and not isinstance(obj, nn.Module)
        ),
        None,
    )
    shape = None
    if prepare is None:
        timm_prepare = _timm_prepare(model)
        if timm_prepare is not None:
            prepare, shape = timm_prepare
    loaded = Loaded(model.to(device), spec, "factory", prepare_image=prepare, image_shape=shape)
    if prepare is not None:
        loaded.extra["own_transform"] = True
    return loaded


def _hf_model(folder: str, device) -> Loaded:
    """A ``transformers`` model (and its tokenizer, when it was saved there) from a local folder."""
    from .hf import load_hf

    model, tokenizer, embedding = load_hf(folder, device)
    if embedding is None:  # an image classifier: its image processor prepares the images, when it was saved
        prepare = getattr(model, "preprocess", None)
        cfg = model.hf.config
        size = getattr(cfg, "image_size", None)
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size) if size else None
        shape = (int(getattr(cfg, "num_channels", 3)), *size) if size else None
        loaded = Loaded(
            model,
            f"hf:{folder}",
            "hf",
            prepare_image=prepare,
            image_shape=shape,
            example=None if shape is None else torch.zeros(1, *shape, device=device),
        )
        if prepare is not None:
            loaded.extra["own_transform"] = True
        return loaded
    encode = None
    if tokenizer is not None:
        if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token

        def encode(sentences):
            enc = tokenizer(list(sentences), padding=True, truncation=True, return_tensors="pt")
            ids, mask = enc["input_ids"], enc["attention_mask"]
            tokens = [
                [t if int(m) else "" for t, m in zip(tokenizer.convert_ids_to_tokens(row.tolist()), ms)]
                for row, ms in zip(ids, mask)
            ]
            return ids, tokens

        example = encode(["a fine film ."])[0]
    else:  # token ids only: any few ids of the vocabulary serve for shapes
        vocab = _vocab_size(model)
        example = (torch.arange(1, 5) % max(vocab or 1, 1))[None]
    return Loaded(
        model,
        f"hf:{folder}",
        "hf",
        encode_text=encode,
        example=example.to(device),
        extra={"embedding": embedding, "tokenizer": tokenizer},
    )


def _vocab_size(model: nn.Module) -> int | None:
    emb = getattr(model, "hf", model)
    emb = emb.get_input_embeddings() if hasattr(emb, "get_input_embeddings") else None
    return int(emb.num_embeddings) if isinstance(emb, nn.Embedding) else None


def load_model(spec: str, device: str | torch.device = "cpu") -> Loaded:
    """A zoo name, a ``torch.export``/TorchScript file, ``hf:FOLDER`` or ``package.module:factory`` →
    :class:`Loaded` (the argument checked first by :func:`check_model`)."""
    device = check_device(device)
    kind = check_model(spec).kind
    if kind == "zoo":
        return _zoo_model(spec, device)
    if kind == "hf":
        return _hf_model(spec[3:], device)
    if kind in ("export", "torchscript"):
        return _file_model(Path(spec), device)
    return _factory_model(spec, device)


def load_generator(spec: str, loaded: Loaded | None = None):
    """``--generator package.module:factory``: a generator for inverse sets (an object with ``latent_dim``,
    ``__call__(z)`` and ``sample_codes(n)``), or a decoder ``nn.Module`` with a ``latent_dim`` attribute."""
    from .synthesis.generators import DecoderGenerator, Generator

    obj = _call_factory(spec, _import_factory(spec, "--generator"))
    if isinstance(obj, nn.Module) and not isinstance(obj, Generator):
        dim = getattr(obj, "latent_dim", None)
        if not isinstance(dim, int):
            raise UnitscopeError(
                f"--generator {spec!r}: a decoder module needs an int .latent_dim",
                hint="or return an object with latent_dim, __call__(z) and sample_codes(n)",
            )
        return DecoderGenerator(obj.eval(), dim)
    if not isinstance(obj, Generator):
        raise UnitscopeError(
            f"--generator {spec!r} returned {type(obj).__name__}, not a generator",
            hint="return an object with latent_dim, __call__(z) and sample_codes(n), or a "
            "decoder nn.Module with .latent_dim",
        )
    return obj


def check_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UnitscopeError(f"unknown device {device!r}", hint="use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnitscopeError(f"device {device!r} asked for, but CUDA is not available here", hint="use --device cpu")
    return dev


def check_layers(model: nn.Module, layers, *, argument: str = "--layers") -> list[str]:
    """The layer names, each one a layer of ``model`` (an unknown one names the closest valid names)."""
    from .core.sites import resolve

    try:
        return [s.name for s in resolve(model, list(layers))]
    except UnitscopeError as e:
        raise UnitscopeError(f"{argument}: {e}") from None


def check_token_ids(x: torch.Tensor, loaded: Loaded) -> None:
    """Token ids within the model's vocabulary (checked before any pass, as one line)."""
    vocab = _vocab_size(loaded.model)
    if vocab is None or x.is_floating_point() or not x.numel():
        return
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= vocab:
        raise UnitscopeError(
            f"DATA: token ids must lie in [0, {vocab - 1}], the vocabulary of {loaded.name}", smallest=lo, largest=hi
        )


# ------------------------------------------------------------------------------------------------ inputs --
def _zoo_data(name: str, loaded: Loaded | None) -> Inputs:
    if name == "digits":
        from .zoo import digits_data

        _, test = digits_data()
        return Inputs(test.x, test.y, [f"test#{i}" for i in range(len(test))], [im[0].numpy() for im in test.x])
    if name == "photos":
        from .zoo import photos

        pics = photos()
        prepare = (
            loaded.prepare_image
            if loaded is not None and loaded.prepare_image is not None
            else _default_image_prepare(None)
        )
        return Inputs(torch.stack([prepare(im) for im in pics.values()]), None, list(pics), list(pics.values()))
    if name == "reviews":
        if loaded is None or loaded.encode_text is None:
            raise UnitscopeError("the reviews are sentences: they need a text model", hint="use sentiment-cnn")
        from .zoo.sentiment import movie_reviews

        test = movie_reviews().test
        x, tokens = loaded.encode_text(test.sentences)
        return Inputs(x, test.labels, list(test.sentences), tokens=tokens, mask=_mask(tokens, loaded))
    raise AssertionError(name)


def _mask(tokens, loaded: Loaded):
    """The attention mask of tokenized sentences (``""`` marks padding) for a model that reads token ids."""
    if loaded.embedding is None:
        return None
    return torch.tensor([[1 if t else 0 for t in row] for row in tokens], dtype=torch.long)


def _default_image_prepare(shape, mean=None, std=None):
    """PIL image → ``[C, H, W]`` in ``[0, 1]`` (grey for ``C == 1``), resized (bilinear, antialiased) to
    ``shape[1:]`` when given, then normalized by ``mean``/``std`` (per channel) when given."""

    def prepare(image):
        from PIL import Image

        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        image = image.convert("L" if shape is not None and shape[0] == 1 else "RGB")
        if shape is not None and len(shape) == 3 and (image.height, image.width) != tuple(shape[1:]):
            image = image.resize((int(shape[2]), int(shape[1])), Image.BILINEAR)
        arr = np.asarray(image, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())
        if mean is not None:
            m = torch.tensor(mean, dtype=t.dtype).view(-1, 1, 1)
            s = torch.tensor(std, dtype=t.dtype).view(-1, 1, 1)
            t = (t - m) / s
        return t

    return prepare


def _normalized_range(mean, std) -> tuple:
    if mean is None:
        return (0.0, 1.0)
    lo = min((0.0 - m) / s for m, s in zip(np.broadcast_to(mean, 3), np.broadcast_to(std, 3)))
    hi = max((1.0 - m) / s for m, s in zip(np.broadcast_to(mean, 3), np.broadcast_to(std, 3)))
    return (float(lo), float(hi))


def load_inputs(
    specs, loaded: Loaded | None = None, *, limit: int | None = None, image: ImageSettings | None = None, labels=None
) -> Inputs:
    """Zoo data, tensor files, image files/folders or ``.txt`` sentences (or a :class:`DataPlan` of them) →
    :class:`Inputs` (batch first), prepared for ``loaded``."""
    plan = specs if isinstance(specs, DataPlan) else plan_inputs(specs, labels=labels)
    if limit is not None and limit < 1:
        raise UnitscopeError("--limit must be ≥ 1", limit=limit)
    plan = plan.limited(limit)
    if plan.kind == "zoo":
        inputs = _zoo_data(plan.name, loaded)
        if limit is not None:
            cut = {
                k: getattr(inputs, k)[:limit]
                for k in ("x", "labels", "names", "images", "tokens", "mask")
                if getattr(inputs, k) is not None
            }
            inputs = replace(inputs, **cut)
        return inputs
    if plan.kind == "tensor":
        x = plan.tensor
        if not x.is_floating_point() and loaded is not None and loaded.kind == "zoo":
            x = x.float()
        tokens = None
        if loaded is not None and loaded.embedding is not None and not x.is_floating_point():
            check_token_ids(x, loaded)
            pad = getattr(loaded.model, "pad_id", None)
            tokens = [["" if pad is not None and int(i) == pad else str(int(i)) for i in row] for row in x]
        return Inputs(x, plan.labels, [f"{Path(plan.name).name}[{i}]" for i in range(len(x))], tokens=tokens)
    if plan.kind == "sentences":
        if loaded is None or loaded.encode_text is None:
            raise UnitscopeError(
                "a .txt file is read as sentences, which need a text model",
                hint="use sentiment-cnn or hf:FOLDER with its tokenizer, or give images / a tensor",
            )
        x, tokens = loaded.encode_text(plan.sentences)
        return Inputs(x, plan.labels, list(plan.sentences), tokens=tokens, mask=_mask(tokens, loaded))
    return _images(plan, loaded, image or ImageSettings())


def _images(plan: DataPlan, loaded: Loaded | None, image: ImageSettings) -> Inputs:
    from PIL import Image, UnidentifiedImageError

    own = loaded.prepare_image if loaded is not None and loaded.prepare_image is not None else None
    if own is not None and image.given:
        raise UnitscopeError(
            f"--image-size/--mean/--std: {loaded.name} prepares its images itself", hint="leave them out"
        )
    prepare, value_range = own, (loaded.value_range if loaded is not None else (0.0, 1.0))
    display = None
    pics, xs = [], []
    for f in plan.files:
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise UnitscopeError(f"cannot read image {str(f)!r}", hint=str(e)) from None
        if prepare is None:
            known = loaded.image_shape if loaded is not None else None
            channels = (known[0] if known else _first_conv_channels(loaded.model) if loaded is not None else None) or 3
            hw = image.hw or (tuple(known[1:]) if known else (im.height, im.width))
            if image.mean is not None and len(image.mean) not in (1, channels):
                raise UnitscopeError(
                    f"--mean/--std: {len(image.mean)} numbers for {channels}-channel images",
                    hint=f"give 1 or {channels}",
                )
            prepare = _default_image_prepare((channels, *hw), image.mean, image.std)
            value_range = _normalized_range(image.mean, image.std)
            if image.mean is not None:  # pictures as the user sees them: (x − lo_c) / (hi_c − lo_c) = the pixel
                m, sd = np.broadcast_to(image.mean, channels), np.broadcast_to(image.std, channels)
                display = ([float(-a / b) for a, b in zip(m, sd)], [float((1 - a) / b) for a, b in zip(m, sd)])
        pics.append(np.asarray(im))
        xs.append(prepare(im))
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise UnitscopeError(
            "the images come out in different sizes", shapes=sorted(shapes), hint="give --image-size H W"
        )
    return Inputs(
        torch.stack(xs),
        plan.labels,
        [f.name for f in plan.files],
        pics,
        value_range=value_range,
        class_names=plan.class_names,
        display_range=display,
    )


# ------------------------------------------------------------------------------------------ data adapters --
class TokenItems(torch.utils.data.Dataset):
    """Tokenized sentences as a tokenizer's items: ``{"input_ids", "attention_mask"(, "labels")}`` per sentence."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None = None):
        self.ids, self.mask, self.labels = ids, mask, labels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        item = {"input_ids": self.ids[i], "attention_mask": self.mask[i]}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


class SentenceBatches:
    """Sentences as batches of ``(embeddings [B, T, dim], labels)`` (or the embeddings alone without labels) for
    the sentiment CNN, encoded lazily (each batch padded to its own longest sentence); example indices are positions
    in ``sentences``."""

    def __init__(self, trained, sentences, labels=None, batch_size: int = 256):
        self.trained, self.sentences, self.labels, self.batch_size = trained, list(sentences), labels, batch_size

    def __len__(self):
        return (len(self.sentences) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, b: int):
        """Batch ``b`` only, encoded now: under several ranks each encodes only its own batches."""
        if not 0 <= b < len(self):
            raise IndexError(b)
        i = b * self.batch_size
        _, emb = self.trained.encode(self.sentences[i : i + self.batch_size])
        return emb if self.labels is None else (emb, self.labels[i : i + self.batch_size])

    def __iter__(self):
        for b in range(len(self)):
            yield self[b]


class TokenBatches:
    """Sentences as a tokenizer's batches ``{"input_ids": [B, T], "attention_mask": [B, T](, "labels": [B])}``,
    tokenized lazily, each batch padded to its own longest sentence (T varies across batches; the scan leaves
    padding out through the mask); example indices are positions in ``sentences``. Under several ranks each
    tokenizes only its batches."""

    def __init__(self, tokenizer, sentences, batch_size: int = 256, labels=None):
        self.tokenizer, self.sentences, self.batch_size, self.labels = tokenizer, list(sentences), batch_size, labels

    def __len__(self):
        return (len(self.sentences) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, b: int):
        if not 0 <= b < len(self):
            raise IndexError(b)
        part = slice(b * self.batch_size, (b + 1) * self.batch_size)
        enc = self.tokenizer(self.sentences[part], padding=True, truncation=True, return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if self.labels is not None:
            batch["labels"] = self.labels[part]
        return batch


# ------------------------------------------------------------------------------------------ the atlas's data --
#: the bundled atlases: zoo data → the zoo models that go with it (``minilm``: all-MiniLM-L6-v2 from token ids)
ATLAS_PAIRS = {
    "digits": ("digits-cnn", "digits-vgg", "digits-mlp"),
    "reviews": ("sentiment-cnn", "minilm"),
    "photos": ("efficientnet-lite0",),
}
ATLAS_MODELS = ZOO_MODELS + ("minilm",)
MINILM_LAYER = "bert.encoder.layer.3.intermediate.intermediate_act_fn"  # the 4th of 6 MLP layers
DIGITS_MODELS = ("digits-cnn", "digits-vgg", "digits-mlp")  # zoo models whose inputs the digits VAE generates


def check_atlas_pair(model: ModelSpec, data: DataPlan) -> None:
    """A zoo model with zoo data: the pairs of :data:`ATLAS_PAIRS` (each zoo set has its own models)."""
    if model.kind == "zoo" and data.kind == "zoo" and model.spec not in ATLAS_PAIRS[data.name]:
        raise UnitscopeError(
            f"{model.spec!r} does not go with {data.name!r}",
            model=model.spec,
            data=data.name,
            hint=f"{data.name} goes with {', '.join(ATLAS_PAIRS[data.name])}; your own files "
            "go with any model that reads them",
        )


def _reviews(split: str):
    """The movie reviews' ``split`` (``all``, ``train`` or ``test``): ``.sentences`` and ``.labels``."""
    from .zoo.sentiment import movie_reviews

    reviews = movie_reviews()
    return {"all": reviews.all(), "train": reviews.train, "test": reviews.test}[split]


def _minilm_on_ids():
    """MiniLM + its sentiment head and :class:`unitscope.zoo.minilm.OnIds` (the same network from token ids:
    ``forward(input_ids, attention_mask)`` → logits ``[N, 2]``, sub-modules named ``bert.encoder.layer.3…``)."""
    from .zoo.minilm import minilm_sentiment

    lm = minilm_sentiment(progress=False)
    return lm, lm.on_ids


def _tokenized(tokenizer, sentences, *, max_length=None):
    """``(ids, mask, tokens)``: the sentences tokenized together; tokens ``""`` where the mask is 0."""
    kw = {"max_length": max_length} if max_length else {}
    enc = tokenizer(list(sentences), padding=True, truncation=True, return_tensors="pt", **kw)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    tokens = [
        [t if int(m) else "" for t, m in zip(tokenizer.convert_ids_to_tokens(row.tolist()), ms)]
        for row, ms in zip(ids, mask)
    ]
    return ids, mask, tokens


def load_atlas_inputs(
    model_name: str,
    data,
    *,
    split: str = "all",
    limit: int | None = None,
    device="cpu",
    image: ImageSettings | None = None,
    generator: str | None = None,
    synthesize: bool = True,
) -> dict:
    """What :func:`unitscope.atlas` needs for MODEL and DATA: ``{"model", "data", "generator", "tokens",
    "value_range", "default_layers", "embedding", "baselines", "internal_batch_size", "data_name"}``.

    ``data``: a zoo data name or a :class:`DataPlan` (:func:`plan_inputs`). The bundled pairs
    (:data:`ATLAS_PAIRS`) read their splits; any other MODEL and DATA that :func:`load_model` and
    :func:`load_inputs` know go through them: images and tensors as they are (synthetic inputs through
    ``generator`` — the digits VAE for the digits models — or, without one, the FFT parameterization), sentences
    tokenized (token ids from the embedding: paths start there, tokens shaded). ``generator``: ``None``/``"auto"``,
    ``"fft"`` or ``package.module:factory`` (:func:`load_generator`); none is loaded (or trained) with
    ``synthesize=False``. ``default_layers`` is ``None`` where the model has none."""
    from torch.utils.data import TensorDataset

    plan = data if isinstance(data, DataPlan) else plan_inputs(data)
    spec = check_model(model_name, zoo=ATLAS_MODELS)
    check_atlas_pair(spec, plan)
    device = check_device(device)
    out = {
        "generator": None,
        "tokens": None,
        "value_range": (0.0, 1.0),
        "default_layers": None,
        "embedding": None,
        "baselines": None,
        "internal_batch_size": None,
        "data_name": plan.name,
    }
    if model_name == "minilm":
        from .zoo.minilm import EMBEDDING

        if plan.kind == "zoo":
            part = _reviews(split)
            sentences, labels = list(part.sentences[:limit]), part.labels[:limit].long()
        elif plan.kind == "sentences":
            plan = plan.limited(limit)
            sentences, labels = plan.sentences, plan.labels
        else:
            raise UnitscopeError(f"minilm reads sentences, not {plan.kind}", data=plan.name)
        lm, model = _minilm_on_ids()
        ids, mask, tokens = _tokenized(lm.tokenizer, sentences, max_length=128)
        return {
            **out,
            "model": model.to(device),
            "data": TokenItems(ids, mask, labels),
            "tokens": tokens,
            "default_layers": [MINILM_LAYER],
            "embedding": EMBEDDING,
            "baselines": lm.tokenizer.pad_token_id,
            "internal_batch_size": 64,
        }
    if plan.kind == "zoo" and plan.name == "photos":
        from .zoo import efficientnet_lite0, photos

        net = efficientnet_lite0()
        x = torch.stack([net.preprocess(p) for p in photos().values()])[:limit]
        return {
            **out,
            "model": net.model.to(device),
            "data": TensorDataset(x),
            "value_range": (-1.0, 1.0),
            "default_layers": ["blocks.1"],
        }
    if plan.kind == "zoo" and plan.name == "reviews":
        from .zoo.sentiment import MIN_PAD, sentiment_cnn

        trained = sentiment_cnn()
        part = _reviews(split)
        sentences, labels = part.sentences[:limit], part.labels[:limit]
        _, emb = trained.encode(sentences)
        tokens = [[""] * MIN_PAD + trained.tokens(s) for s in sentences]
        tokens = [t + [""] * (emb.shape[1] - len(t)) for t in tokens]
        return {
            **out,
            "model": trained.model.to(device),
            "data": TensorDataset(emb, labels),
            "tokens": tokens,
            "default_layers": ["filters"],
        }
    if plan.kind == "zoo" and plan.name == "digits":
        from .zoo import digits_data

        loaded = load_model(model_name, device)
        tr, te = digits_data()
        parts = {"all": [tr, te], "train": [tr], "test": [te]}[split]
        x, y = torch.cat([p.x for p in parts])[:limit], torch.cat([p.y for p in parts])[:limit]
        inputs = Inputs(x, y)
    else:
        loaded = load_model(model_name, device)
        loaded.require_hooks()
        inputs = load_inputs(plan, loaded, limit=limit, image=image)
    model = loaded.model
    labelled = () if inputs.labels is None else (inputs.labels.long(),)
    if loaded.embedding is not None:  # token ids: paths start at the token embedding
        dataset = (
            TokenItems(inputs.x, inputs.mask, *labelled)
            if inputs.mask is not None
            else TensorDataset(inputs.x, *labelled)
        )
        return {
            **out,
            "model": model,
            "data": dataset,
            "tokens": inputs.tokens,
            "embedding": loaded.embedding,
            "baselines": getattr(model, "pad_id", None),
        }
    x = inputs.x
    if not x.is_floating_point():
        raise UnitscopeError(
            f"DATA {plan.name!r}: {model_name} takes floating-point inputs",
            dtype=str(x.dtype),
            hint="token ids need a model with a token embedding (hf:FOLDER)",
        )
    out.update(
        model=model,
        data=TensorDataset(x, *labelled),
        tokens=inputs.tokens,
        value_range=inputs.value_range or loaded.value_range,
        display_range=inputs.display_range,
    )
    if spec.kind == "zoo":
        out["default_layers"] = {"images": None, "text": ["filters"]}[spec.modality]
        if model_name == "efficientnet-lite0":
            out["default_layers"] = ["blocks.1"]
        elif model_name in DIGITS_MODELS:
            out["default_layers"] = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    if not synthesize:
        return out
    if generator not in (None, "auto", "fft"):
        out["generator"] = load_generator(generator, loaded)
    elif generator != "fft" and model_name in DIGITS_MODELS:
        from .zoo.digits_vae import digits_generator

        out["generator"] = digits_generator()
    return out
