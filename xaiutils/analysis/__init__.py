"""Layer 4, analysis: explaining and scoring the grid (``evaluate``), the regressions (``stats``), the
leaderboard, the sanity check, difficulty, the verdicts, and notebook 2's choice of pre-training task
(``task_selection``). Imports from the layers below; only the entry points import it."""
