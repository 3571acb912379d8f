"""Models nobody here wrote, built from configs with random weights (nothing downloaded), each with its inputs.

>>> arch = build("mlp_layernorm_nobias")
>>> arch.kind, arch.cuts[0], tuple(arch.model(*arch.args).shape)
('vector', '0', (2, 3))

Every builder returns an :class:`Arch`: the model (eval mode), its inputs (float tensors or token ids), the
``embedding=`` module of token models (paths start at its output), ``additional_forward_args`` (the attention
mask), layers that are **cuts** (the output depends on the input only through them: a residual-stream block
output, a stage output), layers that are not (a residual branch, a transformer MLP activation), and labels for
the data-scale functions. ``transformers`` models are wrapped so that they return ``[N, classes]`` (a
classifier's logits, a causal LM's next-token logits after the last real token).

Site names were read with ``unitscope.layer_names(model, inputs=...)`` (``test_matrix.py`` checks that every
layer named here is one of them). Builds are cached: :func:`build` returns the same record for the same name,
so treat ``model`` as read-only (the matrix checks that every call hands it back unchanged). Each model has its
last parameter frozen and a gradient pending on its first, as in the middle of a training run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn as nn

__all__ = ["Arch", "ARCHITECTURES", "ATTENTION", "build", "wrap_hf"]

VOCAB = 40
IMAGE = (3, 32, 32)


@dataclass(frozen=True)
class Arch:
    name: str
    kind: str  # "image", "text", "sequence" or "vector"
    model: nn.Module
    inputs: object  # a tensor (images, sequences, token ids) or a tuple of tensors
    cuts: tuple  # layers every path from the input to the output goes through
    non_cuts: tuple  # layers that are not cuts
    labels: torch.Tensor  # [N] integer labels (for scan / class selectivity)
    more_inputs: object  # a second batch of the same kind (scan over two batches)
    more_labels: torch.Tensor
    embedding: str | None = None
    additional_forward_args: tuple | None = None
    more_forward_args: tuple | None = None
    attention: bool = False  # has softmax attention through torch's fused SDPA
    units: tuple = (0, 1)  # units for neuron conductance / ablation (of ``unit_layer``)
    unit_layer: str | None = None  # default: the first cut
    captum_layer: str | None = None  # a layer for Captum parity (None: Captum's LayerConductance cannot run)
    n_classes: int = 10
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def layer(self) -> str:
        return self.unit_layer or self.cuts[0]

    @property
    def args(self) -> tuple:
        """Positional arguments of one forward call: inputs, then ``additional_forward_args``."""
        inputs = self.inputs if isinstance(self.inputs, tuple) else (self.inputs,)
        return (*inputs, *(self.additional_forward_args or ()))

    @property
    def image_shape(self) -> tuple | None:
        return tuple(self.inputs.shape[1:]) if self.kind == "image" else None


class LastTokenLogits(nn.Module):
    """A ``transformers`` model as a classifier: ``(input_ids, attention_mask) -> [N, classes]``. A causal LM's
    classes are its vocabulary at the last real token (what a user scoring the next token would write)."""

    def __init__(self, hf: nn.Module, causal: bool, image: bool = False):
        super().__init__()
        self.hf, self.causal, self.image = hf, causal, image

    def forward(self, input_ids, attention_mask=None):
        if self.image:
            return self.hf(pixel_values=input_ids).logits
        logits = self.hf(input_ids=input_ids, attention_mask=attention_mask).logits
        if not self.causal:
            return logits
        if attention_mask is None:
            return logits[:, -1]
        last = attention_mask.long().sum(1) - 1
        return logits[torch.arange(logits.shape[0], device=logits.device), last]


def wrap_hf(hf: nn.Module, *, causal: bool = False, image: bool = False) -> nn.Module:
    return LastTokenLogits(hf, causal, image).eval()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(seed: int, n: int = 2) -> torch.Tensor:
    return torch.rand(n, *IMAGE, generator=_generator(seed))


def _ids(seed: int, n: int = 2, t: int = 6, eos: int | None = None) -> torch.Tensor:
    ids = torch.randint(3, VOCAB, (n, t), generator=_generator(seed))
    if eos is not None:
        ids[:, -1] = eos
    return ids


def _calibrated(model: nn.Module) -> nn.Module:
    """BatchNorm statistics from 16 random images (what a freshly initialized net lacks: at running mean 0 and
    variance 1 the signal of MobileNetV3 / EfficientNet dies out, F(x) − F(x') ≈ 1e-10)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        p = next(model.parameters())
        model(torch.rand(16, *IMAGE, generator=_generator(9)).to(p.dtype))
    for m in bns:
        m.momentum = 0.1
    return model.eval()


def _image_arch(name, model, cuts, non_cuts, *, captum_layer=None, **kw) -> Arch:
    return Arch(
        name,
        "image",
        _calibrated(model),
        _images(1),
        tuple(cuts),
        tuple(non_cuts),
        torch.tensor([0, 1]),
        _images(2),
        torch.tensor([1, 0]),
        captum_layer=captum_layer,
        **kw,
    )


def _text_arch(
    name, hf, cuts, non_cuts, *, embedding, causal, mask=None, more_mask=None, eos=None, n_classes=VOCAB, **kw
) -> Arch:
    ids, more = _ids(3, eos=eos), _ids(4, eos=eos)
    mask = torch.ones_like(ids) if mask is None else mask
    more_mask = torch.ones_like(more) if more_mask is None else more_mask
    return Arch(
        name,
        "text",
        wrap_hf(hf, causal=causal),
        ids,
        tuple(cuts),
        tuple(non_cuts),
        torch.tensor([0, 1]),
        more,
        torch.tensor([1, 0]),
        embedding=embedding,
        additional_forward_args=(mask,),
        more_forward_args=(more_mask,),
        attention=True,
        n_classes=n_classes,
        **kw,
    )


# ---------------------------------------------------------------------------------------------------------------
# torchvision


def tv_resnet18():
    from torchvision.models import resnet18

    m = resnet18(weights=None, num_classes=10)
    # BasicBlock calls its one ``relu`` twice: @0 after bn1 (inside the residual branch), @1 after the sum
    return _image_arch(
        "tv_resnet18",
        m,
        ["layer1.0.relu@1", "layer2", "layer4", "avgpool"],
        ["layer1.0.relu@0", "layer2.1.conv2"],
        captum_layer="layer2",
        notes="shared relu called twice per block",
    )


def tv_mobilenet_v3_small():
    from torchvision.models import mobilenet_v3_small

    m = mobilenet_v3_small(weights=None, num_classes=10)
    # features.1: stride 2, no residual; its SE block (features.1.block.1) scales its input
    return _image_arch(
        "tv_mobilenet_v3_small",
        m,
        ["features.1.block.1", "features.3", "features.9", "avgpool"],
        ["features.1.block.1.fc1", "features.5.block.0"],
        captum_layer="features.3",
        notes="hardswish, squeeze-excitation",
    )


def tv_efficientnet_b0():
    from torchvision.models import efficientnet_b0

    m = efficientnet_b0(weights=None, num_classes=10)
    return _image_arch(
        "tv_efficientnet_b0",
        m,
        ["features.1", "features.3", "features.8", "avgpool"],
        ["features.2.1.block.0", "features.1.0.block.1.fc1"],
        captum_layer="features.3",
        notes="SiLU, squeeze-excitation, stochastic depth",
    )


def tv_convnext_tiny():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    # convnext_tiny's architecture (CNBlock: depthwise 7×7, LayerNorm2d, GELU MLP, layer scale 1e-6, stochastic
    # depth; LayerNorm2d + stride-2 conv downsampling) at widths 16–128 and depths 1-2-2-1 instead of 96–768 and
    # 3-3-9-3: the full size costs 15 s of this suite for the same code paths
    m = ConvNeXt(
        [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 2), CNBlockConfig(64, 128, 2), CNBlockConfig(128, None, 1)],
        stochastic_depth_prob=0.1,
        num_classes=10,
    )
    return _image_arch(
        "tv_convnext_tiny",
        m,
        ["features.1", "features.5", "features.7"],
        ["features.1.0.block", "features.3.1.block.5"],
        captum_layer="features.5",
        notes="convnext_tiny's blocks at widths 16-128: LayerNorm2d, GELU, layer scale",
        extra={"channels_last": ("features.3.1.block.5",)},
    )  # the MLP's Linear, between Permutes


def tv_regnet_x_400mf():
    from torchvision.models import regnet_x_400mf

    m = regnet_x_400mf(weights=None, num_classes=10)
    return _image_arch(
        "tv_regnet_x_400mf",
        m,
        ["stem", "trunk_output.block1", "trunk_output.block3"],
        ["trunk_output.block2.block2-1.f", "trunk_output.block1.block1-0.f.b"],
        captum_layer="trunk_output.block1",
        notes="group convolutions",
    )


def tv_vit():
    from torchvision.models import VisionTransformer

    m = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    nn.init.normal_(m.heads.head.weight, std=0.5)  # torchvision starts the head at zero: a constant output
    return _image_arch(
        "tv_vit",
        m,
        ["conv_proj", "encoder.layers.encoder_layer_0", "encoder.ln"],
        ["encoder.layers.encoder_layer_1.mlp.1", "encoder.layers.encoder_layer_0.self_attention"],
        attention=True,
        notes="nn.MultiheadAttention (need_weights=False: the fused SDPA kernel)",
    )


def _tv_float64():
    from torchvision.models import mobilenet_v3_small

    m = mobilenet_v3_small(weights=None, num_classes=10).double()
    a = _image_arch(
        "float64_mobilenet_v3_small",
        m,
        ["features.1.block.1", "features.3", "avgpool"],
        ["features.1.block.1.fc1"],
        captum_layer="features.3",
        notes="the whole model in float64",
    )
    return Arch(**{**a.__dict__, "inputs": a.inputs.double(), "more_inputs": a.more_inputs.double()})


# ---------------------------------------------------------------------------------------------------------------
# timm


def timm_vit_tiny():
    import timm

    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=10)
    return _image_arch(
        "timm_vit_tiny",
        m,
        ["patch_embed", "blocks.0", "blocks.1", "norm"],
        ["blocks.1.mlp.act", "blocks.0.attn"],
        attention=True,
        captum_layer=None,
        notes="depth 2, patch 8 at 32×32",
    )


