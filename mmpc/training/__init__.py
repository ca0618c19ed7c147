"""The training engine and its data plumbing: torch (and transformers' schedules) only."""
