"""Metrics of learned models, as evaluators (one per metric family, each chosen by a yaml of ``conf/evaluation``,
run at the test stage by :class:`hsvae.training.evaluators.EvaluatorsCallback`), and the functions they use
(k-NN classification of latent means, M1 accuracy, log p(x) on a grid, circle geometry, link AUC/AP, molecules,
interpolation)."""

from .evaluator import EvaluationError, Evaluator
from .geometry import CircleGeometry
from .interpolation import decode_interpolations, latent_path, lerp, slerp
from .links import LinkAUCAP, average_precision, link_metrics, roc_auc
from .log_likelihood import GridLogLikelihood, LogLikelihood, latent_grid
from .molecules import MoleculeMetrics, rdkit_validity, sample_metrics
from .semisupervised import KNNAccuracy, M1Accuracy, balanced_subset, knn_accuracy, knn_predict, m1_knn_accuracies

__all__ = ["CircleGeometry", "EvaluationError", "Evaluator", "GridLogLikelihood", "KNNAccuracy", "LinkAUCAP", "LogLikelihood", "M1Accuracy",
           "MoleculeMetrics", "average_precision", "balanced_subset", "decode_interpolations", "knn_accuracy",
           "knn_predict", "latent_grid", "latent_path", "lerp", "link_metrics", "m1_knn_accuracies", "rdkit_validity", "roc_auc",
           "sample_metrics", "slerp"]
