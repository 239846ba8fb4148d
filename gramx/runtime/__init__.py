"""Where the work runs: devices and process groups, DataLoader workers, seeded randomness, progress."""
