"""ogm.baselines."""
