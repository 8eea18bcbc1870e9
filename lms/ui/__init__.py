"""The web dashboard: static files in static/, served by lms/api/ui.py."""
