"""ogm.agents."""
