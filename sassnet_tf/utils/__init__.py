"""Small shared helpers (atomic file writes, process-wide TensorFlow settings)."""
