"""Print the model-card figures of a checkpoint on the full FER2013 (markdown).

    python scripts/evaluate_shipped.py checkpoints/fernet_wide --data ../shared/data/fer2013.npz

PublicTest and PrivateTest accuracy, per-class recall, the PrivateTest confusion matrix, and the accuracy on the
PrivateTest images that have no byte-identical copy in Training (FER2013 repeats some images across splits).
"""

import argparse

from fercore.checkpoints import load_model
from fercore.data import load_dataset
from fercore.evaluation import evaluate_checkpoint, not_in_training
from fercore.labels import CLASS_NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="the full FER2013 (fer2013.csv or fer2013.npz)")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    loaded, dataset = load_model(args.checkpoint), load_dataset(args.data)
    public = evaluate_checkpoint(loaded, dataset, split="PublicTest", tta=args.tta)
    private = evaluate_checkpoint(loaded, dataset, split="PrivateTest", tta=args.tta)
    unique = not_in_training(dataset, "PrivateTest")
    correct = private.predictions == private.labels
    print(f"- {loaded.path}, epoch {loaded.epoch}, {private.tta_note}")
    print(f"- PublicTest accuracy {public.accuracy:.2%}; PrivateTest accuracy {private.accuracy:.2%}")
    print(f"- PrivateTest without exact duplicates in Training ({unique.sum()} of {len(unique)} images): "
          f"{correct[unique].mean():.2%}")
    print("\n| PrivateTest | " + " | ".join(CLASS_NAMES) + " |\n|---|" + "---|" * len(CLASS_NAMES))
    print("| recall | " + " | ".join(f"{r:.1%}" for r in private.recall) + " |")
    print("| precision | " + " | ".join(f"{p:.1%}" for p in private.precision) + " |")
    print("\nConfusion matrix (PrivateTest; rows true, columns predicted):\n")
    print("| true \\ predicted | " + " | ".join(CLASS_NAMES) + " |\n|---|" + "---|" * len(CLASS_NAMES))
    for name, row in zip(CLASS_NAMES, private.confusion):
        print(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")


if __name__ == "__main__":
    main()
