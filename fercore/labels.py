"""The seven FER2013 classes and the three splits, in their canonical order."""

CLASS_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
NUM_CLASSES = len(CLASS_NAMES)

# One colour per class, used by every figure so a class looks the same everywhere.
CLASS_COLORS = ("#d62728", "#8c564b", "#9467bd", "#ff7f0e", "#1f77b4", "#e377c2", "#7f7f7f")

# Split codes as stored in FerDataset.split. PublicTest is the validation split (model selection),
# PrivateTest the held-out test split, as in the 2013 Kaggle challenge.
SPLIT_NAMES = ("Training", "PublicTest", "PrivateTest")
TRAINING, PUBLIC_TEST, PRIVATE_TEST = 0, 1, 2

# FER+ vote columns (Barsoum et al. 2016), in the order of fer2013new.csv.
FERPLUS_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                   "contempt", "unknown", "NF")
# The FER+ column holding each FER2013 class's votes, so votes can be shown per class.
FERPLUS_INDEX_OF_CLASS = (4, 5, 6, 1, 3, 2, 0)


def class_index(name_or_index) -> int:
    """Accept 'fear', 'Fear', 2 or '2' and return 2; raise ValueError otherwise."""
    text = str(name_or_index).strip()
    if text.isdigit() and int(text) < NUM_CLASSES:
        return int(text)
    lowered = [c.lower() for c in CLASS_NAMES]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise ValueError(f"unknown class {name_or_index!r}: expected one of {', '.join(CLASS_NAMES)} or 0-6")


def split_index(name_or_index) -> int:
    text = str(name_or_index).strip()
    if text.isdigit() and int(text) < len(SPLIT_NAMES):
        return int(text)
    lowered = [s.lower() for s in SPLIT_NAMES]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise ValueError(f"unknown split {name_or_index!r}: expected one of {', '.join(SPLIT_NAMES)}")
