"""Torch-free client code shared by ``sambay-bench`` and the Locust load tests.

``sse`` reads one streamed OpenAI response and times it, ``metrics`` summarizes runs, ``workload``
is the one definition of request shapes (with the paper's preset), ``jsonutil`` writes result
files strict readers accept. Nothing here imports torch, transformers or ``vllm_sambay``: a
load-generator machine needs none of them (``tests/unit/test_package_boundaries.py`` checks it).
"""
