"""Analyses of trained models: the R² of k-means clusterings of hidden features (the paper's Fig. 4)."""

from .features import OUTPUT, AnalysisError, check_points, collect_features, default_points, load_run, split_loader
from .r2 import cluster_r2, kmeans_assign, r2_table

__all__ = [
    "OUTPUT",
    "AnalysisError",
    "check_points",
    "cluster_r2",
    "collect_features",
    "default_points",
    "kmeans_assign",
    "load_run",
    "r2_table",
    "split_loader",
]
