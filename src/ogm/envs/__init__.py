"""ogm.envs: placeholder until the engine lands."""
