"""Device agents: sensor and camera simulators, camera snapshot agents."""
