"""A tiny PyTorch training on CPU, shipped with hpcgw's `pytorch-cpu` template.

A small network learns y = sin(3x1) + x2^2 - 0.5 x3 from synthetic data; the loss of each
epoch is printed (it falls), and a checkpoint is saved at the end. Runs in seconds on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch import nn


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default="checkpoint.pt")
    return parser.parse_args()


def synthetic(samples: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(samples, 3, generator=generator) * 2 - 1
    y = torch.sin(3 * x[:, :1]) + x[:, 1:2] ** 2 - 0.5 * x[:, 2:3]
    return x, y


def main() -> None:
    args = arguments()
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, int(os.environ.get("SLURM_CPUS_PER_TASK", "1"))))
    generator = torch.Generator().manual_seed(args.seed)
    x, y = synthetic(args.samples, generator)
    model = nn.Sequential(nn.Linear(3, args.hidden), nn.Tanh(),
                          nn.Linear(args.hidden, args.hidden), nn.Tanh(),
                          nn.Linear(args.hidden, 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    loss_fn = nn.MSELoss()
    print(f"training: {args.samples} samples, {args.epochs} epochs, torch {torch.__version__}",
          flush=True)
    started = time.monotonic()
    loss = float("nan")
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(args.samples, generator=generator)
        total = 0.0
        for start in range(0, args.samples, args.batch_size):
            batch = order[start:start + args.batch_size]
            optimiser.zero_grad()
            batch_loss = loss_fn(model(x[batch]), y[batch])
            batch_loss.backward()
            optimiser.step()
            total += batch_loss.item() * len(batch)
        loss = total / args.samples
        print(f"epoch={epoch} loss={loss:.6f}", flush=True)
    checkpoint = Path(args.checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "epochs": args.epochs, "loss": loss}, checkpoint)
    print(json.dumps({"checkpoint": str(checkpoint), "final_loss": loss,
                      "seconds": round(time.monotonic() - started, 3)}), flush=True)


if __name__ == "__main__":
    main()
