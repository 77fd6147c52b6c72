"""PyTorch Lightning Trainer.fit with a validation loop: Lightning switches modes itself."""

import warnings

import pytorch_lightning as pl
import torch
from _data import SmallCNN, loaders
from torch import nn


class LitClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = SmallCNN()
        self.criterion = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> torch.Tensor:
        x, y = batch
        return self.criterion(self(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> None:
        x, y = batch
        self.log("val_loss", self.criterion(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


torch.manual_seed(0)
train_loader, val_loader = loaders()
trainer = pl.Trainer(
    max_epochs=1,
    limit_train_batches=3,
    limit_val_batches=2,
    num_sanity_val_steps=1,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    accelerator="cpu",
    devices=1,
)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    trainer.fit(LitClassifier(), train_loader, val_loader)
assert trainer.global_step == 3, trainer.global_step
print("fitted", trainer.global_step, "steps; val_loss", float(trainer.callback_metrics["val_loss"]))
