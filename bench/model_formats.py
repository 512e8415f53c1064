"""advlab's mnist_cnn exported to TorchScript and to ONNX, loaded back through model specs, and
compared with the native model: clean and PGD-40 robust accuracy on the first N MNIST test images,
and input gradients.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/model_formats.py --n 1000

The model is the cached default ``mnist_cnn`` (``advlab train``; trained here if the cache lacks it).
TorchScript: ``torch.jit.trace``; ONNX: ``torch.onnx.export(dynamo=False)`` with a dynamic batch axis,
run by advlab's own converter (advlab.models.onnx). Images go in chunks of 100; on each chunk every
model is attacked by the same PGD with the same seed (Linf, 40 steps, step 2.5 eps / 40, random
start), and results are written after each chunk. Gradients: the cross-entropy's input gradient,
largest absolute difference from the native model's over all images. "Images with another outcome":
clean or robust verdicts that differ from the native model's.
Writes bench/results/model_formats.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from advlab.attacks import PGD  # noqa: E402
from advlab.data import load_dataset  # noqa: E402
from advlab.models import SpecOptions, load_spec  # noqa: E402
from advlab.training import default_config, train_model  # noqa: E402


def input_gradient(model, x, y):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y, reduction="sum").backward()
    return x.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "model_formats.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    native, meta, path, _ = train_model(default_config("mnist", model="mnist_cnn"), torch.device("cpu"),
                                        progress=False)
    native.eval()
    x, y = load_dataset("mnist", "test").tensors(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "mnist_cnn.pt"
        torch.jit.save(torch.jit.trace(native, x[:2]), str(script))
        onnx_file = Path(tmp) / "mnist_cnn.onnx"
        torch.onnx.export(native, (x[:2],), str(onnx_file), dynamo=False, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        models = {"native (advlab checkpoint)": load_spec(str(path))[0],
                  "TorchScript": load_spec(str(script), SpecOptions(input_shape=(1, 28, 28)))[0],
                  "ONNX (advlab converter)": load_spec(str(onnx_file))[0]}
        names = list(models)
        clean = {name: [] for name in names}
        robust = {name: [] for name in names}
        gaps = {name: 0.0 for name in names}
        seconds = {name: 0.0 for name in names}
        # chunk by chunk, every model in turn, the table rewritten after each chunk: a run stopped early
        # still leaves a valid comparison on the images done so far
        for done, (xb, yb) in enumerate(zip(x.split(100), y.split(100), strict=True), start=1):
            reference = input_gradient(models[names[0]], xb, yb)
            for name in names:
                model = models[name]
                start = time.process_time()
                with torch.no_grad():
                    right = model(xb).argmax(1) == yb
                broken = PGD(eps=args.eps, steps=40, seed=done)(model, xb, yb).success
                clean[name].append(right)
                robust[name].append(right & ~broken)
                gaps[name] = max(gaps[name], (input_gradient(model, xb, yb) - reference).abs().max().item())
                seconds[name] += time.process_time() - start
            rows = [{"model": name, "clean_accuracy": torch.cat(clean[name]).float().mean().item(),
                     "robust_accuracy": torch.cat(robust[name]).float().mean().item(),
                     "max_gradient_difference": gaps[name], "cpu_seconds": seconds[name],
                     "images_with_another_outcome": int((torch.cat(robust[name]) != torch.cat(robust[names[0]])).sum()
                                                        + (torch.cat(clean[name]) != torch.cat(clean[names[0]])).sum())}
                    for name in names]
            write(args, path, rows, 100 * done)
            print(f"{100 * done} images: " + "; ".join(f"{r['model']}: clean {r['clean_accuracy']:.4f}, PGD-40 "
                                                         f"{r['robust_accuracy']:.4f}" for r in rows), flush=True)
    table(args, rows, 100 * done)


def write(args, path, rows, n) -> None:
    result = {"n": n, "eps": args.eps, "steps": 40, "checkpoint": path.name, "rows": rows, "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


def table(args, rows, n) -> None:
    print(f"\nmnist_cnn, first {n} MNIST test images, PGD-40 Linf eps {args.eps}\n")
    print("| model | clean accuracy | PGD-40 robust accuracy | images with another outcome | max input-gradient "
          "difference |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {100 * row['clean_accuracy']:.1f}% | {100 * row['robust_accuracy']:.1f}% | "
              f"{row['images_with_another_outcome']} | {row['max_gradient_difference']:.1e} |")


if __name__ == "__main__":
    main()
