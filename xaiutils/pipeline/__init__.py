"""The papermill runner and the fine-tuning grid, one job per module:

- ``paths``: the repository checkout, the runs root, a step's default run folder, the notebooks;
- ``locks``: one writer per run folder (folder locks, leftovers of dead writers), stop signals as Ctrl-C;
- ``params``: ``-p`` values, YAML files, a notebook's parameter cell and the checks against it;
- ``runner``: one notebook executed into one run folder (:func:`runner.run_notebook`);
- ``inputs``: what a grid cell reads (dataset card and hash, MRI checkpoint) and its fingerprint;
- ``grid``: the grid's cells, resumed and run on workers or a cluster, collected into ``accuracy.csv``.

What a fine-tuning run folder holds (``model.pt``, ``model.json``, ``predictions.csv``) is
:class:`xaiutils.run_record.RunRecord`. ``xaiutils.runs`` re-exports the names these modules define.
"""
