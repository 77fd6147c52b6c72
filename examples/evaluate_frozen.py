"""A frozen BatchNorm and a dropout survive an evaluation, and the evaluation saves memory.

Fine-tuning often freezes a backbone's BatchNorm (kept in eval so its running statistics stay
fixed) while the head trains with dropout. The usual validation idiom, ``model.eval(); ...;
model.train()``, silently wakes the frozen BatchNorm up again. ``gradguard.evaluating`` puts every
submodule back to its *own* flag instead, and runs the evaluation without building a graph.

Run: ``python examples/evaluate_frozen.py`` (or ``make demo``).
"""

from __future__ import annotations

import torch
from torch import nn

import gradguard


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def frozen_batchnorms(model: Classifier) -> list[bool]:
    return [m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]


def activation_bytes(run: object) -> int:
    """Bytes of tensors autograd keeps for backward while ``run()`` executes (0 under no_grad)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()  # type: ignore[operator]
    return sum(seen.values())


def main() -> None:
    torch.manual_seed(0)
    batch = torch.randn(64, 3, 32, 32)

    model = Classifier()
    model.train()
    for module in model.backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()  # frozen statistics for fine-tuning
    print("before validation: backbone BatchNorm training flags =", frozen_batchnorms(model))

    # The hand-written idiom.
    model.eval()
    with torch.no_grad():
        model(batch)
    model.train()
    print("after  model.eval() ... model.train():          ", frozen_batchnorms(model),
          "<- the frozen BatchNorms were woken up")  # fmt: skip

    for module in model.backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()

    # The same evaluation with gradguard.
    with gradguard.evaluating(model):
        inside = [m.training for m in model.modules()]
        model(batch)
    print("after  gradguard.evaluating(model):            ", frozen_batchnorms(model),
          "<- still frozen; head dropout training =", model.head[0].training)  # fmt: skip
    print(f"inside the scope every module was in eval: {not any(inside)}")

    def eval_only() -> None:  # the "relying on eval() alone" mistake: gradients still on
        model.eval()
        model(batch)
        model.train()
        for module in model.backbone.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()

    def guarded() -> None:
        with gradguard.evaluating(model):
            model(batch)

    eval_with_grad = activation_bytes(eval_only)
    eval_guarded = activation_bytes(guarded)
    print(
        f"activations kept for backward by one evaluation forward at batch 64: "
        f"eval() alone {eval_with_grad / 2**20:.1f} MiB, "
        f"evaluating() {eval_guarded / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
