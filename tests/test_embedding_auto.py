"""``embedding="auto"``: the token embedding found from ``get_input_embeddings()`` (a ``transformers`` model, also
inside a user's wrapper) or the model's only ``nn.Embedding`` — the same numbers as naming it."""

import pytest
import torch
import torch.nn as nn

import unitscope as us

transformers = pytest.importorskip("transformers")


class Wrapped(nn.Module):
    def __init__(self, hf):
        super().__init__()
        self.m = hf

    def forward(self, ids):
        return self.m(input_ids=ids).logits


def test_auto_finds_the_word_embedding_inside_a_wrapper_and_gives_the_same_numbers():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=30, num_labels=2
    )
    net = Wrapped(transformers.BertForSequenceClassification(cfg).eval())
    ids = torch.randint(1, 30, (2, 5), generator=torch.Generator().manual_seed(1))
    layer = "m.bert.encoder.layer.1"
    auto = us.conductance(net, ids, [layer], embedding="auto", target=0, n_steps=16, method="gausslegendre")
    named = us.conductance(
        net, ids, [layer], embedding="m.bert.embeddings.word_embeddings", target=0, n_steps=16, method="gausslegendre"
    )
    torch.testing.assert_close(auto[layer], named[layer])
    assert float(auto.relative_delta(layer).max()) < 1e-3


def test_auto_on_a_plain_model_takes_its_only_embedding_and_says_when_there_are_several():
    torch.manual_seed(0)
    one = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
    ids = torch.randint(0, 10, (2, 3))
    s = us.conductance(one, ids, ["2"], embedding="auto", target=1, n_steps=8)
    assert s["2"].shape == (2, 2)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos, self.out = nn.Embedding(10, 4), nn.Embedding(3, 4), nn.Linear(4, 2)

        def forward(self, ids):
            return self.out((self.tok(ids) + self.pos(torch.arange(ids.shape[1]))).mean(1))

    with pytest.raises(us.UnitscopeError, match=r"2 nn.Embedding modules.*'tok', 'pos'.*embedding='NAME'"):
        us.conductance(Two(), ids, ["out"], embedding="auto", target=0, n_steps=8)
