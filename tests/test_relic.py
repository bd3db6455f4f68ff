"""The five ReLIC models as released: state_dict layout, parity with recorded outputs of the
release, checkpoint refusal messages, and the two stages of ReLIC+ / ReLIC++."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import shared_dir
from iaabench import parity
from iaabench.api import create_model
from iaabench.cards import load_card
from iaabench.errors import ConfigError, WeightsError
from iaabench.models import relic as R
from iaabench.registry import model_info

CASES = Path(__file__).parent / "data" / "parity_cases_relic_eat.json"
ENTRIES = {"relic_u": "relic-u", "relic_e": "relic-e", "relic": "relic", "relic1": "relic-plus",
           "relic2": "relic-plusplus"}


def _layouts() -> list[tuple[str, dict]]:
    """(entry, key -> shape) from the copy under tests/data and, when present, the shared file."""
    local = json.loads(CASES.read_text())
    out = [(e, local[e]["state_dict_shapes"]) for e in ENTRIES if e in local]
    base = shared_dir()
    shared = base / "reference" / "parity_cases_relic_eat.json" if base else None
    if shared is not None and shared.is_file():
        data = json.loads(shared.read_text())
        out += [(e, data[e]["state_dict_shapes"]) for e in ENTRIES]
    return out


def test_state_dict_is_the_release_layout():
    layouts = _layouts()
    assert {e for e, _ in layouts} >= {"relic_u", "relic2"}
    for entry, shapes in layouts:
        model = create_model(ENTRIES[entry], pretrained="none")
        own = [(k, list(v.shape)) for k, v in model.state_dict().items()]
        assert own == [(k, list(s)) for k, s in shapes.items()], entry  # same keys, order, shapes


def test_shared_layouts_are_checked_when_present():
    base = shared_dir()
    if base is None or not (base / "reference" / "parity_cases_relic_eat.json").is_file():
        pytest.skip("shared reference/parity_cases_relic_eat.json not found: set IAABENCH_SHARED to the shared folder")
    assert {e for e, _ in _layouts()} == set(ENTRIES)


@pytest.mark.slow  # two calibration passes of batch 16 through MobileNetV2s
def test_matches_the_release_on_the_carried_cases():
    """relic_u (global branch) and relic2 (two backbones and the gate), batch-4 cases."""
    results = parity.run_parity(CASES, only=["relic_u", "relic2"])
    assert [r["status"] for r in results] == ["pass", "pass"], parity.format_parity(results)
    for r in results:
        assert r["output_diff"] <= 1e-4
        assert all(v is not None and v < 1e-4 for v in r["branch_diffs"].values()), r["branch_diffs"]


def test_registration_heads_and_parity_entries():
    for entry, name in ENTRIES.items():
        info = model_info(name)
        assert info.family == "relic" and info.heads == ("dist", "score")
        assert dict(info.parity) == {entry: "dist"}
    card = load_card("relic")
    assert set(card.variants) == set(ENTRIES.values())
    assert card.recipe(card.recipe_name_for("ava", "relic-plus")).options["stage_one_dataset"] == "ava"
    assert {r["split"] for r in card.reported} == {"relic-random"}


def test_features_and_heads():
    torch.manual_seed(0)
    x = parity.make_inputs(2)
    m = create_model("relic", pretrained="none").eval()
    with torch.no_grad():
        out, br = m.forward_with_branches(x)
    assert out.shape == (2, 10) and torch.allclose(out.sum(1), torch.ones(2), atol=1e-5)
    assert set(br) == {"mid_features_mean_first8", "pooled_first8", "simmap_row24_first8"}
    score = create_model("relic-u", head="score", pretrained="none").eval()
    with torch.no_grad():
        assert score(x).shape == (2, 1)
    with pytest.raises(ConfigError, match="6 x 6 feature map"):
        m(parity.make_inputs(1, 192))
    # as in the release, relic-u's AvgPool2d(7) takes the top-left 7 x 7 window of a larger map
    u = create_model("relic-u", pretrained="none").eval()
    x256 = parity.make_inputs(1, 256)
    with torch.no_grad():
        out, br = u.forward_with_branches(x256)
        fmap = u.base_model[0](x256)
    assert torch.allclose(br["pooled_first8"], fmap[:, :8, :7, :7].mean(dim=(2, 3)), atol=1e-6)
    with pytest.raises(ConfigError, match="8 x 8 feature map"):
        m(x256)


def test_similarity_map_is_the_clamped_cosine_similarity():
    fmap = torch.rand(2, 1280, 7, 7, dtype=torch.float64)
    sim = R.similarity_map(fmap)
    assert sim.shape == (2, 49, 49)
    assert torch.allclose(torch.diagonal(sim, dim1=1, dim2=2), torch.ones(2, 49, dtype=torch.float64))
    v, w = fmap.flatten(2)[:, :, 24], fmap.flatten(2)[:, :, 3]
    assert torch.allclose(sim[:, 24, 3], torch.nn.functional.cosine_similarity(v, w, dim=1))
    tiny = fmap * 1e-6  # norm products below 1e-8 are clamped, as released: no longer cosines
    assert torch.allclose(R.similarity_map(tiny), (tiny.flatten(2).transpose(1, 2) @ tiny.flatten(2)) / 1e-8)


def test_gate_statistics_are_max_min_mean_unbiased_std():
    v = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    assert torch.allclose(R.gate_statistics(v), torch.tensor([[6.0, 1.0, 3.0, float(torch.tensor([1.0, 2, 3, 6]).std())]]))


# --- checkpoints -----------------------------------------------------------------------------

def test_module_prefix_is_accepted(tmp_path):
    torch.manual_seed(1)
    src = create_model("relic-u", pretrained="none").eval()
    path = tmp_path / "u_model.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)
    loaded = create_model("relic-u", weights=path).eval()
    x = parity.make_inputs(2)
    with torch.no_grad():
        assert torch.equal(src(x), loaded(x))


def test_bad_checkpoint_names_the_model_and_the_first_ten_keys(tmp_path):
    state = create_model("relic-u", pretrained="none").state_dict()
    keys = list(state)
    bad = {k: v for k, v in state.items() if k not in keys[:12]}
    bad.update({f"extra.{i}.weight": torch.zeros(1) for i in range(3)})
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(WeightsError) as e:
        create_model("relic-u", weights=path)
    msg = str(e.value)
    assert "relic-u" in msg and "missing keys (12)" in msg and "unexpected keys (3)" in msg
    assert all(k in msg for k in keys[:10]) and keys[10] not in msg and "+2 more" in msg
    assert "extra.0.weight" in msg
    # a checkpoint of another ReLIC model is recognised
    e_state = create_model("relic-e", pretrained="none").state_dict()
    torch.save(e_state, path)
    with pytest.raises(WeightsError, match="relic-u") as e:
        create_model("relic-u", weights=path)
    assert "--model relic-e" in str(e.value)


# --- two stages ------------------------------------------------------------------------------

def _fake_run(root: Path, dataset: str, model: str, state: dict) -> Path:
    run = root / dataset / model / "0123456789abcdef" / "run-1"
    run.mkdir(parents=True)
    torch.save({"model": state, "epoch": 0}, run / "best.pt")
    (run / "done").write_text("record.json\n")
    return run


def test_stage_two_without_stage_one_names_what_it_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("IAABENCH_WEIGHTS", str(tmp_path / "weights"))
    for name in ("relic-plus", "relic-plusplus"):
        with pytest.raises(WeightsError) as e:
            create_model(name, pretrained="default", stage_one_dataset="synth-ava")
        msg = str(e.value)
        for needed in (name, "relic-u", "relic-e", "u_model.pth", "e_model.pth", "iaabench run --model relic-u",
                       "synth-ava"):
            assert needed in msg, (needed, msg)


def test_stage_two_loads_the_newest_finished_stage_one_runs(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("IAABENCH_RUNS", str(runs))
    monkeypatch.setenv("IAABENCH_WEIGHTS", str(tmp_path / "weights"))
    torch.manual_seed(2)
    u = create_model("relic-u", pretrained="none").state_dict()
    e = create_model("relic-e", pretrained="none").state_dict()
    _fake_run(runs, "synth-ava", "relic-u", u)
    # only u finished: the message names relic-e alone
    with pytest.raises(WeightsError) as err:
        create_model("relic-plus", pretrained="default", stage_one_dataset="synth-ava")
    assert "relic-e (e_model.pth)" in str(err.value) and "relic-u (u_model.pth)" not in str(err.value)
    _fake_run(runs, "synth-ava", "relic-e", e)
    m = create_model("relic-plusplus", pretrained="default", stage_one_dataset="synth-ava")
    pair = m.base_model.state_dict()
    assert torch.equal(pair["base_model.0.5.conv.0.weight"], u["base_model.0.5.conv.0.weight"])
    assert torch.equal(pair["sa_model.0.5.conv.0.weight"], e["base_model.0.5.conv.0.weight"])
    assert set(m.stage_one) == {"u", "e"}
    # a relic-e file given as the u backbone is refused, naming both
    with pytest.raises(WeightsError, match="relic-u"):
        create_model("relic-plus", pretrained="default", u_weights=str(runs / "synth-ava/relic-e/0123456789abcdef/run-1/best.pt"),
                     stage_one_dataset="synth-ava")


@pytest.mark.parametrize("backbone_bn", ["train", "frozen"])
def test_stage_two_trains_only_the_head_and_gate(backbone_bn):
    m = create_model("relic-plusplus", pretrained="none", backbone_bn=backbone_bn)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias", "fc1.weight", "fc1.bias", "regressor.2.weight", "regressor.2.bias"}
    assert sum(p.numel() for p in m.param_groups()["all"]) == sum(p.numel() for n, p in m.named_parameters() if n in trainable)
    m.train()
    bn = m.base_model.sa_model[0][0][1]
    assert bn.training == (backbone_bn == "train")  # as released, the frozen backbones stay in training mode
    before = bn.running_mean.clone()
    with torch.no_grad():
        m(parity.make_inputs(2))
    assert torch.equal(bn.running_mean, before) == (backbone_bn == "frozen")


def test_bad_backbone_bn_option():
    with pytest.raises(ConfigError, match="backbone_bn"):
        create_model("relic-plus", pretrained="none", backbone_bn="eval")
