"""Measurement and report: emergence metrics (``emergence``), statistics across seeds
(``stats``), run directories read back (``runs``), recorded episodes and their animations
(``episodes``: ``EpisodeRecorder`` is the hook agents call), per-run and per-variant
findings on the evaluation protocol's episodes (``findings``), figures (``plots``) and the
HTML report (``report``). See docs/experiments.md.
"""
