"""Per-modality centring, which removes the offset between modalities in the joint space.

ImageBind places each modality in its own cone: any two images are more alike
than an image and a sound of the same concept. Subtracting each modality's
mean unit vector, then renormalising, removes that shared offset, so that
nearness reflects content more than modality.
"""

from __future__ import annotations

import numpy as np

from bindindex.store.vectors import normalise


def modality_means(unit: np.ndarray, modalities: list[str]) -> dict[str, np.ndarray]:
    """Return the mean (d,) of the unit vectors ``unit`` (n, d) of each modality."""
    labels = np.array(modalities, dtype=object)
    return {
        modality: unit[labels == modality].mean(axis=0).astype(np.float32)
        for modality in sorted(set(modalities))
    }


def center(unit: np.ndarray, modalities: list[str], means: dict[str, np.ndarray]) -> np.ndarray:
    """Subtract each row's modality mean from ``unit`` (n, d) and renormalise.

    A row whose modality has no mean (text queries, since no text is stored)
    is only renormalised. A row equal to its mean becomes zero.
    """
    shifted = np.array(unit, dtype=np.float32, copy=True)  # (n, d)
    labels = np.array(modalities, dtype=object)
    for modality, mean in means.items():
        shifted[labels == modality] -= mean
    return normalise(shifted)
