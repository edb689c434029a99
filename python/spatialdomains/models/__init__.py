"""Models (one module per method) and the shared trainer."""
