"""Contamination: training ids of released weights, rebuilt from the real label files, checked
against the cards' declarations, and their overlap with a test split."""
import pytest
import yaml

from conftest import require_shared
from iaabench.cards import all_cards, load_card
from iaabench.contamination import (TrainedOn, declared_checkpoints, ids_checksum, official_train_ids, overlap,
                                    read_ids, tanet_random_train_ids)
from iaabench.errors import ConfigError, IAAError


def _ava_ids():
    """Every AVA id: ILGnet's train + val lists cover the 255,529 distinct ids of AVA.txt (not kept here)."""
    lists = require_shared("data", "labels", "ava", "ilgnet_data_AVA1")
    return set(read_ids(lists / "train.txt")) | set(read_ids(lists / "val.txt"))


def _declared(family, file):
    return next(e for e in declared_checkpoints(load_card(family)) if e["file"] == file)["trained_on"]


def test_tanet_ava_checkpoint_against_the_official_test_split():
    ava = _ava_ids()
    folder = require_shared("data", "labels", "ava", "tanet_code_AVA_dataset")
    test_list = require_shared("data", "labels", "ava", "AVA_dataset", "aesthetics_image_lists", "generic_test.jpgl")
    train = tanet_random_train_ids(ava, folder / "test.csv", folder / "val.csv")
    declared = _declared("tanet", "SRCC_758_LCC_765.pth")
    assert (declared.dataset, declared.split) == ("ava", "tanet-random")
    weights = declared.with_ids(train, "tanet card")  # the card's count and checksum are these ids'
    official_test = read_ids(test_list)
    n_overlap, n_test = overlap(weights, official_test)
    # independently: an official test id is a TANet training id unless it is in their test/val csvs or not in AVA
    held = set(read_ids(folder / "test.csv")) | set(read_ids(folder / "val.csv"))
    assert n_test == len(set(official_test)) == 20_000
    assert n_overlap == sum(1 for i in set(official_test) if i in ava and i not in held)
    # The issue quotes 18,041 of 20,000: that also counts the 70 official test ids that are not in AVA.txt
    # (so in no training set); of the 19,930 that are, 17,971 are TANet training ids.
    assert n_test - len(set(official_test) & held) == 18_041
    assert n_overlap == 17_971 and len(set(official_test) & ava) == 19_930


def test_tad66k_declarations_match_the_train_file_and_do_not_touch_the_test_file():
    merge = require_shared("data", "labels", "tad66k", "dataset", "merge")
    train = read_ids(merge / "train.csv")
    for family, file in (("tanet", "SRCC_513_LCC_531_MSE_016.pth"),
                         ("eat", "TAD66K_AOT_vacc_0.6882_srcc_0.5171_vlcc_0.5460.pth")):
        weights = _declared(family, file).with_ids(train, family)
        assert overlap(weights, read_ids(merge / "test.csv")) == (0, 14_079)


def test_official_train_is_everything_but_the_test_list():
    ava = _ava_ids()
    test_list = require_shared("data", "labels", "ava", "AVA_dataset", "aesthetics_image_lists", "generic_test.jpgl")
    train = official_train_ids(ava, test_list)
    assert overlap(train, read_ids(test_list)) == (0, 20_000)
    assert len(train) + len(set(read_ids(test_list)) & ava) == len(ava)


def test_overlap_and_checksums_on_small_sets():
    t = TrainedOn.from_ids("d", "s", ["b", "a", "c", "a"])
    assert t.n_ids == 3 and t.ids_sha256 == ids_checksum(["c", "b", "a"]) != ids_checksum(["a", "b"])
    assert overlap(t, ["a", "x", "x", "c"]) == (2, 3)
    declared = TrainedOn("d", "s", 3, t.ids_sha256)
    with pytest.raises(IAAError, match="declared by count and checksum only"):
        overlap(declared, ["a"])
    assert overlap(declared.with_ids(["a", "b", "c"]), ["a"]) == (1, 1)
    with pytest.raises(IAAError, match="2 training ids rebuilt"):
        declared.with_ids(["a", "b"])
    with pytest.raises(IAAError, match="sha256"):
        declared.with_ids(["a", "b", "d"])


def test_every_cards_checkpoints_validate_and_bad_ones_name_the_key(tmp_path, monkeypatch):
    for card in all_cards():
        for e in declared_checkpoints(card):
            assert e["model"] in card.variants
    import iaabench.cards as cards

    d = yaml.safe_load((cards.cards_dir() / "tanet.yaml").read_text())
    d["checkpoints"][0]["trained_on"]["ids_sha256"] = "abc"
    (tmp_path / "tanet.yaml").write_text(yaml.safe_dump(d))
    monkeypatch.setattr(cards, "cards_dir", lambda: tmp_path)
    load_card.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"checkpoints\[0\].trained_on.ids_sha256"):
            declared_checkpoints(load_card("tanet"))
        d["checkpoints"][0]["trained_on"] = {"dataset": "ava"}
        (tmp_path / "tanet.yaml").write_text(yaml.safe_dump(d))
        load_card.cache_clear()
        with pytest.raises(ConfigError, match=r"checkpoints\[0\].trained_on: expected dataset and split"):
            declared_checkpoints(load_card("tanet"))
    finally:
        load_card.cache_clear()


# ---------------------------------------------------------------------------------------------
# The guard: eval-only runs of weights that saw test images


