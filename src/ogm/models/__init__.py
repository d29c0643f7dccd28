"""ogm.models."""
