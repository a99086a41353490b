"""API base classes shared by every app's REST endpoints."""
