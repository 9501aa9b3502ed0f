"""Model cards: the registered text, and costs that match a count by hand."""

import pytest

from prismlab.errors import ConfigError
from prismlab.models.cards import cards_markdown
from prismlab.models.registry import ADAPTERS, MODELS


def test_the_baseline_cnns_card_matches_a_count_by_hand():
    # conv 3-32-64-128 (3x3, bias) at 32, 16 and 8 px, then FC 128 -> 512 -> 50; 2 FLOPs a multiply-add
    convs = [(3, 32, 32), (32, 64, 16), (64, 128, 8)]
    deployed = sum(9 * cin * cout + cout for cin, cout, _ in convs) + (128 * 512 + 512) + (512 * 50 + 50)
    flops = sum(2 * 9 * cin * cout * px * px for cin, cout, px in convs) + 2 * (128 * 512 + 512 * 50)
    bn = 2 * (32 + 64 + 128)  # BatchNorm's scale and shift, folded away at deployment
    assert (deployed, flops) == (184_946, 20_826_112)
    card = cards_markdown(["baseline_cnn"], 32)
    assert card.startswith("### `baseline_cnn` (model)\n\n" + MODELS.get("baseline_cnn").principle)
    assert f"Reference: {MODELS.get('baseline_cnn').reference}." in card
    assert (
        f"Cost at 32x32 RGB, 50 classes, naive adapter: {deployed + bn:,} parameters as trained, "
        f"{deployed:,} as deployed; {flops / 1e6:.1f} MFLOPs deployed."
    ) in card


def test_adapter_cards_cost_the_adapter_alone():
    card = cards_markdown([], 16, ["naive", "pool_channel_attention"])
    assert "Cost at 16x16 RGB, the adapter alone: 0 parameters as trained, 0 as deployed; 0.0 MFLOPs" in card
    # a 7x7 conv from the mean and max maps to one gate map: 2 * 49 weights and a bias, at every pixel
    flops = 2 * 2 * 49 * 16 * 16
    assert f"99 parameters as trained, 99 as deployed; {flops / 1e6:.1f} MFLOPs" in card


def test_every_registered_model_and_adapter_has_a_card():
    card = cards_markdown(MODELS.names(), 16, ADAPTERS.names())
    for names, kind in ((MODELS.names(), "model"), (ADAPTERS.names(), "adapter")):
        for n in names:
            assert f"### `{n}` ({kind})" in card
    assert card.count("Reference: ") == card.count("Cost at 16x16 RGB") == len(MODELS.names()) + len(ADAPTERS.names())


def test_an_unknown_name_has_no_card():
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        cards_markdown(["nope"], 32)


def test_an_adapter_built_as_the_first_conv_is_costed_as_built():
    from prismlab.bench.task1 import METHODS
    from prismlab.models.cards import cards_section

    name, built = METHODS["slice_param"].card_adapter()
    assert name == "slice_param" and built.out_channels == 32
    card = "\n".join(cards_section([], 32, [(name, built), "slice_param"]))  # each name once: the first
    assert card.count("### `slice_param` (adapter)") == 1
    assert f"built as the trunk's first conv (first_layer): {4 * 32 * 9:,} parameters as trained" in card
    assert METHODS["ours"].card_adapter() == "channelset"  # a registered form: its name only
