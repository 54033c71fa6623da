"""Fixes of vLLM bugs that the plugin applies to vLLM's own classes.

Each patch is one module with an ``apply()`` that :func:`vllm_sambay.register` calls: explicit,
gated by platform and release (``vllm_sambay.compat`` says which releases have the bug),
idempotent, and switched off by an environment variable the module names. A patch changes vLLM
for every model in the process, which is why none is installed as a side effect of building the
model.
"""
