"""ogm.train."""
