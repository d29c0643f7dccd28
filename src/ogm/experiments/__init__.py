"""ogm.experiments."""
