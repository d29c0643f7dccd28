"""ogm.data."""
