"""Train a timm model briefly with advlab's trainer on a CIFAR-10 subset at 64 pixels and save it as a
plain state dict: the "your own timm model" of docs/models.md (bench/timm_demo.sh runs the rest).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/timm_finetune.py OUT [--model resnet18]

No pretrained weights can be downloaded here, so the network starts from timm's random
initialization: "fine-tuned briefly" means a few epochs from scratch, and the accuracy is what that
gives, not a pretrained model's. Writes into OUT:

- ``cifar10-subset/{train,test}/<class>/``: symbolic links to the first --train-per-class and
  --test-per-class images of each class of the shared CIFAR-10 folders (32x32 JPEGs; advlab's folder
  reader resizes them to --image-size);
- ``resnet18.pth``: the timm model's ``state_dict()`` (no Normalize layer: timm's pretrained config gives
  the normalization back when loaded as ``timm:resnet18``);
- ``finetune.json``: the recipe, the wall time and advlab's own test accuracy of the in-memory model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from advlab.data import load_dataset  # noqa: E402
from advlab.models import Normalize  # noqa: E402
from advlab.models.inference import accuracy  # noqa: E402
from advlab.models.spec import import_timm  # noqa: E402
from advlab.training import default_config, fit  # noqa: E402


def make_subset(source: Path, target: Path, per_class: dict[str, int]) -> None:
    for split, count in per_class.items():
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            out = target / split / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:count]:
                link = out / image.name
                if not link.exists():
                    os.symlink(image.resolve(), link)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--data", default=os.environ.get("ADVLAB_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    subset = out / "cifar10-subset"
    make_subset(Path(args.data) / "cifar10", subset, {"train": args.train_per_class, "test": args.test_per_class})
    dataset = f"folder:{subset}"
    train = load_dataset(dataset, "train", image_size=args.image_size, channels=3)
    test = load_dataset(dataset, "test", image_size=args.image_size, channels=3)
    timm = import_timm()
    torch.manual_seed(0)
    net = timm.create_model(args.model, pretrained=False, num_classes=train.num_classes)
    mean, std = net.pretrained_cfg["mean"], net.pretrained_cfg["std"]
    model = nn.Sequential(Normalize(tuple(mean), tuple(std)), net)
    config = default_config(dataset, epochs=args.epochs, batch_size=64, optimizer="sgd", lr=0.05,
                            weight_decay=5e-4, schedule="onecycle", augment=True)
    start = time.perf_counter()
    history = fit(model, train, config, torch.device("cpu"), progress=True)
    seconds = time.perf_counter() - start
    model.eval()
    test_accuracy = accuracy(model, test)
    torch.save(net.state_dict(), out / f"{args.model}.pth")
    record = {"model": f"timm:{args.model}", "train_images": len(train), "test_images": len(test),
              "image_size": args.image_size, "recipe": {**config.to_dict(), "model": f"timm:{args.model}"},
              "history": history,
              "train_seconds": seconds, "test_accuracy": test_accuracy, "mean": list(mean), "std": list(std)}
    (out / "finetune.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"timm:{args.model} trained {args.epochs} epochs on {len(train)} images at {args.image_size} px in "
          f"{seconds:.0f} s: advlab's test accuracy {test_accuracy:.4f} on {len(test)} images; "
          f"weights {out / (args.model + '.pth')}")


if __name__ == "__main__":
    main()
