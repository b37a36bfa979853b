"""Token-authenticated JSON API for scripts (training loops, CI): see docs/api.md."""
