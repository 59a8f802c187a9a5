"""Model architectures, the model file, and ImageNet weights as a versioned input."""
