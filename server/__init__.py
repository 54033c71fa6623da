"""Thin OpenAI-compatible HTTP server over vLLM's async engine (import name ``sambay_server``)."""
