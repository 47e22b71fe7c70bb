"""Command-line apps (absl). The only place flags live; everything below them is plain Python."""