def timm_convnext_atto():
    import timm

    m = timm.create_model("convnext_atto", pretrained=False, num_classes=10)
    return _image_arch(
        "timm_convnext_atto",
        m,
        ["stem", "stages.1", "stages.3"],
        ["stages.1.blocks.0.mlp.act", "stages.2.blocks.1.conv_dw"],
        captum_layer="stages.1",
        notes="ConvNeXt with conv MLP",
    )


def timm_swin():
    import timm

    m = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=32,
        patch_size=2,
        window_size=4,
        embed_dim=24,
        depths=(1, 1),
        num_heads=(1, 2),
        num_classes=10,
    )
    return _image_arch(
        "timm_swin",
        m,
        ["patch_embed", "layers.0", "layers.1", "norm"],
        ["layers.0.blocks.0.mlp.act", "layers.1.blocks.0.mlp.fc1"],
        attention=True,
        unit_layer="layers.0",
        notes="shifted window attention, channels-last [N, H, W, C] layers (C ≠ H: where they are "
        "equal the layout is ambiguous from the shape, and a user states spec=)",
        extra={
            "odd_layers": ("layers.1.blocks.0.attn",),
            "image_layer": "layers.0",
            "channels_last": ("patch_embed", "layers.0", "layers.1", "norm"),
        },
    )


