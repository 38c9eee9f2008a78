"""Train the example iris classifier with PyTorch and save it beside this script as model.pt2
(torch.export.save; about 15 KB), or as TorchScript model.pt with --torchscript.

    python examples/pytorch-iris/make_model.py [folder] [--torchscript]

The exported program takes `features` (float32 [-1, 4]; any number of rows) and returns a dict:
`probabilities` (float32 [-1, 3]) and `class` (int64 [-1]).
"""

import argparse
from pathlib import Path

import torch
from sklearn.datasets import load_iris


class IrisClassifier(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        self.hidden = torch.nn.Linear(4, 8)
        self.out = torch.nn.Linear(8, 3)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden((features - self.mean) / self.scale)))

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        probabilities = torch.softmax(self.logits(features), dim=1)
        return {"probabilities": probabilities, "class": probabilities.argmax(dim=1)}


def train() -> IrisClassifier:
    torch.manual_seed(0)
    features, labels = load_iris(return_X_y=True)
    features = torch.tensor(features, dtype=torch.float32)
    labels = torch.tensor(labels)
    model = IrisClassifier(features.mean(0), features.std(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.logits(features), labels).backward()
        optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=Path(__file__).parent, type=Path)
    parser.add_argument("--torchscript", action="store_true",
                        help="save TorchScript (model.pt) instead of an exported program")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    model = train()
    example = (torch.zeros(2, 4),)
    if args.torchscript:
        torch.jit.trace(model, example, strict=False).save(str(args.folder / "model.pt"))
        return
    rows = torch.export.Dim("rows")
    program = torch.export.export(model, example, dynamic_shapes={"features": {0: rows}})
    torch.export.save(program, str(args.folder / "model.pt2"))


if __name__ == "__main__":
    main()
