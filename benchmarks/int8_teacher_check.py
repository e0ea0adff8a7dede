"""How much faster an int8 Wide-ResNet50-2 teacher (through layer 3) runs than the bf16 one.

A feasibility check for docs/performance.md, not a feature: torchvision's quantisable ResNet
built as Wide-ResNet50-2, random weights, post-training static quantisation with the x86 engine
of `torch.ao.quantization` (which torch marks deprecated), against the float model under bf16
autocast in channels_last. Batch 16, 256 px; best of 3 after one warm-up. Accuracy not assessed.

    python benchmarks/int8_teacher_check.py
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import Tensor, nn
from torchvision.models import wide_resnet50_2
from torchvision.models.quantization.resnet import QuantizableBottleneck, QuantizableResNet


def through_layer3(net: nn.Module, x: Tensor, quantised: bool) -> list[Tensor]:
    if quantised:
        x = net.quant(x)
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    f1 = net.layer1(x)
    f2 = net.layer2(f1)
    f3 = net.layer3(f2)
    return [net.dequant(f) for f in (f1, f2, f3)] if quantised else [f1, f2, f3]


def best_seconds(fn: object, repeats: int = 3) -> float:
    fn()  # type: ignore[operator]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    x = torch.rand(16, 3, 256, 256)
    float_net = wide_resnet50_2().eval().to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = best_seconds(lambda: through_layer3(float_net, x_cl, False))

    torch.backends.quantized.engine = "x86"
    qnet = QuantizableResNet(QuantizableBottleneck, [3, 4, 6, 3], width_per_group=128).eval()
    qnet.fuse_model()
    qnet.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    torch.ao.quantization.prepare(qnet, inplace=True)
    with torch.inference_mode():
        qnet(torch.rand(4, 3, 256, 256))  # calibration
    torch.ao.quantization.convert(qnet, inplace=True)
    with torch.inference_mode():
        int8 = best_seconds(lambda: through_layer3(qnet, x, True))
    print(
        f"teacher through layer3, batch 16: bf16 {bf16:.3f} s, int8 {int8:.3f} s, "
        f"{bf16 / int8:.2f}x"
    )


if __name__ == "__main__":
    main()
