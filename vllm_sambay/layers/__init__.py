"""SambaY building blocks on vLLM's layer primitives."""
