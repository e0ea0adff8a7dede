"""The teacher-student U-Net: student shapes equal the teacher's; only the student learns."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from siamese_ad.config import ConfigError, ModelConfig
from siamese_ad.losses import distillation_loss
from siamese_ad.models.cpam import CPAM
from siamese_ad.models.unet import FeaturePair, TeacherStudentUNet, build_unet

SIZE = 64
CASES = [
    pytest.param(("resnet18", True), id="resnet18-cpam"),
    pytest.param(("resnet18", False), id="resnet18"),
    pytest.param(("efficientnet_lite0", True), id="lite0-cpam"),
    pytest.param(("efficientnet_lite0", False), id="lite0"),
    pytest.param(("wide_resnet50_2", True), id="wrn50-cpam", marks=pytest.mark.slow),
    pytest.param(("wide_resnet50_2", False), id="wrn50", marks=pytest.mark.slow),
]


@dataclass
class Run:
    """A U-Net after one forward and one backward of the distillation loss."""

    model: TeacherStudentUNet
    pair: FeaturePair
    loss: torch.Tensor
    cpam: bool


def _trainable(model: TeacherStudentUNet) -> dict[str, nn.Parameter]:
    return {
        f"{part}.{name}": p
        for part in ("bottleneck", "student")
        for name, p in getattr(model, part).named_parameters()
    }


def _cpam_projection(name: str) -> bool:
    return any(f"attention.{proj}." in name for proj in ("query", "key", "value"))


def _distill_backward(model: TeacherStudentUNet, seed: int = 0) -> tuple[FeaturePair, torch.Tensor]:
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    model.train()
    model.zero_grad(set_to_none=True)
    pair = model(images)
    loss = distillation_loss(pair.teacher, pair.student)
    loss.backward()
    return pair, loss.detach()


@pytest.fixture(scope="module", params=CASES)
def run(request: pytest.FixtureRequest) -> Run:
    backbone, cpam = request.param
    torch.manual_seed(0)
    model = build_unet(ModelConfig(backbone=backbone, weights="none", cpam=cpam))
    pair, loss = _distill_backward(model)
    return Run(model, pair, loss, cpam)


def test_student_has_exactly_the_teacher_shapes(run: Run) -> None:
    teacher = run.model.teacher
    assert len(run.pair.teacher) == len(run.pair.student) == run.model.num_stages == 3
    for t, s, ch, stride in zip(
        run.pair.teacher, run.pair.student, teacher.channels, teacher.strides, strict=True
    ):
        assert t.shape == (2, ch, SIZE // stride, SIZE // stride)
        assert s.shape == t.shape


def test_no_nan_in_features_and_loss(run: Run) -> None:
    assert torch.isfinite(run.loss) and 0.0 <= float(run.loss) <= 2.0
    for f in [*run.pair.teacher, *run.pair.student]:
        assert torch.isfinite(f).all()


def test_gradients_reach_every_student_parameter_and_no_teacher_one(run: Run) -> None:
    trainable = _trainable(run.model)
    assert trainable
    assert {id(p) for p in trainable.values()} == {
        id(p) for p in run.model.parameters() if p.requires_grad
    }
    for name, p in trainable.items():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if _cpam_projection(name):
            # models/cpam.py: Q, K and V only get a gradient once gamma_p != 0 (zero at init)
            assert not p.grad.any(), name
        else:
            assert p.grad.abs().sum() > 0, name
    if run.cpam:
        assert any("gamma_p" in n for n in trainable) and any("gamma_c" in n for n in trainable)
    for name, p in run.model.teacher.named_parameters():
        assert not p.requires_grad and p.grad is None, name


@pytest.mark.parametrize("fusion", ["gated", "literal"])
def test_cpam_projections_learn_once_gammas_are_non_zero(fusion: str) -> None:
    torch.manual_seed(0)
    # stages of strides 4-16: every CPAM input has more than one position at this small size
    # (with one position the positional softmax is constant and Q, K get no gradient)
    cfg = ModelConfig(
        backbone="efficientnet_lite0", weights="none", cpam_fusion=fusion, teacher_stages=(1, 2, 4)
    )
    model = build_unet(cfg)
    with torch.no_grad():
        for module in model.student.modules():
            if isinstance(module, CPAM):
                module.gamma_c.fill_(0.5)
                module.gamma_p.fill_(0.5)
    _, loss = _distill_backward(model)
    assert torch.isfinite(loss)
    for name, p in _trainable(model).items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_teacher_stays_frozen_in_train_mode() -> None:
    torch.manual_seed(0)
    model = build_unet(ModelConfig(backbone="resnet18", weights="none", cpam=False))
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    model.train()
    assert not model.teacher.training
    model(torch.rand(2, 3, SIZE, SIZE))
    after = model.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats unchanged
    assert not any(k.startswith("teacher.") for k in model.trainable_state_dict())


def test_same_seed_builds_the_same_student() -> None:
    def build() -> TeacherStudentUNet:
        torch.manual_seed(3)
        return build_unet(ModelConfig(backbone="efficientnet_lite0", weights="none"))

    a, b = build().state_dict(), build().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_student_init_does_not_depend_on_the_teachers_random_draws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backbone that draws more random numbers while built (another timm version, another
    teacher) must leave the student of a seed unchanged: seeds stay paired across such changes."""
    import siamese_ad.models.unet as unet

    build_teacher = unet.build_teacher

    def build(draws: int) -> dict[str, torch.Tensor]:
        def drawing_teacher(*args: object, **kwargs: object) -> nn.Module:
            torch.rand(draws)
            return build_teacher(*args, **kwargs)

        monkeypatch.setattr(unet, "build_teacher", drawing_teacher)
        torch.manual_seed(3)
        model = build_unet(ModelConfig(backbone="resnet18", weights="none"))
        return model.trainable_state_dict()

    a, b = build(0), build(1000)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("bottleneck.", "student.")))


def test_bottleneck_width_sets_the_embedding_and_the_student_still_fits_the_teacher() -> None:
    """model.bottleneck_channels: 0 is RD's 2 c_n; another width reaches the student's input."""
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    for width in (0, 96):
        torch.manual_seed(0)
        model = build_unet(
            ModelConfig(backbone="resnet18", weights="none", cpam=False, bottleneck_channels=width)
        ).eval()
        with torch.no_grad():
            embedding = model.bottleneck(model.teacher_features(images))
            pair = model(images)
        teacher = model.teacher
        expected = width or 2 * teacher.channels[-1]
        side = SIZE // (2 * teacher.strides[-1])
        assert embedding.shape == (2, expected, side, side)
        assert [s.shape for s in pair.student] == [t.shape for t in pair.teacher]
    with pytest.raises(ConfigError, match=r"model\.bottleneck_channels"):
        ModelConfig(bottleneck_channels=-1).validate()
