"""Layer 2, domain: MRI volumes and slices (``mri/``), the synthetic benchmark (``synth/``), networks and training
(``models``, ``weights``, ``train``, ``pretrain``), explanation methods (``explain/``, ``plugins``) and metrics
(``metrics``, ``emd``, ``emd_fast``). Imports only from :mod:`xaiutils.foundation`; knows nothing of how or
where its functions run (a caller that spreads work passes an executor in, e.g. ``metrics.score_maps(backend=...)``).
"""