def timm_resnet_aa():
    import timm

    m = timm.create_model("resnet10t", pretrained=False, aa_layer=timm.layers.BlurPool2d, num_classes=10)
    return _image_arch(
        "timm_resnet10t_aa",
        m,
        ["conv1", "layer1", "layer3", "global_pool"],
        ["layer2.0.act1", "layer3.0.conv1"],
        captum_layer="layer3",
        notes="anti-aliased (BlurPool) downsampling, deep stem",
    )


def _timm_bf16():
    import timm

    m = timm.create_model("convnext_atto", pretrained=False, num_classes=10).to(torch.bfloat16)
    a = _image_arch(
        "bfloat16_convnext_atto",
        m,
        ["stem", "stages.1", "stages.3"],
        ["stages.1.blocks.0.mlp.act"],
        captum_layer=None,
        notes="the whole model in bfloat16",
    )
    return Arch(
        **{**a.__dict__, "inputs": a.inputs.to(torch.bfloat16), "more_inputs": a.more_inputs.to(torch.bfloat16)}
    )


# ---------------------------------------------------------------------------------------------------------------
# transformers


def hf_gpt2():
    import transformers as T

    torch.manual_seed(0)
    hf = T.GPT2LMHeadModel(
        T.GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    )
    return _text_arch(
        "hf_gpt2",
        hf,
        ["hf.transformer.h.0", "hf.transformer.h.1", "hf.transformer.ln_f"],
        ["hf.transformer.h.1.mlp.act", "hf.transformer.h.0.attn"],
        embedding="hf.transformer.wte",
        causal=True,
        notes="Conv1D projections, learned positions, tied LM head",
    )


