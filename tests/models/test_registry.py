"""The registry: one name one builder, one-line errors, keyword arguments passed through to the
trunk, and every registered model and adapter built and carded."""

import ast
from pathlib import Path

import pytest
import torch

import prismlab.models.registry as registry_mod
from prismlab.errors import ConfigError
from prismlab.models import create_model, make_adapter, register_model
from prismlab.models.registry import ADAPTERS, MODELS, Registry


def _builder(**kw):
    """A thing that builds a linear layer."""
    return torch.nn.Linear(2, kw.get("out", 2))


def test_a_name_registered_twice_is_an_error():
    things = Registry("thing")
    things.register("lin", reference="this test")(_builder)
    with pytest.raises(ValueError, match="thing 'lin' registered twice"):
        things.register("lin", reference="this test")(_builder)
    with pytest.raises(ValueError, match="model 'shallow' registered twice"):
        register_model("shallow", reference="this test")(_builder)
    assert MODELS.get("shallow").build is not _builder  # the first registration stands


def test_a_builder_needs_a_principle_and_a_reference():
    things = Registry("thing")

    def undocumented(**kw):
        return torch.nn.Identity()

    def rambling(**kw):
        """One,
        two,
        three lines before the first blank line."""

    for fn, ref in ((undocumented, "this test"), (rambling, "this test"), (_builder, "")):
        with pytest.raises(ValueError, match="principle in one or two lines, and a reference"):
            things.register(fn.__name__, reference=ref)(fn)
    assert things.names() == []


def test_an_unknown_name_is_a_one_line_error_listing_the_known_ones():
    for kind, build in (("model", create_model), ("adapter", make_adapter)):
        with pytest.raises(ConfigError) as err:
            build("resnet35")
        msg = str(err.value)
        assert msg.startswith(f"unknown {kind} 'resnet35' (known: ") and "\n" not in msg
        known = (MODELS if kind == "model" else ADAPTERS).names()
        assert msg.endswith("(known: " + ", ".join(known) + ")")


def test_an_unknown_keyword_is_a_config_error_naming_the_model():
    with pytest.raises(ConfigError, match="model 'seed_cool_model': .*widht"):
        create_model("seed_cool_model", widht=8)
    with pytest.raises(ConfigError, match="adapter 'channelset': .*widht"):
        make_adapter("channelset", widht=8)


def test_builders_pass_keywords_through_to_the_trunk():
    # every default is the trunk's own; what the caller gives reaches it unchanged
    model = create_model("seed_cool_model", num_classes=7, widths=(8, 16), dropout=0.1)
    assert model.trunk.features[2].block[0].out_channels == 16 and model.trunk.head[0].p == 0.1
    assert model.trunk.head[3].out_features == 7
    assert create_model("shallow", anneal=0.25, adapter="sigmoid").trunk.anneal == 0.25
    assert create_model("shallow_s").trunk.net.head.in_features == 384
    assert create_model("seed_cool_model").trunk.head[0].p == 0.3  # CoolCNN's default


def test_the_registry_imports_no_model_module():
    tree = ast.parse(Path(registry_mod.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("prismlab.models")], imported


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_builds_and_has_its_card_facts(name):
    model = create_model(name, num_classes=6).eval()
    assert model.spec == {"name": name, "num_classes": 6}
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 6)
    entry = MODELS.get(name)
    assert entry.principle and entry.reference


@pytest.mark.parametrize("name", ADAPTERS.names())
def test_every_registered_adapter_builds_and_has_its_card_facts(name):
    ad = make_adapter(name)
    assert ad(torch.zeros(1, 3, 8, 8), (0, 1, 2)).shape == (1, ad.out_channels, 8, 8)
    entry = ADAPTERS.get(name)
    assert entry.principle and entry.reference
