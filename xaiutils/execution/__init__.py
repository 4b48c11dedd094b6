"""Layer 3, execution: running work, knowing nothing of explanations. One job per module:

- ``paths``: the repository checkout, the runs root, a step's default run folder, the notebooks;
- ``locks``: one writer per run folder (folder locks, leftovers of dead writers), stop signals as Ctrl-C;
- ``params``: ``-p`` values, a notebook's parameter cell and the checks against it;
- ``runner``: one notebook executed into one run folder (:func:`runner.run_notebook`);
- ``inputs``: what a grid cell reads (dataset card and hash, MRI checkpoint) and its fingerprint;
- ``grid``: the grid's cells, resumed and run on workers or a cluster, collected into ``accuracy.csv``;
- ``run_record``: what a fine-tuning run folder holds (``model.pt``, ``model.json``, ``predictions.csv``);
- the executors, which take callables and return their results: ``parallel`` (spawned process pools, kernel
  threads) and ``cluster`` (Dask: spec files, clients, task resources, joblib's dask backend).

Imports from :mod:`xaiutils.foundation` and :mod:`xaiutils.domain` only.
"""
