"""Server-rendered pages (no JavaScript, nothing loaded from outside the app)."""
