"""Infrastructure: the embedded broker launcher and deployment files (stdlib only)."""
