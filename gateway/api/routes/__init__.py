"""One module a resource; each exposes `router`."""
