"""Aids that users and the tests run beside the plugin, never on vLLM's serving path.

``reference`` is the pure-PyTorch SambaY (the oracle), ``tiny`` writes a tiny random checkpoint
with a locally trained tokenizer, ``parity`` compares vLLM with the reference on any checkpoint
(``python -m vllm_sambay.testing.parity CKPT``), ``demo`` is the quick-start job. vLLM never
imports this package: :func:`vllm_sambay.register` registers only the model, config and parser.
"""
