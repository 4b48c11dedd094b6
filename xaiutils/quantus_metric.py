"""The benchmark's exact EMD score as a Quantus metric, for users who evaluate explanations with Quantus.

Quantus has no earth mover's distance among its localisation metrics. :class:`ExactEMD` follows Quantus's metric
interface (a subclass of ``quantus.Metric``, called as ``metric(model, x_batch, y_batch, a_batch, s_batch)``,
with a declared score direction and range) and is backed by :func:`xaiutils.domain.metrics.emd_score`: EMD score =
1 − EMD(p, q) / D, with p = |a| / Σ|a| over the pixels (channels summed), q uniform on the mask (s ≥ 0.5), the
Euclidean pixel distance as ground cost, D the diagonal of the scoring grid, and the transport cost solved exactly
(an undefined score, e.g. an all-zero map or a solve stopped at its iteration limit, is NaN, never a guess).

Quantus is not a dependency of the benchmark: install it to use this module (the tests pin it in
``requirements-test.txt``). Example::

    import numpy as np, torch, quantus
    from xaiutils.quantus_metric import ExactEMD

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    s = np.zeros((1, 1, 8, 8)); s[0, 0, 2, 2] = 1            # a one-pixel lesion
    a = np.zeros((1, 1, 8, 8)); a[0, 0, 2, 5] = 1            # all attribution 3 pixels away
    ExactEMD()(model=model, x_batch=x, y_batch=np.array([0]), a_batch=a, s_batch=s)
    # [0.7348...] = 1 − 3 / √(8² + 8²)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import quantus
from quantus.helpers import asserts
from quantus.helpers.enums import DataType, EvaluationCategory, ModelType, ScoreDirection

from xaiutils.domain import metrics


class ExactEMD(quantus.Metric):
    """Quantus metric: 1 − exact EMD(|a| normalised, uniform on the mask) / image diagonal, in [0, 1], higher is
    better.

    ``resolution``: maps and masks are sum-pooled to at most resolution² pixels first (``None``: native size; the
    benchmark's default is :data:`xaiutils.domain.metrics.DEFAULT_RESOLUTION`). The attribution's absolute values are
    scored and Quantus's normalisation is off by default: the score depends only on p = |a| / Σ|a|, which no positive
    rescaling changes.
    """

    name = "Exact EMD score"
    data_applicability = {DataType.IMAGE}
    model_applicability = {ModelType.TORCH, ModelType.TF}
    score_direction = ScoreDirection.HIGHER
    evaluation_category = EvaluationCategory.LOCALISATION
    score_range = metrics.METRICS["emd_score"].range

    def __init__(self, resolution: int | None = metrics.DEFAULT_RESOLUTION, abs: bool = True,  # noqa: A002
                 normalise: bool = False, normalise_func=None, normalise_func_kwargs: dict | None = None,
                 return_aggregate: bool = False, aggregate_func=None, default_plot_func=None,
                 disable_warnings: bool = True, display_progressbar: bool = False, **kwargs: Any):
        super().__init__(abs=abs, normalise=normalise, normalise_func=normalise_func,
                         normalise_func_kwargs=normalise_func_kwargs, return_aggregate=return_aggregate,
                         aggregate_func=aggregate_func or np.mean, default_plot_func=default_plot_func,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar, **kwargs)
        self.resolution = resolution

    def __call__(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray | None = None,
                 s_batch: np.ndarray | None = None, channel_first: bool | None = None, explain_func=None,
                 explain_func_kwargs: dict | None = None, model_predict_kwargs: dict | None = None,
                 softmax: bool | None = False, device: str | None = None, batch_size: int = 64, **kwargs: Any):
        """Scores of ``a_batch`` (or of ``explain_func``'s maps) against the masks ``s_batch``, one per image."""
        return super().__call__(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, s_batch=s_batch,
                                custom_batch=None, channel_first=channel_first, explain_func=explain_func,
                                explain_func_kwargs=explain_func_kwargs, softmax=softmax, device=device,
                                model_predict_kwargs=model_predict_kwargs, batch_size=batch_size, **kwargs)

    def custom_preprocess(self, x_batch: np.ndarray, s_batch: np.ndarray, **kwargs: Any) -> None:
        asserts.assert_segmentations(x_batch=x_batch, s_batch=s_batch)

    def evaluate_batch(self, a_batch: np.ndarray, s_batch: np.ndarray, **kwargs: Any) -> list[float]:
        """EMD scores of a batch (N×C×H×W channel-first maps and masks; channels: |a| summed, mask's maximum)."""
        a_batch, s_batch = np.asarray(a_batch, dtype=np.float64), np.asarray(s_batch, dtype=np.float64)
        if a_batch.ndim == 4:
            a_batch = np.abs(a_batch).sum(axis=1)
        if s_batch.ndim == 4:
            s_batch = s_batch.max(axis=1)
        if a_batch.shape != s_batch.shape or a_batch.ndim != 3:
            raise ValueError(f"ExactEMD needs maps and masks of one N×H×W shape (after channels), got "
                             f"{a_batch.shape} and {s_batch.shape}")
        return [float(value) for value in metrics.emd_score(a_batch, s_batch, resolution=self.resolution)]