def _checkpoint(path, trained_on):
    import torch

    import iaabench

    torch.manual_seed(0)
    model = iaabench.create_model("nima", pretrained="none", trunk_seed=0)
    # BatchNorm statistics of one random batch: a random trunk with its initial statistics predicts one
    # value for every image, which the runner refuses as a result
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.rand(16, 3, 64, 64))
    state = model.state_dict()
    torch.save({"model": state, "epoch": 0, **({"trained_on": trained_on.to_dict()} if trained_on else {})}, path)
    return path


def _eval(weights, n, tmp_path, **kw):
    from iaabench.plan import RunConfig
    from iaabench.runner import execute

    return execute(RunConfig(model="nima", dataset="synth-tad66k", recipe="pinned", train=False, weights=weights,
                             dataset_options={"n": n}, results_root=tmp_path / "results", **kw), log=lambda *a: None)[0]


def test_eval_of_weights_trained_on_test_images_stops_unless_allowed(tmp_path):
    import iaabench

    small = iaabench.load_dataset("synth-tad66k", n=200)  # image i is the same image whatever n is
    trained_on = TrainedOn.from_ids("synth-tad66k", "official", (s.image_id for s in small.splits["train"]),
                                    {"n": 200})
    ck = _checkpoint(tmp_path / "best.pt", trained_on)
    test_400 = {s.image_id for s in iaabench.load_dataset("synth-tad66k", n=400).splits["test"]}
    n_seen = len(test_400 & trained_on.ids)
    assert 0 < n_seen < len(test_400)
    with pytest.raises(IAAError, match=rf"(?s){n_seen} of the {len(test_400)} test images .* --allow-overlap"):
        _eval(ck, 400, tmp_path)
    assert not list((tmp_path / "results").rglob("*.json"))  # stopped before any work: no record

    rec = _eval(ck, 400, tmp_path, allow_overlap=True)
    assert rec["overlap"] == {"n_overlap": n_seen, "n_test": len(test_400), "allowed": True}
    assert rec["trained_on"]["ids_sha256"] == trained_on.ids_sha256 and rec["trained_on"]["source"] == "the checkpoint"

    from iaabench.results import frame

    rows = frame(tmp_path / "results")
    assert set(rows["overlap"]) == {f"{n_seen} of {len(test_400)}"}
    assert set(rows["trained_on"]) == {"synth-tad66k/official"}

    # the split the weights were trained with: disjoint, so it runs and says it checked
    rec = _eval(ck, 200, tmp_path)
    assert rec["overlap"] == {"n_overlap": 0, "n_test": 40, "allowed": False}


def test_weights_whose_ids_do_not_rebuild_or_say_nothing(tmp_path):
    import iaabench

    small = iaabench.load_dataset("synth-tad66k", n=200)
    ids = [s.image_id for s in small.splits["train"]][:-1]  # not what the label files give for this split
    ck = _checkpoint(tmp_path / "odd.pt", TrainedOn.from_ids("synth-tad66k", "official", ids, {"n": 200}))
    with pytest.raises(IAAError, match="cannot count how many test images"):
        _eval(ck, 200, tmp_path)
    rec = _eval(ck, 200, tmp_path, allow_overlap=True)
    assert rec["overlap"]["n_overlap"] is None and "rebuilt" in rec["overlap"]["reason"]

    plain = _checkpoint(tmp_path / "plain.pt", None)
    rec = _eval(plain, 200, tmp_path)
    assert rec["trained_on"] is None and rec["overlap"] is None


def test_released_files_are_matched_to_their_card_declaration(tmp_path):
    import torch

    from iaabench.contamination import trained_on_of

    f = tmp_path / "SRCC_513_LCC_531_MSE_016.pth"
    torch.save({"state_dict": {}}, f)
    t, source = trained_on_of(f, "tanet")
    assert (t.dataset, t.split, t.n_ids) == ("tad66k", "official", 52248) and "tanet card" in source
    other = tmp_path / "mine.pth"
    torch.save({"state_dict": {}}, other)
    assert trained_on_of(other, "tanet") == (None, "")


def test_training_saves_what_it_was_trained_on_in_every_checkpoint(tmp_path, monkeypatch):
    import torch

    from iaabench.plan import RunConfig
    from iaabench.runner import execute
    from iaabench.paths import runs_dir

    rec, _ = execute(RunConfig(model="nima", dataset="synth-tad66k", recipe="pinned", epochs=1,
                               dataset_options={"n": 200}, results_root=tmp_path / "results"), log=lambda *a: None)
    for name in ("checkpoint", "last_checkpoint"):
        ck = torch.load(runs_dir() / rec[name], weights_only=True)
        assert ck["trained_on"]["ids_sha256"] == rec["split"]["train_ids_sha256"]
        assert ck["trained_on"]["options"] == {"n": 200} and ck["trained_on"]["n_ids"] == rec["split"]["n_train_ids"]
    # an export says it too, and eval's guard reads it there
    from iaabench.contamination import trained_on_of
    from iaabench.export import export

    out, meta = export(runs_dir() / rec["checkpoint"], tmp_path / "nima.safetensors", model="nima",
                       dataset="synth-tad66k")
    t, source = trained_on_of(out, "nima")
    assert t.ids_sha256 == rec["split"]["train_ids_sha256"] and source == "the exported file's metadata"
    assert _eval(out, 200, tmp_path)["overlap"]["n_overlap"] == 0
    with pytest.raises(IAAError, match="--allow-overlap"):
        _eval(out, 400, tmp_path)