def hf_bert():
    import transformers as T

    torch.manual_seed(0)
    hf = T.BertForSequenceClassification(
        T.BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=16,
            num_labels=3,
        )
    )
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # example 1 has two padding tokens
    return _text_arch(
        "hf_bert",
        hf,
        ["hf.bert.embeddings", "hf.bert.encoder.layer.1", "hf.bert.pooler"],
        ["hf.bert.encoder.layer.1.intermediate.intermediate_act_fn", "hf.bert.encoder.layer.0.attention.self"],
        embedding="hf.bert.embeddings.word_embeddings",
        causal=False,
        mask=mask,
        n_classes=3,
        notes="padding in example 1; pooler on [CLS]",
    )


def hf_llama():
    import transformers as T

    torch.manual_seed(0)
    hf = T.LlamaForCausalLM(
        T.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=16,
        )
    )
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    return _text_arch(
        "hf_llama",
        hf,
        ["hf.model.layers.0", "hf.model.layers.1", "hf.model.norm"],
        ["hf.model.layers.1.mlp.act_fn", "hf.model.layers.0.self_attn.o_proj"],
        embedding="hf.model.embed_tokens",
        causal=True,
        mask=mask,
        notes="RMSNorm, rotary, SiLU-gated MLP; right padding in example 1",
    )


def hf_qwen2():
    import transformers as T

    torch.manual_seed(0)
    hf = T.Qwen2ForCausalLM(
        T.Qwen2Config(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=16,
        )
    )
    return _text_arch(
        "hf_qwen2",
        hf,
        ["hf.model.layers.0", "hf.model.layers.1", "hf.model.norm"],
        ["hf.model.layers.1.mlp.act_fn", "hf.model.layers.1.self_attn.k_proj"],
        embedding="hf.model.embed_tokens",
        causal=True,
        notes="grouped-query attention (4 q, 2 kv)",
    )


def hf_bart():
    import transformers as T

    torch.manual_seed(0)
    hf = T.BartForSequenceClassification(
        T.BartConfig(
            vocab_size=VOCAB,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=16,
            num_labels=3,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            init_std=0.1,
        )
    )
    # paths start at the encoder's token embedding; the decoder embeds the (shifted) ids on its own, so the
    # encoder's layers and the decoder's last layer are cuts; the decoder's MLP activation is not
    return _text_arch(
        "hf_bart",
        hf,
        ["hf.model.encoder.layers.0", "hf.model.decoder.layers.0"],
        ["hf.model.decoder.layers.0.activation_fn", "hf.model.decoder.layers.0.encoder_attn"],
        embedding="hf.model.encoder.embed_tokens",
        causal=False,
        eos=2,
        n_classes=3,
        notes="encoder-decoder; classification head on the last <eos>",
    )


def hf_distilbert():
    import transformers as T

    torch.manual_seed(0)
    hf = T.DistilBertForSequenceClassification(
        T.DistilBertConfig(
            vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=16, num_labels=3
        )
    )
    return _text_arch(
        "hf_distilbert",
        hf,
        ["hf.distilbert.embeddings", "hf.distilbert.transformer.layer.1", "hf.pre_classifier"],
        ["hf.distilbert.transformer.layer.1.ffn.activation", "hf.distilbert.transformer.layer.0.attention"],
        embedding="hf.distilbert.embeddings.word_embeddings",
        causal=False,
        n_classes=3,
    )


def hf_vit():
    import transformers as T

    torch.manual_seed(0)
    hf = T.ViTForImageClassification(
        T.ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=10,
        )
    )
    return _image_arch(
        "hf_vit",
        wrap_hf(hf, image=True),
        ["hf.vit.embeddings", "hf.vit.layers.0", "hf.vit.layernorm"],
        ["hf.vit.layers.1.mlp.activation_fn", "hf.vit.layers.0.attention"],
        attention=True,
        notes="ViTForImageClassification",
    )


# ---------------------------------------------------------------------------------------------------------------
# plain torch: recurrent models, a bias-free Linear into LayerNorm


