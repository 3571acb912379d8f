"""Models and inputs named on the command line: zoo names, saved files, ``package.module:factory``.

>>> import torch
>>> m = load_model("torch.nn:Identity")
>>> type(m.model).__name__, m.kind
('Identity', 'factory')
>>> load_model("digits-cnm")
Traceback (most recent call last):
...
unitscope.core.errors.UnitscopeError: unknown model 'digits-cnm'; closest zoo names: 'digits-cnn', 'digits-mlp', 'digits-vgg'

MODEL is one of

* a zoo name: ``digits-cnn``, ``digits-vgg``, ``digits-mlp``, ``sentiment-cnn``, ``sentiment-cnn-quick`` (the quick
  demo's: the ``quick`` recipe, two epochs), ``efficientnet-lite0``;
* a ``torch.export`` file (``torch.export.save``; unflattened so that every sub-module keeps its name —
  export with a dynamic batch dimension to score more than the example batch);
* a TorchScript file (``torch.jit.save``): its layers are listed, but TorchScript modules cannot be hooked, so
  scores need a ``torch.export`` file or the Python model;
* ``hf:FOLDER`` — a ``transformers`` classifier or causal LM and its tokenizer saved with ``save_pretrained``
  (loaded with ``local_files_only``; a ``.txt`` of sentences is tokenized; paths start at the token embedding).
* ``package.module:factory`` — a callable that returns an ``nn.Module`` (or an object with a ``.model``).

INPUTS is a zoo data name (``digits``, ``photos``, ``reviews``), a ``.pt`` / ``.npy`` tensor (batch first),
image files or folders of images (prepared the way the model expects: 8×8 grey for the digits models, the
ImageNet crop for EfficientNet, otherwise ``[0, 1]`` RGB resized to the first image), or, for ``sentiment-cnn``,
a ``.txt`` file with one sentence per line.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from .core.errors import UnitscopeError

__all__ = ["Loaded", "Inputs", "ZOO_MODELS", "ZOO_DATA", "load_model", "load_inputs", "IMAGE_SUFFIXES"]

ZOO_MODELS = ("digits-cnn", "digits-vgg", "digits-mlp", "sentiment-cnn", "sentiment-cnn-quick", "efficientnet-lite0")
ZOO_DATA = ("digits", "photos", "reviews")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Loaded:
    """A model ready to analyse, with what the command line needs to feed it."""

    model: nn.Module
    name: str
    kind: str                                    # "zoo", "export", "torchscript" or "factory"
    prepare_image: Callable | None = None        # PIL image -> input tensor (one example, no batch dim)
    encode_text: Callable | None = None          # list[str] -> (input tensor, tokens per sentence)
    example: torch.Tensor | None = None          # one batch of valid inputs (for shapes)
    class_names: list[str] | None = None
    default_data: str | None = None              # the zoo data that fits the model
    image_shape: tuple | None = None             # (C, H, W) of an input image, when known
    value_range: tuple = (0.0, 1.0)              # the valid range of input values (for synthesis)
    extra: dict = field(default_factory=dict)

    @property
    def hookable(self) -> bool:
        return self.kind != "torchscript"

    def require_hooks(self) -> None:
        if not self.hookable:
            raise UnitscopeError(f"{self.name!r} is a TorchScript module, and TorchScript modules cannot be hooked",
                                 hint="save the model with torch.export.save (dynamic batch dimension) or pass "
                                      "package.module:factory")


@dataclass
class Inputs:
    x: torch.Tensor
    labels: torch.Tensor | None = None
    names: list[str] | None = None     # file names / photo names / sentences, one per example
    images: list | None = None         # displayable pictures (HxW or HxWx3 arrays) when the inputs are images


# ------------------------------------------------------------------------------------------------ models --
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
        return Loaded(trained.model.to(device), name, "zoo", prepare_image=_digits_prepare, example=test.x[:2],
                      class_names=[str(i) for i in range(10)], default_data="digits", image_shape=(1, 8, 8),
                      extra={"test_accuracy": trained.info.get("test_accuracy")})
    if name == "efficientnet-lite0":
        from .zoo import efficientnet_lite0

        try:
            net = efficientnet_lite0()
        except (ImportError, FileNotFoundError) as e:
            raise UnitscopeError(str(e).split("\n")[0], model=name) from None
        return Loaded(net.model.to(device), name, "zoo", prepare_image=net.preprocess,
                      example=torch.zeros(1, 3, 224, 224), class_names=list(net.class_names), default_data="photos",
                      image_shape=(3, 224, 224), value_range=(-1.0, 1.0))
    if name in ("sentiment-cnn", "sentiment-cnn-quick"):
        from .zoo.sentiment import QUICK_RECIPE, sentiment_cnn

        net = sentiment_cnn(recipe=QUICK_RECIPE) if name == "sentiment-cnn-quick" else sentiment_cnn()

        def encode(sentences):
            _, emb = net.encode(list(sentences))
            return emb, [net.tokens(s) for s in sentences]

        example, _ = encode(["a fine , moving film ."])
        return Loaded(net.model.to(device), name, "zoo", encode_text=encode, example=example,
                      class_names=["negative", "positive"], default_data="reviews",
                      extra={"test_accuracy": net.test_accuracy, "trained": net})
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


def _file_model(path: Path, device) -> Loaded:
    import warnings

    kind = _archive_kind(path)
    if kind == "export":
        try:
            ep = torch.export.load(str(path))
        except Exception as e:
            raise UnitscopeError(f"cannot load the torch.export file {str(path)!r}",
                                 hint=(str(e).splitlines() or [type(e).__name__])[0]) from None
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
        except Exception as e:
            raise UnitscopeError(f"cannot load the TorchScript file {str(path)!r}",
                                 hint=(str(e).splitlines() or [type(e).__name__])[0]) from None
        return Loaded(model, str(path), "torchscript")
    raise UnitscopeError(f"{str(path)!r} is neither a torch.export nor a TorchScript file",
                         hint="save with torch.export.save(ep, 'model.pt2'), or pass package.module:factory "
                              "(a state_dict alone does not say how to build the model)")


def _factory_model(spec: str, device) -> Loaded:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UnitscopeError(f"cannot import {module_name!r} for {spec!r}", hint=str(e)) from None
    try:
        factory = getattr(module, attr)
    except AttributeError:
        close = difflib.get_close_matches(attr, [n for n in dir(module) if not n.startswith("_")], n=3)
        raise UnitscopeError(f"{module_name!r} has no attribute {attr!r}",
                             hint=f"closest names: {', '.join(map(repr, close))}" if close else None) from None
    try:
        obj = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    except TypeError as e:
        raise UnitscopeError(f"{spec!r} must be callable without arguments", hint=str(e)) from None
    model = obj if isinstance(obj, nn.Module) else getattr(obj, "model", None)
    if not isinstance(model, nn.Module):
        raise UnitscopeError(f"{spec!r} returned {type(obj).__name__}, not an nn.Module",
                             hint="return the model, or an object with a .model attribute")
    return Loaded(model.to(device), spec, "factory")


def _hf_model(folder: str, device) -> Loaded:
    """A ``transformers`` model and its tokenizer from a local folder (``local_files_only``)."""
    from .hf import load_hf

    model, tokenizer, embedding = load_hf(folder, device)
    encode = None
    if tokenizer is not None:
        if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token

        def encode(sentences):
            enc = tokenizer(list(sentences), padding=True, return_tensors="pt")
            return enc["input_ids"], [tokenizer.convert_ids_to_tokens(row[m.bool()]) for row, m in
                                      zip(enc["input_ids"], enc["attention_mask"])]

    example = encode(["a fine film ."])[0] if encode is not None else None
    return Loaded(model, f"hf:{folder}", "factory", encode_text=encode, example=example,
                  extra={"embedding": embedding, "tokenizer": tokenizer})


def load_model(spec: str, device: str | torch.device = "cpu") -> Loaded:
    """A zoo name, a ``torch.export``/TorchScript file, or ``package.module:factory`` → :class:`Loaded`."""
    device = check_device(device)
    if spec in ZOO_MODELS:
        return _zoo_model(spec, device)
    if spec.startswith("hf:"):
        return _hf_model(spec[3:], device)
    path = Path(spec)
    if path.is_file():
        return _file_model(path, device)
    if ":" in spec and not os.sep in spec.partition(":")[0]:
        return _factory_model(spec, device)
    if path.suffix or os.sep in spec:
        raise UnitscopeError(f"model file {spec!r} not found")
    close = difflib.get_close_matches(spec, ZOO_MODELS, n=3, cutoff=0.0)
    raise UnitscopeError(f"unknown model {spec!r}", hint=f"closest zoo names: {', '.join(map(repr, close))}")


def check_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UnitscopeError(f"unknown device {device!r}", hint="use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnitscopeError(f"device {device!r} asked for, but CUDA is not available here", hint="use --device cpu")
    return dev


# ------------------------------------------------------------------------------------------------ inputs --
def _zoo_data(name: str, loaded: Loaded | None) -> Inputs:
    if name == "digits":
        from .zoo import digits_data

        _, test = digits_data()
        return Inputs(test.x, test.y, [f"test#{i}" for i in range(len(test))], [im[0].numpy() for im in test.x])
    if name == "photos":
        from .zoo import photos

        pics = photos()
        prepare = (loaded.prepare_image if loaded is not None and loaded.prepare_image is not None
                   else _default_image_prepare(None))
        return Inputs(torch.stack([prepare(im) for im in pics.values()]), None, list(pics), list(pics.values()))
    if name == "reviews":
        if loaded is None or loaded.encode_text is None:
            raise UnitscopeError("the reviews are sentences: they need a text model", hint="use sentiment-cnn")
        from .zoo.sentiment import movie_reviews

        test = movie_reviews().test
        x, _ = loaded.encode_text(test.sentences)
        return Inputs(x, test.labels, list(test.sentences))
    raise AssertionError(name)


def _default_image_prepare(shape):
    from torchvision.transforms.functional import pil_to_tensor, resize

    def prepare(image):
        from PIL import Image

        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        mode = "L" if shape is not None and shape[0] == 1 else "RGB"
        t = pil_to_tensor(image.convert(mode)).float() / 255.0
        if shape is not None:
            t = resize(t, list(shape[1:]), antialias=True)
        return t

    return prepare


def _image_files(paths: list[Path]) -> list[Path]:
    files = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UnitscopeError(f"no images in folder {str(p)!r}", hint=f"looked for {', '.join(IMAGE_SUFFIXES)}")
            files += found
        else:
            files.append(p)
    return files


def _tensor_file(path: Path) -> torch.Tensor:
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise UnitscopeError(f"cannot read {str(path)!r} as a numpy array", hint=str(e)) from None
        return torch.from_numpy(np.ascontiguousarray(arr))
    from .core.files import safe_load

    obj = safe_load(path, what="tensor file")  # plain tensors only (weights_only=True); damaged/unsafe: an error
    if isinstance(obj, dict):
        for key in ("inputs", "x", "data"):
            if isinstance(obj.get(key), torch.Tensor):
                return obj[key]
        raise UnitscopeError(f"{str(path)!r} holds a dict without an 'inputs'/'x'/'data' tensor", keys=sorted(obj))
    if not isinstance(obj, torch.Tensor):
        raise UnitscopeError(f"{str(path)!r} holds a {type(obj).__name__}, not a tensor")
    return obj


def load_inputs(specs, loaded: Loaded | None = None, *, limit: int | None = None) -> Inputs:
    """Zoo data, tensor files, image files/folders or a ``.txt`` of sentences → :class:`Inputs` (batch first)."""
    specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    if not specs:
        raise UnitscopeError("no inputs given", hint=f"a zoo data name ({', '.join(ZOO_DATA)}), files or folders")
    if len(specs) == 1 and str(specs[0]) in ZOO_DATA:
        inputs = _zoo_data(str(specs[0]), loaded)
    else:
        paths = [Path(s) for s in specs]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            hint = f"zoo data names: {', '.join(ZOO_DATA)}"
            close = difflib.get_close_matches(missing[0], ZOO_DATA, n=1)
            if close:
                hint = f"did you mean {close[0]!r}?"
            raise UnitscopeError(f"input {missing[0]!r} not found", hint=hint)
        suffixes = {p.suffix.lower() for p in paths if p.is_file()}
        if suffixes & {".pt", ".pth", ".npy"}:
            if len(paths) != 1:
                raise UnitscopeError("give one tensor file, not several", files=[str(p) for p in paths])
            x = _tensor_file(paths[0])
            if x.is_floating_point() is False and loaded is not None and loaded.kind == "zoo":
                x = x.float()
            inputs = Inputs(x, None, [f"{paths[0].name}[{i}]" for i in range(len(x))])
        elif suffixes == {".txt"}:
            if loaded is None or loaded.encode_text is None:
                raise UnitscopeError("a .txt file is read as sentences, which need a text model",
                                     hint="use sentiment-cnn, or give images / a tensor")
            sentences = [ln.strip() for p in paths for ln in p.read_text().splitlines() if ln.strip()]
            if not sentences:
                raise UnitscopeError("no sentences in the text file(s)", files=[str(p) for p in paths])
            x, _ = loaded.encode_text(sentences)
            inputs = Inputs(x, None, sentences)
        else:
            inputs = _images(_image_files(paths), loaded)
    if limit is not None:
        if limit < 1:
            raise UnitscopeError("--limit must be ≥ 1", limit=limit)
        inputs = Inputs(inputs.x[:limit], None if inputs.labels is None else inputs.labels[:limit],
                        None if inputs.names is None else inputs.names[:limit],
                        None if inputs.images is None else inputs.images[:limit])
    return inputs


def _images(files: list[Path], loaded: Loaded | None) -> Inputs:
    from PIL import Image, UnidentifiedImageError

    bad = [f for f in files if f.suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
        raise UnitscopeError(f"cannot read {str(bad[0])!r}: not an image, .pt/.npy tensor or .txt",
                             hint=f"images end in {', '.join(IMAGE_SUFFIXES)}")
    prepare = loaded.prepare_image if loaded is not None and loaded.prepare_image is not None else None
    pics, xs = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise UnitscopeError(f"cannot read image {str(f)!r}", hint=str(e)) from None
        if prepare is None:
            shape = loaded.image_shape if loaded is not None and loaded.image_shape else (3, im.height, im.width)
            prepare = _default_image_prepare(shape)
        pics.append(np.asarray(im))
        xs.append(prepare(im))
    return Inputs(torch.stack(xs), None, [f.name for f in files], pics)
