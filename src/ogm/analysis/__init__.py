"""ogm.analysis."""
