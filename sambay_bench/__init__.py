"""sambay-bench: SambaY vs the dense Phi-4-mini baseline on the same machine and vLLM.

``cli`` runs the modes and writes the run directory; ``offline`` is the per-model engine worker
(decode sweep, latency vs generation length, TTFT); ``serve`` the paper's closed-loop clients;
``models`` the two configs and the benchmark tokenizer; ``roofline`` the bytes a decode step must
read; ``report`` tables and plots. ``sse`` and ``metrics`` (one request's stream timings, run
summaries) are shared with the Locust load tests in ``loadtest/``.
"""
