"""Growing a trained space without retraining it: add a modality, or bridge two spaces (Ex-MCR)."""
