"""Detector: compiled runs match eager ones, pad short batches, fall back when compiling fails."""

from __future__ import annotations

import pytest
import torch

from siamese_ad.config import Config, ModelConfig
from siamese_ad.evaluation import inference as inference_module
from siamese_ad.evaluation.inference import Detector
from siamese_ad.losses import cosine_distance
from siamese_ad.models.unet import FeaturePair, build_unet
from siamese_ad.scoring import stage_distances


def _config(size: int = 64) -> Config:
    cfg = Config()
    cfg.model = ModelConfig(backbone="resnet18", weights="none", cpam=True)
    cfg.data.image_size = size
    cfg.train.bf16 = False
    return cfg


def _detector(compile: bool = False) -> Detector:
    torch.manual_seed(0)
    cfg = _config()
    return Detector.from_model(build_unet(cfg.model), cfg, torch.device("cpu"), {}, compile=compile)


def _images(n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=gen)


def test_image_by_image_distances_equal_the_batch_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    teacher = [torch.randn(5, 16, 8, 8, generator=gen).to(torch.bfloat16)]
    student = [torch.randn(5, 16, 8, 8, generator=gen).to(torch.bfloat16)]
    (ours,) = stage_distances(FeaturePair(teacher, student))
    reference = cosine_distance(teacher[0].float(), student[0].float())
    assert ours.dtype == torch.float32 and ours.shape == (5, 8, 8)
    assert torch.allclose(ours, reference, atol=1e-6)


class _Recorder:
    """Stands in for torch.compile: records the batch sizes and runs the module eagerly."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.batches: list[int] = []

    def __call__(self, module: torch.nn.Module, **kwargs: object):
        assert kwargs["options"] == {"freezing": True} and kwargs["dynamic"] is False

        def run(x: torch.Tensor):
            self.batches.append(len(x))
            if self.fail:
                raise RuntimeError("no C++ compiler found\nmore detail")
            return module(x)

        return run


def test_compiled_run_pads_short_batches_and_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    eager = _detector().run(_images(7), batch_size=3)
    recorder = _Recorder()
    monkeypatch.setattr(inference_module.torch, "compile", recorder)
    compiled = _detector(compile=True).run(_images(7), batch_size=3)
    assert recorder.batches == [3, 3, 3]  # 3 + 3 + 1 padded to 3: one graph serves all
    assert compiled.maps.shape == eager.maps.shape == (7, 64, 64)
    assert torch.allclose(torch.from_numpy(compiled.maps), torch.from_numpy(eager.maps), atol=1e-5)
    assert torch.allclose(torch.from_numpy(compiled.scores), torch.from_numpy(eager.scores))


def test_fewer_images_than_the_batch_compile_for_their_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(inference_module.torch, "compile", recorder)
    _detector(compile=True).run(_images(2), batch_size=16)
    assert recorder.batches == [2]


def test_failed_compile_warns_once_and_scores_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    eager = _detector().run(_images(4), batch_size=2)
    recorder = _Recorder(fail=True)
    monkeypatch.setattr(inference_module.torch, "compile", recorder)
    detector = _detector(compile=True)
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*no C\\+\\+ compiler found"):
        result = detector.run(_images(4), batch_size=2)
    assert recorder.batches == [2] and detector.compile is False
    assert torch.allclose(torch.from_numpy(result.maps), torch.from_numpy(eager.maps), atol=1e-6)


@pytest.mark.slow
def test_real_torch_compile_matches_eager() -> None:
    """Inductor with frozen weights (needs a C++ compiler): the same maps and scores."""
    eager = _detector().run(_images(5), batch_size=4)
    detector = _detector(compile=True)
    detector.run(_images(5), batch_size=4)
    assert detector.compile, "torch.compile fell back to eager"
    with torch._dynamo.config.patch(error_on_recompile=True):  # one graph serves every batch
        compiled = detector.run(_images(5), batch_size=4)
    assert torch.allclose(torch.from_numpy(compiled.maps), torch.from_numpy(eager.maps), atol=1e-4)
    assert torch.allclose(
        torch.from_numpy(compiled.scores), torch.from_numpy(eager.scores), atol=1e-4
    )
