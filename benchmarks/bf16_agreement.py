"""How far bf16 autocast moves the training losses and gradients from float32, per turn, on a preset.

One batch, one trainer; each turn's loss and its net's gradient are computed twice, with the trainer's
autocast off and on (on the CPU too: bf16 autocast on the trainer's device), with a zero learning rate so
the weights do not move. TF32 is off for the float32 reference on a GPU. The nets' output layers start off
their zero initialisation so that the gradients are a trained model's, not the zero start's.

    .venv/bin/python benchmarks/bf16_agreement.py [--config studies/presets/demo.toml] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import torch.nn.functional as F

from shrink.compression.config import load_config
from shrink.compression.trainer import Trainer


def loss_and_gradient(trainer: Trainer, turn: str, x: torch.Tensor, qualities: list[int]):
    for optimizer in (trainer.opt_com, trainer.opt_rec):
        for group in optimizer.param_groups:
            group["lr"] = 0.0
    trainer.model.train()
    net = trainer.model.reccnn if turn == "rec" else trainer.model.comcnn
    loss = trainer.rec_step(x, qualities) if turn == "rec" else trainer.com_step(x, qualities)
    return loss, torch.cat([p.grad.flatten().float() for p in net.parameters() if p.grad is not None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/presets/demo.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(load_config(args.config, args.overrides), out, log=lambda _: None)
        torch.manual_seed(0)
        with torch.no_grad():
            trainer.model.comcnn.head.weight.normal_(std=1e-2)
            trainer.model.reccnn.head.weight.normal_(std=1e-2)
        batch, x, _ = trainer._take_batch()
        trainer._close_batches()
        print(f"{args.config} {' '.join(args.overrides)}: {trainer.device}, batch {tuple(x.shape)}")
        for turn, name in (("rec", "RecCNN"), ("com", "ComCNN")):
            trainer.use_amp = False
            full, full_gradient = loss_and_gradient(trainer, turn, x, batch.qualities)
            trainer.use_amp = True
            mixed, mixed_gradient = loss_and_gradient(trainer, turn, x, batch.qualities)
            cosine = F.cosine_similarity(mixed_gradient, full_gradient, dim=0).item()
            print(
                f"{name} turn: loss fp32 {full:.6f}, bf16 autocast {mixed:.6f} "
                f"({100 * (mixed - full) / abs(full):+.2f} %), gradient cosine {cosine:.4f}"
            )
        trainer.channel.close()


if __name__ == "__main__":
    main()
