"""Experiments as files: the schema and its grid (``spec``), agent kinds (``registry``),
execution on a local process pool or Ray (``runner``) and the built-in experiments
(``builtin/*.toml``). See docs/experiments.md.
"""
