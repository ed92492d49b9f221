"""scikit-learn's bundled 8x8 digits: the fixed split and each model's input layout.

Nothing is downloaded: `load_digits` ships with scikit-learn.
"""

from __future__ import annotations

import numpy as np

# Per-sample input shape of each digits model (the batch dimension is added in front).
LAYOUTS: dict[str, tuple[int, ...]] = {
    "digits_mlp": (64,),
    "digits_cnn": (1, 8, 8),
    "digits_cnn_legacy": (1, 8, 8),
}
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed stratified 75/25 split (random_state=0).

    Returns (x_train, y_train, x_test, y_test): images flattened to float32 [N, 64] and
    scaled from 0..16 to [0, 1]; labels int64 [N].
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return x_train, y_train, x_test, y_test


def digits_inputs(model_name: str, x: np.ndarray) -> np.ndarray:
    """Reshape flattened images [N, 64] to `model_name`'s input layout ([N, 64] or [N, 1, 8, 8]).

    Raises KeyError for a model that is not a digits model.
    """
    if model_name not in LAYOUTS:
        raise KeyError(f"{model_name!r} is not a digits model; digits models: {sorted(LAYOUTS)}")
    return np.ascontiguousarray(x, dtype=np.float32).reshape(-1, *LAYOUTS[model_name])