class RecurrentClassifier(nn.Module):
    """``[N, T, 5]`` sequences → a projection → ``nn.LSTM``/``nn.GRU`` → the last step → 3 logits."""

    def __init__(self, cell: str):
        super().__init__()
        self.proj = nn.Linear(5, 8)
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(8, 12, batch_first=True)
        self.act = nn.Tanh()
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        out, _ = self.rnn(self.proj(x))
        return self.head(self.act(out[:, -1]))


def _recurrent(cell: str):
    torch.manual_seed(0)
    m = RecurrentClassifier(cell).eval()
    x, more = (torch.randn(2, 7, 5, generator=_generator(s)) for s in (5, 6))
    # the rnn's output is a tuple: LSTM (output, (h_n, c_n)), GRU (output, h_n) with h_n [layers, N, H] — its
    # batch is dim 1, so the GRU's rnn is an odd layer (test_matrix.test_odd_layers_work_or_fail_cleanly)
    cuts = ("proj", "rnn", "act") if cell == "lstm" else ("proj", "act")
    odd = () if cell == "lstm" else ("rnn",)
    return Arch(
        f"torch_{cell}",
        "sequence",
        m,
        x,
        cuts,
        (),
        torch.tensor([0, 1]),
        more,
        torch.tensor([1, 0]),
        unit_layer="act",
        captum_layer="proj",
        n_classes=3,
        notes=f"nn.{cell.upper()} (tuple output)",
        extra={"odd_layers": odd},
    )


def torch_lstm():
    return _recurrent("lstm")


def torch_gru():
    return _recurrent("gru")


def mlp_layernorm_nobias():
    """``x → Linear(bias=False) → LayerNorm → GELU → Linear``: at the zero baseline the LayerNorm's input is
    exactly zero, so the path starts where LayerNorm is singular (its output jumps within α ≈ √eps / |W x|)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 16, bias=False), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3)).eval()
    x, more = (torch.randn(2, 6, generator=_generator(s)) for s in (7, 8))
    return Arch(
        "mlp_layernorm_nobias",
        "vector",
        m,
        x,
        ("0", "1", "2"),
        (),
        torch.tensor([0, 1]),
        more,
        torch.tensor([1, 0]),
        captum_layer="2",
        n_classes=3,
        notes="LayerNorm of a bias-free Linear: its input is 0 at the zero baseline",
    )


ARCHITECTURES = {
    "tv_resnet18": tv_resnet18,
    "tv_mobilenet_v3_small": tv_mobilenet_v3_small,
    "tv_efficientnet_b0": tv_efficientnet_b0,
    "tv_convnext_tiny": tv_convnext_tiny,
    "tv_regnet_x_400mf": tv_regnet_x_400mf,
    "tv_vit": tv_vit,
    "timm_vit_tiny": timm_vit_tiny,
    "timm_convnext_atto": timm_convnext_atto,
    "timm_swin": timm_swin,
    "timm_resnet10t_aa": timm_resnet_aa,
    "hf_gpt2": hf_gpt2,
    "hf_bert": hf_bert,
    "hf_llama": hf_llama,
    "hf_qwen2": hf_qwen2,
    "hf_bart": hf_bart,
    "hf_distilbert": hf_distilbert,
    "hf_vit": hf_vit,
    "torch_lstm": torch_lstm,
    "torch_gru": torch_gru,
    "mlp_layernorm_nobias": mlp_layernorm_nobias,
    "float64_mobilenet_v3_small": _tv_float64,
    "bfloat16_convnext_atto": _timm_bf16,
}

#: the architectures whose attention runs through torch's fused scaled_dot_product_attention
ATTENTION = (
    "tv_vit",
    "timm_vit_tiny",
    "timm_swin",
    "hf_gpt2",
    "hf_bert",
    "hf_llama",
    "hf_qwen2",
    "hf_bart",
    "hf_distilbert",
    "hf_vit",
)


def _mid_training(model: nn.Module) -> nn.Module:
    """A model as a user may hand it over: its last parameter frozen, a gradient pending on its first (both must
    survive every call)."""
    params = list(model.parameters())
    params[-1].requires_grad_(False)
    params[0].grad = torch.full_like(params[0], 0.5)
    return model


@functools.lru_cache(maxsize=None)
def build(name: str) -> Arch:
    """The architecture ``name`` (built once per process, seeded: the same weights every run)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        arch = ARCHITECTURES[name]()
    _mid_training(arch.model)
    return arch
