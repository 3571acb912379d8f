"""The messages a newcomer trips over, in the user's terms: each names the user's shape, batch indices or range and
what the model expects (issue 33). Through the public entry points."""

import time
import warnings

import pytest
import torch
import torch.nn as nn

import unitscope as us
from unitscope.core.sites import rank_names


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


# ------------------------------------------------------------------------------------------ wrong shape --
def test_wrong_input_shape_states_the_users_shape_and_what_the_model_expects():
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.resnet18(weights=None).eval()
    with pytest.raises(us.UnitscopeError) as info:
        us.conductance(net, torch.randn(4, 64, 64), layers=["layer3"], n_steps=4)
    text = str(info.value)
    assert text.startswith("the model does not accept inputs of shape [4, 64, 64]:")
    assert "the model expects [N, 3, H, W] (read from its first layer, 'conv1': Conv2d(3, 64" in text
    assert "rows" not in text and "examples first" in text


def test_wrong_input_shape_of_an_mlp_names_its_flatten_and_width():
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(us.UnitscopeError) as info:
        us.activation(net, torch.randn(2, 1, 20, 20), layers=["1"])
    text = str(info.value)
    assert "inputs of shape [2, 1, 20, 20]" in text
    assert "the model expects [N, …] with 784 values per example (flattened by '0')" in text


def test_a_failure_on_path_points_says_so_in_the_users_terms():
    class PathOnly(nn.Module):  # fails on batches larger than the user's (path points), not on the inputs
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            if x.shape[0] > 2:
                raise RuntimeError("this model only takes two rows")
            return self.fc(x)

    with pytest.raises(us.UnitscopeError) as info:
        us.conductance(PathOnly(), torch.randn(2, 4), layers=["fc"], target=0, n_steps=4)
    text = str(info.value)
    assert "points of the path from the baselines to the inputs" in text and "(your inputs: [2, 4])" in text
    assert "rows=" not in text


# ---------------------------------------------------------------------------------------------- targets --
@pytest.mark.parametrize("call", ["conductance", "grad_x_activation", "neuron_conductance"])
def test_target_out_of_range_names_the_users_count_and_the_valid_range(call):
    net, x = small_cnn(), torch.randn(4, 3, 8, 8)
    fn = {
        "conductance": lambda t: us.conductance(
            net, x, ["1"], target=t, n_steps=6, path=us.PathConfig(gap_warning=None)
        ),
        "grad_x_activation": lambda t: us.grad_x_activation(net, x, ["1"], target=t),
        "neuron_conductance": lambda t: us.neuron_conductance(net, x, layer="1", units=[0], target=t, n_steps=6),
    }[call]
    with pytest.raises(us.UnitscopeError) as info:
        fn(10)
    text = str(info.value)
    assert "the model has 10 outputs, so a target must be in 0…9; got target 10 for all 4 examples" in text
    assert "[4, 10] for these inputs" in text and "28" not in text and "output_shape" not in text
    with pytest.raises(us.UnitscopeError) as info:
        fn([0, 1, 12, 3])
    assert "example 2 has target 12 (1 of the 4 examples)" in str(info.value)


def test_a_negative_target_is_explained():
    net, x = small_cnn(), torch.randn(4, 3, 8, 8)
    with pytest.raises(us.UnitscopeError) as info:
        us.conductance(net, x, ["1"], target=-1, n_steps=6, path=us.PathConfig(gap_warning=None))
    text = str(info.value)
    assert "must be in 0…9; got target -1 for all 4 examples" in text
    assert "negative ones are not taken from the end: the last class is 9" in text


def test_several_bad_targets_are_listed_by_example():
    net, x = small_cnn(), torch.randn(6, 3, 8, 8)
    with pytest.raises(us.UnitscopeError) as info:
        us.internal_influence(net, x, ["1"], target=[11, 0, 12, 13, 14, 1], n_steps=6)
    text = str(info.value)
    assert (
        "example 0 has target 11, example 2 has target 12, example 3 has target 13, … (4 of the 6 examples)" in text
    ) and "targets=[11, 12, 13, 14]" in text


# ------------------------------------------------------------------------------------------ layer names --
def test_a_misspelled_bert_layer_suggests_the_right_one_first():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            vocab_size=30,
            max_position_embeddings=16,
            num_labels=2,
        )
    ).eval()
    with pytest.raises(us.UnitscopeError) as info:
        us.activation(model, torch.randint(0, 30, (2, 5)), layers=["bert.encoder.layer.1.intermediate.act_fn"])
    text = str(info.value)
    assert (
        "closest valid names: 'bert.encoder.layer.1.intermediate.intermediate_act_fn', "
        "'bert.encoder.layer.0.intermediate.intermediate_act_fn'" in text
    )


def test_ranking_is_by_the_last_component_then_the_path():
    names = ["features.relu1", "features.relu2", "features.relu3", "classifier.relu", "features"]
    # ties keep the order of the names
    assert rank_names("feature.relu3", names, n=3) == ["features.relu3", "features.relu1", "features.relu2"]
    assert rank_names("classifier.Relu", names, n=1) == ["classifier.relu"]
    many = [f"model.layers.{i}.mlp.{p}" for i in range(48) for p in ("gate_proj", "up_proj", "down_proj", "act_fn")]
    start = time.perf_counter()
    assert rank_names("model.layers.7.mlp.act", many, n=1) == ["model.layers.7.mlp.act_fn"]
    assert time.perf_counter() - start < 5.0  # an error path, but not a slow one on a large model


def test_scores_and_scans_answer_a_misspelled_layer_the_same_way():
    net, x = small_cnn(), torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = us.activation(net, x, ["1", "4"])
    with pytest.raises(us.UnitscopeError, match=r"no scores for layer 'l'.*scored layers: '1', '4'"):
        s["l"]
    from unitscope.data.accumulators import UnitStats
    from unitscope.data.scan_result import ScanResult

    r = ScanResult(
        {
            "activation": {
                "features.relu1": UnitStats.empty(2, 1, False),
                "features.relu2": UnitStats.empty(2, 1, False),
            }
        },
        0,
        None,
        {},
    )
    with pytest.raises(us.UnitscopeError, match=r"closest scanned layers: 'features.relu2', 'features.relu1'"):
        r.mean("feature.relu2")
