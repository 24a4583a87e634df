"""Training a small demo X-CLIP model on CPU: synthetic data and its helpers."""
