"""hf:FOLDER: tiny random-weight transformers models saved with save_pretrained to a temp folder, loaded back
through unitscope's loader and CLI (nothing fetched)."""

import pytest
import torch

import unitscope as us

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ["[PAD]", "[UNK]", "a", "fine", "film", ".", "not", "good", "bad", "movie"]


def _tokenizer():
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture(params=["gpt2", "bert"])
def folder(request, tmp_path):
    torch.manual_seed(0)
    if request.param == "gpt2":
        model = transformers.GPT2LMHeadModel(
            transformers.GPT2Config(
                n_layer=2, n_embd=16, n_head=2, n_positions=16, vocab_size=len(WORDS), pad_token_id=0
            )
        )
        layer = "transformer.h.1.mlp.act"
    else:
        model = transformers.BertForSequenceClassification(
            transformers.BertConfig(
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                vocab_size=len(WORDS),
                max_position_embeddings=16,
                num_labels=2,
            )
        )
        layer = "bert.encoder.layer.1.intermediate.intermediate_act_fn"
    model.save_pretrained(tmp_path / "m")
    _tokenizer().save_pretrained(tmp_path / "m")
    return str(tmp_path / "m"), layer, model.config


def test_hf_folder_loads_and_scores_from_token_ids(folder, tmp_path):
    from unitscope.loading import load_inputs, load_model

    path, layer, config = folder
    loaded = load_model("hf:" + path)
    assert layer in us.layer_names(loaded.model)
    (tmp_path / "s.txt").write_text("a fine film .\nnot a good movie\n")
    inputs = load_inputs([str(tmp_path / "s.txt")], loaded)
    assert not inputs.x.is_floating_point() and inputs.x.shape[0] == 2
    s = us.conductance(
        loaded.model,
        inputs.x,
        [layer],
        embedding=loaded.extra["embedding"],
        target=1,
        n_steps=32,
        path=us.PathConfig(gap_warning=None),
    )
    width = config.intermediate_size if hasattr(config, "intermediate_size") else 4 * config.n_embd
    assert s.per_unit(layer).shape == (2, width)
    a = us.activation(loaded.model, inputs.x, [layer])
    assert a[layer].shape[-1] == width


def test_cli_layers_and_importance_on_hf_folder(folder, tmp_path, capsys):
    from unitscope.cli import main as cli_main

    path, layer, _ = folder
    main = getattr(cli_main, "main", cli_main)
    assert main(["layers", "hf:" + path]) == 0
    assert layer in capsys.readouterr().out
    (tmp_path / "s.txt").write_text("a fine film .\nnot a good movie\n")
    out = tmp_path / "out"
    rc = main(
        [
            "importance",
            "hf:" + path,
            str(tmp_path / "s.txt"),
            "--layers",
            layer,
            "--n-steps",
            "8",
            "--target",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0 and (out / "scores.csv").is_file()
