"""Flow-Mixup and its baselines for multi-label classification with corrupted labels."""
