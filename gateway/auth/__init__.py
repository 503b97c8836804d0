"""Credentials: session JWTs, refresh tokens, personal access tokens, external OIDC tokens."""
