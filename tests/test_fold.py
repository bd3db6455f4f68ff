"""BatchNorm folding for CPU evaluation: same outputs within 1e-5, the original model untouched."""
import torch
from torch import nn

from iaabench.fold import fold_batchnorm


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                        nn.Sequential(nn.Conv2d(8, 8, 3, groups=8, padding=1), nn.BatchNorm2d(8, affine=False)),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))
    net.train()
    for _ in range(3):  # running statistics that are not the identity
        net(torch.randn(16, 3, 12, 12) * 3 + 1)
    return net.eval()


def test_folded_outputs_match_and_the_model_is_unchanged():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert folded is not net and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_nothing_to_fold_or_a_replaced_forward_returns_the_model():
    plain = nn.Sequential(nn.Linear(3, 2))
    assert fold_batchnorm(plain) is plain
    net = _net()
    net.forward = net.forward  # as torch.compile's assignment does
    assert fold_batchnorm(net) is net


def test_nima_folds_within_1e_5():
    from iaabench import api

    torch.manual_seed(0)
    model = api.create_model("nima", pretrained="none").eval()
    x = torch.randn(2, 3, 64, 64)
    folded = fold_batchnorm(model)
    assert folded is not model
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_cpu_evaluation_runs_the_folded_copy(tmp_path, monkeypatch):
    from test_eval_speed import Tiny, _samples

    from iaabench import evaluate
    from iaabench.data.pipeline import TransformSpec

    used = []
    real = evaluate.fold_batchnorm
    monkeypatch.setattr(evaluate, "fold_batchnorm", lambda m: used.append(m) or real(m))
    model = Tiny()
    preds, _ = evaluate.predict(model, _samples(tmp_path / "img", 6), TransformSpec(resize=(16, 16)), 3,
                                scale_max=10.0)
    assert used == [model] and len(preds.pred) == 6
