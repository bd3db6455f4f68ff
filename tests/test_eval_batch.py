"""The evaluation batch size (issue 20): `--eval-batch-size` when given; else large on CUDA, and the
card's value where the model is batch-coupled (its predictions depend on the batch) or on the CPU."""
from iaabench.plan import CUDA_EVAL_BATCH_SIZE, RunConfig, resolve


def _ebs(model, device, given=None):
    return resolve(RunConfig(model=model, dataset="synth-tad66k", device=device, eval_batch_size=given,
                             pretrained="none")).recipe["eval_batch_size"]


def test_eval_batch_size_defaults():
    cpu = _ebs("nima", "cpu")
    assert cpu < CUDA_EVAL_BATCH_SIZE and _ebs("nima", "cuda") == CUDA_EVAL_BATCH_SIZE
    assert _ebs("nima", "cuda", given=7) == 7 and _ebs("nima", "cpu", given=7) == 7
    assert _ebs("tanet", "cuda") == _ebs("tanet", "cpu")  # batch-coupled: the card's value everywhere
