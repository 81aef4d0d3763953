"""Clustering of stored vectors: K-Means, the choice of k, stable ids, measures and history."""

from bindindex.cluster.kmeans import KMeansResult, kmeans, silhouette
from bindindex.cluster.labels import csv_label, read_label_csv, top_folder_label
from bindindex.cluster.measures import consistency, cross_modal_cosines, sizes_by_modality

__all__ = [
    "KMeansResult",
    "consistency",
    "cross_modal_cosines",
    "csv_label",
    "kmeans",
    "read_label_csv",
    "silhouette",
    "sizes_by_modality",
    "top_folder_label",
]
