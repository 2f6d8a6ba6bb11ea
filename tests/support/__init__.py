"""Shared test servers and helpers: a real HTTP server with fault injection, moto's S3
server, export helpers, and the fixture plugins (built into wheels by the tests)."""
