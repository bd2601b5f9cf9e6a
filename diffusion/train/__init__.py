"""Training the demo model: a procedural shapes dataset and CPU training loops (torch only, nothing of ours above)."""
