"""sambay-bench: SambaY vs the dense Phi-4-mini baseline on the same machine and vLLM.

``cli`` runs the modes and writes the run directory; ``modes`` is the registry of modes (one
module each: ``serve``, ``decode``, ``genlen``, ``ttft``; ``mode`` says what a mode is);
``offline`` is the per-model engine worker and ``driver`` what offline modes step; ``closed_loop``
the paper's streaming clients; ``models`` the two configs and the benchmark tokenizer; ``roofline``
the bytes a decode step must read; ``report``, ``tables`` and ``plots`` the summary; ``schema`` the
JSON schema of bench.json. What a request asks for comes from ``sambay_client.workload``, which
the Locust load tests in ``loadtest/`` use too, as they share ``sse`` and ``metrics``.
"""
